"""A scikit-learn-style estimator around the encoding models: ``fit``, ``predict``, ``score``,
``to_result`` (the estimator contract of :mod:`nwb_subspace`)."""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import numpy as np
import torch

from nwb_subspace.models.layers import EncodingModel
from nwb_subspace.models.registry import MODEL_KINDS, build_model
from nwb_subspace.models.training import TrainingConfig, fit_model, predict, training_info
from nwb_subspace.results import FittedModel, UnitScores
from nwb_subspace.stimulus import scoring

DEVICES = ("cpu", "cuda", "auto")


def resolve_device(device: str) -> str:
    """Turn ``"cpu"``, ``"cuda"`` or ``"auto"`` into a torch device name, or say why not."""
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}; got {device!r}")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            "device 'cuda' was asked for but torch sees no CUDA GPU; use 'cpu' or 'auto'"
        )
    return device


def validation_predictions(pred: np.ndarray, validation: Mapping) -> np.ndarray:
    """Concatenate, over validation sounds, the prediction averaged over each sound's repeats.

    ``validation`` maps sound ids to objects with ``start_bins`` and ``n_bins`` (see
    ``nwb_subspace.stimulus.responses.ValidationPSTH``); sounds are taken in sorted order.
    """
    out = []
    for key in sorted(validation):
        v = validation[key]
        out.append(np.mean([pred[s : s + v.n_bins] for s in v.start_bins], axis=0))
    return np.concatenate(out)


def validation_psths(validation: Mapping, units: np.ndarray | None = None) -> np.ndarray:
    """Concatenated repeat-averaged PSTHs of the validation sounds (sorted by sound id)."""
    out = np.concatenate([validation[k].mean for k in sorted(validation)])
    return out if units is None else out[:, units]


