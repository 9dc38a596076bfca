"""``nwb-subspace demo``: simulate a session with known ground truth, analyse it, and say
how well the truth was recovered."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from nwb_subspace.config import AnalysisConfig
from nwb_subspace.pipeline import SessionResult, run_session
from nwb_subspace.simulate import load_truth, simulate_session


def recovery_report(result: SessionResult, truth) -> list[str]:
    """Plain-language lines comparing the analysis with the simulation's ground truth."""
    from nwb_subspace.subspace.tuning import subspace_similarity
    from nwb_subspace.testing.truth_model import truth_filters_model_order

    lines = []
    cnn = result.scores["cnn"]
    units = result.estimators["cnn"].units_
    lines.append(
        f"CNN: median validation correlation {np.nanmedian(cnn.correlation):.2f}, "
        f"noise-corrected {np.nanmedian(cnn.noise_corrected_correlation):.2f} "
        f"({units.size} units)"
    )
    if "ln" in result.scores:
        ln = result.scores["ln"]
        kinds = np.asarray(truth.nl_kind)[units]
        non_mono = np.isin(kinds, ["hill", "bowl"])
        lines.append(
            f"LN:  median noise-corrected {np.nanmedian(ln.noise_corrected_correlation):.2f}; "
            f"on the {int(non_mono.sum())} hill/bowl units CNN "
            f"{np.nanmedian(cnn.noise_corrected_correlation[non_mono]):.2f} vs LN "
            f"{np.nanmedian(ln.noise_corrected_correlation[non_mono]):.2f}"
        )
    if result.units is not None:
        info = result.units
        known = np.asarray(info.cell_type) != "unknown"
        acc = np.mean(np.asarray(info.cell_type)[known] == np.asarray(truth.cell_type)[known])
        depth_err = np.nanmedian(
            np.abs(np.asarray(info.depth_um) - np.asarray(truth.position_um)[:, 1])
        )
        lines.append(
            f"cell types: {acc:.0%} correct (narrow/broad); median depth error {depth_err:.1f} um"
        )
    if result.tuning is not None:
        t = result.tuning
        sims, dims = [], []
        for i, row in enumerate(t.unit_rows):
            k = int(truth.k[row])
            true = truth_filters_model_order(truth, int(row), t.components.shape[3])
            sims.append(subspace_similarity(true, t.components[i, :k]))
            dims.append(abs(int(t.dimensionality[i]) - k) <= 1)
        lines.append(
            f"tuning subspaces ({t.unit_rows.size} units): median similarity to the true "
            f"subspace {np.median(sims):.2f} (mean cos^2 of principal angles); "
            f"dimensionality within +-1 of the truth for {np.mean(dims):.0%}"
        )
    if result.ev_fraction is not None and np.isfinite(result.ev_fraction).any():
        lines.append(
            "subspace model keeps a median "
            f"{np.nanmedian(result.ev_fraction):.0%} of the CNN's explained variance"
        )
    return lines


def run_demo(
    outdir: Path,
    *,
    seed: int = 0,
    preset: str = "small",
    device: str = "cpu",
    config: AnalysisConfig | None = None,
) -> SessionResult:
    """Simulate ``preset``, run the analysis, write results and a report, print where
    everything is and how well the ground truth was recovered.

    Parameters
    ----------
    outdir : Path
        Folder for the simulated file (``<preset>_seed<seed>.nwb``, results appended under
        ``processing/misc/demo``), its ground truth and the report (``report/``).
    seed : int
        Seed of the simulation and the analysis.
    preset : str
        Simulation preset (``tiny``, ``small``, ``paper``).
    device : str
        Torch device for the fits.
    config : AnalysisConfig, optional
        Analysis settings (default: the full recipe with one initialisation per model).

    Returns
    -------
    SessionResult
    """
    from nwb_subspace.report.html import make_report

    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    nwb_path = outdir / f"{preset}_seed{seed}.nwb"
    for stale in (nwb_path, nwb_path.with_suffix(".truth.npz")):
        stale.unlink(missing_ok=True)
    print(f"simulating the '{preset}' session (seed {seed}) ...", flush=True)
    nwb_path, truth_path = simulate_session(nwb_path, preset=preset, seed=seed)
    if config is None:
        # The default recipe, as `nwb-subspace run` uses it: 3 initialisations per model,
        # the CNN's dSTRFs averaged over its 3 fits.
        config = AnalysisConfig()
    config = replace(config, seed=seed, device=device, run_name="demo")
    print(
        "analysing it (spectrogram, units, LN and CNN fits, dSTRFs, subspaces, SRFs, sites) ...",
        flush=True,
    )
    result = run_session(nwb_path, config)
    truth = load_truth(truth_path)
    print("writing the report ...", flush=True)
    report = make_report(result.output, run="demo", outdir=outdir / "report")
    print()
    print(f"results appended to {result.output} (processing/misc/demo)")
    print(f"ground truth:       {truth_path}")
    print(f"report:             {report}")
    print(f"figures:            {report.parent / 'figures'}")
    for line in recovery_report(result, truth):
        print(f"  {line}")
    for note in result.notes:
        print(f"  note: {note}")
    print(f"done in {time.perf_counter() - start:.0f} s")
    return result
