"""One session end to end, from an :class:`~nwb_subspace.config.AnalysisConfig`.

NWB in -> units, stimulus, responses -> LN and CNN -> dSTRFs, tuning subspaces, SRFs,
subspace model -> sites (shared subspace, tiling, cell types and layers; ``sites.py``) ->
results appended to NWB, and the summary CSVs written next to it. Each step is a small
function; ``run_session`` chains them and returns a :class:`SessionResult` that holds
everything (for reports).
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from nwb_subspace.config import AnalysisConfig
from nwb_subspace.errors import ModelFitError
from nwb_subspace.io.remote import (
    is_remote,
    open_binary,
    probe,
    remote_cache,
    remote_name,
    resolve_source,
)
from nwb_subspace.io.session import SessionData, load_session_data
from nwb_subspace.io.units.reader import UnitInfo, read_units, unit_columns
from nwb_subspace.io.writer import ResultsExistError, default_output_path, list_runs, write_results
from nwb_subspace.models.estimator import (
    EncodingEstimator,
    score_predictions,
    validation_predictions,
    validation_psths,
)
from nwb_subspace.results import (
    FittedModel,
    ResultSet,
    SpectrogramResult,
    SubspaceRFs,
    TuningSubspaces,
)
from nwb_subspace.site.step import SiteInputs, SiteStep, SiteStepResult, read_site_labels
from nwb_subspace.site.tables import write_summary

log = logging.getLogger("nwb_subspace")


@dataclass
class SessionResult:
    """Everything one run produced (in memory), and where it was written.

    ``sites`` holds the site step (site subspaces, ``tilings``, the per-unit and per-site
    summary tables, its notes); None when ``[sites] enabled`` is false. ``summary_files``
    are the CSVs written next to ``output`` (``<stem>_<run>_units.csv``, ``_sites.csv``,
    ``_statistics.csv``; empty tables are not written).
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

    @property
    def tilings(self) -> dict:
        """Tiling result of each site (empty without a site step)."""
        return {} if self.sites is None else self.sites.tilings


