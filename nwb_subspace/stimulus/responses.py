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
Which sounds validate the models depends on the presentation design. ``min_repeats``
defaults to ``max(3, ceil(max_repeats / 2))`` where ``max_repeats`` is the repeat count of
the most repeated sound (:func:`default_min_repeats`); :attr:`Split.design` records which
of the four rules below applied.

``"explicit"``
    A list of validation sounds was given (``[session] validation_sounds``): those sounds
    validate, every other sound is an estimation sound. An unknown name is an error that
    lists the file's sounds.
``"mixed"`` (the reference design)
    Some sounds are presented at least ``min_repeats`` times and some are not. The former
    are the *validation* sounds; all their presentations form the validation set and none
    of them is ever used for fitting. Estimation sounds (presented once or a few times) and
    validation sounds (5-30 times in the reference data) fall apart by default even when
    every estimation sound is itself repeated two or three times, and a validation sound
    always has at least 3 repeats for the noise ceiling.
``"all-repeated"`` / ``"none-repeated"``
    Every sound reaches ``min_repeats`` (e.g. 20 sounds x 20 repeats in random order), or
    none does (in particular: every sound presented once). Validation sounds are then
    chosen *by sound*: ``max(1, round(validation_fraction * n_sounds))`` of them (default
    fraction 0.2; Python's ``round``, halves to even), capped so that at least 2 estimation
    sounds remain, taken in order of decreasing repeat count with ties drawn at random
    (seeded). With equal repeat counts this is a plain random draw of whole sounds. Every
    presentation of the other sounds is an estimation trial of its own (repeats are not
    averaged). Fewer than 3 sounds in total cannot be split this way (name the validation
    sounds instead).

In every design, whole estimation sounds (all their presentations, so a repeated
estimation sound cannot leak between the two) are then drawn at random (seeded) until
``holdout_fraction`` of the estimation trials are held out for early stopping; the fit
and holdout sets never share a sound, and neither shares one with the validation set.

A noise ceiling needs every validation sound presented at least twice. When some
validation sound is presented once (``"none-repeated"``, or an explicit list naming such
a sound), :attr:`Split.has_noise_ceiling` is False, :attr:`Split.noise_ceiling_note` says
why, and :func:`noise_ceiling` returns NaN for every unit: correlations with the
validation responses are still defined, noise-corrected ones are not.

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
split-half correlation), and NaN for every unit when a sound has a single presentation
(no across-repeat variance can be measured).
"""

from __future__ import annotations

import math
import warnings
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
    "check_split_disjoint",
    "DESIGNS",
    "default_min_repeats",
    "describe_split",
    "noise_ceiling",
    "OVERLAP_MODES",
    "overlapping_trials",
    "resolve_overlaps",
    "segments",
    "separate_trial_bins",
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
                f"{self.table} row {i} has a non-finite time (start={start[i]:g}, "
                f"stop={stop[i]:g}); fix or remove that row"
            )
        bad = stop < start
        if bad.any():
            i = int(np.argmax(bad))
            raise ValueError(
                f"{self.table} row {i} stops before it starts (start={start[i]:g}, "
                f"stop={stop[i]:g}); swap or fix the times"
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
        Seed of the holdout draw (and of the validation draw of the by-sound designs).
    design : {"mixed", "all-repeated", "none-repeated", "explicit"}
        Which split rule applied (see the module notes).
    validation_fraction : float
        Requested fraction of sounds that validate (used by the by-sound designs only).
    noise_ceiling_note : str
        Empty when a noise ceiling can be estimated; otherwise why not (some validation
        sound is presented once) and what would give one.
    validation_repeats : tuple of int
        Presentations of each validation sound, in ``validation_sounds`` order.
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
    design: str = "mixed"
    validation_fraction: float = 0.2
    noise_ceiling_note: str = ""
    validation_repeats: tuple[int, ...] = ()

    @property
    def has_noise_ceiling(self) -> bool:
        """Whether every validation sound is repeated, so a noise ceiling can be estimated."""
        return not self.noise_ceiling_note

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
            "design": self.design,
            "validation_fraction": float(self.validation_fraction),
            "validation_repeats": [int(n) for n in self.validation_repeats],
            "has_noise_ceiling": self.has_noise_ceiling,
            "noise_ceiling_note": self.noise_ceiling_note,
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
                f"[{t0:.3f}, {end:.3f}) s, e.g. row {i} ({str(trials.sound_id[i])!r}, "
                f"{trials.start[i]:.3f}-{trials.stop[i]:.3f} s); check that the trials and "
                "the sound share the session clock, or drop those rows"
            )
    return out


#: What :func:`resolve_overlaps` does with overlapping trials.
OVERLAP_MODES = ("error", "trim")

#: How messages name the option that trims overlapping trials instead of refusing them.
OVERLAP_OPTION = "[session] overlapping_trials = \"trim\" (overlapping_trials='trim' in Python)"


def overlapping_trials(trials: Trials, tolerance_s: float = 0.0) -> list[tuple[int, int]]:
    """Pairs of trials whose intervals overlap by more than ``tolerance_s`` seconds.

    Parameters
    ----------
    trials : Trials
    tolerance_s : float, default 0.0
        Overlaps up to this long are ignored (e.g. half a bin: rounding to bins).

    Returns
    -------
    list of (int, int)
        ``(i, j)``: trial ``j`` starts before trial ``i`` (which started no later) stops,
        by more than ``tolerance_s``; one pair per overlapping trial ``j``, ``i`` being the
        earlier-starting trial that reaches furthest. Trials that touch do not overlap.
    """
    order = np.argsort(trials.start, kind="stable")
    out: list[tuple[int, int]] = []
    reach, reacher = -np.inf, -1
    for j in order:
        if trials.start[j] < reach - tolerance_s:
            out.append((int(reacher), int(j)))
        if trials.stop[j] > reach:
            reach, reacher = float(trials.stop[j]), int(j)
    return out


def _pair_text(trials: Trials, pairs: list[tuple[int, int]], limit: int = 5) -> str:
    """``trials row i ('a', 0.200-1.300 s) and trials row j (...); ...`` for messages."""

    def row(k: int) -> str:
        return (
            f"{trials.table} row {k} ({str(trials.sound_id[k])!r}, "
            f"{trials.start[k]:.3f}-{trials.stop[k]:.3f} s)"
        )

    text = "; ".join(f"{row(i)} and {row(j)}" for i, j in pairs[:limit])
    return text + (f"; ... ({len(pairs)} overlaps in all)" if len(pairs) > limit else "")


def resolve_overlaps(trials: Trials, rate: float, mode: str = "error") -> Trials:
    """Refuse overlapping trials, or trim them so that none overlaps another.

    Parameters
    ----------
    trials : Trials
    rate : float
        Bins per second; overlaps shorter than half a bin are rounding, left to
        :func:`separate_trial_bins`.
    mode : {"error", "trim"}, default "error"
        ``"trim"`` ends each trial where the next one (in start order) starts, drops the
        trials left empty, and warns naming the trials and bins trimmed.

    Returns
    -------
    Trials
        ``trials`` itself when nothing overlaps; otherwise (``"trim"``) the trimmed trials
        (their indices no longer match the table's rows when a trial was dropped).

    Raises
    ------
    ValueError
        ``mode="error"`` and some trials overlap: the message names them and their times
        (an overlap would put the same bins in two trials, possibly a fit and a
        validation one).
    """
    if mode not in OVERLAP_MODES:
        raise ValueError(f"overlapping_trials must be one of {list(OVERLAP_MODES)}, got {mode!r}")
    rate, _ = _check_rate(rate, 0.0)
    pairs = overlapping_trials(trials, 0.5 / rate)
    if not pairs:
        return trials
    if mode == "error":
        raise ValueError(
            f"{len(pairs)} trial(s) of the {trials.table} table overlap an earlier one: "
            f"{_pair_text(trials, pairs)}. "
            "Overlapping trials share bins, which could then be fitted and validated at once; "
            f"fix the start/stop times, drop the duplicates, or pass {OVERLAP_OPTION} to end "
            "each trial where the next one starts"
        )
    order = np.argsort(trials.start, kind="stable")
    stop = trials.stop.copy()
    nxt = np.append(trials.start[order][1:], np.inf)
    stop[order] = np.minimum(trials.stop[order], nxt)
    cut = np.flatnonzero(stop < trials.stop)
    keep = stop - trials.start > 0.5 / rate
    lost = np.rint((trials.stop[cut] - stop[cut]) * rate).astype(np.int64)
    dropped = np.flatnonzero(~keep)
    warnings.warn(
        f"trimmed {cut.size} overlapping {trials.table} trial(s) ({OVERLAP_OPTION}): "
        + ", ".join(
            f"{trials.table} row {k} by {n} bin(s)"
            for k, n in zip(cut[:10], lost[:10], strict=True)
        )
        + (" ..." if cut.size > 10 else "")
        + (f"; dropped rows {dropped.tolist()} (left empty)" if dropped.size else "")
        + f" (overlaps: {_pair_text(trials, pairs)})",
        UserWarning,
        stacklevel=2,
    )
    return Trials(
        trials.start[keep],
        stop[keep],
        trials.sound_id[keep],
        table=trials.table,
        sound_column=trials.sound_column,
    )


def separate_trial_bins(bins: np.ndarray) -> np.ndarray:
    """End each trial's bin range no later than the next trial's (in start order) begins.

    Trials that touch in time can share a bin after rounding to bins
    (:func:`trial_bins`); this gives that bin to the later trial. Use it after
    :func:`resolve_overlaps`, which refuses real overlaps.

    Parameters
    ----------
    bins : ndarray of int, shape (n_trials, 2)

    Returns
    -------
    ndarray of int64, shape (n_trials, 2)
        A copy, with ``stop`` lowered where needed (never below ``first``).
    """
    out = np.array(bins, dtype=np.int64, copy=True)
    if out.shape[0] < 2:
        return out
    order = np.argsort(out[:, 0], kind="stable")
    nxt = np.append(out[order[1:], 0], np.iinfo(np.int64).max)
    out[order, 1] = np.maximum(np.minimum(out[order, 1], nxt), out[order, 0])
    return out


def check_split_disjoint(bins: np.ndarray, split: Split) -> None:
    """Raise if any bin belongs to two parts of the split (fit / holdout / validation).

    Parameters
    ----------
    bins : ndarray of int, shape (n_trials, 2)
        ``[first, stop)`` bin range of each trial.
    split : Split

    Raises
    ------
    RuntimeError
        Naming the parts, the number of bins shared and the trials involved. Never raised
        for trials that passed :func:`resolve_overlaps` and :func:`separate_trial_bins`;
        it guards against a fit on validation bins whatever the cause.
    """
    bins = np.asarray(bins, dtype=np.int64)
    parts = {
        "fit": split.fit_trials,
        "holdout": split.holdout_trials,
        "validation": split.validation_trials,
    }
    n = int(bins[:, 1].max()) if bins.size else 0
    masks = {}
    for name, idx in parts.items():
        m = np.zeros(n, dtype=bool)
        for a, b in bins[np.asarray(idx, dtype=np.int64)]:
            m[a:b] = True
        masks[name] = m
    names = list(parts)
    for k, a in enumerate(names):
        for b in names[k + 1 :]:
            shared = masks[a] & masks[b]
            if shared.any():
                first = int(np.argmax(shared))
                who = [
                    int(t)
                    for t in np.concatenate([parts[a], parts[b]])
                    if bins[t, 0] <= first < bins[t, 1]
                ]
                raise RuntimeError(
                    f"{int(shared.sum())} bin(s) are in both the {a} and the {b} trials "
                    f"(first: bin {first}, in trials {who}); the split must keep them apart. "
                    "Check the trials for overlaps"
                )


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


#: Split rules recorded in :attr:`Split.design` (see the module notes).
DESIGNS = ("mixed", "all-repeated", "none-repeated", "explicit")

#: Config keys named in messages (the ``[session]`` table of the TOML config).
_KEY_SOUNDS = "[session] validation_sounds"
_KEY_REPEATS = "[session] min_repeats"
_KEY_FRACTION = "[session] validation_fraction"


def _names(names: Sequence[str], limit: int = 20) -> str:
    """``['a', 'b', ...]``, shortened to ``limit`` names (with the total) for long lists."""
    names = list(names)
    if len(names) <= limit:
        return repr(names)
    return f"{repr(names[:limit])[:-1]}, ... ({len(names)} in all)]"


def _repeat_summary(counts: dict[str, int]) -> str:
    hist = dict(sorted(Counter(counts.values()).items()))
    return ", ".join(f"{n} sound(s) x {r}" for r, n in hist.items())


def _explicit_validation(
    validation_sounds: Sequence[str], counts: dict[str, int], trials: Trials
) -> tuple[str, ...]:
    """The listed validation sounds, checked against the sounds in ``trials``."""
    if isinstance(validation_sounds, str | bytes) or not isinstance(
        validation_sounds, Sequence | np.ndarray | set | frozenset
    ):
        raise TypeError(
            f"validation_sounds ({_KEY_SOUNDS}) must be a list of sound names, got "
            f"{validation_sounds!r}"
        )
    names = []
    for v in validation_sounds:
        if isinstance(v, bool) or not isinstance(v, str | int | np.integer):
            raise TypeError(
                f"validation_sounds ({_KEY_SOUNDS}) must hold sound names (str), got {v!r}"
            )
        if str(v) not in names:
            names.append(str(v))
    where = f"column {trials.sound_column!r} of the {trials.table} table"
    if not names:
        raise ValueError(
            f"validation_sounds ({_KEY_SOUNDS}) is empty; list the validation sounds, or leave "
            "it out to choose them from the repeat counts"
        )
    unknown = [s for s in names if s not in counts]
    if unknown:
        raise ValueError(
            f"validation_sounds ({_KEY_SOUNDS}) names {len(unknown)} sound(s) not in {where}: "
            f"{_names(unknown)}; its sounds are {_names(list(counts))}"
        )
    if len(names) == len(counts):
        raise ValueError(
            f"validation_sounds ({_KEY_SOUNDS}) lists every sound in {where} "
            f"({len(counts)}), so nothing is left to fit on; list fewer sounds"
        )
    return tuple(sorted(names))


def _draw_validation(
    counts: dict[str, int],
    validation_fraction: float,
    rng: np.random.Generator,
    situation: str,
) -> tuple[str, ...]:
    """Validation sounds of the by-sound designs: the most repeated sounds, ties at random."""
    n = len(counts)
    if n < 3:
        raise ValueError(
            f"{situation}, and with only {n} sound(s) validation sounds cannot be drawn by "
            "sound (that needs >= 3: 1 to validate, 2 to fit); name the validation sound(s) "
            f"in {_KEY_SOUNDS}, or set {_KEY_REPEATS} so that some sounds reach it and "
            "some do not"
        )
    k = min(max(1, round(validation_fraction * n)), n - 2)
    shuffled = [list(counts)[i] for i in rng.permutation(n)]
    ranked = sorted(shuffled, key=lambda s: -counts[s])  # stable: ties stay in random order
    return tuple(sorted(ranked[:k]))


def _ceiling_note(val: tuple[str, ...], counts: dict[str, int], design: str) -> str:
    """Why no noise ceiling can be estimated ("" when every validation sound is repeated)."""
    once = [s for s in val if counts[s] < 2]
    if not once:
        return ""
    note = (
        f"{len(once)} of {len(val)} validation sound(s) presented once ({_names(once, 5)}): "
        "no noise ceiling can be estimated and noise-corrected scores are NaN"
    )
    repeated = [s for s, c in counts.items() if c >= 2]
    if not repeated:
        return f"{note} (no sound in the file is presented more than once)"
    if design == "none-repeated":
        return (
            f"{note}; set {_KEY_REPEATS} = 2 to validate on the {len(repeated)} sound(s) "
            f"presented at least twice, or name repeated sounds in {_KEY_SOUNDS}"
        )
    return f"{note}; name only repeated sounds in {_KEY_SOUNDS}"


# long: the split rules in the order they apply (design, validation draw, holdout), seeded
def split_trials(
    trials: Trials,
    min_repeats: int | None = None,
    holdout_fraction: float = 0.2,
    seed: int = 0,
    *,
    validation_sounds: Sequence[str] | None = None,
    validation_fraction: float = 0.2,
) -> Split:
    """Split trials into validation sounds, fit and early-stopping holdout.

    Parameters
    ----------
    trials : Trials
    min_repeats : int, optional
        A sound presented at least this many times counts as repeated. Default:
        ``max(3, ceil(max_repeats / 2))`` (:func:`default_min_repeats`). Must be >= 2.
    holdout_fraction : float, default 0.2
        Fraction of estimation trials held out for early stopping, in ``[0, 1)``. Whole
        sounds are held out, so the realised fraction is the closest reachable one.
    seed : int, default 0
        Seed of the draws (same seed, same trials -> same split).
    validation_sounds : sequence of str, optional
        The validation sounds, by name (design ``"explicit"``); every other sound is an
        estimation sound. Default: chosen from the repeat counts (see the module notes).
    validation_fraction : float, default 0.2
        Fraction of the sounds that validate when every sound reaches ``min_repeats`` or
        none does, in ``(0, 1)``: ``max(1, round(validation_fraction * n_sounds))`` sounds,
        leaving at least 2 estimation sounds.

    Returns
    -------
    Split
        ``design`` says which rule applied; ``has_noise_ceiling`` is False when some
        validation sound is presented once.

    Raises
    ------
    ValueError
        An empty table; a listed validation sound that is not in the table, or a list
        naming every sound; fewer than 3 sounds when validation sounds must be drawn by
        sound; or a parameter out of range. Each message names the ``[session]`` setting
        that resolves it.
    TypeError
        A parameter of the wrong type.
    """
    if not isinstance(trials, Trials):
        raise TypeError(f"trials must be a Trials, got {type(trials).__name__}")
    if len(trials) == 0:
        raise ValueError(f"the {trials.table} table is empty; nothing to split")
    if isinstance(holdout_fraction, bool) or not (
        isinstance(holdout_fraction, int | float) and 0 <= holdout_fraction < 1
    ):
        raise ValueError(
            f"holdout_fraction ([session] holdout_fraction) must be in [0, 1), got "
            f"{holdout_fraction!r}; e.g. 0.2"
        )
    if isinstance(validation_fraction, bool) or not (
        isinstance(validation_fraction, int | float) and 0 < validation_fraction < 1
    ):
        raise ValueError(
            f"validation_fraction ({_KEY_FRACTION}) must be in (0, 1), got "
            f"{validation_fraction!r}; e.g. 0.2"
        )
    counts = trials.repeat_counts()
    if min_repeats is None:
        min_repeats = default_min_repeats(counts)
    elif isinstance(min_repeats, bool) or not isinstance(min_repeats, int | np.integer):
        raise TypeError(f"min_repeats ({_KEY_REPEATS}) must be an int, got {min_repeats!r}")
    elif min_repeats < 2:
        raise ValueError(
            f"min_repeats ({_KEY_REPEATS}) must be >= 2 (a noise ceiling needs repeats), got "
            f"{min_repeats}"
        )
    rng = np.random.default_rng(seed)
    if validation_sounds is not None:
        design = "explicit"
        val = _explicit_validation(validation_sounds, counts, trials)
    else:
        reaching = tuple(s for s, n in counts.items() if n >= min_repeats)
        if reaching and len(reaching) < len(counts):
            design, val = "mixed", reaching
        else:
            design = "all-repeated" if reaching else "none-repeated"
            situation = (
                f"{'every' if reaching else 'no'} sound in column {trials.sound_column!r} is "
                f"presented >= {min_repeats} times (repeats: {_repeat_summary(counts)})"
            )
            val = _draw_validation(counts, validation_fraction, rng, situation)
    val_set = set(val)
    est = tuple(s for s in counts if s not in val_set)
    sid = trials.sound_id
    val_trials = np.flatnonzero(np.isin(sid, val))
    est_mask = np.isin(sid, est)
    n_est = int(est_mask.sum())
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
        design=design,
        validation_fraction=float(validation_fraction),
        noise_ceiling_note=_ceiling_note(val, counts, design),
        validation_repeats=tuple(int(counts[s]) for s in val),
    )


_DESIGN_TEXT = {
    "mixed": "the sounds presented >= {m} times validate, the others are fitted",
    "all-repeated": (
        "every sound is presented >= {m} times, so {k} whole sound(s) were drawn to validate "
        "(validation_fraction {f}, seed {seed}); every presentation of the others is fitted"
    ),
    "none-repeated": (
        "no sound is presented >= {m} times, so {k} whole sound(s) were drawn to validate "
        "(validation_fraction {f}, most repeated first, seed {seed}); the others are fitted"
    ),
    "explicit": "the {k} listed validation sound(s) validate, the others are fitted",
}


def describe_split(split: Split) -> str:
    """A few lines saying how the trials are split (for ``nwb-subspace inspect``).

    Parameters
    ----------
    split : Split
        As returned by :func:`split_trials`.

    Returns
    -------
    str
        The design and why, sounds and presentations in each part, and whether there is
        a noise ceiling; no trailing newline.
    """
    if not isinstance(split, Split):
        raise TypeError(f"split must be a Split, got {type(split).__name__}")
    reps = dict(sorted(Counter(split.validation_repeats).items()))
    rep_text = ", ".join(f"{n} x {r}" for r, n in reps.items())
    n_fit = len(split.estimation_sounds) - len(split.holdout_sounds)
    why = _DESIGN_TEXT.get(split.design, "{k} validation sound(s)").format(
        m=split.min_repeats,
        k=len(split.validation_sounds),
        f=split.validation_fraction,
        seed=split.seed,
    )
    if split.has_noise_ceiling:
        ceiling = "noise ceiling: yes (every validation sound is repeated)"
    else:
        ceiling = f"noise ceiling: none ({split.noise_ceiling_note})"
    lines = [
        f"split: {split.design} design: {why}",
        f"  validation: {len(split.validation_sounds)} sound(s), "
        f"{split.validation_trials.size} presentation(s) (sounds x repeats: {rep_text})",
        f"  fit: {n_fit} sound(s), {split.fit_trials.size} presentation(s)",
        f"  early-stopping holdout: {len(split.holdout_sounds)} sound(s), "
        f"{split.holdout_trials.size} presentation(s) (whole sounds)",
        f"  {ceiling}",
        f"  change with {_KEY_SOUNDS}, {_KEY_REPEATS}, {_KEY_FRACTION} or "
        "[session] holdout_fraction",
    ]
    return "\n".join(lines)


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
        if a.shape[0] < 1:
            raise ValueError(
                f"a sound has no repeats (shape {a.shape}); pass at least one repeat per sound"
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
        the unit shows no repeatable signal, and for every unit when some sound has a
        single repeat (no noise variance can be measured; :attr:`Split.has_noise_ceiling`
        says so beforehand). A model's noise-corrected correlation is ``r / ceiling``.
    """
    if method not in ("schoppe", "split_half"):
        raise ValueError(f"method must be 'schoppe' or 'split_half', got {method!r}")
    arrays = _as_repeat_list(repeats)
    if min(a.shape[0] for a in arrays) < 2:
        return np.full(arrays[0].shape[2], np.nan)
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
