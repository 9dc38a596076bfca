"""Tests of the NWB reading side of stimulus and responses: io.sound, io.trials, io.session."""

from __future__ import annotations

import hashlib
import warnings
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from dateutil.tz import tzutc
from pynwb import NWBHDF5IO, NWBFile, TimeSeries
from pynwb.ecephys import ElectricalSeries

from nwb_subspace.io.session import load_session_data
from nwb_subspace.io.sound import find_sound, find_stored_spectrogram, load_spectrogram
from nwb_subspace.io.trials import read_trials
from nwb_subspace.results import ResultSet, SpectrogramResult
from nwb_subspace.stimulus.spectrogram import SpectrogramSettings, compute_spectrogram

FS = 48000.0
SMALL = SpectrogramSettings(n_channels=8, f_min=300.0, f_max=12000.0)


def _sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _sound_series(name="sound", n=None, fs=FS, seed=0, **kwargs) -> TimeSeries:
    rng = np.random.default_rng(seed)
    data = kwargs.pop("data", None)
    if data is None:
        data = (0.1 * rng.standard_normal(n)).astype(np.float32)
    if "timestamps" not in kwargs:
        kwargs.setdefault("rate", fs)
        kwargs.setdefault("starting_time", 0.0)
    return TimeSeries(name=name, data=data, unit="Pa", description="Sound.", **kwargs)


