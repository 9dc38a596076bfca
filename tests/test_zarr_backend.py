"""NWB Zarr stores (hdmf-zarr): told apart from HDF5 files, read and written like them.

`inspect`, `run` and `report` on a Zarr copy of a simulated session give what they give on the
HDF5 file; results are appended to a Zarr store with the same safety as to an HDF5 file (a copy
beside it, renamed in; a failure leaves the store as it was); anything that is neither HDF5 nor
a Zarr store is refused with a clear error.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pynwb import NWBHDF5IO

from nwb_subspace.cli.main import main
from nwb_subspace.io import backend
from nwb_subspace.io.backend import nwb_backend, open_io, pickled_arrays, zarr_io
from nwb_subspace.io.writer import (
    ResultsWriteError,
    list_runs,
    read_results,
    write_results,
)
from nwb_subspace.testing import mock_result_set, write_mock_nwbfile

pytest.importorskip("hdmf_zarr")

#: The quick recipe of ``test_pipeline.py`` (seed 0): a few seconds per run on ``tiny``.
from test_pipeline import QUICK  # noqa: E402

#: The simulated session run on both backends: ``tiny`` in CI; issue 21 asks for the
#: ``small`` demo file, run with ``NWB_SUBSPACE_ZARR_PRESET=small`` (same code path, ~10x
#: the time; measured result in benchmarks/README.md, "Zarr").
PRESET = os.environ.get("NWB_SUBSPACE_ZARR_PRESET", "tiny")


def to_zarr(source: Path, dest: Path) -> Path:
    """Export an HDF5 NWB file to an NWB Zarr store (JSON-coded references)."""
    with NWBHDF5IO(str(source), "r") as src, zarr_io(dest, "w") as out:
        out.export(src_io=src, container=src.read(), write_args={"link_data": False})
    return dest


def tree_sha256(folder: Path) -> dict[str, str]:
    """SHA-256 of every file of a folder, by relative path."""
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def zarr_mock(tmp_path: Path) -> Path:
    return to_zarr(write_mock_nwbfile(tmp_path / "session.nwb"), tmp_path / "session.nwb.zarr")


# ------------------------------------------------------------------ telling backends apart


def test_neither_hdf5_nor_zarr_gets_a_clear_error(tmp_path, capsys):
    text = tmp_path / "notes.nwb"
    text.write_text("hello")
    folder = tmp_path / "folder.nwb.zarr"
    folder.mkdir()
    (folder / "readme.txt").write_text("not a zarr store")
    with pytest.raises(ValueError, match="is not an HDF5/NWB file, nor an NWB Zarr store"):
        nwb_backend(text)
    with pytest.raises(ValueError, match="is a folder but not a Zarr store"):
        nwb_backend(folder)
    with pytest.raises(FileNotFoundError, match="no such NWB file"):
        nwb_backend(tmp_path / "missing.nwb")
    for command in ("inspect", "report"):
        assert main([command, str(folder)]) == 2
        err = capsys.readouterr().err.strip()
        assert "is a folder but not a Zarr store" in err and "\n" not in err
    assert main(["inspect", str(text)]) == 2
    assert "nor an NWB Zarr store" in capsys.readouterr().err


def test_backends_are_detected_and_a_pickled_store_is_refused_up_front(tmp_path, zarr_mock):
    from hdmf_zarr import NWBZarrIO

    assert nwb_backend(zarr_mock) == "zarr"
    assert nwb_backend(tmp_path / "session.nwb") == "hdf5"
    assert pickled_arrays(zarr_mock) == []  # references are JSON
    pickled = tmp_path / "pickled.nwb.zarr"
    with NWBHDF5IO(str(tmp_path / "session.nwb"), "r") as src, NWBZarrIO(str(pickled), "w") as out:
        out.export(src_io=src, nwbfile=src.read(), write_args={"link_data": False})
    assert pickled_arrays(pickled)  # hdmf-zarr's default codec
    import numcodecs.pickles

    if not getattr(numcodecs.pickles, "ALLOW_UNSAFE_PICKLE_DECODE", True):
        with pytest.raises(ValueError, match="NUMCODECS_ALLOW_UNSAFE_PICKLE_DECODE"):
            with open_io(pickled):
                pass


# ------------------------------------------------------------------ writing
# Not marked slow (a few seconds, mock results): CI's floors job runs the non-slow tests,
# and these are the ones that catch a zarr release that cannot append (zarr 2.18.0).


def test_results_append_in_place_and_to_a_new_store(tmp_path, zarr_mock):
    results = mock_result_set()
    assert write_results(zarr_mock, results, "run1") == zarr_mock
    assert write_results(zarr_mock, results, "run1", overwrite=True) == zarr_mock
    assert list_runs(zarr_mock) == ["run1"]
    out = tmp_path / "copy.nwb.zarr"
    assert write_results(zarr_mock, results, "run2", output=out) == out
    assert nwb_backend(out) == "zarr" and list_runs(out) == ["run1", "run2"]
    assert pickled_arrays(out) == []
    hdf5 = tmp_path / "session.nwb"
    write_results(hdf5, results, "run1")
    a, b = read_results(hdf5, "run1"), read_results(out, "run1")
    assert [m.name for m in a.models] == [m.name for m in b.models]
    for ma, mb in zip(a.models, b.models, strict=True):
        np.testing.assert_array_equal(ma.unit_rows, mb.unit_rows)
        np.testing.assert_array_equal(ma.scores.correlation, mb.scores.correlation)
    # the output keeps the source's backend
    with pytest.raises(ValueError, match="output ending in .zarr"):
        write_results(zarr_mock, results, "run4", output=tmp_path / "x.nwb")
    with pytest.raises(ValueError, match="not ending in .zarr"):
        write_results(hdf5, results, "run4", output=tmp_path / "x.nwb.zarr")
    zarr_mock.chmod(0o555)  # a read-only store gets a new store beside it, named the DANDI way
    try:
        beside = write_results(zarr_mock, results, "run3")
    finally:
        zarr_mock.chmod(0o755)
    assert beside.name == "session_desc-subspace.nwb.zarr" and list_runs(beside)[-1] == "run3"
    hidden = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert all(name.endswith(".lock") for name in hidden), hidden


def test_failed_write_leaves_the_store_as_it_was(zarr_mock, monkeypatch):
    import zarr

    write_results(zarr_mock, mock_result_set(), "run1")
    before = tree_sha256(zarr_mock)
    original = zarr.hierarchy.Group.require_dataset

    def fail(self, *args, **kwargs):
        raise RuntimeError("simulated crash while writing")

    monkeypatch.setattr(zarr.hierarchy.Group, "require_dataset", fail)
    with pytest.raises(ResultsWriteError, match="simulated crash"):
        write_results(zarr_mock, mock_result_set(), "run2")
    monkeypatch.setattr(zarr.hierarchy.Group, "require_dataset", original)
    assert tree_sha256(zarr_mock) == before
    assert [p.name for p in zarr_mock.parent.iterdir() if p.name.endswith((".tmp", ".old"))] == []


def test_a_store_renamed_away_by_a_killed_write_is_put_back(zarr_mock):
    """A write killed between its two renames leaves the old store under a hidden name and
    nothing under the store's own; the next write puts it back before appending."""
    before = tree_sha256(zarr_mock)
    stranded = zarr_mock.with_name(f".{zarr_mock.name}.999999.abcd1234.old")
    os.rename(zarr_mock, stranded)
    assert backend.stranded_stores(zarr_mock) == [stranded]
    backend.restore_stranded(zarr_mock)
    assert tree_sha256(zarr_mock) == before and not stranded.exists()
    os.rename(zarr_mock, stranded)
    write_results(zarr_mock, mock_result_set(), "run1")
    assert not stranded.exists() and list_runs(zarr_mock) == ["run1"]


