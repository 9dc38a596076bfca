"""Tests of nwb_subspace.stimulus.spectrogram (audio -> spectrogram)."""

from __future__ import annotations

import warnings

import h5py
import numpy as np
import pytest
import scipy.signal

from nwb_subspace.stimulus.spectrogram import (
    Spectrogram,
    SpectrogramSettings,
    compute_spectrogram,
    gammatone_filterbank,
    gammatone_sos,
)

FS = 44100.0


def _tone(freq: float, seconds: float = 0.5, fs: float = FS, amp: float = 1.0) -> np.ndarray:
    t = np.arange(int(seconds * fs)) / fs
    return amp * np.sin(2 * np.pi * freq * t)


def test_settings_defaults_and_dict_roundtrip():
    s = SpectrogramSettings()
    d = s.to_dict()
    assert d == {
        "n_channels": 32,
        "f_min": 200.0,
        "f_max": 20000.0,
        "bin_s": 0.01,
        "compression": "log",
        "log_offset": 0.1,
        "filterbank": "gammatone",
        "level": "rms",
        "reference_rms": 0.3,
        "channel": "mean",
    }
    assert SpectrogramSettings.from_dict(d) == s
    assert SpectrogramSettings.from_dict(SpectrogramSettings(channel=1).to_dict()).channel == 1


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n_channels": 0},
        {"f_min": 3000.0, "f_max": 2000.0},
        {"bin_s": 0.0},
        {"compression": "cube"},
        {"log_offset": 0.0},
        {"filterbank": "mel"},
        {"level": "peak"},
        {"reference_rms": 0.0},
        {"channel": "left"},
        {"channel": -1},
    ],
)
def test_settings_reject_bad_values(kwargs):
    with pytest.raises(ValueError):
        SpectrogramSettings(**kwargs)
    with pytest.raises(TypeError):
        SpectrogramSettings(n_channels=3.5)


def test_centre_frequencies_log_spaced():
    freqs, sos = gammatone_filterbank(FS)
    assert freqs.shape == (32,) and sos.shape == (32, 4, 6)
    assert freqs[0] == pytest.approx(200.0) and freqs[-1] == pytest.approx(20000.0)
    ratios = freqs[1:] / freqs[:-1]
    np.testing.assert_allclose(ratios, ratios[0], rtol=1e-10)


def test_pure_tone_lands_in_nearest_channel():
    s = SpectrogramSettings()
    freqs, _ = gammatone_filterbank(FS, s)
    for idx in (3, 12, 20, 29):
        spec = compute_spectrogram(_tone(freqs[idx] * 1.01), FS, s)
        assert isinstance(spec, Spectrogram)
        assert spec.data.dtype == np.float32 and spec.data.shape == (50, 32)
        steady = spec.data[10:].mean(axis=0)
        assert int(np.argmax(steady)) == idx


@pytest.mark.parametrize("freq", [1000.0, 4000.0, 15000.0])
def test_filter_matches_scipy_lfilter(freq):
    # The direct-form transfer function of scipy's design is stable from ~1 kHz up at 44.1 kHz;
    # there our second-order sections must give the same output.
    rng = np.random.default_rng(0)
    x = rng.standard_normal(20000)
    b, a = scipy.signal.gammatone(freq, "iir", fs=FS)
    direct = scipy.signal.lfilter(b, a, x)
    ours = scipy.signal.sosfilt(gammatone_sos(freq, FS), x)
    np.testing.assert_allclose(ours, direct, rtol=0, atol=1e-5 * np.abs(direct).max())


def test_low_channel_has_unit_gain_at_centre():
    # Where the direct form is unstable (200 Hz), the sections keep scipy's design: unit gain
    # and a peak at the centre frequency.
    sos = gammatone_sos(200.0, FS)
    f = np.linspace(100, 300, 2001)
    _, h = scipy.signal.sosfreqz(sos, worN=f, fs=FS)
    assert abs(h[1000]) == pytest.approx(1.0, abs=1e-6)
    assert f[np.argmax(abs(h))] == pytest.approx(200.0, abs=0.2)
    assert np.all(np.abs(np.roots(sos[0, 3:])) < 1)


