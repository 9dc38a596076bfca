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

import contextlib
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..celltypes import (
    CellTypeParams,
    LayerBoundaries,
    assign_layers,
    classify_spike_width,
    is_positive_going,
    layer_from_location,
)
from ..results import ResultSet, UnitColumn
from ..unit_columns import UNIT_COLUMNS

__all__ = [
    "MARGIN_DESCRIPTION",
    "UnitInfo",
    "UnitsReadWarning",
    "add_unit_columns",
    "read_units",
    "unit_columns",
    "units_result_set",
]

#: Description of the ``cell_type_margin_ms`` column (not yet in ``UNIT_COLUMNS``).
MARGIN_DESCRIPTION = (
    "trough_to_peak_ms minus the narrow/broad threshold used, in milliseconds (negative = "
    "narrow; the threshold is stored in the analysis config). NaN where no waveform."
)

_SOURCES = ("raw", "waveform_mean", "none")
_DETECTOR = {  # the defaults of SpikeInterface's template_metrics extension (0.105)
    "min_thresh_detect_peaks_troughs": 0.3,
    "edge_exclusion_ms": 0.09,
    "min_peak_trough_distance_ratio": 0.2,
    "min_extremum_distance_samples": 3,
}
_VOLT_SCALE = {"volts": 1e6, "volt": 1e6, "v": 1e6, "millivolts": 1e3, "mv": 1e3}
_VOLT_SCALE.update({"microvolts": 1.0, "uv": 1.0, "µv": 1.0})
_DEPTH_COLUMNS = ("depth_um", "depth")
_PLACEHOLDERS = {
    "device",
    "deviceecephys",
    "no description",
    "unknown",
    "ecephys probe. automatically generated.",
}


class UnitsReadWarning(UserWarning):
    """Something in the input limited what :func:`read_units` could measure."""


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
        from dataclasses import replace

        labels, margin = classify_spike_width(self.trough_to_peak_ms, params)
        return replace(self, cell_type=labels, margin_ms=margin, params=params)


# --------------------------------------------------------------------------- helpers


def _warn(messages: list[str], text: str) -> None:
    messages.append(text)
    warnings.warn(text, UnitsReadWarning, stacklevel=3)


@contextlib.contextmanager
def _quiet_si():
    """Silence SpikeInterface progress bars for the duration of a computation."""
    from spikeinterface.core import get_global_job_kwargs, set_global_job_kwargs

    old = get_global_job_kwargs()
    set_global_job_kwargs(progress_bar=False)
    try:
        yield
    finally:
        set_global_job_kwargs(**old)


def _job_kwargs(job_kwargs: Mapping | None) -> dict:
    allowed = {"n_jobs", "chunk_duration", "chunk_size", "chunk_memory", "total_memory"}
    allowed |= {"pool_engine", "mp_context", "max_threads_per_worker", "progress_bar"}
    kw = {"n_jobs": 1, "progress_bar": False}
    if job_kwargs is None:
        return kw
    if not isinstance(job_kwargs, Mapping):
        raise TypeError(f"job_kwargs must be a dict; got {type(job_kwargs).__name__}")
    bad = set(job_kwargs) - allowed
    if bad:
        raise ValueError(f"unknown job_kwargs {sorted(bad)}; allowed: {sorted(allowed)}")
    kw.update(job_kwargs)
    return kw


def _decode(values: Any) -> np.ndarray:
    return np.array([v.decode() if isinstance(v, bytes) else str(v) for v in values])


def _main_channels(templates: np.ndarray) -> np.ndarray:
    """Channel of largest peak-to-peak amplitude, per unit (-1 for all-NaN units)."""
    ptp = np.ptp(np.nan_to_num(templates), axis=1)
    main = np.argmax(ptp, axis=1)
    main[ptp.max(axis=1) == 0] = -1
    return main


