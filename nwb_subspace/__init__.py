"""nwb-subspace: tuning subspaces of auditory-cortex neurons, stored as NWB.

Importing the package loads the ``ndx-subspace`` NWB extension namespace and registers
its Python classes, so that files holding our types can be read and written with pynwb.
Everything else is imported on first use (``nwb_subspace.run_session`` imports torch only
when it is first looked up), so ``import nwb_subspace`` stays fast.

Public API, in the order of the analysis
----------------------------------------
``simulate_session``
    Write a simulated recording with known ground truth (NWB + ``.truth.npz``).
``simulate_population``
    Write many simulated multi-site sessions of varied site kinds, with a truth table.
``load_truth``, ``GroundTruth``
    Read that ground truth back.
``read_units``, ``UnitInfo``
    Spike times, waveforms, spike widths, cell types, depths and layers of sorted units.
``load_session_data``, ``SessionData``
    Spectrogram, binned spikes, trials, split and noise ceilings of one session.
``AnalysisConfig``
    Every setting of a run (TOML-readable), made of the sections below.
``SessionSettings``, ``SpectrogramSettings``, ``TrainingConfig``
    Config sections: how the session is read (sound, trials, split); spectrogram; training.
``SubspaceSettings``, ``SiteSettings``
    Config sections: dSTRF PCA and SRFs; site statistics.
``run_session``, ``SessionResult``
    One session end to end, results appended to the NWB file; what it produced.
``run_batch``
    Many sessions (local files, URLs, DANDI assets) on Dask.
``summarize_runs``, ``PopulationSummary``
    Population tables, statistics (units nested in sites) and report from many stored runs.
``EncodingEstimator``
    Fit, predict and score a population LN or CNN encoding model.
``TuningSubspaceEstimator``
    Per-unit PCA of dSTRF moments: tuning subspaces and dimensionality.
``SubspaceModelEstimator``
    Fit, predict and score the subspace model on the tuning subspaces.
``SiteSubspaceAnalysis``
    A site's shared dSTRF subspace, unit variance fractions and similarity, vs nulls.
``write_results``, ``read_results``, ``ResultSet``
    Store a run's results in NWB safely; read them back (models rebuilt); all of a run.
``SpectrogramResult``, ``FittedModel``, ``UnitScores``, ``ModelPrediction``
    Stored results: a spectrogram; a fitted model; its per-unit validation scores; its
    predicted rate on the validation bins.
``TuningSubspaces``, ``SubspaceRFs``
    Stored results: per-unit tuning subspaces; subspace receptive fields.
``SiteSubspaceResult``, ``SiteStatistics``
    Stored results: a site's subspace; the site statistics table.
``make_report``
    HTML report with figures of a stored run (nothing refitted).
``ModelFitError``
    Raised when the CNN fit fails (the run then writes nothing).
``ndx``
    The ``ndx-subspace`` extension classes (loaded on import).

The estimator contract
----------------------
The four estimators follow scikit-learn conventions:

- the constructor takes settings only and stores each argument unchanged, under its own
  name (defaults such as ``training=None`` are resolved in ``fit``); nothing is checked or
  computed before ``fit``;
- ``fit(data...)`` learns from the data and returns ``self``, so calls chain
  (``est.fit(...).to_result()``);
- learned attributes end in ``_`` (``model_``, ``history_``, ``dimensionality_``,
  ``status_``...) and exist only after ``fit``;
- ``predict(X)`` and ``score(X, validation, noise_ceiling, ...)`` where the estimator is a
  model of the response (``EncodingEstimator``, ``SubspaceModelEstimator``; ``score``
  returns :class:`UnitScores`, one entry per fitted unit);
- ``to_result(...)`` turns the fit into the result object that is stored
  (:class:`FittedModel`, :class:`TuningSubspaces`); ``SubspaceModelEstimator.to_fitted_model``
  and ``TuningSubspaceEstimator.result_`` are deprecated aliases (``DeprecationWarning``).
  ``SiteSubspaceAnalysis`` still hands over its :class:`SiteSubspaceResult` as the learned
  attribute ``result_`` (None when the site has too few usable units).

>>> import nwb_subspace as ns
>>> nwb_path, truth_path = ns.simulate_session("site.nwb", preset="tiny")  # doctest: +SKIP
>>> result = ns.run_session(nwb_path, ns.AnalysisConfig())  # doctest: +SKIP
>>> ns.make_report(nwb_path)  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

try:
    __version__ = version("nwb-subspace")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0+unknown"

from nwb_subspace import ndx  # noqa: E402  (loads the namespace; must come before any NWB I/O)

#: Public name -> module that defines it (imported on first access, PEP 562).
_LAZY: dict[str, str] = {
    "simulate_session": "nwb_subspace.simulate.session",
    "simulate_population": "nwb_subspace.simulate.cohort",
    "load_truth": "nwb_subspace.simulate.truth",
    "GroundTruth": "nwb_subspace.simulate.truth",
    "read_units": "nwb_subspace.io.units.reader",
    "UnitInfo": "nwb_subspace.io.units.info",
    "load_session_data": "nwb_subspace.io.session",
    "SessionData": "nwb_subspace.io.session",
    "AnalysisConfig": "nwb_subspace.config",
    "SessionSettings": "nwb_subspace.config",
    "SpectrogramSettings": "nwb_subspace.stimulus.spectrogram",
    "TrainingConfig": "nwb_subspace.models.training",
    "SubspaceSettings": "nwb_subspace.config",
    "SiteSettings": "nwb_subspace.config",
    "run_session": "nwb_subspace.pipeline",
    "SessionResult": "nwb_subspace.pipeline",
    "run_batch": "nwb_subspace.batch",
    "summarize_runs": "nwb_subspace.population.summary",
    "PopulationSummary": "nwb_subspace.population.summary",
    "EncodingEstimator": "nwb_subspace.models.estimator",
    "TuningSubspaceEstimator": "nwb_subspace.subspace.tuning",
    "SubspaceModelEstimator": "nwb_subspace.subspace.model",
    "SiteSubspaceAnalysis": "nwb_subspace.site.subspace",
    "write_results": "nwb_subspace.io.writer",
    "read_results": "nwb_subspace.io.writer",
    "ResultSet": "nwb_subspace.results",
    "SpectrogramResult": "nwb_subspace.results",
    "FittedModel": "nwb_subspace.results",
    "UnitScores": "nwb_subspace.results",
    "ModelPrediction": "nwb_subspace.results",
    "TuningSubspaces": "nwb_subspace.results",
    "SubspaceRFs": "nwb_subspace.results",
    "SiteSubspaceResult": "nwb_subspace.results",
    "SiteStatistics": "nwb_subspace.results",
    "make_report": "nwb_subspace.report.html",
    "ModelFitError": "nwb_subspace.errors",
}

#: The public API in the order of the analysis (the same names as ``_LAZY``, plus ``ndx``).
__all__ = [
    "simulate_session",
    "simulate_population",
    "load_truth",
    "GroundTruth",
    "read_units",
    "UnitInfo",
    "load_session_data",
    "SessionData",
    "AnalysisConfig",
    "SessionSettings",
    "SpectrogramSettings",
    "TrainingConfig",
    "SubspaceSettings",
    "SiteSettings",
    "run_session",
    "SessionResult",
    "run_batch",
    "summarize_runs",
    "PopulationSummary",
    "EncodingEstimator",
    "TuningSubspaceEstimator",
    "SubspaceModelEstimator",
    "SiteSubspaceAnalysis",
    "write_results",
    "read_results",
    "ResultSet",
    "SpectrogramResult",
    "FittedModel",
    "UnitScores",
    "ModelPrediction",
    "TuningSubspaces",
    "SubspaceRFs",
    "SiteSubspaceResult",
    "SiteStatistics",
    "make_report",
    "ModelFitError",
    "ndx",
    "__version__",
]


def __getattr__(name: str) -> Any:
    """Import a public name on first access (PEP 562) and cache it in the package."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """The module's attributes, the lazily imported public API included."""
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from nwb_subspace.batch import run_batch
    from nwb_subspace.config import AnalysisConfig, SessionSettings, SiteSettings, SubspaceSettings
    from nwb_subspace.errors import ModelFitError
    from nwb_subspace.io.session import SessionData, load_session_data
    from nwb_subspace.io.units.info import UnitInfo
    from nwb_subspace.io.units.reader import read_units
    from nwb_subspace.io.writer import read_results, write_results
    from nwb_subspace.models.estimator import EncodingEstimator
    from nwb_subspace.models.training import TrainingConfig
    from nwb_subspace.pipeline import SessionResult, run_session
    from nwb_subspace.population.summary import PopulationSummary, summarize_runs
    from nwb_subspace.report.html import make_report
    from nwb_subspace.results import (
        FittedModel,
        ModelPrediction,
        ResultSet,
        SiteStatistics,
        SiteSubspaceResult,
        SpectrogramResult,
        SubspaceRFs,
        TuningSubspaces,
        UnitScores,
    )
    from nwb_subspace.simulate.cohort import simulate_population
    from nwb_subspace.simulate.session import simulate_session
    from nwb_subspace.simulate.truth import GroundTruth, load_truth
    from nwb_subspace.site.subspace import SiteSubspaceAnalysis
    from nwb_subspace.stimulus.spectrogram import SpectrogramSettings
    from nwb_subspace.subspace.model import SubspaceModelEstimator
    from nwb_subspace.subspace.tuning import TuningSubspaceEstimator
