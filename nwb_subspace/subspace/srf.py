"""Subspace receptive fields (SRFs): responses mapped over a unit's tuning dimensions.

For each unit the stimulus is projected onto its PCs used as causal FIR filters
(``proj[t, k] = sum_{f, j} PC_k[f, j] * X[t-D+1+j, f]``, model lag order, zeros before the
recording). A pair of dimensions is binned on a ``n_bins x n_bins`` grid spanning the inner
percentiles of each projection (default 1-99); per grid bin the mean response minus the
spontaneous rate, in spikes/s, is the SRF. Grid bins holding fewer than ``min_occupancy``
samples are NaN.

Spontaneous rate: the mean response over the bins whose stimulus window (the D bins the
PCs see) has the least energy (lowest 5% of the window's summed spectrogram), i.e.
silences between sounds in a typical session.

High-activity region, breadth and shape (docs/methods.md, "SRFs, breadth and shape"): the map is shifted to a
minimum of 0, smoothed (Gaussian, sigma 1 bin, NaN-aware), divided by its maximum; the region
is the bins ``>= high_activity_threshold`` (0.5) and the breadth is their number. For each
axis the 1-D marginal (mean of the normalised map over the other axis) gives
``asym = 1 - |sum dy| / sum |dy|``, signed + when the rises lie right of the falls
(U-shaped) and - otherwise (inverted U). :func:`shape_class` maps the pair to a class.
"""

from __future__ import annotations

import itertools
import warnings

import numpy as np

from nwb_subspace.results import SubspaceRFs, TuningSubspaces
from nwb_subspace.stimulus.projection import causal_projection

__all__ = [
    "BOWL_THRESHOLD",
    "HILL_THRESHOLD",
    "normalised_map",
    "project_stimulus",
    "shape_asymmetry",
    "shape_class",
    "srf_shape_classes",
    "subspace_rfs",
]

#: signed asym above this on the most modulated axis -> "bowl"
BOWL_THRESHOLD = 0.35
#: signed asym below minus this on the most modulated axis -> "hill"
HILL_THRESHOLD = 0.35


def project_stimulus(X: np.ndarray, components: np.ndarray) -> np.ndarray:
    """Project a spectrogram onto filters in model lag order.

    Parameters
    ----------
    X : ndarray, shape (n_bins, F)
    components : ndarray, shape (K, F, D)

    Returns
    -------
    ndarray of float64, shape (n_bins, K)
        Model lag ``j`` multiplies bin ``t - (D - 1 - j)``: the components reversed in lag,
        then :func:`~nwb_subspace.stimulus.projection.causal_projection` (which checks the shapes).
    """
    return causal_projection(X, np.flip(np.asarray(components), axis=-1))


def _smooth(m: np.ndarray, sigma: float = 1.0) -> np.ndarray:
    """NaN-aware Gaussian smoothing of a 2-D map (normalised convolution)."""
    r = int(np.ceil(3 * sigma))
    x = np.arange(-r, r + 1)
    g = np.exp(-0.5 * (x / sigma) ** 2)
    valid = np.isfinite(m).astype(float)
    filled = np.where(valid > 0, m, 0.0)

    def conv(a: np.ndarray) -> np.ndarray:
        a = np.apply_along_axis(lambda v: np.convolve(v, g, mode="same"), 0, a)
        return np.apply_along_axis(lambda v: np.convolve(v, g, mode="same"), 1, a)

    num, den = conv(filled), conv(valid)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = num / den
    return np.where(valid > 0, out, np.nan)


def normalised_map(response_map: np.ndarray) -> np.ndarray:
    """Shift to min 0, smooth, divide by max (NaN bins stay NaN; all-NaN/flat -> NaN)."""
    m = np.asarray(response_map, dtype=float)
    if not np.isfinite(m).any():
        return np.full_like(m, np.nan)
    s = _smooth(m - np.nanmin(m))
    s = s - np.nanmin(s)
    top = np.nanmax(s)
    return s / top if top > 0 else np.full_like(m, np.nan)


