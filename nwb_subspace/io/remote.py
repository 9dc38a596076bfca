"""Open NWB files that live on a web server or in the DANDI archive, lazily.

A *source* is a local path, an HTTP(S) URL, or a DANDI address in a form the ``dandi`` client
accepts (``dandi://dandi/000123/sub-1/sub-1_ecephys.nwb``, ``dandi://dandi/000123@draft/...``;
:mod:`nwb_subspace.io.dandi_address`), resolved to a download URL with the optional ``dandi``
client. Remote files are read with `remfile
<https://github.com/flatironinstitute/remfile>`_ through HTTP Range requests: h5py asks
for the bytes it needs (headers, b-trees, the chunks of the datasets the analysis reads) and
nothing else is transferred. Inside :func:`remote_cache` every open of the same URL shares
one temporary disk cache, so the pipeline's several readers fetch each byte once.

The readers (``io/session.py``, ``io/units/``, ``io/writer.py``, ...) open files through
:func:`open_nwb` / :func:`open_nwb_io` (pynwb objects) and :func:`open_root` (raw groups);
they behave the same for local and remote sources, and for a local NWB Zarr store
(:mod:`nwb_subspace.io.backend`; remote sources are HDF5 only).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.error import HTTPError, URLError
from urllib.parse import urlparse
from urllib.request import Request, urlopen

import h5py

from nwb_subspace.io import backend
from nwb_subspace.io.dandi_address import (
    INSTALL_HINT,
    DandiClientMissing,
    dandi_client_installed,
    is_dandi_address,
    parse_dandi_address,
)

__all__ = [
    "DandiClientMissing",
    "RemoteInfo",
    "dandiset_nwb_urls",
    "copy_without_raw",
    "is_remote",
    "open_binary",
    "open_h5",
    "open_nwb",
    "open_nwb_io",
    "open_root",
    "parse_dandi_address",
    "parse_dandi_spec",
    "probe",
    "remote_cache",
    "remote_name",
    "resolve_source",
]

_TIMEOUT_S = 60.0
_cache_dir: ContextVar[str | None] = ContextVar("nwb_subspace_remote_cache", default=None)
_probed: ContextVar[dict[str, RemoteInfo] | None] = ContextVar(
    "nwb_subspace_remote_probed", default=None
)


@dataclass(frozen=True)
class RemoteInfo:
    """What a first small request told about a remote file.

    Attributes
    ----------
    url : str
        The URL that was probed.
    size : int
        File size in bytes (-1 when the server did not say).
    ranges : bool
        Whether the server answers HTTP Range requests (needed for lazy reading).
    """

    url: str
    size: int
    ranges: bool


def is_remote(source: Any) -> bool:
    """Whether ``source`` is an HTTP(S) URL or a DANDI asset spec (not a local path)."""
    if isinstance(source, os.PathLike) or not isinstance(source, str):
        return False
    low = source.lower()
    return low.startswith(("http://", "https://", "dandi://", "dandi:")) or _is_dandi(source)


def _is_dandi(source: str) -> bool:
    return is_dandi_address(source)


def parse_dandi_spec(spec: str) -> tuple[str | None, str | None, str | None]:
    """Split a DANDI address into (dandiset id, version or None, path or None).

    Parsed by the ``dandi`` client when it is installed, else by regular expressions that
    accept the same forms for the public archive and its sandbox (listed in
    :mod:`nwb_subspace.io.dandi_address`), e.g. ``DANDI:000123[/draft]``,
    ``dandi://dandi/000123[@0.230101.1234]/sub-1/sub-1_ecephys.nwb`` and
    ``https://dandiarchive.org/dandiset/000123[/draft][/files?location=sub-1]``. ``path`` is
    the asset path, a folder (ending in ``/``), a path prefix or a glob; None for a whole
    dandiset or an asset given by its ID (:func:`parse_dandi_address` tells them apart).

    Raises
    ------
    ValueError
        Not an address the dandi client accepts (the old ``DANDI:000123/PATH`` and
        ``dandi://000123/PATH`` forms: the message gives the form to write instead).
    DandiClientMissing
        A form only the client can parse (it follows redirects), without the client.
    """
    address = parse_dandi_address(spec)
    return address.dandiset_id, address.version, address.path


def _dandi_client() -> Any:
    """The ``dandi.dandiarchive`` module (raises :class:`DandiClientMissing` without it)."""
    if not dandi_client_installed():
        raise DandiClientMissing(
            f"DANDI sources need the dandi client: {INSTALL_HINT}, or pass the asset's "
            "https:// download URL"
        )
    from dandi import dandiarchive

    return dandiarchive


def _dandi_assets(spec: str, *, single: bool) -> list[Any]:
    """The assets a DANDI address names, through the client (network)."""
    address = parse_dandi_address(spec)  # a malformed address fails before the install hint
    if single and not address.single_asset:
        raise ValueError(
            f"{spec!r} names a {address.kind}, not one asset; give one asset "
            "(dandi://dandi/DANDISET_ID/PATH.nwb) or use `nwb-subspace batch` for every file in it"
        )
    dandiarchive = _dandi_client()
    with dandiarchive.parse_dandi_url(spec.strip()).navigate(strict=True) as (_, _, assets):
        return list(assets)


def _resolve_dandi(spec: str) -> str:
    assets = _dandi_assets(spec, single=True)
    if not assets:
        raise FileNotFoundError(f"{spec}: no such asset in the DANDI archive")
    return str(assets[0].get_content_url(follow_redirects=1, strip_query=True))


def dandiset_nwb_urls(spec: str) -> dict[str, str]:
    """Asset path -> download URL of every ``.nwb`` asset a DANDI address names: a dandiset
    (``DANDI:000123[/VERSION]``), a folder (``dandi://dandi/000123/sub-1/``), a path prefix
    or glob (``.../assets/?path=`` or ``?glob=``), or one asset. Needs the ``dandi`` client
    and the network."""
    return {
        a.path: str(a.get_content_url(follow_redirects=1, strip_query=True))
        for a in _dandi_assets(spec, single=False)
        if a.path.endswith(".nwb")
    }


def resolve_source(source: str | os.PathLike) -> str | Path:
    """A local :class:`~pathlib.Path`, or the HTTP(S) URL of a remote source.

    Raises
    ------
    ValueError
        A malformed URL or DANDI spec.
    ImportError
        A DANDI spec without the ``dandi`` client installed.
    """
    if not is_remote(source):
        return Path(source)
    text = str(source).strip()
    if _is_dandi(text):
        return _resolve_dandi(text)
    parsed = urlparse(text)
    if not parsed.netloc or not parsed.path or parsed.path == "/":
        raise ValueError(f"{text!r} is not a usable file URL; give http(s)://HOST/PATH/FILE.nwb")
    return text


def remote_name(url: str) -> str:
    """The file name at the end of a URL's path (``remote.nwb`` when there is none)."""
    name = Path(urlparse(url).path).name
    return name if name else "remote.nwb"


def probe(url: str) -> RemoteInfo:
    """Ask the server for one byte: does the file exist, how big is it, does it serve ranges.

    Raises
    ------
    FileNotFoundError
        HTTP 404 or 410.
    OSError
        Any other HTTP error, or the server cannot be reached.
    """
    seen = _probed.get()
    if seen is not None and url in seen:
        return seen[url]
    request = Request(url, headers={"Range": "bytes=0-0"})
    try:
        with urlopen(request, timeout=_TIMEOUT_S) as response:  # noqa: S310
            if response.status == 206:
                total = response.headers.get("Content-Range", "").rpartition("/")[2]
                info = RemoteInfo(url, int(total) if total.isdigit() else -1, True)
            else:
                length = response.headers.get("Content-Length")
                info = RemoteInfo(url, int(length) if length else -1, False)
    except HTTPError as err:
        if err.code in (404, 410):
            raise FileNotFoundError(
                f"{url}: no such file on the server (HTTP {err.code})"
            ) from None
        raise OSError(f"{url}: the server answered HTTP {err.code} {err.reason}") from None
    except (URLError, TimeoutError, ConnectionError) as err:
        reason = getattr(err, "reason", err)
        raise OSError(f"cannot reach {url}: {reason}") from None
    if seen is not None:
        seen[url] = info
    return info


@contextlib.contextmanager
def remote_cache(folder: str | os.PathLike | None = None) -> Iterator[str]:
    """Share one disk cache between every remote open inside the block.

    Without ``folder`` a temporary folder is used and removed at the end. Nested blocks
    reuse the outer cache.
    """
    current = _cache_dir.get()
    if current is not None:
        yield current
        return
    tmp = None
    if folder is None:
        tmp = tempfile.mkdtemp(prefix="nwb_subspace_remote_")
        folder = tmp
    token = _cache_dir.set(str(folder))
    token_probed = _probed.set({})
    try:
        yield str(folder)
    finally:
        _cache_dir.reset(token)
        _probed.reset(token_probed)
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def _remfile(url: str) -> Any:
    import remfile

    info = probe(url)
    if not info.ranges:
        raise ValueError(
            f"{url}: the server does not answer HTTP Range requests, so the file cannot be "
            "read lazily; download it and pass the local path"
        )
    folder = _cache_dir.get()
    cache = remfile.DiskCache(folder) if folder is not None else None
    return remfile.File(url, disk_cache=cache, _size=info.size if info.size >= 0 else None)


@contextlib.contextmanager
def open_binary(source: str | os.PathLike) -> Iterator[Any]:
    """What ``h5py.File`` can open: the local :class:`~pathlib.Path` (which may also be an
    NWB Zarr store: check with :func:`nwb_subspace.io.backend.nwb_backend`), or for a remote
    source a lazy, seekable file object (remfile) closed at the end of the block."""
    where = resolve_source(source)
    if isinstance(where, Path):
        yield where
        return
    handle = _remfile(where)
    try:
        yield handle
    finally:
        handle.close()


@contextlib.contextmanager
def open_h5(source: str | os.PathLike, *, require_nwb: bool = True) -> Iterator[h5py.File]:
    """Open a local or remote NWB file read-only with h5py.

    Parameters
    ----------
    source : str or path-like
        Local path, HTTP(S) URL or DANDI asset spec.
    require_nwb : bool, default True
        Raise ``ValueError`` when the file has no ``nwb_version`` attribute.

    Raises
    ------
    FileNotFoundError
        A missing local file or a remote 404.
    ValueError
        Not an HDF5/NWB file, a bad URL, or a server without Range support.
    """
    where = resolve_source(source)
    handle = None
    if isinstance(where, Path):
        if backend.nwb_backend(where) != "hdf5":
            raise ValueError(f"{where} is an NWB Zarr store, not HDF5; open it with open_root")
        target: Any = where
    else:
        handle = _remfile(where)
        target = handle
    try:
        try:
            f = h5py.File(target, "r")
        except OSError as err:
            raise ValueError(f"{where} is not a readable HDF5/NWB file ({err})") from None
        with f:
            if require_nwb and "nwb_version" not in f.attrs:
                raise ValueError(f"{where} is an HDF5 file but not NWB (no nwb_version)")
            yield f
    finally:
        if handle is not None:
            handle.close()


@contextlib.contextmanager
def open_root(source: str | os.PathLike, *, require_nwb: bool = True) -> Iterator[Any]:
    """Open the raw root group of a local or remote NWB file of either backend, read-only.

    An ``h5py.File`` for HDF5 (local, or remote through :func:`open_h5`), a ``zarr.Group``
    for a local NWB Zarr store (:func:`nwb_subspace.io.backend.open_root`); both are read
    the same way (``"a/b" in root``, ``root["a/b"][()]``, ``.attrs``, ``.items()``).

    Raises
    ------
    FileNotFoundError
        A missing local file or a remote 404.
    ValueError
        Neither an HDF5 file nor a Zarr store, not NWB, a bad URL, or a server without
        Range support.
    """
    if is_remote(source):
        with open_h5(source, require_nwb=require_nwb) as f:
            yield f
        return
    with backend.open_root(Path(source), require_nwb=require_nwb) as root:
        yield root


@contextlib.contextmanager
def open_nwb_io(source: str | os.PathLike) -> Iterator[Any]:
    """The read-only pynwb/hdmf IO object of a local or remote NWB file of either backend.

    ``NWBHDF5IO`` for HDF5 (a remote file through :func:`open_h5`, read lazily), hdmf-zarr's
    ``ZarrIO`` for a local NWB Zarr store (:func:`nwb_subspace.io.backend.open_io`). Call
    ``read()`` for the ``NWBFile`` or ``read_builder()`` for its builders.
    """
    if is_remote(source):
        from pynwb import NWBHDF5IO

        with open_h5(source) as f, NWBHDF5IO(file=f, mode="r") as io:
            yield io
        return
    with backend.open_io(Path(source), "r") as io:
        yield io


@contextlib.contextmanager
def open_nwb(source: str | os.PathLike) -> Iterator[Any]:
    """Read a local or remote NWB file (HDF5, or a local Zarr store) with pynwb; yields the
    ``NWBFile`` (open in the block).

    Datasets stay lazy (h5py datasets or zarr arrays): only what is sliced is read, and for
    a remote source only those bytes are transferred.
    """
    with open_nwb_io(source) as io:
        yield io.read()


_RAW_TYPES = ("ElectricalSeries", "SpikeEventSeries")


def copy_without_raw(source: str | os.PathLike, dest: Path) -> list[str]:
    """Write a local NWB copy of ``source`` without its raw voltage series.

    Everything else (units, electrodes, trials, stimulus, processing) is exported with
    pynwb; ``ElectricalSeries`` and ``SpikeEventSeries`` in ``acquisition`` are left out, so a
    remote source's raw data is never transferred. Returns the names left out.
    """
    from pynwb import NWBHDF5IO

    with open_nwb_io(source) as src:
        nwbfile = src.read()
        dropped = [
            name
            for name, obj in list(nwbfile.acquisition.items())
            if type(obj).__name__ in _RAW_TYPES
        ]
        for name in dropped:
            nwbfile.acquisition.pop(name)
        with warnings.catch_warnings():
            # the writer's temporary sibling does not end in .nwb; the final name does
            warnings.filterwarnings("ignore", message=".*does not end in '.nwb'")
            with NWBHDF5IO(str(dest), mode="w") as out:
                out.export(src_io=src, nwbfile=nwbfile, write_args={"link_data": False})
    return [f"acquisition/{name}" for name in dropped]
