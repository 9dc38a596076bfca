"""Simulate one recording site and write it as a standard NWB file plus a ground-truth sidecar.

File layout (what readers can rely on)
--------------------------------------
- the sound, as ``SimulationConfig.layout`` says:

  - ``"continuous"``: ``stimulus/presentation/sound``, a ``TimeSeries`` of the whole
    session's sound, rate ``audio_fs``, starting at 0 s; silences between presentations;
  - ``"per-presentation"``: ``stimulus/presentation/sound_0001``, ``sound_0002``, ... (in
    time order), one ndx-sound ``AcousticWaveformSeries`` per presentation with
    ``starting_time`` = its onset;
  - ``"templates"``: ``stimulus/templates/<sound id>``, one ``TimeSeries`` per distinct
    sound (``starting_time`` 0), played at the trials' ``start_time``;

  samples are float32 in a.u. (``sound_format="float"``), or int16 scaled so that the
  session's loudest sample is 32767, without a ``conversion`` factor (``"int16"``). The
  analysis spectrogram is level-free, so every layout and format gives the same one;
- ``intervals/trials``: one row per presentation, in time order: ``start_time``,
  ``stop_time`` (sound on/off), ``sound_id`` (``"est_000"``..., ``"val_00"``...),
  ``is_validation`` (bool) and ``repeat`` (0-based presentation index of that sound).
- ``electrodes``: one row per contact of a linear probe: ``location``, ``group``, ``rel_x``,
  ``rel_y`` (µm, tip at 0, larger = closer to the surface).
- ``units``: ``spike_times`` (s, on a ``waveform_fs`` grid), ``waveform_mean`` (units,
  samples, electrodes) in volts over all electrodes in table order, ``electrodes`` (all
  rows), ``unit_name``; ``waveform_rate`` and ``resolution`` set.
- ``acquisition/ElectricalSeries`` (``raw=True`` only): the first ``raw_s`` seconds as a
  SpikeInterface ground-truth recording, int16 with ``conversion`` to volts.
"""

from __future__ import annotations

import json
import os
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np

from nwb_subspace.simulate.neurons import poisson_spikes
from nwb_subspace.simulate.population import draw_population
from nwb_subspace.simulate.presets import SimulationConfig, resolve_config
from nwb_subspace.simulate.sounds import synthesize_sequence
from nwb_subspace.simulate.truth import GroundTruth, truth_path_for
from nwb_subspace.simulate.waveforms import (
    assign_layers,
    draw_positions,
    layer_boundaries,
    make_probe,
    make_templates,
    raw_traces,
    trough_to_peak,
)
from nwb_subspace.stimulus.spectrogram import SpectrogramSettings, compute_spectrogram

__all__ = ["plan_presentations", "presented_samples", "simulate_session", "truth_spectrogram"]

_RAW_LSB_V = 0.195e-6  # volts per int16 step (Intan-like)
_MS_BEFORE = 1.0


def plan_presentations(rng: np.random.Generator, cfg: SimulationConfig) -> list[dict]:
    """Presentation order and timing of ``cfg.design`` (see :class:`SimulationConfig`).

    Returns a list of dicts (``sound_id``, ``is_validation``, ``repeat``, ``start``,
    ``n_samples``) in time order; ``start`` is a sample index aligned to spectrogram bins and
    preceded by at least ``gap_s`` of silence. ``is_validation`` is the mixed design's
    label (False for every presentation of the other designs).
    """
    fs = cfg.audio_fs
    hop = int(round(cfg.spectrogram.bin_s * fs))
    if cfg.design == "all-repeated":
        items = [
            (f"snd_{i:03d}", False, r, cfg.sequence_s)
            for i in range(cfg.n_repeated_sounds)
            for r in range(cfg.repeats)
        ]
    else:
        items = [(f"est_{i:03d}", False, 0, cfg.sequence_s) for i in range(cfg.n_estimation)]
        n_rep = 1 if cfg.design == "none-repeated" else cfg.validation_repeats
        for v in range(cfg.n_validation):
            items += [
                (f"val_{v:02d}", cfg.design == "mixed", r, cfg.validation_s) for r in range(n_rep)
            ]
    order = rng.permutation(len(items))
    gap = int(np.ceil(cfg.gap_s * fs / hop)) * hop
    t, plan = 0, []
    for i in order:
        sound_id, is_val, _, dur = items[i]
        n = int(round(dur * fs / hop)) * hop
        t += gap
        plan.append({"sound_id": sound_id, "is_validation": is_val, "start": t, "n_samples": n})
        t += n
    seen: dict[str, int] = {}
    for p in plan:  # repeat index in presentation order
        p["repeat"] = seen.get(p["sound_id"], 0)
        seen[p["sound_id"]] = p["repeat"] + 1
    return plan


