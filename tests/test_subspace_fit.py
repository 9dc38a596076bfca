"""SubspaceModelEstimator on the truth model's own PCs: recovers the truth, batched, deterministic."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nwb_subspace.dstrf.compute import dstrf_moments
from nwb_subspace.models.training import TrainingConfig
from nwb_subspace.simulate import PRESETS, load_truth, simulate_session
from nwb_subspace.subspace.model import SubspaceModelEstimator, explained_variance_fraction
from nwb_subspace.subspace.tuning import TuningSubspaceEstimator
from nwb_subspace.testing.truth_model import TruthRateModel

pytestmark = pytest.mark.slow  # ~2 min: two fits of the subspace model

# 100 + 50 epochs: with 30 + 20 the fit stopped short and the median EV depended on the seed
# and on the basis the PCA returns within the same span (0.41-0.67 over seeds 0-2 and both
# outlier rules, issue 19); with 100 + 50 it was 0.79-0.83 for the same cases.
_CFG = TrainingConfig(n_initializations=1, max_epochs_stage1=100, max_epochs_stage2=50)


@pytest.fixture(scope="module")
def truth_fit(tmp_path_factory):
    """Truth-model tuning subspaces and Poisson counts of a short simulated session."""
    from nwb_subspace.io.session import load_session_data

    cfg = PRESETS["tiny"].replace(
        n_units=4, estimation_s=40.0, sequence_s=4.0, n_validation=1, validation_repeats=3
    )
    nwb, tp = simulate_session(tmp_path_factory.mktemp("sub") / "s.nwb", cfg, seed=5)
    data, truth = load_session_data(nwb), load_truth(tp)
    X = data.spectrogram.data.astype(np.float32)
    model = TruthRateModel(truth, data.rate).eval()
    tu = (
        TuningSubspaceEstimator(n_components=8)
        .fit(dstrf_moments(model, X), frequencies=data.frequencies, bin_s=1 / data.rate)
        .to_result()
    )
    with torch.no_grad():
        rate = model(torch.from_numpy(X)[None])[0].double().numpy()
    counts = np.random.default_rng(0).poisson(rate * 5.0).astype(np.float32)  # 5 repeats
    n = X.shape[0]
    fit = np.zeros(n, bool)
    fit[: int(0.6 * n)] = True
    hold = np.zeros(n, bool)
    hold[int(0.6 * n) : int(0.8 * n)] = True
    test = ~(fit | hold)
    return {
        "X": X,
        "tu": tu,
        "rate": rate,
        "counts": counts,
        "fit": fit,
        "hold": hold,
        "test": test,
    }


def _ev(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    resid = ((target - pred) ** 2).mean(0)
    return 1 - resid / target.var(0)


def test_recovers_truth_rate_batched_and_deterministic(truth_fit):
    s = truth_fit
    est = SubspaceModelEstimator(training=_CFG).fit(
        s["tu"], s["X"], s["counts"], s["fit"], s["hold"]
    )
    assert est.n_components_.tolist() == np.clip(s["tu"].dimensionality, 1, 8).tolist()
    pred = est.predict(s["X"])
    assert pred.shape == s["counts"].shape  # all units in one model
    ev = _ev(pred[s["test"]], 5.0 * s["rate"][s["test"]])
    print("EV of the truth rate on test bins:", np.round(ev, 3))
    # 24 s of fit data, 100 + 50 epochs: measured medians 0.79-0.83 (seeds 0-1, both outlier
    # rules). Recovery to the Done-when level is checked on the CNN in test_subspace_science.py.
    assert np.median(ev) >= 0.6
    again = SubspaceModelEstimator(training=_CFG).fit(
        s["tu"], s["X"], s["counts"], s["fit"], s["hold"]
    )
    np.testing.assert_array_equal(again.predict(s["X"]), pred)
    fm = est.to_result(bin_size_s=0.01)
    assert fm.unit_rows.tolist() == s["tu"].unit_rows.tolist()


def test_bad_inputs(truth_fit):
    s = truth_fit
    with pytest.raises(TypeError, match="TuningSubspaces"):
        SubspaceModelEstimator().fit("tu", s["X"], s["counts"], s["fit"], s["hold"])
    with pytest.raises(ValueError, match="one column per tuning unit"):
        SubspaceModelEstimator().fit(s["tu"], s["X"], s["counts"][:, :2], s["fit"], s["hold"])
    with pytest.raises(ValueError, match="min_components"):
        SubspaceModelEstimator(min_components=0).fit(
            s["tu"], s["X"], s["counts"], s["fit"], s["hold"]
        )
    with pytest.raises(RuntimeError, match="fit"):
        SubspaceModelEstimator().predict(s["X"])
    frac = explained_variance_fraction(np.array([0.5, 0.2]), np.array([1.0, 0.0]))
    assert frac[0] == 0.5 and np.isnan(frac[1])