# ------------------------------------------------------------------ inspect, run, report


@pytest.fixture(scope="module")
def both_runs(tmp_path_factory):
    """The ``PRESET`` session as HDF5 and as a Zarr copy, each run with the same quick recipe."""
    from nwb_subspace.pipeline import run_session
    from nwb_subspace.simulate import simulate_session

    folder = tmp_path_factory.mktemp("zarr")
    hdf5, _ = simulate_session(folder / f"{PRESET}.nwb", preset=PRESET, seed=0)
    zarr_path = to_zarr(hdf5, folder / f"{PRESET}.nwb.zarr")
    inspected = {p: _inspect_lines(p) for p in (hdf5, zarr_path)}
    done = {p: run_session(p, QUICK) for p in (hdf5, zarr_path)}
    return hdf5, zarr_path, inspected, done


def _inspect_lines(path: Path) -> list[str]:
    from nwb_subspace.io.inspect import describe_file

    return describe_file(path).splitlines()[1:]  # the first line is the path


@pytest.mark.slow
def test_inspect_says_the_same_of_both(both_runs):
    hdf5, zarr_path, inspected, _ = both_runs
    assert inspected[hdf5] == inspected[zarr_path]
    assert any("everything the analysis needs is present" in x for x in inspected[zarr_path])


