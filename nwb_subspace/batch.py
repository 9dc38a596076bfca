"""Run many sessions on Dask distributed: one task per session, resumable, with a summary.

:func:`run_batch` expands its sources (files, folders, globs, URLs, DANDI specs), gives
each session its own output file in ``outdir`` (``<stem>_desc-subspace<key>.nwb``, or
``sub-01_ses-2_desc-subspace<key>_ecephys.nwb`` for a DANDI-named source; ``key``: 8 hex
digits of the SHA-256 of the source's resolved path or URL, so two sources of the same file
name never share an output), skips sessions whose own output (or its output under the
pre-DANDI name ``<stem>_<key>_subspace.nwb``) already holds the finished run,
and submits one
:func:`~nwb_subspace.pipeline.run_session` task per remaining session to a Dask cluster: a
``LocalCluster`` of single-threaded worker processes by default, or an existing scheduler.
A failing session is reported with its error and does not stop the others. The summary
(one row per session of this call) is returned as a pandas DataFrame and written atomically
to ``outdir/batch_summary.csv``.

Each output is written atomically by :func:`~nwb_subspace.io.writer.write_results`, so a
session interrupted mid-way leaves no output and runs again next time.
"""

from __future__ import annotations

import glob
import hashlib
import logging
import os
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from nwb_subspace.config import AnalysisConfig
from nwb_subspace.io.atomic import write_atomically
from nwb_subspace.io.backend import is_zarr_name, store_stem
from nwb_subspace.io.dandi_address import is_dandi_address, parse_dandi_address
from nwb_subspace.io.dandi_names import derived_output_name, source_file_name
from nwb_subspace.io.remote import dandiset_nwb_urls, is_remote

log = logging.getLogger("nwb_subspace")

SUMMARY_COLUMNS = ["source", "status", "seconds", "output", "error", "median_cnn_score"]
SUMMARY_FILE = "batch_summary.csv"
POPULATION_DIR = "population"
"""Sub-folder of a batch's outdir holding its population summary."""
_DANDISET_ID = re.compile(r"^\d{6}$")
_GLOB_CHARS = set("*?[")

__all__ = [
    "POPULATION_DIR",
    "SUMMARY_COLUMNS",
    "SUMMARY_FILE",
    "BatchSession",
    "expand_sources",
    "require_dask",
    "run_batch",
    "session_output",
    "source_key",
]


@dataclass(frozen=True)
class BatchSession:
    """One session of a batch: where it is read from and where its results go."""

    source: str
    output: Path


def _is_dandiset(text: str) -> bool:
    """A dandiset, folder, path prefix or glob of DANDI assets (not one asset)."""
    if _DANDISET_ID.match(text) and not Path(text).exists():
        return True
    if is_dandi_address(text):
        return not parse_dandi_address(text).single_asset
    return False


def _is_store(path: Path) -> bool:
    """A local NWB Zarr store: a folder named ``*.zarr`` or holding a Zarr group."""
    return path.is_dir() and (
        is_zarr_name(path) or (path / ".zgroup").is_file() or (path / "zarr.json").is_file()
    )


def _sessions_in(folder: Path) -> list[Path]:
    """The ``*.nwb`` files and ``*.nwb.zarr`` stores of a folder, by name."""
    stores = [p for p in folder.glob("*.nwb.zarr") if _is_store(p)]
    return sorted([*folder.glob("*.nwb"), *stores], key=lambda p: p.name)


