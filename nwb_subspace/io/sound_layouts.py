"""Where the sound of each presentation is, for the layouts other than one continuous
series: which layout a file holds (:func:`detect_layout`), and the stored sounds and onsets
of the ``"per-presentation"``, ``"templates"`` and ``"sound-dir"`` layouts (see
:mod:`nwb_subspace.io.sound` for the layouts and :mod:`nwb_subspace.io.timeline` for how
they are assembled into the session's sound).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pynwb import NWBFile, TimeSeries

from nwb_subspace.io.sound import (
    MIN_SOUND_RATE,
    SpectrogramSource,
    describe_series,
    object_path,
    regular_time_base,
    sound_candidates,
    sound_problem,
    stored_spectrograms,
    type_names,
)
from nwb_subspace.io.timeline import Clip, ScaledData, read_wav
from nwb_subspace.stimulus.responses import Trials

__all__ = [
    "Assembly",
    "detect_layout",
    "from_sound_dir",
    "from_templates",
    "per_presentation",
    "template_series",
]

#: What a layout's builder returns: the sound of each presentation, its onset (session
#: seconds), a label for messages, and the source to report.
Assembly = tuple[list[Clip], np.ndarray, list[str], SpectrogramSource]


def _series_start(ts: TimeSeries) -> float:
    """Session time of the first sample (without reading the timestamps)."""
    if ts.rate is not None:
        return float(ts.starting_time or 0.0)
    return float(ts.timestamps[0])


def _matches_trials(series: list[TimeSeries], trials: Trials | None, bin_s: float) -> bool:
    """Several series, one per trial: sorted starts equal the trials' within one bin."""
    if trials is None or len(series) < 2 or len(series) != len(trials):
        return False
    starts = np.sort([_series_start(ts) for ts in series])
    return bool(np.all(np.abs(starts - np.sort(trials.start)) <= bin_s))


def template_series(nwbfile: NWBFile, min_rate: float | None) -> dict[str, TimeSeries]:
    """Sound-like series in ``stimulus/templates``, by name (sorted)."""
    pool = nwbfile.stimulus_template
    out = {}
    for name in sorted(pool):
        if sound_problem(pool[name], min_rate) is None:
            out[name] = pool[name]
    return out


def _index_series(nwbfile: NWBFile, name: str | None = None) -> list[TimeSeries]:
    """``IndexSeries`` in ``stimulus/presentation`` (the one named ``name`` if given)."""
    found = [
        nwbfile.stimulus[n]
        for n in sorted(nwbfile.stimulus)
        if "IndexSeries" in type_names(nwbfile.stimulus[n])
    ]
    return [ts for ts in found if name is None or ts.name == name]


