"""kept_heap: large allocations come from the heap inside the block and freed memory stays
there for reuse; nesting and exceptions leave the process as it was (glibc)."""

from __future__ import annotations

import ctypes
import ctypes.util

import numpy as np
import pytest

from nwb_subspace.heap import kept_heap


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
            "fordblks", "keepcost",
        )
    ]  # fmt: skip


def _libc():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "mallinfo2") else None


LIBC = _libc()
pytestmark = pytest.mark.skipif(LIBC is None, reason="needs glibc >= 2.33 (mallinfo2)")
MB64 = 64 * 2**20


def _info() -> _MallInfo2:
    LIBC.mallinfo2.restype = _MallInfo2
    return LIBC.mallinfo2()


def _mmapped_while_alive() -> int:
    """Bytes glibc holds in mmapped blocks while a 64 MB array is alive."""
    a = np.ones(MB64 // 8)
    held = _info().hblkhd
    del a
    return held


def _check_large_allocations_stay_in_the_heap_inside_the_block():
    assert _mmapped_while_alive() >= MB64  # outside: its own mmap, unmapped on free
    with kept_heap():
        assert _mmapped_while_alive() < MB64  # from the heap
        assert _info().fordblks >= MB64  # freed, kept for the next step's tensors
    # on leaving, large arrays get their own mmap again (how much free heap glibc keeps
    # after malloc_trim depends on what else the process allocated: not asserted)
    assert _mmapped_while_alive() >= MB64
    assert _mmapped_while_alive() >= MB64


def _check_nested_blocks_and_errors_leave_the_outer_setting():
    @kept_heap()
    def inner() -> int:
        with kept_heap():
            pass
        return _mmapped_while_alive()  # still inside the outer block

    assert inner() < MB64
    with pytest.raises(RuntimeError, match="boom"), kept_heap():
        raise RuntimeError("boom")
    assert _mmapped_while_alive() >= MB64


def _in_fresh_process(check: str) -> None:
    """Run ``check`` in a new interpreter: where a large array comes from depends on what the
    process allocated and freed before (a free heap chunk serves it before any mmap)."""
    import subprocess
    import sys
    from pathlib import Path

    code = f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import test_heap; test_heap.{check}()"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


def test_large_allocations_stay_in_the_heap_inside_the_block():
    _in_fresh_process("_check_large_allocations_stay_in_the_heap_inside_the_block")


def test_nested_blocks_and_errors_leave_the_outer_setting():
    _in_fresh_process("_check_nested_blocks_and_errors_leave_the_outer_setting")
