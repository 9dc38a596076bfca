"""How much shared structure does the population CNN's shared core put into the subspaces?

The population CNN predicts every unit of a session from one shared core (the readout is a
per-unit weighting of the same 100 features), so each unit's dSTRFs are combinations of the
same core features. On a site whose units have **independent** filters this could pull the
recovered tuning subspaces toward each other (and away from the truth). This script measures
that on the simulator, against a control that has no shared core.

For each of two simulated sessions (``subspace="shared"`` and ``"independent"``; the
``small`` preset otherwise, with fewer units, see ``--units``), it fits

* ``population``: the population CNN as the pipeline fits it (default recipe, all units
  together, dSTRFs averaged over its initialisations);
* ``per-unit``: the control, one CNN per unit (the same architecture with a smaller core,
  ``--unit-core``, fitted on that unit's column alone: nothing is shared between units),

computes dSTRF moments on the estimation bins (each bin once) and each unit's PCA
(:class:`~nwb_subspace.subspace.tuning.TuningSubspaceEstimator`), and prints per condition,
over the units whose CNN noise-corrected r >= ``--min-r`` in both fits:

* ``cos2``: median mean cos^2 of the principal angles between the unit's top-k PCs and its
  true filters (k = the true dimensionality);
* ``pair``: mean, over pairs of units, of the same similarity between two units' top-k PCs
  (each unit at its own true k), beside ``pair_true``, the same over the true filters.
  ``pair - pair_true`` is pairwise structure the fit created (or removed);
* ``cross_lean``: mean over ordered pairs (i, j) of sim(recovered_i, true_j) minus
  sim(true_i, true_j): how far each recovered subspace leans toward the OTHER units' true
  filters beyond what the truth shares;
* ``misfit_pair``: the mean pairwise similarity of the units' misfits (each recovered
  subspace with its own true subspace projected out): errors that are shared between units;
* ``misfit_in_others``: the share of each unit's misfit energy that lies in the span of the
  other units' true filters (``_isotropic``: that share if the misfit were spread evenly
  over the pixels; smooth filters make the real baseline higher, which the per-unit control
  gives).

With the defaults (12 units, 5 min of estimation sound, per-unit core 16/16/16 with one
initialisation) one seed takes 4-6 min on 2 CPU threads (7.5-9 min of CPU time).

Usage::

    python benchmarks/core_sharing.py --threads 2 --seed 0 --json out.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from itertools import combinations
from pathlib import Path

import numpy as np
import torch

from nwb_subspace.dstrf.compute import dstrf_moments
from nwb_subspace.io.session import load_session_data
from nwb_subspace.models.estimator import EncodingEstimator
from nwb_subspace.models.training import TrainingConfig
from nwb_subspace.pipeline import session_masks
from nwb_subspace.simulate import PRESETS, load_truth, simulate_session
from nwb_subspace.subspace.tuning import TuningSubspaceEstimator, subspace_similarity
from nwb_subspace.testing.truth_model import truth_filters_model_order


def pairwise(spaces: list[np.ndarray]) -> np.ndarray:
    """Matrix of :func:`subspace_similarity` between every two subspaces (NaN diagonal)."""
    n = len(spaces)
    out = np.full((n, n), np.nan)
    for i, j in combinations(range(n), 2):
        out[i, j] = out[j, i] = subspace_similarity(spaces[i], spaces[j])
    return out


def cross(recovered: list[np.ndarray], true: list[np.ndarray]) -> np.ndarray:
    """``sim(recovered_i, true_j)`` for every ordered pair ``i != j`` (NaN diagonal)."""
    n = len(true)
    out = np.full((n, n), np.nan)
    for i in range(n):
        for j in range(n):
            if i != j:
                out[i, j] = subspace_similarity(recovered[i], true[j])
    return out


def tuning_pcs(models, X, bins, frequencies, rate) -> np.ndarray:
    """Per-unit PCs (n_units, n_components, F, D) from the dSTRFs of ``models``."""
    mom = dstrf_moments(models, X, bins=bins)
    est = TuningSubspaceEstimator().fit(mom, frequencies=frequencies, bin_s=1 / rate)
    return est.to_result().components


def fit_population(X, Y, masks, training, bins, session):
    """The pipeline's population CNN; returns (PCs, noise-corrected r, seconds)."""
    t0 = time.perf_counter()
    est = EncodingEstimator("cnn", training=training).fit(X, Y, masks["fit"], masks["holdout"])
    nc = est.score(X, session.validation, session.noise_ceiling).noise_corrected_correlation
    fits = [m.eval() for m in est.members_]
    pcs = tuning_pcs(fits, X, bins, session.frequencies, session.rate)
    return est.units_, pcs, nc, time.perf_counter() - t0


