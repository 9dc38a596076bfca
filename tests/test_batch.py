"""Batch runs on a 2-worker Dask LocalCluster: results, a reported failure, resuming."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import file_sha256

from nwb_subspace.batch import (
    SUMMARY_COLUMNS,
    SUMMARY_FILE,
    expand_sources,
    run_batch,
    session_output,
    source_key,
)
from nwb_subspace.cli.batch import add_batch_parser, run_batch_command
from nwb_subspace.config import AnalysisConfig, SiteSettings, SubspaceSettings
from nwb_subspace.io.writer import list_runs
from nwb_subspace.models.training import TrainingConfig

QUICK = AnalysisConfig(
    models=("cnn",),
    training=TrainingConfig(
        n_initializations=1, max_epochs_stage1=2, max_epochs_stage2=1, patience=2
    ),
    subspace=SubspaceSettings(n_components=3, min_noise_corrected_r=-1.0),
    sites=SiteSettings(enabled=False),
    run_name="batch",
)


@pytest.fixture(scope="module")
def sessions(tmp_path_factory) -> list[Path]:
    """Two tiny simulated sessions and a truncated copy of one of them."""
    from nwb_subspace.simulate import simulate_session

    folder = tmp_path_factory.mktemp("batch_sources")
    good = [simulate_session(folder / f"s{i}.nwb", preset="tiny", seed=i)[0] for i in (0, 1)]
    broken = folder / "broken.nwb"
    broken.write_bytes(good[0].read_bytes()[:200_000])
    return [good[0], broken, good[1]]


def test_sources_expand_from_globs_folders_and_urls(tmp_path):
    for name in ("b.nwb", "a.nwb", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    found = expand_sources([str(tmp_path / "*.nwb"), tmp_path, "https://host/x/c.nwb"])
    assert [n for _, n in found] == ["a.nwb", "b.nwb", "c.nwb"]  # duplicates dropped
    with pytest.raises(ValueError, match="matches no file"):
        expand_sources([str(tmp_path / "*.h5")])
    with pytest.raises(ValueError, match="no sources"):
        expand_sources([])
    if importlib.util.find_spec("dandi") is None:  # a dandiset needs the dandi client
        with pytest.raises(ImportError, match="pip install dandi"):
            expand_sources(["DANDI:000123"])
    with pytest.raises(ValueError, match="n_workers"):
        run_batch([tmp_path / "a.nwb"], tmp_path / "out", QUICK, n_workers=0)


@pytest.mark.slow
def test_batch_reports_failure_and_resumes(sessions, tmp_path):
    outdir = tmp_path / "out"
    table = run_batch(sessions, outdir, QUICK, n_workers=2)
    assert list(table.columns) == SUMMARY_COLUMNS
    assert table["status"].tolist() == ["ok", "failed", "ok"]
    failed = table.iloc[1]
    assert "broken.nwb" in failed["source"] and failed["error"]
    assert "\n" not in failed["error"] and failed["output"] == ""
    ok = table[table["status"] == "ok"]
    assert np.isfinite(ok["median_cnn_score"]).all() and (ok["seconds"] > 0).all()
    outputs = [Path(p) for p in ok["output"]]
    expected = sorted(session_output(str(s.resolve()), s.name, outdir).name for s in sessions[::2])
    assert sorted(p.name for p in outdir.glob("*.nwb")) == expected
    assert all(list_runs(p) == ["batch"] for p in outputs)
    saved = pd.read_csv(outdir / SUMMARY_FILE)
    assert saved["status"].tolist() == ["ok", "failed", "ok"]

    before = {p: (p.stat().st_mtime_ns, file_sha256(p)) for p in outputs}
    # The CLI on the same outdir: the two finished sessions are skipped, the broken one
    # fails again; exit code 1 because one session failed.
    args = _parse(
        [*map(str, sessions), "--outdir", str(outdir), "--workers", "2", "--run-name", "batch"]
    )
    assert run_batch_command(args, config=QUICK) == 1
    again = pd.read_csv(outdir / SUMMARY_FILE)
    assert again["status"].tolist() == ["skipped", "failed", "skipped"]
    skipped = again[again["status"] == "skipped"]["median_cnn_score"].to_numpy()
    np.testing.assert_allclose(skipped, ok["median_cnn_score"].to_numpy(), rtol=1e-6)
    assert {p: (p.stat().st_mtime_ns, file_sha256(p)) for p in outputs} == before


def _parse(argv: list[str]):
    import argparse

    parser = argparse.ArgumentParser()
    add_batch_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["batch", *argv])


def test_cli_batch_bad_input(tmp_path, capsys):
    args = _parse([str(tmp_path / "*.nwb"), "--outdir", str(tmp_path / "o")])
    assert run_batch_command(args) == 2
    err = capsys.readouterr().err
    assert "matches no file" in err and len(err.strip().splitlines()) == 1


def test_existing_foreign_output_is_reported_not_overwritten(tmp_path):
    src = tmp_path / "s.nwb"
    src.write_bytes(b"not used")
    outdir = tmp_path / "out"
    outdir.mkdir()
    foreign = session_output(str(src.resolve()), src.name, outdir)
    shutil.copy(src, foreign)
    table = run_batch([src], outdir, QUICK)
    assert table["status"].tolist() == ["failed"]
    assert "exists but holds no run" in table["error"].iloc[0]
    assert foreign.read_bytes() == b"not used"


def test_outputs_are_keyed_by_the_source_not_its_name(tmp_path):
    a, b = tmp_path / "a" / "session.nwb", tmp_path / "b" / "session.nwb"
    out_a, out_b = (session_output(str(p), p.name, tmp_path / "o") for p in (a, b))
    assert out_a != out_b and out_a.parent == out_b.parent == tmp_path / "o"
    assert out_a.name == f"session_desc-subspace{source_key(str(a))}.nwb"
    assert session_output(str(a), a.name, tmp_path / "o") == out_a  # stable: resume finds it
    url = "https://host/x/session.nwb"
    assert session_output(url, "session.nwb", tmp_path / "o") not in (out_a, out_b)
    assert len(source_key(url)) == 8 and int(source_key(url), 16) >= 0


@pytest.mark.slow
def test_resume_never_takes_another_sources_output(sessions, tmp_path):
    """a/session.nwb and b/session.nwb: b is run, not 'skipped' onto a's results."""
    from pynwb import NWBHDF5IO

    a, b = tmp_path / "a" / "session.nwb", tmp_path / "b" / "session.nwb"
    for src, dst in ((sessions[0], a), (sessions[2], b)):
        dst.parent.mkdir()
        shutil.copy(src, dst)
    outdir = tmp_path / "out"
    first = run_batch([a], outdir, QUICK, n_workers=1)
    assert first["status"].tolist() == ["ok"]
    out_a = Path(first["output"].iloc[0])
    before = (out_a.stat().st_mtime_ns, file_sha256(out_a))

    table = run_batch([b, a], outdir, QUICK, n_workers=1)
    assert table["status"].tolist() == ["ok", "skipped"]
    out_b = Path(table["output"].iloc[0])
    assert out_b != out_a and Path(table["output"].iloc[1]) == out_a
    assert (out_a.stat().st_mtime_ns, file_sha256(out_a)) == before
    for src, out in ((a, out_a), (b, out_b)):  # each output holds its own source's data
        with NWBHDF5IO(str(src), "r") as io_src, NWBHDF5IO(str(out), "r") as io_out:
            assert io_out.read().identifier == io_src.read().identifier
        assert list_runs(out) == ["batch"]
    saved = pd.read_csv(outdir / SUMMARY_FILE)
    assert saved["status"].tolist() == ["ok", "skipped"]
    assert saved["output"].tolist() == [str(out_b), str(out_a)]
    assert not [p for p in outdir.iterdir() if p.name.endswith(".tmp")]


def test_a_slow_dask_shutdown_does_not_lose_the_batch(caplog):
    """dask's close can time out on a loaded machine after every session is done; the batch
    then logs it instead of raising (it failed a whole batch call once, under load)."""
    from nwb_subspace.batch import _shut_down

    class SlowToClose:
        closed = False

        def close(self):
            SlowToClose.closed = True
            raise TimeoutError

    with caplog.at_level("WARNING", logger="nwb_subspace"):
        _shut_down(SlowToClose(), SlowToClose())
    assert SlowToClose.closed
    assert "did not close cleanly" in caplog.text
