"""
Read stored results with plain pynwb
====================================

nwb-subspace stores every result as NWB extension types (the ``ndx-subspace`` namespace)
inside the analysed file, under ``processing/misc/<run name>``, and caches the extension's
specification in the file. Anyone can therefore read the results with nothing but ``pynwb``:
``load_namespaces=True`` (the default) loads the cached spec and builds the classes.

The first cell makes a file with results (the quick start's analysis; it reuses the quick
start's file when that tutorial ran with the same ``NWB_SUBSPACE_TUTORIAL_OUTDIR``). The
reading part below it imports **no** nwb_subspace code.
"""

# %%
# A file with results
# -------------------
import os
import tempfile
from pathlib import Path

PRESET = os.environ.get("NWB_SUBSPACE_TUTORIAL_PRESET", "small")
QUICK = os.environ.get("NWB_SUBSPACE_TUTORIAL_QUICK", "1" if PRESET == "tiny" else "0") == "1"
OUTDIR = Path(
    os.environ.get("NWB_SUBSPACE_TUTORIAL_OUTDIR")
    or tempfile.mkdtemp(prefix="nwb_subspace_tutorial_")
)
PATH = OUTDIR / "quickstart" / f"{PRESET}_seed0.nwb"
RUN = "quickstart"


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
print(PATH)

# %%
# Open the file with pynwb only
# -----------------------------
# From here on: only pynwb, pandas and numpy.
import numpy as np
import pandas as pd
from pynwb import NWBHDF5IO

pd.set_option("display.width", 120)
pd.set_option("display.max_colwidth", 50)

io = NWBHDF5IO(str(PATH), "r")  # the cached ndx-subspace spec is loaded automatically
nwbfile = io.read()
misc = nwbfile.processing["misc"]
print("runs stored:", list(misc.data_interfaces))
run = misc[RUN]
print(type(run).__name__, "holding:", sorted(k for k, v in run.fields.items() if v))

# %%
# The effective configuration
# ---------------------------
# Every setting of the run (and its notes) is stored as JSON.
import json

config = json.loads(run.config_json)
print("seed:", config["seed"], "| models:", config["models"])
print("notes:", *config.get("notes", []), sep="\n  ")

# %%
# Encoding models and their per-unit scores
# -----------------------------------------
# Each ``EncodingModel`` holds its architecture, weights, training record and (for the
# scored models) a ``UnitScoresTable`` whose ``units`` column points into the units table.
for name, model in run.encoding_models.items():
    print(
        f"{name}: kind {model.model_kind}, {model.n_units} units, {len(model.model_weights)} "
        f"weight tensors, {model.epochs} epochs"
    )
    if model.scores is not None:
        scores = model.scores.to_dataframe(index=True)
        print(
            scores[["correlation", "noise_corrected_correlation", "explained_variance"]]
            .describe()
            .loc[["mean", "50%"]]
            .round(3)
        )

# %%
# Tuning subspaces and subspace receptive fields
# ----------------------------------------------
# One row per unit: the PCs of its dSTRFs (components x frequency x lag), the variance
# each explains, its dimensionality and its mean dSTRF.
subspaces = run.tuning_subspace_tables["tuning_subspaces"]
df = subspaces.to_dataframe(index=True)
print(df.columns.tolist())
print(df[["dimensionality", "n_frames"]].head())
components = np.asarray(subspaces["components"].data[:])
print("components array:", components.shape, "(units, PCs, frequencies, lags)")

srfs = next(iter(run.subspace_rf_tables.values()))
srf_df = srfs.to_dataframe(index=True)
print(srf_df[["response_source", "breadth"]].head())

# %%
# The units table and the columns nwb-subspace added
# --------------------------------------------------
units = nwbfile.units.to_dataframe()
added = [c for c in ("trough_to_peak_ms", "cell_type", "depth_um", "layer") if c in units]
print(units[added].head())

# %%
# Site-level results, when stored
# -------------------------------
for name, site in run.site_subspaces.items():
    print(name, "dimensionality", site.dimensionality)
for table in run.site_statistics_tables.values():
    print(table.to_dataframe()[["site", "statistic", "value", "p_value", "verdict"]])

io.close()

# ruff: noqa: E402  (a tutorial imports where each step first needs it)