def _session_sound(rng: np.random.Generator, cfg: SimulationConfig, plan: list[dict]) -> np.ndarray:
    fs = cfg.audio_fs
    hop = int(round(cfg.spectrogram.bin_s * fs))
    gap = int(np.ceil(cfg.gap_s * fs / hop)) * hop
    wave = np.zeros(plan[-1]["start"] + plan[-1]["n_samples"] + gap, dtype=np.float32)
    sounds: dict[str, np.ndarray] = {}
    for sid in sorted({p["sound_id"] for p in plan}):
        n = next(p["n_samples"] for p in plan if p["sound_id"] == sid)
        sounds[sid] = synthesize_sequence(rng, n / fs, fs, cfg.sound_rms)[:n]
    for p in plan:
        wave[p["start"] : p["start"] + p["n_samples"]] = sounds[p["sound_id"]]
    return wave


def presented_samples(plan: list[dict]) -> np.ndarray:
    """``[start, stop)`` sample indices of every presentation of ``plan``, shape (n, 2)."""
    return np.array([[p["start"], p["start"] + p["n_samples"]] for p in plan], dtype=np.int64)


def truth_spectrogram(
    wave: np.ndarray, fs: float, settings: SpectrogramSettings, plan: list[dict]
) -> Any:
    """The spectrogram the ground-truth rates are computed on: the one the analysis computes
    from the written file (with ``level="rms"``, scaled by the RMS over the presented
    samples, whatever ``sound_rms`` is)."""
    return compute_spectrogram(wave, fs, settings, presented=presented_samples(plan))


# long: the session recipe in seed-stream order (plan, sound, units, spikes, waveforms, raw)
def simulate_session(
    path: str | Path,
    preset: str | SimulationConfig = "tiny",
    seed: int = 0,
    raw: bool = False,
    overwrite: bool = False,
) -> tuple[Path, Path]:
    """Simulate one auditory-cortex recording site; write NWB + ground truth.

    Parameters
    ----------
    path : str or Path
        NWB file to write. The ground truth goes to ``<stem>.truth.npz`` beside it.
    preset : str or SimulationConfig, default "tiny"
        A name in :data:`PRESETS` (``"tiny"``, ``"small"``, ``"paper"``) or a config.
    seed : int, default 0
        Everything (sounds, neurons, spikes, waveforms) is deterministic from it.
    raw : bool, default False
        Also write ``raw_s`` seconds of raw voltage as an ``ElectricalSeries``.
    overwrite : bool, default False
        Replace existing files; otherwise an existing ``path`` raises ``FileExistsError``.

    Returns
    -------
    (nwb_path, truth_path) : tuple of Path
    """
    cfg = resolve_config(preset)
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    path = Path(path)
    truth_path = truth_path_for(path)
    if not overwrite:
        for p in (path, truth_path):
            if p.exists():
                raise FileExistsError(f"{p} exists; pass overwrite=True to replace it")
    if not path.parent.exists():
        raise FileNotFoundError(f"folder {path.parent} does not exist; create it first")

    streams = [np.random.default_rng(s) for s in np.random.SeedSequence(int(seed)).spawn(6)]
    rng_plan, rng_sound, rng_units, rng_spikes, rng_wave, rng_raw = streams
    plan = plan_presentations(rng_plan, cfg)
    wave = _session_sound(rng_sound, cfg, plan)
    spec = truth_spectrogram(wave, cfg.audio_fs, cfg.spectrogram, plan)

    pop = draw_population(rng_units, cfg, spec.data.astype(np.float64))
    probe = make_probe(cfg.n_electrodes, cfg.pitch_um)
    boundaries = layer_boundaries(cfg.l34_rel_y)
    top = float(probe.contact_positions[:, 1].max())
    positions = draw_positions(rng_wave, cfg.n_units, top, boundaries)
    narrow = pop["cell_type"] == "narrow"
    templates_uv, nbefore = make_templates(rng_wave, probe, positions, narrow, cfg.waveform_fs)
    ttp, main = trough_to_peak(templates_uv, cfg.waveform_fs)

    names = np.array([f"unit_{u:03d}" for u in range(cfg.n_units)])
    meta = {
        "seed": int(seed),
        "preset": cfg.name,
        "config": cfg.to_dict(),
        "spectrogram": spec.settings,
        "audio_fs": float(cfg.audio_fs),
        "bin_s": 1.0 / spec.rate,
        "n_lags": cfg.n_lags,
        "subspace": cfg.subspace,
        "tiling": cfg.tiling,
        "refractory_s": cfg.refractory_s,
        "layer_boundaries": boundaries,
        "l34_rel_y": float(cfg.l34_rel_y),
        "rel_y_convention": "um from probe tip; larger = closer to the surface",
        "depth_convention": "um below the L3/4 boundary; positive = deeper",
        "nwb_file": path.name,
    }
    truth = GroundTruth(
        unit_names=names,
        trough_to_peak_s=ttp,
        position_um=positions,
        depth_um=cfg.l34_rel_y - positions[:, 1],
        layer=assign_layers(positions[:, 1], boundaries),
        main_electrode=main.astype(np.int64),
        frequencies=spec.frequencies,
        meta=meta,
        **pop,
    )
    rates = truth.rate(spec.data)
    spikes = [
        poisson_spikes(
            rng_spikes,
            rates[:, u],
            1.0 / spec.rate,
            cfg.refractory_s,
            spec.starting_time,
            1.0 / cfg.waveform_fs,
        )
        for u in range(cfg.n_units)
    ]
    raw_data = None
    if raw:
        raw_uv = raw_traces(
            rng_raw,
            probe,
            templates_uv,
            nbefore,
            spikes,
            min(cfg.raw_s, wave.size / cfg.audio_fs),
            cfg.waveform_fs,
            cfg.noise_uv,
        )
        raw_data = np.clip(np.round(raw_uv * 1e-6 / _RAW_LSB_V), -32768, 32767).astype(np.int16)

    nwbfile = _build_nwbfile(cfg, seed, wave, plan, probe, names, spikes, templates_uv, raw_data)
    _write_atomic(nwbfile, path)
    truth.save(truth_path)
    return path, truth_path