class EncodingEstimator:
    """Fit a population encoding model of one kind to one session.

    Follows the package's estimator contract: the constructor stores its arguments unchanged,
    :meth:`fit` returns ``self`` and sets the learned attributes (names ending in ``_``),
    :meth:`predict` and :meth:`score` use them, and :meth:`to_result` turns the fit into the
    :class:`~nwb_subspace.results.FittedModel` that is stored.

    Parameters
    ----------
    kind : {"cnn", "ln"}
        Model architecture (``"subspace"`` models are fitted by ``nwb_subspace.subspace.model``).
    architecture : dict, optional
        Settings of the architecture other than ``n_frequencies`` and ``n_units`` (e.g.
        ``{"n_channels1": 70}``); None (default) means the reference sizes.
    training : TrainingConfig, optional
        The training recipe; None (default) means ``TrainingConfig()``.
    device : {"cpu", "cuda", "auto"}
        Where to train.
    progress : callable, optional
        ``progress(stage, epoch, holdout_loss)`` after each epoch.

    Attributes
    ----------
    model_ : EncodingModel
        The fitted model (best initialisation).
    history_ : FitHistory
    members_ : list of EncodingModel
        Every initialisation's fitted model, lowest holdout loss first (``members_[0]`` is
        ``model_``); for dSTRFs averaged over fits.
    member_histories_ : list of FitHistory
        Their histories, in the same order.
    failed_ : bool
        True when every initialisation failed (:func:`~nwb_subspace.models.training.
        fit_problem`: non-finite, runaway, constant or uncorrelated with every unit, after
        the retries); ``model_`` is then the least bad fit and must not be
        trusted. ``history_.problem`` says why.
    fit_problems_ : list of str
        Every failed attempt (including ones a retry recovered from), for the run's notes.
    units_ : ndarray of int
        Columns of ``Y`` that were fitted (units with spikes in the training bins).
    excluded_units_ : ndarray of int
        Columns left out because they had no spikes in the training bins.
    device_ : str
        The torch device the models were fitted on (``"auto"`` resolved).
    """

    def __init__(
        self,
        kind: str = "cnn",
        *,
        architecture: Mapping | None = None,
        training: TrainingConfig | None = None,
        device: str = "cpu",
        progress=None,
    ) -> None:
        self.kind = kind
        self.architecture = architecture
        self.training = training
        self.device = device
        self.progress = progress

    def __repr__(self) -> str:
        return (
            f"EncodingEstimator(kind={self.kind!r}, architecture={self.architecture!r}, "
            f"training={self.training!r}, device={self.device!r})"
        )

    def _training(self) -> TrainingConfig:
        """The training recipe in use (``TrainingConfig()`` when ``training`` is None)."""
        return TrainingConfig() if self.training is None else self.training

    def _check_params(self) -> None:
        if self.kind not in MODEL_KINDS or self.kind == "subspace":
            raise ValueError(f"kind must be 'cnn' or 'ln'; got {self.kind!r}")
        if self.architecture is not None and not isinstance(self.architecture, Mapping):
            raise TypeError(f"architecture must be a dict or None; got {self.architecture!r}")
        for key in ("n_frequencies", "n_units"):
            if key in (self.architecture or {}):
                raise ValueError(f"architecture must not set {key!r}; it comes from the data")
        if not isinstance(self._training(), TrainingConfig):
            raise TypeError("training must be a TrainingConfig")

    def fit(
        self, X: np.ndarray, Y: np.ndarray, train_mask: np.ndarray, holdout_mask: np.ndarray
    ) -> EncodingEstimator:
        """Fit the model on the training bins, stopping early on the holdout bins.

        Units without a single spike in the training bins cannot be fitted; they are left
        out with a warning and listed in ``excluded_units_``.

        Parameters
        ----------
        X : ndarray, shape (n_bins, n_frequencies)
            The spectrogram.
        Y : ndarray, shape (n_bins, n_units)
            Spike counts per bin.
        train_mask, holdout_mask : ndarray of bool, shape (n_bins,)
            Bins to fit on, and bins for early stopping.

        Returns
        -------
        EncodingEstimator
            ``self``, fitted.
        """
        self._check_params()
        X = np.asarray(X, dtype=np.float32)
        Y = np.asarray(Y, dtype=np.float32)
        if Y.ndim != 2:
            raise ValueError(f"Y must be (n_bins, n_units); got shape {Y.shape}")
        train_mask = np.asarray(train_mask, dtype=bool)
        spikes = Y[train_mask].sum(axis=0)
        self.units_ = np.flatnonzero(spikes > 0)
        self.excluded_units_ = np.flatnonzero(spikes == 0)
        if self.excluded_units_.size:
            warnings.warn(
                f"units {self.excluded_units_.tolist()} have no spikes in the training data "
                "and are left out of the model",
                UserWarning,
                stacklevel=2,
            )
        if self.units_.size == 0:
            raise ValueError("no unit has spikes in the training data; nothing to fit")
        device = resolve_device(self.device)
        config = {
            "n_frequencies": int(X.shape[1]),
            "n_units": int(self.units_.size),
            **(self.architecture or {}),
        }
        training = self._training()
        torch.manual_seed(training.seed * 1000)  # the first initialisation
        model = build_model(self.kind, config)
        self.device_ = device
        runs: list = []
        self.model_, self.history_ = fit_model(
            model,
            X,
            Y[:, self.units_],
            train_mask,
            np.asarray(holdout_mask, dtype=bool),
            training,
            device=device,
            progress=self.progress,
            every_fit=runs,
        )
        # stable: the best comes first; failed fits last, and only kept if nothing worked
        runs.sort(key=lambda run: (run[1].failed, _loss_key(run[1].best_holdout_loss)))
        working = [run for run in runs if not run[1].failed] or runs
        self.members_ = [m for m, _ in working]
        self.member_histories_ = [h for _, h in working]
        self.fit_problems_ = [
            f"initialisation {h.initialization + 1}: {problem}"
            for _, h in runs
            for problem in h.failed_attempts
        ]
        self.failed_ = self.history_.failed
        return self

    def predict(self, X: np.ndarray, *, member: int = 0) -> np.ndarray:
        """Predicted spike counts per bin, ``(n_bins, len(units_))``, of the best fit (or of
        ``members_[member]``)."""
        if not hasattr(self, "model_"):
            raise RuntimeError("call fit() before predict()")
        return predict(self._member(member), X, device=self.device_)

    def _member(self, member: int):
        if isinstance(member, bool) or not isinstance(member, int):
            raise TypeError(f"member must be an int index into members_; got {member!r}")
        if not 0 <= member < len(self.members_):
            raise ValueError(f"member must be in [0, {len(self.members_)}); got {member}")
        return self.members_[member]

    def score(
        self,
        X: np.ndarray,
        validation: Mapping,
        noise_ceiling: np.ndarray,
        *,
        seed: int = 0,
        member: int = 0,
    ) -> UnitScores:
        """Validation scores of the fitted units against repeat-averaged PSTHs.

        Parameters
        ----------
        X : ndarray, shape (n_bins, n_frequencies)
            The session's spectrogram (predicted at every bin).
        validation : mapping
            Sound id -> ``ValidationPSTH`` (``start_bins``, ``n_bins``, ``mean``) with one
            column per column of the fitted ``Y``.
        noise_ceiling : ndarray, shape (n_units,)
            Per-column noise ceiling.
        seed : int, default 0
            Seed of the shuffle noise floor.
        member : int, default 0
            Which fit to score (``members_[member]``).

        Returns
        -------
        UnitScores
            One entry per fitted unit (``units_``).
        """
        pred = validation_predictions(self.predict(X, member=member), validation)
        psth = validation_psths(validation, self.units_)
        return score_predictions(pred, psth, np.asarray(noise_ceiling)[self.units_], seed=seed)

    def to_result(
        self,
        name: str,
        unit_rows: np.ndarray,
        bin_size_s: float,
        scores: UnitScores | None = None,
        spectrogram: str | None = None,
        architecture: str = "",
        member: int = 0,
    ) -> FittedModel:
        """The fitted model (or ``members_[member]``) as a ``FittedModel`` for ``write_results``.

        Parameters
        ----------
        name : str
            Name of the stored model (e.g. ``"cnn"``).
        unit_rows : ndarray of int
            Units-table rows of all columns of ``Y``; only the fitted ones (``units_``) are
            kept.
        bin_size_s : float
            Bin width in seconds.
        scores : UnitScores, optional
            Validation scores (:meth:`score`).
        spectrogram : str, optional
            Name of the stored spectrogram the model takes.
        architecture : str, optional
            Description of the architecture (default: one per ``kind``).
        member : int, default 0
            Which fit to store (``members_[member]``).

        Returns
        -------
        FittedModel
        """
        if not hasattr(self, "model_"):
            raise RuntimeError("call fit() before to_result()")
        module = self._member(member)
        info = training_info(self._training(), self.member_histories_[member], self.device_)
        return FittedModel(
            name=name,
            module=module.cpu(),
            unit_rows=np.asarray(unit_rows)[self.units_],
            bin_size_s=bin_size_s,
            training=info,
            scores=scores,
            spectrogram=spectrogram,
            architecture=architecture or {"cnn": "1D-CNN x2", "ln": "population LN"}[self.kind],
        )


def _loss_key(value: float) -> float:
    """Sort key of a holdout loss: NaN sorts last."""
    return value if value == value else float("inf")


def score_predictions(
    pred: np.ndarray, psth: np.ndarray, ceiling: np.ndarray, *, seed: int = 0
) -> UnitScores:
    """Correlation, shuffle noise floor, noise-corrected correlation and explained variance."""
    r = scoring.correlation(pred, psth)
    return UnitScores(
        correlation=r,
        noise_floor=scoring.shuffle_noise_floor(pred, psth, seed=seed),
        noise_corrected_correlation=scoring.noise_corrected(r, ceiling),
        explained_variance=scoring.explained_variance(pred, psth),
    )


__all__ = [
    "EncodingEstimator",
    "EncodingModel",
    "resolve_device",
    "score_predictions",
    "validation_predictions",
    "validation_psths",
]
