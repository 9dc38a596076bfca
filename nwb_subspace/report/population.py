"""The population report: one static HTML page summarising many sessions' stored runs.

:func:`write_population_report` takes the population tables built by ``nwb-subspace
summarize`` (``nwb_subspace.population.columns``), the population statistics rows
(``nwb_subspace.results.STATISTIC_FIELDS``) and the locality result, and writes
``population_report.html`` with its PNG figures in ``figures/`` beside it (relative links, as
the per-session report does, so the folder can be moved or zipped whole).

Order of the page: what was summarised; the headline verdicts (model comparison, locality,
tiling, narrow vs broad, layers, depth, dimensionality); the figures, each captioned with its
n units / n sites; the statistics table; the sessions; files skipped with the reasons;
settings that differ between sessions (a warning); notes. All text is HTML-escaped.
"""

from __future__ import annotations

import datetime as _dt
import html
import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from nwb_subspace.io.atomic import write_atomically  # noqa: E402
from nwb_subspace.report.plots_population import (  # noqa: E402
    count_text,
    n_text,
    plot_cell_type_layer,
    plot_depth_profile,
    plot_dimensionality,
    plot_locality,
    plot_model_comparison,
    plot_subspace_fraction,
    plot_tiling_sites,
)
from nwb_subspace.results import STATISTIC_FIELDS  # noqa: E402

__all__ = ["HEADLINE_TOPICS", "REPORT_NAME", "statistic_topic", "write_population_report"]

log = logging.getLogger(__name__)

#: File name of the page inside ``outdir``.
REPORT_NAME = "population_report.html"
#: Topics of the headline verdicts, in page order (then "other").
HEADLINE_TOPICS = (
    "model comparison",
    "locality",
    "tiling",
    "narrow vs broad",
    "layers",
    "depth",
    "dimensionality",
)
_LAYER_WORDS = {"layer", "layers", "13", "44", "56", "outside"}
DPI = 90
MAX_NAMES = 10


def statistic_topic(statistic: object) -> str:
    """Headline topic of a statistics row, from the words of its ``statistic`` name.

    Words are the name split at ``_``. "depth" -> depth; "tiling" -> tiling; "same" and
    "site" (``same_vs_different_site_similarity`` and its reference-pooling row) or
    "locality" -> locality; "narrow" or "broad" -> narrow vs broad;
    "cnn", "ln" or "subspace" with "fraction" -> model comparison; "layer", a layer code or
    "across" without "sites" (``<measure>_across_<layers>_<method>``) -> layers;
    "dimensionality" -> dimensionality; else "other".

    Returns
    -------
    str
        One of :data:`HEADLINE_TOPICS` or "other".
    """
    name = str(statistic).lower()
    words = set(name.split("_"))
    if "depth" in words:
        return "depth"
    if "tiling" in words:
        return "tiling"
    if {"same", "site"} <= words or "locality" in words:
        return "locality"
    if words & {"narrow", "broad"}:
        return "narrow vs broad"
    if words & {"cnn", "ln"} or {"subspace", "fraction"} <= words:
        return "model comparison"
    if words & _LAYER_WORDS or ("across" in words and "sites" not in words):
        return "layers"
    if "dimensionality" in words:
        return "dimensionality"
    return "other"


# --------------------------------------------------------------------------------------
# HTML helpers


def _e(x: object) -> str:
    return html.escape(str(x))


def _fmt(x: object, digits: int = 3) -> str:
    if x is None:
        return "-"
    if isinstance(x, float | np.floating):
        return "n/a" if not np.isfinite(x) else f"{float(x):.{digits}g}"
    return str(x)


def _table(header: Sequence[str], rows: Iterable[Sequence[object]], cls: str = "") -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{_e(_fmt(v))}</td>" for v in row) + "</tr>" for row in rows
    )
    attr = f' class="{_e(cls)}"' if cls else ""
    return f"<table{attr}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _p(text: str, cls: str = "") -> str:
    attr = f' class="{_e(cls)}"' if cls else ""
    return f"<p{attr}>{_e(text)}</p>"


@dataclass
class _Figures:
    """Saves figures as PNGs in ``folder``; remembers the files written."""

    folder: Path
    made: list[Path] = field(default_factory=list)

    def add(self, name: str, draw: Callable[[], object], caption: str) -> str:
        """Draw, save and close one figure; its HTML, or a line saying why it is missing."""
        target = self.folder / f"{name}.png"
        try:
            fig = draw()
        except (ValueError, KeyError, TypeError, IndexError) as err:
            log.warning("population figure %s not drawn: %s", name, err)
            return _p(f"(figure '{name}' not drawn: {err})")
        try:
            fig.savefig(target, dpi=DPI)
        finally:
            plt.close(fig)
        self.made.append(target)
        rel = f"{self.folder.name}/{target.name}"
        return (
            f'<figure><img src="{_e(rel)}" alt="{_e(caption)}">'
            f"<figcaption>{_e(caption)}</figcaption></figure>"
        )


