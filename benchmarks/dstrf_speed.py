"""dSTRF speed and memory: batched exact Jacobians vs a naive per-bin autograd loop.

Prints, in one run:

1. time per (unit x bin) of :func:`nwb_subspace.dstrf.compute.compute_dstrf` against the reference
   implementations' way, ``torch.autograd.functional.jacobian`` on one window per time
   point, at N = 60 and N = 300 units (reference CNN, F = 32, memory 24);
2. total dSTRF + PCA time at every bin of a ``paper``-preset-sized recording (N = 60 units;
   the spectrogram is random with the paper preset's bin count: the timing does not depend
   on the stimulus values, and simulating the sounds is not what is measured);
3. peak memory (RSS, in a fresh process each) of dSTRF moments + PCA at T and 4T bins
   (with ``--device cuda`` also the GPU's peak allocated memory).

Usage: ``python benchmarks/dstrf_speed.py [--quick] [--threads N] [--device cpu|cuda]``
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np
import torch

from nwb_subspace.dstrf.compute import compute_dstrf, dstrf_moments
from nwb_subspace.models import PopulationCNN
from nwb_subspace.simulate.presets import PRESETS
from nwb_subspace.subspace.tuning import TuningSubspaceEstimator

F = 32


def _model(n_units: int, device: str = "cpu") -> PopulationCNN:
    torch.manual_seed(0)
    return PopulationCNN(F, n_units).eval().to(device)


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def naive_per_unit_bin(model: PopulationCNN, X: torch.Tensor, n_bins: int) -> float:
    """Seconds per (unit x bin) of a per-time-point autograd.functional.jacobian loop."""
    L = model.memory
    times = range(L, L + n_bins)
    torch.autograd.functional.jacobian(lambda w: model(w)[0, -1], X[None, :L])
    _sync(X.device.type)
    t0 = time.perf_counter()
    for t in times:
        w = X[None, t - L + 1 : t + 1]
        torch.autograd.functional.jacobian(lambda w: model(w)[0, -1], w)
    _sync(X.device.type)
    return (time.perf_counter() - t0) / (n_bins * model.n_units)


def ours_per_unit_bin(model: PopulationCNN, X: np.ndarray, n_bins: int) -> float:
    compute_dstrf(model, X, np.arange(64))
    t0 = time.perf_counter()
    compute_dstrf(model, X, np.arange(n_bins))
    return (time.perf_counter() - t0) / (n_bins * model.n_units)


def paper_bins() -> int:
    c = PRESETS["paper"]
    seconds = c.n_estimation * (c.sequence_s + c.gap_s) + c.n_validation * c.validation_repeats * (
        c.validation_s + c.gap_s
    )
    return int(round(seconds / c.spectrogram.bin_s))


def _ensemble(n_units: int, n_models: int, device: str = "cpu") -> list[PopulationCNN]:
    models = []
    for seed in range(n_models):
        torch.manual_seed(seed)
        models.append(PopulationCNN(F, n_units).eval().to(device))
    return models


def moments_and_pca(n_bins: int, n_units: int, device: str = "cpu", n_models: int = 1) -> dict:
    rng = np.random.default_rng(0)
    X = rng.random((n_bins, F), dtype=np.float32) * 3
    models = _ensemble(n_units, n_models, device)
    t0 = time.perf_counter()
    mom = dstrf_moments(models if n_models > 1 else models[0], X)
    t1 = time.perf_counter()
    TuningSubspaceEstimator().fit(mom, frequencies=np.geomspace(200, 2e4, F), bin_s=0.01)
    t2 = time.perf_counter()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    gpu = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else 0.0
    return {
        "bins": n_bins,
        "dstrf_s": t1 - t0,
        "pca_s": t2 - t1,
        "peak_rss_mb": rss,
        "peak_gpu_mb": gpu,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--skip-paper", action="store_true")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    args = ap.parse_args()
    dev = args.device
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child is not None:
        print(json.dumps(moments_and_pca(args.child, 60, dev)))
        return
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {dev}")
    if dev == "cuda":
        print(f"GPU: {torch.cuda.get_device_name()}")
    rng = np.random.default_rng(0)
    X = rng.random((4000, F), dtype=np.float32) * 3
    n_naive = 3 if args.quick else 20
    n_ours = 256 if args.quick else 2048
    print("\n1. time per (unit x bin): ours vs naive per-bin autograd.functional.jacobian")
    print(f"{'N':>5} {'naive us':>10} {'ours us':>10} {'speed-up':>9}")
    for n in (60, 300):
        model = _model(n, dev)
        naive = naive_per_unit_bin(model, torch.from_numpy(X).to(dev), n_naive)
        ours = ours_per_unit_bin(model, X, n_ours)
        print(f"{n:>5} {naive * 1e6:>10.2f} {ours * 1e6:>10.3f} {naive / ours:>8.0f}x")
    T = 2000 if args.quick else 20000
    print(f"\n3. peak memory of dSTRF moments + PCA (N = 60, fresh process each): T = {T} bins")
    rows = []
    for n_bins in (T, 4 * T):
        cmd = [sys.executable, __file__, "--child", str(n_bins), "--device", dev]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
        r = rows[-1]
        print(
            f"  {r['bins']:>7} bins: peak RSS {r['peak_rss_mb']:.0f} MB, dSTRF {r['dstrf_s']:.1f} s,"
            f" PCA {r['pca_s']:.1f} s"
            + (f", peak GPU {r['peak_gpu_mb']:.0f} MB" if dev == "cuda" else "")
        )
    growth = rows[1]["peak_rss_mb"] / rows[0]["peak_rss_mb"] - 1
    print(f"  growth T -> 4T: {growth:+.1%}")
    if dev == "cuda":
        print(f"  GPU growth T -> 4T: {rows[1]['peak_gpu_mb'] / rows[0]['peak_gpu_mb'] - 1:+.1%}")
    if not args.skip_paper:
        n = 4000 if args.quick else paper_bins()
        print(f"\n2. paper preset, every bin: {n} bins x 60 units (naive loop above: one fit)")
        for n_models in (1, 3):
            r = moments_and_pca(n, 60, dev, n_models)
            what = "1 fit" if n_models == 1 else f"{n_models}-fit ensemble (+ fit-to-fit error)"
            print(
                f"  {what}: dSTRF moments {r['dstrf_s']:.1f} s + PCA {r['pca_s']:.1f} s = "
                f"{r['dstrf_s'] + r['pca_s']:.1f} s ({r['dstrf_s'] / (n * 60) * 1e6:.2f} us per "
                "unit x bin)"
            )


if __name__ == "__main__":
    main()
