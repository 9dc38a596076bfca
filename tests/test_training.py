"""Training recipe and estimator: determinism, early stopping, bad input (fast, synthetic)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nwb_subspace.models import build_model
from nwb_subspace.models.estimator import EncodingEstimator, resolve_device
from nwb_subspace.models.training import TrainingConfig, fit_model, predict

FAST = TrainingConfig(
    max_epochs_stage1=4,
    max_epochs_stage2=3,
    patience=2,
    n_initializations=2,
    window=64,
    batch_windows=4,
    seed=3,
)
SMALL_CNN = {"n_channels1": 6, "n_channels2": 5, "n_hidden": 8, "n_taps1": 4, "n_taps2": 3}


def _data(n_bins=1500, n_freq=6, n_units=4, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.random((n_bins, n_freq)).astype(np.float32)
    w = rng.standard_normal((n_freq, n_units))
    Y = rng.poisson(_rate(X, w)).astype(np.float32)
    train = np.zeros(n_bins, bool)
    train[: int(0.7 * n_bins)] = True
    hold = np.zeros(n_bins, bool)
    hold[int(0.7 * n_bins) :] = True
    return X, Y, train, hold


def _rate(X, w):
    """Log-linear rates, spikes per bin, strongly modulated (drive standardised per unit)."""
    z = X @ w
    return np.exp((z - z.mean(0)) / z.std(0) - 0.5)


def _true_rate(n_bins=1500, n_freq=6, n_units=4, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.random((n_bins, n_freq)).astype(np.float32)
    return _rate(X, rng.standard_normal((n_freq, n_units)))


def test_fit_is_bitwise_deterministic_for_a_seed():
    X, Y, train, hold = _data()
    preds = []
    for _ in range(2):
        est = EncodingEstimator("cnn", architecture=SMALL_CNN, training=FAST).fit(X, Y, train, hold)
        preds.append(est.predict(X))
    np.testing.assert_array_equal(preds[0], preds[1])
    other = EncodingEstimator(
        "cnn", architecture=SMALL_CNN, training=TrainingConfig(**{**FAST.to_dict(), "seed": 4})
    )
    assert not np.array_equal(other.fit(X, Y, train, hold).predict(X), preds[0])


def test_best_weights_are_restored():
    X, Y, train, hold = _data()
    torch.manual_seed(0)
    model = build_model("ln", {"n_frequencies": 6, "n_units": 4, "n_channels": 3, "n_taps": 5})
    cfg = TrainingConfig(**{**FAST.to_dict(), "n_initializations": 1, "max_epochs_stage2": 6})
    model, hist = fit_model(model, X, Y, train, hold, cfg)
    assert len(hist.train_loss) == len(hist.holdout_loss) == len(hist.stage)
    assert set(hist.stage) == {1, 2}
    stage2 = [h for h, s in zip(hist.holdout_loss, hist.stage, strict=True) if s == 2]
    assert hist.best_holdout_loss <= min(stage2) + 1e-9
    # The restored model's holdout Poisson loss equals the best one recorded.
    pred = predict(model, X)[hold]
    y = Y[hold]
    loss = float(np.sum(pred - y * np.log(np.maximum(pred, 1e-8))) / hold.sum())
    assert loss == pytest.approx(hist.best_holdout_loss, rel=1e-4)


def test_training_recovers_the_true_rate():
    X, Y, train, hold = _data(n_bins=4000)
    rate = _true_rate(n_bins=4000)
    cfg = TrainingConfig(
        max_epochs_stage1=60,
        max_epochs_stage2=20,
        patience=10,
        n_initializations=1,
        window=32,
        batch_windows=4,
        lr_stage1=1e-2,
        lr_stage2=3e-3,
    )
    est = EncodingEstimator("ln", architecture={"n_channels": 4, "n_taps": 2}, training=cfg)
    pred = est.fit(X, Y, train, hold).predict(X)
    r = [np.corrcoef(pred[hold, u], rate[hold, u])[0, 1] for u in range(4)]
    assert min(r) > 0.9, r
    stage1 = [
        h for h, s in zip(est.history_.holdout_loss, est.history_.stage, strict=True) if s == 1
    ]
    assert min(stage1) < stage1[0]


def test_predict_in_chunks_equals_one_pass():
    X, _, _, _ = _data()
    torch.manual_seed(0)
    model = build_model("cnn", {"n_frequencies": 6, "n_units": 4, **SMALL_CNN}).eval()
    one = model(torch.from_numpy(X)[None])[0].detach().numpy()
    np.testing.assert_allclose(predict(model, X, chunk=97), one, rtol=1e-5, atol=1e-6)


def test_silent_unit_is_excluded_with_a_warning():
    X, Y, train, hold = _data()
    Y[:, 2] = 0
    Y[hold, 2] = 1  # spikes only outside the training bins
    with pytest.warns(UserWarning, match=r"units \[2\] have no spikes"):
        est = EncodingEstimator(
            "ln", architecture={"n_channels": 2, "n_taps": 3}, training=FAST
        ).fit(X, Y, train, hold)
    assert est.units_.tolist() == [0, 1, 3] and est.excluded_units_.tolist() == [2]
    pred = est.predict(X)
    assert pred.shape == (X.shape[0], 3) and np.isfinite(pred).all()
    result = est.to_result("ln", unit_rows=np.arange(4), bin_size_s=0.01)
    assert result.unit_rows.tolist() == [0, 1, 3]


def test_bad_input_is_refused():
    X, Y, train, hold = _data()
    model = build_model("cnn", {"n_frequencies": 6, "n_units": 4, **SMALL_CNN})
    bad = X.copy()
    bad[10, 2] = np.nan
    with pytest.raises(ValueError, match="NaN/inf .*bin 10"):
        fit_model(model, bad, Y, train, hold, FAST)
    with pytest.raises(ValueError, match="fewer than the model's memory"):
        fit_model(model, X[:4], Y[:4], train[:4], hold[:4], FAST)
    with pytest.raises(ValueError, match="overlap"):
        fit_model(model, X, Y, train, train.copy(), FAST)
    with pytest.raises(ValueError, match="no spikes in the training data"):
        fit_model(model, X, np.zeros_like(Y), train, hold, FAST)
    with pytest.raises(ValueError, match="NaN/inf"):
        predict(model, bad)
    with pytest.raises(ValueError, match="no unit has spikes"):
        EncodingEstimator("ln", training=FAST).fit(X, np.zeros_like(Y), train, hold)
    with pytest.raises(ValueError, match="kind must be"):
        EncodingEstimator("subspace").fit(X, Y, train, hold)
    with pytest.raises(ValueError, match="loss must be"):
        TrainingConfig(loss="l1")
    with pytest.raises(ValueError, match="patience"):
        TrainingConfig(patience=0)
    for bad_value in (-1e-3, True, "0.01", float("nan")):
        with pytest.raises(ValueError, match="smoothness must be a number >= 0"):
            TrainingConfig(smoothness=bad_value)


def test_smoothness_penalty_smooths_the_first_layer():
    """The same fit with a strong smoothness penalty ends with smoother spectral weightings
    and temporal filters (random stimulus: every direction is equally constrained, so the
    penalty, not the data, makes the difference); 0 turns the penalty off."""
    X, Y, train, hold = _data(n_freq=12)
    arch = {**SMALL_CNN, "n_taps1": 6}
    rough = {}
    for weight in (0.0, 1.0):
        cfg = TrainingConfig(**{**FAST.to_dict(), "n_initializations": 1, "smoothness": weight})
        est = EncodingEstimator("cnn", architecture=arch, training=cfg).fit(X, Y, train, hold)
        with torch.no_grad():
            rough[weight] = float(est.model_.roughness())
    assert rough[1.0] < 0.5 * rough[0.0], rough


def test_device_choice():
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") in ("cpu", "cuda")
    with pytest.raises(ValueError, match="device must be"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            resolve_device("cuda")


def test_subspace_model_resolves_auto_device():
    from nwb_subspace.subspace.model import SubspaceModelEstimator
    from nwb_subspace.testing import mock_result_set

    tuning = mock_result_set().subspaces[0]
    n, _, n_freq, _ = tuning.components.shape
    X, Y, train, hold = _data(n_bins=600, n_freq=n_freq, n_units=n)
    est = SubspaceModelEstimator(training=FAST, device="auto").fit(tuning, X, Y, train, hold)
    assert est.device_ == resolve_device("auto")
    assert est.to_fitted_model(0.01).training.device == est.device_
    assert np.isfinite(est.predict(X)).all()


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 400),
    m=st.integers(1, 4),
    ties=st.booleans(),
    seed=st.integers(0, 2**16),
    q=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=3),
)
def test_column_quantiles_equal_torch_quantile(n, m, ties, seed, q):
    """The output initialisation's quantiles (selection, not a sort) are torch.quantile's
    numbers bit for bit, ties and one-row columns included; a NaN column gives NaN."""
    from nwb_subspace.models.training import column_quantiles

    x = torch.randn(n, m, generator=torch.Generator().manual_seed(seed)) * 3
    if ties:
        x = x.round()
    expected = torch.quantile(x, x.new_tensor(q), dim=0)
    assert torch.equal(column_quantiles(x, q), expected)
    x[0, 0] = float("nan")
    assert torch.isnan(column_quantiles(x, q)[:, 0]).all()


def _subspace_fit(cfg, build=None):
    from nwb_subspace.models.subspace import SubspaceModel
    from nwb_subspace.testing.data import poisson_data

    X, Y, train, hold = poisson_data(1200, 5, 3, seed=2)
    gen = torch.Generator().manual_seed(4)
    bases = [torch.randn(k, 5, 6, generator=gen) for k in (2, 3, 1)]
    torch.manual_seed(cfg.seed * 1000)
    model = SubspaceModel.from_bases(bases)
    runs: list = []
    fit_model(model, X, Y, train, hold, cfg, build=build, every_fit=runs)
    return runs


def test_fixed_core_runs_once_and_gives_the_same_fits(monkeypatch):
    """A core with nothing to train (the subspace model's projections) runs once per core
    over the train and holdout windows, not at every step; the fits are those of the
    step-by-step path (to float rounding), every initialisation, also when ``build`` gives
    a later initialisation other bases (it is fitted on its own core's output)."""
    import nwb_subspace.models.training as training_module
    from nwb_subspace.models.subspace import SubspaceModel, SubspaceProjection

    cfg = TrainingConfig(
        max_epochs_stage1=3, max_epochs_stage2=2, n_initializations=2, window=32,
        batch_windows=4, seed=1,
    )  # fmt: skip
    gen = torch.Generator().manual_seed(9)
    other = [torch.randn(k, 5, 6, generator=gen) for k in (2, 3, 1)]
    calls = []
    forward = SubspaceProjection.forward
    monkeypatch.setattr(
        SubspaceProjection, "forward", lambda self, x: calls.append(x.shape[0]) or forward(self, x)
    )
    once = _subspace_fit(cfg, build=lambda: SubspaceModel.from_bases(other))
    n_once = len(calls)
    monkeypatch.setattr(training_module, "FIXED_CORE_BYTES", 0)  # the step-by-step path
    calls.clear()
    every_step = _subspace_fit(cfg, build=lambda: SubspaceModel.from_bases(other))
    # per initialisation: a size check, then train and holdout windows (one chunk each)
    assert n_once <= 6
    assert len(calls) > 10 * n_once
    torch.testing.assert_close(once[1][0].core.bases[0, :2], other[0])
    for (a, ha), (b, hb) in zip(once, every_step, strict=True):
        sa, sb = a.state_dict(), b.state_dict()
        for key in sa:
            torch.testing.assert_close(sa[key], sb[key], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(ha.holdout_loss, hb.holdout_loss, rtol=1e-5)
