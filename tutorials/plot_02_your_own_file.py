"""
Your own NWB file: the layout it needs and how to map your columns
==================================================================

nwb-subspace reads standard NWB as written by pynwb or NeuroConv. What it needs
(docs/methods.md, section 1):

* **units**: the ``units`` table with ``spike_times``. Optional: ``waveform_mean``
  (units x samples [x channels], volts) for narrow/broad cell types, an ``electrodes``
  column, ``waveform_rate``; unit names from ``unit_name`` if present, else ``id``.
* **electrodes**: ``rel_x``, ``rel_y`` in µm (``rel_y`` = depth along the probe, tip at 0)
  for unit depths and layers, with ``location`` and ``group``.
* **sound**: a ``TimeSeries`` (or ndx-sound ``AcousticWaveformSeries``) in
  ``stimulus/presentation`` or ``acquisition``, continuous over the session, ideally
  sampled at >= 40 kHz.
* **trials** (or ``epochs``) with ``start_time``, ``stop_time`` and a column naming the sound
  of each trial. Sounds presented many times form the validation set.

This tutorial writes such a file with plain pynwb, the way a lab's own code would, with
names nwb-subspace does not guess (a sound called ``speaker_signal``, a trials column called
``wav_file``); checks it with ``nwb-subspace inspect``; maps the names in a TOML config; and
runs the analysis. The data come from a simulated session so that the example runs anywhere.

Set ``NWB_SUBSPACE_TUTORIAL_PRESET=tiny`` for a quick run and
``NWB_SUBSPACE_TUTORIAL_OUTDIR`` to choose the output folder (default: a temporary folder).
"""

# %%
# Settings
# --------
import os
import tempfile
from pathlib import Path

import numpy as np

PRESET = os.environ.get("NWB_SUBSPACE_TUTORIAL_PRESET", "small")
QUICK = os.environ.get("NWB_SUBSPACE_TUTORIAL_QUICK", "1" if PRESET == "tiny" else "0") == "1"
OUTDIR = Path(
    os.environ.get("NWB_SUBSPACE_TUTORIAL_OUTDIR")
    or tempfile.mkdtemp(prefix="nwb_subspace_tutorial_")
)
FOLDER = OUTDIR / "own_file"
FOLDER.mkdir(parents=True, exist_ok=True)

# %%
# Recorded data (here: taken from a simulated session)
# ----------------------------------------------------
# Plain arrays, as your acquisition and spike-sorting software would give them.
from pynwb import NWBHDF5IO

from nwb_subspace import simulate_session

sim_path, _ = simulate_session(FOLDER / "simulated.nwb", preset=PRESET, seed=1, overwrite=True)
with NWBHDF5IO(str(sim_path), "r") as io:
    sim = io.read()
    sound = np.asarray(sim.stimulus["sound"].data[:])
    sound_rate = float(sim.stimulus["sound"].rate)
    trial_start = np.asarray(sim.trials["start_time"].data[:])
    trial_stop = np.asarray(sim.trials["stop_time"].data[:])
    trial_sound = [str(s) for s in sim.trials["sound_id"].data[:]]
    spike_times = [np.asarray(sim.units["spike_times"][i]) for i in range(len(sim.units))]
    waveforms = np.asarray(sim.units["waveform_mean"].data[:])  # (units, samples, channels)
    waveform_rate = float(sim.units.waveform_rate)
    unit_channel = [int(sim.units["electrodes"][i].index[0]) for i in range(len(sim.units))]
    rel_x = np.asarray(sim.electrodes["rel_x"].data[:])
    rel_y = np.asarray(sim.electrodes["rel_y"].data[:])
print(
    f"{len(spike_times)} units, {sound.size / sound_rate:.0f} s of sound, {len(trial_sound)} trials"
)

# %%
# Write them as a lab's own NWB file
# ----------------------------------
# Nothing here comes from nwb-subspace: only pynwb. Note the names: ``speaker_signal`` for
# the sound and ``wav_file`` for the trials column naming the sound.
from datetime import UTC, datetime

from pynwb import NWBFile, TimeSeries

