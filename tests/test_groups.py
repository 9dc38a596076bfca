"""Group comparisons: tests, effect sizes, counts and unknown groups."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from nwb_subspace.results import STATISTIC_FIELDS, SiteStatistics
from nwb_subspace.site.groups import (
    compare_cell_types_and_layers,
    compare_groups,
    compare_sites,
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
