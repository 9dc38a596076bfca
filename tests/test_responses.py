"""Tests of nwb_subspace.stimulus.responses (spike binning, trial split, PSTHs, noise ceiling)."""

from __future__ import annotations

import numpy as np
import pytest

from nwb_subspace.stimulus.responses import (
    DESIGNS,
    Trials,
    bin_edges,
    bin_spikes,
    default_min_repeats,
    describe_split,
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
    split = split_trials(trials, min_repeats=2)
    assert split.validation_sounds == ("b", "c") and split.design == "mixed"
    assert split.has_noise_ceiling and split.validation_repeats == (2, 4)
    # fewer than 3 sounds cannot be split by sound: the message names the settings to use
    for counts in ({"a": 1, "b": 2}, {"a": 5, "b": 5}, {"a": 1}):
        with pytest.raises(ValueError, match=r"only \d sound\(s\).*\[session\] validation_sounds"):
            split_trials(_trials(counts))
    with pytest.raises(ValueError, match=r"min_repeats \(\[session\] min_repeats\) must be >= 2"):
        split_trials(trials, min_repeats=1)
    with pytest.raises(TypeError, match="min_repeats .* must be an int"):
        split_trials(trials, min_repeats=2.5)
    with pytest.raises(ValueError, match=r"\[session\] holdout_fraction"):
        split_trials(trials, holdout_fraction=1.0)
    for bad in (0, 1.0, True, "0.2"):
        with pytest.raises(ValueError, match=r"\[session\] validation_fraction"):
            split_trials(trials, validation_fraction=bad)


# ---------------------------------------------------------------- split designs


def _parts(trials: Trials, split) -> tuple[set, set, set]:
    """Sound ids of the validation, fit and holdout trials."""
    sid = trials.sound_id
    return (
        set(sid[split.validation_trials]),
        set(sid[split.fit_trials]),
        set(sid[split.holdout_trials]),
    )


def _check_partition(trials: Trials, split) -> None:
    """Every trial in exactly one part; the three parts share no sound."""
    idx = np.concatenate([split.validation_trials, split.fit_trials, split.holdout_trials])
    np.testing.assert_array_equal(np.sort(idx), np.arange(len(trials)))
    val, fit, hold = _parts(trials, split)
    assert not val & fit and not val & hold and not fit & hold
    assert val == set(split.validation_sounds)
    assert fit | hold == set(split.estimation_sounds) and hold == set(split.holdout_sounds)


def test_all_repeated_design_draws_whole_validation_sounds():
    # 10 sounds x 5 repeats: min_repeats = max(3, ceil(5 / 2)) = 3 is reached by all
    counts = {f"s{i}": 5 for i in range(10)}
    trials = _trials(counts)
    split = split_trials(trials, seed=0)
    assert split.design == "all-repeated" and split.min_repeats == 3
    # max(1, round(0.2 * 10)) = 2 validation sounds, all 5 repeats of each
    assert len(split.validation_sounds) == 2 and split.validation_trials.size == 10
    assert split.validation_repeats == (5, 5) and split.has_noise_ceiling
    # the other 8 sounds: all 40 presentations are estimation trials (nothing collapsed);
    # holdout target 0.2 * 40 = 8 trials -> 2 whole sounds (10 trials), 6 sounds (30) fit
    assert len(split.estimation_sounds) == 8
    assert split.fit_trials.size == 30 and split.holdout_trials.size == 10
    assert len(split.holdout_sounds) == 2
    _check_partition(trials, split)
    for s in split.estimation_sounds:  # every repeat of a sound sits in the same part
        n_fit = np.isin(split.fit_trials, np.flatnonzero(trials.sound_id == s)).sum()
        assert n_fit in (0, 5)
    d = split.to_dict()
    assert d["design"] == "all-repeated" and d["has_noise_ceiling"] is True
    assert d["validation_fraction"] == 0.2 and d["n_validation_trials"] == 10


def test_by_sound_draw_is_deterministic_by_seed():
    trials = _trials({f"s{i}": 5 for i in range(10)})
    a, b = split_trials(trials, seed=7), split_trials(trials, seed=7)
    assert a.validation_sounds == b.validation_sounds
    np.testing.assert_array_equal(a.holdout_trials, b.holdout_trials)
    drawn = {split_trials(trials, seed=s).validation_sounds for s in range(10)}
    assert len(drawn) > 1  # different seeds can draw different sounds


def test_by_sound_draw_prefers_the_most_repeated_sounds():
    # every sound reaches min_repeats = max(3, ceil(12 / 2)) = 6; round(0.2 * 5) = 1 sound
    trials = _trials({"a": 12, "b": 10, "c": 10, "d": 10, "e": 6})
    for seed in range(5):
        split = split_trials(trials, seed=seed)
        assert split.design == "all-repeated" and split.validation_sounds == ("a",)
    # round(0.4 * 5) = 2: "a", then one of the tied sounds drawn at random
    drawn = {
        split_trials(trials, seed=s, validation_fraction=0.4).validation_sounds for s in range(20)
    }
    assert all(v[0] == "a" and v[1] in {"b", "c", "d"} for v in drawn) and len(drawn) > 1


@pytest.mark.parametrize(
    ("n_sounds", "fraction", "expected"),
    [(10, 0.2, 2), (3, 0.1, 1), (3, 0.5, 1), (10, 0.9, 8), (20, 0.25, 5), (7, 0.2, 1)],
)
def test_number_of_drawn_validation_sounds(n_sounds, fraction, expected):
    # max(1, round(fraction * n)), capped at n - 2 so that 2 estimation sounds remain
    trials = _trials({f"s{i:02d}": 4 for i in range(n_sounds)})
    split = split_trials(trials, validation_fraction=fraction)
    assert len(split.validation_sounds) == expected
    assert len(split.estimation_sounds) == n_sounds - expected >= 2
    _check_partition(trials, split)


def test_none_repeated_design_has_no_noise_ceiling():
    trials = _trials({f"s{i:02d}": 1 for i in range(20)}, dur=0.5, gap=0.25)
    split = split_trials(trials, seed=1)
    assert split.design == "none-repeated" and split.min_repeats == 3
    assert len(split.validation_sounds) == 4 and split.validation_repeats == (1,) * 4
    assert not split.has_noise_ceiling
    assert "presented once" in split.noise_ceiling_note
    assert split.to_dict()["has_noise_ceiling"] is False
    _check_partition(trials, split)
    assert split.fit_trials.size + split.holdout_trials.size == 16
    assert split.holdout_trials.size == 3  # target 0.2 * 16 = 3.2 trials -> 3 whole sounds

    rate = 100.0
    rng = np.random.default_rng(0)
    counts = rng.poisson(1.0, (int(trials.stop.max() * rate) + 5, 3)).astype(np.float32)
    psth = validation_psth(counts, trials, split, rate)
    assert all(v.repeats.shape == (1, 50, 3) and v.n_repeats == 1 for v in psth.values())
    ceiling = noise_ceiling(list(psth.values()))
    assert ceiling.shape == (3,) and np.isnan(ceiling).all()
    assert np.isnan(noise_ceiling(list(psth.values()), method="split_half")).all()


def test_scores_with_single_repeat_validation_are_finite_but_not_noise_corrected():
    import warnings

    from nwb_subspace.models.estimator import score_predictions, validation_predictions
    from nwb_subspace.models.estimator import validation_psths as concat_psths

    trials = _trials({f"s{i:02d}": 1 for i in range(20)}, dur=0.5, gap=0.25)
    split = split_trials(trials)
    rate = 100.0
    rng = np.random.default_rng(3)
    n_bins = int(trials.stop.max() * rate) + 5
    drive = rng.gamma(2.0, 1.0, (n_bins, 3))
    counts = rng.poisson(drive).astype(np.float32)
    val = validation_psth(counts, trials, split, rate)
    ceiling = noise_ceiling(list(val.values()))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no RuntimeWarning from NaN ceilings
        pred = validation_predictions(drive, val)
        scores = score_predictions(pred, concat_psths(val), ceiling, seed=0)
    assert pred.shape == (200, 3)
    assert np.isfinite(scores.correlation).all() and (scores.correlation > 0.3).all()
    assert np.isfinite(scores.noise_floor).all()
    assert np.isfinite(scores.explained_variance).all()
    assert np.isnan(scores.noise_corrected_correlation).all()


def test_none_repeated_prefers_repeated_sounds_and_says_how_to_get_a_ceiling():
    # no sound reaches min_repeats = 3; the 4 sounds presented twice are drawn first
    counts = {**{f"e{i:02d}": 1 for i in range(16)}, **{f"r{i}": 2 for i in range(4)}}
    trials = _trials(counts)
    split = split_trials(trials)
    assert split.design == "none-repeated"
    assert split.validation_sounds == ("r0", "r1", "r2", "r3") and split.has_noise_ceiling
    wider = split_trials(trials, validation_fraction=0.3)  # 6 sounds: 2 presented once
    assert set(wider.validation_sounds) >= {"r0", "r1", "r2", "r3"}
    assert not wider.has_noise_ceiling
    assert "[session] min_repeats = 2" in wider.noise_ceiling_note
    assert split_trials(trials, min_repeats=2).design == "mixed"


def test_explicit_validation_sounds():
    counts = {"a": 1, "b": 1, "c": 1, "v": 10, "w": 3, "7": 2}
    trials = _trials(counts)
    split = split_trials(trials, validation_sounds=["w", 7])  # ids compare as str
    assert split.design == "explicit"
    assert split.validation_sounds == ("7", "w") and split.validation_repeats == (2, 3)
    assert "v" in split.estimation_sounds  # the repeat rule is not applied
    assert split.has_noise_ceiling
    _check_partition(trials, split)
    once = split_trials(trials, validation_sounds=("a", "v"))
    assert not once.has_noise_ceiling and "'a'" in once.noise_ceiling_note
    with pytest.raises(ValueError, match=r"not in column 'sound_id'.*\['nope'\].*'v', 'w'"):
        split_trials(trials, validation_sounds=["v", "nope"])
    with pytest.raises(ValueError, match="nothing is left to fit"):
        split_trials(trials, validation_sounds=list(counts))
    with pytest.raises(ValueError, match="empty"):
        split_trials(trials, validation_sounds=[])
    with pytest.raises(TypeError, match="list of sound names"):
        split_trials(trials, validation_sounds="v")


def test_long_sound_lists_are_shortened_in_messages():
    trials = _trials({f"s{i:03d}": 1 for i in range(100)})
    with pytest.raises(ValueError, match=r"'s019', \.\.\. \(100 in all\)\]") as info:
        split_trials(trials, validation_sounds=["x"])
    assert "s020" not in str(info.value)


@pytest.mark.parametrize(
    ("counts", "kwargs", "design"),
    [
        ({**{f"e{i}": 2 for i in range(12)}, "v0": 8, "v1": 8}, {}, "mixed"),
        ({f"s{i}": 4 for i in range(12)}, {}, "all-repeated"),
        ({f"s{i}": 1 for i in range(12)}, {}, "none-repeated"),
        ({f"s{i}": 3 for i in range(12)}, {"validation_sounds": ["s0", "s5"]}, "explicit"),
    ],
)
@pytest.mark.parametrize("seed", range(3))
def test_holdout_is_whole_sounds_in_every_design(counts, kwargs, design, seed):
    trials = _trials(counts, seed=seed)
    split = split_trials(trials, seed=seed, holdout_fraction=0.3, **kwargs)
    assert split.design == design in DESIGNS
    _check_partition(trials, split)
    assert split.holdout_trials.size > 0 and split.fit_trials.size > 0
    text = describe_split(split)
    assert text.startswith(f"split: {design} design") and "noise ceiling" in text
    assert "[session] validation_sounds" in text


def test_describe_split_says_why_there_is_no_ceiling():
    split = split_trials(_trials({f"s{i}": 1 for i in range(10)}))
    text = describe_split(split)
    assert "none-repeated" in text and "noise ceiling: none" in text
    assert "validation: 2 sound(s), 2 presentation(s)" in text
    with pytest.raises(TypeError, match="must be a Split"):
        describe_split({"design": "mixed"})


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


def test_noise_ceiling_of_single_repeats_is_nan():
    rng = np.random.default_rng(0)
    one = rng.poisson(2.0, (1, 50, 3)).astype(float)
    many = rng.poisson(2.0, (5, 50, 3)).astype(float)
    for method in ("schoppe", "split_half"):
        assert np.isnan(noise_ceiling(one, method=method)).all()
        assert np.isnan(noise_ceiling([many, one], method=method)).all()  # one sound is enough
        assert noise_ceiling([many], method=method).shape == (3,)


def test_noise_ceiling_rejects_bad_input():
    with pytest.raises(ValueError, match="no repeats"):
        noise_ceiling(np.ones((0, 10, 2)))
    with pytest.raises(ValueError, match="method must be"):
        noise_ceiling(np.ones((1, 10, 2)), method="sahani")
    with pytest.raises(ValueError, match="method must be"):
        noise_ceiling(np.ones((3, 10, 2)), method="sahani")
    with pytest.raises(ValueError, match="shape"):
        noise_ceiling(np.ones((3, 10, 2, 1)))
