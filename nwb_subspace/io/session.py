"""Load everything the model-fitting code needs from one NWB session, in one call.

:func:`load_session_data` opens the file read-only, finds the sound (or a stored
spectrogram), computes the spectrogram chunk by chunk, bins every unit's spikes on the
spectrogram's clock, reads the trials, splits them into estimation / early-stopping holdout
/ validation, and computes the validation PSTHs and per-unit noise ceilings. All checks on
the inputs run before the (possibly long) spectrogram computation, and nothing is ever
written to the file.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pynwb import NWBFile

from nwb_subspace import ndx  # noqa: F401  (registers the extension types before reading)
from nwb_subspace.io.remote import is_remote, open_nwb
from nwb_subspace.io.sound import SpectrogramPlan, SpectrogramSource, find_sound, plan_spectrogram
from nwb_subspace.io.trials import read_trials
from nwb_subspace.stimulus.responses import (
    Split,
    Trials,
    ValidationPSTH,
    bin_spikes,
    check_split_disjoint,
    noise_ceiling,
    resolve_overlaps,
    segments,
    separate_trial_bins,
    split_trials,
    trial_bins,
    validation_psth,
)
from nwb_subspace.stimulus.spectrogram import Spectrogram, SpectrogramSettings

__all__ = [
    "InsufficientMemoryError",
    "SessionCheck",
    "SessionData",
    "available_memory",
    "check_memory",
    "check_session",
    "checked_session",
    "estimate_spectrogram_memory",
    "load_session_data",
    "read_spike_times",
]


class InsufficientMemoryError(MemoryError, ValueError):
    """A setting would need more memory than the machine has; raised before allocating.

    A ``ValueError`` too, so that callers reporting bad input report it in one line.
    """


def available_memory() -> int | None:
    """Bytes of memory available now (psutil if installed, else ``os.sysconf``; None if
    neither says)."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def _gib(n_bytes: float) -> str:
    return f"{n_bytes / 2**30:.3g} GiB"


def check_memory(estimate: int, what: str, setting: str, available: int | None = None) -> None:
    """Refuse, before allocating, what would need more memory than is available.

    Parameters
    ----------
    estimate : int
        Bytes needed.
    what : str
        What would be allocated (e.g. ``"the spectrogram (90000 bins x 100000 channels x 4
        bytes)"``).
    setting : str
        The setting(s) that set its size, as the user writes them (e.g.
        ``"[spectrogram] n_channels = 100000"``).
    available : int, optional
        Bytes available; default :func:`available_memory` (no check when unknown).

    Raises
    ------
    InsufficientMemoryError
        Naming the setting, the estimate and the memory available.
    """
    avail = available_memory() if available is None else available
    if avail is not None and estimate > avail:
        raise InsufficientMemoryError(
            f"{setting}: {what} would need about {_gib(estimate)}, but this machine has "
            f"{_gib(avail)} of memory available; lower the setting"
        )


def estimate_spectrogram_memory(n_bins: int, n_channels: int) -> int:
    """Bytes of a float32 spectrogram of ``n_bins`` x ``n_channels``."""
    return int(n_bins) * int(n_channels) * 4


