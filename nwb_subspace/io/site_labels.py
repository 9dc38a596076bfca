"""Which recording site each unit belongs to, read from an NWB file's units table.

A units-table column chosen by the user (``[sites] group_by``), else the unit's electrode
group (the ``electrode_group`` column, else the ``group_name`` of its electrodes, the main
channel's when known): one site per probe insertion or shank. A file with neither forms one
site, :data:`ALL_SITES`. Used by :mod:`nwb_subspace.site.step`; the only part of the site step
that reads the file (HDF5 with h5py, an NWB Zarr store with zarr).
"""

from __future__ import annotations

import contextlib
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import h5py
import numpy as np

from nwb_subspace.io.backend import is_reference, reference_name
from nwb_subspace.io.remote import open_root

__all__ = ["ALL_SITES", "read_site_labels"]

#: Site name when the file says nothing about electrode groups.
ALL_SITES = "all"


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _ref_names(f: Any, refs) -> np.ndarray:
    """Base names of the objects references point to (e.g. electrode groups)."""
    return np.array([reference_name(f, ref) for ref in refs], dtype=object)


def _column_values(f: Any, table: Any, name: str) -> np.ndarray:
    data = table[name]
    if f"{name}_index" in table:
        raise ValueError(
            f"units column {name!r} is ragged (several values per unit); [sites] group_by needs "
            "one value per unit"
        )
    values = data[()]
    if is_reference(data):
        return _ref_names(f, values)
    return np.array([_text(v) for v in values], dtype=object)


def _electrode_groups(f: Any, units: Any, main: np.ndarray | None) -> np.ndarray:
    """Each unit's electrode group through its ``electrodes`` (main channel, else majority)."""
    el = f["general/extracellular_ephys/electrodes"]
    if "group_name" in el:
        names = np.array([_text(v) for v in el["group_name"][()]], dtype=object)
    else:
        names = _ref_names(f, el["group"][()])
    rows, ends = units["electrodes"][()], units["electrodes_index"][()]
    out = []
    for u, (a, b) in enumerate(zip(np.r_[0, ends[:-1]], ends, strict=True)):
        own = np.asarray(rows[a:b], dtype=np.int64)
        if main is not None and main[u] >= 0 and (own.size == 0 or main[u] in own):
            out.append(names[int(main[u])])
        elif own.size:
            out.append(Counter(names[own].tolist()).most_common(1)[0][0])
        else:
            out.append(ALL_SITES)
    return np.array(out, dtype=object)


@contextlib.contextmanager
def _open(path: str | os.PathLike | IO[bytes]) -> Iterator[Any]:
    """The raw root group: h5py for a file object, else as the path's backend says."""
    if isinstance(path, str | os.PathLike):
        with open_root(Path(path), require_nwb=False) as root:
            yield root
        return
    with h5py.File(path, "r") as f:
        yield f


def read_site_labels(
    path: str | os.PathLike | IO[bytes],
    column: str | None = None,
    main_channel: np.ndarray | None = None,
) -> tuple[np.ndarray, str]:
    """Site name of every row of an NWB file's ``units`` table.

    Parameters
    ----------
    path : path-like or binary file object
        The NWB file (HDF5, or the folder of an NWB Zarr store); a file object, e.g. a
        lazily read remote HDF5 file, is read in place.
    column : str, optional
        A units-table column with one value per unit naming its site (object references,
        e.g. to electrode groups, give the referenced object's name). Missing: ``ValueError``.
    main_channel : ndarray of int, optional
        Electrodes-table row of each unit's main channel (``UnitInfo.main_channel``; -1 where
        unknown), used to pick the group of units spanning several electrode groups.

    Returns
    -------
    labels : ndarray of str, shape (n_units,)
    source : str
        Where the names came from, in words.
    """
    with _open(path) as f:
        if "units" not in f:
            raise ValueError(f"{path} has no units table; the site step needs units")
        units = f["units"]
        n = int(units["id"].shape[0])
        if column is not None:
            if column not in units:
                known = sorted(_text(c) for c in units.attrs.get("colnames", []))
                raise ValueError(
                    f"[sites] group_by names units column {column!r}, which {path} lacks; "
                    f"its columns are {known}"
                )
            return _column_values(f, units, column), f"units column {column!r}"
        if "electrode_group" in units:
            return _column_values(f, units, "electrode_group"), "units electrode_group"
        if (
            "electrodes" in units
            and "electrodes_index" in units
            and "general/extracellular_ephys/electrodes" in f
        ):
            return _electrode_groups(
                f, units, main_channel
            ), "electrode group of the units' electrodes"
    return np.full(n, ALL_SITES, dtype=object), "no electrode groups in the file: one site"
