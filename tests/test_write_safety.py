"""Writes that lose nothing and corrupt nothing: concurrent writers, a full disk, damaged
runs, and writers killed part-way (issue 18, items 1, 2, 7, 8)."""

from __future__ import annotations

import errno
import functools
import hashlib
import logging
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import pynwb
import pytest
from filelock import FileLock

from nwb_subspace.cli.main import main
from nwb_subspace.io import writer
from nwb_subspace.io.writer import (
    DamagedRunError,
    ResultsExistError,
    ResultsLockedError,
    ResultsNoSpaceError,
    check_runs,
    list_runs,
    lock_path,
    read_results,
    write_results,
)
from nwb_subspace.testing import mock_result_set, write_mock_nwbfile

# Forked workers start at once (no re-import of torch and pynwb in each).
FORK = multiprocessing.get_context("fork")


def _sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _temps(folder: Path) -> list[str]:
    return sorted(p.name for p in Path(folder).iterdir() if p.name.endswith(".tmp"))


def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)  # ten forked writers on two cores


def _write_in_child(path: str, run_name: str, queue) -> None:
    _one_thread()
    try:
        write_results(path, mock_result_set(), run_name)
        queue.put((run_name, "ok"))
    except Exception as err:  # noqa: BLE001 -- reported to the parent
        queue.put((run_name, type(err).__name__))


