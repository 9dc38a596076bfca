"""One session end to end, from an :class:`~nwb_subspace.config.AnalysisConfig`.

NWB in -> units, stimulus, responses -> LN and CNN -> dSTRFs, tuning subspaces, SRFs,
subspace model -> sites (shared subspace, tiling, cell types and layers; ``sites.py``) ->
results appended to NWB, and the summary CSVs written next to it. Each step is a small
function; ``run_session`` chains them and returns a :class:`SessionResult` that holds
everything (for reports).

The steps (:data:`STEPS`: ``models``, ``subspace``, ``subspace_model``, ``sites``) can be
rerun from a stored run: ``run_session(path, config, reuse=RUN, steps=[...])`` rebuilds the
stored LN and CNN fits without fitting (refused when the settings they depend on,
:data:`STEP_SETTINGS`, differ) and stores a new run whose config's ``provenance`` says which
steps ran, which were reused and from which run, with the settings and package versions of
each.
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from nwb_subspace.config import AnalysisConfig
from nwb_subspace.errors import ModelFitError
from nwb_subspace.io.backend import store_stem
from nwb_subspace.io.remote import (
    is_remote,
    open_binary,
    probe,
    remote_cache,
    resolve_source,
)
from nwb_subspace.io.session import SessionData, load_session_data
from nwb_subspace.io.units.reader import UnitInfo, read_units, unit_columns
from nwb_subspace.io.writer import (
    ResultsExistError,
    check_runs,
    default_output_path,
    drop_runs,
    list_runs,
    read_results,
    write_results,
)
from nwb_subspace.models.estimator import (
    EncodingEstimator,
    resolve_device,
    validation_bins,
)
from nwb_subspace.models.training import FitHistory, JackknifeFolds, jackknife_folds, predict
from nwb_subspace.results import (
    FittedModel,
    ModelPrediction,
    ResultSet,
    SpectrogramResult,
    SubspaceRFs,
    TuningSubspaces,
)
from nwb_subspace.site.step import SiteInputs, SiteStep, SiteStepResult, read_site_labels
from nwb_subspace.site.tables import subspace_fraction_by_site, write_summary

log = logging.getLogger("nwb_subspace")


@dataclass
class SessionResult:
    """Everything one run produced (in memory), and where it was written.

    ``sites`` holds the site step (site subspaces, ``tilings``, the per-unit and per-site
    summary tables, its notes); None when ``[sites] enabled`` is false. ``summary_files``
    are the CSVs written next to ``output`` (``<stem>_<run>_units.csv``, ``_sites.csv``,
    ``_statistics.csv``; empty tables are not written). ``seconds`` is the wall-clock time
    of each step that ran, in run order (:data:`TIMED_STEPS`; not stored in the file).
    """

    session: SessionData
    units: UnitInfo | None
    estimators: dict[str, EncodingEstimator]
    scores: dict[str, Any]
    results: ResultSet
    tuning: TuningSubspaces | None = None
    srfs: SubspaceRFs | None = None
    ev_fraction: np.ndarray | None = None
    output: Path | None = None
    notes: list[str] = field(default_factory=list)
    sites: SiteStepResult | None = None
    summary_files: list[Path] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def tilings(self) -> dict:
        """Tiling result of each site (empty without a site step)."""
        return {} if self.sites is None else self.sites.tilings


@dataclass
class SubspaceStep:
    """What :func:`analyse_subspaces` produced (None fields: no unit passed the cut).

    ``moments`` are the dSTRF moments of the passing units (computed once, reused by the
    site step); ``unit_rows`` their units-table rows; ``prediction`` the CNN prediction of
    those units at every bin; ``frames`` the bins whose dSTRFs entered the moments (each
    stimulus bin of the ``[subspace] frames`` trials once); ``bins`` the bins of the model
    SRFs and of the site step's tiling maps (each stimulus bin of every trial once);
    ``passing`` their indices into the CNN's ``units_``.
    """

    tuning: TuningSubspaces | None = None
    srfs: SubspaceRFs | None = None
    model: Any = None
    scores: Any = None
    ev_fraction: np.ndarray | None = None
    moments: Any = None
    unit_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    prediction: np.ndarray | None = None
    bins: np.ndarray | None = None
    passing: np.ndarray | None = None
    frames: np.ndarray | None = None


def session_masks(session: SessionData) -> dict[str, np.ndarray]:
    """Boolean bin masks of the fit, holdout and validation trials."""
    masks = {}
    for part in ("fit", "holdout", "validation"):
        mask = np.zeros(session.n_bins, bool)
        for a, b in session.segments(part):
            mask[a:b] = True
        masks[part] = mask
    return masks


def load_session(path: Path, config: AnalysisConfig) -> SessionData:
    """:func:`~nwb_subspace.io.session.load_session_data` with the ``[session]`` settings."""
    s = config.session
    return load_session_data(
        path,
        sound_name=s.sound_name,
        sound_column=s.sound_column,
        spectrogram_settings=config.spectrogram,
        min_repeats=s.min_repeats,
        holdout_fraction=s.holdout_fraction,
        seed=config.seed,
        chunk_s=s.chunk_s,
        overlapping_trials=s.overlapping_trials,
        trials_table=s.trials_table,
        validation_sounds=s.validation_sounds,
        validation_fraction=s.validation_fraction,
        layout=s.layout,
        sound_dir=s.sound_dir,
    )


def read_unit_info(path: Path, config: AnalysisConfig, notes: list[str]) -> UnitInfo | None:
    """Cell types, depths and layers; a failure here is reported, not fatal."""
    from nwb_subspace.units.celltypes import CellTypeParams

    params = CellTypeParams(**config.cell_types) if config.cell_types else None
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            info = read_units(path, cell_type_params=params, layers=config.layers)
        notes.extend(
            str(w.message)
            for w in caught
            if "cell type" in str(w.message) or "depth" in str(w.message)
        )
        return info
    except (ValueError, OSError) as err:
        notes.append(f"units: cell types, depths and layers not available ({err})")
        return None


def ensemble_names(n_fits: int, folds: Sequence[int] | None = None) -> list[str]:
    """Names of the stored CNN fits behind ensemble dSTRFs: ``cnn`` (best), ``cnn_fit2``...;
    with ``folds`` (0-based folds of jackknife fits) ``cnn_jk1``... (``cnn_jk{fold + 1}``)."""
    if folds is not None:
        return [f"cnn_jk{int(j) + 1}" for j in folds]
    return ["cnn"] + [f"cnn_fit{j}" for j in range(2, n_fits + 1)]


def ensemble_fits(cnn: EncodingEstimator, ensemble: bool) -> tuple[list, str | None]:
    """The CNN fits whose dSTRFs are averaged (``[subspace] ensemble``), and a note saying
    which: the jackknife fits (``[training] jackknife >= 2``), else every initialisation;
    ``[cnn.model_]`` without ``ensemble``."""
    if not ensemble:
        return [cnn.model_], None
    fits = cnn.ensemble_
    k = cnn.training.jackknife if cnn.training is not None else 0
    if k >= 2 and len(cnn.jackknife_members_):
        folds = cnn.jackknife_folds_
        left = "" if len(folds) == k else f", {k - len(folds)} failed fit(s) left out"
        return fits, (
            f"dSTRFs: the mean over {len(fits)} jackknife CNN fits (each without one fold of "
            f"the fit sounds{left}; stored as {', '.join(ensemble_names(len(fits), folds))}); "
            "dimensionality from the variance they agree on"
        )
    if k >= 2:
        return fits, (
            f"dSTRFs: no jackknife fit is available (every one of the {k} failed, or the run "
            "reused stores none); the mean over the CNN's initialisations instead"
        )
    if len(fits) < 2:
        return fits, None
    return fits, (
        f"dSTRFs: the mean over {len(fits)} CNN fits (one per initialisation; stored as "
        f"{', '.join(ensemble_names(len(fits)))}); dimensionality from the variance they "
        "agree on"
    )


def jackknife_labels(session: SessionData, config: AnalysisConfig) -> JackknifeFolds | None:
    """Jackknife folds of the fit trials' sounds (``[training] jackknife``; None when 0)."""
    k = config.training.jackknife
    if k < 2:
        return None
    fit = np.asarray(session.split.fit_trials, dtype=np.int64)
    return jackknife_folds(
        session.n_bins,
        np.asarray(session.trial_bins)[fit],
        np.asarray(session.trials.sound_id)[fit],
        k,
        seed=config.seed,
    )


