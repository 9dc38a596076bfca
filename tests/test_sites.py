"""The per-session site step: grouping units into sites, edge cases said plainly, NWB output.

Inputs are synthetic (low-rank dSTRF covariances in a shared site plane, random responses);
no model is fitted here. The one pipeline run on the tiny preset lives in test_pipeline.py.
"""

from __future__ import annotations

import subprocess
from datetime import datetime
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
from dateutil.tz import tzutc
from nwbinspector import Importance, inspect_nwbfile
from pynwb import NWBHDF5IO, NWBFile
from threadpoolctl import threadpool_limits

from nwb_subspace.config import AnalysisConfig, SiteSettings
from nwb_subspace.io.units.reader import UnitInfo
from nwb_subspace.io.writer import read_results, write_results
from nwb_subspace.results import ResultSet, SubspaceRFs
from nwb_subspace.site.step import ALL_SITES, SiteInputs, SiteStep, read_site_labels
from nwb_subspace.site.subspace import haar_subspaces
from nwb_subspace.site.tables import SITE_COLUMNS, UNIT_TABLE_COLUMNS, write_summary
from nwb_subspace.site.tiling import tiling_from_stored
from nwb_subspace.testing import write_mock_nwbfile

F, D, RATE, N_BINS = 6, 10, 100.0, 3000
FAST = SiteSettings(n_null=40, n_shifts=60)


@pytest.fixture(autouse=True, scope="module")
def _one_blas_thread():
    """One BLAS thread: the machine is shared."""
    with threadpool_limits(limits=1):
        yield


def _unit_info(cell_type: list[str], layer: list[str]) -> UnitInfo:
    n = len(cell_type)
    return UnitInfo(
        unit_ids=np.arange(100, 100 + n),
        spike_times=[np.zeros(0)] * n,
        waveform=np.full((n, 1), np.nan),
        waveform_fs=None,
        trough_to_peak_ms=np.full(n, np.nan),
        cell_type=np.array(cell_type),
        margin_ms=np.full(n, np.nan),
        depth_um=np.linspace(100, 900, n),
        layer=np.array(layer),
        source=np.array(["none"] * n),
        depth_source=np.array(["none"] * n),
        main_channel=np.full(n, -1),
        location_um=np.full((n, 2), np.nan),
    )


def _own_srfs(rows: np.ndarray, breadth: np.ndarray, rng: np.random.Generator) -> SubspaceRFs:
    """Each unit's own SRF ('model' rows): a hill whose width sets the breadth."""
    n, b = rows.size, 8
    grid = np.linspace(-1, 1, b)
    maps = []
    for width in breadth:
        maps.append(np.exp(-(grid[:, None] ** 2 + grid[None, :] ** 2) / (width / 40.0)))
    return SubspaceRFs(
        unit_rows=rows,
        dimensions=np.tile([[0, 1]], (n, 1)),
        response_source=np.array(["model"] * n),
        response_map=np.asarray(maps) + 0.01 * rng.standard_normal((n, b, b)),
        occupancy=np.full((n, b, b), 50),
        edges_x=np.tile(np.linspace(-1, 1, b + 1), (n, 1)),
        edges_y=np.tile(np.linspace(-1, 1, b + 1), (n, 1)),
        breadth=np.asarray(breadth, dtype=np.int64),
        shape_asymmetry=np.zeros((n, 2)),
    )


