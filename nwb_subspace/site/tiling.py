"""Tiling: units' high-activity regions on a site's shared plane and their overlap.

:func:`tiling` maps every unit of a site on the site's top two PCs (one grid for all units),
finds each unit's high-activity region and tests the mean pairwise overlap (Jaccard) over
**all pairs** and over **neighbour pairs** (units within ``neighbour_um`` of each other in
depth; all pairs when depths are unknown, and the notes say so) against a null that keeps
each unit's occupancy: every draw rotates each unit's region by its own random angle about
the centre of the stimulus distribution on the plane (in standardised coordinates, so the
region keeps its size, shape and distance from the centre: a pocket on the dense centre of the
plane stays there). A shift of regions on the grid (the earlier null, ``null="shift"``) moves
central pockets to the sparse edges, so any site whose pockets sit near the centre overlapped
"above chance" whether the pockets clustered or scattered in the site subspace.
:func:`tiling_from_stored` rebuilds a :class:`TilingResult` for a figure from what the NWB file
holds (the site SRFs and the site statistics row), without refitting anything.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from nwb_subspace.results import SiteSubspaceResult, SubspaceRFs, TuningSubspaces
from nwb_subspace.site.groups import p_greater, stat_row, z_score
from nwb_subspace.subspace.srf import normalised_map, project_stimulus, subspace_rfs

__all__ = [
    "TILING_NEIGHBOURS_STATISTIC",
    "TILING_NULLS",
    "TILING_STATISTIC",
    "TilingResult",
    "nan_diag",
    "neighbour_pairs",
    "tiling",
    "tiling_from_stored",
]

#: Name of the site statistics row holding the tiling test (all pairs).
TILING_STATISTIC = "tiling_overlap_mean"
#: Name of the row of the same test over neighbour pairs only.
TILING_NEIGHBOURS_STATISTIC = "tiling_overlap_neighbours"
#: Nulls of :func:`tiling`: random rotations about the centre of the plane (default), or
#: random circular shifts on the grid (the earlier null, kept for comparison).
TILING_NULLS = ("rotation", "shift")


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
    ``null`` holds the mean pairwise overlap of each null draw (``null_kind``: "rotation" or
    "shift"); ``p_value`` is two-sided, ``min(1, 2 min(p_above, p_below))``. ``verdict`` is
    "overlap above chance", "overlap at chance", "overlap below chance" or "not tested:
    <reason>". The same over neighbour pairs (``neighbours``, bool ``(n, n)``):
    ``mean_overlap_neighbours``, ``null_neighbours``, ``p_value_neighbours`` and
    ``verdict_neighbours``; when no depths (or no close pair) are known these repeat the
    all-pairs test, ``verdict_neighbours`` starts "as all pairs (<why>)" and ``rows()`` gives
    no neighbour row.
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
    null_kind: str = "rotation"
    neighbours: np.ndarray | None = None
    neighbour_um: float = float("nan")
    mean_overlap_neighbours: float = float("nan")
    null_neighbours: np.ndarray | None = None
    p_value_neighbours: float = float("nan")
    verdict_neighbours: str = "not tested"

    @property
    def tested(self) -> bool:
        """Whether the overlap was tested (at least two units with a region)."""
        return not self.verdict.startswith("not tested")

    def rows(self) -> list[dict]:
        """Site statistics rows (empty when not tested, and for a result rebuilt by
        :func:`tiling_from_stored`, whose row is stored already and whose null draws are not)."""
        if not self.tested or self.null is None:
            return []
        what = (
            "random rotations of each unit's region about the centre of the plane (keeps its "
            "size and distance from the centre)"
            if self.null_kind == "rotation"
            else "random circular 2-D shifts of each unit's region on the grid"
        )
        test = (
            f"mean pairwise Jaccard of high-activity regions, all pairs, vs {self.null.size} "
            f"draws of {what} (two-sided, alpha {self.alpha})"
        )
        n = self.unit_rows.size
        rows = [
            stat_row(
                self.site, TILING_STATISTIC, self.mean_overlap, self.null.mean(),
                self.p_value, z_score(self.mean_overlap, self.null), n, test, self.verdict,
            )
        ]  # fmt: skip
        if self.null_neighbours is not None and not self.verdict_neighbours.startswith("as all"):
            pairs = int(np.triu(self.neighbours, 1).sum())
            rows.append(stat_row(
                self.site, TILING_NEIGHBOURS_STATISTIC, self.mean_overlap_neighbours,
                self.null_neighbours.mean(), self.p_value_neighbours,
                z_score(self.mean_overlap_neighbours, self.null_neighbours), n,
                f"as {TILING_STATISTIC} over the {pairs} neighbour pairs (depths within "
                f"{self.neighbour_um:g} um)", self.verdict_neighbours,
            ))  # fmt: skip
        return rows


def _jaccard(r: np.ndarray) -> np.ndarray:
    """Jaccard overlap of every pair of flattened boolean regions ``r`` (n, B*B)."""
    r = r.astype(np.float64)
    inter = r @ r.T
    union = r.sum(1)[:, None] + r.sum(1)[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def neighbour_pairs(
    depth_um: np.ndarray | None, neighbour_um: float
) -> tuple[np.ndarray | None, str | None]:
    """Which pairs of units are neighbours: depths within ``neighbour_um`` (bool ``(n, n)``,
    diagonal False), or None with the reason when fewer than two depths are known or no pair
    is that close."""
    if depth_um is None:
        return None, "unit depths unknown"
    depth = np.asarray(depth_um, dtype=float)
    known = np.isfinite(depth)
    if known.sum() < 2:
        return None, f"{int(known.sum())} unit depth(s) known"
    close = np.abs(depth[:, None] - depth[None, :]) <= neighbour_um
    close &= known[:, None] & known[None, :]
    np.fill_diagonal(close, False)
    if not close.any():
        return None, f"no two units within {neighbour_um:g} um of each other"
    return close, None


# long: maps, regions, the null draws and both verdicts of one site, in one place
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
    depth_um: np.ndarray | None = None,
    neighbour_um: float = 100.0,
    null: str = "rotation",
) -> TilingResult:
    """SRFs of a site's units on its top two PCs, their high-activity regions and overlap.

    Every unit is mapped by :func:`nwb_subspace.subspace.srf.subspace_rfs` on the same two site
    PCs (one grid for all), from the model prediction when given, else the counts. Region =
    bins where :func:`nwb_subspace.subspace.srf.normalised_map` ``>= high_activity_threshold``.
    Overlap of two units = Jaccard index of their regions; the site statistics are the mean
    over all pairs and over neighbour pairs (depths within ``neighbour_um``).

    Null (``n_shifts`` draws, seeded), ``"rotation"``: each draw turns every unit's region by
    its own random angle (72 angles, 5 degrees apart) about the mean of the stimulus
    projections on the plane, in coordinates standardised by their standard deviations (bin
    ``b`` of the turned region is the region at the bin nearest to ``R(-theta) c_b``; bins off
    the grid or unoccupied are out), drawn among the angles at which the region keeps at least
    80% of its bins (so a region near the edge of the occupied plane is not shrunk by the
    null; all angles when none does). ``"shift"``: each unit's region rolled by its own random circular 2-D offset on the
    ``B x B`` grid (the earlier null). Verdict, two-sided at ``alpha``: "overlap above chance"
    if ``p_above < alpha / 2``, "overlap below chance" if ``p_below < alpha / 2``, else "overlap
    at chance"; the same for the neighbour pairs from the same draws.

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
        Null draws.
    alpha : float, default 0.05
    seed : int, default 0
    depth_um : ndarray, shape (n_units,), optional
        Depth of each unit of ``site.unit_rows`` (NaN unknown); without two known depths the
        neighbour statistic uses all pairs and the notes say so.
    neighbour_um : float, default 100.0
    null : {"rotation", "shift"}, default "rotation"

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
    if null not in TILING_NULLS:
        raise ValueError(f"null must be one of {TILING_NULLS}; got {null!r}")
    if not neighbour_um > 0:
        raise ValueError(f"neighbour_um must be > 0 um; got {neighbour_um!r}, e.g. 100.0")
    n = site.unit_rows.size
    if depth_um is not None and np.shape(depth_um) != (n,):
        raise ValueError(f"depth_um must give the depth of each of the {n} units of the site")
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
        why = f"site {site.site!r}: {ok.sum()} unit(s) with a region; need 2"
        return TilingResult(site.site, site.unit_rows[ok], srfs, source, regions[ok],
                            verdict=f"not tested: {why}", alpha=alpha, notes=[why, *notes])  # fmt: skip
    regions, m, b = regions[ok], int(ok.sum()), n_bins
    occupied = np.isfinite(srfs.response_map[pick][ok]).all(0)  # one grid: same for all units
    obs = _jaccard(regions.reshape(m, -1))
    iu = np.triu_indices(m, 1)
    if null == "rotation":
        grid = _standard_grid(X, site, bins, srfs.edges_x[pick][0], srfs.edges_y[pick][0])
        null_pairs = _rotated_overlaps(regions, occupied, grid, n_shifts, seed)
    else:
        null_pairs = _shifted_overlaps(regions, occupied, n_shifts, b, seed)
    null_mean = null_pairs[:, iu[0], iu[1]].mean(1)
    mean_obs = float(obs[iu].mean())
    p_above = float(p_greater(mean_obs, null_mean))
    p_below = float(p_greater(-mean_obs, -null_mean))
    if m < 4:
        notes.insert(0, f"site {site.site!r}: only {m} units with a region; little power")
    near, why = neighbour_pairs(None if depth_um is None else np.asarray(depth_um)[ok],
                                neighbour_um)  # fmt: skip
    if near is None:  # the neighbour statistic would repeat the all-pairs one: no row
        near = ~np.eye(m, dtype=bool)
        notes.append(f"site {site.site!r}: {why}; tiling neighbour pairs are all pairs")
    ni = np.nonzero(np.triu(near, 1))
    mean_near = float(obs[ni].mean())
    null_near = null_pairs[:, ni[0], ni[1]].mean(1)
    pn_above, pn_below = p_greater(mean_near, null_near), p_greater(-mean_near, -null_near)
    verdict_near = _verdict(float(pn_above), float(pn_below), alpha)
    if why is not None:
        verdict_near = f"as all pairs ({why}): {verdict_near}"
    return TilingResult(
        site.site, site.unit_rows[ok], srfs, source, regions, nan_diag(obs),
        nan_diag(null_pairs.mean(0)), nan_diag(p_greater(obs, null_pairs)), mean_obs, null_mean,
        p_above, p_below, min(1.0, 2 * min(p_above, p_below)),
        _verdict(p_above, p_below, alpha), alpha, notes, null, near, float(neighbour_um),
        mean_near, null_near, float(min(1.0, 2 * min(pn_above, pn_below))), verdict_near,
    )  # fmt: skip