# --------------------------------------------------------------------------------------
# inputs


def _frame(df: object, name: str) -> pd.DataFrame:
    if df is None:
        return pd.DataFrame()
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"{name} must be a pandas DataFrame (or None); got {type(df).__name__}")
    return df


def _statistics(statistics: object) -> pd.DataFrame:
    if statistics is None:
        return pd.DataFrame(columns=list(STATISTIC_FIELDS))
    df = statistics if isinstance(statistics, pd.DataFrame) else pd.DataFrame(list(statistics))
    if df.empty:
        return pd.DataFrame(columns=list(STATISTIC_FIELDS))
    missing = [c for c in STATISTIC_FIELDS if c not in df.columns]
    if missing:
        raise ValueError(
            f"statistics lacks the columns {missing}; rows need the keys {STATISTIC_FIELDS} "
            "(make them with nwb_subspace.site.groups.stat_row)"
        )
    return df


def _with_locality(stats: pd.DataFrame, locality: object) -> pd.DataFrame:
    """``stats`` plus the locality result's rows not already in it (same site/statistic/test)."""
    rows = list(getattr(locality, "rows", None) or []) if locality is not None else []
    if not rows:
        return stats
    extra = _statistics(rows)
    seen = set(zip(stats["site"], stats["statistic"], stats["test"], strict=True))
    keep = [
        k not in seen for k in zip(extra["site"], extra["statistic"], extra["test"], strict=True)
    ]
    if not any(keep):
        return stats
    return pd.concat([stats, extra[keep]], ignore_index=True) if len(stats) else extra[keep]


def _skipped(skipped: Iterable) -> list[tuple[str, str]]:
    out = []
    for i, item in enumerate(skipped or ()):
        if isinstance(item, Mapping):
            item = (item.get("file", ""), item.get("reason", ""))
        if isinstance(item, str) or len(item) != 2:
            raise ValueError(f"skipped[{i}] must be a (file, reason) pair; got {item!r}")
        out.append((str(item[0]), str(item[1])))
    return out


# --------------------------------------------------------------------------------------
# sections


def _summary(units: pd.DataFrame, sites: pd.DataFrame, sessions: pd.DataFrame, n_skipped) -> str:
    runs = sorted({str(r) for r in sessions.get("run", pd.Series(dtype=object)).dropna()})
    n_sessions = len(sessions) if len(sessions) else units.get("session", pd.Series()).nunique()
    n_sites = len(sites) if len(sites) else units.get("site_id", pd.Series()).nunique()
    analysed = int((units.get("status", pd.Series(dtype=object)) == "analysed").sum())
    rows = [
        ["sessions (result files) summarised", n_sessions],
        ["files skipped", n_skipped],
        ["sites", n_sites],
        ["units", len(units)],
        ["units with a tuning subspace (analysed)", analysed],
        ["run name(s)", ", ".join(runs) if runs else "-"],
    ]
    return _table(["", ""], rows)


def _fact_lines(topic: str, units: pd.DataFrame, sites: pd.DataFrame) -> list[str]:
    """Plain counts from the tables beside a topic's verdicts."""
    if topic == "model comparison" and "subspace_fraction" in sites:
        f = pd.to_numeric(sites["subspace_fraction"], errors="coerce").to_numpy(float)
        f = f[np.isfinite(f)]
        if f.size:
            return [
                f"subspace-model fraction: median {np.median(f):.3f} over {f.size} sites; "
                f"{int((f >= 0.95).sum())} of {f.size} sites >= 0.95"
            ]
    if topic == "dimensionality" and "dimensionality" in units:
        d = pd.to_numeric(units["dimensionality"], errors="coerce").dropna()
        if len(d):
            return [f"unit dimensionality (ours): median {d.median():g} over {len(d)} units"]
    return []


def _secondary(row: Mapping) -> bool:
    """A row whose test is labelled secondary or reference (e.g. a confounded null)."""
    return str(row.get("test", "")).lower().startswith(("reference", "secondary"))


