"""Reading a stored run's tables (never its models) and the population tables of one session.

A hand-made result file pins every column to hand-computed values (no fitting); a run of
the pipeline on the tiny preset (slow) checks that the population tables equal the session's
own CSV tables and stored scores, unit for unit.
"""

from __future__ import annotations

import tracemalloc
from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from nwb_subspace.io.stored_run import StoredRunError, l34_boundary, read_stored_run
from nwb_subspace.io.writer import write_results
from nwb_subspace.population.columns import SESSION_COLUMNS, SITE_COLUMNS, UNIT_COLUMNS
from nwb_subspace.population.tables import (
    session_row,
    settings_key,
    site_rows,
    unit_bases,
    unit_rows,
)
from nwb_subspace.results import (
    FittedModel,
    ResultSet,
    SiteStatistics,
    SiteSubspaceResult,
    SubspaceRFs,
    TuningSubspaces,
    UnitColumn,
    UnitScores,
)
from nwb_subspace.site.subspace import (
    LOCALITY_STATISTIC,
    SiteSubspaceAnalysis,
    site_pc_similarity,
    unit_basis,
)
from nwb_subspace.subspace.srf import srf_shape_classes
from nwb_subspace.testing import write_mock_nwbfile

F = 4
CONFIG = {
    "layers": {"l34_rel_y": 800},
    "sites": {"unit_variance_threshold": 0.85, "max_unit_components": 20, "group_by": None},
    "spectrogram": {"bin_s": 0.01, "n_channels": F},
}


# ------------------------------------------------------------------ the per-unit basis rule


def test_unit_basis_counts_pcs_up_to_the_threshold():
    comps = np.eye(6)[:4].reshape(4, 2, 3)  # 4 orthonormal PCs of 6 pixels, shaped (F, D)
    evr = [0.6, 0.3, 0.07, 0.03]
    assert unit_basis(comps, evr, 0.85, 20).shape == (6, 2)  # 0.6 + 0.3 reaches 0.85
    assert unit_basis(comps, evr, 0.9, 20).shape == (6, 2)  # exactly reaching counts
    assert unit_basis(comps, evr, 0.95, 20).shape == (6, 3)
    assert unit_basis(comps, evr, 1.0, 2).shape == (6, 2)  # capped by max_components
    assert unit_basis(comps, [0.5, np.nan, 0.4, 0.1], 0.85, 20).shape == (6, 3)  # NaN is 0
    np.testing.assert_array_equal(unit_basis(comps, evr, 0.85, 20), np.eye(6)[:, :2])
    with pytest.raises(ValueError, match="one ratio per PC"):
        unit_basis(comps, evr[:3], 0.85, 20)
    with pytest.raises(ValueError, match="threshold must be in"):
        unit_basis(comps, evr, 0.0, 20)
    with pytest.raises(ValueError, match="max_components must be an int"):
        unit_basis(comps, evr, 0.85, 0)


def test_site_analysis_uses_the_unit_basis_rule():
    rng = np.random.default_rng(3)
    f, d, n = 3, 4, 4
    a = rng.standard_normal((n, f * d, 3))
    cov = np.einsum("upk,uqk->upq", a, a) + 1e-3 * np.eye(f * d)
    an = SiteSubspaceAnalysis(n_null=5, unit_variance_threshold=0.7, max_unit_components=5)
    an.fit((np.zeros((n, f, d)), cov), site="s", frequencies=np.arange(1.0, f + 1), bin_s=0.01)
    for u in range(n):  # the eigen path: the unit's own PCs of its covariance
        ev, vecs = np.linalg.eigh(cov[u])
        ev, vecs = ev[::-1], vecs[:, ::-1]
        expected = unit_basis(vecs.T[:5], ev[:5] / np.trace(cov[u]), 0.7, 5)
        assert an.bases_[u].shape == expected.shape == (f * d, an.unit_dimensionality_[u])
        np.testing.assert_allclose(an.bases_[u] @ an.bases_[u].T, expected @ expected.T,
                                   atol=1e-9)  # fmt: skip


# ------------------------------------------------------------------ a hand-made result file


