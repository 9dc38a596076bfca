"""Training speed of the population CNN against this machine's float32 matmul throughput.

Prints, for a simulated session (default: the ``paper`` preset):

1. seconds per epoch and the achieved fraction of the measured float32 matmul FLOP rate for
   N = 60 and N = 300 units (300 = the session's units tiled with independent Poisson
   resamples), with the default minibatch;
2. where a step's time goes: seconds per optimiser step at 1-64 windows per minibatch, a
   least-squares fit ``t(b) = fixed + b * per_window`` and the fixed (per-step: Python,
   autograd bookkeeping, Adam) share at the default minibatch -- "limited by arithmetic,
   not Python overhead" means that share is small and time grows with the work;
3. the total time of the default recipe (3 initialisations) on the preset, and on ``small``.

Usage::

    python benchmarks/training_speed.py                 # paper preset (~20 min)
    python benchmarks/training_speed.py --preset small  # quicker
    python benchmarks/training_speed.py --no-total      # skip the full fits
    python benchmarks/training_speed.py --threads 1     # on a machine shared with other jobs
    python benchmarks/training_speed.py --only-total    # just the default recipe's total
    python benchmarks/training_speed.py --device cuda   # on a GPU (peak = its float32 matmul)
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from nwb_subspace.io.session import load_session_data
from nwb_subspace.models import build_model
from nwb_subspace.models.estimator import EncodingEstimator
from nwb_subspace.models.training import TrainingConfig, fit_model
from nwb_subspace.pipeline import session_masks
from nwb_subspace.simulate import simulate_session


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def matmul_flops(seconds: float = 3.0, n: int = 1024, device: str = "cpu") -> float:
    """Measured float32 matmul throughput (FLOP/s) of this machine with torch's threads
    (on a GPU: of the GPU, n = 8192)."""
    if device == "cuda":
        n = 8192
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    torch.mm(a, b)
    _sync(device)
    reps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        torch.mm(a, b)
        _sync(device)
        reps += 1
    return 2 * n**3 * reps / (time.perf_counter() - start)


def cnn_flops_per_bin(model) -> float:
    """Multiply-adds of one forward pass per output bin, times 2 (FLOPs), times 3 (backward)."""
    macs = 0
    for row in model.layer_summary():
        if row["layer_type"] in ("dense", "unit_dense", "projection"):
            macs += row["in_size"] * row["out_size"] * row["kernel_size"]
        elif row["layer_type"] == "temporal_conv":
            macs += row["in_size"] * row["kernel_size"]
    return 2.0 * macs * 3.0


def _fit_seconds(X, Y, fit, hold, n_epochs: int, device: str = "cpu") -> tuple[float, object]:
    cfg = TrainingConfig(
        n_initializations=1, max_epochs_stage1=n_epochs, max_epochs_stage2=0, patience=n_epochs + 1
    )
    torch.manual_seed(0)
    model = build_model("cnn", {"n_frequencies": X.shape[1], "n_units": Y.shape[1]})
    start = time.perf_counter()
    _, hist = fit_model(model, X, Y, fit, hold, cfg, device=device)
    _sync(device)
    assert len(hist.train_loss) == n_epochs
    return time.perf_counter() - start, model


def epoch_time(X, Y, fit, hold, n_epochs: int = 3, device: str = "cpu") -> tuple[float, float]:
    """Seconds per epoch (training steps plus the holdout pass) and achieved FLOP/s.

    The difference between a fit of ``1 + n_epochs`` epochs and one of 1 epoch, so one-off
    costs (imports on the first optimiser, data layout, the output-nonlinearity start) are
    not counted; FLOPs count the training windows' forward and backward passes only.
    """
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])  # first use imports torch._dynamo
    one, _ = _fit_seconds(X, Y, fit, hold, 1, device)
    more, model = _fit_seconds(X, Y, fit, hold, 1 + n_epochs, device)
    per_epoch = (more - one) / n_epochs
    cfg = TrainingConfig()
    window = cfg.window + model.memory - 1
    n_windows = int(np.ceil(fit.sum() / cfg.window))
    flops = cnn_flops_per_bin(model) * n_windows * window
    return per_epoch, flops / per_epoch


def step_profile(n_frequencies: int, n_units: int, batches=(1, 4, 16, 64), device: str = "cpu"):
    """Seconds per optimiser step of the CNN at several minibatch sizes (windows)."""
    cfg = TrainingConfig()
    torch.manual_seed(0)
    model = build_model("cnn", {"n_frequencies": n_frequencies, "n_units": n_units}).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    ctx = model.memory - 1
    rows = []
    for b in batches:
        x = torch.rand(b, cfg.window + ctx, n_frequencies, device=device) * 3
        y = torch.poisson(torch.full((b, cfg.window, n_units), 0.3, device=device))
        n_steps = max(4, 128 // b)
        for _rep in range(2):  # the first pass warms up allocators and kernels
            _sync(device)
            start = time.perf_counter()
            for _ in range(n_steps):
                out = model(x)[:, ctx:]
                loss = (out - y * torch.log(out.clamp_min(1e-8))).mean()
                loss = loss + cfg.l2 * model.regularizer() + cfg.smoothness * model.roughness()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            _sync(device)
            sec = (time.perf_counter() - start) / n_steps
        rate = cnn_flops_per_bin(model) * b * (cfg.window + ctx) / sec
        rows.append((b, sec, rate))
    b_arr = np.array([r[0] for r in rows], float)
    t_arr = np.array([r[1] for r in rows])
    per_window, fixed = np.polyfit(b_arr, t_arr, 1)
    return rows, max(fixed, 0.0), per_window, cfg.batch_windows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="paper")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--no-total", action="store_true", help="skip the full default fits")
    parser.add_argument(
        "--only-total", action="store_true", help="only the default recipe's total fit time"
    )
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads (1 is robust to other jobs on the machine: with 2 threads and the "
        "other core busy, depthwise convolutions slow down many times over)",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = args.device
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {dev}")
    if dev == "cuda":
        print(f"GPU: {torch.cuda.get_device_name()}")
    peak = matmul_flops(device=dev)
    print(f"measured float32 matmul: {peak / 1e9:.1f} GFLOP/s")
    with tempfile.TemporaryDirectory() as tmp:
        path, _ = simulate_session(Path(tmp) / "s.nwb", preset=args.preset, seed=0)
        session = load_session_data(path)
        masks = session_masks(session)
        X, Y = session.spectrogram.data, session.counts
        print(
            f"{args.preset}: {session.n_bins} bins, {int(masks['fit'].sum())} fitted, "
            f"{session.n_units} units"
        )
        rng = np.random.default_rng(0)
        for n in () if args.only_total else (60, 300):
            reps = int(np.ceil(n / Y.shape[1]))
            Yn = np.concatenate(
                [Y] + [rng.poisson(Y).astype(np.float32) for _ in range(reps - 1)], axis=1
            )[:, :n]
            sec, rate = epoch_time(X, Yn, masks["fit"], masks["holdout"], args.epochs, dev)
            print(
                f"N={n:4d}: {sec:6.2f} s/epoch, {rate / 1e9:6.2f} GFLOP/s = "
                f"{rate / peak:.0%} of matmul peak"
            )
        if not args.only_total:
            _print_step_profile(X.shape[1], dev, peak)
        if args.no_total:
            return
        start = time.perf_counter()
        est = EncodingEstimator("cnn", device=dev).fit(X, Y, masks["fit"], masks["holdout"])
        _sync(dev)
        print(
            f"default recipe (3 initialisations) on '{args.preset}' ({session.n_units} units): "
            f"{time.perf_counter() - start:.0f} s, {est.history_.best_epoch + 1} epochs to the "
            "best initialisation's optimum; epochs run: "
            f"{len(est.history_.train_loss)} in the best initialisation"
        )
        if args.preset != "small":
            small, _ = simulate_session(Path(tmp) / "small.nwb", preset="small", seed=0)
            sd = load_session_data(small)
            m = session_masks(sd)
            start = time.perf_counter()
            EncodingEstimator("cnn", device=dev).fit(
                sd.spectrogram.data, sd.counts, m["fit"], m["holdout"]
            )
            _sync(dev)
            print(
                f"default recipe (3 initialisations) on 'small': "
                f"{time.perf_counter() - start:.0f} s (goal < 300 s)"
            )


def _print_step_profile(n_frequencies: int, dev: str, peak: float) -> None:
    rows, fixed, per_window, default_b = step_profile(n_frequencies, 60, device=dev)
    print("seconds per optimiser step (N=60, 128-bin windows):")
    for b, sec, rate in rows:
        print(f"  {b:3d} windows: {sec * 1e3:8.2f} ms = {rate / peak:4.0%} of matmul peak")
    share = fixed / (fixed + per_window * default_b)
    print(
        f"fit t(b) = {fixed * 1e3:.2f} ms + b x {per_window * 1e3:.2f} ms: fixed per-step "
        f"share at the default {default_b} windows = {share:.0%} (at 4 windows: "
        f"{fixed / (fixed + 4 * per_window):.0%})"
    )


if __name__ == "__main__":
    main()
