"""Tiling: units' high-activity regions on a site's shared plane and their overlap.

:func:`tiling` maps every unit of a site on the site's top two PCs (one grid for all units),
finds each unit's high-activity region and tests the site-wide overlap against a null of
randomly shifted regions. :func:`tiling_from_stored` rebuilds a :class:`TilingResult` for a
figure from what the NWB file holds (the site SRFs and the site statistics row), without
refitting anything.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from nwb_subspace.results import SiteSubspaceResult, SubspaceRFs, TuningSubspaces
from nwb_subspace.site.groups import p_greater, stat_row, z_score
from nwb_subspace.subspace.srf import normalised_map, subspace_rfs

__all__ = ["TILING_STATISTIC", "TilingResult", "nan_diag", "tiling", "tiling_from_stored"]

#: Name of the site statistics row holding the tiling test.
TILING_STATISTIC = "tiling_overlap_mean"


def nan_diag(m: np.ndarray) -> np.ndarray:
    m = np.array(m, dtype=float)
    np.fill_diagonal(m, np.nan)
    return m


@dataclass
class TilingResult:
    """Units' high-activity regions on a site's plane (site PCs 1-2) and their overlap.

    ``srfs`` holds every unit's map (``source`` response); ``unit_rows``, ``regions`` (bool,
    ``(n, B, B)``) and the ``(n, n)`` matrices ``overlap`` (Jaccard), ``overlap_null_mean`` and
    ``overlap_p_above`` (``P(null >= obs)``; diagonals NaN) cover the units with a region.
    ``null`` holds the mean pairwise overlap of each shift draw; ``p_value`` is two-sided,
    ``min(1, 2 min(p_above, p_below))``. ``verdict`` is "overlap above chance", "overlap at
    chance", "overlap below chance" or "not tested: <reason>".
    """

    site: str
    unit_rows: np.ndarray
    srfs: SubspaceRFs | None = None
    source: str = ""
    regions: np.ndarray | None = None
    overlap: np.ndarray | None = None
    overlap_null_mean: np.ndarray | None = None
    overlap_p_above: np.ndarray | None = None
    mean_overlap: float = float("nan")
    null: np.ndarray | None = None
    p_above: float = float("nan")
    p_below: float = float("nan")
    p_value: float = float("nan")
    verdict: str = "not tested"
    alpha: float = 0.05
    notes: list[str] = field(default_factory=list)

    @property
    def tested(self) -> bool:
        """Whether the overlap was tested (at least two units with a region)."""
        return not self.verdict.startswith("not tested")

    def rows(self) -> list[dict]:
        """Site statistics rows (empty when not tested, and for a result rebuilt by
        :func:`tiling_from_stored`, whose row is stored already and whose null draws are not)."""
        if not self.tested or self.null is None:
            return []
        test = (
            f"mean pairwise Jaccard of high-activity regions vs {self.null.size} independent "
            f"random circular 2-D shifts per unit (two-sided, alpha {self.alpha})"
        )
        z = z_score(self.mean_overlap, self.null)
        n = self.unit_rows.size
        return [
            stat_row(
                self.site, TILING_STATISTIC, self.mean_overlap, self.null.mean(),
                self.p_value, z, n, test, self.verdict,
            )
        ]  # fmt: skip


def _jaccard(r: np.ndarray) -> np.ndarray:
    """Jaccard overlap of every pair of flattened boolean regions ``r`` (n, B*B)."""
    r = r.astype(np.float64)
    inter = r @ r.T
    union = r.sum(1)[:, None] + r.sum(1)[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def tiling(
    site: SiteSubspaceResult,
    X: np.ndarray,
    *,
    prediction: np.ndarray | None = None,
    counts: np.ndarray | None = None,
    rate: float,
    bins: np.ndarray | None = None,
    n_bins: int = 20,
    min_occupancy: int = 10,
    high_activity_threshold: float = 0.5,
    n_shifts: int = 500,
    alpha: float = 0.05,
    seed: int = 0,
) -> TilingResult:
    """SRFs of a site's units on its top two PCs, their high-activity regions and overlap.

    Every unit is mapped by :func:`nwb_subspace.subspace.srf.subspace_rfs` on the same two site PCs
    (one grid for all), from the model prediction when given, else the counts. Region = bins
    where :func:`nwb_subspace.subspace.srf.normalised_map` ``>= high_activity_threshold``. Overlap of
    two units = Jaccard index of their regions; the site statistic is the mean over pairs.
    Null: ``n_shifts`` draws, each rolling every unit's region by its own random circular 2-D
    offset (uniform over the ``B x B`` grid; seeded). Verdict, two-sided at ``alpha``:
    "overlap above chance" if ``p_above < alpha / 2``, "overlap below chance" if
    ``p_below < alpha / 2``, else "overlap at chance".

    Parameters
    ----------
    site : SiteSubspaceResult
        Needs ``dimensionality >= 2``.
    X : ndarray, shape (n_bins, F)
    prediction, counts : ndarray, shape (n_bins, n_units), optional
        Counts per bin; columns follow ``site.unit_rows``.
    rate : float
        Bins per second.
    bins, n_bins, min_occupancy, high_activity_threshold
        As in :func:`nwb_subspace.subspace.srf.subspace_rfs`.
    n_shifts : int, default 500
    alpha : float, default 0.05
    seed : int, default 0

    Returns
    -------
    TilingResult
        Not tested (``rows()`` empty, the reason in ``verdict``) when the site has one
        dimension or fewer than two units have a region.
    """
    if not isinstance(site, SiteSubspaceResult):
        raise TypeError(f"site must be a SiteSubspaceResult; got {type(site).__name__}")
    if isinstance(n_shifts, bool) or not isinstance(n_shifts, int) or n_shifts < 1:
        raise ValueError(f"n_shifts must be a positive int; got {n_shifts!r}, e.g. 500")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1); got {alpha!r}, e.g. 0.05")
    n = site.unit_rows.size
    if site.dimensionality < 2 or len(site.components) < 2:
        why = f"site {site.site!r} has {site.dimensionality} dimension(s); tiling needs 2"
        return TilingResult(site.site, site.unit_rows[:0], verdict=f"not tested: {why}")
    tuning = _on_site_plane(site)
    source = "model" if prediction is not None else "measured"
    srfs = subspace_rfs(
        tuning, X, prediction=prediction if source == "model" else None, counts=counts,
        rate=rate, bins=bins, n_bins=n_bins, min_occupancy=min_occupancy,
        high_activity_threshold=high_activity_threshold,
    )  # fmt: skip
    pick = srfs.response_source == source
    regions = np.stack([normalised_map(m) >= high_activity_threshold for m in srfs.response_map])
    regions = regions[pick]
    ok = regions.reshape(n, -1).any(1)
    notes = [f"unit {r}: no high-activity region (flat or empty map)" for r in site.unit_rows[~ok]]
    if ok.sum() < 2:
        why = f"site {site.site!r}: {ok.sum()} unit(s) with a high-activity region; need 2"
        return TilingResult(site.site, site.unit_rows[ok], srfs, source, regions[ok],
                            verdict=f"not tested: {why}", alpha=alpha, notes=[why, *notes])  # fmt: skip
    regions, m, b = regions[ok], int(ok.sum()), n_bins
    occupied = np.isfinite(srfs.response_map[pick][ok]).all(0)  # one grid: same for all units
    obs = _jaccard(regions.reshape(m, -1))
    iu = np.triu_indices(m, 1)
    null_pairs = _shifted_overlaps(regions, occupied, n_shifts, b, seed)
    null = null_pairs[:, iu[0], iu[1]].mean(1)
    mean_obs = float(obs[iu].mean())
    p_above = float(p_greater(mean_obs, null))
    p_below = float(p_greater(-mean_obs, -null))
    verdict = _verdict(p_above, p_below, alpha)
    if m < 4:
        notes.insert(0, f"site {site.site!r}: only {m} units with a region; little power")
    return TilingResult(
        site.site, site.unit_rows[ok], srfs, source, regions, nan_diag(obs),
        nan_diag(null_pairs.mean(0)), nan_diag(p_greater(obs, null_pairs)), mean_obs, null,
        p_above, p_below, min(1.0, 2 * min(p_above, p_below)), verdict, alpha, notes,
    )  # fmt: skip


def _on_site_plane(site: SiteSubspaceResult) -> TuningSubspaces:
    """Every unit of ``site`` given the site's top two PCs as its tuning subspace."""
    n = site.unit_rows.size
    comps = np.broadcast_to(np.asarray(site.components)[:2], (n, 2, *site.components.shape[1:]))
    return TuningSubspaces(
        unit_rows=site.unit_rows,
        components=comps,
        explained_variance_ratio=np.tile(site.explained_variance_ratio[:2], (n, 1)),
        dimensionality=np.full(n, 2),
        mean_dstrf=np.zeros(comps.shape[0:1] + comps.shape[2:]),
        n_frames=np.zeros(n, dtype=np.int64),
        noise_floor=np.full((n, 2), np.nan),
        frequencies=site.frequencies,
        lags_s=site.lags_s,
    )


