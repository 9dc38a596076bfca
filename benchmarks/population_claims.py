"""The paper's population claims on a simulated population, where they hold and where not.

Simulates ``--sessions`` sessions (default 16: two of each of the 8 kinds of
:func:`nwb_subspace.simulate_population`), runs ``nwb-subspace batch`` on them (the default
recipe unless ``--quick``), then checks every claim on the sessions where it holds and on
those where it does not (:func:`nwb_subspace.testing.population_claims.evaluate_claims`) and
prints the table, with the batch's and the summaries' wall times.

Usage::

    python benchmarks/population_claims.py --workdir DIR                 # 16 sessions
    python benchmarks/population_claims.py --workdir DIR --sessions 8 --quick
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd

from nwb_subspace.batch import run_batch, session_output
from nwb_subspace.config import AnalysisConfig, SiteSettings
from nwb_subspace.models.training import TrainingConfig
from nwb_subspace.simulate import simulate_population
from nwb_subspace.testing.population_claims import evaluate_claims


def analysis_config(quick: bool) -> AnalysisConfig:
    """The default recipe, or a short one (1 initialisation, few epochs) with ``quick``."""
    config = AnalysisConfig(run_name="population")
    if quick:
        config = replace(
            config,
            training=TrainingConfig(
                n_initializations=1, max_epochs_stage1=20, max_epochs_stage2=10, patience=6
            ),
            sites=SiteSettings(n_null=50, n_shifts=100, n_permutations=200),
        )
    return config


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--sessions", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--preset", default="population")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="short fits (not the default recipe)")
    args = parser.parse_args(argv)
    data, out = args.workdir / "sessions", args.workdir / "results"
    data.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if not (data / "population_truth.csv").exists():
        simulate_population(data, args.sessions, seed=args.seed, preset=args.preset)
    truth = pd.read_csv(data / "population_truth.csv")
    print(f"simulated {truth['session'].nunique()} sessions in {time.perf_counter() - t0:.0f} s")
    config = analysis_config(args.quick)
    t0 = time.perf_counter()
    files = {s: (data / f).resolve() for s, f in truth.groupby("session")["file"].first().items()}
    table = run_batch([str(f) for f in files.values()], out, config, n_workers=args.workers)
    print(f"batch: {(table['status'] != 'failed').sum()} of {len(table)} sessions in "
          f"{time.perf_counter() - t0:.0f} s (incl. the summary in {out}/population)")  # fmt: skip
    results = {s: session_output(str(f), f.name, out.resolve()) for s, f in files.items()}
    t0 = time.perf_counter()
    claims = evaluate_claims(results, truth, args.workdir / "claims", config.run_name)
    print(f"claims ({time.perf_counter() - t0:.0f} s):")
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(claims.drop(columns=["statistic"]).to_string(index=False))


if __name__ == "__main__":
    main()