def _design_text(cfg: SimulationConfig) -> str:
    """One sentence on the presentation design, for ``experiment_description``."""
    if cfg.design == "all-repeated":
        how = f"every sound presented {cfg.repeats} times"
    elif cfg.design == "none-repeated":
        how = "every sound presented once"
    else:
        how = (
            "estimation sounds presented once, validation sounds repeated "
            f"{cfg.validation_repeats} times"
        )
    return f"Encoding-model benchmark: {how}, interleaved in random order."


# long: every table and series of the simulated NWB file, in one place and in file order
def _build_nwbfile(
    cfg: SimulationConfig,
    seed: int,
    wave: np.ndarray,
    plan: list[dict],
    probe: Any,
    names: np.ndarray,
    spikes: list[np.ndarray],
    templates_uv: np.ndarray,
    raw_data: np.ndarray | None,
) -> Any:
    """Assemble the in-memory ``pynwb.NWBFile`` (layout in the module docstring)."""
    from hdmf.backends.hdf5 import H5DataIO
    from pynwb import NWBFile
    from pynwb.ecephys import ElectricalSeries
    from pynwb.file import Subject
    from pynwb.misc import Units

    fs = cfg.audio_fs
    ident = uuid.uuid5(
        uuid.NAMESPACE_URL,
        f"nwb-subspace/simulate/{json.dumps(cfg.to_dict(), sort_keys=True)}/{seed}",
    )
    nwbfile = NWBFile(
        session_description=(
            f"Simulated recording of one auditory-cortex site (preset {cfg.name!r}, seed {seed}): "
            f"{cfg.n_units} units on a {cfg.n_electrodes}-channel linear probe listening to "
            "natural-like sounds; ground truth in the .truth.npz sidecar."
        ),
        identifier=str(ident),
        session_start_time=datetime(2024, 3, 4, 10, 0, 0, tzinfo=timezone(timedelta(hours=-8))),
        session_id=f"sim-{cfg.name}-seed{seed}",
        experimenter=["Simulator, Nwb-Subspace"],
        experiment_description=_design_text(cfg),
        institution="nwb-subspace (simulated data)",
        lab="nwb-subspace simulation",
        keywords=["auditory cortex", "natural sounds", "simulation", "ground truth", "ferret"],
        notes=json.dumps({"simulation_config": cfg.to_dict(), "seed": int(seed)}),
        stimulus_notes="Synthesised speech-like, vocalisation-like and environmental sounds.",
    )
    nwbfile.subject = Subject(
        subject_id=f"sim-ferret-{seed}",
        species="http://purl.obolibrary.org/obo/NCBITaxon_9669",
        sex="F",
        age="P1Y",
        description="Simulated adult female domestic ferret (Mustela putorius furo).",
    )
    device = nwbfile.create_device(
        name="probe",
        description=(
            f"Simulated single-shank linear silicon probe, {cfg.n_electrodes} contacts, "
            f"{cfg.pitch_um} um pitch"
        ),
    )
    group = nwbfile.create_electrode_group(
        name="shank0", description="single shank", location="auditory cortex", device=device
    )
    for x, y in probe.contact_positions:
        nwbfile.add_electrode(
            group=group, location="auditory cortex", rel_x=float(x), rel_y=float(y)
        )

    _add_sound(nwbfile, cfg, wave, plan)
    mixed = cfg.design == "mixed"
    nwbfile.add_trial_column("sound_id", "Name of the sound presented.")
    if mixed:
        nwbfile.add_trial_column("is_validation", "True for validation sounds (repeated).")
    nwbfile.add_trial_column("repeat", "Presentation index of this sound (0-based).")
    for p in plan:
        row = {"is_validation": bool(p["is_validation"])} if mixed else {}
        nwbfile.add_trial(
            start_time=p["start"] / fs,
            stop_time=(p["start"] + p["n_samples"]) / fs,
            sound_id=p["sound_id"],
            repeat=int(p["repeat"]),
            **row,
        )

    nwbfile.units = Units(
        name="units",
        description="Simulated single units (spike times from the ground-truth rates).",
        electrode_table=nwbfile.electrodes,
        waveform_rate=float(cfg.waveform_fs),
        waveform_unit="volts",
        waveform_time_before_peak_in_ms=_MS_BEFORE,
        resolution=1.0 / cfg.waveform_fs,
    )
    nwbfile.add_unit_column("unit_name", "Unit name (matches the ground-truth sidecar).")
    all_rows = list(range(cfg.n_electrodes))
    for u, name in enumerate(names):
        nwbfile.add_unit(
            spike_times=spikes[u],
            waveform_mean=(templates_uv[u] * 1e-6).astype(np.float32),
            electrodes=all_rows,
            unit_name=str(name),
        )
    if raw_data is not None:
        region = nwbfile.create_electrode_table_region(all_rows, "all contacts")
        nwbfile.add_acquisition(
            ElectricalSeries(
                name="ElectricalSeries",
                data=H5DataIO(raw_data, compression="gzip", compression_opts=4),
                electrodes=region,
                rate=float(cfg.waveform_fs),
                starting_time=0.0,
                conversion=_RAW_LSB_V,
                filtering="none (simulated: white noise plus injected templates)",
                description="Raw voltage, simulated with SpikeInterface (ground-truth recording).",
            )
        )
    return nwbfile