@dataclass
class SessionData:
    """Spectrogram, binned responses, trials and split of one session.

    Attributes
    ----------
    path : str
        The NWB file.
    spectrogram : nwb_subspace.stimulus.spectrogram.Spectrogram
        ``data`` is (n_bins, n_frequencies); bin ``i`` covers
        ``[starting_time + i / rate, starting_time + (i + 1) / rate)``.
    spectrogram_source : SpectrogramSource
        Sound it was computed from, or the stored spectrogram reused.
    counts : ndarray of float32, shape (n_bins, n_units)
        Spike counts in the spectrogram's bins; column ``j`` is units-table row ``j``.
    unit_ids : ndarray, shape (n_units,)
        ``unit_name`` if the units table has it, else its ``id``.
    trials : Trials
        Sound presentations.
    trial_bins : ndarray of int64, shape (n_trials, 2)
        ``[first, stop)`` bin range of each trial.
    split : Split
        Validation / fit / holdout trials.
    validation : dict of str to ValidationPSTH
        Repeats and mean PSTH of each validation sound.
    noise_ceiling : ndarray of float64, shape (n_units,)
        Per-unit ceiling on the correlation with the mean validation PSTH
        (:func:`nwb_subspace.stimulus.responses.noise_ceiling`, Schoppe et al. 2016); NaN for units
        without repeatable responses, and for every unit when some validation sound is
        presented once (``split.has_noise_ceiling`` False; ``split.noise_ceiling_note``
        says why).
    info : dict
        Plain summary (settings, split, spans) for run configs; ``design`` is the split
        rule that applied and ``has_noise_ceiling`` whether a noise ceiling exists.
    """

    path: str
    spectrogram: Spectrogram
    spectrogram_source: SpectrogramSource
    counts: np.ndarray
    unit_ids: np.ndarray
    trials: Trials
    trial_bins: np.ndarray
    split: Split
    validation: dict[str, ValidationPSTH]
    noise_ceiling: np.ndarray
    info: dict = field(default_factory=dict)

    @property
    def rate(self) -> float:
        """Bins per second."""
        return float(self.spectrogram.rate)

    @property
    def starting_time(self) -> float:
        """Session time of bin 0, in seconds."""
        return float(self.spectrogram.starting_time)

    @property
    def frequencies(self) -> np.ndarray:
        """Centre frequencies of the spectrogram channels, in Hz."""
        return self.spectrogram.frequencies

    @property
    def n_bins(self) -> int:
        return int(self.counts.shape[0])

    @property
    def n_units(self) -> int:
        return int(self.counts.shape[1])

    @property
    def unit_rows(self) -> np.ndarray:
        """Row of each count column in the units table (``arange(n_units)``)."""
        return np.arange(self.n_units)

    def segments(self, part: str) -> list[tuple[int, int]]:
        """``[first, stop)`` bin ranges of the ``"fit"``, ``"holdout"``, ``"estimation"`` or
        ``"validation"`` trials, in time order."""
        parts = {
            "fit": self.split.fit_trials,
            "holdout": self.split.holdout_trials,
            "estimation": self.split.estimation_trials,
            "validation": self.split.validation_trials,
        }
        if part not in parts:
            raise ValueError(f"part must be one of {sorted(parts)}, got {part!r}")
        return segments(self.trial_bins, parts[part])

    def frame_bins(self, frames: str = "estimation") -> np.ndarray:
        """Bins whose dSTRFs enter the tuning subspaces: each stimulus bin once.

        For every distinct sound among the chosen trials, the bins of its first
        presentation (earliest start) only: a repeat of a sound gives the same dSTRFs, so
        it is used once and never weighted by its repeat count.

        Parameters
        ----------
        frames : {"estimation", "all"}, default "estimation"
            ``"estimation"``: the fit and holdout trials; ``"all"``: those and the
            validation trials.

        Returns
        -------
        ndarray of bool, shape (n_bins,)
        """
        parts = {"estimation": ("fit", "holdout"), "all": ("fit", "holdout", "validation")}
        if frames not in parts:
            raise ValueError(f"frames must be one of {sorted(parts)}, got {frames!r}")
        trials = {
            "fit": self.split.fit_trials,
            "holdout": self.split.holdout_trials,
            "validation": self.split.validation_trials,
        }
        chosen = np.unique(np.concatenate([trials[p] for p in parts[frames]]).astype(np.int64))
        order = chosen[np.lexsort((chosen, self.trial_bins[chosen, 0]))]  # by start, then row
        _, first = np.unique(self.trials.sound_id[order], return_index=True)
        mask = np.zeros(self.n_bins, bool)
        for a, b in self.trial_bins[order[first]]:
            mask[a:b] = True
        return mask


