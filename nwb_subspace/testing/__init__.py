"""Factories of small, valid objects for tests and examples (shipped with the package)."""

from nwb_subspace.testing.mock import mock_nwbfile, mock_result_set, write_mock_nwbfile

__all__ = ["mock_nwbfile", "mock_result_set", "write_mock_nwbfile"]
