"""Group comparisons: narrow vs broad units, layers, and sites (pure statistics).

Every comparison returns rows with the keys of :data:`nwb_subspace.results.STATISTIC_FIELDS`
(``site, statistic, value, null_mean, p_value, effect_size, n, test, verdict``), ready for
:class:`~nwb_subspace.results.SiteStatistics`, and never an empty table: when nothing can be
tested the functions return ``None`` with the reason in the returned notes.

Tests and effect sizes (scipy.stats)
------------------------------------
* Two groups: Mann-Whitney U, two-sided; effect = rank-biserial correlation
  ``r = 2 U_a / (n_a n_b) - 1`` (``+1``: every value of group ``a`` above every value of
  ``b``). ``value`` = median of ``a``, ``null_mean`` = median of ``b``.
* Several groups: Kruskal-Wallis H; effect = ``epsilon^2 = H / (n - 1)``.
* Paired, one-sided: Wilcoxon signed-rank (``greater``); effect = matched-pairs
  rank-biserial ``(W+ - W-) / (W+ + W-)``.

Each group needs at least ``min_per_group`` (default 2) units; units whose cell type or layer
is unknown (``""``, ``"unknown"``, None or NaN) are not tested and are counted in the notes and
in the row's ``test`` text, never dropped silently. ``n`` is the number of units tested; the
per-group counts are in ``test``.

Units nested in sites
---------------------
The tests above treat units as independent samples. Units recorded at one site share the
site (its stimulus-driven state, depth, animal, spike sorting), so with several sites they are
not: one site with many units can carry a pooled test on its own. The paper's test is at the
level of sites, which :func:`compare_across_sites` computes:

* ``method="site_means"`` (default): per site, the mean of each group over its units (sites
  with ``>= min_per_group`` units in every compared group). Two groups: Wilcoxon signed-rank,
  two-sided, on the per-site differences ``mean_a - mean_b`` (zero differences dropped, exact
  null for small samples as scipy chooses); ``value`` / ``null_mean`` = median over sites of
  the group means; effect = matched-pairs rank-biserial ``(W+ - W-) / (W+ + W-)``; ``n`` =
  sites. More groups (layers): Friedman chi^2 over the sites that have every group (each site a
  block, its group means ranked); effect = Kendall's ``W = chi^2 / (n_sites (k - 1))``.
* ``method="mixed_model"``: linear mixed model ``value ~ C(group) + (1 | site)``
  (statsmodels ``MixedLM``, REML, random intercept per site, every unit of a known group and a
  site with units); p of the group effect from the Wald test (z for two groups, chi^2 with
  ``k - 1`` degrees of freedom for more). Two groups: ``value`` / ``null_mean`` = the model's
  group means, effect = their difference over ``sqrt(site variance + residual variance)``;
  more: ``value`` = Wald chi^2, effect = marginal R^2 (variance of the fixed-effect prediction
  over it plus both variance components). A fit that does not converge falls back to
  ``site_means`` and says so.

Fewer than ``min_sites`` (default 2) usable sites: no row, and a note that between-site
effects cannot be tested; a within-site test (:func:`compare_groups`, labelled by
:func:`label_within_site`) can still be reported, as what it is.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

__all__ = [
    "GROUP_METHODS",
    "UNKNOWN",
    "compare_across_sites",
    "compare_cell_types_and_layers",
    "compare_cell_types_and_layers_across_sites",
    "compare_groups",
    "compare_site_subspaces",
    "compare_site_tiling",
    "compare_sites",
    "label_within_site",
    "mann_whitney",
    "null_row",
    "p_greater",
    "stat_row",
    "to_site_statistics",
    "verdict_text",
    "wilcoxon_greater",
    "z_score",
]

#: Labels treated as unknown.
UNKNOWN = ("", "unknown", "nan", "none")
#: Methods of :func:`compare_across_sites`.
GROUP_METHODS = ("site_means", "mixed_model")
#: Suffix and test-text prefix of unit-level rows within one site (:func:`label_within_site`).
WITHIN_SITE_SUFFIX = "_within_site"
WITHIN_SITE_PREFIX = "units as independent, within one site (not a between-site test): "


def stat_row(site, statistic, value, null_mean, p_value, effect_size, n, test, verdict) -> dict:
    """One statistics row (``None`` numbers become NaN)."""

    def num(x) -> float:
        return float("nan") if x is None else float(x)

    return {
        "site": str(site),
        "statistic": str(statistic),
        "value": num(value),
        "null_mean": num(null_mean),
        "p_value": num(p_value),
        "effect_size": num(effect_size),
        "n": int(n),
        "test": str(test),
        "verdict": str(verdict),
    }


def p_greater(obs, null: np.ndarray) -> np.ndarray:
    """Monte-Carlo p-value ``(1 + #{null >= obs}) / (1 + n_draws)`` along axis 0 of ``null``."""
    null = np.asarray(null)
    return (1.0 + (null >= np.asarray(obs) - 1e-12).sum(0)) / (1.0 + null.shape[0])


def z_score(obs: float, null: np.ndarray) -> float:
    """``(obs - mean(null)) / std(null)`` (NaN for a constant null)."""
    sd = float(np.std(null))
    return float((obs - np.mean(null)) / sd) if sd > 0 else float("nan")


def verdict_text(p: float, claim: str, alpha: float = 0.05) -> str:
    """``claim (p=...)`` when ``p < alpha``, else ``not shown: claim (p=...)``."""
    return f"{claim} (p={p:.3g})" if p < alpha else f"not shown: {claim} (p={p:.3g})"


def null_row(site, statistic: str, obs: float, null: np.ndarray, n: int, test: str, claim: str):
    """Row for an observed value against Monte-Carlo null draws (one-sided, greater)."""
    p = float(p_greater(obs, null))
    return stat_row(
        site, statistic, obs, np.mean(null), p, z_score(obs, null), n, test, verdict_text(p, claim)
    )


def mann_whitney(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Two-sided Mann-Whitney U p-value and rank-biserial effect (``+`` when ``a > b``)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    u, p = stats.mannwhitneyu(a, b, alternative="two-sided")
    return float(p), float(2.0 * u / (a.size * b.size) - 1.0)


def wilcoxon_greater(diff: np.ndarray) -> tuple[float, float]:
    """One-sided Wilcoxon signed-rank p-value (``diff > 0``) and matched-pairs rank-biserial."""
    diff = np.asarray(diff, float)
    diff = diff[np.isfinite(diff) & (diff != 0)]
    if diff.size == 0:
        return 1.0, 0.0
    ranks = stats.rankdata(np.abs(diff))
    w_pos, w_neg = ranks[diff > 0].sum(), ranks[diff < 0].sum()
    p = stats.wilcoxon(diff, alternative="greater").pvalue
    return float(p), float((w_pos - w_neg) / (w_pos + w_neg))


def _is_unknown(label) -> bool:
    if label is None or (isinstance(label, float) and np.isnan(label)):
        return True
    return str(label).strip().lower() in UNKNOWN


def compare_groups(
    values: np.ndarray,
    labels: Sequence,
    *,
    site: str,
    statistic: str,
    groups: Sequence[str] | None = None,
    min_per_group: int = 2,
    grouping: str = "group",
) -> tuple[list[dict] | None, list[str]]:
    """Compare a per-unit value across labelled groups (two: Mann-Whitney; more: Kruskal).

    Parameters
    ----------
    values : ndarray, shape (n,)
        E.g. SRF breadth or shape index; NaN values are left out (and counted).
    labels : sequence, shape (n,)
        Group of each unit (cell type, layer); unknown labels are left out and counted.
    site : str
    statistic : str
        Name of the compared quantity; rows are named ``"<statistic>_by_<groups>"``.
    groups : sequence of str, optional
        Groups to compare, in order (the first is ``a`` in the two-group effect); default the
        sorted known labels.
    min_per_group : int, default 2
    grouping : str, default "group"
        What the labels are (e.g. "cell type", "layer"), for the notes.

    Returns
    -------
    rows : list of dict or None
        One row, or None when fewer than two groups have ``min_per_group`` units.
    notes : list of str
        Counts per group, units left out and why, or why nothing was tested.
    """
    values = np.asarray(values, dtype=float)
    labels = list(labels)
    if values.ndim != 1 or len(labels) != values.size:
        raise ValueError(
            f"values and labels must be 1-D of the same length; got {values.shape} and "
            f"{len(labels)} labels"
        )
    if isinstance(min_per_group, bool) or not isinstance(min_per_group, int) or min_per_group < 1:
        raise ValueError(f"min_per_group must be a positive int; got {min_per_group!r}, e.g. 2")
    unknown = np.array([_is_unknown(x) for x in labels], dtype=bool)
    missing = ~np.isfinite(values) & ~unknown
    known = np.array(["" if u else str(x) for x, u in zip(labels, unknown, strict=True)])
    names = sorted(set(known[~unknown])) if groups is None else [str(g) for g in groups]
    members = {g: values[(known == g) & ~missing] for g in names}
    what = f"{site} {statistic} by {grouping}"
    if not (~unknown).any():
        return None, [f"{what}: not tested; no unit has a known {grouping} ({values.size} unknown)"]
    counts = ", ".join(f"{g}: {v.size}" for g, v in members.items())
    notes = [f"{what}: units per group {counts}"]
    if unknown.any():
        notes.append(f"{what}: {int(unknown.sum())} unit(s) of unknown {grouping} left out")
    if missing.any():
        notes.append(f"{what}: {int(missing.sum())} unit(s) without a value left out")
    tested = {g: v for g, v in members.items() if v.size >= min_per_group}
    if len(tested) < 2:
        notes.append(
            f"{what}: not tested; needs at least 2 groups with >= {min_per_group} units ({counts})"
        )
        return None, notes
    left = f"; left out: {int(unknown.sum())} unknown, {int(missing.sum())} without a value"
    n = sum(v.size for v in tested.values())
    label = "_vs_".join(tested) if len(tested) == 2 else "groups"
    if len(tested) == 2:
        (ga, a), (gb, b) = tested.items()
        p, effect = mann_whitney(a, b)
        higher = ga if effect > 0 else gb
        row = stat_row(
            site, f"{statistic}_{label}", np.median(a), np.median(b), p, effect, n,
            f"Mann-Whitney U two-sided, rank-biserial; {counts}{left}",
            verdict_text(p, f"{statistic} differs, higher in {higher}"),
        )  # fmt: skip
        return [row], notes
    h, p = stats.kruskal(*tested.values())
    medians = ", ".join(f"{g} {np.median(v):.3g}" for g, v in tested.items())
    row = stat_row(
        site, f"{statistic}_across_{'_'.join(tested)}", h, None, p, h / (n - 1), n,
        f"Kruskal-Wallis H, epsilon^2; medians {medians}; {counts}{left}",
        verdict_text(p, f"{statistic} differs across groups"),
    )  # fmt: skip
    return [row], notes


def compare_sites(
    a: np.ndarray,
    b: np.ndarray,
    *,
    site_a: str,
    site_b: str,
    statistic: str,
    min_per_group: int = 2,
) -> tuple[list[dict] | None, list[str]]:
    """Compare one per-unit value between two sites (Mann-Whitney U, rank-biserial).

    E.g. variance fractions at a common site dimensionality (from
    ``SiteSubspaceAnalysis.unit_capture_``), units' mean pairwise similarity or overlap. The
    row's ``site`` is ``"<site_a> vs <site_b>"``; a positive effect means ``site_a`` higher.
    """
    values = np.concatenate([np.asarray(a, float), np.asarray(b, float)])
    labels = [site_a] * len(a) + [site_b] * len(b)
    if site_a == site_b:
        raise ValueError(f"site_a and site_b must differ; both are {site_a!r}")
    return compare_groups(
        values,
        labels,
        site=f"{site_a} vs {site_b}",
        statistic=statistic,
        groups=[site_a, site_b],
        min_per_group=min_per_group,
    )


def compare_cell_types_and_layers(
    measures: dict[str, np.ndarray],
    cell_type: Sequence,
    layer: Sequence,
    *,
    site: str,
    min_per_group: int = 2,
) -> tuple[list[dict] | None, list[str]]:
    """Narrow vs broad (Mann-Whitney) and across layers (Kruskal-Wallis) for each measure.

    Parameters
    ----------
    measures : dict of str -> ndarray, shape (n,)
        E.g. ``{"breadth": ..., "shape_index": ...}``, one value per unit.
    cell_type, layer : sequence, shape (n,)
        ``"narrow"``/``"broad"`` and layer names; unknown ones are reported, not tested.
    site : str
    min_per_group : int, default 2

    Returns
    -------
    rows : list of dict or None
        None when no comparison could be tested (the notes say why).
    notes : list of str
    """
    rows: list[dict] = []
    notes: list[str] = []
    for name, values in measures.items():
        for labels, groups, grouping in (
            (cell_type, ["narrow", "broad"], "cell type"),
            (layer, None, "layer"),
        ):
            r, n = compare_groups(
                values, labels, site=site, statistic=name, groups=groups,
                min_per_group=min_per_group, grouping=grouping,
            )  # fmt: skip
            rows.extend(r or [])
            notes.extend(n)
    return (rows or None), notes


def compare_site_subspaces(a, b, n_components: int | None = None):
    """Shared-subspace strength of two fitted ``SiteSubspaceAnalysis`` objects.

    Per unit: the fraction of its dSTRF variance in the top ``K`` PCs of its own site (``K``
    = ``n_components`` or the smaller of the two site dimensionalities, so the sites are
    compared at equal dimension), and its mean similarity to the other units of its site.
    Mann-Whitney U between sites (``site_a`` = ``a``); positive effects mean ``a`` higher.

    Returns
    -------
    rows : list of dict or None
    notes : list of str
    """
    if a.result_ is None or b.result_ is None:
        missing = [x for x in (a, b) if x.result_ is None]
        return None, [f"not compared: {len(missing)} site(s) without a fitted subspace"]
    k = n_components or min(a.result_.dimensionality, b.result_.dimensionality)
    k = min(k, a.unit_capture_.shape[1], b.unit_capture_.shape[1])
    sa, sb = a.result_.site, b.result_.site
    rows, notes = [], []
    for stat, va, vb in (
        (f"variance_fraction_at_{k}_dims", a.unit_capture_[:, k - 1], b.unit_capture_[:, k - 1]),
        ("unit_mean_similarity", np.nanmean(a.similarity_, 1), np.nanmean(b.similarity_, 1)),
    ):
        r, n = compare_sites(va, vb, site_a=sa, site_b=sb, statistic=stat)
        rows.extend(r or [])
        notes.extend(n)
    return (rows or None), notes


def compare_site_tiling(a, b):
    """Overlap of high-activity regions of two sites' ``TilingResult`` (Mann-Whitney U).

    Per unit: its mean Jaccard overlap with the other units of its site minus the shift-null
    mean of those pairs (excess overlap; pairs share units, so p-values are approximate).

    Returns
    -------
    rows : list of dict or None
    notes : list of str
    """
    if not (a.tested and b.tested):
        return None, ["not compared: a site's tiling was not tested"]

    def excess(t) -> np.ndarray:
        return np.nanmean(t.overlap - t.overlap_null_mean, axis=1)

    return compare_sites(
        excess(a), excess(b), site_a=a.site, site_b=b.site, statistic="unit_excess_overlap"
    )


def label_within_site(rows: Sequence[dict] | None) -> list[dict]:
    """Mark unit-level rows of one site as what they are (units treated as independent).

    The statistic gets the suffix ``"_within_site"`` and the test text the prefix
    ``"units as independent, within one site (not a between-site test): "``, so such a row is
    not mistaken for the paper's site-level test (:func:`compare_across_sites`).
    """
    out = []
    for row in rows or []:
        new = dict(row)
        if not new["statistic"].endswith(WITHIN_SITE_SUFFIX):
            new["statistic"] += WITHIN_SITE_SUFFIX
        if not new["test"].startswith(WITHIN_SITE_PREFIX):
            new["test"] = WITHIN_SITE_PREFIX + new["test"]
        out.append(new)
    return out


@dataclass
class _Nested:
    """The units a nested comparison uses (known group, known site, finite value)."""

    values: np.ndarray
    groups: np.ndarray
    sites: np.ndarray
    names: list[str]
    what: str
    left: str


def _nested_inputs(values, labels, sites, groups, what: str, grouping: str, notes: list[str]):
    values = np.asarray(values, dtype=float)
    labels, sites = list(labels), list(sites)
    if values.ndim != 1 or not len(labels) == len(sites) == values.size:
        raise ValueError(
            f"values, labels and sites must be 1-D of the same length; got {values.shape}, "
            f"{len(labels)} labels and {len(sites)} sites"
        )
    unknown = np.array([_is_unknown(x) for x in labels], dtype=bool)
    no_site = np.array([_is_unknown(x) for x in sites], dtype=bool) & ~unknown
    missing = ~np.isfinite(values) & ~unknown & ~no_site
    known = np.array(["" if u else str(x) for x, u in zip(labels, unknown, strict=True)])
    names = sorted(set(known[~unknown])) if groups is None else [str(g) for g in groups]
    other = ~unknown & ~np.isin(known, names)
    use = ~unknown & ~no_site & ~missing & ~other
    site = np.array([str(x) for x in sites])
    why = {
        f"unknown {grouping}": unknown, "without a site": no_site, "without a value": missing,
        "of other groups": other,
    }  # fmt: skip
    counts = [f"{int(m.sum())} {k}" for k, m in why.items() if m.any()]
    left = "left out: " + ", ".join(counts) if counts else "no unit left out"
    if counts:
        notes.append(f"{what}: {left}")
    return _Nested(values[use], known[use], site[use], names, what, left)


def compare_across_sites(  # long: validation, dispatch and the fallback read best in one place
    values: np.ndarray,
    labels: Sequence,
    sites: Sequence,
    *,
    statistic: str,
    groups: Sequence[str] | None = None,
    min_per_group: int = 2,
    method: str = "site_means",
    grouping: str = "group",
    min_sites: int = 2,
    name: str = "all sites",
) -> tuple[list[dict] | None, list[str]]:
    """Compare a per-unit value between groups with units nested in sites (site-level test).

    See the module docstring ("Units nested in sites") for the tests, effects and columns.

    Parameters
    ----------
    values : ndarray, shape (n,)
        One value per unit (e.g. SRF breadth); NaN values are left out and counted.
    labels : sequence, shape (n,)
        Group of each unit (cell type, layer); unknown labels are left out and counted.
    sites : sequence, shape (n,)
        Site of each unit. Across sessions, make the labels unique per session (e.g.
        ``"<session>/<site>"``): equal labels are one site.
    statistic : str
        Name of the compared quantity; rows are ``"<statistic>_<a>_vs_<b>_<method>"`` or
        ``"<statistic>_across_<groups>_<method>"``.
    groups : sequence of str, optional
        Groups to compare, in order (the first is ``a``); default the sorted known labels.
        Units of other groups are left out and counted.
    min_per_group : int, default 2
        ``site_means``: units of every group a site needs to count. ``mixed_model``: units a
        group needs over all sites.
    method : {"site_means", "mixed_model"}
    grouping : str, default "group"
        What the labels are, for the notes.
    min_sites : int, default 2
        Sites (with the units above) the test needs; fewer: not tested.
    name : str, default "all sites"
        The rows' ``site`` column.

    Returns
    -------
    rows : list of dict or None
        One row, or None when it could not be tested (the notes say why).
    notes : list of str
    """
    if method not in GROUP_METHODS:
        raise ValueError(f"method must be one of {GROUP_METHODS}; got {method!r}")
    for key, val, low in (("min_per_group", min_per_group, 1), ("min_sites", min_sites, 2)):
        if isinstance(val, bool) or not isinstance(val, int) or val < low:
            raise ValueError(f"{key} must be an int >= {low}; got {val!r}, e.g. {max(low, 2)}")
    if groups is not None and len(set(map(str, groups))) < 2:
        raise ValueError(f"groups must name at least 2 different groups; got {groups!r}")
    notes: list[str] = []
    what = f"{name} {statistic} by {grouping} across sites"
    d = _nested_inputs(values, labels, sites, groups, what, grouping, notes)
    if len(d.names) < 2:
        found = f"found only {d.names}" if d.names else f"no unit has a known {grouping}"
        notes.append(f"{what}: not tested; needs 2 known groups, {found}")
        return None, notes
    n_sites = len(set(d.sites.tolist()))
    if n_sites < min_sites:
        notes.append(
            f"{what}: not tested; between-site effects cannot be tested with {n_sites} site(s) "
            f"(needs >= {min_sites}); a within-site test treats units as independent"
        )
        return None, notes
    if method == "mixed_model":
        row, why = _mixed_model_row(d, statistic, name, min_per_group, min_sites)
        if row is not None:
            notes.extend(why)
            return [row], notes
        notes.append(f"{what}: mixed model not used ({'; '.join(why)}); site means instead")
    row = _site_means_row(d, statistic, name, min_per_group, min_sites, notes)
    return ([row] if row is not None else None), notes


def _site_means_row(d: _Nested, statistic, name, min_per_group, min_sites, notes):
    """Per-site group means; Wilcoxon signed-rank (2 groups) or Friedman (more) over sites."""
    order = list(dict.fromkeys(d.sites.tolist()))
    count = {(s, g): int(np.sum((d.sites == s) & (d.groups == g))) for s in order for g in d.names}
    usable = [s for s in order if all(count[s, g] >= min_per_group for g in d.names)]
    per_group = ", ".join(f"{g}: {sum(count[s, g] for s in usable)}" for g in d.names)
    if len(usable) < min_sites:
        notes.append(
            f"{d.what}: not tested; {len(usable)} site(s) have >= {min_per_group} units of "
            f"every group {d.names} (needs >= {min_sites} sites)"
        )
        return None
    means = np.array([[d.values[(d.sites == s) & (d.groups == g)].mean() for g in d.names]
                      for s in usable])  # fmt: skip
    n_units = int(sum(count[s, g] for s in usable for g in d.names))
    units = f"{len(usable)} sites, {n_units} units ({per_group}); {d.left}"
    if len(d.names) == 2:
        diff = means[:, 0] - means[:, 1]
        p, effect = _wilcoxon_two_sided(diff)
        nonzero = int(np.count_nonzero(diff))
        if 0 < nonzero < 6:
            notes.append(
                f"{d.what}: {nonzero} site(s) with a difference; the smallest two-sided p "
                f"possible is 2/2^{nonzero} = {2.0 / 2**nonzero:.3g}"
            )
        a, b = d.names
        return stat_row(
            name, f"{statistic}_{a}_vs_{b}_site_means", np.median(means[:, 0]),
            np.median(means[:, 1]), p, effect, len(usable),
            f"site means, Wilcoxon signed-rank two-sided on per-site {a} - {b}, matched-pairs "
            f"rank-biserial; {units}",
            verdict_text(p, f"{statistic} differs between sites' {a} and {b} means, higher in "
                         f"{a if effect > 0 else b}"),
        )  # fmt: skip
    chi2, p = stats.friedmanchisquare(*means.T)
    medians = ", ".join(f"{g} {m:.3g}" for g, m in zip(d.names, np.median(means, 0), strict=True))
    return stat_row(
        name, f"{statistic}_across_{'_'.join(d.names)}_site_means", chi2, None, p,
        chi2 / (len(usable) * (len(d.names) - 1)), len(usable),
        f"site means, Friedman chi^2 over sites having every group, Kendall's W; median site "
        f"means {medians}; {units}",
        verdict_text(p, f"{statistic} differs across {', '.join(d.names)} (site means)"),
    )  # fmt: skip


def _wilcoxon_two_sided(diff: np.ndarray) -> tuple[float, float]:
    """Two-sided Wilcoxon signed-rank p (zeros dropped) and matched-pairs rank-biserial."""
    diff = diff[diff != 0]
    if diff.size == 0:
        return 1.0, 0.0
    ranks = stats.rankdata(np.abs(diff))
    w_pos, w_neg = ranks[diff > 0].sum(), ranks[diff < 0].sum()
    p = float(stats.wilcoxon(diff, alternative="two-sided").pvalue)
    return p, float((w_pos - w_neg) / (w_pos + w_neg))


def _fit_mixed_model(y: np.ndarray, exog: np.ndarray, sites: np.ndarray):
    """REML fit of ``y ~ exog + (1 | site)``; (result, None) or (None, why it failed)."""
    try:
        import statsmodels.api as sm
    except ImportError:
        return None, "statsmodels is not installed (pip install statsmodels)"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            res = sm.MixedLM(y, exog, groups=sites).fit(reml=True, method=["lbfgs", "powell"])
        except (np.linalg.LinAlgError, ValueError) as err:
            return None, f"the fit failed: {err}"
    k = exog.shape[1]
    cov = np.asarray(res.cov_params())[:k, :k]
    if not res.converged or not np.all(np.isfinite(cov)) or np.any(np.diag(cov) <= 0):
        said = "; ".join(dict.fromkeys(str(w.message).splitlines()[0] for w in caught))
        return None, f"did not converge ({said or 'no usable covariance'})"
    return res, None


def _mixed_model_row(d: _Nested, statistic, name, min_per_group, min_sites):
    """``value ~ C(group) + (1 | site)``: (row, notes) or (None, reasons)."""
    sizes = {g: int(np.sum(d.groups == g)) for g in d.names}
    small = [g for g, n in sizes.items() if n < min_per_group]
    if small:
        return None, [f"groups {small} have < {min_per_group} units ({sizes})"]
    exog = np.column_stack([np.ones(d.values.size)] + [d.groups == g for g in d.names[1:]])
    res, why = _fit_mixed_model(d.values, exog.astype(float), d.sites)
    if res is None:
        return None, [why]
    k = len(d.names)
    beta = np.asarray(res.fe_params, dtype=float)
    cov = np.asarray(res.cov_params())[1:k, 1:k]
    wald = float(beta[1:] @ np.linalg.solve(cov, beta[1:]))
    p = float(stats.chi2.sf(wald, k - 1))
    site_var, resid_var = float(np.asarray(res.cov_re)[0, 0]), float(res.scale)
    means = beta[0] + np.r_[0.0, beta[1:]]
    n_sites = len(set(d.sites.tolist()))
    text = (
        f"linear mixed model value ~ C(group) + (1 | site) (statsmodels MixedLM, REML), Wald "
        f"{'z' if k == 2 else f'chi^2 df={k - 1}'}; {n_sites} sites, {d.values.size} units ("
        + ", ".join(f"{g}: {n}" for g, n in sizes.items())
        + f"); site SD {np.sqrt(site_var):.3g}, residual SD {np.sqrt(resid_var):.3g}; {d.left}"
    )
    notes = []
    if site_var <= 1e-12 * max(resid_var, 1e-300):
        notes.append(f"{d.what}: site variance estimated at 0 (no site effect beyond the units)")
    if k == 2:
        effect = (means[0] - means[1]) / np.sqrt(site_var + resid_var)
        a, b = d.names
        return stat_row(
            name, f"{statistic}_{a}_vs_{b}_mixed_model", means[0], means[1], p, effect, n_sites,
            text + "; effect = (mean a - mean b) / sqrt(site + residual variance)",
            verdict_text(p, f"{statistic} differs between {a} and {b} (site as random effect), "
                         f"higher in {a if effect > 0 else b}"),
        ), notes  # fmt: skip
    fixed = float(np.var(exog.astype(float) @ beta))
    return stat_row(
        name, f"{statistic}_across_{'_'.join(d.names)}_mixed_model", wald, None, p,
        fixed / (fixed + site_var + resid_var), n_sites,
        text + "; model means " + ", ".join(f"{g} {m:.3g}" for g, m in zip(d.names, means,
                                                                            strict=True))
        + "; effect = marginal R^2",
        verdict_text(p, f"{statistic} differs across {', '.join(d.names)} (site as random "
                     "effect)"),
    ), notes  # fmt: skip


def compare_cell_types_and_layers_across_sites(
    measures: dict[str, np.ndarray],
    cell_type: Sequence,
    layer: Sequence,
    sites: Sequence,
    *,
    method: str = "site_means",
    min_per_group: int = 2,
    min_sites: int = 2,
    name: str = "all sites",
) -> tuple[list[dict] | None, list[str]]:
    """Narrow vs broad and across layers for each measure, units nested in sites.

    :func:`compare_across_sites` for every measure, by cell type (``["narrow", "broad"]``)
    and by layer (every known layer). Across sessions give site labels unique per session.

    Returns
    -------
    rows : list of dict or None
        None when nothing could be tested (the notes say why).
    notes : list of str
    """
    rows: list[dict] = []
    notes: list[str] = []
    for stat, values in measures.items():
        for labels, groups, grouping in (
            (cell_type, ["narrow", "broad"], "cell type"),
            (layer, None, "layer"),
        ):
            r, n = compare_across_sites(
                values, labels, sites, statistic=stat, groups=groups, min_per_group=min_per_group,
                method=method, grouping=grouping, min_sites=min_sites, name=name,
            )  # fmt: skip
            rows.extend(r or [])
            notes.extend(n)
    return (rows or None), notes


def to_site_statistics(rows: Sequence[dict] | None, name: str = "site_statistics"):
    """``SiteStatistics`` from rows, or None when there are none (nothing is written)."""
    from nwb_subspace.results import SiteStatistics

    return SiteStatistics(rows=list(rows), name=name) if rows else None