@dataclass
class SubspaceStep:
    """What :func:`analyse_subspaces` produced (None fields: no unit passed the cut).

    ``moments`` are the dSTRF moments of the passing units (computed once, reused by the
    site step); ``unit_rows`` their units-table rows; ``prediction`` the CNN prediction of
    those units at every bin; ``bins`` the stimulus bins used.
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


def ensemble_names(n_fits: int) -> list[str]:
    """Names of the stored CNN fits behind ensemble dSTRFs: ``cnn`` (best), ``cnn_fit2``..."""
    return ["cnn"] + [f"cnn_fit{j}" for j in range(2, n_fits + 1)]


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
    fits = {}
    for kind in config.models:
        log.info("fitting the %s model", kind)
        est = EncodingEstimator(kind, training=training, device=config.device, progress=progress)
        with warnings.catch_warnings():  # failed attempts are reported in the notes
            warnings.filterwarnings(
                "ignore", message=r".* attempt \d+ failed", category=UserWarning
            )
            fits[kind] = est.fit(X, Y, masks["fit"], masks["holdout"])
        notes.extend(f"{kind} fit, {problem}" for problem in est.fit_problems_)
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


def analyse_subspaces(
    session: SessionData,
    cnn: EncodingEstimator,
    cnn_scores,
    config: AnalysisConfig,
    masks: dict[str, np.ndarray],
    notes: list[str],
) -> SubspaceStep:
    """dSTRF moments, tuning subspaces, SRFs and the subspace model for units passing the
    quality cut (noise-corrected correlation of the CNN >= ``min_noise_corrected_r``)."""
    from nwb_subspace.dstrf.compute import dstrf_moments
    from nwb_subspace.subspace.model import SubspaceModelEstimator, explained_variance_fraction
    from nwb_subspace.subspace.srf import subspace_rfs
    from nwb_subspace.subspace.tuning import TuningSubspaceEstimator

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
    passing = np.flatnonzero(nc >= sub.min_noise_corrected_r)  # indices into cnn.units_
    stim = masks["fit"] | masks["holdout"] | masks["validation"]
    if passing.size == 0:
        notes.append(
            f"no unit reached a noise-corrected correlation of {sub.min_noise_corrected_r}; "
            "no tuning subspaces were computed"
        )
        return SubspaceStep(bins=stim)
    rows = cnn.units_[passing]
    X = session.spectrogram.data
    log.info("dSTRFs of %d units at %d bins", passing.size, int(stim.sum()))
    fits = cnn.members_ if sub.ensemble else [cnn.model_]
    if len(fits) > 1:
        notes.append(
            f"dSTRFs: the mean over {len(fits)} CNN fits (one per initialisation; stored as "
            f"{', '.join(ensemble_names(len(fits)))}); dimensionality from the variance they "
            "agree on"
        )
    moments = dstrf_moments(
        fits, X, bins=stim, units=passing, outlier_threshold=sub.outlier_threshold
    )
    est = TuningSubspaceEstimator(
        n_components=sub.n_components, variance_threshold=sub.variance_threshold, seed=config.seed
    )
    tuning = est.fit(
        moments, frequencies=session.frequencies, bin_s=1 / session.rate, unit_rows=rows
    ).result_
    by_status: dict[str, list[int]] = {}
    for row, status in zip(rows, est.status_, strict=True):
        if status != "ok":
            by_status.setdefault(status, []).append(int(row))
    notes.extend(f"tuning subspace of unit rows {r}: {status}" for status, r in by_status.items())
    prediction = cnn.predict(X)[:, passing]
    srfs = subspace_rfs(
        tuning,
        X,
        prediction=prediction,
        counts=session.counts[:, rows],
        rate=session.rate,
        bins=stim,
        n_bins=sub.srf_bins,
        min_occupancy=sub.min_occupancy,
        high_activity_threshold=sub.high_activity_threshold,
    )
    log.info("fitting the subspace model")
    training = replace(config.training, seed=config.seed)
    sm = SubspaceModelEstimator(training=training, device=config.device).fit(
        tuning, X, session.counts[:, rows], masks["fit"], masks["holdout"]
    )
    if sm.history_.failed:
        notes.append(
            f"the subspace model fit failed ({sm.history_.problem}); its scores must not be trusted"
        )
    pred = validation_predictions(sm.predict(X), session.validation)
    psth = validation_psths(session.validation, rows)
    ceiling = np.asarray(session.noise_ceiling)[rows]
    sm_scores = score_predictions(pred, psth, ceiling, seed=config.seed)
    ev_fraction = explained_variance_fraction(
        sm_scores.explained_variance, cnn_scores.explained_variance[passing]
    )
    return SubspaceStep(
        tuning=tuning,
        srfs=srfs,
        model=sm,
        scores=sm_scores,
        ev_fraction=ev_fraction,
        moments=moments,
        unit_rows=np.asarray(rows, dtype=np.int64),
        prediction=prediction,
        bins=stim,
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


def run_session(
    path: str | Path,
    config: AnalysisConfig | None = None,
    *,
    output: str | Path | None = None,
    overwrite: bool = False,
    progress=None,
    write: bool = True,
) -> SessionResult:
    """Run the whole analysis on one NWB file and append the results to it.

    Parameters
    ----------
    path : path-like or str
        The NWB file (read-only until the final, atomic write), or an HTTP(S) URL or DANDI
        asset spec (``dandi://000123/PATH.nwb``, needs the ``dandi`` client), read lazily:
        only the datasets the analysis uses are transferred, and the results go to a local
        ``output`` (default ``<name>_subspace.nwb`` in the current folder) holding the
        source's data without its raw voltage.
    config : AnalysisConfig, optional
    output : path-like, optional
        Write a new file with the source's data plus the results instead of appending.
    overwrite : bool
        Replace a stored run of the same name.
    progress : callable, optional
        ``progress(stage, epoch, holdout_loss)`` during model fits.
    write : bool
        Set False to skip writing (results stay in memory).
    """
    config = config or AnalysisConfig()
    if is_remote(str(path)):
        with remote_cache():
            url = str(resolve_source(str(path)))
            probe(url)  # a bad URL or a 404 fails here, in one line
            if write:
                output = Path(output or default_output_path(Path(remote_name(url))))
                if output.exists():
                    raise FileExistsError(f"output {output} exists; choose a new path or remove it")
            return _run_session(
                url, config, output=output, overwrite=overwrite, progress=progress, write=write
            )
    return _run_session(
        Path(path), config, output=output, overwrite=overwrite, progress=progress, write=write
    )


def _run_session(
    path: Path | str,
    config: AnalysisConfig,
    *,
    output: str | Path | None,
    overwrite: bool,
    progress,
    write: bool,
) -> SessionResult:
    """:func:`run_session` on a local path or a resolved URL (inside a remote cache)."""
    remote = isinstance(path, str)
    notes: list[str] = []
    if remote:
        notes.append(f"source {path} read lazily; the output holds its data without raw voltage")
    elif write and not overwrite and output is None and config.run_name in list_runs(path):
        # Say so before hours of fitting, not after.
        raise ResultsExistError(
            f"{path} already holds results named {config.run_name!r}; choose another run "
            "name or pass overwrite=True to replace them"
        )
    log.info("reading %s", path)
    session = load_session(path, config)
    masks = session_masks(session)
    units = read_unit_info(path, config, notes)
    labels = None
    if config.sites.enabled:  # a bad group_by column fails here, before any fitting
        main = None if units is None else units.main_channel
        with open_binary(path) as handle:
            labels = read_site_labels(handle, config.sites.group_by, main)
    fits = fit_models(session, config, masks, progress, notes)
    X = session.spectrogram.data
    scores = {
        k: est.score(X, session.validation, session.noise_ceiling, seed=config.seed)
        for k, est in fits.items()
    }
    if fits["cnn"].failed_:  # kept only with keep_partial
        notes.append("no dSTRFs, tuning subspaces or site step: the CNN fit failed")
        step = SubspaceStep()
        labels = None
    else:
        step = analyse_subspaces(session, fits["cnn"], scores["cnn"], config, masks, notes)
    tuning, srfs, sm = step.tuning, step.srfs, step.model
    sites = None
    if labels is not None:
        exclusions = quality_exclusions(fits["cnn"], scores["cnn"], config, session.n_units)
        sites = analyse_sites(session, step, exclusions, labels, units, config)
        notes.extend(sites.notes)

    spec = session.spectrogram
    spectrograms = []
    spec_name = None
    if session.spectrogram_source.kind == "computed":
        spec_name = "spectrogram"
        spectrograms.append(
            SpectrogramResult(
                data=spec.data,
                frequencies=spec.frequencies,
                rate=spec.rate,
                starting_time=spec.starting_time,
                settings=spec.settings,
                name=spec_name,
                source_sound=session.spectrogram_source.name,
            )
        )
    bin_s = 1 / session.rate
    models: list[FittedModel] = [
        est.to_result(
            kind,
            unit_rows=session.unit_rows,
            bin_size_s=bin_s,
            scores=scores[kind],
            spectrogram=spec_name,
        )
        for kind, est in fits.items()
    ]
    cnn = fits["cnn"]
    if config.subspace.ensemble and tuning is not None:  # the other fits behind the dSTRFs
        for member, name in enumerate(ensemble_names(len(cnn.members_))[1:], start=1):
            models.append(
                cnn.to_result(
                    name,
                    unit_rows=session.unit_rows,
                    bin_size_s=bin_s,
                    scores=cnn.score(
                        X,
                        session.validation,
                        session.noise_ceiling,
                        seed=config.seed,
                        member=member,
                    ),
                    spectrogram=spec_name,
                    member=member,
                )
            )
    if sm is not None:
        fitted = sm.to_fitted_model(bin_size_s=bin_s, name="subspace")
        fitted.spectrogram = spec_name
        fitted.scores = step.scores  # validation scores of the passing units, as for LN/CNN
        models.append(fitted)
    results = ResultSet(
        spectrograms=spectrograms,
        models=models,
        subspaces=[tuning] if tuning is not None else [],
        srfs=[srfs] if srfs is not None else [],
        site_subspaces=list(sites.site_subspaces) if sites is not None else [],
        site_statistics=[sites.statistics] if sites is not None and sites.statistics else [],
        unit_columns=unit_columns(units) if units is not None else [],
        config={**config.to_dict(), "split": session.split.to_dict(), "notes": notes},
    )
    out, summary_files = None, []
    if write:
        out = write_results(path, results, config.run_name, output=output, overwrite=overwrite)
        log.info("results written to %s (run %r)", out, config.run_name)
        if sites is not None:
            summary_files, skipped = write_summary(
                out.with_name(f"{out.stem}_{config.run_name}"),
                sites.unit_table,
                sites.site_table,
                sites.statistics_table,
            )
            notes.extend(skipped)
    return SessionResult(
        session=session,
        units=units,
        estimators=fits,
        scores=scores,
        results=results,
        tuning=tuning,
        srfs=srfs,
        ev_fraction=step.ev_fraction,
        output=out,
        notes=notes,
        sites=sites,
        summary_files=summary_files,
    )
