"""Find the sound (or a stored spectrogram) in an open NWB file and load its spectrogram.

Layouts
-------
The sound presented in the trials may be stored in one of five ways (``layout``):

- ``"continuous"``: one series (``TimeSeries`` or ndx-sound ``AcousticWaveformSeries``) of
  the whole session in ``stimulus/presentation`` or ``acquisition``;
- ``"per-presentation"``: one such series per presentation, each with its own
  ``starting_time`` (as NeuroConv's ``AudioInterface`` writes one series per WAV file);
- ``"templates"``: each distinct sound once in ``stimulus/templates``
  (``nwbfile.add_stimulus_template``), named by the trials' sound column and played at
  the trials' start times; or played at the ``timestamps`` of an ``IndexSeries`` in
  ``stimulus/presentation`` whose ``data`` index the templates *sorted by name* (its
  ``indexed_timeseries`` / ``indexed_images`` link is not used);
- ``"sound-dir"``: a folder of WAV files named ``<sound id>.wav`` after the trials' sound
  column, played at the trials' start times;
- ``"stored"``: a ``Spectrogram`` stored in the file (e.g. by an earlier run).

``layout="auto"`` chooses when the file makes it unambiguous
(:func:`nwb_subspace.io.sound_layouts.detect_layout`). The other sound layouts are
assembled into the session's sound on a timeline (:mod:`nwb_subspace.io.timeline`):
silence between presentations, bins on the grid of a continuous series starting at 0 s.

The sound is read lazily: :func:`load_spectrogram` hands the HDF5-backed dataset to
:func:`nwb_subspace.stimulus.spectrogram.compute_spectrogram`, which reads one chunk at a time, so a
long recording never sits in memory at once. With ``level="rms"`` (the default) the
presented samples are read twice: once for their RMS, once for the filterbank.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pynwb import NWBFile, TimeSeries

from nwb_subspace.io.timeline import Clip, ScaledData, Timeline, build_timeline, sample_intervals
from nwb_subspace.ndx import Spectrogram as NWBSpectrogram
from nwb_subspace.stimulus.responses import Trials
from nwb_subspace.stimulus.spectrogram import (
    Spectrogram,
    SpectrogramSettings,
    compute_spectrogram,
    gammatone_filterbank,
)

__all__ = [
    "LAYOUTS",
    "MIN_SOUND_RATE",
    "SpectrogramPlan",
    "SpectrogramSource",
    "describe_series",
    "find_sound",
    "find_stored_spectrogram",
    "load_spectrogram",
    "object_path",
    "plan_spectrogram",
    "regular_time_base",
    "settings_match",
    "sound_candidates",
    "sound_problem",
    "stored_spectrograms",
    "type_names",
]

#: Series sampled below this rate (Hz) are not considered sounds when choosing automatically.
MIN_SOUND_RATE = 8000.0
#: Series with more channels are not considered sounds when choosing automatically.
MAX_SOUND_CHANNELS = 8
#: Values of ``layout`` (see the module notes).
LAYOUTS = ("auto", "continuous", "per-presentation", "templates", "sound-dir", "stored")

#: neurodata types of sound waveforms recognised by name (ndx-sound is not imported).
SOUND_TYPES = ("AcousticWaveformSeries",)

#: TimeSeries types that are never sounds.
EXCLUDED_TYPES = (
    "ElectricalSeries",
    "SpikeEventSeries",
    "Spectrogram",
    "ImageSeries",
    "OnePhotonSeries",
    "TwoPhotonSeries",
    "SpatialSeries",
    "IndexSeries",
)

_TIMESTAMP_CHUNK = 1_000_000


@dataclass(frozen=True)
class SpectrogramSource:
    """Where a spectrogram came from.

    Attributes
    ----------
    kind : {"computed", "stored"}
        Computed from a sound, or a stored ``Spectrogram`` reused as is.
    name : str
        Name of the sound series or of the stored spectrogram (for the other layouts: a
        summary such as ``sound_0001..sound_0030``, ``templates`` or the folder's name).
    path : str
        Its location in the file, e.g. ``/stimulus/presentation/sound``
        (``/stimulus/templates``, the folder of a ``sound-dir``).
    neurodata_type : str
        Its neurodata type (of the first series for several).
    layout : str, default "continuous"
        One of :data:`LAYOUTS` other than ``"auto"`` (``"stored"`` for a stored one).
    detail : str, default ""
        What the sound was assembled from, in words (layouts other than continuous).
    """

    kind: str
    name: str
    path: str
    neurodata_type: str
    layout: str = "continuous"
    detail: str = ""

    def __str__(self) -> str:
        if self.kind == "stored":
            return f"spectrogram stored at {self.path} ({self.neurodata_type})"
        if self.layout == "continuous" or not self.detail:
            return f"spectrogram computed from {self.path} ({self.neurodata_type})"
        return f"spectrogram computed from {self.detail} (layout {self.layout})"


def type_names(obj: Any) -> list[str]:
    """neurodata type of ``obj`` and of its ancestors (by class, no extension imports)."""
    names = [getattr(obj, "neurodata_type", type(obj).__name__)]
    for cls in type(obj).__mro__:
        nt = cls.__dict__.get("neurodata_type")
        name = nt if isinstance(nt, str) else cls.__name__
        names.append(name)
    return names


def object_path(obj: Any) -> str:
    parts = []
    node = obj
    while node is not None and not isinstance(node, NWBFile):
        parts.append(node.name)
        node = getattr(node, "parent", None)
    if isinstance(obj, TimeSeries) and len(parts) == 1 and node is not None:
        if obj.name in node.stimulus and node.stimulus[obj.name] is obj:
            return f"/stimulus/presentation/{obj.name}"
        if obj.name in node.acquisition and node.acquisition[obj.name] is obj:
            return f"/acquisition/{obj.name}"
    if isinstance(node, NWBFile) and len(parts) >= 2 and parts[-1] in node.processing:
        return "/processing/" + "/".join(reversed(parts))
    return "/" + "/".join(reversed(parts))


def _series_rate(ts: TimeSeries) -> float | None:
    """Sampling rate from ``rate``, or from the first/last timestamp (without reading all)."""
    if ts.rate is not None:
        return float(ts.rate)
    stamps = ts.timestamps
    if stamps is None or len(stamps) < 2:
        return None
    n = len(stamps)
    span = float(stamps[n - 1]) - float(stamps[0])
    return (n - 1) / span if span > 0 else None


def describe_series(ts: TimeSeries) -> str:
    rate = _series_rate(ts)
    shape = tuple(getattr(ts.data, "shape", ()) or np.shape(ts.data))
    rate_s = f"{rate:g} Hz" if rate is not None else "no rate"
    return f"{object_path(ts)} ({ts.neurodata_type}, {rate_s}, shape {shape})"


def sound_problem(ts: Any, min_rate: float | None) -> str | None:
    """Why ``ts`` is not usable as a sound (None if it is)."""
    types = type_names(ts)
    if not isinstance(ts, TimeSeries) and not any(t in SOUND_TYPES for t in types):
        return f"is a {type(ts).__name__}, not a TimeSeries"
    if any(t in EXCLUDED_TYPES for t in types):
        return f"is a {types[0]}, not a sound waveform"
    if isinstance(ts, NWBSpectrogram):
        return "is a Spectrogram"
    shape = tuple(getattr(ts.data, "shape", ()) or np.shape(ts.data))
    if not (len(shape) == 1 or (len(shape) == 2 and shape[1] >= 1)):
        return f"has data of shape {shape}, not (n_samples,) or (n_samples, n_channels)"
    if min_rate is not None and len(shape) == 2 and shape[1] > MAX_SOUND_CHANNELS:
        return f"has {shape[1]} channels (a sound has at most {MAX_SOUND_CHANNELS})"
    if shape[0] < 2:
        return f"has {shape[0]} sample(s)"
    rate = _series_rate(ts)
    if rate is None:
        return "has neither a sampling rate nor increasing timestamps"
    if min_rate is not None and rate < min_rate:
        return f"is sampled at {rate:g} Hz, below {min_rate:g} Hz"
    return None


def _pools(nwbfile: NWBFile) -> list[tuple[str, dict]]:
    return [("stimulus/presentation", nwbfile.stimulus), ("acquisition", nwbfile.acquisition)]


def sound_candidates(nwbfile: NWBFile) -> tuple[list[TimeSeries], list[str]]:
    """Series that look like a sound, and why the other series do not.

    Returns
    -------
    candidates : list of TimeSeries
        Series of up to :data:`MAX_SOUND_CHANNELS` channels at >= :data:`MIN_SOUND_RATE`
        in ``stimulus/presentation``, then ``acquisition`` (TimeSeries or ndx-sound
        ``AcousticWaveformSeries``).
    rejected : list of str
        One line per other series, saying why it was passed over.
    """
    candidates, rejected = [], []
    for where, pool in _pools(nwbfile):
        for name in sorted(pool):
            obj = pool[name]
            problem = sound_problem(obj, MIN_SOUND_RATE)
            if problem is None:
                candidates.append(obj)
            else:
                rejected.append(f"/{where}/{name} {problem}")
    return candidates, rejected


def find_sound(nwbfile: NWBFile, name: str | None = None) -> TimeSeries:
    """The sound waveform series of a file.

    Parameters
    ----------
    nwbfile : NWBFile
        An open file.
    name : str, optional
        Name of the series in ``stimulus/presentation`` (looked up first) or
        ``acquisition``. Without it the single candidate of :func:`sound_candidates` is
        taken. A named series may be sampled below :data:`MIN_SOUND_RATE`.

    Returns
    -------
    TimeSeries
        The series (data still on disk).

    Raises
    ------
    ValueError
        No sound, several candidates and no ``name``, or ``name`` not found / not usable.
        The message lists the candidates.
    """
    candidates, rejected = sound_candidates(nwbfile)
    listing = [describe_series(c) for c in candidates]
    if name is not None:
        if not isinstance(name, str):
            raise TypeError(f"sound name must be a str, got {name!r}")
        for _, pool in _pools(nwbfile):
            if name in pool:
                obj = pool[name]
                problem = sound_problem(obj, None)
                if problem is not None:
                    raise ValueError(
                        f"{object_path(obj)} cannot be used as the sound: it {problem}"
                    )
                return obj
        raise ValueError(
            f"no series named {name!r} in stimulus/presentation or acquisition; "
            f"sound candidates: {listing or 'none'}"
            + (f"; other series: {rejected}" if rejected else "")
        )
    if not candidates:
        detail = f" Series passed over: {rejected}." if rejected else ""
        raise ValueError(
            "no sound found: no TimeSeries or AcousticWaveformSeries sampled at "
            f">= {MIN_SOUND_RATE:g} Hz in stimulus/presentation or acquisition, and no sound "
            f"templates in stimulus/templates.{detail} Add the sound waveform to the file "
            "(nwbfile.add_stimulus), name a series with sound_name=, store each sound once "
            "as a template named by the trials' sound column (nwbfile.add_stimulus_template), "
            "pass a folder of <sound id>.wav files (layout='sound-dir', sound_dir=), or store "
            "a spectrogram."
        )
    if len(candidates) > 1:
        names = [c.name for c in candidates]
        raise ValueError(
            f"{len(candidates)} series could be the sound: {listing}; pass "
            f"sound_name=<one of {names}> (layout='continuous'), or layout='per-presentation' "
            "if each series holds one presentation ([session] layout / sound_name)"
        )
    return candidates[0]


def stored_spectrograms(nwbfile: NWBFile) -> list[NWBSpectrogram]:
    found = [o for o in nwbfile.objects.values() if isinstance(o, NWBSpectrogram)]
    return sorted(found, key=object_path)


def settings_match(stored: dict, wanted: dict) -> bool:
    for key, value in wanted.items():
        if key not in stored:
            return False
        other = stored[key]
        if isinstance(value, float) or isinstance(other, float):
            try:
                if not math.isclose(float(value), float(other), rel_tol=1e-9, abs_tol=1e-12):
                    return False
            except (TypeError, ValueError):
                return False
        elif value != other:
            return False
    return True


def find_stored_spectrogram(
    nwbfile: NWBFile,
    settings: SpectrogramSettings | None = None,
    sound: TimeSeries | str | None = None,
    layout: str | None = None,
) -> NWBSpectrogram | None:
    """A stored ``Spectrogram`` computed with ``settings`` (from ``sound``), or None.

    Parameters
    ----------
    nwbfile : NWBFile
        An open file; every ``Spectrogram`` in it (e.g. in ``/processing/misc/<run>``) is
        considered.
    settings : SpectrogramSettings, optional
        Defaults to ``SpectrogramSettings()``. Every setting must equal the one recorded in
        the stored object's ``settings_json``.
    sound : TimeSeries or str, optional
        When given, the stored spectrogram must have been computed from this sound: its
        ``source_sound`` link (if any) must name it and its recorded ``fs`` (if any) must
        equal the sound's rate.
    layout : str, optional
        When given, the stored spectrogram must have been computed from a sound of this
        layout (its recorded ``layout``; one without the record counts as
        ``"continuous"``).

    Returns
    -------
    Spectrogram (ndx) or None
        The first match in path order.
    """
    settings = settings or SpectrogramSettings()
    wanted = settings.to_dict()
    sound_name = sound.name if isinstance(sound, TimeSeries) else sound
    sound_rate = _series_rate(sound) if isinstance(sound, TimeSeries) else None
    for obj in stored_spectrograms(nwbfile):
        try:
            stored = json.loads(obj.settings_json) if obj.settings_json else {}
        except (TypeError, ValueError):
            continue
        if not isinstance(stored, dict) or not settings_match(stored, wanted):
            continue
        if layout is not None and stored.get("layout", "continuous") != layout:
            continue
        if sound_name is not None:
            link = obj.source_sound
            if link is not None and link.name != sound_name:
                continue
            fs = stored.get("fs")
            if sound_rate is not None and fs is not None and not math.isclose(fs, sound_rate):
                continue
        return obj
    return None


def regular_time_base(ts: TimeSeries) -> tuple[float, float]:
    """``(rate, starting_time)`` of a series; timestamps must be regular (checked in chunks)."""
    if ts.rate is not None:
        return float(ts.rate), float(ts.starting_time or 0.0)
    stamps = ts.timestamps
    n = len(stamps)
    t0 = float(stamps[0])
    rate = _series_rate(ts)
    if rate is None:
        raise ValueError(f"{object_path(ts)} has timestamps that do not increase; cannot use it")
    period = 1.0 / rate
    for start in range(0, n, _TIMESTAMP_CHUNK):
        block = np.asarray(stamps[start : start + _TIMESTAMP_CHUNK], dtype=np.float64)
        ideal = t0 + np.arange(start, start + block.size) * period
        dev = np.abs(block - ideal)
        if dev.max() > 0.5 * period:
            i = start + int(np.argmax(dev))
            raise ValueError(
                f"{object_path(ts)} has irregular timestamps: sample {i} is at {block[i - start]:.6f} s "
                f"but a regular {rate:g} Hz clock from {t0:.6f} s puts it at "
                f"{ideal[i - start]:.6f} s; a spectrogram needs a continuous, regularly sampled "
                "sound: resample it onto a regular clock and store it with rate= and "
                "starting_time="
            )
    return rate, t0


@dataclass
class SpectrogramPlan:
    """A resolved spectrogram source, before any sample is read.

    Attributes
    ----------
    source : SpectrogramSource
    starting_time : float
        Session time of bin 0.
    rate : float
        Bins per second of the spectrogram it will give.
    n_bins : int
        Number of bins it will have.
    """

    source: SpectrogramSource
    starting_time: float
    rate: float
    n_bins: int
    _series: Any
    _settings: SpectrogramSettings
    _rate: float | None = None
    _starting_time: float | None = None
    _presented: np.ndarray | None = None
    _timeline: Timeline | None = None

    @property
    def layout(self) -> str:
        """Layout the spectrogram comes from (see :data:`LAYOUTS`)."""
        return self.source.layout

    @property
    def span(self) -> tuple[float, float]:
        """``(start, stop)`` of the spectrogram in session seconds."""
        return self.starting_time, self.starting_time + self.n_bins / self.rate

    def load(self, chunk_s: float = 60.0) -> Spectrogram:
        """Read the stored spectrogram, or compute it chunk by chunk from the sound."""
        if self.source.kind == "stored":
            obj = self._series
            settings = json.loads(obj.settings_json) if obj.settings_json else {}
            return Spectrogram(
                data=np.asarray(obj.data[:], dtype=np.float32),
                frequencies=np.asarray(obj.frequencies[:], dtype=np.float64),
                rate=float(obj.rate),
                starting_time=float(obj.starting_time or 0.0),
                settings=settings,
            )
        try:
            if self._timeline is not None:
                spec = self._timeline.spectrogram(self._settings, chunk_s, self._presented)
                spec.settings["n_presentations"] = len(self._timeline.placements)
            else:
                ts = self._series
                data = ScaledData(ts.data, ts.conversion, getattr(ts, "offset", 0.0))
                spec = compute_spectrogram(
                    data,
                    self._rate,
                    self._settings,
                    chunk_s=chunk_s,
                    starting_time=self._starting_time,
                    presented=self._presented,
                )
        except ValueError as err:  # name the source in the message (NaN/inf samples...)
            raise ValueError(f"{self.source.path}: {err}") from None
        spec.settings["source_sound"] = self.source.name
        spec.settings["layout"] = self.source.layout
        return spec


def _check_rate(rate: float, settings: SpectrogramSettings, where: str) -> int:
    """Fail before reading samples if the rate is too low for f_min; return the hop."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            gammatone_filterbank(rate, settings)
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from None
    hop = int(round(settings.bin_s * rate))
    if hop < 1:
        raise ValueError(
            f"bin_s={settings.bin_s} s is shorter than one sample of {where} ({rate:g} Hz); "
            "use a longer bin_s"
        )
    return hop


def _stored_plan(stored: NWBSpectrogram, settings: SpectrogramSettings) -> SpectrogramPlan:
    return SpectrogramPlan(
        source=SpectrogramSource(
            "stored", stored.name, object_path(stored), "Spectrogram", "stored"
        ),
        starting_time=float(stored.starting_time or 0.0),
        rate=float(stored.rate),
        n_bins=int(len(stored.data)),
        _series=stored,
        _settings=settings,
    )


def _continuous_plan(
    sound: TimeSeries, settings: SpectrogramSettings, trials: Trials | None
) -> SpectrogramPlan:
    rate, t0 = regular_time_base(sound)
    hop = _check_rate(rate, settings, object_path(sound))
    n_samples = int(sound.data.shape[0])
    presented = None
    if trials is not None:
        presented = sample_intervals(trials.start - t0, trials.stop - t0, rate, 0)
        inside = np.clip(presented, 0, n_samples)
        if settings.level == "rms" and not np.any(inside[:, 1] > inside[:, 0]):
            raise ValueError(
                f"no {trials.table} row lies inside the sound {object_path(sound)} ({t0:.3f}-"
                f"{t0 + n_samples / rate:.3f} s; the trials span {trials.start.min():.3f}-"
                f"{trials.stop.max():.3f} s), so its presented level cannot be measured: check "
                "that the sound and the trials are on the same clock"
            )
    return SpectrogramPlan(
        source=SpectrogramSource(
            "computed", sound.name, object_path(sound), sound.neurodata_type, "continuous"
        ),
        starting_time=t0,
        rate=rate / hop,
        n_bins=n_samples // hop,
        _series=sound,
        _settings=settings,
        _rate=rate,
        _starting_time=t0,
        _presented=presented,
    )


def _timeline_plan(
    parts: tuple[list[Clip], np.ndarray, list[str], SpectrogramSource],
    settings: SpectrogramSettings,
    trials: Trials | None,
) -> SpectrogramPlan:
    clips, onsets, labels, source = parts
    stops = trials.stop if trials is not None else None
    timeline = build_timeline(clips, onsets, labels, settings, stops)
    _check_rate(timeline.fs, settings, source.path)
    presented = None
    if trials is not None:
        presented = sample_intervals(trials.start, trials.stop, timeline.fs, timeline.first)
    return SpectrogramPlan(
        source=source,
        starting_time=timeline.starting_time,
        rate=timeline.fs / timeline.hop,
        n_bins=timeline.shape[0] // timeline.hop,
        _series=None,
        _settings=settings,
        _presented=presented,
        _timeline=timeline,
    )


def plan_spectrogram(
    nwbfile: NWBFile,
    settings: SpectrogramSettings | None = None,
    sound_name: str | None = None,
    reuse: bool = True,
    *,
    trials: Trials | None = None,
    layout: str = "auto",
    sound_dir: str | Path | None = None,
) -> SpectrogramPlan:
    """Resolve where the spectrogram comes from and check it can be computed, reading nothing
    but metadata (and, for a series with timestamps, the timestamps in chunks).

    See :func:`load_spectrogram` for the parameters and errors.
    """
    from nwb_subspace.io import sound_layouts as lay  # imports this module: not at the top

    if settings is None:
        settings = SpectrogramSettings()
    if not isinstance(settings, SpectrogramSettings):
        raise TypeError(
            f"settings must be a SpectrogramSettings, got {type(settings).__name__}; build one "
            "with SpectrogramSettings(...) or SpectrogramSettings.from_dict(...)"
        )
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {list(LAYOUTS)}, got {layout!r}")
    if trials is not None and not isinstance(trials, Trials):
        raise TypeError(f"trials must be a nwb_subspace.stimulus.responses.Trials, got {trials!r}")
    if sound_dir is not None and layout not in ("auto", "sound-dir"):
        raise ValueError(
            f"sound_dir is given but layout={layout!r}; sound_dir is read by "
            "layout='sound-dir' only ([session] layout / sound_dir)"
        )
    if layout == "auto":
        if sound_dir is not None:
            layout = "sound-dir"
        elif sound_name is not None:
            layout = "continuous"
        else:
            found, why = lay.detect_layout(nwbfile, trials, settings.bin_s)
            if found is None:
                if sound_candidates(nwbfile)[0] or not lay.template_series(nwbfile, None):
                    find_sound(nwbfile)  # raises its message (several series / no sound)
                raise ValueError(f"{why} (or pass layout=...; [session] layout)")
            layout = found
    sound = find_sound(nwbfile, sound_name) if layout == "continuous" else None
    if reuse or layout == "stored":
        link = sound if sound is not None else (sound_name if layout == "continuous" else None)
        wanted = None if layout == "stored" else layout
        stored = find_stored_spectrogram(nwbfile, settings, link, layout=wanted)
        if stored is not None:
            return _stored_plan(stored, settings)
    if layout == "stored":
        others = stored_spectrograms(nwbfile)
        listed = [f"{object_path(o)}: {o.settings_json}" for o in others]
        if not others:
            find_sound(nwbfile)  # no sound either: its message says what to add
            raise ValueError("layout='stored' but the file holds no stored Spectrogram")
        raise ValueError(
            f"no sound found. Stored spectrograms were found but none has the requested "
            f"settings {settings.to_dict()}: {listed}; pass matching spectrogram settings"
        )
    if sound is not None:
        return _continuous_plan(sound, settings, trials)
    if layout == "per-presentation":
        parts = lay.per_presentation(nwbfile, sound_name, trials)
    elif layout == "templates":
        parts = lay.from_templates(nwbfile, sound_name, trials)
    else:
        parts = lay.from_sound_dir(sound_dir, trials)
    return _timeline_plan(parts, settings, trials)


def load_spectrogram(
    nwbfile: NWBFile,
    settings: SpectrogramSettings | None = None,
    sound_name: str | None = None,
    chunk_s: float = 60.0,
    reuse: bool = True,
    *,
    trials: Trials | None = None,
    layout: str = "auto",
    sound_dir: str | Path | None = None,
) -> tuple[Spectrogram, SpectrogramSource]:
    """The spectrogram of the file's sound: a stored one if it matches, else computed.

    Parameters
    ----------
    nwbfile : NWBFile
        A file opened for reading; the sound stays on disk and is read ``chunk_s`` seconds
        at a time.
    settings : SpectrogramSettings, optional
        Defaults to the reference settings (``SpectrogramSettings()``).
    sound_name : str, optional
        Name of the sound series (see :func:`find_sound`); with
        ``layout="per-presentation"`` a prefix of the presentation series' names; with
        ``layout="templates"`` the ``IndexSeries`` giving the presentation times.
    chunk_s : float, default 60.0
        Seconds of sound per chunk.
    reuse : bool, default True
        Reuse a stored ``Spectrogram`` whose recorded settings (and layout) equal
        ``settings`` (see :func:`find_stored_spectrogram`) instead of recomputing.
    trials : Trials, optional
        The presentations. With ``level="rms"`` the RMS is measured over the samples inside
        them (without trials: over the whole continuous sound, or over the placed sounds);
        ``"templates"`` and ``"sound-dir"`` play the sound the trials name at their start
        times; ``"auto"`` recognises one series per presentation by comparing their starts.
    layout : str, default "auto"
        One of :data:`LAYOUTS` (see the module notes).
    sound_dir : str or Path, optional
        Folder of ``<sound id>.wav`` files (implies ``layout="sound-dir"``).

    Returns
    -------
    spectrogram : nwb_subspace.stimulus.spectrogram.Spectrogram
        On the session clock: the sound's ``starting_time`` (or first timestamp), samples
        scaled by the series' ``conversion`` and ``offset``; for the assembled layouts, a
        timeline starting on the bin grid of a continuous series starting at 0 s.
        ``settings`` records ``layout``, ``source_sound``, ``sound_rms``, ``level_gain``
        and ``channel_used`` besides the settings.
    source : SpectrogramSource
        What it was computed from or read from (``source.layout`` says the layout).

    Raises
    ------
    ValueError
        No sound / several candidates (see :func:`find_sound`), a layout the file does not
        hold, overlapping presentations, missing templates or WAV files, irregular
        timestamps, a sampling rate too low for ``f_min``, non-finite samples (naming the
        index), a silent presented sound or no presentation inside the sound (with
        ``level="rms"``).

    Warns
    -----
    UserWarning
        When ``f_max`` is capped below the Nyquist frequency.
    """
    plan = plan_spectrogram(
        nwbfile, settings, sound_name, reuse, trials=trials, layout=layout, sound_dir=sound_dir
    )
    return plan.load(chunk_s), plan.source
