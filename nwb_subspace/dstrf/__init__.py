"""dSTRFs: the exact Jacobian of each unit's predicted rate with respect to the recent
spectrogram window, at every time bin, and their streaming moments (mean, covariance) for
the tuning-subspace PCA.

- :mod:`~nwb_subspace.dstrf.compute`: :func:`compute_dstrf` and :func:`dstrf_moments`;
- :mod:`~nwb_subspace.dstrf.jacobian`: window batches, the choice of Jacobian method,
  ensemble means;
- :mod:`~nwb_subspace.dstrf.gated`: the gated-linear closed form for ReLU CNNs;
- :mod:`~nwb_subspace.dstrf.accumulate`: the moment accumulators.
"""

from nwb_subspace.dstrf.compute import DSTRFMoments, compute_dstrf, dstrf_moments

__all__ = ["DSTRFMoments", "compute_dstrf", "dstrf_moments"]
