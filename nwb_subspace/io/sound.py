"""Find the sound (or a stored spectrogram) in an open NWB file and load its spectrogram.

The sound is read lazily: :func:`load_spectrogram` hands the HDF5-backed dataset to
:func:`nwb_subspace.stimulus.compute_spectrogram`, which reads one chunk at a time, so a
long recording never sits in memory at once.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
from pynwb import NWBFile, TimeSeries

from ..ndx import Spectrogram as NWBSpectrogram
from ..stimulus import Spectrogram, SpectrogramSettings, compute_spectrogram, gammatone_filterbank

__all__ = [
    "MIN_SOUND_RATE",
    "SpectrogramPlan",
    "SpectrogramSource",
    "find_sound",
    "find_stored_spectrogram",
    "load_spectrogram",
    "plan_spectrogram",
    "sound_candidates",
]

#: Series sampled below this rate (Hz) are not considered sounds when choosing automatically.
MIN_SOUND_RATE = 8000.0

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
        Name of the sound series or of the stored spectrogram.
    path : str
        Its location in the file, e.g. ``/stimulus/presentation/sound``.
    neurodata_type : str
        Its neurodata type.
    """

    kind: str
    name: str
    path: str
    neurodata_type: str

    def __str__(self) -> str:
        verb = "computed from" if self.kind == "computed" else "stored at"
        return f"spectrogram {verb} {self.path} ({self.neurodata_type})"


def _type_names(obj: Any) -> list[str]:
    """neurodata type of ``obj`` and of its ancestors (by class, no extension imports)."""
    names = [getattr(obj, "neurodata_type", type(obj).__name__)]
    for cls in type(obj).__mro__:
        nt = cls.__dict__.get("neurodata_type")
        name = nt if isinstance(nt, str) else cls.__name__
        names.append(name)
    return names


def _path(obj: Any) -> str:
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


def _describe(ts: TimeSeries) -> str:
    rate = _series_rate(ts)
    shape = tuple(getattr(ts.data, "shape", ()) or np.shape(ts.data))
    rate_s = f"{rate:g} Hz" if rate is not None else "no rate"
    return f"{_path(ts)} ({ts.neurodata_type}, {rate_s}, shape {shape})"