def fit_models(
    session: SessionData,
    config: AnalysisConfig,
    masks: dict[str, np.ndarray],
    progress=None,
    notes: list[str] | None = None,
) -> dict[str, EncodingEstimator]:
    """Fit every model of ``config.models``; failed attempts go into ``notes``.

    Raises
    ------
    ModelFitError
        If the CNN failed (every initialisation, after the retries) and
        ``config.keep_partial`` is false.
    """
    notes = [] if notes is None else notes
    training = replace(config.training, seed=config.seed)
    X, Y = session.spectrogram.data, session.counts
    folds = jackknife_labels(session, config)
    fits = {}
    for kind in config.models:
        log.info("fitting the %s model", kind)
        jackknife = kind == "cnn" and folds is not None  # only the CNN's dSTRFs are used
        est = EncodingEstimator(
            kind,
            training=training if jackknife else replace(training, jackknife=0),
            device=config.device,
            progress=progress,
        )
        with warnings.catch_warnings():  # failed attempts are reported in the notes
            warnings.filterwarnings(
                "ignore", message=r".* attempt \d+ failed", category=UserWarning
            )
            labels = folds.labels if jackknife else None
            fits[kind] = est.fit(X, Y, masks["fit"], masks["holdout"], folds=labels)
        notes.extend(f"{kind} fit, {problem}" for problem in est.fit_problems_)
        if jackknife and not est.failed_:
            _jackknife_notes(est, folds, config, notes)
        if est.failed_:
            attempts = training.max_retries + 1
            message = (
                f"the {kind.upper()} fit failed: {est.history_.problem} (every one of "
                f"{training.n_initializations} initialisation(s), {attempts} attempt(s) each)"
            )
            if kind == "cnn" and not config.keep_partial:
                raise ModelFitError(
                    f"{message}; nothing was written. Check that the units respond to the "
                    "sound (spike counts, trial times on the sound's clock); keep_partial = "
                    "true (nwb-subspace run --keep-partial) stores the failed fit anyway"
                )
            notes.append(f"{message}; its scores must not be trusted")
    return fits


def _jackknife_notes(
    est: EncodingEstimator, folds: JackknifeFolds, config: AnalysisConfig, notes: list[str]
) -> None:
    """Notes on the jackknife fits; every one failed -> ModelFitError (unless keep_partial)."""
    k = folds.k
    sizes = ", ".join(str(len(f)) for f in folds.sounds)
    notes.append(
        f"cnn jackknife: {k} fits, fit j without fold j of the fit sounds (sounds per fold: "
        f"{sizes}; fit bins per fold {folds.bins.min()}-{folds.bins.max()}), best of "
        f"{config.training.n_initializations} initialisation(s) each"
        + (f"; {folds.note}" if folds.note else "")
    )
    for j, problem in sorted(est.jackknife_problems_.items()):
        notes.append(f"cnn jackknife fit {j + 1} failed ({problem}); left out of the dSTRF average")
    if len(est.jackknife_members_) == 0:
        message = (
            f"every one of the {k} CNN jackknife fits failed ({config.training.max_retries + 1}"
            " attempt(s) per initialisation)"
        )
        if not config.keep_partial:
            raise ModelFitError(
                f"{message}; nothing was written. Use fewer folds ([training] jackknife), or "
                "keep_partial = true (nwb-subspace run --keep-partial) to average the dSTRFs "
                "over the initialisations of the full fit instead"
            )
        notes.append(f"{message}; the dSTRFs average the initialisations of the full fit")
        return
    r = est.oof_correlation_
    if r is not None and np.isfinite(r).any():
        notes.append(
            "cnn jackknife: out-of-fold correlation with the single-trial spike counts of the "
            f"fit sounds, median over units {float(np.nanmedian(r)):.3f}"
        )


def analyse_subspaces(
    session: SessionData,
    cnn: EncodingEstimator,
    cnn_scores,
    config: AnalysisConfig,
    masks: dict[str, np.ndarray],
    notes: list[str],
    *,
    subspace_model: bool = True,
    sites: np.ndarray | None = None,
) -> SubspaceStep:
    """dSTRF moments, tuning subspaces, SRFs and (unless ``subspace_model`` is false) the
    subspace model for units passing the quality cut (noise-corrected correlation of the
    CNN >= ``min_noise_corrected_r``); ``sites``: the site of each units-table row (the
    SNR-matched SRF breadth is matched within sites; None: one site)."""
    step = tuning_subspaces(session, cnn, cnn_scores, config, masks, notes, sites=sites)
    if subspace_model and step.tuning is not None:
        fit_subspace_model(step, session, cnn_scores, config, masks, notes)
    return step


def _passing_units(cnn_scores, config: AnalysisConfig, notes: list[str]) -> np.ndarray:
    """Indices into the CNN's ``units_`` of the units passing the quality cut."""
    sub = config.subspace
    quality = np.asarray(cnn_scores.noise_corrected_correlation, dtype=float)
    if not np.isfinite(quality).any():  # no noise ceiling at all (validation sounds once)
        quality = np.asarray(cnn_scores.correlation, dtype=float)
        notes.append(
            "no unit has a noise ceiling (the validation sounds are not repeated): the "
            f"quality cut {sub.min_noise_corrected_r} is applied to the raw validation "
            "correlation instead"
        )
    nc = np.nan_to_num(quality, nan=-1.0)
    return np.flatnonzero(nc >= sub.min_noise_corrected_r)