def _trough_to_peak_si(waveforms: np.ndarray, fs: float, upsample: int) -> np.ndarray:
    """SpikeInterface's peak_to_trough_duration (converted to ms) of 1-D waveforms,
    flipping positive-going ones first."""
    from scipy.signal import resample_poly
    from spikeinterface.metrics.template import get_trough_and_peak_idx

    out = np.full(waveforms.shape[0], np.nan)
    fs_up = fs * upsample
    for i, w in enumerate(waveforms):
        if not np.isfinite(w).all() or np.ptp(w) == 0:
            continue
        w = w - np.median(w)
        if is_positive_going(w):
            w = -w
        if upsample > 1:
            w = resample_poly(w, upsample, 1)
        info = get_trough_and_peak_idx(w, fs_up, **_DETECTOR)
        trough, peak = info.get("trough_index"), info.get("peak_after_index")
        if trough is None or peak is None or peak <= trough:
            continue
        out[i] = (peak - trough) / fs_up * 1e3  # samples -> s -> ms
    return out


def _make_probe(positions: np.ndarray):
    import probeinterface

    probe = probeinterface.Probe(ndim=2, si_units="um")
    probe.set_contacts(positions=positions, shapes="circle", shape_params={"radius": 5})
    probe.set_device_channel_indices(np.arange(positions.shape[0]))
    return probe


def _localize(templates, radius_um: float = 75.0) -> np.ndarray:
    """Monopolar triangulation (x, y) of a SpikeInterface Templates/SortingAnalyzer."""
    from spikeinterface.postprocessing.localization_tools import compute_monopolar_triangulation

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        loc = compute_monopolar_triangulation(templates, radius_um=radius_um)
    return np.asarray(loc)[:, :2]


# --------------------------------------------------------------------------- NWB metadata


@dataclass
class _NwbMeta:
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


