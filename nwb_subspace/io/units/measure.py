"""What the waveform paths of :func:`~nwb_subspace.io.units.reader.read_units` share.

The warning class and how messages are recorded, SpikeInterface job options, the
:class:`MeasuredWaveforms` output of a waveform path, main-channel selection and the trough-to-peak
detector (SpikeInterface's, on the main channel upsampled; positive-going spikes flipped).
"""

from __future__ import annotations

import contextlib
import sys
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from nwb_subspace.units.celltypes import is_positive_going

__all__ = [
    "MeasuredWaveforms",
    "UnitsReadWarning",
    "h5_strings",
    "h5_text",
    "main_channel_waveforms",
    "make_probe",
    "quiet_spikeinterface",
    "record_warning",
    "spikeinterface_job_kwargs",
    "trough_to_peak_si",
]

_DETECTOR = {  # the defaults of SpikeInterface's template_metrics extension (0.105)
    "min_thresh_detect_peaks_troughs": 0.3,
    "edge_exclusion_ms": 0.09,
    "min_peak_trough_distance_ratio": 0.2,
    "min_extremum_distance_samples": 3,
}


class UnitsReadWarning(UserWarning):
    """Something in the input limited what :func:`read_units` could measure."""


def record_warning(messages: list[str], text: str) -> None:
    """Record ``text`` in ``messages`` and issue it as a :class:`UnitsReadWarning`, attributed
    to the first caller outside :mod:`nwb_subspace.io.units` (the one that called
    :func:`~nwb_subspace.io.units.reader.read_units`), however deep the step that warns."""
    messages.append(text)
    level, frame = 2, sys._getframe(1)
    while frame is not None and frame.f_globals.get("__name__", "").startswith(__package__):
        level, frame = level + 1, frame.f_back
    warnings.warn(text, UnitsReadWarning, stacklevel=level)


@contextlib.contextmanager
def quiet_spikeinterface() -> Iterator[None]:
    """Silence SpikeInterface progress bars for the duration of a computation."""
    from spikeinterface.core import get_global_job_kwargs, set_global_job_kwargs

    old = get_global_job_kwargs()
    set_global_job_kwargs(progress_bar=False)
    try:
        yield
    finally:
        set_global_job_kwargs(**old)


def spikeinterface_job_kwargs(job_kwargs: Mapping | None) -> dict:
    """SpikeInterface job options: ours (one job, no progress bar) updated by the user's."""
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


def h5_text(value: Any) -> str:
    """An HDF5 string (bytes or str) as ``str``."""
    return value.decode() if isinstance(value, bytes) else str(value)


def h5_strings(values: Any) -> np.ndarray:
    """An array of HDF5 strings as a numpy ``str`` array."""
    return np.array([h5_text(v) for v in values])


def _main_channels(templates: np.ndarray) -> np.ndarray:
    """Channel of largest peak-to-peak amplitude, per unit (-1 for all-NaN units)."""
    ptp = np.ptp(np.nan_to_num(templates), axis=1)
    main = np.argmax(ptp, axis=1)
    main[ptp.max(axis=1) == 0] = -1
    return main


def main_channel_waveforms(templates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Main channel per unit and the (n_units, n_samples) waveforms on it.

    ``templates`` is (n_units, n_samples, n_channels); units without a main channel (-1)
    get channel 0's waveform.
    """
    main = _main_channels(templates)
    return main, templates[np.arange(templates.shape[0]), :, np.maximum(main, 0)]


def trough_to_peak_si(waveforms: np.ndarray, fs: float, upsample: int) -> np.ndarray:
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


def make_probe(positions: np.ndarray) -> Any:
    """A 2-D probeinterface ``Probe`` with 5 µm round contacts at ``positions`` (µm)."""
    import probeinterface

    probe = probeinterface.Probe(ndim=2, si_units="um")
    probe.set_contacts(positions=positions, shapes="circle", shape_params={"radius": 5})
    probe.set_device_channel_indices(np.arange(positions.shape[0]))
    return probe


@dataclass
class MeasuredWaveforms:
    """Output of one waveform path, for the units it covers."""

    units: np.ndarray  # indices into the unit list
    waveform: np.ndarray  # (n, n_samples) µV, main channel
    fs: float
    trough_to_peak_ms: np.ndarray
    main_channel: np.ndarray  # electrode row / channel index
    location: np.ndarray  # (n, 2), NaN where unknown
    name: str = "waveform_mean"
