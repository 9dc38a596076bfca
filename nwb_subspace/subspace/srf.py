"""Subspace receptive fields (SRFs): responses mapped over a unit's tuning dimensions.

For each unit the stimulus is projected onto its PCs used as causal FIR filters
(``proj[t, k] = sum_{f, j} PC_k[f, j] * X[t-D+1+j, f]``, model lag order, zeros before the
recording). A pair of dimensions is binned on a ``n_bins x n_bins`` grid spanning the inner
percentiles of each projection; per grid bin the mean response minus the spontaneous rate, in
spikes/s, is the SRF. Grid bins holding fewer than ``min_occupancy`` samples are NaN.

Two grids (``grid``, docs/methods.md "SRFs, breadth and shape"):

* ``"reference"`` (default), the paper's maps: 20 x 20 bins between the 0.025th and
  99.975th percentiles of each projection, a bin shown from 2 samples, each bin's mean taken
  over a window two bins wide centred on it (neighbouring windows overlap by half a window),
  pairs PC1-PC2 and PC1-PC3 (PC1-PC2 alone when fewer than 3 components are stored).
* ``"ours"``: 20 x 20 disjoint bins between the 1st and 99th percentiles, a bin shown from
  10 samples, PC1-PC2.

Spontaneous rate: the mean response over the bins whose stimulus window (the D bins the PCs
see) has the least energy (lowest 5% of the window's summed spectrogram), i.e. silences
between sounds in a typical session; its standard error is the SD of those bins / sqrt(n).

Error bars of measured maps (``response_map_sem``): with ``repeats`` (the repeat index of
every bin of a sound presented at least twice, -1 elsewhere; :func:`repeat_index_per_bin`),
the measured map uses only those bins, one map ``M_r`` is computed per repeat index ``r``
(repeat r of every repeated sound; identical stimuli, so identical projections), and the SEM of
a grid bin is ``SD_r(M_r) / sqrt(R)`` over the ``R >= 2`` repeats with samples there (bins with
fewer are NaN). Sounds presented once have no repeat-wise error and are left out of the
measured map then. Without ``repeats`` the SEM is the SD of the samples in the bin / sqrt(n).
Model maps have no error map (NaN).

Breadth (:func:`noise_aware_breadth`, stored as ``breadth_fraction``): on the smoothed map
(Gaussian, sigma 1 bin, NaN-aware) the fraction of occupied bins at least
``high_activity_threshold`` (0.5) of the way from the unit's floor (10th percentile of the
smoothed map) to its peak, and, for measured maps, reliably above the floor (one-sided z from
the repeat-wise SE of the smoothed map, Benjamini-Hochberg at ``alpha`` over the occupied
bins). ``baseline="spontaneous"`` uses the spontaneous rate instead of the floor. The old
measure is kept as ``breadth`` (a count): the map shifted to a minimum of 0, smoothed,
divided by its maximum, bins ``>= 0.5``.

SNR-matched breadth (:func:`snr_matched_breadth`, stored as ``breadth_snr_matched``): the
noise-aware breadth grows with a unit's signal-to-noise ratio (its reliability test cuts a
weak unit's edges), so a group of units that fire more reads broader. Per site every unit is
brought to the site's common SNR before its breadth is measured: ``Z`` (:func:`srf_peak_z`,
stored as ``peak_z``) is the peak of ``(s_b - floor) / se_pool_b`` of its measured map (pair
0-1, repeat-wise SE of the smoothed map, pooled over neighbouring bins, floored at its
median), the site's target
``z*`` (``snr_target_z``) the lowest ``Z`` among its units with ``Z >= gate``, and each such
unit's spikes are binomially thinned with keep probability ``(z* / Z)^2``
(:func:`site_keep_probability`), calibrated in two rounds so that the thinned maps' mean
peak z is ``z*`` (``keep_probability``); the breadth is the mean noise-aware breadth over
``n_draws`` thinning draws. Units below the gate are not thinned.

Shape (:func:`shape_test`, stored as ``curve_asymmetry`` / ``shape_p_value``): the 1-D tuning
curve (occupancy-weighted marginal, smoothed) of the more modulated dimension gives
``asym = 1 - |sum dy| / sum |dy|``, signed - when the rises lie left of the falls (hill)
and + otherwise; hill / bowl when ``|asym| > 0.33`` (the reference's rule) and, for measured
maps, the curve departs from its best monotonic fit more than its noise allows (p < 0.05).
The old ``shape_asymmetry`` (marginals of the normalised map) and :func:`shape_class` (fixed
0.35) are kept for comparison.
"""

from __future__ import annotations

import itertools
import warnings
from dataclasses import dataclass, replace

import numpy as np
from scipy.ndimage import convolve1d
from scipy.optimize import isotonic_regression
from scipy.stats import norm

from nwb_subspace.results import SubspaceRFs, TuningSubspaces
from nwb_subspace.stimulus.projection import causal_projection

__all__ = [
    "BOWL_THRESHOLD",
    "GRIDS",
    "HILL_THRESHOLD",
    "REFERENCE_SHAPE_THRESHOLD",
    "SrfGrid",
    "concatenate_rfs",
    "marginal_profile",
    "noise_aware_breadth",
    "normalised_map",
    "project_stimulus",
    "repeat_index_per_bin",
    "shape_asymmetry",
    "shape_class",
    "shape_test",
    "site_keep_probability",
    "smoothed_map",
    "snr_matched_breadth",
    "srf_peak_z",
    "srf_shape_classes",
    "subspace_rfs",
    "with_snr_matched_breadth",
]

#: signed asym above this on the most modulated axis -> "bowl" (:func:`shape_class`, fixed)
BOWL_THRESHOLD = 0.35
#: signed asym below minus this on the most modulated axis -> "hill" (:func:`shape_class`)
HILL_THRESHOLD = 0.35
#: the reference's hill / monotonic / bowl boundary on |asym|; the floor of :func:`shape_test`
REFERENCE_SHAPE_THRESHOLD = 0.33


@dataclass(frozen=True)
class SrfGrid:
    """An SRF grid recipe (see the module docstring).

    Attributes
    ----------
    n_bins : int
        Bins per axis.
    percentiles : (float, float)
        Percentiles of each projection spanned by the grid.
    min_occupancy : int
        Samples a bin's window needs for the bin to be shown.
    window : int
        Width of each bin's averaging window in bins (1: disjoint bins; 2: the reference's
        windows, each reaching half a bin into its neighbours on every side).
    pairs : str
        ``"reference"`` (0-1 and 0-2 when 3 components are stored) or ``"first"`` (0-1).
    """

    n_bins: int
    percentiles: tuple[float, float]
    min_occupancy: int
    window: int
    pairs: str


#: The grids by name.
GRIDS: dict[str, SrfGrid] = {
    "reference": SrfGrid(20, (0.025, 99.975), 2, 2, "reference"),
    "ours": SrfGrid(20, (1.0, 99.0), 10, 1, "first"),
}


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


