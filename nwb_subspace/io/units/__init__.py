"""Units from an NWB file through SpikeInterface: spike times, mean waveforms, spike widths,
depths and layers (:func:`read_units`), and the columns written back.

- :mod:`~nwb_subspace.io.units.reader`: :func:`read_units` and :class:`UnitInfo`;
- :mod:`~nwb_subspace.io.units.nwb`: the units table, electrodes and probe of the file;
- :mod:`~nwb_subspace.io.units.raw`, :mod:`~nwb_subspace.io.units.templates`: waveforms from
  raw voltage or stored ``waveform_mean``;
- :mod:`~nwb_subspace.io.units.measure`, :mod:`~nwb_subspace.io.units.depth`,
  :mod:`~nwb_subspace.io.units.info`: widths, depths and layers, and the result record.
"""

from nwb_subspace.io.units.reader import (
    UnitInfo,
    UnitsReadWarning,
    add_unit_columns,
    read_units,
    unit_columns,
    units_result_set,
)

__all__ = [
    "UnitInfo",
    "UnitsReadWarning",
    "add_unit_columns",
    "read_units",
    "unit_columns",
    "units_result_set",
]