def _standard_grid(
    X: np.ndarray, site: SiteSubspaceResult, bins: np.ndarray | None, ex: np.ndarray,
    ey: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Bin centres of the plane's grid in coordinates standardised by the mean and SD of the
    stimulus projections on site PCs 1-2 (over ``bins``): (B,) along x and (B,) along y."""
    proj = project_stimulus(X, np.asarray(site.components)[:2])
    if bins is not None:
        proj = proj[np.asarray(bins)]
    centre, scale = proj.mean(0), proj.std(0)
    scale = np.where(scale > 0, scale, 1.0)
    cx = (0.5 * (ex[:-1] + ex[1:]) - centre[0]) / scale[0]
    cy = (0.5 * (ey[:-1] + ey[1:]) - centre[1]) / scale[1]
    return cx, cy


_N_ANGLES = 72  # rotation angles of the null, 5 degrees apart
_KEEP = 0.8  # share of its bins a turned region must keep on the occupied grid


def _rotated_overlaps(
    regions: np.ndarray, occupied: np.ndarray, grid: tuple[np.ndarray, np.ndarray],
    n_draws: int, seed: int,
) -> np.ndarray:  # fmt: skip
    """Null pairwise overlaps, (n_draws, m, m): each draw turns every unit's region by its own
    random angle about the centre (nearest-bin lookup, occupied grid bins only), among the
    angles at which the region keeps at least ``_KEEP`` of its bins (all angles if none
    does), so the null regions keep their size."""
    turned = _turned_regions(regions, occupied, grid)  # (m, A, B, B)
    m = regions.shape[0]
    size = regions.reshape(m, -1).sum(1)
    kept = turned.reshape(m, _N_ANGLES, -1).sum(2) >= _KEEP * size[:, None]
    kept[~kept.any(1)] = True
    rng = np.random.default_rng(seed)
    allowed = [np.flatnonzero(k) for k in kept]
    out = np.empty((n_draws, m, m))
    units = np.arange(m)
    for i in range(n_draws):
        pick = np.array([a[rng.integers(a.size)] for a in allowed])
        out[i] = _jaccard(turned[units, pick].reshape(m, -1))
    return out


def _turned_regions(
    regions: np.ndarray, occupied: np.ndarray, grid: tuple[np.ndarray, np.ndarray]
) -> np.ndarray:
    """Every unit's region turned by each of ``_N_ANGLES`` angles about the centre of the
    standardised grid ``grid`` (bin centres along x and y): bin ``b`` is in the turned region
    when the bin nearest to ``R(-theta) c_b`` is in the region; off-grid and unoccupied bins
    are out. Shape (m, A, B, B)."""
    cx, cy = grid
    b = cx.size
    gx, gy = np.meshgrid(cx, cy, indexing="ij")
    step_x = (cx[-1] - cx[0]) / max(b - 1, 1) or 1.0
    step_y = (cy[-1] - cy[0]) / max(b - 1, 1) or 1.0
    theta = np.arange(_N_ANGLES)[:, None, None] * (2 * np.pi / _N_ANGLES)
    cos, sin = np.cos(theta), np.sin(theta)
    ix = np.rint(((cos * gx + sin * gy) - cx[0]) / step_x).astype(np.int64)
    iy = np.rint(((-sin * gx + cos * gy) - cy[0]) / step_y).astype(np.int64)
    inside = (ix >= 0) & (ix < b) & (iy >= 0) & (iy < b) & occupied
    ix, iy = np.clip(ix, 0, b - 1), np.clip(iy, 0, b - 1)
    return regions[:, ix, iy] & inside[None]


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
