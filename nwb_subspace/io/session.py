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
from nwb_subspace.io.sound import SpectrogramSource, plan_spectrogram
from nwb_subspace.io.trials import read_trials
from nwb_subspace.stimulus.responses import (
    Split,
    Trials,
    ValidationPSTH,
    bin_spikes,
    noise_ceiling,
    segments,
    split_trials,
    trial_bins,
    validation_psth,
)
from nwb_subspace.stimulus.spectrogram import Spectrogram, SpectrogramSettings

__all__ = ["SessionData", "load_session_data", "read_spike_times"]


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
        low for ``f_min``, irregular sound timestamps.
    """
    if not is_remote(path):
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no such NWB file: {path}")
    with open_nwb(path) as nwbfile:
        spikes, unit_ids = read_spike_times(nwbfile)
        trials = read_trials(nwbfile, sound_column=sound_column, table=trials_table)
        plan = plan_spectrogram(
            nwbfile,
            spectrogram_settings,
            sound_name,
            reuse_spectrogram,
            trials=trials,
            layout=layout,
            sound_dir=sound_dir,
        )
        # every check that needs only the spectrogram's clock runs before computing it
        _check_spans(spikes, trials, plan.span, str(plan.source))
        bins = trial_bins(trials, plan.rate, plan.starting_time, n_bins=plan.n_bins)
        split = split_trials(
            trials,
            min_repeats,
            holdout_fraction,
            seed,
            validation_sounds=validation_sounds,
            validation_fraction=validation_fraction,
        )
        spec = plan.load(chunk_s)
    if spec.n_bins != plan.n_bins or not np.isclose(spec.rate, plan.rate):
        raise RuntimeError(  # internal consistency, not user input
            f"spectrogram has {spec.n_bins} bins at {spec.rate} Hz, planned {plan.n_bins} at "
            f"{plan.rate} Hz"
        )
    counts = bin_spikes(spikes, spec.n_bins, spec.rate, spec.starting_time)
    val = validation_psth(counts, trials, split, spec.rate, spec.starting_time)
    ceiling = noise_ceiling(list(val.values()))
    info = {
        "path": str(path),
        "spectrogram_source": str(plan.source),
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
