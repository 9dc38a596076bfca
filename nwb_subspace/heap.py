"""Keep freed memory in the process heap while models train (glibc only).

A training step allocates and frees tensors of a few MB (activations, gradients). glibc's
``malloc`` serves allocations above its mmap threshold with fresh ``mmap`` s and gives freed
memory at the top of the heap back to the system above its trim threshold; either way the
next step's tensors land in new pages, and the kernel zero-fills every page on first touch.
On a 2-core AMD EPYC (torch 2.13, a minibatch of the ``small`` simulated session's size:
16 windows x 151 bins, 32 channels, 30 units) those page faults took a fifth to a half of a
CNN step: one fit's step 6.8 -> 5.4 ms, eight fits stacked
(:mod:`nwb_subspace.models.stacked`) 40 -> 22 ms with the thresholds raised.

:func:`kept_heap` raises both thresholds inside the block, so freed tensors are reused, and
on leaving sets them to the values glibc's own adaptive scheme climbs to on 64-bit systems
(32 MB mmap threshold, twice that for trimming) and returns the kept memory to the system
(``malloc_trim``). Setting them turns glibc's adaptation off for the rest of the process.
Elsewhere (no glibc, e.g. macOS, musl) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["kept_heap"]

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
#: Inside the block: allocations up to this size come from the heap, and this much freed
#: memory may stay at its top.
_INSIDE = 1 << 30
#: After the block: glibc's adaptive limits on 64-bit systems (mmap threshold; trimming at
#: twice it).
_AFTER = 32 << 20


def _libc():
    """The C library if it is glibc (has ``mallopt`` and ``malloc_trim``), else None."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    if not (hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim")):
        return None
    return libc


_LIBC = _libc()
_depth = [0]  # open kept_heap blocks (nested blocks leave the settings to the outermost)


@contextmanager
def kept_heap() -> Iterator[None]:
    """Reuse freed heap memory inside the block (glibc; elsewhere a no-op)."""
    if _LIBC is None:
        yield
        return
    if _depth[0] == 0:
        _LIBC.mallopt(_M_MMAP_THRESHOLD, _INSIDE)
        _LIBC.mallopt(_M_TRIM_THRESHOLD, _INSIDE)
    _depth[0] += 1
    try:
        yield
    finally:
        _depth[0] -= 1
        if _depth[0] == 0:
            _LIBC.mallopt(_M_MMAP_THRESHOLD, _AFTER)
            _LIBC.mallopt(_M_TRIM_THRESHOLD, 2 * _AFTER)
            _LIBC.malloc_trim(0)