def expand_sources(sources: Iterable[str | os.PathLike]) -> list[tuple[str, str]]:
    """(source, name) of every session, in the order given, without duplicates.

    Each entry may be a local ``.nwb`` file or NWB Zarr store (a ``.nwb.zarr`` folder), a
    folder (its ``*.nwb`` files and ``*.nwb.zarr`` stores), a glob pattern, an HTTP(S) URL, a
    DANDI asset address, or a dandiset or folder of one (``DANDI:000123``,
    ``000123``, ``dandi://dandi/000123/sub-1/``,
    ``https://dandiarchive.org/dandiset/000123/draft``: every ``.nwb`` asset; needs the
    ``dandi`` client; the accepted forms: :mod:`nwb_subspace.io.dandi_address`).
    ``name`` is the file name the session's output is named after. A local path that does
    not exist is kept: its task fails and the summary says why.

    Raises
    ------
    ValueError
        A glob or folder that matches no ``.nwb`` file or ``.nwb.zarr`` store, or no sources
        at all.
    """
    found: list[tuple[str, str]] = []
    for item in sources:
        text = str(item)
        if _is_dandiset(text):
            spec = f"DANDI:{text}" if _DANDISET_ID.match(text) else text
            assets = dandiset_nwb_urls(spec)
            if not assets:
                raise ValueError(f"dandiset {text!r} has no .nwb assets")
            found.extend((url, Path(path).name) for path, url in assets.items())
        elif is_remote(text):
            found.append((text, source_file_name(text)))
        elif _GLOB_CHARS & set(text):
            matches = sorted(glob.glob(text))
            if not matches:
                raise ValueError(f"{text!r} matches no file")
            found.extend((str(Path(m).resolve()), Path(m).name) for m in matches)
        elif Path(text).is_dir() and not _is_store(Path(text)):
            matches = _sessions_in(Path(text))
            if not matches:
                raise ValueError(f"folder {text} holds no .nwb file nor .nwb.zarr store")
            found.extend((str(m.resolve()), m.name) for m in matches)
        else:  # a file or a Zarr store
            found.append((str(Path(text).resolve()), Path(text).name))
    if not found:
        raise ValueError("no sources given; pass NWB files, folders, globs, URLs or a dandiset")
    seen: set[str] = set()
    return [(s, n) for s, n in found if not (s in seen or seen.add(s))]


def source_key(source: str) -> str:
    """8 hex digits identifying a session's source: the SHA-256 of its resolved path or URL.

    Two sources of the same file name (``a/session.nwb``, ``b/session.nwb``) get different
    keys, so their outputs never collide and a resume never takes one for the other.
    """
    return hashlib.sha256(str(source).encode("utf-8")).hexdigest()[:8]


def session_output(source: str, name: str, outdir: str | os.PathLike) -> Path:
    """The output of one session: ``outdir/<name with desc-subspace<key>>``.

    Named by :func:`~nwb_subspace.io.dandi_names.derived_output_name` with
    ``key=source_key(source)``: ``sub-01_ses-2_ecephys.nwb`` ->
    ``sub-01_ses-2_desc-subspace1a2b3c4d_ecephys.nwb``, ``session.nwb`` ->
    ``session_desc-subspace1a2b3c4d.nwb`` (DANDI labels are alphanumeric, so the key is
    part of the ``desc`` label).

    Parameters
    ----------
    source : str
        The resolved local path or the URL, as :func:`expand_sources` gives it.
    name : str
        The file name the output is named after.
    outdir : path-like
        The batch's output folder.

    Returns
    -------
    Path
        Depends on ``source`` itself, not only on its name, so the same source always maps
        to the same output (resume) and different sources never share one. The per-session
        summary CSVs are named after the output's stem, so they do not collide either.
    """
    return Path(outdir) / derived_output_name(name, key=source_key(source))


def _legacy_output(source: str, name: str, outdir: Path) -> Path:
    """The output name of nwb-subspace before DANDI names: ``<stem>_<key>_subspace.nwb``."""
    stem = store_stem(name) or "session"
    return outdir / f"{stem}_{source_key(source)}_subspace.nwb"


def _output(source: str, name: str, outdir: Path) -> Path:
    """:func:`session_output`, or the old-style output of the same source when only that one
    exists, so that a folder half done by an older version resumes instead of re-running."""
    output = session_output(source, name, outdir)
    legacy = _legacy_output(source, name, outdir)
    return legacy if not output.exists() and legacy.exists() else output


def _plan(sources: list[tuple[str, str]], outdir: Path) -> list[BatchSession]:
    """Give every session its own output file (:func:`session_output`; an existing output
    under the old name ``<stem>_<key>_subspace.nwb`` is used as it is)."""
    plan = [BatchSession(source=s, output=_output(s, n, outdir)) for s, n in sources]
    by_output: dict[Path, str] = {}
    for session in plan:
        other = by_output.setdefault(session.output, session.source)
        if other != session.source:  # a SHA-256 prefix collision: never share an output
            raise ValueError(
                f"sources {other!r} and {session.source!r} map to the same output "
                f"{session.output.name}; rename one of them"
            )
    return plan


def _finished(output: Path, run_name: str) -> bool | None:
    """True: the output holds the run; False: no output; None: an output without the run."""
    from nwb_subspace.io.writer import list_runs

    if not output.exists():
        return False
    try:
        return True if run_name in list_runs(output) else None
    except (OSError, ValueError, KeyError):
        return None


