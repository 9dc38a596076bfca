"""Population statistics with units nested in sites (pure numerics on the summary tables).

Inputs are the population tables of ``nwb-subspace summarize`` (columns:
:mod:`nwb_subspace.population.columns`); outputs are rows with the keys of
:data:`nwb_subspace.results.STATISTIC_FIELDS` (``site = "population"``) made with
:func:`nwb_subspace.site.groups.stat_row`, small tables for the figures, and notes. Each
function returns ``(rows | None, notes)`` or ``(rows | None, table, notes)``: rows are None
when nothing could be tested (too few sites or units; the notes say why), and no row carries
a verdict on a NaN p-value (descriptive rows say "descriptive").

Site-level tests
----------------
The unit of replication is the site (units of one site share its state, depth, animal and
sorting). Paired comparisons across sites use the Wilcoxon signed-rank test on the per-site
differences (zero differences dropped; scipy's exact null for small samples; all zero: p = 1,
effect 0) with the matched-pairs rank-biserial effect ``(W+ - W-) / (W+ + W-)``; ``n`` =
sites. With fewer than 6 sites with a difference a note gives the smallest possible p
(``2 / 2^n`` two-sided, ``1 / 2^n`` one-sided).

* :func:`model_comparison`: per site the mean score of each model over its scored units (the
  site table's ``r_*_mean`` / ``ev_*_mean``); CNN vs LN and subspace vs CNN, two-sided, for the
  noise-corrected correlation ``r`` and explained variance ``ev`` (``value`` / ``null_mean``
  = medians over sites of the first / second model's site means). Subspace-model fraction
  (``subspace_fraction``, per site the median of ``ev_subspace / ev_cnn``): median and IQR over
  sites, fraction of sites >= 0.95, and a one-sided Wilcoxon of ``fraction - 0.95 > 0``.
* :func:`dimensionality_distribution`: median / IQR of the units' dimensionality, ours and the
  reference rule (descriptive), a histogram of both, and ours vs reference on site means
  (two-sided).
* :func:`tiling_across_sites`: per site the neighbour-pair (and all-pair) tiling overlap minus
  its null mean; two-sided Wilcoxon across sites (the verdict says whether overlap is above or
  below chance); and the number of sites whose own (two-sided) p is below ``alpha`` against a
  binomial ``(n_sites, alpha)``, one-sided greater.
* :func:`cell_types_and_layers`: breadth and shape index, narrow vs broad and across layers,
  by :func:`nwb_subspace.site.groups.compare_cell_types_and_layers_across_sites` (site means
  or mixed model) over ``site_id``; plus a table of breadth and bowl / hill fractions by cell
  type x layer.
* :func:`depth_profile`: per site (>= ``min_units`` units with a depth below the L3/4 boundary
  and a value) Spearman's rho of the measure against depth; two-sided Wilcoxon of the rhos
  against 0 across sites (``value`` = median rho); profile = mean +- SEM per depth bin with
  the numbers of units and sites.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from nwb_subspace.site.groups import (
    compare_cell_types_and_layers_across_sites,
    stat_row,
    verdict_text,
)

__all__ = [
    "SUBSPACE_FRACTION_TARGET",
    "cell_types_and_layers",
    "depth_profile",
    "dimensionality_distribution",
    "model_comparison",
    "tiling_across_sites",
]

#: The paper's claim: the subspace model keeps more than this fraction of the CNN's EV.
SUBSPACE_FRACTION_TARGET = 0.95
_SITE = "population"
_UNKNOWN = ("", "unknown", "nan", "none")
_MODELS = {"ln": "LN", "cnn": "CNN", "subspace": "subspace model"}


def _require(df: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"{what} must be a pandas DataFrame; got {type(df).__name__}")
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{what} lacks the columns {missing} (see population.columns)")


def _num(df: pd.DataFrame, col: str) -> np.ndarray:
    return pd.to_numeric(df[col], errors="coerce").to_numpy(dtype=float)


def _labels(df: pd.DataFrame, col: str) -> np.ndarray:
    out = []
    for x in df[col].tolist():
        text = "" if x is None or (isinstance(x, float) and not np.isfinite(x)) else str(x)
        out.append("unknown" if text.strip().lower() in _UNKNOWN else text.strip())
    return np.array(out, dtype=object)


def _site_ids(df: pd.DataFrame) -> np.ndarray:
    if "site_id" in df.columns:
        return _labels(df, "site_id")
    _require(df, ("session", "site"), "the table")
    return np.array([f"{a}/{b}" for a, b in zip(_labels(df, "session"), _labels(df, "site"),
                                                  strict=True)], dtype=object)  # fmt: skip


def _signed_rank(diff: np.ndarray, alternative: str) -> tuple[float, float, int]:
    """Wilcoxon signed-rank p (zeros dropped), matched-pairs rank-biserial, non-zero count."""
    diff = diff[np.isfinite(diff) & (diff != 0)]
    if diff.size == 0:
        return 1.0, 0.0, 0
    ranks = stats.rankdata(np.abs(diff))
    w_pos, w_neg = ranks[diff > 0].sum(), ranks[diff < 0].sum()
    p = float(stats.wilcoxon(diff, alternative=alternative).pvalue)
    return p, float((w_pos - w_neg) / (w_pos + w_neg)), int(diff.size)


def _small_note(what: str, nonzero: int, two_sided: bool, notes: list[str]) -> None:
    if 0 < nonzero < 6:
        smallest = (2.0 if two_sided else 1.0) / 2**nonzero
        notes.append(f"{what}: {nonzero} site(s) with a difference; the smallest p possible is "
                     f"{smallest:.3g}")  # fmt: skip


def _paired_row(a, b, statistic: str, names: tuple[str, str], what: str, min_sites: int,
                notes: list[str], unit: str = "site means") -> dict | None:  # fmt: skip
    """Two-sided Wilcoxon across sites of ``a - b`` (sites where both are finite)."""
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < min_sites:
        notes.append(f"{what}: not tested; {int(ok.sum())} site(s) have both values (needs >= "
                     f"{min_sites})")  # fmt: skip
        return None
    p, effect, nonzero = _signed_rank(a[ok] - b[ok], "two-sided")
    _small_note(what, nonzero, True, notes)
    left = f"; {int((~ok).sum())} site(s) without both values left out" if (~ok).any() else ""
    higher = names[0] if effect > 0 else names[1]
    return stat_row(
        _SITE, statistic, np.median(a[ok]), np.median(b[ok]), p, effect, int(ok.sum()),
        f"{unit}, Wilcoxon signed-rank two-sided on per-site {names[0]} - {names[1]}, "
        f"matched-pairs rank-biserial; value / null_mean: medians over sites; {int(ok.sum())} "
        f"sites{left}",
        verdict_text(p, f"{what} differ across sites, higher in {higher}"),
    )  # fmt: skip


def model_comparison(
    sites_df: pd.DataFrame, *, min_sites: int = 2
) -> tuple[list[dict] | None, list[str]]:
    """LN vs CNN vs subspace model across sites (site means), and the subspace fraction.

    Parameters
    ----------
    sites_df : DataFrame
        The population sites table (``r_*_mean``, ``ev_*_mean``, ``subspace_fraction``).
    min_sites : int, default 2

    Returns
    -------
    rows : list of dict or None
        ``{r,ev}_cnn_vs_ln_site_means``, ``{r,ev}_subspace_vs_cnn_site_means`` and
        ``subspace_fraction_across_sites`` (those that could be tested).
    notes : list of str
    """
    _check_min(min_sites, "min_sites", 1)
    cols = [f"{m}_{x}_mean" for m in ("r", "ev") for x in _MODELS] + ["subspace_fraction"]
    _require(sites_df, cols, "sites_df")
    rows: list[dict] = []
    notes: list[str] = []
    for metric, label in (("r", "noise-corrected correlation"), ("ev", "explained variance")):
        for first, second in (("cnn", "ln"), ("subspace", "cnn")):
            row = _paired_row(
                _num(sites_df, f"{metric}_{first}_mean"), _num(sites_df, f"{metric}_{second}_mean"),
                f"{metric}_{first}_vs_{second}_site_means", (_MODELS[first], _MODELS[second]),
                f"{_MODELS[first]} and {_MODELS[second]} {label}s", min_sites, notes,
            )  # fmt: skip
            rows.extend([row] if row else [])
    row = _fraction_row(_num(sites_df, "subspace_fraction"), min_sites, notes)
    rows.extend([row] if row else [])
    return (rows or None), notes


def _fraction_row(frac: np.ndarray, min_sites: int, notes: list[str]) -> dict | None:
    what = "subspace-model fraction of the CNN's explained variance"
    ok = np.isfinite(frac)
    target = SUBSPACE_FRACTION_TARGET
    if ok.sum() < min_sites:
        notes.append(f"{what}: not tested; {int(ok.sum())} site(s) with a fraction (needs >= "
                     f"{min_sites})")  # fmt: skip
        return None
    f = frac[ok]
    p, effect, nonzero = _signed_rank(f - target, "greater")
    _small_note(what, nonzero, False, notes)
    q1, q3 = np.percentile(f, [25, 75])
    above = int(np.sum(f >= target))
    return stat_row(
        _SITE, "subspace_fraction_across_sites", np.median(f), target, p, effect, f.size,
        f"per site the median of ev_subspace / ev_cnn over its units; median {np.median(f):.3g} "
        f"(IQR {q1:.3g}-{q3:.3g}); {above} of {f.size} sites ({above / f.size:.0%}) >= "
        f"{target:g}; Wilcoxon signed-rank one-sided on fraction - {target:g} > 0, "
        f"matched-pairs rank-biserial; {int((~ok).sum())} site(s) without a fraction left out",
        verdict_text(p, f"the subspace model keeps more than {target:.0%} of the CNN's "
                     "explained variance across sites"),
    )  # fmt: skip


def _check_min(value, name: str, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
        raise ValueError(f"{name} must be an int >= {low}; got {value!r}, e.g. 2")


def _describe(values: np.ndarray, site: np.ndarray, statistic: str, what: str) -> dict:
    q1, med, q3 = np.percentile(values, [25, 50, 75])
    site_medians = pd.Series(values).groupby(site).median()
    return stat_row(
        _SITE, statistic, med, None, None, None, values.size,
        f"descriptive: {what}; median {med:.3g} (IQR {q1:.3g}-{q3:.3g}), mean "
        f"{values.mean():.3g} over {values.size} units at {site_medians.size} sites; median of "
        f"site medians {site_medians.median():.3g}",
        "descriptive",
    )  # fmt: skip


def dimensionality_distribution(
    units_df: pd.DataFrame, *, min_sites: int = 2
) -> tuple[list[dict] | None, pd.DataFrame, list[str]]:
    """Distribution of unit dimensionality, ours and the reference rule's.

    Parameters
    ----------
    units_df : DataFrame
        The population units table (``dimensionality``, ``dimensionality_reference``,
        ``site_id`` or ``session`` / ``site``).
    min_sites : int, default 2
        Sites the ours-vs-reference comparison needs.

    Returns
    -------
    rows : list of dict or None
        ``dimensionality_distribution`` and ``dimensionality_reference_distribution``
        (descriptive) and ``dimensionality_ours_vs_reference_site_means``.
    histogram : DataFrame
        Columns ``dimensionality``, ``n_ours``, ``n_reference``, ``fraction_ours``,
        ``fraction_reference`` (units with a value; one row per integer from 1 to the max).
    notes : list of str
    """
    _check_min(min_sites, "min_sites", 1)
    _require(units_df, ("dimensionality", "dimensionality_reference"), "units_df")
    ours, ref = _num(units_df, "dimensionality"), _num(units_df, "dimensionality_reference")
    site = _site_ids(units_df)
    rows: list[dict] = []
    notes: list[str] = []
    for values, statistic, what in (
        (ours, "dimensionality_distribution", "unit dimensionality, ours"),
        (ref, "dimensionality_reference_distribution",
         "unit dimensionality, the reference rule (95% of the top-15 PCs' variance)"),
    ):  # fmt: skip
        ok = np.isfinite(values)
        if ok.any():
            rows.append(_describe(values[ok], site[ok], statistic, what))
        else:
            notes.append(f"{statistic}: no unit has a value")
    both = np.isfinite(ours) & np.isfinite(ref)
    if both.any():
        means = pd.DataFrame({"s": site[both], "o": ours[both], "r": ref[both]}).groupby("s").mean()
        row = _paired_row(
            means["o"].to_numpy(), means["r"].to_numpy(),
            "dimensionality_ours_vs_reference_site_means", ("ours", "the reference rule"),
            "unit dimensionalities (ours vs the reference rule)", min_sites, notes,
        )  # fmt: skip
        rows.extend([row] if row else [])
    top = int(np.nanmax(np.r_[ours, ref, 0.0])) if (both.any() or np.isfinite(ours).any()
                                                    or np.isfinite(ref).any()) else 0  # fmt: skip
    dims = np.arange(1, top + 1)
    n_o = np.array([np.sum(ours == d) for d in dims], dtype=int)
    n_r = np.array([np.sum(ref == d) for d in dims], dtype=int)
    hist = pd.DataFrame({
        "dimensionality": dims, "n_ours": n_o, "n_reference": n_r,
        "fraction_ours": n_o / max(1, int(np.isfinite(ours).sum())),
        "fraction_reference": n_r / max(1, int(np.isfinite(ref).sum())),
    })  # fmt: skip
    return (rows or None), hist, notes


def tiling_across_sites(
    sites_df: pd.DataFrame, *, alpha: float = 0.05, min_sites: int = 2
) -> tuple[list[dict] | None, list[str]]:
    """Tiling overlap against its null per site, then across sites.

    For the neighbour pairs (``tiling_overlap_neighbours``) and all pairs
    (``tiling_overlap_mean``): the per-site excess overlap (observed minus null mean) across
    sites (two-sided Wilcoxon signed-rank; ``value`` / ``null_mean``: medians over sites of
    the overlap and its null), and the count of sites whose own p is below ``alpha`` against
    ``Binomial(n_sites, alpha)`` (one-sided greater; ``value``: the fraction of sites,
    ``null_mean``: ``alpha``, effect: fraction - alpha).

    Returns
    -------
    rows : list of dict or None
    notes : list of str
    """
    _check_min(min_sites, "min_sites", 1)
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1); got {alpha!r}, e.g. 0.05")
    rows: list[dict] = []
    notes: list[str] = []
    for prefix, pairs in (("tiling_overlap_neighbours", "neighbour pairs"),
                          ("tiling_overlap_mean", "all pairs")):  # fmt: skip
        _require(sites_df, (prefix, f"{prefix}_null", f"{prefix}_p"), "sites_df")
        obs, null = _num(sites_df, prefix), _num(sites_df, f"{prefix}_null")
        what = f"tiling overlap ({pairs}) against its null"
        row = _paired_row(
            obs,
            null,
            f"{prefix}_excess_across_sites",
            ("observed", "null"),
            what,
            min_sites,
            notes,
            unit="per-site overlap and its null mean",
        )
        if row is not None:
            row["verdict"] = verdict_text(
                row["p_value"],
                f"{what}: overlap "
                f"{'above' if row['effect_size'] > 0 else 'below'} chance across sites",
            )
            rows.append(row)
        p = _num(sites_df, f"{prefix}_p")
        ok = np.isfinite(p)
        if ok.sum() < min_sites:
            notes.append(f"{what}: count of sites below alpha not tested; {int(ok.sum())} "
                         f"site(s) with a p-value")  # fmt: skip
            continue
        hit = ok & (p < alpha)
        k, n = int(hit.sum()), int(ok.sum())
        above = int(np.sum(hit & (obs > null)))
        pb = float(stats.binomtest(k, n, alpha, alternative="greater").pvalue)
        rows.append(stat_row(
            _SITE, f"{prefix}_sites_below_alpha", k / n, alpha, pb, k / n - alpha, n,
            f"{k} of {n} sites with their own p < {alpha:g} ({above} above, {k - above} below "
            f"their null; per-site p two-sided) vs Binomial({n}, {alpha:g}), one-sided greater",
            verdict_text(pb, f"more sites than chance depart from their tiling null ({pairs})"),
        ))  # fmt: skip
    return (rows or None), notes


def cell_types_and_layers(
    units_df: pd.DataFrame,
    method: str = "site_means",
    min_per_group: int = 2,
    *,
    min_sites: int = 2,
) -> tuple[list[dict] | None, pd.DataFrame, list[str]]:
    """Breadth and shape by cell type and by layer with units nested in sites.

    Rows: :func:`~nwb_subspace.site.groups.compare_cell_types_and_layers_across_sites` on
    ``breadth`` and ``shape_index`` (sites = ``site_id``, ``site`` = "population"), and on
    ``breadth_model`` (the model maps' breadth, rows ``breadth_model_...``) and
    ``breadth_snr_matched`` (the SNR-matched breadth, rows ``breadth_snr_matched_...``, the
    one the narrow-vs-broad claim is judged on) when the table has them.

    Returns
    -------
    rows : list of dict or None
    table : DataFrame
        One row per cell type x layer plus ``"all"`` margins: ``cell_type``, ``layer``,
        ``n_units``, ``n_sites``, ``n_breadth``, ``breadth_mean``, ``breadth_sem``,
        ``n_classified`` (shape class bowl / hill / monotonic), ``n_bowl``, ``n_hill``,
        ``bowl_fraction``, ``hill_fraction`` (of the classified units).
    notes : list of str
    """
    _require(units_df, ("cell_type", "layer", "breadth", "shape_index", "shape_class"),
             "units_df")  # fmt: skip
    site = _site_ids(units_df)
    measures = {"breadth": _num(units_df, "breadth"), "shape_index": _num(units_df, "shape_index")}
    for extra in ("breadth_model", "breadth_snr_matched"):
        if extra in units_df and np.isfinite(_num(units_df, extra)).any():
            measures[extra] = _num(units_df, extra)
    cell, layer = _labels(units_df, "cell_type"), _labels(units_df, "layer")
    rows, notes = compare_cell_types_and_layers_across_sites(
        measures, cell, layer, site, method=method, min_per_group=min_per_group,
        min_sites=min_sites, name=_SITE,
    )  # fmt: skip
    shape = np.array([str(x).strip().lower() for x in units_df["shape_class"].fillna("")])
    table = _type_layer_table(cell, layer, site, measures["breadth"], shape)
    return rows, table, list(notes)


def _type_layer_table(cell, layer, site, breadth, shape) -> pd.DataFrame:
    classified = np.isin(shape, ("bowl", "hill", "monotonic"))
    out = []
    cells = [*sorted(set(cell.tolist())), "all"]
    layers = [*sorted(set(layer.tolist())), "all"]
    for c in cells:
        for g in layers:
            m = (cell == c if c != "all" else True) & (layer == g if g != "all" else True)
            m = np.asarray(m, dtype=bool) & np.ones(cell.size, bool)
            if not m.any():
                continue
            b = breadth[m & np.isfinite(breadth)]
            k = int((m & classified).sum())
            bowl, hill = int((m & (shape == "bowl")).sum()), int((m & (shape == "hill")).sum())
            out.append({
                "cell_type": c, "layer": g, "n_units": int(m.sum()),
                "n_sites": len(set(site[m].tolist())), "n_breadth": b.size,
                "breadth_mean": b.mean() if b.size else np.nan,
                "breadth_sem": b.std(ddof=1) / np.sqrt(b.size) if b.size > 1 else np.nan,
                "n_classified": k, "n_bowl": bowl, "n_hill": hill,
                "bowl_fraction": bowl / k if k else np.nan,
                "hill_fraction": hill / k if k else np.nan,
            })  # fmt: skip
    return pd.DataFrame(out, columns=[
        "cell_type", "layer", "n_units", "n_sites", "n_breadth", "breadth_mean", "breadth_sem",
        "n_classified", "n_bowl", "n_hill", "bowl_fraction", "hill_fraction",
    ])  # fmt: skip


def depth_profile(
    units_df: pd.DataFrame,
    measure: str = "site_similarity_loo",
    bin_um: float = 100.0,
    *,
    min_units: int = 4,
    min_sites: int = 2,
) -> tuple[list[dict] | None, pd.DataFrame, list[str]]:
    """A unit measure against depth below the L3/4 boundary: per-site Spearman, then sites.

    Parameters
    ----------
    units_df : DataFrame
        The population units table (``measure``, ``depth_below_l34_um``).
    measure : str, default "site_similarity_loo"
    bin_um : float, default 100
        Width of the depth bins of the profile (bins start at multiples of it).
    min_units : int, default 4
        Units (with a depth and a value) a site needs for its rho.
    min_sites : int, default 2

    Returns
    -------
    rows : list of dict or None
        ``<measure>_depth_spearman_across_sites``.
    profile : DataFrame
        ``depth_lo_um``, ``depth_hi_um``, ``depth_um`` (bin centre), ``mean``, ``sem``,
        ``n_units``, ``n_sites`` (sem NaN for one unit).
    notes : list of str
    """
    _require(units_df, (measure, "depth_below_l34_um"), "units_df")
    _check_min(min_units, "min_units", 3)
    _check_min(min_sites, "min_sites", 1)
    if not (np.isfinite(bin_um) and bin_um > 0):
        raise ValueError(f"bin_um must be > 0; got {bin_um!r}, e.g. 100")
    value, depth = _num(units_df, measure), _num(units_df, "depth_below_l34_um")
    site = _site_ids(units_df)
    ok = np.isfinite(value) & np.isfinite(depth)
    profile = _profile(value[ok], depth[ok], site[ok], float(bin_um))
    what = f"{measure} by depth below the L3/4 boundary"
    if not ok.any():
        return None, profile, [f"{what}: not tested; no unit has both a depth below the L3/4 "
                               "boundary (set [layers]) and a value"]  # fmt: skip
    rhos, notes = [], []
    for s in dict.fromkeys(site[ok].tolist()):
        m = site[ok] == s
        v, d = value[ok][m], depth[ok][m]
        if m.sum() < min_units or np.ptp(d) == 0 or np.ptp(v) == 0:
            continue
        rhos.append(float(stats.spearmanr(d, v).statistic))
    n_sites = len(set(site[ok].tolist()))
    if len(rhos) < min_sites:
        notes.append(f"{what}: not tested; {len(rhos)} of {n_sites} site(s) have >= {min_units} "
                     f"units with different depths and values (needs >= {min_sites})")  # fmt: skip
        return None, profile, notes
    rho = np.asarray(rhos)
    p, effect, nonzero = _signed_rank(rho, "two-sided")
    _small_note(what, nonzero, True, notes)
    row = stat_row(
        _SITE, f"{measure}_depth_spearman_across_sites", np.median(rho), 0.0, p, effect, rho.size,
        f"per site Spearman rho of {measure} vs depth below L3/4 (sites with >= {min_units} "
        f"units; {rho.size} of {n_sites} sites), Wilcoxon signed-rank two-sided of rho vs 0, "
        f"matched-pairs rank-biserial; value: median rho; {int(ok.sum())} units",
        verdict_text(p, f"{what} changes across sites, "
                     f"{'higher deeper' if effect > 0 else 'higher superficially'}"),
    )  # fmt: skip
    return [row], profile, notes


def _profile(value, depth, site, bin_um: float) -> pd.DataFrame:
    cols = ["depth_lo_um", "depth_hi_um", "depth_um", "mean", "sem", "n_units", "n_sites"]
    if value.size == 0:
        return pd.DataFrame(columns=cols)
    lo = np.floor(depth / bin_um) * bin_um
    out = []
    for b in np.unique(lo):
        m = lo == b
        v = value[m]
        out.append([b, b + bin_um, b + bin_um / 2, v.mean(),
                    v.std(ddof=1) / np.sqrt(v.size) if v.size > 1 else np.nan, int(v.size),
                    len(set(site[m].tolist()))])  # fmt: skip
    return pd.DataFrame(out, columns=cols)
