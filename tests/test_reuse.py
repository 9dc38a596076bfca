"""Steps rerun from a stored run (``run_session(..., reuse=RUN, steps=[...])`` and
``nwb-subspace run FILE --reuse RUN --steps ...``): the stored LN and CNN are rebuilt, not
refitted; the later steps equal those of a full run with the same settings; a reuse whose
models depend on other settings is refused before any work."""

from __future__ import annotations

import json
import logging
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from nwb_subspace.cli.main import main
from nwb_subspace.config import AnalysisConfig, SiteSettings, SubspaceSettings
from nwb_subspace.io.writer import list_runs, read_results
from nwb_subspace.models.training import TrainingConfig
from nwb_subspace.pipeline import STEPS, plan_steps, run_session
from nwb_subspace.simulate import simulate_session

QUICK = AnalysisConfig(
    training=TrainingConfig(
        n_initializations=2, max_epochs_stage1=15, max_epochs_stage2=8, patience=5
    ),
    subspace=SubspaceSettings(n_components=6, min_noise_corrected_r=0.0),
    sites=SiteSettings(n_null=50, n_shifts=100),
    run_name="base",
)
#: QUICK with another [subspace] setting: its models are those of QUICK.
CHANGED = replace(
    QUICK,
    subspace=replace(QUICK.subspace, variance_threshold=0.9),
    run_name="full09",
)

QUICK_TOML = """
[training]
n_initializations = 2
max_epochs_stage1 = 15
max_epochs_stage2 = 8
patience = 5

[subspace]
n_components = 6
min_noise_corrected_r = 0.0
variance_threshold = {threshold}

[sites]
n_null = 50
n_shifts = 100
"""


def test_plan_steps():
    assert plan_steps(None) == list(STEPS)
    assert plan_steps(None, "base") == ["subspace", "subspace_model", "sites"]
    assert plan_steps("sites, subspace", "base") == ["subspace", "sites"]
    assert plan_steps(["models", "subspace"]) == ["models", "subspace"]
    with pytest.raises(ValueError, match=r"unknown step\(s\) \['srfs'\]"):
        plan_steps(["subspace", "srfs"], "base")
    with pytest.raises(ValueError, match="drop --reuse to refit"):
        plan_steps(["models", "subspace"], "base")
    with pytest.raises(ValueError, match="pass --reuse RUN_NAME"):
        plan_steps(["subspace"])
    with pytest.raises(ValueError, match="add 'subspace' to the steps"):
        plan_steps(["sites"], "base")


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    """A tiny session with two full runs: ``base`` (QUICK) and ``full09`` (CHANGED)."""
    folder = tmp_path_factory.mktemp("reuse")
    path, _ = simulate_session(folder / "tiny.nwb", preset="tiny", seed=0)
    run_session(path, QUICK)
    run_session(path, CHANGED)
    return path


