"""Cost of K population-CNN fits as one stacked network against K separate fits (issue 22).

On a simulated session (default: the ``small`` preset), with a fixed number of epochs per
stage and no early stopping (patience above the epochs), so that every fit runs the same
steps; prints the seconds of one fit, of K separate fits (``fit_model`` with
``n_initializations = K``) and of K stacked fits (``fit_model_stacked``), and the ratios
stacked-K / one fit and separate-K / stacked-K, for K = 1, 3 and 8: medians of ``--repeats``
runs, each run of the three interleaved (one fit, K separate, K stacked), since the time of
one fit varied by up to 1.5x between runs on a 2-core VM; the per-run ratios are printed
too. Also checks that the
stacked fits are the separate ones: the largest relative weight difference over the K
members (max |a - b| / max |a| per tensor), and the holdout losses (relative difference of
each member's best holdout loss), which is the fair measure after many steps: the weights of a
fit drift apart under rounding changes, stacked or not (see nwb_subspace.models.stacked). The
yardstick, in the same run: the same K separate fits on the spectrogram moved by one ulp
(``np.nextafter``), against the separate fits (``--no-ulp`` skips it).
The load average is printed first and last: other work on the machine inflates the ratios.

Usage::

    python benchmarks/stacked_fits.py                     # small, 10 + 5 epochs (~5 min)
    python benchmarks/stacked_fits.py --epochs1 2 --epochs2 1 --ks 1 3 8
    python benchmarks/stacked_fits.py --threads 1
    python benchmarks/stacked_fits.py --device cuda
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from nwb_subspace.io.session import load_session_data
from nwb_subspace.models import build_model
from nwb_subspace.models.stacked import fit_model_stacked
from nwb_subspace.models.training import TrainingConfig, fit_model
from nwb_subspace.pipeline import session_masks
from nwb_subspace.simulate import simulate_session


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _separate(arch, X, Y, fit, hold, cfg, device) -> tuple[float, list]:
    torch.manual_seed(cfg.seed * 1000)
    model = build_model("cnn", arch)
    runs: list = []
    _sync(device)
    start = time.perf_counter()
    fit_model(model, X, Y, fit, hold, cfg, device=device, every_fit=runs)
    _sync(device)
    return time.perf_counter() - start, runs


def _stacked(arch, X, Y, fit, hold, cfg, device) -> tuple[float, list]:
    runs: list = []
    _sync(device)
    start = time.perf_counter()
    fit_model_stacked(arch, X, Y, fit, hold, cfg, device=device, every_fit=runs)
    _sync(device)
    return time.perf_counter() - start, runs


def _max_rel(runs_a: list, runs_b: list) -> float:
    worst = 0.0
    for (a, _), (b, _) in zip(runs_a, runs_b, strict=True):
        sa, sb = a.state_dict(), b.state_dict()
        for key in sa:
            scale = float(sa[key].abs().max()) or 1.0
            worst = max(worst, float((sa[key] - sb[key].to(sa[key].device)).abs().max()) / scale)
    return worst


def _loss_rel(runs_a: list, runs_b: list) -> float:
    """Largest relative difference of the members' best holdout losses."""
    return max(
        abs(ha.best_holdout_loss - hb.best_holdout_loss) / abs(ha.best_holdout_loss)
        for (_, ha), (_, hb) in zip(runs_a, runs_b, strict=True)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="small")
    parser.add_argument("--epochs1", type=int, default=10, help="stage-1 epochs")
    parser.add_argument("--epochs2", type=int, default=5, help="stage-2 epochs")
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 3, 8])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument(
        "--repeats", type=int, default=3, help="runs of each (medians; one fit beside each)"
    )
    parser.add_argument(
        "--no-ulp", action="store_true", help="skip the separate fits on the 1-ulp spectrogram"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = args.device
    print(
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {dev}; "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        path, _ = simulate_session(Path(tmp) / "s.nwb", preset=args.preset, seed=0)
        session = load_session_data(path)
    masks = session_masks(session)
    X, Y = session.spectrogram.data, session.counts
    X_ulp = np.nextafter(X, np.inf, dtype=X.dtype)  # every bin and channel moved by one ulp
    keep = Y[masks["fit"]].sum(0) > 0
    Y = np.ascontiguousarray(Y[:, keep])
    arch = {"n_frequencies": X.shape[1], "n_units": Y.shape[1]}
    epochs = args.epochs1 + args.epochs2
    print(
        f"{args.preset}: {X.shape[0]} bins ({int(masks['fit'].sum())} fitted), F = {X.shape[1]}, "
        f"N = {Y.shape[1]}; {args.epochs1} + {args.epochs2} epochs per fit, no early stopping"
    )
    base = TrainingConfig(
        max_epochs_stage1=args.epochs1,
        max_epochs_stage2=args.epochs2,
        patience=epochs + 1,
        max_retries=0,
    )
    one_cfg = TrainingConfig(**{**base.to_dict(), "n_initializations": 1})
    fit, hold = masks["fit"], masks["holdout"]
    _separate(arch, X, Y, fit, hold, one_cfg, dev)  # warm-up
    for k in args.ks:
        cfg = TrainingConfig(**{**base.to_dict(), "n_initializations": k})
        ones, seps, stks = [], [], []
        for _ in range(args.repeats):  # interleaved: drift of the machine hits all three
            ones.append(_separate(arch, X, Y, fit, hold, one_cfg, dev)[0])
            sep, runs_a = _separate(arch, X, Y, fit, hold, cfg, dev)
            stk, runs_b = _stacked(arch, X, Y, fit, hold, cfg, dev)
            seps.append(sep)
            stks.append(stk)
        one, sep, stk = (float(np.median(v)) for v in (ones, seps, stks))
        ratios = np.array(stks) / np.array(ones)
        print(
            f"K = {k}: 1 fit {one:.1f} s, separate {sep:.1f} s ({sep / one:.2f} x one fit), "
            f"stacked {stk:.1f} s (**{stk / one:.2f} x one fit**; per repeat "
            f"{', '.join(f'{r:.2f}' for r in ratios)}; {sep / stk:.2f} x faster than separate); "
            f"largest relative weight difference {_max_rel(runs_a, runs_b):.1e}, "
            f"of best holdout loss {_loss_rel(runs_a, runs_b):.1e}"
        )
        if not args.no_ulp:
            _, runs_c = _separate(arch, X_ulp, Y, fit, hold, cfg, dev)
            print(
                f"       yardstick, separate fits on the spectrogram + 1 ulp vs separate: "
                f"largest relative weight difference {_max_rel(runs_a, runs_c):.1e}, "
                f"of best holdout loss {_loss_rel(runs_a, runs_c):.1e}"
            )
    print(f"load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