def read_spike_times(nwbfile: NWBFile) -> tuple[list[np.ndarray], np.ndarray]:
    """Spike times of every unit (units-table order) and the unit ids.

    Raises
    ------
    ValueError
        If the file has no units table, or it has no ``spike_times`` column.
    """
    units = nwbfile.units
    if units is None or len(units) == 0:
        raise ValueError("the file has no (non-empty) units table; responses need spike times")
    if "spike_times" not in units.colnames:
        raise ValueError(
            f"the units table has no spike_times column (columns: {list(units.colnames)})"
        )
    col = units["spike_times"]
    flat = np.asarray(col.target.data[:], dtype=np.float64)
    ends = np.asarray(col.data[:], dtype=np.int64)
    starts = np.concatenate([[0], ends[:-1]])
    times = [flat[a:b] for a, b in zip(starts, ends, strict=True)]
    if "unit_name" in units.colnames:
        ids = np.asarray([str(v) for v in units["unit_name"][:]])
    else:
        ids = np.asarray(units.id[:])
    return times, ids


def _check_spans(
    spikes: list[np.ndarray], trials: Trials, span: tuple[float, float], source: str
) -> None:
    """Sound must overlap the spikes; trials must lie in the sound and overlap the spikes."""
    nonempty = [t for t in spikes if t.size]
    if not nonempty:
        raise ValueError("no unit has any spike; nothing to model")
    s0 = min(float(t.min()) for t in nonempty)
    s1 = max(float(t.max()) for t in nonempty)
    a0, a1 = span
    if s1 < a0 or s0 >= a1:
        raise ValueError(
            f"the {source} spans {a0:.3f}-{a1:.3f} s but the spikes span {s0:.3f}-{s1:.3f} s: "
            "they do not overlap. Check that the sound's starting_time (or timestamps) and the "
            "spike times are on the same session clock"
        )
    t0, t1 = float(trials.start.min()), float(trials.stop.max())
    if t1 < s0 or t0 > s1:
        raise ValueError(
            f"the {trials.table} table spans {t0:.3f}-{t1:.3f} s but the spikes span "
            f"{s0:.3f}-{s1:.3f} s: they do not overlap; check the clocks"
        )


def _session_info(path, source, spec, counts: np.ndarray, trials, split) -> dict:
    """What :attr:`SessionData.info` records about a loaded session."""
    return {
        "path": str(path),
        "spectrogram_source": str(source),
        "spectrogram_settings": dict(spec.settings),
        "rate": float(spec.rate),
        "starting_time": float(spec.starting_time),
        "n_bins": int(spec.n_bins),
        "n_units": int(counts.shape[1]),
        "trials_table": trials.table,
        "sound_column": trials.sound_column,
        "split": split.to_dict(),
        "design": split.design,
        "has_noise_ceiling": split.has_noise_ceiling,
        "noise_ceiling_method": "schoppe" if split.has_noise_ceiling else None,
    }


@dataclass
class _Inputs:
    """What the checks of :func:`_checked_inputs` produced (None where a step failed)."""

    spikes: list[np.ndarray] | None = None
    unit_ids: np.ndarray | None = None
    trials: Trials | None = None
    plan: SpectrogramPlan | None = None
    bins: np.ndarray | None = None
    split: Split | None = None


_CHECK_ERRORS = (ValueError, TypeError, KeyError)


