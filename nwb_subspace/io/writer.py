"""Append analysis results to NWB files, safely.

The one public entry point is :func:`write_results`. It never edits the user's file in
place: it copies the file next to itself, appends to the copy with pynwb, re-reads the copy
to check it, flushes it to disk and then atomically replaces the original
(``os.replace``). Any failure on the way (an exception, a full disk) removes the copy and
leaves the original byte-identical. A source that cannot be written gets its results in a
new file (a copy of the source plus the results), written the same way.

Writers of one file take turns: each holds an OS advisory lock (``.<name>.lock`` beside the
target, :mod:`filelock`) from reading the source to the ``os.replace``, so two processes
appending at once both store their run, and a run name is checked again under the lock. A
write killed part-way (``kill -9``) leaves a hidden ``.<name>.<pid>.<random>.tmp`` copy; the
next write of that file removes it once its process is gone. A stored run that pynwb cannot
read (a deleted dataset, say) is named by :class:`DamagedRunError`; :func:`check_runs` reads
each run on its own and :func:`drop_runs` removes runs at the HDF5 level
(``nwb-subspace repair``).

An NWB Zarr store (a ``.nwb.zarr`` folder, :mod:`nwb_subspace.io.backend`) is handled the same
way: its copy is a hidden temporary folder beside it, appended to with hdmf-zarr, and moved
in by renaming the old store away, renaming the new one in and deleting the old one
(:func:`~nwb_subspace.io.backend.replace_store`; a write killed between the two renames
leaves the old store under a hidden ``.old`` name, put back by the next writer). Results are
appended in place as for HDF5, and an ``output`` of a Zarr source is a Zarr store (``.zarr``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from urllib.request import urlopen

import h5py
import numpy as np
from filelock import FileLock, Timeout

from nwb_subspace import ndx  # noqa: F401  (the namespace must be loaded before opening in "a" mode)
from nwb_subspace.io import backend
from nwb_subspace.io.dandi_names import derived_output_name
from nwb_subspace.io.from_nwb import analysis_from_nwb
from nwb_subspace.io.remote import (
    copy_without_raw,
    is_remote,
    open_nwb,
    probe,
    resolve_source,
)
from nwb_subspace.io.to_nwb import analysis_to_nwb
from nwb_subspace.results import ResultSet, UnitColumn
from nwb_subspace.units.columns import UNIT_COLUMNS

DEFAULT_MODULE = "misc"
LOCK_TIMEOUT_S = 900.0
"""How long a writer waits for another writer of the same file (seconds)."""
_RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")
_RUN_TYPE = "SubspaceAnalysis"
_TEMP_TAIL = re.compile(r"^(\d+)\.[A-Za-z0-9_]+\.tmp$")
log = logging.getLogger(__name__)


class ResultsExistError(ValueError):
    """A run of that name is already stored and ``overwrite`` was not requested."""


class ResultsWriteError(RuntimeError):
    """Writing failed part-way; the target file was left as it was."""


class ResultsLockedError(ResultsWriteError):
    """Another process kept writing the same file for longer than the lock timeout."""


class ResultsNoSpaceError(ResultsWriteError, OSError):
    """The disk ran out of space while writing; the target file was left as it was."""


class DamagedRunError(ValueError):
    """A stored run cannot be read back (pynwb fails on one of its objects).

    Attributes
    ----------
    path : str
        The file.
    runs : dict of str to str
        Each unreadable run and, in one line, why.
    """

    def __init__(self, path: str | os.PathLike, runs: dict[str, str], doing: str = "") -> None:
        self.path = str(path)
        self.runs = dict(runs)
        names = ", ".join(repr(n) for n in self.runs)
        why = "; ".join(r if len(self.runs) == 1 else f"{n}: {r}" for n, r in self.runs.items())
        noun = "run" if len(self.runs) == 1 else "runs"
        super().__init__(
            f"{doing}{self.path}: {noun} {names} cannot be read ({why}); list damaged runs "
            f"with `nwb-subspace repair {self.path}`, drop them with "
            f"`nwb-subspace repair {self.path} --drop`"
        )


def one_line(err: BaseException | str, limit: int = 400) -> str:
    """An error message on one line, at most ``limit`` characters.

    An hdmf ``ConstructError`` (whose text embeds a whole builder) is shortened to the
    object's path and the reason.
    """
    if isinstance(err, BaseException) and type(err).__name__ == "ConstructError":
        args = err.args
        if len(args) == 2 and hasattr(args[0], "path"):
            where = str(args[0].path)
            where = "/" + where[len("root/") :] if where.startswith("root/") else where
            err = f"{where}: {args[1]}"
    text = " ".join(str(err).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _check_run_name(run_name: str) -> None:
    if not isinstance(run_name, str) or not _RUN_NAME.match(run_name):
        raise ValueError(
            f"run name {run_name!r} is not usable: use 1-128 letters, digits, '_', '-' or '.', "
            "starting with a letter or digit"
        )


def _is_remote(source: str | os.PathLike) -> bool:
    return is_remote(str(source))


def _writable(path: Path) -> bool:
    """Whether we may replace ``path``: its mode allows writing (respected even for root,
    who passes ``os.access``) and its folder takes the temporary copy."""
    mode_allows = bool(path.stat().st_mode & 0o222)
    return mode_allows and os.access(path, os.W_OK) and os.access(path.parent, os.W_OK)


def default_output_path(source: str | os.PathLike) -> Path:
    """Where results go when the source cannot be written: a new file beside a local source
    (in the current folder for a remote one) named by
    :func:`~nwb_subspace.io.dandi_names.derived_output_name`: a DANDI-like source
    ``sub-01_ses-2_ecephys.nwb`` gives ``sub-01_ses-2_desc-subspace_ecephys.nwb``, any other
    ``<stem>.nwb`` gives ``<stem>_desc-subspace.nwb``."""
    name = derived_output_name(source)
    return Path(name) if is_remote(source) else Path(source).with_name(name)


def _preflight(
    path: Path, results: ResultSet, run_name: str, module: str, overwrite: bool
) -> list[str]:
    """Check the file (HDF5 or an NWB Zarr store) can take the results; return units
    columns to drop first."""
    with backend.open_root(path, require_nwb=False) as f:
        if "nwb_version" not in f.attrs:
            kind = "a Zarr store" if path.is_dir() else "an HDF5 file"
            raise ValueError(f"{path} is {kind} but not an NWB file (no nwb_version)")
        run_path = f"processing/{module}/{run_name}"
        if run_path in f and not overwrite:
            raise ResultsExistError(
                f"{path} already holds results named {run_name!r} (at /{run_path}); choose "
                "another run name or pass overwrite=True to replace them"
            )
        units = f.get("units")
        n_units = len(units["id"]) if units is not None else 0
        needs_units = results.max_unit_row() >= 0 or results.unit_columns
        if needs_units and units is None:
            raise ValueError(f"{path} has no units table; these results refer to units")
        if results.max_unit_row() >= n_units:
            raise ValueError(
                f"results refer to unit row {results.max_unit_row()} but {path} has {n_units} units"
            )
        drop = []
        for col in results.unit_columns:
            _check_unit_column(col, n_units)
            if units is not None and col.name in units:
                stored = units[col.name][()]
                if _same_values(stored, col.values):
                    continue
                if not overwrite:
                    raise ResultsExistError(
                        f"units column {col.name!r} already exists in {path} with other "
                        "values; pass overwrite=True to replace it"
                    )
                drop.append(col.name)
        return drop


def _check_unit_column(col: UnitColumn, n_units: int) -> None:
    if len(col.values) != n_units:
        raise ValueError(
            f"units column {col.name!r} has {len(col.values)} values but the file has "
            f"{n_units} units; give one value per unit"
        )
    if not col.description:
        raise ValueError(f"units column {col.name!r} needs a description")


def _same_values(stored: np.ndarray, new) -> bool:
    new = np.asarray(new)
    if stored.shape != new.shape:
        return False
    if stored.dtype.kind in "OSU" or new.dtype.kind in "OSU":
        dec = [s.decode() if isinstance(s, bytes) else str(s) for s in stored.ravel()]
        return dec == [str(s) for s in new.ravel()]
    return bool(np.array_equal(stored, new, equal_nan=True))


def _drop_in_copy(path: Path, module: str, run_name: str, columns: list[str]) -> None:
    """Remove an old run and replaced units columns from the temporary copy (HDF5 or Zarr
    level: pynwb never reads them)."""
    with backend.open_root(path, writable=True) as f:
        run_path = f"processing/{module}/{run_name}"
        if run_path in f:
            del f[run_path]
        units = f.get("units")
        for name in columns:
            for key in (name, f"{name}_index"):
                if key in units:
                    del units[key]
            colnames = [c.decode() if isinstance(c, bytes) else c for c in units.attrs["colnames"]]
            kept = [c for c in colnames if c != name]
            if isinstance(f, h5py.File):
                units.attrs["colnames"] = np.array(kept, dtype=h5py.string_dtype())
            else:  # zarr attributes are JSON
                units.attrs["colnames"] = kept


def _append(path: Path, results: ResultSet, run_name: str, module: str) -> None:
    with backend.open_io(path, "a") as io:
        nwbfile = io.read()
        for col in results.unit_columns:
            if col.name in (nwbfile.units.colnames if nwbfile.units is not None else ()):
                continue  # identical values already stored
            nwbfile.units.add_column(
                name=col.name,
                description=col.description,
                data=list(col.values)
                if np.asarray(col.values).dtype.kind in "OSU"
                else np.asarray(col.values),
            )
        container = analysis_to_nwb(results, nwbfile, run_name)
        if module in nwbfile.processing:
            pm = nwbfile.processing[module]
        else:
            pm = nwbfile.create_processing_module(
                name=module, description="Results of nwb-subspace analyses."
            )
        pm.add(container)
        io.write(nwbfile)


def _verify(path: Path, run_name: str, module: str) -> None:
    with backend.open_io(path, "r") as io:
        nwbfile = io.read()
        if run_name not in nwbfile.processing[module].data_interfaces:
            raise RuntimeError(f"results {run_name!r} missing after writing; nothing replaced")


def _fsync(path: Path) -> None:
    backend.fsync_store(path)  # a file, or every file of a Zarr store


def lock_path(target: str | os.PathLike) -> Path:
    """The lock file writers of ``target`` take turns on: ``.<name>.lock`` beside it."""
    target = Path(target)
    return target.with_name(f".{target.name}.lock")


@contextlib.contextmanager
def target_lock(target: Path, timeout: float) -> Iterator[None]:
    """Hold the writers' lock of ``target`` (an OS advisory lock, released if we die)."""
    lock = FileLock(lock_path(target), timeout=timeout)
    try:
        lock.acquire()
    except Timeout:
        raise ResultsLockedError(
            f"another process has been writing {target} for over {timeout:g} s (it holds "
            f"{lock_path(target)}); {target} was not changed: wait for it to finish and retry"
        ) from None
    try:
        yield
    finally:
        lock.release()


