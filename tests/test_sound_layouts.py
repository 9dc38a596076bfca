"""Every sound layout (continuous, per-presentation, templates, sound-dir, stored) and the
level-free spectrogram: each written the way real tools write it, loaded, compared."""

from __future__ import annotations

import warnings
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import scipy.io.wavfile
from pynwb import NWBHDF5IO, NWBFile, TimeSeries

from nwb_subspace.io.inspect import describe_file, summarize_file
from nwb_subspace.io.sound import find_stored_spectrogram, load_spectrogram, plan_spectrogram
from nwb_subspace.io.trials import read_trials
from nwb_subspace.simulate import PRESETS, simulate_session
from nwb_subspace.stimulus.responses import Trials
from nwb_subspace.stimulus.spectrogram import (
    SpectrogramSettings,
    compute_spectrogram,
    interval_rms,
    level_gain,
)

FS = 44100.0
S8 = SpectrogramSettings(n_channels=8, f_min=300.0, f_max=12000.0)
# three sounds of 0.3-0.5 s; "a" repeated: onsets on and off the 441-sample bin grid
SOUNDS = {"a": 0.4, "b": 0.3, "c": 0.5}
ORDER = ["a", "b", "a", "c", "a"]
ONSETS = [0.5, 1.3051, 2.1, 2.9003, 3.8]


def _sounds(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        k: (0.2 * rng.standard_normal(int(d * FS))).astype(np.float32) for k, d in SOUNDS.items()
    }


def _nwbfile() -> NWBFile:
    return NWBFile("layouts", "layouts", datetime(2024, 1, 1, tzinfo=UTC))


def _add_trials(nwb: NWBFile, order=ORDER, onsets=ONSETS) -> None:
    nwb.add_trial_column("sound_id", "Sound presented.")
    for sid, t in zip(order, onsets, strict=True):
        nwb.add_trial(start_time=t, stop_time=t + SOUNDS[sid], sound_id=sid)


def _session_wave(sounds: dict[str, np.ndarray], duration_s: float = 5.0) -> np.ndarray:
    wave = np.zeros(int(duration_s * FS), dtype=np.float32)
    for sid, t in zip(ORDER, ONSETS, strict=True):
        a = int(round(t * FS))
        wave[a : a + sounds[sid].size] = sounds[sid]
    return wave


def _write(nwb: NWBFile, path: Path) -> Path:
    with NWBHDF5IO(str(path), "w") as io:
        io.write(nwb)
    return path


def _load(path: Path, settings=S8, **kwargs):
    with NWBHDF5IO(str(path), "r") as io:
        nwb = io.read()
        trials = read_trials(nwb) if nwb.trials is not None else None
        plan = plan_spectrogram(nwb, settings, trials=trials, **kwargs)
        return plan.load(), plan


def _reference(sounds: dict[str, np.ndarray], settings=S8):
    """Spectrogram of the equivalent continuous sound, RMS over the presented samples."""
    wave = _session_wave(sounds)
    presented = [
        [int(np.ceil(t * FS - 1e-6)), int(np.ceil((t + SOUNDS[s]) * FS - 1e-6))]
        for s, t in zip(ORDER, ONSETS, strict=True)
    ]
    return compute_spectrogram(wave, FS, settings, presented=np.array(presented))


def _same(a, b, rtol=1e-5, atol=1e-6):
    """Equal over the common bins (both start at 0 s); the rest is silence."""
    assert a.starting_time == b.starting_time == 0.0 and a.rate == b.rate
    n = min(a.n_bins, b.n_bins)
    np.testing.assert_allclose(a.data[:n], b.data[:n], rtol=rtol, atol=atol)
    assert np.abs(a.data[n:]).max(initial=0) < 1e-6 and np.abs(b.data[n:]).max(initial=0) < 1e-6


# --------------------------------------------------------------------------- numerics


