"""Open NWB files that live on a web server or in the DANDI archive, lazily.

A *source* is a local path, an HTTP(S) URL, or a DANDI asset spec (``dandi://000123/sub-1/
sub-1_ecephys.nwb``, ``DANDI:000123@draft/sub-1/sub-1_ecephys.nwb``; resolved to a URL with
the optional ``dandi`` client). Remote files are read with `remfile
<https://github.com/flatironinstitute/remfile>`_ through HTTP Range requests: h5py asks
for the bytes it needs (headers, b-trees, the chunks of the datasets the analysis reads) and
nothing else is transferred. Inside :func:`remote_cache` every open of the same URL shares
one temporary disk cache, so the pipeline's several readers fetch each byte once.

The readers (``io/session.py``, ``io/units.py``, ``io/writer.py``) open files through
:func:`open_h5` and :func:`open_nwb`; they behave the same for local and remote sources.
"""

from __future__ import annotations

import contextlib
import os
import re
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

__all__ = [
    "DandiClientMissing",
    "RemoteInfo",
    "dandiset_nwb_urls",
    "copy_without_raw",
    "is_remote",
    "open_binary",
    "open_h5",
    "open_nwb",
    "parse_dandi_spec",
    "probe",
    "remote_cache",
    "remote_name",
    "resolve_source",
]

_DANDI_SPEC = re.compile(
    r"^(?:dandi://(?:dandi/)?|dandi:)(?P<id>\d{6})(?:@(?P<version>[\w.\-]+))?(?:/(?P<path>.*))?$",
    re.IGNORECASE,
)
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
    return low.startswith(("http://", "https://", "dandi://", "dandi:"))


def _is_dandi(source: str) -> bool:
    return source.lower().startswith(("dandi://", "dandi:"))


def parse_dandi_spec(spec: str) -> tuple[str, str | None, str | None]:
    """Split a DANDI spec into (dandiset id, version or None, asset path or None).

    Accepted forms: ``dandi://000123/path.nwb``, ``dandi://dandi/000123@draft/path.nwb``,
    ``DANDI:000123/path.nwb`` and, without a path, a whole dandiset (``DANDI:000123``).
    """
    m = _DANDI_SPEC.match(spec.strip())
    if m is None:
        raise ValueError(
            f"{spec!r} is not a DANDI asset spec; use dandi://DANDISET_ID[@VERSION]/PATH.nwb "
            "(e.g. dandi://000123/sub-1/sub-1_ecephys.nwb) or DANDI:000123/PATH.nwb"
        )
    return m["id"], m["version"], (m["path"] or None)


class DandiClientMissing(ImportError, ValueError):
    """A DANDI source was given but the optional ``dandi`` client is not installed."""


def _dandi_client() -> Any:
    try:
        from dandi.dandiapi import DandiAPIClient
    except ImportError:
        raise DandiClientMissing(
            "DANDI sources need the dandi client: pip install dandi (or pip install "
            "'nwb-subspace[dandi]'), or pass the asset's https:// URL"
        ) from None
    return DandiAPIClient()


def _resolve_dandi(spec: str) -> str:
    dandiset_id, version, asset_path = parse_dandi_spec(spec)
    if asset_path is None:
        raise ValueError(
            f"{spec!r} names a whole dandiset; give one asset (DANDI:{dandiset_id}/PATH.nwb) "
            "or use `nwb-subspace batch` for every file in it"
        )
    client = _dandi_client()
    with client:
        dandiset = client.get_dandiset(dandiset_id, version)
        asset = dandiset.get_asset_by_path(asset_path)
        return str(asset.get_content_url(follow_redirects=1, strip_query=True))


def dandiset_nwb_urls(spec: str) -> dict[str, str]:
    """Asset path -> download URL of every ``.nwb`` asset of a dandiset
    (``DANDI:000123[@version][/PATH-PREFIX]``)."""
    dandiset_id, version, prefix = parse_dandi_spec(spec)
    client = _dandi_client()
    with client:
        dandiset = client.get_dandiset(dandiset_id, version)
        assets = [
            a
            for a in dandiset.get_assets()
            if a.path.endswith(".nwb") and (prefix is None or a.path.startswith(prefix))
        ]
        return {
            a.path: str(a.get_content_url(follow_redirects=1, strip_query=True)) for a in assets
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
    """What ``h5py.File`` can open: the local :class:`~pathlib.Path`, or for a remote
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
        if not where.is_file():
            raise FileNotFoundError(f"no such NWB file: {where}")
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
def open_nwb(source: str | os.PathLike) -> Iterator[Any]:
    """Read a local or remote NWB file with pynwb; yields the ``NWBFile`` (open in the block).

    Datasets stay lazy (h5py datasets): only what is sliced is read, and for a remote
    source only those bytes are transferred.
    """
    from pynwb import NWBHDF5IO

    with open_h5(source) as f, NWBHDF5IO(file=f, mode="r") as io:
        yield io.read()


_RAW_TYPES = ("ElectricalSeries", "SpikeEventSeries")


def copy_without_raw(source: str | os.PathLike, dest: Path) -> list[str]:
    """Write a local NWB copy of ``source`` without its raw voltage series.

    Everything else (units, electrodes, trials, stimulus, processing) is exported with
    pynwb; ``ElectricalSeries`` and ``SpikeEventSeries`` in ``acquisition`` are left out, so a
    remote source's raw data is never transferred. Returns the names left out.
    """
    from pynwb import NWBHDF5IO

    with open_h5(source) as f, NWBHDF5IO(file=f, mode="r") as src:
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