def _stored_score(output: Path, run_name: str) -> float:
    """Median noise-corrected correlation of the CNN stored in a finished output (NaN if
    it cannot be read)."""
    from nwb_subspace.io.writer import read_results

    try:
        results = read_results(output, run_name)
    except Exception:  # an unreadable score must not stop the batch; it is only reported
        return float("nan")
    for model in results.models:
        if model.kind == "cnn" and model.scores is not None:
            return _median(model.scores.noise_corrected_correlation)
    return float("nan")


def _median(values: Any) -> float:
    values = np.asarray(values, dtype=float)
    return float(np.nanmedian(values)) if np.isfinite(values).any() else float("nan")


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split()) or "no message"
    return f"{type(err).__name__}: {text}"


def run_one_session(source: str, output: str, config: AnalysisConfig) -> dict[str, Any]:
    """Dask task: run one session into ``output``; never raises (errors are reported).

    Torch is limited to one thread so that single-threaded workers do not oversubscribe
    the cores.
    """
    import torch

    from nwb_subspace.pipeline import run_session

    torch.set_num_threads(1)
    start = time.perf_counter()
    row: dict[str, Any] = {"source": source, "output": output, "error": ""}
    try:
        result = run_session(source, config, output=output)
        score = _median(result.scores["cnn"].noise_corrected_correlation)
        row.update(status="ok", median_cnn_score=score, output=str(result.output))
    except Exception as err:  # one bad session must not stop the batch
        row.update(status="failed", error=_one_line(err), median_cnn_score=float("nan"))
    row["seconds"] = round(time.perf_counter() - start, 2)
    return row


def require_dask() -> None:
    """Check that Dask distributed is installed (the ``batch`` extra), before any work.

    Raises
    ------
    ImportError
        ``dask.distributed`` cannot be imported; the message says what to install.
    """
    try:
        import dask.distributed  # noqa: F401
    except ImportError as err:
        raise ImportError(
            "nwb-subspace batch runs sessions on Dask distributed, which is not installed "
            f'({_one_line(err)}); install it with: pip install "nwb-subspace[batch]"'
        ) from err


def _client(scheduler: str | None, n_workers: int) -> tuple[Any, Any]:
    from dask.distributed import Client, LocalCluster

    if scheduler is not None:
        return Client(scheduler), None
    env = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    cluster = LocalCluster(
        n_workers=n_workers,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        env=env,
    )
    return Client(cluster), cluster


def run_batch(
    sources: Iterable[str | os.PathLike],
    outdir: str | os.PathLike,
    config: AnalysisConfig | None = None,
    *,
    scheduler: str | None = None,
    n_workers: int = 2,
    progress: Callable[[dict[str, Any]], None] | None = None,
    summarize: bool = True,
) -> pd.DataFrame:
    """Run :func:`~nwb_subspace.pipeline.run_session` on many sessions with Dask.

    Parameters
    ----------
    sources : iterable of str or path-like
        NWB files, NWB Zarr stores (``.nwb.zarr``), folders, globs, HTTP(S) URLs, DANDI asset
        specs or dandisets (see :func:`expand_sources`).
    outdir : path-like
        Folder for the per-session outputs (:func:`session_output`:
        ``<stem>_desc-subspace<key>.nwb``, or ``.nwb.zarr`` for a Zarr source: the source's
        data plus the results; an output
        of an older version, ``<stem>_<key>_subspace.nwb``, still counts as done) and
        ``batch_summary.csv``; created if missing.
    config : AnalysisConfig, optional
        The settings of every session (default: ``AnalysisConfig()``).
    scheduler : str, optional
        Address of a running Dask scheduler (``tcp://host:8786``). Default: a
        ``LocalCluster`` of ``n_workers`` processes with one thread each, closed at the end.
    n_workers : int, default 2
        Workers of the local cluster (ignored with ``scheduler``).
    progress : callable, optional
        Called with each session's summary row as it finishes.
    summarize : bool, default True
        Then summarise every output holding the run into ``outdir/population``
        (:func:`~nwb_subspace.population.summarize_runs`: population tables, statistics and
        report). A summary that fails is logged and does not change the returned table.

    Returns
    -------
    pandas.DataFrame
        One row per session, in the order of ``sources``: ``source``, ``status`` (``ok``,
        ``failed`` or ``skipped``: its own output already held the run), ``seconds``,
        ``output``, ``error`` (one line, empty unless failed) and ``median_cnn_score`` (median
        noise-corrected correlation of the CNN over units, read back from the output for a
        skipped session; NaN when failed).

    Raises
    ------
    ImportError
        Dask distributed is not installed (``pip install "nwb-subspace[batch]"``).
    ValueError
        Bad settings or sources (:func:`expand_sources`).
    """
    config = config or AnalysisConfig()
    if not isinstance(config, AnalysisConfig):
        raise TypeError(f"config must be an AnalysisConfig; got {type(config).__name__}")
    if isinstance(n_workers, bool) or not isinstance(n_workers, int) or n_workers < 1:
        raise ValueError(f"n_workers must be a positive integer; got {n_workers!r}")
    require_dask()
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    plan = _plan(expand_sources(sources), outdir.resolve())
    rows: dict[int, dict[str, Any]] = {}
    todo: list[tuple[int, BatchSession]] = []
    for i, session in enumerate(plan):
        done = _finished(session.output, config.run_name)
        base = {"source": session.source, "output": str(session.output), "seconds": 0.0}
        if done:
            score = _stored_score(session.output, config.run_name)
            rows[i] = {**base, "status": "skipped", "error": "", "median_cnn_score": score}
        elif done is None:
            rows[i] = {
                **base,
                "status": "failed",
                "error": f"output {session.output} exists but holds no run "
                f"{config.run_name!r}; remove it or choose another outdir",
                "median_cnn_score": np.nan,
            }
        else:
            todo.append((i, session))
    for row in rows.values():
        log.info("%s: %s", row["source"], row["status"])
    if todo:
        rows.update(_submit(todo, config, scheduler, n_workers, progress))
    table = pd.DataFrame([rows[i] for i in range(len(plan))], columns=SUMMARY_COLUMNS)
    _write_csv_atomically(table, outdir / SUMMARY_FILE)
    if summarize:
        _summarize(table, outdir / POPULATION_DIR, config.run_name)
    return table


