"""Simulate a recording session (one site or several) as a standard NWB file plus a
ground-truth sidecar.

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
  ``rel_y`` (µm, tip at 0, larger = closer to the surface). One electrode group per site:
  ``"shank0"`` (a single-site session), ``"shank0"``..``"shank{S-1}"`` for ``S = n_sites``
  shanks of one probe device, shank ``i``'s contacts at ``rel_x = i * SHANK_SPACING_UM``
  and the same ``rel_y``, in shank order.
- ``units``: ``spike_times`` (s, on a ``waveform_fs`` grid), ``waveform_mean`` (units,
  samples, electrodes) in volts over the unit's own shank's electrodes in table order,
  ``electrodes`` (those rows: every row for a single site), ``unit_name`` (``unit_000``...,
  unique across sites, site by site); several sites add ``electrode_group`` (the unit's
  shank); ``waveform_rate`` and ``resolution`` set.
- ``acquisition/ElectricalSeries`` (``raw=True`` only): the first ``raw_s`` seconds as a
  SpikeInterface ground-truth recording, int16 with ``conversion`` to volts.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np

from nwb_subspace.io.atomic import write_atomically
from nwb_subspace.simulate.breadth import true_breadth
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

__all__ = [
    "SHANK_SPACING_UM",
    "plan_presentations",
    "presented_samples",
    "simulate_session",
    "truth_spectrogram",
]

_RAW_LSB_V = 0.195e-6  # volts per int16 step (Intan-like)
#: Distance between the shanks of a multi-site session, along ``rel_x`` (µm).
SHANK_SPACING_UM = 250.0
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


# long: the session recipe in seed-stream order (plan, sound, sites, spikes, raw)
def simulate_session(
    path: str | Path,
    preset: str | SimulationConfig = "tiny",
    seed: int = 0,
    raw: bool = False,
    overwrite: bool = False,
) -> tuple[Path, Path]:
    """Simulate an auditory-cortex recording session (one site or several); write NWB + truth.

    A session of ``cfg.n_sites`` sites has one shank per site (electrode groups ``"shank0"``,
    ``"shank1"``, ...; shanks :data:`SHANK_SPACING_UM` apart in ``rel_x``, at the same
    ``rel_y``) and ``cfg.n_units`` units per site. Every site is an independent draw (its own
    site basis, best frequency, nonlinearities, positions and waveforms, from its own random
    streams); all sites hear the same sounds. Site 0 uses the streams a single-site session
    uses, so a single-site session is unchanged by the setting and site 0 of a multi-site
    session equals the single-site session of the same seed.

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

    root = np.random.SeedSequence(int(seed))
    streams = [np.random.default_rng(s) for s in root.spawn(6)]
    rng_plan, rng_sound, rng_units, rng_spikes, rng_wave, rng_raw = streams
    # site 0: the single-site streams; further sites: two streams each, spawned per site
    site_rngs = [(rng_units, rng_wave)] + [
        tuple(np.random.default_rng(s) for s in child.spawn(2))
        for child in root.spawn(cfg.n_sites - 1)
    ]
    plan = plan_presentations(rng_plan, cfg)
    wave = _session_sound(rng_sound, cfg, plan)
    spec = truth_spectrogram(wave, cfg.audio_fs, cfg.spectrogram, plan)

    probe = make_probe(cfg.n_electrodes, cfg.pitch_um)
    boundaries = layer_boundaries(cfg.l34_rel_y)
    spec64 = spec.data.astype(np.float64)
    sites = [_simulate_site(cfg, spec64, ru, rw, probe, boundaries) for ru, rw in site_rngs]
    units = _join_sites(cfg, sites)
    site_names = [f"shank{i}" for i in range(cfg.n_sites)]
    unit_site = np.repeat(np.arange(cfg.n_sites), cfg.n_units)

    names = np.array([f"unit_{u:03d}" for u in range(cfg.n_units * cfg.n_sites)])
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
    if cfg.n_sites > 1:
        meta.update(n_sites=cfg.n_sites, sites=site_names, shank_spacing_um=SHANK_SPACING_UM)
    positions = units.pop("position_um")
    templates_uv = units.pop("templates_uv")
    truth = GroundTruth(
        unit_names=names,
        position_um=positions,
        depth_um=cfg.l34_rel_y - positions[:, 1],
        layer=assign_layers(positions[:, 1], boundaries),
        frequencies=spec.frequencies,
        meta=meta,
        site=np.array(site_names)[unit_site],
        **units,
    )
    rates = truth.rate(spec.data)
    # true SRF breadth of every unit over the presented bins (plan: whole bins)
    presented = np.zeros(spec.n_bins, dtype=bool)
    for a, b in presented_samples(plan) // int(round(cfg.spectrogram.bin_s * cfg.audio_fs)):
        presented[a:b] = True
    truth.true_breadth = true_breadth(
        truth.filters, truth.k, rates, spec64, presented, 1.0 / spec.rate
    )
    spikes = [
        poisson_spikes(
            rng_spikes,
            rates[:, u],
            1.0 / spec.rate,
            cfg.refractory_s,
            spec.starting_time,
            1.0 / cfg.waveform_fs,
        )
        for u in range(names.size)
    ]
    raw_data = None
    if raw:
        raw_uv = raw_traces(
            rng_raw,
            probe,
            _all_channels(templates_uv, unit_site, cfg.n_sites),
            sites[0]["nbefore"],
            spikes,
            min(cfg.raw_s, wave.size / cfg.audio_fs),
            cfg.waveform_fs,
            cfg.noise_uv,
        )
        raw_data = np.clip(np.round(raw_uv * 1e-6 / _RAW_LSB_V), -32768, 32767).astype(np.int16)

    units_out = {"names": names, "site": unit_site, "spikes": spikes, "templates_uv": templates_uv}
    nwbfile = _build_nwbfile(cfg, seed, wave, plan, probe, units_out, raw_data)
    _write_atomic(nwbfile, path)
    truth.save(truth_path)
    return path, truth_path