def _inputs(
    labels: list[str],
    passing: list[int],
    cell_type: list[str],
    layer: list[str],
    seed: int = 0,
) -> SiteInputs:
    """Synthetic session: units of a site share a 2-D dSTRF plane; narrow units broader SRFs."""
    rng = np.random.default_rng(seed)
    labels_arr = np.array(labels, dtype=object)
    rows = np.asarray(passing, dtype=np.int64)
    planes = {s: haar_subspaces(rng, F * D, 2, 1)[0] for s in dict.fromkeys(labels)}
    covs = []
    for r in rows:
        a = planes[labels[r]] @ rng.standard_normal((2, 2))
        covs.append(a @ a.T + 1e-6 * np.eye(F * D))
    from nwb_subspace.dstrf.compute import DSTRFMoments

    n = rows.size
    moments = DSTRFMoments(
        units=rows, n_frequencies=F, n_lags=D, count=np.full(n, N_BINS),
        n_total=np.full(n, N_BINS), n_outliers=np.zeros(n, int), n_nonfinite=np.zeros(n, int),
        mean=np.zeros((n, F, D)), covariance=np.asarray(covs).reshape(n, F * D, F * D),
        spread=np.ones(n), outlier_threshold=5.0, mode="reverse",
    )  # fmt: skip
    prediction = rng.gamma(2.0, 2.0, (N_BINS, n))
    counts = rng.poisson(1.0, (N_BINS, len(labels))).astype(float)
    breadth = np.array([30 if cell_type[r] == "narrow" else 10 for r in rows]) + rng.integers(
        0, 3, n
    )
    return SiteInputs(
        labels=labels_arr,
        moments=moments if n else None,
        unit_rows=rows,
        X=rng.standard_normal((N_BINS, F)),
        counts=counts,
        rate=RATE,
        frequencies=np.geomspace(200, 20000, F),
        prediction=prediction,
        tuning=None,
        srfs=_own_srfs(rows, breadth, rng) if n else None,
        units=_unit_info(cell_type, layer),
        excluded={r: "noise-corrected r 0.10 below the quality cut 0.5" for r in
                  set(range(len(labels))) - set(passing)},
        label_source="test",
    )  # fmt: skip


def _step(**changes) -> SiteStep:
    settings = SiteSettings(**{**FAST.__dict__, **changes})
    return SiteStep(settings=settings, srf_bins=8, min_occupancy=5, seed=0)


# ------------------------------------------------------------------------- grouping


