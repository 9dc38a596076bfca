"""Causal projection of a spectrogram onto spectro-temporal filters (FIR over the bins).

One implementation for the simulator (filters in "lag ``l`` = ``l`` bins back" order) and the
analysis (:func:`nwb_subspace.subspace.srf.project_stimulus`, filters in model lag order, reversed
before calling this), with a bounded work buffer whatever the recording length.
"""

from __future__ import annotations

import numpy as np

__all__ = ["causal_projection"]

_BLOCK_ELEMENTS = 2e7  # float64 elements of a projection work buffer (160 MB)


def causal_projection(spec: np.ndarray, filters: np.ndarray) -> np.ndarray:
    """Causal projection of a spectrogram on filters whose lag ``l`` is ``l`` bins back.

    Parameters
    ----------
    spec : ndarray, shape (n_bins, n_channels)
    filters : ndarray, shape (n_filters, n_channels, n_lags)

    Returns
    -------
    ndarray of float64, shape (n_bins, n_filters)
        ``out[t, j] = sum_{c, l} filters[j, c, l] * spec[t - l, c]`` (zero before the start).
    """
    spec = np.asarray(spec, dtype=np.float64)
    filters = np.asarray(filters, dtype=np.float64)
    if spec.ndim != 2 or filters.ndim != 3 or filters.shape[1] != spec.shape[1]:
        raise ValueError(
            f"need spec (n_bins, n_channels) and filters (n, n_channels, n_lags) with matching "
            f"n_channels, got {spec.shape} and {filters.shape}"
        )
    n, (n_filt, n_ch, n_lags) = spec.shape[0], filters.shape
    weights = np.ascontiguousarray(filters.transpose(1, 2, 0).reshape(n_ch, n_lags * n_filt))
    out = np.zeros((n, n_filt))
    block = max(1024, int(_BLOCK_ELEMENTS // (n_lags * n_filt)))  # bounded memory
    for start in range(0, n, block):
        stop = min(start + block, n)
        lo = max(start - n_lags + 1, 0)
        per_lag = (spec[lo:stop] @ weights).reshape(stop - lo, n_lags, n_filt)
        for lag in range(n_lags):
            first = max(start, lo + lag)  # out[t] += per_lag[t - lag - lo, lag]
            if first < stop:
                out[first:stop] += per_lag[first - lag - lo : stop - lag - lo, lag]
    return out
