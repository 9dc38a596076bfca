"""Done-when science of the tuning-subspace issue, against the simulator's ground truth.

For units whose CNN noise-corrected correlation is >= 0.7: the recovered subspace matches the
true one (median mean cos^2 of principal angles >= 0.85), the dimensionality is within +-1
of the truth for >= 75%, the SRF shape class matches the true nonlinearity for >= 80%, and
the subspace model keeps >= 95% of the CNN's explained variance (median). The dSTRFs are the
mean over the CNN's 3 initialisations (as the pipeline computes them).

Two sessions: ``small`` (about 5 minutes of sound; the session-scoped CNN fit of
tests/conftest.py) and ``paper`` (30 minutes of sound, 60 units; skipped unless ``pytest
--paper``: about 30 minutes on 2 CPU cores). The subspace match and the dimensionality are
limited by the amount of data: on ``small`` they fall short (expected failures), on
``paper`` they are met. The numbers are printed (run with ``-s``).
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import session_masks

from nwb_subspace.dstrf.compute import dstrf_moments
from nwb_subspace.models.estimator import (
    EncodingEstimator,
    score_predictions,
    validation_predictions,
    validation_psths,
)
from nwb_subspace.models.training import TrainingConfig
from nwb_subspace.subspace.model import SubspaceModelEstimator, explained_variance_fraction
from nwb_subspace.subspace.srf import srf_shape_classes, subspace_rfs
from nwb_subspace.subspace.tuning import TuningSubspaceEstimator, subspace_similarity
from nwb_subspace.testing.truth_model import truth_filters_model_order

# Both files share the session-scoped small-session fits: keep them on one xdist worker.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("small_session")]

DATA_LIMITED = (
    "issue 7: with the small preset's 5 minutes of sound the CNN's dSTRFs are a blurred "
    "truth: median cos^2 0.63-0.64 and dimensionality within +-1 for 34-45% (goals 0.85 / "
    "75%); met on the paper preset (30 minutes: 0.92 / 88-90%; pytest --paper)"
)


def _paper_session_and_fit(tmp_path_factory):
    from nwb_subspace.io.session import load_session_data
    from nwb_subspace.simulate import load_truth, simulate_session

    folder = tmp_path_factory.mktemp("paper")
    nwb_path, truth_path = simulate_session(folder / "paper.nwb", preset="paper", seed=0)
    session, truth = load_session_data(nwb_path), load_truth(truth_path)
    fit, hold = session_masks(session)
    est = EncodingEstimator("cnn", training=TrainingConfig())
    est.fit(session.spectrogram.data, session.counts, fit, hold)
    return session, truth, est


@pytest.fixture(scope="module", params=["small", pytest.param("paper", marks=pytest.mark.paper)])
def cnn_tuning(request, tmp_path_factory):
    if request.param == "small":
        session, truth = request.getfixturevalue("small_session")
        est = request.getfixturevalue("small_fits")["cnn"]
    else:
        session, truth, est = _paper_session_and_fit(tmp_path_factory)
    X = session.spectrogram.data.astype(np.float32)
    scores = est.score(X, session.validation, session.noise_ceiling)
    fits = [m.cpu().eval() for m in est.members_]
    mom = dstrf_moments(fits, X)  # every bin, D = the memory; the mean over the 3 fits
    tu = (
        TuningSubspaceEstimator()
        .fit(mom, frequencies=session.frequencies, bin_s=1 / session.rate)
        .to_result()
    )
    good = np.flatnonzero(scores.noise_corrected_correlation >= 0.7)
    print(f"\n{request.param}: {good.size} of {est.units_.size} units with CNN nc r >= 0.7")
    print("dSTRF timings", mom.timings, "notes", mom.notes)
    return {
        "preset": request.param,
        "session": session,
        "truth": truth,
        "X": X,
        "est": est,
        "scores": scores,
        "tuning": tu,
        "good": good,
        "mom": mom,
    }


def _expect_data_limited(request, cnn_tuning) -> None:
    if cnn_tuning["preset"] == "small":
        request.applymarker(pytest.mark.xfail(reason=DATA_LIMITED, strict=False))


def test_recovered_subspace_matches_truth(request, cnn_tuning):
    _expect_data_limited(request, cnn_tuning)
    truth, tu, units = cnn_tuning["truth"], cnn_tuning["tuning"], cnn_tuning["est"].units_
    sims = []
    for i in cnn_tuning["good"]:
        u = int(units[i])
        k = int(truth.k[u])
        true = truth_filters_model_order(truth, u, tu.components.shape[3])
        sims.append(subspace_similarity(true, tu.components[i, :k]))
    print("subspace cos^2 per unit", np.round(sims, 3), "median", np.median(sims))
    assert np.median(sims) >= 0.85


def test_dimensionality_within_one(request, cnn_tuning):
    _expect_data_limited(request, cnn_tuning)
    truth, tu = cnn_tuning["truth"], cnn_tuning["tuning"]
    units, good = cnn_tuning["est"].units_, cnn_tuning["good"]
    true_k = np.asarray(truth.k)[units[good]]
    dim = tu.dimensionality[good]
    print("true k", true_k.tolist(), "chosen", dim.tolist())
    assert np.mean(np.abs(dim - true_k) <= 1) >= 0.75


def test_shape_class_matches_true_nonlinearity(cnn_tuning):
    session, truth = cnn_tuning["session"], cnn_tuning["truth"]
    est, tu, good = cnn_tuning["est"], cnn_tuning["tuning"], cnn_tuning["good"]
    X = cnn_tuning["X"]
    srfs = subspace_rfs(tu, X, prediction=est.predict(X), rate=session.rate)
    classes = srf_shape_classes(srfs)
    got = np.array([classes[int(tu.unit_rows[i])] for i in good])
    want = np.asarray(truth.nl_kind)[est.units_[good]]
    print("shape classes", list(zip(want.tolist(), got.tolist(), strict=True)))
    print("shape class match", np.mean(got == want))
    assert np.mean(got == want) >= 0.8


def test_subspace_model_keeps_cnn_explained_variance(cnn_tuning):
    session = cnn_tuning["session"]
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
