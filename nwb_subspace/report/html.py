"""A static HTML report of one analysis run, built from the results stored in an NWB file.

``make_report(path)`` reads a stored run back (``nwb_subspace.io.writer.read_results``), never
refits anything, and writes ``report.html`` with its PNG figures in ``figures/`` beside it
(referenced by relative paths, so the folder can be moved or zipped as a whole). Sections:
data summary, model performance, dSTRF PCs and SRFs of the best units, site analysis (when
stored), cell types and layers, notes and the effective configuration.

Where a measure has the paper's definition beside ours, both are shown: the units' own
dimensionality and ``dimensionality_reference`` (95% of the top-15 PCs' variance), the site
dimensionality both ways, SRFs on PC1-PC2 and PC1-PC3 with the noise-aware breadth, the shape
test and (measured maps) the SEM of each bin; the site statistics list the paper's tests first
(:func:`statistic_kind`). Files written before these measures existed still render ("-" or
the old measures).
"""

from __future__ import annotations

import datetime as _dt
import html
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nwb_subspace.io.atomic import write_atomically
from nwb_subspace.report.figures import (
    best_units,
    plot_loss_curves,
    plot_model_scores,
    plot_site_subspace,
    plot_spectrogram,
    scored_cnn,
    site_tiling,
)
from nwb_subspace.report.plots import plot_dstrf_pcs, plot_srf_pairs, srf_row_summary
from nwb_subspace.report.plots_site import plot_breadth_groups, plot_tiling
from nwb_subspace.results import ResultSet
from nwb_subspace.site.subspace import LOCALITY_STATISTIC
from nwb_subspace.site.tables import measure_source, srf_measures
from nwb_subspace.site.tiling import TILING_NEIGHBOURS_STATISTIC, TILING_STATISTIC

__all__ = [
    "PAPER_STATISTICS",
    "best_units",
    "default_report_dir",
    "make_report",
    "site_tiling",
    "statistic_kind",
]

log = logging.getLogger(__name__)

SCORE_FIELDS = ("correlation", "noise_floor", "noise_corrected_correlation", "explained_variance")


def default_report_dir(nwb_path: str | os.PathLike, run: str) -> Path:
    """Folder a report goes to when none is given: ``<file stem>_report_<run>`` beside it
    (the stem without ``.nwb`` / ``.nwb.zarr``)."""
    from nwb_subspace.io.backend import store_stem

    p = Path(nwb_path)
    return p.with_name(f"{store_stem(p)}_report_{run}")


def _choose_run(path: Path, run: str | None) -> str:
    from nwb_subspace.io.backend import nwb_backend
    from nwb_subspace.io.writer import list_runs

    if not path.exists():
        raise FileNotFoundError(f"no such file: {path}")
    nwb_backend(path)  # an HDF5 file or an NWB Zarr store, else a clear ValueError
    runs = list_runs(path)
    if not runs:
        raise ValueError(
            f"{path} holds no nwb-subspace results (nothing in processing/misc); "
            f"run `nwb-subspace run {path}` first"
        )
    if run is None:
        if len(runs) > 1:
            raise ValueError(f"{path} holds {len(runs)} runs {runs}; choose one with --run NAME")
        return runs[0]
    if run not in runs:
        raise ValueError(f"{path} holds no run named {run!r}; runs: {runs}")
    return run


# --------------------------------------------------------------------------------------
# HTML helpers


def _e(x: object) -> str:
    return html.escape(str(x))


def _fmt(x: object, digits: int = 3) -> str:
    if isinstance(x, float | np.floating):
        return "n/a" if not np.isfinite(x) else f"{float(x):.{digits}g}"
    return str(x)