def _run_writers(path: Path, names: list[str]) -> list[tuple[str, str]]:
    mock_result_set()  # warm (lazy imports) once, before forking
    queue = FORK.Queue()
    procs = [FORK.Process(target=_write_in_child, args=(str(path), n, queue)) for n in names]
    for p in procs:
        p.start()
    outcomes = [queue.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    return sorted(outcomes)


# -- 1. two (or ten) writers at once -------------------------------------------------------


def test_ten_concurrent_writers_all_runs_stored(mock_file):
    names = [f"run{i}" for i in range(10)]
    outcomes = _run_writers(mock_file, names)
    assert outcomes == sorted((n, "ok") for n in names)
    assert sorted(list_runs(mock_file)) == names
    assert pynwb.validate(path=str(mock_file)) == []
    with pynwb.NWBHDF5IO(str(mock_file), "r") as io:
        assert len(io.read().processing["misc"].data_interfaces) == 10
    read_results(mock_file, "run7")
    assert _temps(mock_file.parent) == []


def test_same_name_from_two_processes_is_refused_once(mock_file):
    outcomes = _run_writers(mock_file, ["same", "same"])
    assert sorted(kind for _, kind in outcomes) == ["ResultsExistError", "ok"]
    assert list_runs(mock_file) == ["same"]


def test_writer_waits_for_the_lock_then_gives_a_clear_error(mock_file, results):
    sha = _sha(mock_file)
    with FileLock(lock_path(mock_file)):
        start = time.monotonic()
        with pytest.raises(ResultsLockedError, match="another process has been writing"):
            write_results(mock_file, results, "run1", lock_timeout=0.5)
        assert 0.4 < time.monotonic() - start < 10
    assert _sha(mock_file) == sha
    assert _temps(mock_file.parent) == []
    write_results(mock_file, results, "run1")  # the lock is free again
    assert list_runs(mock_file) == ["run1"]


def test_run_name_is_checked_again_under_the_lock(mock_file, results, monkeypatch):
    """A run stored by another writer while we waited is refused, not replaced."""
    original = writer.target_lock
    calls = {"n": 0}

    def lock_then_other_writer(target, timeout):
        calls["n"] += 1
        if calls["n"] == 1:  # the other writer finishes just before we get the lock
            with original(target, timeout):
                pass
            monkeypatch.setattr(writer, "target_lock", original)
            write_results(mock_file, mock_result_set(seed=1), "run1")
        return original(target, timeout)

    monkeypatch.setattr(writer, "target_lock", lock_then_other_writer)
    with pytest.raises(ResultsExistError):
        write_results(mock_file, results, "run1")
    assert list_runs(mock_file) == ["run1"]


# -- 2. a full disk ------------------------------------------------------------------------


def _fail_writes_with_enospc(monkeypatch, after: int = 10) -> None:
    original = h5py.Group.create_dataset
    calls = {"n": 0}

    @functools.wraps(original)
    def create_dataset(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] > after:
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(h5py.Group, "create_dataset", create_dataset)


def test_disk_full_is_named_with_the_space_needed(mock_file, results, monkeypatch):
    sha = _sha(mock_file)
    _fail_writes_with_enospc(monkeypatch)
    with pytest.raises(ResultsNoSpaceError, match=r"no space left on .*MB needed.*MB free") as e:
        write_results(mock_file, results, "run1")
    assert e.value.errno == errno.ENOSPC
    assert "\n" not in str(e.value)
    assert "not changed" in str(e.value)
    assert _sha(mock_file) == sha
    assert _temps(mock_file.parent) == []


def _fake_run_session(path, config, **kwargs):
    write_results(path, mock_result_set(), config.run_name, output=kwargs.get("output"))
    raise AssertionError("the write should have failed")


def test_cli_disk_full_is_one_line_exit_2(mock_file, monkeypatch, capsys):
    import nwb_subspace.pipeline

    sha = _sha(mock_file)
    monkeypatch.setattr(nwb_subspace.pipeline, "run_session", _fake_run_session)
    _fail_writes_with_enospc(monkeypatch)
    code = main(["--quiet", "run", str(mock_file), "--run-name", "full"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1, err
    assert err.startswith("nwb-subspace: error: no space left on ")
    assert "MB needed" in err and "Traceback" not in err
    assert _sha(mock_file) == sha
    assert _temps(mock_file.parent) == []


def test_cli_unexpected_error_is_one_line_unless_debug(mock_file, monkeypatch, capsys):
    import nwb_subspace.pipeline

    def broken(path, config, **kwargs):
        raise RuntimeError("something broke\n  deep inside")

    monkeypatch.setattr(nwb_subspace.pipeline, "run_session", broken)
    assert main(["--quiet", "run", str(mock_file)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "RuntimeError: something broke deep inside" in err and "--debug" in err
    with pytest.raises(RuntimeError, match="something broke"):
        main(["--quiet", "--debug", "run", str(mock_file)])


# -- 3. damaged runs -----------------------------------------------------------------------


@pytest.fixture
def damaged_file(tmp_path) -> Path:
    """A file with runs 'bad' (one table column's dataset deleted) and 'good'."""
    path = write_mock_nwbfile(tmp_path / "damaged.nwb")
    write_results(path, mock_result_set(), "bad")
    write_results(path, mock_result_set(), "good")
    with h5py.File(path, "a") as f:
        del f["processing/misc/bad/cnn/scores/correlation"]
    return path


def test_damaged_run_is_named_by_list_and_read(damaged_file):
    for call in (lambda: list_runs(damaged_file), lambda: read_results(damaged_file, "good")):
        with pytest.raises(DamagedRunError, match=r"run 'bad' cannot be read") as info:
            call()
        message = str(info.value)
        assert "nwb-subspace repair" in message and "--drop" in message
        assert "\n" not in message and len(message) < 800
        assert info.value.runs.keys() == {"bad"}
    status = check_runs(damaged_file)
    assert status["good"] is None
    assert "scores" in status["bad"] and "correlation" in status["bad"]


def test_other_runs_cannot_be_added_but_the_damaged_one_can_be_replaced(damaged_file):
    sha = _sha(damaged_file)
    with pytest.raises(DamagedRunError, match="cannot add results 'new'.*'bad'"):
        write_results(damaged_file, mock_result_set(), "new")
    assert _sha(damaged_file) == sha
    write_results(damaged_file, mock_result_set(), "bad", overwrite=True)
    assert sorted(list_runs(damaged_file)) == ["bad", "good"]
    assert check_runs(damaged_file) == {"bad": None, "good": None}
    read_results(damaged_file, "bad")
    assert _temps(damaged_file.parent) == []


def test_repair_lists_and_drops_damaged_runs(damaged_file, capsys):
    assert main(["--quiet", "repair", str(damaged_file)]) == 1
    out = capsys.readouterr().out
    assert "bad: cannot be read:" in out and "good: readable" in out
    sha = _sha(damaged_file)
    assert main(["--quiet", "repair", str(damaged_file), "--run", "good", "--drop"]) == 0
    assert _sha(damaged_file) == sha  # a readable run is never dropped
    assert main(["--quiet", "repair", str(damaged_file), "--run", "nope"]) == 2
    capsys.readouterr()
    assert main(["--quiet", "repair", str(damaged_file), "--drop"]) == 0
    assert "dropped bad" in capsys.readouterr().out
    assert list_runs(damaged_file) == ["good"]
    read_results(damaged_file, "good")
    assert _temps(damaged_file.parent) == []
    assert main(["--quiet", "repair", str(damaged_file)]) == 0


@pytest.mark.parametrize("command", [["inspect"], ["report", "--run", "good"]])
def test_cli_on_a_damaged_file_is_one_line_naming_repair(damaged_file, capsys, command, tmp_path):
    extra = ["--outdir", str(tmp_path / "r")] if command[0] == "report" else []
    assert main(["--quiet", *command, str(damaged_file), *extra]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert "'bad' cannot be read" in err and "nwb-subspace repair" in err


# -- 4. writers killed part-way ------------------------------------------------------------


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_next_write_removes_temp_files_of_killed_writers_only(mock_file, results, caplog):
    folder = mock_file.parent
    dead = folder / f".{mock_file.name}.{_dead_pid()}.abc123_x.tmp"
    live = folder / f".{mock_file.name}.{os.getppid()}.def456.tmp"  # a live process
    other = folder / f".{mock_file.name}.5.{_dead_pid()}.zz.tmp"  # another file's copy
    for path in (dead, live, other):
        path.write_bytes(b"\0" * 1000)
    with caplog.at_level(logging.WARNING, logger="nwb_subspace.io.writer"):
        write_results(mock_file, results, "run1")
    assert not dead.exists() and live.exists() and other.exists()
    assert dead.name in caplog.text and "interrupted write" in caplog.text


def _write_and_exit(path: str, run_name: str) -> None:
    _one_thread()
    write_results(path, mock_result_set(), run_name)


@pytest.mark.slow
def test_kill_9_at_random_moments_never_corrupts(mock_file):
    """SIGKILL a writer at 20 random moments: the file is either as before or holds the
    complete new run; then one more write succeeds and leaves no temporary file."""
    rng = random.Random(18)
    start = time.monotonic()
    mock_result_set()  # warm (lazy imports) once, before forking
    for name in ("warm1", "warm2"):  # a write's time grows with the runs stored
        begin = time.monotonic()
        proc = FORK.Process(target=_write_and_exit, args=(str(mock_file), name))
        proc.start()
        proc.join(timeout=60)
        assert proc.exitcode == 0
        typical = time.monotonic() - begin  # how long a writer takes, start to exit
    outcomes = {"unchanged": 0, "stored": 0}
    for i in range(20):
        before = _sha(mock_file)
        name = f"k{i}"
        proc = FORK.Process(target=_write_and_exit, args=(str(mock_file), name))
        proc.start()
        time.sleep(rng.uniform(0.0, 1.5 * typical))
        os.kill(proc.pid, signal.SIGKILL)
        proc.join(timeout=30)
        if _sha(mock_file) == before:
            outcomes["unchanged"] += 1
            continue
        assert name in list_runs(mock_file), f"kill {i}: file changed without the new run"
        read_results(mock_file, name)
        outcomes["stored"] += 1
    assert outcomes["unchanged"] > 0, outcomes  # the kills did land part-way
    write_results(mock_file, mock_result_set(), "after")
    assert "after" in list_runs(mock_file)
    assert pynwb.validate(path=str(mock_file)) == []
    assert _temps(mock_file.parent) == []
    assert time.monotonic() - start < 90
