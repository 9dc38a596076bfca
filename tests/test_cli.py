"""The command line: help everywhere, exit codes, one-line errors."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from nwb_subspace.cli.main import main

COMMANDS = ["demo", "simulate", "run", "inspect", "report"]


@pytest.mark.parametrize("command", COMMANDS)
def test_help_for_every_command(command, capsys):
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert f"nwb-subspace {command}" in out and "--help" in out


def test_top_level_help_lists_commands():
    proc = subprocess.run(
        [sys.executable, "-m", "nwb_subspace.cli.main", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    for command in COMMANDS:
        assert command in proc.stdout


def _one_line_error(capsys, argv, pattern):
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and err.startswith("nwb-subspace: error:"), err
    assert pattern in err
    return err


def test_bad_input_exits_2_with_one_line(tmp_path, capsys):
    err = _one_line_error(capsys, ["inspect", str(tmp_path / "nope.nwb")], "no such file")
    assert "nope.nwb" in err
    _one_line_error(capsys, ["run", str(tmp_path / "nope.nwb")], "no such file")
    _one_line_error(
        capsys, ["simulate", str(tmp_path / "x.nwb"), "--preset", "huge"], "unknown preset 'huge'"
    )
    bad_toml = tmp_path / "bad.toml"
    bad_toml.write_text("[training]\nlearning_rate = 1\n")
    target = tmp_path / "t.nwb"
    target.write_bytes(b"")
    _one_line_error(
        capsys,
        ["run", str(target), "--config", str(bad_toml)],
        "unknown keys ['learning_rate'] in [training]",
    )
    not_nwb = tmp_path / "notes.nwb"
    not_nwb.write_text("hello")
    _one_line_error(capsys, ["inspect", str(not_nwb)], "is not an HDF5/NWB file")
    _one_line_error(capsys, ["run", str(not_nwb)], "is not an HDF5/NWB file")


def test_simulate_and_inspect(tmp_path, capsys):
    out = tmp_path / "site.nwb"
    assert main(["simulate", str(out), "--preset", "tiny", "--seed", "2"]) == 0
    printed = capsys.readouterr().out
    assert str(out) in printed and out.exists()
    assert out.with_suffix(".truth.npz").exists()
    _one_line_error(capsys, ["simulate", str(out)], "exists")
    assert main(["inspect", str(out)]) == 0
    text = capsys.readouterr().out
    assert "units: 8" in text and "sound_id" in text
    assert "everything the analysis needs is present" in text


# ---------------------------------------------------------------- trials table by name


def _write_presentations_file(path, fs: float = 32000.0):
    """A session whose presentations sit in an interval table named "presentations" (no
    trials table): 6 sounds x 4 repeats of 0.4 s, so every sound is repeated."""
    from datetime import datetime

    from dateutil.tz import tzutc
    from pynwb import NWBHDF5IO, NWBFile, TimeSeries
    from pynwb.epoch import TimeIntervals

    rng = np.random.default_rng(0)
    ids = [f"s{i}" for i in range(6)] * 4
    ids = [ids[i] for i in rng.permutation(len(ids))]
    starts = 0.2 + 0.6 * np.arange(len(ids))
    duration = float(starts[-1] + 1.0)
    nwb = NWBFile(
        session_description="Presentations in a named interval table.",
        identifier="presentations-table",
        session_start_time=datetime(2026, 1, 1, tzinfo=tzutc()),
    )
    wave = (0.1 * rng.standard_normal(int(duration * fs))).astype(np.float32)
    nwb.add_stimulus(TimeSeries(name="sound", data=wave, unit="Pa", rate=fs, starting_time=0.0))
    table = TimeIntervals(name="presentations", description="Sound presentations.")
    table.add_column("sound_id", "The sound presented.")
    for s, t in zip(ids, starts, strict=True):
        table.add_interval(start_time=float(t), stop_time=float(t + 0.4), sound_id=s)
    nwb.add_time_intervals(table)
    for u in range(3):
        nwb.add_unit(spike_times=np.sort(rng.uniform(0.0, duration, 200 * (u + 1))))
    with NWBHDF5IO(str(path), "w") as io:
        io.write(nwb)
    return path


@pytest.fixture
def loaded_sessions(monkeypatch):
    """Replace the fitting by loading only: ``run`` loads the session as the pipeline would
    (``pipeline.load_session`` with the effective config) and records it."""
    from types import SimpleNamespace

    from nwb_subspace import pipeline

    seen = []

    def load_only(path, config, **kwargs):
        session = pipeline.load_session(path, config)
        seen.append(session)
        half = np.full(session.n_units, 0.5)
        cnn = SimpleNamespace(
            correlation=half,
            noise_floor=half / 5,
            noise_corrected_correlation=half,
            explained_variance=half**2,
        )
        return SimpleNamespace(scores={"cnn": cnn}, output=path, notes=[session.split.design])

    monkeypatch.setattr(pipeline, "run_session", load_only)
    return seen


def test_trials_table_from_cli_and_toml(tmp_path, capsys, loaded_sessions):
    nwb = _write_presentations_file(tmp_path / "p.nwb")
    spec = "[spectrogram]\nn_channels = 8\nf_min = 300.0\nf_max = 12000.0\n"
    plain = tmp_path / "plain.toml"
    plain.write_text(spec)
    # without the table's name: no trials table to use, and the message lists what is there
    err = _one_line_error(capsys, ["run", str(nwb), "--config", str(plain)], "no (non-empty)")
    assert "presentations" in err
    assert main(["run", str(nwb), "--config", str(plain), "--trials-table", "presentations"]) == 0
    assert "note: all-repeated" in capsys.readouterr().out
    named = tmp_path / "named.toml"
    named.write_text(f'[session]\ntrials_table = "presentations"\n{spec}')
    assert main(["run", str(nwb), "--config", str(named)]) == 0
    wrong = tmp_path / "wrong.toml"
    wrong.write_text(f'[session]\ntrials_table = "nope"\n{spec}')
    _one_line_error(capsys, ["run", str(nwb), "--config", str(wrong)], "no interval table named")
    # the command-line option overrides the config's [session] trials_table
    argv = ["run", str(nwb), "--config", str(wrong), "--trials-table", "presentations"]
    assert main(argv) == 0
    assert len(loaded_sessions) == 3
    for session in loaded_sessions:
        assert session.trials.table == "presentations" and len(session.trials) == 24
        assert session.info["trials_table"] == "presentations"
        assert session.info["design"] == "all-repeated" and session.info["has_noise_ceiling"]
        assert len(session.split.validation_sounds) == 1  # max(1, round(0.2 * 6))
    _one_line_error(
        capsys, ["run", str(nwb), "--config", str(plain), "--trials-table", ""], "trials_table"
    )