def _temp_prefix(target: Path) -> str:
    return f".{target.name}."


@contextlib.contextmanager
def _temporary_sibling(target: Path, folder: bool = False) -> Iterator[Path]:
    """A temporary file (``folder``: an empty folder, for a Zarr store) beside ``target``,
    named ``.<name>.<pid>.<random>.tmp`` (the PID lets a later writer tell a copy left by a
    killed process from a live one)."""
    prefix, where = f"{_temp_prefix(target)}{os.getpid()}.", target.parent
    if folder:
        name = tempfile.mkdtemp(prefix=prefix, suffix=".tmp", dir=where)
    else:
        fd, name = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=where)
        os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
    finally:
        backend.remove_store(tmp)


def _process_gone(pid: int) -> bool:
    """Whether no live process has this PID (a zombie counts as gone)."""
    if pid == os.getpid():
        return True  # we hold the lock, so no write of ours is under way
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    with contextlib.suppress(OSError, IndexError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] == "Z"
    return False


def stale_temp_files(target: str | os.PathLike) -> list[Path]:
    """Temporary copies of ``target`` left by writes whose process is gone (``kill -9``).

    Only meaningful while holding the target's lock, or to report; copies of unknown
    origin (no PID in the name) are not included.
    """
    target = Path(target)
    prefix = _temp_prefix(target)
    stale = []
    with contextlib.suppress(OSError):
        for path in target.parent.iterdir():
            name = path.name
            if not (name.startswith(prefix) and name.endswith(".tmp")):
                continue
            match = _TEMP_TAIL.match(name[len(prefix) :])
            if match and _process_gone(int(match.group(1))):
                stale.append(path)
    return sorted(stale)


