"""Summarise many stored runs into population tables, statistics and a report.

:func:`summarize_runs` is ``nwb-subspace summarize`` (and the last step of ``batch``). It
reads, one file at a time, only the stored tables a population summary needs (scores, tuning
subspaces, SRF measures, site subspaces and site statistics; never the models), keeps a few
numbers per unit and each analysed unit's subspace basis, and releases the file before the
next. From those it builds

* the population tables (``population_units``, ``population_sites``,
  ``population_sessions``: CSV and Parquet; columns in :mod:`nwb_subspace.population.columns`),
* the population statistics with units nested in sites (``population_statistics``: model
  comparison across sites, dimensionality, same-site vs different-site similarity, tiling
  across sites, narrow vs broad and layers, depth profile),
* ``population_report.html`` with the figures,
* ``skipped.csv``: every file that could not be summarised, and why.

Sessions are comparable when the settings that shape the measures agree
(:func:`~nwb_subspace.population.tables.settings_key`); the ones that differ are named in the
result, the report and the log. A file that is missing, unreadable or holds no run of the name
asked for is skipped with its reason; the rest are still summarised.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from nwb_subspace.io.atomic import write_atomically
from nwb_subspace.population.columns import SESSION_COLUMNS, SITE_COLUMNS, UNIT_COLUMNS
from nwb_subspace.results import STATISTIC_FIELDS

log = logging.getLogger("nwb_subspace")

__all__ = ["PopulationSummary", "summarize_runs", "SKIPPED_FILE"]

SKIPPED_FILE = "skipped.csv"
_TABLES = ("units", "sites", "sessions", "statistics")


@dataclass
class PopulationSummary:
    """What :func:`summarize_runs` built.

    Attributes
    ----------
    units, sites, sessions : DataFrame
        The population tables (:mod:`nwb_subspace.population.columns`).
    statistics : DataFrame
        Population statistics rows (``results.STATISTIC_FIELDS``).
    skipped : list of (str, str)
        (file, reason) of every source not summarised.
    differing : dict of str -> dict of str -> Any
        Settings that differ between the summarised sessions: setting -> {session: value}.
    notes : list of str
        Tests that could not be done and why, and other plain-words notes.
    files : list of Path
        Files written.
    report : Path or None
        The HTML report (None when ``report=False`` or nothing was summarised).
    locality : object or None
        The same-site vs different-site result (figure data), when it could be computed.
    """

    units: pd.DataFrame
    sites: pd.DataFrame
    sessions: pd.DataFrame
    statistics: pd.DataFrame
    skipped: list[tuple[str, str]] = field(default_factory=list)
    differing: dict[str, dict[str, Any]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    report: Path | None = None
    locality: Any = None


@dataclass
class _Collected:
    """Per-session pieces gathered while streaming over the files."""

    units: list[pd.DataFrame] = field(default_factory=list)
    sites: list[pd.DataFrame] = field(default_factory=list)
    sessions: list[dict] = field(default_factory=list)
    bases: list[np.ndarray] = field(default_factory=list)
    base_session: list[str] = field(default_factory=list)
    base_site: list[str] = field(default_factory=list)
    settings: dict[str, dict] = field(default_factory=dict)
    methods: list[tuple[str, int]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


def _one_line(err: BaseException | str, limit: int = 300) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _session_names(sources: Sequence[tuple[str, str]]) -> list[str]:
    """File names without ``.nwb`` / ``.nwb.zarr``, made unique with the source key where two
    sources share one (``x.nwb`` and ``x.nwb.zarr`` too)."""
    from nwb_subspace.batch import source_key
    from nwb_subspace.io.backend import store_stem

    stems = [store_stem(name) or "session" for _, name in sources]
    counts = Counter(stems)
    return [
        stem if counts[stem] == 1 else f"{stem}_{source_key(src)}"
        for stem, (src, _) in zip(stems, sources, strict=True)
    ]


def _collect_one(source: str, session: str, run_name: str | None, module: str, c: _Collected):
    """Read one stored run and keep its rows and bases (raises on an unusable file)."""
    from nwb_subspace.io.stored_run import read_stored_run
    from nwb_subspace.population import tables

    run = read_stored_run(source, run_name, module=module, session=session)
    units = tables.unit_rows(run)
    sites = tables.site_rows(run, units)
    row = tables.session_row(run, units, sites)
    row["settings_key"], settings = tables.settings_key(run)  # the CNN's n_lags included
    unit_rows, bases = tables.unit_bases(run)
    site_of = dict(zip(units["unit_row"].tolist(), units["site"].tolist(), strict=True))
    c.units.append(units)
    c.sites.append(sites)
    c.sessions.append(row)
    c.settings[session] = settings
    for r, b in zip(np.asarray(unit_rows).tolist(), bases, strict=True):
        c.bases.append(np.asarray(b, dtype=np.float32))
        c.base_session.append(session)
        c.base_site.append(str(site_of.get(int(r), "unknown")))
    sites_cfg = run.config.get("sites") or {}
    c.methods.append(
        (str(sites_cfg.get("group_method", "site_means")), int(sites_cfg.get("min_per_group", 2)))
    )


def differing_settings(settings: dict[str, dict]) -> dict[str, dict[str, Any]]:
    """Settings whose values differ between sessions: setting -> {session: value}.

    Parameters
    ----------
    settings : dict of str -> dict
        Each session's comparable settings (:func:`~nwb_subspace.population.tables.settings_key`).
    """
    names = sorted({k for s in settings.values() for k in s})
    out: dict[str, dict[str, Any]] = {}
    for name in names:
        values = {session: s.get(name) for session, s in settings.items()}
        if len({json.dumps(v, sort_keys=True, default=str) for v in values.values()}) > 1:
            out[name] = values
    return out


def _frame(parts: list[pd.DataFrame], columns: Sequence[str]) -> pd.DataFrame:
    parts = [p for p in parts if len(p)]
    if not parts:
        return pd.DataFrame(columns=list(columns))
    return pd.concat(parts, ignore_index=True).reindex(columns=list(columns))


def _statistics(
    c: _Collected,
    units: pd.DataFrame,
    sites: pd.DataFrame,
    *,
    n_permutations: int,
    seed: int,
    group_method: str | None,
    min_per_group: int | None,
    notes: list[str],
) -> tuple[pd.DataFrame, Any]:
    """Every population test; rows in the order the report reads them."""
    from nwb_subspace.population import statistics as st
    from nwb_subspace.population.locality import population_locality

    if group_method is None or min_per_group is None:
        common = Counter(c.methods).most_common(1)
        method, per_group = common[0][0] if common else ("site_means", 2)
        group_method = group_method or method
        min_per_group = min_per_group if min_per_group is not None else per_group
    rows: list[dict] = []

    def take(result) -> None:
        got, more = result[0], result[-1]
        rows.extend(got or [])
        notes.extend(more or [])

    take(st.model_comparison(sites))
    take(st.dimensionality_distribution(units))
    locality = None
    usable = _same_shape(c.bases, notes)
    if usable.size:
        locality = population_locality(
            [c.bases[i] for i in usable],
            [c.base_session[i] for i in usable],
            [c.base_site[i] for i in usable],
            n_permutations=n_permutations,
            seed=seed,
        )
        rows.extend(locality.rows or [])
        notes.extend(locality.notes or [])
    else:
        notes.append("same-site vs different-site similarity: no analysed unit with a subspace")
    take(st.tiling_across_sites(sites))
    take(st.cell_types_and_layers(units, method=group_method, min_per_group=min_per_group))
    take(st.depth_profile(units))
    return pd.DataFrame(rows, columns=list(STATISTIC_FIELDS)), locality


def _same_shape(bases: list[np.ndarray], notes: list[str]) -> np.ndarray:
    """Indices of the bases of the most common dSTRF size (pairs need one pixel space)."""
    if not bases:
        return np.zeros(0, dtype=np.int64)
    sizes = np.array([b.shape[0] for b in bases])
    common = Counter(sizes.tolist()).most_common(1)[0][0]
    keep = np.flatnonzero(sizes == common)
    if keep.size < sizes.size:
        notes.append(
            f"same-site vs different-site similarity uses the {keep.size} units whose dSTRFs "
            f"have {common} pixels; {sizes.size - keep.size} unit(s) of sessions with another "
            "spectrogram or lag setting are left out (their subspaces live in another space)"
        )
    return keep


def _write_tables(outdir: Path, summary: PopulationSummary, parquet: bool) -> list[Path]:
    files: list[Path] = []
    for name in _TABLES:
        table = getattr(summary, name)
        csv = outdir / f"population_{name}.csv"
        write_atomically(csv, lambda p, t=table: t.to_csv(p, index=False))
        files.append(csv)
        if parquet:
            pq = outdir / f"population_{name}.parquet"
            write_atomically(pq, lambda p, t=table: _to_parquet(t, p))
            files.append(pq)
    skipped = pd.DataFrame(summary.skipped, columns=["file", "reason"])
    path = outdir / SKIPPED_FILE
    write_atomically(path, lambda p: skipped.to_csv(p, index=False))
    files.append(path)
    settings = outdir / "population_settings.json"
    text = json.dumps({"differing": summary.differing}, indent=1, sort_keys=True, default=str)
    write_atomically(settings, lambda p: p.write_text(text))
    files.append(settings)
    return files


def _missing(value: Any) -> bool:
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):  # arrays and other containers are values
        return False


def _to_parquet(table: pd.DataFrame, path: Path) -> None:
    """Parquet with object columns as strings (mixed ids would not convert)."""
    out = table.copy()
    for col in out.columns:
        if out[col].dtype == object:
            out[col] = out[col].map(lambda v: None if _missing(v) else str(v))
    out.to_parquet(path, index=False, engine="pyarrow")


def _check_args(n_permutations: int, seed: int, run_name: str | None) -> None:
    if isinstance(n_permutations, bool) or not isinstance(n_permutations, int | np.integer):
        raise TypeError(f"n_permutations must be an int; got {n_permutations!r}")
    if n_permutations < 1:
        raise ValueError(f"n_permutations must be >= 1; got {n_permutations}, e.g. 1000")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative int; got {seed!r}")
    if run_name is not None and (not isinstance(run_name, str) or not run_name.strip()):
        raise ValueError(f"run_name must be a non-empty string or None; got {run_name!r}")


def summarize_runs(  # long: the steps of a summary read best in one place
    sources: Iterable[str | os.PathLike],
    outdir: str | os.PathLike,
    run_name: str | None = None,
    *,
    module: str = "misc",
    n_permutations: int = 1000,
    seed: int = 0,
    group_method: str | None = None,
    min_per_group: int | None = None,
    report: bool = True,
    parquet: bool = True,
) -> PopulationSummary:
    """Population tables, statistics and report from many stored runs.

    Parameters
    ----------
    sources : iterable of str or path-like
        Result files or NWB Zarr stores (``.nwb.zarr``), folders (their ``*.nwb`` files and
        ``*.nwb.zarr`` stores, e.g. a ``batch`` output folder), globs or HTTP(S) URLs.
    outdir : path-like
        Folder for the tables, ``skipped.csv`` and the report; created if missing.
    run_name : str, optional
        The run to read from every file; None: each file's only run (a file with several
        runs is then skipped, naming them).
    module : str, default "misc"
        Processing module holding the runs.
    n_permutations : int, default 1000
        Permutations of site labels for the same-site vs different-site test.
    seed : int, default 0
    group_method : {"site_means", "mixed_model"}, optional
        Narrow vs broad and layer tests, units nested in sites (default: the runs' own
        ``[sites] group_method``, the most common one).
    min_per_group : int, optional
        Units a site needs in each group (default: the runs' ``[sites] min_per_group``).
    report : bool, default True
        Write ``population_report.html`` with the figures.
    parquet : bool, default True
        Also write the tables as Parquet.

    Returns
    -------
    PopulationSummary

    Raises
    ------
    ValueError
        No sources, or a glob or folder that matches no ``.nwb`` file nor ``.nwb.zarr`` store.
    """
    from nwb_subspace.batch import expand_sources

    _check_args(n_permutations, seed, run_name)
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    found = expand_sources(sources)
    names = _session_names(found)
    c = _Collected()
    for i, ((source, _), session) in enumerate(zip(found, names, strict=True)):
        try:
            _collect_one(source, session, run_name, module, c)
        except (ValueError, KeyError, OSError, RuntimeError, TypeError) as err:
            reason = _one_line(err).removeprefix(f"{source}: ")
            c.skipped.append((source, reason))
            log.warning("skipped %s: %s", source, reason)
            continue
        log.info("summarised %d/%d: %s", i + 1, len(found), session)
    notes: list[str] = []
    units = _frame(c.units, UNIT_COLUMNS)
    sites = _frame(c.sites, SITE_COLUMNS)
    sessions = pd.DataFrame(c.sessions, columns=list(SESSION_COLUMNS))
    differing = differing_settings(c.settings)
    if differing:
        notes.append(
            "settings differ between sessions: " + ", ".join(differing)
            + " (see population_settings.json); pooled measures may not be comparable"
        )  # fmt: skip
    statistics = pd.DataFrame(columns=list(STATISTIC_FIELDS))
    locality = None
    if len(sessions):
        statistics, locality = _statistics(
            c, units, sites, n_permutations=n_permutations, seed=seed,
            group_method=group_method, min_per_group=min_per_group, notes=notes,
        )  # fmt: skip
    else:
        notes.append("no run could be read: nothing to summarise")
    summary = PopulationSummary(
        units=units, sites=sites, sessions=sessions, statistics=statistics,
        skipped=c.skipped, differing=differing, notes=notes, locality=locality,
    )  # fmt: skip
    summary.files = _write_tables(outdir, summary, parquet)
    if report and len(sessions):
        from nwb_subspace.report.population import write_population_report

        summary.report = write_population_report(
            outdir, units, sites, sessions, statistics, locality=locality,
            skipped=c.skipped, notes=notes, comparability=differing or None,
        )  # fmt: skip
        summary.files.append(summary.report)
    return summary
