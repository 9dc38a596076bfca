"""``nwb_subspace.io.inspect``: what a file holds that the analysis can use, and what is missing."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from pynwb import NWBHDF5IO, NWBFile, TimeSeries

from nwb_subspace.io.inspect import FileSummary, describe_file, summarize_file
from nwb_subspace.io.trials import SOUND_COLUMNS
from nwb_subspace.simulate import simulate_session


@pytest.fixture(scope="module")
def tiny_session(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The simulator's ``tiny`` session (seed 0), without raw voltage."""
    nwb_path, _ = simulate_session(tmp_path_factory.mktemp("sim") / "tiny.nwb", "tiny", seed=0)
    return nwb_path


def _trials_only_file(path: Path, columns: dict[str, list[str]]) -> Path:
    """A file with a 44.1 kHz sound and a 2-row trials table with ``columns``; no units."""
    nwbfile = NWBFile("trials only", "t", datetime(2024, 1, 1, tzinfo=UTC))
    wave = np.zeros(44100, dtype=np.float32)
    nwbfile.add_stimulus(TimeSeries(name="sound", data=wave, unit="a.u.", rate=44100.0))
    for name in columns:
        nwbfile.add_trial_column(name, f"{name} of the trial")
    for i in range(2):
        nwbfile.add_trial(
            start_time=float(i), stop_time=i + 0.5, **{k: v[i] for k, v in columns.items()}
        )
    with NWBHDF5IO(str(path), "w") as io:
        io.write(nwbfile)
    return path


def test_mock_file_summary(mock_file: Path) -> None:
    s = summarize_file(mock_file)
    assert isinstance(s, FileSummary)
    assert s.n_units == 5
    assert s.has_spike_times and s.has_waveforms and s.electrode_positions
    assert s.sounds == ["stimulus/sound (8000 Hz, 32000 samples)"]
    assert s.raw_series == []
    # The mock file has no trials: that is the one thing missing.
    assert s.trials == 0 and s.sound_column is None
    assert s.missing == ["a trials (or epochs) table naming each sound"]


def test_mock_file_description_says_trials_are_missing(mock_file: Path) -> None:
    text = describe_file(mock_file)
    lines = text.splitlines()
    assert lines[0] == str(mock_file)
    assert "  units: 5 (spike_times: yes, waveform_mean: yes)" in lines
    assert "  sound: stimulus/sound (8000 Hz, 32000 samples)" in lines
    assert "  trials: 0 (sound column: none)" in lines
    assert "  raw voltage: none" in lines
    assert lines[-2:] == ["  missing:", "    - a trials (or epochs) table naming each sound"]


def test_simulated_session_has_everything(tiny_session: Path) -> None:
    s = summarize_file(tiny_session)
    assert s.n_units == 8  # the tiny preset
    assert s.has_spike_times and s.has_waveforms and s.electrode_positions
    assert len(s.sounds) == 1 and s.sounds[0].startswith("stimulus/sound (")
    assert s.trials > 0
    assert s.sound_column == "sound_id"
    assert s.missing == []
    assert s.layout == "continuous" and "/stimulus/presentation/sound" in s.layout_detail
    text = describe_file(tiny_session)
    assert f"  trials: {s.trials} (sound column: sound_id)" in text.splitlines()
    assert "  sound layout: continuous (one sound series, /stimulus/presentation/sound" in text
    assert text.endswith("  everything the analysis needs is present")


def test_missing_units_and_sound_column(tmp_path: Path) -> None:
    path = _trials_only_file(tmp_path / "no_units.nwb", {"condition": ["a", "b"]})
    s = summarize_file(path)
    assert s.n_units == 0 and s.trials == 2 and s.sound_column is None
    assert s.sounds == ["stimulus/sound (44100 Hz, 44100 samples)"]
    assert "a units table with spike_times (needed for everything)" in s.missing
    # The list quoted is the trials reader's own.
    assert f"a trials column naming the sound (one of {', '.join(SOUND_COLUMNS)})" in s.missing
    assert "electrodes rel_x/rel_y (depths and layers will be 'unknown')" in s.missing


def test_ambiguous_sound_column_is_reported(tmp_path: Path) -> None:
    cols = {"sound_id": ["a", "b"], "stim_name": ["x", "y"]}
    s = summarize_file(_trials_only_file(tmp_path / "two.nwb", cols))
    assert s.sound_column is None
    (line,) = [m for m in s.missing if "naming the sound" in m]
    assert "several columns" in line and "sound_id" in line and "stim_name" in line
    assert "sound_column=" in line


def test_low_rate_series_is_not_a_sound(tmp_path: Path) -> None:
    """Sound candidates follow ``io.sound``: a 100 Hz trace is not offered as the sound."""
    nwbfile = NWBFile("slow", "s", datetime(2024, 1, 1, tzinfo=UTC))
    nwbfile.add_acquisition(TimeSeries(name="pupil", data=np.zeros(500), unit="a.u.", rate=100.0))
    with NWBHDF5IO(str(tmp_path / "slow.nwb"), "w") as io:
        io.write(nwbfile)
    s = summarize_file(tmp_path / "slow.nwb")
    assert s.sounds == []
    assert "a sound waveform TimeSeries in stimulus or acquisition" in s.missing
    assert "  sound: none found" in describe_file(tmp_path / "slow.nwb").splitlines()