def tuning_subspaces(
    session: SessionData,
    cnn: EncodingEstimator,
    cnn_scores,
    config: AnalysisConfig,
    masks: dict[str, np.ndarray],
    notes: list[str],
    sites: np.ndarray | None = None,
    seconds: dict[str, float] | None = None,
) -> SubspaceStep:
    """The ``subspace`` step: dSTRF moments, tuning subspaces and SRFs (no model is fitted).

    The frames (dSTRFs and SRFs) are each stimulus bin once: the first presentation of
    every distinct sound of the ``[subspace] frames`` trials
    (:meth:`~nwb_subspace.io.session.SessionData.frame_bins`). ``sites`` (the site of each
    units-table row) groups the units of the SNR-matched SRF breadth (:func:`session_srfs`)."""
    from nwb_subspace.dstrf.compute import dstrf_moments
    from nwb_subspace.subspace.tuning import TuningSubspaceEstimator

    sub = config.subspace
    passing = _passing_units(cnn_scores, config, notes)
    stim = session.frame_bins(sub.frames)
    if passing.size == 0:
        notes.append(
            f"no unit reached a noise-corrected correlation of {sub.min_noise_corrected_r}; "
            "no tuning subspaces were computed"
        )
        return SubspaceStep(bins=session.frame_bins("all"), frames=stim)
    parts = ("fit", "holdout", "validation")[: 3 if sub.frames == "all" else 2]
    presented = int(np.logical_or.reduce([masks[p] for p in parts]).sum())
    notes.append(
        f"dSTRF frames: {int(stim.sum())} stimulus bins of the {' + '.join(parts)} trials "
        f"([subspace] frames = {sub.frames!r}), each distinct sound once at its first "
        f"presentation ({presented - int(stim.sum())} bins of repeated presentations left out)"
    )
    rows = cnn.units_[passing]
    X = session.spectrogram.data
    log.info("dSTRFs of %d units at %d bins", passing.size, int(stim.sum()))
    fits, note = ensemble_fits(cnn, sub.ensemble)
    if note:
        notes.append(note)
    with timed(seconds, "dSTRF moments"):
        moments = dstrf_moments(
            fits, X, bins=stim, units=passing, outlier_threshold=sub.outlier_threshold,
            outlier_rule=sub.outlier_rule,
        )  # fmt: skip
    est = TuningSubspaceEstimator(
        n_components=sub.n_components, variance_threshold=sub.variance_threshold,
        seed=config.seed, reference_n_components=sub.reference_n_components,
        reference_variance_threshold=sub.reference_variance_threshold,
    )  # fmt: skip
    with timed(seconds, "PCA"):
        tuning = est.fit(
            moments, frequencies=session.frequencies, bin_s=1 / session.rate, unit_rows=rows
        ).to_result()
    by_status: dict[str, list[int]] = {}
    for row, status in zip(rows, est.status_, strict=True):
        if status != "ok":
            by_status.setdefault(status, []).append(int(row))
    notes.extend(f"tuning subspace of unit rows {r}: {status}" for status, r in by_status.items())
    with timed(seconds, "SRFs"):
        prediction = cnn.predict(X)[:, passing]
        srfs, srf_bins = session_srfs(tuning, session, prediction, masks, config, sites, notes)
    return SubspaceStep(
        tuning=tuning,
        srfs=srfs,
        moments=moments,
        unit_rows=np.asarray(rows, dtype=np.int64),
        prediction=prediction,
        bins=srf_bins,
        passing=passing,
        frames=stim,
    )


def session_srfs(
    tuning: TuningSubspaces,
    session: SessionData,
    prediction: np.ndarray,
    masks: dict[str, np.ndarray],
    config: AnalysisConfig,
    sites: np.ndarray | None = None,
    notes: list[str] | None = None,
) -> tuple[SubspaceRFs, np.ndarray]:
    """SRFs of the units of ``tuning`` (``prediction``: their CNN prediction at every bin).

    Model maps: every stimulus bin once (the first presentation of each distinct sound of the
    estimation and validation trials, as the reference maps the repeat-averaged data).
    Measured maps: every presentation of the sounds presented at least twice, with the SEM of
    each grid bin across repeats (:func:`~nwb_subspace.subspace.srf.repeat_index_per_bin`);
    sounds presented once have no repeat-wise error and are left out of them.
    With repeats and ``[subspace] breadth_match_draws > 0`` the measured maps also get the
    SNR-matched breadth (:func:`~nwb_subspace.subspace.srf.with_snr_matched_breadth`), matched
    within ``sites`` (the site of each units-table row; None: one site).

    Returns
    -------
    srfs : SubspaceRFs
        Model rows first, then measured rows.
    bins : ndarray of bool
        The model maps' bins (also those of the site step's tiling maps).
    """
    from nwb_subspace.subspace.srf import (
        concatenate_rfs,
        repeat_index_per_bin,
        subspace_rfs,
        with_snr_matched_breadth,
    )

    sub = config.subspace
    X = session.spectrogram.data
    grid = {} if sub.srf_grid == "reference" else {
        "n_bins": sub.srf_bins, "min_occupancy": sub.min_occupancy,
    }  # fmt: skip
    common = dict(
        rate=session.rate, grid=sub.srf_grid, high_activity_threshold=sub.high_activity_threshold,
        seed=config.seed, **grid,
    )  # fmt: skip
    once = session.frame_bins("all")
    model = subspace_rfs(tuning, X, prediction=prediction, bins=once, **common)
    repeats = repeat_index_per_bin(
        session.trials.sound_id, session.trial_bins, X.shape[0], start=session.trials.start
    )
    presented = masks["fit"] | masks["holdout"] | masks["validation"]
    if np.unique(repeats[presented & (repeats >= 0)]).size < 2:
        repeats = None  # no sound is repeated: within-bin errors instead
    counts = session.counts[:, tuning.unit_rows]
    measured = subspace_rfs(
        tuning, X, counts=counts, bins=presented, repeats=repeats, **common,
    )  # fmt: skip
    srfs = concatenate_rfs(model, measured)
    if repeats is None or sub.breadth_match_draws == 0:
        if notes is not None:
            why = "no sound is repeated" if repeats is None else "breadth_match_draws = 0"
            notes.append(f"no SNR-matched SRF breadth: {why}")
        return srfs, once
    labels = np.full(tuning.unit_rows.size, "all") if sites is None else sites[tuning.unit_rows]
    srfs = with_snr_matched_breadth(
        srfs, tuning, X, counts, labels, gate=sub.breadth_match_gate,
        n_draws=sub.breadth_match_draws, seed=config.seed, bins=presented, repeats=repeats,
        **{k: v for k, v in common.items() if k != "seed"},
    )  # fmt: skip
    if notes is not None:
        thinned = int(np.sum(srfs.keep_probability[np.isfinite(srfs.keep_probability)] < 1))
        notes.append(
            f"SNR-matched SRF breadth: {thinned} unit(s) thinned to their site's lowest peak z "
            f"(gate {sub.breadth_match_gate:g}, {sub.breadth_match_draws} draws, seed "
            f"{config.seed}, sites {'one' if sites is None else 'as the site step'})"
        )
    return srfs, once


