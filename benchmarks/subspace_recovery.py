"""How well the tuning subspaces recover a simulated session's ground truth, for any preset.

The unit test ``tests/test_subspace_science.py`` checks the dSTRF / tuning-subspace science
on the ``small`` preset (about 5 minutes of sound). This script measures the same numbers on
any preset (``paper``: 30 minutes of sound, 60 units) so the effect of the amount of data can
be seen; a fit of the ``paper`` preset takes minutes on a GPU and about half an hour on one
CPU core, too long for the test suite.

For the units whose CNN noise-corrected correlation is >= 0.7 it prints:

- the median mean cos^2 of the principal angles between the true filters and the top-k PCs
  (k = the true dimensionality), from the ensemble dSTRFs (mean over the CNN's fits, the
  pipeline's default; ``--best-fit-too``: also from the best fit alone);
- the fraction whose chosen dimensionality is within +-1 of the truth;
- the median cos^2 per true dimensionality, and after blurring the true filters by one
  channel and one bin (how much of the mismatch is a smoothing of the truth);
- the fraction whose SRF shape class matches the true nonlinearity;
- the median subspace-model / CNN explained-variance fraction.

Usage::

    python benchmarks/subspace_recovery.py --preset small
    python benchmarks/subspace_recovery.py --preset paper --device cuda
    python benchmarks/subspace_recovery.py --preset paper --threads 1 --json out.json
    python benchmarks/subspace_recovery.py --preset paper --cache DIR  # keep/reuse file + fit
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from scipy.ndimage import gaussian_filter

from nwb_subspace.dstrf.compute import dstrf_moments
from nwb_subspace.io.session import load_session_data
from nwb_subspace.models.estimator import (
    EncodingEstimator,
    resolve_device,
    score_predictions,
    validation_predictions,
    validation_psths,
)
from nwb_subspace.models.training import TrainingConfig
from nwb_subspace.pipeline import session_masks
from nwb_subspace.simulate import load_truth, simulate_session
from nwb_subspace.subspace.model import SubspaceModelEstimator, explained_variance_fraction
from nwb_subspace.subspace.srf import srf_shape_classes, subspace_rfs
from nwb_subspace.subspace.tuning import TuningSubspaceEstimator, subspace_similarity
from nwb_subspace.testing.truth_model import truth_filters_model_order


def recovery(tu, truth, units: np.ndarray, good: np.ndarray) -> dict:
    """Subspace match and dimensionality of the rows ``good`` of a TuningSubspaces."""
    sims, blurred = [], []
    n_lags = tu.components.shape[3]
    for i in good:
        u = int(units[i])
        k = int(truth.k[u])
        true = truth_filters_model_order(truth, u, n_lags)
        sims.append(subspace_similarity(true, tu.components[i, :k]))
        soft = np.stack([gaussian_filter(f, 1.0, mode="constant") for f in true])
        blurred.append(subspace_similarity(soft, tu.components[i, :k]))
    true_k = np.asarray(truth.k)[units[good]]
    dims = tu.dimensionality[good]
    sims = np.asarray(sims)
    by_k = {int(k): round(float(np.median(sims[true_k == k])), 3) for k in np.unique(true_k)}
    return {
        "cos2_median": float(np.median(sims)),
        "cos2_blurred_truth_median": float(np.median(blurred)),
        "within_one": float(np.mean(np.abs(dims - true_k) <= 1)),
        "cos2_by_true_k": by_k,
        "true_k": true_k.tolist(),
        "chosen_k": dims.tolist(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="small")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", choices=["cpu", "cuda", "auto"], default="cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    ap.add_argument(
        "--best-fit-too", action="store_true", help="also the dSTRFs of the best fit alone"
    )
    ap.add_argument(
        "--cache", type=Path, default=None, help="keep the session and the fit here; reuse them"
    )
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"preset {args.preset}, seed {args.seed}, torch {torch.__version__}, "
        f"threads {torch.get_num_threads()}, device {args.device}",
        flush=True,
    )
    out: dict = {"preset": args.preset, "seed": args.seed, "device": args.device}
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.cache if args.cache is not None else Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        session, truth, est = _session_and_fit(folder, args, out)
        _measure(session, truth, est, args, out)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


def _session_and_fit(folder: Path, args: argparse.Namespace, out: dict):
    """Simulate (or reuse) the session and fit (or reuse) the default CNN recipe."""
    stem = f"{args.preset}_seed{args.seed}"
    nwb, fitted = folder / f"{stem}.nwb", folder / f"{stem}_cnn.pt"
    t0 = time.perf_counter()
    if not nwb.exists():
        simulate_session(nwb, preset=args.preset, seed=args.seed)
    session, truth = load_session_data(nwb), load_truth(nwb.with_suffix(".truth.npz"))
    out["simulate_s"] = time.perf_counter() - t0
    masks = session_masks(session)
    X = session.spectrogram.data.astype(np.float32)
    t0 = time.perf_counter()
    if fitted.exists():  # a fit this script saved (a pickled estimator: only load your own)
        est = torch.load(fitted, map_location=resolve_device(args.device), weights_only=False)
        est.device_ = resolve_device(args.device)
    else:
        est = EncodingEstimator("cnn", training=TrainingConfig(), device=args.device)
        est.fit(X, session.counts, masks["fit"], masks["holdout"])
        torch.save(est, fitted)
    out["fit_s"] = time.perf_counter() - t0
    return session, truth, est


def _measure(session, truth, est, args: argparse.Namespace, out: dict) -> None:
    masks = session_masks(session)
    X = session.spectrogram.data.astype(np.float32)
    scores = est.score(X, session.validation, session.noise_ceiling)
    good = np.flatnonzero(scores.noise_corrected_correlation >= 0.7)
    out["units"], out["good_units"] = int(est.units_.size), int(good.size)
    out["cnn_nc_median"] = float(np.nanmedian(scores.noise_corrected_correlation))
    print(
        f"session in {out['simulate_s']:.0f} s; CNN fit in {out['fit_s']:.0f} s; "
        f"median noise-corrected r {out['cnn_nc_median']:.3f}; {good.size} of "
        f"{est.units_.size} units >= 0.7",
        flush=True,
    )
    fits = [m.eval() for m in est.members_]
    tuning = {}
    runs = [("ensemble", fits)] + ([("best fit", fits[:1])] if args.best_fit_too else [])
    for label, models in runs:
        t0 = time.perf_counter()
        mom = dstrf_moments(models, X)
        tu = (
            TuningSubspaceEstimator()
            .fit(mom, frequencies=session.frequencies, bin_s=1 / session.rate)
            .to_result()
        )
        res = recovery(tu, truth, est.units_, good)
        res["dstrf_pca_s"] = time.perf_counter() - t0
        tuning[label] = tu
        out[label] = res
        print(
            f"{label} ({len(models)} fits): cos^2 median {res['cos2_median']:.3f} "
            f"(truth blurred by 1 channel/bin: {res['cos2_blurred_truth_median']:.3f}), "
            f"by true k {res['cos2_by_true_k']}; dimensionality within +-1 "
            f"{res['within_one']:.0%}; {res['dstrf_pca_s']:.0f} s",
            flush=True,
        )
        print(f"  true k {res['true_k']}\n  chosen {res['chosen_k']}", flush=True)
    tu = tuning["ensemble"]
    srfs = subspace_rfs(tu, X, prediction=est.predict(X), rate=session.rate)
    classes = srf_shape_classes(srfs)
    got = np.array([classes[int(tu.unit_rows[i])] for i in good])
    want = np.asarray(truth.nl_kind)[est.units_[good]]
    out["shape_match"] = float(np.mean(got == want))
    sub = SubspaceModelEstimator(training=TrainingConfig(n_initializations=1), device=args.device)
    sub.fit(tu, X, session.counts[:, est.units_], masks["fit"], masks["holdout"])
    pred = validation_predictions(sub.predict(X), session.validation)
    psth = validation_psths(session.validation, est.units_)
    ceiling = np.asarray(session.noise_ceiling)[est.units_]
    ev_sub = score_predictions(pred, psth, ceiling).explained_variance
    frac = explained_variance_fraction(ev_sub, scores.explained_variance)[good]
    out["ev_fraction_median"] = float(np.nanmedian(frac))
    print(
        f"shape class match {out['shape_match']:.0%}; subspace-model / CNN explained "
        f"variance, median {out['ev_fraction_median']:.3f}",
        flush=True,
    )


if __name__ == "__main__":
    main()
