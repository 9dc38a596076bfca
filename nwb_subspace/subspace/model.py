"""Fitting the subspace model (``docs/methods.md``, section 9) on units' tuning subspaces.

Each unit sees the stimulus only through its own ``k_u`` PCs (``k_u`` = its dimensionality,
at least 1); a small MLP (15-15 ReLU) and a double exponential follow. All units train
together (batched weights) with the same recipe as the CNN
(:func:`nwb_subspace.models.training.fit_model`). The bases are the tuning subspaces'
components, already in the model lag order.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import torch

from nwb_subspace.models import SubspaceModel
from nwb_subspace.models.estimator import (
    resolve_device,
    score_predictions,
    validation_predictions,
    validation_psths,
)
from nwb_subspace.models.training import (
    FitHistory,
    TrainingConfig,
    fit_model,
    predict,
    training_info,
)
from nwb_subspace.results import FittedModel, TuningSubspaces, UnitScores

__all__ = ["SubspaceModelEstimator", "explained_variance_fraction", "site_subspace_fraction"]


def explained_variance_fraction(ev_subspace: np.ndarray, ev_cnn: np.ndarray) -> np.ndarray:
    """Per-unit ``EV_subspace / EV_cnn`` (NaN where the CNN explains nothing)."""
    a = np.asarray(ev_subspace, dtype=float)
    b = np.asarray(ev_cnn, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(b > 0, a / b, np.nan)


def site_subspace_fraction(ev_fraction: np.ndarray) -> float:
    """A site's subspace-model fraction: the median of its units' ``EV_subspace / EV_cnn``.

    Parameters
    ----------
    ev_fraction : array-like of float
        Per-unit fractions (:func:`explained_variance_fraction`) of the site's units; NaN
        (the CNN explains nothing, or the unit has no subspace model) is left out.

    Returns
    -------
    float
        Median of the finite values; NaN when there is none.
    """
    x = np.asarray(ev_fraction, dtype=float).ravel()
    x = x[np.isfinite(x)]
    return float(np.median(x)) if x.size else float("nan")


@dataclass
class SubspaceModelEstimator:
    """Fit a :class:`~nwb_subspace.models.SubspaceModel` on tuning subspaces (sklearn style).

    Follows the package's estimator contract: constructor arguments stored unchanged,
    :meth:`fit` returns ``self`` and sets the learned attributes (ending in ``_``),
    :meth:`predict`, :meth:`score`, and :meth:`to_result` for the stored
    :class:`~nwb_subspace.results.FittedModel`.

    Parameters
    ----------
    n_hidden1, n_hidden2 : int, default 15, 15
    min_components : int, default 1
        Units with a smaller dimensionality (e.g. 0 for a flat dSTRF) use this many PCs.
    training : TrainingConfig, optional
        Recipe passed to ``fit_model`` (default: its defaults).
    device : {"cpu", "cuda", "auto"}, default "cpu"

    Attributes
    ----------
    model_ : SubspaceModel
    history_ : FitHistory
    n_components_ : ndarray of int, shape (n_units,)
    unit_rows_ : ndarray of int
    device_ : str
        The torch device the model was fitted on ("auto" resolved).
    """

    n_hidden1: int = 15
    n_hidden2: int = 15
    min_components: int = 1
    training: TrainingConfig | None = None
    device: str = "cpu"
    model_: SubspaceModel | None = field(default=None, init=False, repr=False)
    history_: FitHistory | None = field(default=None, init=False, repr=False)
    n_components_: np.ndarray | None = field(default=None, init=False, repr=False)
    device_: str | None = field(default=None, init=False, repr=False)
    unit_rows_: np.ndarray | None = field(default=None, init=False, repr=False)

    def fit(
        self,
        tuning: TuningSubspaces,
        X: np.ndarray,
        Y: np.ndarray,
        train_mask: np.ndarray,
        holdout_mask: np.ndarray,
    ) -> SubspaceModelEstimator:
        """Fit on spectrogram ``X`` (n_bins, F) and counts ``Y`` (n_bins, n_units of tuning).

        Parameters
        ----------
        tuning : TuningSubspaces
            The units' tuning subspaces (each unit sees the stimulus through its own PCs).
        X : ndarray, shape (n_bins, F)
            The spectrogram.
        Y : ndarray, shape (n_bins, n_units)
            Spike counts, one column per unit of ``tuning`` (same order).
        train_mask, holdout_mask : ndarray of bool, shape (n_bins,)
            Bins to fit on, and bins for early stopping.

        Returns
        -------
        SubspaceModelEstimator
            ``self``, fitted.
        """
        if not isinstance(tuning, TuningSubspaces):
            raise TypeError(f"tuning must be a TuningSubspaces; got {type(tuning).__name__}")
        mc = self.min_components
        if isinstance(mc, bool) or not isinstance(mc, int) or mc < 1:
            raise ValueError(f"min_components must be an int >= 1; got {mc!r}")
        n = tuning.unit_rows.size
        Y = np.asarray(Y)
        if Y.ndim != 2 or Y.shape[1] != n:
            raise ValueError(
                f"Y must have one column per tuning unit: shape (n_bins, {n}); got {Y.shape}"
            )
        max_k = tuning.components.shape[1]
        k = np.clip(np.asarray(tuning.dimensionality, dtype=np.int64), mc, max_k)
        bases = [np.asarray(tuning.components[u, : k[u]], dtype=np.float32) for u in range(n)]
        training = self.training or TrainingConfig()
        self.device_ = resolve_device(self.device)
        torch.manual_seed(training.seed * 1000)  # the first initialisation, as fit_model does
        model = SubspaceModel.from_bases(bases, n_hidden1=self.n_hidden1, n_hidden2=self.n_hidden2)
        bases_t = [b.copy() for b in bases]

        def build() -> SubspaceModel:
            return SubspaceModel.from_bases(
                bases_t, n_hidden1=self.n_hidden1, n_hidden2=self.n_hidden2
            )

        self.model_, self.history_ = fit_model(
            model, X, Y, train_mask, holdout_mask, training, device=self.device_, build=build
        )
        self.n_components_ = k
        self.unit_rows_ = tuning.unit_rows.copy()
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predicted counts per bin, shape (n_bins, n_units)."""
        if self.model_ is None:
            raise RuntimeError("call fit() before predict()")
        return predict(self.model_, X, device=self.device_)

    def score(
        self,
        X: np.ndarray,
        validation: Mapping,
        noise_ceiling: np.ndarray,
        *,
        columns: np.ndarray | None = None,
        seed: int = 0,
    ) -> UnitScores:
        """Validation scores of the fitted units against repeat-averaged PSTHs.

        Parameters
        ----------
        X : ndarray, shape (n_bins, F)
            The session's spectrogram (predicted at every bin).
        validation : mapping
            Sound id -> ``ValidationPSTH`` (``start_bins``, ``n_bins``, ``mean``).
        noise_ceiling : ndarray
            Per-column noise ceiling of the PSTHs.
        columns : ndarray of int, optional
            Columns of the PSTHs and of ``noise_ceiling`` that hold the model's units, in
            order (e.g. the columns of the session's counts passed to :meth:`fit`); default:
            all columns, which must then be exactly the model's units.
        seed : int, default 0
            Seed of the shuffle noise floor.

        Returns
        -------
        UnitScores
            One entry per unit of the model (``unit_rows_``).
        """
        pred = validation_predictions(self.predict(X), validation)
        psth = validation_psths(validation, None if columns is None else np.asarray(columns))
        ceiling = np.asarray(noise_ceiling)
        if columns is not None:
            ceiling = ceiling[np.asarray(columns)]
        if psth.shape[1] != pred.shape[1] or ceiling.shape != (pred.shape[1],):
            raise ValueError(
                f"the PSTHs and noise_ceiling must have one column per unit of the model "
                f"({pred.shape[1]}); got {psth.shape[1]} and {ceiling.shape}: pass columns="
            )
        return score_predictions(pred, psth, ceiling, seed=seed)

    def to_result(
        self,
        name: str = "subspace",
        *,
        bin_size_s: float,
        scores: UnitScores | None = None,
        spectrogram: str | None = None,
    ) -> FittedModel:
        """The fitted model as a :class:`~nwb_subspace.results.FittedModel` for the writer.

        Parameters
        ----------
        name : str, default "subspace"
            Name of the stored model.
        bin_size_s : float
            Bin width in seconds.
        scores : UnitScores, optional
            Validation scores (:meth:`score`).
        spectrogram : str, optional
            Name of the stored spectrogram the model takes.

        Returns
        -------
        FittedModel
        """
        if self.model_ is None or self.history_ is None:
            raise RuntimeError("call fit() before to_result()")
        info = training_info(self.training or TrainingConfig(), self.history_, self.device_)
        return FittedModel(
            name=name,
            module=self.model_,
            unit_rows=self.unit_rows_,
            bin_size_s=float(bin_size_s),
            training=info,
            scores=scores,
            spectrogram=spectrogram,
            architecture=(
                f"per-unit projection onto k PCs -> {self.n_hidden1} -> {self.n_hidden2} ReLU "
                "-> double exponential"
            ),
        )

    def to_fitted_model(self, bin_size_s: float, name: str = "subspace_model") -> FittedModel:
        """Deprecated alias of :meth:`to_result` (``to_result(name, bin_size_s=...)``).

        Parameters
        ----------
        bin_size_s : float
            Bin width in seconds.
        name : str, default "subspace_model"
            Name of the stored model.

        Returns
        -------
        FittedModel
        """
        warnings.warn(
            "SubspaceModelEstimator.to_fitted_model() is deprecated; use "
            "to_result(name, bin_size_s=...)",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.to_result(name, bin_size_s=bin_size_s)