def _sound_samples(cfg: SimulationConfig, wave: np.ndarray) -> np.ndarray:
    """The samples as written: float32, or int16 at full scale (``cfg.sound_format``)."""
    if cfg.sound_format == "float":
        return wave.astype(np.float32, copy=False)
    peak = float(np.max(np.abs(wave))) or 1.0
    return np.round(wave * (32767.0 / peak)).astype(np.int16)


def _add_sound(nwbfile: Any, cfg: SimulationConfig, wave: np.ndarray, plan: list[dict]) -> None:
    """Write the sound in ``cfg.layout`` (see the module docstring)."""
    from hdmf.backends.hdf5 import H5DataIO
    from pynwb import TimeSeries

    fs = float(cfg.audio_fs)
    samples = _sound_samples(cfg, wave)

    def packed(x: np.ndarray) -> H5DataIO:
        return H5DataIO(x, compression="gzip", compression_opts=4, chunks=(int(min(fs, x.size)),))

    if cfg.layout == "continuous":
        nwbfile.add_stimulus(
            TimeSeries(
                name="sound",
                data=packed(samples),
                unit="a.u.",
                rate=fs,
                starting_time=0.0,
                description="Sound waveform played to the animal over the whole session.",
            )
        )
    elif cfg.layout == "per-presentation":
        from ndx_sound import AcousticWaveformSeries

        for k, p in enumerate(plan):
            a = p["start"]
            nwbfile.add_stimulus(
                AcousticWaveformSeries(
                    name=f"sound_{k + 1:04d}",
                    data=packed(samples[a : a + p["n_samples"]]),
                    rate=fs,
                    starting_time=a / fs,
                    description=f"Sound {p['sound_id']} as played in presentation {k + 1}.",
                )
            )
    else:  # templates
        for sid in sorted({p["sound_id"] for p in plan}):
            p = next(q for q in plan if q["sound_id"] == sid)
            nwbfile.add_stimulus_template(
                TimeSeries(
                    name=sid,
                    data=packed(samples[p["start"] : p["start"] + p["n_samples"]]),
                    unit="a.u.",
                    rate=fs,
                    starting_time=0.0,
                    description=f"Sound {sid}; played at the start_time of its trials.",
                )
            )


def _write_atomic(nwbfile: Any, path: Path) -> None:
    """Write to a temp file beside ``path``, then rename, so a crash leaves no half file."""
    from pynwb import NWBHDF5IO

    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.nwb")
    try:
        with NWBHDF5IO(str(tmp), "w") as io:
            io.write(nwbfile)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
