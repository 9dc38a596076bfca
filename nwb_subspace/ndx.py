"""Python classes of the ``ndx-subspace`` NWB extension.

The spec YAML (built by ``spec/create_extension_spec.py``) ships inside the package as
``nwb_subspace/spec/``; in an editable install it is read from the repository's ``spec/``.
Loading happens on import, before any file is opened, so new objects are always written
with their own ``neurodata_type`` and the spec is cached in the file.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from pynwb import get_class, load_namespaces

NAMESPACE = "ndx-subspace"


def spec_path() -> Path:
    """Return the path of the namespace YAML that the package loads."""
    installed = Path(str(files(__package__))) / "spec" / f"{NAMESPACE}.namespace.yaml"
    if installed.exists():
        return installed
    # Editable install / source tree: the spec lives in the repository's spec/ folder.
    return Path(__file__).resolve().parent.parent / "spec" / f"{NAMESPACE}.namespace.yaml"


load_namespaces(str(spec_path()))

Spectrogram = get_class("Spectrogram", NAMESPACE)
ModelWeight = get_class("ModelWeight", NAMESPACE)
ModelLayerTable = get_class("ModelLayerTable", NAMESPACE)
UnitScoresTable = get_class("UnitScoresTable", NAMESPACE)
EncodingModel = get_class("EncodingModel", NAMESPACE)
TuningSubspaceTable = get_class("TuningSubspaceTable", NAMESPACE)
SubspaceRFTable = get_class("SubspaceRFTable", NAMESPACE)
SiteUnitTable = get_class("SiteUnitTable", NAMESPACE)
SiteSubspace = get_class("SiteSubspace", NAMESPACE)
SiteStatisticsTable = get_class("SiteStatisticsTable", NAMESPACE)
SubspaceAnalysis = get_class("SubspaceAnalysis", NAMESPACE)