def _summarize(table: pd.DataFrame, folder: Path, run_name: str) -> None:
    """The population summary of the batch's outputs that hold the run (never raises)."""
    from nwb_subspace.population import summarize_runs

    done = table.loc[table["status"].isin(["ok", "skipped"]), "output"].tolist()
    if not done:
        log.warning("no session holds run %r: no population summary", run_name)
        return
    try:
        summary = summarize_runs(done, folder, run_name)
    except Exception as err:  # the batch's own results stand; say why there is no summary
        log.warning("population summary failed: %s", _one_line(err))
        return
    log.info(
        "population summary of %d session(s) in %s (%d skipped)",
        len(summary.sessions), folder, len(summary.skipped),
    )  # fmt: skip


def _write_csv_atomically(table: pd.DataFrame, path: Path) -> None:
    """Write ``table`` next to ``path`` and rename it over ``path`` (never half a file)."""
    write_atomically(path, lambda tmp: table.to_csv(tmp, index=False))


def _submit(
    todo: list[tuple[int, BatchSession]],
    config: AnalysisConfig,
    scheduler: str | None,
    n_workers: int,
    progress: Callable[[dict[str, Any]], None] | None,
) -> dict[int, dict[str, Any]]:
    """One Dask task per session; collect the rows as they finish."""
    from dask.distributed import as_completed

    client, cluster = _client(scheduler, n_workers)
    rows: dict[int, dict[str, Any]] = {}
    try:
        futures = {
            client.submit(
                run_one_session,
                s.source,
                str(s.output),
                config,
                key=f"nwb-subspace-session-{i}-{time.time_ns()}",
                pure=False,
            ): (i, s)
            for i, s in todo
        }
        for future in as_completed(futures):
            i, session = futures[future]
            try:
                row = future.result()
            except Exception as err:  # the worker died (memory, a crash)
                row = {
                    "source": session.source,
                    "output": str(session.output),
                    "status": "failed",
                    "seconds": np.nan,
                    "error": _one_line(err),
                    "median_cnn_score": np.nan,
                }
            if row["status"] != "ok":
                row["output"] = ""
            rows[i] = row
            log.info("%s: %s in %.1f s", row["source"], row["status"], row["seconds"])
            if progress is not None:
                progress(row)
    finally:
        _shut_down(client, cluster)
    return rows


def _shut_down(client: Any, cluster: Any) -> None:
    """Close the client and our local cluster; a slow shutdown (a loaded machine: dask's
    5-s close timeout) is logged, never raised: every session's output is already on disk
    and its row known, so failing here would only lose the batch summary."""
    for what, obj in (("client", client), ("cluster", cluster)):
        if obj is None:
            continue
        try:
            obj.close()
        except (TimeoutError, OSError) as err:  # asyncio / tornado timeouts are TimeoutError
            log.warning("dask %s did not close cleanly (%s); results are complete", what,
                        _one_line(err))  # fmt: skip