def _gauss(sigma: float = 1.0) -> np.ndarray:
    r = int(np.ceil(3 * sigma))
    x = np.arange(-r, r + 1)
    return np.exp(-0.5 * (x / sigma) ** 2)


def _smooth(m: np.ndarray, sigma: float = 1.0) -> np.ndarray:
    """NaN-aware Gaussian smoothing of the last two axes (normalised convolution)."""
    g = _gauss(sigma)
    valid = np.isfinite(m).astype(float)
    filled = np.where(valid > 0, m, 0.0)

    def conv(a: np.ndarray) -> np.ndarray:
        a = convolve1d(a, g, axis=-2, mode="constant", cval=0.0)
        return convolve1d(a, g, axis=-1, mode="constant", cval=0.0)

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


def _asym_1d(y: np.ndarray) -> np.ndarray:
    """Signed asymmetry of profiles ``y`` (..., n) without NaNs (see :func:`shape_asymmetry`)."""
    dy = np.diff(y, axis=-1)
    total = np.abs(dy).sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        a = np.where(total > 0, 1.0 - np.abs(dy.sum(-1)) / np.where(total > 0, total, 1), 0.0)
        pos = np.arange(dy.shape[-1])
        rises, falls = np.clip(dy, 0, None), np.clip(-dy, 0, None)
        r_sum, f_sum = rises.sum(-1), falls.sum(-1)
        centre_r = (pos * rises).sum(-1) / np.where(r_sum > 0, r_sum, 1)
        centre_f = (pos * falls).sum(-1) / np.where(f_sum > 0, f_sum, 1)
    both = (r_sum > 0) & (f_sum > 0)
    sign = np.where(both & (centre_r <= centre_f), -1.0, 1.0)
    return sign * a


def _marginal(norm_map: np.ndarray, axis: int) -> np.ndarray:
    """Mean over the other axis of a (..., B, B) stack (``map[ix, iy]``); NaN where empty."""
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(norm_map, axis=-1 if axis == 0 else -2)


