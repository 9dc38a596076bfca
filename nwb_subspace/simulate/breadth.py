"""True SRF breadth of simulated units: what the pipeline's breadth would be without noise.

A unit's true breadth is the level-set fraction of the map of its noise-free rate over the
projections on its first two true dimensions, on the pipeline's grid: the breadth
:func:`nwb_subspace.subspace.srf.subspace_rfs` gives a model map, with the true filters as the
tuning subspace and the true rate as the prediction.

- Dimensions: the unit's true filters, orthonormalised as flattened vectors (QR, signs kept,
  so the first axis is the first filter's direction), as the pipeline's SRFs see an
  orthonormal subspace. A unit with one filter gets a second axis: a random direction
  (seeded by the unit's index) orthogonal to the first, along which its rate does not vary.
- Grid and breadth: :data:`~nwb_subspace.subspace.srf.GRIDS` ``["reference"]`` (20 x 20 bins
  over the 0.025-99.975 percentiles, windows of 2 bins, >= 2 samples), pair (0, 1); the
  fraction of occupied bins of the smoothed map at or above ``floor + level * (peak - floor)``
  (floor: the map's 10th percentile; :func:`~nwb_subspace.subspace.srf.noise_aware_breadth`
  without errors). The breadth is unchanged by the rate's offset and scale, so only the
  nonlinearity and the filters matter.

Numerics only: no files.
"""

from __future__ import annotations

import numpy as np

from nwb_subspace.results import TuningSubspaces
from nwb_subspace.subspace.srf import subspace_rfs

__all__ = ["true_breadth", "true_srf_axes"]


def true_srf_axes(filters: np.ndarray, unit_index: int = 0) -> np.ndarray:
    """The two orthonormal SRF axes of one unit's true filters, in the truth's lag order.

    Parameters
    ----------
    filters : ndarray, shape (k, F, D)
        The unit's filters (k >= 1; lag 0 = the current bin), e.g.
        :meth:`~nwb_subspace.simulate.truth.GroundTruth.unit_filters`.
    unit_index : int, default 0
        Seeds the second axis of a unit with one filter.

    Returns
    -------
    ndarray of float64, shape (2, F, D)
        Orthonormal as flattened vectors; the first is the first filter's direction.
    """
    f = np.asarray(filters, dtype=np.float64)
    if f.ndim != 3 or f.shape[0] < 1:
        raise ValueError(f"filters must have shape (k >= 1, F, D), got {f.shape}")
    flat = f.reshape(f.shape[0], -1)
    if not np.isfinite(flat).all() or not np.linalg.norm(flat[0]) > 0:
        raise ValueError("filters must be finite with a non-zero first filter")
    if flat.shape[0] == 1:
        other = np.random.default_rng(int(unit_index)).standard_normal(flat.shape[1])
        flat = np.vstack([flat, other])
    q, r = np.linalg.qr(flat[:2].T)  # Gram-Schmidt: the first two axes of all k filters
    q = q * np.where(np.diag(r) < 0, -1.0, 1.0)[None, :]
    return q.T.reshape(2, *f.shape[1:])


def true_breadth(
    filters: np.ndarray,
    k: np.ndarray,
    rate: np.ndarray,
    spectrogram: np.ndarray,
    bins: np.ndarray,
    bin_s: float,
    level: float = 0.5,
) -> np.ndarray:
    """True SRF breadth of every unit (module docstring).

    Parameters
    ----------
    filters : ndarray, shape (U, K, F, D)
        True filters (rows ``>= k[u]`` ignored; lag 0 = the current bin).
    k : ndarray of int, shape (U,)
        Number of filters of each unit (>= 1).
    rate : ndarray, shape (n_bins, U)
        Noise-free rate of each unit (e.g. :meth:`GroundTruth.rate`).
    spectrogram : ndarray, shape (n_bins, F)
        The spectrogram ``rate`` was computed on.
    bins : ndarray of bool, shape (n_bins,)
        Bins mapped (e.g. the presented ones).
    bin_s : float
        Bin width in seconds.
    level : float, default 0.5
        Level of the high-activity region, in (0, 1).

    Returns
    -------
    ndarray of float64, shape (U,)
        In [0, 1]; 0 for a unit whose rate never varies.
    """
    filters = np.asarray(filters, dtype=np.float64)
    k = np.asarray(k)
    spectrogram = np.asarray(spectrogram, dtype=np.float64)
    rate = np.asarray(rate, dtype=np.float64)
    if filters.ndim != 4 or k.shape != filters.shape[:1]:
        raise ValueError(f"filters must be (U, K, F, D) and k (U,); got {filters.shape}, {k.shape}")
    n_units, _, n_ch, n_lags = filters.shape
    if not np.issubdtype(k.dtype, np.integer) or (k < 1).any() or (k > filters.shape[1]).any():
        raise ValueError(f"k must be ints in 1..{filters.shape[1]}, got {k.tolist()}")
    if spectrogram.ndim != 2 or spectrogram.shape[1] != n_ch:
        raise ValueError(f"spectrogram must be (n_bins, {n_ch}), got {spectrogram.shape}")
    if rate.shape != (spectrogram.shape[0], n_units):
        raise ValueError(f"rate must be ({spectrogram.shape[0]}, {n_units}), got {rate.shape}")
    if not (np.isfinite(bin_s) and bin_s > 0) or not 0 < level < 1:
        raise ValueError(f"bin_s must be > 0 and level in (0, 1); got {bin_s!r}, {level!r}")
    if n_units == 0:
        return np.zeros(0)
    comps = np.stack(
        [true_srf_axes(filters[u, : int(k[u])], u)[..., ::-1] for u in range(n_units)]
    )  # model lag order: the last lag is the current bin
    tuning = TuningSubspaces(
        unit_rows=np.arange(n_units), components=comps,
        explained_variance_ratio=np.full((n_units, 2), 0.5), dimensionality=np.full(n_units, 2),
        mean_dstrf=comps[:, 0], n_frames=np.full(n_units, int(np.sum(bins))),
        noise_floor=np.zeros((n_units, 2)), frequencies=np.arange(n_ch, dtype=float),
        lags_s=(n_lags - 1 - np.arange(n_lags)) * bin_s,
    )  # fmt: skip
    srfs = subspace_rfs(
        tuning, spectrogram, prediction=rate * bin_s, rate=1.0 / bin_s, bins=bins,
        grid="reference", pairs="first", high_activity_threshold=level, n_shape_null=0,
    )  # fmt: skip
    return np.asarray(srfs.breadth_fraction, dtype=np.float64)