def _simulate_site(
    cfg: SimulationConfig,
    spec: np.ndarray,
    rng_units: np.random.Generator,
    rng_wave: np.random.Generator,
    probe: Any,
    boundaries: dict[str, float],
) -> dict[str, Any]:
    """One site's units (``draw_population``) with positions and templates on its shank.

    Positions, templates and main electrodes are in the shank's own frame (``x`` about the
    shank, main electrode = contact index on the shank).
    """
    pop = draw_population(rng_units, cfg, spec)
    top = float(probe.contact_positions[:, 1].max())
    positions = draw_positions(rng_wave, cfg.n_units, top, boundaries)
    narrow = pop["cell_type"] == "narrow"
    templates_uv, nbefore = make_templates(rng_wave, probe, positions, narrow, cfg.waveform_fs)
    ttp, main = trough_to_peak(templates_uv, cfg.waveform_fs)
    return dict(
        pop,
        position_um=positions,
        templates_uv=templates_uv,
        nbefore=nbefore,
        trough_to_peak_s=ttp,
        main_electrode=main.astype(np.int64),
    )


def _join_sites(cfg: SimulationConfig, sites: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Per-unit arrays of all sites concatenated in unit order, in the session's frame.

    Site ``i``'s unit positions move ``i * SHANK_SPACING_UM`` along ``x`` and its main
    electrodes by ``i * n_electrodes`` rows (electrodes table order). ``site_basis`` keeps its
    (m, F, D) shape for one site and is stacked to (S, m, F, D) for several.
    """
    out: dict[str, np.ndarray] = {}
    for key in sites[0]:
        if key in ("nbefore", "site_basis"):
            continue
        parts = []
        for i, site in enumerate(sites):
            value = site[key]
            if key == "position_um" and i:
                value = value + np.array([i * SHANK_SPACING_UM, 0.0, 0.0])
            elif key == "main_electrode":
                value = value + i * cfg.n_electrodes
            parts.append(value)
        out[key] = parts[0] if len(parts) == 1 else np.concatenate(parts)
    out["site_basis"] = (
        sites[0]["site_basis"] if len(sites) == 1 else np.stack([s["site_basis"] for s in sites])
    )
    return out


def _all_channels(templates_uv: np.ndarray, unit_site: np.ndarray, n_sites: int) -> np.ndarray:
    """Templates over every contact of every shank (zero off the unit's own shank)."""
    if n_sites == 1:
        return templates_uv
    n_units, n_samples, n_el = templates_uv.shape
    out = np.zeros((n_units, n_samples, n_el * n_sites), dtype=templates_uv.dtype)
    for u, i in enumerate(unit_site):
        out[u, :, i * n_el : (i + 1) * n_el] = templates_uv[u]
    return out


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


def _session_text(cfg: SimulationConfig, seed: int) -> str:
    """``session_description``: what was simulated, with the number of sites."""
    if cfg.n_sites == 1:
        return (
            f"Simulated recording of one auditory-cortex site (preset {cfg.name!r}, seed {seed}): "
            f"{cfg.n_units} units on a {cfg.n_electrodes}-channel linear probe listening to "
            "natural-like sounds; ground truth in the .truth.npz sidecar."
        )
    return (
        f"Simulated recording of {cfg.n_sites} auditory-cortex sites (preset {cfg.name!r}, "
        f"seed {seed}): {cfg.n_units} units per site ({cfg.n_units * cfg.n_sites} in all) on "
        f"{cfg.n_sites} shanks of a linear probe (electrode groups shank0-shank"
        f"{cfg.n_sites - 1}, {cfg.n_electrodes} channels each), every site an independent draw "
        "of units, all listening to the same natural-like sounds; ground truth in the "
        ".truth.npz sidecar."
    )


# long: the file's metadata, tables and series, in one place and in file order
def _build_nwbfile(
    cfg: SimulationConfig,
    seed: int,
    wave: np.ndarray,
    plan: list[dict],
    probe: Any,
    units: dict[str, Any],
    raw_data: np.ndarray | None,
) -> Any:
    """Assemble the in-memory ``pynwb.NWBFile`` (layout in the module docstring).

    ``units``: ``names``, ``site`` (shank index per unit), ``spikes`` and ``templates_uv``
    (each unit's templates over its own shank's contacts, µV).
    """
    from hdmf.backends.hdf5 import H5DataIO
    from pynwb import NWBFile
    from pynwb.ecephys import ElectricalSeries
    from pynwb.file import Subject

    fs = cfg.audio_fs
    ident = uuid.uuid5(
        uuid.NAMESPACE_URL,
        f"nwb-subspace/simulate/{json.dumps(cfg.to_dict(), sort_keys=True)}/{seed}",
    )
    nwbfile = NWBFile(
        session_description=_session_text(cfg, seed),
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
    groups = _add_probe(nwbfile, cfg, probe)

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

    _add_units(nwbfile, cfg, groups, units)
    if raw_data is not None:
        all_rows = list(range(cfg.n_electrodes * cfg.n_sites))
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


def _add_probe(nwbfile: Any, cfg: SimulationConfig, probe: Any) -> list[Any]:
    """The probe device, one electrode group per shank (site) and the electrodes table."""
    if cfg.n_sites == 1:
        text = (
            f"Simulated single-shank linear silicon probe, {cfg.n_electrodes} contacts, "
            f"{cfg.pitch_um} um pitch"
        )
    else:
        text = (
            f"Simulated {cfg.n_sites}-shank linear silicon probe, {cfg.n_electrodes} contacts "
            f"per shank, {cfg.pitch_um} um pitch, shanks {SHANK_SPACING_UM:g} um apart"
        )
    device = nwbfile.create_device(name="probe", description=text)
    groups = []
    for i in range(cfg.n_sites):
        group = nwbfile.create_electrode_group(
            name=f"shank{i}",
            description="single shank" if cfg.n_sites == 1 else f"shank {i} of {cfg.n_sites}",
            location="auditory cortex",
            device=device,
        )
        groups.append(group)
        for x, y in probe.contact_positions:
            nwbfile.add_electrode(
                group=group,
                location="auditory cortex",
                rel_x=float(x) + i * SHANK_SPACING_UM,
                rel_y=float(y),
            )
    return groups


def _add_units(nwbfile: Any, cfg: SimulationConfig, groups: list[Any], units: dict) -> None:
    """The units table: each unit's spikes, its shank's electrodes and templates over them
    (and, for several sites, the ``electrode_group`` column)."""
    from pynwb.misc import Units

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
    n_el = cfg.n_electrodes
    for u, name in enumerate(units["names"]):
        i = int(units["site"][u])
        extra = {"electrode_group": groups[i]} if cfg.n_sites > 1 else {}
        nwbfile.add_unit(
            spike_times=units["spikes"][u],
            waveform_mean=(units["templates_uv"][u] * 1e-6).astype(np.float32),
            electrodes=list(range(i * n_el, (i + 1) * n_el)),
            unit_name=str(name),
            **extra,
        )


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

    def write(tmp: Path) -> None:
        with NWBHDF5IO(str(tmp), "w") as io:
            io.write(nwbfile)

    write_atomically(path, write, suffix=".tmp.nwb")