def shape_asymmetry(norm_map: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Signed asymmetry of each axis' marginal, and each marginal's modulation depth.

    Returns
    -------
    asym : ndarray, shape (2,)
        ``[x axis (dimension 1), y axis (dimension 2)]``; NaN where undefined (< 3 bins).
    depth : ndarray, shape (2,)
        ``max - min`` of each marginal.
    """
    asym = np.full(2, np.nan)
    depth = np.full(2, np.nan)
    for axis in (0, 1):
        y = _marginal(np.asarray(norm_map, dtype=float), axis)
        y = y[np.isfinite(y)]
        if y.size < 3:
            continue
        depth[axis] = float(y.max() - y.min())
        asym[axis] = float(_asym_1d(y))
    return asym, depth


def shape_class(asym: np.ndarray, depth: np.ndarray, threshold: float | None = None) -> str:
    """ "bowl", "hill" or "monotonic" from the axis with the deepest modulation.

    ``asym > t`` -> bowl (falls then rises), ``asym < -t`` -> hill (rises then falls),
    otherwise monotonic, with ``t = threshold`` (e.g. from :func:`shape_test`) or the old fixed
    ``BOWL_THRESHOLD`` / ``HILL_THRESHOLD`` (0.35) when None. "unknown" if no axis is defined.
    """
    asym, depth = np.asarray(asym, float), np.asarray(depth, float)
    ok = np.isfinite(asym) & np.isfinite(depth)
    if not ok.any():
        return "unknown"
    axis = int(np.argmax(np.where(ok, depth, -np.inf)))
    a = asym[axis]
    bowl, hill = (BOWL_THRESHOLD, HILL_THRESHOLD) if threshold is None else (threshold,) * 2
    if a > bowl:
        return "bowl"
    if a < -hill:
        return "hill"
    return "monotonic"


def marginal_profile(
    response_map: np.ndarray,
    occupancy: np.ndarray,
    axis: int,
    sem: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The 1-D tuning curve along ``axis`` of a map and its standard error.

    ``y[i]`` is the occupancy-weighted mean of the finite bins of row ``i`` along ``axis``
    (``map[ix, iy]``; axis 0 = dimension x), i.e. the mean response of the samples whose
    projection on that dimension falls in bin ``i`` (as the reference's 1-D marginals);
    ``se[i] = sqrt(sum_j occ_ij^2 sem_ij^2) / sum_j occ_ij`` (NaN without ``sem``).
    Rows without a finite bin are NaN.
    """
    m = np.asarray(response_map, dtype=float)
    occ = np.where(np.isfinite(m), np.asarray(occupancy, dtype=float), 0.0)
    if axis == 1:
        m, occ = m.T, occ.T
        sem = None if sem is None else np.asarray(sem, dtype=float).T
    tot = occ.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        y = np.where(tot > 0, (occ * np.nan_to_num(m)).sum(1) / tot, np.nan)
        if sem is None:
            return y, np.full_like(y, np.nan)
        s = np.asarray(sem, dtype=float)
        se = np.sqrt((occ**2 * np.nan_to_num(s, nan=0.0) ** 2).sum(1)) / tot
    return y, np.where(tot > 0, se, np.nan)


def _smooth_1d(y: np.ndarray) -> np.ndarray:
    """Gaussian (sigma 1 bin) smoothing of profiles (..., n) without NaNs (normalised)."""
    g = _gauss(1.0)
    num = convolve1d(y, g, axis=-1, mode="constant", cval=0.0)
    den = convolve1d(np.ones(y.shape[-1]), g, mode="constant", cval=0.0)
    return num / den


def _monotonic_fit(y: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, float]:
    """Weighted isotonic fit of ``y`` (rising or falling, whichever fits better), its SSE."""
    best, best_err = y, np.inf
    for increasing in (True, False):
        fit = isotonic_regression(y, weights=w, increasing=increasing).x
        err = float((w * (fit - y) ** 2).sum())
        if err < best_err:
            best, best_err = fit, err
    return best, best_err


def shape_test(
    response_map: np.ndarray,
    occupancy: np.ndarray,
    sem: np.ndarray | None = None,
    *,
    n_null: int = 200,
    alpha: float = 0.05,
    threshold: float = REFERENCE_SHAPE_THRESHOLD,
    rng: np.random.Generator | None = None,
) -> tuple[str, float, float]:
    """Hill / bowl / monotonic: the reference's asymmetry rule plus a test of the noise.

    Each axis' :func:`marginal_profile` (the 1-D tuning curve) is smoothed (Gaussian, sigma
    1 bin) and the axis with the larger ``max - min`` is tested. Its signed asymmetry ``asym``
    (as :func:`shape_asymmetry`) gives the shape: ``asym < -threshold`` hill (rises then
    falls), ``asym > threshold`` bowl, else monotonic (the reference's rule, threshold 0.33).
    With ``sem``, hill and bowl also need the profile to be reliably non-monotonic:
    the weighted squared distance of the (unsmoothed) profile from its best monotonic fit
    (weighted isotonic regression, rising or falling; weights 1/SE^2) must exceed that of
    ``n_null`` profiles made of that fit plus Gaussian noise of the profile's SE
    (one-sided, add-one p-value < ``alpha``); otherwise the unit is called monotonic.

    Parameters
    ----------
    response_map, occupancy : ndarray, shape (B, B)
    sem : ndarray, shape (B, B), optional
        Standard error of each bin; None or all-NaN: the asymmetry rule alone (p NaN).
    n_null : int, default 200
    alpha : float, default 0.05
    threshold : float, default 0.33
    rng : numpy.random.Generator, optional
        Default ``default_rng(0)``.

    Returns
    -------
    (shape_class, asym, p_value)
        "unknown" (asym NaN) when neither axis has 3 finite profile bins.
    """
    prof = [marginal_profile(response_map, occupancy, a, sem) for a in (0, 1)]
    depth = np.full(2, -np.inf)
    for a, (y, _) in enumerate(prof):
        ok = np.isfinite(y)
        if ok.sum() >= 3:
            ys = _smooth_1d(y[ok])
            depth[a] = float(ys.max() - ys.min())
    if not np.isfinite(depth).any():
        return "unknown", np.nan, np.nan
    y, se = prof[int(np.argmax(depth))]
    ok = np.isfinite(y)
    y, se = y[ok], se[ok]
    a = float(_asym_1d(_smooth_1d(y)))
    p = np.nan
    if np.isfinite(se).any() and n_null > 0:
        rng = np.random.default_rng(0) if rng is None else rng
        se = np.maximum(np.nan_to_num(se, nan=float(np.nanmax(se))), 1e-12)
        w = 1.0 / se**2
        fit, obs = _monotonic_fit(y, w)
        nulls = fit[None] + se[None] * rng.standard_normal((n_null, y.size))
        null_sse = np.array([_monotonic_fit(v, w)[1] for v in nulls])
        p = float((1 + (null_sse >= obs).sum()) / (1 + n_null))
    return _shape_from(a, p, alpha, threshold), a, p


def _shape_from(asym: float, p: float, alpha: float, threshold: float) -> str:
    """The class of :func:`shape_test` from its asymmetry and p-value (NaN p: no test)."""
    if not np.isfinite(asym):
        return "unknown"
    if np.isfinite(p) and p >= alpha:
        return "monotonic"
    return "bowl" if asym > threshold else "hill" if asym < -threshold else "monotonic"


def smoothed_map(
    response_map: np.ndarray, sem: np.ndarray | None = None, sigma: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """NaN-aware Gaussian smoothing of a map and the standard error of the smoothed values.

    ``s_b = sum_c g_bc m_c / sum_c g_bc`` over the finite bins ``c`` (Gaussian weights
    ``g``, sigma in bins); with ``sem`` (independent bins),
    ``se_b = sqrt(sum_c g_bc^2 sem_c^2) / sum_c g_bc``, else NaN. Empty bins stay NaN.
    """
    m = np.asarray(response_map, dtype=float)
    ok = np.isfinite(m) if sem is None else np.isfinite(m) & np.isfinite(sem)
    g = _gauss(sigma)

    def conv(a: np.ndarray, k: np.ndarray) -> np.ndarray:
        a = convolve1d(a, k, axis=-2, mode="constant", cval=0.0)
        return convolve1d(a, k, axis=-1, mode="constant", cval=0.0)

    den = conv(ok.astype(float), g)
    with np.errstate(invalid="ignore", divide="ignore"):
        sm = np.where(ok, conv(np.where(ok, m, 0.0), g) / den, np.nan)
        if sem is None:
            return sm, np.full_like(sm, np.nan)
        var = conv(np.where(ok, np.asarray(sem, dtype=float) ** 2, 0.0), g**2)
        return sm, np.where(ok, np.sqrt(var) / den, np.nan)


def noise_aware_breadth(
    response_map: np.ndarray,
    sem: np.ndarray | None = None,
    *,
    repeat_maps: np.ndarray | None = None,
    baseline: str = "floor",
    floor_percentile: float = 10.0,
    spont_sem: float = 0.0,
    alpha: float = 0.05,
    level: float = 0.5,
) -> float:
    """Fraction of occupied bins reliably above the baseline and >= ``level`` of the range.

    On the smoothed map ``s`` (:func:`smoothed_map`, Gaussian sigma 1 bin) a bin is high when
    ``s_b >= b0 + level * (max(s) - b0)`` and, with ``sem``, reliably above the baseline:
    its one-sided p-value ``1 - Phi((s_b - b0) / sqrt(se_b^2 + se_0^2))`` passes
    Benjamini-Hochberg at ``alpha`` over the occupied bins. The result is the number of high
    bins over the number of occupied bins (finite map, and finite SEM when given).

    Parameters
    ----------
    response_map : ndarray, shape (B, B)
        Mean response minus spontaneous (NaN: unoccupied).
    sem : ndarray, shape (B, B), optional
        Standard error of each bin (e.g. across repeats); None: no reliability test.
    repeat_maps : ndarray, shape (R, B, B), optional
        The per-repeat maps behind ``sem``: ``se_b`` is then the SD across repeats of the
        smoothed per-repeat maps / sqrt(R) (exact for neighbouring bins that share samples,
        as the reference's overlapping windows do); without them the
        :func:`smoothed_map` formula (independent bins).
    baseline : {"floor", "spontaneous"}, default "floor"
        ``b0``: the ``floor_percentile`` percentile of ``s`` over the occupied bins (the
        unit's own response floor; ``se_0 = 0``), or 0 (the spontaneous rate the map is
        relative to; ``se_0 = spont_sem``).
    floor_percentile : float, default 10
    spont_sem : float, default 0
        Standard error of the spontaneous rate (``baseline="spontaneous"``).
    alpha : float, default 0.05
    level : float, default 0.5

    Returns
    -------
    float
        In [0, 1]; 0 when the map never rises above ``b0``; NaN when no bin is occupied.
    """
    if baseline not in ("floor", "spontaneous"):
        raise ValueError(f"baseline must be 'floor' or 'spontaneous'; got {baseline!r}")
    sm, se = smoothed_map(response_map, sem)
    if sem is not None and repeat_maps is not None:
        se = _repeat_smoothed_se(np.asarray(repeat_maps, dtype=float), np.isfinite(sm))
    occupied = np.isfinite(sm)
    if not occupied.any():
        return np.nan
    if baseline == "floor":
        b0, se0 = float(np.percentile(sm[occupied], floor_percentile)), 0.0
    else:
        b0, se0 = 0.0, float(spont_sem)
    peak = float(sm[occupied].max())
    if not peak > b0:
        return 0.0
    high = occupied & (np.nan_to_num(sm, nan=-np.inf) >= b0 + level * (peak - b0))
    if sem is not None:
        with np.errstate(invalid="ignore", divide="ignore"):
            z = (sm - b0) / np.sqrt(se**2 + se0**2)
        z = np.where(np.isnan(z), np.where(sm > b0, np.inf, -np.inf), z)  # SE 0
        p = np.where(occupied, norm.sf(z), 1.0)
        high &= _benjamini_hochberg(p, occupied, alpha)
    return float(high.sum() / occupied.sum())


def _repeat_smoothed_se(per: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """SD over repeats of the smoothed per-repeat maps (on ``valid`` bins) / sqrt(R)."""
    per = np.where(valid[None], per, np.nan)
    sm = np.stack([smoothed_map(p)[0] for p in per])
    n = np.isfinite(sm).sum(0)
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        se = np.nanstd(sm, axis=0, ddof=1) / np.sqrt(n)
    return np.where(valid & (n >= 2), se, np.nan)


def _benjamini_hochberg(p: np.ndarray, among: np.ndarray, alpha: float) -> np.ndarray:
    """Discoveries of the BH step-up procedure at ``alpha`` over the ``among`` entries."""
    out = np.zeros(p.shape, dtype=bool)
    vals = p[among]
    if vals.size == 0:
        return out
    order = np.argsort(vals, kind="stable")
    ranked = vals[order]
    passed = ranked <= alpha * np.arange(1, vals.size + 1) / vals.size
    if passed.any():
        cut = ranked[np.nonzero(passed)[0].max()]
        out[among] = vals <= cut
    return out


def repeat_index_per_bin(
    sound_id: np.ndarray, trial_bins: np.ndarray, n_bins: int, start: np.ndarray | None = None
) -> np.ndarray:
    """Repeat index of every time bin of a repeated sound, -1 elsewhere.

    Parameters
    ----------
    sound_id : ndarray, shape (n_trials,)
        Sound of each presentation.
    trial_bins : ndarray of int, shape (n_trials, 2)
        ``[first, stop)`` bins of each presentation (e.g. ``SessionData.trial_bins``).
    n_bins : int
    start : ndarray, shape (n_trials,), optional
        Onset times ordering the presentations of a sound (default: ``trial_bins[:, 0]``).

    Returns
    -------
    ndarray of int64, shape (n_bins,)
        ``r`` (0-based, in time order) on the bins of the r-th presentation of a sound
        presented at least twice; -1 on bins of sounds presented once and outside trials.
    """
    sound = np.asarray([str(s) for s in np.asarray(sound_id, dtype=object).reshape(-1)])
    tb = np.asarray(trial_bins, dtype=np.int64).reshape(-1, 2)
    if tb.shape[0] != sound.size:
        raise ValueError(f"{sound.size} sound ids for {tb.shape[0]} trial bin ranges; align them")
    onset = tb[:, 0] if start is None else np.asarray(start, dtype=float).reshape(-1)
    out = np.full(int(n_bins), -1, dtype=np.int64)
    for s in np.unique(sound):
        idx = np.nonzero(sound == s)[0]
        if idx.size < 2:
            continue
        for r, i in enumerate(idx[np.argsort(onset[idx], kind="stable")]):
            out[max(tb[i, 0], 0) : min(tb[i, 1], n_bins)] = r
    return out


def _spontaneous_bins(X: np.ndarray, n_lags: int, fraction: float = 0.05) -> np.ndarray:
    """Mask of the bins whose D-bin stimulus window has the least energy."""
    energy = project_stimulus(X, np.ones((1, X.shape[1], n_lags)))[:, 0]
    return energy <= np.quantile(energy, fraction)


class _Binning:
    """Sub-bin indices of one pair of projections on one grid (windows of ``window`` bins)."""

    def __init__(self, px, py, ex, ey, window: int) -> None:
        self.b, self.w = ex.size - 1, int(window)
        self.n_sub = 2 * self.b + 2 * (self.w - 1)
        sx, okx = self._sub(px, ex)
        sy, oky = self._sub(py, ey)
        self.keep = okx & oky
        self.flat = sx[self.keep] * self.n_sub + sy[self.keep]

    def _sub(self, p: np.ndarray, e: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        half = (e[1] - e[0]) / 2
        lo = e[0] - (self.w - 1) * half
        hi = e[-1] + (self.w - 1) * half
        s = np.floor((p - lo) / half).astype(np.int64)
        s[p == hi] = self.n_sub - 1  # the top edge belongs to the last bin
        return s, (s >= 0) & (s < self.n_sub) & (p <= hi)

    def sums(self, weights: np.ndarray | None) -> np.ndarray:
        """Window sums (B, B) of ``weights`` (None: counts) over the kept samples."""
        w = None if weights is None else weights[self.keep]
        sub = np.bincount(self.flat, weights=w, minlength=self.n_sub**2)
        sub = sub.reshape(self.n_sub, self.n_sub)
        c = np.zeros((self.n_sub + 1, self.n_sub + 1))
        c[1:, 1:] = sub.cumsum(0).cumsum(1)
        lo = 2 * np.arange(self.b)
        hi = lo + 2 * self.w
        return c[hi][:, hi] - c[lo][:, hi] - c[hi][:, lo] + c[lo][:, lo]


def _map_stats(
    binning: _Binning, resp: np.ndarray, min_occ: int, repeats: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """Mean map, SEM map, occupancy and per-repeat maps of one response on one binning.

    ``repeats`` (aligned with ``resp``): SEM across per-repeat maps; None: sample SEM (and
    no per-repeat maps).
    """
    occ = np.rint(binning.sums(None)).astype(np.int64)
    tot = binning.sums(resp)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(occ >= min_occ, tot / np.maximum(occ, 1), np.nan)
        if repeats is None:
            sq = binning.sums(resp**2)
            var = np.maximum(sq / np.maximum(occ, 1) - (tot / np.maximum(occ, 1)) ** 2, 0.0)
            sem = np.sqrt(var * occ / np.maximum(occ - 1, 1)) / np.sqrt(np.maximum(occ, 1))
            sem = np.where((occ >= min_occ) & (occ >= 2), sem, np.nan)
            return mean, sem, occ, None
        per = []
        for r in np.unique(repeats[repeats >= 0]):
            sel = (repeats == r).astype(float)
            n_r = binning.sums(sel)
            per.append(np.where(n_r > 0, binning.sums(resp * sel) / np.maximum(n_r, 1), np.nan))
        per_r = np.asarray(per)
        n_rep = np.isfinite(per_r).sum(0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            sd = np.nanstd(per_r, axis=0, ddof=1)
        sem = np.where((n_rep >= 2) & (occ >= min_occ), sd / np.sqrt(np.maximum(n_rep, 1)), np.nan)
    mean = np.where(np.isfinite(sem), mean, np.nan)
    return mean, sem, occ, np.where(np.isfinite(mean)[None], per_r, np.nan)


def subspace_rfs(
    tuning: TuningSubspaces,
    X: np.ndarray,
    *,
    prediction: np.ndarray | None = None,
    counts: np.ndarray | None = None,
    rate: float,
    bins: np.ndarray | None = None,
    grid: str = "reference",
    pairs: str | list[tuple[int, int]] | None = None,
    n_bins: int | None = None,
    percentiles: tuple[float, float] | None = None,
    min_occupancy: int | None = None,
    window: int | None = None,
    high_activity_threshold: float = 0.5,
    max_dims: int = 3,
    repeats: np.ndarray | None = None,
    alpha: float = 0.05,
    baseline: str = "floor",
    n_shape_null: int = 200,
    seed: int = 0,
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
    grid : {"reference", "ours"}, default "reference"
        The recipe in :data:`GRIDS`; ``pairs``, ``n_bins``, ``percentiles``,
        ``min_occupancy`` and ``window`` override single parts of it when given.
    pairs : "reference", "first", "all" or list of (int, int), optional
        "reference": (0, 1) and (0, 2) when at least 3 components are stored, else (0, 1);
        "first": (0, 1); "all": every pair among the top ``max_dims`` dimensions (limited by
        each unit's dimensionality, at least 2); or explicit pairs.
    n_bins, percentiles, min_occupancy, window : optional
        See :class:`SrfGrid`.
    high_activity_threshold : float, default 0.5
        Level of both breadth measures.
    max_dims : int, default 3
    repeats : ndarray of int, shape (n_bins,), optional
        Repeat index of each bin of a repeated sound, -1 elsewhere
        (:func:`repeat_index_per_bin`): measured maps then use those bins only and their SEM
        is across repeats (module docstring).
    alpha : float, default 0.05
        False-discovery rate of the "reliably above the baseline" bins of the breadth, and
        the level of the shape test.
    baseline : {"floor", "spontaneous"}, default "floor"
        Baseline of the breadth (:func:`noise_aware_breadth`).
    n_shape_null : int, default 200
        Null maps per row of :func:`shape_test`.
    seed : int, default 0

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
    g = _resolve_grid(grid, pairs, n_bins, percentiles, min_occupancy, window)
    n_units = tuning.unit_rows.size
    sources = _response_sources(prediction, counts, (X.shape[0], n_units))
    mask = _check_map_options(g.n_bins, g.percentiles, rate, bins, X.shape[0])
    rep = _check_repeats(repeats, X.shape[0])
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1); got {alpha!r}, e.g. 0.05")
    if baseline not in ("floor", "spontaneous"):
        raise ValueError(f"baseline must be 'floor' or 'spontaneous'; got {baseline!r}")
    spont = _spontaneous_bins(X, tuning.components.shape[3])
    rng = np.random.default_rng(seed)
    rows: list[dict] = []
    for u in range(n_units):
        unit_pairs = _unit_pairs(g.pairs, int(tuning.dimensionality[u]), max_dims,
                                 tuning.components.shape[1])  # fmt: skip
        need = max(max(pr) for pr in unit_pairs) + 1
        if need > tuning.components.shape[1]:
            raise ValueError(
                f"pair dimensions up to {need - 1} requested but only "
                f"{tuning.components.shape[1]} components are stored"
            )
        proj = project_stimulus(X, tuning.components[u, :need])
        for pair in unit_pairs:
            for name, arr in sources:
                resp = arr[:, u] * rate
                row = _one_map(
                    proj, pair, resp, mask, spont, g, rep if name == "measured" else None
                )
                if name == "model":  # a prediction has no trial-to-trial noise
                    row["sem"] = np.full_like(row["map"], np.nan)
                row.update(
                    _row_measures(row, high_activity_threshold, alpha, n_shape_null, rng, baseline)
                )
                rows.append({"u": tuning.unit_rows[u], "dims": pair, "src": name, **row})
    return _collect(rows, high_activity_threshold, g, rep)


def _resolve_grid(grid, pairs, n_bins, percentiles, min_occupancy, window) -> SrfGrid:
    """The grid recipe with the given overrides, checked."""
    if grid not in GRIDS:
        raise ValueError(f"grid must be one of {sorted(GRIDS)}; got {grid!r}")
    g = GRIDS[grid]
    g = SrfGrid(
        g.n_bins if n_bins is None else n_bins,
        g.percentiles if percentiles is None else tuple(percentiles),
        g.min_occupancy if min_occupancy is None else min_occupancy,
        g.window if window is None else window,
        g.pairs if pairs is None else pairs,
    )
    for name in ("min_occupancy", "window"):
        v = getattr(g, name)
        if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < 1:
            raise ValueError(f"{name} must be an int >= 1; got {v!r}")
    return g


def _check_repeats(repeats: np.ndarray | None, n: int) -> np.ndarray | None:
    """``repeats`` as int64 of shape (n,), or None when it holds fewer than 2 repeats."""
    if repeats is None:
        return None
    rep = np.asarray(repeats)
    if rep.shape != (n,) or not np.issubdtype(rep.dtype, np.integer):
        raise ValueError(f"repeats must be an int array of shape ({n},) (-1: not repeated)")
    rep = rep.astype(np.int64)
    return rep if np.unique(rep[rep >= 0]).size >= 2 else None


def _one_map(proj, pair, resp, mask, spont, g: SrfGrid, rep) -> dict:
    """Map, SEM, occupancy, edges and spontaneous SEM of one pair and response."""
    i, j = pair
    px, py = proj[mask, i], proj[mask, j]
    ex, ey = _grid_edges(px, py, g.percentiles, g.n_bins)
    base = float(resp[spont].mean())
    sp = resp[spont]
    spont_sem = float(sp.std(ddof=1) / np.sqrt(sp.size)) if sp.size > 1 else 0.0
    if rep is None:
        binning = _Binning(px, py, ex, ey, g.window)
        m, sem, occ, per = _map_stats(binning, resp[mask] - base, g.min_occupancy, None)
    else:
        sel = mask & (rep >= 0)
        binning = _Binning(proj[sel, i], proj[sel, j], ex, ey, g.window)
        m, sem, occ, per = _map_stats(binning, resp[sel] - base, g.min_occupancy, rep[sel])
    return {
        "map": m, "sem": sem, "occ": occ, "ex": ex, "ey": ey, "spont_sem": spont_sem, "per": per
    }  # fmt: skip


def _row_measures(row: dict, level: float, alpha: float, n_null: int, rng, baseline: str) -> dict:
    """Old breadth and asymmetry, noise-aware breadth and the shape test of one map."""
    m = row["map"]
    sem = row["sem"] if np.isfinite(row["sem"]).any() else None
    norm_m = normalised_map(m)
    asym, _ = shape_asymmetry(norm_m)
    _, index, p = shape_test(m, row["occ"], sem, n_null=n_null, rng=rng)
    return {
        "breadth": int(np.nansum(norm_m >= level)),
        "asym": asym,
        "bfrac": noise_aware_breadth(
            m,
            sem,
            repeat_maps=row["per"] if sem is not None else None,
            baseline=baseline,
            spont_sem=row["spont_sem"],
            alpha=alpha,
            level=level,
        ),
        "index": index,
        "p": p,
        "peak_z": (
            srf_peak_z(m, sem, repeat_maps=row["per"])
            if sem is not None and row["per"] is not None
            else np.nan
        ),
    }


def _collect(rows: list[dict], level: float, g: SrfGrid, rep) -> SubspaceRFs:
    def stack(key, dtype=None):
        return np.asarray([r[key] for r in rows], dtype=dtype)

    return SubspaceRFs(
        unit_rows=stack("u", np.int64),
        dimensions=stack("dims", np.int64).reshape(-1, 2),
        response_source=stack("src"),
        response_map=stack("map", float),
        occupancy=stack("occ", np.int64),
        edges_x=stack("ex", float),
        edges_y=stack("ey", float),
        breadth=stack("breadth", np.int64),
        shape_asymmetry=stack("asym", float).reshape(-1, 2),
        high_activity_threshold=float(level),
        response_map_sem=stack("sem", float),
        breadth_fraction=stack("bfrac", float),
        curve_asymmetry=stack("index", float),
        shape_p_value=stack("p", float),
        peak_z=stack("peak_z", float),
        grid=_grid_text(g),
        sem_method="repeats" if rep is not None else "samples",
    )


def _grid_text(g: SrfGrid) -> str:
    lo, hi = g.percentiles
    return (
        f"{g.n_bins}x{g.n_bins} bins over percentiles {lo:g}-{hi:g}, >= {g.min_occupancy} "
        f"samples, window {g.window} bin(s), pairs {g.pairs}"
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
    pairs: str | list[tuple[int, int]], dimensionality: int, max_dims: int, n_stored: int = 3
) -> list[tuple[int, ...]]:
    """Dimension pairs of one unit (see ``pairs`` of :func:`subspace_rfs`)."""
    n_dim = max(2, min(dimensionality, max_dims))
    if pairs == "first":
        return [(0, 1)]
    if pairs == "reference":
        return [(0, 1), (0, 2)] if n_stored >= 3 else [(0, 1)]
    if pairs == "all":
        return list(itertools.combinations(range(n_dim), 2))
    if isinstance(pairs, str):
        raise ValueError(f"pairs must be 'reference', 'first', 'all' or a list; got {pairs!r}")
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


def srf_shape_classes(
    srfs: SubspaceRFs, source: str = "model", alpha: float = 0.05
) -> dict[int, str]:
    """Shape class per unit row from its first ``source`` map.

    From the stored ``curve_asymmetry`` and ``shape_p_value`` (:func:`shape_test`) when present;
    else, for results from older files, the old rule (:func:`shape_class`: fixed 0.35 on the
    normalised map's marginals).
    """
    out: dict[int, str] = {}
    index, pval = srfs.curve_asymmetry, srfs.shape_p_value
    for r in range(srfs.unit_rows.size):
        row = int(srfs.unit_rows[r])
        if srfs.response_source[r] != source or row in out:
            continue
        if index is not None and pval is not None:
            out[row] = _shape_from(
                float(index[r]), float(pval[r]), alpha, REFERENCE_SHAPE_THRESHOLD
            )
            continue
        asym, depth = shape_asymmetry(normalised_map(srfs.response_map[r]))
        out[row] = shape_class(asym, depth)
    return out


def concatenate_rfs(*parts: SubspaceRFs) -> SubspaceRFs:
    """One :class:`~nwb_subspace.results.SubspaceRFs` holding the rows of ``parts`` in order.

    For SRFs computed in separate calls (e.g. model maps on each stimulus bin once, measured
    maps on every presentation with repeat-wise errors). The parts must share the high-activity
    threshold and the grid recipe; the table's ``sem_method`` is that of the parts whose
    measured rows carry an error map (``"repeats"`` wins over ``"samples"``).

    Raises
    ------
    ValueError
        No parts, or parts with different thresholds or grids.
    """
    if not parts:
        raise ValueError("give at least one SubspaceRFs to concatenate")
    first = parts[0]
    for p in parts[1:]:
        if p.high_activity_threshold != first.high_activity_threshold or p.grid != first.grid:
            raise ValueError(
                "SRFs to concatenate must share the high-activity threshold and the grid; got "
                f"{first.high_activity_threshold}/{first.grid!r} and "
                f"{p.high_activity_threshold}/{p.grid!r}"
            )

    def cat(name: str):
        values = [getattr(p, name) for p in parts]
        if any(v is None for v in values):
            return None
        return np.concatenate([np.asarray(v) for v in values])

    methods = [p.sem_method for p in parts if "measured" in set(np.asarray(p.response_source))]
    return SubspaceRFs(
        unit_rows=cat("unit_rows"),
        dimensions=cat("dimensions"),
        response_source=cat("response_source"),
        response_map=cat("response_map"),
        occupancy=cat("occupancy"),
        edges_x=cat("edges_x"),
        edges_y=cat("edges_y"),
        breadth=cat("breadth"),
        shape_asymmetry=cat("shape_asymmetry"),
        high_activity_threshold=first.high_activity_threshold,
        name=first.name,
        response_map_sem=cat("response_map_sem"),
        breadth_fraction=cat("breadth_fraction"),
        curve_asymmetry=cat("curve_asymmetry"),
        shape_p_value=cat("shape_p_value"),
        peak_z=cat("peak_z"),
        snr_target_z=cat("snr_target_z"),
        keep_probability=cat("keep_probability"),
        breadth_snr_matched=cat("breadth_snr_matched"),
        grid=first.grid,
        sem_method="repeats" if "repeats" in methods else (methods[0] if methods else ""),
        snr_matching=next((p.snr_matching for p in parts if p.snr_matching), ""),
    )


def srf_peak_z(
    response_map: np.ndarray,
    sem: np.ndarray | None,
    *,
    repeat_maps: np.ndarray | None = None,
    floor_percentile: float = 10.0,
    pool_sigma: float = 2.0,
) -> float:
    """Peak signal-to-noise ratio of a measured SRF: ``max_b (s_b - floor) / se_pool_b``.

    ``s`` is the smoothed map (:func:`smoothed_map`, Gaussian sigma 1 bin), ``floor`` its
    ``floor_percentile`` percentile over the occupied bins (as :func:`noise_aware_breadth`),
    ``se`` the standard error of ``s`` (SD over repeats of the smoothed per-repeat maps /
    sqrt(R) with ``repeat_maps``, else the :func:`smoothed_map` formula for independent bins)
    and ``se_pool`` its variance smoothed over neighbouring bins (Gaussian, ``pool_sigma``
    bins), floored at its median over the occupied bins, so that a bin whose SE happens to be
    small (a sparse unit that rarely fired there) cannot set the peak.

    Parameters
    ----------
    response_map, sem : ndarray, shape (B, B)
        The measured map (minus spontaneous) and its SEM; NaN: unoccupied. ``sem`` None: NaN.
    repeat_maps : ndarray, shape (R, B, B), optional
        The per-repeat maps behind ``sem``.
    floor_percentile : float, default 10
    pool_sigma : float, default 2

    Returns
    -------
    float
        NaN when no bin has a finite map and SE.
    """
    if sem is None:
        return np.nan
    sm, se = smoothed_map(response_map, sem)
    if repeat_maps is not None:
        se = _repeat_smoothed_se(np.asarray(repeat_maps, dtype=float), np.isfinite(sm))
    occ = np.isfinite(sm) & np.isfinite(se)
    if not occ.any():
        return np.nan
    floor = float(np.percentile(sm[occ], floor_percentile))
    pooled = np.sqrt(_smooth(np.where(occ, se**2, np.nan), pool_sigma))
    # a bin where a sparse unit rarely fired has a tiny, badly estimated SE: floor it at the
    # map's median pooled SE, or thinned maps' peak z jumps (113 +- 109 instead of ~9)
    pooled = np.maximum(pooled, np.nanmedian(pooled[occ]))
    with np.errstate(invalid="ignore", divide="ignore"):
        z = np.where(occ & (pooled > 0), (sm - floor) / pooled, np.nan)
    return float(np.nanmax(z)) if np.isfinite(z).any() else np.nan


def site_keep_probability(
    peak_z: np.ndarray, sites: np.ndarray | list, gate: float = 5.0
) -> tuple[np.ndarray, np.ndarray]:
    """Per unit, the probability of keeping a spike that brings it to its site's SNR.

    Per site ``z* = min{Z_u : Z_u >= gate}`` over its units; ``p_u = (z* / Z_u)^2`` for the
    units with ``Z_u >= gate`` (for Poisson-like counts thinning scales the map's signal by
    ``p`` and its noise by ``sqrt(p)``, so ``Z`` by ``sqrt(p)``), 1 (not thinned) for the
    others: a unit below the gate has no reliable SRF and is already at or below the site's
    SNR; leaving it out would select units on their SNR.

    Parameters
    ----------
    peak_z : ndarray, shape (n,)
        :func:`srf_peak_z` of each unit's measured map (NaN: none).
    sites : array-like, shape (n,)
        Site of each unit.
    gate : float, default 5
        Peak z below which a unit has no reliable SRF (pure-noise maps on the reference grid
        with 6 sounds x 10 repeats: median 4.2, 95th percentile 6.6).

    Returns
    -------
    keep : ndarray of float, shape (n,)
        In (0, 1].
    target : ndarray of float, shape (n,)
        The ``z*`` of each unit's site (NaN when no unit of the site passes the gate).
    """
    z = np.asarray(peak_z, dtype=float)
    labels = np.asarray([str(s) for s in np.asarray(sites, dtype=object).ravel()])
    if z.ndim != 1 or labels.shape != z.shape:
        raise ValueError(f"{labels.size} site labels for {z.size} peak z values; align them")
    if not (np.isfinite(gate) and gate > 0):
        raise ValueError(f"gate must be a positive number; got {gate!r}, e.g. 5")
    keep, target = np.ones(z.shape), np.full(z.shape, np.nan)
    for site in dict.fromkeys(labels.tolist()):
        here = labels == site
        ok = here & np.isfinite(z) & (z >= gate)
        if not ok.any():
            continue
        z_star = float(z[ok].min())
        target[here] = z_star
        keep[ok] = np.minimum(1.0, (z_star / z[ok]) ** 2)
    return keep, target


# long: argument checks, then one loop over units and draws with the map recipe of subspace_rfs
def snr_matched_breadth(
    tuning: TuningSubspaces,
    X: np.ndarray,
    counts: np.ndarray,
    keep: np.ndarray,
    *,
    rate: float,
    bins: np.ndarray | None = None,
    repeats: np.ndarray,
    target: np.ndarray | None = None,
    n_calibration: int = 2,
    calibration_draws: int = 4,
    n_draws: int = 10,
    seed: int = 0,
    grid: str = "reference",
    n_bins: int | None = None,
    percentiles: tuple[float, float] | None = None,
    min_occupancy: int | None = None,
    window: int | None = None,
    high_activity_threshold: float = 0.5,
    alpha: float = 0.05,
    baseline: str = "floor",
) -> tuple[np.ndarray, np.ndarray]:
    """Noise-aware breadth of each unit's measured SRF (dimensions 0-1) after thinning.

    Each spike of unit ``i`` is kept with probability ``keep[i]`` (binomial thinning of its
    counts); the breadth is :func:`noise_aware_breadth` of the thinned measured map, exactly
    as :func:`subspace_rfs` measures ``breadth_fraction`` on the same grid, averaged over
    ``n_draws`` draws. Units with ``keep == 1`` are measured once, unthinned (their value is
    their ``breadth_fraction``). Each unit draws from its own stream (``seed``, unit index),
    so a unit's value does not depend on the others.

    With ``target`` (each unit's target peak z, :func:`site_keep_probability`) the keep
    probability is first calibrated: ``n_calibration`` times, the mean :func:`srf_peak_z` of
    ``calibration_draws`` thinned maps ``z_t`` updates ``p <- min(1, p * (target / z_t)^2)``.
    ``(z* / Z)^2`` alone leaves the thinned maps above the target (the peak of a noisier map
    is biased up by its noise; on simulated bowl units at 2x the rate: 1.14x for narrow
    units, 1.06x for broad ones), which kept a residual narrow-broader bias (0.057, p = 0.002
    with 10 sites); two rounds removed it (-0.003, p = 1.0).

    Parameters
    ----------
    tuning : TuningSubspaces
    X : ndarray, shape (n_bins, F)
    counts : ndarray, shape (n_bins, n_units)
        Spike counts per bin (whole numbers); column ``i`` belongs to tuning row ``i``.
    keep : ndarray, shape (n_units,)
        Probability of keeping each spike (:func:`site_keep_probability`), in (0, 1].
    rate : float
        Bins per second.
    bins : ndarray of bool, optional
        The presented bins (as :func:`subspace_rfs`).
    repeats : ndarray of int, shape (n_bins,)
        Repeat index per bin (:func:`repeat_index_per_bin`); at least 2 repeats.
    target : ndarray, shape (n_units,), optional
        Peak z each thinned unit is calibrated to (NaN or None: no calibration).
    n_calibration : int, default 2
        Calibration rounds (0: none).
    calibration_draws : int, default 4
        Thinned maps per calibration round.
    n_draws : int, default 10
        Thinning draws averaged. With 3 draws one of 10 simulated designs gave a false
        narrow-vs-broad difference (p = 0.025); with 12 none did.
    seed : int, default 0
    grid, n_bins, percentiles, min_occupancy, window, high_activity_threshold, alpha, baseline
        As :func:`subspace_rfs`.

    Returns
    -------
    breadth : ndarray of float, shape (n_units,)
        NaN where the map is empty in every draw.
    keep : ndarray of float, shape (n_units,)
        The keep probabilities used (after calibration).
    """
    X = np.asarray(X, dtype=np.float64)
    if not isinstance(tuning, TuningSubspaces):
        raise TypeError(f"tuning must be a TuningSubspaces; got {type(tuning).__name__}")
    n_units = tuning.unit_rows.size
    counts = np.asarray(counts, dtype=float)
    keep = np.asarray(keep, dtype=float)
    if counts.shape != (X.shape[0], n_units) or keep.shape != (n_units,):
        raise ValueError(
            f"counts must be (n_bins, n_units) = ({X.shape[0]}, {n_units}) and keep "
            f"({n_units},), aligned with tuning; got {counts.shape} and {keep.shape}"
        )
    if not np.all((keep > 0) & (keep <= 1)):
        raise ValueError("keep probabilities must be in (0, 1]")
    whole = np.rint(counts)
    if np.any(np.abs(counts - whole) > 1e-9) or np.any(whole < 0):
        raise ValueError("counts must be non-negative whole spike counts to be thinned")
    for name, value, low in (
        ("n_draws", n_draws, 1), ("n_calibration", n_calibration, 0),
        ("calibration_draws", calibration_draws, 1),
    ):  # fmt: skip
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
            raise ValueError(f"{name} must be an int >= {low}; got {value!r}")
    target = np.full(n_units, np.nan) if target is None else np.asarray(target, dtype=float)
    if target.shape != (n_units,):
        raise ValueError(f"target must give one peak z per unit ({n_units}); got {target.shape}")
    g = _resolve_grid(grid, "first", n_bins, percentiles, min_occupancy, window)
    mask = _check_map_options(g.n_bins, g.percentiles, rate, bins, X.shape[0])
    rep = _check_repeats(repeats, X.shape[0])
    if rep is None:
        raise ValueError("the SNR-matched breadth needs at least 2 repeats (repeat-wise errors)")
    if baseline not in ("floor", "spontaneous"):
        raise ValueError(f"baseline must be 'floor' or 'spontaneous'; got {baseline!r}")
    spont = _spontaneous_bins(X, tuning.components.shape[3])
    whole = whole.astype(np.int64)
    out, used = np.full(n_units, np.nan), keep.copy()

    def thinned_map(u: int, proj: np.ndarray, p: float, rng: np.random.Generator) -> dict:
        c = whole[:, u] if p >= 1 else rng.binomial(whole[:, u], p)
        return _one_map(proj, (0, 1), c * float(rate), mask, spont, g, rep)

    for u in range(n_units):
        proj = project_stimulus(X, tuning.components[u, :2])
        rng = np.random.default_rng([int(seed), u])
        for _ in range(n_calibration if np.isfinite(target[u]) else 0):
            if used[u] >= 1:
                break
            zs = []
            for _ in range(calibration_draws):
                row = thinned_map(u, proj, used[u], rng)
                zs.append(srf_peak_z(row["map"], row["sem"], repeat_maps=row["per"]))
            z_t = float(np.nanmean(zs)) if np.isfinite(zs).any() else np.nan
            if np.isfinite(z_t) and z_t > 0:
                used[u] = min(1.0, used[u] * (target[u] / z_t) ** 2)
        values = []
        for _ in range(1 if used[u] >= 1 else int(n_draws)):
            row = thinned_map(u, proj, used[u], rng)
            sem = row["sem"] if np.isfinite(row["sem"]).any() else None
            values.append(
                noise_aware_breadth(
                    row["map"],
                    sem,
                    repeat_maps=row["per"] if sem is not None else None,
                    baseline=baseline,
                    spont_sem=row["spont_sem"],
                    alpha=alpha,
                    level=high_activity_threshold,
                )  # fmt: skip
            )
        finite = np.asarray(values, dtype=float)
        if np.isfinite(finite).any():
            out[u] = float(np.nanmean(finite))
    return out, used


def with_snr_matched_breadth(
    srfs: SubspaceRFs,
    tuning: TuningSubspaces,
    X: np.ndarray,
    counts: np.ndarray,
    sites: np.ndarray | list,
    *,
    gate: float = 5.0,
    n_draws: int = 10,
    seed: int = 0,
    **options,
) -> SubspaceRFs:
    """``srfs`` with the SNR-matched breadth of every unit on its measured dimension 0-1 row.

    Fills ``peak_z`` (kept as measured), ``snr_target_z``, ``keep_probability`` and
    ``breadth_snr_matched`` on the measured rows of dimensions (0, 1); NaN on the other rows.

    Parameters
    ----------
    srfs : SubspaceRFs
        From :func:`subspace_rfs` with ``counts`` and ``repeats`` (measured rows carry
        ``peak_z``).
    tuning : TuningSubspaces
        The tuning subspaces the SRFs were mapped in.
    X, counts
        As :func:`snr_matched_breadth`.
    sites : array-like, shape (n_units,)
        Site of each tuning unit (the matching is within sites).
    gate, n_draws, seed
        :func:`site_keep_probability` and :func:`snr_matched_breadth`.
    **options
        ``rate``, ``bins``, ``repeats`` and the grid options of the measured maps.
    """
    if srfs.peak_z is None:
        raise ValueError("these SRFs carry no peak_z; compute them with subspace_rfs first")
    n_units = tuning.unit_rows.size
    if np.asarray(sites).shape != (n_units,):
        raise ValueError(f"sites must name the site of all {n_units} tuning units")
    dims = np.asarray(srfs.dimensions).reshape(-1, 2)
    first = (np.asarray(srfs.response_source) == "measured") & (dims[:, 0] == 0) & (dims[:, 1] == 1)
    where = {int(r): i for i, r in zip(np.flatnonzero(first), srfs.unit_rows[first], strict=True)}
    missing = [int(r) for r in tuning.unit_rows if int(r) not in where]
    if missing:
        raise ValueError(f"no measured map on dimensions 0-1 for unit rows {missing}")
    idx = np.array([where[int(r)] for r in tuning.unit_rows], dtype=np.int64)
    z = np.asarray(srfs.peak_z, dtype=float)[idx]
    keep, target = site_keep_probability(z, sites, gate)
    matched, keep = snr_matched_breadth(
        tuning, X, counts, keep, target=target, n_draws=n_draws, seed=seed, **options
    )
    columns = {name: np.full(srfs.unit_rows.size, np.nan) for name in ("t", "k", "b")}
    columns["t"][idx], columns["k"][idx], columns["b"][idx] = target, keep, matched
    names = list(dict.fromkeys(str(x) for x in np.asarray(sites, dtype=object).ravel()))
    text = (
        f"gate {gate:g}, {n_draws} thinning draws, seed {seed}, matched within "
        f"{len(names)} site(s): {', '.join(names)}"
    )
    return replace(
        srfs, snr_target_z=columns["t"], keep_probability=columns["k"],
        breadth_snr_matched=columns["b"], snr_matching=text,
    )  # fmt: skip
