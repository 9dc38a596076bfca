"""Issue 18, item 9: settings and outputs that cannot work are refused before any work
(no session read, no fit), in one line."""

from __future__ import annotations

import pytest

from nwb_subspace import pipeline
from nwb_subspace.config import AnalysisConfig
from nwb_subspace.io.writer import ResultsExistError, write_results
from nwb_subspace.testing import mock_result_set


@pytest.fixture
def no_work(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the session was read: the check came too late")

    monkeypatch.setattr(pipeline, "load_session", refuse)


def test_existing_output_is_refused_before_any_work(mock_file, tmp_path, no_work):
    out = tmp_path / "out.nwb"
    out.write_bytes(b"")
    with pytest.raises(FileExistsError, match="output .*out.nwb exists"):
        pipeline.run_session(mock_file, AnalysisConfig(), output=out)


def test_existing_run_name_with_output_is_refused_before_any_work(mock_file, tmp_path, no_work):
    write_results(mock_file, mock_result_set(), "taken")
    with pytest.raises(ResultsExistError, match="already holds results named 'taken'"):
        pipeline.run_session(
            mock_file, AnalysisConfig(run_name="taken"), output=tmp_path / "new.nwb"
        )


@pytest.mark.parametrize(
    ("values", "key"),
    [
        ({"run_name": "bad/name"}, "run_name"),
        ({"subspace": {"srf_bins": 0}}, "srf_bins"),
        ({"subspace": {"n_components": 0}}, "n_components"),
        ({"subspace": {"variance_threshold": 2}}, "variance_threshold"),
        ({"spectrogram": {"bin_s": "10ms"}}, "bin_s"),
    ],
)
def test_bad_settings_never_reach_the_file(values, key):
    with pytest.raises(ValueError, match=key):
        AnalysisConfig.from_dict(values)


@pytest.mark.slow
def test_run_overwrite_replaces_a_damaged_run(tmp_path):
    """Issue 18, item 7: a run whose table lost a column cannot be read; ``run --overwrite``
    of that run drops it at the HDF5 level and stores the new one."""
    import h5py

    from nwb_subspace.cli.main import main
    from nwb_subspace.io.writer import DamagedRunError, list_runs
    from nwb_subspace.simulate import PRESETS, simulate_session

    cfg = PRESETS["tiny"].replace(n_units=3, estimation_s=16.0, validation_repeats=4)
    path, _ = simulate_session(tmp_path / "tiny.nwb", cfg, seed=0)
    config = tmp_path / "fast.toml"
    config.write_text(
        'run_name = "r"\nmodels = ["cnn"]\n[training]\nn_initializations = 1\n'
        "max_epochs_stage1 = 2\nmax_epochs_stage2 = 1\npatience = 1\n[subspace]\n"
        "min_noise_corrected_r = 1.5\n[sites]\nenabled = false\n"
    )
    assert main(["run", str(path), "--config", str(config)]) == 0
    with h5py.File(path, "a") as f:
        del f["processing/misc/r/cnn/scores/correlation"]
    with pytest.raises(DamagedRunError):
        list_runs(path)
    assert main(["run", str(path), "--config", str(config), "--overwrite"]) == 0
    assert list_runs(path) == ["r"]
