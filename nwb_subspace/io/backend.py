"""Which NWB storage backend a local file uses, and opening it with the matching reader.

NWB files are stored either in HDF5 (one ``.nwb`` file, read with h5py/``NWBHDF5IO``) or in
Zarr (a ``.nwb.zarr`` folder, read with `hdmf-zarr <https://hdmf-zarr.readthedocs.io>`_).
:func:`nwb_backend` tells them apart by what the path is (a folder holding a Zarr group is
Zarr; a file with the HDF5 signature is HDF5; anything else is refused with a clear error),
and the helpers below open either the same way:

* :func:`open_io` opens the pynwb/hdmf IO object (``NWBHDF5IO``, or hdmf-zarr's ``ZarrIO``
  with the NWB type map), for ``read()`` or ``read_builder()``, or to append;
* :func:`open_root` opens the raw root group (an ``h5py.File`` or a ``zarr.Group``; both
  are read the same way: ``"a/b" in root``, ``root["a/b"][()]``, ``.attrs``, ``.items()``)
  for the reads that must not build the whole file (file metadata, damaged runs);
* :func:`is_reference` and :func:`reference_name` read object references in either backend;
* :func:`copy_store`, :func:`replace_store`, :func:`remove_store`, :func:`fsync_store` and
  :func:`store_size` treat a Zarr folder as one file for the writer's copy-then-replace.

Zarr stores written here keep object references with the ``numcodecs.JSON`` codec:
hdmf-zarr's default (Python pickle) is refused by numcodecs >= 0.15 as unsafe to read, and
:func:`open_io` and :func:`open_root` say so up front for a store that uses it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py

__all__ = [
    "BACKENDS",
    "copy_store",
    "fsync_path",
    "fsync_store",
    "is_group",
    "is_reference",
    "is_zarr_name",
    "nwb_backend",
    "open_io",
    "open_root",
    "pickled_arrays",
    "reference_name",
    "remove_store",
    "replace_store",
    "restore_stranded",
    "store_size",
    "store_stem",
    "stranded_stores",
    "zarr_io",
]

BACKENDS = ("hdf5", "zarr")
"""The storage backends read and written: HDF5 (``.nwb`` file) and Zarr (``.nwb.zarr``)."""

_OLD_TAIL = ".old"


def is_zarr_name(path: str | os.PathLike) -> bool:
    """Whether a path's name says Zarr store (it ends in ``.zarr``), whatever exists there."""
    return str(path).rstrip("/").lower().endswith(".zarr")


def _is_zarr_folder(path: Path) -> bool:
    return path.is_dir() and ((path / ".zgroup").is_file() or (path / "zarr.json").is_file())