def remove_stale_temps(target: Path) -> list[Path]:
    """Remove (and log) copies of ``target`` left by killed writes; call under the lock."""
    removed = backend.restore_stranded(target)  # a Zarr store renamed away by a killed write
    for path in stale_temp_files(target):
        with contextlib.suppress(OSError):
            size = backend.store_size(path)
            backend.remove_store(path)
            removed.append(path)
            log.warning(
                "removed %s (%.1f MB), a temporary copy left by an interrupted write of %s",
                path,
                size / 1e6,
                target.name,
            )
    return removed


def _is_no_space(err: BaseException) -> bool:
    """Whether an error (or one it was raised from) is a full disk (ENOSPC)."""
    seen = 0
    while err is not None and seen < 10:
        if isinstance(err, OSError) and err.errno == errno.ENOSPC:
            return True
        text = str(err)
        if "No space left on device" in text or "errno = 28," in text:
            return True
        err, seen = err.__cause__ or err.__context__, seen + 1
    return False


def _no_space_detail(err: BaseException) -> str:
    """The system's own words for a full disk: the ``OSError`` (ENOSPC) in the chain, else
    the start of the message and, if cut off there, its 'No space left on device'."""
    first, cur, seen = err, err, 0
    while cur is not None and seen < 10:
        if isinstance(cur, OSError) and cur.errno == errno.ENOSPC:
            return one_line(cur, limit=200)
        cur, seen = cur.__cause__ or cur.__context__, seen + 1
    text = one_line(first, limit=200)
    if "No space left on device" in str(first) and "No space left on device" not in text:
        text += " No space left on device"
    return text