def _shifted_overlaps(
    regions: np.ndarray, occupied: np.ndarray, n_shifts: int, b: int, seed: int
) -> np.ndarray:
    """Null pairwise overlaps, (n_shifts, m, m): each draw rolls every unit's (B x B) region
    by its own random circular offset, keeping only occupied bins."""
    m = regions.shape[0]
    rng = np.random.default_rng(seed)
    null_pairs = np.empty((n_shifts, m, m))
    grid, units = np.arange(b), np.arange(m)[:, None, None]
    for i in range(n_shifts):
        sx, sy = rng.integers(0, b, (2, m))
        ix, iy = (grid[None] - sx[:, None]) % b, (grid[None] - sy[:, None]) % b
        rolled = regions[units, ix[:, :, None], iy[:, None, :]] & occupied
        null_pairs[i] = _jaccard(rolled.reshape(m, -1))
    return null_pairs


def _verdict(p_above: float, p_below: float, alpha: float) -> str:
    """Two-sided verdict at ``alpha`` on the mean overlap."""
    if p_above < alpha / 2:
        return "overlap above chance"
    if p_below < alpha / 2:
        return "overlap below chance"
    return "overlap at chance"


def _site_regions(srfs: SubspaceRFs) -> tuple[str, np.ndarray, np.ndarray]:
    """Source used (``"model"`` when present), its rows' unit rows and boolean regions."""
    sources = np.asarray(srfs.response_source)
    source = "model" if (sources == "model").any() else "measured"
    pick = sources == source
    maps = np.asarray(srfs.response_map)[pick]
    regions = np.stack([normalised_map(m) >= srfs.high_activity_threshold for m in maps])
    return source, np.asarray(srfs.unit_rows)[pick], regions


