"""One session end to end, from an :class:`~nwb_subspace.config.AnalysisConfig`.

NWB in -> units, stimulus, responses -> LN and CNN -> dSTRFs, tuning subspaces, SRFs,
subspace model -> results appended to NWB. Each step is a small function; ``run_session``
chains them and returns a :class:`SessionResult` that holds everything (for reports).
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from .config import AnalysisConfig
from .io.session import SessionData, load_session_data
from .io.units import UnitInfo, read_units, unit_columns
from .io.writer import ResultsExistError, list_runs, write_results
from .models.estimator import EncodingEstimator, validation_predictions, validation_psths
from .results import FittedModel, ResultSet, SpectrogramResult, SubspaceRFs, TuningSubspaces

log = logging.getLogger("nwb_subspace")


@dataclass
class SessionResult:
    """Everything one run produced (in memory), and where it was written."""

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
    )


def read_unit_info(path: Path, config: AnalysisConfig, notes: list[str]) -> UnitInfo | None:
    """Cell types, depths and layers; a failure here is reported, not fatal."""
    from .celltypes import CellTypeParams

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


def fit_models(
    session: SessionData, config: AnalysisConfig, masks: dict[str, np.ndarray], progress=None
) -> dict[str, EncodingEstimator]:
    training = replace(config.training, seed=config.seed)
    X, Y = session.spectrogram.data, session.counts
    fits = {}
    for kind in config.models:
        log.info("fitting the %s model", kind)
        est = EncodingEstimator(kind, training=training, device=config.device, progress=progress)
        fits[kind] = est.fit(X, Y, masks["fit"], masks["holdout"])
    return fits


def analyse_subspaces(
    session: SessionData,
    cnn: EncodingEstimator,
    cnn_scores,
    config: AnalysisConfig,
    masks: dict[str, np.ndarray],
    notes: list[str],
):
    """dSTRF moments, tuning subspaces, SRFs and the subspace model for units passing the
    quality cut (noise-corrected correlation of the CNN >= ``min_noise_corrected_r``)."""
    from .dstrf import dstrf_moments
    from .srf import subspace_rfs
    from .subspace_fit import SubspaceModelEstimator, explained_variance_fraction
    from .tuning import TuningSubspaceEstimator

    sub = config.subspace
    nc = np.nan_to_num(cnn_scores.noise_corrected_correlation, nan=-1.0)
    passing = np.flatnonzero(nc >= sub.min_noise_corrected_r)  # indices into cnn.units_
    if passing.size == 0:
        notes.append(
            f"no unit reached a noise-corrected correlation of {sub.min_noise_corrected_r}; "
            "no tuning subspaces were computed"
        )
        return None, None, None, None
    rows = cnn.units_[passing]
    X = session.spectrogram.data
    stim = masks["fit"] | masks["holdout"] | masks["validation"]
    log.info("dSTRFs of %d units at %d bins", passing.size, int(stim.sum()))
    moments = dstrf_moments(
        cnn.model_, X, bins=stim, units=passing, outlier_threshold=sub.outlier_threshold
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
    pred = validation_predictions(sm.predict(X), session.validation)
    psth = validation_psths(session.validation, rows)
    from .scoring import explained_variance

    ev_sub = explained_variance(pred, psth)
    ev_fraction = explained_variance_fraction(ev_sub, cnn_scores.explained_variance[passing])
    return tuning, srfs, sm, ev_fraction


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
    path : path-like
        The NWB file (read-only until the final, atomic write).
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
    path = Path(path)
    notes: list[str] = []
    if write and not overwrite and output is None and config.run_name in list_runs(path):
        # Say so before hours of fitting, not after.
        raise ResultsExistError(
            f"{path} already holds results named {config.run_name!r}; choose another run "
            "name or pass overwrite=True to replace them"
        )
    log.info("reading %s", path)
    session = load_session(path, config)
    masks = session_masks(session)
    units = read_unit_info(path, config, notes)
    fits = fit_models(session, config, masks, progress)
    X = session.spectrogram.data
    scores = {
        k: est.score(X, session.validation, session.noise_ceiling, seed=config.seed)
        for k, est in fits.items()
    }
    tuning, srfs, sm, ev_fraction = analyse_subspaces(
        session, fits["cnn"], scores["cnn"], config, masks, notes
    )

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
    if sm is not None:
        fitted = sm.to_fitted_model(bin_size_s=bin_s, name="subspace")
        fitted.spectrogram = spec_name
        models.append(fitted)
    results = ResultSet(
        spectrograms=spectrograms,
        models=models,
        subspaces=[tuning] if tuning is not None else [],
        srfs=[srfs] if srfs is not None else [],
        unit_columns=unit_columns(units) if units is not None else [],
        config={**config.to_dict(), "split": session.split.to_dict(), "notes": notes},
    )
    out = None
    if write:
        out = write_results(path, results, config.run_name, output=output, overwrite=overwrite)
        log.info("results written to %s (run %r)", out, config.run_name)
    return SessionResult(
        session=session,
        units=units,
        estimators=fits,
        scores=scores,
        results=results,
        tuning=tuning,
        srfs=srfs,
        ev_fraction=ev_fraction,
        output=out,
        notes=notes,
    )