own = NWBFile(
    session_description="Natural sounds, one linear probe in auditory cortex.",
    identifier="lab-session-0001",
    session_start_time=datetime(2026, 1, 1, 10, 0, tzinfo=UTC),
)
probe = own.create_device(name="probe", description="64-channel linear probe")
shank = own.create_electrode_group(
    name="shank0", description="the only shank", location="auditory cortex", device=probe
)
own.add_electrode_column(name="rel_x", description="x on the probe (um)")
own.add_electrode_column(name="rel_y", description="distance from the tip (um)")
for x, y in zip(rel_x, rel_y, strict=True):
    own.add_electrode(group=shank, location="auditory cortex", rel_x=float(x), rel_y=float(y))
own.add_stimulus(
    TimeSeries(name="speaker_signal", data=sound, unit="a.u.", rate=sound_rate, starting_time=0.0)
)
own.add_trial_column(name="wav_file", description="sound file played in this trial")
for start, stop, name in zip(trial_start, trial_stop, trial_sound, strict=True):
    own.add_trial(start_time=float(start), stop_time=float(stop), wav_file=f"{name}.wav")
for times, wf, ch in zip(spike_times, waveforms, unit_channel, strict=True):
    own.add_unit(spike_times=times, waveform_mean=wf, electrodes=[ch])
own.units.waveform_rate = waveform_rate
own_path = FOLDER / "my_session.nwb"
with NWBHDF5IO(str(own_path), "w") as io:
    io.write(own)
print(own_path)

# %%
# Check it: ``nwb-subspace inspect``
# ----------------------------------
# The command says what the file holds that the analysis can use, and what is missing. Here
# it finds the sound but no trials column with a name it recognises.
from nwb_subspace.cli.main import main

main(["inspect", str(own_path)])

# %%
# Map your names in a TOML config
# -------------------------------
# Every setting of ``nwb-subspace run`` lives in one TOML file (unknown keys are errors).
# ``[session]`` names the trials column and the sound; ``[layers]`` places the L3/4 boundary
# (in the ``rel_y`` frame) so units get layer groups; everything else keeps the defaults
# described in docs/methods.md.
toml = """
run_name = "my_analysis"
seed = 0

[session]
sound_column = "wav_file"
sound_name = "speaker_signal"

[layers]
l34_rel_y = 800.0
"""
config_path = FOLDER / "analysis.toml"
config_path.write_text(toml)
print(config_path.read_text())

# %%
# Read the config and run the analysis
# ------------------------------------
# The same as ``nwb-subspace run my_session.nwb --config analysis.toml --output ...``:
# ``output=`` writes a new file (your data plus the results) and leaves the original
# untouched; without it the results are appended to the file safely (copy, append, verify,
# atomic replace).
from dataclasses import replace

from nwb_subspace import (
    AnalysisConfig,
    SiteSettings,
    SubspaceSettings,
    TrainingConfig,
    run_session,
)

config = AnalysisConfig.from_toml(config_path)
if QUICK:  # short fits and the CNN only: a quick check, not a real analysis
    config = replace(
        config,
        models=("cnn",),
        training=TrainingConfig(
            n_initializations=1, max_epochs_stage1=4, max_epochs_stage2=3, patience=3
        ),
        subspace=SubspaceSettings(n_components=6, min_noise_corrected_r=0.0),
        sites=SiteSettings(n_null=20, n_shifts=50),
    )
out_path = FOLDER / "my_session_subspace.nwb"
out_path.unlink(missing_ok=True)
result = run_session(own_path, config, output=out_path)
print(f"results in {result.output} under processing/misc/{config.run_name}")
print("validation sounds:", result.results.config["split"]["validation_sounds"])
cnn = result.scores["cnn"]
print(f"CNN median noise-corrected correlation {np.nanmedian(cnn.noise_corrected_correlation):.2f}")

# %%
# The units table gained cell types, depths and layers
# ----------------------------------------------------
with NWBHDF5IO(str(out_path), "r") as io:
    units = io.read().units.to_dataframe()
print(units[["trough_to_peak_ms", "cell_type", "depth_um", "layer"]].head())

# ruff: noqa: E402  (a tutorial imports where each step first needs it)