def test_interval_rms_by_hand():
    wave = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    # the first interval twice (a repeated sound counts twice), the last clipped to the end
    intervals = np.array([[0, 2], [0, 2], [4, 10]])
    expected = np.sqrt((1 + 4 + 1 + 4 + 25 + 36) / 6)
    for chunk in (1, 4, 100):
        rms, n = interval_rms(wave, intervals, chunk=chunk)
        assert n == 6 and rms == pytest.approx(expected, rel=1e-12)
    assert interval_rms(wave)[0] == pytest.approx(np.sqrt(np.mean(wave**2)))
    stereo = np.stack([wave, 3 * wave], axis=1)  # mean of the channels: 2 * wave
    assert interval_rms(stereo, intervals)[0] == pytest.approx(2 * expected)
    assert interval_rms(stereo, intervals, channel=1)[0] == pytest.approx(3 * expected)
    with pytest.raises(ValueError, match="no presented sample lies inside the sound"):
        interval_rms(wave, np.array([[10, 20]]))
    assert level_gain(0.6) == pytest.approx(0.5)  # reference_rms 0.3
    assert level_gain(0.6, SpectrogramSettings(level="none")) == 1.0
    with pytest.raises(ValueError, match="silent"):
        level_gain(0.0)


def test_level_makes_the_spectrogram_scale_free_and_is_recorded():
    x = _sounds()["c"].astype(np.float64)
    one = compute_spectrogram(x, FS, S8)
    loud = compute_spectrogram(250.0 * x, FS, S8)
    np.testing.assert_allclose(loud.data, one.data, rtol=1e-5, atol=1e-6)
    assert loud.settings["sound_rms"] == pytest.approx(250 * one.settings["sound_rms"])
    assert loud.settings["level_gain"] == pytest.approx(0.3 / loud.settings["sound_rms"])
    # "none": today's behaviour, in waveform units
    raw = SpectrogramSettings(n_channels=8, f_min=300.0, f_max=12000.0, level="none")
    scaled = compute_spectrogram(x * one.settings["level_gain"], FS, raw)
    np.testing.assert_allclose(scaled.data, one.data, rtol=1e-5, atol=1e-6)
    assert "sound_rms" not in scaled.settings
    with pytest.raises(ValueError, match="silent"):
        compute_spectrogram(np.zeros(4410), FS, S8)


def test_old_stored_settings_do_not_match_the_level_free_default():
    old = {k: v for k, v in SpectrogramSettings().to_dict().items()}
    for key in ("level", "reference_rms", "channel"):
        old.pop(key)
    from nwb_subspace.io.sound import settings_match

    assert not settings_match(old, SpectrogramSettings().to_dict())
    assert settings_match(
        {**SpectrogramSettings().to_dict(), "sound_rms": 1.0}, SpectrogramSettings().to_dict()
    )


# --------------------------------------------------------------------------- file formats


@pytest.mark.parametrize(
    "kind", ["float", "int16", "int16-conversion"], ids=["float", "int16", "int16-conv"]
)
def test_number_formats_give_the_same_spectrogram(tmp_path, kind):
    sounds = _sounds()
    wave = _session_wave(sounds)
    wave = wave / np.abs(wave).max()  # float in [-1, 1]
    if kind == "float":
        data, kw = wave.astype(np.float32), {}
    else:
        data = np.round(wave * 32767).astype(np.int16)
        kw = {"conversion": 0.01} if kind == "int16-conversion" else {}
    nwb = _nwbfile()
    nwb.add_stimulus(TimeSeries(name="sound", data=data, unit="a.u.", rate=FS, **kw))
    _add_trials(nwb)
    spec, plan = _load(_write(nwb, tmp_path / "f.nwb"))
    assert plan.layout == "continuous" and plan.source.layout == "continuous"
    ref = _reference({k: v / np.abs(_session_wave(sounds)).max() for k, v in sounds.items()})
    diff = np.abs(spec.data - ref.data).max() / np.abs(ref.data).max()
    assert diff < 1e-3, kind
    expected_rms = ref.settings["sound_rms"] * {"float": 1, "int16": 32767}.get(kind, 327.67)
    assert spec.settings["sound_rms"] == pytest.approx(expected_rms, rel=1e-3)


