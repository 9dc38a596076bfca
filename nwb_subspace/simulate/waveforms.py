"""Probe, unit positions, cortical layers and spike waveforms (via probeinterface/SpikeInterface).

Frames and signs
----------------
``rel_y`` (µm) is the distance along the linear probe from its tip (0, deepest contact);
larger ``rel_y`` is closer to the cortical surface. Layer boundaries follow docs/methods.md
("Cell types, depths and layers"), as depths below the L3/4 boundary (positive = deeper): BS/1 = -800 µm,
L3/4 = 0, L4/5 = 200, L6/WM = 800. With the L3/4 boundary at ``rel_y = l34``, a boundary at
depth ``d`` sits at ``rel_y = l34 - d``. Layer groups: ``"13"`` between BS/1 and L3/4,
``"44"`` between L3/4 and L4/5, ``"56"`` between L4/5 and L6/WM.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "LAYER_DEPTHS_UM",
    "PTP_RANGE_UV",
    "assign_layers",
    "layer_boundaries",
    "make_probe",
    "make_templates",
    "raw_traces",
    "trough_to_peak",
]

#: Nominal boundary depths below the L3/4 boundary (µm, positive = deeper).
LAYER_DEPTHS_UM = {"BS/1": -800.0, "L3/4": 0.0, "L4/5": 200.0, "L6/WM": 800.0}
_GROUPS = (("13", "BS/1", "L3/4"), ("44", "L3/4", "L4/5"), ("56", "L4/5", "L6/WM"))

#: Main-channel peak-to-peak amplitudes of simulated templates (µV), drawn uniformly.
PTP_RANGE_UV = (40.0, 200.0)


def make_probe(n_electrodes: int, pitch_um: float):
    """A single-shank linear probe (probeinterface), tip contact at ``rel_y = 0``."""
    import probeinterface

    probe = probeinterface.generate_linear_probe(num_elec=n_electrodes, ypitch=pitch_um)
    probe.set_device_channel_indices(np.arange(n_electrodes))
    return probe


def layer_boundaries(l34_rel_y: float) -> dict[str, float]:
    """Boundary positions in the ``rel_y`` frame (µm) for an L3/4 boundary at ``l34_rel_y``."""
    return {name: float(l34_rel_y - d) for name, d in LAYER_DEPTHS_UM.items()}


def assign_layers(rel_y: np.ndarray, boundaries: dict[str, float]) -> np.ndarray:
    """Layer group (``"13"``, ``"44"``, ``"56"`` or ``"outside"``) of each ``rel_y``."""
    rel_y = np.asarray(rel_y, dtype=float)
    out = np.full(rel_y.shape, "outside", dtype="<U7")
    for group, upper, lower in _GROUPS:
        inside = (rel_y <= boundaries[upper]) & (rel_y > boundaries[lower])
        out[inside] = group
    return out


def draw_positions(
    rng: np.random.Generator, n_units: int, probe_top_um: float, boundaries: dict[str, float]
) -> np.ndarray:
    """Unit positions (x, rel_y, z) in µm: within cortex and the probe span, off the shank."""
    low = max(boundaries["L6/WM"], 0.0) + 15.0
    high = min(boundaries["BS/1"], probe_top_um) - 15.0
    y = rng.uniform(low, high, n_units)
    x = rng.uniform(-20.0, 20.0, n_units)
    z = rng.uniform(5.0, 20.0, n_units)
    return np.column_stack([x, y, z])


def make_templates(
    rng: np.random.Generator,
    probe,
    positions: np.ndarray,
    narrow: np.ndarray,
    fs: float,
    ms_before: float = 1.0,
    ms_after: float = 3.0,
    ptp_range_uv: tuple[float, float] = PTP_RANGE_UV,
) -> tuple[np.ndarray, int]:
    """Spike templates from SpikeInterface ``generate_templates``, in µV.

    Narrow units get a fast repolarisation (0.135-0.20 ms; trough-to-peak about 0.15-0.3 ms),
    broad units a slow one (0.55-0.78 ms; about 0.5-0.8 ms). Each template is then scaled
    so that its main channel (largest peak-to-peak) spans a peak-to-peak amplitude drawn
    uniformly in ``ptp_range_uv``: scaling changes neither the shape (trough-to-peak
    duration) nor the spread over channels (unit location), but keeps every unit visible
    above the noise (``generate_templates`` alone gives some units ~1 µV).

    Parameters
    ----------
    ptp_range_uv : (float, float), default :data:`PTP_RANGE_UV`
        Range of main-channel peak-to-peak amplitudes, in µV (``0 < low <= high``).

    Returns
    -------
    templates : ndarray of float32, shape (n_units, n_samples, n_electrodes)
        Amplitudes in µV.
    nbefore : int
        Samples before the trough.
    """
    from spikeinterface.generation import generate_templates

    low, high = (float(v) for v in ptp_range_uv)
    if not 0 < low <= high:
        raise ValueError(
            f"ptp_range_uv must be (low, high) with 0 < low <= high µV; got {ptp_range_uv!r}, "
            f"e.g. {PTP_RANGE_UV}"
        )
    n = positions.shape[0]
    repol = np.where(narrow, rng.uniform(0.135, 0.20, n), rng.uniform(0.55, 0.78, n))
    params = {
        "repolarization_ms": repol,
        "alpha": rng.uniform(150.0, 450.0, n),
        "depolarization_ms": rng.uniform(0.09, 0.14, n),
    }
    templates = generate_templates(
        probe.contact_positions,
        positions,
        fs,
        ms_before,
        ms_after,
        seed=int(rng.integers(2**31)),
        unit_params=params,
    )
    ptp = np.ptp(templates, axis=1).max(axis=1)
    target = rng.uniform(low, high, n)
    templates = templates * (target / np.where(ptp > 0, ptp, 1.0))[:, None, None]
    return templates.astype(np.float32), int(round(ms_before * fs / 1000.0))


def trough_to_peak(templates: np.ndarray, fs: float) -> tuple[np.ndarray, np.ndarray]:
    """Trough-to-peak duration (s) on each template's main channel, and that channel.

    The main channel is the one with the largest peak-to-peak amplitude; the peak is the
    maximum after the trough.
    """
    main = np.argmax(np.ptp(templates, axis=1), axis=1)
    out = np.empty(templates.shape[0])
    for u, ch in enumerate(main):
        w = templates[u, :, ch]
        trough = int(np.argmin(w))
        out[u] = int(np.argmax(w[trough:])) / fs
    return out, main


def raw_traces(
    rng: np.random.Generator,
    probe,
    templates_uv: np.ndarray,
    nbefore: int,
    spike_times: list[np.ndarray],
    duration_s: float,
    fs: float,
    noise_uv: float,
) -> np.ndarray:
    """A SpikeInterface ground-truth recording (noise + injected templates), in µV.

    Returns
    -------
    ndarray of float32, shape (n_samples, n_electrodes)
    """
    from spikeinterface.core import NumpySorting
    from spikeinterface.generation import InjectTemplatesRecording, NoiseGeneratorRecording

    n_samples = int(round(duration_s * fs))
    n_ch = templates_uv.shape[2]
    margin = templates_uv.shape[1]
    samples, labels = [], []
    for u, times in enumerate(spike_times):
        s = np.round(np.asarray(times) * fs).astype(np.int64)
        s = s[(s >= margin) & (s < n_samples - margin)]
        samples.append(s)
        labels.append(np.full(s.size, u))
    samples_all = np.concatenate(samples)
    order = np.argsort(samples_all, kind="stable")
    sorting = NumpySorting.from_samples_and_labels(
        [samples_all[order]], [np.concatenate(labels)[order]], fs, unit_ids=np.arange(len(samples))
    )
    noise = NoiseGeneratorRecording(
        num_channels=n_ch,
        sampling_frequency=fs,
        durations=[n_samples / fs],
        noise_levels=float(noise_uv),
        dtype="float32",
        seed=int(rng.integers(2**31)),
    )
    rec = InjectTemplatesRecording(
        sorting, templates_uv, nbefore=nbefore, parent_recording=noise, num_samples=[n_samples]
    )
    return rec.get_traces(segment_index=0).astype(np.float32)
