"""Run many sessions on Dask distributed: one task per session, resumable, with a summary.

:func:`run_batch` expands its sources (files, folders, globs, URLs, DANDI specs), gives
each session its own output file in ``outdir`` (``<stem>_desc-subspace<key>.nwb``, or
``sub-01_ses-2_desc-subspace<key>_ecephys.nwb`` for a DANDI-named source; ``key``: 8 hex
digits of the SHA-256 of the source's resolved path or URL, so two sources of the same file
name never share an output), skips sessions whose own output (or its output under the
pre-DANDI name ``<stem>_<key>_subspace.nwb``) already holds the finished run,
and submits one
:func:`~nwb_subspace.pipeline.run_session` task per remaining session to a Dask cluster: by
default a local cluster of single-threaded worker processes, one per GPU it uses (each seeing
only its GPU; ``device = "auto"`` or ``"cuda"``) plus ``n_workers`` CPU workers (seeing no
GPU), see :func:`worker_plan`; or an existing scheduler and its workers.
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
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from nwb_subspace.config import AnalysisConfig
from nwb_subspace.devices import ALL, GPU_ENV, choose_gpus, device_label, parse_gpus, visible_gpus
from nwb_subspace.io.atomic import write_atomically
from nwb_subspace.io.backend import is_zarr_name, store_stem
from nwb_subspace.io.dandi_address import is_dandi_address, parse_dandi_address
from nwb_subspace.io.dandi_names import derived_output_name, source_file_name
from nwb_subspace.io.remote import dandiset_nwb_urls, is_remote

log = logging.getLogger("nwb_subspace")

SUMMARY_COLUMNS = [
    "source", "status", "seconds", "output", "error", "median_cnn_score", "device",
]  # fmt: skip
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
    "local_cluster",
    "require_dask",
    "run_batch",
    "session_output",
    "source_key",
    "worker_plan",
    "worker_specs",
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
    the cores. The row's ``device`` is where this worker runs the session
    (:func:`~nwb_subspace.devices.device_label` of ``config.device``: ``"cpu"`` or
    ``"cuda:<id>"``; empty when ``config.device`` cannot be used here, the row then failed).
    """
    import torch

    from nwb_subspace.pipeline import run_session

    torch.set_num_threads(1)
    start = time.perf_counter()
    row: dict[str, Any] = {"source": source, "output": output, "error": "", "device": ""}
    try:
        row["device"] = device_label(config.device)
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


def worker_plan(
    device: str,
    gpus: int | str = ALL,
    n_workers: int = 2,
    *,
    found: Sequence[str] | None = None,
) -> tuple[list[str], int]:
    """The workers of a local batch: the GPUs that get one each, and the CPU workers.

    Parameters
    ----------
    device : {"cpu", "cuda", "auto"}
        The analysis' device. ``"auto"``: a worker per chosen GPU plus ``n_workers`` CPU
        workers; ``"cpu"``: CPU workers only; ``"cuda"``: GPU workers only (a CPU worker
        could not run a session; ``n_workers`` is then ignored, with a log line).
    gpus : int or "all", default "all"
        GPU workers: one per GPU found, or this many (:func:`~nwb_subspace.devices.choose_gpus`).
    n_workers : int, default 2
        CPU workers (``>= 0``; ``0`` needs at least one GPU worker).
    found : sequence of str, optional
        The GPUs to choose from, as ``CUDA_VISIBLE_DEVICES`` entries. Default: the GPUs torch
        sees here (:func:`~nwb_subspace.devices.visible_gpus`; not looked up for ``"cpu"``
        unless ``gpus="all"``, which then only logs how to use them).

    Returns
    -------
    (list of str, int)
        The ``CUDA_VISIBLE_DEVICES`` entry of each GPU worker, and the number of CPU workers.

    Raises
    ------
    ValueError
        A bad ``gpus``, ``device`` or ``n_workers``; more GPUs than found; no worker at all.
    """
    count = parse_gpus(gpus)
    if isinstance(n_workers, bool) or not isinstance(n_workers, int) or n_workers < 0:
        raise ValueError(f"n_workers must be an integer >= 0; got {n_workers!r}")
    if found is None and (device != "cpu" or count == ALL):
        found = visible_gpus()
    chosen = choose_gpus(gpus, found or [], device)
    if device == "cpu" and found:
        log.info(
            "torch sees %d GPU(s); device 'cpu' runs every session on the CPU workers (use "
            "device 'auto' for one worker per GPU as well)", len(found),
        )  # fmt: skip
    n_cpu = 0 if device == "cuda" else n_workers
    if device == "cuda" and n_workers:
        log.info("device 'cuda': %d GPU worker(s) and no CPU worker", len(chosen))
    if not chosen and n_cpu == 0:
        raise ValueError(
            f"n_workers must be >= 1 when no GPU worker runs (device {device!r}, "
            f"{len(found or [])} GPU(s) found, gpus={gpus!r}); got {n_workers!r}"
        )
    return chosen, n_cpu


