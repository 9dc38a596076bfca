"""Write a file whole or not at all: into a temporary file beside the target, then rename.

``os.replace`` within one folder is atomic on POSIX and Windows, so a reader sees either the
old file or the new one, never half of one; a failure on the way (an exception, a full disk,
Ctrl-C) removes the temporary file and leaves the target as it was.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

__all__ = ["write_atomically"]


def write_atomically(
    path: str | os.PathLike, write: Callable[[Path], object], *, suffix: str = ".tmp"
) -> Path:
    """Call ``write(tmp)`` on a hidden temporary path beside ``path``, then rename it over.

    Parameters
    ----------
    path : path-like
        The target; its folder must exist.
    write : callable
        Writes the whole content to the path it is given (e.g. ``table.to_csv``).
    suffix : str, default ".tmp"
        End of the temporary file's name (e.g. ``".tmp.nwb"`` for writers that look at it).

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{os.getpid()}{suffix}")
    try:
        write(tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target