def fit_subspace_model(
    step: SubspaceStep,
    session: SessionData,
    cnn_scores,
    config: AnalysisConfig,
    masks: dict[str, np.ndarray],
    notes: list[str],
) -> None:
    """The ``subspace_model`` step: fit the subspace model on ``step.tuning`` and score it
    (fills ``step.model``, ``step.scores`` and ``step.ev_fraction``)."""
    from nwb_subspace.subspace.model import SubspaceModelEstimator, explained_variance_fraction

    rows = step.unit_rows
    X = session.spectrogram.data
    log.info("fitting the subspace model")
    training = replace(config.training, seed=config.seed)
    sm = SubspaceModelEstimator(training=training, device=config.device).fit(
        step.tuning, X, session.counts[:, rows], masks["fit"], masks["holdout"]
    )
    if sm.history_.failed:
        notes.append(
            f"the subspace model fit failed ({sm.history_.problem}); its scores must not be trusted"
        )
    step.model = sm
    step.scores = sm.score(
        X, session.validation, session.noise_ceiling, columns=rows, seed=config.seed
    )
    step.ev_fraction = explained_variance_fraction(
        step.scores.explained_variance, cnn_scores.explained_variance[step.passing]
    )


def quality_exclusions(
    cnn: EncodingEstimator, cnn_scores, config: AnalysisConfig, n_units: int
) -> dict[int, str]:
    """Units-table row -> why it has no dSTRFs (no spikes to fit, or below the quality cut)."""
    cut = config.subspace.min_noise_corrected_r
    out = {int(r): "no spikes in the training data" for r in range(n_units)}
    for r, value in zip(cnn.units_, cnn_scores.noise_corrected_correlation, strict=True):
        out[int(r)] = f"noise-corrected r {value:.2f} below the quality cut {cut}"
    return out


def analyse_sites(
    session: SessionData,
    step: SubspaceStep,
    exclusions: dict[int, str],
    labels: tuple[np.ndarray, str],
    units: UnitInfo | None,
    config: AnalysisConfig,
) -> SiteStepResult:
    """The site step (:mod:`nwb_subspace.site.step`) on the moments of :func:`analyse_subspaces`."""
    rows = step.unit_rows
    excluded = {r: why for r, why in exclusions.items() if r not in set(rows.tolist())}
    inputs = SiteInputs(
        labels=labels[0],
        label_source=labels[1],
        moments=step.moments,
        unit_rows=rows,
        X=session.spectrogram.data,
        counts=session.counts,
        rate=session.rate,
        frequencies=session.frequencies,
        prediction=step.prediction,
        bins=step.bins,
        tuning=step.tuning,
        srfs=step.srfs,
        units=units,
        excluded=excluded,
    )
    sub = config.subspace
    log.info("site step: %d site(s)", len(set(labels[0].tolist())))
    return SiteStep(
        settings=config.sites, srf_bins=sub.srf_bins, min_occupancy=sub.min_occupancy,
        seed=config.seed,
    ).run(inputs)  # fmt: skip


#: The steps of a run, in order: ``models`` (LN and CNN fits), ``subspace`` (dSTRFs, tuning
#: subspaces, SRFs), ``subspace_model`` (the subspace model fit) and ``sites``.
STEPS = ("models", "subspace", "subspace_model", "sites")
#: The step each step takes its inputs from (dSTRF moments are not stored, so the subspace
#: model and the site step can only follow a ``subspace`` step of the same run).
STEP_NEEDS = {"subspace": "models", "subspace_model": "subspace", "sites": "subspace"}
#: Config keys (top-level settings or whole sections) each step's results depend on, besides
#: those of the step it needs.
STEP_SETTINGS = {
    "models": ("seed", "models", "session", "spectrogram", "training"),
    "subspace": ("subspace",),
    "subspace_model": ("training",),
    "sites": ("sites", "cell_types", "layers"),
}


@dataclass
class RunPlan:
    """What a run does: the steps it runs, the stored run it reuses, and what happened.

    ``steps`` are the requested steps (in :data:`STEPS` order); ``stored`` is the run
    ``reuse`` read back. ``steps_run``, ``steps_reused`` and ``steps_not_stored`` fill in as
    the run goes and end up in the stored config's ``provenance``.
    """

    steps: list[str]
    reuse: str | None = None
    stored: ResultSet | None = None
    steps_run: list[str] = field(default_factory=list)
    steps_reused: list[str] = field(default_factory=list)
    steps_not_stored: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)


#: The steps whose wall-clock seconds a run records (:attr:`SessionResult.seconds`).
TIMED_STEPS = (
    "read + spectrogram",
    "fits",
    "scores",
    "dSTRF moments",
    "PCA",
    "SRFs",
    "subspace model",
    "site step",
    "write",
)


@contextmanager
def timed(seconds: dict[str, float] | None, step: str) -> Iterator[None]:
    """Add the wall-clock seconds of the ``with`` block to ``seconds[step]``."""
    start = time.perf_counter()
    try:
        yield
    finally:
        if seconds is not None:
            seconds[step] = seconds.get(step, 0.0) + time.perf_counter() - start


def plan_steps(steps: Sequence[str] | str | None, reuse: str | None = None) -> list[str]:
    """Check the requested steps (a sequence or ``"subspace,sites"``) and put them in order.

    Default: every step, or with ``reuse`` every step after ``models``.

    Raises
    ------
    ValueError
        An unknown step, ``models`` with ``reuse``, a later step without ``models`` and
        without ``reuse``, or a step without the step it takes its inputs from.
    """
    if isinstance(steps, str):
        steps = [s.strip() for s in steps.split(",") if s.strip()]
    if steps is None:
        return list(STEPS[1:] if reuse else STEPS)
    unknown = [s for s in steps if s not in STEPS]
    if unknown or not steps:
        raise ValueError(
            f"unknown step(s) {unknown or list(steps)}; steps are {', '.join(STEPS)} "
            "(comma-separated, e.g. --steps subspace,sites)"
        )
    wanted = [s for s in STEPS if s in steps]
    if reuse and "models" in wanted:
        raise ValueError(
            f"the models step cannot be rerun on the models of run {reuse!r}: leave "
            "'models' out of the steps, or drop --reuse to refit every model"
        )
    for step in wanted:
        need = STEP_NEEDS.get(step)
        if need is not None and need not in wanted and not (need == "models" and reuse):
            fix = "pass --reuse RUN_NAME" if need == "models" else f"add {need!r} to the steps"
            raise ValueError(
                f"step {step!r} needs the {need!r} step of the same run (its inputs are not "
                f"stored): {fix}"
            )
    return wanted


def step_settings(step: str) -> tuple[str, ...]:
    """Config keys a step's results depend on, its own and those of the steps it needs."""
    need = STEP_NEEDS.get(step)
    return (step_settings(need) if need else ()) + STEP_SETTINGS[step]


def _json(value: Any) -> Any:
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def _flatten(value: Any, prefix: str) -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_flatten(item, f"{prefix}.{key}"))
        return out
    return {prefix: value}


#: Settings added after runs may have been stored, and the value an older run behaved as
#: (a run stored without the key is compared with this value; any other missing key differs).
LEGACY_SETTINGS: dict[str, Any] = {
    "session.overlapping_trials": "error",  # older runs never saw an overlap refused
    "session.layout": "auto",
    "session.sound_dir": None,
    "session.trials_table": None,
    "session.validation_sounds": None,
    "session.validation_fraction": 0.2,
    "spectrogram.level": "none",  # older spectrograms were in the waveform's units
    "spectrogram.channel": "mean",  # older runs took mono sound only
    "training.standardize": False,
    "training.max_retries": 0,
    "training.jackknife": 0,  # older runs fitted no jackknife
    "training.stacked": False,  # older runs fitted each initialisation on its own
}