def _headline_item(r: Mapping) -> str:
    """One verdict: bold (primary), "secondary:" or a descriptive row's summary."""
    detail = f"({r['statistic']}, n = {_fmt(r['n'])})"
    if str(r["verdict"]).strip().lower() == "descriptive":
        return f"<li>{_e(r['statistic'])}: {_e(r['test'])}</li>"
    lead = f"secondary: {_e(r['verdict'])}" if _secondary(r) else f"<b>{_e(r['verdict'])}</b>"
    return f"<li>{lead} <span class='test'>{_e(detail)}</span></li>"


def _headlines(stats: pd.DataFrame, units: pd.DataFrame, sites: pd.DataFrame) -> str:
    topics = [statistic_topic(s) for s in stats["statistic"]] if len(stats) else []
    out = []
    for topic in HEADLINE_TOPICS:
        mine = [r for r, t in zip(stats.to_dict("records"), topics, strict=True) if t == topic]
        mine.sort(key=_secondary)
        items = [_headline_item(r) for r in mine]
        facts = _fact_lines(topic, units, sites)
        items += [f"<li>{_e(t)}</li>" for t in facts]
        if not mine and not (facts and topic == "dimensionality"):
            items.append("<li>not tested (the notes below say why)</li>")
        out.append(f"<h3>{_e(topic)}</h3><ul>{''.join(items)}</ul>")
    lead = _p(
        "Each verdict with its statistic and n; the tests are described in full in the "
        "population statistics table below. 'secondary': a reference or confounded "
        "comparison, shown beside the primary test, not instead of it."
    )
    return lead + "".join(out)


def _finite(df: pd.DataFrame, *cols: str) -> np.ndarray:
    """Rows of ``df`` where every column in ``cols`` is present and finite."""
    mask = np.ones(len(df), dtype=bool)
    for c in cols:
        values = pd.to_numeric(df[c], errors="coerce") if c in df else pd.Series(np.nan, df.index)
        mask &= np.isfinite(values.to_numpy(dtype=float))
    return mask


def _tiling_counts(sites: pd.DataFrame) -> str:
    for which in ("neighbours", "mean"):
        ok = _finite(sites, f"tiling_overlap_{which}", f"tiling_overlap_{which}_null")
        if ok.any():
            n = pd.to_numeric(sites.loc[ok, "n_analysed"], errors="coerce").sum() if (
                "n_analysed" in sites) else 0  # fmt: skip
            return n_text(n, ok.sum())
    return n_text(0, 0)


def _known(units: pd.DataFrame, col: str) -> bool:
    """Whether any unit has a known value in ``col`` (not empty, "unknown" or NaN)."""
    if col not in units:
        return False
    values = units[col].astype(str).str.strip().str.lower()
    return bool((~values.isin(["", "unknown", "nan", "none"])).any())


def _missing(units: pd.DataFrame, sites: pd.DataFrame, locality: object) -> dict[str, str]:
    """Figure name -> why its data are not available (absent when they are)."""
    out = {}
    known = [c for c in ("cell_type", "layer") if _known(units, c)]
    if not known:
        out["cell_type_layer"] = "no unit has a known cell type or layer."
    if not _finite(units, "depth_below_l34_um").any():
        out["depth_profile"] = (
            "no unit has a depth below the L3/4 boundary (the runs' [layers] setting gives no "
            "boundary, or the units table has no depths)."
        )
    if locality is None:
        out["locality"] = "no locality result was given (no unit-pair similarities)."
    if _tiling_counts(sites) == n_text(0, 0):
        out["tiling"] = "no site has a tiling overlap with its null."
    if not _finite(sites, "subspace_fraction").any():
        out["subspace_fraction"] = "no site has a subspace-model fraction."
    if not _finite(units, "dimensionality").any():
        out["dimensionality"] = "no unit has a tuning-subspace dimensionality."
    return out


