"""Time and memory of ``summarize`` on many stored runs (issue 20: 100 x 60 units, < 60 s, < 2 GB).

Builds one real stored run of a simulated session with ``--units`` units (default 60; short
fits: the tables, not the fit, are measured), copies the result file ``--sessions`` times
(default 100) into a folder, then runs :func:`nwb_subspace.population.summarize_runs` on the
folder in a fresh process and prints its wall time and peak resident memory against the
targets (60 s, 2 GB). The copies are identical sessions, so the statistics are meaningless
here; only the reading, the tables, the permutation test and the report are timed.

Usage::

    python benchmarks/population_summary.py --workdir DIR            # 100 x 60 units
    python benchmarks/population_summary.py --workdir DIR --sessions 10 --units 20  # quick
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

_CHILD = """
import json, resource, sys, time
from nwb_subspace.population import summarize_runs
t0 = time.perf_counter()
s = summarize_runs([sys.argv[1]], sys.argv[2], sys.argv[3])
seconds = time.perf_counter() - t0
peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"seconds": seconds, "peak_mb": peak_mb, "sessions": len(s.sessions),
                  "units": len(s.units), "sites": len(s.sites), "skipped": len(s.skipped)}))
"""


def stored_run(workdir: Path, n_units: int, seed: int) -> Path:
    """One simulated session with ``n_units`` units, analysed with a short recipe."""
    from nwb_subspace.config import AnalysisConfig, SiteSettings
    from nwb_subspace.models.training import TrainingConfig
    from nwb_subspace.pipeline import run_session
    from nwb_subspace.simulate import simulate_session
    from nwb_subspace.simulate.presets import resolve_config

    out = workdir / f"base_{n_units}u.nwb"
    if out.exists():
        return out
    src = workdir / f"sim_{n_units}u.nwb"
    if not src.exists():
        simulate_session(src, replace(resolve_config("tiny"), n_units=n_units), seed=seed)
    config = AnalysisConfig(
        training=TrainingConfig(
            n_initializations=1, max_epochs_stage1=8, max_epochs_stage2=4, patience=9
        ),
        sites=SiteSettings(n_null=50, n_shifts=50, n_permutations=200),
        run_name="bench",
    )
    run_session(src, config, output=out)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--sessions", type=int, default=100)
    parser.add_argument("--units", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    base = stored_run(args.workdir, args.units, args.seed)
    print(f"stored run with {args.units} units: {base} ({time.perf_counter() - t0:.0f} s)")
    runs = args.workdir / f"runs_{args.sessions}x{args.units}"
    runs.mkdir(exist_ok=True)
    for i in range(args.sessions):
        target = runs / f"session_{i:03d}.nwb"
        if not target.exists():
            shutil.copyfile(base, target)
    size_mb = base.stat().st_size / 1e6
    print(f"{args.sessions} copies of {size_mb:.1f} MB in {runs}")
    outdir = args.workdir / f"summary_{args.sessions}x{args.units}"
    shutil.rmtree(outdir, ignore_errors=True)
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(runs), str(outdir), "bench"],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    got = json.loads(done.stdout.strip().splitlines()[-1])
    print(
        f"summarize: {got['sessions']} sessions, {got['sites']} sites, {got['units']} units, "
        f"{got['skipped']} skipped"
    )
    print(f"time  {got['seconds']:.1f} s  = {got['seconds'] / 60:.2f} x the 60 s target")
    print(f"peak  {got['peak_mb']:.0f} MB = {got['peak_mb'] / 2048:.2f} x the 2 GB target")


if __name__ == "__main__":
    main()
