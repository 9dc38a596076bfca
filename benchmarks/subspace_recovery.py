"""How well the tuning subspaces recover a simulated session's ground truth, for any preset.

The unit test ``tests/test_subspace_science.py`` checks the dSTRF / tuning-subspace science
on the ``small`` preset (about 5 minutes of sound). This script measures the same numbers on
any preset (``paper``: 30 minutes of sound, 60 units) so the effect of the amount of data can
be seen, for the two ways of averaging CNN fits behind the dSTRFs:

- ``ensemble``: the mean over the initialisations of one CNN fitted on all the fit data
  (``--ensemble-init``, default 3: the pipeline's default, ``[training] jackknife = 0``);
- ``jackknife``: the mean over ``--k`` jackknife fits, each without one fold of the fit
  sounds and the best of ``--n-init`` initialisations (``TrainingConfig(jackknife=K,
  n_initializations=N)``; the paper: 8 x best of 5). Its full-data fit (best of N) is the
  scored CNN, as in the pipeline.

``--fits both`` (the default) fits both on the same session and prints them side by side.
The steps follow the pipeline's current definitions: the dSTRF frames are
``session.frame_bins(--frames)`` (each stimulus bin once, at the first presentation of every
distinct sound; ``estimation`` by default, ``all`` adds the validation sounds), optionally
every ``--stride``-th of them (to measure a long preset in less time); the outlier rule is
``--outlier-rule`` (default: the ``[subspace]`` default); the PCA, both dimensionality rules
and the SRF grid use the ``[subspace]`` defaults; the SRF model maps use every stimulus bin
once (``frame_bins("all")``).

For the units whose CNN noise-corrected correlation is >= 0.7 (by the ensemble's fit when
both are measured, so both columns score the same units) it prints, per fit kind:

- the fit time (a cached fit prints the time of the run that fitted it);
- the median mean cos^2 of the principal angles between the true filters and the top-k PCs
  (k = the true dimensionality), also against the truth blurred by one channel and one bin
  (how much of the mismatch is a smoothing of the truth), and the time of the dSTRF + PCA
  step;
- the fraction whose dimensionality is within +-1 of the truth, for ours
  (``dimensionality``) and the reference rule (``dimensionality_reference``: 95% of the
  variance of the top 15 PCs);
- the fraction whose SRF shape class matches the true nonlinearity (and the SRF time);
- the median subspace-model / CNN explained-variance fraction (a one-initialisation
  subspace model; and its time);
- for the jackknife, the median out-of-fold correlation with the single-trial counts.

``--best-fit-too`` adds a column for the dSTRFs of the ensemble's best fit alone.

Usage::

    python benchmarks/subspace_recovery.py --preset small
    python benchmarks/subspace_recovery.py --preset small --fits both --k 8 --n-init 2 \\
        --stride 2 --threads 2
    python benchmarks/subspace_recovery.py --preset paper --device cuda --json out.json
    python benchmarks/subspace_recovery.py --preset paper --cache DIR  # keep/reuse file + fits
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

from nwb_subspace.config import SubspaceSettings
from nwb_subspace.dstrf.compute import dstrf_moments
from nwb_subspace.io.session import load_session_data
from nwb_subspace.models.estimator import EncodingEstimator, resolve_device
from nwb_subspace.models.training import TrainingConfig, jackknife_folds
from nwb_subspace.pipeline import session_masks
from nwb_subspace.simulate import load_truth, simulate_session
from nwb_subspace.subspace.model import SubspaceModelEstimator, explained_variance_fraction
from nwb_subspace.subspace.srf import srf_shape_classes, subspace_rfs
from nwb_subspace.subspace.tuning import TuningSubspaceEstimator, subspace_similarity
from nwb_subspace.testing.truth_model import truth_filters_model_order

#: The table's rows: (key in a kind's results, label, format).
ROWS = (
    ("fit_s", "fit time (s)", "{:.0f}"),
    ("n_fits", "fits averaged for the dSTRFs", "{:d}"),
    ("cos2_median", "cos^2 median (top-k PCs, true k)", "{:.3f}"),
    ("cos2_blurred_truth_median", "  vs truth blurred 1 channel/bin", "{:.3f}"),
    ("within_one", "dimensionality within +-1, ours", "{:.0%}"),
    ("within_one_reference", "dimensionality within +-1, reference", "{:.0%}"),
    ("outlier_frames_median", "outlier frames per unit, median", "{:g}"),
    ("dstrf_pca_s", "dSTRFs + PCA (s)", "{:.0f}"),
    ("shape_match", "SRF shape class match", "{:.0%}"),
    ("srf_s", "SRFs (s)", "{:.0f}"),
    ("ev_fraction_median", "subspace / CNN EV fraction, median", "{:.3f}"),
    ("subspace_model_s", "subspace model fit + score (s)", "{:.0f}"),
    ("oof_correlation_median", "out-of-fold r, median", "{:.3f}"),
)


def recovery(tu, truth, units: np.ndarray, good: np.ndarray) -> dict:
    """Subspace match and dimensionality (ours and, when stored, the reference rule's) of the
    rows ``good`` of a TuningSubspaces; ``units[i]`` is row ``i``'s unit in the truth."""
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
    dims = np.asarray(tu.dimensionality)[good]
    sims = np.asarray(sims)
    by_k = {int(k): round(float(np.median(sims[true_k == k])), 3) for k in np.unique(true_k)}
    out = {
        "cos2_median": float(np.median(sims)),
        "cos2_blurred_truth_median": float(np.median(blurred)),
        "within_one": float(np.mean(np.abs(dims - true_k) <= 1)),
        "cos2_by_true_k": by_k,
        "true_k": true_k.tolist(),
        "chosen_k": dims.tolist(),
    }
    ref = getattr(tu, "dimensionality_reference", None)
    if ref is not None:
        ref = np.asarray(ref)[good]
        out["within_one_reference"] = float(np.mean(np.abs(ref - true_k) <= 1))
        out["chosen_k_reference"] = ref.tolist()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="small")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", choices=["cpu", "cuda", "auto"], default="cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--fits", choices=["ensemble", "jackknife", "both"], default="both")
    ap.add_argument(
        "--ensemble-init", type=int, default=TrainingConfig().n_initializations,
        help="initialisations of the ensemble (default: the [training] default, 3)",
    )  # fmt: skip
    ap.add_argument("--k", type=int, default=8, help="jackknife fits (default 8, as the paper)")
    ap.add_argument(
        "--n-init", type=int, default=5, help="initialisations per jackknife fit (paper: 5)"
    )
    ap.add_argument("--frames", choices=["estimation", "all"], default=SubspaceSettings().frames)
    ap.add_argument(
        "--outlier-rule", choices=["reference", "rms"], default=SubspaceSettings().outlier_rule
    )
    ap.add_argument("--stride", type=int, default=1, help="use every n-th frame bin (>= 1)")
    ap.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    ap.add_argument(
        "--best-fit-too", action="store_true", help="also the dSTRFs of the best fit alone"
    )
    ap.add_argument(
        "--cache", type=Path, default=None, help="keep the session and the fits here; reuse them"
    )
    args = ap.parse_args()
    if args.stride < 1 or args.k < 2 or args.n_init < 1 or args.ensemble_init < 1:
        ap.error("--stride, --n-init and --ensemble-init must be >= 1 and --k >= 2")
    if args.threads:
        torch.set_num_threads(args.threads)
    out: dict = {key: str(v) if isinstance(v, Path) else v for key, v in vars(args).items()}
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.cache if args.cache is not None else Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        session, truth = _session(folder, args, out)
        _header(session, args, out)
        fits = _fits(session, folder, args, out)
        _measure(session, truth, fits, args, out)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


