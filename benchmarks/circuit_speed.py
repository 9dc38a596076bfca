"""Time of the site analysis (given per-unit dSTRF moments) and its growth with unit count.

Synthetic moments: each unit's covariance has rank 4 inside a shared 7-dim subspace plus a
private direction, on the reference grid (32 channels x 20 lags = 640 pixels). Times, with
one BLAS thread, ``SiteSubspaceAnalysis.fit`` (pooled PCA, 200 random-subspace and 200
pixel-shuffle draws) and :func:`nwb_subspace.site.tiling.tiling` (every unit's SRF on site PCs 1-2
over 30,000 bins of a random spectrogram, with a smooth synthetic prediction; 500 shift
draws), and their sum: the site analysis of one site.
Run: ``python benchmarks/circuit_speed.py [15 30 60 120]``.
"""

from __future__ import annotations

import sys
import time

import numpy as np
from threadpoolctl import threadpool_limits

from nwb_subspace.site.subspace import SiteSubspaceAnalysis
from nwb_subspace.site.tiling import tiling


def moments(n_units: int, f: int = 32, d: int = 20, seed: int = 0):
    rng = np.random.default_rng(seed)
    p = f * d
    shared = np.linalg.qr(rng.standard_normal((p, 7)))[0]
    a = np.concatenate(
        [shared @ rng.standard_normal((n_units, 7, 4)), rng.standard_normal((n_units, p, 1))],
        axis=2,
    )
    return np.zeros((n_units, f, d)), a @ a.transpose(0, 2, 1)


def prediction(X: np.ndarray, n_units: int, seed: int = 0) -> np.ndarray:
    """Smooth positive responses to random filters of ``X`` (counts per bin)."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((X.shape[1], n_units)) / np.sqrt(X.shape[1])
    z = X @ w
    return 0.05 * np.exp(-0.5 * ((z - z.mean(0)) / z.std(0)) ** 2)


def main(counts: list[int]) -> None:
    previous = None
    X = np.random.default_rng(1).random((30000, 32)).astype(np.float32)
    print(f"{'units':>6} {'fit s':>8} {'tiling s':>9} {'total s':>8} {'x prev':>7}")
    for n in counts:
        mean, cov = moments(n)
        with threadpool_limits(limits=1):
            t0 = time.perf_counter()
            analysis = SiteSubspaceAnalysis(seed=0).fit(
                (mean, cov), site="bench", frequencies=np.arange(32.0), bin_s=0.01
            )
            t1 = time.perf_counter()
            site = analysis.result_
            tiling(site, X, prediction=prediction(X, n), rate=100.0, seed=0)
            t2 = time.perf_counter()
        total = t2 - t0
        ratio = f"{total / previous:7.2f}" if previous else f"{'':>7}"
        print(f"{n:6d} {t1 - t0:8.2f} {t2 - t1:9.2f} {total:8.2f} {ratio}", flush=True)
        previous = total


if __name__ == "__main__":
    main([int(x) for x in sys.argv[1:]] or [15, 30, 60, 120])