#: Settings that change how a fit is computed, not what: a stored fit made either way is
#: reused (stacked and separate fits of the same seeds are the same recipe; their weights
#: differ only as float rounding grows, docs/methods.md section 5).
HOW_NOT_WHAT = frozenset({"training.stacked"})


def settings_differences(stored: dict, config: AnalysisConfig, keys: Sequence[str]) -> list[str]:
    """``"key (stored A, now B)"`` for every setting under ``keys`` that differs between a
    stored run's config (a dict read back from the file) and ``config``. A setting the
    stored run predates counts as its :data:`LEGACY_SETTINGS` value; the settings of
    :data:`HOW_NOT_WHAT` are not compared."""
    now = _json(config.to_dict())
    old: dict[str, Any] = {}
    new: dict[str, Any] = {}
    for key in dict.fromkeys(keys):
        old.update(_flatten(stored.get(key, "<not stored>"), key))
        new.update(_flatten(now.get(key), key))
    for key, value in LEGACY_SETTINGS.items():
        if key in new and key not in old and key.split(".")[0] in stored:
            old[key] = _json(value)
    unset = "<not set>"
    return [
        f"{key} (stored {old.get(key, unset)!r}, now {new.get(key, unset)!r})"
        for key in sorted(set(old) | set(new))
        if old.get(key, unset) != new.get(key, unset) and key not in HOW_NOT_WHAT
    ]


def check_reuse(stored: ResultSet, config: AnalysisConfig, reuse: str) -> None:
    """Refuse a reuse whose models were fitted with other settings, or cannot be rebuilt.

    Raises
    ------
    ValueError
        With a one-line reason that names the settings that differ and the fix.
    """
    differ = settings_differences(stored.config, config, STEP_SETTINGS["models"])
    if differ:
        raise ValueError(
            f"cannot reuse the models of run {reuse!r}: settings they depend on differ: "
            f"{'; '.join(differ)}; use the stored run's values, or drop --reuse to refit"
        )
    notes = [str(n) for n in stored.config.get("notes", [])]
    names = {m.name for m in stored.models}
    if any(n.startswith("the CNN fit failed") for n in notes) or "cnn" not in names:
        raise ValueError(
            f"run {reuse!r} holds no usable CNN (its fit failed): drop --reuse to refit"
        )
    missing = [k for k in config.models if k not in names]
    if missing:
        raise ValueError(f"run {reuse!r} holds no {missing} model: drop --reuse to refit")
    n_init = config.training.n_initializations
    complete = bool(stored.config.get("subspace", {}).get("ensemble")) and bool(stored.subspaces)
    k = config.training.jackknife
    if k >= 2:
        if config.subspace.ensemble and not complete and not names & set(jackknife_names(k)):
            raise ValueError(
                f"run {reuse!r} stores none of its {k} CNN jackknife fits, and ensemble dSTRFs "
                "average them: set [subspace] ensemble = false, or drop --reuse to refit"
            )
    elif config.subspace.ensemble and n_init > 1 and "cnn_fit2" not in names and not complete:
        raise ValueError(
            f"run {reuse!r} stores only the best of its {n_init} CNN fits, and ensemble dSTRFs "
            "need every fit: set [subspace] ensemble = false, or drop --reuse to refit"
        )


def _history(info) -> FitHistory:
    """A :class:`FitHistory` from a stored model's training record."""
    train = [] if info.training_loss is None else [float(x) for x in info.training_loss]
    hold = [] if info.validation_loss is None else [float(x) for x in info.validation_loss]
    finite = [x for x in hold if np.isfinite(x)]
    return FitHistory(
        train_loss=train,
        holdout_loss=hold,
        best_epoch=-1 if info.best_epoch is None else int(info.best_epoch),
        best_holdout_loss=min(finite) if finite else float("inf"),
    )


def jackknife_names(k: int) -> list[str]:
    """Names under which the CNN's ``k`` jackknife fits are stored: ``cnn_jk1``..."""
    return ensemble_names(k, range(k))


def estimator_from_stored(
    kind: str,
    members: Sequence[FittedModel],
    unit_rows: np.ndarray,
    config: AnalysisConfig,
    jackknife: dict[int, FittedModel] | None = None,
) -> EncodingEstimator:
    """An :class:`EncodingEstimator` holding stored fits (best first), without fitting.

    ``unit_rows`` are the units-table rows of the session's count columns; ``members`` the
    stored fits of one model (``cnn``, ``cnn_fit2``...), all on the same units;
    ``jackknife`` the stored jackknife fits by fold (0-based; ``cnn_jk1`` is fold 0).
    """
    jackknife = dict(sorted((jackknife or {}).items()))
    column = {int(r): i for i, r in enumerate(np.asarray(unit_rows))}
    rows = members[0].unit_rows
    if any(int(r) not in column for r in rows) or any(
        not np.array_equal(m.unit_rows, rows) for m in [*members, *jackknife.values()]
    ):
        raise ValueError(
            f"the stored {kind.upper()} fits refer to units this session does not have: the "
            "file's units changed since; drop --reuse to refit"
        )
    training = replace(config.training, seed=config.seed)
    est = EncodingEstimator(
        kind,
        training=training if kind == "cnn" else replace(training, jackknife=0),
        device=config.device,
    )
    est.units_ = np.array([column[int(r)] for r in rows], dtype=np.int64)
    est.excluded_units_ = np.setdiff1d(np.arange(len(column)), est.units_)
    est.device_ = resolve_device(config.device)
    # stored fits are rebuilt on the CPU; every member goes where the run computes
    est.members_ = [m.module.to(est.device_) for m in members]
    est.model_ = est.members_[0]
    est.member_histories_ = [_history(m.training) for m in members]
    est.history_ = est.member_histories_[0]
    est.failed_ = False
    est.fit_problems_ = []
    est.jackknife_folds_ = np.asarray(list(jackknife), dtype=np.int64)
    est.jackknife_members_ = [m.module.to(est.device_) for m in jackknife.values()]
    est.jackknife_histories_ = [_history(m.training) for m in jackknife.values()]
    est.jackknife_problems_ = {}
    est.fold_labels_ = est.oof_prediction_ = est.oof_correlation_ = None
    return est


def stored_estimators(
    stored: ResultSet, config: AnalysisConfig, session: SessionData
) -> tuple[dict[str, EncodingEstimator], dict[str, FittedModel]]:
    """The models of ``config.models`` rebuilt from a stored run (the CNN with every stored
    fit ``cnn_fit2``... and jackknife fit ``cnn_jk1``..., whose out-of-fold predictions
    are recomputed), and the stored models by name (to be stored again as they are)."""
    by_name = {m.name: m for m in stored.models}
    fits, kept = {}, {}
    k = config.training.jackknife
    for kind in config.models:
        names = [kind]
        while kind == "cnn" and f"cnn_fit{len(names) + 1}" in by_name:
            names.append(f"cnn_fit{len(names) + 1}")
        members = [by_name[name] for name in names]
        jk = {}
        if kind == "cnn" and k >= 2:
            jk = {j: by_name[n] for j, n in enumerate(jackknife_names(k)) if n in by_name}
        est = estimator_from_stored(kind, members, session.unit_rows, config, jk)
        if jk:
            est.fold_labels_ = jackknife_labels(session, config).labels
            est.out_of_fold(session.spectrogram.data, session.counts, est.fold_labels_)
        fits[kind] = est
        kept.update({name: by_name[name] for name in names})
        kept.update({name: by_name[name] for name in ensemble_names(len(jk), list(jk))})
    return fits, kept