def _model(name: str, rows: list[int], r: list[float], ev: list[float]) -> FittedModel:
    from nwb_subspace.models import build_model

    cfg = {"n_frequencies": F, "n_units": len(rows), "n_channels1": 2, "n_channels2": 2,
           "n_hidden": 3}  # fmt: skip
    n = len(rows)
    scores = UnitScores(np.full(n, 0.1), np.full(n, 0.05), np.array(r), np.array(ev))
    return FittedModel(name=name, module=build_model("cnn", cfg), unit_rows=np.array(rows),
                       bin_size_s=0.01, scores=scores)  # fmt: skip


def _orthonormal(rng, p: int, k: int) -> np.ndarray:
    return np.linalg.qr(rng.standard_normal((p, k)))[0].T


def _hand_results() -> ResultSet:
    """6 units: 0, 1, 3 analysed (sites 'east' = 0, 1 and 'west' = 3); 2 and 4 scored by the
    CNN only; 5 not scored at all."""
    rng = np.random.default_rng(0)
    cnn = _model("cnn", [0, 1, 2, 3, 4], [0.8, 0.7, 0.6, 0.5, 0.4], [0.5, 0.0, -0.1, 0.4, 0.2])
    d = cnn.module.memory
    tuning = TuningSubspaces(
        unit_rows=np.array([0, 1, 3]),
        components=np.stack([_orthonormal(rng, F * d, 3).reshape(3, F, d) for _ in range(3)]),
        explained_variance_ratio=np.array([[0.6, 0.3, 0.1], [0.9, 0.05, 0.05], [0.4, 0.3, 0.2]]),
        dimensionality=np.array([2, 1, 3]), mean_dstrf=np.zeros((3, F, d)),
        n_frames=np.array([100, 90, 80]), noise_floor=np.zeros((3, 3)),
        frequencies=np.geomspace(200, 4000, F), lags_s=np.arange(d) * 0.01,
        dimensionality_reference=np.array([3, 2, 3]), n_outlier_frames=np.array([1, 2, 3]),
    )  # fmt: skip

    def site(name, rows, frac, sim, k_ref):
        n = len(rows)
        return SiteSubspaceResult(
            site=name, components=_orthonormal(rng, F * d, 2).reshape(2, F, d),
            explained_variance_ratio=np.array([0.6, 0.3]), dimensionality=2,
            frequencies=tuning.frequencies, lags_s=tuning.lags_s, unit_rows=np.array(rows),
            variance_fraction=np.array(frac), null_mean=np.full(n, 0.1), p_value=np.full(n, 0.01),
            variance_fraction_loo=np.array(frac) - 0.1, site_pc_similarity=np.array(sim),
            site_similarity_loo=np.array(frac) - 0.2, dimensionality_reference=k_ref,
            components_reference=_orthonormal(rng, F * d, 3).reshape(3, F, d),
            explained_variance_ratio_reference=np.array([0.5, 0.3, 0.1]),
        )  # fmt: skip

    east = site("east", [0, 1], [0.7, 0.8], [[0.9, 0.5, 0.1], [0.8, 0.2, 0.3]], 2)
    west = site("west", [3], [0.6], [[0.6, 0.3, 0.9]], 1)
    m = 3  # own SRFs of units 0, 1, 3: a model and a measured row each
    srfs = SubspaceRFs(
        unit_rows=np.repeat([0, 1, 3], 2), dimensions=np.tile([[0, 1]], (2 * m, 1)),
        response_source=np.array(["model", "measured"] * m),
        response_map=rng.random((2 * m, 4, 4)), occupancy=np.full((2 * m, 4, 4), 20),
        edges_x=np.tile(np.linspace(-1, 1, 5), (2 * m, 1)),
        edges_y=np.tile(np.linspace(-1, 1, 5), (2 * m, 1)),
        breadth=np.array([1, 2, 3, 4, 5, 6]), shape_asymmetry=np.zeros((2 * m, 2)),
        breadth_fraction=np.array([0.9, 0.1, 0.9, 0.2, 0.9, 0.3]),
        curve_asymmetry=np.array([0.0, 0.5, 0.0, -0.6, 0.0, 0.1]),
        shape_p_value=np.array([np.nan, 0.01, np.nan, 0.02, np.nan, 0.6]),
    )  # fmt: skip

    def stat(where, name, value, null, p):
        return {"site": where, "statistic": name, "value": value, "null_mean": null,
                "p_value": p, "effect_size": 1.0, "n": 3, "test": "t", "verdict": "v"}  # fmt: skip

    stats = SiteStatistics(rows=[
        stat("east", LOCALITY_STATISTIC, 0.6, 0.3, 0.01),
        stat("all sites", LOCALITY_STATISTIC, 0.5, 0.35, 0.02),
        stat("east", "tiling_overlap_neighbours", 0.2, 0.1, 0.04),
        stat("west", "tiling_overlap_mean", 0.3, 0.25, 0.5),
    ])  # fmt: skip
    columns = [
        UnitColumn("cell_type", np.array(["narrow", "broad", "unknown", "broad", "narrow", ""]),
                   "Spike-width class."),
        UnitColumn("layer", np.array(["13", "44", "56", "44", "13", "56"]), "Layer group."),
        UnitColumn("depth_um", np.array([100.0, 200.0, np.nan, 400.0, 500.0, 900.0]),
                   "Depth along the probe (um from the tip)."),
    ]  # fmt: skip
    return ResultSet(
        models=[
            cnn,
            _model("cnn_fit2", [0, 1, 2, 3, 4], [9.0] * 5, [9.0] * 5),  # an extra fit: ignored
            _model("ln", [0, 1, 2, 3, 4], [0.3, 0.2, 0.1, 0.0, -0.1], [0.1, 0.1, 0.1, 0.1, 0.1]),
            _model("subspace", [0, 1, 3], [0.75, 0.6, 0.45], [0.45, 0.1, 0.2]),
        ],
        subspaces=[tuning], srfs=[srfs], site_subspaces=[east, west],
        site_statistics=[stats], unit_columns=columns, config=CONFIG,
    )  # fmt: skip


