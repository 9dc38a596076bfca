"""Jackknife fits against today's initialisation ensemble: tuning-subspace recovery and time.

The reference averages the dSTRFs over 8 jackknife fits (each without one eighth of the
estimation sounds, the best of 5 initialisations each); the pipeline's default averages
them over the 3 initialisations of one fit on all the fit data. This script simulates a
preset, fits both (``--k`` jackknife fits, the best of ``--n-init`` initialisations each),
computes the dSTRF moments of each ensemble at the same frames (the estimation sounds, each
stimulus bin once) and the tuning subspaces, and prints, for the units whose CNN
noise-corrected correlation (today's fit) is >= 0.7:

- the median cos^2 of the principal angles between the true filters and the top-k PCs at
  the true k (as ``subspace_recovery.py``);
- the fraction whose dimensionality is within +-1 of the truth, for our rule
  (``dimensionality``) and the reference's (``dimensionality_reference``, when the tuning
  step has it);
- the seconds of each fit and of each dSTRF + PCA step;
- the jackknife's out-of-fold correlation (median over units).

Usage::

    python benchmarks/jackknife.py --preset small
    python benchmarks/jackknife.py --preset small --k 8 --n-init 2 --threads 2
    python benchmarks/jackknife.py --preset paper --device cuda --json out.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from nwb_subspace.dstrf.compute import dstrf_moments
from nwb_subspace.io.session import load_session_data
from nwb_subspace.models.estimator import EncodingEstimator
from nwb_subspace.models.training import TrainingConfig, jackknife_folds
from nwb_subspace.pipeline import session_masks
from nwb_subspace.simulate import load_truth, simulate_session
from nwb_subspace.subspace.tuning import TuningSubspaceEstimator

sys.path.insert(0, str(Path(__file__).resolve().parent))
from subspace_recovery import recovery  # noqa: E402  (the same measure, one definition)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="small")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", choices=["cpu", "cuda", "auto"], default="cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--k", type=int, default=8, help="jackknife fits (default 8, as the paper)")
    ap.add_argument(
        "--n-init", type=int, default=5, help="initialisations per jackknife fit (paper: 5)"
    )
    ap.add_argument(
        "--ensemble-init",
        type=int,
        nargs="+",
        default=[3],
        help="initialisations of today's ensemble (several: one ensemble each, e.g. 3 8 to "
        "also see whether K fits on all the data do as well as K jackknife fits)",
    )
    ap.add_argument("--stride", type=int, default=1, help="use every n-th frame bin for the dSTRFs")
    ap.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"preset {args.preset}, seed {args.seed}, torch {torch.__version__}, threads "
        f"{torch.get_num_threads()}, device {args.device}; jackknife {args.k} x best of "
        f"{args.n_init}; ensemble of {args.ensemble_init} initialisations",
        flush=True,
    )
    out: dict = {key: value for key, value in vars(args).items() if key != "json"}
    with tempfile.TemporaryDirectory() as tmp:
        nwb, truth_path = simulate_session(
            Path(tmp) / f"{args.preset}.nwb", preset=args.preset, seed=args.seed
        )
        session, truth = load_session_data(nwb), load_truth(truth_path)
    run(session, truth, args, out)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


def run(session, truth, args: argparse.Namespace, out: dict) -> None:
    """Fit both ensembles, compare their tuning subspaces with the truth (fills ``out``)."""
    masks = session_masks(session)
    X = session.spectrogram.data.astype(np.float32)
    Y = session.counts
    fit_trials = np.asarray(session.split.fit_trials, dtype=np.int64)
    folds = jackknife_folds(
        session.n_bins,
        session.trial_bins[fit_trials],
        session.trials.sound_id[fit_trials],
        args.k,
        seed=args.seed,
    )
    out["fold_bins"] = folds.bins.tolist()
    print(f"folds: fit bins {folds.bins.tolist()} {folds.note}", flush=True)
    ensembles = {}
    for n in args.ensemble_init:
        t0 = time.perf_counter()
        ensembles[f"ensemble of {n}"] = EncodingEstimator(
            "cnn", training=TrainingConfig(n_initializations=n), device=args.device
        ).fit(X, Y, masks["fit"], masks["holdout"])
        out[f"ensemble of {n} fit_s"] = time.perf_counter() - t0
        print(f"ensemble of {n}: fitted in {out[f'ensemble of {n} fit_s']:.0f} s", flush=True)
    ens = ensembles[f"ensemble of {args.ensemble_init[0]}"]  # its scores choose the units
    t0 = time.perf_counter()
    jk = EncodingEstimator(
        "cnn",
        training=TrainingConfig(n_initializations=args.n_init, jackknife=args.k),
        device=args.device,
    ).fit(X, Y, masks["fit"], masks["holdout"], folds=folds.labels)
    out["jackknife_fit_s"] = time.perf_counter() - t0
    out["jackknife_only_fit_s"] = float(sum(h.seconds for h in jk.jackknife_histories_))
    out["jackknife_failed"] = {int(j): p for j, p in jk.jackknife_problems_.items()}
    out["oof_correlation_median"] = float(np.nanmedian(jk.oof_correlation_))
    scores = ens.score(X, session.validation, session.noise_ceiling)
    good = np.flatnonzero(scores.noise_corrected_correlation >= 0.7)
    out["units"], out["good_units"] = int(ens.units_.size), int(good.size)
    print(
        f"fits: jackknife {out['jackknife_fit_s']:.0f} s "
        f"({out['jackknife_only_fit_s']:.0f} s of it the {len(jk.jackknife_members_)} jackknife "
        f"fits, the rest its full fit); {good.size} of {ens.units_.size} units >= 0.7 "
        f"(by the first ensemble's fit); out-of-fold r median {out['oof_correlation_median']:.3f}",
        flush=True,
    )
    frame_bins = getattr(session, "frame_bins", None)
    bins = frame_bins("estimation") if frame_bins else masks["fit"] | masks["holdout"]
    bins = np.flatnonzero(bins)[:: args.stride]
    out["frames"] = int(bins.size)
    for label, est in [*ensembles.items(), ("jackknife", jk)]:
        t0 = time.perf_counter()
        models = [m.eval() for m in est.ensemble_]
        mom = dstrf_moments(models, X, bins=bins, units=good)
        tuner = TuningSubspaceEstimator(seed=args.seed)
        tu = tuner.fit(mom, frequencies=session.frequencies, bin_s=1 / session.rate).to_result()
        res = recovery(tu, truth, est.units_[good], np.arange(good.size))
        true_k = np.asarray(truth.k)[est.units_[good]]
        ref = getattr(tuner, "dimensionality_reference_", None)
        if ref is not None:
            res["within_one_reference"] = float(np.mean(np.abs(np.asarray(ref) - true_k) <= 1))
            res["chosen_k_reference"] = np.asarray(ref).tolist()
        res["dstrf_pca_s"] = time.perf_counter() - t0
        res["n_fits"] = len(models)
        out[label] = res
        reference = (
            f", reference rule {res['within_one_reference']:.0%}"
            if "within_one_reference" in res
            else ""
        )
        print(
            f"{label} ({len(models)} fits): cos^2 median {res['cos2_median']:.3f}, by true k "
            f"{res['cos2_by_true_k']}; dimensionality within +-1: ours "
            f"{res['within_one']:.0%}{reference}; dSTRFs + PCA {res['dstrf_pca_s']:.0f} s",
            flush=True,
        )
        print(f"  true k {res['true_k']}\n  chosen {res['chosen_k']}", flush=True)
        if "chosen_k_reference" in res:
            print(f"  reference rule {res['chosen_k_reference']}", flush=True)


if __name__ == "__main__":
    main()