def test_stereo_mean_or_one_channel(tmp_path):
    sounds = _sounds()
    left = _session_wave(sounds)
    right = _session_wave(_sounds(seed=1))
    nwb = _nwbfile()
    nwb.add_stimulus(
        TimeSeries(name="sound", data=np.stack([left, right], axis=1), unit="a.u.", rate=FS)
    )
    _add_trials(nwb)
    path = _write(nwb, tmp_path / "stereo.nwb")
    spec, _ = _load(path)
    assert spec.settings["channel_used"] == "mean of 2"
    presented = np.array(
        [
            [round(t * FS), round(t * FS) + sounds[s].size]
            for s, t in zip(ORDER, ONSETS, strict=True)
        ]
    )
    mean = compute_spectrogram((left + right) / 2.0, FS, S8, presented=presented)
    np.testing.assert_allclose(spec.data, mean.data, rtol=1e-5, atol=1e-6)
    one = SpectrogramSettings(n_channels=8, f_min=300.0, f_max=12000.0, channel=1)
    spec1, _ = _load(path, one)
    assert spec1.settings["channel_used"] == 1
    ref1 = compute_spectrogram(right, FS, one, presented=presented)
    np.testing.assert_allclose(spec1.data, ref1.data, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="channel=2 but the sound has 2 channels"):
        _load(path, SpectrogramSettings(n_channels=8, f_min=300.0, f_max=12000.0, channel=2))


# --------------------------------------------------------------------------- layouts


def test_per_presentation_ndx_sound_series(tmp_path):
    from ndx_sound import AcousticWaveformSeries

    sounds = _sounds()
    nwb = _nwbfile()
    for k, (sid, t) in enumerate(zip(ORDER, ONSETS, strict=True)):
        nwb.add_stimulus(
            AcousticWaveformSeries(
                name=f"sound_{k + 1:04d}", data=sounds[sid], rate=FS, starting_time=t
            )
        )
    _add_trials(nwb)
    spec, plan = _load(_write(nwb, tmp_path / "pp.nwb"))
    assert plan.layout == "per-presentation"
    assert "5 sound series" in str(plan.source) and "per-presentation" in str(plan.source)
    _same(spec, _reference(sounds))
    assert spec.settings["layout"] == "per-presentation"


def test_per_presentation_written_by_neuroconv_audio_interface(tmp_path):
    AudioInterface = pytest.importorskip("neuroconv.datainterfaces").AudioInterface
    sounds = _sounds()
    paths = []
    for k, sid in enumerate(ORDER):
        paths.append(tmp_path / f"{k}_{sid}.wav")
        scipy.io.wavfile.write(paths[-1], int(FS), np.round(sounds[sid] * 20000).astype(np.int16))
    interface = AudioInterface(file_paths=paths)
    interface.set_aligned_segment_starting_times([float(t) for t in ONSETS])
    nwb = _nwbfile()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        interface.add_to_nwbfile(nwb, metadata=interface.get_metadata())
    _add_trials(nwb)
    path = _write(nwb, tmp_path / "neuroconv.nwb")
    spec, plan = _load(path)
    assert plan.layout == "per-presentation"
    assert plan.source.neurodata_type == "AcousticWaveformSeries"
    quantised = {k: np.round(v * 20000).astype(np.int16) / 20000 for k, v in sounds.items()}
    _same(spec, _reference(quantised), rtol=1e-4, atol=1e-5)
    assert "per-presentation" in describe_file(path)


def test_templates_played_at_trial_starts(tmp_path):
    sounds = _sounds()
    nwb = _nwbfile()
    for sid, x in sounds.items():
        nwb.add_stimulus_template(TimeSeries(name=sid, data=x, unit="a.u.", rate=FS))
    _add_trials(nwb)
    path = _write(nwb, tmp_path / "templates.nwb")
    spec, plan = _load(path)
    assert plan.layout == "templates"
    assert spec.settings["filtered"] == "per sound and phase"
    _same(spec, _reference(sounds))
    s = summarize_file(path)
    assert s.layout == "templates" and "/stimulus/templates" in s.layout_detail
    assert not [m for m in s.missing if "sound" in m]