@pytest.fixture(scope="module")
def hand_file(tmp_path_factory) -> Path:
    path = write_mock_nwbfile(tmp_path_factory.mktemp("stored") / "sess_a.nwb", n_units=6)
    write_results(path, _hand_results(), "hand")
    return path


@pytest.fixture(scope="module")
def hand_tables(hand_file):
    run = read_stored_run(hand_file)
    units = unit_rows(run)
    sites = site_rows(run, units)
    return run, units, sites, session_row(run, units, sites)


def test_stored_run_holds_the_runs_tables(hand_file, hand_tables):
    run = hand_tables[0]
    assert (run.session, run.run, run.file) == ("sess_a", "hand", str(hand_file))
    assert run.config["layers"] == {"l34_rel_y": 800} and run.created and run.software_version
    assert sorted(run.scores) == ["cnn", "ln", "subspace"]  # cnn_fit2 left out
    assert run.tuning is not None and run.tuning.unit_rows.tolist() == [0, 1, 3]
    assert [s.site for s in run.site_subspaces] == ["east", "west"] and len(run.srfs) == 1
    assert len(run.statistics) == 4 and run.n_lags == run.tuning.lags_s.size
    # site: the stored site subspace's, else the electrode group
    assert run.units["site"].tolist() == ["east", "east", "shank0", "west", "shank0", "shank0"]
    assert "electrode" in run.label_source