def _mount_point(folder: Path) -> Path:
    folder = folder.resolve()
    dev = folder.stat().st_dev
    while folder.parent != folder and folder.parent.stat().st_dev == dev:
        folder = folder.parent
    return folder


def _nbytes(obj, depth: int = 0, seen: set | None = None) -> int:
    """Rough size of the arrays, tensors and models held by ``obj``."""
    seen = set() if seen is None else seen
    if depth > 8 or id(obj) in seen:
        return 0
    seen.add(id(obj))
    if isinstance(obj, np.ndarray):
        return int(obj.nbytes)
    if hasattr(obj, "element_size") and hasattr(obj, "numel"):
        return int(obj.element_size() * obj.numel())
    if hasattr(obj, "state_dict") and callable(obj.state_dict):
        return sum(_nbytes(v, depth + 1, seen) for v in obj.state_dict().values())
    if isinstance(obj, dict):
        return sum(_nbytes(v, depth + 1, seen) for v in obj.values())
    if isinstance(obj, list | tuple):
        return sum(_nbytes(v, depth + 1, seen) for v in obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return sum(
            _nbytes(getattr(obj, f.name, None), depth + 1, seen) for f in dataclasses.fields(obj)
        )
    return 0


def _no_space_error(
    err: BaseException,
    target: Path,
    copy_bytes: int,
    results: ResultSet,
    what: str,
    reclaim: int = 0,
) -> ResultsNoSpaceError:
    """One-line error for a full disk; ``reclaim``: bytes of the copy about to be removed."""
    folder = target.parent
    try:
        free = f"{(shutil.disk_usage(folder).free + reclaim) / 1e6:.1f} MB free"
        where = f"{_mount_point(folder)} (folder {folder})"
    except OSError:
        free, where = "free space unknown", str(folder)
    needed = (copy_bytes + _nbytes(results)) / 1e6
    new = ResultsNoSpaceError(
        f"no space left on {where}: about {needed:.1f} MB needed (a full copy of the file, "
        f"{copy_bytes / 1e6:.1f} MB, plus the results), {free}; {what}; free some space or "
        f"write the results to another disk (--output) [{_no_space_detail(err)}]"
    )
    new.errno = errno.ENOSPC
    return new


def write_results(
    source: str | os.PathLike,
    results: ResultSet,
    run_name: str,
    *,
    output: str | os.PathLike | None = None,
    overwrite: bool = False,
    module: str = DEFAULT_MODULE,
    lock_timeout: float | None = None,
) -> Path:
    """Append a result set to an NWB file as one ``SubspaceAnalysis`` container.

    Parameters
    ----------
    source : path-like
        The NWB file the results belong to.
    results : ResultSet
        What to write; unit references are row indices into the file's ``units`` table.
    run_name : str
        Name of the container in ``/processing/<module>/``.
    output : path-like, optional
        Write a new file (a copy of ``source`` plus the results) here instead of updating
        ``source``. Used automatically when ``source`` cannot be written (a remote source, a
        read-only file): :func:`default_output_path`, e.g. ``sub-01_ses-2_ecephys.nwb`` ->
        ``sub-01_ses-2_desc-subspace_ecephys.nwb``, ``session.nwb`` ->
        ``session_desc-subspace.nwb``. Must not exist.
    overwrite : bool
        Replace a stored run of the same name (and units columns of the same name). The old
        run is deleted at the HDF5 level, so a damaged run (see :func:`check_runs`) can be
        replaced too.
    module : str
        Processing module to write into (default ``"misc"``).
    lock_timeout : float, optional
        Seconds to wait while another process writes the same file (default
        ``LOCK_TIMEOUT_S``); writers take turns, each adding its run to the other's result.

    Returns
    -------
    Path
        The file that now holds the results.

    Raises
    ------
    ResultsExistError
        A run named ``run_name`` exists and ``overwrite`` is False (checked again once the
        file's lock is held).
    DamagedRunError
        Another stored run cannot be read, so pynwb cannot append (``nwb-subspace repair``).
    ResultsLockedError
        Another writer held the file for longer than ``lock_timeout``.
    ResultsNoSpaceError
        The disk filled up; the message says where and about how much space is needed.
    ResultsWriteError
        Writing failed otherwise; the target was left as it was.
    ValueError
        The source is not an NWB file, or the results do not fit it.
    """
    _check_run_name(run_name)
    if not isinstance(results, ResultSet):
        raise TypeError(f"results must be a ResultSet; got {type(results).__name__}")
    remote = _is_remote(source)
    if remote:
        output = Path(output) if output is not None else default_output_path(str(source))
        source = str(resolve_source(str(source)))
    else:
        source = Path(source)
        _restore_interrupted(source)
        if not source.exists():
            raise FileNotFoundError(f"no such NWB file: {source}")
        if output is None and not _writable(source):
            output = _default_output(source)
    target = source if output is None else Path(output)
    zarr = not remote and source.is_dir()  # an NWB Zarr store: the output is one too
    if target != source:
        _check_output_kind(source, target, zarr)
        if target.exists() and (remote or target.resolve() != source.resolve()):
            raise FileExistsError(f"output {target} exists; choose a new path or remove it")
        if not os.access(target.parent, os.W_OK):
            raise PermissionError(f"cannot write into {target.parent}; pass another output")
    in_place = target == source
    what = f"{target} was not changed" if in_place else f"nothing was written to {target}"
    if not remote:  # fail fast, before waiting for another writer
        _preflight(source, results, run_name, module, overwrite)
    with target_lock(target, LOCK_TIMEOUT_S if lock_timeout is None else lock_timeout):
        remove_stale_temps(target)
        if not in_place and target.exists():  # another writer made it while we waited
            raise FileExistsError(f"output {target} exists; choose a new path or remove it")
        # Again under the lock: another writer may have stored this run meanwhile.
        drop = None if remote else _preflight(source, results, run_name, module, overwrite)
        copy_bytes = 0 if remote else backend.store_size(source)
        try:
            with _temporary_sibling(target, folder=zarr) as tmp:
                _copy_source(source, tmp)
                copy_bytes = backend.store_size(tmp)
                os.chmod(tmp, _copy_mode(source, in_place, zarr))
                if drop is None:
                    drop = _preflight(tmp, results, run_name, module, overwrite)
                try:
                    if overwrite:  # HDF5 level: a damaged old run is never read by pynwb
                        _drop_in_copy(tmp, module, run_name, drop)
                    _append(tmp, results, run_name, module)
                    _verify(tmp, run_name, module)
                    _fsync(tmp)
                except Exception as err:
                    damaged = damaged_after(err, tmp, module, run_name)
                    if damaged:  # pynwb failed on another stored run, not on ours
                        raise DamagedRunError(
                            source, damaged, doing=f"cannot add results {run_name!r} ({what}): "
                        ) from None
                    if isinstance(err, ValueError | TypeError):
                        raise  # bad results: the message says what to fix
                    if _is_no_space(err):
                        reclaim = backend.store_size(tmp)
                        raise _no_space_error(
                            err, target, copy_bytes, results, what, reclaim
                        ) from err
                    raise ResultsWriteError(
                        f"writing results {run_name!r} failed and {what} (source not "
                        f"changed): {one_line(err)}"
                    ) from err
                backend.replace_store(tmp, target)  # os.replace; a Zarr folder: see there
        except OSError as err:
            if isinstance(err, ResultsWriteError) or not _is_no_space(err):
                raise
            raise _no_space_error(err, target, copy_bytes, results, what) from err
    backend.fsync_path(target.parent)
    return target


def _copy_mode(source: Path, in_place: bool, folder: bool) -> int:
    """Permissions of the copy: the source's when it replaces it, else the usual ones of a
    new file (a new Zarr folder must be searchable)."""
    if in_place:
        return source.stat().st_mode & 0o7777
    return 0o755 if folder else 0o644


def _restore_interrupted(target: Path) -> None:
    """Put back a Zarr store that a write killed between its two renames left under a
    hidden ``.old`` name (:func:`~nwb_subspace.io.backend.replace_store`), under the lock."""
    if target.exists() or not backend.stranded_stores(target):
        return
    with target_lock(target, LOCK_TIMEOUT_S):
        restored = backend.restore_stranded(target)
    log.warning("put back %s, left by an interrupted write of %s", restored, target.name)


def _default_output(source: Path) -> Path:
    """:func:`default_output_path`; for an NWB Zarr store (``x.nwb.zarr``) the same name
    with ``.zarr`` added (the output is a Zarr store too)."""
    if not source.is_dir():
        return default_output_path(source)
    named = default_output_path(source.with_name(f"{backend.store_stem(source)}.nwb"))
    return named.with_name(f"{named.name}.zarr")


def _check_output_kind(source: str | Path, target: Path, zarr: bool) -> None:
    """The output keeps the source's backend: a Zarr store (``.zarr``) for a Zarr source."""
    if zarr and not backend.is_zarr_name(target):
        raise ValueError(
            f"{source} is an NWB Zarr store, so the output is one too: give an output "
            f"ending in .zarr (e.g. {_default_output(Path(source)).name}), not {target.name}"
        )
    if not zarr and backend.is_zarr_name(target):
        raise ValueError(
            f"{source} is an HDF5 NWB file, so the output is one too: give an output name "
            f"not ending in .zarr, not {target.name} (convert the source to Zarr first)"
        )


def _copy_source(source: str | Path, tmp: Path) -> None:
    """Copy a local file (or Zarr store) into ``tmp``; for a remote one (HTTP/S), export it
    lazily without its raw voltage (:func:`~nwb_subspace.io.remote.copy_without_raw`), or
    download it whole when the server does not answer Range requests."""
    if isinstance(source, Path):
        backend.copy_store(source, tmp)
        return
    if probe(str(source)).ranges:
        copy_without_raw(source, tmp)
        return
    with urlopen(str(source)) as response, open(tmp, "wb") as out:  # noqa: S310
        shutil.copyfileobj(response, out, length=1 << 22)


def damaged_after(err: BaseException, path: Path, module: str, run_name: str) -> dict[str, str]:
    """After pynwb failed on ``path``: the stored runs (other than ``run_name``) that cannot
    be read, if they are why; empty when the failure is something else."""
    if _is_no_space(err) or not path.exists():
        return {}
    try:
        status = check_runs(path, module, full=False)
    except Exception:  # noqa: BLE001 -- the original error is reported instead
        return {}
    return {name: why for name, why in status.items() if why and name != run_name}


def _run_groups(f, module: str) -> list[str]:
    """``SubspaceAnalysis`` groups of a module, from the raw root (h5py or zarr)."""
    group = f.get(f"processing/{module}")
    if group is None or not backend.is_group(group):
        return []
    names = []
    for name, obj in group.items():
        kind = obj.attrs.get("neurodata_type") if backend.is_group(obj) else None
        kind = kind.decode() if isinstance(kind, bytes) else kind
        if kind == _RUN_TYPE:
            names.append(name)
    return names


def check_runs(
    path: str | os.PathLike,
    module: str = DEFAULT_MODULE,
    *,
    runs: Iterable[str] | None = None,
    full: bool = True,
) -> dict[str, str | None]:
    """Try reading each stored run on its own, without reading the rest of the file.

    Parameters
    ----------
    path : path-like
        A local NWB file.
    module : str
        Processing module holding the runs (default ``"misc"``).
    runs : iterable of str, optional
        Only these runs (default: every ``SubspaceAnalysis`` group in the module).
    full : bool
        Also rebuild the results (:func:`~nwb_subspace.io.from_nwb.analysis_from_nwb`, models
        included), as :func:`read_results` does; else only build the pynwb objects.

    Returns
    -------
    dict of str to str or None
        Each run's name and ``None`` when it reads, else why not (one line).

    Raises
    ------
    ValueError
        The file is not a readable HDF5/NWB file.
    KeyError
        A run named in ``runs`` is not stored.
    """
    path = Path(path)
    with backend.open_root(path, require_nwb=False) as f:
        stored = _run_groups(f, module)
    names = stored if runs is None else list(runs)
    missing = [n for n in names if n not in stored]
    if missing:
        raise KeyError(f"{path} holds no run named {missing[0]!r}; runs: {stored}")
    status: dict[str, str | None] = {}
    with backend.open_io(path, "r") as io:
        root = io.read_builder()
        for name in names:
            try:
                container = io.manager.construct(root["processing"][module][name])
                if full:
                    analysis_from_nwb(container, device="cpu")
                status[name] = None
            except Exception as err:  # noqa: BLE001 -- reported, one line per run
                status[name] = one_line(err, limit=300)
    return status


def drop_runs(
    path: str | os.PathLike,
    runs: Iterable[str],
    *,
    module: str = DEFAULT_MODULE,
    lock_timeout: float | None = None,
) -> Path:
    """Delete stored runs at the HDF5 level (pynwb never reads them), atomically.

    Like :func:`write_results`: under the file's lock, on a copy beside it that then
    replaces it (``os.replace``); any failure leaves the file as it was. HDF5 does not give
    the space back, so the file keeps its size.

    Parameters
    ----------
    path : path-like
        A local NWB file that may be written.
    runs : iterable of str
        Names of runs in ``/processing/<module>/``.
    module : str
        Processing module holding them (default ``"misc"``).
    lock_timeout : float, optional
        Seconds to wait for another writer (default ``LOCK_TIMEOUT_S``).

    Returns
    -------
    Path
        The file.
    """
    path = Path(path)
    names = list(runs)
    if not path.exists():
        raise FileNotFoundError(f"no such NWB file: {path}")
    if not _writable(path):
        raise PermissionError(f"cannot write {path} (or its folder); nothing dropped")
    what = f"{path} was not changed"
    with target_lock(path, LOCK_TIMEOUT_S if lock_timeout is None else lock_timeout):
        remove_stale_temps(path)
        with backend.open_root(path, require_nwb=False) as f:
            stored = _run_groups(f, module)
        missing = [n for n in names if n not in stored]
        if missing:
            raise KeyError(f"{path} holds no run named {missing[0]!r}; runs: {stored}")
        copy_bytes = backend.store_size(path)
        try:
            with _temporary_sibling(path, folder=path.is_dir()) as tmp:
                backend.copy_store(path, tmp)
                os.chmod(tmp, path.stat().st_mode & 0o7777)
                with backend.open_root(tmp, require_nwb=False, writable=True) as f:
                    for name in names:
                        del f[f"processing/{module}/{name}"]
                _fsync(tmp)
                backend.replace_store(tmp, path)
        except OSError as err:
            if not _is_no_space(err):
                raise
            raise _no_space_error(err, path, copy_bytes, ResultSet(), what) from err
    backend.fsync_path(path.parent)
    for name in names:
        log.debug("dropped run %r from %s", name, path)
    return path


def list_runs(path: str | os.PathLike, module: str = DEFAULT_MODULE) -> list[str]:
    """Names of the ``SubspaceAnalysis`` runs stored in a file (local path or URL).

    Raises :class:`DamagedRunError` naming the runs that cannot be read, when those keep
    pynwb from reading a local file.
    """
    try:
        with open_nwb(path) as nwbfile:
            if module not in nwbfile.processing:
                return []
            return [
                name
                for name, obj in nwbfile.processing[module].data_interfaces.items()
                if isinstance(obj, ndx.SubspaceAnalysis)
            ]
    except Exception as err:
        damaged = {} if _is_remote(path) else damaged_after(err, Path(path), module, "")
        if damaged:
            raise DamagedRunError(path, damaged) from None
        raise


def read_results(
    path: str | os.PathLike,
    run_name: str | None = None,
    *,
    module: str = DEFAULT_MODULE,
    device: str = "cpu",
) -> ResultSet:
    """Read a stored run back into a ``ResultSet`` (models rebuilt, ready to predict).

    ``run_name`` may be omitted when the file holds exactly one run. Units columns written
    by nwb-subspace (see ``nwb_subspace.units.columns``) are returned in ``unit_columns``.
    """
    runs = list_runs(path, module)
    if run_name is None:
        if len(runs) != 1:
            raise ValueError(f"{path} holds {len(runs)} runs {runs}; name the one to read")
        run_name = runs[0]
    if run_name not in runs:
        raise KeyError(f"{path} holds no run named {run_name!r}; runs: {runs}")
    with open_nwb(path) as nwbfile:
        results = analysis_from_nwb(nwbfile.processing[module][run_name], device=device)
        if nwbfile.units is not None:
            for name in UNIT_COLUMNS:
                if name in nwbfile.units.colnames:
                    results.unit_columns.append(
                        UnitColumn(
                            name=name,
                            values=np.asarray(nwbfile.units[name].data[:]),
                            description=nwbfile.units[name].description,
                        )
                    )
    return results
