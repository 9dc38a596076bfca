"""The whole default recipe on the ``paper`` preset, end to end, with each step's share.

Prints, in one run:

1. ``nwb-subspace run`` with the default settings on a simulated ``paper``-preset session
   (30 min of sound, 60 units; simulated once into ``--workdir`` and reused): the seconds of
   each step (read + spectrogram, fits, scores, dSTRF moments, PCA, SRFs, subspace model,
   site step, write) and its share of the total;
2. with ``--stacked``: the CNN fits and the ensemble dSTRF moments of the same session with
   K = 1, 3 and 8 fits, stacked (one network, :mod:`nwb_subspace.models.stacked`) against K
   separate fits, for the same number of epochs (``--epochs`` per stage, no early stopping),
   and the K-fit ensemble's dSTRF moments at every ``--frames-stride``-th frame.

Usage::

    python benchmarks/paper_recipe.py --workdir /tmp/paper_recipe            # ~15 min
    python benchmarks/paper_recipe.py --workdir DIR --skip-recipe --stacked  # part 2 only
    python benchmarks/paper_recipe.py --workdir DIR --device cuda            # on a GPU

Say whether the machine was idle: every torch job on a 2-core machine slows the others
down several-fold.
"""

from __future__ import annotations

import argparse
import shutil
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from nwb_subspace.config import AnalysisConfig
from nwb_subspace.models.training import TrainingConfig
from nwb_subspace.pipeline import run_session
from nwb_subspace.simulate import load_truth, simulate_session


def session_file(workdir: Path, preset: str, seed: int) -> Path:
    """The simulated session (simulated on first use, then reused)."""
    workdir.mkdir(parents=True, exist_ok=True)
    source = workdir / f"{preset}_seed{seed}.nwb"
    if not source.exists():
        t0 = time.perf_counter()
        simulate_session(source, preset=preset, seed=seed)
        print(f"simulated {source} in {time.perf_counter() - t0:.0f} s (not counted)")
    return source


def recipe(source: Path, workdir: Path, device: str, stacked: bool) -> dict[str, float]:
    """Run the default recipe on a fresh copy of ``source``; the seconds of each step."""
    target = workdir / f"run_{'stacked' if stacked else 'separate'}.nwb"
    shutil.copyfile(source, target)
    config = AnalysisConfig(device=device)
    config = replace(config, training=replace(config.training, stacked=stacked))
    print(f"[training] stacked = {str(stacked).lower()}")
    t0 = time.perf_counter()
    result = run_session(target, config)
    wall = time.perf_counter() - t0
    seconds = dict(result.seconds)
    seconds["other"] = max(0.0, wall - sum(seconds.values()))
    print_shares(seconds)
    print_recovery(result, source)
    return seconds


def print_recovery(result, source: Path) -> None:
    """The run's recovery of the simulated truth (units with CNN noise-corrected r >= 0.7,
    as ``benchmarks/subspace_recovery.py`` measures it)."""
    from subspace_recovery import recovery

    scores = np.asarray(result.scores["cnn"].noise_corrected_correlation)
    tuning = result.tuning
    print(f"CNN median noise-corrected r {np.nanmedian(scores):.3f}")
    if tuning is None:
        print("no tuning subspaces")
        return
    truth = load_truth(source)
    rows = np.asarray(tuning.unit_rows)
    good = np.flatnonzero(scores[rows] >= 0.7)
    rec = recovery(tuning, truth, rows, good)
    ev = np.asarray(result.ev_fraction)[good] if result.ev_fraction is not None else [np.nan]
    print(
        f"recovery, {good.size} of {rows.size} units with CNN r >= 0.7: cos^2 median "
        f"{rec['cos2_median']:.3f}; dimensionality within +-1 {rec['within_one']:.0%} (ours), "
        f"{rec.get('within_one_reference', float('nan')):.0%} (reference rule); subspace / CNN "
        f"EV fraction median {np.nanmedian(ev):.3f}"
    )


def print_shares(seconds: dict[str, float]) -> None:
    total = sum(seconds.values())
    print(f"\n{'step':<20} {'seconds':>9} {'share':>7}")
    for step, value in seconds.items():
        print(f"{step:<20} {value:>9.1f} {value / total:>7.1%}")
    print(f"{'total':<20} {total:>9.1f}   ({total / 60:.1f} min)")


def stacked_vs_separate(source: Path, epochs: int, device: str, stride: int) -> None:
    """Fits and ensemble dSTRF moments with K = 1, 3, 8 fits: stacked against separate."""
    from stacked_fits import _separate, _stacked

    from nwb_subspace.dstrf.compute import dstrf_moments
    from nwb_subspace.pipeline import load_session, session_masks

    config = AnalysisConfig(device=device)
    session = load_session(source, config)
    masks = session_masks(session)
    X, Y = session.spectrogram.data, session.counts
    frames = np.flatnonzero(session.frame_bins(config.subspace.frames))[::stride]
    arch = {"n_frequencies": X.shape[1], "n_units": Y.shape[1]}
    base = TrainingConfig(
        max_epochs_stage1=epochs, max_epochs_stage2=epochs, patience=2 * epochs + 1,
        max_retries=0,
    )  # fmt: skip
    fit, hold = masks["fit"], masks["holdout"]
    single = replace(base, n_initializations=1)
    _separate(arch, X, Y, fit, hold, single, device)  # warm-up (first-call costs)
    one, _ = _separate(arch, X, Y, fit, hold, single, device)
    print(f"\nK fits on the preset, {epochs} + {epochs} epochs each, no early stopping; one fit "
          f"{one:.1f} s; dSTRF moments of the K-fit ensemble at every {stride}th frame ({frames.size})")  # fmt: skip
    print(f"{'K':>3} {'separate s':>11} {'x one fit':>10} {'stacked s':>10} {'x one fit':>10} "
          f"{'dSTRF moments s':>16} {'us/(unit x bin)':>16}")  # fmt: skip
    for k in (1, 3, 8):
        cfg = replace(base, n_initializations=k)
        separate, _ = _separate(arch, X, Y, fit, hold, cfg, device)
        stacked, runs = _stacked(arch, X, Y, fit, hold, cfg, device)
        members = [model for model, _ in runs]
        t0 = time.perf_counter()
        dstrf_moments(members, X, bins=frames)
        moments = time.perf_counter() - t0
        per = moments / (frames.size * Y.shape[1]) * 1e6
        print(f"{k:>3} {separate:>11.1f} {separate / one:>9.2f}x {stacked:>10.1f} "
              f"{stacked / one:>9.2f}x {moments:>16.1f} {per:>16.2f}")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workdir", type=Path, required=True)
    ap.add_argument("--preset", default="paper")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--stacked", action="store_true", help="also K = 1, 3, 8 stacked vs separate")
    ap.add_argument("--epochs", type=int, default=3, help="epochs per stage in part 2")
    ap.add_argument(
        "--frames-stride", type=int, default=10, help="every n-th dSTRF frame in part 2"
    )
    ap.add_argument("--skip-recipe", action="store_true")
    ap.add_argument(
        "--stacked-fits", choices=["true", "false"], default=None,
        help="[training] stacked for the recipe (default: the config's default)",
    )  # fmt: skip
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {args.device}")
    source = session_file(args.workdir, args.preset, args.seed)
    if not args.skip_recipe:
        stacked = (
            TrainingConfig().stacked if args.stacked_fits is None else args.stacked_fits == "true"
        )
        recipe(source, args.workdir, args.device, stacked)
    if args.stacked:
        stacked_vs_separate(source, args.epochs, args.device, args.frames_stride)


if __name__ == "__main__":
    main()