def test_unit_rows_follow_the_definitions(hand_tables):
    _, units, _, _ = hand_tables
    assert tuple(units.columns) == UNIT_COLUMNS and len(units) == 6
    u = units.set_index("unit_row")
    assert u["status"].tolist() == ["analysed", "analysed", "scored", "analysed", "scored",
                                    "not analysed"]  # fmt: skip
    assert u["site_id"][3] == "sess_a/west" and u["session"].unique().tolist() == ["sess_a"]
    assert u["cell_type"].tolist() == ["narrow", "broad", "unknown", "broad", "narrow", "unknown"]
    np.testing.assert_array_equal(u["depth_below_l34_um"], [700, 600, np.nan, 400, 300, -100])
    np.testing.assert_array_equal(u["r_cnn"], [0.8, 0.7, 0.6, 0.5, 0.4, np.nan])
    np.testing.assert_array_equal(u["ev_cnn"], [0.5, 0.0, -0.1, 0.4, 0.2, np.nan])
    np.testing.assert_array_equal(u["r_ln"], [0.3, 0.2, 0.1, 0.0, -0.1, np.nan])
    np.testing.assert_array_equal(u["r_subspace"], [0.75, 0.6, np.nan, 0.45, np.nan, np.nan])
    # EV_subspace / EV_cnn, NaN where the CNN explains nothing or there is no subspace model
    np.testing.assert_allclose(u["ev_fraction"], [0.9, np.nan, np.nan, 0.5, np.nan, np.nan])
    np.testing.assert_array_equal(u["dimensionality"], [2, 1, np.nan, 3, np.nan, np.nan])
    np.testing.assert_array_equal(u["dimensionality_reference"], [3, 2, np.nan, 3, np.nan, np.nan])
    np.testing.assert_array_equal(u["n_outlier_frames"], [1, 2, np.nan, 3, np.nan, np.nan])
    np.testing.assert_allclose(u["variance_fraction"], [0.7, 0.8, np.nan, 0.6, np.nan, np.nan])
    np.testing.assert_allclose(u["site_similarity_loo"], [0.5, 0.6, np.nan, 0.4, np.nan, np.nan])
    # sum of the top K_ref per-PC similarities / min(k_u, K_ref); k_u = 2, 1, 3 (0.85 rule)
    np.testing.assert_allclose(
        u["site_pc_similarity"], [1.4 / 2, 1.0 / 1, np.nan, 0.6 / 1, np.nan, np.nan]
    )
    # breadth and shape: the measured rows (they carry the noise-aware breadth)
    np.testing.assert_allclose(u["breadth"], [0.1, 0.2, np.nan, 0.3, np.nan, np.nan])
    np.testing.assert_array_equal(u["breadth_bins"], [2, 4, np.nan, 6, np.nan, np.nan])
    np.testing.assert_allclose(u["shape_index"], [0.5, -0.6, np.nan, 0.1, np.nan, np.nan])
    np.testing.assert_allclose(u["shape_p"], [0.01, 0.02, np.nan, 0.6, np.nan, np.nan])
    assert u["breadth_measure"].tolist() == ["fraction"] * 2 + [""] + ["fraction"] + [""] * 2
    classes = srf_shape_classes(hand_tables[0].srfs[0], "measured")
    assert u["shape_class"].tolist() == [classes[0], classes[1], "", classes[3], "", ""]


def test_site_and_session_rows(hand_tables):
    run, units, sites, session = hand_tables
    assert tuple(sites.columns) == SITE_COLUMNS and tuple(session) == SESSION_COLUMNS
    s = sites.set_index("site")
    assert s.index.tolist() == ["east", "shank0", "west"]
    assert s["n_units"].tolist() == [2, 3, 1] and s["n_analysed"].tolist() == [2, 0, 1]
    np.testing.assert_allclose(s["r_cnn_mean"], [0.75, 0.5, 0.5])  # unit 5 has no score
    np.testing.assert_allclose(s["ev_subspace_mean"], [0.275, np.nan, 0.2])
    np.testing.assert_allclose(s["subspace_fraction"], [0.9, np.nan, 0.5])  # median of finite
    np.testing.assert_allclose(s["dimensionality_median"], [1.5, np.nan, 3])
    np.testing.assert_allclose(s["site_dimensionality_reference"], [2, np.nan, 1])
    np.testing.assert_allclose(s["variance_fraction_mean"], [0.75, np.nan, 0.6])
    east, west = s.loc["east"], s.loc["west"]
    assert (east["same_site_similarity"], east["same_site_similarity_null"],
            east["same_site_similarity_p"]) == (0.6, 0.3, 0.01)  # fmt: skip
    assert (east["tiling_overlap_neighbours"], east["tiling_overlap_neighbours_p"]) == (0.2, 0.04)
    assert np.isnan(west["same_site_similarity"]) and west["tiling_overlap_mean_null"] == 0.25
    assert session["n_units"] == 6 and session["n_sites"] == 3 and session["n_analysed"] == 3
    assert session["r_cnn_median"] == pytest.approx(0.6)
    assert session["settings_key"] == settings_key(run)[0]


def test_unit_bases_are_the_site_steps(hand_tables):
    run = hand_tables[0]
    rows, bases = unit_bases(run)
    assert rows.tolist() == [0, 1, 3] and [b.shape[1] for b in bases] == [2, 1, 3]
    for i, b in enumerate(bases):
        assert b.dtype == np.float32 and b.flags.c_contiguous
        np.testing.assert_allclose(b.T @ b, np.eye(b.shape[1]), atol=1e-5)
        expected = run.tuning.components[i].reshape(3, -1)[: b.shape[1]].T
        np.testing.assert_allclose(b, expected, atol=1e-6)
    capped = replace(run, config={**run.config, "sites": {"max_unit_components": 2}})
    assert [b.shape[1] for b in unit_bases(capped)[1]] == [2, 1, 2]  # default threshold 0.85


