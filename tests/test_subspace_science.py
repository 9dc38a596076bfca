"""Done-when science of the tuning-subspace issue on the CNN fitted to the ``small`` session.

For units whose CNN noise-corrected correlation is >= 0.7: the recovered subspace matches the
true one (median mean cos^2 of principal angles >= 0.85), the dimensionality is within +-1
of the truth for >= 75%, the SRF shape class matches the true nonlinearity for >= 80%, and
the subspace model keeps >= 95% of the CNN's explained variance (median). The dSTRFs are the
mean over the CNN's 3 initialisations (as the pipeline computes them). Slow: uses the
session-scoped CNN fit of tests/conftest.py; the numbers are printed (run with ``-s``).
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import session_masks

from nwb_subspace.dstrf import dstrf_moments
from nwb_subspace.models.estimator import (
    score_predictions,
    validation_predictions,
    validation_psths,
)
from nwb_subspace.models.training import TrainingConfig
from nwb_subspace.srf import srf_shape_classes, subspace_rfs
from nwb_subspace.subspace_fit import SubspaceModelEstimator, explained_variance_fraction
from nwb_subspace.testing.truth_model import truth_filters_model_order
from nwb_subspace.tuning import TuningSubspaceEstimator, subspace_similarity

# Both files share the session-scoped small-session fits: keep them on one xdist worker.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("small_session")]


@pytest.fixture(scope="module")
def cnn_tuning(small_session, small_fits):
    session, truth = small_session
    est = small_fits["cnn"]
    X = session.spectrogram.data.astype(np.float32)
    scores = est.score(X, session.validation, session.noise_ceiling)
    fits = [m.cpu().eval() for m in est.members_]
    mom = dstrf_moments(fits, X)  # every bin, D = the memory; the mean over the 3 fits
    tu = (
        TuningSubspaceEstimator()
        .fit(mom, frequencies=session.frequencies, bin_s=1 / session.rate)
        .result_
    )
    good = np.flatnonzero(scores.noise_corrected_correlation >= 0.7)
    print(f"\n{good.size} of {est.units_.size} units with CNN noise-corrected r >= 0.7")
    print("dSTRF timings", mom.timings, "notes", mom.notes)
    return {"X": X, "est": est, "scores": scores, "tuning": tu, "good": good, "mom": mom}


@pytest.mark.xfail(
    reason="issue 7 open: the PCs of the CNN's dSTRFs (mean over its 3 fits) match the true "
    "subspace at median cos^2 0.63 (goal 0.85; one fit 0.52, 6 fits 0.69); the truth model's "
    "dSTRFs recover it at > 0.999 (tests/test_tuning.py)",
    strict=False,
)
def test_recovered_subspace_matches_truth(small_session, cnn_tuning):
    _, truth = small_session
    tu, units = cnn_tuning["tuning"], cnn_tuning["est"].units_
    sims = []
    for i in cnn_tuning["good"]:
        u = int(units[i])
        k = int(truth.k[u])
        true = truth_filters_model_order(truth, u, tu.components.shape[3])
        sims.append(subspace_similarity(true, tu.components[i, :k]))
    print("subspace cos^2 per unit", np.round(sims, 3), "median", np.median(sims))
    assert np.median(sims) >= 0.85


@pytest.mark.xfail(
    reason="issue 7 open: the 95% rule on the variance 3 CNN fits agree on picks 2-11 "
    "dimensions (true k 1-6): within +-1 for 34% (goal 75%; 0% from one fit's dSTRFs)",
    strict=False,
)
def test_dimensionality_within_one(small_session, cnn_tuning):
    _, truth = small_session
    tu, units, good = cnn_tuning["tuning"], cnn_tuning["est"].units_, cnn_tuning["good"]
    true_k = np.asarray(truth.k)[units[good]]
    dim = tu.dimensionality[good]
    print("true k", true_k.tolist(), "chosen", dim.tolist())
    assert np.mean(np.abs(dim - true_k) <= 1) >= 0.75


def test_shape_class_matches_true_nonlinearity(small_session, cnn_tuning):
    session, truth = small_session
    est, tu, good = cnn_tuning["est"], cnn_tuning["tuning"], cnn_tuning["good"]
    X = cnn_tuning["X"]
    srfs = subspace_rfs(tu, X, prediction=est.predict(X), rate=session.rate)
    classes = srf_shape_classes(srfs)
    got = np.array([classes[int(tu.unit_rows[i])] for i in good])
    want = np.asarray(truth.nl_kind)[est.units_[good]]
    print("shape classes", list(zip(want.tolist(), got.tolist(), strict=True)))
    print("shape class match", np.mean(got == want))
    assert np.mean(got == want) >= 0.8


def test_subspace_model_keeps_cnn_explained_variance(small_session, cnn_tuning):
    session, _ = small_session
    est, tu, good = cnn_tuning["est"], cnn_tuning["tuning"], cnn_tuning["good"]
    X = cnn_tuning["X"]
    fit, hold = session_masks(session)
    sub = SubspaceModelEstimator(training=TrainingConfig(n_initializations=1))
    sub.fit(tu, X, session.counts[:, est.units_], fit, hold)
    pred = validation_predictions(sub.predict(X), session.validation)
    psth = validation_psths(session.validation, est.units_)
    ceiling = np.asarray(session.noise_ceiling)[est.units_]
    ev_sub = score_predictions(pred, psth, ceiling).explained_variance
    frac = explained_variance_fraction(ev_sub, cnn_tuning["scores"].explained_variance)[good]
    print("EV fraction subspace / CNN", np.round(frac, 3), "median", np.nanmedian(frac))
    assert np.nanmedian(frac) >= 0.95
