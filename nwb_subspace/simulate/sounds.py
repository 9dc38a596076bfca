"""Natural-like sounds synthesised in code (no audio files needed).

Three families, mixed within every sequence, with onsets and silences between segments:

- speech-like: a glottal pulse train whose pitch follows a smooth contour (90-260 Hz),
  shaped into syllables by three formant resonances, with occasional fricatives (bandpass
  noise, 3-10 kHz);
- vocalisation-like: frequency sweeps and frequency-modulated calls (1-16 kHz, with a weaker
  second harmonic);
- environmental textures: noise with a random smooth spectral envelope over log frequency,
  slow amplitude modulation (1-8 Hz) and sparse crackle.

All functions take a :class:`numpy.random.Generator` so sounds are deterministic from a seed.
"""

from __future__ import annotations

import numpy as np
import scipy.signal

__all__ = [
    "SOUND_KINDS",
    "noise_texture",
    "speech_like",
    "synthesize_sequence",
    "vocalisation_like",
]

SOUND_KINDS = ("speech", "vocalisation", "texture")
_KIND_P = (0.4, 0.25, 0.35)


def _smooth_noise(rng: np.random.Generator, n: int, fs: float, cutoff_hz: float) -> np.ndarray:
    """Unit-variance noise low-passed at ``cutoff_hz`` (by interpolating sparse knots)."""
    step = max(1, int(fs / (2 * cutoff_hz)))
    knots = rng.standard_normal(n // step + 3)
    x = np.interp(np.arange(n), np.arange(knots.size) * step, knots)
    sd = float(x.std())
    if not sd > 1e-9:  # one sample (or a flat stretch): no variation to scale up
        return np.zeros(n)
    return x / sd


def _envelope(n: int, fs: float, attack_s: float, release_s: float) -> np.ndarray:
    env = np.ones(n)
    a = min(n, max(1, int(attack_s * fs)))
    r = min(n - a, max(1, int(release_s * fs))) if n > a else 0
    env[:a] = np.linspace(0.0, 1.0, a)
    if r > 0:
        env[n - r :] = np.linspace(1.0, 0.0, r)
    return env


def _bandpass(x: np.ndarray, fs: float, low: float, high: float, order: int = 2) -> np.ndarray:
    high = min(high, 0.45 * fs)
    low = min(max(low, 20.0), 0.9 * high)
    sos = scipy.signal.butter(order, [low, high], btype="bandpass", fs=fs, output="sos")
    return scipy.signal.sosfilt(sos, x)


def speech_like(rng: np.random.Generator, n: int, fs: float) -> np.ndarray:
    """Speech-like syllables: harmonic stack with a pitch contour, formants, fricatives.

    Parameters
    ----------
    rng : numpy.random.Generator
    n : int
        Number of samples.
    fs : float
        Sampling rate in Hz.

    Returns
    -------
    ndarray of float64, shape (n,)
    """
    t = np.arange(n) / fs
    f0 = rng.uniform(90.0, 260.0) * 2.0 ** (0.25 * _smooth_noise(rng, n, fs, 3.0) - 0.1 * t)
    phase = np.cumsum(f0) / fs
    source = 2.0 * (phase % 1.0) - 1.0  # sawtooth glottal source (harmonics fall as 1/h)
    out = np.zeros(n)
    start = 0
    while start < n:
        length = min(n - start, int(rng.uniform(0.12, 0.35) * fs))
        seg = slice(start, start + length)
        env = _envelope(length, fs, rng.uniform(0.005, 0.03), rng.uniform(0.02, 0.08))
        if rng.random() < 0.8:
            f1, f2, f3 = rng.uniform(300, 900), rng.uniform(900, 2500), rng.uniform(2500, 3800)
            voiced = sum(
                g * _bandpass(source[seg], fs, f * 0.85, f * 1.15)
                for f, g in ((f1, 1.0), (f2, 0.6), (f3, 0.3))
            )
            out[seg] = voiced * env
        else:
            noise = _bandpass(rng.standard_normal(length), fs, rng.uniform(2500, 4500), 10000)
            out[seg] = 0.7 * noise * env
        start += length
        if rng.random() < 0.3:  # short pause between words
            start += int(rng.uniform(0.03, 0.15) * fs)
    return out


def vocalisation_like(rng: np.random.Generator, n: int, fs: float) -> np.ndarray:
    """Vocalisation-like calls: up/down frequency sweeps and sinusoidal FM, 1-16 kHz."""
    out = np.zeros(n)
    top = min(16000.0, 0.4 * fs)
    start = int(rng.uniform(0.0, 0.05) * fs)
    while start < n:
        length = min(n - start, int(rng.uniform(0.05, 0.4) * fs))
        tt = np.arange(length) / fs
        dur = max(length / fs, 1e-3)
        if rng.random() < 0.6:  # exponential sweep
            f_a, f_b = np.exp(rng.uniform(np.log(1000.0), np.log(top), 2))
            freq = f_a * (f_b / f_a) ** (tt / dur)
        else:  # sinusoidal FM around a carrier
            fc = np.exp(rng.uniform(np.log(1500.0), np.log(top / 1.5)))
            freq = fc * 2.0 ** (rng.uniform(0.1, 0.6) * np.sin(2 * np.pi * rng.uniform(5, 30) * tt))
        ph = 2 * np.pi * np.cumsum(freq) / fs
        call = np.sin(ph)
        if freq.max() * 2 < 0.45 * fs:
            call += 0.3 * np.sin(2 * ph)
        out[start : start + length] = call * _envelope(length, fs, 0.01, 0.03)
        start += length + int(rng.uniform(0.02, 0.25) * fs)
    return out


def noise_texture(rng: np.random.Generator, n: int, fs: float) -> np.ndarray:
    """Environmental texture: spectrally shaped noise, slow AM, sparse crackle."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1.0 / fs)
    logf = np.log2(np.maximum(f, 20.0))
    shape = rng.uniform(-0.5, 0.2) * (logf - np.log2(1000.0))  # spectral tilt (per octave)
    for _ in range(rng.integers(1, 4)):
        shape += rng.uniform(0.5, 2.0) * np.exp(
            -0.5
            * ((logf - rng.uniform(np.log2(200.0), np.log2(16000.0))) / rng.uniform(0.3, 1.2)) ** 2
        )
    gain = 2.0**shape
    gain[f < 100.0] = 0.0
    x = np.fft.irfft(spec * gain, n)
    t = np.arange(n) / fs
    am_depth = rng.uniform(0.3, 0.9)
    am = 1.0 + am_depth * np.sin(2 * np.pi * rng.uniform(1.0, 8.0) * t + rng.uniform(0, 2 * np.pi))
    x *= am * np.exp(0.5 * _smooth_noise(rng, n, fs, 2.0))
    if rng.random() < 0.4:  # crackle: sparse clicks
        clicks = (rng.random(n) < 30.0 / fs) * rng.standard_normal(n) * 8.0
        x += _bandpass(clicks, fs, 2000.0, 12000.0) * x.std()
    return x


_GENERATORS = {"speech": speech_like, "vocalisation": vocalisation_like, "texture": noise_texture}


def synthesize_sequence(
    rng: np.random.Generator, duration_s: float, fs: float, rms: float = 0.3
) -> np.ndarray:
    """One sound sequence: a random mix of segments of every family, with silences.

    Parameters
    ----------
    rng : numpy.random.Generator
    duration_s : float
        Length in seconds.
    fs : float
        Sampling rate in Hz.
    rms : float, default 0.3
        Typical RMS level of a segment; each segment is played at ``rms`` x a random gain
        of -10 to +6 dB.

    Returns
    -------
    ndarray of float32, shape (round(duration_s * fs),)
    """
    n = int(round(duration_s * fs))
    out = np.zeros(n)
    start = int(rng.uniform(0.0, 0.1) * fs)
    while start < n:
        length = min(n - start, int(rng.uniform(0.4, 1.8) * fs))
        kind = SOUND_KINDS[rng.choice(len(SOUND_KINDS), p=_KIND_P)]
        seg = _GENERATORS[kind](rng, length, fs)
        level = rms * 10 ** (rng.uniform(-10.0, 6.0) / 20)
        seg *= level / (np.sqrt(np.mean(seg**2)) + 1e-12)
        seg *= _envelope(length, fs, rng.choice([0.001, 0.02]), 0.01)
        out[start : start + length] = seg
        start += length
        if rng.random() < 0.4:  # a silence, then a fresh onset
            start += int(rng.uniform(0.05, 0.4) * fs)
    return out.astype(np.float32)
