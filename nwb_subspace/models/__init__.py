"""Encoding models: spectrogram ``(batch, time, F)`` -> causal rates ``(batch, time, N)``.

Every model is a core, a readout and an optional per-unit double-exponential output
(:class:`EncodingModel`); it has ``kind``, ``config`` (JSON-serialisable; rebuild with
:func:`build_model`), ``memory`` (bins each output depends on) and ``tensor_dims()``
(dimension names of every ``state_dict`` entry). See :mod:`nwb_subspace.models.layers` for
the shape, causality and time-order conventions.
"""

from nwb_subspace.models.cnn import CNNCore, PopulationCNN
from nwb_subspace.models.layers import (
    CausalDepthwiseConv1d,
    DoubleExponential,
    EncodingModel,
    Readout,
    causal_pad,
)
from nwb_subspace.models.ln import LNCore, PopulationLN
from nwb_subspace.models.registry import MODEL_CLASSES, build_model
from nwb_subspace.models.subspace import SubspaceModel, SubspaceProjection, UnitMLP

__all__ = [
    "MODEL_CLASSES",
    "CNNCore",
    "CausalDepthwiseConv1d",
    "DoubleExponential",
    "EncodingModel",
    "LNCore",
    "PopulationCNN",
    "PopulationLN",
    "Readout",
    "SubspaceModel",
    "SubspaceProjection",
    "UnitMLP",
    "build_model",
    "causal_pad",
]