@pytest.mark.slow
def test_run_on_zarr_stores_the_results_of_the_hdf5_run(both_runs):
    hdf5, zarr_path, _, done = both_runs
    assert done[zarr_path].output == zarr_path and nwb_backend(zarr_path) == "zarr"
    a, b = read_results(hdf5, "quick"), read_results(zarr_path, "quick")
    assert [m.name for m in a.models] == [m.name for m in b.models]
    # same data, seed and threads: the fits are bit-identical, so equality is exact
    for ma, mb in zip(a.models, b.models, strict=True):
        np.testing.assert_array_equal(ma.unit_rows, mb.unit_rows)
        for field in ("correlation", "noise_floor", "explained_variance"):
            np.testing.assert_array_equal(getattr(ma.scores, field), getattr(mb.scores, field))
        wa, wb = ma.module.state_dict(), mb.module.state_dict()
        assert wa.keys() == wb.keys()
        assert all(np.array_equal(wa[k].numpy(), wb[k].numpy()) for k in wa)
        # spec 0.2.0: the validation predictions of ln, cnn and subspace, stored alike
        pa, pb = ma.validation_prediction, mb.validation_prediction
        assert (pa is not None) == (ma.name in ("ln", "cnn", "subspace")) == (pb is not None)
        if pa is not None:
            np.testing.assert_array_equal(pa.rate, pb.rate)
            np.testing.assert_array_equal(pa.timestamps, pb.timestamps)
            assert pa.rate.shape[1] == ma.unit_rows.size
    np.testing.assert_array_equal(a.spectrograms[0].data, b.spectrograms[0].data)
    ta, tb = a.subspaces[0], b.subspaces[0]
    for field in ("unit_rows", "dimensionality", "components", "mean_dstrf"):
        np.testing.assert_array_equal(getattr(ta, field), getattr(tb, field))
    pd.testing.assert_frame_equal(
        pd.DataFrame([r for s in a.site_statistics for r in s.rows]),
        pd.DataFrame([r for s in b.site_statistics for r in s.rows]),
    )
    cols = {c.name: c.values for c in a.unit_columns}
    assert cols.keys() == {c.name: c for c in b.unit_columns}.keys()
    for c in b.unit_columns:
        assert (
            pd.Series(cols[c.name]).astype(str).tolist() == pd.Series(c.values).astype(str).tolist()
        )
    assert [s.site for s in a.site_subspaces] == [s.site for s in b.site_subspaces]