def _session(folder: Path, args: argparse.Namespace, out: dict):
    """Simulate (or reuse) the session; returns it and its truth."""
    nwb = folder / f"{args.preset}_seed{args.seed}.nwb"
    t0 = time.perf_counter()
    if not nwb.exists():
        simulate_session(nwb, preset=args.preset, seed=args.seed)
    session, truth = load_session_data(nwb), load_truth(nwb.with_suffix(".truth.npz"))
    out["simulate_s"] = time.perf_counter() - t0
    return session, truth


def _header(session, args: argparse.Namespace, out: dict) -> None:
    """Print the run's settings and the frames (fills ``out['frames']``)."""
    chosen = np.flatnonzero(session.frame_bins(args.frames))
    out["frame_bins_total"] = int(chosen.size)
    out["frames"] = int(chosen[:: args.stride].size)
    kinds = {
        "ensemble": f"ensemble of {args.ensemble_init}",
        "jackknife": f"jackknife {args.k} x best of {args.n_init}",
    }
    fits = list(kinds.values()) if args.fits == "both" else [kinds[args.fits]]
    print(
        f"preset {args.preset}, seed {args.seed}, torch {torch.__version__}, threads "
        f"{torch.get_num_threads()}, device {args.device}\n"
        f"fits: {' and '.join(fits)}\n"
        f"dSTRF frames: {args.frames} sounds, each stimulus bin once ({chosen.size} bins), "
        f"stride {args.stride} -> {out['frames']} frames; outlier rule {args.outlier_rule}; "
        f"session in {out['simulate_s']:.0f} s",
        flush=True,
    )


