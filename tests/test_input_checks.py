"""Issue 18 (items 3, 4, 10 and the up-front checks): every bad input a clear, early error.

* waveform_mean shapes are checked against the electrodes table, the units' electrodes and
  the waveform rate (transposed only when unambiguous, refused otherwise);
* overlapping trials are refused (or trimmed, with a warning) and no bin is ever in two
  parts of the split;
* ``inspect`` runs the checks ``run`` runs (:func:`nwb_subspace.io.session.check_session`);
* memory estimates refuse impossible settings before anything is allocated.
"""

from __future__ import annotations

import warnings
from datetime import UTC, datetime
from pathlib import Path

import h5py
import numpy as np
import pytest
from pynwb import NWBHDF5IO, NWBFile, TimeSeries

import nwb_subspace.io.session as session_module
import nwb_subspace.models.training as training_module
from nwb_subspace.io.inspect import describe_file, summarize_file
from nwb_subspace.io.session import (
    check_session,
    estimate_spectrogram_memory,
    load_session_data,
)
from nwb_subspace.io.units.reader import UnitsReadWarning, read_units
from nwb_subspace.models.training import TrainingConfig, estimate_memory, fit_model
from nwb_subspace.stimulus.responses import (
    Split,
    Trials,
    check_split_disjoint,
    overlapping_trials,
)
from nwb_subspace.stimulus.spectrogram import SpectrogramSettings
from nwb_subspace.testing.mock import write_mock_nwbfile

FS = 8000.0
SMALL = SpectrogramSettings(n_channels=8, f_min=200.0, f_max=3000.0)
DUR, STEP = 0.4, 0.6


def _ids() -> list[str]:
    """6 estimation sounds once, 2 validation sounds 4 times, in a fixed shuffled order."""
    ids = [f"e{i}" for i in range(6)] + ["v0", "v1"] * 4
    rng = np.random.default_rng(0)
    return [ids[i] for i in rng.permutation(len(ids))]


def write_session(
    path: Path,
    *,
    ids: list[str] | None = None,
    starts: np.ndarray | None = None,
    stops: np.ndarray | None = None,
    duration_s: float = 9.0,
    sound: np.ndarray | None = None,
    silent: bool = False,
) -> Path:
    """A small session: an 8 kHz noise sound, a ``sound_id`` trials table and 4 units."""
    rng = np.random.default_rng(1)
    ids = _ids() if ids is None else ids
    starts = 0.2 + STEP * np.arange(len(ids)) if starts is None else np.asarray(starts)
    stops = starts + DUR if stops is None else np.asarray(stops)
    nwb = NWBFile("checks", "checks", datetime(2026, 1, 1, tzinfo=UTC))
    if sound is None:
        sound = (0.1 * rng.standard_normal(int(duration_s * FS))).astype(np.float32)
    nwb.add_stimulus(TimeSeries(name="sound", data=sound, unit="Pa", rate=FS, starting_time=0.0))
    nwb.add_trial_column("sound_id", "The sound.")
    for a, b, s in zip(starts, stops, ids, strict=True):
        nwb.add_trial(start_time=float(a), stop_time=float(b), sound_id=s)
    for _ in range(4):
        times = [] if silent else np.sort(rng.uniform(0, duration_s, 300))
        nwb.add_unit(spike_times=times)
    with NWBHDF5IO(str(path), "w") as io:
        io.write(nwb)
    return path


# ------------------------------------------------------------------ item 4: overlapping trials


def _overlap_starts() -> tuple[list[str], np.ndarray, np.ndarray]:
    """An estimation trial running 0.3 s into the validation trial after it."""
    ids = _ids()
    starts = 0.2 + STEP * np.arange(len(ids))
    stops = starts + DUR
    i = next(k for k in range(len(ids) - 1) if ids[k].startswith("e") and ids[k + 1][0] == "v")
    stops[i] = starts[i + 1] + 0.3  # 0.3 s into the validation trial
    return ids, starts, stops


def test_overlapping_trials_are_found() -> None:
    trials = Trials(np.array([0.0, 1.0, 1.5]), np.array([1.2, 1.4, 2.0]), np.array(["a", "b", "c"]))
    assert overlapping_trials(trials) == [(0, 1)]
    same = Trials(np.array([0.0, 0.0]), np.array([1.0, 1.0]), np.array(["a", "b"]))
    assert overlapping_trials(same) == [(0, 1)]
    apart = Trials(np.array([0.0, 1.0]), np.array([1.0, 2.0]), np.array(["a", "b"]))
    assert overlapping_trials(apart) == []


