"""Flush denormal floats to zero on the CPU while our models train, predict and differentiate.

A float32 below ~1.2e-38 is *denormal*; x86 CPUs handle arithmetic on such numbers in
microcode, up to hundreds of times slower (here: a 1024 x 1024 matrix product of denormal
inputs took 3.5 s instead of 16 ms). Long CNN fits drift into them: on the ``paper`` preset an
epoch went from 1.1 s to 11 s after ~20 epochs, while flushing them to zero left the losses
unchanged to the printed digits and the epochs at ~1.1-1.7 s (``benchmarks/README.md``).

torch has no public getter for the mode, so :func:`denormals_flushed` probes it (a denormal
multiplied by one comes back as zero when flushing), and :func:`flushed_denormals` restores
whatever was set before.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

__all__ = ["denormals_flushed", "flushed_denormals"]


def denormals_flushed() -> bool:
    """True if the CPU currently flushes denormal floats to zero."""
    return bool((torch.tensor([1e-40], dtype=torch.float32) * 1.0)[0] == 0)


@contextmanager
def flushed_denormals() -> Iterator[None]:
    """Flush denormals to zero inside the block (a no-op where the CPU cannot)."""
    before = denormals_flushed()
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(before)