def tiling_from_stored(
    site: SiteSubspaceResult, rows: Sequence[dict] | None = None
) -> TilingResult:
    """Rebuild a site's :class:`TilingResult` from stored results, for figures.

    Regions and pairwise Jaccard overlaps are recomputed from ``site.srfs`` (the units' maps
    on site PCs 1-2, as :func:`tiling` made and the NWB file stores them) exactly as
    :func:`tiling` computes them; the verdict, mean overlap, null mean and p-value come from
    the site's ``tiling_overlap_mean`` statistics row. The null draws are not stored, so
    ``null``, ``overlap_null_mean`` and ``overlap_p_above`` stay None and ``rows()`` is empty.

    Parameters
    ----------
    site : SiteSubspaceResult
        As read back by ``nwb_subspace.io.writer.read_results`` (``site.srfs`` may be None).
    rows : sequence of dict, optional
        Site statistics rows (e.g. ``[r for s in results.site_statistics for r in s.rows]``).

    Returns
    -------
    TilingResult
        ``verdict`` "not tested: <reason>" when no SRFs are stored, no unit has a region, or
        no tiling row of this site is given.
    """
    if not isinstance(site, SiteSubspaceResult):
        raise TypeError(f"site must be a SiteSubspaceResult; got {type(site).__name__}")
    empty = np.zeros(0, dtype=np.int64)
    if site.srfs is None or site.srfs.unit_rows.size == 0:
        why = f"site {site.site!r}: no site SRFs stored (tiling needs 2 site dimensions)"
        return TilingResult(site.site, empty, verdict=f"not tested: {why}", notes=[why])
    source, unit_rows, regions = _site_regions(site.srfs)
    ok = regions.reshape(len(regions), -1).any(1)
    match = [r for r in rows or () if r["site"] == site.site and r["statistic"] == TILING_STATISTIC]
    out = TilingResult(site.site, unit_rows[ok], site.srfs, source, regions[ok])
    if ok.sum() >= 2:
        out.overlap = nan_diag(_jaccard(regions[ok].reshape(int(ok.sum()), -1)))
    if not match:
        why = f"site {site.site!r}: no stored tiling test ({int(ok.sum())} unit(s) with a region)"
        out.verdict, out.notes = f"not tested: {why}", [why]
        return out
    row = match[0]
    out.mean_overlap, out.p_value = float(row["value"]), float(row["p_value"])
    out.verdict = str(row["verdict"])
    return out
