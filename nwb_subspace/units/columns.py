"""The columns nwb-subspace adds to an NWB file's ``units`` table, with their units.

These are plain ``VectorData`` columns (no extension type needed), so any NWB reader sees
them. The descriptions below are written into the file with each column.
"""

from __future__ import annotations

UNIT_COLUMNS: dict[str, str] = {
    "trough_to_peak_ms": (
        "Trough-to-peak duration of the unit's mean waveform on its main channel, in "
        "milliseconds (positive-going spikes are flipped first). NaN where no waveform."
    ),
    "cell_type": (
        "Spike-width class: 'narrow' (trough_to_peak_ms below the threshold stored in the "
        "analysis config), 'broad' (at or above it) or 'unknown' (no waveform)."
    ),
    "depth_um": (
        "Unit position along the probe in micrometres, in the electrodes' rel_y frame "
        "(distance from the probe tip; larger = closer to the cortical surface)."
    ),
    "cell_type_margin_ms": (
        "trough_to_peak_ms minus the narrow/broad threshold used, in milliseconds (negative "
        "= narrow; the threshold is stored in the analysis config). NaN where no waveform."
    ),
    "layer": (
        "Cortical layer group of the unit ('13', '44', '56') from the layer boundaries in "
        "the analysis config or the electrodes' location strings; 'outside' when its depth "
        "lies in no configured layer; 'unknown' when depth or layer information is missing."
    ),
}


def describe(name: str) -> str:
    """Return the documented description of a units column added by nwb-subspace."""
    try:
        return UNIT_COLUMNS[name]
    except KeyError:
        raise ValueError(
            f"unknown units column {name!r}; documented columns are {sorted(UNIT_COLUMNS)}"
        ) from None
