"""Remote sources: NWB files read lazily over HTTP from a real server on 127.0.0.1.

The server answers HTTP Range requests (python's ``SimpleHTTPRequestHandler`` does not)
and counts the bytes it sends, so the tests can check that a run on a URL transfers only
what the analysis needs, not the file's raw voltage.
"""

from __future__ import annotations

import functools
import http.server
import importlib.util
import multiprocessing
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
from conftest import file_sha256
from pynwb import NWBHDF5IO, TimeSeries

from nwb_subspace.config import AnalysisConfig, SiteSettings, SubspaceSettings
from nwb_subspace.io.remote import (
    is_remote,
    open_h5,
    open_nwb,
    parse_dandi_spec,
    probe,
    remote_cache,
    resolve_source,
)
from nwb_subspace.io.session import read_spike_times
from nwb_subspace.io.writer import list_runs
from nwb_subspace.models.training import TrainingConfig
from nwb_subspace.pipeline import run_session
from nwb_subspace.testing.mock import mock_nwbfile

QUICK = AnalysisConfig(
    training=TrainingConfig(
        n_initializations=1, max_epochs_stage1=2, max_epochs_stage2=1, patience=2
    ),
    subspace=SubspaceSettings(n_components=4, min_noise_corrected_r=-1.0),
    sites=SiteSettings(n_null=20, n_shifts=20),
    run_name="remote",
)


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files with HTTP Range support and counts the body bytes it sends."""

    sent: Any  # set per server: a multiprocessing.Value shared with the test process

    def log_message(self, format: str, *args) -> None:  # noqa: A002
        pass

    def do_GET(self) -> None:
        path = self.translate_path(self.path)
        if not os.path.isfile(path):
            self.send_error(404, "File not found")
            return
        size = os.path.getsize(path)
        start, end = 0, size - 1
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        if match:
            start = int(match[1])
            end = min(int(match[2]) if match[2] else size - 1, size - 1)
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(end - start + 1))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        with open(path, "rb") as fh:
            fh.seek(start)
            left = end - start + 1
            try:
                while left:
                    chunk = fh.read(min(left, 1 << 16))
                    self.wfile.write(chunk)
                    with self.sent.get_lock():
                        self.sent.value += len(chunk)
                    left -= len(chunk)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client stopped reading (e.g. a size probe)


class _Sent:
    """``sent[0]``: the bytes the server process has sent so far."""

    def __init__(self, value: Any) -> None:
        self._value = value

    def __getitem__(self, index: int) -> int:
        if index != 0:
            raise IndexError(index)
        return int(self._value.value)


def _serve(folder: str, ranges: bool, sent: Any, port: Any) -> None:
    base = RangeHandler if ranges else http.server.SimpleHTTPRequestHandler
    handler_cls = type("Handler", (base,), {"sent": sent, "log_message": RangeHandler.log_message})
    handler = functools.partial(handler_cls, directory=folder)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    port.put(server.server_address[1])
    server.serve_forever()


@contextmanager
def http_server(folder: Path, ranges: bool = True) -> Iterator[tuple[str, _Sent]]:
    """Serve ``folder`` on 127.0.0.1 from a child process; yields (base URL, sent counter).

    A process, not a thread: h5py holds one lock while it reads through remfile, and a
    server thread of the same process that needed it (a garbage-collected h5py object
    finalised on that thread) deadlocked the read (seen once in the full suite)."""
    ctx = multiprocessing.get_context("fork")
    sent, port = ctx.Value("q", 0), ctx.Queue()
    proc = ctx.Process(target=_serve, args=(str(folder), ranges, sent, port), daemon=True)
    proc.start()
    try:
        yield f"http://127.0.0.1:{port.get(timeout=60)}", _Sent(sent)
    finally:
        proc.terminate()
        proc.join(30)


@pytest.fixture
def served_mock(tmp_path):
    """The mock session plus a 16 MB acquisition series nothing reads, served over HTTP."""
    folder = tmp_path / "served"
    folder.mkdir()
    nwbfile = mock_nwbfile()
    noise = np.random.default_rng(0).standard_normal(4_000_000).astype(np.float32)
    nwbfile.add_acquisition(TimeSeries(name="unused", data=noise, unit="V", rate=30000.0))
    with NWBHDF5IO(str(folder / "session.nwb"), "w") as io:
        io.write(nwbfile)
    (folder / "notes.nwb").write_bytes(b"this is not an HDF5 file\n" * 100)
    with http_server(folder) as (base, sent):
        yield base, sent, folder


def test_sources_are_told_apart():
    assert is_remote("https://example.org/a.nwb") and is_remote("DANDI:000123/a.nwb")
    assert not is_remote("local/file.nwb") and not is_remote(Path("http_file.nwb"))
    assert resolve_source("x/y.nwb") == Path("x/y.nwb")
    assert is_remote("DANDI-SANDBOX:000123") and not is_remote("C:/data/x.nwb")
    assert parse_dandi_spec("dandi://dandi/000123/sub-1/a.nwb") == ("000123", None, "sub-1/a.nwb")
    assert parse_dandi_spec("dandi://dandi/000123@draft/a.nwb") == ("000123", "draft", "a.nwb")
    assert parse_dandi_spec("DANDI:000123") == ("000123", None, None)
    with pytest.raises(ValueError, match="not a DANDI address"):
        parse_dandi_spec("dandi://dandi/abc/x.nwb")
    with pytest.raises(ValueError, match="write dandi://dandi/000123/sub-1/a.nwb"):
        parse_dandi_spec("dandi://000123/sub-1/a.nwb")  # the old form, refused by the client
    with pytest.raises(ValueError, match="not a usable file URL"):
        resolve_source("https://")


@pytest.mark.skipif(importlib.util.find_spec("dandi") is not None, reason="dandi installed")
def test_dandi_spec_without_client_says_how_to_install():
    with pytest.raises(ImportError, match="pip install dandi"):
        resolve_source("dandi://dandi/000123/sub-1/sub-1.nwb")


def test_lazy_open_reads_only_what_is_asked(served_mock):
    base, sent, folder = served_mock
    url = f"{base}/session.nwb"
    size = (folder / "session.nwb").stat().st_size
    with remote_cache(), open_nwb(url) as nwbfile:
        spikes, ids = read_spike_times(nwbfile)
        assert len(spikes) == 5
    assert 0 < sent[0] < 0.1 * size
    with open_h5(url) as f, h5py.File(folder / "session.nwb", "r") as local:
        assert f["units/spike_times"][()].tolist() == local["units/spike_times"][()].tolist()


def test_bad_remote_sources_fail_in_one_line(served_mock, tmp_path):
    base, _, _ = served_mock
    with pytest.raises(FileNotFoundError, match="HTTP 404"):
        run_session(f"{base}/missing.nwb", QUICK, output=tmp_path / "out.nwb")
    with pytest.raises(ValueError, match="not a readable HDF5/NWB file"):
        run_session(f"{base}/notes.nwb", QUICK, output=tmp_path / "out.nwb")
    with pytest.raises(OSError, match="cannot reach"):
        probe("http://127.0.0.1:9/nothing.nwb")
    assert not (tmp_path / "out.nwb").exists()


def test_server_without_ranges_is_refused_for_lazy_reading(mock_file):
    with http_server(mock_file.parent, ranges=False) as (base, _):
        url = f"{base}/{mock_file.name}"
        assert not probe(url).ranges
        with pytest.raises(ValueError, match="Range requests"), open_nwb(url):
            pass


@pytest.fixture(scope="module")
def big_session(tmp_path_factory) -> Path:
    """A tiny simulated session that also holds 30 s of raw voltage the analysis skips."""
    from nwb_subspace.simulate import simulate_session
    from nwb_subspace.simulate.presets import resolve_config

    folder = tmp_path_factory.mktemp("served_big")
    cfg = replace(resolve_config("tiny"), raw_s=30.0)
    path, _ = simulate_session(folder / "tiny_raw.nwb", preset=cfg, seed=0, raw=True)
    return path


@pytest.mark.slow
def test_run_on_url_transfers_far_less_than_the_file(big_session, tmp_path):
    size = big_session.stat().st_size
    before = file_sha256(big_session)
    out = tmp_path / "results.nwb"
    with http_server(big_session.parent) as (base, sent):
        result = run_session(f"{base}/{big_session.name}", QUICK, output=out)
        transferred = sent[0]
        with pytest.raises(FileExistsError, match="exists"):  # before any fitting
            run_session(f"{base}/{big_session.name}", QUICK, output=out)
    print(f"transferred {transferred} of {size} bytes ({transferred / size:.1%})")
    assert transferred < 0.35 * size
    assert result.output == out and list_runs(out) == ["remote"]
    leftovers = [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert [p.name for p in leftovers] == [f".{out.name}.lock"]  # the writers' lock, no temporaries
    with h5py.File(out, "r") as f:
        assert "acquisition/ElectricalSeries" not in f  # raw voltage left out
        assert f["units/id"].shape[0] == result.session.n_units
        assert "stimulus/presentation/sound" in f
    assert file_sha256(big_session) == before
    assert any("read lazily" in note for note in result.notes)


def test_cli_run_on_a_bad_url_is_one_line(served_mock, tmp_path, capsys):
    from nwb_subspace.cli.main import main

    base, _, _ = served_mock
    code = main(["run", f"{base}/missing.nwb", "--output", str(tmp_path / "o.nwb")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "HTTP 404" in err and len(err.splitlines()) == 1
    if importlib.util.find_spec("dandi") is None:
        assert main(["run", "dandi://dandi/000123/sub-1/a.nwb"]) == 2
        assert "pip install dandi" in capsys.readouterr().err
