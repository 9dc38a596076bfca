"""nwb-subspace: tuning subspaces of auditory-cortex neurons, stored as NWB.

Importing the package loads the ``ndx-subspace`` NWB extension namespace and registers
its Python classes, so that files holding our types can be read and written with pynwb.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("nwb-subspace")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0+unknown"

from nwb_subspace import ndx  # noqa: E402,F401  (loads the namespace; must come before any NWB I/O)

__all__ = ["__version__", "ndx"]
