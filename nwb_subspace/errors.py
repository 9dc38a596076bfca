"""Exceptions of nwb-subspace that are not about bad input (those are ``ValueError``)."""

from __future__ import annotations

__all__ = ["ModelFitError"]


class ModelFitError(RuntimeError):
    """A model could not be fitted: every initialisation failed, after the retries.

    See :func:`nwb_subspace.models.training.fit_problem` for what counts as a failed fit
    (non-finite, a loss that ran away, a constant prediction, or one that correlates with
    no unit's response).
    """
