"""Say, in plain words, what an NWB file holds that the analysis can use."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from pynwb import NWBFile

from nwb_subspace import ndx
from nwb_subspace.io.remote import open_nwb
from nwb_subspace.io.session import SCAN_LIMIT_SAMPLES, checked_session
from nwb_subspace.io.sound import sound_candidates
from nwb_subspace.io.sound_layouts import detect_layout
from nwb_subspace.io.trials import SOUND_COLUMNS, find_sound_column, read_trials
from nwb_subspace.io.units.nwb import read_nwb_meta
from nwb_subspace.io.units.templates import check_waveform_shape
from nwb_subspace.stimulus.responses import describe_split

__all__ = ["FileSummary", "describe_file", "summarize_file"]


@dataclass
class FileSummary:
    """What :func:`summarize_file` found, and what is missing."""

    n_units: int = 0
    has_spike_times: bool = False
    has_waveforms: bool = False
    electrode_positions: bool = False
    unit_columns: list[str] = field(default_factory=list)
    sounds: list[str] = field(default_factory=list)
    layout: str | None = None  # the sound layout layout="auto" chooses (None: undecided)
    layout_detail: str = ""  # what was found, or what to pass when undecided
    raw_series: list[str] = field(default_factory=list)
    trials: int = 0
    sound_column: str | None = None
    sound_column_problem: str | None = None  # why no column was chosen among several
    runs: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # why `run` would refuse the file
    split: str = ""  # describe_split of the split `run` would make ("" when none)
    checked: bool = False  # the checks of `run` ran (nothing essential is missing)


def _sound_lines(nwbfile: NWBFile) -> list[str]:
    """One line per series :func:`~nwb_subspace.io.sound.sound_candidates` accepts."""
    out = []
    for ts in sound_candidates(nwbfile)[0]:
        where = "stimulus" if nwbfile.stimulus.get(ts.name) is ts else "acquisition"
        rate = ts.rate if ts.rate is not None else float("nan")
        shape = ts.data.shape
        channels = f", {shape[1]} channels" if len(shape) == 2 and shape[1] > 1 else ""
        out.append(f"{where}/{ts.name} ({rate:g} Hz, {shape[0]} samples{channels})")
    return out


def _layout(nwbfile: NWBFile) -> tuple[str | None, str]:
    """:func:`~nwb_subspace.io.sound_layouts.detect_layout`, with the trials if readable."""
    try:
        trials = read_trials(nwbfile)
    except ValueError:
        trials = None
    return detect_layout(nwbfile, trials)


def _waveform_shape(nwbfile: NWBFile) -> tuple[int, ...] | None:
    """Shape of the units' ``waveform_mean`` data (lazy: nothing is read), if present."""
    units = nwbfile.units
    if units is None:
        return None
    for column in units.columns:
        if column.name == "waveform_mean":
            return tuple(column.data.shape)
    return None


def _waveform_problem(path: str | os.PathLike, shape: tuple[int, ...]) -> str | None:
    """Why ``waveform_mean`` cannot be used (its shape), as ``read_units`` would refuse it."""
    meta = read_nwb_meta(path)
    _, problem = check_waveform_shape(shape, meta, meta.waveform_fs)
    return problem


def _run_checks(s: FileSummary, path: str | os.PathLike, options: dict) -> None:
    """The checks of ``nwb-subspace run`` (:func:`~nwb_subspace.io.session.checked_session`)."""
    s.checked = True
    found = checked_session(path, scan_sound=True, **options)
    s.problems = list(found.problems)
    if found.split is not None:
        s.split = describe_split(found.split)


