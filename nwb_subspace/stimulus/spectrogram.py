"""Sound waveform -> compressed gammatone spectrogram (pure numerics, no file I/O).

The reference representation (docs/methods.md, "Spectrogram") is a gammatone filterbank of 32
log-spaced channels from 200 Hz to 20 kHz, read out in 10 ms bins (window = hop = 10 ms,
100 Hz), compressed as ``log((x + 0.1) / 0.1)``.

What is computed, exactly
-------------------------
0. channels: a multi-channel sound ``(n_samples, n_channels)`` is reduced to one channel
   first, the mean of the channels (``channel="mean"``) or one of them (``channel=k``);
1. level (``level="rms"``, the default): the waveform ``w`` is multiplied by
   ``g = reference_rms / rms``, where ``rms = sqrt(mean(w[t] ** 2))`` over the *presented*
   samples only (those inside the presentation intervals; a sound presented 20 times
   counts 20 times; by default every sample is presented). The filterbank is linear, so
   this is the same as scaling the channel amplitudes by ``g`` before compression: the
   result no longer depends on the file's number format (int16 counts or float in
   [-1, 1]) or the recording gain. With ``reference_rms = 0.3`` and ``log_offset = 0.1``
   a typical sound sits at the knee of the log. ``level="none"`` skips this step (``g =
   1``, amplitudes in the waveform's units). The measured ``rms`` and ``g`` are recorded
   as ``sound_rms`` and ``level_gain`` in :attr:`Spectrogram.settings`. Measuring the RMS
   is a first pass over the presented samples, before the filterbank pass, so a sound
   on disk is read twice (chunk by chunk both times);
2. power: for channel ``c`` with filter output ``y_c(t)`` (of ``g * w``) and bin ``i``
   covering the samples ``[i * hop, (i + 1) * hop)``, ``p = mean(y_c[t] ** 2)`` over the
   bin's samples;
3. "RMS-amplitude^0.5 step": ``x = p ** 0.5`` (the RMS amplitude of the filter output
   in the bin);
4. compression: ``log((x + offset) / offset)`` with ``offset = 0.1`` (natural log), so that
   silence maps to 0 (up to 1e-13, see below) and loud bins grow logarithmically.

The trailing partial bin (fewer than ``hop`` samples at the end of the waveform) is dropped.

Filters
-------
The filters are designed with :func:`scipy.signal.gammatone` (``ftype='iir'``), which
returns a transfer function ``(b, a)`` of order 8 whose denominator is the fourth power of
one second-order pole pair. At low centre frequencies and audio sampling rates that
transfer function is numerically unstable in direct form (a four-fold pole next to the
unit circle; at 200 Hz and 44.1 kHz its float64 roots lie *outside* the unit circle). We
therefore recover the pole pair exactly from scipy's ``a`` (``a = p**4``), take the zeros
from scipy's ``b`` and filter with the equivalent cascade of second-order sections
(:func:`scipy.signal.sosfilt`). Where the direct form is stable (about >= 1 kHz at 44.1 kHz)
both agree to float precision; the unit gain at the centre frequency is kept.

A constant of 1e-12 (``DENORMAL_GUARD``) is added to the input before filtering. During
silence, IIR filter states otherwise decay into subnormal floats, which makes filtering
about 50 times slower; the filters have no gain at DC, so the guard changes channel
amplitudes by less than 1e-13.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import scipy.signal

from nwb_subspace.progress import track

__all__ = [
    "DENORMAL_GUARD",
    "NYQUIST_FRACTION",
    "Spectrogram",
    "SpectrogramSettings",
    "channel_used",
    "compute_spectrogram",
    "gammatone_filterbank",
    "gammatone_sos",
    "interval_rms",
    "level_gain",
    "mix_channels",
]

#: The top centre frequency is capped at this fraction of the Nyquist frequency.
NYQUIST_FRACTION = 0.95
#: Added to every sample before filtering, to keep filter states out of subnormal floats.
DENORMAL_GUARD = 1e-12

_COMPRESSIONS = ("log", "none")
_FILTERBANKS = ("gammatone",)
_LEVELS = ("rms", "none")
#: Samples read at a time by :func:`interval_rms` (60 s at 44.1 kHz).
_RMS_CHUNK = 2_646_000


@dataclass(frozen=True)
class SpectrogramSettings:
    """Every setting of the spectrogram (stored with results so they can be reproduced).

    Parameters
    ----------
    n_channels : int, default 32
        Number of filterbank channels.
    f_min, f_max : float, default 200.0, 20000.0
        Lowest and highest centre frequency in Hz; centres are geometrically spaced.
        ``f_max`` is capped below Nyquist (with a warning) when the sampling rate is low.
    bin_s : float, default 0.01
        Window and hop in seconds (non-overlapping bins; 10 ms gives 100 Hz).
    compression : {"log", "none"}, default "log"
        ``"log"``: ``log((rms + log_offset) / log_offset)``; ``"none"``: the RMS amplitude.
    log_offset : float, default 0.1
        Offset of the log compression, in units of the waveform's RMS amplitude.
    filterbank : {"gammatone"}, default "gammatone"
        Filterbank family.
    level : {"rms", "none"}, default "rms"
        ``"rms"``: scale the sound so that its RMS over the presented samples equals
        ``reference_rms`` before filtering (level-free; see the module notes);
        ``"none"``: use the samples as they are (in the file's units).
    reference_rms : float, default 0.3
        RMS the presented sound is scaled to when ``level="rms"``.
    channel : "mean" or int, default "mean"
        For a multi-channel sound ``(n_samples, n_channels)``: the mean of the channels, or
        the channel with this (0-based) index. Ignored for a one-channel sound.

    Raises
    ------
    TypeError
        When a setting has the wrong type (a string or bool for a number, a float for an
        integer); :class:`~nwb_subspace.config.AnalysisConfig` reports it as a
        ``ValueError``.
    ValueError
        When a setting is out of range. Both messages name ``[spectrogram]`` and the key,
        the value and an example of a good one.
    """

    n_channels: int = 32
    f_min: float = 200.0
    f_max: float = 20000.0
    bin_s: float = 0.01
    compression: str = "log"
    log_offset: float = 0.1
    filterbank: str = "gammatone"
    level: str = "rms"
    reference_rms: float = 0.3
    channel: str | int = "mean"

    def __post_init__(self) -> None:
        def fail(name: str, what: str, value: Any, example: Any, wrong_type: bool) -> None:
            got = f"{value!r} ({type(value).__name__})" if wrong_type else repr(value)
            error = TypeError if wrong_type else ValueError
            raise error(f"[spectrogram] {name} must be {what}; got {got}, e.g. {example}")

        def is_int(value: Any) -> bool:
            return isinstance(value, int | np.integer) and not isinstance(value, bool)

        def is_number(value: Any) -> bool:
            number = isinstance(value, int | float | np.integer | np.floating)
            return number and not isinstance(value, bool)

        if not is_int(self.n_channels) or self.n_channels < 1:
            fail("n_channels", "an integer >= 1", self.n_channels, 32, not is_int(self.n_channels))
        object.__setattr__(self, "n_channels", int(self.n_channels))
        numbers = {"f_min": 200.0, "f_max": 20000.0, "log_offset": 0.1, "reference_rms": 0.3}
        for name, example in numbers.items():
            value = getattr(self, name)
            if not is_number(value) or not (np.isfinite(value) and value > 0):
                fail(name, "a number > 0", value, example, not is_number(value))
        if not self.f_min < self.f_max:
            raise ValueError(
                f"[spectrogram] f_min must be below f_max; got f_min={self.f_min!r}, "
                f"f_max={self.f_max!r}, e.g. f_min=200.0, f_max=20000.0"
            )
        bin_s = self.bin_s
        if not is_number(bin_s) or not (np.isfinite(bin_s) and 0 < bin_s <= 1):
            fail("bin_s", "in (0, 1] seconds", bin_s, 0.01, not is_number(bin_s))
        choices = {"compression": _COMPRESSIONS, "filterbank": _FILTERBANKS, "level": _LEVELS}
        for name, allowed in choices.items():
            value = getattr(self, name)
            if not isinstance(value, str) or value not in allowed:
                wrong_type = not isinstance(value, str)
                fail(name, f"one of {list(allowed)}", value, f"{allowed[0]!r}", wrong_type)
        channel = self.channel
        if is_int(channel) and channel >= 0:
            object.__setattr__(self, "channel", int(channel))
        elif channel != "mean":
            fail(
                "channel",
                "'mean' (the mean of a multi-channel sound's channels) or a channel index >= 0",
                channel, "'mean' or 0", not (isinstance(channel, str) or is_int(channel)),
            )  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        """Return every setting as a plain JSON-serialisable dict."""
        out = asdict(self)
        out["n_channels"] = int(out["n_channels"])
        for key in ("f_min", "f_max", "bin_s", "log_offset", "reference_rms"):
            out[key] = float(out[key])
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> SpectrogramSettings:
        """Inverse of :meth:`to_dict` (unknown keys raise ``TypeError``)."""
        return cls(**values)


@dataclass
class Spectrogram:
    """A computed spectrogram.

    Attributes
    ----------
    data : ndarray of float32, shape (n_bins, n_channels)
        Compressed channel amplitudes; row ``i`` covers ``[starting_time + i / rate,
        starting_time + (i + 1) / rate)``.
    frequencies : ndarray of float64, shape (n_channels,)
        Centre frequencies in Hz (after any Nyquist cap).
    rate : float
        Bins per second (``fs / hop``).
    starting_time : float
        Time of the first sample of bin 0, in seconds.
    settings : dict
        :meth:`SpectrogramSettings.to_dict` of the settings used, plus ``fs`` and ``hop``
        (samples per bin) and the effective ``f_max``.
    """

    data: np.ndarray
    frequencies: np.ndarray
    rate: float
    starting_time: float = 0.0
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def n_bins(self) -> int:
        """Number of time bins."""
        return int(self.data.shape[0])

    @property
    def times(self) -> np.ndarray:
        """Start time of each bin in seconds, shape (n_bins,)."""
        return self.starting_time + np.arange(self.n_bins) / self.rate


def _capped_fmax(fs: float, settings: SpectrogramSettings) -> float:
    if not (isinstance(fs, int | float | np.integer | np.floating) and fs > 0):
        raise ValueError(f"sampling rate fs must be a positive number, got {fs!r}")
    cap = NYQUIST_FRACTION * fs / 2.0
    if settings.f_min >= cap:
        raise ValueError(
            f"sampling rate {fs} Hz is too low for f_min={settings.f_min} Hz: centre frequencies "
            f"must stay below {cap:.1f} Hz ({NYQUIST_FRACTION} x Nyquist); resample the sound "
            f"to at least {settings.f_min * 2 / NYQUIST_FRACTION * 1.5:.0f} Hz or lower f_min"
        )
    if settings.f_max > cap:
        warnings.warn(
            f"f_max={settings.f_max} Hz is too close to the Nyquist frequency of a {fs} Hz "
            f"recording; capping the top centre frequency at {cap:.1f} Hz "
            f"({NYQUIST_FRACTION} x Nyquist)",
            UserWarning,
            stacklevel=3,
        )
        return float(cap)
    return float(settings.f_max)


def gammatone_sos(freq: float, fs: float) -> np.ndarray:
    """Second-order sections of scipy's IIR gammatone filter at ``freq`` Hz.

    Parameters
    ----------
    freq : float
        Centre frequency in Hz (below Nyquist).
    fs : float
        Sampling rate in Hz.

    Returns
    -------
    ndarray, shape (4, 6)
        Sections for :func:`scipy.signal.sosfilt`, equal in exact arithmetic to
        ``scipy.signal.gammatone(freq, 'iir', fs=fs)`` (see the module notes).
    """
    b, a = scipy.signal.gammatone(freq, "iir", fs=fs)
    # a = (1 + a1 z^-1 + a2 z^-2) ** 4: recover the pole pair from the leading coefficients.
    a1 = a[1] / 4.0
    a2 = (a[2] - 6.0 * a1**2) / 4.0
    poles = np.repeat(np.roots([1.0, a1, a2]), 4)
    zeros = np.roots(b)
    return scipy.signal.zpk2sos(zeros, poles, b[0])


def gammatone_filterbank(
    fs: float, settings: SpectrogramSettings | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Centre frequencies and filters of the gammatone filterbank.

    Parameters
    ----------
    fs : float
        Sampling rate of the sound in Hz.
    settings : SpectrogramSettings, optional
        Defaults to ``SpectrogramSettings()``.

    Returns
    -------
    frequencies : ndarray, shape (n_channels,)
        Geometrically spaced centre frequencies in Hz from ``f_min`` to the (possibly
        capped) ``f_max``.
    sos : ndarray, shape (n_channels, 4, 6)
        Second-order sections of each channel's filter (:func:`gammatone_sos`).

    Raises
    ------
    ValueError
        If ``fs`` is too low for ``f_min``.

    Warns
    -----
    UserWarning
        If ``f_max`` is above ``NYQUIST_FRACTION`` x Nyquist; it is then capped there.
    """
    settings = settings or SpectrogramSettings()
    f_max = _capped_fmax(fs, settings)
    if settings.n_channels == 1:
        freqs = np.array([settings.f_min], dtype=float)
    else:
        freqs = np.geomspace(settings.f_min, f_max, settings.n_channels)
    sos = np.stack([gammatone_sos(float(f), float(fs)) for f in freqs])
    return freqs, sos


def _as_source(wave: Any) -> tuple[Any, int, int]:
    """Validate a waveform source without reading it; return (source, n_samples, n_channels)."""
    shape = getattr(wave, "shape", None)
    if shape is None:
        wave = np.asarray(wave)
        shape = wave.shape
    if len(shape) == 1:
        return wave, int(shape[0]), 1
    if len(shape) == 2 and shape[1] >= 1:
        return wave, int(shape[0]), int(shape[1])
    raise ValueError(
        f"wave must be (n_samples,) or (n_samples, n_channels), got shape {tuple(shape)}"
    )


def _check_channel(channel: str | int, n_channels: int) -> None:
    if n_channels > 1 and channel != "mean" and not 0 <= int(channel) < n_channels:
        raise ValueError(
            f"channel={channel!r} but the sound has {n_channels} channels (0 to "
            f"{n_channels - 1}); pass channel='mean' or an index below {n_channels}"
        )


def channel_used(channel: str | int, n_channels: int) -> str | int:
    """What :func:`mix_channels` does for a sound with ``n_channels``, for the record:
    ``"mono"``, ``"mean of N"`` or the channel index."""
    if n_channels == 1:
        return "mono"
    return f"mean of {n_channels}" if channel == "mean" else int(channel)


def mix_channels(block: np.ndarray, channel: str | int = "mean") -> np.ndarray:
    """One channel of a block of samples.

    Parameters
    ----------
    block : ndarray, shape (n,) or (n, n_channels)
        Samples (float64 is returned as a view where possible).
    channel : "mean" or int
        The mean of the channels, or the channel with this index.

    Returns
    -------
    ndarray of float64, shape (n,)
    """
    block = np.asarray(block, dtype=np.float64)
    if block.ndim == 1:
        return block
    if block.shape[1] == 1:
        return block[:, 0]
    if channel == "mean":
        return block.mean(axis=1)
    return block[:, int(channel)]


def _read(source: Any, start: int, stop: int, channel: str | int = "mean") -> np.ndarray:
    block = mix_channels(source[start:stop], channel)
    bad = ~np.isfinite(block)
    if bad.any():
        idx = start + int(np.argmax(bad))
        raise ValueError(
            f"wave has a non-finite value ({float(block[idx - start])}) at sample index {idx}; "
            "replace NaN/inf samples (e.g. with 0) before computing the spectrogram"
        )
    return block


def _as_intervals(intervals: Any) -> np.ndarray:
    arr = np.asarray(intervals)
    if arr.size == 0:
        return np.zeros((0, 2), dtype=np.int64)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(
            f"presentation intervals must have shape (n, 2) ([start, stop) sample indices), "
            f"got shape {arr.shape}"
        )
    if not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"presentation intervals must be integer sample indices, got {arr.dtype}")
    return arr.astype(np.int64)


