"""
Quick start: simulate a session, analyse it, open the report
============================================================

This tutorial does what ``nwb-subspace demo`` does, one step at a time, in Python:

1. simulate a recording of one auditory-cortex site with known ground truth,
2. check what the file holds (``nwb-subspace inspect``),
3. run the whole analysis (``nwb-subspace run``): spectrogram, LN and CNN encoding models,
   dSTRFs, tuning subspaces, subspace receptive fields (SRFs) and the subspace model,
   appended to the file under ``processing/misc/quickstart``,
4. compare what was found with the ground truth,
5. write the HTML report (``nwb-subspace report``).

By default it uses the ``small`` preset (30 units, 5 minutes of sound; a few minutes on
2 cores). Set ``NWB_SUBSPACE_TUTORIAL_PRESET=tiny`` for a 1-minute run with short fits, and
``NWB_SUBSPACE_TUTORIAL_OUTDIR`` to choose where the files go (default: a new temporary
folder).
"""

# %%
# Settings
# --------
# Everything is written under ``OUTDIR``; nothing goes into the current folder.
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
FOLDER = OUTDIR / "quickstart"
FOLDER.mkdir(parents=True, exist_ok=True)
print(f"preset {PRESET!r}, quick fits: {QUICK}, outputs in {FOLDER}")

# %%
# Simulate a session
# ------------------
# The simulated file is standard NWB: a sound in ``stimulus/presentation``, a ``trials``
# table naming the sound of each trial, a linear probe in ``electrodes`` and sorted ``units``
# with spike times and mean waveforms. The ground truth (every unit's true filters and
# nonlinearity) goes to a ``.truth.npz`` file beside it.
from nwb_subspace import load_truth, simulate_session

nwb_path, truth_path = simulate_session(
    FOLDER / f"{PRESET}_seed0.nwb", preset=PRESET, seed=0, overwrite=True
)
print(nwb_path)

# %%
# What does the file hold?
# ------------------------
# ``describe_file`` is what ``nwb-subspace inspect FILE.nwb`` prints.
from nwb_subspace.io.inspect import describe_file

print(describe_file(nwb_path))

# %%
# Run the analysis
# ----------------
# One :class:`~nwb_subspace.AnalysisConfig` holds every setting (the same fields as
# the TOML file of ``nwb-subspace run --config``). The demo fits one initialisation per
# model; with ``QUICK`` the fits are also cut to a few epochs and the site nulls to a few
# draws, which is enough to exercise every step but not to recover the ground truth well.
from nwb_subspace import (
    AnalysisConfig,
    SiteSettings,
    SubspaceSettings,
    TrainingConfig,
    run_session,
)

if QUICK:
    config = AnalysisConfig(
        run_name="quickstart",
        training=TrainingConfig(
            n_initializations=1, max_epochs_stage1=4, max_epochs_stage2=3, patience=3
        ),
        subspace=SubspaceSettings(n_components=6, min_noise_corrected_r=0.0),
        sites=SiteSettings(n_null=20, n_shifts=50),
    )
else:
    config = AnalysisConfig(run_name="quickstart", training=TrainingConfig(n_initializations=1))

result = run_session(nwb_path, config)
print(f"results appended to {result.output} under processing/misc/{config.run_name}")
for note in result.notes:
    print("note:", note)

# %%
# How well do the models predict?
# -------------------------------
# Each model is scored on the validation sounds (presented many times): the correlation of
# its prediction with the repeat-averaged response, corrected for the noise between repeats.
for kind, scores in result.scores.items():
    print(
        f"{kind:>4}: median noise-corrected correlation "
        f"{np.nanmedian(scores.noise_corrected_correlation):.2f}, "
        f"median explained variance {np.nanmedian(scores.explained_variance):.2f}"
    )

# %%
# Compare with the ground truth
# -----------------------------
# The simulation knows every unit's true filters, so we can ask how close the recovered
# tuning subspaces are (``nwb-subspace demo`` prints the same lines).
from nwb_subspace.demo import recovery_report

for line in recovery_report(result, load_truth(truth_path)):
    print(line)

# %%
# The report
# ----------
# :func:`~nwb_subspace.make_report` reads the stored results back from the file (no
# refitting) and writes ``report.html`` with its PNG figures in ``figures/`` beside it. Open
# it in a browser. The same from a shell: ``nwb-subspace report FILE.nwb --run quickstart``.
from nwb_subspace import make_report

html = make_report(nwb_path, run="quickstart", outdir=FOLDER / "report")
print(f"report: {html}")
print("figures:", sorted(p.name for p in (html.parent / "figures").glob("*.png")))

# ruff: noqa: E402  (a tutorial imports where each step first needs it)