def _table(header: list[str], rows: list[list[object]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{_e(_fmt(v))}</td>" for v in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _p(text: str) -> str:
    return f"<p>{_e(text)}</p>"


@dataclass
class _Figures:
    """Writes figures into ``folder`` and remembers every one (name -> caption)."""

    folder: Path
    made: list[Path] = field(default_factory=list)

    def add(self, name: str, draw: Callable[[Path], Path], caption: str) -> str:
        """Draw one figure; return its HTML (or a line saying why it could not be drawn)."""
        target = self.folder / f"{name}.png"
        try:
            path = Path(draw(target))
        except ValueError as err:
            log.info("figure %s not drawn: %s", name, err)
            return _p(f"(figure not drawn: {err})")
        self.made.append(path)
        rel = f"{self.folder.name}/{path.name}"
        return (
            f'<figure><img src="{_e(rel)}" alt="{_e(caption)}">'
            f"<figcaption>{_e(caption)}</figcaption></figure>"
        )


# --------------------------------------------------------------------------------------
# What the file holds besides the results


@dataclass
class _DataSummary:
    n_units: int = 0
    unit_labels: dict[int, str] = field(default_factory=dict)
    sounds: list[tuple[str, float, float]] = field(default_factory=list)  # name, rate, s
    trials: int = 0
    session_description: str = ""


def _data_summary(path: Path) -> _DataSummary:
    from nwb_subspace.io.remote import open_nwb
    from nwb_subspace.io.sound import sound_candidates

    s = _DataSummary()
    with open_nwb(path) as nwbfile:
        s.session_description = nwbfile.session_description or ""
        units = nwbfile.units
        if units is not None:
            s.n_units = len(units)
            if "unit_name" in units.colnames:
                names = [str(x) for x in units["unit_name"].data[:]]
            else:
                names = [str(x) for x in units.id.data[:]]
            s.unit_labels = dict(enumerate(names))
        for ts in sound_candidates(nwbfile)[0]:
            rate = float(ts.rate) if ts.rate is not None else float("nan")
            s.sounds.append((ts.name, rate, ts.data.shape[0] / rate))
        table = nwbfile.trials if nwbfile.trials is not None else nwbfile.epochs
        s.trials = len(table) if table is not None else 0
    return s


# --------------------------------------------------------------------------------------
# Sections


def _section_data(results: ResultSet, data: _DataSummary, figs: _Figures) -> str:
    split = results.config.get("split", {}) if isinstance(results.config, dict) else {}
    rows: list[list[object]] = [
        ["units in the file", data.n_units],
        ["trials", data.trials],
    ]
    for name, rate, dur in data.sounds:
        rows.append([f"sound '{name}'", f"{dur:.1f} s at {rate:g} Hz"])
    if not data.sounds:
        rows.append(["sound", "none found"])
    for key in ("validation_sounds", "estimation_sounds"):
        if key in split:
            value = split[key]
            rows.append([key.replace("_", " "), len(value) if isinstance(value, list) else value])
    out = [_table(["", ""], rows)]
    if not results.spectrograms:
        out.append(_p("No spectrogram is stored with this run."))
    for spec in results.spectrograms:
        f = spec.frequencies
        out.append(
            _p(
                f"Spectrogram '{spec.name}': {spec.data.shape[0]} bins at {spec.rate:g} Hz "
                f"({spec.data.shape[0] / spec.rate:.1f} s), {f.size} channels from "
                f"{f.min():.0f} to {f.max():.0f} Hz."
            )
        )
        out.append(
            figs.add(
                f"spectrogram_{spec.name}",
                lambda p, spec=spec: plot_spectrogram(spec, p),
                f"The first seconds of the stored spectrogram '{spec.name}'.",
            )
        )
    return "".join(out)


def _section_models(results: ResultSet, figs: _Figures) -> str:
    if not results.models:
        return _p("No models are stored with this run.")
    rows = []
    unscored = []
    for m in results.models:
        t = m.training
        if m.scores is None:
            unscored.append(m.name)
            medians = ["not scored"] * len(SCORE_FIELDS)
        else:
            medians = [
                float(np.nanmedian(np.asarray(getattr(m.scores, k), float)))
                if np.isfinite(np.asarray(getattr(m.scores, k), float)).any()
                else float("nan")
                for k in SCORE_FIELDS
            ]
        rows.append(
            [
                m.name,
                m.kind,
                m.unit_rows.size,
                *medians,
                t.epochs,
                t.best_epoch,
                t.n_initializations,
            ]
        )
    header = [
        "model",
        "kind",
        "units",
        "median r",
        "median noise floor",
        "median noise-corrected r",
        "median explained variance",
        "epochs",
        "best epoch",
        "initialisations",
    ]
    out = [
        _p(
            "Scores on the validation sounds (repeat-averaged PSTHs): correlation, the 95th "
            "percentile of shuffled correlations (noise floor), the correlation corrected "
            "for the noise between repeats, and the explained variance."
        ),
        _table(header, rows),
    ]
    if unscored:
        out.append(
            _p(
                f"Stored without validation scores: {', '.join(unscored)} (they are not "
                "recomputed here)."
            )
        )
    if scored_cnn(results) is not None:
        out.append(
            figs.add(
                "model_scores",
                lambda p: plot_model_scores(results.models, p),
                "Left: each unit's noise-corrected correlation, other models against the CNN "
                "(dashed: equal). Right: explained variance per model.",
            )
        )
    out.append(
        figs.add(
            "loss_curves",
            lambda p: plot_loss_curves(results.models, p),
            "Training and holdout loss per epoch (stage 1 then stage 2).",
        )
    )
    return "".join(out)


def _dimensionality_text(tuning, config: dict) -> str:
    """Which dimensionality is which, and which one the analyses downstream use."""
    sub = config.get("subspace", {}) if isinstance(config, dict) else {}
    rule = sub.get("outlier_rule")
    rule_text = {
        "reference": "the reference's rule: the spread of (frame - mean dSTRF) over 5x the "
        "spread of the mean dSTRF",
        "rms": "5x the RMS deviation from the mean dSTRF",
    }.get(rule, "the run's outlier rule")
    ref = (
        f"'dimensionality (reference)' is the paper's rule: the smallest k whose PCs hold more "
        f"than {tuning.reference_variance_threshold:.0%} of the variance of the top "
        f"{tuning.reference_n_components} PCs (raw eigenvalues, no noise correction), stored so "
        "results compare with the paper"
    )
    if tuning.dimensionality_reference is None:
        ref += " (not stored in this run: '-')"
    return (
        f"Two dimensionalities: 'dimensionality (ours)' is the smallest number of PCs reaching "
        f"{tuning.variance_threshold:.0%} of the dSTRF variance the fits agree on (fit-to-fit "
        "disagreement subtracted), capped by the noise floor; it is the default used "
        f"downstream (SRFs, site analysis). {ref}. 'dSTRF frames' are the frames kept for the "
        f"PCA, 'outlier frames' those removed by {rule_text}."
    )


def _unit_rows_table(results: ResultSet, data: _DataSummary, best: list[int]) -> str:
    tuning = results.subspaces[0]
    cnn = scored_cnn(results)
    score = (
        dict(zip(cnn.unit_rows.tolist(), cnn.scores.noise_corrected_correlation, strict=True))
        if cnn
        else {}
    )

    def optional(values: np.ndarray | None, i: int) -> object:
        return "-" if values is None else int(values[i])

    rows = []
    for r in best:
        i = int(np.flatnonzero(tuning.unit_rows == r)[0])
        k = int(tuning.dimensionality[i])
        rows.append(
            [
                r,
                data.unit_labels.get(r, str(r)),
                float(score.get(r, np.nan)),
                k,
                optional(tuning.dimensionality_reference, i),
                float(np.nansum(tuning.explained_variance_ratio[i][:k])),
                int(tuning.n_frames[i]),
                optional(tuning.n_outlier_frames, i),
            ]
        )
    header = [
        "unit row",
        "unit",
        "CNN noise-corrected r",
        "dimensionality (ours)",
        "dimensionality (reference)",
        "variance in kept PCs (ours)",
        "dSTRF frames",
        "outlier frames",
    ]
    return _table(header, rows) + _p(_dimensionality_text(tuning, results.config))


def _srf_caption(srfs, rows: list[int], r: int, source: str) -> str:
    parts = []
    for j in rows:
        s = srf_row_summary(srfs, j)
        if s["breadth_fraction"] is None:
            b = f"breadth {s['breadth_bins']} high-activity bins (old count)"
        else:
            b = (
                f"noise-aware breadth {s['breadth_fraction']:.2f} of {s['occupied']} occupied "
                f"bins (old count {s['breadth_bins']} bins)"
            )
        p = s["shape_p"]
        shape = f"shape {s['shape_class']} (index {_fmt(s['shape_index'])}"
        shape += f", p = {_fmt(p)})" if np.isfinite(p) else ", no noise test)"
        parts.append(f"{s['pair']}: {b}, {shape}")
    text = f"Unit row {r}: SRF from the {source} response on " + "; ".join(parts) + "."
    text += (
        f" White contour: bins at >= {srfs.high_activity_threshold:g} of the min-max normalised "
        "map (the old count's region)."
    )
    sem = srfs.response_map_sem
    if source == "measured" and sem is not None and any(np.isfinite(sem[j]).any() for j in rows):
        how = {"repeats": "across repeats of the repeated sounds", "samples": "within bins"}
        text += f" Bottom: the SEM of each bin ({how.get(srfs.sem_method, srfs.sem_method)})."
    return text


def _unit_srfs(srfs, r: int, figs: _Figures) -> str:
    out = []
    for source in ("model", "measured"):
        hits = np.flatnonzero((srfs.unit_rows == r) & (srfs.response_source == source))
        rows: list[int] = []
        seen: set[tuple[int, int]] = set()
        for j in hits.tolist():  # one map per dimension pair (the first stored)
            pair = tuple(int(x) for x in srfs.dimensions[j])
            if pair not in seen:
                seen.add(pair)
                rows.append(j)
        if rows:
            out.append(
                figs.add(
                    f"srf_unit{r}_{source}",
                    lambda p, rows=rows: plot_srf_pairs(srfs, rows, p),
                    _srf_caption(srfs, rows, r, source),
                )
            )
    return "".join(out)


def _section_units(results: ResultSet, data: _DataSummary, figs: _Figures) -> str:
    if not results.subspaces:
        return _p("No tuning subspaces are stored with this run (no unit passed the quality cut).")
    tuning = results.subspaces[0]
    srfs = results.srfs[0] if results.srfs else None
    best = best_units(results)
    out = [
        _p(
            f"{tuning.unit_rows.size} units have a tuning subspace. The {len(best)} with the "
            "best CNN noise-corrected correlation are shown: their mean dSTRF and principal "
            "components (share of dSTRF variance in brackets), and their subspace receptive "
            "fields on the stored PC pairs (PC1-PC2, and PC1-PC3 when stored; CNN prediction "
            "and measured response)."
        ),
        _unit_rows_table(results, data, best),
    ]
    if srfs is not None and srfs.grid:
        out.append(_p(f"SRF grid: {srfs.grid}."))
    for r in best:
        i = int(np.flatnonzero(tuning.unit_rows == r)[0])
        out.append(f"<h3>unit {_e(data.unit_labels.get(r, r))} (row {r})</h3>")
        out.append(
            figs.add(
                f"dstrf_pcs_unit{r}",
                lambda p, i=i: plot_dstrf_pcs(tuning, i, p),
                f"Unit row {r}: mean dSTRF and principal components (lag axis: most recent "
                "on the right).",
            )
        )
        if srfs is not None:
            out.append(_unit_srfs(srfs, r, figs))
    if srfs is None:
        out.append(_p("No subspace receptive fields are stored with this run."))
    return "".join(out)


def _site_caption(site) -> str:
    text = (
        f"Site {site.site}: pooled dSTRF PCs (ours: per-unit covariances, trace-normalised; "
        f"dimensionality {site.dimensionality}"
    )
    if site.dimensionality_reference is not None:
        text += (
            "; the reference's pooled PCA about the grand mean: dimensionality "
            f"{site.dimensionality_reference}"
        )
    text += ") and each unit's variance fraction in the site subspace (black: null mean)."
    loo = site.site_similarity_loo
    if loo is not None and np.isfinite(np.asarray(loo, float)).any():
        text += (
            " Mean leave-one-out similarity of the units to the reference site subspace "
            f"rebuilt without them: {_fmt(float(np.nanmean(np.asarray(loo, float))))}."
        )
    return text


def _section_sites(results: ResultSet, figs: _Figures) -> str:
    if not results.site_subspaces and not results.site_statistics:
        return _p("No site analysis stored in this run (no site subspace or site statistics).")
    out = []
    for site in results.site_subspaces:
        out.append(f"<h3>site {_e(site.site)}</h3>")
        out.append(
            figs.add(
                f"site_subspace_{site.site}",
                lambda p, site=site: plot_site_subspace(site, p),
                _site_caption(site),
            )
        )
        tile = site_tiling(results, site)
        if tile is None:
            out.append(_p(f"No tiling map for site {site.site} (needs two site dimensions)."))
            continue
        recomputed = any("recomputed" in n for n in tile.notes)
        how = tile.notes[-1] if recomputed else "from the SRFs stored with the site"
        out.append(
            figs.add(
                f"tiling_{site.site}",
                lambda p, tile=tile: plot_tiling(tile, p),
                f"Site {site.site}: each unit's high-activity region on site PCs 1-2 ({how}).",
            )
        )
    if not results.site_subspaces:
        out.append(_p("No site subspace stored in this run."))
    stat_rows = [row for stats in results.site_statistics for row in stats.rows]
    if stat_rows:
        out.append(_site_statistics(stat_rows))
    else:
        out.append(_p("No site statistics stored in this run."))
    return "".join(out)


#: Statistics of the paper's tests (the headline rows of the site statistics).
PAPER_STATISTICS = (
    LOCALITY_STATISTIC,
    "site_dimensionality",
    "site_dimensionality_reference",
    "site_similarity_loo_mean",
    TILING_STATISTIC,
    TILING_NEIGHBOURS_STATISTIC,
)
#: Endings of the group comparisons with units nested in sites.
NESTED_SUFFIXES = ("_site_means", "_mixed_model")


def statistic_kind(row: dict) -> str:
    """Which part of the site statistics a stored row belongs to.

    Returns
    -------
    str
        "paper's test" (the rows in :data:`PAPER_STATISTICS` and group comparisons with
        units nested in sites, statistic ending in ``_site_means`` / ``_mixed_model``),
        "secondary null" (test text starting "secondary null"), "units as independent"
        (statistic ending in ``_within_site``) or "other".
    """
    stat = str(row.get("statistic", ""))
    if stat in PAPER_STATISTICS or stat.endswith(NESTED_SUFFIXES):
        return "paper's test"
    if str(row.get("test", "")).startswith("secondary null"):
        return "secondary null"
    if stat.endswith("_within_site"):
        return "units as independent"
    return "other"


def _site_statistics(stat_rows: list[dict]) -> str:
    keys = ["site", "statistic", "value", "null_mean", "p_value", "effect_size", "n"]
    header = ["site", "statistic", "value", "null mean", "p", "effect", "n", "test", "verdict"]
    kinds = [statistic_kind(r) for r in stat_rows]
    paper = [r for r, k in zip(stat_rows, kinds, strict=True) if k == "paper's test"]
    out = ["<h3>paper's tests</h3>"]
    if paper:
        out.append(
            _p(
                "The tests as the paper makes them: same-site vs different-site similarity "
                "of the units' subspaces (site-label permutations), the site dimensionality "
                "(ours and the reference's rule), each unit's leave-one-out similarity to its "
                "site subspace, tiling overlap (all pairs, and neighbour pairs by depth) "
                "against a null that keeps each unit's occupancy, and group comparisons with "
                "units nested in sites (site means with Wilcoxon across sites, or a mixed "
                "model with site as a random effect)."
            )
        )
        rows = [[r[k] for k in keys] + [r["test"], r["verdict"]] for r in paper]
        out.append(_table(header, rows))
        if not any(r["statistic"] == LOCALITY_STATISTIC for r in paper):
            out.append(
                _p(
                    f"No {LOCALITY_STATISTIC} row: the same-site vs different-site test and "
                    "the between-site group tests need two or more sites (see the notes)."
                )
            )
    else:
        out.append(_p("None of the paper's tests is stored in this run (an older file?)."))
    rest = [(r, k) for r, k in zip(stat_rows, kinds, strict=True) if k != "paper's test"]
    if rest:
        out.append("<h3>other site statistics</h3>")
        out.append(
            _p(
                "'secondary null': a null that any auditory data beats (random or shuffled "
                "subspaces), not evidence of shared tuning by itself; 'units as independent': "
                "a unit-level test within one site, not a between-site test."
            )
        )
        rows = [[k] + [r[c] for c in keys] + [r["test"], r["verdict"]] for r, k in rest]
        out.append(_table(["kind", *header], rows))
    return "".join(out)


def _unit_column(results: ResultSet, name: str) -> np.ndarray | None:
    col = next((c for c in results.unit_columns if c.name == name), None)
    return None if col is None else np.asarray(col.values)


def _section_groups(results: ResultSet, figs: _Figures) -> str:
    cell_type = _unit_column(results, "cell_type")
    layer = _unit_column(results, "layer")
    if cell_type is None and layer is None:
        return _p("No cell types or layers stored in the units table.")

    def labels(col: np.ndarray | None, rows: list[int]) -> list[str]:
        if col is None:
            return ["unknown"] * len(rows)
        return [col[r].decode() if isinstance(col[r], bytes) else str(col[r]) for r in rows]

    all_rows = list(range(len(cell_type if cell_type is not None else layer)))
    counts = []
    for name, col in (("cell type", cell_type), ("layer", layer)):
        values, n = np.unique(labels(col, all_rows), return_counts=True)
        counts += [[name, v, int(c)] for v, c in zip(values, n, strict=True)]
    out = [_table(["", "group", "units in the file"], counts)]
    if not results.srfs:
        out.append(_p("No SRFs stored, so no breadth comparison."))
        return "".join(out)
    out.append(_breadth_groups(results, labels, cell_type, layer, figs))
    comparisons = [
        r
        for stats in results.site_statistics
        for r in stats.rows
        if not str(r["statistic"]).startswith("tiling")
        and any(w in str(r["statistic"]) for w in ("narrow", "broad", "layer", "cell"))
    ]
    if comparisons:
        nested = sum(str(r["statistic"]).endswith(NESTED_SUFFIXES) for r in comparisons)
        out.append(
            _p(
                f"{len(comparisons)} stored group comparison(s) are in the site statistics, "
                f"{nested} with units nested in sites (the paper's tests)."
            )
        )
    return "".join(out)


def _breadth_groups(results: ResultSet, labels, cell_type, layer, figs: _Figures) -> str:
    """Breadth by group: the measure the site step's group tests use (noise-aware fraction
    of the measured maps when stored; else the old count of the model maps)."""
    srfs = results.srfs[0]
    source = measure_source(srfs)
    measures = srf_measures(srfs, source)
    rows = sorted(measures)
    if not rows:
        return _p(f"No {source} SRFs stored, so no breadth comparison.")
    fraction = measures[rows[0]]["breadth_measure"] == "fraction"
    breadth = [float(measures[r]["breadth"]) for r in rows]
    ct, ly = labels(cell_type, rows), labels(layer, rows)
    if fraction:
        ylabel = f"noise-aware breadth\n(fraction of occupied bins, {source} SRF)"
        caption = (
            f"SRF breadth by cell type and layer: the noise-aware breadth of the {source} "
            "SRFs on PCs 1-2 (bins reliably above the unit's floor and at least halfway to "
            "its peak, as a fraction of the occupied bins), the measure the group tests use; "
            "unknown groups are shown, not dropped."
        )
    else:
        ylabel = "breadth (high-activity bins)"
        caption = (
            f"SRF breadth (high-activity bins of the {source} SRF on PCs 1-2) by cell type "
            "and layer; unknown groups are shown, not dropped."
        )
    out = [
        figs.add(
            "breadth_groups",
            lambda p: plot_breadth_groups(breadth, ct, ly, p, ylabel=ylabel),
            caption,
        )
    ]
    if fraction:
        old = np.array([measures[r]["breadth_bins"] for r in rows], float)
        new = np.asarray(breadth, float)
        table = []
        for name, lab in (("cell type", ct), ("layer", ly)):
            lab = np.asarray(lab)
            for g in sorted(set(lab.tolist())):
                m = lab == g
                table.append(
                    [name, g, int(m.sum()), float(np.nanmedian(new[m])), float(np.median(old[m]))]
                )
        out.append(
            _p(
                "Secondary: the old breadth (count of bins >= 0.5 of the unit's own min-max "
                "map, which a weakly modulated, noisy unit can inflate) beside the "
                "noise-aware one, group medians."
            )
        )
        header = ["", "group", "units", "median noise-aware breadth", "median old count (bins)"]
        out.append(_table(header, table))
    return "".join(out)


def _section_notes(results: ResultSet) -> str:
    config = dict(results.config) if isinstance(results.config, dict) else {}
    notes = config.pop("notes", [])
    out = []
    if notes:
        out.append("<ul>" + "".join(f"<li>{_e(n)}</li>" for n in notes) + "</ul>")
    else:
        out.append(_p("The run recorded no notes."))
    out.append("<h3>effective configuration</h3>")
    out.append(f"<pre>{_e(json.dumps(config, indent=2, sort_keys=True, default=str))}</pre>")
    return "".join(out)


CSS = """
body { font-family: sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.9em; }
td, th { border: 1px solid #ccc; padding: 3px 8px; text-align: left; }
th { background: #f0f0f0; }
figure { margin: 1em 0; } img { max-width: 100%; }
figcaption { font-size: 0.85em; color: #555; }
pre { background: #f7f7f7; padding: 0.8em; overflow-x: auto; font-size: 0.8em; }
"""


def make_report(
    nwb_path: str | os.PathLike, run: str | None = None, outdir: str | os.PathLike | None = None
) -> Path:
    """Write a static HTML report of a stored analysis run (no refitting).

    Parameters
    ----------
    nwb_path : path-like
        NWB file holding at least one nwb-subspace run in ``processing/misc``.
    run : str, optional
        Name of the run; may be omitted when the file holds exactly one.
    outdir : path-like, optional
        Folder for ``report.html`` and its ``figures/`` (default:
        ``<file stem>_report_<run>`` beside the file). Existing figures of the same names
        are replaced.

    Returns
    -------
    Path
        The HTML file.

    Raises
    ------
    FileNotFoundError
        No such file.
    ValueError
        Not an HDF5 file, no stored runs, several runs and none chosen, or an unknown run.
    """
    from nwb_subspace import __version__
    from nwb_subspace.io.writer import read_results

    start = time.perf_counter()
    path = Path(nwb_path)
    run = _choose_run(path, run)
    outdir = Path(outdir) if outdir is not None else default_report_dir(path, run)
    figs = _Figures(outdir / "figures")
    figs.folder.mkdir(parents=True, exist_ok=True)
    results = read_results(path, run)
    data = _data_summary(path)
    sections = [
        ("Data summary", _section_data(results, data, figs)),
        ("Model performance", _section_models(results, figs)),
        ("Best units: dSTRF PCs and SRFs", _section_units(results, data, figs)),
        ("Site analysis", _section_sites(results, figs)),
        ("Cell types and layers", _section_groups(results, figs)),
        ("Notes and configuration", _section_notes(results)),
    ]
    now = _dt.datetime.now().isoformat(timespec="seconds")
    head = (
        f"<p>File <code>{_e(path.resolve())}</code>, run <code>{_e(run)}</code> "
        f"(<code>processing/misc/{_e(run)}</code>). Built {_e(now)} by nwb-subspace "
        f"{_e(__version__)} from stored results, without refitting.</p>"
    )
    if data.session_description:
        head += _p(f"Session: {data.session_description}")
    body = "".join(f'<h2 id="s{i}">{_e(t)}</h2>{h}' for i, (t, h) in enumerate(sections))
    toc = "".join(f'<li><a href="#s{i}">{_e(t)}</a></li>' for i, (t, _) in enumerate(sections))
    doc = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>nwb-subspace report: {_e(path.name)} / {_e(run)}</title>"
        f"<style>{CSS}</style></head><body>"
        f"<h1>nwb-subspace report: {_e(path.name)} / {_e(run)}</h1>{head}"
        f"<ul>{toc}</ul>{body}</body></html>\n"
    )
    target = outdir / "report.html"
    write_atomically(target, lambda tmp: tmp.write_text(doc, encoding="utf-8"))
    log.info(
        "report written to %s (%d figures, %.1f s)",
        target,
        len(figs.made),
        time.perf_counter() - start,
    )
    return target
