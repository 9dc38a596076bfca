"""
Predict the response to a new sound with a stored model
=======================================================

Every fitted encoding model is stored in the NWB file with its architecture and weights
(``EncodingModel``), so it can be rebuilt and used long after the analysis, without the
training data: here we rebuild the stored CNN and LN of a run, compute the spectrogram of a
sound the neurons never heard with the **same settings** as the stored spectrogram, and
predict every unit's firing rate.

Set ``NWB_SUBSPACE_TUTORIAL_PRESET=tiny`` for a quick run and
``NWB_SUBSPACE_TUTORIAL_OUTDIR`` to choose the output folder (default: a temporary folder;
the quick start's results are reused when they are there).
"""

# %%
# A file with results
# -------------------
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
PATH = OUTDIR / "quickstart" / f"{PRESET}_seed0.nwb"
RUN = "quickstart"
FOLDER = OUTDIR / "predict"
FOLDER.mkdir(parents=True, exist_ok=True)


def make_results_file() -> None:
    """Simulate and analyse a session, as in the quick start (only when not done yet)."""
    from nwb_subspace import (
        AnalysisConfig,
        SiteSettings,
        SubspaceSettings,
        TrainingConfig,
        run_session,
        simulate_session,
    )
    from nwb_subspace.io.writer import list_runs

    if PATH.exists() and RUN in list_runs(PATH):
        return
    PATH.parent.mkdir(parents=True, exist_ok=True)
    simulate_session(PATH, preset=PRESET, seed=0, overwrite=True)
    quick = dict(max_epochs_stage1=4, max_epochs_stage2=3, patience=3) if QUICK else {}
    config = AnalysisConfig(
        run_name=RUN,
        training=TrainingConfig(n_initializations=1, **quick),
        subspace=SubspaceSettings(n_components=6, min_noise_corrected_r=0.0)
        if QUICK
        else SubspaceSettings(),
        sites=SiteSettings(n_null=20, n_shifts=50) if QUICK else SiteSettings(),
    )
    run_session(PATH, config)


make_results_file()

# %%
# Rebuild the stored models
# -------------------------
# Importing ``nwb_subspace`` registers the extension's Python classes;
# :func:`~nwb_subspace.io.from_nwb.rebuild_model` turns a stored ``EncodingModel`` into a
# ``torch.nn.Module`` with every weight loaded. We also keep what we need to make a new
# spectrogram: the stored spectrogram's settings and the level of the recorded sound.
import json

from pynwb import NWBHDF5IO

import nwb_subspace  # noqa: F401  (registers the ndx-subspace classes)
from nwb_subspace.io.from_nwb import rebuild_model

with NWBHDF5IO(str(PATH), "r") as io:
    nwbfile = io.read()
    run = nwbfile.processing["misc"][RUN]
    models = {name: rebuild_model(obj) for name, obj in run.encoding_models.items()}
    unit_rows = {
        name: np.asarray(obj.scores["units"].data[:]) if obj.scores is not None else None
        for name, obj in run.encoding_models.items()
    }
    stored_spec = next(iter(run.spectrograms.values()))
    settings = json.loads(stored_spec.settings_json)
    sound = stored_spec.source_sound
    fs = float(sound.rate)
    level = float(np.sqrt(np.mean(np.asarray(sound.data[: int(10 * fs)], float) ** 2)))

for name, module in models.items():
    print(f"{name}: {module.kind}, memory {module.memory} bins")
print("spectrogram settings:", settings)

# %%
# A new sound
# -----------
# Three seconds the neurons never heard: an upward frequency sweep, then a harmonic stack,
# then a band of noise, at the recorded sound's sampling rate and RMS level (the log
# compression of the spectrogram is not level-invariant, so levels must match; below, the
# new sound also gets the session's level gain, not one of its own).
rng = np.random.default_rng(7)
t = np.arange(int(fs)) / fs
sweep = np.sin(2 * np.pi * 500 * (16**t - 1) / np.log(16))  # 500 Hz -> 8 kHz in 1 s
stack = sum(np.sin(2 * np.pi * 220 * h * t) / h for h in range(1, 12))
noise = np.convolve(rng.standard_normal(t.size), np.hanning(9), mode="same")
new_sound = np.concatenate([sweep, stack, noise])
new_sound *= level / np.sqrt(np.mean(new_sound**2))

# %%
# Its spectrogram, with the stored settings
# -----------------------------------------
from dataclasses import fields

from nwb_subspace.stimulus.spectrogram import SpectrogramSettings, compute_spectrogram

known = {f.name for f in fields(SpectrogramSettings)}
spec_settings = SpectrogramSettings(**{k: v for k, v in settings.items() if k in known})
# The session's sound was scaled by reference_rms / its RMS over the presented samples
# (level normalisation, stored as "sound_rms"); passing that RMS applies the same gain to the
# new sound, so it is heard at the level the neurons heard the recording.
spec = compute_spectrogram(new_sound, fs, spec_settings, sound_rms=settings.get("sound_rms"))
print(f"new spectrogram: {spec.data.shape[0]} bins x {spec.data.shape[1]} channels")

# %%
# Predict
# -------
# :func:`~nwb_subspace.models.training.predict` returns spike counts per bin for every unit
# the model was fitted to (in the order of its ``units`` rows); divide by the bin width for
# spikes per second. The first ``memory - 1`` bins have less than the model's full history.
from nwb_subspace.models.training import predict

predictions = {
    name: predict(module, spec.data) * spec.rate
    for name, module in models.items()
    if module.kind in ("cnn", "ln")
}
for name, rates in predictions.items():
    print(f"{name}: predicted rates {rates.shape} (bins, units), mean {rates.mean():.1f} spikes/s")
np.savez(FOLDER / "predictions.npz", spectrogram=spec.data, **predictions)

# %%
# Plot the spectrogram and the predicted rates of a few units
# -----------------------------------------------------------
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

time_s = np.arange(spec.data.shape[0]) / spec.rate
fig, axes = plt.subplots(2, 1, figsize=(8, 5), sharex=True)
axes[0].pcolormesh(time_s, spec.frequencies / 1e3, spec.data.T, shading="nearest")
axes[0].set_yscale("log")
axes[0].set_ylabel("frequency (kHz)")
axes[0].set_title("new sound: sweep, harmonic stack, noise")
cnn_rows = unit_rows["cnn"]
for i in range(min(4, predictions["cnn"].shape[1])):
    axes[1].plot(time_s, predictions["cnn"][:, i], label=f"unit row {cnn_rows[i]}")
axes[1].set_xlabel("time (s)")
axes[1].set_ylabel("CNN prediction (spikes/s)")
axes[1].legend(fontsize=7)
fig.tight_layout()
fig.savefig(FOLDER / "prediction.png", dpi=90)
print(f"figure: {FOLDER / 'prediction.png'}")

# ruff: noqa: E402  (a tutorial imports where each step first needs it)
