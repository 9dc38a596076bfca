"""Per-unit properties from waveforms and depths (pure numerics; the NWB side is
:mod:`nwb_subspace.io.units`).

- :mod:`~nwb_subspace.units.celltypes`: narrow/broad spike classes and cortical layers;
- :mod:`~nwb_subspace.units.columns`: the columns nwb-subspace adds to the ``units`` table.
"""
