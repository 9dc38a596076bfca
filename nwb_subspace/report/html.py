"""A static HTML report of one analysis run, built from the results stored in an NWB file.

``make_report(path)`` reads a stored run back (``nwb_subspace.io.writer.read_results``), never
refits anything, and writes ``report.html`` with its PNG figures in ``figures/`` beside it
(referenced by relative paths, so the folder can be moved or zipped as a whole). Sections:
data summary, model performance, dSTRF PCs and SRFs of the best units, site analysis (when
stored), cell types and layers, notes and the effective configuration.
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

from nwb_subspace.report.figures import (
    best_units,
    plot_loss_curves,
    plot_model_scores,
    plot_site_subspace,
    plot_spectrogram,
    scored_cnn,
    site_tiling,
)
from nwb_subspace.report.plots import plot_dstrf_pcs, plot_srf
from nwb_subspace.report.plots_site import plot_breadth_groups, plot_tiling
from nwb_subspace.results import ResultSet

__all__ = ["best_units", "default_report_dir", "make_report", "site_tiling"]

log = logging.getLogger(__name__)

SCORE_FIELDS = ("correlation", "noise_floor", "noise_corrected_correlation", "explained_variance")


def default_report_dir(nwb_path: str | os.PathLike, run: str) -> Path:
    """Folder a report goes to when none is given: ``<file stem>_report_<run>`` beside it."""
    p = Path(nwb_path)
    return p.with_name(f"{p.stem}_report_{run}")


def _choose_run(path: Path, run: str | None) -> str:
    import h5py

    from nwb_subspace.io.writer import list_runs

    if not path.exists():
        raise FileNotFoundError(f"no such file: {path}")
    if not h5py.is_hdf5(path):
        raise ValueError(f"{path} is not an HDF5/NWB file")
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
    from pynwb import NWBHDF5IO

    from nwb_subspace.io.sound import sound_candidates

    s = _DataSummary()
    with NWBHDF5IO(str(path), "r") as io:
        nwbfile = io.read()
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


def _section_units(results: ResultSet, data: _DataSummary, figs: _Figures) -> str:
    if not results.subspaces:
        return _p("No tuning subspaces are stored with this run (no unit passed the quality cut).")
    tuning = results.subspaces[0]
    srfs = results.srfs[0] if results.srfs else None
    cnn = scored_cnn(results)
    score = (
        dict(zip(cnn.unit_rows.tolist(), cnn.scores.noise_corrected_correlation, strict=True))
        if cnn
        else {}
    )
    best = best_units(results)
    out = [
        _p(
            f"{tuning.unit_rows.size} units have a tuning subspace. The {len(best)} with the "
            "best CNN noise-corrected correlation are shown: their mean dSTRF and principal "
            "components (share of dSTRF variance in brackets), and their subspace receptive "
            "fields on the first two PCs (CNN prediction and measured response)."
        )
    ]
    rows = []
    for r in best:
        i = int(np.flatnonzero(tuning.unit_rows == r)[0])
        evr = tuning.explained_variance_ratio[i]
        k = int(tuning.dimensionality[i])
        rows.append(
            [
                r,
                data.unit_labels.get(r, str(r)),
                float(score.get(r, np.nan)),
                k,
                float(np.nansum(evr[:k])),
                int(tuning.n_frames[i]),
            ]
        )
    out.append(
        _table(
            [
                "unit row",
                "unit",
                "CNN noise-corrected r",
                "dimensionality",
                "variance in kept PCs",
                "dSTRF frames",
            ],
            rows,
        )
    )
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
        if srfs is None:
            continue
        for source in ("model", "measured"):
            hits = np.flatnonzero((srfs.unit_rows == r) & (srfs.response_source == source))
            if hits.size:
                j = int(hits[0])
                out.append(
                    figs.add(
                        f"srf_unit{r}_{source}",
                        lambda p, j=j: plot_srf(srfs, j, p),
                        f"Unit row {r}: SRF from the {source} response "
                        "(white: high-activity region).",
                    )
                )
    if srfs is None:
        out.append(_p("No subspace receptive fields are stored with this run."))
    return "".join(out)


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
                f"Site {site.site}: pooled dSTRF PCs and each unit's variance fraction in the "
                "site subspace (black: null mean).",
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
        out.append("<h3>site statistics</h3>")
        header = ["site", "statistic", "value", "null mean", "p", "effect", "n", "test", "verdict"]
        keys = ["site", "statistic", "value", "null_mean", "p_value", "effect_size", "n"]
        out.append(
            _table(
                header,
                [[r[k] for k in keys] + [r["test"], r["verdict"]] for r in stat_rows],
            )
        )
    else:
        out.append(_p("No site statistics stored in this run."))
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
    srfs = results.srfs[0]
    first: dict[int, int] = {}
    for i, (r, source) in enumerate(
        zip(srfs.unit_rows.tolist(), srfs.response_source, strict=True)
    ):
        if source == "model":
            first.setdefault(r, i)
    rows = sorted(first)
    if not rows:
        out.append(_p("No model SRFs stored, so no breadth comparison."))
        return "".join(out)
    breadth = [float(srfs.breadth[first[r]]) for r in rows]
    out.append(
        figs.add(
            "breadth_groups",
            lambda p: plot_breadth_groups(breadth, labels(cell_type, rows), labels(layer, rows), p),
            "SRF breadth (high-activity bins of the model SRF on PCs 1-2) by cell type and "
            "layer; unknown groups are shown, not dropped.",
        )
    )
    comparisons = [
        r
        for stats in results.site_statistics
        for r in stats.rows
        if not str(r["statistic"]).startswith("tiling")
        and any(w in str(r["statistic"]) for w in ("narrow", "broad", "layer", "cell"))
    ]
    if comparisons:
        out.append(_p(f"{len(comparisons)} stored group comparison(s) are in the site table."))
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
    tmp = target.with_suffix(".html.tmp")
    tmp.write_text(doc, encoding="utf-8")
    os.replace(tmp, target)
    log.info(
        "report written to %s (%d figures, %.1f s)",
        target,
        len(figs.made),
        time.perf_counter() - start,
    )
    return target