def test_settings_key_compares_what_matters():
    key, settings = settings_key(CONFIG)
    assert settings["layers"] == {"l34_rel_y": 800.0} and settings["n_lags"] is None
    assert settings["sites.unit_variance_threshold"] == 0.85
    same = {**CONFIG, "layers": {"l34_rel_y": 800.0}, "seed": 7,
            "sites": {**CONFIG["sites"], "n_null": 10, "group_by": "shank"}}  # fmt: skip
    assert settings_key(same)[0] == key  # 800 == 800.0; seeds, nulls and labels do not matter
    other = {**CONFIG, "sites": {**CONFIG["sites"], "unit_variance_threshold": 0.9}}
    assert settings_key(other)[0] != key
    assert settings_key({**CONFIG, "spectrogram": {"bin_s": 0.005, "n_channels": F}})[0] != key
    with pytest.raises(TypeError, match="config must be a dict or a StoredRun"):
        settings_key("x")


def test_l34_boundary_from_each_layer_setting():
    assert l34_boundary({"l34_rel_y": 750}) == 750.0
    bounds = {"BS/1": 1500.0, "L3/4": 700.0, "L4/5": 500.0, "L6/WM": -100.0}
    assert l34_boundary({"boundaries": bounds}) == 700.0
    assert l34_boundary({"layers": {"13": [1000, 650]}}) == 650.0
    assert l34_boundary({"layers": {"deep": [1000, 650]}}) is None
    assert l34_boundary(None) is None and l34_boundary("electrode locations") is None


# ------------------------------------------------------------------ bad input


def test_bad_files_and_runs_raise_a_clear_reason(hand_file, tmp_path):
    with pytest.raises(StoredRunError, match="file not found"):
        read_stored_run(tmp_path / "missing.nwb")
    text = tmp_path / "notes.nwb"
    text.write_text("not an HDF5 file\n")
    with pytest.raises(StoredRunError, match="not a readable HDF5/NWB file"):
        read_stored_run(text)
    plain = tmp_path / "plain.h5"
    with h5py.File(plain, "w") as f:
        f["x"] = 1
    with pytest.raises(StoredRunError, match="not NWB"):
        read_stored_run(plain)
    session = write_mock_nwbfile(tmp_path / "session.nwb")
    with pytest.raises(StoredRunError, match=r"holds no nwb-subspace run \(in processing/misc\)"):
        read_stored_run(session)
    with pytest.raises(StoredRunError, match=r"holds no run named 'other'; its runs: \['hand'\]"):
        read_stored_run(hand_file, "other")
    assert issubclass(StoredRunError, ValueError)


def test_runs_without_tuning_or_damaged_are_refused(tmp_path):
    path = write_mock_nwbfile(tmp_path / "two.nwb", n_units=6)
    full = _hand_results()
    write_results(path, full, "full")
    scores_only = ResultSet(models=full.models[:1], config=CONFIG)
    write_results(path, scores_only, "scores_only")
    with pytest.raises(StoredRunError, match=r"holds 2 runs \['full', 'scores_only'\]; name"):
        read_stored_run(path)
    with pytest.raises(StoredRunError, match="'scores_only' has no tuning subspace table"):
        read_stored_run(path, "scores_only")
    run = read_stored_run(path, "scores_only", require_tuning=False, session="s")
    units = unit_rows(run)
    assert run.tuning is None and run.session == "s" and unit_bases(run)[1] == []
    assert units["status"].tolist() == ["scored"] * 5 + ["not analysed"]
    assert units["ev_fraction"].isna().all() and units["breadth_measure"].tolist() == [""] * 6
    with h5py.File(path, "a") as f:
        del f["processing/misc/full/tuning_subspaces/components"]
    with pytest.raises(StoredRunError, match="run 'full' is damaged"):
        read_stored_run(path, "full")
    read_stored_run(path, "scores_only", require_tuning=False)  # the other run still reads


def test_reading_is_lazy_and_small(hand_file):
    tracemalloc.start()
    read_stored_run(hand_file)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 20e6, peak  # the mock file's weights and sound are never read


