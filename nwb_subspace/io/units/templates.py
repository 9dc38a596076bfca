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
    MeasuredWaveforms,
    main_channel_waveforms,
    make_probe,
    record_warning,
    trough_to_peak_si,
)
from nwb_subspace.io.units.nwb import NwbMeta
from nwb_subspace.units.celltypes import CellTypeParams

__all__ = [
    "WAVEFORM_MS",
    "channel_geometry",
    "check_waveform_shape",
    "samples_before_peak",
    "stored_mean_waveforms",
    "template_window_ms",
    "waveform_mean_uv",
]


#: Plausible duration of a stored mean waveform, in ms (samples = waveform_rate x duration).
WAVEFORM_MS = (0.5, 20.0)


def _expected_channels(meta: NwbMeta | None, n_recording_channels: int | None) -> set[int]:
    """Channel counts a (units, samples, channels) waveform_mean can have."""
    out: set[int] = set()
    if meta is not None:
        if meta.electrodes_xy is not None:
            out.add(int(meta.electrodes_xy.shape[0]))
        if meta.unit_electrodes:
            counts = {len(c) for c in meta.unit_electrodes}
            if len(counts) == 1 and counts != {0}:
                out |= counts
    elif n_recording_channels is not None:
        out.add(int(n_recording_channels))
    return out


def check_waveform_shape(
    shape: tuple[int, ...],
    meta: NwbMeta | None,
    fs: float | None,
    n_recording_channels: int | None = None,
) -> tuple[bool, str | None]:
    """Whether ``waveform_mean`` of ``shape`` is (units, samples, channels), transposed, or wrong.

    The channel axis must match the electrodes table (rows) or the units' ``electrodes``
    column (electrodes per unit), or the recording's channels for a sorting; the sample
    axis must span :data:`WAVEFORM_MS` at the waveform rate ``fs`` (when known).

    Parameters
    ----------
    shape : tuple of int
        Shape of ``waveform_mean``.
    meta : NwbMeta or None
        The file's metadata (None for a SpikeInterface sorting).
    fs : float or None
        ``waveform_rate`` in Hz.
    n_recording_channels : int, optional
        Channels of the recording, for a sorting without NWB metadata.

    Returns
    -------
    transpose : bool
        True when the shape is unambiguously (units, channels, samples): swap the last axes.
    problem : str or None
        Why the shape cannot be used (naming the shape found and the shapes expected), or
        None.
    """
    lo, hi = WAVEFORM_MS

    def samples_ok(k: int) -> bool:
        return fs is None or lo <= k / fs * 1e3 <= hi

    want = (
        f"{lo:g}-{hi:g} ms at waveform_rate {fs:g} Hz = {int(np.ceil(lo * fs / 1e3))}-"
        f"{int(hi * fs / 1e3)} samples"
        if fs
        else "a few ms of samples"
    )
    if len(shape) == 2:
        if samples_ok(shape[1]):
            return False, None
        dur = shape[1] / fs * 1e3
        return False, (
            f"waveform_mean has shape {tuple(shape)}: {shape[1]} samples = {dur:.3g} ms, "
            f"expected (units, samples) with {want}"
        )
    if len(shape) != 3:
        return False, (
            f"waveform_mean has shape {tuple(shape)}; expected (units, samples) or "
            "(units, samples, channels)"
        )
    chans = _expected_channels(meta, n_recording_channels)
    a, b = int(shape[1]), int(shape[2])
    upright = samples_ok(a) and (not chans or b in chans)
    flipped = samples_ok(b) and (a in chans if chans else not samples_ok(a))
    if upright:
        return False, None
    if flipped:
        return True, None
    where = []
    if meta is not None and meta.electrodes_xy is not None:
        where.append(f"the electrodes table has {meta.electrodes_xy.shape[0]} rows")
    if meta is not None and meta.unit_electrodes:
        counts = sorted({len(c) for c in meta.unit_electrodes})
        where.append(f"the units' electrodes column lists {counts} electrode(s) per unit")
    elif meta is not None:
        where.append("the units table has no electrodes column")
    if n_recording_channels is not None:
        where.append(f"the recording has {n_recording_channels} channels")
    expected = " or ".join(f"(units, samples, {c})" for c in sorted(chans)) or (
        "(units, samples, channels)"
    )
    axes = f"{a} samples = {a / fs * 1e3:.3g} ms, " if fs else ""
    return False, (
        f"waveform_mean has shape {tuple(shape)} ({axes}{b} channels), which matches neither "
        f"{expected} nor its transpose, with {want}"
        + (f" ({'; '.join(where)})" if where else "")
        + "; store it as (units, samples, channels) over the electrodes table's rows, or "
        "list each unit's channels in the units' electrodes column"
    )


