"""Read sound presentations (the ``trials`` or ``epochs`` table) from an open NWB file."""

from __future__ import annotations

import numpy as np
from pynwb import NWBFile

from nwb_subspace.stimulus.responses import Trials

__all__ = ["SOUND_COLUMNS", "find_sound_column", "read_trials"]

#: Column names recognised as naming the sound of each presentation, in no particular order.
SOUND_COLUMNS = (
    "sound_id",
    "sound_name",
    "sound",
    "stim_name",
    "stim_id",
    "stim",
    "stimulus",
    "stimulus_name",
    "stimulus_id",
)


def _pick_table(nwbfile: NWBFile, table: str | None):
    if table is not None:
        if not isinstance(table, str):
            raise TypeError(f"table must be a str such as 'trials', got {table!r}")
        found = nwbfile.intervals.get(table) if nwbfile.intervals else None
        if found is None:
            names = sorted(nwbfile.intervals) if nwbfile.intervals else []
            raise ValueError(f"no interval table named {table!r} in the file; it has {names}")
        return found
    for name in ("trials", "epochs"):
        found = getattr(nwbfile, name, None)
        if found is not None and len(found) > 0:
            return found
    names = sorted(nwbfile.intervals) if nwbfile.intervals else []
    raise ValueError(
        "the file has no (non-empty) trials or epochs table to map spikes to sounds "
        f"(interval tables present: {names}); add a trials table with start_time, stop_time "
        "and a column naming the sound, or pass table=<name>"
    )


def find_sound_column(colnames, sound_column: str | None = None, table: str = "trials") -> str:
    """Choose the column naming the sound among ``colnames``.

    Parameters
    ----------
    colnames : iterable of str
        Columns of the table.
    sound_column : str, optional
        An explicit choice (must be one of ``colnames``).
    table : str
        Table name, for messages.

    Raises
    ------
    ValueError
        If ``sound_column`` is not a column, or none or several of :data:`SOUND_COLUMNS` are.
    """
    cols = [str(c) for c in colnames]
    if sound_column is not None:
        if not isinstance(sound_column, str):
            raise TypeError(f"sound_column must be a str, got {sound_column!r}")
        if sound_column not in cols:
            raise ValueError(
                f"the {table} table has no column {sound_column!r}; its columns are {cols}"
            )
        return sound_column
    hits = [c for c in cols if c in SOUND_COLUMNS]
    if not hits:
        raise ValueError(
            f"the {table} table has no column naming the sound (looked for "
            f"{list(SOUND_COLUMNS)}; it has {cols}); pass sound_column=<one of {cols}>"
        )
    if len(hits) > 1:
        raise ValueError(
            f"the {table} table has several columns that may name the sound: {hits}; "
            f"pass sound_column=<one of {hits}>"
        )
    return hits[0]


def _as_ids(values, column: str, table: str) -> np.ndarray:
    out = []
    for i, v in enumerate(values):
        if isinstance(v, list | tuple | np.ndarray) and not isinstance(v, str):
            if len(v) != 1:
                raise ValueError(
                    f"{table} row {i}: column {column!r} holds {list(v)!r}, not a single sound "
                    "name; choose another sound_column"
                )
            v = v[0]
        if isinstance(v, bytes):
            v = v.decode()
        if isinstance(v, np.generic):
            v = v.item()
        if v is None or (isinstance(v, float) and not np.isfinite(v)) or str(v).strip() == "":
            raise ValueError(
                f"{table} row {i} has no sound in column {column!r} ({v!r}); fill it in or "
                "drop the row"
            )
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        out.append(str(v))
    return np.asarray(out)


def read_trials(
    nwbfile: NWBFile, sound_column: str | None = None, table: str | None = None
) -> Trials:
    """Read sound presentations from the file's ``trials`` (else ``epochs``) table.

    Parameters
    ----------
    nwbfile : NWBFile
        An open file (read lazily).
    sound_column : str, optional
        Column naming the sound; auto-detected among :data:`SOUND_COLUMNS` if omitted.
        ``"tags"`` works for an epochs table whose rows carry a single tag each.
    table : str, optional
        Name of the interval table; default ``trials``, or ``epochs`` if there are no trials.

    Returns
    -------
    Trials
        Sound ids converted to str (integer ids as ``"3"``, bytes decoded).

    Raises
    ------
    ValueError
        No table, no/ambiguous sound column, missing sound names or bad times.
    """
    tbl = _pick_table(nwbfile, table)
    column = find_sound_column(tbl.colnames, sound_column, tbl.name)
    start = np.asarray(tbl["start_time"].data[:], dtype=np.float64)
    stop = np.asarray(tbl["stop_time"].data[:], dtype=np.float64)
    ids = _as_ids(tbl[column][:], column, tbl.name)
    return Trials(start=start, stop=stop, sound_id=ids, table=tbl.name, sound_column=column)
