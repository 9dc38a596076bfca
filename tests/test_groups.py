"""Group comparisons: tests, effect sizes, counts and unknown groups."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from nwb_subspace.results import STATISTIC_FIELDS, SiteStatistics
from nwb_subspace.site.groups import (
    compare_across_sites,
    compare_cell_types_and_layers,
    compare_cell_types_and_layers_across_sites,
    compare_groups,
    compare_sites,
    label_within_site,
    mann_whitney,
    p_greater,
    to_site_statistics,
    wilcoxon_greater,
)


def test_rank_biserial_extremes_and_sign():
    p, r = mann_whitney([5, 6, 7], [1, 2, 3])
    assert r == pytest.approx(1.0)
    assert p == pytest.approx(stats.mannwhitneyu([5, 6, 7], [1, 2, 3]).pvalue)
    assert mann_whitney([1, 2, 3], [5, 6, 7])[1] == pytest.approx(-1.0)


def test_wilcoxon_greater_effect():
    p, r = wilcoxon_greater(np.arange(1.0, 11.0))
    assert r == pytest.approx(1.0) and p < 0.01
    assert wilcoxon_greater(np.zeros(5)) == (1.0, 0.0)


def test_p_greater_counts_ties_and_the_observation():
    assert p_greater(1.0, np.array([0.0, 1.0, 2.0])) == pytest.approx(3 / 4)


def test_two_groups_report_counts_and_unknowns():
    rng = np.random.default_rng(0)
    values = np.r_[rng.normal(10, 1, 12), rng.normal(5, 1, 12), [1.0, np.nan]]
    labels = ["narrow"] * 12 + ["broad"] * 12 + ["unknown", "narrow"]
    rows, notes = compare_groups(
        values, labels, site="s1", statistic="breadth", groups=["narrow", "broad"]
    )
    (row,) = rows
    assert set(row) == set(STATISTIC_FIELDS)
    assert row["statistic"] == "breadth_narrow_vs_broad" and row["n"] == 24
    assert row["p_value"] < 0.001 and row["effect_size"] == pytest.approx(1.0)
    assert "narrow: 12, broad: 12" in row["test"] and "1 unknown, 1 without a value" in row["test"]
    assert "higher in narrow" in row["verdict"]
    assert any("1 unit(s) of unknown group left out" in n for n in notes)


def test_layers_use_kruskal_with_epsilon_squared():
    rng = np.random.default_rng(1)
    values = np.r_[rng.normal(0, 1, 8), rng.normal(3, 1, 8), rng.normal(6, 1, 8)]
    labels = ["13"] * 8 + ["44"] * 8 + ["56"] * 8
    (row,), _ = compare_groups(values, labels, site="s", statistic="breadth")
    h, p = stats.kruskal(values[:8], values[8:16], values[16:])
    assert row["value"] == pytest.approx(h) and row["p_value"] == pytest.approx(p)
    assert row["effect_size"] == pytest.approx(h / 23)
    assert row["statistic"] == "breadth_across_13_44_56"


def test_one_unit_of_known_type_is_not_tested_and_says_so():
    rows, notes = compare_cell_types_and_layers(
        {"breadth": np.array([3.0, 4.0, 5.0])},
        ["narrow", "unknown", ""],
        ["unknown", None, np.nan],
        site="s",
    )
    assert rows is None
    assert to_site_statistics(rows) is None
    text = " ".join(notes)
    assert "not tested" in text and "narrow: 1, broad: 0" in text
    assert "s breadth by cell type: 2 unit(s) of unknown cell type left out" in text
    assert "s breadth by layer: not tested; no unit has a known layer (3 unknown)" in text


def test_compare_sites_and_site_statistics():
    rows, _ = compare_sites([0.9, 0.95, 0.97], [0.5, 0.6, 0.55], site_a="a", site_b="b",
                            statistic="fraction")  # fmt: skip
    assert rows[0]["site"] == "a vs b" and rows[0]["effect_size"] == pytest.approx(1.0)
    assert isinstance(to_site_statistics(rows), SiteStatistics)
    with pytest.raises(ValueError, match="must differ"):
        compare_sites([1.0], [2.0], site_a="a", site_b="a", statistic="x")
    with pytest.raises(ValueError, match="same length"):
        compare_groups(np.ones(3), ["a"], site="s", statistic="x")


# ------------------------------------------------------------- units nested in sites


def _table(site_means: dict[str, tuple[float, float]], per_group: int = 2):
    """Units whose per-site group means are exactly ``site_means[site] = (narrow, broad)``."""
    values, labels, sites = [], [], []
    spread = np.linspace(-0.1, 0.1, per_group)  # mean zero: the site mean is exact
    for site, means in site_means.items():
        for label, mean in zip(("narrow", "broad"), means, strict=True):
            values.extend(mean + spread)
            labels.extend([label] * per_group)
            sites.extend([site] * per_group)
    return np.array(values), labels, sites


def test_site_means_wilcoxon_is_pinned_to_a_hand_computed_case():
    # per-site narrow - broad = 1, 2, -0.5, 3, 4: ranks of |d| 2, 3, 1, 4, 5 -> W+ 14, W- 1;
    # exact two-sided p = 2 * #{subsets of ranks 1..5 with sum <= 1} / 2^5 = 2 * 2 / 32
    means = {"a": (2.0, 1.0), "b": (5.0, 3.0), "c": (1.0, 1.5), "d": (4.0, 1.0), "e": (9.0, 5.0)}
    values, labels, sites = _table(means, per_group=3)
    (row,), notes = compare_across_sites(
        values, labels, sites, statistic="breadth", groups=["narrow", "broad"]
    )
    assert set(row) == set(STATISTIC_FIELDS)
    assert row["statistic"] == "breadth_narrow_vs_broad_site_means" and row["site"] == "all sites"
    assert row["p_value"] == pytest.approx(0.125)
    diff = np.array([1.0, 2.0, -0.5, 3.0, 4.0])
    assert row["p_value"] == pytest.approx(stats.wilcoxon(diff).pvalue)
    assert row["effect_size"] == pytest.approx((14 - 1) / 15)
    assert row["value"] == pytest.approx(4.0) and row["null_mean"] == pytest.approx(1.5)
    assert row["n"] == 5 and "5 sites, 30 units (narrow: 15, broad: 15)" in row["test"]
    assert "not shown" in row["verdict"] and "higher in narrow" in row["verdict"]
    assert any("smallest two-sided p possible is 2/2^5 = 0.0625" in n for n in notes)


def test_sites_without_both_groups_are_left_out_of_site_means():
    means = {f"s{i}": (1.0 + i, 0.0) for i in range(6)}
    values, labels, sites = _table(means)
    # a seventh site with one narrow unit only: not enough units of every group
    values, labels, sites = np.r_[values, 100.0], labels + ["narrow"], sites + ["s6"]
    (row,), _ = compare_across_sites(
        values, labels, sites, statistic="x", groups=["narrow", "broad"]
    )
    assert row["n"] == 6 and row["effect_size"] == pytest.approx(1.0)
    assert row["p_value"] == pytest.approx(2 / 2**6)  # every difference positive, exact


def test_one_big_site_makes_units_significant_but_not_sites():
    """A site with many units, high values and mostly narrow units: the pooled unit-level
    Mann-Whitney calls narrow higher; within every site narrow and broad are alike."""
    rng = np.random.default_rng(0)
    values, labels, sites = [], [], []
    layout = {"big": (30, 3, 10.0)} | {f"s{i}": (3, 10, 0.0) for i in range(5)}
    for site, (n_narrow, n_broad, level) in layout.items():
        values.extend(level + rng.normal(0, 1, n_narrow + n_broad))
        labels.extend(["narrow"] * n_narrow + ["broad"] * n_broad)
        sites.extend([site] * (n_narrow + n_broad))
    values = np.asarray(values)
    (pooled,), _ = compare_groups(
        values, labels, site="all", statistic="breadth", groups=["narrow", "broad"]
    )
    assert pooled["p_value"] < 1e-6 and pooled["effect_size"] > 0.5
    for method in ("site_means", "mixed_model"):
        (row,), _ = compare_across_sites(
            values, labels, sites, statistic="breadth", groups=["narrow", "broad"], method=method
        )
        assert row["statistic"].endswith(method) and row["n"] == 6
        assert row["p_value"] > 0.05, (method, row)


def test_mixed_model_wald_matches_the_balanced_closed_form():
    """Balanced sites (n units per group each): the REML group effect is the difference of
    the group means and its variance 2 MSE / (n S), MSE from the additive two-way ANOVA."""
    rng = np.random.default_rng(3)
    n_sites, n = 6, 4
    sites = np.repeat([f"s{i}" for i in range(n_sites)], 2 * n)
    labels = np.tile(["narrow"] * n + ["broad"] * n, n_sites)
    values = (
        np.repeat(rng.normal(0, 3, n_sites), 2 * n)
        + 0.6 * (labels == "narrow")
        + rng.normal(0, 1, sites.size)
    )
    (row,), _ = compare_across_sites(values, labels, sites, statistic="b", method="mixed_model",
                                     groups=["narrow", "broad"])  # fmt: skip
    design = np.column_stack(
        [sites == f"s{i}" for i in range(n_sites)] + [labels == "narrow"]
    ).astype(float)
    beta = np.linalg.lstsq(design, values, rcond=None)[0]
    mse = np.sum((values - design @ beta) ** 2) / (values.size - n_sites - 1)
    a, b = values[labels == "narrow"].mean(), values[labels == "broad"].mean()
    z = (a - b) / np.sqrt(2 * mse / (n * n_sites))
    assert row["statistic"] == "b_narrow_vs_broad_mixed_model" and row["n"] == n_sites
    assert row["value"] == pytest.approx(a, abs=1e-6)
    assert row["null_mean"] == pytest.approx(b, abs=1e-6)
    assert row["p_value"] == pytest.approx(2 * stats.norm.sf(abs(z)), rel=1e-3)
    assert "6 sites, 48 units (narrow: 24, broad: 24)" in row["test"]


def test_layers_across_sites_use_friedman_and_mixed_model():
    rng = np.random.default_rng(2)
    values, labels, sites = [], [], []
    for i in range(6):
        for layer, shift in (("13", 0.0), ("44", 1.0), ("56", 2.0)):
            values.extend(5 * i + shift + rng.normal(0, 0.1, 3))
            labels.extend([layer] * 3)
            sites.extend([f"s{i}"] * 3)
    values = np.asarray(values)
    (row,), _ = compare_across_sites(values, labels, sites, statistic="breadth")
    means = values.reshape(6, 3, 3).mean(axis=2)  # (site, layer)
    chi2, p = stats.friedmanchisquare(*means.T)
    assert row["statistic"] == "breadth_across_13_44_56_site_means"
    assert row["value"] == pytest.approx(chi2) and row["p_value"] == pytest.approx(p)
    assert row["effect_size"] == pytest.approx(1.0)  # Kendall's W: same order at every site
    (mm,), _ = compare_across_sites(values, labels, sites, statistic="breadth",
                                    method="mixed_model")  # fmt: skip
    assert mm["statistic"] == "breadth_across_13_44_56_mixed_model" and mm["p_value"] < 1e-6
    assert "chi^2 df=2" in mm["test"] and 0 < mm["effect_size"] < 1


def test_one_site_cannot_test_between_sites_and_within_site_rows_say_so():
    values, labels, sites = _table({"only": (3.0, 1.0)}, per_group=8)
    rows, notes = compare_across_sites(values, labels, sites, statistic="breadth")
    assert rows is None
    assert any("between-site effects cannot be tested with 1 site(s)" in n for n in notes)
    within, _ = compare_groups(values, labels, site="only", statistic="breadth")
    (row,) = label_within_site(within)
    assert row["statistic"] == "breadth_broad_vs_narrow_within_site"
    assert row["test"].startswith("units as independent, within one site")
    assert label_within_site([row]) == [row]  # labelling twice changes nothing


def test_mixed_model_falls_back_to_site_means_with_a_note(monkeypatch):
    from statsmodels.regression.mixed_linear_model import MixedLM

    def broken(self, *args, **kwargs):
        raise np.linalg.LinAlgError("Singular matrix")

    monkeypatch.setattr(MixedLM, "fit", broken)
    means = {f"s{i}": (1.0 + i, 0.0) for i in range(6)}
    values, labels, sites = _table(means)
    (row,), notes = compare_across_sites(values, labels, sites, statistic="x",
                                         groups=["narrow", "broad"], method="mixed_model")  # fmt: skip
    assert row["statistic"] == "x_narrow_vs_broad_site_means"
    assert any("mixed model not used (the fit failed: Singular matrix); site means" in n
               for n in notes)  # fmt: skip


def test_nested_comparisons_refuse_bad_input_and_count_left_out_units():
    values, labels, sites = _table({"a": (1.0, 0.0), "b": (2.0, 0.0)})
    with pytest.raises(ValueError, match="method must be one of"):
        compare_across_sites(values, labels, sites, statistic="x", method="pooled")
    with pytest.raises(ValueError, match="same length"):
        compare_across_sites(values, labels, sites[:-1], statistic="x")
    with pytest.raises(ValueError, match="min_sites must be an int >= 2"):
        compare_across_sites(values, labels, sites, statistic="x", min_sites=1)
    rows, notes = compare_cell_types_and_layers_across_sites(
        {"breadth": np.r_[values, np.nan, 1.0]}, labels + ["narrow", "unknown"],
        ["unknown"] * (values.size + 2), sites + ["a", "b"],
    )  # fmt: skip
    (row,) = rows
    assert row["n"] == 2 and "left out: 1 unknown cell type, 1 without a value" in row["test"]
    assert any("by layer across sites: not tested; needs 2 known groups, no unit has a known "
               "layer" in n for n in notes)  # fmt: skip


def test_site_step_reports_the_nested_test_and_labels_within_site_rows():
    from types import SimpleNamespace

    from nwb_subspace.config import SiteSettings
    from nwb_subspace.site.step import SiteStep

    # narrow units broader by 1 at both sites, per-site offsets 0 and 5
    own = {r: {"breadth": 5.0 * (r >= 6) + (r % 2 == 0) + 0.01 * r, "shape_index": 0.0}
           for r in range(12)}  # fmt: skip
    units = SimpleNamespace(cell_type=np.array(["narrow", "broad"] * 6), layer=["?"] * 12)
    sites = np.array(["east"] * 6 + ["west"] * 6)
    notes: list[str] = []
    step = SiteStep()
    within = step._compare_groups("east", np.arange(6), own, units, notes)
    assert {r["statistic"] for r in within} == {
        "breadth_narrow_vs_broad_within_site", "shape_index_narrow_vs_broad_within_site",
    }  # fmt: skip
    assert all(r["test"].startswith("units as independent, within one site") for r in within)
    nested = step._compare_groups("all sites", np.arange(12), own, units, notes, sites)
    row = next(r for r in nested if r["statistic"] == "breadth_narrow_vs_broad_site_means")
    assert row["n"] == 2 and row["effect_size"] == 1.0 and row["p_value"] == pytest.approx(0.5)
    assert "2 sites, 12 units (narrow: 6, broad: 6)" in row["test"]
    assert step._compare_groups("all sites", np.arange(6), own, units, notes, sites[:6]) == []
    assert "between-site effects cannot be tested with one site" in notes[-1]
    mixed = SiteStep(settings=SiteSettings(group_method="mixed_model"))
    rows = mixed._compare_groups("all sites", np.arange(12), own, units, notes, sites)
    assert rows[0]["statistic"] == "breadth_narrow_vs_broad_mixed_model"
    with pytest.raises(ValueError, match=r"\[sites\] group_method must be one of"):
        SiteSettings(group_method="pooled")
