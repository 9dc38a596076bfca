"""Progress bars for the long steps (spectrogram, model fits, dSTRFs), via tqdm.

Bars show on an interactive terminal only: they are off when standard error is not a TTY
(logs, pipes, batch jobs), when the ``CI`` environment variable is set, and after
``set_progress(False)`` (the CLI's ``--quiet``). ``set_progress(True)`` forces them on;
``set_progress(None)`` restores the automatic choice.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from tqdm.auto import tqdm

__all__ = ["progress_bar", "progress_enabled", "set_progress", "track"]

_FORCED: bool | None = None


def set_progress(enabled: bool | None) -> bool | None:
    """Turn progress bars on (True), off (False) or back to automatic (None).

    Returns the previous setting, so that a caller can put it back."""
    global _FORCED
    if enabled is not None and not isinstance(enabled, bool):
        raise TypeError(f"enabled must be True, False or None; got {enabled!r}")
    previous, _FORCED = _FORCED, enabled
    return previous


def progress_enabled() -> bool:
    """Whether bars are shown now (see the module docstring for the rule)."""
    if _FORCED is not None:
        return _FORCED
    if os.environ.get("CI"):
        return False
    stream = sys.stderr
    return bool(getattr(stream, "isatty", None) and stream.isatty())


@contextmanager
def progress_bar(total: int | None, desc: str, unit: str = "it", **kwargs: Any) -> Iterator[Any]:
    """A tqdm bar (a disabled one when bars are off) that is closed on exit.

    Parameters
    ----------
    total : int or None
        Expected number of updates.
    desc : str
        Short label, e.g. ``"dSTRFs"``.
    unit : str
        What one update counts (``"bin"``, ``"epoch"``).
    """
    bar = tqdm(
        total=total,
        desc=desc,
        unit=unit,
        disable=not progress_enabled(),
        leave=False,
        dynamic_ncols=True,
        **kwargs,
    )
    try:
        yield bar
    finally:
        bar.close()


def track(items: Iterable, total: int | None, desc: str, unit: str = "it") -> Iterator:
    """Iterate over ``items`` with a bar (see :func:`progress_bar`)."""
    with progress_bar(total, desc, unit) as bar:
        for item in items:
            yield item
            bar.update(1)
