"""``nwb-subspace repair``: find stored runs that cannot be read, and drop them.

Kept apart from ``cli/main.py``, which registers it with :func:`add_repair_parser`. Also
holds :func:`describe_error`, which turns any error the command line meets into one line
(naming damaged runs when they are why a file cannot be read).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2

__all__ = ["add_repair_parser", "describe_error", "run_repair_command"]


def add_repair_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``repair`` sub-command to an ``argparse`` sub-parsers object."""
    p = subparsers.add_parser(
        "repair",
        help="list stored runs that cannot be read (and drop them with --drop)",
        description="Read every stored run on its own and say which cannot be read and why. "
        "With --drop, delete those runs (at the HDF5 level, on a copy that atomically "
        "replaces the file, under the file's lock) and the temporary copies left by killed "
        "writes. Readable runs are never dropped. Exit code 1 when damaged runs remain.",
    )
    p.add_argument("file", help="local NWB file holding nwb-subspace results")
    p.add_argument("--run", metavar="NAME", default=None, help="check (or drop) only this run")
    p.add_argument("--drop", action="store_true", help="delete the runs that cannot be read")
    p.set_defaults(func=run_repair_command)
    return p


def run_repair_command(args: argparse.Namespace) -> int:
    """Run ``nwb-subspace repair``; print one line per run; return the exit code."""
    from nwb_subspace.io.backend import nwb_backend, store_size
    from nwb_subspace.io.writer import (
        DEFAULT_MODULE,
        check_runs,
        drop_runs,
        one_line,
        remove_stale_temps,
        stale_temp_files,
        target_lock,
    )

    path = Path(args.file)
    if not path.exists():
        return _fail(f"no such file: {path}")
    try:
        nwb_backend(path)  # an HDF5 file or an NWB Zarr store
    except ValueError as err:
        return _fail(one_line(err))
    try:
        status = check_runs(path, DEFAULT_MODULE, runs=None if args.run is None else [args.run])
    except (KeyError, ValueError) as err:
        return _fail(one_line(err.args[0] if isinstance(err, KeyError) else err))
    damaged = [name for name, why in status.items() if why]
    print(f"{path}: {len(status)} run(s), {len(damaged)} cannot be read")
    for name, why in status.items():
        print(f"  {name}: {'readable' if why is None else 'cannot be read: ' + why}")
    stale = stale_temp_files(path)
    for tmp in stale:
        size = store_size(tmp)  # a file, or a Zarr store's folder
        print(f"  leftover of a killed write: {tmp.name} ({size / 1e6:.1f} MB)")
    if not args.drop:
        if damaged:
            print(f"drop them with: nwb-subspace repair {path} --drop")
        return EXIT_FAILED if damaged else EXIT_OK
    if not damaged and not stale:
        print("nothing to drop" + (" (readable runs are never dropped)" if status else ""))
        return EXIT_OK
    try:
        if damaged:
            drop_runs(path, damaged, module=DEFAULT_MODULE)
            print(f"dropped {', '.join(damaged)} from {path}")
        else:
            with target_lock(path, 60.0):
                remove_stale_temps(path)
        if stale:
            print(f"removed {len(stale)} leftover temporary file(s)")
    except (OSError, KeyError, RuntimeError) as err:
        return _fail(one_line(err))
    return EXIT_OK


def _fail(message: str) -> int:
    import sys

    print(f"nwb-subspace: error: {message}", file=sys.stderr)
    return EXIT_BAD_INPUT


def describe_error(err: BaseException, args: argparse.Namespace | None = None) -> tuple[str, int]:
    """One line for an error the command line did not expect, and the exit code.

    A failed or refused write (``ResultsWriteError``, a full disk included) and a file that
    cannot be read because of damaged runs (named, with the repair command) get exit code
    2; anything else gets its type and first words and exit code 1, with a pointer to
    ``--debug`` for the traceback.

    Parameters
    ----------
    err : BaseException
        The error.
    args : argparse.Namespace, optional
        The parsed command line; its ``file`` (when a local NWB file) is checked for
        damaged runs when pynwb could not read it.

    Returns
    -------
    tuple of (str, int)
        The message (without the ``nwb-subspace: error:`` prefix) and the exit code.
    """
    from nwb_subspace.io.writer import (
        DamagedRunError,
        ResultsWriteError,
        damaged_after,
        one_line,
    )

    if isinstance(err, ResultsWriteError | DamagedRunError):
        return one_line(err, limit=1000), EXIT_BAD_INPUT
    source = getattr(args, "file", None)
    if isinstance(source, str | os.PathLike) and Path(source).exists():
        damaged = damaged_after(err, Path(source), "misc", "")
        if damaged:
            return one_line(DamagedRunError(source, damaged), limit=1000), EXIT_BAD_INPUT
    if isinstance(err, ValueError | TypeError | OSError):
        return one_line(err, limit=1000), EXIT_BAD_INPUT
    return (
        f"{type(err).__name__}: {one_line(err)} (rerun with --debug for the traceback)",
        EXIT_FAILED,
    )