def shape_asymmetry(norm_map: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Signed asymmetry of each axis' marginal, and each marginal's modulation depth.

    Returns
    -------
    asym : ndarray, shape (2,)
        ``[x axis (dimension 1), y axis (dimension 2)]``; NaN where undefined.
    depth : ndarray, shape (2,)
        ``max - min`` of each marginal.
    """
    asym = np.full(2, np.nan)
    depth = np.full(2, np.nan)
    for axis in (0, 1):  # map[ix, iy]: marginal over x averages over y (axis 1)
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            y = np.nanmean(norm_map, axis=1 - axis)
        y = y[np.isfinite(y)]
        if y.size < 3:
            continue
        dy = np.diff(y)
        total = np.abs(dy).sum()
        depth[axis] = float(y.max() - y.min())
        if total <= 0:
            asym[axis] = 0.0
            continue
        a = 1.0 - abs(dy.sum()) / total
        pos = np.arange(dy.size)
        rises, falls = np.clip(dy, 0, None), np.clip(-dy, 0, None)
        if rises.sum() > 0 and falls.sum() > 0:
            centre_r = (pos * rises).sum() / rises.sum()
            centre_f = (pos * falls).sum() / falls.sum()
            sign = 1.0 if centre_r > centre_f else -1.0
        else:
            sign = 1.0
        asym[axis] = sign * a
    return asym, depth


def shape_class(asym: np.ndarray, depth: np.ndarray) -> str:
    """ "bowl", "hill" or "monotonic" from the axis with the deepest modulation.

    ``asym > BOWL_THRESHOLD`` -> bowl (falls then rises), ``asym < -HILL_THRESHOLD`` -> hill
    (rises then falls), otherwise monotonic. "unknown" if no axis is defined.
    """
    asym, depth = np.asarray(asym, float), np.asarray(depth, float)
    ok = np.isfinite(asym) & np.isfinite(depth)
    if not ok.any():
        return "unknown"
    axis = int(np.argmax(np.where(ok, depth, -np.inf)))
    a = asym[axis]
    if a > BOWL_THRESHOLD:
        return "bowl"
    if a < -HILL_THRESHOLD:
        return "hill"
    return "monotonic"


def _spontaneous_bins(X: np.ndarray, n_lags: int, fraction: float = 0.05) -> np.ndarray:
    """Mask of the bins whose D-bin stimulus window has the least energy."""
    energy = project_stimulus(X, np.ones((1, X.shape[1], n_lags)))[:, 0]
    return energy <= np.quantile(energy, fraction)


def _grid(
    px: np.ndarray, py: np.ndarray, resp: np.ndarray, ex: np.ndarray, ey: np.ndarray, min_occ: int
) -> tuple[np.ndarray, np.ndarray]:
    b = ex.size - 1
    ix = np.clip(np.searchsorted(ex, px, side="right") - 1, 0, b - 1)
    iy = np.clip(np.searchsorted(ey, py, side="right") - 1, 0, b - 1)
    inside = (px >= ex[0]) & (px <= ex[-1]) & (py >= ey[0]) & (py <= ey[-1])
    flat = ix[inside] * b + iy[inside]
    occ = np.bincount(flat, minlength=b * b).reshape(b, b)
    tot = np.bincount(flat, weights=resp[inside], minlength=b * b).reshape(b, b)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(occ >= min_occ, tot / np.maximum(occ, 1), np.nan)
    return mean, occ


def subspace_rfs(
    tuning: TuningSubspaces,
    X: np.ndarray,
    *,
    prediction: np.ndarray | None = None,
    counts: np.ndarray | None = None,
    rate: float,
    bins: np.ndarray | None = None,
    pairs: str | list[tuple[int, int]] = "first",
    n_bins: int = 20,
    percentiles: tuple[float, float] = (1.0, 99.0),
    min_occupancy: int = 10,
    high_activity_threshold: float = 0.5,
    max_dims: int = 3,
) -> SubspaceRFs:
    """SRFs of every unit of ``tuning`` from the model prediction and/or measured counts.

    Parameters
    ----------
    tuning : TuningSubspaces
    X : ndarray, shape (n_bins, F)
        Spectrogram on the same clock as ``prediction`` / ``counts``.
    prediction, counts : ndarray, shape (n_bins, n_units), optional
        Predicted and measured counts per bin; column ``i`` belongs to tuning row ``i``.
        At least one is required.
    rate : float
        Bins per second (maps are in spikes/s).
    bins : ndarray of bool, shape (n_bins,), optional
        Bins used for the maps (e.g. the stimulus bins); default all.
    pairs : "first", "all" or list of (int, int)
        Dimension pairs: the first two; all pairs among the top ``max_dims`` dimensions
        (limited by each unit's dimensionality, at least 2); or explicit pairs.
    n_bins : int, default 20
    percentiles : (float, float), default (1, 99)
    min_occupancy : int, default 10
    high_activity_threshold : float, default 0.5
    max_dims : int, default 3

    Returns
    -------
    SubspaceRFs
        One row per unit, pair and response source (model rows first).
    """
    X = np.asarray(X, dtype=np.float64)
    if not isinstance(tuning, TuningSubspaces):
        raise TypeError(f"tuning must be a TuningSubspaces; got {type(tuning).__name__}")
    if prediction is None and counts is None:
        raise ValueError("give prediction and/or counts: SRFs need a response")
    n_units = tuning.unit_rows.size
    sources = _response_sources(prediction, counts, (X.shape[0], n_units))
    mask = _check_map_options(n_bins, percentiles, rate, bins, X.shape[0])
    d = tuning.components.shape[3]
    spont = _spontaneous_bins(X, d)
    rows: dict[str, list] = {k: [] for k in ("u", "dims", "src", "map", "occ", "ex", "ey")}
    rows.update(breadth=[], asym=[])
    for u in range(n_units):
        unit_pairs = _unit_pairs(pairs, int(tuning.dimensionality[u]), max_dims)
        need = max(max(pr) for pr in unit_pairs) + 1
        if need > tuning.components.shape[1]:
            raise ValueError(
                f"pair dimensions up to {need - 1} requested but only "
                f"{tuning.components.shape[1]} components are stored"
            )
        proj = project_stimulus(X, tuning.components[u, :need])
        for i, j in unit_pairs:
            px, py = proj[mask, i], proj[mask, j]
            ex, ey = _grid_edges(px, py, percentiles, n_bins)
            for name, arr in sources:
                resp = arr[:, u] * rate
                base = float(resp[spont].mean())
                m, occ = _grid(px, py, resp[mask] - base, ex, ey, min_occupancy)
                norm = normalised_map(m)
                asym, _ = shape_asymmetry(norm)
                rows["u"].append(tuning.unit_rows[u])
                rows["dims"].append((i, j))
                rows["src"].append(name)
                rows["map"].append(m)
                rows["occ"].append(occ)
                rows["ex"].append(ex)
                rows["ey"].append(ey)
                rows["breadth"].append(int(np.nansum(norm >= high_activity_threshold)))
                rows["asym"].append(asym)
    return SubspaceRFs(
        unit_rows=np.asarray(rows["u"], dtype=np.int64),
        dimensions=np.asarray(rows["dims"], dtype=np.int64),
        response_source=np.asarray(rows["src"]),
        response_map=np.asarray(rows["map"]),
        occupancy=np.asarray(rows["occ"], dtype=np.int64),
        edges_x=np.asarray(rows["ex"]),
        edges_y=np.asarray(rows["ey"]),
        breadth=np.asarray(rows["breadth"], dtype=np.int64),
        shape_asymmetry=np.asarray(rows["asym"]),
        high_activity_threshold=float(high_activity_threshold),
    )


def _response_sources(
    prediction: np.ndarray | None, counts: np.ndarray | None, shape: tuple[int, int]
) -> list[tuple[str, np.ndarray]]:
    """``("model", prediction)`` and/or ``("measured", counts)`` as float arrays of ``shape``."""
    sources = []
    for name, arr in (("model", prediction), ("measured", counts)):
        if arr is None:
            continue
        arr = np.asarray(arr, dtype=np.float64)
        if arr.shape != shape:
            raise ValueError(f"{name} response must have shape {shape}; got {arr.shape}")
        sources.append((name, arr))
    return sources


def _check_map_options(
    n_bins: int, percentiles: tuple[float, float], rate: float, bins: np.ndarray | None, n: int
) -> np.ndarray:
    """Refuse bad map settings; return the mask of the ``n`` time bins used."""
    if isinstance(n_bins, bool) or not isinstance(n_bins, int) or n_bins < 2:
        raise ValueError(f"n_bins must be an int >= 2; got {n_bins!r}, e.g. 20")
    lo_p, hi_p = percentiles
    if not 0 <= lo_p < hi_p <= 100:
        raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100; got {percentiles!r}")
    if not rate > 0:
        raise ValueError(f"rate must be > 0 bins/s; got {rate!r}")
    mask = np.ones(n, bool) if bins is None else np.asarray(bins, dtype=bool)
    if mask.shape != (n,):
        raise ValueError(f"bins must be a boolean mask of shape ({n},)")
    return mask


def _unit_pairs(
    pairs: str | list[tuple[int, int]], dimensionality: int, max_dims: int
) -> list[tuple[int, ...]]:
    """Dimension pairs of one unit (see ``pairs`` of :func:`subspace_rfs`)."""
    n_dim = max(2, min(dimensionality, max_dims))
    if pairs == "first":
        return [(0, 1)]
    if pairs == "all":
        return list(itertools.combinations(range(n_dim), 2))
    return [tuple(int(i) for i in pr) for pr in pairs]


def _grid_edges(
    px: np.ndarray, py: np.ndarray, percentiles: tuple[float, float], n_bins: int
) -> tuple[np.ndarray, np.ndarray]:
    """Bin edges over the percentile range of each projection (unit steps if it is flat)."""
    ex = np.linspace(*np.percentile(px, list(percentiles)), n_bins + 1)
    ey = np.linspace(*np.percentile(py, list(percentiles)), n_bins + 1)
    if ex[-1] <= ex[0] or ey[-1] <= ey[0]:  # flat projection (e.g. zero PCs)
        ex = ex[0] + np.arange(n_bins + 1.0)
        ey = ey[0] + np.arange(n_bins + 1.0)
    return ex, ey


def srf_shape_classes(srfs: SubspaceRFs, source: str = "model") -> dict[int, str]:
    """Shape class per unit row from its first ``source`` map (see :func:`shape_class`)."""
    out: dict[int, str] = {}
    for r in range(srfs.unit_rows.size):
        row = int(srfs.unit_rows[r])
        if srfs.response_source[r] != source or row in out:
            continue
        norm = normalised_map(srfs.response_map[r])
        asym, depth = shape_asymmetry(norm)
        out[row] = shape_class(asym, depth)
    return out