def interval_rms(
    wave: Any,
    intervals: Any = None,
    channel: str | int = "mean",
    chunk: int = _RMS_CHUNK,
) -> tuple[float, int]:
    """RMS of the samples inside presentation intervals, read chunk by chunk.

    Parameters
    ----------
    wave : array-like, shape (n_samples,) or (n_samples, n_channels)
        Any object sliceable as ``wave[start:stop]`` (numpy array, h5py dataset, zarr array,
        lazy view).
        Several channels are reduced first with :func:`mix_channels`.
    intervals : array-like of int, shape (n_intervals, 2), optional
        ``[start, stop)`` sample indices of each presentation; clipped to the waveform.
        Every interval counts, so a sound presented 20 times weighs 20 times; overlapping
        intervals count their common samples twice. Default: the whole waveform.
    channel : "mean" or int, default "mean"
        See :func:`mix_channels`.
    chunk : int
        Samples read at a time.

    Returns
    -------
    rms : float
        ``sqrt(sum of squares / n)`` over the presented samples.
    n : int
        Number of presented samples counted.

    Raises
    ------
    ValueError
        When no interval holds a sample of the waveform, or on a non-finite sample.
    """
    source, n_samples, n_channels = _as_source(wave)
    _check_channel(channel, n_channels)
    if intervals is None:
        spans = np.array([[0, n_samples]], dtype=np.int64)
    else:
        spans = np.clip(_as_intervals(intervals), 0, n_samples)
    total, count = 0.0, 0
    for a, b in spans:
        for lo in range(int(a), int(b), max(int(chunk), 1)):
            hi = min(lo + int(chunk), int(b))
            x = _read(source, lo, hi, channel)
            total += float(np.dot(x, x))
            count += x.size
    if count == 0:
        raise ValueError(
            f"no presented sample lies inside the sound ({n_samples} samples; "
            f"{len(spans)} presentation interval(s)); check that the presentations and the "
            "sound are on the same clock"
        )
    return float(np.sqrt(total / count)), count


