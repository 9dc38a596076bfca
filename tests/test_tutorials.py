"""The tutorials run as scripts on the tiny preset with short fits and write their outputs
into a temporary folder (never into the repository)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import matplotlib.image as mpimg
import pytest

TUTORIALS = Path(__file__).resolve().parents[1] / "tutorials"

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("tutorials")]


def _run(name: str, outdir: Path) -> str:
    env = {
        **os.environ,
        "NWB_SUBSPACE_TUTORIAL_PRESET": "tiny",
        "NWB_SUBSPACE_TUTORIAL_QUICK": "1",
        "NWB_SUBSPACE_TUTORIAL_OUTDIR": str(outdir),
        "MPLBACKEND": "Agg",
        "OMP_NUM_THREADS": "1",
    }
    proc = subprocess.run(
        [sys.executable, str(TUTORIALS / name)],
        cwd=outdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, f"{name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


@pytest.fixture(scope="module")
def outdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tutorials")


def test_every_tutorial_is_a_gallery_script():
    scripts = sorted(p.name for p in TUTORIALS.glob("plot_*.py"))
    assert scripts == [
        "plot_01_quickstart.py",
        "plot_02_your_own_file.py",
        "plot_03_read_results_with_pynwb.py",
        "plot_04_predict_new_sounds.py",
    ]
    for name in scripts:
        text = (TUTORIALS / name).read_text()
        assert text.startswith('"""\n') and "\n====" in text.split('"""')[1], name
        assert "# %%" in text and "NWB_SUBSPACE_TUTORIAL_OUTDIR" in text, name


def test_quickstart_writes_results_and_report(outdir):
    before = sorted(TUTORIALS.rglob("*"))
    out = _run("plot_01_quickstart.py", outdir)
    assert sorted(TUTORIALS.rglob("*")) == before, "a tutorial wrote into the repository"
    html = outdir / "quickstart" / "report" / "report.html"
    assert html.is_file() and f"report: {html}" in out
    pngs = list((html.parent / "figures").glob("*.png"))
    assert len(pngs) >= 5 and all(p.name in html.read_text() for p in pngs)
    assert "median similarity to the true subspace" in out


def test_read_results_with_pynwb(outdir):
    # Reuses the quick start's file (same output folder); the reading cells import only pynwb.
    text = (TUTORIALS / "plot_03_read_results_with_pynwb.py").read_text()
    reading = text[text.index("# Open the file with pynwb only") :]
    assert "nwb_subspace" not in reading
    out = _run("plot_03_read_results_with_pynwb.py", outdir)
    assert "runs stored: ['quickstart']" in out
    assert "components array:" in out and "noise_corrected_correlation" in out


def test_predict_new_sounds(outdir):
    out = _run("plot_04_predict_new_sounds.py", outdir)
    assert "cnn: predicted rates (300," in out
    img = mpimg.imread(outdir / "predict" / "prediction.png")
    assert img.shape[0] > 100 and img[..., :3].std() > 0
    assert (outdir / "predict" / "predictions.npz").is_file()


def test_your_own_file(outdir):
    out = _run("plot_02_your_own_file.py", outdir)
    assert "a trials column naming the sound" in out  # what inspect reports missing
    assert "validation sounds: ['val_00.wav', 'val_01.wav']" in out
    assert (outdir / "own_file" / "my_session_subspace.nwb").is_file()
