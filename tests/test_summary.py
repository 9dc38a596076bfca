"""Summary CSV tables and site figures."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread

from nwb_subspace.report.plots_site import plot_breadth_groups, plot_tiling
from nwb_subspace.site.groups import stat_row
from nwb_subspace.site.subspace import SiteSubspaceAnalysis, TilingResult
from nwb_subspace.site.tables import UNIT_TABLE_COLUMNS, site_table, unit_table, write_summary


def _analysis():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((4, 60, 2))
    cov = a @ a.transpose(0, 2, 1)
    cov[3] = 0.0
    return SiteSubspaceAnalysis(n_null=20).fit(
        (np.zeros((4, 6, 10)), cov),
        site="s1",
        frequencies=np.arange(6.0),
        bin_s=0.01,
        unit_rows=np.array([5, 6, 7, 8]),
    )


def _tiling():
    regions = np.zeros((3, 20, 20), bool)
    regions[0, 2:6, 2:6] = regions[1, 4:9, 4:9] = regions[2, 12:15, 10:18] = True
    return TilingResult(
        site="s1", unit_rows=np.array([5, 6, 7]), regions=regions,
        overlap=np.array([[np.nan, 0.1, 0], [0.1, np.nan, 0], [0, 0, np.nan]]),
        mean_overlap=0.03, null=np.full(10, 0.02), p_value=0.5, verdict="overlap at chance",
    )  # fmt: skip


def test_unit_table_one_row_per_unit_with_reasons(tmp_path):
    an = _analysis()
    units = unit_table(
        "s1", [5, 6, 7, 8, 9], cell_type=["narrow", "broad", "", "broad", "narrow"],
        analysis=an, tiling=_tiling(),
    )  # fmt: skip
    assert list(units.columns) == list(UNIT_TABLE_COLUMNS) and len(units) == 5
    by_row = units.set_index("unit_row")
    assert by_row.loc[8, "status"] == "left out: flat or non-finite dSTRF covariance"
    assert by_row.loc[9, "status"] == "not analysed"
    assert by_row.loc[7, "cell_type"] == "unknown" and by_row.loc[7, "layer"] == "unknown"
    assert by_row.loc[5, "variance_fraction"] > 0 and by_row.loc[5, "site_region_bins"] == 16
    sites = site_table(an.rows_)
    paths, notes = write_summary(tmp_path / "run", units, sites)
    assert [p.name for p in paths] == ["run_units.csv", "run_sites.csv"] and notes == []
    back = pd.read_csv(paths[1])
    assert set(back["statistic"]) >= {"variance_fraction_mean", "pairwise_similarity_mean"}
    with pytest.raises(ValueError, match="align them"):
        unit_table("s1", [1, 2], cell_type=["narrow"])


def test_empty_tables_are_not_written(tmp_path):
    paths, notes = write_summary(tmp_path / "run", unit_table("s", []), site_table(None))
    assert paths == [] and len(notes) == 2
    assert not list(tmp_path.iterdir())
    assert stat_row("s", "x", None, 1, 0.5, None, 3, "t", "v")["value"] != 0  # NaN, not 0


def _check_png(path):
    img = imread(path)
    assert img.size > 0 and img[..., :3].std() > 0.01


def test_figures(tmp_path):
    _check_png(plot_tiling(_tiling(), tmp_path / "tiling.png"))
    path = plot_breadth_groups(
        [3, 5, 8, 13, 2], ["narrow", "broad", "narrow", "unknown", "broad"],
        ["13", "44", "56", "", "13"], tmp_path / "breadth.png",
    )  # fmt: skip
    _check_png(path)
    with pytest.raises(ValueError, match="no high-activity regions"):
        plot_tiling(TilingResult(site="s", unit_rows=np.zeros(0, int)), tmp_path / "x.png")
