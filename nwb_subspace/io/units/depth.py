"""Depths and layers of units for :func:`~nwb_subspace.io.units.reader.read_units`.

Depth, in order: the unit location from waveforms, a depth column (``depth_column``, or
``depth_um``/``depth`` where no location), the unit's single electrode. Layer: from
:class:`~nwb_subspace.units.celltypes.LayerBoundaries` when given, else from the main channel's
electrode ``location`` string.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from nwb_subspace.io.units.measure import h5_strings, record_warning
from nwb_subspace.io.units.nwb import NwbMeta
from nwb_subspace.units.celltypes import LayerBoundaries, assign_layers, layer_from_location

__all__ = ["DEPTH_COLUMNS", "unit_depths", "unit_layers"]

#: Units columns (sorting properties) read as depths when no location is known.
DEPTH_COLUMNS = ("depth_um", "depth")


def _depth_property(sorting: Any, depth_column: str | None) -> np.ndarray | None:
    """The depth column of ``sorting`` as floats (None when there is none)."""
    keys = sorting.get_property_keys()
    if depth_column is not None:
        if depth_column not in keys:
            raise ValueError(
                f"depth_column={depth_column!r} is not a units column; available: {sorted(keys)}"
            )
        name = depth_column
    else:
        name = next((c for c in DEPTH_COLUMNS if c in keys), None)
        if name is None:
            return None
    try:
        values = np.asarray(sorting.get_property(name), dtype=float)
    except (TypeError, ValueError):
        raise ValueError(f"depth column {name!r} is not numeric") from None
    if values.ndim != 1:
        raise ValueError(f"depth column {name!r} must hold one number per unit; got {values.shape}")
    return values


def _electrode_locations(meta: NwbMeta | None, recording: Any) -> np.ndarray | None:
    """Brain-area string per electrode row (NWB) or recording channel, if known."""
    if meta is not None:
        return meta.electrode_location
    if recording is not None:
        for key in ("location", "brain_area"):
            if key in recording.get_property_keys():
                return h5_strings(recording.get_property(key))
    return None


def unit_depths(
    location: np.ndarray,
    source: np.ndarray,
    main: np.ndarray,
    sorting: Any,
    depth_column: str | None,
    meta: NwbMeta | None,
    single_channel_means: bool,
    messages: list[str],
) -> tuple[np.ndarray, np.ndarray]:
    """Depth (µm, ``rel_y`` frame) and its source per unit.

    ``main`` is updated in place for units placed on their single electrode.
    ``single_channel_means``: ``waveform_mean`` has one channel per unit, so its
    "locations" are electrode positions.
    """
    n = location.shape[0]
    depth = location[:, 1].copy()
    depth_source = np.where(np.isfinite(depth), "location", "none").astype("<U9")
    if meta is not None:
        single = (source == "waveform_mean") & single_channel_means
        depth_source[single & np.isfinite(depth)] = "electrode"
    column = _depth_property(sorting, depth_column)
    if column is not None:
        use = np.ones(n, bool) if depth_column is not None else ~np.isfinite(depth)
        use &= np.isfinite(column)
        depth[use] = column[use]
        depth_source[use] = "column"
    if meta is not None and meta.electrodes_xy is not None and meta.unit_electrodes is not None:
        for i in np.flatnonzero(~np.isfinite(depth)):
            rows = meta.unit_electrodes[i]
            if len(rows) == 1:
                depth[i] = meta.electrodes_xy[rows[0], 1]
                depth_source[i] = "electrode"
                if main[i] < 0:
                    main[i] = rows[0]
    if not np.isfinite(depth).all():
        k = int((~np.isfinite(depth)).sum())
        record_warning(
            messages,
            f"depth unknown for {k} of {n} unit(s): no waveforms, depth column or single electrode",
        )
    return depth, depth_source


def unit_layers(
    depth: np.ndarray,
    main: np.ndarray,
    boundaries: LayerBoundaries | None,
    meta: NwbMeta | None,
    recording: Any,
) -> np.ndarray:
    """Layer per unit: from ``boundaries`` and depth, else the main electrode's location."""
    if boundaries is not None:
        return assign_layers(depth, boundaries)
    layer = np.full(depth.shape[0], "unknown", dtype="<U16")
    locations = _electrode_locations(meta, recording)
    if locations is not None:
        for i in np.flatnonzero(main >= 0):
            if main[i] < locations.size:
                layer[i] = layer_from_location(locations[main[i]])
    return layer