def detect_layout(
    nwbfile: NWBFile, trials: Trials | None = None, bin_s: float = 0.01
) -> tuple[str | None, str]:
    """The layout ``layout="auto"`` chooses, and a sentence saying what was found.

    Parameters
    ----------
    nwbfile : NWBFile
        An open file (only metadata is read).
    trials : Trials, optional
        The presentations; needed to recognise several series as one per presentation and
        to play templates.
    bin_s : float, default 0.01
        Tolerance when comparing series' starts with the trials' starts, in seconds.

    Returns
    -------
    layout : str or None
        ``"continuous"`` (one sound series), ``"per-presentation"`` (several series whose
        starts match the trials' starts one to one), ``"templates"`` (no sound series,
        sounds in ``stimulus/templates`` and presentation times from the trials or an
        ``IndexSeries``), ``"stored"`` (no sound, a stored ``Spectrogram``), or None when
        the file does not decide (the sentence says what to pass).
    description : str
    """
    candidates, _ = sound_candidates(nwbfile)
    if len(candidates) == 1:
        return "continuous", f"one sound series, {describe_series(candidates[0])}"
    if len(candidates) > 1:
        names = [c.name for c in candidates]
        if _matches_trials(candidates, trials, bin_s):
            first = candidates[0]
            return "per-presentation", (
                f"{len(candidates)} sound series ({names[0]} ... {names[-1]}, "
                f"{first.neurodata_type}), one per {trials.table} row"  # type: ignore[union-attr]
            )
        return None, (
            f"{len(candidates)} series could be the sound ({', '.join(names[:5])}"
            f"{', ...' if len(names) > 5 else ''}) and their start times do not match the "
            "trials one to one: pass sound_name=<one series> (layout 'continuous') or "
            "layout='per-presentation'"
        )
    templates = template_series(nwbfile, MIN_SOUND_RATE)
    if templates:
        index = _index_series(nwbfile)
        if len(index) == 1:
            return "templates", (
                f"{len(templates)} sounds in /stimulus/templates played at the times of the "
                f"IndexSeries {object_path(index[0])}"
            )
        if trials is not None:
            return "templates", (
                f"{len(templates)} sounds in /stimulus/templates played at the {trials.table} "
                f"start times (column {trials.sound_column!r} names the sound)"
            )
        return None, (
            f"{len(templates)} sounds in /stimulus/templates but no presentation times: add a "
            "trials table whose sound column names the templates"
        )
    stored = stored_spectrograms(nwbfile)
    if stored:
        return (
            "stored",
            f"no sound; {len(stored)} stored spectrogram(s), {object_path(stored[0])} ...",
        )
    return None, "no sound found (no sound series, no templates, no stored spectrogram)"


def _clip(ts: TimeSeries, key: str) -> Clip:
    rate, _ = regular_time_base(ts)
    data = ScaledData(ts.data, ts.conversion, getattr(ts, "offset", 0.0))
    return Clip(key=key, label=object_path(ts), data=data, rate=rate)


def per_presentation(nwbfile: NWBFile, sound_name: str | None, trials: Trials | None) -> Assembly:
    series, _ = sound_candidates(nwbfile)
    if sound_name is not None:  # a name prefix selects the series
        series = [ts for ts in series if ts.name.startswith(sound_name)]
    if not series:
        which = f" whose name starts with {sound_name!r}" if sound_name else ""
        raise ValueError(
            f"layout='per-presentation' but no sound series{which} in stimulus/presentation "
            "or acquisition; pass layout='templates' or 'sound-dir' if the sounds are stored "
            "otherwise"
        )
    if trials is not None and len(series) != len(trials):
        raise ValueError(
            f"layout='per-presentation' needs one sound series per {trials.table} row: found "
            f"{len(series)} series and {len(trials)} rows; pass sound_name=<prefix shared by "
            "the presentation series> or another layout"
        )
    clips = [_clip(ts, object_path(ts)) for ts in series]
    onsets = np.array([_series_start(ts) for ts in series])
    labels = [object_path(ts) for ts in series]
    names = sorted(ts.name for ts in series)
    where = sorted({object_path(ts).rsplit("/", 1)[0] for ts in series})
    source = SpectrogramSource(
        "computed",
        f"{names[0]}..{names[-1]}",
        ", ".join(where),
        series[0].neurodata_type,
        "per-presentation",
        f"{len(series)} sound series in {', '.join(where)}, one per presentation",
    )
    return clips, onsets, labels, source


def _need_trials(trials: Trials | None, layout: str) -> Trials:
    if trials is None:
        raise ValueError(
            f"layout={layout!r} plays the sounds at the trials' start times: pass trials= "
            "(read them with nwb_subspace.io.trials.read_trials)"
        )
    return trials


