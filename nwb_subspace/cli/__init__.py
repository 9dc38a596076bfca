"""The ``nwb-subspace`` command line (:mod:`~nwb_subspace.cli.main`; ``batch`` in
:mod:`~nwb_subspace.cli.batch`)."""

from nwb_subspace.cli.main import main

__all__ = ["main"]