def _fits(session, folder: Path, args: argparse.Namespace, out: dict) -> dict:
    """Fit (or load from ``folder``) the CNN(s) of ``--fits``: ``{kind: estimator}``."""
    masks = session_masks(session)
    X, Y = session.spectrogram.data.astype(np.float32), session.counts
    stem = f"{args.preset}_seed{args.seed}"
    fits = {}
    if args.fits in ("ensemble", "both"):
        name = (
            f"{stem}_cnn.pt" if args.ensemble_init == 3 else f"{stem}_cnn_n{args.ensemble_init}.pt"
        )
        training = TrainingConfig(n_initializations=args.ensemble_init, seed=args.seed)
        fits["ensemble"] = _fit_or_load(folder / name, training, X, Y, masks, None, args, out)
    if args.fits in ("jackknife", "both"):
        fit_trials = np.asarray(session.split.fit_trials, dtype=np.int64)
        folds = jackknife_folds(
            session.n_bins,
            np.asarray(session.trial_bins)[fit_trials],
            np.asarray(session.trials.sound_id)[fit_trials],
            args.k,
            seed=args.seed,
        )
        out["fold_bins"] = folds.bins.tolist()
        note = f" ({folds.note})" if folds.note else ""
        print(f"jackknife folds: fit bins {folds.bins.tolist()}{note}", flush=True)
        training = TrainingConfig(n_initializations=args.n_init, jackknife=args.k, seed=args.seed)
        path = folder / f"{stem}_cnn_jk{args.k}_n{args.n_init}.pt"
        fits["jackknife"] = _fit_or_load(path, training, X, Y, masks, folds.labels, args, out)
    return fits


def _fit_or_load(path: Path, training, X, Y, masks, folds, args, out: dict) -> EncodingEstimator:
    """A CNN fitted with ``training`` (``folds``: the jackknife's), loaded from ``path`` when
    this script saved it there; ``out[path.stem + '_fit_s']`` is the time of the fit."""
    times = path.with_suffix(".json")
    if path.exists() and times.exists():  # a fit this script saved (pickled: only load your own)
        est = torch.load(path, map_location=resolve_device(args.device), weights_only=False)
        est.device_ = resolve_device(args.device)
        seconds, cached = json.loads(times.read_text())["fit_s"], True
    else:
        t0 = time.perf_counter()
        est = EncodingEstimator("cnn", training=training, device=args.device)
        est.fit(X, Y, masks["fit"], masks["holdout"], folds=folds)
        seconds, cached = time.perf_counter() - t0, False
        torch.save(est, path)
        times.write_text(json.dumps({"fit_s": seconds}))
    out[f"{path.stem}_fit_s"] = seconds
    print(f"{path.stem}: {'loaded (fitted' if cached else 'fitted'} in {seconds:.0f} s"
          f"{')' if cached else ''}", flush=True)  # fmt: skip
    est.fit_seconds_ = seconds
    return est


def _measure(session, truth, fits: dict, args: argparse.Namespace, out: dict) -> None:
    """Recovery of every fit kind at the same frames and units; prints the table."""
    X = session.spectrogram.data.astype(np.float32)
    chooser = fits.get("ensemble", fits.get("jackknife"))
    scores = chooser.score(X, session.validation, session.noise_ceiling)
    nc = np.nan_to_num(np.asarray(scores.noise_corrected_correlation, dtype=float), nan=-1.0)
    good = np.flatnonzero(nc >= 0.7)
    out["units"], out["good_units"] = int(chooser.units_.size), int(good.size)
    out["cnn_nc_median"] = float(np.nanmedian(scores.noise_corrected_correlation))
    which = "ensemble" if "ensemble" in fits else "jackknife's full"
    print(
        f"median noise-corrected r {out['cnn_nc_median']:.3f} ({which} fit); {good.size} of "
        f"{chooser.units_.size} units >= 0.7",
        flush=True,
    )
    if good.size == 0:
        print("no unit reached 0.7: nothing to measure", flush=True)
        return
    bins = np.flatnonzero(session.frame_bins(args.frames))[:: args.stride]
    kinds = [(k, est, list(est.ensemble_)) for k, est in fits.items()]
    if args.best_fit_too and "ensemble" in fits:
        kinds.append(("best fit", fits["ensemble"], [fits["ensemble"].model_]))
    results = {}
    for label, est, models in kinds:
        res = _one_kind(session, truth, est, models, good, bins, args)
        if label == "jackknife":
            res["oof_correlation_median"] = float(np.nanmedian(est.oof_correlation_))
            res["jackknife_failed"] = {int(j): p for j, p in est.jackknife_problems_.items()}
        out[label] = results[label] = res
        print(f"{label}: done", flush=True)
    _print_table(results, fits, args)


