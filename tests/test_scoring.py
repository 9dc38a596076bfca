"""Scoring: correlations, the shuffle noise floor, noise correction, explained variance."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from nwb_subspace.stimulus.scoring import (
    correlation,
    explained_variance,
    noise_corrected,
    shuffle_noise_floor,
)


def _signals(n: int = 2000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    psth = np.convolve(rng.standard_normal(n + 20), np.ones(20) / 20, "valid")[:n]
    good = psth + 0.5 * psth.std() * rng.standard_normal(n)
    unrelated = np.convolve(rng.standard_normal(n + 20), np.ones(20) / 20, "valid")[:n]
    return np.stack([good, unrelated], 1), np.stack([psth, psth], 1)


def test_correlation_matches_numpy_and_is_nan_for_constant_signals():
    pred, psth = _signals()
    r = correlation(pred, psth)
    assert r[0] == pytest.approx(np.corrcoef(pred[:, 0], psth[:, 0])[0, 1])
    flat = correlation(np.ones((10, 1)), np.arange(10.0)[:, None])
    assert np.isnan(flat).all()


def test_noise_floor_separates_a_real_prediction_from_an_unrelated_one():
    pred, psth = _signals()
    r = correlation(pred, psth)
    floor = shuffle_noise_floor(pred, psth, seed=1)
    assert r[0] > 0.8 and r[0] > 4 * floor[0]
    assert abs(r[1]) < floor[1] + 0.1  # an unrelated signal does not clear the floor by much
    assert 0.0 < floor[1] < 0.3
    np.testing.assert_array_equal(floor, shuffle_noise_floor(pred, psth, seed=1))


def test_noise_floor_of_a_constant_unit_is_nan_without_a_warning():
    pred, psth = _signals(200)
    pred[:, 1] = 3.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        floor = shuffle_noise_floor(pred, psth)
    assert np.isfinite(floor[0]) and np.isnan(floor[1])


def test_noise_correction_and_explained_variance():
    np.testing.assert_allclose(noise_corrected([0.4, 0.4, 0.4], [0.8, 0.0, -1.0])[0], 0.5)
    assert np.isnan(noise_corrected([0.4, 0.4], [0.0, -1.0])).all()
    pred, psth = _signals()
    # affine rescaling of the prediction does not change the explained variance
    ev = explained_variance(pred, psth)
    np.testing.assert_allclose(explained_variance(3 * pred + 7, psth), ev)
    np.testing.assert_allclose(explained_variance(psth, psth), 1.0)


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="n_bins, n_units"):
        correlation(np.zeros((10, 2)), np.zeros((10, 3)))
    with pytest.raises(ValueError, match="at least 3"):
        shuffle_noise_floor(np.zeros((2, 1)), np.zeros((2, 1)))