def _checked_inputs(nwbfile: NWBFile, opts: dict, problems: list[str] | None) -> _Inputs:
    """Every check of the inputs that needs no spectrogram samples, in order.

    With ``problems`` None the first failure raises; otherwise each failing step appends
    its message (one line) and the steps that need its output are skipped.
    """
    out = _Inputs()

    def step(fn, *args, **kwargs):
        if problems is None:
            return fn(*args, **kwargs)
        try:
            return fn(*args, **kwargs)
        except _CHECK_ERRORS as err:
            problems.append(" ".join(str(err).split()) or type(err).__name__)
            return None

    spikes = step(read_spike_times, nwbfile)
    if spikes is not None:
        out.spikes, out.unit_ids = spikes
    trials = step(read_trials, nwbfile, sound_column=opts["sound_column"], table=opts["table"])
    plan = step(
        plan_spectrogram,
        nwbfile,
        opts["settings"],
        opts["sound_name"],
        opts["reuse"],
        trials=trials,
        layout=opts["layout"],
        sound_dir=opts["sound_dir"],
    )
    out.plan = plan
    if plan is not None:
        # a stored spectrogram is reused only when its settings match: same channels
        n_channels = int((opts["settings"] or SpectrogramSettings()).n_channels)
        step(
            check_memory,
            estimate_spectrogram_memory(plan.n_bins, n_channels),
            f"the spectrogram ({plan.n_bins} bins x {n_channels} channels x 4 bytes)",
            f"[spectrogram] n_channels = {n_channels}",
        )
    if trials is not None and plan is not None:
        trials = step(resolve_overlaps, trials, plan.rate, opts["overlapping_trials"])
    out.trials = trials
    if trials is None or plan is None:
        return out
    # every check that needs only the spectrogram's clock runs before computing it
    if out.spikes is not None:
        step(_check_spans, out.spikes, trials, plan.span, str(plan.source))
    bins = step(trial_bins, trials, plan.rate, plan.starting_time, n_bins=plan.n_bins)
    out.bins = None if bins is None else separate_trial_bins(bins)
    out.split = step(
        split_trials,
        trials,
        opts["min_repeats"],
        opts["holdout_fraction"],
        opts["seed"],
        validation_sounds=opts["validation_sounds"],
        validation_fraction=opts["validation_fraction"],
    )
    if out.bins is not None and out.split is not None:
        check_split_disjoint(out.bins, out.split)  # a bug, not bad input: always raises
    return out


#: How many samples of a continuous sound :func:`check_session` scans for NaN/inf at most.
SCAN_LIMIT_SAMPLES = 100_000_000


def _scan_sound(nwbfile: NWBFile, plan: SpectrogramPlan, limit: int) -> str | None:
    """The first NaN/inf sample of a continuous sound, as a problem line (None: none found).

    Reads at most ``limit`` samples, in chunks of 2**20; other layouts are checked when the
    spectrogram is computed.
    """
    if plan.source.kind != "computed" or plan.layout != "continuous":
        return None
    ts = find_sound(nwbfile, plan.source.name)
    data = ts.data
    n = min(int(data.shape[0]), int(limit))
    chunk = 2**20
    for a in range(0, n, chunk):
        block = np.asarray(data[a : min(a + chunk, n)], dtype=np.float64)
        bad = ~np.isfinite(block)
        if bad.any():
            i = a + int(np.argmax(bad.reshape(bad.shape[0], -1).any(axis=1)))
            return (
                f"{plan.source.path}: the sound holds NaN/inf samples (first at sample {i}); "
                "replace them (e.g. with 0) before computing the spectrogram"
            )
    return None


def _options(path, kwargs: dict) -> tuple[str | Path, dict]:
    """The path checked to exist (local files) and the options of :func:`_checked_inputs`."""
    if not is_remote(path):
        path = Path(path)
        if not path.exists():  # a file, or an NWB Zarr store (a folder)
            raise FileNotFoundError(f"no such NWB file: {path}")
    defaults = {
        "sound_name": None,
        "sound_column": None,
        "spectrogram_settings": None,
        "min_repeats": None,
        "holdout_fraction": 0.2,
        "seed": 0,
        "reuse_spectrogram": True,
        "layout": "auto",
        "sound_dir": None,
        "trials_table": None,
        "validation_sounds": None,
        "validation_fraction": 0.2,
        "overlapping_trials": "error",
    }
    unknown = set(kwargs) - set(defaults)
    if unknown:
        raise TypeError(f"unknown option(s) {sorted(unknown)}; known: {sorted(defaults)}")
    o = {**defaults, **kwargs}
    o["settings"], o["reuse"] = o.pop("spectrogram_settings"), o.pop("reuse_spectrogram")
    o["table"] = o.pop("trials_table")
    return path, o


