"""The command line: help everywhere, exit codes, one-line errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

from nwb_subspace.cli import main

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
        [sys.executable, "-m", "nwb_subspace.cli", "--help"],
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