def test_templates_played_by_an_index_series():
    """IndexSeries data index the templates sorted by name (only readable from older files:
    pynwb 4 refuses to build one linked to a TimeSeries, so it is built as a reader would)."""
    from pynwb.image import IndexSeries

    sounds = _sounds()
    nwb = _nwbfile()
    for sid, x in sounds.items():
        nwb.add_stimulus_template(TimeSeries(name=sid, data=x, unit="a.u.", rate=FS))
    ix = IndexSeries.__new__(IndexSeries, in_construct_mode=True)
    index = np.array([["a", "b", "c"].index(s) for s in ORDER], dtype=np.uint32)
    ix.__init__(
        name="played",
        data=index,
        unit="N/A",
        indexed_timeseries=nwb.stimulus_template["a"],
        timestamps=np.array(ONSETS),
    )
    nwb.add_stimulus(ix)
    plan = plan_spectrogram(nwb, S8)  # no trials: the IndexSeries gives the times
    assert plan.layout == "templates" and "IndexSeries" in str(plan.source)
    sounds_rms = _reference(sounds).settings["sound_rms"]
    spec = plan.load()
    assert spec.settings["sound_rms"] == pytest.approx(sounds_rms, rel=1e-6)
    _same(spec, _reference(sounds))


def test_sound_dir_of_wav_files(tmp_path):
    sounds = _sounds()
    folder = tmp_path / "wavs"
    folder.mkdir()
    for sid, x in sounds.items():
        scipy.io.wavfile.write(folder / f"{sid}.wav", int(FS), x)
    nwb = _nwbfile()
    _add_trials(nwb)
    path = _write(nwb, tmp_path / "trials_only.nwb")
    spec, plan = _load(path, sound_dir=folder)
    assert plan.layout == "sound-dir" and str(folder) in str(plan.source)
    _same(spec, _reference(sounds))
    (folder / "c.wav").unlink()
    with pytest.raises(ValueError, match=r"lacks 1 of the 3 sounds.*'c.wav'"):
        _load(path, sound_dir=folder)


def test_stored_spectrogram_layout(tmp_path):
    from nwb_subspace.io.writer import write_results
    from nwb_subspace.results import ResultSet, SpectrogramResult

    sounds = _sounds()
    nwb = _nwbfile()
    for sid, x in sounds.items():
        nwb.add_stimulus_template(TimeSeries(name=sid, data=x, unit="a.u.", rate=FS))
    _add_trials(nwb)
    path = _write(nwb, tmp_path / "f.nwb")
    spec, plan = _load(path)
    old_settings = {k: v for k, v in spec.settings.items() if k not in ("level", "layout")}
    results = [
        SpectrogramResult(
            data=spec.data + 1.0,
            frequencies=spec.frequencies,
            rate=spec.rate,
            settings=old_settings,  # as written before the level setting existed
            name="old",
        )
    ]
    write_results(path, ResultSet(spectrograms=results), "run1")
    with NWBHDF5IO(str(path), "r") as io:
        assert find_stored_spectrogram(io.read(), S8) is None
    again, plan = _load(path)
    assert plan.layout == "templates"  # the old one is not reused
    write_results(
        path,
        ResultSet(
            spectrograms=[
                SpectrogramResult(
                    data=spec.data + 2.0,
                    frequencies=spec.frequencies,
                    rate=spec.rate,
                    settings=spec.settings,
                    name="new",
                )
            ]
        ),
        "run2",
    )
    stored, plan = _load(path, layout="stored")
    assert plan.layout == "stored" and plan.source.kind == "stored"
    np.testing.assert_allclose(stored.data, spec.data + 2.0)
    stored, plan = _load(path)  # auto: a stored one with these settings and layout is reused
    assert plan.layout == "stored"


# --------------------------------------------------------------------------- the simulator


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    """The same small session (seed 0) written in each layout and number format."""
    base = PRESETS["tiny"].replace(estimation_s=12.0, n_units=2, spectrogram=S8)
    folder = tmp_path_factory.mktemp("layouts")
    out = {}
    for layout in ("continuous", "per-presentation", "templates"):
        for fmt in ("float", "int16"):
            cfg = base.replace(layout=layout, sound_format=fmt)
            out[layout, fmt] = simulate_session(folder / f"{layout}-{fmt}.nwb", cfg, seed=0)[0]
    return out


def test_simulated_layouts_give_the_same_spectrogram(simulated):
    specs = {key: _load(path) for key, path in simulated.items()}
    ref, plan = specs["continuous", "float"]
    assert plan.layout == "continuous"
    for (layout, fmt), (spec, plan) in specs.items():
        assert plan.layout == layout
        if fmt == "float":
            _same(spec, ref)
        else:  # int16 rounding only
            n = min(spec.n_bins, ref.n_bins)
            diff = np.abs(spec.data[:n] - ref.data[:n]).max() / np.abs(ref.data).max()
            assert diff < 1e-3, (layout, fmt)
    text = describe_file(simulated["per-presentation", "float"])
    assert "  sound layout: per-presentation (" in text
    assert "everything the analysis needs is present" in text