def waveform_mean_uv(
    sorting: Any,
    meta: NwbMeta | None,
    messages: list[str],
    fs: float | None = None,
    recording: Any = None,
) -> np.ndarray | None:
    """The sorting's ``waveform_mean`` property in µV, (units, samples[, channels]).

    Transposed (with a warning) when it is unambiguously (units, channels, samples); None
    (with a warning) when malformed and a ``recording`` can give waveforms instead.

    Raises
    ------
    ValueError
        A malformed ``waveform_mean`` and no recording (:func:`check_waveform_shape`).
    """
    if "waveform_mean" not in sorting.get_property_keys():
        return None
    wf = np.asarray(sorting.get_property("waveform_mean"), dtype=float)
    n_rec = recording.get_num_channels() if recording is not None and meta is None else None
    transpose, problem = check_waveform_shape(wf.shape, meta, fs, n_rec)
    if problem is None and wf.shape[1] < 4:
        problem = f"waveform_mean has shape {wf.shape}; fewer than 4 samples"
    if problem is not None:
        if recording is None:
            raise ValueError(problem)
        record_warning(messages, f"{problem}; waveform_mean not used")
        return None
    if transpose:
        record_warning(
            messages,
            f"waveform_mean has shape {wf.shape}, (units, channels, samples) by its channel "
            f"count and waveform rate: transposed to (units, samples, channels)",
        )
        wf = wf.transpose(0, 2, 1)
    scale = 1e6
    if meta is not None:
        if meta.waveform_scale is None:
            record_warning(
                messages, f"waveform_mean unit {meta.waveform_unit!r} not recognised; assumed volts"
            )
        else:
            scale = meta.waveform_scale
    return wf * scale


def template_window_ms(
    meta: NwbMeta | None, wf_mean: np.ndarray | None, wf_fs: float | None
) -> tuple[float, float]:
    """Raw-path template window: that of waveform_mean when known, else 1 ms + 2 ms."""
    if meta is not None and meta.ms_before is not None and wf_mean is not None and wf_fs:
        total = wf_mean.shape[1] / wf_fs * 1e3
        return meta.ms_before, max(total - meta.ms_before, 0.5)
    return 1.0, 2.0


def samples_before_peak(meta: NwbMeta | None, wf_fs: float | None) -> int | None:
    """Samples before the peak in ``waveform_mean``, when the file says."""
    if meta is not None and meta.ms_before is not None and wf_fs:
        return int(round(meta.ms_before * 1e-3 * wf_fs))
    return None


def channel_geometry(
    meta: NwbMeta | None,
    recording: Any,
    wf_mean: np.ndarray,
    todo: np.ndarray,
    messages: list[str],
) -> tuple[np.ndarray | None, list[np.ndarray] | None]:
    """Channel positions and each unit's waveform channels for the waveform_mean path."""
    if meta is None:
        xy = recording.get_channel_locations()[:, :2] if recording is not None else None
        if wf_mean.ndim == 3 and xy is not None and wf_mean.shape[2] != xy.shape[0]:
            record_warning(
                messages, "waveform_mean channels do not match the recording's; no locations"
            )
            xy = None
        return xy, None
    xy = meta.electrodes_xy
    if xy is None:
        record_warning(messages, "the electrodes table has no rel_x/rel_y; unit locations unknown")
    chans = None
    k = wf_mean.shape[2] if wf_mean.ndim == 3 else 1
    if meta.unit_electrodes is not None:
        sel = [meta.unit_electrodes[i] for i in todo]
        if all(len(c) == k for c in sel):
            chans = sel
        elif wf_mean.ndim == 3:
            record_warning(
                messages,
                f"units' electrodes lists do not match waveform_mean's {k} channels; assumed "
                "the electrodes table order",
            )
    if chans is None and xy is not None and wf_mean.ndim == 3:
        if xy.shape[0] != k:
            record_warning(
                messages,
                f"waveform_mean has {k} channels but the electrodes table {xy.shape[0]} rows and "
                "the units have no matching electrodes column; unit locations unknown",
            )
            return None, None
        chans = [np.arange(k)] * len(todo)
    return xy, chans


def stored_mean_waveforms(
    wf_mean: np.ndarray,
    units: np.ndarray,
    fs: float,
    channel_xy: np.ndarray | None,
    unit_channels: list[np.ndarray] | None,
    nbefore: int | None,
    params: CellTypeParams,
    messages: list[str],
) -> MeasuredWaveforms:
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
        ttp = trough_to_peak_si(wf, fs, params.upsample)
        return MeasuredWaveforms(units, wf, fs, ttp, main, loc)

    k = wf_mean.shape[2]
    if unit_channels is None:  # waveform channels = channels 0..k-1
        unit_channels = [np.arange(k)] * n
    local_main, wf = main_channel_waveforms(wf_mean)
    main = np.array(
        [c[m] if m >= 0 else -1 for c, m in zip(unit_channels, local_main, strict=True)]
    )
    ttp = trough_to_peak_si(wf, fs, params.upsample)
    loc = np.full((n, 2), np.nan)
    if channel_xy is None:
        return MeasuredWaveforms(units, wf, fs, ttp, main, loc)
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
        probe=make_probe(xy),
    ).to_sparse(sparse)
    if valid.any():
        sel = tpl.select_units(ids[valid]) if not valid.all() else tpl
        loc[valid] = _localize(sel)
    return MeasuredWaveforms(units, wf, fs, ttp, main, loc)


def _localize(templates: Any, radius_um: float = 75.0) -> np.ndarray:
    """Monopolar triangulation (x, y) of a SpikeInterface Templates/SortingAnalyzer."""
    from spikeinterface.postprocessing.localization_tools import compute_monopolar_triangulation

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        loc = compute_monopolar_triangulation(templates, radius_um=radius_um)
    return np.asarray(loc)[:, :2]