def nwb_backend(path: str | os.PathLike) -> str:
    """The storage backend of a local NWB file: ``"hdf5"`` or ``"zarr"``.

    Parameters
    ----------
    path : path-like
        An HDF5 NWB file, or the folder of an NWB Zarr store.

    Returns
    -------
    str
        ``"zarr"`` for a folder holding a Zarr group (``.zgroup``), ``"hdf5"`` for a file
        with the HDF5 signature.

    Raises
    ------
    FileNotFoundError
        Nothing at ``path``.
    ValueError
        Neither an HDF5 file nor a Zarr store (the message says what to give).
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"no such NWB file: {p}")
    if _is_zarr_folder(p):
        return "zarr"
    if p.is_dir():
        raise ValueError(
            f"{p} is a folder but not a Zarr store (no .zgroup in it); give an NWB file "
            "(HDF5, .nwb) or an NWB Zarr store (a .nwb.zarr folder)"
        )
    if h5py.is_hdf5(p):
        return "hdf5"
    raise ValueError(
        f"{p} is not an HDF5/NWB file, nor an NWB Zarr store (a folder holding a Zarr group); "
        "give an NWB file (.nwb) or an NWB Zarr store (.nwb.zarr)"
    )


def _import_zarr() -> Any:
    try:
        import hdmf_zarr  # noqa: F401
        import zarr
    except ImportError:
        raise ImportError(
            'reading NWB Zarr stores needs hdmf-zarr: pip install "nwb-subspace[zarr]"'
        ) from None
    return zarr


def _zarr_metadata(path: Path) -> dict[str, dict]:
    """``.zarray`` metadata of every array of a store, by array path."""
    consolidated = path / ".zmetadata"
    if consolidated.is_file():
        meta = json.loads(consolidated.read_text()).get("metadata", {})
        return {k[: -len("/.zarray")]: v for k, v in meta.items() if k.endswith("/.zarray")}
    found = {}
    for folder, _, files in os.walk(path):
        if ".zarray" in files:
            with contextlib.suppress(OSError, ValueError):
                meta = json.loads((Path(folder) / ".zarray").read_text())
                found[Path(folder).relative_to(path).as_posix()] = meta
    return found


def pickled_arrays(path: str | os.PathLike) -> list[str]:
    """Arrays of a Zarr store whose values are Python pickles (hdmf-zarr's default codec
    for object references), sorted."""
    out = []
    for name, meta in _zarr_metadata(Path(path)).items():
        filters = meta.get("filters") or []
        if any(isinstance(f, dict) and f.get("id") == "pickle" for f in filters):
            out.append(name)
    return sorted(out)


def _check_zarr_readable(path: Path) -> None:
    """Refuse, in one line, a store whose pickled references numcodecs will not decode."""
    import numcodecs.pickles

    if getattr(numcodecs.pickles, "ALLOW_UNSAFE_PICKLE_DECODE", True):
        return  # older numcodecs, or the user allowed it
    pickled = pickled_arrays(path)
    if pickled:
        raise ValueError(
            f"{path} stores object references as Python pickles (hdmf-zarr's default codec; "
            f"{len(pickled)} arrays, e.g. /{pickled[0]}), which numcodecs refuses to read as "
            "unsafe; if you trust the file, set NUMCODECS_ALLOW_UNSAFE_PICKLE_DECODE=1 and "
            "rerun (stores written by nwb-subspace use the JSON codec)"
        )


def zarr_io(path: str | os.PathLike, mode: str = "r") -> Any:
    """hdmf-zarr's ``ZarrIO`` for an NWB Zarr store, with the NWB type map (and, when not
    creating the store, the namespaces cached in it) and the JSON codec for references.

    ``NWBZarrIO`` is not used because it drops ``object_codec_class`` and so writes
    references as pickles, which numcodecs >= 0.15 refuses to read back.
    """
    _import_zarr()
    import numcodecs
    from hdmf.build import BuildManager
    from hdmf_zarr.backend import ZarrIO
    from pynwb import get_manager, get_type_map

    from nwb_subspace import ndx  # noqa: F401  (the namespace must be loaded)

    if mode in ("w", "w-", "x"):
        manager = get_manager()
    else:
        type_map = get_type_map()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "ignoring cached namespace ...": as NWBHDF5IO
            ZarrIO.load_namespaces(namespace_catalog=type_map, path=str(path))
        manager = BuildManager(type_map)
    return ZarrIO(str(path), mode=mode, manager=manager, object_codec_class=numcodecs.JSON)


@contextlib.contextmanager
def open_io(path: str | os.PathLike, mode: str = "r") -> Iterator[Any]:
    """The pynwb/hdmf IO object of a local NWB file of either backend, closed at the end.

    Parameters
    ----------
    path : path-like
        An HDF5 NWB file or an NWB Zarr store.
    mode : {"r", "a"}
        Read only, or append (the writer's copy).

    Yields
    ------
    NWBHDF5IO or ZarrIO
        Call ``read()`` for the ``NWBFile`` or ``read_builder()`` for its builders.
    """
    if mode not in ("r", "a"):
        raise ValueError(f"mode must be 'r' or 'a', got {mode!r}")
    backend = nwb_backend(path)
    if backend == "zarr":
        _check_zarr_readable(Path(path))
        io = zarr_io(path, mode)
    else:
        from pynwb import NWBHDF5IO

        io = NWBHDF5IO(str(path), mode)
    with io:
        yield io


@contextlib.contextmanager
def open_root(
    path: str | os.PathLike, *, require_nwb: bool = True, writable: bool = False
) -> Iterator[Any]:
    """The raw root group of a local NWB file: ``h5py.File`` or ``zarr.Group``.

    Parameters
    ----------
    path : path-like
        An HDF5 NWB file or an NWB Zarr store.
    require_nwb : bool, default True
        Raise ``ValueError`` when the root has no ``nwb_version`` attribute.
    writable : bool, default False
        Open for deleting groups and editing attributes (the writer's temporary copy); a
        Zarr store's consolidated metadata is rewritten at the end.

    Raises
    ------
    FileNotFoundError, ValueError
        As :func:`nwb_backend`, or the file cannot be read, or is not NWB.
    """
    p = Path(path)
    try:
        backend = nwb_backend(p)
    except ValueError:
        if p.is_dir():
            raise
        raise ValueError(
            f"{p} is not a readable HDF5/NWB file (no HDF5 signature), nor an NWB Zarr store"
        ) from None
    if backend == "hdf5":
        try:
            root: Any = h5py.File(p, "a" if writable else "r")
        except OSError as err:
            raise ValueError(f"{p} is not a readable HDF5/NWB file ({err})") from None
        closing: Any = root
    else:
        zarr = _import_zarr()
        if not writable:
            _check_zarr_readable(p)
        root = zarr.open_group(str(p), mode="r+" if writable else "r")
        closing = contextlib.nullcontext()
    with closing:
        if require_nwb and "nwb_version" not in root.attrs:
            kind = "an HDF5 file" if backend == "hdf5" else "a Zarr store"
            raise ValueError(f"{p} is {kind} but not NWB (no nwb_version)")
        yield root
    if backend == "zarr" and writable and (p / ".zmetadata").is_file():
        zarr.consolidate_metadata(str(p))


def is_group(obj: Any) -> bool:
    """Whether a raw object (h5py or zarr) is a group, not a dataset/array."""
    if isinstance(obj, h5py.Group):
        return True
    return hasattr(obj, "items") and not hasattr(obj, "dtype")


def is_reference(dataset: Any) -> bool:
    """Whether a raw dataset holds object references (HDF5 references, or hdmf-zarr's
    ``zarr_dtype: object`` reference arrays)."""
    if isinstance(dataset, h5py.Dataset):
        return h5py.check_dtype(ref=dataset.dtype) is not None
    return dataset.attrs.get("zarr_dtype") == "object"


def reference_name(root: Any, ref: Any) -> str:
    """Base name of the object a reference points to (e.g. an electrode group's name)."""
    if isinstance(ref, dict):  # hdmf-zarr: {"source": ".", "path": "/general/...", ...}
        return str(ref.get("path", "")).rstrip("/").rsplit("/", 1)[-1]
    return root[ref].name.rsplit("/", 1)[-1]


def store_stem(path: str | os.PathLike) -> str:
    """A file's name without its extensions: ``x`` for ``x.nwb`` and ``x.nwb.zarr``."""
    name = Path(path).name
    if is_zarr_name(name):
        name = name[: -len(".zarr")]
    return Path(name).stem


def copy_store(source: Path, dest: Path) -> None:
    """Copy an HDF5 file, or a Zarr folder into ``dest`` (which may exist, empty)."""
    if source.is_dir():
        shutil.copytree(source, dest, dirs_exist_ok=True)
    else:
        shutil.copyfile(source, dest)


def store_size(path: Path) -> int:
    """Bytes of a file, or of every file in a Zarr folder (0 when missing)."""
    if not path.exists():
        return 0
    if not path.is_dir():
        return path.stat().st_size
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += (Path(folder) / name).stat().st_size
    return total


def fsync_path(path: Path) -> None:
    """Flush one file or one folder's entry list to disk; errors (e.g. a folder that cannot
    be opened on this platform) are ignored: flushing is best effort."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def fsync_store(path: Path) -> None:
    """Flush a file, or every file and folder of a Zarr store, to disk."""
    if not path.is_dir():
        with open(path, "rb") as fh:
            os.fsync(fh.fileno())
        return
    for folder, _, files in os.walk(path):
        for name in files:
            fsync_path(Path(folder) / name)
        fsync_path(Path(folder))


def remove_store(path: Path) -> None:
    """Delete a file or a Zarr folder (nothing when missing)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def replace_store(tmp: Path, target: Path) -> None:
    """Move a finished copy over ``target``: ``os.replace`` for a file; for a folder, the
    old store is renamed away (``.<name>.<pid>.<random>.old``), the new one renamed in, the
    old one deleted. No half-written store is ever under ``target``'s name; a process killed
    between the two renames leaves the old store under its hidden name, which
    :func:`restore_stranded` puts back."""
    if not tmp.is_dir():
        os.replace(tmp, target)
        return
    if not target.exists():
        os.rename(tmp, target)
        return
    old = target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}{_OLD_TAIL}")
    os.rename(target, old)
    try:
        os.rename(tmp, target)
    except BaseException:
        os.rename(old, target)
        raise
    remove_store(old)


def stranded_stores(target: Path) -> list[Path]:
    """Old stores of ``target`` renamed away by :func:`replace_store` and not deleted."""
    prefix = f".{target.name}."
    with contextlib.suppress(OSError):
        return sorted(
            p
            for p in target.parent.iterdir()
            if p.name.startswith(prefix) and p.name.endswith(_OLD_TAIL) and p.is_dir()
        )
    return []


def restore_stranded(target: Path) -> list[Path]:
    """Under the writers' lock: put back the old store when a write died between the two
    renames of :func:`replace_store` (``target`` missing), else delete leftovers."""
    handled = []
    for old in stranded_stores(target):
        if not target.exists():
            os.rename(old, target)
        else:
            remove_store(old)
        handled.append(old)
    return handled
