"""The NWB side of :func:`~nwb_subspace.io.units.reader.read_units`: file metadata and sorting.

:func:`read_nwb_meta` reads, from the raw groups (h5py for HDF5, zarr for an NWB Zarr store;
:func:`~nwb_subspace.io.remote.open_root`), what SpikeInterface's NWB extractors do not give:
electrode positions and locations, each unit's electrodes, ``waveform_mean`` attributes
(sampling rate, unit, time before the peak), the ``ElectricalSeries`` in ``acquisition``
and the probe text of the devices. :func:`read_sorting` opens the units with SpikeInterface
on the right time grid; :func:`recording_rows` maps recording channels to electrode rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nwb_subspace.io.remote import is_remote, open_root
from nwb_subspace.io.units.measure import h5_strings, h5_text, record_warning

__all__ = ["NwbMeta", "read_nwb_meta", "read_sorting", "recording_rows"]

_VOLT_SCALE = {"volts": 1e6, "volt": 1e6, "v": 1e6, "millivolts": 1e3, "mv": 1e3}
_VOLT_SCALE.update({"microvolts": 1.0, "uv": 1.0, "µv": 1.0})
_PLACEHOLDERS = {
    "device",
    "deviceecephys",
    "no description",
    "unknown",
    "ecephys probe. automatically generated.",
}


@dataclass
class NwbMeta:
    """What :func:`read_nwb_meta` found in an NWB file."""

    n_units: int
    electrodes_xy: np.ndarray | None  # (n_electrodes, 2)
    electrode_location: np.ndarray | None  # (n_electrodes,)
    unit_electrodes: list[np.ndarray] | None  # per unit, electrode rows
    waveform_fs: float | None
    waveform_scale: float | None  # to µV
    waveform_unit: str | None
    ms_before: float | None
    electrical_series: list[str]
    resolution: float | None
    probe_text: str
    columns: list[str]


def read_nwb_meta(path: Path | str) -> NwbMeta:
    """Units, electrodes, ``waveform_mean`` and device metadata of the NWB file at ``path``
    (a local path or a URL, read lazily)."""
    with open_root(path) as f:
        if "units" not in f or "spike_times" not in f["units"]:
            raise ValueError(
                f"{path} has no units table with spike_times; read_units needs sorted units"
            )
        units = f["units"]
        n_units = int(units["id"].shape[0])
        columns = [h5_text(c) for c in units.attrs["colnames"]]
        xy = loc = None
        if "general/extracellular_ephys/electrodes" in f:
            el = f["general/extracellular_ephys/electrodes"]
            if "rel_x" in el and "rel_y" in el:
                xy = np.column_stack([el["rel_x"][()], el["rel_y"][()]]).astype(float)
            elif "rel_y" in el:
                xy = np.column_stack([np.zeros(el["rel_y"].shape[0]), el["rel_y"][()]])
            if "location" in el:
                loc = h5_strings(el["location"][()])
        unit_el = None
        if "electrodes" in units and "electrodes_index" in units:
            flat = units["electrodes"][()]
            ends = units["electrodes_index"][()]
            starts = np.concatenate([[0], ends[:-1]])
            unit_el = [np.asarray(flat[s:e], dtype=int) for s, e in zip(starts, ends, strict=True)]
        wf_fs = scale = before = unit = None
        if "waveform_mean" in units:
            a = units["waveform_mean"].attrs
            if "sampling_rate" in a:
                wf_fs = float(a["sampling_rate"])
            unit = h5_text(a.get("unit", "volts"))
            scale = _VOLT_SCALE.get(unit.strip().lower())
            if "time_before_peak_in_ms" in a:
                before = float(a["time_before_peak_in_ms"])
        resolution = units.attrs.get("resolution")
        resolution = float(resolution) if resolution is not None and resolution > 0 else None
        es: list[str] = []

        def visit(name: str, obj: Any) -> None:
            t = obj.attrs.get("neurodata_type")
            if (
                t is not None
                and h5_text(t) == "ElectricalSeries"
                and name.startswith("acquisition/")
            ):
                es.append(name)

        if "acquisition" in f:
            f["acquisition"].visititems(lambda n, o: visit(f"acquisition/{n}", o))
        texts = []
        if "general/devices" in f:
            for name, dev in f["general/devices"].items():
                texts.append(name)
                for key in ("description", "manufacturer", "model_name", "model_number"):
                    v = dev.attrs.get(key)
                    if v is not None:
                        texts.append(h5_text(v))
        # Placeholders written by pynwb/NeuroConv say nothing about the probe.
        texts = [t for t in texts if t.strip().lower() not in _PLACEHOLDERS]
    return NwbMeta(
        n_units=n_units,
        electrodes_xy=xy,
        electrode_location=loc,
        unit_electrodes=unit_el,
        waveform_fs=wf_fs,
        waveform_scale=scale,
        waveform_unit=unit,
        ms_before=before,
        electrical_series=sorted(es),
        resolution=resolution,
        probe_text=" ".join(texts),
        columns=columns,
    )


def read_sorting(
    path: Path | str, meta: NwbMeta, es_path: str | None, messages: list[str]
) -> tuple[Any, str | None]:
    """The units of ``path`` as a SpikeInterface sorting, and the ElectricalSeries used."""
    from spikeinterface.extractors import read_nwb_sorting

    if es_path is not None:
        es_path = es_path.strip("/")
        if es_path not in meta.electrical_series:
            raise ValueError(
                f"electrical_series_path={es_path!r} is not an ElectricalSeries in {path}; "
                f"found {meta.electrical_series or 'none'}"
            )
    elif meta.electrical_series:
        es_path = meta.electrical_series[0]
        if len(meta.electrical_series) > 1:
            record_warning(
                messages,
                f"{Path(str(path)).name} has several ElectricalSeries {meta.electrical_series}; using "
                f"{es_path!r} (choose with electrical_series_path=)",
            )
    kwargs: dict[str, Any] = {}
    if es_path is not None:
        kwargs["electrical_series_path"] = es_path
    elif meta.resolution is None:
        fs = meta.waveform_fs or 30000.0
        kwargs["sampling_frequency"] = fs
        record_warning(
            messages,
            f"units table has no resolution and the file no ElectricalSeries; spike times are "
            f"read on a {fs:g} Hz grid",
        )
    if is_remote(str(path)):
        kwargs["stream_mode"] = "remfile"
    try:
        sorting = read_nwb_sorting(path, **kwargs)
    except (KeyError, ValueError) as err:
        raise ValueError(f"SpikeInterface could not read the units of {path}: {err}") from err
    return sorting, es_path


def recording_rows(path: Path | str, es_path: str | None, recording: Any) -> np.ndarray | None:
    """Electrodes-table row of each channel of the file's own ElectricalSeries."""
    if es_path is None:
        return None
    with open_root(path) as f:
        es = f[es_path]
        if "electrodes" not in es:
            return None
        rows = np.asarray(es["electrodes"][()], dtype=int)
    return rows if rows.size == recording.get_num_channels() else None
