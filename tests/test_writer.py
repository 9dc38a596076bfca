"""The writer appends without altering anything, and fails without leaving a trace."""

from __future__ import annotations

import errno
import functools
import shutil
import stat
from datetime import UTC, datetime
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import colnames, dataset_checksums, file_sha256
from pynwb import NWBHDF5IO

from nwb_subspace.io import writer
from nwb_subspace.io.writer import (
    ResultsExistError,
    ResultsWriteError,
    list_runs,
    read_results,
    write_results,
)
from nwb_subspace.results import ResultSet, UnitColumn
from nwb_subspace.testing import mock_result_set
from nwb_subspace.units.columns import UNIT_COLUMNS


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_existing_datasets_are_never_altered(mock_file, results):
    before = dataset_checksums(mock_file)
    old_columns = colnames(mock_file)
    write_results(mock_file, results, "run1")
    after = dataset_checksums(mock_file)
    changed = [k for k in before if after.get(k) != before[k]]
    assert changed == []
    assert len(after) > len(before)
    assert colnames(mock_file) == old_columns + ["trough_to_peak_ms", "cell_type"]
    assert list_runs(mock_file) == ["run1"]


def test_second_run_keeps_first(mock_file, results):
    write_results(mock_file, results, "run1")
    before = dataset_checksums(mock_file)
    second = mock_result_set(seed=3)
    second.unit_columns = []
    write_results(mock_file, second, "run2")
    after = dataset_checksums(mock_file)
    assert [k for k in before if after.get(k) != before[k]] == []
    assert sorted(list_runs(mock_file)) == ["run1", "run2"]