def write_foreign(
    path: Path,
    *,
    fs: float = FS,
    duration_s: float = 9.0,
    sound: bool = True,
    sound_kwargs: dict | None = None,
    extra_sounds: int = 0,
    trial_columns: dict | None = None,
    trials: bool = True,
    spike_offset: float = 0.0,
    electrical_series: bool = False,
    seed: int = 0,
) -> Path:
    """A session laid out as docs/methods.md ("Input: sound, presentations and designs") says, written by plain pynwb.

    Sound: one TimeSeries at ``fs`` in stimulus/presentation (noise whose loudness follows
    each presentation). Trials: 6 estimation sounds once, 2 validation sounds 4 times,
    0.4 s each, with a ``sound_id`` column. Units: 4 Poisson units driven by the envelope.
    """
    rng = np.random.default_rng(seed)
    nwb = NWBFile(
        session_description="Written by other code.",
        identifier=f"foreign-{seed}",
        session_start_time=datetime(2026, 1, 1, tzinfo=tzutc()),
    )
    ids = [f"e{i}" for i in range(6)] + ["v0", "v1"] * 4
    ids = [ids[i] for i in rng.permutation(len(ids))]
    dur, step = 0.4, 0.6
    starts = 0.2 + step * np.arange(len(ids))
    n = int(duration_s * fs)
    env = np.full(n, 0.05)
    # a fixed loudness pattern per sound, so repeats give repeatable responses
    pattern = {s: 0.3 + np.abs(rng.standard_normal(8)) for s in sorted(set(ids))}
    for s, t in zip(ids, starts, strict=True):
        a = int(t * fs)
        seg = env[a : a + int(dur * fs)]  # a view; empty past the end of a short sound
        seg[:] = np.repeat(pattern[s], int(dur * fs) // 8 + 1)[: seg.size]
    if sound:
        kw = dict(sound_kwargs or {})
        if "data" not in kw and "n" not in kw:
            kw["data"] = (env * rng.standard_normal(n)).astype(np.float32)
        nwb.add_stimulus(_sound_series(fs=fs, **kw))
    for k in range(extra_sounds):
        nwb.add_stimulus(_sound_series(name=f"sound{k + 2}", n=n, fs=fs, seed=k + 1))
    if trials:
        cols = {"sound_id": ids} if trial_columns is None else trial_columns
        for name in cols:
            nwb.add_trial_column(name, f"The {name}.")
        for i, t in enumerate(starts):
            nwb.add_trial(
                start_time=float(t), stop_time=float(t + dur), **{c: v[i] for c, v in cols.items()}
            )
    rate_env = np.interp(np.arange(0, duration_s, 0.001), np.arange(n) / fs, env)
    for u in range(4):
        lam = 0.005 + 0.05 * rate_env * (u + 1)  # spikes per ms
        times = np.flatnonzero(rng.random(lam.size) < lam) * 0.001 + spike_offset
        nwb.add_unit(spike_times=times)
    if electrical_series:
        dev = nwb.create_device(name="probe")
        grp = nwb.create_electrode_group("g", description="g", location="AC", device=dev)
        for _ in range(2):
            nwb.add_electrode(group=grp, location="AC")
        region = nwb.create_electrode_table_region([0, 1], "all")
        nwb.add_acquisition(
            ElectricalSeries(
                name="ElectricalSeries",
                data=rng.standard_normal((int(fs), 2)).astype(np.float32),
                electrodes=region,
                rate=30000.0,
            )
        )
    with NWBHDF5IO(str(path), "w") as io:
        io.write(nwb)
    return path


@pytest.fixture
def foreign(tmp_path: Path) -> Path:
    return write_foreign(tmp_path / "foreign.nwb")


# ---------------------------------------------------------------- loading good files


def test_foreign_48k_file_loads(foreign):
    before = _sha(foreign)
    data = load_session_data(foreign, spectrogram_settings=SMALL)
    assert _sha(foreign) == before
    assert data.rate == 100.0 and data.starting_time == 0.0
    assert data.spectrogram.data.shape == (900, 8)
    assert data.counts.shape == (900, 4) and data.counts.dtype == np.float32
    assert data.unit_ids.tolist() == [0, 1, 2, 3]
    assert data.spectrogram_source.kind == "computed"
    assert data.spectrogram_source.path == "/stimulus/presentation/sound"
    assert data.split.validation_sounds == ("v0", "v1")
    assert data.split.min_repeats == 3
    assert set(data.validation) == {"v0", "v1"}
    assert data.validation["v0"].repeats.shape == (4, 40, 4)
    # the loudest units (driven hardest) have repeatable responses
    assert np.all(data.noise_ceiling[2:] > 0.5)
    with NWBHDF5IO(str(foreign), "r") as io:
        nwb = io.read()
        spikes = [nwb.units["spike_times"][i] for i in range(4)]
        wave = nwb.stimulus["sound"].data[:]
    expected = [np.sum((s >= 0) & (s < 9.0)) for s in spikes]
    np.testing.assert_array_equal(data.counts.sum(axis=0), expected)
    # level="rms": the RMS is taken over the presented samples (inside the trials)
    presented = np.ceil(np.stack([data.trials.start, data.trials.stop], 1) * FS - 1e-6)
    ref = compute_spectrogram(wave, FS, SMALL, presented=presented.astype(np.int64))
    np.testing.assert_allclose(data.spectrogram.data, ref.data, rtol=1e-6, atol=1e-6)
    assert data.spectrogram.settings["sound_rms"] == pytest.approx(ref.settings["sound_rms"])
    assert data.spectrogram.settings["layout"] == "continuous"
    fit = data.segments("fit")
    assert all(b - a == 40 for a, b in fit)
    assert data.info["split"]["n_validation_trials"] == 8


def test_conversion_offset_and_starting_time_are_respected(tmp_path):
    rng = np.random.default_rng(0)
    raw = (rng.standard_normal(int(FS)) * 1000).astype(np.int16)
    kw = {"data": raw, "conversion": 1e-4, "offset": 0.01, "starting_time": 2.5}
    path = write_foreign(tmp_path / "f.nwb", sound_kwargs=kw, trials=False, duration_s=1.0)
    with NWBHDF5IO(str(path), "r") as io:
        spec, source = load_spectrogram(io.read(), SMALL)
    ref = compute_spectrogram(raw.astype(np.float64) * 1e-4 + 0.01, FS, SMALL, starting_time=2.5)
    np.testing.assert_allclose(spec.data, ref.data, rtol=1e-6, atol=1e-6)
    assert spec.starting_time == 2.5 and source.name == "sound"


def test_chunked_read_from_the_file_equals_one_shot(foreign):
    with NWBHDF5IO(str(foreign), "r") as io:
        nwb = io.read()
        small, _ = load_spectrogram(nwb, SMALL, chunk_s=0.3737)  # boundaries mid-bin
        whole, _ = load_spectrogram(nwb, SMALL, chunk_s=1000.0)
    np.testing.assert_allclose(small.data, whole.data, rtol=1e-5, atol=1e-6)


def test_regular_timestamps_give_the_time_base(tmp_path):
    n = int(FS / 2)
    stamps = 1.0 + np.arange(n) / FS
    path = write_foreign(
        tmp_path / "f.nwb",
        sound_kwargs={"n": n, "timestamps": stamps},
        trials=False,
        duration_s=0.5,
    )
    with NWBHDF5IO(str(path), "r") as io:
        spec, _ = load_spectrogram(io.read(), SMALL)
    assert spec.starting_time == 1.0 and spec.rate == 100.0 and spec.n_bins == 50


def test_find_sound_skips_electrical_series_and_takes_a_name(tmp_path):
    path = write_foreign(tmp_path / "f.nwb", electrical_series=True, extra_sounds=1, trials=False)
    with NWBHDF5IO(str(path), "r") as io:
        nwb = io.read()
        assert find_sound(nwb, "sound2").name == "sound2"
        with pytest.raises(ValueError, match="2 series could be the sound") as err:
            find_sound(nwb)
        assert "sound2" in str(err.value) and "ElectricalSeries" not in str(err.value)
        with pytest.raises(ValueError, match="cannot be used as the sound"):
            find_sound(nwb, "ElectricalSeries")
        with pytest.raises(ValueError, match="no series named 'nope'"):
            find_sound(nwb, "nope")


def test_acoustic_waveform_series_is_detected_by_type_name():
    class AcousticWaveformSeries(TimeSeries):  # stand-in for ndx-sound's class
        neurodata_type = "AcousticWaveformSeries"

    nwb = NWBFile(session_description="s", identifier="i", session_start_time=datetime.now(tzutc()))
    nwb.add_acquisition(
        AcousticWaveformSeries(name="mic", data=np.zeros(100), unit="Pa", rate=44100.0)
    )
    nwb.add_acquisition(TimeSeries(name="slow", data=np.zeros(100), unit="V", rate=100.0))
    assert find_sound(nwb).name == "mic"


def test_mock_file_sound_is_found_and_capped(mock_file):
    with NWBHDF5IO(str(mock_file), "r") as io:
        nwb = io.read()
        assert find_sound(nwb).name == "sound"
        with pytest.warns(UserWarning, match="capping"):
            spec, _ = load_spectrogram(nwb, SpectrogramSettings(n_channels=4))
    assert spec.frequencies[-1] < 4000.0 and spec.n_bins == 400


def test_stored_spectrogram_is_reused(foreign):
    from nwb_subspace.io.writer import write_results

    with NWBHDF5IO(str(foreign), "r") as io:
        spec, _ = load_spectrogram(io.read(), SMALL)
    stored = SpectrogramResult(
        data=spec.data + 1.0,  # marked, to see which one comes back
        frequencies=spec.frequencies,
        rate=spec.rate,
        starting_time=spec.starting_time,
        settings=spec.settings,
        source_sound="sound",
    )
    write_results(foreign, ResultSet(spectrograms=[stored]), "run1")
    with NWBHDF5IO(str(foreign), "r") as io:
        nwb = io.read()
        again, source = load_spectrogram(nwb, SMALL)
        assert source.kind == "stored" and source.path == "/processing/misc/run1/spectrogram"
        np.testing.assert_allclose(again.data, spec.data + 1.0)
        fresh, source2 = load_spectrogram(nwb, SMALL, reuse=False)
        assert source2.kind == "computed"
        other = SpectrogramSettings(n_channels=4, f_min=300.0, f_max=12000.0)
        assert find_stored_spectrogram(nwb, other) is None
        assert find_stored_spectrogram(nwb, SMALL, sound="other") is None
    data = load_session_data(foreign, spectrogram_settings=SMALL)
    assert data.spectrogram_source.kind == "stored"


def test_epochs_with_tags(tmp_path):
    nwb = NWBFile(session_description="s", identifier="i", session_start_time=datetime.now(tzutc()))
    for i, tag in enumerate(["a", "b", "a"]):
        nwb.add_epoch(start_time=float(i), stop_time=i + 0.5, tags=[tag])
    with pytest.raises(ValueError, match="no column naming the sound"):
        read_trials(nwb)
    trials = read_trials(nwb, sound_column="tags")
    assert trials.sound_id.tolist() == ["a", "b", "a"] and trials.table == "epochs"


def test_integer_sound_ids_and_explicit_column(tmp_path):
    ids = list(range(6)) + [7, 8] * 4
    cols = {"condition": ["x"] * 14, "stim": ids}
    path = write_foreign(tmp_path / "f.nwb", trial_columns=cols)
    with NWBHDF5IO(str(path), "r") as io:
        trials = read_trials(io.read())
    assert trials.sound_column == "stim" and trials.sound_id[:6].tolist() == list("012345")
    with NWBHDF5IO(str(path), "r") as io:
        trials = read_trials(io.read(), sound_column="condition")
    assert set(trials.sound_id) == {"x"}


# ---------------------------------------------------------------- bad input


def _bad_files(tmp: Path) -> list[tuple[str, Path, dict, str]]:
    n = int(9 * FS)
    nan_wave = np.zeros(n, dtype=np.float32) + 0.01
    nan_wave[12345] = np.nan
    inf_wave = nan_wave.copy()
    inf_wave[12345] = np.inf
    irregular = np.arange(n) / FS
    irregular[n // 2 :] += 0.05
    return [
        ("no sound", write_foreign(tmp / "a.nwb", sound=False), {}, "no sound found"),
        ("two sounds", write_foreign(tmp / "b.nwb", extra_sounds=1), {}, "pass sound_name="),
        (
            "no overlap",
            write_foreign(tmp / "c.nwb", spike_offset=1000.0),
            {},
            "do not overlap",
        ),
        (
            "no sound column",
            write_foreign(tmp / "d.nwb", trial_columns={"condition": ["x"] * 14}),
            {},
            "no column naming the sound",
        ),
        (
            "two sound columns",
            write_foreign(tmp / "e.nwb", trial_columns={"sound_id": ["a"] * 14, "stim": [1] * 14}),
            {},
            "several columns",
        ),
        ("no trials", write_foreign(tmp / "f.nwb", trials=False), {}, "no \\(non-empty\\) trials"),
        (
            "NaN sample",
            write_foreign(tmp / "g.nwb", sound_kwargs={"data": nan_wave}),
            {},
            "sound: wave has a non-finite value .*nan.* at sample index 12345",
        ),
        (
            "inf sample",
            write_foreign(tmp / "h.nwb", sound_kwargs={"data": inf_wave}),
            {},
            "sound: wave has a non-finite value .*inf.* at sample index 12345",
        ),
        (
            "rate too low",
            write_foreign(tmp / "i.nwb", fs=300.0),
            {"sound_name": "sound"},
            "too low for f_min=200.0",
        ),
        (
            "irregular timestamps",
            write_foreign(tmp / "j.nwb", sound_kwargs={"n": n, "timestamps": irregular}),
            {},
            "irregular timestamps",
        ),
        (
            "trials outside the sound",
            write_foreign(tmp / "k.nwb", sound_kwargs={"n": int(3 * FS)}),
            {},
            "outside the spectrogram's span",
        ),
        ("missing file", tmp / "missing.nwb", {}, "no such NWB file"),
    ]


def test_bad_input_raises_clearly_and_leaves_the_file_untouched(tmp_path):
    for label, path, kwargs, message in _bad_files(tmp_path):
        before = _sha(path) if path.exists() else None
        exc = FileNotFoundError if not path.exists() else ValueError
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            with pytest.raises(exc, match=message):
                load_session_data(path, spectrogram_settings=None, **kwargs)
        if before is not None:
            assert _sha(path) == before, label


def test_rate_too_low_for_chosen_settings(tmp_path):
    path = write_foreign(tmp_path / "f.nwb", fs=8000.0)
    before = _sha(path)
    settings = SpectrogramSettings(f_min=5000.0, f_max=20000.0)
    with pytest.raises(ValueError, match="/stimulus/presentation/sound: sampling rate 8000"):
        load_session_data(path, spectrogram_settings=settings)
    assert _sha(path) == before


# ---------------------------------------------------------------- simulator


@pytest.mark.slow
def test_simulated_tiny_session(tmp_path):
    sim = pytest.importorskip("nwb_subspace.simulate")
    nwb_path, truth_path = sim.simulate_session(tmp_path / "tiny.nwb", preset="tiny", seed=0)
    before = _sha(nwb_path)
    data = load_session_data(nwb_path)
    assert _sha(nwb_path) == before
    with NWBHDF5IO(str(nwb_path), "r") as io:
        nwb = io.read()
        is_val = np.asarray(nwb.trials["is_validation"][:], dtype=bool)
        n_units = len(nwb.units)
    # the repeat rule recovers the simulator's own validation set
    np.testing.assert_array_equal(np.sort(data.split.validation_trials), np.flatnonzero(is_val))
    assert data.counts.shape[1] == n_units
    assert data.spectrogram.data.shape[1] == 32 and data.rate == 100.0
    assert np.nanmin(data.noise_ceiling) > 0.2


def test_stored_spectrogram_stands_in_for_a_missing_sound(tmp_path):
    from nwb_subspace.io.writer import write_results

    path = write_foreign(tmp_path / "f.nwb", sound=False)
    rng = np.random.default_rng(0)
    stored = SpectrogramResult(
        data=rng.random((900, 8)).astype(np.float32),
        frequencies=np.geomspace(300.0, 12000.0, 8),
        rate=100.0,
        settings={**SMALL.to_dict(), "fs": FS},
    )
    write_results(path, ResultSet(spectrograms=[stored]), "run1")
    data = load_session_data(path, spectrogram_settings=SMALL)
    assert data.spectrogram_source.kind == "stored"
    np.testing.assert_allclose(data.spectrogram.data, stored.data)
    before = _sha(path)
    with pytest.raises(ValueError, match="none has the requested settings"):
        load_session_data(path)  # default settings: 32 channels, not stored
    assert _sha(path) == before
