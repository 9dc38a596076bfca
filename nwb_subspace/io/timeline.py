"""The session's sound assembled from sounds stored apart: one per presentation, templates
played at given onsets, or a folder of WAV files.

A :class:`Timeline` is the sound a continuous recording of the session would hold: silence
(zeros) between presentations, each presented sound placed at its onset sample. It is
never built in memory: it reads like an array (``timeline[a:b]``), producing the requested
samples from the stored sounds, and :meth:`Timeline.spectrogram` computes its spectrogram.

Clock
-----
The timeline starts on the bin grid of a continuous series starting at 0 s: its first sample
is sample ``start = floor(max(0, first onset - PAD_S) * fs / hop) * hop`` of the session
clock (``hop = round(bin_s * fs)``), so the spectrogram's bins coincide with those a
continuous recording would have. A presentation with onset ``t`` starts at session sample
``round(t * fs)``. The timeline ends ``PAD_S`` after the last presentation (or the last
trial's stop, if later), rounded up to whole bins.

Spectrogram
-----------
Each distinct stored sound is filtered once per sub-bin *phase* (onset sample modulo
``hop``): the sound preceded by ``phase`` zeros and followed by ``TAIL_S`` of silence (so
the filters' ringing after the offset is kept) gives a run of bins that is copied to every
onset bin of that (sound, phase). Bins no presentation reaches are silence, which the
compression maps to 0. This equals the spectrogram of the whole timeline (to float32
rounding: the filters have decayed by far more than float32 precision within ``TAIL_S``)
at a fraction of the cost when sounds repeat. When presentations follow each other too
closely for that (less than ``TAIL_S`` plus a bin apart), the whole timeline is filtered
instead, chunk by chunk.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nwb_subspace.stimulus.spectrogram import (
    Spectrogram,
    SpectrogramSettings,
    channel_used,
    compute_spectrogram,
    interval_rms,
    mix_channels,
)

__all__ = [
    "PAD_S",
    "TAIL_S",
    "Clip",
    "Placement",
    "ScaledData",
    "Timeline",
    "build_timeline",
    "read_wav",
    "sample_intervals",
]

#: Silence kept after each presented sound when it is filtered on its own (seconds).
TAIL_S = 0.25
#: Silence before the first and after the last presentation on the timeline (seconds).
PAD_S = 1.0


class ScaledData:
    """Lazy ``data * conversion + offset`` view of an (n,) or (n, n_channels) dataset."""

    def __init__(self, data: Any, conversion: float = 1.0, offset: float = 0.0) -> None:
        self.data = data
        self.conversion = float(conversion)
        self.offset = float(offset)
        self.shape = tuple(data.shape)

    def __getitem__(self, key: slice) -> np.ndarray:
        block = np.asarray(self.data[key], dtype=np.float64)
        if self.conversion != 1.0:
            block *= self.conversion
        if self.offset != 0.0:
            block += self.offset
        return block


@dataclass(frozen=True)
class Clip:
    """One stored sound.

    Attributes
    ----------
    key : str
        Identity: presentations of the same key play the same samples.
    label : str
        Where it is, for messages (``/stimulus/templates/a``, a file path).
    data : sliceable, shape (n_samples,) or (n_samples, n_channels)
        Samples in the file's units (e.g. a :class:`ScaledData`).
    rate : float
        Sampling rate in Hz.
    """

    key: str
    label: str
    data: Any
    rate: float

    @property
    def n_samples(self) -> int:
        return int(self.data.shape[0])

    @property
    def n_channels(self) -> int:
        shape = self.data.shape
        return int(shape[1]) if len(shape) == 2 else 1


@dataclass(frozen=True)
class Placement:
    """A clip played from timeline sample ``onset`` (``label`` says which presentation)."""

    clip: Clip
    onset: int
    label: str


def sample_intervals(start: np.ndarray, stop: np.ndarray, fs: float, first: int) -> np.ndarray:
    """``[start, stop)`` in seconds -> indices of the samples inside, counted from session
    sample ``first`` (sample ``k`` lies at ``k / fs``; one inside ``[a, b)`` has
    ``ceil(a * fs) <= k < ceil(b * fs)``, with a 1e-6 sample tolerance for rounding)."""
    a = np.ceil(np.asarray(start, dtype=np.float64) * fs - 1e-6).astype(np.int64)
    b = np.ceil(np.asarray(stop, dtype=np.float64) * fs - 1e-6).astype(np.int64)
    return np.stack([a - first, b - first], axis=1)


class _Padded:
    """``phase`` zeros, then a clip (one channel), then zeros up to ``n`` samples."""

    def __init__(self, clip: Clip, phase: int, n: int, channel: str | int) -> None:
        self.clip, self.phase, self.channel = clip, phase, channel
        self.shape = (n,)

    def __getitem__(self, key: slice) -> np.ndarray:
        a, b, _ = key.indices(self.shape[0])
        out = np.zeros(max(b - a, 0))
        lo, hi = max(a, self.phase), min(b, self.phase + self.clip.n_samples)
        if hi > lo:
            block = self.clip.data[lo - self.phase : hi - self.phase]
            out[lo - a : hi - a] = mix_channels(block, self.channel)
        return out


class Timeline:
    """The session's sound assembled from placed clips (read lazily, see the module notes).

    Parameters
    ----------
    placements : list of Placement
        Non-overlapping, any order (sorted here).
    fs : float
        Sampling rate shared by every clip.
    hop : int
        Samples per spectrogram bin.
    first : int
        Session sample of timeline sample 0 (a multiple of ``hop``).
    n_samples : int
        Length (a multiple of ``hop``).
    channel : "mean" or int
        How multi-channel clips are reduced (:func:`~nwb_subspace.stimulus.spectrogram.mix_channels`).
    """

    def __init__(
        self,
        placements: list[Placement],
        fs: float,
        hop: int,
        first: int,
        n_samples: int,
        channel: str | int = "mean",
    ) -> None:
        self.placements = sorted(placements, key=lambda p: p.onset)
        self.fs, self.hop, self.first = float(fs), int(hop), int(first)
        self.channel = channel
        self.shape = (int(n_samples),)
        self._onsets = np.array([p.onset for p in self.placements], dtype=np.int64)
        self._ends = self._onsets + [p.clip.n_samples for p in self.placements]

    @property
    def starting_time(self) -> float:
        """Session time of sample 0 (and of bin 0), in seconds."""
        return self.first / self.fs

    @property
    def n_channels(self) -> int:
        """Largest channel count among the clips."""
        return max(p.clip.n_channels for p in self.placements)

    def __getitem__(self, key: slice) -> np.ndarray:
        a, b, step = key.indices(self.shape[0])
        if step != 1:
            raise ValueError("a Timeline is read in contiguous slices")
        out = np.zeros(max(b - a, 0))
        # placements are sorted and do not overlap, so their ends are sorted too
        i = int(np.searchsorted(self._ends, a, side="right"))
        while i < len(self.placements) and self._onsets[i] < b:
            p = self.placements[i]
            lo, hi = max(a, p.onset), min(b, p.onset + p.clip.n_samples)
            if hi > lo:
                block = p.clip.data[lo - p.onset : hi - p.onset]
                out[lo - a : hi - a] = mix_channels(block, self.channel)
            i += 1
        return out

    def rms(self, presented: np.ndarray) -> float:
        """RMS over the presented samples (``[start, stop)`` timeline indices)."""
        return interval_rms(self, presented)[0]

    def spectrogram(
        self,
        settings: SpectrogramSettings,
        chunk_s: float = 60.0,
        presented: np.ndarray | None = None,
    ) -> Spectrogram:
        """Spectrogram of the timeline (see the module notes).

        Parameters
        ----------
        settings : SpectrogramSettings
        chunk_s : float, default 60.0
            Seconds of sound filtered at a time.
        presented : ndarray of int, shape (n, 2), optional
            ``[start, stop)`` timeline samples over which the RMS of ``level="rms"`` is
            measured; default: the placed clips.
        """
        for p in self.placements:
            if p.clip.n_channels > 1 and settings.channel != "mean":
                if not settings.channel < p.clip.n_channels:
                    raise ValueError(
                        f"channel={settings.channel!r} but {p.clip.label} has "
                        f"{p.clip.n_channels} channels; pass channel='mean' or a lower index"
                    )
        if presented is None:
            presented = np.stack([self._onsets, self._ends], axis=1)
        sound_rms = self.rms(presented) if settings.level == "rms" else None
        hop = self.hop
        n_bins = self.shape[0] // hop
        tail = int(math.ceil(TAIL_S * self.fs))
        windows = []  # (first bin, n bins) of each placement, filtered on its own
        for p in self.placements:
            phase = p.onset % hop
            windows.append((p.onset // hop, -(-(phase + p.clip.n_samples + tail) // hop)))
        starts = np.array([w[0] for w in windows])
        stops = starts + [w[1] for w in windows]
        separate = bool(np.all(starts[1:] >= stops[:-1])) and stops[-1] <= n_bins
        if not separate:  # too close together: filter the whole timeline
            spec = compute_spectrogram(
                self, self.fs, settings, chunk_s, self.starting_time, sound_rms=sound_rms
            )
        else:
            spec = self._by_clip(settings, chunk_s, sound_rms, windows, n_bins)
        spec.settings["channel_used"] = channel_used(settings.channel, self.n_channels)
        spec.settings["filtered"] = "per sound and phase" if separate else "whole timeline"
        return spec

    def _by_clip(
        self,
        settings: SpectrogramSettings,
        chunk_s: float,
        sound_rms: float | None,
        windows: list[tuple[int, int]],
        n_bins: int,
    ) -> Spectrogram:
        data = np.zeros((n_bins, settings.n_channels), dtype=np.float32)
        done: dict[tuple[str, int], Spectrogram] = {}
        spec = None
        for p, (b0, nb) in zip(self.placements, windows, strict=True):
            key = (p.clip.key, p.onset % self.hop)
            spec = done.get(key)
            if spec is None:
                piece = _Padded(p.clip, key[1], nb * self.hop, settings.channel)
                spec = compute_spectrogram(piece, self.fs, settings, chunk_s, sound_rms=sound_rms)
                done[key] = spec
            data[b0 : b0 + nb] = spec.data
        assert spec is not None  # a timeline has at least one placement
        return Spectrogram(
            data=data,
            frequencies=spec.frequencies,
            rate=spec.rate,
            starting_time=self.starting_time,
            settings=dict(spec.settings),
        )


def build_timeline(
    clips: list[Clip],
    onsets: np.ndarray,
    labels: list[str],
    settings: SpectrogramSettings,
    stops: np.ndarray | None = None,
) -> Timeline:
    """Place ``clips[i]`` at session time ``onsets[i]`` on a timeline.

    Parameters
    ----------
    clips : list of Clip
        The sound of each presentation (the same Clip may repeat).
    onsets : ndarray of float, shape (n,)
        Onset of each presentation, in session seconds.
    labels : list of str
        What each presentation is, for messages (e.g. ``"trials row 3 ('a')"``).
    settings : SpectrogramSettings
        Gives ``bin_s`` (the grid) and ``channel``.
    stops : ndarray of float, optional
        Times the timeline must reach (e.g. the trials' stop times).

    Raises
    ------
    ValueError
        No presentation, clips at different sampling rates, a negative onset, or
        overlapping presentations (naming the first two).
    """
    if not clips:
        raise ValueError("no presentation to place on the session timeline")
    rates = sorted({float(c.rate) for c in clips})
    if len(rates) > 1:
        by_rate = {r: next(c.label for c in clips if float(c.rate) == r) for r in rates}
        listed = ", ".join(f"{label} ({r:g} Hz)" for r, label in by_rate.items())
        raise ValueError(
            f"the presented sounds have different sampling rates: {listed}; resample them to "
            "one rate"
        )
    fs = rates[0]
    hop = int(round(settings.bin_s * fs))
    if hop < 1:
        raise ValueError(f"bin_s={settings.bin_s} s is shorter than one sample at {fs:g} Hz")
    onsets = np.asarray(onsets, dtype=np.float64)
    bad = ~np.isfinite(onsets) | (onsets < 0)
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"{labels[i]} has onset {onsets[i]!r}; onsets must be >= 0 s")
    samples = np.round(onsets * fs).astype(np.int64)
    first = int(math.floor(max(0.0, float(onsets.min()) - PAD_S) * fs / hop)) * hop
    ends = samples + [c.n_samples for c in clips]
    order = np.argsort(samples, kind="stable")
    for i, j in zip(order[:-1], order[1:], strict=True):
        if samples[j] < ends[i]:
            raise ValueError(
                f"presentations overlap: {labels[i]} plays {onsets[i]:.6f}-"
                f"{ends[i] / fs:.6f} s and {labels[j]} starts at {onsets[j]:.6f} s; a "
                "session's sound is assembled from non-overlapping presentations: check the "
                "onset times and the sounds' lengths"
            )
    last = int(ends.max())
    if stops is not None and len(stops):
        last = max(last, int(math.ceil(float(np.max(stops)) * fs)))
    n_bins = -(-(last + int(math.ceil(PAD_S * fs)) - first) // hop)
    placements = [
        Placement(clip, int(s) - first, label)
        for clip, s, label in zip(clips, samples, labels, strict=True)
    ]
    return Timeline(placements, fs, hop, first, n_bins * hop, settings.channel)


def read_wav(path: Path, key: str) -> Clip:
    """A WAV file as a :class:`Clip` (memory-mapped where possible; samples as stored:
    integers are not rescaled, so the level of ``level="none"`` is in counts)."""
    import scipy.io.wavfile

    try:
        try:
            rate, data = scipy.io.wavfile.read(str(path), mmap=True)
        except ValueError:  # 24-bit files cannot be memory-mapped
            rate, data = scipy.io.wavfile.read(str(path))
    except (OSError, ValueError) as err:
        raise ValueError(f"{path} could not be read as a WAV file: {err}") from None
    return Clip(key=key, label=str(path), data=data, rate=float(rate))