def fit_per_unit(X, Y, masks, training, bins, session, core: dict):
    """One CNN per unit (no shared core); returns (PCs, noise-corrected r, seconds)."""
    t0 = time.perf_counter()
    pcs, nc = [], []
    for u in range(Y.shape[1]):
        est = EncodingEstimator("cnn", architecture=core, training=training)
        est.fit(X, Y[:, [u]], masks["fit"], masks["holdout"])
        val = {k: _column(v, u) for k, v in session.validation.items()}
        ceiling = np.asarray(session.noise_ceiling)[[u]]
        nc.append(float(est.score(X, val, ceiling).noise_corrected_correlation[0]))
        fits = [m.eval() for m in est.members_]
        pcs.append(tuning_pcs(fits, X, bins, session.frequencies, session.rate)[0])
    return np.arange(Y.shape[1]), np.stack(pcs), np.asarray(nc), time.perf_counter() - t0


def _column(psth, u: int):
    """A ValidationPSTH-like view holding one unit's column."""

    class One:
        start_bins = psth.start_bins
        n_bins = psth.n_bins
        mean = np.asarray(psth.mean)[:, [u]]

    return One()


def measure(pcs: np.ndarray, truth, units: np.ndarray, keep: np.ndarray) -> dict:
    """cos^2 to the truth, pairwise similarity (recovered, true) and the cross lean."""
    n_lags = pcs.shape[3]
    true, rec = [], []
    for i in keep:
        u = int(units[i])
        k = int(truth.k[u])
        true.append(truth_filters_model_order(truth, u, n_lags))
        rec.append(pcs[i, :k])
    cos2 = np.array([subspace_similarity(t, r) for t, r in zip(true, rec, strict=True)])
    p_rec, p_true = pairwise(rec), pairwise(true)
    lean = cross(rec, true) - p_true
    resid, share, chance = misfit(rec, true)
    return {
        "n": int(len(keep)),
        "cos2_median": float(np.median(cos2)),
        "pair": float(np.nanmean(p_rec)),
        "pair_true": float(np.nanmean(p_true)),
        "pair_excess": float(np.nanmean(p_rec - p_true)),
        "cross_lean": float(np.nanmean(lean)),
        "misfit_pair": float(np.nanmean(pairwise(resid))),
        "misfit_in_others": float(np.mean(share)),
        "misfit_in_others_isotropic": float(np.mean(chance)),
    }


def _basis(vectors: np.ndarray, tol: float = 1e-8) -> np.ndarray:
    """Orthonormal basis (columns) of the span of the rows of ``vectors`` (flattened)."""
    m = np.asarray(vectors, dtype=np.float64).reshape(len(vectors), -1).T
    u, s, _ = np.linalg.svd(m, full_matrices=False)
    return u[:, s > tol * max(s.max(initial=0.0), 1e-300)]


