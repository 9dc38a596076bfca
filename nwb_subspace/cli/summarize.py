"""``nwb-subspace summarize``: population tables, statistics and report from many runs.

Registered by :func:`add_summarize_parser`; the work is
:func:`nwb_subspace.population.summarize_runs`.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

EXIT_OK = 0
EXIT_SKIPPED = 1
EXIT_BAD_INPUT = 2

__all__ = ["add_summarize_parser", "run_summarize_command", "print_summary"]


def add_summarize_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``summarize`` sub-command to an ``argparse`` sub-parsers object."""
    p = subparsers.add_parser(
        "summarize",
        help="population tables, statistics and report from many stored runs",
        description="Read the stored run of every result file (only its tables, never the "
        "models), check the sessions are comparable, and write OUTDIR/population_units, "
        "_sites, _sessions and _statistics (CSV and Parquet), skipped.csv and "
        "population_report.html. Exit code 1 when some files were skipped (the rest are "
        "still summarised), 2 on bad input or when nothing could be read.",
    )
    p.add_argument(
        "results",
        nargs="+",
        metavar="RESULTS",
        help="result NWB files or NWB Zarr stores (.nwb.zarr), folders (their *.nwb and "
        "*.nwb.zarr, e.g. a batch outdir), globs ('out/*.nwb') or URLs",
    )
    p.add_argument("--outdir", required=True, help="folder for the tables and the report")
    p.add_argument(
        "--run", default=None, help="name of the run to read (default: each file's only run)"
    )
    p.add_argument(
        "--permutations",
        type=int,
        default=1000,
        help="site-label permutations of the same-site vs different-site test (default 1000)",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument(
        "--group-method",
        choices=["site_means", "mixed_model"],
        default=None,
        help="narrow vs broad and layer tests (default: the runs' [sites] group_method)",
    )
    p.add_argument("--no-report", action="store_true", help="tables only, no HTML report")
    p.set_defaults(func=run_summarize_command)
    return p


def print_summary(summary) -> None:
    """Print what was summarised, the headline verdicts, skipped files and notes."""
    n_units, n_sites = len(summary.units), len(summary.sites)
    print(
        f"summarised {len(summary.sessions)} session(s), {n_sites} site(s), {n_units} unit(s); "
        f"{len(summary.skipped)} skipped"
    )
    stats = summary.statistics
    if len(stats):
        top = stats[stats["site"].astype(str).str.startswith("population")]
        for row in (top if len(top) else stats).itertuples():
            print(f"  {row.statistic} [{row.site}]: {row.verdict}")
    for file, reason in summary.skipped:
        print(f"skipped: {file}: {reason}")
    for note in summary.notes:
        print(f"note: {note}")
    if summary.report is not None:
        print(f"report: {summary.report}")


def run_summarize_command(args: argparse.Namespace) -> int:
    """Run ``nwb-subspace summarize``; return the exit code."""
    from nwb_subspace.population import summarize_runs

    try:
        summary = summarize_runs(
            args.results,
            args.outdir,
            args.run,
            n_permutations=args.permutations,
            seed=args.seed,
            group_method=args.group_method,
            report=not args.no_report,
        )
    except (ValueError, TypeError, OSError) as err:
        print(f"nwb-subspace: error: {' '.join(str(err).split())}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print_summary(summary)
    if not len(summary.sessions):
        print("nwb-subspace: error: no run could be read; see skipped.csv", file=sys.stderr)
        return EXIT_BAD_INPUT
    return EXIT_SKIPPED if summary.skipped else EXIT_OK