def _one_kind(session, truth, est, models: list, good, bins, args) -> dict:
    """dSTRFs + PCA, SRF shape classes and subspace model of one fit kind (units ``good``)."""
    sub = SubspaceSettings(outlier_rule=args.outlier_rule, frames=args.frames)
    X = session.spectrogram.data.astype(np.float32)
    rows = est.units_[good]
    t0 = time.perf_counter()
    mom = dstrf_moments(
        [m.eval() for m in models], X, bins=bins, units=good,
        outlier_threshold=sub.outlier_threshold, outlier_rule=sub.outlier_rule,
    )  # fmt: skip
    tu = TuningSubspaceEstimator(
        n_components=sub.n_components, variance_threshold=sub.variance_threshold,
        seed=args.seed, reference_n_components=sub.reference_n_components,
        reference_variance_threshold=sub.reference_variance_threshold,
    ).fit(mom, frequencies=session.frequencies, bin_s=1 / session.rate, unit_rows=rows)  # fmt: skip
    tu = tu.to_result()
    res = recovery(tu, truth, rows, np.arange(good.size))
    res["dstrf_pca_s"] = time.perf_counter() - t0
    res["n_fits"], res["fit_s"] = len(models), est.fit_seconds_
    res["outlier_frames_median"] = float(np.median(mom.n_outliers))
    t0 = time.perf_counter()
    srfs = subspace_rfs(
        tu, X, prediction=est.predict(X)[:, good], rate=session.rate,
        bins=session.frame_bins("all"), grid=sub.srf_grid,
        high_activity_threshold=sub.high_activity_threshold, seed=args.seed,
    )  # fmt: skip
    classes = srf_shape_classes(srfs)
    got = np.array([classes[int(r)] for r in rows])
    res["shape_match"] = float(np.mean(got == np.asarray(truth.nl_kind)[rows]))
    res["srf_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    masks = session_masks(session)
    sm = SubspaceModelEstimator(
        training=TrainingConfig(n_initializations=1, seed=args.seed), device=args.device
    ).fit(tu, X, session.counts[:, rows], masks["fit"], masks["holdout"])
    ev_sub = sm.score(X, session.validation, session.noise_ceiling, columns=rows).explained_variance
    ev_cnn = est.score(X, session.validation, session.noise_ceiling).explained_variance[good]
    res["ev_fraction_median"] = float(np.nanmedian(explained_variance_fraction(ev_sub, ev_cnn)))
    res["subspace_model_s"] = time.perf_counter() - t0
    return res


def _print_table(results: dict, fits: dict, args: argparse.Namespace) -> None:
    """The measures of every fit kind side by side, then the chosen dimensionalities."""
    names = {
        "ensemble": f"ensemble ({args.ensemble_init} init)",
        "jackknife": f"jackknife ({args.k} x best of {args.n_init})",
        "best fit": "best fit alone",
    }
    cols = [names[k] for k in results]
    width = max(len(label) for _, label, _ in ROWS) + 2
    cw = max(12, *(len(c) + 2 for c in cols))
    print("\n" + " " * width + "".join(c.rjust(cw) for c in cols))
    for key, label, fmt in ROWS:
        if not any(key in r for r in results.values()):
            continue
        cells = [fmt.format(r[key]) if key in r else "-" for r in results.values()]
        print(label.ljust(width) + "".join(c.rjust(cw) for c in cells))
    if "jackknife" in fits:
        jk = fits["jackknife"]
        only = sum(h.seconds for h in jk.jackknife_histories_)
        print(f"(jackknife fit time: {only:.0f} s the {len(jk.jackknife_members_)} jackknife "
              "fits, the rest its full-data fit, which is the scored CNN)")  # fmt: skip
    first = next(iter(results.values()))
    print(f"\ntrue k              {first['true_k']}")
    for kind, r in results.items():
        print(f"{kind:<10} by true k {r['cos2_by_true_k']}")
        print(f"  ours            {r['chosen_k']}")
        if "chosen_k_reference" in r:
            print(f"  reference rule  {r['chosen_k_reference']}")
    print(flush=True)


if __name__ == "__main__":
    main()
