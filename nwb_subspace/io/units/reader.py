"""Sorted units through SpikeInterface: spike times, waveforms, cell types, depths, layers.

:func:`read_units` takes an NWB file (or any SpikeInterface sorting, with or without a
recording) and returns a :class:`UnitInfo`: per unit, spike times, the mean waveform on its
main channel (µV), trough-to-peak duration, narrow/broad class, depth and layer.
:func:`unit_columns` turns it into documented ``units`` columns and
:func:`add_unit_columns` appends them to the file with the safe writer.

Waveforms come from, in order of preference (``prefer="auto"``):

``"raw"``
    A raw ``ElectricalSeries`` (or the ``recording`` passed in): a SpikeInterface
    ``SortingAnalyzer`` on (the first ``max_raw_s`` seconds of) the recording, high-pass
    filtered, with ``random_spikes``, ``templates``, ``template_metrics`` and
    ``unit_locations`` (monopolar triangulation).
``"waveform_mean"``
    The ``waveform_mean`` column of the ``units`` table (volts in NWB, rescaled to µV): a
    SpikeInterface ``Templates`` object over the electrodes' ``rel_x``/``rel_y``, with the
    trough/peak detector of ``spikeinterface.metrics`` and
    ``compute_monopolar_triangulation`` on a sparse copy.
``"none"``
    Neither: cell type ``"unknown"`` and a warning saying why.

Trough-to-peak durations always come from SpikeInterface's detector
(``spikeinterface.metrics.template.get_trough_and_peak_idx``, the one behind the
``peak_to_trough_duration`` template metric, which is in **seconds**) on the main channel
(largest peak-to-peak) upsampled 10x; positive-going spikes are flipped first (the metric
extension would otherwise measure from the small negative dip).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from nwb_subspace.io.backend import nwb_backend
from nwb_subspace.io.remote import is_remote, resolve_source
from nwb_subspace.io.units.depth import DEPTH_COLUMNS, unit_depths, unit_layers
from nwb_subspace.io.units.info import (
    MARGIN_DESCRIPTION,
    UnitInfo,
    add_unit_columns,
    unit_columns,
    units_result_set,
)
from nwb_subspace.io.units.measure import (
    MeasuredWaveforms,
    UnitsReadWarning,
    quiet_spikeinterface,
    record_warning,
    spikeinterface_job_kwargs,
)
from nwb_subspace.io.units.nwb import NwbMeta, read_nwb_meta, read_sorting, recording_rows
from nwb_subspace.io.units.raw import raw_waveforms
from nwb_subspace.io.units.templates import (
    channel_geometry,
    samples_before_peak,
    stored_mean_waveforms,
    template_window_ms,
    waveform_mean_uv,
)
from nwb_subspace.units.celltypes import CellTypeParams, LayerBoundaries, classify_spike_width

__all__ = [
    "MARGIN_DESCRIPTION",
    "UnitInfo",
    "UnitsReadWarning",
    "add_unit_columns",
    "read_units",
    "unit_columns",
    "units_result_set",
]


def _check_options(
    prefer: str, max_raw_s, highpass_hz, max_spikes_per_unit, min_spikes, min_snr
) -> None:
    if prefer not in ("auto", "raw", "waveform_mean"):
        raise ValueError(f"prefer={prefer!r}; use 'auto', 'raw' or 'waveform_mean'")
    if max_raw_s is not None and not (isinstance(max_raw_s, int | float) and max_raw_s > 0):
        raise ValueError(
            f"max_raw_s must be a positive number of seconds or None; got {max_raw_s!r}"
        )
    if highpass_hz is not None and not (isinstance(highpass_hz, int | float) and highpass_hz >= 0):
        raise ValueError(f"highpass_hz must be >= 0 Hz or None; got {highpass_hz!r}")
    for name, v in (("max_spikes_per_unit", max_spikes_per_unit), ("min_spikes", min_spikes)):
        if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < 1:
            raise ValueError(f"{name} must be a positive int; got {v!r}")
    if isinstance(min_snr, bool) or not (isinstance(min_snr, int | float) and min_snr >= 0):
        raise ValueError(f"min_snr must be a number >= 0; got {min_snr!r}")


def _layer_boundaries(layers) -> LayerBoundaries | None:
    if layers is None or isinstance(layers, LayerBoundaries):
        return layers
    if isinstance(layers, Mapping):
        return LayerBoundaries.from_dict(layers)
    raise TypeError(
        f"layers must be a LayerBoundaries, a dict config or None; got {type(layers).__name__}"
    )


# long: a public function whose numpy docstring is 70 of its lines; the steps are below it
def read_units(
    source: str | os.PathLike | Any,
    *,
    recording: Any = None,
    cell_type_params: CellTypeParams | None = None,
    layers: LayerBoundaries | Mapping | None = None,
    prefer: Literal["auto", "raw", "waveform_mean"] = "auto",
    depth_column: str | None = None,
    electrical_series_path: str | None = None,
    max_raw_s: float | None = 60.0,
    highpass_hz: float | None = 300.0,
    max_spikes_per_unit: int = 500,
    min_spikes: int = 10,
    min_snr: float = 3.0,
    job_kwargs: Mapping | None = None,
) -> UnitInfo:
    """Spike times, main-channel waveforms, cell types, depths and layers of sorted units.

    Parameters
    ----------
    source : str, Path or spikeinterface BaseSorting
        An NWB file with a ``units`` table, or any SpikeInterface sorting.
    recording : spikeinterface BaseRecording, optional
        Raw voltage with a probe. For an NWB ``source`` it replaces the file's own
        ``ElectricalSeries``; for a sorting it is the only source of raw waveforms.
    cell_type_params : CellTypeParams, optional
        Narrow/broad threshold. Default: ``CellTypeParams.for_probe`` of the file's devices
        (0.35 ms for Neuropixels or an unknown probe, 0.40 ms for other named probes).
    layers : LayerBoundaries or dict, optional
        Layer ranges in ``rel_y`` (see :meth:`LayerBoundaries.from_dict`, e.g.
        ``{"l34_rel_y": 800}``). Without it, layers come from the electrodes' ``location``
        strings (main channel), else ``"unknown"``.
    prefer : {"auto", "raw", "waveform_mean"}, default "auto"
        Waveform source. ``"auto"``: raw voltage when present, else ``waveform_mean``.
        ``"raw"`` warns and falls back when there is no raw voltage; ``"waveform_mean"``
        uses the stored means even when raw voltage exists (falling back to raw otherwise).
    depth_column : str, optional
        A units column (or sorting property) holding depths in the ``rel_y`` frame, used
        instead of waveform-based locations. By default ``depth_um`` or ``depth`` is used
        for units whose location cannot be computed from waveforms.
    electrical_series_path : str, optional
        Which ``ElectricalSeries`` to use (e.g. ``"acquisition/ElectricalSeries"``) when the
        file has several; by default the first one in ``acquisition``.
    max_raw_s : float or None, default 60
        Use at most this many seconds of raw voltage (None: all of it).
    highpass_hz : float or None, default 300
        High-pass cut-off applied to raw voltage before averaging (None or 0: none).
    max_spikes_per_unit : int, default 500
        Spikes averaged per unit on the raw path.
    min_spikes : int, default 10
        Units with fewer spikes in the raw segment use ``waveform_mean`` (or get none).
    min_snr : float, default 3
        Units whose raw template (main channel, peak-to-peak) is below this many times the
        noise level (MAD) use ``waveform_mean`` (or get none).
    job_kwargs : dict, optional
        SpikeInterface job options (``n_jobs`` defaults to 1; progress bars are off).

    Returns
    -------
    UnitInfo

    Raises
    ------
    FileNotFoundError
        ``source`` is a path that does not exist.
    ValueError, TypeError
        Unreadable or non-NWB files, a recording without a probe, a sorting without any way
        to place its units (no recording, no depth property), bad options.
    """
    _check_options(prefer, max_raw_s, highpass_hz, max_spikes_per_unit, min_spikes, min_snr)
    jk = spikeinterface_job_kwargs(job_kwargs)
    boundaries = _layer_boundaries(layers)
    _check_types(cell_type_params, recording)
    messages: list[str] = []
    src = _open_source(source, recording, prefer, depth_column, electrical_series_path, messages)
    sorting, meta, recording = src.sorting, src.meta, src.recording

    params = cell_type_params or CellTypeParams.for_probe(src.probe_text)
    options = {
        "max_raw_s": max_raw_s,
        "highpass_hz": highpass_hz,
        "max_spikes_per_unit": max_spikes_per_unit,
        "min_spikes": min_spikes,
        "min_snr": float(min_snr),
        "nwb": meta is not None and src.own_recording,
        "channel_rows": None,
    }
    if options["nwb"]:
        options["channel_rows"] = recording_rows(src.path, src.es_path, recording)
    n = sorting.get_num_units()
    unit_ids = np.asarray(sorting.unit_ids)
    if meta is not None and n != meta.n_units:
        raise ValueError(
            f"SpikeInterface read {n} units but the units table has {meta.n_units} rows"
        )
    spike_times = [
        np.asarray(sorting.get_unit_spike_train(u, segment_index=0, return_times=True), dtype=float)
        for u in unit_ids
    ]

    wf_mean, wf_fs = _stored_means(sorting, meta, recording, messages)
    measured, covered = _measure_waveforms(src, wf_mean, wf_fs, params, jk, options, messages)
    source_arr, ttp, main, loc, waveform, fs_out = _assemble(measured, n)
    if not covered.all():
        _warn_unmeasured(covered, recording is None and wf_mean is None, messages)
    labels, margin = classify_spike_width(ttp, params)

    single_channel_means = wf_mean is not None and wf_mean.ndim == 2
    depth, depth_source = unit_depths(
        loc, source_arr, main, sorting, depth_column, meta, single_channel_means, messages
    )
    layer = unit_layers(depth, main, boundaries, meta, recording)
    return UnitInfo(
        unit_ids=unit_ids,
        spike_times=spike_times,
        waveform=waveform,
        waveform_fs=fs_out,
        trough_to_peak_ms=ttp,
        cell_type=labels,
        margin_ms=margin,
        depth_um=depth,
        layer=layer,
        source=source_arr,
        depth_source=depth_source,
        main_channel=main,
        location_um=loc,
        params=params,
        layers=boundaries,
        warnings=messages,
    )


def _check_types(cell_type_params: Any, recording: Any) -> None:
    from spikeinterface.core import BaseRecording

    if cell_type_params is not None and not isinstance(cell_type_params, CellTypeParams):
        raise TypeError(
            f"cell_type_params must be a CellTypeParams; got {type(cell_type_params).__name__}"
        )
    if recording is not None and not isinstance(recording, BaseRecording):
        raise TypeError(
            f"recording must be a spikeinterface BaseRecording; got {type(recording).__name__}"
        )


@dataclass
class _Source:
    """The units to read and what came with them (see :func:`_open_source`)."""

    sorting: Any
    recording: Any  # the one passed in, the file's own ElectricalSeries, or None
    prefer: str  # "auto" becomes "waveform_mean" for a remote file with stored means
    probe_text: str = ""
    meta: NwbMeta | None = None
    own_recording: bool = False  # the recording is the file's own ElectricalSeries
    path: Any = None
    es_path: str | None = None


def _open_source(
    source: Any,
    recording: Any,
    prefer: str,
    depth_column: str | None,
    electrical_series_path: str | None,
    messages: list[str],
) -> _Source:
    """A SpikeInterface sorting as it is, or an NWB file opened (and its raw voltage, lazily)."""
    from spikeinterface.core import BaseSorting

    if isinstance(source, BaseSorting):
        return _sorting_source(source, recording, prefer, depth_column)
    if isinstance(source, str | os.PathLike):
        return _nwb_source(source, recording, prefer, electrical_series_path, messages)
    raise TypeError(
        f"source must be an NWB file path or a spikeinterface BaseSorting; got "
        f"{type(source).__name__} {source!r}"
    )


def _sorting_source(sorting: Any, recording: Any, prefer: str, depth_column: str | None) -> _Source:
    if sorting.get_num_segments() != 1:
        raise ValueError(
            f"the sorting has {sorting.get_num_segments()} segments; read_units needs one"
        )
    probe_text = ""
    if recording is not None and recording.has_probe():
        p = recording.get_probe()
        probe_text = " ".join(str(v) for v in (p.model_name, p.manufacturer, p.name) if v)
    props = set(sorting.get_property_keys())
    if recording is None and depth_column is None and not props & set(DEPTH_COLUMNS):
        raise ValueError(
            "cannot place the sorting's units: there is no recording with a probe and no "
            f"depth property ({' or '.join(DEPTH_COLUMNS)}); pass recording=<a "
            "BaseRecording with a probe> or sorting.set_property('depth_um', depths) "
            "(rel_y frame, µm)"
        )
    return _Source(sorting, recording, prefer, probe_text)


def _nwb_source(
    source: str | os.PathLike,
    recording: Any,
    prefer: str,
    electrical_series_path: str | None,
    messages: list[str],
) -> _Source:
    remote = is_remote(source)
    path = resolve_source(source)
    if not remote and not path.exists():
        raise FileNotFoundError(f"no such NWB file: {path}; check the path")
    if not remote and path.is_dir() and nwb_backend(path) != "zarr":
        raise ValueError(f"{path} is a folder; give an .nwb file or an NWB Zarr store")
    meta = read_nwb_meta(path)
    sorting, es_path = read_sorting(path, meta, electrical_series_path, messages)
    if remote and es_path is not None and prefer == "auto" and "waveform_mean" in meta.columns:
        # Lazy reading: the stored means avoid transferring raw voltage.
        prefer = "waveform_mean"
        messages.append(f"{path}: remote file, waveforms from waveform_mean (raw not read)")
    own_recording = False
    if recording is None and es_path is not None and prefer != "waveform_mean":
        from spikeinterface.extractors import read_nwb_recording

        stream = {"stream_mode": "remfile"} if remote else {}
        recording = read_nwb_recording(path, electrical_series_path=es_path, **stream)
        own_recording = True
    return _Source(sorting, recording, prefer, meta.probe_text, meta, own_recording, path, es_path)


def _stored_means(
    sorting: Any, meta: NwbMeta | None, recording: Any, messages: list[str]
) -> tuple[np.ndarray | None, float | None]:
    """``waveform_mean`` in µV (or None) and its sampling rate; a malformed one raises
    unless ``recording`` can give waveforms instead."""
    if "waveform_mean" not in sorting.get_property_keys():
        return None, None
    wf_fs = meta.waveform_fs if meta is not None else None
    if wf_fs is None:
        wf_fs = float(sorting.sampling_frequency)
        record_warning(
            messages,
            f"waveform_mean has no sampling rate; assumed the sorting's {wf_fs:g} Hz",
        )
    wf_mean = waveform_mean_uv(sorting, meta, messages, wf_fs, recording)
    return wf_mean, (wf_fs if wf_mean is not None else None)


def _measure_waveforms(
    src: _Source,
    wf_mean: np.ndarray | None,
    wf_fs: float | None,
    params: CellTypeParams,
    jk: dict,
    options: dict,
    messages: list[str],
) -> tuple[list[MeasuredWaveforms], np.ndarray]:
    """The waveform paths in order of preference, each on the units still uncovered."""
    sorting, recording, meta = src.sorting, src.recording, src.meta
    n = sorting.get_num_units()
    unit_ids = np.asarray(sorting.unit_ids)
    measured: list[MeasuredWaveforms] = []
    covered = np.zeros(n, dtype=bool)
    if src.prefer in ("auto", "raw"):
        order = ["raw", "waveform_mean"]
    else:
        order = ["waveform_mean", "raw"]
    if src.prefer == "raw" and recording is None:
        record_warning(
            messages, "prefer='raw' but there is no raw voltage (ElectricalSeries or recording)"
        )
    with quiet_spikeinterface():
        for step in order:
            todo = np.flatnonzero(~covered)
            if not todo.size:
                break
            if step == "raw" and recording is not None:
                sub = sorting.select_units(unit_ids[todo]) if todo.size < n else sorting
                window = template_window_ms(meta, wf_mean, wf_fs)
                m = raw_waveforms(sub, recording, todo, params, jk, options, window, messages)
                if m is not None:
                    measured.append(m)
                    covered[m.units] = True
            elif step == "waveform_mean" and wf_mean is not None:
                chan_xy, unit_chans = channel_geometry(meta, recording, wf_mean, todo, messages)
                before = samples_before_peak(meta, wf_fs)
                m = stored_mean_waveforms(
                    wf_mean[todo], todo, wf_fs, chan_xy, unit_chans, before, params, messages
                )
                measured.append(m)
                covered[todo] = True
    return measured, covered


def _warn_unmeasured(covered: np.ndarray, no_source: bool, messages: list[str]) -> None:
    missing = np.flatnonzero(~covered)
    why = (
        "the file has no raw ElectricalSeries and no waveform_mean column"
        if no_source
        else "no usable waveform (too few spikes in the raw data, no waveform_mean)"
    )
    record_warning(
        messages,
        f"cell type 'unknown' for {missing.size} of {covered.size} unit(s): {why}; pass "
        "recording=<a BaseRecording with a probe> to compute waveforms",
    )


def _assemble(
    measured: list[MeasuredWaveforms], n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, float | None]:
    """Merge the waveform paths' outputs into per-unit arrays (NaN / -1 / "none" elsewhere).

    Returns source, trough-to-peak (ms), main channel, location (n, 2), waveform
    (n, n_samples; only the paths at the first path's sampling rate) and that rate.
    """
    source_arr = np.full(n, "none", dtype="<U13")
    ttp = np.full(n, np.nan)
    main = np.full(n, -1)
    loc = np.full((n, 2), np.nan)
    n_samples = max((m.waveform.shape[1] for m in measured), default=0)
    waveform = np.full((n, n_samples), np.nan)
    fs_out = measured[0].fs if measured else None
    for m in measured:
        source_arr[m.units] = m.name
        ttp[m.units] = m.trough_to_peak_ms
        main[m.units] = m.main_channel
        loc[m.units] = m.location
        if m.fs == fs_out:
            waveform[m.units, : m.waveform.shape[1]] = m.waveform
    return source_arr, ttp, main, loc, waveform, fs_out
