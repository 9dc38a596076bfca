"""Scoring predictions against repeat-averaged validation responses (pure numerics).

All functions take arrays of shape ``(n_bins, n_units)`` where the bins are the validation
bins (each validation sound's bins concatenated) and ``psth`` is the response averaged over
that sound's repeats.
"""

from __future__ import annotations

import warnings

import numpy as np


def _check(pred: np.ndarray, psth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred = np.asarray(pred, dtype=float)
    psth = np.asarray(psth, dtype=float)
    if pred.shape != psth.shape or pred.ndim != 2:
        raise ValueError(
            f"prediction and PSTH must both be (n_bins, n_units); got {pred.shape} and {psth.shape}"
        )
    if pred.shape[0] < 3:
        raise ValueError(f"need at least 3 validation bins to score; got {pred.shape[0]}")
    return pred, psth


def correlation(pred: np.ndarray, psth: np.ndarray) -> np.ndarray:
    """Pearson correlation per unit (NaN where either signal is constant)."""
    pred, psth = _check(pred, psth)
    a = pred - pred.mean(0)
    b = psth - psth.mean(0)
    denom = np.sqrt((a**2).sum(0) * (b**2).sum(0))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, (a * b).sum(0) / denom, np.nan)


def shuffle_noise_floor(
    pred: np.ndarray,
    psth: np.ndarray,
    *,
    n_shuffles: int = 200,
    seed: int = 0,
    percentile: float = 95.0,
) -> np.ndarray:
    """Correlation reached by chance: the 95th percentile over circularly shifted predictions.

    Circular shifts (by at least 10% of the data) keep the prediction's own temporal
    structure, so the floor is not flattered by slow fluctuations. NaN for a unit whose
    prediction or PSTH is constant (no correlation is defined).
    """
    pred, psth = _check(pred, psth)
    rng = np.random.default_rng(seed)
    n = pred.shape[0]
    lo = max(1, n // 10)
    shifts = (
        rng.integers(lo, n - lo + 1, size=n_shuffles)
        if n - lo >= lo
        else np.ones(n_shuffles, dtype=int)
    )
    null = np.stack([correlation(np.roll(pred, int(s), axis=0), psth) for s in shifts])
    with warnings.catch_warnings():  # all-NaN columns (constant signals) give NaN, as documented
        warnings.filterwarnings("ignore", "All-NaN slice", RuntimeWarning)
        return np.nanpercentile(null, percentile, axis=0)


def noise_corrected(r: np.ndarray, ceiling: np.ndarray) -> np.ndarray:
    """``r / ceiling``, NaN where the ceiling is not positive (no reliable repeats)."""
    r = np.asarray(r, dtype=float)
    ceiling = np.asarray(ceiling, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(ceiling > 0, r / ceiling, np.nan)


def explained_variance(pred: np.ndarray, psth: np.ndarray) -> np.ndarray:
    """Fraction of PSTH variance explained by the prediction after the best affine rescaling.

    Equals the squared correlation (``r**2``); this is the quantity compared between the
    subspace model and the CNN.
    """
    return correlation(pred, psth) ** 2