def misfit(rec: list[np.ndarray], true: list[np.ndarray]):
    """Each recovered subspace's part outside its own true subspace.

    Returns the residual directions (one array of vectors per unit, for their pairwise
    similarity), the share of the misplaced energy that lies in the span of the OTHER units'
    true filters (orthogonalised against the unit's own), and that share for misplaced energy
    spread evenly over the complement of the unit's own subspace (``dim / (F D - k)``).
    """
    resid, share, chance = [], [], []
    for i, (r, t) in enumerate(zip(rec, true, strict=True)):
        q, own = _basis(r), _basis(t)
        rest = q - own @ (own.T @ q)
        others = np.concatenate([x for j, x in enumerate(true) if j != i])
        o = _basis(others)
        o = _basis((o - own @ (own.T @ o)).T)
        wrong = float(np.sum(rest**2))
        share.append(float(np.sum((o.T @ rest) ** 2)) / wrong if wrong > 0 else np.nan)
        chance.append(o.shape[1] / (q.shape[0] - own.shape[1]))
        resid.append(rest.T)
    return resid, np.asarray(share), np.asarray(chance)


def run_condition(subspace: str, args, folder: Path) -> dict:
    cfg = PRESETS["small"].replace(
        name=f"core_{subspace}", subspace=subspace, n_units=args.units,
        estimation_s=args.estimation_s,
    )  # fmt: skip
    nwb = folder / f"{subspace}_seed{args.seed}.nwb"
    t0 = time.perf_counter()
    if not nwb.exists():
        simulate_session(nwb, preset=cfg, seed=args.seed)
    session, truth = load_session_data(nwb), load_truth(nwb.with_suffix(".truth.npz"))
    sim_s = time.perf_counter() - t0
    masks = session_masks(session)
    X = session.spectrogram.data.astype(np.float32)
    Y = np.asarray(session.counts, dtype=np.float32)
    bins = masks["fit"] | masks["holdout"]  # estimation sounds, each bin once
    pop_train = TrainingConfig(seed=args.seed)
    unit_train = TrainingConfig(seed=args.seed, n_initializations=args.unit_inits)
    core = dict(zip(("n_channels1", "n_channels2", "n_hidden"), args.unit_core, strict=True))
    out: dict = {"subspace": subspace, "simulate_s": sim_s}
    fits = {
        "population": fit_population(X, Y, masks, pop_train, bins, session),
        "per-unit": fit_per_unit(X, Y, masks, unit_train, bins, session, core),
    }
    good = np.ones(Y.shape[1], bool)
    for units, _, nc, _ in fits.values():
        ok = np.zeros(Y.shape[1], bool)
        ok[units[np.asarray(nc) >= args.min_r]] = True
        good &= ok
    for name, (units, pcs, nc, secs) in fits.items():
        row = {int(u): i for i, u in enumerate(units)}
        keep = np.array([row[u] for u in np.flatnonzero(good) if u in row], dtype=int)
        res = measure(pcs, truth, units, keep) if keep.size >= 2 else {"n": int(keep.size)}
        res.update(seconds=secs, nc_median=float(np.nanmedian(nc)))
        out[name] = res
        print(f"  {subspace:11s} {name:10s} " + ", ".join(
            f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in res.items()
        ), flush=True)  # fmt: skip
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--units", type=int, default=12, help="units per session")
    ap.add_argument("--estimation-s", type=float, default=300.0, help="estimation sound, s")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--min-r", type=float, default=0.5, help="noise-corrected r cut")
    ap.add_argument("--unit-inits", type=int, default=1, help="initialisations per unit CNN")
    ap.add_argument(
        "--unit-core", type=int, nargs=3, default=(16, 16, 16),
        metavar=("C1", "C2", "H"), help="per-unit CNN core: n_channels1 n_channels2 n_hidden",
    )  # fmt: skip
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--cache", type=Path, default=None, help="keep/reuse the simulated files")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"units {args.units}, estimation {args.estimation_s:g} s, seed {args.seed}, torch "
        f"{torch.__version__}, threads {torch.get_num_threads()}, per-unit core "
        f"{tuple(args.unit_core)} x {args.unit_inits} init(s)",
        flush=True,
    )
    t0 = time.perf_counter()
    out = {"args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}}
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.cache if args.cache is not None else Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        for subspace in ("shared", "independent"):
            out[subspace] = run_condition(subspace, args, folder)
    out["total_s"] = time.perf_counter() - t0
    print(f"total {out['total_s']:.0f} s", flush=True)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
