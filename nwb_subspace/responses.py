"""Spikes -> binned counts, trials -> bins, estimation/validation split, noise ceiling.

Pure numerics: nothing here knows about files (``nwb_subspace.io.trials`` and
``nwb_subspace.io.session`` read NWB files into these structures).

Clock and bins
--------------
Everything lives on the session clock of the spectrogram: bin ``i`` is the half-open
interval ``[t0 + i / rate, t0 + (i + 1) / rate)`` with the bin edges computed exactly by
that float64 expression. A spike at an edge therefore belongs to the bin that *starts*
there; a spike at ``t0 + n_bins / rate`` (the end of the last bin) is outside and dropped.

Split rule
----------
A sound presented at least ``min_repeats`` times is a *validation* sound; all its
presentations form the validation set and none of them is ever used for fitting. By
default ``min_repeats = max(3, ceil(max_repeats / 2))`` where ``max_repeats`` is the
repeat count of the most repeated sound: estimation sounds (presented once or a few times)
and validation sounds (5-30 times in the reference data) then fall apart even when every
estimation sound is itself repeated two or three times, and a validation sound always has
at least 3 repeats for the noise ceiling. The remaining sounds are *estimation* sounds; of
those, whole sounds (all their presentations, so a repeated estimation sound cannot leak
between the two) are drawn at random (seeded) until ``holdout_fraction`` of the estimation
trials are held out for early stopping.

Noise ceiling
-------------
``noise_ceiling`` returns, per unit, the expected correlation between a perfect model
(the unit's true, noise-free rate) and the repeat-averaged validation PSTH, so that a
model's noise-corrected correlation is ``r / ceiling``. The default ``method="schoppe"``
is the closed form of Schoppe et al. 2016 (the ``CC_max`` built on the signal-power
estimate of Sahani & Linden 2003, also used by Hsu et al. 2004): with ``R`` repeats, the
variance of the mean PSTH is signal variance plus noise variance / ``R``, the noise
variance is the across-repeat variance (``ddof=1``) averaged over bins, and
``CC_max = sqrt(signal variance / variance of the mean PSTH)``.
``method="split_half"`` averages, over random splits of the repeats into two halves, the
correlation of the two half-means, applies the Spearman-Brown step to the full number of
repeats (reliability ``rho = 2 r / (1 + r)``) and returns ``sqrt(rho)``. Both are NaN for
a unit with no measurable signal (estimated signal variance <= 0, or a non-positive
split-half correlation).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "Split",
    "Trials",
    "ValidationPSTH",
    "bin_edges",
    "bin_spikes",
    "default_min_repeats",
    "noise_ceiling",
    "segments",
    "split_trials",
    "trial_bins",
    "validation_psth",
]


@dataclass(frozen=True)
class Trials:
    """Sound presentations on the session clock.

    Parameters
    ----------
    start, stop : ndarray of float64, shape (n_trials,)
        Onset and offset of each presentation in seconds (``start <= stop``).
    sound_id : ndarray of str, shape (n_trials,)
        Identity of the sound presented; presentations of the same sound share it.
    table : str, default "trials"
        Name of the table they were read from (for messages).
    sound_column : str, default "sound_id"
        Name of the column the identities came from (for messages).
    """

    start: np.ndarray
    stop: np.ndarray
    sound_id: np.ndarray
    table: str = "trials"
    sound_column: str = "sound_id"

    def __post_init__(self) -> None:
        start = np.asarray(self.start, dtype=np.float64).reshape(-1)
        stop = np.asarray(self.stop, dtype=np.float64).reshape(-1)
        sound = np.asarray([str(s) for s in np.asarray(self.sound_id, dtype=object).reshape(-1)])
        if not (start.size == stop.size == sound.size):
            raise ValueError(
                f"start, stop and sound_id need one entry per trial; got {start.size}, "
                f"{stop.size} and {sound.size}"
            )
        bad = ~(np.isfinite(start) & np.isfinite(stop))
        if bad.any():
            i = int(np.argmax(bad))
            raise ValueError(
                f"{self.table} row {i} has a non-finite time (start={start[i]!r}, "
                f"stop={stop[i]!r}); fix or remove that row"
            )
        bad = stop < start
        if bad.any():
            i = int(np.argmax(bad))
            raise ValueError(
                f"{self.table} row {i} stops before it starts (start={start[i]!r}, "
                f"stop={stop[i]!r}); swap or fix the times"
            )
        object.__setattr__(self, "start", start)
        object.__setattr__(self, "stop", stop)
        object.__setattr__(self, "sound_id", sound)

    def __len__(self) -> int:
        return int(self.start.size)

    def repeat_counts(self) -> dict[str, int]:
        """Number of presentations of each sound, sorted by sound id."""
        return dict(sorted(Counter(self.sound_id.tolist()).items()))


@dataclass(frozen=True)
class Split:
    """Estimation/validation split of the trials (indices into a :class:`Trials`).

    Attributes
    ----------
    validation_sounds, estimation_sounds, holdout_sounds : tuple of str
        Sound ids, sorted. ``holdout_sounds`` is a subset of ``estimation_sounds``.
    validation_trials : ndarray of int
        Trials of the validation sounds (scoring only).
    fit_trials : ndarray of int
        Estimation trials used to fit (estimation minus holdout).
    holdout_trials : ndarray of int
        Estimation trials held out for early stopping.
    min_repeats : int
        The repeat threshold that was applied.
    holdout_fraction : float
        Requested fraction of estimation trials held out.
    seed : int
        Seed of the holdout draw.
    """

    validation_sounds: tuple[str, ...]
    estimation_sounds: tuple[str, ...]
    holdout_sounds: tuple[str, ...]
    validation_trials: np.ndarray
    fit_trials: np.ndarray
    holdout_trials: np.ndarray
    min_repeats: int
    holdout_fraction: float
    seed: int

    @property
    def estimation_trials(self) -> np.ndarray:
        """All estimation trials (fit and holdout), sorted."""
        return np.sort(np.concatenate([self.fit_trials, self.holdout_trials]))

    def to_dict(self) -> dict:
        """Plain JSON-serialisable summary (for run configs)."""
        return {
            "validation_sounds": list(self.validation_sounds),
            "estimation_sounds": list(self.estimation_sounds),
            "holdout_sounds": list(self.holdout_sounds),
            "n_validation_trials": int(self.validation_trials.size),
            "n_fit_trials": int(self.fit_trials.size),
            "n_holdout_trials": int(self.holdout_trials.size),
            "min_repeats": int(self.min_repeats),
            "holdout_fraction": float(self.holdout_fraction),
            "seed": int(self.seed),
        }


@dataclass
class ValidationPSTH:
    """All repeats of one validation sound.

    Attributes
    ----------
    sound_id : str
    trials : ndarray of int, shape (n_repeats,)
        Trial indices of the repeats, in time order.
    start_bins : ndarray of int, shape (n_repeats,)
        First bin of each repeat.
    repeats : ndarray of float32, shape (n_repeats, n_bins_sound, n_units)
        Spike counts of each repeat (all repeats cut to the shortest one).
    mean : ndarray of float32, shape (n_bins_sound, n_units)
        Repeat average (the PSTH that models are scored against).
    """

    sound_id: str
    trials: np.ndarray
    start_bins: np.ndarray
    repeats: np.ndarray
    mean: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.mean = self.repeats.mean(axis=0).astype(np.float32)

    @property
    def n_repeats(self) -> int:
        return int(self.repeats.shape[0])

    @property
    def n_bins(self) -> int:
        return int(self.repeats.shape[1])


def _check_rate(rate: float, starting_time: float) -> tuple[float, float]:
    if not isinstance(rate, int | float | np.integer | np.floating) or not rate > 0:
        raise ValueError(f"rate must be a positive number of bins per second, got {rate!r}")
    if not np.isfinite(starting_time):
        raise ValueError(f"starting_time must be finite, got {starting_time!r}")
    return float(rate), float(starting_time)


def bin_edges(n_bins: int, rate: float, starting_time: float = 0.0) -> np.ndarray:
    """Edges ``t0 + i / rate`` for ``i = 0..n_bins`` (float64, shape (n_bins + 1,))."""
    rate, t0 = _check_rate(rate, starting_time)
    return t0 + np.arange(int(n_bins) + 1, dtype=np.float64) / rate


def bin_spikes(
    spike_times_per_unit: Sequence[np.ndarray],
    n_bins: int,
    rate: float,
    starting_time: float = 0.0,
) -> np.ndarray:
    """Count each unit's spikes in the bins of a spectrogram.

    Parameters
    ----------
    spike_times_per_unit : sequence of array-like
        One array of spike times (seconds, session clock) per unit; need not be sorted.
    n_bins : int
        Number of bins.
    rate : float
        Bins per second.
    starting_time : float, default 0.0
        Start of bin 0 in seconds.

    Returns
    -------
    ndarray of float32, shape (n_bins, n_units)
        Spike counts.

    Notes
    -----
    Bin ``i`` is ``[edges[i], edges[i + 1])`` with ``edges = starting_time +
    arange(n_bins + 1) / rate`` in float64 (:func:`bin_edges`), so a spike exactly at an
    edge counts in the later bin, and one exactly at ``edges[n_bins]`` (or before
    ``edges[0]``) is dropped, like every spike outside the binned span. Assignment is by
    comparison with those edges (``searchsorted``), not by ``floor((t - t0) * rate)``,
    which misplaces edge spikes by one bin through rounding (``0.29 * 100 < 29``).

    Raises
    ------
    ValueError
        On a non-finite spike time, a negative ``n_bins`` or a bad ``rate``.
    """
    if isinstance(n_bins, bool) or not isinstance(n_bins, int | np.integer) or n_bins < 0:
        raise ValueError(f"n_bins must be a non-negative int, got {n_bins!r}")
    edges = bin_edges(int(n_bins), rate, starting_time)
    units = list(spike_times_per_unit)
    counts = np.zeros((int(n_bins), len(units)), dtype=np.float32)
    for u, times in enumerate(units):
        t = np.asarray(times, dtype=np.float64).reshape(-1)
        if t.size == 0 or n_bins == 0:
            continue
        bad = ~np.isfinite(t)
        if bad.any():
            raise ValueError(
                f"unit {u} has a non-finite spike time ({t[bad][0]!r}); remove it from the "
                "spike train"
            )
        idx = np.searchsorted(edges, t, side="right") - 1
        idx = idx[(idx >= 0) & (idx < n_bins)]
        counts[:, u] = np.bincount(idx, minlength=int(n_bins))
    return counts


def trial_bins(
    trials: Trials, rate: float, starting_time: float = 0.0, n_bins: int | None = None
) -> np.ndarray:
    """Bin range ``[first, stop)`` of each trial.

    Parameters
    ----------
    trials : Trials
    rate : float
        Bins per second.
    starting_time : float, default 0.0
        Start of bin 0 in seconds.
    n_bins : int, optional
        Number of bins available; when given, a trial reaching outside ``[0, n_bins)`` raises.

    Returns
    -------
    ndarray of int64, shape (n_trials, 2)
        ``first = round((start - t0) * rate)`` (the bin edge nearest the onset) and
        ``stop = first + round((stop - start) * rate)``, so presentations of equal duration
        get equally many bins whatever their onset.

    Raises
    ------
    ValueError
        If ``n_bins`` is given and a trial lies (partly) outside the bins.
    """
    rate, t0 = _check_rate(rate, starting_time)
    first = np.rint((trials.start - t0) * rate).astype(np.int64)
    length = np.rint((trials.stop - trials.start) * rate).astype(np.int64)
    out = np.stack([first, first + length], axis=1)
    if n_bins is not None:
        bad = (out[:, 0] < 0) | (out[:, 1] > int(n_bins))
        if bad.any():
            rows = np.flatnonzero(bad)
            i = int(rows[0])
            end = t0 + int(n_bins) / rate
            raise ValueError(
                f"{len(rows)} {trials.table} row(s) lie outside the spectrogram's span "
                f"[{t0:.3f}, {end:.3f}) s, e.g. row {i} ({trials.sound_id[i]!r}, "
                f"{trials.start[i]:.3f}-{trials.stop[i]:.3f} s); check that the trials and "
                "the sound share the session clock, or drop those rows"
            )
    return out


def segments(bins: np.ndarray, trial_indices: np.ndarray) -> list[tuple[int, int]]:
    """``(first, stop)`` bin ranges of the given trials, in time order."""
    sel = np.asarray(bins)[np.asarray(trial_indices, dtype=np.int64)]
    order = np.argsort(sel[:, 0], kind="stable")
    return [(int(a), int(b)) for a, b in sel[order]]


def default_min_repeats(repeat_counts: dict[str, int] | Sequence[int]) -> int:
    """The default repeat threshold ``max(3, ceil(max_repeats / 2))`` (see module notes)."""
    values = list(repeat_counts.values()) if isinstance(repeat_counts, dict) else repeat_counts
    if not values:
        return 3
    return max(3, math.ceil(max(values) / 2))


def split_trials(
    trials: Trials,
    min_repeats: int | None = None,
    holdout_fraction: float = 0.2,
    seed: int = 0,
) -> Split:
    """Split trials into validation (repeated sounds), fit and early-stopping holdout.

    Parameters
    ----------
    trials : Trials
    min_repeats : int, optional
        A sound presented at least this many times is a validation sound. Default:
        ``max(3, ceil(max_repeats / 2))`` (:func:`default_min_repeats`). Must be >= 2.
    holdout_fraction : float, default 0.2
        Fraction of estimation trials held out for early stopping, in ``[0, 1)``. Whole
        sounds are held out, so the realised fraction is the closest reachable one.
    seed : int, default 0
        Seed of the holdout draw (same seed, same trials -> same holdout).

    Returns
    -------
    Split

    Raises
    ------
    ValueError
        No sound reaches ``min_repeats`` (no validation set), every sound does (no
        estimation set), or a parameter is out of range.
    """
    if not isinstance(trials, Trials):
        raise TypeError(f"trials must be a Trials, got {type(trials).__name__}")
    if len(trials) == 0:
        raise ValueError(f"the {trials.table} table is empty; nothing to split")
    if not (isinstance(holdout_fraction, int | float) and 0 <= holdout_fraction < 1):
        raise ValueError(f"holdout_fraction must be in [0, 1), got {holdout_fraction!r}; e.g. 0.2")
    counts = trials.repeat_counts()
    if min_repeats is None:
        min_repeats = default_min_repeats(counts)
    elif isinstance(min_repeats, bool) or not isinstance(min_repeats, int | np.integer):
        raise TypeError(f"min_repeats must be an int, got {min_repeats!r}")
    elif min_repeats < 2:
        raise ValueError(
            f"min_repeats must be >= 2 (a noise ceiling needs repeats), got {min_repeats}"
        )
    hist = dict(sorted(Counter(counts.values()).items()))
    summary = ", ".join(f"{n} sound(s) x {r}" for r, n in hist.items())
    val = tuple(s for s, n in counts.items() if n >= min_repeats)
    est = tuple(s for s, n in counts.items() if n < min_repeats)
    if not val:
        raise ValueError(
            f"no sound in column {trials.sound_column!r} is presented >= {min_repeats} times "
            f"(repeats: {summary}), so there is no validation set; pass a lower "
            "min_repeats (>= 2) if some sounds are repeated"
        )
    if not est:
        raise ValueError(
            f"every sound is presented >= {min_repeats} times (repeats: {summary}), so "
            "nothing is left to fit on; pass a higher min_repeats"
        )
    sid = trials.sound_id
    val_trials = np.flatnonzero(np.isin(sid, val))
    est_mask = np.isin(sid, est)
    n_est = int(est_mask.sum())
    rng = np.random.default_rng(seed)
    order = [est[i] for i in rng.permutation(len(est))]
    target = holdout_fraction * n_est
    hold: list[str] = []
    n_hold = 0
    for s in order:
        if holdout_fraction == 0 or n_hold >= target or len(hold) == len(est) - 1:
            break
        if hold and n_hold + counts[s] - target > target - n_hold:
            continue  # overshoots the target by more than it helps; try a smaller sound
        hold.append(s)
        n_hold += counts[s]
    hold_t = tuple(sorted(hold))
    hold_mask = np.isin(sid, hold_t)
    return Split(
        validation_sounds=val,
        estimation_sounds=est,
        holdout_sounds=hold_t,
        validation_trials=val_trials,
        fit_trials=np.flatnonzero(est_mask & ~hold_mask),
        holdout_trials=np.flatnonzero(hold_mask),
        min_repeats=int(min_repeats),
        holdout_fraction=float(holdout_fraction),
        seed=int(seed),
    )


def validation_psth(
    counts: np.ndarray,
    trials: Trials,
    split: Split,
    rate: float,
    starting_time: float = 0.0,
) -> dict[str, ValidationPSTH]:
    """Repeats and repeat-averaged PSTH of every validation sound.

    Parameters
    ----------
    counts : ndarray, shape (n_bins, n_units)
        Binned spike counts (:func:`bin_spikes`).
    trials : Trials
    split : Split
    rate, starting_time : float
        The bins' clock (as for :func:`bin_spikes`).

    Returns
    -------
    dict of str to ValidationPSTH
        Keyed by sound id, in ``split.validation_sounds`` order. Repeats are cut to the
        shortest repeat of that sound (durations may differ by a bin through rounding).
    """
    counts = np.asarray(counts)
    if counts.ndim != 2:
        raise ValueError(f"counts must be (n_bins, n_units), got shape {counts.shape}")
    bins = trial_bins(trials, rate, starting_time, n_bins=counts.shape[0])
    out: dict[str, ValidationPSTH] = {}
    for s in split.validation_sounds:
        idx = np.flatnonzero(trials.sound_id == s)
        idx = idx[np.argsort(bins[idx, 0], kind="stable")]
        length = int((bins[idx, 1] - bins[idx, 0]).min())
        if length < 1:
            raise ValueError(
                f"validation sound {s!r} has a presentation shorter than one bin; check "
                f"the start/stop times of {trials.table} rows {idx.tolist()}"
            )
        reps = np.stack([counts[b : b + length] for b in bins[idx, 0]]).astype(np.float32)
        out[s] = ValidationPSTH(sound_id=s, trials=idx, start_bins=bins[idx, 0], repeats=reps)
    return out


def _as_repeat_list(repeats) -> list[np.ndarray]:
    if isinstance(repeats, np.ndarray):
        items = [repeats]
    elif isinstance(repeats, dict):
        items = [getattr(v, "repeats", v) for v in repeats.values()]
    else:
        items = [getattr(v, "repeats", v) for v in repeats]
    out = []
    for a in items:
        a = np.asarray(a, dtype=np.float64)
        if a.ndim == 2:
            a = a[:, :, None]
        if a.ndim != 3:
            raise ValueError(f"repeats must be (n_repeats, n_bins, n_units), got shape {a.shape}")
        if a.shape[0] < 2:
            raise ValueError(
                f"a noise ceiling needs >= 2 repeats per sound, got {a.shape[0]}; "
                "leave out sounds presented once"
            )
        out.append(a)
    if not out:
        raise ValueError("no repeats given; pass at least one (n_repeats, n_bins, n_units) array")
    if len({a.shape[2] for a in out}) != 1:
        raise ValueError(f"all sounds need the same number of units, got {[a.shape for a in out]}")
    return out


def noise_ceiling(
    repeats,
    method: str = "schoppe",
    n_splits: int = 200,
    seed: int = 0,
) -> np.ndarray:
    """Per-unit ceiling on the correlation with the repeat-averaged PSTH.

    Parameters
    ----------
    repeats : ndarray (n_repeats, n_bins, n_units), or a list/dict of them
        Responses to repeats of one sound, or of several sounds (each with its own number
        of repeats and bins; they are scored as the concatenation of their mean PSTHs).
        :class:`ValidationPSTH` objects are accepted too.
    method : {"schoppe", "split_half"}, default "schoppe"
        See the module notes.
    n_splits : int, default 200
        Random half splits averaged by ``"split_half"``.
    seed : int, default 0
        Seed of those splits.

    Returns
    -------
    ndarray of float64, shape (n_units,)
        Expected correlation of the true rate with the mean PSTH, in ``(0, 1]``; NaN where
        the unit shows no repeatable signal. A model's noise-corrected correlation is
        ``r / ceiling``.
    """
    arrays = _as_repeat_list(repeats)
    if method == "schoppe":
        means = [a.mean(axis=0) for a in arrays]
        m = np.concatenate(means, axis=0)
        var_m = m.var(axis=0)
        # noise variance of the mean, bin by bin, weighted by each sound's share of bins
        noise = np.concatenate(
            [
                np.broadcast_to(a.var(axis=0, ddof=1).mean(axis=0) / a.shape[0], mu.shape)
                for a, mu in zip(arrays, means, strict=True)
            ],
            axis=0,
        ).mean(axis=0)
        signal = var_m - noise
        with np.errstate(invalid="ignore", divide="ignore"):
            cc = np.sqrt(signal / var_m)
        cc[~(signal > 0) | ~(var_m > 0)] = np.nan
        return np.minimum(cc, 1.0)
    if method == "split_half":
        if not (isinstance(n_splits, int) and n_splits >= 1):
            raise ValueError(f"n_splits must be a positive int, got {n_splits!r}")
        rng = np.random.default_rng(seed)
        rs = []
        for _ in range(n_splits):
            halves = [[], []]
            for a in arrays:
                perm = rng.permutation(a.shape[0])
                h = a.shape[0] // 2
                halves[0].append(a[perm[:h]].mean(axis=0))
                halves[1].append(a[perm[h:]].mean(axis=0))
            x = np.concatenate(halves[0], axis=0)
            y = np.concatenate(halves[1], axis=0)
            rs.append(_columnwise_corr(x, y))
        r = np.nanmean(np.stack(rs), axis=0) if rs else np.full(arrays[0].shape[2], np.nan)
        with np.errstate(invalid="ignore", divide="ignore"):
            rho = 2 * r / (1 + r)
            cc = np.sqrt(rho)
        cc[~(r > 0)] = np.nan
        return np.minimum(cc, 1.0)
    raise ValueError(f"method must be 'schoppe' or 'split_half', got {method!r}")


def _columnwise_corr(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    xc = x - x.mean(axis=0)
    yc = y - y.mean(axis=0)
    den = np.sqrt((xc * xc).sum(axis=0) * (yc * yc).sum(axis=0))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (xc * yc).sum(axis=0) / den
    r[den == 0] = np.nan
    return r
