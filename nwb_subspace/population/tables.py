"""One session's rows of the population tables, from its stored run (no file access).

* :func:`unit_rows`: one row per unit (:data:`~nwb_subspace.population.columns.UNIT_COLUMNS`),
  analysed or not;
* :func:`site_rows`: one row per site (:data:`~nwb_subspace.population.columns.SITE_COLUMNS`);
* :func:`session_row`: the session's row (``SESSION_COLUMNS``);
* :func:`unit_bases`: each analysed unit's own subspace (what the locality test compares);
* :func:`settings_key`: the settings that must match for sessions to be pooled, and a hash.

Every value is read from the run's stored tables (a :class:`~nwb_subspace.population.records.
StoredRun`) with the definitions the session's own run uses: the scores tables give ``r_*``
(noise-corrected correlation) and ``ev_*`` (explained variance); ``ev_fraction`` is
:func:`~nwb_subspace.subspace.model.explained_variance_fraction`; breadth and shape come from
:func:`~nwb_subspace.site.tables.srf_measures` on the run's own SRF table, as the session's
units CSV; each unit's subspace from :func:`~nwb_subspace.site.subspace.unit_basis` with the
run's ``[sites]`` settings, as the site step.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from nwb_subspace.config import SiteSettings
from nwb_subspace.population.columns import SESSION_COLUMNS, SITE_COLUMNS, UNIT_COLUMNS
from nwb_subspace.population.records import StoredRun
from nwb_subspace.results import SubspaceRFs
from nwb_subspace.site.subspace import LOCALITY_STATISTIC, unit_basis
from nwb_subspace.site.tables import measure_source, srf_measures
from nwb_subspace.subspace.model import explained_variance_fraction, site_subspace_fraction

__all__ = [
    "SETTINGS_COMPARED",
    "own_srfs",
    "session_row",
    "settings_key",
    "site_rows",
    "unit_bases",
    "unit_rows",
]

#: Settings (config section -> keys) that must match across sessions for their tables to be
#: pooled; ``"spectrogram"`` and ``"layers"`` are compared whole, plus the CNN's ``n_lags``.
SETTINGS_COMPARED: dict[str, tuple[str, ...]] = {
    "subspace": (
        "frames", "outlier_rule", "outlier_threshold", "n_components", "variance_threshold",
        "reference_n_components", "reference_variance_threshold", "min_noise_corrected_r",
        "ensemble", "srf_grid", "srf_bins", "min_occupancy", "high_activity_threshold",
    ),
    "sites": (
        "n_components", "variance_threshold", "unit_variance_threshold", "max_unit_components",
        "weighting", "min_units", "high_activity_threshold", "neighbour_um", "tiling_null",
    ),
}  # fmt: skip

_SCORE_COLUMNS = {"r": "noise_corrected_correlation", "ev": "explained_variance"}
_SITE_STATISTICS = {
    LOCALITY_STATISTIC: "same_site_similarity",
    "tiling_overlap_neighbours": "tiling_overlap_neighbours",
    "tiling_overlap_mean": "tiling_overlap_mean",
}
_SRF_COLUMNS = (
    "breadth", "breadth_bins", "breadth_measure", "breadth_snr_matched", "shape_index",
    "shape_p", "shape_class",
)  # fmt: skip
_MODEL_COLUMNS = {"breadth_model": "breadth", "breadth_model_bins": "breadth_bins"}
_TEXT_COLUMNS = ("breadth_measure", "shape_class")


def own_srfs(run: StoredRun) -> SubspaceRFs | None:
    """The run's own-subspace SRF table (``subspace_rfs`` when several), None without one."""
    if not run.srfs:
        return None
    named = [s for s in run.srfs if s.name == "subspace_rfs"]
    return named[0] if named else run.srfs[0]


def _sites_settings(config: Mapping) -> tuple[float, int]:
    """``[sites] unit_variance_threshold`` and ``max_unit_components`` (defaults if absent)."""
    s = config.get("sites") or {}
    default = SiteSettings()
    threshold = s.get("unit_variance_threshold", default.unit_variance_threshold)
    return float(threshold), int(s.get("max_unit_components", default.max_unit_components))


def unit_bases(run: StoredRun) -> tuple[np.ndarray, list[np.ndarray]]:
    """Each analysed unit's own subspace, as the site step builds it.

    Parameters
    ----------
    run : StoredRun

    Returns
    -------
    rows : ndarray of int, shape (n,)
        Units-table rows of the analysed units (those with a tuning subspace).
    bases : list of ndarray, each (P, k_u) float32
        Orthonormal columns: the unit's top ``k_u`` PCs by
        :func:`~nwb_subspace.site.subspace.unit_basis` with the run's ``[sites]
        unit_variance_threshold`` and ``max_unit_components``.
    """
    if run.tuning is None:
        return np.zeros(0, dtype=np.int64), []
    threshold, max_components = _sites_settings(run.config)
    t = run.tuning
    bases = [
        np.ascontiguousarray(
            unit_basis(t.components[i], t.explained_variance_ratio[i], threshold, max_components),
            dtype=np.float32,
        )
        for i in range(t.unit_rows.size)
    ]
    return t.unit_rows.copy(), bases


