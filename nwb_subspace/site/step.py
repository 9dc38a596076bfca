"""The per-session site step: units grouped into recording sites, then each site analysed.

:func:`~nwb_subspace.io.site_labels.read_site_labels` names every unit's site from the NWB
file (the only HDF5 reading of this step): a units-table column given by the user (``[sites]
group_by``), else the unit's electrode group, one site per probe insertion or shank; a file
with neither forms one site, ``"all"``. :class:`SiteStep` then, per site, fits the shared subspace
(:class:`~nwb_subspace.site.subspace.SiteSubspaceAnalysis`) on the units passing the quality cut,
maps them on the site plane (:func:`~nwb_subspace.site.tiling.tiling`; overlap of all pairs and
of neighbour pairs by depth, against rotations of each unit's region), compares narrow vs broad
units and layers on their own SRFs (breadth, shape index;
:func:`~nwb_subspace.site.groups.compare_cell_types_and_layers`), tests each site against the
others, and returns a :class:`SiteStepResult` with the results to write and the tidy tables.
The locality test, same-site vs different-site pairs of units
(:func:`~nwb_subspace.site.subspace.same_site_similarity`), runs over the file's sites (rows
per site and for ``"all sites"``); a file with one site says it cannot test it.

Nothing is empty: a site with too few usable units, a comparison without two groups or a
tiling without two regions gives a plain note (``SiteStepResult.notes``), no table row.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from nwb_subspace.config import SiteSettings
from nwb_subspace.dstrf.compute import DSTRFMoments
from nwb_subspace.io.site_labels import ALL_SITES, read_site_labels
from nwb_subspace.results import SiteStatistics, SiteSubspaceResult, SubspaceRFs, TuningSubspaces
from nwb_subspace.site.groups import (
    compare_cell_types_and_layers,
    compare_cell_types_and_layers_across_sites,
    compare_site_subspaces,
    compare_site_tiling,
    label_within_site,
    to_site_statistics,
)
from nwb_subspace.site.subspace import SiteSubspaceAnalysis, same_site_similarity
from nwb_subspace.site.tables import (
    SITE_COLUMNS,
    UNIT_TABLE_COLUMNS,
    measure_source,
    site_overview,
    site_table,
    srf_measures,
    unit_table,
)
from nwb_subspace.site.tiling import TilingResult, tiling

if TYPE_CHECKING:
    from nwb_subspace.io.units.reader import UnitInfo

#: ``site`` of the rows about all of a file's sites together.
ALL = "all sites"

__all__ = [
    "ALL_SITES",
    "SiteInputs",
    "SiteStep",
    "SiteStepResult",
    "read_site_labels",
]


@dataclass
class SiteInputs:
    """What the site step takes from the rest of a session's analysis.

    Attributes
    ----------
    labels : ndarray of str, shape (n_units,)
        Site of every units-table row (:func:`read_site_labels`).
    moments : DSTRFMoments or None
        dSTRF moments of the units passing the quality cut (None: no unit passed).
    unit_rows : ndarray of int, shape (n,)
        Units-table row of each ``moments`` row.
    X : ndarray, shape (n_bins, F)
        Spectrogram.
    counts : ndarray, shape (n_bins, n_units)
        Spike counts, one column per units-table row.
    prediction : ndarray, shape (n_bins, n), optional
        Model prediction of each ``moments`` row (maps use it when given, else counts).
    rate : float
        Bins per second.
    bins : ndarray of bool, shape (n_bins,), optional
        Bins with stimulus (SRF grids and means use these).
    frequencies : ndarray, shape (F,)
    tuning : TuningSubspaces, optional
        Per-unit PCs in ``moments`` order (saves eigendecompositions).
    srfs : SubspaceRFs, optional
        Each unit's own SRFs (breadth and shape for the group comparisons).
    units : UnitInfo, optional
        Cell types, layers, depths and ids (row order); without it every type is unknown.
    excluded : dict of int -> str
        Units-table row -> why it has no moments (e.g. the quality cut).
    label_source : str
        Where ``labels`` came from, in words.
    """

    labels: np.ndarray
    moments: DSTRFMoments | None
    unit_rows: np.ndarray
    X: np.ndarray
    counts: np.ndarray
    rate: float
    frequencies: np.ndarray
    prediction: np.ndarray | None = None
    bins: np.ndarray | None = None
    tuning: TuningSubspaces | None = None
    srfs: SubspaceRFs | None = None
    units: UnitInfo | None = None
    excluded: dict[int, str] = field(default_factory=dict)
    label_source: str = ""


@dataclass
class SiteStepResult:
    """Everything the site step produced.

    Attributes
    ----------
    site_subspaces : list of SiteSubspaceResult
        One per site with a fitted subspace (with its tiling SRFs in ``srfs``).
    statistics : SiteStatistics or None
        Every site statistics row; None when nothing could be tested.
    analyses : dict of str -> SiteSubspaceAnalysis
    tilings : dict of str -> TilingResult
    unit_table : DataFrame
        One row per unit (:data:`~nwb_subspace.site.tables.UNIT_TABLE_COLUMNS`).
    site_table : DataFrame
        One row per site (:data:`~nwb_subspace.site.tables.SITE_COLUMNS`).
    statistics_table : DataFrame
        The statistics rows, long format.
    labels : ndarray of str
        Site of every units-table row.
    label_source : str
    notes : list of str
        Plain-words notes: sites, comparisons and tests that could not be done, and why.
    """

    site_subspaces: list[SiteSubspaceResult]
    statistics: SiteStatistics | None
    analyses: dict[str, SiteSubspaceAnalysis]
    tilings: dict[str, TilingResult]
    unit_table: pd.DataFrame
    site_table: pd.DataFrame
    statistics_table: pd.DataFrame
    labels: np.ndarray
    label_source: str = ""
    notes: list[str] = field(default_factory=list)


def _subset_tuning(tuning: TuningSubspaces | None, idx: np.ndarray) -> TuningSubspaces | None:
    if tuning is None:
        return None
    return TuningSubspaces(
        unit_rows=tuning.unit_rows[idx],
        components=np.asarray(tuning.components)[idx],
        explained_variance_ratio=np.asarray(tuning.explained_variance_ratio)[idx],
        dimensionality=np.asarray(tuning.dimensionality)[idx],
        mean_dstrf=np.asarray(tuning.mean_dstrf)[idx],
        n_frames=np.asarray(tuning.n_frames)[idx],
        noise_floor=np.asarray(tuning.noise_floor)[idx],
        frequencies=tuning.frequencies,
        lags_s=tuning.lags_s,
        variance_threshold=tuning.variance_threshold,
        name=tuning.name,
    )


@dataclass
class SiteStep:
    """The site analysis of one session (settings from ``[sites]``; see :class:`SiteSettings`).

    Parameters
    ----------
    settings : SiteSettings
    srf_bins : int, default 20
        Grid of the site-plane maps (``[subspace] srf_bins``).
    min_occupancy : int, default 10
        Samples a map bin needs (``[subspace] min_occupancy``).
    seed : int, default 0
        Seed of every null (``AnalysisConfig.seed``).
    """

    settings: SiteSettings = field(default_factory=SiteSettings)
    srf_bins: int = 20
    min_occupancy: int = 10
    seed: int = 0

    # One pass over the sites in order; split further it would hand a dozen per-site
    # long: accumulators between helpers (81 lines)
    def run(self, inputs: SiteInputs) -> SiteStepResult:
        """Analyse every site of the session; see the module docstring."""
        if not isinstance(self.settings, SiteSettings):
            raise TypeError(f"settings must be a SiteSettings; got {type(self.settings).__name__}")
        labels = np.asarray(inputs.labels, dtype=object).astype(str)
        n_units = inputs.counts.shape[1]
        if labels.shape != (n_units,):
            raise ValueError(
                f"labels must name the site of all {n_units} units; got {labels.shape}"
            )
        rows = np.asarray(inputs.unit_rows, dtype=np.int64)
        if inputs.moments is None:
            rows = rows[:0]
        elif len(inputs.moments.mean) != rows.size:
            raise ValueError(
                f"unit_rows gives {rows.size} units but the moments hold "
                f"{len(inputs.moments.mean)}; give one units-table row per moments row"
            )
        own = {}
        if inputs.srfs is not None:
            own = srf_measures(inputs.srfs, source=measure_source(inputs.srfs))
        notes: list[str] = []
        if rows.size == 0:
            notes.append("no unit passes the quality cut: no site subspace, tiling or comparison")
        analyses: dict[str, SiteSubspaceAnalysis] = {}
        tilings: dict[str, TilingResult] = {}
        site_notes: dict[str, list[str]] = {}
        group_rows: dict[str, list[dict]] = {}
        sites = list(dict.fromkeys(labels.tolist()))
        for site in sites:
            members = np.flatnonzero(labels == site)
            idx = np.flatnonzero(labels[rows] == site) if rows.size else rows[:0]
            mine: list[str] = []
            if idx.size == 0:
                mine.append(
                    f"site {site!r}: none of its {members.size} unit(s) passes the quality cut; "
                    "no site subspace"
                )
            else:
                an, tile = self._fit_site(site, idx, inputs, mine)
                analyses[site] = an
                if tile is not None:
                    tilings[site] = tile
            group_rows[site] = self._compare_groups(site, rows[idx], own, inputs.units, mine)
            site_notes[site] = mine
            notes.extend(mine)
        fitted = {s: a for s, a in analyses.items() if a.result_ is not None}
        for site, an in fitted.items():
            others = [o.result_ for s, o in fitted.items() if s != site]
            if others:
                an.test_other_sites(others)
        locality = self._locality(fitted, notes)
        stat_rows: list[dict] = []
        for site in sites:
            stat_rows.extend(fitted[site].rows_ if site in fitted else [])
            stat_rows.extend([locality[site]] if site in locality else [])
            stat_rows.extend(tilings[site].rows() if site in tilings else [])
            stat_rows.extend(group_rows[site])
        stat_rows.extend([locality[ALL]] if ALL in locality else [])
        stat_rows.extend(self._between_sites(fitted, tilings, notes))
        stat_rows.extend(
            self._compare_groups("all sites", rows, own, inputs.units, notes, labels[rows])
        )
        units_df, sites_rows = [], []
        for site in sites:
            members = np.flatnonzero(labels == site)
            units_df.append(self._unit_rows(site, members, inputs, analyses, tilings))
            sites_rows.append(
                site_overview(
                    site, members.size, analysis=analyses.get(site), tiling=tilings.get(site),
                    notes=site_notes[site], locality=locality.get(site),
                )
            )  # fmt: skip
        statistics = to_site_statistics(stat_rows)
        return SiteStepResult(
            site_subspaces=[a.result_ for a in fitted.values()],
            statistics=statistics,
            analyses=analyses,
            tilings=tilings,
            unit_table=pd.concat(units_df, ignore_index=True)
            if units_df
            else pd.DataFrame(columns=list(UNIT_TABLE_COLUMNS)),
            site_table=pd.DataFrame(sites_rows, columns=list(SITE_COLUMNS)),
            statistics_table=site_table(stat_rows),
            labels=labels,
            label_source=inputs.label_source,
            notes=notes,
        )

    def _locality(self, fitted: dict[str, SiteSubspaceAnalysis], notes: list[str]) -> dict:
        """The same-site vs different-site test over the file's fitted sites: its rows by
        site (the overall row under ``"all sites"``); empty with a note for one site."""
        bases, labels = [], []
        for site, an in fitted.items():
            bases.extend(an.bases_)
            labels.extend([site] * len(an.bases_))
        if len(fitted) < 2:
            notes.append(
                f"same-site vs different-site similarity: {len(fitted)} site(s) with a fitted "
                "subspace in this file; the locality test needs two (electrode groups or "
                "shanks), or units pooled over files"
            )
            return {}
        rows, more = same_site_similarity(
            bases, labels, n_permutations=self.settings.n_permutations, seed=self.seed, name=ALL
        )
        notes.extend(more)
        return {r["site"]: r for r in rows or []}

    def _fit_site(
        self, site: str, idx: np.ndarray, inputs: SiteInputs, notes: list[str]
    ) -> tuple[SiteSubspaceAnalysis, TilingResult | None]:
        s = self.settings
        m = inputs.moments
        rows = np.asarray(inputs.unit_rows, dtype=np.int64)[idx]
        an = SiteSubspaceAnalysis(
            n_components=s.n_components, variance_threshold=s.variance_threshold,
            unit_variance_threshold=s.unit_variance_threshold,
            max_unit_components=s.max_unit_components, weighting=s.weighting, n_null=s.n_null,
            min_units=s.min_units, seed=self.seed,
        )  # fmt: skip
        moments = (
            (m.mean, m.covariance) if idx.size == len(m.mean) else (m.mean[idx], m.covariance[idx])
        )
        an.fit(
            moments, site=site, frequencies=inputs.frequencies, bin_s=1.0 / inputs.rate,
            unit_rows=rows, tuning=_subset_tuning(inputs.tuning, idx),
        )  # fmt: skip
        notes.extend(an.notes_)
        res = an.result_
        if res is None:
            return an, None
        col = {int(r): int(i) for r, i in zip(rows, idx, strict=True)}
        cols = [col[int(r)] for r in res.unit_rows]
        depth = None if inputs.units is None else np.asarray(inputs.units.depth_um, dtype=float)
        tile = tiling(
            res, inputs.X,
            prediction=None if inputs.prediction is None else inputs.prediction[:, cols],
            counts=inputs.counts[:, res.unit_rows], rate=inputs.rate, bins=inputs.bins,
            n_bins=self.srf_bins, min_occupancy=self.min_occupancy,
            high_activity_threshold=s.high_activity_threshold, n_shifts=s.n_shifts,
            alpha=s.alpha, seed=self.seed, null=s.tiling_null, neighbour_um=s.neighbour_um,
            depth_um=None if depth is None else depth[res.unit_rows],
        )  # fmt: skip
        res.srfs = tile.srfs if tile.srfs is not None and tile.srfs.unit_rows.size else None
        notes.extend(tile.notes or ([] if tile.tested else [tile.verdict]))
        return an, tile

    def _compare_groups(
        self, site: str, rows: np.ndarray, own: dict[int, dict], units: UnitInfo | None,
        notes: list[str], sites: np.ndarray | None = None,
    ) -> list[dict]:  # fmt: skip
        """Narrow vs broad and layers on the units' own SRF breadth and shape index.

        ``sites`` None: the units of one site, tested as independent units; the rows are
        labelled so (``<statistic>_within_site``, :func:`~nwb_subspace.site.groups.
        label_within_site`). ``sites`` given (the site of each of ``rows``): the paper's test,
        units nested in sites (``[sites] group_method``, :func:`~nwb_subspace.site.groups.
        compare_across_sites`); with one site only a note says it cannot be tested.
        """
        keep = [i for i, r in enumerate(rows) if int(r) in own]
        rows = [int(rows[i]) for i in keep]
        if not rows:
            notes.append(
                f"site {site!r}: no unit with its own SRF; cell types and layers not compared"
            )
            return []
        measures = {
            "breadth": np.array([own[r]["breadth"] for r in rows], dtype=float),
            "shape_index": np.array([own[r]["shape_index"] for r in rows], dtype=float),
        }
        matched = np.array([own[r].get("breadth_snr_matched", np.nan) for r in rows], float)
        if np.isfinite(matched).any():
            measures["breadth_snr_matched"] = matched
        unknown = ["unknown"] * len(rows)
        cell_type = unknown if units is None else [str(units.cell_type[r]) for r in rows]
        layer = unknown if units is None else [str(units.layer[r]) for r in rows]
        if sites is None:
            found, more = compare_cell_types_and_layers(
                measures, cell_type, layer, site=site, min_per_group=self.settings.min_per_group
            )
            notes.extend(more)
            return label_within_site(found)
        sites = np.asarray(sites).astype(str)[keep]
        if len(set(sites.tolist())) < 2:
            notes.append(
                "cell types and layers: between-site effects cannot be tested with one site; the "
                "rows '<measure>_..._within_site' treat the site's units as independent"
            )
            return []
        found, more = compare_cell_types_and_layers_across_sites(
            measures, cell_type, layer, sites, method=self.settings.group_method,
            min_per_group=self.settings.min_per_group, name=site,
        )  # fmt: skip
        notes.extend(more)
        return found or []

    def _between_sites(
        self, fitted: dict[str, SiteSubspaceAnalysis], tilings: dict[str, TilingResult],
        notes: list[str],
    ) -> list[dict]:  # fmt: skip
        """Every pair of fitted sites: shared-subspace strength and excess tiling overlap."""
        out: list[dict] = []
        for a, b in combinations(fitted, 2):
            found, more = compare_site_subspaces(fitted[a], fitted[b])
            out.extend(found or [])
            notes.extend(more)
            if a in tilings and b in tilings and tilings[a].tested and tilings[b].tested:
                found, more = compare_site_tiling(tilings[a], tilings[b])
                out.extend(found or [])
                notes.extend(more)
        return out

    def _unit_rows(
        self, site: str, members: np.ndarray, inputs: SiteInputs,
        analyses: dict[str, SiteSubspaceAnalysis], tilings: dict[str, TilingResult],
    ) -> pd.DataFrame:  # fmt: skip
        """The site's rows of the unit table, with why each unit left out was left out."""
        info = inputs.units
        described = {}
        if info is not None:
            for key in ("unit_ids", "cell_type", "layer", "depth_um"):
                described[key] = np.asarray(getattr(info, key))[members]
        an = analyses.get(site)
        table = unit_table(
            site, members.tolist(), analysis=an, tiling=tilings.get(site), srfs=inputs.srfs,
            **described,
        )  # fmt: skip
        with_moments = set(np.asarray(inputs.unit_rows).tolist())
        n_usable = 0 if an is None else len(an.unit_rows_)
        for i, r in enumerate(table["unit_row"].tolist()):
            if table.at[i, "status"] != "not analysed":
                continue
            if r not in with_moments:
                why = inputs.excluded.get(r, "no dSTRFs (fails the quality cut)")
                table.at[i, "status"] = f"left out: {why}"
            elif an is not None and an.result_ is None:
                table.at[i, "status"] = (
                    f"left out: site has {n_usable} usable unit(s); a site subspace needs "
                    f"{self.settings.min_units}"
                )
        return table