def _read_nwb_meta(path: Path) -> _NwbMeta:
    import h5py

    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise ValueError(
            f"{path} is not a readable HDF5/NWB file ({err}); give an .nwb file"
        ) from None
    with f:
        if "nwb_version" not in f.attrs:
            raise ValueError(f"{path} is an HDF5 file but not NWB (no nwb_version attribute)")
        if "units" not in f or "spike_times" not in f["units"]:
            raise ValueError(
                f"{path} has no units table with spike_times; read_units needs sorted units"
            )
        units = f["units"]
        n_units = int(units["id"].shape[0])
        columns = [c.decode() if isinstance(c, bytes) else str(c) for c in units.attrs["colnames"]]
        xy = loc = None
        if "general/extracellular_ephys/electrodes" in f:
            el = f["general/extracellular_ephys/electrodes"]
            if "rel_x" in el and "rel_y" in el:
                xy = np.column_stack([el["rel_x"][()], el["rel_y"][()]]).astype(float)
            elif "rel_y" in el:
                xy = np.column_stack([np.zeros(el["rel_y"].shape[0]), el["rel_y"][()]])
            if "location" in el:
                loc = _decode(el["location"][()])
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
            unit = a.get("unit", "volts")
            unit = unit.decode() if isinstance(unit, bytes) else str(unit)
            scale = _VOLT_SCALE.get(unit.strip().lower())
            if "time_before_peak_in_ms" in a:
                before = float(a["time_before_peak_in_ms"])
        resolution = units.attrs.get("resolution")
        resolution = float(resolution) if resolution is not None and resolution > 0 else None
        es: list[str] = []

        def visit(name, obj):
            t = obj.attrs.get("neurodata_type")
            t = t.decode() if isinstance(t, bytes) else t
            if t == "ElectricalSeries" and name.startswith("acquisition/"):
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
                        texts.append(v.decode() if isinstance(v, bytes) else str(v))
        # Placeholders written by pynwb/NeuroConv say nothing about the probe.
        texts = [t for t in texts if t.strip().lower() not in _PLACEHOLDERS]
    return _NwbMeta(
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


# --------------------------------------------------------------------------- waveform paths


@dataclass
class _Measured:
    """Output of one waveform path, for the units it covers."""

    units: np.ndarray  # indices into the unit list
    waveform: np.ndarray  # (n, n_samples) µV, main channel
    fs: float
    trough_to_peak_ms: np.ndarray
    main_channel: np.ndarray  # electrode row / channel index
    location: np.ndarray  # (n, 2), NaN where unknown
    name: str = "waveform_mean"


def _raw_path(
    sorting,
    recording,
    unit_index: np.ndarray,
    params: CellTypeParams,
    job_kwargs: dict,
    options: dict,
    ms_window: tuple[float, float],
    messages: list[str],
) -> _Measured | None:
    """Templates, trough-to-peak and locations from raw voltage (a SortingAnalyzer)."""
    from spikeinterface.core import create_sorting_analyzer, get_noise_levels

    if recording.get_num_segments() != 1:
        raise ValueError(
            f"the recording has {recording.get_num_segments()} segments; read_units needs one "
            "(pass recording.select_segments([0]))"
        )
    has_probe = recording.has_probe()
    if not has_probe:
        if not options["nwb"]:
            raise ValueError(
                "the recording has no probe (channel locations); attach one with "
                "recording.set_probe(probe) (probeinterface) before calling read_units"
            )
        _warn(
            messages,
            "the electrodes table has no rel_x/rel_y, so the raw recording has no probe: "
            "cell types from raw data, but unit locations unknown",
        )
        n_ch = recording.get_num_channels()
        recording = recording.clone()
        recording.set_probe(_make_probe(np.column_stack([np.zeros(n_ch), np.arange(n_ch) * 1e4])))
    fs = recording.sampling_frequency
    n_frames = recording.get_num_samples(0)
    if options["max_raw_s"] is not None:
        n_frames = min(n_frames, int(options["max_raw_s"] * fs))
    rec = recording.frame_slice(0, n_frames)
    sort = sorting.frame_slice(0, n_frames)
    if options["highpass_hz"]:
        from spikeinterface.preprocessing import highpass_filter

        rec = highpass_filter(rec, freq_min=float(options["highpass_hz"]), dtype="float32")
    counts = sort.count_num_spikes_per_unit(outputs="array")
    ok = counts >= options["min_spikes"]
    short = unit_index[~ok]
    if short.size:
        _warn(
            messages,
            f"{short.size} unit(s) have fewer than {options['min_spikes']} spikes in the "
            f"{n_frames / fs:.1f} s of raw data (unit ids {sorting.unit_ids[~ok][:5].tolist()}"
            f"{'...' if short.size > 5 else ''}); their waveforms come from waveform_mean if stored",
        )
    if not ok.any():
        return None
    keep_ids = sort.unit_ids[ok]
    sort = sort.select_units(keep_ids)
    analyzer = create_sorting_analyzer(
        sort, rec, format="memory", sparse=True, return_in_uV=True, seed=0, **job_kwargs
    )
    ms_before, ms_after = ms_window
    analyzer.compute(
        {
            "random_spikes": {"max_spikes_per_unit": options["max_spikes_per_unit"], "seed": 0},
            "templates": {"ms_before": ms_before, "ms_after": ms_after},
        },
        **job_kwargs,
    )
    # Dense (n, samples, channels) in µV; channels outside a unit's sparsity are zero.
    templates = analyzer.get_extension("templates").get_templates(operator="average")
    main = _main_channels(templates)
    rows = np.arange(len(keep_ids))
    wf = templates[rows, :, np.maximum(main, 0)]
    ttp = _trough_to_peak_si(wf, fs, params.upsample)
    # SpikeInterface's own metric (seconds!) where it measures the same thing: negative-going
    # units whose main channel is ours.
    analyzer.compute("template_metrics", metric_names=["peak_to_trough_duration"])
    si_s = analyzer.get_extension("template_metrics").get_data()["peak_to_trough_duration"]
    si_ms = np.asarray(si_s, dtype=float) * 1e3
    same = analyzer.get_main_channels(outputs="index") == main
    negative = np.array([not is_positive_going(w) for w in wf])
    use_si = same & negative & np.isfinite(si_ms)
    ttp[use_si] = si_ms[use_si]
    # Units too small to see above the noise give meaningless shapes.
    noise = get_noise_levels(
        rec,
        return_in_uV=True,
        method="mad",
        random_slices_kwargs={"num_chunks_per_segment": 5, "chunk_size": 10000, "seed": 0},
    )
    snr = np.ptp(wf, axis=1) / noise[np.maximum(main, 0)]
    weak = snr < options["min_snr"]
    if weak.any():
        _warn(
            messages,
            f"{int(weak.sum())} unit(s) are below the noise in the raw data (peak-to-peak "
            f"< {options['min_snr']:g} x noise; unit ids {keep_ids[weak][:5].tolist()}); their "
            "waveforms come from waveform_mean if stored",
        )
    loc = np.full((len(keep_ids), 2), np.nan)
    if has_probe:
        analyzer.compute("unit_locations", method="monopolar_triangulation")
        loc = np.asarray(analyzer.get_extension("unit_locations").get_data())[:, :2]
    good = ~weak
    if not good.any():
        return None
    if options["nwb"] and options["channel_rows"] is not None:
        main = np.where(main >= 0, options["channel_rows"][np.maximum(main, 0)], -1)
    return _Measured(unit_index[ok][good], wf[good], fs, ttp[good], main[good], loc[good], "raw")


def _templates_path(
    wf_mean: np.ndarray,
    units: np.ndarray,
    fs: float,
    channel_xy: np.ndarray | None,
    unit_channels: list[np.ndarray] | None,
    nbefore: int | None,
    params: CellTypeParams,
    messages: list[str],
) -> _Measured:
    """Trough-to-peak and locations from ``waveform_mean`` (µV).

    ``wf_mean`` is (n, samples) or (n, samples, k); ``unit_channels[i]`` gives the rows of
    ``channel_xy`` that unit ``i``'s k waveform channels were recorded on.
    """
    from spikeinterface.core import ChannelSparsity, Templates

    n = wf_mean.shape[0]
    if wf_mean.ndim == 2:
        wf = wf_mean
        main = np.full(n, -1)
        if unit_channels is not None:
            main = np.array([c[0] if len(c) else -1 for c in unit_channels])
        loc = np.full((n, 2), np.nan)
        if channel_xy is not None:
            ok = main >= 0
            loc[ok] = channel_xy[main[ok]]
        ttp = _trough_to_peak_si(wf, fs, params.upsample)
        return _Measured(units, wf, fs, ttp, main, loc)

    k = wf_mean.shape[2]
    if unit_channels is None:  # waveform channels = channels 0..k-1
        unit_channels = [np.arange(k)] * n
    local_main = _main_channels(wf_mean)
    wf = wf_mean[np.arange(n), :, np.maximum(local_main, 0)]
    main = np.array(
        [c[m] if m >= 0 else -1 for c, m in zip(unit_channels, local_main, strict=True)]
    )
    ttp = _trough_to_peak_si(wf, fs, params.upsample)
    loc = np.full((n, 2), np.nan)
    if channel_xy is None:
        return _Measured(units, wf, fs, ttp, main, loc)
    # Dense templates over the channels used, and a mask of each unit's own channels
    # (SpikeInterface 0.105: localization on a dense Templates needs a sparsity first).
    used = np.unique(np.concatenate(unit_channels))
    col = {c: i for i, c in enumerate(used)}
    dense = np.zeros((n, wf_mean.shape[1], used.size), dtype=np.float32)
    mask = np.zeros((n, used.size), dtype=bool)
    for i, chans in enumerate(unit_channels):
        idx = [col[c] for c in chans]
        dense[i][:, idx] = np.nan_to_num(wf_mean[i])
        mask[i, idx] = True
    xy = channel_xy[used]
    valid = np.ptp(dense, axis=1).max(axis=1) > 0
    # Radius of 75 µm around the main channel, within the unit's own channels.
    main_col = np.array([col[m] if m >= 0 else 0 for m in main])
    dist = np.linalg.norm(xy[None, :, :] - xy[main_col][:, None, :], axis=2)
    mask &= dist <= 75.0
    mask[np.arange(n), main_col] = True
    if nbefore is None:
        nbefore = int(np.median(np.argmax(np.abs(wf), axis=1)))
    ids = np.arange(n)
    channel_ids = np.array([str(c) for c in used])
    sparse = ChannelSparsity(mask, ids, channel_ids)
    tpl = Templates(
        templates_array=dense,
        sampling_frequency=float(fs),
        nbefore=int(nbefore),
        is_in_uV=True,
        channel_ids=channel_ids,
        unit_ids=ids,
        probe=_make_probe(xy),
    ).to_sparse(sparse)
    if valid.any():
        sel = tpl.select_units(ids[valid]) if not valid.all() else tpl
        loc[valid] = _localize(sel)
    return _Measured(units, wf, fs, ttp, main, loc)


# --------------------------------------------------------------------------- public API


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
    from spikeinterface.core import BaseRecording, BaseSorting

    _check_options(prefer, max_raw_s, highpass_hz, max_spikes_per_unit, min_spikes, min_snr)
    jk = _job_kwargs(job_kwargs)
    boundaries = _layer_boundaries(layers)
    if cell_type_params is not None and not isinstance(cell_type_params, CellTypeParams):
        raise TypeError(
            f"cell_type_params must be a CellTypeParams; got {type(cell_type_params).__name__}"
        )
    if recording is not None and not isinstance(recording, BaseRecording):
        raise TypeError(
            f"recording must be a spikeinterface BaseRecording; got {type(recording).__name__}"
        )
    messages: list[str] = []
    meta: _NwbMeta | None = None
    own_recording = False

    if isinstance(source, BaseSorting):
        sorting = source
        if sorting.get_num_segments() != 1:
            raise ValueError(
                f"the sorting has {sorting.get_num_segments()} segments; read_units needs one"
            )
        probe_text = ""
        if recording is not None and recording.has_probe():
            p = recording.get_probe()
            probe_text = " ".join(str(v) for v in (p.model_name, p.manufacturer, p.name) if v)
        props = set(sorting.get_property_keys())
        if recording is None and depth_column is None and not props & set(_DEPTH_COLUMNS):
            raise ValueError(
                "cannot place the sorting's units: there is no recording with a probe and no "
                f"depth property ({' or '.join(_DEPTH_COLUMNS)}); pass recording=<a "
                "BaseRecording with a probe> or sorting.set_property('depth_um', depths) "
                "(rel_y frame, µm)"
            )
    elif isinstance(source, str | os.PathLike):
        path = Path(source)
        if str(source).startswith(("http://", "https://")):
            raise ValueError(f"{source} is a URL; download it or pass a local .nwb path")
        if not path.exists():
            raise FileNotFoundError(f"no such NWB file: {path}; check the path")
        if path.is_dir():
            raise ValueError(f"{path} is a folder; give an .nwb file")
        meta = _read_nwb_meta(path)
        sorting, es_path = _read_sorting(path, meta, electrical_series_path, messages)
        probe_text = meta.probe_text
        if recording is None and es_path is not None and prefer != "waveform_mean":
            from spikeinterface.extractors import read_nwb_recording

            recording = read_nwb_recording(path, electrical_series_path=es_path)
            own_recording = True
    else:
        raise TypeError(
            f"source must be an NWB file path or a spikeinterface BaseSorting; got "
            f"{type(source).__name__} {source!r}"
        )

    params = cell_type_params or CellTypeParams.for_probe(probe_text)
    options = {
        "max_raw_s": max_raw_s,
        "highpass_hz": highpass_hz,
        "max_spikes_per_unit": max_spikes_per_unit,
        "min_spikes": min_spikes,
        "min_snr": float(min_snr),
        "nwb": meta is not None and own_recording,
        "channel_rows": None,
    }
    if options["nwb"]:
        options["channel_rows"] = _recording_rows(path, es_path, recording)
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

    # ---- waveforms
    measured: list[_Measured] = []
    covered = np.zeros(n, dtype=bool)
    wf_mean = _waveform_mean(sorting, meta, messages)
    wf_fs = None
    if wf_mean is not None:
        wf_fs = meta.waveform_fs if meta is not None else None
        if wf_fs is None:
            wf_fs = float(sorting.sampling_frequency)
            _warn(
                messages,
                f"waveform_mean has no sampling rate; assumed the sorting's {wf_fs:g} Hz",
            )
    order = ["raw", "waveform_mean"] if prefer in ("auto", "raw") else ["waveform_mean", "raw"]
    if prefer == "raw" and recording is None:
        _warn(messages, "prefer='raw' but there is no raw voltage (ElectricalSeries or recording)")
    with _quiet_si():
        for step in order:
            todo = np.flatnonzero(~covered)
            if not todo.size:
                break
            if step == "raw" and recording is not None:
                sub = sorting.select_units(unit_ids[todo]) if todo.size < n else sorting
                m = _raw_path(
                    sub,
                    recording,
                    todo,
                    params,
                    jk,
                    options,
                    _ms_window(meta, wf_mean, wf_fs),
                    messages,
                )
                if m is not None:
                    measured.append(m)
                    covered[m.units] = True
            elif step == "waveform_mean" and wf_mean is not None:
                chan_xy, unit_chans = _channel_geometry(meta, recording, wf_mean, todo, messages)
                m = _templates_path(
                    wf_mean[todo],
                    todo,
                    wf_fs,
                    chan_xy,
                    unit_chans,
                    _nbefore(meta, wf_fs),
                    params,
                    messages,
                )
                measured.append(m)
                covered[todo] = True

    # ---- assemble
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
    if not covered.all():
        missing = np.flatnonzero(~covered)
        why = (
            "the file has no raw ElectricalSeries and no waveform_mean column"
            if recording is None and wf_mean is None
            else "no usable waveform (too few spikes in the raw data, no waveform_mean)"
        )
        _warn(
            messages,
            f"cell type 'unknown' for {missing.size} of {n} unit(s): {why}; pass "
            "recording=<a BaseRecording with a probe> to compute waveforms",
        )
    labels, margin = classify_spike_width(ttp, params)

    # ---- depth
    depth = loc[:, 1].copy()
    depth_source = np.where(np.isfinite(depth), "location", "none").astype("<U9")
    if meta is not None:
        single = (source_arr == "waveform_mean") & (wf_mean is not None and wf_mean.ndim == 2)
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
        _warn(
            messages,
            f"depth unknown for {k} of {n} unit(s): no waveforms, depth column or single electrode",
        )

    # ---- layers
    if boundaries is not None:
        layer = assign_layers(depth, boundaries)
    else:
        layer = np.full(n, "unknown", dtype="<U16")
        locations = _electrode_locations(meta, recording)
        if locations is not None:
            for i in np.flatnonzero(main >= 0):
                if main[i] < locations.size:
                    layer[i] = layer_from_location(locations[main[i]])
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


def _read_sorting(path: Path, meta: _NwbMeta, es_path: str | None, messages: list[str]):
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
            _warn(
                messages,
                f"{path.name} has several ElectricalSeries {meta.electrical_series}; using "
                f"{es_path!r} (choose with electrical_series_path=)",
            )
    kwargs: dict[str, Any] = {}
    if es_path is not None:
        kwargs["electrical_series_path"] = es_path
    elif meta.resolution is None:
        fs = meta.waveform_fs or 30000.0
        kwargs["sampling_frequency"] = fs
        _warn(
            messages,
            f"units table has no resolution and the file no ElectricalSeries; spike times are "
            f"read on a {fs:g} Hz grid",
        )
    try:
        sorting = read_nwb_sorting(path, **kwargs)
    except (KeyError, ValueError) as err:
        raise ValueError(f"SpikeInterface could not read the units of {path}: {err}") from err
    return sorting, es_path


def _recording_rows(path: Path, es_path: str | None, recording) -> np.ndarray | None:
    """Electrodes-table row of each channel of the file's own ElectricalSeries."""
    import h5py

    if es_path is None:
        return None
    with h5py.File(path, "r") as f:
        es = f[es_path]
        if "electrodes" not in es:
            return None
        rows = np.asarray(es["electrodes"][()], dtype=int)
    return rows if rows.size == recording.get_num_channels() else None


def _waveform_mean(sorting, meta: _NwbMeta | None, messages: list[str]) -> np.ndarray | None:
    if "waveform_mean" not in sorting.get_property_keys():
        return None
    wf = np.asarray(sorting.get_property("waveform_mean"), dtype=float)
    if wf.ndim not in (2, 3) or wf.shape[1] < 4:
        _warn(
            messages, f"waveform_mean has shape {wf.shape}; expected (units, samples[, channels])"
        )
        return None
    scale = 1e6
    if meta is not None:
        if meta.waveform_scale is None:
            _warn(
                messages, f"waveform_mean unit {meta.waveform_unit!r} not recognised; assumed volts"
            )
        else:
            scale = meta.waveform_scale
    return wf * scale


def _ms_window(meta, wf_mean, wf_fs) -> tuple[float, float]:
    """Raw-path template window: that of waveform_mean when known, else 1 ms + 2 ms."""
    if meta is not None and meta.ms_before is not None and wf_mean is not None and wf_fs:
        total = wf_mean.shape[1] / wf_fs * 1e3
        return meta.ms_before, max(total - meta.ms_before, 0.5)
    return 1.0, 2.0


def _nbefore(meta, wf_fs) -> int | None:
    if meta is not None and meta.ms_before is not None and wf_fs:
        return int(round(meta.ms_before * 1e-3 * wf_fs))
    return None


def _channel_geometry(meta, recording, wf_mean, todo, messages):
    """Channel positions and each unit's waveform channels for the waveform_mean path."""
    if meta is None:
        xy = recording.get_channel_locations()[:, :2] if recording is not None else None
        if wf_mean.ndim == 3 and xy is not None and wf_mean.shape[2] != xy.shape[0]:
            _warn(messages, "waveform_mean channels do not match the recording's; no locations")
            xy = None
        return xy, None
    xy = meta.electrodes_xy
    if xy is None:
        _warn(messages, "the electrodes table has no rel_x/rel_y; unit locations unknown")
    chans = None
    k = wf_mean.shape[2] if wf_mean.ndim == 3 else 1
    if meta.unit_electrodes is not None:
        sel = [meta.unit_electrodes[i] for i in todo]
        if all(len(c) == k for c in sel):
            chans = sel
        elif wf_mean.ndim == 3:
            _warn(
                messages,
                f"units' electrodes lists do not match waveform_mean's {k} channels; assumed "
                "the electrodes table order",
            )
    if chans is None and xy is not None and wf_mean.ndim == 3:
        if xy.shape[0] != k:
            _warn(
                messages,
                f"waveform_mean has {k} channels but the electrodes table {xy.shape[0]} rows and "
                "the units have no matching electrodes column; unit locations unknown",
            )
            return None, None
        chans = [np.arange(k)] * len(todo)
    return xy, chans


def _depth_property(sorting, depth_column: str | None) -> np.ndarray | None:
    keys = sorting.get_property_keys()
    if depth_column is not None:
        if depth_column not in keys:
            raise ValueError(
                f"depth_column={depth_column!r} is not a units column; available: {sorted(keys)}"
            )
        name = depth_column
    else:
        name = next((c for c in _DEPTH_COLUMNS if c in keys), None)
        if name is None:
            return None
    try:
        values = np.asarray(sorting.get_property(name), dtype=float)
    except (TypeError, ValueError):
        raise ValueError(f"depth column {name!r} is not numeric") from None
    if values.ndim != 1:
        raise ValueError(f"depth column {name!r} must hold one number per unit; got {values.shape}")
    return values


def _electrode_locations(meta, recording) -> np.ndarray | None:
    if meta is not None:
        return meta.electrode_location
    if recording is not None:
        for key in ("location", "brain_area"):
            if key in recording.get_property_keys():
                return _decode(recording.get_property(key))
    return None


# --------------------------------------------------------------------------- writing


def unit_columns(info: UnitInfo, include_margin: bool = True) -> list[UnitColumn]:
    """The documented ``units`` columns of a :class:`UnitInfo` (row order).

    ``trough_to_peak_ms``, ``cell_type``, ``depth_um``, ``layer`` (descriptions from
    :data:`nwb_subspace.unit_columns.UNIT_COLUMNS`) and, with ``include_margin``,
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
    from .writer import write_results

    return write_results(
        path, units_result_set(info, include_margin), run_name, overwrite=overwrite, output=output
    )
