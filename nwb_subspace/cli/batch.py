"""``nwb-subspace batch``: many sessions on Dask (see :mod:`nwb_subspace.batch`).

Kept apart from ``cli.py``, which only registers it with :func:`add_batch_parser` and
dispatches to :func:`run_batch_command`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from nwb_subspace.config import AnalysisConfig

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2

__all__ = ["add_batch_parser", "run_batch_command"]


def add_batch_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``batch`` sub-command to an ``argparse`` sub-parsers object."""
    p = subparsers.add_parser(
        "batch",
        help="run the analysis on many sessions (files, globs, URLs, a dandiset) with Dask",
        description="Run the analysis on every session, one Dask task each, into "
        "OUTDIR/<stem>_desc-subspace<key>.nwb (sub-01_ses-2_desc-subspace<key>_ecephys.nwb for "
        "a DANDI-named source, .nwb.zarr for a Zarr store; key: 8 hex digits of the SHA-256 "
        "of the source's resolved path or URL, so same-named files in different folders never "
        "share an output); sessions "
        "whose own output (also under the older name <stem>_<key>_subspace.nwb) already holds "
        "the run are skipped; a summary "
        "table is written to OUTDIR/batch_summary.csv and the population summary (as "
        "`nwb-subspace summarize`) to OUTDIR/population/. Exit code 1 when a session failed. "
        "With --device auto the local cluster has one worker per GPU torch sees (each seeing "
        "only its GPU) besides the CPU workers; the summary's device column says where each "
        'session ran. Needs Dask: pip install "nwb-subspace[batch]".',
    )
    p.add_argument(
        "sources",
        nargs="+",
        metavar="SOURCE",
        help="NWB files or NWB Zarr stores (.nwb.zarr), folders (their *.nwb and *.nwb.zarr), "
        "globs ('data/*.nwb'), http(s) URLs, DANDI asset addresses "
        "(dandi://dandi/000123/sub-1/sub-1_ecephys.nwb), or a dandiset or folder of one "
        "(DANDI:000123, dandi://dandi/000123/sub-1/, https://dandiarchive.org/dandiset/000123; "
        'needs `pip install "nwb-subspace[dandi]"`)',
    )
    p.add_argument(
        "--outdir", required=True, help="folder for the per-session outputs and the summary"
    )
    p.add_argument("--config", help="TOML file with analysis settings")
    p.add_argument(
        "--workers",
        type=int,
        default=2,
        metavar="N",
        help="CPU workers of the local Dask cluster, one thread each, seeing no GPU (default "
        "2; 0 with --device auto/cuda: GPU workers only; none with --device cuda)",
    )
    p.add_argument(
        "--gpus",
        default="all",
        metavar="N|all",
        help="GPU workers of the local cluster with --device auto or cuda: one per GPU torch "
        "sees (all, the default), or N of them (0: none); each sees only its GPU "
        "(CUDA_VISIBLE_DEVICES). --device cpu starts none",
    )
    p.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="use a running Dask scheduler (tcp://host:8786) and its workers as they are "
        "(--workers and --gpus are ignored; each worker resolves --device auto itself)",
    )
    p.add_argument(
        "--device",
        choices=["cpu", "cuda", "auto"],
        default=None,
        help="where sessions run (default: the config's device, cpu): auto = a GPU on the "
        "GPU workers and the CPU on the CPU workers; cuda = GPU workers only",
    )
    p.add_argument("--seed", type=int, default=None, help="random seed (default: config's)")
    p.add_argument("--run-name", default=None, help="name of the results container")
    p.add_argument(
        "--no-summary",
        action="store_true",
        help="skip the population summary (default: OUTDIR/population, as `summarize` does)",
    )
    p.set_defaults(func=run_batch_command)
    return p


def run_batch_command(args: argparse.Namespace, *, config: AnalysisConfig | None = None) -> int:
    """Run ``nwb-subspace batch``; print the summary; return the exit code.

    ``config`` replaces ``--config`` (for use from Python); ``--device``, ``--seed`` and
    ``--run-name`` still override it. Bad input ends with a one-line error and exit code 2;
    exit code 1 when at least one session failed.
    """
    from nwb_subspace.batch import POPULATION_DIR, SUMMARY_FILE, run_batch

    try:
        if config is None:
            config = AnalysisConfig.from_toml(args.config) if args.config else AnalysisConfig()
        config = config.with_overrides(seed=args.seed, device=args.device, run_name=args.run_name)
        table = run_batch(
            args.sources, args.outdir, config, scheduler=args.scheduler,
            n_workers=args.workers, n_gpus=getattr(args, "gpus", "all"),
            summarize=not getattr(args, "no_summary", False),
        )  # fmt: skip
    except (ValueError, TypeError, OSError, ImportError) as err:
        print(f"nwb-subspace: error: {' '.join(str(err).split())}", file=sys.stderr)
        return EXIT_BAD_INPUT
    logging.getLogger("nwb_subspace").info("summary written to %s/%s", args.outdir, SUMMARY_FILE)
    with_pd = table.assign(median_cnn_score=table["median_cnn_score"].round(3))
    print(with_pd.drop(columns=["error"]).to_string(index=False))
    for row in table.itertuples():
        if row.status == "failed":
            print(f"failed: {row.source}: {row.error}")
    counts = table["status"].value_counts()
    print(
        f"{counts.get('ok', 0)} ok, {counts.get('skipped', 0)} skipped, "
        f"{counts.get('failed', 0)} failed; summary: {args.outdir}/{SUMMARY_FILE}"
    )
    report = Path(args.outdir) / POPULATION_DIR / "population_report.html"
    if not getattr(args, "no_summary", False) and report.exists():
        print(f"population report: {report}")
    return EXIT_FAILED if counts.get("failed", 0) else EXIT_OK
