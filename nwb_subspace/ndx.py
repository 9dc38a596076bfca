"""Python classes of the ``ndx-subspace`` NWB extension, as ``nwb_subspace`` uses them.

The extension is its own distribution, ``ndx-subspace`` (folder ``ndx-subspace/`` of this
repository, ndx-template layout; it depends only on pynwb and hdmf). Importing it loads the
namespace before any file is opened, so new objects are always written with their own
``neurodata_type`` and the spec is cached in the file. This module re-exports its classes
under the names the rest of ``nwb_subspace`` uses.
"""

from __future__ import annotations

from pathlib import Path

import ndx_subspace
from ndx_subspace import (
    NAMESPACE,
    EncodingModel,
    ModelLayerTable,
    ModelWeight,
    SiteStatisticsTable,
    SiteSubspace,
    SiteUnitTable,
    Spectrogram,
    SubspaceAnalysis,
    SubspaceRFTable,
    TuningSubspaceTable,
    UnitScoresTable,
)

__all__ = [
    "NAMESPACE",
    "EncodingModel",
    "ModelLayerTable",
    "ModelWeight",
    "SiteStatisticsTable",
    "SiteSubspace",
    "SiteUnitTable",
    "Spectrogram",
    "SubspaceAnalysis",
    "SubspaceRFTable",
    "TuningSubspaceTable",
    "UnitScoresTable",
    "spec_path",
]


def spec_path() -> Path:
    """Return the path of the namespace YAML that ``ndx_subspace`` loads.

    Returns
    -------
    pathlib.Path
        The installed ``ndx_subspace/spec/ndx-subspace.namespace.yaml``, or in an editable
        install ``ndx-subspace/spec/ndx-subspace.namespace.yaml`` of the repository.
    """
    return ndx_subspace.spec_path()
