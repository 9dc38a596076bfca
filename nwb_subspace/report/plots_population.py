"""Figures of the population report (matplotlib, Agg; no seaborn).

One function per figure, each taking the population tables (``nwb_subspace.population.columns``)
and returning a :class:`matplotlib.figure.Figure` (the caller saves and closes it). Every
figure states how many units and sites it shows ("n = U units / S sites"); where the data a
panel needs are missing (no cell types, no depths, no finite values) the panel says so in
text instead of drawing an empty or broken plot. NaN values are left out, never plotted.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterable, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

__all__ = [
    "PAIR_TYPES",
    "count_text",
    "n_text",
    "find_statistic",
    "pair_summaries",
    "plot_cell_type_layer",
    "plot_depth_profile",
    "plot_dimensionality",
    "plot_locality",
    "plot_model_comparison",
    "plot_subspace_fraction",
    "plot_tiling_sites",
]

#: The three kinds of unit pairs of the locality figure, in plotting order.
PAIR_TYPES = ("same site", "different site, same session", "different session")
MODEL_COLOURS = {"cnn": "tab:blue", "ln": "tab:orange", "subspace": "tab:green"}
CELL_TYPE_COLOURS = {"narrow": "tab:red", "broad": "tab:blue", "unknown": "0.6"}
UNKNOWN = "unknown"
#: Axis labels of the layer codes of the units table.
LAYER_NAMES = {
    "13": "L1-3",
    "44": "L4",
    "56": "L5-6",
    "outside": "outside",
    UNKNOWN: "layer unknown",
}
#: Axis names of the depth-profile measures.
MEASURE_NAMES = {
    "site_similarity_loo": "leave-one-out similarity to the site subspace",
    "variance_fraction_loo": "variance fraction in the site subspace (leave-one-out)",
}


# --------------------------------------------------------------------------------------
# small helpers


def _num(df: pd.DataFrame | None, col: str) -> np.ndarray:
    """Column as floats (NaN where missing or not numeric; all NaN if the column is absent)."""
    if df is None or col not in df.columns:
        return np.full(0 if df is None else len(df), np.nan)
    return pd.to_numeric(df[col], errors="coerce").to_numpy(dtype=float)


def _labels(df: pd.DataFrame | None, col: str) -> np.ndarray:
    """Column as strings, ``"unknown"`` for missing, empty or NaN values."""
    if df is None or col not in df.columns:
        return np.full(0 if df is None else len(df), UNKNOWN, dtype=object)
    out = []
    for x in df[col].tolist():
        text = "" if x is None or (isinstance(x, float) and not np.isfinite(x)) else str(x)
        out.append(text.strip() or UNKNOWN)
    return np.array(out, dtype=object)


def _site_ids(df: pd.DataFrame | None) -> np.ndarray:
    """``site_id`` per row (``session/site`` when the column is missing)."""
    if df is None:
        return np.array([], dtype=object)
    if "site_id" in df.columns:
        return _labels(df, "site_id")
    return np.array(
        [f"{a}/{b}" for a, b in zip(_labels(df, "session"), _labels(df, "site"), strict=True)],
        dtype=object,
    )


def count_text(units: pd.DataFrame | None, mask: np.ndarray | None = None) -> str:
    """``"n = U units / S sites"`` of the rows of ``units`` selected by ``mask``."""
    ids = _site_ids(units)
    if mask is not None:
        ids = ids[np.asarray(mask, dtype=bool)]
    return n_text(ids.size, len(set(ids.tolist())))


def n_text(n_units: int, n_sites: int) -> str:
    """``"n = U units / S sites"`` (singular for 1)."""
    u, s = int(n_units), int(n_sites)
    return f"n = {u} unit{'s' * (u != 1)} / {s} site{'s' * (s != 1)}"


def _tokens(statistic: object) -> set[str]:
    return set(str(statistic).lower().split("_"))


def _is_secondary(row: Mapping) -> bool:
    test = str(row.get("test", "")).lower()
    return test.startswith(("reference", "secondary"))


def find_statistic(
    statistics: pd.DataFrame | Sequence[Mapping] | None,
    all_of: Iterable[str],
    *,
    none_of: Iterable[str] = (),
    prefer: Iterable[str] = (),
) -> dict | None:
    """The statistics row best matching a set of words of its ``statistic`` name.

    A row matches when its statistic, split at ``_``, holds every word of ``all_of`` and none
    of ``none_of``. Among matches, primary rows (test text not starting with "reference" or
    "secondary") come first, then rows holding more words of ``prefer``, then population
    rows (site ``"population"``).

    Returns
    -------
    dict or None
        The row, or None when nothing matches.
    """
    if statistics is None:
        return None
    rows = statistics.to_dict("records") if isinstance(statistics, pd.DataFrame) else statistics
    need, avoid, like = set(all_of), set(none_of), set(prefer)
    hits = [
        dict(r)
        for r in rows
        if need <= _tokens(r.get("statistic", "")) and not avoid & _tokens(r.get("statistic", ""))
    ]
    if not hits:
        return None
    hits.sort(
        key=lambda r: (
            _is_secondary(r),
            -len(like & _tokens(r["statistic"])),
            str(r.get("site", "")) != "population",
        )
    )
    return hits[0]


def _p_text(row: Mapping | None, what: str = "p") -> str:
    if row is None:
        return f"{what}: not tested"
    p = row.get("p_value", np.nan)
    try:
        p = float(p)
    except (TypeError, ValueError):
        p = np.nan
    return f"{what} = {p:.3g}" if np.isfinite(p) else f"{what}: n/a"


def _say(ax, text: str) -> None:
    """Replace a panel by a sentence (missing data)."""
    ax.set_axis_off()
    ax.text(
        0.5, 0.5, textwrap.fill(text, 40), ha="center", va="center", fontsize=10,
        transform=ax.transAxes, color="0.3",
    )  # fmt: skip


def _said(text: str) -> Figure:
    """A small figure holding only a sentence (the data a figure needs are missing)."""
    fig, ax = plt.subplots(figsize=(7, 3))
    _say(ax, text)
    return fig


def _limits(*arrays: np.ndarray, low: float = 0.0, high: float = 1.0) -> tuple[float, float]:
    values = np.concatenate([np.asarray(a, float).ravel() for a in arrays] + [np.array([])])
    values = values[np.isfinite(values)]
    lo = min(low, float(values.min())) if values.size else low
    hi = max(high, float(values.max())) if values.size else high
    pad = max(0.03 * (hi - lo), 0.1 * max(abs(lo), abs(hi)) if hi - lo < 1e-9 else 0.0, 1e-6)
    if hi - lo < 0.2 * max(abs(lo), abs(hi)):  # few, close values: show them off the corners
        pad = max(pad, 0.1 * (hi - lo), 0.02 * max(abs(lo), abs(hi)))
    return lo - pad, hi + pad


def _sem(values: np.ndarray) -> float:
    values = values[np.isfinite(values)]
    return float(values.std(ddof=1) / np.sqrt(values.size)) if values.size > 1 else np.nan


# --------------------------------------------------------------------------------------
# model comparison


def _score_panel(ax, units, sites, other: str, measure: str, row: Mapping | None) -> None:
    ux, uy = _num(units, f"{measure}_cnn"), _num(units, f"{measure}_{other}")
    sx, sy = _num(sites, f"{measure}_cnn_mean"), _num(sites, f"{measure}_{other}_mean")
    um, sm = np.isfinite(ux) & np.isfinite(uy), np.isfinite(sx) & np.isfinite(sy)
    name = "LN" if other == "ln" else "subspace model"
    if not sm.any() and not um.any():
        _say(ax, f"No {name} and CNN scores stored for the same units: not available.")
        return
    lo, hi = _limits(ux[um], uy[um], sx[sm], sy[sm])
    ax.plot([lo, hi], [lo, hi], "k--", lw=0.8, label="equal")
    ax.plot(ux[um], uy[um], "o", ms=3, color="0.65", alpha=0.35, mec="none", label="units")
    ax.plot(
        sx[sm], sy[sm], "o", ms=7, color=MODEL_COLOURS[other], mec="k", mew=0.5,
        label="site means",
    )  # fmt: skip
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_aspect("equal")
    what = "noise-corrected r" if measure == "r" else "explained variance"
    ax.set_xlabel(f"CNN {what}")
    ax.set_ylabel(f"{name} {what}")
    n_sites = int(sm.sum())
    ax.set_title(
        f"{name} vs CNN\n{count_text(units, um)} ({n_sites} site means); "
        f"{_p_text(row, 'Wilcoxon p')}",
        fontsize=9,
    )
    ax.legend(fontsize=7, loc="upper left")


def plot_model_comparison(
    units: pd.DataFrame,
    sites: pd.DataFrame,
    statistics: pd.DataFrame | None = None,
    *,
    measure: str = "r",
) -> Figure:
    """LN vs CNN and subspace model vs CNN: site means over the units (faint, behind).

    Parameters
    ----------
    units, sites : DataFrame
        Population tables (columns ``r_ln``/``r_cnn``/``r_subspace`` or ``ev_*``; site
        ``*_mean``).
    statistics : DataFrame, optional
        Statistics rows; the Wilcoxon p of the rows whose statistic names "ln" and "cnn"
        (resp. "subspace" and "cnn", not "fraction") go into the titles.
    measure : {"r", "ev"}
        Noise-corrected correlation or explained variance.

    Returns
    -------
    Figure
    """
    if measure not in ("r", "ev"):
        raise ValueError(f"measure must be 'r' or 'ev'; got {measure!r}")
    fig, axes = plt.subplots(1, 2, figsize=(10, 5))
    for ax, other in zip(axes, ("ln", "subspace"), strict=True):
        row = find_statistic(statistics, (other, "cnn"), none_of=("fraction",), prefer=(measure,))
        _score_panel(ax, units, sites, other, measure, row)
    fig.tight_layout()
    return fig


def plot_subspace_fraction(
    sites: pd.DataFrame,
    units: pd.DataFrame | None = None,
    statistics: pd.DataFrame | None = None,
    *,
    threshold: float = 0.95,
) -> Figure:
    """Subspace-model fraction (subspace EV / CNN EV) per site, with the ``threshold`` line.

    One row per site, sorted by the site's fraction (its median over units, the value the
    session's run reports); the site's units' ``ev_fraction`` faint behind it.

    Returns
    -------
    Figure
    """
    frac = _num(sites, "subspace_fraction")
    ids = _site_ids(sites)
    ok = np.isfinite(frac)
    height = float(np.clip(0.18 * ok.sum() + 1.8, 3.5, 12))
    if not ok.any():
        return _said("No site has a subspace-model fraction (no subspace model or CNN scores).")
    fig, ax = plt.subplots(figsize=(7, height))
    order = np.flatnonzero(ok)[np.argsort(frac[ok])]
    u_ids, u_frac = _site_ids(units), _num(units, "ev_fraction")
    shown = np.clip(u_frac, -0.5, 1.5)
    for y, i in enumerate(order):
        mine = (u_ids == ids[i]) & np.isfinite(shown) if units is not None else np.array([])
        if mine.size and mine.any():
            ax.plot(shown[mine], np.full(mine.sum(), y), "|", ms=6, color="0.6", alpha=0.6)
    ax.plot(frac[order], np.arange(order.size), "o", color=MODEL_COLOURS["subspace"], mec="k")
    ax.axvline(threshold, color="k", ls="--", lw=1)
    above = int((frac[ok] >= threshold).sum())
    if order.size <= 30:
        ax.set_yticks(np.arange(order.size), [str(ids[i]) for i in order], fontsize=7)
    else:
        ax.set_yticks([])
        ax.set_ylabel("sites (sorted)")
    ax.set_xlabel("subspace-model EV / CNN EV (units clipped to [-0.5, 1.5])")
    row = find_statistic(statistics, ("subspace", "fraction"))
    n_units = int(np.isin(u_ids, ids[ok]).sum()) if units is not None else 0
    ax.set_title(
        f"subspace-model fraction per site: median {np.median(frac[ok]):.3f}, {above} of "
        f"{ok.sum()} sites >= {threshold:g}\n"
        f"{n_text(n_units, ok.sum())}"
        + (f"; {_p_text(row, f'Wilcoxon p (fraction > {threshold:g})')}" if row else ""),
        fontsize=9,
    )
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------
# dimensionality


def plot_dimensionality(units: pd.DataFrame) -> Figure:
    """Histogram of the units' tuning-subspace dimensionality, ours and the reference rule.

    Returns
    -------
    Figure
    """
    ours, ref = _num(units, "dimensionality"), _num(units, "dimensionality_reference")
    sets = [
        (name, v[np.isfinite(v)], colour)
        for name, v, colour in (
            ("ours", ours, "tab:purple"),
            ("reference rule (95% of top-15 PCs)", ref, "tab:gray"),
        )
        if np.isfinite(v).any()
    ]
    if not sets:
        return _said("No unit has a tuning-subspace dimensionality: not available.")
    fig, ax = plt.subplots(figsize=(7, 4))
    top = int(max(v.max() for _, v, _ in sets))
    ks = np.arange(0, top + 1)
    width = 0.8 / len(sets)
    for j, (name, v, colour) in enumerate(sets):
        counts = np.array([(np.round(v) == k).sum() for k in ks])
        ax.bar(
            ks + (j - (len(sets) - 1) / 2) * width, counts, width, color=colour,
            label=f"{name}: median {np.median(v):g}",
        )  # fmt: skip
    ax.set_xticks(ks)
    ax.set_xlabel("dimensionality (PCs)")
    ax.set_ylabel("units")
    ax.legend(fontsize=8)
    mask = np.isfinite(ours) | np.isfinite(ref)
    missing = "" if len(sets) == 2 else " (reference rule not stored)"
    ax.set_title(f"tuning-subspace dimensionality{missing}\n{count_text(units, mask)}", fontsize=9)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------
# locality


def _field(obj: object, names: Sequence[str], default=None):
    for name in names:
        if isinstance(obj, Mapping) and name in obj:
            return obj[name]
        if not isinstance(obj, Mapping) and hasattr(obj, name):
            return getattr(obj, name)
    return default


def pair_summaries(locality: object) -> dict[str, dict]:
    """Pair-type summaries of a locality result.

    Reads ``locality.pairs`` (``nwb_subspace.population.locality.LocalityResult``: pair type
    -> ``PairSummary`` with ``n``, ``mean``, ``null_mean`` and ``sample``); a mapping with a
    ``"pairs"`` key, or a list of summaries carrying ``pair_type``, is read the same way.

    Returns
    -------
    dict
        pair type -> {"mean": float, "null_mean": float, "sample": ndarray (finite values),
        "n": int or None}; empty when there are none.
    """
    if locality is None:
        return {}
    holder = _field(locality, ("pairs",), None)
    if holder is None:
        return {}
    if not isinstance(holder, Mapping):
        holder = {str(_field(s, ("pair_type",), i)): s for i, s in enumerate(holder)}
    out = {}
    for name, s in holder.items():
        sample = _field(s, ("sample",), None)
        sample = np.asarray(sample if sample is not None else (), dtype=float).ravel()
        mean, null = _field(s, ("mean",), None), _field(s, ("null_mean",), None)
        mean = float(mean) if mean is not None else np.nan
        if not np.isfinite(mean) and np.isfinite(sample).any():
            mean = float(np.nanmean(sample))
        out[str(name)] = {
            "mean": mean,
            "null_mean": float(null) if null is not None else np.nan,
            "sample": sample[np.isfinite(sample)],
            "n": _field(s, ("n",), None),
        }
    return out


def _locality_rows(locality: object, statistics) -> list[dict]:
    rows = list(_field(locality, ("rows",), None) or []) if locality is not None else []
    if isinstance(statistics, pd.DataFrame):
        rows += statistics.to_dict("records")
    elif statistics is not None:
        rows += [dict(r) for r in statistics]
    return rows


def _pairs_panel(ax, summaries: dict[str, dict]) -> None:
    names = [t for t in PAIR_TYPES if t in summaries]
    names += [t for t in summaries if t not in PAIR_TYPES]
    colours = ["tab:green", "tab:orange", "tab:gray", "tab:purple"]
    for i, t in enumerate(names, start=1):
        s = summaries[t]
        if s["sample"].size:
            ax.boxplot([s["sample"]], positions=[i], widths=0.5, showfliers=False)
        label = "mean (all pairs)" if i == 1 else None
        ax.plot(i, s["mean"], "D", ms=9, color=colours[(i - 1) % 4], mec="k", zorder=3, label=label)
        if np.isfinite(s["null_mean"]):
            ax.plot(
                i + 0.3, s["null_mean"], "o", ms=7, mfc="none", mec="k", zorder=3,
                label="null mean (labels permuted within sessions)" if i == 1 else None,
            )  # fmt: skip
    ticks = []
    for t in names:
        n = summaries[t]["n"]
        ticks.append(f"{t}\n({n if n is not None else summaries[t]['sample'].size} pairs)")
    ax.set_xticks(range(1, len(names) + 1), ticks, fontsize=8)
    ax.set_xlim(0.5, len(names) + 0.7)
    ax.set_ylabel("pair similarity (mean cos² of principal angles)")
    ax.legend(fontsize=7, loc="upper right")


def _null_panel(ax, locality: object, primary: Mapping | None) -> None:
    null = _field(locality, ("null",), None)
    observed = _field(locality, ("observed",), None)
    null = np.asarray(null if null is not None else (), dtype=float)
    null = null[np.isfinite(null)]
    if not null.size or observed is None or not np.isfinite(float(observed)):
        _say(ax, "Primary test (site labels permuted within sessions) not run: see the notes.")
        return
    ax.hist(null, bins=30, color="0.7", label=f"null ({null.size} permutations)")
    ax.axvline(float(observed), color="tab:red", lw=2, label=f"observed {float(observed):.3g}")
    ax.set_xlabel("same-site minus different-site mean similarity")
    ax.set_ylabel("permutations")
    ax.legend(fontsize=7)
    ax.set_title(f"primary test: {_p_text(primary)}", fontsize=9)


def plot_locality(
    locality: object,
    units: pd.DataFrame | None = None,
    statistics: pd.DataFrame | None = None,
) -> Figure:
    """Same-site vs different-site similarity of unit pairs: observed against the null.

    Left: box plots of each pair type's sample of pair similarities (mean squared cosine of
    the principal angles), the mean over all pairs (diamond) and its mean under the primary
    null (circle: site labels permuted within sessions). Right: the statistic (same-site
    minus different-site mean) against its permutation null, with the primary test's p.

    Parameters
    ----------
    locality : LocalityResult or None
        ``nwb_subspace.population.locality`` result (see :func:`pair_summaries`); None ->
        the figure says it is not available.
    units : DataFrame, optional
        For n units / n sites when the result does not carry ``n_units`` / ``n_sites``.
    statistics : DataFrame, optional
        Statistics rows besides ``locality.rows`` to take the test row from.

    Returns
    -------
    Figure
    """
    summaries = pair_summaries(locality)
    if not any(s["sample"].size or np.isfinite(s["mean"]) for s in summaries.values()):
        return _said(
            "No unit-pair similarities: no locality result, or no analysed units at two or "
            "more sites. Not available."
        )
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.8), width_ratios=(3, 2))
    primary = find_statistic(
        _locality_rows(locality, statistics), ("same", "site"), none_of=("pooling",)
    )
    _pairs_panel(ax1, summaries)
    _null_panel(ax2, locality, primary)
    n_units, n_sites = _field(locality, ("n_units",), 0), _field(locality, ("n_sites",), 0)
    if n_units:
        counts = n_text(n_units, n_sites)
    elif units is not None:
        counts = count_text(units, _labels(units, "status") == "analysed")
    else:
        counts = ""
    ax1.set_title(f"same- vs different-site similarity of unit pairs\n{counts}", fontsize=9)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------
# tiling


def plot_tiling_sites(sites: pd.DataFrame, statistics: pd.DataFrame | None = None) -> Figure:
    """Neighbour tiling overlap of each site against its null (p < 0.05 marked).

    One dot per site: x its null mean, y its observed overlap; filled red where the site's
    own p (``tiling_overlap_*_p``) < 0.05. Falls back to the all-pairs overlap when no
    neighbour overlap is stored.

    Returns
    -------
    Figure
    """
    which = "neighbours"
    obs, null = (
        _num(sites, "tiling_overlap_neighbours"),
        _num(sites, "tiling_overlap_neighbours_null"),
    )
    if not (np.isfinite(obs) & np.isfinite(null)).any():
        which = "mean"
        obs, null = _num(sites, "tiling_overlap_mean"), _num(sites, "tiling_overlap_mean_null")
    p = _num(sites, f"tiling_overlap_{which}_p")
    ok = np.isfinite(obs) & np.isfinite(null)
    if not ok.any():
        return _said("No site has a tiling overlap and its null: not available.")
    fig, ax = plt.subplots(figsize=(6, 5.5))
    sig = ok & (p < 0.05)
    lo, hi = _limits(obs[ok], null[ok], low=np.inf, high=-np.inf)
    ax.plot([lo, hi], [lo, hi], "k--", lw=0.8, label="observed = null")
    ax.plot(null[ok & ~sig], obs[ok & ~sig], "o", mfc="none", mec="0.4", label="p >= 0.05")
    ax.plot(null[sig], obs[sig], "o", color="tab:red", mec="k", mew=0.5, label="p < 0.05")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel("null mean overlap (occupancy kept)")
    pairs = "neighbouring units" if which == "neighbours" else "all unit pairs"
    ax.set_ylabel(f"observed overlap of {pairs}")
    ax.legend(fontsize=8, loc="lower right")
    excess = find_statistic(statistics, ("tiling", which), none_of=("alpha",))
    count = find_statistic(statistics, ("tiling", which, "alpha"))
    tests = "".join(
        f"; {_p_text(r, what)}"
        for r, what in ((excess, "Wilcoxon p across sites"), (count, "binomial p of the count"))
        if r is not None
    )
    n_units = int(np.nansum(_num(sites, "n_analysed")[ok])) if "n_analysed" in sites else 0
    ax.set_title(
        f"tiling per site ({pairs}): {int(sig.sum())} of {int(ok.sum())} sites p < 0.05\n"
        f"{n_text(n_units, ok.sum())}{tests}",
        fontsize=9,
    )
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------
# cell types and layers


def _groups(units: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
    ct, ly = _labels(units, "cell_type"), _labels(units, "layer")
    types = [t for t in ("narrow", "broad") if t in set(ct)]
    types += sorted(set(ct) - {"narrow", "broad", UNKNOWN}) + ([UNKNOWN] if UNKNOWN in ct else [])
    layers = sorted(set(ly) - {UNKNOWN}) + ([UNKNOWN] if UNKNOWN in ly else [])
    return ct, ly, types, layers


def _grouped_bars(ax, units, values, ct, ly, types, layers, *, sem: bool) -> None:
    """Bars per layer (x) and cell type (colour): mean (+- SEM) of ``values``; n per bar."""
    ids = _site_ids(units)
    width = 0.8 / len(types)
    for j, t in enumerate(types):
        for i, g in enumerate(layers):
            m = (ct == t) & (ly == g) & np.isfinite(values)
            if not m.any():
                continue
            x = i + (j - (len(types) - 1) / 2) * width
            mean = float(values[m].mean())
            err = _sem(values[m]) if sem else None
            top = mean + (err if err is not None and np.isfinite(err) else 0.0)
            ax.bar(
                x, mean, width * 0.95, yerr=err, capsize=2, color=CELL_TYPE_COLOURS.get(t, "0.4"),
                label=t if i == 0 or t not in ax.get_legend_handles_labels()[1] else None,
            )  # fmt: skip
            ax.text(
                x, top, f"{int(m.sum())}\n({len(set(ids[m].tolist()))})", ha="center",
                va="bottom", fontsize=6,
            )  # fmt: skip
    ax.set_xticks(range(len(layers)), [LAYER_NAMES.get(g, g) for g in layers], fontsize=8)
    handles, labels = ax.get_legend_handles_labels()
    seen = dict(zip(labels, handles, strict=True))
    ax.legend(seen.values(), seen.keys(), fontsize=7, title="cell type", title_fontsize=7)


def plot_cell_type_layer(units: pd.DataFrame, statistics: pd.DataFrame | None = None) -> Figure:
    """Breadth and bowl / hill fractions by cell type (colour) x layer (x).

    Left: mean +- SEM of the noise-aware SRF breadth. Middle and right: fraction of the
    classified units (shape class bowl, hill or monotonic) that are bowls / hills. Each bar
    is labelled "units (sites)". The narrow-vs-broad test's p (units nested in sites) is
    in the left title when a row is given.

    Returns
    -------
    Figure
    """
    ct, ly, types, layers = _groups(units)
    if set(types) <= {UNKNOWN} and set(layers) <= {UNKNOWN}:
        return _said(
            "No cell type or layer is known for any unit: breadth and bowl / hill fractions "
            f"by cell type x layer not available ({count_text(units)})."
        )
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.5))
    breadth = _num(units, "breadth")
    cls = _labels(units, "shape_class")
    classified = np.isin(cls, ["bowl", "hill", "monotonic"])
    panels = [
        ("SRF breadth (noise-aware)", breadth, np.isfinite(breadth), True),
        ("fraction bowl", np.where(classified, cls == "bowl", np.nan), classified, False),
        ("fraction hill", np.where(classified, cls == "hill", np.nan), classified, False),
    ]
    row = find_statistic(statistics, ("breadth", "narrow", "broad"), prefer=("site", "means"))
    for k, (ax, (name, values, mask, sem)) in enumerate(zip(axes, panels, strict=True)):
        if not mask.any():
            _say(ax, f"{name}: no unit has a value (not available).")
            continue
        _grouped_bars(ax, units, values.astype(float), ct, ly, types, layers, sem=sem)
        extra = f"; narrow vs broad {_p_text(row)}" if k == 0 else ""
        ax.set_title(f"{name}\n{count_text(units, mask)}{extra}", fontsize=9)
        ax.set_ylabel(name + (" (mean +- SEM)" if sem else ""))
        if not sem:
            ax.set_ylim(0, 1.12)
    fig.suptitle("bar labels: units (sites)", fontsize=8, x=0.99, ha="right")
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------
# depth


def plot_depth_profile(
    units: pd.DataFrame,
    statistics: pd.DataFrame | None = None,
    *,
    measure: str = "site_similarity_loo",
    bin_um: float = 100.0,
) -> Figure:
    """``measure`` against depth below the L3/4 boundary: mean +- SEM per ``bin_um`` bin.

    Units faint behind; depth on the y axis growing downwards (deeper lower). The per-site
    Spearman test's p (a statistics row naming "depth") is in the title when given.

    Returns
    -------
    Figure
    """
    if not (isinstance(bin_um, int | float) and bin_um > 0):
        raise ValueError(f"bin_um must be a positive number; got {bin_um!r}, e.g. 100")
    depth, value = _num(units, "depth_below_l34_um"), _num(units, measure)
    ok = np.isfinite(depth) & np.isfinite(value)
    if not np.isfinite(depth).any():
        return _said(
            "No depth below the L3/4 boundary is known (the runs' [layers] setting gives no "
            f"boundary): not available ({count_text(units)})."
        )
    if not ok.any():
        return _said(f"No unit with a known depth has a {measure}: not available.")
    fig, ax = plt.subplots(figsize=(6, 5.5))
    ax.plot(value[ok], depth[ok], "o", ms=3, color="0.6", alpha=0.4, mec="none", label="units")
    centre = (np.floor(depth[ok] / bin_um) + 0.5) * bin_um
    bins = np.unique(centre)
    means = np.array([value[ok][centre == b].mean() for b in bins])
    sems = np.array([_sem(value[ok][centre == b]) for b in bins])
    ax.errorbar(
        means,
        bins,
        xerr=sems,
        fmt="o-",
        color="tab:blue",
        capsize=3,
        label=f"mean +- SEM per {bin_um:g} um bin",
    )
    for b, m, c in zip(bins, means, [int((centre == b).sum()) for b in bins], strict=True):
        ax.annotate(f"{c}", (m, b), textcoords="offset points", xytext=(6, 4), fontsize=7)
    ax.axhline(0, color="k", ls="--", lw=0.8, label="L3/4 boundary")
    ax.invert_yaxis()
    ax.set_ylabel("depth below L3/4 boundary (um)")
    what = MEASURE_NAMES.get(measure, measure.replace("_", " "))
    ax.set_xlabel(what)
    ax.legend(fontsize=7, loc="lower right")
    row = find_statistic(statistics, ("depth",))
    ax.set_title(
        f"{what} by depth (numbers: units per bin)\n"
        f"{count_text(units, ok)}; per-site Spearman {_p_text(row)}",
        fontsize=9,
    )
    fig.tight_layout()
    return fig