def _section_figures(units, sites, stats, locality, figs: _Figures) -> str:
    analysed = (units.get("status", pd.Series(dtype=object)) == "analysed").to_numpy()
    specs = [
        ("model_comparison", lambda: plot_model_comparison(units, sites, stats),
         "Model comparison: each site's mean noise-corrected validation correlation (large "
         "dots), LN vs CNN (left) and subspace model vs CNN (right), the units faint behind; "
         "dashed: equal scores. Wilcoxon signed-rank across sites in the titles. "
         f"{count_text(units, _finite(units, 'r_cnn'))} with a CNN score."),
        ("subspace_fraction", lambda: plot_subspace_fraction(sites, units, stats),
         "Subspace-model fraction (subspace-model explained variance over the CNN's) per "
         "site: the site's median (dots; the value its own run reports), its units faint "
         "behind; dashed: 0.95, the paper's claim. "
         f"{count_text(units, _finite(units, 'ev_fraction'))} with a fraction."),
        ("dimensionality", lambda: plot_dimensionality(units),
         "Tuning-subspace dimensionality of the units: ours (the default, noise-aware) and "
         "the paper's rule (95% of the variance of the top 15 PCs) side by side. "
         f"{count_text(units, _finite(units, 'dimensionality'))}."),
        ("locality", lambda: plot_locality(locality, units, stats),
         "Subspace similarity of unit pairs (mean squared cosine of the principal angles): "
         "same site, different site in the same session, different sessions (box: a sample "
         "of pairs; diamond: the mean over all pairs compared). The primary test permutes "
         "site labels within each session, so the per-session models cannot create the "
         f"effect. {count_text(units, analysed)} analysed."),
        ("tiling", lambda: plot_tiling_sites(sites, stats),
         "Tiling: each site's mean overlap of neighbouring units' high-activity regions "
         "against its null (each unit's region rotated about the centre of the plane, "
         "occupancy kept); red: the site's own p < 0.05 (from its run). Above the dashed line: "
         "neighbours' regions overlap more than chance; on or below it: no more than chance "
         f"(regions scattered, tiling the plane). {_tiling_counts(sites)}."),
        ("cell_type_layer", lambda: plot_cell_type_layer(units, stats),
         "SRF breadth (mean +- SEM) and bowl / hill fractions (of the units whose tuning "
         "curve was classified) by cell type and layer; each bar is labelled 'units "
         f"(sites)'. {count_text(units, _finite(units, 'breadth'))} with a breadth."),
        ("depth_profile", lambda: plot_depth_profile(units, stats),
         "Leave-one-out similarity of each unit to its site subspace against depth below the "
         "L3/4 boundary: mean +- SEM per 100 um bin (numbers: units per bin), units faint "
         "behind. "
         f"{count_text(units, _finite(units, 'depth_below_l34_um', 'site_similarity_loo'))}."),
    ]  # fmt: skip
    missing = _missing(units, sites, locality)
    out = []
    for name, draw, caption in specs:
        if name in missing:
            caption = f"Not available: {missing[name]} {caption}"
            out.append(_p(f"{name.replace('_', ' ')}: not available: {missing[name]}", "warning"))
        out.append(figs.add(name, draw, caption))
    return "".join(out)


def _section_statistics(stats: pd.DataFrame) -> str:
    if not len(stats):
        return _p("No population statistics were computed (see the notes).")
    order = {t: i for i, t in enumerate((*HEADLINE_TOPICS, "other"))}
    records = stats.to_dict("records")
    records.sort(key=lambda r: order[statistic_topic(r["statistic"])])
    keys = ["site", "statistic", "value", "null_mean", "p_value", "effect_size", "n"]
    rows = [[statistic_topic(r["statistic"])] + [r[k] for k in keys] + [r["test"], r["verdict"]]
            for r in records]  # fmt: skip
    header = ["topic", "site", "statistic", "value", "null mean", "p", "effect", "n", "test",
              "verdict"]  # fmt: skip
    return _table(header, rows, "stats")


def _section_sessions(sessions: pd.DataFrame) -> str:
    if not len(sessions):
        return _p("No session table was given.")
    cols = [c for c in ("session", "run", "n_units", "n_sites", "n_analysed", "r_cnn_median",
                        "software_version", "settings_key", "file") if c in sessions.columns]  # fmt: skip
    rows = [[r[c] for c in cols] for r in sessions[cols].to_dict("records")]
    return _table([c.replace("_", " ") for c in cols], rows)


def _section_skipped(skipped: list[tuple[str, str]]) -> str:
    if not skipped:
        return _p("No file was skipped.")
    text = _p(f"{len(skipped)} file(s) were skipped and are not in any table or figure above.")
    return text + _table(["file", "reason"], skipped, "skipped")


def _names(names: Sequence[str]) -> str:
    names = sorted(names)
    more = len(names) - MAX_NAMES
    return ", ".join(names[:MAX_NAMES]) + (f" and {more} more" if more > 0 else "")


def _section_settings(comparability: Mapping | None) -> str:
    if not comparability:
        return _p("The settings that matter for pooling are the same in every session.")
    rows = []
    for setting, by_session in comparability.items():
        groups: dict[str, list[str]] = {}
        for session, value in dict(by_session).items():
            groups.setdefault(repr(value), []).append(str(session))
        rows.append([setting, "; ".join(f"{v}: {_names(s)}" for v, s in sorted(groups.items()))])
    warning = _p(
        f"Warning: {len(rows)} setting(s) differ between sessions; the pooled tables mix "
        "results made with different settings.",
        "warning",
    )
    return warning + _table(["setting", "value: sessions"], rows, "settings")


