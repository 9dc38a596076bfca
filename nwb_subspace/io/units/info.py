"""The result of :func:`~nwb_subspace.io.units.reader.read_units` and its ``units`` columns.

:class:`UnitInfo` holds per-unit spike times, waveforms, cell types, depths and layers;
:func:`unit_columns` turns it into documented ``units`` columns and
:func:`add_unit_columns` appends them to the file with the safe writer.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from nwb_subspace.results import ResultSet, UnitColumn
from nwb_subspace.units.celltypes import CellTypeParams, LayerBoundaries, classify_spike_width
from nwb_subspace.units.columns import UNIT_COLUMNS

#: Description of the ``cell_type_margin_ms`` column (not yet in ``UNIT_COLUMNS``).
MARGIN_DESCRIPTION = (
    "trough_to_peak_ms minus the narrow/broad threshold used, in milliseconds (negative = "
    "narrow; the threshold is stored in the analysis config). NaN where no waveform."
)


@dataclass
class UnitInfo:
    """Per-unit spike times, waveforms, cell types, depths and layers (row order).

    Attributes
    ----------
    unit_ids : ndarray, shape (n_units,)
        Unit ids, in the order of the NWB ``units`` rows (``unit_name`` if present, else
        ``id``) or of the sorting.
    spike_times : list of ndarray
        Spike times in seconds, one array per unit.
    waveform : ndarray of float, shape (n_units, n_samples)
        Mean waveform on the main channel in µV (NaN rows where none).
    waveform_fs : float or None
        Sampling rate of ``waveform`` in Hz.
    trough_to_peak_ms : ndarray of float, shape (n_units,)
        Trough-to-peak duration (positive-going spikes flipped), NaN where unknown.
    cell_type : ndarray of str, shape (n_units,)
        ``"narrow"``, ``"broad"`` or ``"unknown"``.
    margin_ms : ndarray of float, shape (n_units,)
        ``trough_to_peak_ms - threshold_ms`` (negative = narrow).
    depth_um : ndarray of float, shape (n_units,)
        Position along the probe in the electrodes' ``rel_y`` frame (µm from the tip).
    layer : ndarray of str, shape (n_units,)
        Layer name, ``"outside"`` or ``"unknown"``.
    source : ndarray of str, shape (n_units,)
        Where the waveform came from: ``"raw"``, ``"waveform_mean"`` or ``"none"``.
    depth_source : ndarray of str, shape (n_units,)
        ``"location"`` (SpikeInterface unit location), ``"column"`` (a depth column),
        ``"electrode"`` (the unit's single electrode) or ``"none"``.
    main_channel : ndarray of int, shape (n_units,)
        Row of the electrodes table (NWB) or channel index (recording) of the main
        channel; -1 where unknown.
    location_um : ndarray of float, shape (n_units, 2)
        (x, y) unit location in µm (NaN where unknown); ``y`` equals ``depth_um``.
    params : CellTypeParams
        The threshold used.
    layers : LayerBoundaries or None
        The boundaries used (None: from electrode locations, or unknown).
    warnings : list of str
        Why something could not be measured (also issued as :class:`UnitsReadWarning`).
    """

    unit_ids: np.ndarray
    spike_times: list[np.ndarray]
    waveform: np.ndarray
    waveform_fs: float | None
    trough_to_peak_ms: np.ndarray
    cell_type: np.ndarray
    margin_ms: np.ndarray
    depth_um: np.ndarray
    layer: np.ndarray
    source: np.ndarray
    depth_source: np.ndarray
    main_channel: np.ndarray
    location_um: np.ndarray
    params: CellTypeParams = field(default_factory=CellTypeParams)
    layers: LayerBoundaries | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def n_units(self) -> int:
        """Number of units."""
        return int(len(self.unit_ids))

    @property
    def threshold_ms(self) -> float:
        """Narrow/broad threshold used, in ms."""
        return self.params.threshold_ms

    def reclassify(self, params: CellTypeParams) -> UnitInfo:
        """A copy with cell types recomputed for another threshold."""
        labels, margin = classify_spike_width(self.trough_to_peak_ms, params)
        return replace(self, cell_type=labels, margin_ms=margin, params=params)


def unit_columns(info: UnitInfo, include_margin: bool = True) -> list[UnitColumn]:
    """The documented ``units`` columns of a :class:`UnitInfo` (row order).

    ``trough_to_peak_ms``, ``cell_type``, ``depth_um``, ``layer`` (descriptions from
    :data:`nwb_subspace.units.columns.UNIT_COLUMNS`) and, with ``include_margin``,
    ``cell_type_margin_ms`` (:data:`MARGIN_DESCRIPTION`).
    """
    if not isinstance(info, UnitInfo):
        raise TypeError(f"info must be a UnitInfo from read_units; got {type(info).__name__}")
    cols = [
        UnitColumn(
            "trough_to_peak_ms",
            np.asarray(info.trough_to_peak_ms, float),
            UNIT_COLUMNS["trough_to_peak_ms"],
        ),
        UnitColumn("cell_type", np.asarray(info.cell_type).astype(str), UNIT_COLUMNS["cell_type"]),
        UnitColumn("depth_um", np.asarray(info.depth_um, float), UNIT_COLUMNS["depth_um"]),
        UnitColumn("layer", np.asarray(info.layer).astype(str), UNIT_COLUMNS["layer"]),
    ]
    if include_margin:
        desc = UNIT_COLUMNS.get("cell_type_margin_ms", MARGIN_DESCRIPTION)
        cols.append(UnitColumn("cell_type_margin_ms", np.asarray(info.margin_ms, float), desc))
    return cols


def units_result_set(info: UnitInfo, include_margin: bool = True) -> ResultSet:
    """A :class:`ResultSet` holding only the units columns, with the settings in ``config``."""
    config = {
        "cell_types": info.params.to_dict(),
        "layers": info.layers.to_dict() if info.layers is not None else "electrode locations",
        "waveform_sources": sorted(set(info.source.tolist())),
    }
    return ResultSet(unit_columns=unit_columns(info, include_margin), config={"units": config})


def add_unit_columns(
    path: str | os.PathLike,
    info: UnitInfo,
    run_name: str = "units_info",
    overwrite: bool = False,
    output: str | os.PathLike | None = None,
    include_margin: bool = True,
) -> Path:
    """Append the units columns of ``info`` to an NWB file with the safe writer.

    Parameters
    ----------
    path : str or Path
        The NWB file ``info`` was read from (same units, same order).
    info : UnitInfo
    run_name : str, default "units_info"
        Name of the run recorded by :func:`nwb_subspace.io.writer.write_results`.
    overwrite : bool, default False
        Replace columns and run of the same name.
    output : str or Path, optional
        Write a new file instead (see ``write_results``).
    include_margin : bool, default True
        Also write ``cell_type_margin_ms``.

    Returns
    -------
    Path
        The file written.
    """
    from nwb_subspace.io.writer import write_results

    return write_results(
        path, units_result_set(info, include_margin), run_name, overwrite=overwrite, output=output
    )
