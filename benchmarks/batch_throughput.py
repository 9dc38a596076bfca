"""Batch throughput (sessions per minute) on a Dask LocalCluster with 1 vs 2 workers.

Simulates ``--sessions`` tiny sessions (default 4), runs :func:`nwb_subspace.batch.run_batch`
on them with one worker and then with two (fresh output folders, so nothing is skipped),
and prints each run's wall time, its throughput and the 2-worker / 1-worker ratio. Each
worker is one process with one thread, so on a 2-core machine the CPU-bound parts should
approach 2x; cluster start-up and the per-process imports are included, as a user sees them.

Usage::

    python benchmarks/batch_throughput.py            # 4 tiny sessions, short fits (minutes)
    python benchmarks/batch_throughput.py --quick    # 2 sessions, 1-epoch fits: a smoke test
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from nwb_subspace.batch import run_batch
from nwb_subspace.config import AnalysisConfig, SiteSettings, SubspaceSettings
from nwb_subspace.models.training import TrainingConfig
from nwb_subspace.simulate import simulate_session


def benchmark_config(quick: bool) -> AnalysisConfig:
    """A short recipe: one initialisation, few epochs (the ratio, not the fit, is measured)."""
    epochs = (1, 1) if quick else (10, 5)
    return AnalysisConfig(
        training=TrainingConfig(
            n_initializations=1,
            max_epochs_stage1=epochs[0],
            max_epochs_stage2=epochs[1],
            patience=max(epochs) + 1,
        ),
        subspace=SubspaceSettings(n_components=4, min_noise_corrected_r=-1.0),
        sites=SiteSettings(n_null=20 if quick else 100, n_shifts=20 if quick else 100),
        run_name="throughput",
    )


def timed_batch(
    sources: list[Path], outdir: Path, config: AnalysisConfig, n_workers: int
) -> tuple[float, int]:
    """Wall seconds of one batch run and the number of sessions that finished ok."""
    start = time.perf_counter()
    table = run_batch(sources, outdir, config, n_workers=n_workers, summarize=False)
    seconds = time.perf_counter() - start
    failed = table[table["status"] != "ok"]
    for row in failed.itertuples():
        print(f"  {row.source}: {row.status} {row.error}")
    return seconds, int((table["status"] == "ok").sum())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=None, help="sessions (default 4)")
    parser.add_argument("--quick", action="store_true", help="2 sessions, 1-epoch fits")
    args = parser.parse_args(argv)
    n_sessions = args.sessions or (2 if args.quick else 4)
    config = benchmark_config(args.quick)
    with tempfile.TemporaryDirectory(prefix="nwb_subspace_batch_bench_") as tmp:
        folder = Path(tmp)
        sources = [
            simulate_session(folder / f"s{i}.nwb", preset="tiny", seed=i)[0]
            for i in range(n_sessions)
        ]
        rates = {}
        for n_workers in (1, 2):
            seconds, n_ok = timed_batch(
                sources, folder / f"out_{n_workers}", config, n_workers=n_workers
            )
            rates[n_workers] = 60.0 * n_ok / seconds
            print(
                f"{n_workers} worker(s): {n_ok}/{n_sessions} sessions in {seconds:.1f} s = "
                f"{rates[n_workers]:.2f} sessions/minute"
            )
    if rates[1] > 0:
        print(f"throughput ratio (2 workers / 1 worker): {rates[2] / rates[1]:.2f}x")


if __name__ == "__main__":
    main()