def level_gain(sound_rms: float, settings: SpectrogramSettings | None = None) -> float:
    """Gain applied to the samples: ``reference_rms / sound_rms`` (1.0 for ``level="none"``).

    Raises
    ------
    ValueError
        When ``level="rms"`` and the sound is silent (``sound_rms`` is 0) or not finite.
    """
    settings = settings or SpectrogramSettings()
    if settings.level == "none":
        return 1.0
    if not (np.isfinite(sound_rms) and sound_rms > 0):
        raise ValueError(
            f"the presented sound is silent (RMS {sound_rms!r} over the presented samples): "
            "it cannot be scaled to reference_rms; check the sound and the presentation times, "
            "or pass level='none'"
        )
    return float(settings.reference_rms) / float(sound_rms)


def _compress(power: np.ndarray, settings: SpectrogramSettings) -> np.ndarray:
    """RMS amplitude of mean power, log-compressed when ``settings.compression == "log"``.

    Works in place on ``power`` (float64, any shape) and returns it.
    """
    amp = np.sqrt(power, out=power)
    if settings.compression == "log":
        amp += settings.log_offset
        amp /= settings.log_offset
        np.log(amp, out=amp)
    return amp


# long: a public function whose numpy docstring is 40 of its lines
def compute_spectrogram(
    wave: Any,
    fs: float,
    settings: SpectrogramSettings | None = None,
    chunk_s: float = 60.0,
    starting_time: float = 0.0,
    presented: Any = None,
    sound_rms: float | None = None,
) -> Spectrogram:
    """Compressed gammatone spectrogram of a waveform, computed in chunks.

    Parameters
    ----------
    wave : array-like, shape (n_samples,) or (n_samples, n_channels)
        The sound. Any object sliceable as ``wave[start:stop]`` works (numpy array, h5py
        dataset, zarr array, memmap): only one chunk is read into memory at a time. Several channels
        are reduced to one by ``settings.channel``.
    fs : float
        Sampling rate in Hz.
    settings : SpectrogramSettings, optional
        Defaults to ``SpectrogramSettings()`` (the reference parameters).
    chunk_s : float, default 60.0
        Seconds of sound read and filtered at a time. Filter state and the samples of an
        unfinished bin are carried across chunks, so the result does not depend on it
        (up to float rounding).
    starting_time : float, default 0.0
        Time of the first sample, in seconds; copied to the result.
    presented : array-like of int, shape (n_presentations, 2), optional
        ``[start, stop)`` sample indices of the presentations, over which the RMS of
        ``level="rms"`` is measured (:func:`interval_rms`). Default: every sample.
    sound_rms : float, optional
        The RMS to scale by, measured by the caller (e.g. over a whole session when ``wave``
        is one presented sound); ``presented`` is then not used.

    Returns
    -------
    Spectrogram
        ``data`` has ``n_samples // hop`` rows (the trailing partial bin is dropped), where
        ``hop = round(bin_s * fs)``; ``rate = fs / hop``. ``settings`` records, beyond
        the settings, ``fs``, ``hop``, ``f_max_effective``, ``channel_used`` and, with
        ``level="rms"``, ``sound_rms`` and ``level_gain``.

    Raises
    ------
    ValueError
        On a non-finite sample (naming its index), a bad ``channel``, a too-low ``fs``, a
        too-short ``chunk_s``, a silent presented sound or no presented sample (with
        ``level="rms"``).
    """
    settings = settings or SpectrogramSettings()
    if not isinstance(settings, SpectrogramSettings):
        raise TypeError(f"settings must be a SpectrogramSettings, got {type(settings).__name__}")
    freqs, sos = gammatone_filterbank(fs, settings)
    hop = int(round(settings.bin_s * fs))
    if hop < 1:
        raise ValueError(f"bin_s={settings.bin_s} s is shorter than one sample at fs={fs} Hz")
    if not chunk_s > 0:
        raise ValueError(f"chunk_s must be > 0 seconds, got {chunk_s!r}; e.g. 60.0")
    source, n_samples, n_channels = _as_source(wave)
    channel = settings.channel
    _check_channel(channel, n_channels)
    info = settings.to_dict()
    info.update(fs=float(fs), hop=hop, f_max_effective=float(freqs[-1]))
    info["channel_used"] = channel_used(channel, n_channels)
    gain = 1.0
    if settings.level == "rms":
        if sound_rms is None:  # first pass: the RMS of the presented samples
            sound_rms = interval_rms(source, presented, channel)[0]
        gain = level_gain(float(sound_rms), settings)
        info.update(sound_rms=float(sound_rms), level_gain=gain)
    chunk = max(int(round(chunk_s * fs)), 1)
    n_ch = settings.n_channels
    zi = np.zeros((n_ch, sos.shape[1], 2))
    carry = np.zeros((n_ch, 0))  # squared filter output of an unfinished bin
    # The output is known up front: fill it chunk by chunk (float64 only per chunk).
    data = np.empty((n_samples // hop, n_ch), dtype=np.float32)
    row = 0
    starts = range(0, n_samples, chunk)
    for start in track(starts, len(starts), "spectrogram", unit="chunk"):
        x = _read(source, start, min(start + chunk, n_samples), channel)
        if gain != 1.0:
            x = x * gain
        x = x + DENORMAL_GUARD
        n_total = carry.shape[1] + x.size
        n_bins = n_total // hop
        power = np.empty((n_bins, n_ch))
        new_carry = np.empty((n_ch, n_total - n_bins * hop))
        for c in range(n_ch):
            y, zi[c] = scipy.signal.sosfilt(sos[c], x, zi=zi[c])
            sq = np.concatenate([carry[c], y * y])
            power[:, c] = sq[: n_bins * hop].reshape(n_bins, hop).mean(axis=1)
            new_carry[c] = sq[n_bins * hop :]
        carry = new_carry
        data[row : row + n_bins] = _compress(power, settings)
        row += n_bins
    return Spectrogram(
        data=data,
        frequencies=freqs,
        rate=float(fs) / hop,
        starting_time=float(starting_time),
        settings=info,
    )


def n_bins_for(n_samples: int, fs: float, bin_s: float = 0.01) -> int:
    """Number of full bins :func:`compute_spectrogram` returns for ``n_samples`` samples."""
    return int(n_samples) // int(round(bin_s * fs))