def reuse_models(
    session: SessionData, config: AnalysisConfig, plan: RunPlan, notes: list[str]
) -> tuple[dict[str, EncodingEstimator], dict[str, Any], dict[str, FittedModel]]:
    """The ``models`` step of a reuse: stored fits and their stored scores, nothing fitted."""
    kinds = " and ".join(k.upper() for k in config.models)
    log.info("reusing the %s of run %s: no model is fitted", kinds, plan.reuse)
    fits, kept = stored_estimators(plan.stored, config, session)
    X = session.spectrogram.data
    scores = {
        kind: kept[kind].scores
        if kept[kind].scores is not None
        else est.score(X, session.validation, session.noise_ceiling, seed=config.seed)
        for kind, est in fits.items()
    }
    notes.append(f"models: the {kinds} of run {plan.reuse!r}, reused (no model was fitted)")
    prefixes = tuple(f"{k} fit, " for k in config.models) + ("the LN fit failed",)
    prefixes += ("cnn jackknife",)
    notes.extend(n for n in plan.stored.config.get("notes", []) if str(n).startswith(prefixes))
    for kind, est in fits.items():
        est.failed_ = any(str(n).startswith(f"the {kind.upper()} fit failed") for n in notes)
    return fits, scores, kept


def run_session(
    path: str | Path,
    config: AnalysisConfig | None = None,
    *,
    output: str | Path | None = None,
    overwrite: bool = False,
    progress=None,
    write: bool = True,
    reuse: str | None = None,
    steps: Sequence[str] | str | None = None,
) -> SessionResult:
    """Run the whole analysis on one NWB file and append the results to it.

    Parameters
    ----------
    path : path-like or str
        The NWB file (read-only until the final, atomic write), or an HTTP(S) URL or DANDI
        address (``dandi://dandi/000123/PATH.nwb``, needs the ``dandi`` client), read lazily:
        only the datasets the analysis uses are transferred, and the results go to a local
        ``output`` holding the source's data without its raw voltage (default: in the current
        folder, named by :func:`~nwb_subspace.io.writer.default_output_path`:
        ``sub-01_ses-2_desc-subspace_ecephys.nwb`` for ``sub-01_ses-2_ecephys.nwb``, else
        ``<stem>_desc-subspace.nwb``).
    config : AnalysisConfig, optional
    output : path-like, optional
        Write a new file with the source's data plus the results instead of appending.
    overwrite : bool
        Replace a stored run of the same name.
    progress : callable, optional
        ``progress(stage, epoch, holdout_loss)`` during model fits.
    write : bool
        Set False to skip writing (results stay in memory).
    reuse : str, optional
        Name of a run stored in ``path`` whose LN and CNN (and every CNN fit behind the
        ensemble dSTRFs) are rebuilt instead of refitted; refused, before any work, when
        the settings they depend on (:data:`STEP_SETTINGS` ``["models"]``) differ from
        ``config``'s. The new run (``config.run_name``, which must differ from ``reuse``
        unless ``overwrite``) records where it came from in its config's ``provenance``.
    steps : sequence of str or str, optional
        Steps to run, from :data:`STEPS` (or comma-separated). Default: every step, or
        with ``reuse`` every step after ``models``. With ``reuse``, a later step left out
        is stored from the reused run when its inputs are unchanged, else not stored (the
        notes say which); ``["subspace", "sites"]`` runs no optimiser at all.
    """
    config = config or AnalysisConfig()
    plan = RunPlan(plan_steps(steps, reuse), reuse=reuse)
    if reuse is not None and is_remote(str(path)):
        raise ValueError(
            "--reuse reads a stored run from a local file: run on the local output file that "
            "holds it instead of the remote source"
        )
    if is_remote(str(path)):
        with remote_cache():
            url = str(resolve_source(str(path)))
            probe(url)  # a bad URL or a 404 fails here, in one line
            if write:
                output = Path(output or default_output_path(str(path)))
                if output.exists():
                    raise FileExistsError(f"output {output} exists; choose a new path or remove it")
            return _run_session(
                url,
                config,
                plan,
                output=output,
                overwrite=overwrite,
                progress=progress,
                write=write,
            )
    return _run_session(
        Path(path), config, plan, output=output, overwrite=overwrite, progress=progress, write=write
    )


def _drop_damaged_run(path: Path, run_name: str) -> None:
    """With ``overwrite``: a stored run of this name that cannot be read (damaged by a tool
    or a crash) is dropped at the HDF5 level first, so that reading the session works and the
    new run replaces it; other damaged runs are left for ``nwb-subspace repair``."""
    try:
        damaged = {run: why for run, why in check_runs(path, runs=[run_name]).items() if why}
    except KeyError:  # no such run yet
        return
    if run_name in damaged:
        log.warning("dropping run %r, which cannot be read (%s)", run_name, damaged[run_name])
        drop_runs(path, [run_name])


def _check_run(
    path: Path | str,
    config: AnalysisConfig,
    plan: RunPlan,
    *,
    output: str | Path | None,
    overwrite: bool,
    write: bool,
) -> None:
    """Every check that can fail before any work; reads the reused run into ``plan``."""
    if write and plan.reuse == config.run_name and not overwrite:
        raise ValueError(
            f"the new run needs a name other than {plan.reuse!r}, the run it reuses: pass "
            f"--run-name NAME (or --overwrite to replace run {plan.reuse!r})"
        )
    if write and output is not None and Path(output).exists():
        raise FileExistsError(f"output {output} exists; choose a new path or remove it")
    if isinstance(path, str):
        return
    if write and overwrite and output is None:
        _drop_damaged_run(path, config.run_name)
    exists_check = write and not overwrite
    runs = list_runs(path) if plan.reuse is not None or exists_check else []
    if exists_check and config.run_name in runs:
        # Say so before hours of fitting, not after (with --output too: the copy holds it).
        raise ResultsExistError(
            f"{path} already holds results named {config.run_name!r}; choose another run "
            "name or pass overwrite=True to replace them"
        )
    if plan.reuse is None:
        return
    if plan.reuse not in runs:
        raise ValueError(
            f"{path} holds no run named {plan.reuse!r} to reuse (runs: {runs}); pass one of "
            "them to --reuse, or drop --reuse to fit the models"
        )
    plan.stored = read_results(path, plan.reuse)
    check_reuse(plan.stored, config, plan.reuse)