def worker_specs(gpus: Sequence[str], n_cpu: int) -> dict[str, dict[str, Any]]:
    """The local cluster's workers as a ``distributed.SpecCluster`` worker spec.

    One single-threaded worker process (a ``Nanny``) per entry of ``gpus``, named
    ``gpu-<id>`` and seeing only that GPU (``CUDA_VISIBLE_DEVICES=<id>``), and ``n_cpu``
    named ``cpu-<i>`` seeing none (``CUDA_VISIBLE_DEVICES=""``), so ``device = "auto"``
    resolves to ``cuda`` on the first and ``cpu`` on the others. Every worker has
    ``OMP/MKL/OPENBLAS_NUM_THREADS=1`` and an equal share of the machine's memory.

    Raises
    ------
    ValueError
        No worker at all, or a negative ``n_cpu``.
    """
    from dask.distributed import Nanny

    if isinstance(n_cpu, bool) or not isinstance(n_cpu, int) or n_cpu < 0:
        raise ValueError(f"n_cpu must be an integer >= 0; got {n_cpu!r}")
    total = len(gpus) + n_cpu
    if total < 1:
        raise ValueError("a local cluster needs at least one worker (a GPU or a CPU one)")
    threads = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}

    def spec(visible: str) -> dict[str, Any]:
        env = {**threads, GPU_ENV: visible}
        options = {"nthreads": 1, "memory_limit": 1.0 / total, "env": env}
        return {"cls": Nanny, "options": {**options, "silence_logs": logging.WARNING}}

    specs = {f"gpu-{g}": spec(str(g)) for g in gpus}
    specs.update({f"cpu-{i}": spec("") for i in range(n_cpu)})
    return specs


def local_cluster(specs: dict[str, dict[str, Any]]) -> Any:
    """Start a ``distributed.SpecCluster`` of these workers (:func:`worker_specs`) with a
    scheduler on 127.0.0.1 and no dashboard; the caller closes it."""
    from dask.distributed import Scheduler, SpecCluster

    scheduler = {
        "cls": Scheduler,
        "options": {"host": "127.0.0.1", "port": 0, "dashboard": False,
                    "dashboard_address": None},
    }  # fmt: skip
    return SpecCluster(workers=specs, scheduler=scheduler, silence_logs=logging.WARNING)


def _client(scheduler: str | None, workers: tuple[list[str], int]) -> tuple[Any, Any]:
    from dask.distributed import Client

    if scheduler is not None:
        return Client(scheduler), None
    gpus, n_cpu = workers
    log.info(
        "local Dask cluster: %d GPU worker(s)%s and %d CPU worker(s)",
        len(gpus), f" ({GPU_ENV}={','.join(gpus)})" if gpus else "", n_cpu,
    )  # fmt: skip
    cluster = local_cluster(worker_specs(gpus, n_cpu))
    try:
        return Client(cluster), cluster
    except BaseException:
        cluster.close()
        raise


def run_batch(
    sources: Iterable[str | os.PathLike],
    outdir: str | os.PathLike,
    config: AnalysisConfig | None = None,
    *,
    scheduler: str | None = None,
    n_workers: int = 2,
    n_gpus: int | str = ALL,
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
        Address of a running Dask scheduler (``tcp://host:8786``): its workers run the
        sessions as they are (``n_workers`` and ``n_gpus`` are ignored; a worker's
        ``config.device`` resolves on that worker). Default: a local cluster of
        single-threaded worker processes (:func:`worker_plan`, :func:`worker_specs`), closed
        at the end.
    n_workers : int, default 2
        CPU workers of the local cluster (seeing no GPU; ``0`` for GPU workers only).
    n_gpus : int or "all", default "all"
        GPU workers of the local cluster when ``config.device`` is ``"auto"`` or ``"cuda"``:
        one per GPU torch sees (``"all"``) or this many, each seeing only its GPU. With
        ``config.device == "cpu"`` there is none (a count > 0 is then an error).
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
        skipped session; NaN when failed) and ``device`` (where the session ran: ``"cpu"``
        or ``"cuda:<id>"``, ``<id>`` the GPU as this process numbers it; empty for a skipped
        session, or one that failed before it got a device).

    Raises
    ------
    ImportError
        Dask distributed is not installed (``pip install "nwb-subspace[batch]"``).
    ValueError
        Bad settings or sources (:func:`expand_sources`), or workers (:func:`worker_plan`:
        a bad ``n_gpus``, more GPUs than found, no worker at all).
    """
    config = config or AnalysisConfig()
    if not isinstance(config, AnalysisConfig):
        raise TypeError(f"config must be an AnalysisConfig; got {type(config).__name__}")
    workers = ([], 0) if scheduler is not None else worker_plan(config.device, n_gpus, n_workers)
    require_dask()
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    plan = _plan(expand_sources(sources), outdir.resolve())
    rows: dict[int, dict[str, Any]] = {}
    todo: list[tuple[int, BatchSession]] = []
    for i, session in enumerate(plan):
        done = _finished(session.output, config.run_name)
        base = {
            "source": session.source, "output": str(session.output), "seconds": 0.0,
            "device": "",
        }  # fmt: skip
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
        rows.update(_submit(todo, config, scheduler, workers, progress))
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
    workers: tuple[list[str], int],
    progress: Callable[[dict[str, Any]], None] | None,
) -> dict[int, dict[str, Any]]:
    """One Dask task per session; collect the rows as they finish."""
    from dask.distributed import as_completed

    client, cluster = _client(scheduler, workers)
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
                    "device": "",
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