def _fail_on_nth_dataset(monkeypatch, n: int, exc: Exception):
    original = h5py.Group.create_dataset
    calls = {"n": 0}

    @functools.wraps(original)
    def create_dataset(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == n:
            raise exc
        return original(self, *args, **kwargs)

    monkeypatch.setattr(h5py.Group, "create_dataset", create_dataset)
    return calls


@pytest.mark.parametrize(
    "exc", [RuntimeError("injected failure"), OSError(errno.ENOSPC, "No space left on device")]
)
def test_failure_mid_write_leaves_original_byte_identical(mock_file, results, monkeypatch, exc):
    sha = file_sha256(mock_file)
    calls = _fail_on_nth_dataset(monkeypatch, 15, exc)
    with pytest.raises(ResultsWriteError, match="not changed") as info:
        write_results(mock_file, results, "run1")
    assert str(exc) in str(info.value)
    assert calls["n"] >= 15  # the failure happened part-way through writing datasets
    assert file_sha256(mock_file) == sha
    assert _leftovers(mock_file.parent) == []
    monkeypatch.undo()
    write_results(mock_file, results, "run1")  # and the file still takes the results
    assert list_runs(mock_file) == ["run1"]


def test_disk_full_while_copying_leaves_original(mock_file, results, monkeypatch):
    sha = file_sha256(mock_file)

    def copy_half_then_fail(src, dst):
        data = Path(src).read_bytes()
        Path(dst).write_bytes(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(writer.shutil, "copyfile", copy_half_then_fail)
    with pytest.raises(OSError, match="No space"):
        write_results(mock_file, results, "run1")
    assert file_sha256(mock_file) == sha
    assert _leftovers(mock_file.parent) == []


def test_existing_run_name_needs_overwrite(mock_file, results):
    write_results(mock_file, results, "run1")
    sha = file_sha256(mock_file)
    with pytest.raises(ResultsExistError, match="overwrite=True"):
        write_results(mock_file, mock_result_set(seed=5), "run1")
    assert file_sha256(mock_file) == sha
    other = mock_result_set(seed=5)
    other.unit_columns = []
    write_results(mock_file, other, "run1", overwrite=True)
    back = read_results(mock_file, "run1")
    np.testing.assert_array_equal(
        back.subspaces[0].components, other.subspaces[0].components.astype(np.float32)
    )
    assert list_runs(mock_file) == ["run1"]


def test_units_column_conflict(mock_file, results):
    write_results(mock_file, results, "run1")
    same = ResultSet(unit_columns=results.unit_columns)
    write_results(mock_file, same, "run2")  # identical values: accepted, not duplicated
    changed = ResultSet(
        unit_columns=[
            UnitColumn("trough_to_peak_ms", np.full(5, 0.42), UNIT_COLUMNS["trough_to_peak_ms"])
        ]
    )
    with pytest.raises(ResultsExistError, match="trough_to_peak_ms"):
        write_results(mock_file, changed, "run3")
    write_results(mock_file, changed, "run3", overwrite=True)
    with NWBHDF5IO(str(mock_file), "r") as io:
        units = io.read().units
        np.testing.assert_array_equal(units["trough_to_peak_ms"].data[:], np.full(5, 0.42))
        assert list(units.colnames).count("trough_to_peak_ms") == 1
        assert "spike_times" in units.colnames and len(units) == 5


def test_read_only_source_gets_a_new_file(mock_file, results):
    sha = file_sha256(mock_file)
    mock_file.chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
    try:
        out = write_results(mock_file, results, "run1")
    finally:
        mock_file.chmod(0o644)
    assert out == mock_file.with_name("session_desc-subspace.nwb")
    assert file_sha256(mock_file) == sha
    before = dataset_checksums(mock_file)
    after = dataset_checksums(out)
    assert [k for k in before if after.get(k) != before[k]] == []
    assert list_runs(out) == ["run1"]


def test_explicit_output_must_be_new(mock_file, results, tmp_path):
    out = tmp_path / "out.nwb"
    out.write_text("precious")
    with pytest.raises(FileExistsError, match="exists"):
        write_results(mock_file, results, "run1", output=out)
    assert out.read_text() == "precious"


def test_remote_source_goes_to_local_output(mock_file, results, tmp_path):
    serve = tmp_path / "served"
    serve.mkdir()
    shutil.copy(mock_file, serve / "remote.nwb")
    from test_remote import http_server  # a server process: no h5py lock shared with it

    with http_server(serve) as (base, _):
        out = write_results(f"{base}/remote.nwb", results, "run1", output=tmp_path / "local.nwb")
    assert list_runs(out) == ["run1"]
    assert file_sha256(serve / "remote.nwb") == file_sha256(mock_file)


@pytest.mark.parametrize("name", ["", "a/b", "../x", " spaced", "x" * 200])
def test_bad_run_names(mock_file, results, name):
    with pytest.raises(ValueError, match="run name"):
        write_results(mock_file, results, name)


def test_bad_sources_and_results(tmp_path, mock_file, results):
    text = tmp_path / "notes.nwb"
    text.write_text("not hdf5")
    with pytest.raises(ValueError, match="not a readable HDF5"):
        write_results(text, results, "run1")
    plain = tmp_path / "plain.h5"
    with h5py.File(plain, "w") as f:
        f["x"] = 1
    with pytest.raises(ValueError, match="not an NWB file"):
        write_results(plain, results, "run1")
    with pytest.raises(FileNotFoundError):
        write_results(tmp_path / "missing.nwb", results, "run1")
    with pytest.raises(TypeError, match="ResultSet"):
        write_results(mock_file, {"models": []}, "run1")
    sha = file_sha256(mock_file)
    too_many = mock_result_set(n_units=7)
    too_many.unit_columns = []
    with pytest.raises(ValueError, match="unit row 6"):
        write_results(mock_file, too_many, "run1")
    short = ResultSet(unit_columns=[UnitColumn("layer", np.array(["L4"] * 3), "Layer.")])
    with pytest.raises(ValueError, match="one value per unit"):
        write_results(mock_file, short, "run1")
    assert file_sha256(mock_file) == sha
    assert _leftovers(mock_file.parent) == []


def test_append_to_neuroconv_file(tmp_path):
    from neuroconv.tools.spikeinterface import write_sorting_to_nwbfile
    from spikeinterface.core import generate_sorting

    path = tmp_path / "neuroconv.nwb"
    sorting = generate_sorting(num_units=5, durations=[5.0], seed=0)
    metadata = {
        "NWBFile": {
            "session_start_time": datetime(2026, 1, 1, tzinfo=UTC),
            "session_description": "Sorted by SpikeInterface.",
            "identifier": "neuroconv-test",
        }
    }
    write_sorting_to_nwbfile(sorting, nwbfile_path=path, metadata=metadata, overwrite=True)
    before = dataset_checksums(path)
    results = mock_result_set(n_units=5)
    write_results(path, results, "run1")
    after = dataset_checksums(path)
    assert [k for k in before if after.get(k) != before[k]] == []
    back = read_results(path)
    assert back.models[0].unit_rows.tolist() == [0, 1, 2, 3, 4]
    with h5py.File(path, "r") as f:
        assert f["processing/misc/run1"].attrs["neurodata_type"] == "SubspaceAnalysis"
