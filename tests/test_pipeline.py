"""One session end to end on the tiny simulated preset (quick recipe): everything written,
readable back, and the source's data untouched."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import dataset_checksums
from pynwb import NWBHDF5IO

from nwb_subspace.config import AnalysisConfig, SubspaceSettings
from nwb_subspace.io.writer import read_results
from nwb_subspace.models.training import TrainingConfig
from nwb_subspace.pipeline import run_session
from nwb_subspace.simulate import simulate_session

pytestmark = pytest.mark.slow

QUICK = AnalysisConfig(
    training=TrainingConfig(
        n_initializations=1, max_epochs_stage1=15, max_epochs_stage2=8, patience=5
    ),
    subspace=SubspaceSettings(n_components=6, min_noise_corrected_r=0.0),
    run_name="quick",
)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pipeline")
    path, _ = simulate_session(folder / "tiny.nwb", preset="tiny", seed=0)
    before = dataset_checksums(path)
    result = run_session(path, QUICK)
    return path, before, result


def test_results_are_appended_and_source_kept(tiny_run):
    path, before, result = tiny_run
    assert result.output == path
    after = dataset_checksums(path)
    assert [k for k in before if after.get(k) != before[k]] == []
    back = read_results(path, "quick")
    assert {"ln", "cnn", "subspace"} == {m.name for m in back.models}
    assert back.spectrograms[0].data.shape == result.session.spectrogram.data.shape
    assert back.config["seed"] == 0 and back.config["split"]["validation_sounds"]
    with NWBHDF5IO(str(path), "r") as io:
        units = io.read().units
        for col in ("trough_to_peak_ms", "cell_type", "depth_um", "layer"):
            assert col in units.colnames


def test_subspaces_and_srfs_are_stored(tiny_run):
    path, _, result = tiny_run
    back = read_results(path, "quick")
    assert result.tuning is not None and back.subspaces
    t = back.subspaces[0]
    assert t.components.shape[1:] == (6, 32, result.estimators["cnn"].model_.memory)
    assert np.all(t.dimensionality >= 1)
    assert back.srfs and set(back.srfs[0].response_source) == {"model", "measured"}
    assert any(m.kind == "subspace" for m in back.models)


def test_rerun_needs_overwrite(tiny_run):
    from nwb_subspace.io.writer import ResultsExistError

    path, _, _ = tiny_run
    with pytest.raises(ResultsExistError, match="overwrite=True"):
        run_session(path, QUICK)