def _nanmean(x: Any) -> float:
    x = np.asarray(x, dtype=float)
    x = x[np.isfinite(x)]
    return float(x.mean()) if x.size else float("nan")


def _nanmedian(x: Any) -> float:
    x = np.asarray(x, dtype=float)
    x = x[np.isfinite(x)]
    return float(np.median(x)) if x.size else float("nan")


def _fill(table: pd.DataFrame, column: str, rows: np.ndarray, values: Any) -> None:
    """``table[column]`` at unit rows ``rows`` (the table's index is the unit row)."""
    table.loc[np.asarray(rows, dtype=np.int64), column] = np.asarray(values, dtype=float)


def unit_rows(run: StoredRun) -> pd.DataFrame:
    """One row per unit of the session (:data:`~nwb_subspace.population.columns.UNIT_COLUMNS`).

    ``status``: ``"analysed"`` (the unit has a tuning subspace), ``"scored"`` (CNN scores
    only) or ``"not analysed"``; measures a unit lacks are NaN (text columns ``""``).
    ``site_pc_similarity`` is the unit-included counterpart of ``site_similarity_loo``:
    ``sum_{j < K_ref} sim[u, j] / min(k_u, K_ref)`` over the stored per-PC similarities
    ``sim`` to the top ``K_ref = dimensionality_reference`` reference site PCs, ``k_u`` the
    unit's basis size (:func:`unit_bases`).
    """
    units = run.units
    n = run.n_units
    table = pd.DataFrame({c: np.full(n, np.nan) for c in UNIT_COLUMNS}, index=np.arange(n))
    for col in ("site", "unit_row", "unit_id", "cell_type", "layer", "depth_um"):
        table[col] = units[col].to_numpy()
    table["depth_below_l34_um"] = units["depth_below_l34_um"].to_numpy(dtype=float)
    table["session"] = run.session
    table["site_id"] = [f"{run.session}/{s}" for s in units["site"]]
    for col in _TEXT_COLUMNS:
        table[col] = ""
    for kind, scores in run.scores.items():
        for prefix, source in _SCORE_COLUMNS.items():
            _fill(table, f"{prefix}_{kind}", scores["unit_row"], scores[source])
    table["ev_fraction"] = explained_variance_fraction(table["ev_subspace"], table["ev_cnn"])
    status = np.where(np.isfinite(table["r_cnn"].to_numpy(float)), "scored", "not analysed")
    if run.tuning is not None:
        t, rows = run.tuning, run.tuning.unit_rows
        status[rows] = "analysed"
        _fill(table, "dimensionality", rows, t.dimensionality)
        _fill(table, "n_frames", rows, t.n_frames)
        for col in ("dimensionality_reference", "n_outlier_frames"):
            if getattr(t, col) is not None:
                _fill(table, col, rows, getattr(t, col))
    table["status"] = status
    _site_columns(run, table)
    _srf_columns(run, table)
    return table.reset_index(drop=True)[list(UNIT_COLUMNS)]


def _site_columns(run: StoredRun, table: pd.DataFrame) -> None:
    """Variance fractions and similarities to the site subspace, from each site's table."""
    rows, bases = unit_bases(run)
    k_of = {int(r): b.shape[1] for r, b in zip(rows, bases, strict=True)}
    for s in run.site_subspaces:
        _fill(table, "variance_fraction", s.unit_rows, s.variance_fraction)
        for col in ("variance_fraction_loo", "site_similarity_loo"):
            if getattr(s, col) is not None:
                _fill(table, col, s.unit_rows, getattr(s, col))
        k_ref = s.dimensionality_reference
        if s.site_pc_similarity is None or k_ref is None:
            continue
        sim = np.asarray(s.site_pc_similarity, dtype=float)[:, :k_ref].sum(1)
        k_u = np.array([k_of.get(int(r), np.nan) for r in s.unit_rows], dtype=float)
        _fill(table, "site_pc_similarity", s.unit_rows, sim / np.minimum(k_u, k_ref))


def _srf_columns(run: StoredRun, table: pd.DataFrame) -> None:
    """Breadth and shape from the run's own SRFs, exactly as the session's units CSV, and
    the model maps' breadth (``breadth_model``, ``breadth_model_bins``)."""
    srfs = own_srfs(run)
    if srfs is None:
        return
    measures = srf_measures(srfs, source=measure_source(srfs))
    for col in _SRF_COLUMNS:
        if col not in _TEXT_COLUMNS:
            table[col] = table[col].astype(float)
        for r, values in measures.items():
            table.at[r, col] = values[col]
    for col in _MODEL_COLUMNS:
        table[col] = table[col].astype(float)
    for r, values in srf_measures(srfs, source="model").items():
        if values["breadth_measure"] == "fraction":  # older runs: the count only
            table.at[r, "breadth_model"] = values["breadth"]
        table.at[r, "breadth_model_bins"] = values["breadth_bins"]


