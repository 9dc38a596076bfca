"""The ``waveform_mean`` path of :func:`~nwb_subspace.io.units.reader.read_units`.

The ``waveform_mean`` column of the ``units`` table (volts in NWB, rescaled to µV) or a
sorting property of that name: a SpikeInterface ``Templates`` object over the electrodes'
``rel_x``/``rel_y``, the trough/peak detector on the main channel, and
``compute_monopolar_triangulation`` on a sparse copy.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from nwb_subspace.io.units.measure import (
    _main_channel_waveforms,
    _make_probe,
    _Measured,
    _trough_to_peak_si,
    _warn,
)
from nwb_subspace.io.units.nwb import _NwbMeta
from nwb_subspace.units.celltypes import CellTypeParams


def _waveform_mean(sorting: Any, meta: _NwbMeta | None, messages: list[str]) -> np.ndarray | None:
    """The sorting's ``waveform_mean`` property in µV, or None when absent or malformed."""
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


def _ms_window(
    meta: _NwbMeta | None, wf_mean: np.ndarray | None, wf_fs: float | None
) -> tuple[float, float]:
    """Raw-path template window: that of waveform_mean when known, else 1 ms + 2 ms."""
    if meta is not None and meta.ms_before is not None and wf_mean is not None and wf_fs:
        total = wf_mean.shape[1] / wf_fs * 1e3
        return meta.ms_before, max(total - meta.ms_before, 0.5)
    return 1.0, 2.0


def _nbefore(meta: _NwbMeta | None, wf_fs: float | None) -> int | None:
    """Samples before the peak in ``waveform_mean``, when the file says."""
    if meta is not None and meta.ms_before is not None and wf_fs:
        return int(round(meta.ms_before * 1e-3 * wf_fs))
    return None


def _channel_geometry(
    meta: _NwbMeta | None,
    recording: Any,
    wf_mean: np.ndarray,
    todo: np.ndarray,
    messages: list[str],
) -> tuple[np.ndarray | None, list[np.ndarray] | None]:
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
    local_main, wf = _main_channel_waveforms(wf_mean)
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


def _localize(templates: Any, radius_um: float = 75.0) -> np.ndarray:
    """Monopolar triangulation (x, y) of a SpikeInterface Templates/SortingAnalyzer."""
    from spikeinterface.postprocessing.localization_tools import compute_monopolar_triangulation

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        loc = compute_monopolar_triangulation(templates, radius_um=radius_um)
    return np.asarray(loc)[:, :2]
