"""Jackknife fits (``[training] jackknife = K``): folds by fit sounds, fit ``j`` never sees
fold ``j``, best of N per fit, out-of-fold predictions, failures, storing and reuse."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import nwb_subspace.models.estimator as estimator_module
from nwb_subspace.config import AnalysisConfig, SiteSettings, SubspaceSettings
from nwb_subspace.errors import ModelFitError
from nwb_subspace.models.estimator import EncodingEstimator
from nwb_subspace.models.training import TrainingConfig, jackknife_folds
from nwb_subspace.pipeline import (
    _jackknife_notes,
    ensemble_fits,
    ensemble_names,
    jackknife_labels,
    run_session,
)
from nwb_subspace.simulate import simulate_session

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
# the 4-epoch fits of FAST sometimes fail a first attempt and are retried (as designed)
pytestmark = pytest.mark.filterwarnings(r"ignore:.* attempt \d+ failed:UserWarning")


def _data(n_bins=1500, n_freq=6, n_units=4, seed=0):
    """Random spectrogram, log-linear Poisson units; fit bins 0-1049 as 10 sounds of 105
    bins, holdout bins 1050-1499."""
    rng = np.random.default_rng(seed)
    X = rng.random((n_bins, n_freq)).astype(np.float32)
    z = X @ rng.standard_normal((n_freq, n_units))
    Y = rng.poisson(np.exp((z - z.mean(0)) / z.std(0) - 0.5)).astype(np.float32)
    starts = np.arange(0, 1050, 105)
    trials = np.stack([starts, starts + 105], axis=1)
    train = np.zeros(n_bins, bool)
    train[:1050] = True
    return X, Y, train, ~train, trials, [f"s{i}" for i in range(10)]


def test_folds_pinned_to_a_hand_computed_case():
    # Sounds of 10, 8, 6, 4, 2 bins into 2 folds, longest first, each to the emptier fold
    # (ties -> lower fold): 10 -> 0; 8 -> 1; 6 -> 1 (8 < 10); 4 -> 0 (14 = 14, lower);
    # 2 -> 1 (14 < 16)... totals after 4: fold 0 = 14, fold 1 = 14; 2 -> fold 0 -> 16 / 14.
    lengths = [10, 8, 6, 4, 2]
    starts = np.cumsum([0, *lengths[:-1]]) + 5
    trials = np.stack([starts, starts + lengths], axis=1)
    folds = jackknife_folds(40, trials, ["a", "b", "c", "d", "e"], 2, seed=0)
    assert folds.bins.tolist() == [16, 14]
    assert folds.sounds == [["a", "d", "e"], ["b", "c"]]
    assert folds.note == ""
    assert (folds.labels[:5] == -1).all() and (folds.labels[35:] == -1).all()


def test_folds_are_disjoint_cover_the_fit_sounds_balanced_and_seeded():
    rng = np.random.default_rng(1)
    names = [f"s{i}" for i in range(23)]
    lengths = rng.integers(20, 90, size=23)
    repeats = rng.integers(1, 4, size=23)  # some fit sounds are presented more than once
    sound_of, spans, t = [], [], 0
    for order in rng.permutation(np.repeat(np.arange(23), repeats)):
        spans.append((t, t + lengths[order]))
        sound_of.append(names[order])
        t += lengths[order] + 3  # gaps between trials are not fit data
    trials = np.asarray(spans)
    folds = jackknife_folds(t + 10, trials, sound_of, 5, seed=7)
    labels = folds.labels
    in_trial = np.zeros(t + 10, bool)
    for a, b in trials:
        in_trial[a:b] = True
    assert np.array_equal(labels >= 0, in_trial)  # covers the fit bins, nothing else
    for name in names:  # every presentation of a sound in one fold
        assert (
            len({int(labels[a]) for (a, b), s in zip(trials, sound_of, strict=True) if s == name})
            == 1
        )
        assert all(
            len(set(labels[a:b])) == 1
            for (a, b), s in zip(trials, sound_of, strict=True)
            if s == name
        )
    assert sorted(s for f in folds.sounds for s in f) == sorted(names)  # disjoint, complete
    durations = {n: int(lengths[i] * repeats[i]) for i, n in enumerate(names)}
    assert folds.bins.max() - folds.bins.min() <= max(durations.values())
    assert folds.bins.sum() == in_trial.sum()
    again = jackknife_folds(t + 10, trials, sound_of, 5, seed=7)
    assert np.array_equal(again.labels, labels)
    # equal-length sounds: the seed decides which go together
    eq = np.stack([np.arange(12) * 10, np.arange(12) * 10 + 10], axis=1)
    a = jackknife_folds(120, eq, [f"e{i}" for i in range(12)], 3, seed=0)
    b = jackknife_folds(120, eq, [f"e{i}" for i in range(12)], 3, seed=1)
    assert a.bins.tolist() == b.bins.tolist() == [40, 40, 40]
    assert a.sounds != b.sounds


def test_fewer_sounds_than_folds_cuts_sounds_into_chunks_or_refuses():
    # One 10-bin sound presented twice, 3 folds: halves [0:5) [5:10), then the first half
    # again: [0:2) [2:5) [5:10); each chunk of both presentations in one fold.
    trials = np.array([[0, 10], [20, 30]])
    folds = jackknife_folds(30, trials, ["a", "a"], 3, seed=0)
    assert "cut into 3 contiguous chunks" in folds.note
    assert sorted(folds.bins.tolist()) == [4, 6, 10]
    assert np.array_equal(folds.labels[0:10], folds.labels[20:30])
    assert len(set(folds.labels[5:10])) == 1 and len(set(folds.labels[2:5])) == 1
    with pytest.raises(ValueError, match="cannot be cut into 5 jackknife folds"):
        jackknife_folds(30, np.array([[0, 2]]), ["a"], 5)
    with pytest.raises(ValueError, match="integer >= 2"):
        jackknife_folds(30, trials, ["a", "a"], 1)
    with pytest.raises(ValueError, match=r"\[training\] jackknife must be 0 \(off\)"):
        TrainingConfig(jackknife=1)


def test_fit_j_never_sees_fold_j():
    """Poisoning fold 0's spike counts leaves jackknife fit 0 bit for bit unchanged, and
    changes the fits that did train on fold 0 (fit 1 and the full fit)."""
    X, Y, train, hold, trials, sounds = _data()
    folds = jackknife_folds(X.shape[0], trials, sounds, 2, seed=0).labels
    cfg = replace(FAST, jackknife=2)
    poisoned = Y.copy()
    poisoned[folds == 0] = np.random.default_rng(5).poisson(6.0, poisoned[folds == 0].shape)
    fits = [
        EncodingEstimator("cnn", architecture=SMALL_CNN, training=cfg).fit(
            X, y, train, hold, folds=folds
        )
        for y in (Y, poisoned)
    ]
    assert [f.jackknife_folds_.tolist() for f in fits] == [[0, 1], [0, 1]]

    def params(model):
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    clean, dirty = fits
    assert torch.equal(params(clean.jackknife_members_[0]), params(dirty.jackknife_members_[0]))
    assert not torch.equal(params(clean.jackknife_members_[1]), params(dirty.jackknife_members_[1]))
    assert not torch.equal(params(clean.model_), params(dirty.model_))


def test_masks_passed_and_best_of_n_per_fit(monkeypatch):
    X, Y, train, hold, trials, sounds = _data()
    folds = jackknife_folds(X.shape[0], trials, sounds, 3, seed=0).labels
    calls = []
    real = estimator_module.fit_model

    def spy(model, X_, Y_, train_mask, holdout_mask, config, **kw):
        out = real(model, X_, Y_, train_mask, holdout_mask, config, **kw)
        calls.append((train_mask.copy(), holdout_mask.copy(), list(kw["every_fit"]), out))
        return out

    monkeypatch.setattr(estimator_module, "fit_model", spy)
    # separate fits (the spy sees each fit_model call); stacked fits: tests/test_stacked_fits
    cfg = replace(FAST, jackknife=3, n_initializations=3, stacked=False)
    est = EncodingEstimator("cnn", architecture=SMALL_CNN, training=cfg)
    est.fit(X, Y, train, hold, folds=folds)
    assert len(calls) == 4  # the full fit, then one per fold
    assert np.array_equal(calls[0][0], train)
    for j, (mask, holdout, runs, (best, history)) in enumerate(calls[1:]):
        assert np.array_equal(mask, train & (folds != j))  # fold j left out of fit j
        assert np.array_equal(holdout, hold)  # early stopping on the same holdout bins
        assert len(runs) == 3
        losses = [h.best_holdout_loss for _, h in runs if not h.failed]
        assert history.best_holdout_loss == min(losses)
        assert est.jackknife_members_[j] is best
    # out-of-fold: fit j predicts fold j; nothing outside the fit bins
    oof = est.oof_prediction_
    assert np.isnan(oof[~train]).all() and np.isfinite(oof[train]).all()
    for j in range(3):
        sel = folds == j
        np.testing.assert_array_equal(oof[sel], est.predict(X, jackknife=j)[sel])
    assert est.oof_correlation_.shape == (Y.shape[1],)
    assert est.ensemble_ == est.jackknife_members_


def test_jackknife_off_and_the_full_fit_are_unchanged():
    """jackknife = 0 fits no jackknife (ensemble = the initialisations), and with jackknife
    on the full fit is bit for bit the jackknife = 0 fit. (That jackknife = 0 equals the
    code before jackknife existed was checked against it: identical predictions.)"""
    X, Y, train, hold, trials, sounds = _data()
    folds = jackknife_folds(X.shape[0], trials, sounds, 2, seed=0).labels
    off = EncodingEstimator("cnn", architecture=SMALL_CNN, training=FAST).fit(X, Y, train, hold)
    assert off.jackknife_members_ == [] and off.oof_prediction_ is None
    assert off.ensemble_ == off.members_
    on = EncodingEstimator("cnn", architecture=SMALL_CNN, training=replace(FAST, jackknife=2))
    on.fit(X, Y, train, hold, folds=folds)
    for i in range(len(off.members_)):
        np.testing.assert_array_equal(off.predict(X, member=i), on.predict(X, member=i))
    with pytest.raises(ValueError, match="needs the fold of every bin"):
        EncodingEstimator("cnn", training=replace(FAST, jackknife=2)).fit(X, Y, train, hold)
    with pytest.raises(ValueError, match="training.jackknife is 0"):
        EncodingEstimator("cnn", training=FAST).fit(X, Y, train, hold, folds=folds)
    bad = folds.copy()
    bad[hold.nonzero()[0][:3]] = 0
    with pytest.raises(ValueError, match="exactly on the training bins"):
        EncodingEstimator("cnn", training=replace(FAST, jackknife=2)).fit(
            X, Y, train, hold, folds=bad
        )


def test_a_failed_fit_is_left_out_and_all_failed_raises():
    X, Y, train, hold, trials, sounds = _data()
    folds = jackknife_folds(X.shape[0], trials, sounds, 3, seed=0).labels
    Y = Y.copy()
    Y[(folds != 1) & train, 0] = 0  # unit 0 spikes only in fold 1 (and the holdout)
    cfg = replace(FAST, jackknife=3, n_initializations=1)
    est = EncodingEstimator("cnn", architecture=SMALL_CNN, training=cfg)
    est.fit(X, Y, train, hold, folds=folds)
    assert est.jackknife_folds_.tolist() == [0, 2]
    assert "no spikes outside fold 2" in est.jackknife_problems_[1]
    assert np.isnan(est.oof_prediction_[folds == 1]).all()
    fake = SimpleNamespace(
        jackknife_problems_={0: "x", 1: "y"}, jackknife_members_=[], oof_correlation_=None
    )
    info = jackknife_folds(X.shape[0], trials, sounds, 2, seed=0)
    config = AnalysisConfig(training=replace(FAST, jackknife=2, seed=0))
    with pytest.raises(ModelFitError, match="every one of the 2 CNN jackknife fits failed"):
        _jackknife_notes(fake, info, config, [])
    notes: list[str] = []
    _jackknife_notes(fake, info, replace(config, keep_partial=True), notes)
    assert any("jackknife fit 2 failed (y)" in n for n in notes)
    assert "average the initialisations" in notes[-1]


def _fit_mask(result) -> np.ndarray:
    mask = np.zeros(result.session.n_bins, bool)
    for a, b in result.session.segments("fit"):
        mask[a:b] = True
    return mask


QUICK_JK = AnalysisConfig(
    training=TrainingConfig(
        n_initializations=1, max_epochs_stage1=8, max_epochs_stage2=4, patience=3, jackknife=2
    ),
    subspace=SubspaceSettings(n_components=4, min_noise_corrected_r=0.0),
    sites=SiteSettings(enabled=False),
    run_name="jk",
)


@pytest.mark.slow
def test_run_stores_the_jackknife_fits_and_reuse_rebuilds_them(tmp_path, monkeypatch):
    path, _ = simulate_session(tmp_path / "tiny.nwb", preset="tiny", seed=0)
    first = run_session(path, QUICK_JK, steps=["models", "subspace"])
    cnn = first.estimators["cnn"]
    names = [m.name for m in first.results.models]
    assert {"cnn", "ln", "cnn_jk1", "cnn_jk2"} <= set(names) and "cnn_fit2" not in names
    assert first.estimators["ln"].jackknife_members_ == []  # only the CNN is jackknifed
    fits, note = ensemble_fits(cnn, True)
    assert fits == cnn.jackknife_members_ and "2 jackknife CNN fits" in note
    assert any("out-of-fold correlation" in n for n in first.notes)
    folds = jackknife_labels(first.session, QUICK_JK)  # by the fit trials' sounds
    assert np.array_equal(cnn.fold_labels_, folds.labels)
    assert np.array_equal(cnn.fold_labels_ >= 0, _fit_mask(first))
    assert ensemble_names(2, folds=[0, 1]) == ["cnn_jk1", "cnn_jk2"]

    def no_fit(*args, **kwargs):
        raise AssertionError("a reuse must not fit")

    monkeypatch.setattr(estimator_module, "fit_model", no_fit)
    again = run_session(path, replace(QUICK_JK, run_name="jk2"), reuse="jk", steps=["subspace"])
    rebuilt = again.estimators["cnn"]
    assert rebuilt.jackknife_folds_.tolist() == [0, 1]
    X = first.session.spectrogram.data
    for i in range(2):
        np.testing.assert_allclose(
            rebuilt.predict(X, jackknife=i), cnn.predict(X, jackknife=i), rtol=1e-6
        )
    np.testing.assert_allclose(rebuilt.oof_correlation_, cnn.oof_correlation_, rtol=1e-5)
    assert {"cnn_jk1", "cnn_jk2"} <= {m.name for m in again.results.models}
