"""Append analysis results to NWB files, safely.

The one public entry point is :func:`write_results`. It never edits the user's file in
place: it copies the file next to itself, appends to the copy with pynwb, re-reads the copy
to check it, flushes it to disk and then atomically replaces the original
(``os.replace``). Any failure on the way (an exception, a full disk) removes the copy and
leaves the original byte-identical. A source that cannot be written gets its results in a
new file (a copy of the source plus the results), written the same way.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.request import urlopen

import h5py
import numpy as np
from pynwb import NWBHDF5IO

from nwb_subspace import ndx  # noqa: F401  (the namespace must be loaded before opening in "a" mode)
from nwb_subspace.io.from_nwb import analysis_from_nwb
from nwb_subspace.io.remote import (
    copy_without_raw,
    is_remote,
    open_nwb,
    probe,
    remote_name,
    resolve_source,
)
from nwb_subspace.io.to_nwb import analysis_to_nwb
from nwb_subspace.results import ResultSet, UnitColumn
from nwb_subspace.units.columns import UNIT_COLUMNS

DEFAULT_MODULE = "misc"
_RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")


class ResultsExistError(ValueError):
    """A run of that name is already stored and ``overwrite`` was not requested."""


class ResultsWriteError(RuntimeError):
    """Writing failed part-way; the target file was left as it was."""


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


def default_output_path(source: Path) -> Path:
    """Where results go when the source cannot be written: ``<stem>_subspace.nwb``."""
    return source.with_name(f"{source.stem}_subspace{source.suffix or '.nwb'}")


def _preflight(
    path: Path, results: ResultSet, run_name: str, module: str, overwrite: bool
) -> list[str]:
    """Check the file can take the results; return units columns to drop first."""
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise ValueError(f"{path} is not a readable HDF5/NWB file: {err}") from None
    with f:
        if "nwb_version" not in f.attrs:
            raise ValueError(f"{path} is an HDF5 file but not an NWB file (no nwb_version)")
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
    """Remove an old run and replaced units columns from the temporary copy (HDF5 level)."""
    with h5py.File(path, "a") as f:
        run_path = f"processing/{module}/{run_name}"
        if run_path in f:
            del f[run_path]
        units = f.get("units")
        for name in columns:
            for key in (name, f"{name}_index"):
                if key in units:
                    del units[key]
            colnames = [c.decode() if isinstance(c, bytes) else c for c in units.attrs["colnames"]]
            units.attrs["colnames"] = np.array(
                [c for c in colnames if c != name], dtype=h5py.string_dtype()
            )


def _append(path: Path, results: ResultSet, run_name: str, module: str) -> None:
    with NWBHDF5IO(str(path), "a") as io:
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
    with NWBHDF5IO(str(path), "r") as io:
        nwbfile = io.read()
        if run_name not in nwbfile.processing[module].data_interfaces:
            raise RuntimeError(f"results {run_name!r} missing after writing; nothing replaced")


def _fsync(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


@contextlib.contextmanager
def _temporary_sibling(target: Path) -> Iterator[Path]:
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
    finally:
        if tmp.exists():
            tmp.unlink()


def write_results(
    source: str | os.PathLike,
    results: ResultSet,
    run_name: str,
    *,
    output: str | os.PathLike | None = None,
    overwrite: bool = False,
    module: str = DEFAULT_MODULE,
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
        ``source``. Used automatically (as ``<stem>_subspace.nwb``) when ``source`` cannot
        be written. Must not exist.
    overwrite : bool
        Replace a stored run of the same name (and units columns of the same name).
    module : str
        Processing module to write into (default ``"misc"``).

    Returns
    -------
    Path
        The file that now holds the results.

    Raises
    ------
    ResultsExistError
        A run named ``run_name`` exists and ``overwrite`` is False.
    ValueError
        The source is not an NWB file, or the results do not fit it.
    """
    _check_run_name(run_name)
    if not isinstance(results, ResultSet):
        raise TypeError(f"results must be a ResultSet; got {type(results).__name__}")
    remote = _is_remote(source)
    if remote:
        source = str(resolve_source(str(source)))
        name = remote_name(source)
        output = Path(output) if output is not None else default_output_path(Path(name))
    else:
        source = Path(source)
        if not source.is_file():
            raise FileNotFoundError(f"no such NWB file: {source}")
        if output is None and not _writable(source):
            output = default_output_path(source)
    target = source if output is None else Path(output)
    if target != source:
        if target.exists() and (remote or target.resolve() != source.resolve()):
            raise FileExistsError(f"output {target} exists; choose a new path or remove it")
        if not os.access(target.parent, os.W_OK):
            raise PermissionError(f"cannot write into {target.parent}; pass another output")
    in_place = target == source
    drop = None if remote else _preflight(source, results, run_name, module, overwrite)
    with _temporary_sibling(target) as tmp:
        _copy_source(source, tmp)
        os.chmod(tmp, source.stat().st_mode & 0o7777 if in_place else 0o644)
        if drop is None:
            drop = _preflight(tmp, results, run_name, module, overwrite)
        try:
            if overwrite:
                _drop_in_copy(tmp, module, run_name, drop)
            _append(tmp, results, run_name, module)
            _verify(tmp, run_name, module)
            _fsync(tmp)
        except (ValueError, TypeError):
            raise  # bad results: the message says what to fix
        except Exception as err:
            what = f"{target} was not changed" if in_place else f"nothing was written to {target}"
            raise ResultsWriteError(
                f"writing results {run_name!r} failed and {what} (source not changed): {err}"
            ) from err
        os.replace(tmp, target)
    _fsync_dir(target.parent)
    return target


def _copy_source(source: str | Path, tmp: Path) -> None:
    """Copy a local file into ``tmp``; for a remote one (HTTP/S), export it lazily without
    its raw voltage (:func:`~nwb_subspace.io.remote.copy_without_raw`), or download it
    whole when the server does not answer Range requests."""
    if isinstance(source, Path):
        shutil.copyfile(source, tmp)
        return
    if probe(str(source)).ranges:
        copy_without_raw(source, tmp)
        return
    with urlopen(str(source)) as response, open(tmp, "wb") as out:  # noqa: S310
        shutil.copyfileobj(response, out, length=1 << 22)


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def list_runs(path: str | os.PathLike, module: str = DEFAULT_MODULE) -> list[str]:
    """Names of the ``SubspaceAnalysis`` runs stored in a file (local path or URL)."""
    with open_nwb(path) as nwbfile:
        if module not in nwbfile.processing:
            return []
        return [
            name
            for name, obj in nwbfile.processing[module].data_interfaces.items()
            if isinstance(obj, ndx.SubspaceAnalysis)
        ]


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
    with NWBHDF5IO(str(path), "r") as io:
        nwbfile = io.read()
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
