"""Issue 18: ten ``nwb-subspace run`` processes appending to one file at once (different run
names) all store their run and leave a valid file; the same name twice is refused once."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from pynwb import NWBHDF5IO

from nwb_subspace.io.writer import list_runs
from nwb_subspace.simulate import PRESETS, simulate_session

pytestmark = pytest.mark.slow

FAST_TOML = """
models = ["cnn"]
[training]
n_initializations = 1
max_epochs_stage1 = 2
max_epochs_stage2 = 1
patience = 1
[subspace]
min_noise_corrected_r = 1.5
[sites]
enabled = false
"""


def _start(path, config, name):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "nwb_subspace.cli.main", "--quiet", "run", str(path)]
    cmd += ["--config", str(config), "--run-name", name]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_ten_concurrent_runs_all_land(tmp_path):
    cfg = PRESETS["tiny"].replace(n_units=3, estimation_s=16.0, validation_repeats=4)
    path, _ = simulate_session(tmp_path / "tiny.nwb", cfg, seed=0)
    config = tmp_path / "fast.toml"
    config.write_text(FAST_TOML)
    procs = [_start(path, config, f"run{i}") for i in range(10)]
    codes = [p.wait(timeout=600) for p in procs]
    errors = [p.stderr.read().decode() for p in procs]
    assert codes == [0] * 10, errors
    assert sorted(list_runs(path)) == sorted(f"run{i}" for i in range(10))
    with NWBHDF5IO(str(path), "r") as io:
        io.read()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]

    twice = [_start(path, config, "same") for _ in range(2)]
    codes = sorted(p.wait(timeout=600) for p in twice)
    err = "".join(p.stderr.read().decode() for p in twice)
    assert codes == [0, 2] and "already holds results named 'same'" in err
    assert list_runs(path).count("same") == 1
