"""A scikit-learn-style estimator around the encoding models: ``fit``, ``predict``, ``score``,
``to_result`` (the estimator contract of :mod:`nwb_subspace`)."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from dataclasses import replace

import numpy as np
import torch

from nwb_subspace.models.layers import EncodingModel
from nwb_subspace.models.registry import MODEL_KINDS, build_model
from nwb_subspace.models.stacked import fit_model_stacked, fit_stacked, jackknife_members
from nwb_subspace.models.training import (
    FitHistory,
    TrainingConfig,
    better_fit,
    fit_model,
    predict,
    training_info,
)
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


def validation_bins(validation: Mapping) -> np.ndarray:
    """Every bin of every presentation of the validation sounds, in time order.

    ``validation`` maps sound ids to objects with ``start_bins`` and ``n_bins`` (see
    ``nwb_subspace.stimulus.responses.ValidationPSTH``). Returns the sorted, distinct bin
    indices (int64): the bins :func:`validation_predictions` averages over.
    """
    bins = [
        int(start) + np.arange(int(v.n_bins), dtype=np.int64)
        for v in validation.values()
        for start in np.asarray(v.start_bins).tolist()
    ]
    return np.unique(np.concatenate(bins)) if bins else np.zeros(0, dtype=np.int64)


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
    jackknife_members_ : list of EncodingModel
        With ``training.jackknife = K >= 2``: the jackknife fits that worked, in fold order;
        fit ``i`` was fitted without the bins of fold ``jackknife_folds_[i]`` (the best of
        ``n_initializations``). Empty without jackknife.
    jackknife_folds_ : ndarray of int
        The fold (0-based) each of ``jackknife_members_`` left out.
    jackknife_histories_ : list of FitHistory
        Their histories.
    jackknife_problems_ : dict of int to str
        Fold -> why its jackknife fit failed (left out of ``jackknife_members_``).
    fold_labels_ : ndarray of int or None
        The ``folds`` passed to :meth:`fit` (None without jackknife).
    oof_prediction_ : ndarray of float32, shape (n_bins, len(units_)) or None
        Out-of-fold prediction: at the bins of fold ``j``, the prediction of the jackknife
        fit that never saw them; NaN elsewhere (and in folds whose fit failed).
    oof_correlation_ : ndarray of float64, shape (len(units_),) or None
        Per unit, the correlation of ``oof_prediction_`` with the spike counts over the
        bins it covers (single trials of the estimation sounds, so below the validation
        correlation against repeat-averaged PSTHs).
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

    @property
    def ensemble_(self) -> list[EncodingModel]:
        """The fits whose dSTRFs are averaged: the jackknife fits (``training.jackknife >=
        2``), else every initialisation of the fit (``members_``). Should every jackknife
        fit have failed, ``members_``."""
        if self._training().jackknife >= 2 and getattr(self, "jackknife_members_", None):
            return list(self.jackknife_members_)
        return list(self.members_)

    def fit(
        self,
        X: np.ndarray,
        Y: np.ndarray,
        train_mask: np.ndarray,
        holdout_mask: np.ndarray,
        *,
        folds: np.ndarray | None = None,
    ) -> EncodingEstimator:
        """Fit the model on the training bins, stopping early on the holdout bins.

        Units without a single spike in the training bins cannot be fitted; they are left
        out with a warning and listed in ``excluded_units_``. With ``training.jackknife =
        K >= 2``, ``K`` jackknife fits follow the fit on all training bins (see the
        ``jackknife_*`` attributes): fit ``j`` on the training bins outside fold ``j``,
        with the same holdout bins, each the best of ``n_initializations``.

        Parameters
        ----------
        X : ndarray, shape (n_bins, n_frequencies)
            The spectrogram.
        Y : ndarray, shape (n_bins, n_units)
            Spike counts per bin.
        train_mask, holdout_mask : ndarray of bool, shape (n_bins,)
            Bins to fit on, and bins for early stopping.
        folds : ndarray of int, shape (n_bins,), optional
            Jackknife fold of every bin (0 .. K-1 on the training bins, -1 elsewhere; e.g.
            :func:`~nwb_subspace.models.training.jackknife_folds`); required when
            ``training.jackknife >= 2``, refused otherwise.

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
        folds = _check_folds(folds, train_mask, training.jackknife)
        holdout_mask = np.asarray(holdout_mask, dtype=bool)
        self.device_ = device
        Yu = Y[:, self.units_]
        self.model_, self.history_, runs = self._fit_best(
            X, Yu, train_mask, holdout_mask, training, config
        )
        # stable: the best comes first; failed fits last, and only kept if nothing worked
        working = [run for run in runs if not run[1].failed] or runs
        self.members_ = [m for m, _ in working]
        self.member_histories_ = [h for _, h in working]
        self.fit_problems_ = [
            f"initialisation {h.initialization + 1}: {problem}"
            for _, h in runs
            for problem in h.failed_attempts
        ]
        self.failed_ = self.history_.failed
        self.jackknife_members_, self.jackknife_histories_ = [], []
        self.jackknife_folds_ = np.zeros(0, dtype=np.int64)
        self.jackknife_problems_ = {}
        self.fold_labels_ = folds
        self.oof_prediction_ = self.oof_correlation_ = None
        if folds is not None:
            self._fit_jackknife(X, Yu, train_mask, holdout_mask, folds, training, config)
            self.out_of_fold(X, Y, folds)
        return self

    def _fit_best(
        self,
        X: np.ndarray,
        Yu: np.ndarray,
        train_mask: np.ndarray,
        holdout_mask: np.ndarray,
        training: TrainingConfig,
        config: dict,
    ) -> tuple[EncodingModel, FitHistory, list]:
        """The best of ``training.n_initializations`` fits, and every fit sorted best first
        (one stack with ``training.stacked`` for the CNN's two or more initialisations)."""
        runs: list = []
        if self._stacked(training) and training.n_initializations > 1:  # a stack of one: no gain
            best, history = fit_model_stacked(
                config,
                X,
                Yu,
                train_mask,
                holdout_mask,
                training,
                device=self.device_,
                progress=self.progress,
                every_fit=runs,
            )
        else:
            torch.manual_seed(training.seed * 1000)  # the first initialisation
            model = build_model(self.kind, config)
            best, history = fit_model(
                model,
                X,
                Yu,
                train_mask,
                holdout_mask,
                training,
                device=self.device_,
                progress=self.progress,
                every_fit=runs,
            )
        return best, history, _best_first(runs)

    def _stacked(self, training: TrainingConfig) -> bool:
        """Whether this estimator's fits are stacked (``training.stacked``, CNN only)."""
        return training.stacked and self.kind == "cnn"

    def _fit_jackknife(
        self,
        X: np.ndarray,
        Yu: np.ndarray,
        train_mask: np.ndarray,
        holdout_mask: np.ndarray,
        folds: np.ndarray,
        training: TrainingConfig,
        config: dict,
    ) -> None:
        """Fit ``j`` (seed ``seed * 1000 + 1 + j``) on the training bins outside fold ``j``
        (with ``training.stacked``, every fold's initialisations as one stack)."""
        kept, folds_fitted = [], []
        for j in range(training.jackknife):
            silent = np.flatnonzero(Yu[train_mask & (folds != j)].sum(axis=0) == 0)
            if silent.size:
                self.jackknife_problems_[j] = (
                    f"units {self.units_[silent].tolist()} have no spikes outside fold {j + 1}"
                )
            else:
                folds_fitted.append(j)
        fitted = self._jackknife_fits(X, Yu, train_mask, holdout_mask, folds, training, config)
        for j in folds_fitted:
            model, history, runs = fitted(j)
            self.fit_problems_.extend(
                f"jackknife fit {j + 1}, initialisation {h.initialization + 1}: {problem}"
                for _, h in runs
                for problem in h.failed_attempts
            )
            if history.failed:
                self.jackknife_problems_[j] = str(history.problem)
            else:
                kept.append((j, model, history))
        self.jackknife_problems_ = dict(sorted(self.jackknife_problems_.items()))  # fold order
        self.jackknife_folds_ = np.asarray([j for j, _, _ in kept], dtype=np.int64)
        self.jackknife_members_ = [m for _, m, _ in kept]
        self.jackknife_histories_ = [h for _, _, h in kept]

    def _jackknife_fits(
        self,
        X: np.ndarray,
        Yu: np.ndarray,
        train_mask: np.ndarray,
        holdout_mask: np.ndarray,
        folds: np.ndarray,
        training: TrainingConfig,
        config: dict,
    ) -> Callable[[int], tuple]:
        """A function of fold ``j`` giving its fit ``(best, history, every fit best first)``:
        fitted on call (one at a time), or, with ``training.stacked``, taken from one stack
        of every fold's initialisations fitted here (folds whose units fall silent are
        left out of the stack; asking for them raises)."""
        if not self._stacked(training):

            def one_at_a_time(j: int) -> tuple:
                member = replace(training, seed=training.seed * 1000 + 1 + j)
                mask = train_mask & (folds != j)
                return self._fit_best(X, Yu, mask, holdout_mask, member, config)

            return one_at_a_time
        n_init = training.n_initializations
        every = jackknife_members(training, train_mask, folds)  # fold j: j * n_init + i
        fold_of = [i // n_init for i in range(len(every))]
        chosen = [i for i, m in enumerate(every) if Yu[m.train_mask].sum(axis=0).min() > 0]
        fits = (
            fit_stacked(
                config,
                X,
                Yu,
                [every[i] for i in chosen],
                holdout_mask,
                training,
                device=self.device_,
                progress=self.progress,
            )
            if chosen
            else []
        )
        by_fold: dict[int, list] = {}
        for i, fit in zip(chosen, fits, strict=True):
            by_fold.setdefault(fold_of[i], []).append(fit)

        def stacked(j: int) -> tuple:
            runs = by_fold[j]
            best = runs[0]
            for run in runs[1:]:
                if better_fit(run[1], best[1]):
                    best = run
            return best[0], best[1], _best_first(runs)

        return stacked

    def out_of_fold(self, X: np.ndarray, Y: np.ndarray, folds: np.ndarray) -> np.ndarray:
        """Out-of-fold predictions of the jackknife fits and their correlation per unit.

        Sets ``oof_prediction_`` (each jackknife fit predicts the fold it left out) and
        ``oof_correlation_`` (against ``Y``'s fitted columns over the predicted bins).

        Parameters
        ----------
        X : ndarray, shape (n_bins, n_frequencies)
        Y : ndarray, shape (n_bins, n_units)
            Spike counts, all columns (as passed to :meth:`fit`).
        folds : ndarray of int, shape (n_bins,)
            The fold labels the jackknife fits were fitted with.

        Returns
        -------
        ndarray
            ``oof_correlation_`` (NaN for every unit when no jackknife fit worked).
        """
        folds = np.asarray(folds)
        Yu = np.asarray(Y, dtype=np.float32)[:, self.units_]
        if folds.shape != (Yu.shape[0],):
            raise ValueError(f"folds must have shape ({Yu.shape[0]},); got {folds.shape}")
        pred = np.full(Yu.shape, np.nan, dtype=np.float32)
        for model, j in zip(self.jackknife_members_, self.jackknife_folds_, strict=True):
            sel = folds == j
            pred[sel] = predict(model, X, device=self.device_)[sel]
        covered = np.isfinite(pred).all(axis=1)
        self.oof_prediction_ = pred
        if covered.sum() < 2:
            self.oof_correlation_ = np.full(Yu.shape[1], np.nan)
        else:
            self.oof_correlation_ = scoring.correlation(pred[covered], Yu[covered])
        return self.oof_correlation_

    def predict(
        self, X: np.ndarray, *, member: int = 0, jackknife: int | None = None
    ) -> np.ndarray:
        """Predicted spike counts per bin, ``(n_bins, len(units_))``, of the best fit (or of
        ``members_[member]``, or of ``jackknife_members_[jackknife]``)."""
        if not hasattr(self, "model_"):
            raise RuntimeError("call fit() before predict()")
        return predict(self._member(member, jackknife)[0], X, device=self.device_)

    def _member(self, member: int, jackknife: int | None = None) -> tuple:
        """The chosen fit and its history."""
        name, index = ("member", member) if jackknife is None else ("jackknife", jackknife)
        models, histories = (
            (self.members_, self.member_histories_)
            if jackknife is None
            else (getattr(self, "jackknife_members_", []), self.jackknife_histories_)
        )
        if isinstance(index, bool) or not isinstance(index, int):
            raise TypeError(f"{name} must be an int index; got {index!r}")
        if not 0 <= index < len(models):
            raise ValueError(f"{name} must be in [0, {len(models)}); got {index}")
        return models[index], histories[index]

    def score(
        self,
        X: np.ndarray,
        validation: Mapping,
        noise_ceiling: np.ndarray,
        *,
        seed: int = 0,
        member: int = 0,
        jackknife: int | None = None,
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
        jackknife : int, optional
            Score ``jackknife_members_[jackknife]`` instead.

        Returns
        -------
        UnitScores
            One entry per fitted unit (``units_``).
        """
        pred = self.predict(X, member=member, jackknife=jackknife)
        pred = validation_predictions(pred, validation)
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
        jackknife: int | None = None,
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
        jackknife : int, optional
            Store ``jackknife_members_[jackknife]`` instead.

        Returns
        -------
        FittedModel
        """
        if not hasattr(self, "model_"):
            raise RuntimeError("call fit() before to_result()")
        module, history = self._member(member, jackknife)
        info = training_info(self._training(), history, self.device_)
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


def _check_folds(folds, train_mask: np.ndarray, k: int) -> np.ndarray | None:
    """The jackknife fold labels as int64, checked against the training bins (None: off)."""
    if k < 2:
        if folds is not None:
            raise ValueError(
                "folds were given but training.jackknife is 0; set TrainingConfig(jackknife=K)"
                " with K >= 2 for jackknife fits, or drop folds"
            )
        return None
    if folds is None:
        raise ValueError(
            f"training.jackknife = {k} needs the fold of every bin: pass folds= (e.g. "
            "nwb_subspace.models.training.jackknife_folds(...).labels)"
        )
    folds = np.asarray(folds)
    if folds.shape != train_mask.shape or not np.issubdtype(folds.dtype, np.integer):
        raise ValueError(f"folds must be integers of shape {train_mask.shape}; got {folds.shape}")
    folds = folds.astype(np.int64)
    if not np.array_equal(folds >= 0, train_mask):
        raise ValueError("folds must be >= 0 exactly on the training bins and -1 elsewhere")
    present = np.unique(folds[train_mask])
    if not np.array_equal(present, np.arange(k)):
        raise ValueError(
            f"folds must label the training bins with every fold 0..{k - 1} "
            f"(training.jackknife = {k}); got folds {present.tolist()}"
        )
    return folds


def _best_first(runs: list) -> list:
    """Fits sorted working first, then by holdout loss (stable; NaN last)."""
    return sorted(runs, key=lambda run: (run[1].failed, _loss_key(run[1].best_holdout_loss)))


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
    "validation_bins",
    "validation_predictions",
    "validation_psths",
]