def _sound_problem(ts: Any, min_rate: float | None) -> str | None:
    """Why ``ts`` is not usable as a sound (None if it is)."""
    types = _type_names(ts)
    if not isinstance(ts, TimeSeries) and not any(t in SOUND_TYPES for t in types):
        return f"is a {type(ts).__name__}, not a TimeSeries"
    if any(t in EXCLUDED_TYPES for t in types):
        return f"is a {types[0]}, not a sound waveform"
    if isinstance(ts, NWBSpectrogram):
        return "is a Spectrogram"
    shape = tuple(getattr(ts.data, "shape", ()) or np.shape(ts.data))
    if not (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)):
        return f"has data of shape {shape}, not one channel (n_samples,) or (n_samples, 1)"
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
        One-channel series at >= :data:`MIN_SOUND_RATE` in ``stimulus/presentation``,
        then ``acquisition`` (TimeSeries or ndx-sound ``AcousticWaveformSeries``).
    rejected : list of str
        One line per other series, saying why it was passed over.
    """
    candidates, rejected = [], []
    for where, pool in _pools(nwbfile):
        for name in sorted(pool):
            obj = pool[name]
            problem = _sound_problem(obj, MIN_SOUND_RATE)
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
    listing = [_describe(c) for c in candidates]
    if name is not None:
        if not isinstance(name, str):
            raise TypeError(f"sound name must be a str, got {name!r}")
        for _, pool in _pools(nwbfile):
            if name in pool:
                obj = pool[name]
                problem = _sound_problem(obj, None)
                if problem is not None:
                    raise ValueError(f"{_path(obj)} cannot be used as the sound: it {problem}")
                return obj
        raise ValueError(
            f"no series named {name!r} in stimulus/presentation or acquisition; "
            f"sound candidates: {listing or 'none'}"
            + (f"; other series: {rejected}" if rejected else "")
        )
    if not candidates:
        detail = f" Series passed over: {rejected}." if rejected else ""
        raise ValueError(
            "no sound found: no one-channel TimeSeries or AcousticWaveformSeries sampled at "
            f">= {MIN_SOUND_RATE:g} Hz in stimulus/presentation or acquisition.{detail} Add "
            "the sound waveform to the file (nwbfile.add_stimulus), name a series with "
            "sound_name=, or store a spectrogram."
        )
    if len(candidates) > 1:
        names = [c.name for c in candidates]
        raise ValueError(
            f"{len(candidates)} series could be the sound: {listing}; pass "
            f"sound_name=<one of {names}>"
        )
    return candidates[0]


def _stored_spectrograms(nwbfile: NWBFile) -> list[NWBSpectrogram]:
    found = [o for o in nwbfile.objects.values() if isinstance(o, NWBSpectrogram)]
    return sorted(found, key=_path)


def _settings_match(stored: dict, wanted: dict) -> bool:
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

    Returns
    -------
    Spectrogram (ndx) or None
        The first match in path order.
    """
    settings = settings or SpectrogramSettings()
    wanted = settings.to_dict()
    sound_name = sound.name if isinstance(sound, TimeSeries) else sound
    sound_rate = _series_rate(sound) if isinstance(sound, TimeSeries) else None
    for obj in _stored_spectrograms(nwbfile):
        try:
            stored = json.loads(obj.settings_json) if obj.settings_json else {}
        except (TypeError, ValueError):
            continue
        if not isinstance(stored, dict) or not _settings_match(stored, wanted):
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


class _ScaledData:
    """Lazy ``data * conversion + offset`` view of a 1-D (or (n, 1)) dataset."""

    def __init__(self, data: Any, conversion: float, offset: float) -> None:
        self.data = data
        self.conversion = conversion
        self.offset = offset
        self.shape = tuple(data.shape)

    def __getitem__(self, key: slice) -> np.ndarray:
        block = np.asarray(self.data[key], dtype=np.float64)
        if self.conversion != 1.0:
            block *= self.conversion
        if self.offset != 0.0:
            block += self.offset
        return block