@pytest.fixture
def no_fitting(monkeypatch):
    """Any optimiser step (or training stage) fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("an optimiser step ran")

    monkeypatch.setattr(torch.optim.Adam, "step", refuse)
    monkeypatch.setattr("nwb_subspace.models.training._run_stage", refuse)


def _model(results, name):
    return next(m for m in results.models if m.name == name)


def _assert_same_subspaces(a, b):
    np.testing.assert_array_equal(a.unit_rows, b.unit_rows)
    np.testing.assert_array_equal(a.dimensionality, b.dimensionality)
    for key in ("components", "explained_variance_ratio", "mean_dstrf", "noise_floor"):
        np.testing.assert_allclose(getattr(a, key), getattr(b, key), rtol=1e-6, atol=1e-9)
    assert a.variance_threshold == b.variance_threshold


@pytest.mark.slow
def test_reuse_fits_nothing_and_equals_a_full_run(stored, no_fitting, caplog):
    config = replace(CHANGED, run_name="reused09")
    with caplog.at_level(logging.INFO, logger="nwb_subspace"):
        result = run_session(stored, config, reuse="base", steps=["subspace", "sites"])
    assert "reusing the LN and CNN of run base: no model is fitted" in caplog.text
    back = read_results(stored, "reused09")
    full = read_results(stored, "full09")
    base = read_results(stored, "base")
    _assert_same_subspaces(back.subspaces[0], full.subspaces[0])
    np.testing.assert_allclose(back.srfs[0].response_map, full.srfs[0].response_map, rtol=1e-6)
    # the site step reran on the new subspaces: as in the full run
    assert [s.site for s in back.site_subspaces] == [s.site for s in full.site_subspaces]
    for got, want in zip(back.site_subspaces, full.site_subspaces, strict=True):
        np.testing.assert_allclose(got.components, want.components, rtol=1e-6, atol=1e-9)
    # the models are the stored ones, stored again; no subspace model (its inputs changed)
    assert {m.name for m in back.models} == {"ln", "cnn", "cnn_fit2"}
    for name in ("ln", "cnn", "cnn_fit2"):
        old, new = _model(base, name), _model(back, name)
        for key, value in old.module.state_dict().items():
            torch.testing.assert_close(new.module.state_dict()[key], value, rtol=0, atol=0)
        np.testing.assert_array_equal(new.scores.correlation, old.scores.correlation)
        assert new.training.software_versions == old.training.software_versions
    assert result.ev_fraction is None and result.sites is not None
    assert any("no subspace model" in n and "variance_threshold" in n for n in result.notes)
    prov = back.config["provenance"]
    assert prov["reused_from"] == "base"
    assert prov["steps_run"] == ["subspace", "sites"]
    assert prov["steps_reused"] == ["models"]
    assert prov["steps_not_stored"] == ["subspace_model"]
    assert prov["steps"]["models"]["run"] == "base"
    assert prov["steps"]["subspace"]["parameters"]["subspace"]["variance_threshold"] == 0.9
    for step in ("models", "subspace", "sites"):
        versions = prov["steps"][step]["versions"]
        assert {"nwb-subspace", "torch", "numpy", "pynwb"} <= set(versions)


@pytest.mark.slow
def test_unchanged_steps_are_carried_over(stored, no_fitting):
    """Same settings, only ``subspace`` run: the recomputed subspaces equal the stored ones
    bit for bit, and the subspace model and site results of ``base`` are stored again."""
    result = run_session(stored, replace(QUICK, run_name="again"), reuse="base", steps="subspace")
    back, base = read_results(stored, "again"), read_results(stored, "base")
    _assert_same_subspaces(back.subspaces[0], base.subspaces[0])
    assert {m.name for m in back.models} == {"ln", "cnn", "cnn_fit2", "subspace"}
    np.testing.assert_array_equal(
        _model(back, "subspace").scores.explained_variance,
        _model(base, "subspace").scores.explained_variance,
    )
    assert result.ev_fraction is not None and np.isfinite(result.ev_fraction).any()
    assert [s.site for s in back.site_subspaces] == [s.site for s in base.site_subspaces]
    pd.testing.assert_frame_equal(
        pd.DataFrame(back.site_statistics[0].rows), pd.DataFrame(base.site_statistics[0].rows)
    )
    prov = back.config["provenance"]
    assert prov["steps_run"] == ["subspace"]
    assert prov["steps_reused"] == ["models", "subspace_model", "sites"]
    assert prov["steps"]["sites"]["run"] == "base"


@pytest.mark.slow
def test_cli_reuse(stored, no_fitting, tmp_path, capsys):
    toml = tmp_path / "changed.toml"
    toml.write_text(QUICK_TOML.format(threshold=0.9))
    argv = ["run", str(stored), "--config", str(toml), "--reuse", "base"]
    code = main([*argv, "--steps", "subspace,sites", "--run-name", "cli09"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "processing/misc/cli09" in out and "no subspace model" in out
    back = read_results(stored, "cli09")
    assert back.config["provenance"]["reused_from"] == "base"
    _assert_same_subspaces(back.subspaces[0], read_results(stored, "full09").subspaces[0])


def _refused(capsys, argv, *patterns):
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("nwb-subspace: error:"), err
    for pattern in patterns:
        assert pattern in err, err
    return err


@pytest.mark.slow
def test_bad_reuse_is_refused_before_any_work(stored, tmp_path, capsys, monkeypatch):
    def no_work(*args, **kwargs):
        raise AssertionError("the session was read")

    monkeypatch.setattr("nwb_subspace.pipeline.load_session", no_work)
    runs = list_runs(stored)
    toml = tmp_path / "quick.toml"
    toml.write_text(QUICK_TOML.format(threshold=0.95))
    run = ["run", str(stored), "--config", str(toml), "--run-name", "new"]
    _refused(capsys, [*run, "--reuse", "nope"], "no run named 'nope'", "--reuse")
    _refused(capsys, [*run, "--reuse", "base", "--steps", "subspace,srf"], "unknown step")
    _refused(capsys, [*run, "--reuse", "base", "--steps", "models"], "drop --reuse")
    _refused(capsys, [*run, "--reuse", "base", "--seed", "3"], "seed (stored 0, now 3)")
    longer = tmp_path / "longer.toml"
    longer.write_text(QUICK_TOML.format(threshold=0.95).replace("= 15", "= 20"))
    err = _refused(
        capsys,
        ["run", str(stored), "--config", str(longer), "--run-name", "new", "--reuse", "base"],
        "training.max_epochs_stage1 (stored 15, now 20)",
        "drop --reuse to refit",
    )
    assert "subspace" not in err.split("differ:")[1].split(";")[0]
    same = ["run", str(stored), "--config", str(toml), "--reuse", "base", "--run-name", "base"]
    _refused(capsys, same, "needs a name other than 'base'", "--run-name")
    assert list_runs(stored) == runs


def test_settings_a_stored_run_predates_count_as_their_legacy_value():
    """A run stored before a setting existed is compared with how it behaved then: a new
    check with the old behaviour as default does not block a reuse; a new default that
    changes the data (the level-free spectrogram) does."""
    from nwb_subspace.pipeline import settings_differences

    config = AnalysisConfig()
    stored = json.loads(json.dumps(config.to_dict()))
    del stored["session"]["overlapping_trials"]
    assert settings_differences(stored, config, ["session"]) == []
    del stored["spectrogram"]["level"]
    differ = settings_differences(stored, config, ["spectrogram"])
    assert differ == ["spectrogram.level (stored 'none', now 'rms')"]


def test_stacked_or_separate_fits_are_reused_either_way():
    """``[training] stacked`` changes how the fits are computed, not the recipe: a run
    stored with either setting (or before the setting existed) is reused; a real training
    difference still blocks it."""
    from dataclasses import replace

    from nwb_subspace.pipeline import settings_differences

    config = AnalysisConfig()
    for stacked in (True, False):
        now = replace(config, training=replace(config.training, stacked=stacked))
        stored = json.loads(json.dumps(config.to_dict()))
        stored["training"]["stacked"] = not stacked
        assert settings_differences(stored, now, ["training"]) == []
        del stored["training"]["stacked"]
        assert settings_differences(stored, now, ["training"]) == []
        stored["training"]["l2"] = 1.0
        assert settings_differences(stored, now, ["training"])[0].startswith("training.l2")
