"""A unit's tuning subspace and what is built on it.

- :mod:`~nwb_subspace.subspace.tuning`: PCA of a unit's dSTRFs -> its tuning subspace and
  dimensionality;
- :mod:`~nwb_subspace.subspace.srf`: subspace receptive fields (the response mapped over the
  stimulus projected on the subspace), breadth and shape;
- :mod:`~nwb_subspace.subspace.model`: the subspace model (a small network on the projected
  stimulus) and its share of the CNN's explained variance.
"""