def _regular_time_base(ts: TimeSeries) -> tuple[float, float]:
    """``(rate, starting_time)`` of a series; timestamps must be regular (checked in chunks)."""
    if ts.rate is not None:
        return float(ts.rate), float(ts.starting_time or 0.0)
    stamps = ts.timestamps
    n = len(stamps)
    t0 = float(stamps[0])
    rate = _series_rate(ts)
    if rate is None:
        raise ValueError(f"{_path(ts)} has timestamps that do not increase; cannot use it")
    period = 1.0 / rate
    for start in range(0, n, _TIMESTAMP_CHUNK):
        block = np.asarray(stamps[start : start + _TIMESTAMP_CHUNK], dtype=np.float64)
        ideal = t0 + np.arange(start, start + block.size) * period
        dev = np.abs(block - ideal)
        if dev.max() > 0.5 * period:
            i = start + int(np.argmax(dev))
            raise ValueError(
                f"{_path(ts)} has irregular timestamps: sample {i} is at {block[i - start]:.6f} s "
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
        ts = self._series
        data = _ScaledData(ts.data, float(ts.conversion), float(getattr(ts, "offset", 0.0)))
        try:
            spec = compute_spectrogram(
                data, self._rate, self._settings, chunk_s=chunk_s, starting_time=self._starting_time
            )
        except ValueError as err:  # name the series in the message (NaN/inf samples...)
            raise ValueError(f"{self.source.path}: {err}") from None
        spec.settings["source_sound"] = ts.name
        return spec


def plan_spectrogram(
    nwbfile: NWBFile,
    settings: SpectrogramSettings | None = None,
    sound_name: str | None = None,
    reuse: bool = True,
) -> SpectrogramPlan:
    """Resolve where the spectrogram comes from and check it can be computed, reading nothing
    but metadata (and, for a series with timestamps, the timestamps in chunks).

    See :func:`load_spectrogram` for the parameters and errors.
    """
    if settings is None:
        settings = SpectrogramSettings()
    if not isinstance(settings, SpectrogramSettings):
        raise TypeError(
            f"settings must be a SpectrogramSettings, got {type(settings).__name__}; build one "
            "with SpectrogramSettings(...) or SpectrogramSettings.from_dict(...)"
        )
    sound: TimeSeries | None = None
    sound_error: ValueError | None = None
    try:
        sound = find_sound(nwbfile, sound_name)
    except ValueError as err:
        if sound_name is not None or sound_candidates(nwbfile)[0]:
            raise  # a wrong name or several candidates: never fall back silently
        sound_error = err  # no sound at all: a stored spectrogram may still do
    if reuse:
        stored = find_stored_spectrogram(nwbfile, settings, sound if sound else sound_name)
        if stored is not None:
            rate = float(stored.rate)
            return SpectrogramPlan(
                source=SpectrogramSource("stored", stored.name, _path(stored), "Spectrogram"),
                starting_time=float(stored.starting_time or 0.0),
                rate=rate,
                n_bins=int(len(stored.data)),
                _series=stored,
                _settings=settings,
            )
    if sound is None:
        others = _stored_spectrograms(nwbfile)
        if others and reuse:
            listed = [f"{_path(o)}: {o.settings_json}" for o in others]
            raise ValueError(
                f"{sound_error} Stored spectrograms were found but none has the requested "
                f"settings {settings.to_dict()}: {listed}; pass matching spectrogram settings"
            ) from None
        raise sound_error  # type: ignore[misc]
    rate, t0 = _regular_time_base(sound)
    try:  # fail now, before reading samples, if the rate is too low for f_min
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            gammatone_filterbank(rate, settings)
    except ValueError as err:
        raise ValueError(f"{_path(sound)}: {err}") from None
    hop = int(round(settings.bin_s * rate))
    if hop < 1:
        raise ValueError(
            f"bin_s={settings.bin_s} s is shorter than one sample of {_path(sound)} "
            f"({rate:g} Hz); use a longer bin_s"
        )
    n_samples = int(sound.data.shape[0])
    return SpectrogramPlan(
        source=SpectrogramSource("computed", sound.name, _path(sound), sound.neurodata_type),
        starting_time=t0,
        rate=rate / hop,
        n_bins=n_samples // hop,
        _series=sound,
        _settings=settings,
        _rate=rate,
        _starting_time=t0,
    )


def load_spectrogram(
    nwbfile: NWBFile,
    settings: SpectrogramSettings | None = None,
    sound_name: str | None = None,
    chunk_s: float = 60.0,
    reuse: bool = True,
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
        Name of the sound series (see :func:`find_sound`).
    chunk_s : float, default 60.0
        Seconds of sound per chunk.
    reuse : bool, default True
        Reuse a stored ``Spectrogram`` whose recorded settings equal ``settings`` (see
        :func:`find_stored_spectrogram`) instead of recomputing.

    Returns
    -------
    spectrogram : nwb_subspace.stimulus.Spectrogram
        On the session clock: the sound's ``starting_time`` (or first timestamp), samples
        scaled by the series' ``conversion`` and ``offset``.
    source : SpectrogramSource
        What it was computed from or read from.

    Raises
    ------
    ValueError
        No sound / several candidates (see :func:`find_sound`), irregular timestamps, a
        sampling rate too low for ``f_min``, non-finite samples (naming the index).

    Warns
    -----
    UserWarning
        When ``f_max`` is capped below the Nyquist frequency.
    """
    plan = plan_spectrogram(nwbfile, settings, sound_name, reuse)
    return plan.load(chunk_s), plan.source