def _run_session(
    path: Path | str,
    config: AnalysisConfig,
    plan: RunPlan,
    *,
    output: str | Path | None,
    overwrite: bool,
    progress,
    write: bool,
) -> SessionResult:
    """:func:`run_session` on a local path or a resolved URL (inside a remote cache)."""
    notes: list[str] = []
    if isinstance(path, str):
        notes.append(f"source {path} read lazily; the output holds its data without raw voltage")
    _check_run(path, config, plan, output=output, overwrite=overwrite, write=write)
    log.info("reading %s", path)
    with timed(plan.seconds, "read + spectrogram"):
        session = load_session(path, config)
    masks = session_masks(session)
    units = read_unit_info(path, config, notes)
    labels = None
    if "subspace" in plan.steps or (config.sites.enabled and "sites" in plan.steps):
        # a bad group_by fails before fitting; the subspace step matches SRF breadths by site
        main = None if units is None else units.main_channel
        with open_binary(path) as handle:
            labels = read_site_labels(handle, config.sites.group_by, main)
    if plan.reuse is None:
        with timed(plan.seconds, "fits"):
            fits = fit_models(session, config, masks, progress, notes)
        X = session.spectrogram.data
        with timed(plan.seconds, "scores"):
            scores = {
                k: est.score(X, session.validation, session.noise_ceiling, seed=config.seed)
                for k, est in fits.items()
            }
        kept: dict[str, FittedModel] = {}
        plan.steps_run.append("models")
    else:
        fits, scores, kept = reuse_models(session, config, plan, notes)
        plan.steps_reused.append("models")
    step, sites, carried = _later_steps(
        session, fits, scores, config, masks, labels, units, plan, notes
    )
    with timed(plan.seconds, "write"):  # the stored predictions are part of what is written
        models = _model_results(session, config, fits, scores, step, kept, carried.get("model"))
        models = with_validation_predictions(models, session, names={*fits, "subspace"})
    results = ResultSet(
        spectrograms=_spectrogram_results(session),
        models=models,
        subspaces=[step.tuning] if step.tuning is not None else [],
        srfs=[step.srfs] if step.srfs is not None else [],
        site_subspaces=list(sites.site_subspaces) if sites is not None else [],
        site_statistics=[sites.statistics] if sites is not None and sites.statistics else [],
        unit_columns=unit_columns(units) if units is not None else [],
        config={
            **config.to_dict(),
            "split": session.split.to_dict(),
            "notes": notes,
            "provenance": provenance(plan, config),
        },
    )
    results.site_subspaces.extend(carried.get("site_subspaces", []))
    results.site_statistics.extend(carried.get("site_statistics", []))
    with timed(plan.seconds, "write"):
        out, summary_files = _write(path, results, config, sites, notes, output, overwrite, write)
    _log_seconds(plan.seconds)
    return SessionResult(
        session=session,
        units=units,
        estimators=fits,
        scores=scores,
        results=results,
        tuning=step.tuning,
        srfs=step.srfs,
        ev_fraction=step.ev_fraction if step.model is not None else carried.get("ev_fraction"),
        output=out,
        notes=notes,
        sites=sites,
        summary_files=summary_files,
        seconds=dict(plan.seconds),
    )


def _log_seconds(seconds: dict[str, float]) -> None:
    total = sum(seconds.values())
    parts = ", ".join(f"{k} {v:.1f} s" for k, v in seconds.items())
    log.info("steps took %.1f s: %s", total, parts)


def _later_steps(
    session: SessionData,
    fits: dict[str, EncodingEstimator],
    scores: dict[str, Any],
    config: AnalysisConfig,
    masks: dict[str, np.ndarray],
    labels: tuple[np.ndarray, str] | None,
    units: UnitInfo | None,
    plan: RunPlan,
    notes: list[str],
) -> tuple[SubspaceStep, SiteStepResult | None, dict[str, Any]]:
    """The ``subspace``, ``subspace_model`` and ``sites`` steps that ``plan`` asks for, and
    what is carried over from a reused run for the ones it leaves out."""
    cnn = fits["cnn"]
    if cnn.failed_:  # kept only with keep_partial
        notes.append("no dSTRFs, tuning subspaces or site step: the CNN fit failed")
        return SubspaceStep(), None, {}
    if "subspace" not in plan.steps:
        notes.append(f"no dSTRFs, tuning subspaces or later steps: steps were {plan.steps}")
        return SubspaceStep(), None, {}
    site_of_row = None if labels is None else np.asarray(labels[0], dtype=object).astype(str)
    step = tuning_subspaces(
        session, cnn, scores["cnn"], config, masks, notes, sites=site_of_row, seconds=plan.seconds
    )
    plan.steps_run.append("subspace")
    if "subspace_model" in plan.steps:
        if step.tuning is not None:
            with timed(plan.seconds, "subspace model"):
                fit_subspace_model(step, session, scores["cnn"], config, masks, notes)
        plan.steps_run.append("subspace_model")
    sites = None
    if labels is not None and config.sites.enabled and "sites" in plan.steps:
        exclusions = quality_exclusions(cnn, scores["cnn"], config, session.n_units)
        with timed(plan.seconds, "site step"):
            sites = analyse_sites(session, step, exclusions, labels, units, config)
        notes.extend(sites.notes)
        plan.steps_run.append("sites")
    return step, sites, _carry_over(step, scores["cnn"], config, plan, notes)


def _carry_over(
    step: SubspaceStep, cnn_scores, config: AnalysisConfig, plan: RunPlan, notes: list[str]
) -> dict[str, Any]:
    """Results of the reused run for the steps left out: stored again when their inputs are
    unchanged (the subspace model and its ``ev_fraction``, the site results), else noted."""
    from nwb_subspace.subspace.model import explained_variance_fraction

    out: dict[str, Any] = {}
    left_out = [s for s in ("subspace_model", "sites") if s not in plan.steps]
    if "sites" in left_out and not config.sites.enabled:
        left_out.remove("sites")
    if plan.stored is None or step.tuning is None:
        notes.extend(f"step {s!r} not run: not in the steps" for s in left_out)
        return out
    stored, name = plan.stored, plan.reuse
    for s in left_out:
        what = {"subspace_model": "no subspace model", "sites": "no site step results"}[s]
        differ = settings_differences(stored.config, config, step_settings(s))
        model = next((m for m in stored.models if m.kind == "subspace"), None)
        if s == "subspace_model" and model is not None:
            held = np.array_equal(model.unit_rows, step.unit_rows) and model.scores is not None
        else:
            held = s == "sites" and bool(stored.site_subspaces or stored.site_statistics)
        if differ:
            plan.steps_not_stored.append(s)
            notes.append(
                f"{what}: {s!r} is not in the steps and its inputs changed since run "
                f"{name!r} ({'; '.join(differ)}); add {s} to the steps to rerun it"
            )
        elif not held:
            notes.append(f"{what}: {s!r} is not in the steps and run {name!r} holds none")
        elif s == "subspace_model":
            out["model"] = model
            out["ev_fraction"] = explained_variance_fraction(
                model.scores.explained_variance, cnn_scores.explained_variance[step.passing]
            )
            plan.steps_reused.append(s)
            notes.append(f"subspace model: that of run {name!r} (its inputs are unchanged)")
        else:
            out["site_subspaces"] = list(stored.site_subspaces)
            out["site_statistics"] = list(stored.site_statistics)
            plan.steps_reused.append(s)
            notes.append(
                f"site step: that of run {name!r} (its inputs are unchanged); no summary CSVs "
                "were written"
            )
    return out