def from_templates(nwbfile: NWBFile, sound_name: str | None, trials: Trials | None) -> Assembly:
    templates = template_series(nwbfile, None)
    if not templates:
        raise ValueError(
            "layout='templates' but stimulus/templates holds no sound series; store each "
            "sound once with nwbfile.add_stimulus_template(TimeSeries(name=<sound id>, ...))"
        )
    clips = {name: _clip(ts, name) for name, ts in templates.items()}
    names = list(templates)  # sorted
    index = _index_series(nwbfile, sound_name)
    if len(index) > 1:
        raise ValueError(
            f"{len(index)} IndexSeries in stimulus/presentation could give the presentation "
            f"times: {[ts.name for ts in index]}; pass sound_name=<one of them>"
        )
    if index:
        ix = index[0]
        idx = np.asarray(ix.data[:], dtype=np.int64)
        if ix.timestamps is not None:
            onsets = np.asarray(ix.timestamps[:], dtype=np.float64)
        else:
            onsets = float(ix.starting_time or 0.0) + np.arange(idx.size) / float(ix.rate)
        bad = (idx < 0) | (idx >= len(names))
        if bad.any():
            k = int(np.argmax(bad))
            raise ValueError(
                f"{object_path(ix)} entry {k} is {int(idx[k])}, but it indexes the {len(names)} "
                f"templates sorted by name ({names}); valid values are 0 to {len(names) - 1}"
            )
        played = [clips[names[i]] for i in idx]
        labels = [f"{object_path(ix)} entry {k} ({names[i]!r})" for k, i in enumerate(idx)]
        how = f"at the times of the IndexSeries {object_path(ix)}"
    else:
        trials = _need_trials(trials, "templates")
        missing = sorted(set(trials.sound_id.tolist()) - set(names))
        if missing:
            rows = [i for i, sid in enumerate(trials.sound_id.tolist()) if sid in missing][:5]
            raise ValueError(
                f"{trials.table} rows {rows} name sounds {missing[:5]} (column "
                f"{trials.sound_column!r}) that stimulus/templates does not hold (it holds "
                f"{names[:10]}); add those templates or pass sound_column=<the column naming "
                "the templates>"
            )
        onsets = trials.start
        played = [clips[sid] for sid in trials.sound_id.tolist()]
        labels = [
            f"{trials.table} row {i} ({sid!r})" for i, sid in enumerate(trials.sound_id.tolist())
        ]
        how = f"at the {trials.table} start times"
    first = templates[names[0]]
    source = SpectrogramSource(
        "computed",
        "templates",
        "/stimulus/templates",
        first.neurodata_type,
        "templates",
        f"{len(names)} sounds in /stimulus/templates played {how}",
    )
    return played, onsets, labels, source


def from_sound_dir(sound_dir: str | Path | None, trials: Trials | None) -> Assembly:
    if sound_dir is None:
        raise ValueError("layout='sound-dir' needs sound_dir=<folder of <sound id>.wav files>")
    trials = _need_trials(trials, "sound-dir")
    folder = Path(sound_dir)
    if not folder.is_dir():
        raise ValueError(f"sound_dir {folder} is not a folder ([session] sound_dir)")
    ids = sorted(set(trials.sound_id.tolist()))
    missing = [sid for sid in ids if not (folder / f"{sid}.wav").is_file()]
    if missing:
        raise ValueError(
            f"sound_dir {folder} lacks {len(missing)} of the {len(ids)} sounds the "
            f"{trials.table} table names (column {trials.sound_column!r}): "
            f"{[f'{sid}.wav' for sid in missing[:5]]}; files must be named <sound id>.wav "
            "(or pass sound_column=<the column naming the files>)"
        )
    clips = {sid: read_wav(folder / f"{sid}.wav", sid) for sid in ids}
    played = [clips[sid] for sid in trials.sound_id.tolist()]
    labels = [f"{trials.table} row {i} ({sid!r})" for i, sid in enumerate(trials.sound_id.tolist())]
    source = SpectrogramSource(
        "computed",
        folder.name,
        str(folder),
        "WAV",
        "sound-dir",
        f"{len(ids)} WAV files in {folder} played at the {trials.table} start times",
    )
    return played, np.asarray(trials.start, dtype=np.float64), labels, source