def summarize_file(path: str | os.PathLike, **options) -> FileSummary:
    """Read the parts of ``path`` the analysis needs, list what is missing, and run the
    checks of ``nwb-subspace run`` (:func:`~nwb_subspace.io.session.checked_session`).

    Parameters
    ----------
    path : path-like
        A local NWB file: HDF5, or an NWB Zarr store (a ``.nwb.zarr`` folder).
    **options
        Options of :func:`~nwb_subspace.io.session.load_session_data` (``sound_column``,
        ``spectrogram_settings``, ``min_repeats``, ...), as ``run`` would pass them.

    Returns
    -------
    FileSummary
        ``problems`` lists, one line each, why ``run`` would refuse the file; they are
        checked only when nothing essential (units, sound, trials) is ``missing``.
    """
    s = FileSummary()
    waveform_shape = None
    with open_nwb(os.fspath(path)) as nwbfile:
        units = nwbfile.units
        if units is not None:
            s.n_units = len(units)
            s.unit_columns = list(units.colnames)
            s.has_spike_times = "spike_times" in units.colnames
            s.has_waveforms = "waveform_mean" in units.colnames
            waveform_shape = _waveform_shape(nwbfile)
        elec = nwbfile.electrodes
        s.electrode_positions = elec is not None and {"rel_x", "rel_y"} <= set(elec.colnames)
        s.sounds = _sound_lines(nwbfile)
        s.layout, s.layout_detail = _layout(nwbfile)
        s.raw_series = [
            n for n, o in nwbfile.acquisition.items() if o.neurodata_type == "ElectricalSeries"
        ]
        table = nwbfile.trials if nwbfile.trials is not None else nwbfile.epochs
        if table is not None:
            s.trials = len(table)
            try:
                s.sound_column = find_sound_column(table.colnames, table=table.name)
            except ValueError as err:
                if any(c in SOUND_COLUMNS for c in table.colnames):  # several candidates
                    s.sound_column_problem = str(err)
        for module in nwbfile.processing.values():
            for name, obj in module.data_interfaces.items():
                if isinstance(obj, ndx.SubspaceAnalysis):
                    s.runs.append(f"{module.name}/{name}")
    if not s.n_units or not s.has_spike_times:
        s.missing.append("a units table with spike_times (needed for everything)")
    if not s.sounds and s.layout is None:
        s.missing.append("a sound waveform TimeSeries in stimulus or acquisition")
    elif s.layout is None:
        s.missing.append(f"an unambiguous sound: {s.layout_detail}")
    if not s.trials:
        s.missing.append("a trials (or epochs) table naming each sound")
    elif s.sound_column_problem is not None:
        s.missing.append(f"a single trials column naming the sound: {s.sound_column_problem}")
    elif s.sound_column is None:
        s.missing.append(f"a trials column naming the sound (one of {', '.join(SOUND_COLUMNS)})")
    lacking = bool(s.missing)  # something essential is missing: the run checks cannot run
    if not s.has_waveforms and not s.raw_series:
        s.missing.append("waveform_mean or a raw ElectricalSeries (cell types will be 'unknown')")
    elif s.has_waveforms and not s.raw_series and s.has_spike_times:
        problem = _waveform_problem(path, waveform_shape or ())
        if problem is not None:
            s.missing.append(f"a usable waveform_mean (cell types will be 'unknown'): {problem}")
    if not s.electrode_positions:
        s.missing.append("electrodes rel_x/rel_y (depths and layers will be 'unknown')")
    if not lacking:
        _run_checks(s, path, options)
    return s


def _sounds_text(sounds: list[str]) -> str:
    if len(sounds) > 3:  # e.g. one series per presentation
        return f"{len(sounds)} series: {sounds[0]} ... {sounds[-1]}"
    return "; ".join(sounds) or "none found"


def describe_file(path: str | os.PathLike, **options) -> str:
    """A short human-readable report of :func:`summarize_file` (same parameters)."""
    s = summarize_file(path, **options)
    yes = {True: "yes", False: "no"}
    lines = [
        f"{path}",
        f"  units: {s.n_units} (spike_times: {yes[s.has_spike_times]}, "
        f"waveform_mean: {yes[s.has_waveforms]})",
        f"  electrode positions (rel_x/rel_y): {yes[s.electrode_positions]}",
        f"  raw voltage: {', '.join(s.raw_series) or 'none'}",
        f"  sound: {_sounds_text(s.sounds)}",
        f"  sound layout: {s.layout or 'undecided'} ({s.layout_detail})",
        f"  trials: {s.trials} (sound column: {s.sound_column or 'none'})",
        f"  earlier nwb-subspace runs: {', '.join(s.runs) or 'none'}",
    ]
    extra = [c for c in s.unit_columns if c not in ("spike_times", "waveform_mean")]
    if extra:
        lines.append(f"  other units columns: {', '.join(extra)}")
    if s.split:
        lines += [f"  {line}" for line in s.split.splitlines()]
    if s.checked:
        lines.append(
            "  sound samples: NaN/inf checked in a continuous sound's first "
            f"{SCAN_LIMIT_SAMPLES:,} samples; elsewhere when the spectrogram is computed"
        )
    if s.problems:
        lines.append("  problems (nwb-subspace run refuses the file):")
        lines += [f"    - {p}" for p in s.problems]
    if s.missing:
        lines.append("  missing:")
        lines += [f"    - {m}" for m in s.missing]
    elif not s.problems:
        lines.append("  everything the analysis needs is present")
    return "\n".join(lines)