def test_overlapping_trials_are_refused(tmp_path: Path) -> None:
    ids, starts, stops = _overlap_starts()
    path = write_session(tmp_path / "overlap.nwb", ids=ids, starts=starts, stops=stops)
    with pytest.raises(ValueError, match=r"overlap.*trials row") as err:
        load_session_data(path, spectrogram_settings=SMALL)
    assert "overlapping_trials" in str(err.value)  # names the setting that trims instead
    assert any("overlap" in p for p in check_session(path, spectrogram_settings=SMALL))


def test_one_interval_under_two_sounds_is_refused(tmp_path: Path) -> None:
    ids = _ids() + ["e0"]
    starts = 0.2 + STEP * np.arange(len(ids) - 1)
    starts = np.append(starts, starts[ids.index("v0")])  # v0's first interval again, as e0
    path = write_session(tmp_path / "twice.nwb", ids=ids, starts=starts)
    with pytest.raises(ValueError, match="overlap"):
        load_session_data(path, spectrogram_settings=SMALL)


def test_overlapping_trials_trimmed_with_a_warning(tmp_path: Path) -> None:
    ids, starts, stops = _overlap_starts()
    path = write_session(tmp_path / "overlap.nwb", ids=ids, starts=starts, stops=stops)
    with pytest.warns(UserWarning, match=r"trimmed .*trials row"):
        data = load_session_data(path, spectrogram_settings=SMALL, overlapping_trials="trim")
    masks = {}
    for part in ("fit", "holdout", "validation"):
        m = np.zeros(data.n_bins, dtype=int)
        for a, b in data.segments(part):
            m[a:b] += 1
        masks[part] = m
    total = sum(masks.values())
    assert total.max() == 1  # no bin in two parts (nor twice in one)


def test_split_disjointness_is_asserted() -> None:
    bins = np.array([[0, 10], [5, 15], [20, 30]])
    split = Split(
        validation_sounds=("b",),
        estimation_sounds=("a", "c"),
        holdout_sounds=("c",),
        validation_trials=np.array([1]),
        fit_trials=np.array([0]),
        holdout_trials=np.array([2]),
        min_repeats=2,
        holdout_fraction=0.2,
        seed=0,
    )
    with pytest.raises(RuntimeError, match=r"5 bin\(s\).*fit.*validation"):
        check_split_disjoint(bins, split)
    check_split_disjoint(np.array([[0, 5], [5, 15], [20, 30]]), split)  # touching is fine


# ----------------------------------------------------------- item 10: inspect == run's checks


def _problem_files(tmp_path: Path) -> dict[str, Path]:
    sound = (0.1 * np.random.default_rng(2).standard_normal(int(9 * FS))).astype(np.float32)
    sound[int(3 * FS) : int(3 * FS) + 10] = np.nan
    ids = _ids()
    named = list(ids)
    named[3] = " "
    return {
        "nan": write_session(tmp_path / "nan.nwb", sound=sound),
        "silent": write_session(tmp_path / "silent.nwb", silent=True),
        "short": write_session(tmp_path / "short.nwb", duration_s=5.0),
        "no_repeats": write_session(
            tmp_path / "once.nwb", ids=["a", "b"], starts=np.array([0.2, 1.0])
        ),
        "empty_name": write_session(tmp_path / "names.nwb", ids=named),
    }


WHAT = {
    "nan": "NaN",
    "silent": "no unit has any spike",
    "short": "outside the spectrogram",
    "no_repeats": "only 2 sound",
    "empty_name": "has no sound in column",
}


def test_inspect_reports_what_run_refuses(tmp_path: Path) -> None:
    for name, path in _problem_files(tmp_path).items():
        with pytest.raises(ValueError, match=WHAT[name]):
            load_session_data(path, spectrogram_settings=SMALL)
        problems = check_session(path, spectrogram_settings=SMALL, scan_sound=True)
        assert any(WHAT[name] in p for p in problems), (name, problems)
        s = summarize_file(path, spectrogram_settings=SMALL)
        assert any(WHAT[name] in p for p in s.problems), (name, s.problems)
        text = describe_file(path, spectrogram_settings=SMALL)
        assert "everything the analysis needs is present" not in text, name
        assert "  problems (nwb-subspace run refuses the file):" in text.splitlines()