def _section_notes(notes: Sequence[str], locality: object) -> str:
    extra = list(getattr(locality, "notes", None) or []) if locality is not None else []
    items = list(dict.fromkeys(str(n) for n in (*notes, *extra)))  # each note once
    if not items:
        return _p("No notes.")
    return "<ul>" + "".join(f"<li>{_e(n)}</li>" for n in items) + "</ul>"


CSS = """
body { font-family: sans-serif; max-width: 1150px; margin: 2em auto; color: #222; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.88em; }
td, th { border: 1px solid #ccc; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f0f0f0; }
figure { margin: 1.2em 0; } img { max-width: 100%; }
figcaption { font-size: 0.85em; color: #555; max-width: 900px; }
.test { color: #666; font-size: 0.85em; }
.warning { background: #fff3cd; border: 1px solid #e0c060; padding: 0.5em; }
"""


def write_population_report(
    outdir: str | os.PathLike,
    units: pd.DataFrame,
    sites: pd.DataFrame,
    sessions: pd.DataFrame,
    statistics: pd.DataFrame | Sequence[Mapping] | None,
    *,
    locality: object = None,
    skipped: Iterable = (),
    notes: Sequence[str] = (),
    comparability: Mapping[str, Mapping[str, object]] | None = None,
) -> Path:
    """Write ``outdir/population_report.html`` and its figures in ``outdir/figures/``.

    Parameters
    ----------
    outdir : path-like
        Folder (created if needed); existing figures of the same names are replaced.
    units, sites, sessions : DataFrame
        The population tables (``UNIT_COLUMNS``, ``SITE_COLUMNS``, ``SESSION_COLUMNS``);
        missing columns make the figures that need them say "not available".
    statistics : DataFrame or sequence of dict or None
        Population statistics rows with the keys ``STATISTIC_FIELDS``.
    locality : LocalityResult, optional
        ``nwb_subspace.population.locality`` result: its pair-type summaries are drawn, its
        rows used for the figure's test and its notes listed.
    skipped : iterable of (file, reason)
        Files left out, with the reason.
    notes : sequence of str
        Notes of the summary (listed at the end).
    comparability : dict, optional
        setting -> {session: value} for settings that differ between sessions (a warning and
        a table); None or empty when all match.

    Returns
    -------
    Path
        The HTML file.

    Raises
    ------
    TypeError
        A table is not a DataFrame.
    ValueError
        Statistics rows without the ``STATISTIC_FIELDS`` keys, or a malformed skipped entry.
    """
    from nwb_subspace import __version__

    units, sites = _frame(units, "units"), _frame(sites, "sites")
    sessions, stats = (
        _frame(sessions, "sessions"),
        _with_locality(_statistics(statistics), locality),
    )
    skipped_rows = _skipped(skipped)
    if isinstance(notes, str):
        raise TypeError("notes must be a sequence of strings, not one string")
    outdir = Path(outdir)
    figs = _Figures(outdir / "figures")
    figs.folder.mkdir(parents=True, exist_ok=True)
    sections = [
        ("What was summarised", _summary(units, sites, sessions, len(skipped_rows))),
        ("Headline verdicts", _headlines(stats, units, sites)),
        ("Figures", _section_figures(units, sites, stats, locality, figs)),
        ("Population statistics", _section_statistics(stats)),
        ("Sessions", _section_sessions(sessions)),
        ("Skipped files", _section_skipped(skipped_rows)),
        ("Settings that differ between sessions", _section_settings(comparability)),
        ("Notes", _section_notes(list(notes), locality)),
    ]
    now = _dt.datetime.now().isoformat(timespec="seconds")
    title = f"nwb-subspace population report: {count_text(units)}"
    head = _p(
        f"Built {now} by nwb-subspace {__version__} from the stored runs' tables (no model "
        "was refitted or read)."
    )
    body = "".join(f'<h2 id="s{i}">{_e(t)}</h2>{h}' for i, (t, h) in enumerate(sections))
    toc = "".join(f'<li><a href="#s{i}">{_e(t)}</a></li>' for i, (t, _) in enumerate(sections))
    doc = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{_e(title)}</title><style>{CSS}</style></head><body>"
        f"<h1>{_e(title)}</h1>{head}<ul>{toc}</ul>{body}</body></html>\n"
    )
    target = outdir / REPORT_NAME
    write_atomically(target, lambda tmp: tmp.write_text(doc, encoding="utf-8"))
    log.info("population report written to %s (%d figures)", target, len(figs.made))
    return target
