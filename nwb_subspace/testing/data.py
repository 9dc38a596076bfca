"""A small random data set for model tests: a uniform spectrogram and Poisson counts."""

from __future__ import annotations

import numpy as np

__all__ = ["poisson_data"]


def poisson_data(
    n_bins: int, n_freq: int, n_units: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Spectrogram ``X`` (uniform in [0, 1)), counts ``Y`` (Poisson of an exponential of a
    random linear drive, standardised per unit), and the first 70% / last 30% of the bins
    as training / holdout masks.

    Returns
    -------
    X : ndarray of float32, shape (n_bins, n_freq)
    Y : ndarray of float32, shape (n_bins, n_units)
    train, holdout : ndarray of bool, shape (n_bins,)
    """
    rng = np.random.default_rng(seed)
    X = rng.random((n_bins, n_freq)).astype(np.float32)
    z = X @ rng.standard_normal((n_freq, n_units))
    Y = rng.poisson(np.exp((z - z.mean(0)) / z.std(0) - 0.5)).astype(np.float32)
    train = np.zeros(n_bins, bool)
    train[: int(0.7 * n_bins)] = True
    return X, Y, train, ~train