@dataclass
class SessionCheck:
    """What :func:`checked_session` found.

    Attributes
    ----------
    problems : list of str
        Why :func:`load_session_data` would refuse the file, one line each.
    split : Split or None
        The split it would make (None when a check before it failed).
    plan : SpectrogramPlan or None
        Where the spectrogram would come from (None when that step failed).
    """

    problems: list[str]
    split: Split | None = None
    plan: SpectrogramPlan | None = None


def check_session(path: str | os.PathLike, *, scan_sound: bool = False, **options) -> list[str]:
    """Every problem :func:`load_session_data` would refuse ``path`` for, one line each.

    The ``problems`` of :func:`checked_session` (same parameters); empty when the file
    would load.
    """
    return checked_session(path, scan_sound=scan_sound, **options).problems


def checked_session(
    path: str | os.PathLike, *, scan_sound: bool = False, **options
) -> SessionCheck:
    """The checks of :func:`load_session_data`, reported: problems, split and plan.

    Runs the same checks as :func:`load_session_data` does before computing the
    spectrogram (units and spike times, trials and sound names, overlapping trials, sound
    layout and plan, memory of the spectrogram, spans, trial bins, split), continuing past
    a failing step wherever the later steps do not need its output. NaN/inf samples are
    found when the spectrogram is computed; with ``scan_sound`` a continuous sound is
    scanned for them here too (its first :data:`SCAN_LIMIT_SAMPLES` samples, in chunks).

    Parameters
    ----------
    path : path-like or str
        As for :func:`load_session_data`.
    scan_sound : bool, default False
        Scan a continuous sound for NaN/inf samples.
    **options
        The keyword options of :func:`load_session_data` (``sound_name``,
        ``spectrogram_settings``, ``min_repeats``, ``overlapping_trials``, ...), except
        ``chunk_s``.

    Returns
    -------
    SessionCheck
        ``problems`` is empty when :func:`load_session_data` would get as far as computing
        the spectrogram (and, with ``scan_sound``, the sound has no NaN/inf sample in the
        part scanned); ``split`` and ``plan`` are there when those steps passed.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    """
    path, opts = _options(path, options)
    problems: list[str] = []
    with open_nwb(path) as nwbfile:
        found = _checked_inputs(nwbfile, opts, problems)
        if scan_sound and found.plan is not None:
            nan = _scan_sound(nwbfile, found.plan, SCAN_LIMIT_SAMPLES)
            if nan is not None:
                problems.append(nan)
    return SessionCheck(problems, found.split, found.plan)