def _labelled_file(path: Path, *, electrode_group_column: bool, extra_column: bool) -> Path:
    nwb = NWBFile(
        session_description="Two shanks.", identifier="sites-test",
        session_start_time=datetime(2026, 1, 1, tzinfo=tzutc()),
    )  # fmt: skip
    device = nwb.create_device(name="probe", description="Two-shank probe.")
    groups = [
        nwb.create_electrode_group(
            name=f"shank{i}", description=f"Shank {i}.", location="A1", device=device
        )
        for i in range(2)
    ]
    for g in groups:
        for _ in range(3):
            nwb.add_electrode(group=g, location="A1")
    if extra_column:
        nwb.add_unit_column(name="insertion", description="Penetration label.")
    if electrode_group_column:
        nwb.add_unit_column(name="electrode_group", description="The unit's electrode group.")
    for u, electrodes in enumerate([[0, 1], [2], [3, 4], [5, 0, 4]]):
        kwargs = {"spike_times": [0.1 * (u + 1)], "electrodes": electrodes}
        if extra_column:
            kwargs["insertion"] = f"pen{u % 2}"
        if electrode_group_column:
            kwargs["electrode_group"] = groups[1 - u // 2]
        nwb.add_unit(**kwargs)
    with NWBHDF5IO(str(path), "w") as io:
        io.write(nwb)
    return path


def test_sites_from_electrode_groups_columns_and_main_channel(tmp_path):
    path = _labelled_file(tmp_path / "a.nwb", electrode_group_column=False, extra_column=True)
    labels, source = read_site_labels(path)
    # unit 3 spans shank1 (5, 4) and shank0 (0): the majority wins
    assert labels.tolist() == ["shank0", "shank0", "shank1", "shank1"] and "electrode" in source
    labels, _ = read_site_labels(path, main_channel=np.array([-1, -1, -1, 0]))
    assert labels.tolist()[3] == "shank0"  # the main channel's group
    labels, source = read_site_labels(path, "insertion")
    assert labels.tolist() == ["pen0", "pen1", "pen0", "pen1"] and "'insertion'" in source
    with pytest.raises(ValueError, match=r"group_by names units column 'shank'.*insertion"):
        read_site_labels(path, "shank")
    path = _labelled_file(tmp_path / "b.nwb", electrode_group_column=True, extra_column=False)
    labels, source = read_site_labels(path)
    assert labels.tolist() == ["shank1", "shank1", "shank0", "shank0"]
    assert source == "units electrode_group"


def test_file_without_electrodes_is_one_site(tmp_path):
    nwb = NWBFile(
        session_description="No probe.", identifier="no-probe",
        session_start_time=datetime(2026, 1, 1, tzinfo=tzutc()),
    )  # fmt: skip
    for u in range(3):
        nwb.add_unit(spike_times=[0.1 * (u + 1)])
    with NWBHDF5IO(str(tmp_path / "c.nwb"), "w") as io:
        io.write(nwb)
    labels, source = read_site_labels(tmp_path / "c.nwb")
    assert labels.tolist() == [ALL_SITES] * 3 and "one site" in source


def test_sites_section_of_the_config():
    cfg = AnalysisConfig.from_dict({"sites": {"group_by": "insertion", "n_null": 50}})
    assert cfg.sites.group_by == "insertion" and cfg.sites.n_null == 50
    assert cfg.sites.variance_threshold == 0.85 and cfg.sites.n_shifts == 500
    assert cfg.to_dict()["sites"]["n_components"] is None
    for bad, match in (
        ({"n_null": 0}, r"\[sites\] n_null must be an integer >= 1"),
        ({"variance_threshold": 1.5}, r"\[sites\] variance_threshold must be in \(0, 1\]"),
        ({"weighting": "mean"}, r"\[sites\] weighting must be .*'equal'.*'variance'"),
        ({"group_by": ""}, r"\[sites\] group_by must (name|be) a units-table column"),
        ({"min_units": 1}, r"min_units must be an integer >= 2"),
    ):
        with pytest.raises(ValueError, match=match):
            AnalysisConfig.from_dict({"sites": bad})


# ------------------------------------------------------------------------- the step


@pytest.fixture(scope="module")
def two_sites():
    labels = ["east"] * 6 + ["west"] * 6
    cell = ["narrow", "broad"] * 6
    layer = ["13", "13", "44", "44", "56", "56"] * 2
    inputs = _inputs(labels, list(range(12)), cell, layer)
    return inputs, _step().run(inputs)


def test_two_sites_are_analysed_compared_and_tabulated(two_sites):
    inputs, out = two_sites
    assert [s.site for s in out.site_subspaces] == ["east", "west"]
    for s in out.site_subspaces:
        assert s.dimensionality == 2 and s.unit_rows.size == 6
        assert np.all(s.variance_fraction > 0.99) and np.all(s.p_value < 0.05)
        assert s.srfs is not None and set(s.srfs.unit_rows.tolist()) <= set(s.unit_rows.tolist())
        assert np.all(s.srfs.dimensions == [0, 1])
    stats = out.statistics_table
    by = stats.set_index(["site", "statistic"])
    for site in ("east", "west"):
        for name in ("site_dimensionality", "variance_fraction_mean", "pairwise_similarity_mean",
                     "variance_fraction_vs_other_sites", "tiling_overlap_mean"):  # fmt: skip
            assert (site, name) in by.index, (site, name)
        # own plane captures each unit better than the other site's plane
        assert by.loc[(site, "variance_fraction_vs_other_sites"), "p_value"] < 0.05
    between = stats.loc[stats["site"] == "east vs west", "statistic"].tolist()
    assert between == [
        "variance_fraction_at_2_dims_east_vs_west",
        "unit_mean_similarity_east_vs_west",
        "unit_excess_overlap_east_vs_west",
    ]
    # the locality test: each site's units share a plane, the other site's another one
    for site in ("east", "west", "all sites"):
        row = by.loc[(site, "same_vs_different_site_similarity")]
        assert row["p_value"] < 0.01 and row["value"] > 0.8 > 0.05 > row["null_mean"], site
    for site in ("east", "west"):  # the reference site PCA finds the plane too
        assert by.loc[(site, "site_dimensionality_reference"), "value"] == 2
        assert by.loc[(site, "site_similarity_loo_mean"), "value"] > 0.99
        assert (site, "tiling_overlap_neighbours") in by.index
    # narrow units were given broader SRFs: broader at both sites (site means, units nested
    # in sites; two sites cannot reach a small p-value)
    row = by.loc[("all sites", "breadth_narrow_vs_broad_site_means")]
    assert row["effect_size"] == 1.0 and row["value"] > row["null_mean"]
    assert len(out.statistics.rows) == len(stats)
    # one row per unit and one per site, with the documented columns
    assert list(out.unit_table.columns) == list(UNIT_TABLE_COLUMNS) and len(out.unit_table) == 12
    assert set(out.unit_table["status"]) == {"analysed"}
    assert out.unit_table["unit_id"].tolist() == list(range(100, 112))
    assert list(out.site_table.columns) == list(SITE_COLUMNS)
    assert out.site_table["site"].tolist() == ["east", "west"]
    assert np.all(out.site_table["variance_fraction_mean_p"] < 0.05)
    assert np.all(out.site_table["same_site_similarity_p"] < 0.01)
    assert np.all(out.site_table["dimensionality_reference"] == 2)
    assert set(out.site_table["tiling_verdict"]) <= {
        "overlap above chance", "overlap at chance", "overlap below chance",
    }  # fmt: skip


def test_seeded_and_repeatable(two_sites):
    inputs, out = two_sites
    again = _step().run(inputs)
    pd.testing.assert_frame_equal(again.statistics_table, out.statistics_table)


def test_stored_site_srfs_redraw_the_tiling_map(two_sites):
    _, out = two_sites
    rows = out.statistics.rows
    for s in out.site_subspaces:
        live, back = out.tilings[s.site], tiling_from_stored(s, rows)
        np.testing.assert_array_equal(back.unit_rows, live.unit_rows)
        np.testing.assert_array_equal(back.regions, live.regions)
        np.testing.assert_allclose(back.overlap, live.overlap)
        assert (back.verdict, back.p_value) == (live.verdict, live.p_value)
        assert back.rows() == []  # already stored; not written twice


@pytest.fixture(scope="module")
def edge_sites():
    """5 units as in the mock file: site 'pair' 2 units; 'single' 1 passing unit (narrow),
    1 failing; 'dropped' its unit fails the quality cut."""
    labels = ["pair", "pair", "single", "single", "dropped"]
    cell = ["narrow", "broad", "narrow", "unknown", "broad"]
    layer = ["13", "13", "44", "unknown", "56"]
    inputs = _inputs(labels, [0, 1, 2], cell, layer, seed=1)
    return inputs, _step(n_components=2).run(inputs)  # 2 site PCs: the pair gets a tiling map


def test_small_sites_say_so_plainly(edge_sites):
    _, out = edge_sites
    notes = "\n".join(out.notes)
    assert "site 'pair': only 2 units; little power" in notes
    assert "site 'single': 1 of 1 units pass the quality cut; a site subspace needs at least 2" \
        in notes  # fmt: skip
    assert "site 'dropped': none of its 1 unit(s) passes the quality cut" in notes
    assert "same-site vs different-site similarity: 1 site(s) with a fitted subspace" in notes
    assert "site 'pair': unit depths unknown" not in notes  # depths known (100-900 um)
    assert "site 'pair': no two units within 100 um of each other; tiling neighbour pairs are " \
        "all pairs" in notes  # fmt: skip
    # one unit of known type: narrow vs broad not tested, counts given
    assert "single breadth by cell type: units per group narrow: 1, broad: 0" in notes
    assert "single breadth by cell type: not tested" in notes
    assert [s.site for s in out.site_subspaces] == ["pair"]
    assert set(out.statistics_table["site"]) == {"pair"}
    status = out.unit_table.set_index("unit_row")["status"]
    assert status[0] == "analysed" and status[1] == "analysed"
    assert status[2] == "left out: site has 1 usable unit(s); a site subspace needs 2"
    assert status[3].startswith("left out: noise-corrected r 0.10 below the quality cut")
    assert status[4].startswith("left out: noise-corrected r")
    assert out.site_table.set_index("site").loc["single", "status"] == "not analysed"
    assert out.site_table.set_index("site").loc["dropped", "n_analysed"] == 0


def test_no_unit_passing_gives_notes_and_no_tables(tmp_path):
    inputs = _inputs(["a", "a", "b"], [], ["narrow", "broad", "broad"], ["13", "44", "56"])
    out = _step().run(inputs)
    assert out.site_subspaces == [] and out.statistics is None and out.tilings == {}
    assert out.notes[0] == "no unit passes the quality cut: no site subspace, tiling or comparison"
    assert len(out.unit_table) == 3 and len(out.statistics_table) == 0
    paths, notes = write_summary(
        tmp_path / "run", out.unit_table, out.site_table, out.statistics_table
    )
    assert [p.name for p in paths] == ["run_units.csv", "run_sites.csv"]
    assert notes == ["no statistics rows; statistics table not written"]


def test_labels_must_cover_every_unit():
    inputs = _inputs(["a", "a", "b"], [0, 1], ["narrow"] * 3, ["13"] * 3)
    inputs.labels = inputs.labels[:2]
    with pytest.raises(ValueError, match="labels must name the site of all 3 units"):
        _step().run(inputs)


# ------------------------------------------------------------------------- NWB


@pytest.fixture(scope="module")
def written_edges(edge_sites, tmp_path_factory):
    """The edge-case step written into a 5-unit mock file, as the pipeline writes it."""
    _, out = edge_sites
    path = write_mock_nwbfile(tmp_path_factory.mktemp("sites") / "session.nwb")
    stats = [out.statistics] if out.statistics is not None else []
    results = ResultSet(site_subspaces=out.site_subspaces, site_statistics=stats, config={})
    write_results(path, results, "sites_run")
    return path, out


def test_only_non_empty_site_results_are_written(written_edges):
    path, out = written_edges
    back = read_results(path, "sites_run")
    assert [s.name for s in back.site_subspaces] == ["site_subspace_pair"]
    s0, s1 = out.site_subspaces[0], back.site_subspaces[0]
    np.testing.assert_array_equal(s1.unit_rows, s0.unit_rows)
    np.testing.assert_allclose(s1.components, s0.components, rtol=1e-6)
    # issue 19: the reference site subspace and the leave-one-out measures round-trip
    np.testing.assert_allclose(s1.components_reference, s0.components_reference, rtol=1e-6)
    for key in ("explained_variance_ratio_reference", "variance_fraction_loo",
                "site_pc_similarity", "site_similarity_loo"):  # fmt: skip
        np.testing.assert_array_equal(getattr(s1, key), getattr(s0, key), err_msg=key)
    assert s1.dimensionality_reference == s0.dimensionality_reference >= 1
    assert s1.srfs is not None
    np.testing.assert_array_equal(s1.srfs.response_map, s0.srfs.response_map)
    assert len(back.site_statistics) == 1 and len(back.site_statistics[0].rows) == len(
        out.statistics.rows
    )
    assert {r["site"] for r in back.site_statistics[0].rows} == {"pair"}
    live = out.tilings["pair"]
    redrawn = tiling_from_stored(s1, back.site_statistics[0].rows)
    np.testing.assert_array_equal(redrawn.regions, live.regions)
    assert redrawn.verdict == live.verdict
    with h5py.File(path, "r") as f:
        run = f["processing/misc/sites_run"]
        kinds = sorted(run[k].attrs["neurodata_type"] for k in run)
        assert kinds == ["SiteStatisticsTable", "SiteSubspace"]
        assert run["site_subspace_pair/srfs"].attrs["neurodata_type"] == "SubspaceRFTable"
        assert len(run["site_statistics/id"]) > 0
    with NWBHDF5IO(str(path), "r") as io:  # plain pynwb
        site = io.read().processing["misc"]["sites_run"].site_subspaces["site_subspace_pair"]
        assert site.srfs["units"].table.name == "units" and len(site.srfs) == len(s0.srfs.unit_rows)


def test_written_file_is_valid(written_edges):
    path, _ = written_edges
    proc = subprocess.run(["pynwb-validate", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0 and "no errors found" in proc.stdout, proc.stdout + proc.stderr
    serious = [
        m
        for m in inspect_nwbfile(nwbfile_path=str(path))
        if m.importance in (Importance.CRITICAL, Importance.BEST_PRACTICE_VIOLATION)
    ]
    assert serious == [], [(m.check_function_name, m.object_name, m.message) for m in serious]