def site_rows(run: StoredRun, units_df: pd.DataFrame) -> pd.DataFrame:
    """One row per site of the session (:data:`~nwb_subspace.population.columns.SITE_COLUMNS`).

    Means and medians are over the site's units with a finite value (``r_*_mean`` over its
    scored units); ``subspace_fraction`` is
    :func:`~nwb_subspace.subspace.model.site_subspace_fraction` of the units' ``ev_fraction``;
    ``site_dimensionality`` (and the reference's) come from the stored site subspace, the
    ``same_site_similarity`` and tiling triples (value, null mean, p) from the run's site
    statistics rows of that site.

    Parameters
    ----------
    run : StoredRun
    units_df : DataFrame
        :func:`unit_rows` of ``run``.
    """
    fitted = {s.site: s for s in run.site_subspaces}
    stats = run.statistics
    out = []
    for site, group in units_df.groupby("site", sort=False):
        row: dict = {c: np.nan for c in SITE_COLUMNS}
        row.update(
            session=run.session, site=site, site_id=f"{run.session}/{site}",
            n_units=int(len(group)), n_analysed=int((group["status"] == "analysed").sum()),
            subspace_fraction=site_subspace_fraction(group["ev_fraction"]),
            dimensionality_median=_nanmedian(group["dimensionality"]),
            dimensionality_reference_median=_nanmedian(group["dimensionality_reference"]),
            variance_fraction_mean=_nanmean(group["variance_fraction"]),
            site_similarity_loo_mean=_nanmean(group["site_similarity_loo"]),
        )  # fmt: skip
        for kind in ("ln", "cnn", "subspace"):
            row[f"r_{kind}_mean"] = _nanmean(group[f"r_{kind}"])
            row[f"ev_{kind}_mean"] = _nanmean(group[f"ev_{kind}"])
        if site in fitted:
            row["site_dimensionality"] = int(fitted[site].dimensionality)
            ref = fitted[site].dimensionality_reference
            row["site_dimensionality_reference"] = np.nan if ref is None else int(ref)
        for statistic, col in _SITE_STATISTICS.items():
            found = stats[(stats["site"] == site) & (stats["statistic"] == statistic)]
            if len(found):
                first = found.iloc[0]
                row[col], row[f"{col}_null"], row[f"{col}_p"] = (
                    float(first["value"]), float(first["null_mean"]), float(first["p_value"]),
                )  # fmt: skip
        out.append(row)
    return pd.DataFrame(out, columns=list(SITE_COLUMNS))


def session_row(run: StoredRun, units_df: pd.DataFrame, sites_df: pd.DataFrame) -> dict:
    """The session's row (:data:`~nwb_subspace.population.columns.SESSION_COLUMNS`)."""
    return dict(
        zip(
            SESSION_COLUMNS,
            (
                run.session, run.file, run.run, run.software_version, run.created,
                int(len(units_df)), int(len(sites_df)),
                int((units_df["status"] == "analysed").sum()), _nanmedian(units_df["r_cnn"]),
                settings_key(run)[0],
            ),
            strict=True,
        )
    )  # fmt: skip


def _canonical(value: Any) -> Any:
    """JSON-stable form: numbers as floats (800 == 800.0), mappings with sorted keys."""
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float | np.number):
        return float(value)
    return str(value)


def settings_key(config: Mapping | StoredRun) -> tuple[str, dict]:
    """The settings that must match for sessions' tables to be pooled, and their hash.

    Parameters
    ----------
    config : dict or StoredRun
        A run's config (``StoredRun.config``); a :class:`StoredRun` also contributes its
        CNN's ``n_lags``.

    Returns
    -------
    key : str
        First 12 hex digits of the SHA-256 of ``settings`` as sorted JSON.
    settings : dict
        ``spectrogram`` (the whole section), ``n_lags``, the :data:`SETTINGS_COMPARED` keys
        of ``subspace`` and ``sites`` (flattened as ``"section.key"``) and ``layers``;
        a setting the run does not record is None. Numbers are compared as floats.
    """
    n_lags = None
    if isinstance(config, StoredRun):
        n_lags, config = config.n_lags, config.config
    if not isinstance(config, Mapping):
        raise TypeError(f"config must be a dict or a StoredRun; got {type(config).__name__}")
    settings: dict[str, Any] = {
        "spectrogram": _canonical(config.get("spectrogram")),
        "n_lags": _canonical(n_lags),
    }
    for section, keys in SETTINGS_COMPARED.items():
        values = config.get(section) or {}
        for key in keys:
            settings[f"{section}.{key}"] = _canonical(values.get(key))
    settings["layers"] = _canonical(config.get("layers"))
    text = json.dumps(settings, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12], settings
