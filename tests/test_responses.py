"""Tests of nwb_subspace.responses (spike binning, trial split, PSTHs, noise ceiling)."""

from __future__ import annotations

import numpy as np
import pytest

from nwb_subspace.responses import (
    Trials,
    bin_edges,
    bin_spikes,
    default_min_repeats,
    noise_ceiling,
    segments,
    split_trials,
    trial_bins,
    validation_psth,
)

# ---------------------------------------------------------------- bin_spikes


def test_spikes_land_in_half_open_bins():
    counts = bin_spikes([np.array([0.0, 0.005, 0.0099999, 0.01, 0.015])], 3, 100.0)
    np.testing.assert_array_equal(counts[:, 0], [3, 2, 0])
    assert counts.dtype == np.float32 and counts.shape == (3, 1)


def test_every_exact_bin_edge_goes_to_the_bin_it_starts():
    # t = i / rate, including values where floor(t * rate) rounds down (0.29 * 100 < 29)
    rate, n = 100.0, 1000
    edges = bin_edges(n, rate)
    counts = bin_spikes([edges[:-1]], n, rate)
    np.testing.assert_array_equal(counts[:, 0], np.ones(n))
    assert 0.29 * 100 < 29  # the rounding trap is real
    assert bin_spikes([[0.29]], 100, 100.0)[29, 0] == 1


def test_last_bin_and_spikes_outside_are_dropped():
    rate, t0 = 100.0, 2.0
    end = t0 + 5 / rate
    spikes = [np.array([t0 - 1e-9, t0, end - 1e-9, end, end + 1.0, -3.0])]
    counts = bin_spikes(spikes, 5, rate, starting_time=t0)
    np.testing.assert_array_equal(counts[:, 0], [1, 0, 0, 0, 1])


def test_nonzero_starting_time_and_odd_rate():
    rate, t0 = 100.2267573696145, 0.3  # 44100 / 440
    edges = bin_edges(50, rate, t0)
    mids = (edges[:-1] + edges[1:]) / 2
    counts = bin_spikes([edges[:-1], mids, edges[1:]], 50, rate, t0)
    np.testing.assert_array_equal(counts[:, 0], 1)
    np.testing.assert_array_equal(counts[:, 1], 1)
    np.testing.assert_array_equal(counts[:, 2], np.r_[0, np.ones(49)])


def test_unsorted_and_empty_units():
    counts = bin_spikes([np.array([0.05, 0.01, 0.05]), np.array([]), [0.0]], 10, 100.0)
    assert counts.shape == (10, 3)
    assert counts[5, 0] == 2 and counts[1, 0] == 1 and counts[:, 1].sum() == 0
    assert counts[0, 2] == 1


def test_bin_spikes_rejects_bad_input():
    with pytest.raises(ValueError, match="non-finite spike time"):
        bin_spikes([np.array([0.1, np.nan])], 10, 100.0)
    with pytest.raises(ValueError, match="rate must be a positive"):
        bin_spikes([[0.1]], 10, 0.0)
    with pytest.raises(ValueError, match="n_bins"):
        bin_spikes([[0.1]], -1, 100.0)


# ---------------------------------------------------------------- trials and split


def _trials(counts: dict[str, int], dur: float = 1.0, gap: float = 0.5, seed: int = 0) -> Trials:
    rng = np.random.default_rng(seed)
    ids = np.array([s for s, n in counts.items() for _ in range(n)])
    ids = ids[rng.permutation(ids.size)]
    start = np.arange(ids.size) * (dur + gap) + 0.25
    return Trials(start=start, stop=start + dur, sound_id=ids)


def test_trials_validate_their_input():
    with pytest.raises(ValueError, match="stops before it starts"):
        Trials(start=[1.0], stop=[0.5], sound_id=["a"])
    with pytest.raises(ValueError, match="non-finite"):
        Trials(start=[np.nan], stop=[0.5], sound_id=["a"])
    with pytest.raises(ValueError, match="one entry per trial"):
        Trials(start=[0.0, 1.0], stop=[0.5], sound_id=["a"])
    t = Trials(start=[0, 1], stop=[0.5, 1.5], sound_id=[3, b"x".decode()])
    assert t.sound_id.tolist() == ["3", "x"]


def test_default_rule():
    assert default_min_repeats([1, 1, 20]) == 10
    assert default_min_repeats([1, 2, 5]) == 3
    assert default_min_repeats({"a": 3, "b": 3, "c": 20}) == 10


@pytest.mark.parametrize("seed", range(5))
def test_split_never_puts_a_validation_sound_in_estimation(seed):
    rng = np.random.default_rng(seed)
    counts = {f"est_{i:02d}": int(rng.integers(1, 4)) for i in range(40)}
    counts.update({f"val_{i}": int(rng.integers(8, 15)) for i in range(4)})
    trials = _trials(counts, seed=seed)
    split = split_trials(trials, seed=seed)
    assert set(split.validation_sounds) == {f"val_{i}" for i in range(4)}
    val = set(trials.sound_id[split.validation_trials])
    fit = set(trials.sound_id[split.fit_trials])
    hold = set(trials.sound_id[split.holdout_trials])
    assert not val & (fit | hold)
    assert not fit & hold  # a repeated estimation sound is held out whole
    all_idx = np.concatenate([split.validation_trials, split.fit_trials, split.holdout_trials])
    np.testing.assert_array_equal(np.sort(all_idx), np.arange(len(trials)))
    n_est = split.fit_trials.size + split.holdout_trials.size
    assert abs(split.holdout_trials.size / n_est - 0.2) < 0.1