def test_channel_output_matches_filter_then_rms_log():
    # level="none": the filter outputs in the waveform's units (the level step is tested in
    # tests/test_sound_layouts.py)
    s = SpectrogramSettings(n_channels=4, f_min=1000.0, f_max=8000.0, level="none")
    rng = np.random.default_rng(1)
    x = rng.standard_normal(int(0.3 * FS)) * 0.3
    spec = compute_spectrogram(x, FS, s)
    freqs, _ = gammatone_filterbank(FS, s)
    hop = 441
    for c, f in enumerate(freqs):
        b, a = scipy.signal.gammatone(f, "iir", fs=FS)
        y = scipy.signal.lfilter(b, a, x)
        n = len(y) // hop
        rms = np.sqrt((y[: n * hop] ** 2).reshape(n, hop).mean(axis=1))
        expected = np.log((rms + 0.1) / 0.1)
        np.testing.assert_allclose(spec.data[:, c], expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("chunk_s", [0.0123, 0.05, 0.1037, 0.5])
def test_chunked_equals_one_shot(chunk_s):
    rng = np.random.default_rng(2)
    x = rng.standard_normal(int(1.2345 * FS))
    s = SpectrogramSettings(n_channels=8)
    whole = compute_spectrogram(x, FS, s, chunk_s=100.0)
    parts = compute_spectrogram(x, FS, s, chunk_s=chunk_s)
    assert whole.data.shape == (len(x) // 441, 8)  # trailing partial bin dropped
    np.testing.assert_allclose(parts.data, whole.data, rtol=1e-5, atol=1e-6)


def test_reads_h5py_dataset_lazily(tmp_path):
    rng = np.random.default_rng(3)
    x = rng.standard_normal(int(0.4 * FS)).astype(np.float32)
    s = SpectrogramSettings(n_channels=6)
    with h5py.File(tmp_path / "w.h5", "w") as f:
        f["wave"] = x
    with h5py.File(tmp_path / "w.h5", "r") as f:
        lazy = compute_spectrogram(f["wave"], FS, s, chunk_s=0.07, starting_time=2.5)
    direct = compute_spectrogram(x, FS, s)
    np.testing.assert_allclose(lazy.data, direct.data, rtol=1e-5, atol=1e-6)
    assert lazy.starting_time == 2.5 and lazy.rate == pytest.approx(100.0)
    assert lazy.times[1] == pytest.approx(2.51)
    assert lazy.settings["fs"] == FS and lazy.settings["hop"] == 441


def test_nyquist_cap_warns():
    with pytest.warns(UserWarning, match="Nyquist"):
        freqs, _ = gammatone_filterbank(32000.0)
    assert freqs[-1] == pytest.approx(0.95 * 16000.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gammatone_filterbank(44100.0)  # 20 kHz is fine at 44.1 kHz
        gammatone_filterbank(48000.0)


def test_too_low_fs_raises():
    with pytest.raises(ValueError, match="too low"):
        gammatone_filterbank(400.0)
    with pytest.raises(ValueError, match="too low"):
        compute_spectrogram(np.zeros(100), 400.0)


def test_nan_raises_with_index():
    x = np.zeros(5000)
    x[3210] = np.nan
    with pytest.raises(ValueError, match="3210"):
        compute_spectrogram(x, FS, SpectrogramSettings(n_channels=2), chunk_s=0.01)
    x[3210] = 0.0
    x[4999] = np.inf
    with pytest.raises(ValueError, match="4999"):
        compute_spectrogram(x, FS, SpectrogramSettings(n_channels=2))


def test_multichannel_is_mixed_and_bad_settings_rejected():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((int(0.2 * FS), 2))
    s = SpectrogramSettings(n_channels=4)
    mean = compute_spectrogram(x, FS, s)
    np.testing.assert_allclose(mean.data, compute_spectrogram(x.mean(axis=1), FS, s).data)
    assert mean.settings["channel_used"] == "mean of 2"
    right = compute_spectrogram(x, FS, SpectrogramSettings(n_channels=4, channel=1))
    np.testing.assert_allclose(right.data, compute_spectrogram(x[:, 1], FS, s).data)
    with pytest.raises(ValueError, match="channel=2 but the sound has 2 channels"):
        compute_spectrogram(x, FS, SpectrogramSettings(n_channels=4, channel=2))
    with pytest.raises(ValueError, match="n_samples, n_channels"):
        compute_spectrogram(np.zeros((100, 2, 2)), FS)
    with pytest.raises(TypeError):
        compute_spectrogram(np.zeros(100), FS, settings={"n_channels": 3})
    with pytest.raises(ValueError, match="chunk_s"):
        compute_spectrogram(np.zeros(1000), FS, chunk_s=0)


def test_silence_is_zero_and_short_input_empty():
    # level="rms" refuses a silent sound (tests/test_sound_layouts.py); without it silence
    # gives zeros
    raw = SpectrogramSettings(level="none")
    spec = compute_spectrogram(np.zeros(2000), FS, raw)
    assert spec.data.shape == (4, 32)
    assert np.all(np.abs(spec.data) < 1e-10)  # only the denormal guard remains
    assert compute_spectrogram(np.zeros(100), FS, raw).data.shape == (0, 32)
    assert compute_spectrogram(np.ones(100), FS).data.shape == (0, 32)
