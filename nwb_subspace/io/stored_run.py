"""Read one stored run's tables (never its models) for the population summary.

:func:`read_stored_run` opens a result file (local path, HTTP(S) URL or DANDI asset spec, as
:func:`nwb_subspace.io.remote.open_nwb_io` opens them: remote files are read lazily; an NWB Zarr
store too), builds only
the pynwb objects of the run asked for and of the units table, and reads:

* the units table's ``unit_name`` (else ``id``), ``cell_type``, ``layer`` and ``depth_um``
  columns (the ones a run writes), and each unit's site
  (:func:`~nwb_subspace.io.site_labels.read_site_labels` with the run's ``[sites] group_by``,
  replaced by the site whose stored subspace lists the unit);
* the validation scores of the models named ``ln``, ``cnn`` and ``subspace`` (the
  ``EncodingModel.scores`` tables only: no weight is read, no model rebuilt; the extra fits
  ``cnn_fit2``... and ``cnn_jk1``... are ignored);
* the tuning subspace table, the run's own SRF tables, the site subspaces and every site
  statistics table.

Anything that keeps the run from being read raises :class:`StoredRunError`, a ``ValueError``
whose message is one line saying which file and why.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import pandas as pd

from nwb_subspace.io.backend import is_group, store_stem
from nwb_subspace.io.from_nwb import (
    site_statistics_from_nwb,
    site_subspace_from_nwb,
    srfs_from_nwb,
    subspaces_from_nwb,
)
from nwb_subspace.io.remote import (
    is_remote,
    open_binary,
    open_nwb_io,
    open_root,
    remote_cache,
    remote_name,
)
from nwb_subspace.io.site_labels import read_site_labels
from nwb_subspace.io.writer import one_line
from nwb_subspace.population.records import (
    SCORE_COLUMNS,
    SCORED_MODELS,
    UNIT_INFO_COLUMNS,
    StoredRun,
)
from nwb_subspace.results import STATISTIC_FIELDS
from nwb_subspace.units.celltypes import LayerBoundaries

__all__ = ["StoredRunError", "l34_boundary", "read_stored_run"]

_RUN_TYPE = "SubspaceAnalysis"


class StoredRunError(ValueError):
    """A stored run cannot be read; the message is the reason, on one line."""


def read_stored_run(
    path: str | os.PathLike,
    run_name: str | None = None,
    *,
    module: str = "misc",
    session: str | None = None,
    require_tuning: bool = True,
) -> StoredRun:
    """The tables of one stored run that the population summary uses.

    Parameters
    ----------
    path : str or path-like
        Result file: a local path, an HTTP(S) URL or a DANDI asset spec.
    run_name : str, optional
        The run to read; None reads the file's only run.
    module : str, default "misc"
        Processing module holding the runs.
    session : str, optional
        Session name (default: the file's stem).
    require_tuning : bool, default True
        A run without a tuning subspace table (no unit reached the subspace step) is an
        error; False reads it with ``tuning=None`` (scores only).

    Returns
    -------
    StoredRun

    Raises
    ------
    StoredRunError
        The file is missing, unreadable or not NWB; it holds no run of that name (the message
        lists the runs it holds) or several runs and none was named; the run cannot be read
        (damaged) or lacks its tuning table.
    """
    file = str(path)
    name = session or store_stem(remote_name(file) if is_remote(file) else file)
    try:
        with remote_cache() if is_remote(file) else contextlib.nullcontext():
            with _open_run(file, run_name, module) as (run, units, chosen):
                stored = _read_run(run, units, file, name, chosen, require_tuning)
            _assign_sites(stored, file)
    except StoredRunError:
        raise
    except FileNotFoundError as err:
        raise StoredRunError(f"{file}: file not found ({one_line(err, 200)})") from None
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, ImportError) as err:
        raise StoredRunError(f"{file}: cannot be read ({one_line(err, 300)})") from None
    return stored


def _run_names(f: Any, module: str) -> list[str]:
    """Names of the ``SubspaceAnalysis`` groups in ``/processing/<module>`` (raw level: h5py
    or zarr)."""
    group = f.get(f"processing/{module}")
    if group is None or not is_group(group):
        return []
    names = []
    for key, obj in group.items():
        kind = obj.attrs.get("neurodata_type") if hasattr(obj, "attrs") else None
        if (kind.decode() if isinstance(kind, bytes) else kind) == _RUN_TYPE:
            names.append(key)
    return names


@contextlib.contextmanager
def _open_run(file: str, run_name: str | None, module: str) -> Iterator[tuple[Any, Any, str]]:
    """Yield the run's pynwb builder with a constructor for its parts, and the run's name.

    Only the objects asked for are constructed (never the models' weights): the run's
    builder is ``(builder, construct)``, ``construct(b)`` building the container of ``b``.
    """
    with open_root(file) as f:
        runs = _run_names(f, module)
    if not runs:
        raise StoredRunError(f"{file}: holds no nwb-subspace run (in processing/{module})")
    if run_name is None:
        if len(runs) > 1:
            raise StoredRunError(f"{file}: holds {len(runs)} runs {runs}; name the one to read")
        run_name = runs[0]
    if run_name not in runs:
        raise StoredRunError(f"{file}: holds no run named {run_name!r}; its runs: {runs}")
    with open_nwb_io(file) as io:
        try:
            root = io.read_builder()
            run = root["processing"][module][run_name]
        except Exception as err:  # noqa: BLE001 -- any pynwb failure: unreadable
            raise StoredRunError(f"{file}: cannot be read ({one_line(err, 300)})") from None
        yield (run, io.manager.construct), root.groups.get("units"), run_name


def _parts(run: Any, kind: str) -> dict[str, Any]:
    """The run's child builders of one ``neurodata_type``, by name (sorted)."""
    out = {}
    for name in sorted(run.groups):
        child = run.groups[name]
        found = child.attributes.get("neurodata_type")
        if (found.decode() if isinstance(found, bytes) else found) == kind:
            out[name] = child
    return out


def _text_attr(value: Any) -> str:
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else str(value)


def _read_run(
    opened: tuple[Any, Any], units: Any, file: str, session: str, run_name: str,
    require_tuning: bool,
) -> StoredRun:  # fmt: skip
    """Everything but the sites, from the run's builders (datasets read here)."""
    run, construct = opened
    where = f"{file}: run {run_name!r}"
    try:
        config = json.loads(_text_attr(run.attributes.get("config_json")) or "{}")
    except json.JSONDecodeError as err:
        raise StoredRunError(f"{where} is damaged (config_json is not JSON: {err})") from None
    if units is None:
        raise StoredRunError(f"{file}: has no units table; a run's results refer to its units")
    tables = _parts(run, "TuningSubspaceTable")
    if not tables and require_tuning:
        raise StoredRunError(
            f"{where} has no tuning subspace table (no unit reached the subspace step, or the "
            "run stopped before it); nothing to summarise but scores"
        )
    try:
        tuning = subspaces_from_nwb(construct(next(iter(tables.values())))) if tables else None
        models = _parts(run, "EncodingModel")
        statistics = [construct(b) for b in _parts(run, "SiteStatisticsTable").values()]
        stored = StoredRun(
            session=session, file=file, run=run_name, config=config,
            software_version=_text_attr(run.attributes.get("software_version")),
            created=_text_attr(run.attributes.get("created")),
            units=_unit_info(construct(units), config),
            scores=_scores(models, construct), tuning=tuning,
            srfs=[srfs_from_nwb(construct(b)) for b in _parts(run, "SubspaceRFTable").values()],
            site_subspaces=[
                site_subspace_from_nwb(construct(b)) for b in _parts(run, "SiteSubspace").values()
            ],
            statistics=_statistics(statistics), n_lags=_n_lags(models, tuning),
        )  # fmt: skip
    except StoredRunError:
        raise
    except Exception as err:  # noqa: BLE001 -- a table that does not read: the run is damaged
        raise StoredRunError(f"{where} is damaged ({one_line(err, 300)})") from None
    _check_rows(stored, where)
    return stored


def _column(units: Any, name: str) -> np.ndarray | None:
    if units is None or name not in units.colnames:
        return None
    return np.asarray(units[name].data[:])


def _text(values: np.ndarray | None, n: int) -> list[str]:
    """Strings of a units column, ``"unknown"`` where missing or empty (as the run's CSV)."""
    if values is None:
        return ["unknown"] * n
    out = [v.decode() if isinstance(v, bytes) else str(v) for v in values]
    return [v or "unknown" for v in out]


def _unit_ids(ids: np.ndarray, names: np.ndarray | None) -> list[str]:
    """``unit_name`` where present and not empty, else the units-table id, as text."""
    if names is None:
        return [str(i) for i in ids]
    text = [v.decode() if isinstance(v, bytes) else str(v) for v in names]
    return [t or str(i) for t, i in zip(text, ids, strict=True)]


def _unit_info(units: Any, config: Mapping) -> pd.DataFrame:
    """One row per units-table row: ids, cell type, layer, depths (site filled later)."""
    ids = np.asarray(units.id.data[:])
    n = ids.size
    names = _column(units, "unit_name")
    depth = _column(units, "depth_um")
    depth = np.full(n, np.nan) if depth is None else depth.astype(float)
    l34 = l34_boundary(config.get("layers"))
    return pd.DataFrame(
        {
            "unit_row": np.arange(n, dtype=np.int64),
            "unit_id": _unit_ids(ids, names),
            "site": [""] * n,
            "cell_type": _text(_column(units, "cell_type"), n),
            "layer": _text(_column(units, "layer"), n),
            "depth_um": depth,
            "depth_below_l34_um": l34 - depth if l34 is not None else np.full(n, np.nan),
        },
        columns=list(UNIT_INFO_COLUMNS),
    )


def l34_boundary(layers: Any) -> float | None:
    """``rel_y`` (um from the probe tip) of the L3/4 boundary a run's ``[layers]`` gives.

    The top of layer group ``"44"`` (else the bottom of ``"13"``) of
    :meth:`~nwb_subspace.units.celltypes.LayerBoundaries.from_dict`; None when the setting
    is absent (layers from electrode locations) or names no such group.
    """
    if not isinstance(layers, Mapping) or not layers:
        return None
    try:
        bounds = LayerBoundaries.from_dict(layers).layers
    except (TypeError, ValueError):
        return None
    if "44" in bounds:
        return float(bounds["44"][0])
    if "13" in bounds:
        return float(bounds["13"][1])
    return None


def _scores(models: dict[str, Any], construct) -> dict[str, pd.DataFrame]:
    """Validation scores of the models ``ln``, ``cnn``, ``subspace`` (by name; else the only
    model of that kind that is not an extra CNN fit). Only the ``scores`` tables are built."""
    out: dict[str, pd.DataFrame] = {}
    for kind in SCORED_MODELS:
        b = models.get(kind)
        if b is None:
            same = [
                m for n, m in models.items()
                if _text_attr(m.attributes.get("model_kind")) == kind
                and not n.startswith(("cnn_fit", "cnn_jk"))
            ]  # fmt: skip
            b = same[0] if len(same) == 1 else None
        if b is None or "scores" not in b.groups:
            continue
        t = construct(b.groups["scores"])
        table = {"unit_row": np.asarray(t["units"].data[:], dtype=np.int64)}
        for col in SCORE_COLUMNS[1:]:
            table[col] = np.asarray(t[col].data[:], dtype=float)
        out[kind] = pd.DataFrame(table, columns=list(SCORE_COLUMNS))
    return out


def _statistics(tables: list[Any]) -> pd.DataFrame:
    rows = [r for t in tables for r in site_statistics_from_nwb(t).rows]
    return pd.DataFrame(rows, columns=list(STATISTIC_FIELDS))


def _n_lags(models: dict[str, Any], tuning) -> int | None:
    """The CNN's lags (its ``n_lags``), else the tuning subspaces' width."""
    cnn = models.get("cnn")
    value = None if cnn is None else cnn.attributes.get("n_lags")
    if value is not None:
        return int(value)
    return None if tuning is None else int(len(tuning.lags_s))


def _check_rows(stored: StoredRun, where: str) -> None:
    """Every unit row a table names exists in the units table."""
    n = stored.n_units
    found = [("tuning subspaces", stored.tuning.unit_rows)] if stored.tuning is not None else []
    found += [(f"{k} scores", t["unit_row"].to_numpy()) for k, t in stored.scores.items()]
    found += [(s.name, s.unit_rows) for s in stored.site_subspaces]
    found += [(s.name, s.unit_rows) for s in stored.srfs]
    for what, rows in found:
        if len(rows) and (int(np.max(rows)) >= n or int(np.min(rows)) < 0):
            raise StoredRunError(
                f"{where} is damaged: {what} refer to unit row {int(np.max(rows))} but the "
                f"units table has {n} rows"
            )


def _assign_sites(stored: StoredRun, file: str) -> None:
    """Each unit's site: the run's ``[sites] group_by`` column (else electrode groups),
    replaced by the site whose stored subspace lists the unit."""
    group_by = (stored.config.get("sites") or {}).get("group_by")
    with open_binary(file) as handle:
        labels, source = read_site_labels(handle, group_by)
    labels = np.asarray(labels, dtype=object).astype(str)
    if labels.size != stored.n_units:
        raise StoredRunError(
            f"{file}: {labels.size} site labels for {stored.n_units} units; the units table is "
            "damaged"
        )
    for site in stored.site_subspaces:
        labels[site.unit_rows] = str(site.site)
    stored.units["site"] = labels
    stored.label_source = source
