"""Sound waveform -> compressed gammatone spectrogram (pure numerics, no file I/O).

The reference representation (DESIGN.md section 3) is a gammatone filterbank of 32
log-spaced channels from 200 Hz to 20 kHz, read out in 10 ms bins (window = hop = 10 ms,
100 Hz), compressed as ``log((x + 0.1) / 0.1)``.

What is computed, exactly
-------------------------
For channel ``c`` with filter output ``y_c(t)`` and bin ``i`` covering the samples
``[i * hop, (i + 1) * hop)``:

1. power: ``p = mean(y_c[t] ** 2)`` over the bin's samples;
2. "RMS-amplitude^0.5 step": ``x = p ** 0.5`` (the RMS amplitude of the filter output
   in the bin, in the units of the waveform);
3. compression: ``log((x + offset) / offset)`` with ``offset = 0.1`` (natural log), so that
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

from .progress import track

__all__ = [
    "DENORMAL_GUARD",
    "NYQUIST_FRACTION",
    "Spectrogram",
    "SpectrogramSettings",
    "compute_spectrogram",
    "gammatone_filterbank",
    "gammatone_sos",
]

#: The top centre frequency is capped at this fraction of the Nyquist frequency.
NYQUIST_FRACTION = 0.95
#: Added to every sample before filtering, to keep filter states out of subnormal floats.
DENORMAL_GUARD = 1e-12

_COMPRESSIONS = ("log", "none")
_FILTERBANKS = ("gammatone",)


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
    """

    n_channels: int = 32
    f_min: float = 200.0
    f_max: float = 20000.0
    bin_s: float = 0.01
    compression: str = "log"
    log_offset: float = 0.1
    filterbank: str = "gammatone"

    def __post_init__(self) -> None:
        if isinstance(self.n_channels, bool) or not isinstance(self.n_channels, int | np.integer):
            raise TypeError(f"n_channels must be an int, got {self.n_channels!r}")
        if self.n_channels < 1:
            raise ValueError(f"n_channels must be >= 1, got {self.n_channels}; use e.g. 32")
        if not (0 < self.f_min < self.f_max):
            raise ValueError(
                f"need 0 < f_min < f_max, got f_min={self.f_min!r}, f_max={self.f_max!r}; "
                "e.g. f_min=200.0, f_max=20000.0"
            )
        if not (0 < self.bin_s <= 1.0):
            raise ValueError(f"bin_s must be in (0, 1] seconds, got {self.bin_s!r}; e.g. 0.01")
        if self.compression not in _COMPRESSIONS:
            raise ValueError(
                f"compression must be one of {_COMPRESSIONS}, got {self.compression!r}"
            )
        if not self.log_offset > 0:
            raise ValueError(f"log_offset must be > 0, got {self.log_offset!r}; e.g. 0.1")
        if self.filterbank not in _FILTERBANKS:
            raise ValueError(f"filterbank must be one of {_FILTERBANKS}, got {self.filterbank!r}")

    def to_dict(self) -> dict[str, Any]:
        """Return every setting as a plain JSON-serialisable dict."""
        out = asdict(self)
        out["n_channels"] = int(out["n_channels"])
        for key in ("f_min", "f_max", "bin_s", "log_offset"):
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


def _as_1d_source(wave: Any) -> tuple[Any, int]:
    """Validate a waveform source without reading it; return (source, n_samples)."""
    shape = getattr(wave, "shape", None)
    if shape is None:
        wave = np.asarray(wave)
        shape = wave.shape
    if len(shape) == 2 and shape[1] == 1:
        return wave, int(shape[0])
    if len(shape) != 1:
        raise ValueError(
            f"wave must be one-dimensional (mono), got shape {tuple(shape)}; "
            "average or pick a channel first"
        )
    return wave, int(shape[0])


def _read(source: Any, start: int, stop: int) -> np.ndarray:
    block = np.asarray(source[start:stop], dtype=np.float64)
    if block.ndim == 2:
        block = block[:, 0]
    bad = ~np.isfinite(block)
    if bad.any():
        idx = start + int(np.argmax(bad))
        raise ValueError(
            f"wave has a non-finite value ({float(block[idx - start])}) at sample index {idx}; "
            "replace NaN/inf samples (e.g. with 0) before computing the spectrogram"
        )
    return block


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


def compute_spectrogram(
    wave: Any,
    fs: float,
    settings: SpectrogramSettings | None = None,
    chunk_s: float = 60.0,
    starting_time: float = 0.0,
) -> Spectrogram:
    """Compressed gammatone spectrogram of a mono waveform, computed in chunks.

    Parameters
    ----------
    wave : array-like, shape (n_samples,) or (n_samples, 1)
        The sound. Any object sliceable as ``wave[start:stop]`` works (numpy array, h5py
        dataset, memmap): only one chunk is read into memory at a time.
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

    Returns
    -------
    Spectrogram
        ``data`` has ``n_samples // hop`` rows (the trailing partial bin is dropped), where
        ``hop = round(bin_s * fs)``; ``rate = fs / hop``.

    Raises
    ------
    ValueError
        On a non-finite sample (naming its index), a non-mono input, a too-low ``fs`` or a
        too-short ``chunk_s``.
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
    source, n_samples = _as_1d_source(wave)
    chunk = max(int(round(chunk_s * fs)), 1)
    n_ch = settings.n_channels
    zi = np.zeros((n_ch, sos.shape[1], 2))
    carry = np.zeros((n_ch, 0))  # squared filter output of an unfinished bin
    # The output is known up front: fill it chunk by chunk (float64 only per chunk).
    data = np.empty((n_samples // hop, n_ch), dtype=np.float32)
    row = 0
    starts = range(0, n_samples, chunk)
    for start in track(starts, len(starts), "spectrogram", unit="chunk"):
        x = _read(source, start, min(start + chunk, n_samples)) + DENORMAL_GUARD
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
    info = settings.to_dict()
    info.update(fs=float(fs), hop=hop, f_max_effective=float(freqs[-1]))
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