def test_a_url_reads_like_the_local_file(hand_file, hand_tables):
    from test_remote import http_server

    with http_server(hand_file.parent) as (base, sent):
        run = read_stored_run(f"{base}/{hand_file.name}")
    assert run.session == "sess_a" and sent[0] > 0
    pd.testing.assert_frame_equal(unit_rows(run), hand_tables[1])


# ------------------------------------------------------------------ a pipeline run


@pytest.fixture(scope="module")
def tiny_stored(tmp_path_factory):
    """The tiny preset through the pipeline (short fits): the result file and its CSVs."""
    from nwb_subspace.config import AnalysisConfig, SiteSettings, SubspaceSettings
    from nwb_subspace.models.training import TrainingConfig
    from nwb_subspace.pipeline import run_session
    from nwb_subspace.simulate import simulate_session

    config = AnalysisConfig(
        training=TrainingConfig(
            n_initializations=1, max_epochs_stage1=10, max_epochs_stage2=5, patience=3
        ),
        subspace=SubspaceSettings(n_components=6, min_noise_corrected_r=0.0),
        sites=SiteSettings(n_null=20, n_shifts=40, n_permutations=50),
        run_name="pop",
    )
    path, _ = simulate_session(tmp_path_factory.mktemp("pop") / "tiny.nwb", preset="tiny", seed=0)
    result = run_session(path, config)
    files = {p.name.rsplit("_", 1)[-1]: p for p in result.summary_files}
    return path, result, files


@pytest.mark.slow
def test_population_tables_equal_the_sessions_own_tables(tiny_stored):
    path, result, files = tiny_stored
    run = read_stored_run(path, "pop")
    units = unit_rows(run)
    csv = pd.read_csv(files["units.csv"])
    assert units["unit_row"].tolist() == csv["unit_row"].tolist()
    for col in ("breadth", "breadth_bins", "shape_index", "shape_p", "depth_um"):
        np.testing.assert_array_equal(units[col].astype(float), csv[col].astype(float), col)
    for col in ("site", "cell_type", "layer", "breadth_measure", "shape_class"):
        assert units[col].tolist() == csv[col].fillna("").astype(str).tolist(), col
    # r / ev are the stored scores tables; ev_fraction is the run's own EV_subspace / EV_cnn
    models = {m.name: m for m in result.results.models}
    for kind in ("ln", "cnn", "subspace"):
        m = models[kind]
        np.testing.assert_array_equal(
            units[f"r_{kind}"].to_numpy()[m.unit_rows], m.scores.noise_corrected_correlation
        )
        np.testing.assert_array_equal(
            units[f"ev_{kind}"].to_numpy()[m.unit_rows], m.scores.explained_variance
        )
    sub_rows = models["subspace"].unit_rows
    np.testing.assert_allclose(units["ev_fraction"].to_numpy()[sub_rows], result.ev_fraction)
    analysed = units["status"] == "analysed"
    assert analysed.sum() == run.tuning.unit_rows.size > 0
    assert units.loc[~analysed, ["dimensionality", "variance_fraction"]].isna().all().all()
    # each unit's basis is the one the site step used: its size and its similarity to the
    # stored reference site PCs
    rows, bases = unit_bases(run)
    k_u = dict(zip(rows.tolist(), [b.shape[1] for b in bases], strict=True))
    in_site = csv[csv["status"] == "analysed"]
    assert len(in_site) > 0
    assert [k_u[r] for r in in_site["unit_row"]] == in_site["dimensionality"].tolist()
    for s in run.site_subspaces:
        mine = [bases[int(np.flatnonzero(rows == r)[0])] for r in s.unit_rows]
        np.testing.assert_allclose(
            site_pc_similarity(s.components_reference, mine), s.site_pc_similarity, atol=1e-4
        )
    sites = site_rows(run, units)
    own = pd.read_csv(files["sites.csv"]).set_index("site")
    for site, row in sites.set_index("site").iterrows():
        assert row["n_units"] == own.loc[site, "n_units"]
        for mine_col, theirs in (("site_dimensionality", "dimensionality"),
                                 ("site_similarity_loo_mean", "site_similarity_loo_mean"),
                                 ("tiling_overlap_mean_p", "tiling_overlap_mean_p"),
                                 ("subspace_fraction", "subspace_fraction")):  # fmt: skip
            if theirs in own.columns:
                np.testing.assert_allclose(row[mine_col], own.loc[site, theirs], rtol=1e-12)
    assert session_row(run, units, sites)["n_units"] == result.session.n_units