def test_simulated_truth_uses_the_analysis_spectrogram(tmp_path):
    """Ground truth is computed on the level-normalised spectrogram, at any sound_rms."""
    from nwb_subspace.simulate import load_truth

    cfg = PRESETS["tiny"].replace(estimation_s=8.0, n_units=2, spectrogram=S8, sound_rms=0.05)
    path, truth_path = simulate_session(tmp_path / "quiet.nwb", cfg, seed=3)
    spec, _ = _load(path)
    truth = load_truth(truth_path)
    assert truth.meta["spectrogram"]["level_gain"] == pytest.approx(spec.settings["level_gain"])
    assert truth.meta["spectrogram"]["sound_rms"] == pytest.approx(spec.settings["sound_rms"])


# --------------------------------------------------------------------------- bad input


def test_overlapping_presentations_are_refused(tmp_path):
    sounds = _sounds()
    nwb = _nwbfile()
    for sid, x in sounds.items():
        nwb.add_stimulus_template(TimeSeries(name=sid, data=x, unit="a.u.", rate=FS))
    _add_trials(nwb, order=["a", "b"], onsets=[1.0, 1.2])  # "a" lasts 0.4 s
    with pytest.raises(ValueError, match=r"presentations overlap: trials row 0 \('a'\)"):
        _load(_write(nwb, tmp_path / "f.nwb"))


def test_missing_template_is_named(tmp_path):
    sounds = _sounds()
    nwb = _nwbfile()
    for sid in ("a", "b"):
        nwb.add_stimulus_template(TimeSeries(name=sid, data=sounds[sid], unit="a.u.", rate=FS))
    _add_trials(nwb)
    with pytest.raises(ValueError, match=r"rows \[3\] name sounds \['c'\].*sound_column="):
        _load(_write(nwb, tmp_path / "f.nwb"))


def test_silent_sound_and_no_presentation_inside(tmp_path):
    nwb = _nwbfile()
    nwb.add_stimulus(TimeSeries(name="sound", data=np.zeros(int(5 * FS)), unit="a.u.", rate=FS))
    _add_trials(nwb)
    path = _write(nwb, tmp_path / "silent.nwb")
    with pytest.raises(ValueError, match="/stimulus/presentation/sound: the presented sound is"):
        _load(path)
    spec, _ = _load(path, SpectrogramSettings(n_channels=8, f_min=300.0, level="none"))
    assert np.abs(spec.data).max() < 1e-10
    nwb = _nwbfile()
    nwb.add_stimulus(
        TimeSeries(name="sound", data=np.ones(int(FS)), unit="a.u.", rate=FS, starting_time=100.0)
    )
    _add_trials(nwb)
    with pytest.raises(ValueError, match="no trials row lies inside the sound"):
        _load(_write(nwb, tmp_path / "elsewhere.nwb"))


def test_ambiguous_series_and_bad_arguments(tmp_path):
    sounds = _sounds()
    nwb = _nwbfile()
    for sid in ("a", "b"):
        nwb.add_stimulus(TimeSeries(name=sid, data=sounds[sid], unit="a.u.", rate=FS))
    _add_trials(nwb)
    path = _write(nwb, tmp_path / "f.nwb")
    with pytest.raises(ValueError, match="2 series could be the sound.*layout='per-presentation'"):
        _load(path)
    with pytest.raises(ValueError, match="one sound series per trials row"):
        _load(path, layout="per-presentation")
    with pytest.raises(ValueError, match="layout must be one of"):
        _load(path, layout="nope")
    with pytest.raises(ValueError, match="sound_dir is read by layout='sound-dir' only"):
        _load(path, layout="continuous", sound_dir=tmp_path)
    with pytest.raises(ValueError, match="stimulus/templates holds no sound"):
        _load(path, layout="templates")
    trials = Trials(start=[0.0], stop=[1.0], sound_id=["a"])
    with NWBHDF5IO(str(path), "r") as io:
        with pytest.raises(ValueError, match="sound_dir .* is not a folder"):
            load_spectrogram(io.read(), S8, trials=trials, sound_dir=tmp_path / "none")