def _spectrogram_results(session: SessionData) -> list[SpectrogramResult]:
    """The spectrogram to store: the computed one (none when the file already holds it)."""
    if session.spectrogram_source.kind != "computed":
        return []
    spec = session.spectrogram
    return [
        SpectrogramResult(
            data=spec.data,
            frequencies=spec.frequencies,
            rate=spec.rate,
            starting_time=spec.starting_time,
            settings=spec.settings,
            name="spectrogram",
            source_sound=session.spectrogram_source.name,
        )
    ]


def _model_results(
    session: SessionData,
    config: AnalysisConfig,
    fits: dict[str, EncodingEstimator],
    scores: dict[str, Any],
    step: SubspaceStep,
    kept: dict[str, FittedModel],
    carried_model: FittedModel | None,
) -> list[FittedModel]:
    """The models to store: LN, CNN, the CNN's other fits behind ensemble dSTRFs, and the
    subspace model. ``kept`` (reused models, by name) are stored as they were."""
    spec_name = "spectrogram" if session.spectrogram_source.kind == "computed" else None
    bin_s = 1 / session.rate
    X = session.spectrogram.data

    def stored_as(
        name: str, est: EncodingEstimator, member: int, unit_scores, jackknife: int | None = None
    ) -> FittedModel:
        if name in kept:
            return replace(kept[name], spectrogram=spec_name)
        return est.to_result(
            name,
            unit_rows=session.unit_rows,
            bin_size_s=bin_s,
            scores=unit_scores() if callable(unit_scores) else unit_scores,
            spectrogram=spec_name,
            member=member,
            jackknife=jackknife,
        )

    models = [stored_as(kind, est, 0, scores[kind]) for kind, est in fits.items()]
    cnn = fits["cnn"]
    if config.subspace.ensemble and step.tuning is not None:  # the other fits behind the dSTRFs
        jackknife = config.training.jackknife >= 2 and len(cnn.jackknife_members_) > 0
        if jackknife:  # the jackknife fits, cnn_jk{fold + 1}
            names = ensemble_names(len(cnn.jackknife_folds_), cnn.jackknife_folds_)
            pairs = [(0, i, name) for i, name in enumerate(names)]
        else:  # the other initialisations, cnn_fit2...
            names = ensemble_names(len(cnn.members_))[1:]
            pairs = [(m, None, name) for m, name in enumerate(names, start=1)]
        for member, jk, name in pairs:

            def member_scores(member: int = member, jk: int | None = jk):
                return cnn.score(
                    X,
                    session.validation,
                    session.noise_ceiling,
                    seed=config.seed,
                    member=member,
                    jackknife=jk,
                )

            models.append(stored_as(name, cnn, member, member_scores, jk))
    if step.model is not None:
        # validation scores of the passing units, as for LN/CNN
        models.append(
            step.model.to_result(
                "subspace", bin_size_s=bin_s, scores=step.scores, spectrogram=spec_name
            )
        )
    elif carried_model is not None:
        models.append(replace(carried_model, spectrogram=spec_name))
    return models


def with_validation_predictions(
    models: list[FittedModel], session: SessionData, names: set[str]
) -> list[FittedModel]:
    """The models, those named in ``names`` with their predicted rate on the validation bins.

    One forward pass over the session's spectrogram per model; the rate (spikes/s, float32)
    is kept on every bin of every presentation of the validation sounds, stamped with the
    bins' starts on the session clock. Other models (the extra CNN fits behind ensemble
    dSTRFs) are returned unchanged: their predictions would multiply the file size.
    """
    bins = validation_bins(session.validation)
    if not bins.size:
        return models
    X = session.spectrogram.data
    times = session.starting_time + bins / session.rate
    out = []
    for model in models:
        if model.name in names:
            device = next(model.module.parameters()).device
            counts = predict(model.module, X, device=device)[bins]
            rate = (counts / model.bin_size_s).astype(np.float32)
            model = replace(model, validation_prediction=ModelPrediction(times, rate))
        out.append(model)
    return out


def provenance(plan: RunPlan, config: AnalysisConfig) -> dict[str, Any]:
    """Where each stored step comes from: the run that computed it, the settings and the
    package versions it ran with (stored in the run's config as ``provenance``)."""
    from nwb_subspace.io.to_nwb import software_versions

    now = _json(config.to_dict())
    versions = software_versions()
    steps: dict[str, Any] = {}
    for step in plan.steps_run:
        keys = STEP_SETTINGS[step] + (("seed", "device") if step != "sites" else ("seed",))
        steps[step] = {
            "run": config.run_name,
            "parameters": {key: now.get(key) for key in dict.fromkeys(keys)},
            "versions": versions,
        }
    if plan.stored is not None:
        old = plan.stored.config
        cnn = next(m for m in plan.stored.models if m.name == "cnn")
        for step in plan.steps_reused:
            keys = STEP_SETTINGS[step] + (("seed", "device") if step != "sites" else ("seed",))
            steps[step] = (old.get("provenance") or {}).get("steps", {}).get(step) or {
                "run": plan.reuse,
                "parameters": {key: old.get(key) for key in dict.fromkeys(keys)},
                "versions": dict(cnn.training.software_versions),
            }
    return {
        "reused_from": plan.reuse,
        "steps_run": list(plan.steps_run),
        "steps_reused": list(plan.steps_reused),
        "steps_not_stored": list(plan.steps_not_stored),
        "steps": steps,
    }


def _fill_subspace_fraction(sites: SiteStepResult, results: ResultSet) -> None:
    """Each site's subspace-model fraction in ``sites.site_table``, from the stored scores
    (the same numbers ``summarize`` reads back from the file)."""
    models = {m.name: m for m in results.models}
    if "cnn" not in models or "subspace" not in models or sites.site_table.empty:
        return
    cnn, sub = models["cnn"], models["subspace"]
    by_site = subspace_fraction_by_site(
        sites.labels, cnn.unit_rows, cnn.scores.explained_variance,
        sub.unit_rows, sub.scores.explained_variance,
    )  # fmt: skip
    sites.site_table["subspace_fraction"] = [
        by_site.get(str(s), np.nan) for s in sites.site_table["site"]
    ]


def _write(
    path: Path | str,
    results: ResultSet,
    config: AnalysisConfig,
    sites: SiteStepResult | None,
    notes: list[str],
    output: str | Path | None,
    overwrite: bool,
    write: bool,
) -> tuple[Path | None, list[Path]]:
    """Write the results (and the site summary CSVs next to them) unless ``write`` is false."""
    if not write:
        return None, []
    out = write_results(path, results, config.run_name, output=output, overwrite=overwrite)
    log.info("results written to %s (run %r)", out, config.run_name)
    summary_files: list[Path] = []
    if sites is not None:
        _fill_subspace_fraction(sites, results)
        summary_files, skipped = write_summary(
            out.with_name(f"{store_stem(out)}_{config.run_name}"),
            sites.unit_table,
            sites.site_table,
            sites.statistics_table,
        )
        notes.extend(skipped)
    return out, summary_files