@pytest.mark.slow
def test_report_on_the_zarr_output_writes_html_and_figures(both_runs, tmp_path):
    from nwb_subspace.io.stored_run import read_stored_run
    from nwb_subspace.report.html import make_report

    hdf5, zarr_path, _, _ = both_runs
    html = make_report(zarr_path, outdir=tmp_path / "report")
    text = html.read_text()
    figures = sorted((tmp_path / "report" / "figures").glob("*.png"))
    assert figures and all(f"figures/{f.name}" in text for f in figures)
    # the population reader (raw groups, site labels, scores) reads both the same way
    a, b = read_stored_run(hdf5), read_stored_run(zarr_path)
    assert a.session == b.session == PRESET
    pd.testing.assert_frame_equal(a.units, b.units)
    for kind in a.scores:
        pd.testing.assert_frame_equal(a.scores[kind], b.scores[kind])


def test_copy_store_and_replace_store_keep_a_whole_store(tmp_path, zarr_mock):
    copy = tmp_path / ".copy.tmp"
    copy.mkdir()
    backend.copy_store(zarr_mock, copy)
    assert tree_sha256(copy) == tree_sha256(zarr_mock)
    (copy / "marker").write_text("new")
    backend.replace_store(copy, zarr_mock)
    assert (zarr_mock / "marker").is_file() and not copy.exists()
    assert backend.stranded_stores(zarr_mock) == []
    assert backend.store_size(zarr_mock) > 0
    shutil.rmtree(zarr_mock)
    assert backend.store_size(zarr_mock) == 0


# ------------------------------------------------------------------ summarize, batch


@pytest.mark.slow
def test_summarize_and_batch_take_zarr_stores(both_runs, tmp_path):
    """``summarize`` of the Zarr run equals that of the HDF5 run; ``batch`` finds a
    ``.nwb.zarr`` store in a glob and a folder, names its output ``.nwb.zarr`` and names
    sessions without ``.nwb`` / ``.nwb.zarr``."""
    from nwb_subspace.batch import expand_sources, run_batch, session_output
    from nwb_subspace.population import summarize_runs

    hdf5, zarr_path, _, done = both_runs
    args = {"n_permutations": 20, "report": False, "parquet": False}
    a = summarize_runs([hdf5], tmp_path / "hdf5", "quick", **args)
    b = summarize_runs([f"{zarr_path}/"], tmp_path / "zarr", "quick", **args)
    assert not a.skipped and not b.skipped and len(b.units) == len(a.units) > 0
    assert a.sessions["session"].tolist() == b.sessions["session"].tolist() == [PRESET]
    assert b.sessions["file"].tolist() == [str(zarr_path.resolve())]
    own = ["file", "created"]  # where each result is and when each run was stored
    for name in ("units", "sites", "sessions", "statistics"):
        ta, tb = getattr(a, name), getattr(b, name)
        assert len(ta), name
        pd.testing.assert_frame_equal(ta.drop(columns=own, errors="ignore"),
                                      tb.drop(columns=own, errors="ignore"))  # fmt: skip

    folder = zarr_path.parent
    assert {n for _, n in expand_sources([folder])} >= {f"{PRESET}.nwb", f"{PRESET}.nwb.zarr"}
    source = str(zarr_path.resolve())
    assert expand_sources([str(folder / "*.nwb.zarr")]) == [(source, f"{PRESET}.nwb.zarr")]
    outdir = tmp_path / "batch"
    output = session_output(source, zarr_path.name, outdir)
    assert output.name.startswith(f"{PRESET}_desc-subspace") and output.name.endswith(".nwb.zarr")
    backend.copy_store(zarr_path, output)  # the finished run: batch resumes, runs nothing
    table = run_batch([str(folder / "*.nwb.zarr")], outdir, QUICK, n_workers=1)
    assert table["status"].tolist() == ["skipped"] and table["output"].tolist() == [str(output)]
    cnn = done[zarr_path].scores["cnn"].noise_corrected_correlation
    assert table["median_cnn_score"].iloc[0] == pytest.approx(float(np.nanmedian(cnn)))
    sessions = pd.read_csv(outdir / "population" / "population_sessions.csv")
    assert sessions["session"].tolist() == [output.name.removesuffix(".nwb.zarr")]
