"""Model kinds by name, and :func:`build_model` to rebuild one from its config.

A fitted model is stored as ``(kind, config, state_dict)``::

    model = build_model(kind, config)      # fresh architecture
    model.load_state_dict(state_dict)      # fitted weights (and subspace bases)
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from nwb_subspace.models.cnn import PopulationCNN
from nwb_subspace.models.layers import EncodingModel
from nwb_subspace.models.ln import PopulationLN
from nwb_subspace.models.subspace import SubspaceModel

__all__ = ["MODEL_CLASSES", "build_model"]

#: Model class of each kind (read-only). (``config.MODEL_KINDS`` is something else: the kinds
#: a session run may fit.)
MODEL_CLASSES: Mapping[str, type[EncodingModel]] = MappingProxyType(
    {cls.kind: cls for cls in (PopulationCNN, PopulationLN, SubspaceModel)}
)
#: Transitional alias, for models/estimator.py only (owned by another engineer) until it
#: imports MODEL_CLASSES; not exported. Remove it then.
MODEL_KINDS = MODEL_CLASSES


def build_model(kind: str, config: Mapping[str, Any]) -> EncodingModel:
    """Build a freshly initialised model of ``kind`` from its ``config``.

    Parameters
    ----------
    kind : {"cnn", "ln", "subspace"}
        Model kind (``model.kind``).
    config : dict
        Settings, as returned by ``model.config``.

    Returns
    -------
    EncodingModel
        Load weights into it with ``load_state_dict``.

    Raises
    ------
    ValueError
        Unknown kind, unknown or missing config key, or a value out of range.
    TypeError
        ``config`` not a dict, or a value of the wrong type.
    """
    if not isinstance(kind, str) or kind not in MODEL_CLASSES:
        raise ValueError(f"unknown model kind {kind!r}; choose one of {sorted(MODEL_CLASSES)}")
    return MODEL_CLASSES[kind].from_config(config)
