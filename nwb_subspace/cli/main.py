"""The ``nwb-subspace`` command line.

Each sub-command is a thin wrapper around the Python API; bad input ends with a one-line
reason on stderr and a non-zero exit code, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

from nwb_subspace.errors import ModelFitError
from nwb_subspace.progress import set_progress

EXIT_OK = 0
EXIT_BAD_INPUT = 2
EXIT_FAILED = 1


class CLIError(Exception):
    """An error whose message is shown to the user as is (one line)."""


def _check_nwb(path: Path) -> None:
    """An HDF5 NWB file or an NWB Zarr store (a ``.nwb.zarr`` folder), else a clear error."""
    from nwb_subspace.io.backend import nwb_backend

    if not path.exists():
        raise CLIError(f"no such file: {path}")
    try:
        nwb_backend(path)
    except ValueError as err:
        raise CLIError(str(err)) from None


def _cmd_simulate(args: argparse.Namespace) -> int:
    from nwb_subspace.simulate import PRESETS, simulate_session

    if args.preset not in PRESETS:
        raise CLIError(f"unknown preset {args.preset!r}; choose one of {sorted(PRESETS)}")
    out = Path(args.output)
    if out.exists() and not args.overwrite:
        raise CLIError(f"{out} exists; pass --overwrite to replace it")
    changes = {
        key: getattr(args, key)
        for key in ("design", "repeats", "layout", "sound_format")
        if getattr(args, key) is not None
    }
    preset = PRESETS[args.preset].replace(**changes) if changes else args.preset
    nwb_path, truth_path = simulate_session(
        out, preset=preset, seed=args.seed, raw=args.raw, overwrite=args.overwrite
    )
    print(f"wrote {nwb_path}")
    print(f"ground truth: {truth_path}")
    return EXIT_OK


def _cmd_simulate_population(args: argparse.Namespace) -> int:
    from nwb_subspace.simulate import PRESETS
    from nwb_subspace.simulate.cohort import TRUTH_TABLE, simulate_population

    if args.preset not in PRESETS:
        raise CLIError(f"unknown preset {args.preset!r}; choose one of {sorted(PRESETS)}")
    for name, value, low, high in (
        ("--sessions", args.sessions, 1, None),
        ("--seed", args.seed, 0, None),
        ("--sites-per-session", args.sites_per_session, 1, 8),
        ("--units", args.units, 1, None),
    ):
        if value is not None and (value < low or (high is not None and value > high)):
            span = f"between {low} and {high}" if high is not None else f">= {low}"
            raise CLIError(f"{name} must be {span}, got {value}")
    folder = Path(args.folder)
    if folder.exists() and not folder.is_dir():
        raise CLIError(f"{folder} is a file, not a folder")
    try:
        simulate_population(
            folder,
            args.sessions,
            seed=args.seed,
            preset=args.preset,
            n_sites=args.sites_per_session,
            n_units=args.units,
            overwrite=args.overwrite,
            on_session=print,
        )
    except FileExistsError as err:
        raise CLIError(f"{err}".replace("overwrite=True", "--overwrite")) from None
    print(f"truth table: {folder / TRUTH_TABLE}")
    return EXIT_OK


def _cmd_inspect(args: argparse.Namespace) -> int:
    from nwb_subspace.io.inspect import describe_file

    path = Path(args.file)
    _check_nwb(path)
    print(describe_file(path))
    return EXIT_OK


def _cmd_run(args: argparse.Namespace) -> int:
    from nwb_subspace.config import AnalysisConfig
    from nwb_subspace.io.remote import is_remote
    from nwb_subspace.pipeline import run_session

    remote = is_remote(args.file)  # http(s):// or DANDI: sources are read lazily
    path = args.file if remote else Path(args.file)
    config_file = AnalysisConfig.from_toml(args.config) if args.config else None
    if not remote:
        _check_nwb(path)
    config = (config_file or AnalysisConfig()).with_overrides(
        seed=args.seed, device=args.device, run_name=args.run_name
    )
    if args.trials_table is not None:  # overrides [session] trials_table
        config = replace(config, session=replace(config.session, trials_table=args.trials_table))
    if args.keep_partial:
        config = replace(config, keep_partial=True)
    result = run_session(
        path,
        config,
        output=args.output,
        overwrite=args.overwrite,
        reuse=args.reuse,
        steps=args.steps,
    )
    print(f"results written to {result.output} (processing/misc/{config.run_name})")
    print(score_summary("CNN", result.scores["cnn"]))
    for note in result.notes:
        print(f"note: {note}")
    return EXIT_OK


def score_summary(name: str, scores) -> str:
    """One line on a model's validation scores that never prints NaN as a result.

    The median noise-corrected correlation when some unit has a noise ceiling; else the
    median raw correlation, saying why it is not noise-corrected; else that there is no
    finite score.
    """
    nc = np.asarray(scores.noise_corrected_correlation, dtype=float)
    r = np.asarray(scores.correlation, dtype=float)
    if np.isfinite(nc).any():
        n = int(np.isfinite(nc).sum())
        return (
            f"{name} median noise-corrected correlation: {float(np.nanmedian(nc)):.2f} "
            f"({n} of {nc.size} units with a noise ceiling)"
        )
    if np.isfinite(r).any():
        return (
            f"{name} median validation correlation: {float(np.nanmedian(r)):.2f} (not "
            "noise-corrected: no unit has a noise ceiling; validation sounds need repeats)"
        )
    return f"{name}: no finite validation score (every prediction or response is constant)"


def _cmd_report(args: argparse.Namespace) -> int:
    from nwb_subspace.report.html import make_report

    path = Path(args.file)
    _check_nwb(path)
    html = make_report(path, run=args.run, outdir=args.outdir)
    figures = html.parent / "figures"
    print(f"report:  {html}")
    print(f"figures: {figures} ({len(list(figures.glob('*.png')))} PNG files)")
    return EXIT_OK


def _cmd_demo(args: argparse.Namespace) -> int:
    from nwb_subspace.demo import run_demo

    run_demo(Path(args.outdir), seed=args.seed, preset=args.preset, device=args.device)
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of the ``nwb-subspace`` command."""
    from nwb_subspace import __version__

    parser = argparse.ArgumentParser(
        prog="nwb-subspace",
        description="Tuning subspaces of auditory-cortex neurons from NWB recordings.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--quiet",
        action="store_true",
        help="no progress bars and only warnings in the log (bars are also off when stderr "
        "is not a terminal or CI is set)",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    _add_demo_parser(sub)
    _add_simulate_parser(sub)
    _add_simulate_population_parser(sub)
    _add_run_parser(sub)
    _add_report_parser(sub)
    p = sub.add_parser("inspect", help="say what a file holds that the analysis can use")
    p.add_argument("file", help="NWB file")
    p.set_defaults(func=_cmd_inspect)

    from nwb_subspace.cli.batch import add_batch_parser
    from nwb_subspace.cli.repair import add_repair_parser
    from nwb_subspace.cli.summarize import add_summarize_parser

    add_batch_parser(sub)
    add_summarize_parser(sub)
    add_repair_parser(sub)
    return parser


def _add_demo_parser(sub) -> None:
    p = sub.add_parser("demo", help="simulate a session and run the analysis on it")
    p.add_argument("--outdir", default="nwb_subspace_demo", help="folder for all outputs")
    p.add_argument("--preset", default="small", help="simulation preset (default: small)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--device", choices=["cpu", "cuda", "auto"], default="cpu")
    p.set_defaults(func=_cmd_demo)


def _add_simulate_parser(sub) -> None:
    p = sub.add_parser("simulate", help="write a simulated recording session with ground truth")
    p.add_argument("output", help="NWB file to write")
    p.add_argument(
        "--preset",
        default="tiny",
        help="tiny, small, realistic, population (two sites) or paper (default: tiny)",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--raw", action="store_true", help="also write a short raw ElectricalSeries")
    from nwb_subspace.simulate.presets import DESIGNS, LAYOUTS, SOUND_FORMATS

    p.add_argument(
        "--design",
        choices=DESIGNS,
        default=None,
        help="mixed (estimation sounds once, validation sounds repeated; the presets' "
        "default), all-repeated (every sound --repeats times, same total duration) or "
        "none-repeated",
    )
    p.add_argument(
        "--repeats", type=int, default=None, help="repeats of every sound (all-repeated)"
    )
    p.add_argument(
        "--layout",
        choices=LAYOUTS,
        default=None,
        help="how the sound is written: one continuous series (default), one "
        "AcousticWaveformSeries per presentation, or templates played at the trials' times",
    )
    p.add_argument(
        "--sound-format",
        choices=SOUND_FORMATS,
        default=None,
        help="float (default) or int16 without a conversion factor",
    )
    p.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists")
    p.set_defaults(func=_cmd_simulate)


def _add_simulate_population_parser(sub) -> None:
    p = sub.add_parser(
        "simulate-population",
        help="write a population of simulated multi-site sessions with a truth table",
        description="Simulate N sessions (DIR/session_00.nwb, ...; each with a .truth.npz "
        "sidecar) whose sites vary in kind (shared or independent subspace, clustered or "
        "scattered tiling, narrow units broader or not) in a balanced design, and "
        "DIR/population_truth.csv with one row per session and site.",
    )
    p.add_argument("folder", metavar="DIR", help="output folder (created when missing)")
    p.add_argument("--sessions", type=int, required=True, metavar="N", help="number of sessions")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument(
        "--preset",
        default="population",
        help="simulation preset of every session (default: population: 2 min of sound, "
        "8 units a site)",
    )
    p.add_argument(
        "--sites-per-session",
        type=int,
        default=2,
        metavar="K",
        help="recording sites (shanks) per session, 1-8 (default: 2)",
    )
    p.add_argument(
        "--units", type=int, default=None, metavar="U", help="units per site (default: preset's)"
    )
    p.add_argument("--overwrite", action="store_true", help="replace existing files in DIR")
    p.set_defaults(func=_cmd_simulate_population)


def _add_run_parser(sub) -> None:
    p = sub.add_parser("run", help="run the whole analysis on an NWB file")
    p.add_argument(
        "file", help="NWB file (results appended safely), http(s) URL or DANDI asset address"
    )
    p.add_argument("--config", help="TOML file with analysis settings")
    p.add_argument(
        "--output",
        help="write a new file (source data + results) here; default for a read-only or remote "
        "source: <stem>_desc-subspace.nwb, or sub-01_ses-2_desc-subspace_ecephys.nwb for a "
        "DANDI-named source (beside a local source, else in the current folder)",
    )
    p.add_argument("--device", choices=["cpu", "cuda", "auto"], default=None)
    p.add_argument("--seed", type=int, default=None, help="random seed (default: config's)")
    p.add_argument("--run-name", default=None, help="name of the results container")
    p.add_argument(
        "--trials-table",
        metavar="NAME",
        default=None,
        help="interval table holding the sound presentations (overrides the config's "
        "[session] trials_table; default: trials, else epochs)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace a run of the same name")
    p.add_argument(
        "--keep-partial",
        action="store_true",
        help="store the results even when the CNN fit fails (default: stop, write nothing)",
    )
    p.add_argument(
        "--reuse",
        metavar="RUN_NAME",
        default=None,
        help="take the LN and CNN of this stored run instead of fitting them (refused when "
        "the settings they depend on differ); the new run (--run-name) records where it came "
        "from",
    )
    p.add_argument(
        "--steps",
        metavar="LIST",
        default=None,
        help="comma-separated steps to run: models, subspace, subspace_model, sites "
        "(default: all; with --reuse all after models; e.g. subspace,sites fits nothing)",
    )
    p.set_defaults(func=_cmd_run)


def _add_report_parser(sub) -> None:
    p = sub.add_parser(
        "report",
        help="write an HTML report with figures from results stored in a file (no refitting)",
    )
    p.add_argument("file", help="NWB file holding nwb-subspace results")
    p.add_argument(
        "--run", metavar="NAME", default=None, help="run name (needed when the file holds several)"
    )
    p.add_argument(
        "--outdir",
        metavar="DIR",
        default=None,
        help="folder for report.html and figures/ (default: <file stem>_report_<run> beside it)",
    )
    p.set_defaults(func=_cmd_report)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s")
    # --quiet for this call only: main() run in-process (tests, notebooks) puts it back
    previous = set_progress(False if args.quiet else None)
    try:
        return args.func(args)
    except CLIError as err:
        print(f"nwb-subspace: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except ModelFitError as err:
        print(f"nwb-subspace: error: {err}", file=sys.stderr)
        return EXIT_FAILED
    except (ValueError, TypeError, OSError) as err:
        if args.debug:
            raise
        print(f"nwb-subspace: error: {' '.join(str(err).split())}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Exception as err:  # a failed write, a file pynwb cannot read, a bug: one line
        if args.debug:
            raise
        from nwb_subspace.cli.repair import describe_error

        message, code = describe_error(err, args)
        print(f"nwb-subspace: error: {message}", file=sys.stderr)
        return code
    finally:
        set_progress(previous)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
