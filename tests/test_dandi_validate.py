"""`dandi validate` accepts an output written next to its source in a dandiset layout.

Needs the ``dandi`` client's command line, which is not a dependency of nwb-subspace (it pins
its own pynwb/hdmf): install it in a separate venv and point ``NWB_SUBSPACE_DANDI`` at its
``dandi`` executable (``python -m venv /tmp/venv-dandi && /tmp/venv-dandi/bin/pip install
dandi``; ``NWB_SUBSPACE_DANDI=/tmp/venv-dandi/bin/dandi pytest tests/test_dandi_validate.py``),
or have ``dandi`` on PATH. Skipped otherwise. ``dandi validate`` works offline: it checks the
layout and names (``DANDI.NON_DANDI_FILENAME`` ...), validates each file with pynwb and runs
nwbinspector's DANDI configuration down to best-practice violations.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from nwb_subspace.config import AnalysisConfig, SiteSettings, SubspaceSettings
from nwb_subspace.models.training import TrainingConfig

pytestmark = pytest.mark.slow

QUICK = AnalysisConfig(
    training=TrainingConfig(
        n_initializations=1, max_epochs_stage1=2, max_epochs_stage2=1, patience=2
    ),
    subspace=SubspaceSettings(n_components=3, min_noise_corrected_r=-1.0),
    sites=SiteSettings(n_null=5, n_shifts=10),
    run_name="dandi",
)
DANDISET_YAML = """\
identifier: DANDI:000000
name: nwb-subspace dandi validate check
description: A simulated session and the nwb-subspace results written next to it.
"""


def dandi_executable() -> str | None:
    """The ``dandi`` command: ``NWB_SUBSPACE_DANDI`` if set, else ``dandi`` on PATH."""
    given = os.environ.get("NWB_SUBSPACE_DANDI")
    if given:
        return given if Path(given).is_file() and os.access(given, os.X_OK) else None
    return shutil.which("dandi")


def dandi_validate(exe: str, folder: Path, state: Path) -> tuple[int, list[dict]]:
    """Run ``dandi validate`` on ``folder``: (exit code, every issue down to HINT)."""
    env = {**os.environ, "XDG_STATE_HOME": str(state), "XDG_CACHE_HOME": str(state)}
    run = subprocess.run(
        [exe, "validate", "--min-severity", "HINT", "-f", "json_lines", str(folder)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    issues = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    if run.returncode != 0 and not issues:
        raise AssertionError(f"dandi validate failed without issues: {run.stderr[-2000:]}")
    return run.returncode, issues


def test_dandi_validate_accepts_the_output_beside_its_source(tmp_path):
    exe = dandi_executable()
    if exe is None:
        pytest.skip(
            "no dandi executable: set NWB_SUBSPACE_DANDI to one (a separate venv with "
            "`pip install dandi`) or put dandi on PATH"
        )
    from nwb_subspace.pipeline import run_session
    from nwb_subspace.simulate import simulate_session

    dandiset = tmp_path / "000000"
    subject = dandiset / "sub-01"
    subject.mkdir(parents=True)
    (dandiset / "dandiset.yaml").write_text(DANDISET_YAML)
    source, truth = simulate_session(subject / "sub-01_ses-1_ecephys.nwb", preset="tiny", seed=0)
    shutil.move(truth, tmp_path / Path(truth).name)  # the ground truth is no dandiset asset
    source.chmod(0o444)  # a read-only source: the results go to a new file beside it
    try:
        result = run_session(source, QUICK)
    finally:
        source.chmod(0o644)
    assert result.output == subject / "sub-01_ses-1_desc-subspace_ecephys.nwb"

    code, issues = dandi_validate(exe, dandiset, tmp_path / "state")
    for issue in issues:  # shown with -s / in the log: what dandi says beyond errors
        print(f"{issue['severity']} {issue['id']} {issue.get('path')}: {issue.get('message')}")
    errors = [i for i in issues if i["severity"] in ("ERROR", "CRITICAL")]
    assert not errors, errors
    assert code == 0