def test_good_session_has_no_problems(tmp_path: Path) -> None:
    path = write_session(tmp_path / "good.nwb")
    assert check_session(path, spectrogram_settings=SMALL, scan_sound=True) == []
    text = describe_file(path, spectrogram_settings=SMALL)
    assert "split: mixed design" in text


# ---------------------------------------------------------------- item 3: waveform_mean shape


def _replace_waveforms(path: Path, wf: np.ndarray) -> None:
    with h5py.File(path, "r+") as f:
        old = f["units/waveform_mean"]
        attrs = dict(old.attrs)
        del f["units/waveform_mean"]
        new = f["units"].create_dataset("waveform_mean", data=wf)
        for k, v in attrs.items():
            new.attrs[k] = v


def _read(path: Path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        info = read_units(path, prefer="waveform_mean")
    return info, [str(w.message) for w in caught if issubclass(w.category, UnitsReadWarning)]


def test_transposed_waveform_mean_is_transposed_with_a_warning(tmp_path: Path) -> None:
    good = write_mock_nwbfile(tmp_path / "good.nwb")
    bad = write_mock_nwbfile(tmp_path / "transposed.nwb")
    with h5py.File(bad, "r") as f:
        wf = f["units/waveform_mean"][()]
    assert wf.shape == (5, 40, 8)
    _replace_waveforms(bad, np.ascontiguousarray(wf.transpose(0, 2, 1)))
    ref, _ = _read(good)
    info, notes = _read(bad)
    assert any("transposed" in n and "(5, 8, 40)" in n for n in notes), notes
    assert info.cell_type.tolist() == ref.cell_type.tolist()
    np.testing.assert_allclose(info.depth_um, ref.depth_um)
    np.testing.assert_allclose(info.trough_to_peak_ms, ref.trough_to_peak_ms)


def test_three_channel_waveforms_with_64_electrodes_are_refused(tmp_path: Path) -> None:
    bad = write_mock_nwbfile(tmp_path / "three.nwb", n_channels=64)
    with h5py.File(bad, "r") as f:
        wf = f["units/waveform_mean"][()]
    _replace_waveforms(bad, np.ascontiguousarray(wf[:, :, :3]))
    with pytest.raises(ValueError, match=r"\(5, 40, 3\).*64"):
        read_units(bad, prefer="waveform_mean")
    s = summarize_file(bad)
    assert any("(5, 40, 3)" in m for m in s.missing), s.missing


def test_implausible_sample_count_is_refused(tmp_path: Path) -> None:
    bad = write_mock_nwbfile(tmp_path / "long.nwb")
    with h5py.File(bad, "r") as f:
        wf = f["units/waveform_mean"][()]
    _replace_waveforms(bad, np.repeat(wf, 100, axis=1))  # 4000 samples = 133 ms at 30 kHz
    with pytest.raises(ValueError, match=r"4000 samples.*ms"):
        read_units(bad, prefer="waveform_mean")


# ------------------------------------------------------------------- resource estimates


def test_spectrogram_memory_is_estimated_and_refused(tmp_path: Path, monkeypatch) -> None:
    assert estimate_spectrogram_memory(1000, 100_000) == 1000 * 100_000 * 4
    path = write_session(tmp_path / "big.nwb")
    monkeypatch.setattr(session_module, "available_memory", lambda: 50 * 2**20)
    huge = SpectrogramSettings(n_channels=100_000, f_min=200.0, f_max=3000.0)
    with pytest.raises(MemoryError, match=r"\[spectrogram\] n_channels = 100000.*GiB"):
        load_session_data(path, spectrogram_settings=huge)
    assert any("n_channels" in p for p in check_session(path, spectrogram_settings=huge))


def test_training_memory_is_estimated_and_refused() -> None:
    est = estimate_memory(
        n_bins=10_000, n_channels=32, n_units=10, window=128, memory=20, n_windows=50
    )
    assert est["training windows"] == 2 * 50 * (128 + 20) * (32 + 10 + 1) * 4
    assert est["dSTRF moments"] == 10 * (32 * 20) ** 2 * 8
    from nwb_subspace.models.ln import PopulationLN

    model = PopulationLN(4, 2, n_channels=3, n_taps=5)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((400, 4)).astype(np.float32)
    Y = rng.poisson(1.0, (400, 2)).astype(np.float32)
    train = np.zeros(400, bool)
    train[:300] = True
    with pytest.raises(MemoryError, match=r"\[training\] window = 1000000000.*GiB"):
        fit_model(model, X, Y, train, ~train, TrainingConfig(window=10**9))
    assert training_module.available_memory() is None or training_module.available_memory() > 0