# long: a public function whose numpy docstring is 64 of its lines; the steps are calls
def load_session_data(
    path: str | os.PathLike,
    *,
    sound_name: str | None = None,
    sound_column: str | None = None,
    spectrogram_settings: SpectrogramSettings | None = None,
    min_repeats: int | None = None,
    holdout_fraction: float = 0.2,
    seed: int = 0,
    chunk_s: float = 60.0,
    reuse_spectrogram: bool = True,
    layout: str = "auto",
    sound_dir: str | os.PathLike | None = None,
    trials_table: str | None = None,
    validation_sounds: Sequence[str] | None = None,
    validation_fraction: float = 0.2,
    overlapping_trials: str = "error",
) -> SessionData:
    """Spectrogram, binned spikes, trials, split, validation PSTHs and noise ceilings.

    Parameters
    ----------
    path : path-like or str
        A local NWB file, an HTTP(S) URL or a DANDI asset spec (read lazily: only the
        datasets used here are transferred); opened read-only and never modified.
    sound_name : str, optional
        Name of the sound series when the file holds several candidates.
    sound_column : str, optional
        Trials column naming the sound; auto-detected (``sound_id``, ``stim_name``, ...).
    spectrogram_settings : SpectrogramSettings, optional
        Defaults to the reference settings.
    min_repeats : int, optional
        Validation threshold (default ``max(3, ceil(max_repeats / 2))``).
    holdout_fraction : float, default 0.2
        Fraction of estimation trials held out for early stopping (whole sounds).
    seed : int, default 0
        Seed of the holdout draw.
    chunk_s : float, default 60.0
        Seconds of sound per spectrogram chunk.
    reuse_spectrogram : bool, default True
        Reuse a stored spectrogram with the same settings.
    layout : str, default "auto"
        How the presented sound is stored: ``"auto"``, ``"continuous"``,
        ``"per-presentation"``, ``"templates"``, ``"sound-dir"`` or ``"stored"`` (see
        :mod:`nwb_subspace.io.sound`).
    sound_dir : path-like, optional
        Folder of ``<sound id>.wav`` files (``layout="sound-dir"``).
    trials_table : str, optional
        Interval table to read instead of ``trials`` (default: ``trials``, else ``epochs``).
    validation_sounds : sequence of str, optional
        The validation sounds by name; default: chosen from the repeat counts
        (:func:`nwb_subspace.stimulus.responses.split_trials`).
    validation_fraction : float, default 0.2
        Fraction of sounds drawn to validate when every sound is repeated or none is.
    overlapping_trials : {"error", "trim"}, default "error"
        Trials that overlap (by half a bin or more) are refused; ``"trim"`` ends each
        where the next one starts and drops those left empty, with a warning naming them
        (:func:`nwb_subspace.stimulus.responses.resolve_overlaps`). Either way no bin is
        ever in two parts of the split.

    Returns
    -------
    SessionData

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        No sound / ambiguous sound, no trials or sound column, sound not overlapping the
        spikes, trials outside the sound, a split that cannot be made (unknown validation
        sounds, fewer than 3 sounds to draw from), NaN/inf samples, a rate too
        low for ``f_min``, irregular sound timestamps, overlapping trials.
    InsufficientMemoryError
        The spectrogram would not fit in the memory available (a ``MemoryError`` and a
        ``ValueError``).

    See :func:`check_session` for the same checks, reported rather than raised.
    """
    path, opts = _options(
        path,
        {
            "sound_name": sound_name,
            "sound_column": sound_column,
            "spectrogram_settings": spectrogram_settings,
            "min_repeats": min_repeats,
            "holdout_fraction": holdout_fraction,
            "seed": seed,
            "reuse_spectrogram": reuse_spectrogram,
            "layout": layout,
            "sound_dir": sound_dir,
            "trials_table": trials_table,
            "validation_sounds": validation_sounds,
            "validation_fraction": validation_fraction,
            "overlapping_trials": overlapping_trials,
        },
    )
    with open_nwb(path) as nwbfile:
        found = _checked_inputs(nwbfile, opts, None)
        spikes, unit_ids, trials, plan = found.spikes, found.unit_ids, found.trials, found.plan
        bins, split = found.bins, found.split
        spec = plan.load(chunk_s)
    if spec.n_bins != plan.n_bins or not np.isclose(spec.rate, plan.rate):
        raise RuntimeError(  # internal consistency, not user input
            f"spectrogram has {spec.n_bins} bins at {spec.rate} Hz, planned {plan.n_bins} at "
            f"{plan.rate} Hz"
        )
    counts = bin_spikes(spikes, spec.n_bins, spec.rate, spec.starting_time)
    val = validation_psth(counts, trials, split, spec.rate, spec.starting_time)
    ceiling = noise_ceiling(list(val.values()))
    info = _session_info(path, plan.source, spec, counts, trials, split)
    return SessionData(
        path=str(path),
        spectrogram=spec,
        spectrogram_source=plan.source,
        counts=counts,
        unit_ids=unit_ids,
        trials=trials,
        trial_bins=bins,
        split=split,
        validation=val,
        noise_ceiling=ceiling,
        info=info,
    )