def test_holdout_is_deterministic_by_seed():
    trials = _trials({**{f"e{i}": 1 for i in range(50)}, "v": 10})
    a, b = split_trials(trials, seed=3), split_trials(trials, seed=3)
    np.testing.assert_array_equal(a.holdout_trials, b.holdout_trials)
    assert a.holdout_trials.size == 10
    c = split_trials(trials, seed=4)
    assert not np.array_equal(a.holdout_trials, c.holdout_trials)
    assert split_trials(trials, holdout_fraction=0.0).holdout_trials.size == 0
    assert a.to_dict()["n_holdout_trials"] == 10


def test_split_explicit_threshold_and_errors():
    trials = _trials({"a": 1, "b": 2, "c": 4})
    assert split_trials(trials, min_repeats=2).validation_sounds == ("b", "c")
    with pytest.raises(ValueError, match="no validation set"):
        split_trials(_trials({"a": 1, "b": 2}))
    with pytest.raises(ValueError, match="nothing is left to fit"):
        split_trials(_trials({"a": 5, "b": 5}))
    with pytest.raises(ValueError, match="min_repeats must be >= 2"):
        split_trials(trials, min_repeats=1)
    with pytest.raises(TypeError, match="min_repeats must be an int"):
        split_trials(trials, min_repeats=2.5)
    with pytest.raises(ValueError, match="holdout_fraction"):
        split_trials(trials, holdout_fraction=1.0)


def test_trial_bins_and_segments():
    trials = Trials(start=[0.101, 0.5004, 1.0], stop=[0.301, 0.7004, 1.2], sound_id="a b a".split())
    bins = trial_bins(trials, 100.0, 0.0, n_bins=200)
    np.testing.assert_array_equal(bins, [[10, 30], [50, 70], [100, 120]])
    assert segments(bins, [2, 0]) == [(10, 30), (100, 120)]
    with pytest.raises(ValueError, match="outside the spectrogram's span"):
        trial_bins(trials, 100.0, 0.5, n_bins=200)
    with pytest.raises(ValueError, match="outside the spectrogram's span"):
        trial_bins(trials, 100.0, 0.0, n_bins=100)


def test_validation_psth_collects_every_repeat():
    trials = _trials({"e0": 1, "e1": 1, "e2": 1, "v": 4}, dur=0.5, gap=0.25)
    rate = 100.0
    n_bins = int(np.ceil(trials.stop.max() * rate)) + 5
    rng = np.random.default_rng(0)
    counts = rng.poisson(2.0, (n_bins, 3)).astype(np.float32)
    split = split_trials(trials)
    psth = validation_psth(counts, trials, split, rate)
    v = psth["v"]
    assert v.repeats.shape == (4, 50, 3) and v.mean.shape == (50, 3)
    for k, b in enumerate(v.start_bins):
        np.testing.assert_array_equal(v.repeats[k], counts[b : b + 50])
    np.testing.assert_allclose(v.mean, v.repeats.mean(axis=0))


# ---------------------------------------------------------------- noise ceiling


def _simulate_repeats(n_rep, n_bins, gains, seed=0):
    """Poisson repeats of a smooth true rate; return (repeats, true rate)."""
    rng = np.random.default_rng(seed)
    n_units = len(gains)
    drive = np.convolve(rng.standard_normal(n_bins + 20), np.hanning(20), "same")[:n_bins]
    rate = np.stack([np.exp(g * drive / drive.std()) for g in gains], axis=1) * 2.0
    return rng.poisson(rate, (n_rep, n_bins, n_units)).astype(float), rate


def test_noise_ceiling_is_one_for_identical_repeats():
    rng = np.random.default_rng(1)
    psth = rng.random((200, 4))
    reps = np.repeat(psth[None], 5, axis=0)
    np.testing.assert_allclose(noise_ceiling(reps), 1.0)
    np.testing.assert_allclose(noise_ceiling(reps, method="split_half"), 1.0)


@pytest.mark.parametrize("method", ["schoppe", "split_half"])
def test_noise_ceiling_matches_ground_truth(method):
    reps, rate = _simulate_repeats(10, 3000, gains=[1.0, 0.5, 0.2, 0.05])
    est = noise_ceiling(reps, method=method, n_splits=50)
    mean = reps.mean(axis=0)
    truth = np.array([np.corrcoef(rate[:, u], mean[:, u])[0, 1] for u in range(4)])
    np.testing.assert_allclose(est, truth, atol=0.05)
    assert np.all(np.diff(est) < 0)  # noisier units have lower ceilings
    assert est[0] > 0.9


def test_noise_ceiling_handles_several_sounds_and_pure_noise():
    a, _ = _simulate_repeats(6, 500, gains=[1.0, 0.0], seed=2)
    b, _ = _simulate_repeats(9, 300, gains=[1.0, 0.0], seed=3)
    cc = noise_ceiling([a, b])
    assert 0.8 < cc[0] <= 1.0
    assert np.isnan(cc[1]) or cc[1] < 0.5  # no signal: undefined or low
    zero = np.zeros((4, 100, 1))
    assert np.isnan(noise_ceiling(zero)[0])


def test_noise_ceiling_rejects_bad_input():
    with pytest.raises(ValueError, match=">= 2 repeats"):
        noise_ceiling(np.ones((1, 10, 2)))
    with pytest.raises(ValueError, match="method must be"):
        noise_ceiling(np.ones((3, 10, 2)), method="sahani")
    with pytest.raises(ValueError, match="shape"):
        noise_ceiling(np.ones((3, 10, 2, 1)))
