"""Time of the site analysis (given per-unit dSTRF moments) and its growth with unit count.

Synthetic moments: each unit's covariance has rank 4 inside a shared 7-dim subspace plus a
private direction, on the reference grid (32 channels x 20 lags = 640 pixels). Times
``SiteSubspaceAnalysis.fit`` (pooled PCA, 200 random-subspace and 200 pixel-shuffle draws)
with one BLAS thread. Run: ``python benchmarks/circuit_speed.py [15 30 60 120]``.
"""

from __future__ import annotations

import sys
import time

import numpy as np
from threadpoolctl import threadpool_limits

from nwb_subspace.circuit import SiteSubspaceAnalysis


def moments(n_units: int, f: int = 32, d: int = 20, seed: int = 0):
    rng = np.random.default_rng(seed)
    p = f * d
    shared = np.linalg.qr(rng.standard_normal((p, 7)))[0]
    a = np.concatenate(
        [shared @ rng.standard_normal((n_units, 7, 4)), rng.standard_normal((n_units, p, 1))],
        axis=2,
    )
    return np.zeros((n_units, f, d)), a @ a.transpose(0, 2, 1)


def main(counts: list[int]) -> None:
    previous = None
    print(f"{'units':>6} {'fit s':>8} {'x prev':>7}")
    for n in counts:
        mean, cov = moments(n)
        with threadpool_limits(limits=1):
            t0 = time.perf_counter()
            SiteSubspaceAnalysis(seed=0).fit(
                (mean, cov), site="bench", frequencies=np.arange(32.0), bin_s=0.01
            )
            dt = time.perf_counter() - t0
        ratio = f"{dt / previous:7.2f}" if previous else f"{'':>7}"
        print(f"{n:6d} {dt:8.2f} {ratio}", flush=True)
        previous = dt


if __name__ == "__main__":
    main([int(x) for x in sys.argv[1:]] or [15, 30, 60, 120])
