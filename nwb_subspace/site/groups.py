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
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import stats

__all__ = [
    "UNKNOWN",
    "compare_cell_types_and_layers",
    "compare_groups",
    "compare_site_subspaces",
    "compare_site_tiling",
    "compare_sites",
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


def to_site_statistics(rows: Sequence[dict] | None, name: str = "site_statistics"):
    """``SiteStatistics`` from rows, or None when there are none (nothing is written)."""
    from nwb_subspace.results import SiteStatistics

    return SiteStatistics(rows=list(rows), name=name) if rows else None
