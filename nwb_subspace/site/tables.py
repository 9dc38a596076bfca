"""Tidy summary tables of the site analyses, written as CSV.

Two tables (pandas DataFrames), one CSV each:

* **units**: one row per unit of a site, analysed or not: ``site, unit_row, unit_id,
  cell_type, layer, depth_um, status`` (``"analysed"`` or ``"left out: <reason>"``), then the
  measures: ``dimensionality`` (own subspace at the similarity threshold),
  ``variance_fraction``, ``variance_fraction_null``, ``variance_fraction_p``,
  ``mean_similarity``, ``breadth`` (noise-aware fraction of its own SRF's occupied bins),
  ``breadth_bins`` (the old count of high-activity bins), ``breadth_measure``,
  ``breadth_snr_matched`` (the breadth of its measured SRF brought to its site's
  signal-to-noise ratio; what the cell-type and layer comparisons judge), ``shape_index`` (signed asymmetry of the most modulated tuning curve), ``shape_p`` (its
  non-monotonicity against noise), ``shape_class``, ``site_region_bins``
  (region size on the site plane) and ``mean_overlap`` (mean Jaccard with the site's other
  units). Missing measures are empty cells; unknown types/layers read ``"unknown"``.
* **sites** (:func:`site_overview`): one row per site: ``site, n_units, n_analysed, status,
  subspace_fraction`` (median over the site's units of the subspace model's explained
  variance over the CNN's, filled by :func:`subspace_fraction_by_site`), ``dimensionality``, then value, null mean and p-value of the shared-subspace fraction, the
  pairwise similarity and the tiling overlap, the tiling verdict, the reference site
  dimensionality and mean leave-one-out similarity, the same-site vs different-site test, the
  neighbour-pair tiling overlap and verdict, and the site's notes.
* **statistics** (:func:`site_table`): one row per site statistic
  (``results.STATISTIC_FIELDS``), long format, every test including group comparisons.

:func:`write_summary` never writes an empty table: a table without rows is skipped and the
returned notes say so.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from nwb_subspace.results import STATISTIC_FIELDS, SubspaceRFs
from nwb_subspace.subspace.srf import normalised_map, shape_asymmetry, srf_shape_classes

__all__ = [
    "SITE_COLUMNS",
    "UNIT_TABLE_COLUMNS",
    "site_overview",
    "measure_source",
    "site_table",
    "srf_measures",
    "subspace_fraction_by_site",
    "unit_table",
    "write_summary",
]

UNIT_TABLE_COLUMNS = (
    "site",
    "unit_row",
    "unit_id",
    "cell_type",
    "layer",
    "depth_um",
    "status",
    "dimensionality",
    "variance_fraction",
    "variance_fraction_null",
    "variance_fraction_p",
    "mean_similarity",
    "breadth",
    "breadth_bins",
    "breadth_measure",
    "breadth_snr_matched",
    "shape_index",
    "shape_p",
    "shape_class",
    "site_region_bins",
    "mean_overlap",
)

#: Columns of :func:`site_overview`; ``<stat>`` / ``<stat>_null`` / ``<stat>_p`` triples.
SITE_COLUMNS = (
    "site",
    "n_units",
    "n_analysed",
    "status",
    "subspace_fraction",
    "dimensionality",
    "variance_fraction_mean",
    "variance_fraction_mean_null",
    "variance_fraction_mean_p",
    "pairwise_similarity_mean",
    "pairwise_similarity_mean_null",
    "pairwise_similarity_mean_p",
    "tiling_overlap_mean",
    "tiling_overlap_mean_null",
    "tiling_overlap_mean_p",
    "tiling_verdict",
    "dimensionality_reference",
    "site_similarity_loo_mean",
    "same_site_similarity",
    "same_site_similarity_null",
    "same_site_similarity_p",
    "tiling_overlap_neighbours",
    "tiling_overlap_neighbours_null",
    "tiling_overlap_neighbours_p",
    "tiling_verdict_neighbours",
    "notes",
)


def measure_source(srfs: SubspaceRFs) -> str:
    """The SRFs whose breadth and shape the cell-type and layer comparisons use: the
    measured maps when they carry the noise-aware breadth (repeat-wise errors; a weak or
    noisy unit cannot read as broad there), else the model maps."""
    measured = np.asarray(srfs.response_source) == "measured"
    if srfs.breadth_fraction is not None and measured.any():
        if np.isfinite(np.asarray(srfs.breadth_fraction, dtype=float)[measured]).any():
            return "measured"
    return "model"


def snr_matched_by_unit(srfs: SubspaceRFs) -> dict[int, float]:
    """Units-table row -> its stored SNR-matched breadth (finite values only)."""
    if srfs.breadth_snr_matched is None:
        return {}
    values = np.asarray(srfs.breadth_snr_matched, dtype=float)
    return {int(r): float(v) for r, v in zip(srfs.unit_rows, values, strict=True) if np.isfinite(v)}


def srf_measures(srfs: SubspaceRFs, source: str = "model") -> dict[int, dict]:
    """Breadth, shape index, shape class and test per unit row (first ``source`` map).

    ``breadth`` is the noise-aware fraction of occupied bins (``breadth_fraction``,
    :func:`~nwb_subspace.subspace.srf.noise_aware_breadth`) and ``breadth_bins`` the old count
    (bins >= 0.5 of the min-max normalised map). ``shape_index`` / ``shape_p`` /
    ``shape_class`` come from :func:`~nwb_subspace.subspace.srf.shape_test` (asymmetry of the
    1-D tuning curve, 0.33, and its non-monotonicity against noise). For results stored
    before these existed, ``breadth`` repeats the old count and the shape is the old fixed
    0.35 rule on the normalised map; ``breadth_measure`` says which ("fraction" or "bins").
    ``breadth_snr_matched`` is the unit's SNR-matched breadth (its measured map of dimensions
    0-1, whatever ``source``; NaN when not stored).
    """
    out: dict[int, dict] = {}
    classes = srf_shape_classes(srfs, source)
    new = srfs.breadth_fraction is not None
    matched = snr_matched_by_unit(srfs)
    for i, row in enumerate(srfs.unit_rows.tolist()):
        if srfs.response_source[i] != source or row in out:
            continue
        if srfs.curve_asymmetry is not None:
            index = float(srfs.curve_asymmetry[i])
            p = np.nan if srfs.shape_p_value is None else float(srfs.shape_p_value[i])
        else:
            asym, depth = shape_asymmetry(normalised_map(srfs.response_map[i]))
            ok = np.isfinite(asym) & np.isfinite(depth)
            index = float(asym[np.argmax(np.where(ok, depth, -np.inf))]) if ok.any() else np.nan
            p = np.nan
        out[row] = {
            "breadth": float(srfs.breadth_fraction[i]) if new else int(srfs.breadth[i]),
            "breadth_bins": int(srfs.breadth[i]),
            "breadth_measure": "fraction" if new else "bins",
            "breadth_snr_matched": matched.get(int(row), np.nan),
            "shape_index": index,
            "shape_p": p,
            "shape_class": classes[row],
        }
    return out


def unit_table(
    site: str,
    unit_rows: Sequence[int],
    *,
    unit_ids: Sequence | None = None,
    cell_type: Sequence | None = None,
    layer: Sequence | None = None,
    depth_um: Sequence | None = None,
    analysis=None,
    tiling=None,
    srfs: SubspaceRFs | None = None,
) -> pd.DataFrame:
    """One row per unit of a site.

    Parameters
    ----------
    site : str
    unit_rows : sequence of int
        Every unit of the site (units-table rows), analysed or not.
    unit_ids, cell_type, layer, depth_um : sequence, optional
        Aligned with ``unit_rows`` (e.g. from ``read_units``); missing -> "unknown"/NaN.
    analysis : SiteSubspaceAnalysis, optional
        Fitted; gives the subspace columns and the reasons units were left out.
    tiling : TilingResult, optional
    srfs : SubspaceRFs, optional
        Each unit's own SRFs (breadth and shape).
    """
    rows = [int(r) for r in unit_rows]
    n = len(rows)

    def col(values, default) -> list:
        if values is None:
            return [default] * n
        values = list(values)
        if len(values) != n:
            raise ValueError(f"got {len(values)} values for {n} unit rows; align them")
        return values

    table = {r: {c: np.nan for c in UNIT_TABLE_COLUMNS} for r in rows}
    for i, r in enumerate(rows):
        table[r].update(
            site=site,
            unit_row=r,
            unit_id=col(unit_ids, r)[i],
            cell_type=str(col(cell_type, "unknown")[i] or "unknown"),
            layer=str(col(layer, "unknown")[i] or "unknown"),
            depth_um=float(col(depth_um, np.nan)[i]),
            status="not analysed",
            shape_class="",
        )
    if analysis is not None:
        for r, why in getattr(analysis, "excluded_", {}).items():
            if r in table:
                table[r]["status"] = f"left out: {why}"
        res = analysis.result_
        if res is not None:
            sim = np.nanmean(analysis.similarity_, axis=1)
            for i, r in enumerate(res.unit_rows.tolist()):
                table[r].update(
                    status="analysed",
                    dimensionality=int(analysis.unit_dimensionality_[i]),
                    variance_fraction=float(res.variance_fraction[i]),
                    variance_fraction_null=float(res.null_mean[i]),
                    variance_fraction_p=float(res.p_value[i]),
                    mean_similarity=float(sim[i]),
                )
    if tiling is not None and tiling.regions is not None and tiling.tested:
        sizes = tiling.regions.reshape(len(tiling.regions), -1).sum(1)
        overlap = np.nanmean(tiling.overlap, axis=1)
        for i, r in enumerate(tiling.unit_rows.tolist()):
            table[r].update(site_region_bins=int(sizes[i]), mean_overlap=float(overlap[i]))
    if srfs is not None:
        for r, values in srf_measures(srfs, source=measure_source(srfs)).items():
            if r in table:
                table[r].update(values)
    return pd.DataFrame([table[r] for r in rows], columns=list(UNIT_TABLE_COLUMNS))


def site_overview(
    site: str,
    n_units: int,
    *,
    analysis=None,
    tiling=None,
    notes: Sequence[str] = (),
    locality: dict | None = None,
) -> dict:
    """One row (a dict with :data:`SITE_COLUMNS`) summarising a site.

    ``same_site_similarity`` / ``_null`` / ``_p`` are the site's row of the same-site vs
    different-site test (mean similarity of its unit pairs, of its units to other sites'
    units, permutation p-value; empty for a file with one site); ``dimensionality_reference``
    and ``site_similarity_loo_mean`` come from the reference site subspace.

    Parameters
    ----------
    site : str
    n_units : int
        Units of the site in the units table, analysed or not.
    analysis : SiteSubspaceAnalysis, optional
        Fitted (``result_`` None when the site had too few usable units).
    tiling : TilingResult, optional
    notes : sequence of str
        The site's notes, joined with ``"; "``.
    locality : dict, optional
        The site's statistics row of
        :func:`~nwb_subspace.site.subspace.same_site_similarity`.
    """
    row: dict = {c: np.nan for c in SITE_COLUMNS}
    res = None if analysis is None else analysis.result_
    row.update(
        site=str(site),
        n_units=int(n_units),
        n_analysed=0 if res is None else int(res.unit_rows.size),
        status="analysed" if res is not None else "not analysed",
        tiling_verdict="" if tiling is None else str(tiling.verdict),
        tiling_verdict_neighbours="" if tiling is None else str(tiling.verdict_neighbours),
        notes="; ".join(notes),
    )
    if res is not None:
        row["dimensionality"] = int(res.dimensionality)
        if res.dimensionality_reference is not None:
            row["dimensionality_reference"] = int(res.dimensionality_reference)
        if res.site_similarity_loo is not None:
            row["site_similarity_loo_mean"] = float(np.nanmean(res.site_similarity_loo))
    if locality is not None:
        row["same_site_similarity"] = locality["value"]
        row["same_site_similarity_null"] = locality["null_mean"]
        row["same_site_similarity_p"] = locality["p_value"]
    stats = list(getattr(analysis, "rows_", []) or []) + (tiling.rows() if tiling else [])
    for stat in stats:
        key = stat["statistic"]
        if f"{key}_p" in row:
            row[key], row[f"{key}_null"], row[f"{key}_p"] = (
                stat["value"], stat["null_mean"], stat["p_value"],
            )  # fmt: skip
    return row


def subspace_fraction_by_site(
    labels: Sequence[str],
    cnn_rows: Sequence[int],
    ev_cnn: Sequence[float],
    subspace_rows: Sequence[int],
    ev_subspace: Sequence[float],
) -> dict[str, float]:
    """Each site's subspace-model fraction (median over its units of ``EV_subspace / EV_cnn``).

    Parameters
    ----------
    labels : sequence of str
        Site of every units-table row.
    cnn_rows, ev_cnn : sequences
        Units-table rows scored by the CNN and their explained variance.
    subspace_rows, ev_subspace : sequences
        Units-table rows scored by the subspace model and their explained variance.

    Returns
    -------
    dict of str -> float
        Every site of ``labels``; NaN for a site without a unit scored by both models (see
        :func:`~nwb_subspace.subspace.model.site_subspace_fraction`).
    """
    from nwb_subspace.subspace.model import explained_variance_fraction, site_subspace_fraction

    labels = np.asarray(labels, dtype=object).astype(str)
    cnn = dict(zip(np.asarray(cnn_rows, dtype=np.int64).tolist(), ev_cnn, strict=True))
    rows = np.asarray(subspace_rows, dtype=np.int64)
    both = np.array([r in cnn for r in rows.tolist()], dtype=bool)
    frac = explained_variance_fraction(
        np.asarray(ev_subspace, dtype=float)[both], [cnn[r] for r in rows[both].tolist()]
    )
    site_of = labels[rows[both]] if both.any() else np.array([], dtype=str)
    return {s: site_subspace_fraction(frac[site_of == s]) for s in dict.fromkeys(labels.tolist())}


def site_table(rows: Sequence[dict] | None) -> pd.DataFrame:
    """Site statistics rows (any number of sites) as a DataFrame with ``STATISTIC_FIELDS``."""
    return pd.DataFrame(list(rows or []), columns=list(STATISTIC_FIELDS))


def write_summary(
    prefix: str | Path,
    units: pd.DataFrame | None,
    sites: pd.DataFrame | None,
    statistics: pd.DataFrame | None = None,
) -> tuple[list[Path], list[str]]:
    """Write ``<prefix>_units.csv``, ``<prefix>_sites.csv`` and ``<prefix>_statistics.csv``.

    Empty (or None) tables are skipped and the notes say so; ``statistics`` is optional.

    Parameters
    ----------
    prefix : str or Path
        Path prefix; its folder must exist.
    units, sites, statistics : DataFrame or None
        From :func:`unit_table` (concatenate several sites with ``pd.concat``), from
        :func:`site_overview` rows (or :func:`site_table`) and from :func:`site_table`.

    Returns
    -------
    paths : list of Path
        Files written.
    notes : list of str
        Tables skipped because they had no rows.
    """
    prefix = Path(prefix)
    if not prefix.parent.exists():
        raise FileNotFoundError(f"folder {prefix.parent} does not exist; create it first")
    paths, notes = [], []
    tables = [("units", units), ("sites", sites)]
    if statistics is not None:
        tables.append(("statistics", statistics))
    for name, table in tables:
        if table is None or len(table) == 0:
            notes.append(f"no {name} rows; {name} table not written")
            continue
        path = prefix.with_name(f"{prefix.name}_{name}.csv")
        table.to_csv(path, index=False)
        paths.append(path)
    return paths, notes
