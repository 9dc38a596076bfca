"""Shared fixtures: small NWB files generated in code (no data files in the repository)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import h5py
import numpy as np
import pytest

import nwb_subspace  # noqa: F401  (registers the extension before any file is opened)
from nwb_subspace.testing import mock_result_set, write_mock_nwbfile

if os.environ.get("PYTEST_XDIST_WORKER"):
    # One worker per core: keep each worker's torch and BLAS to one thread.
    import torch

    torch.set_num_threads(1)


def pytest_addoption(parser):
    parser.addoption(
        "--paper",
        action="store_true",
        help="also run the science checks on the paper preset (marked 'paper'; about 30 min "
        "on 2 CPU cores: 30 min of sound, 60 units)",
    )


def pytest_collection_modifyitems(config, items):
    if config.getoption("--paper"):
        return
    skip = pytest.mark.skip(reason="paper-preset science check: run with --paper")
    for item in items:
        if item.get_closest_marker("paper") is not None:
            item.add_marker(skip)


@pytest.fixture
def mock_file(tmp_path: Path) -> Path:
    """A plain-pynwb session file with 5 units, waveforms, electrodes and a sound."""
    return write_mock_nwbfile(tmp_path / "session.nwb")


@pytest.fixture
def results():
    """A result set holding one object of every extension type."""
    return mock_result_set()


def dataset_checksums(path: Path) -> dict[str, str]:
    """SHA-256 of every dataset's values and attributes, and of every group's attributes.

    Keys are HDF5 paths (groups get a trailing ``/``). The ``colnames`` attribute of a
    table is left out of its group's hash: adding a column must extend it (checked by
    :func:`colnames`), which is the one sanctioned change to existing objects.
    """
    sums: dict[str, str] = {}

    def visit(name, obj):
        h = hashlib.sha256()
        if isinstance(obj, h5py.Dataset):
            data = obj[()]
            if isinstance(data, np.ndarray) and data.dtype.kind == "O":
                h.update(repr(data.tolist()).encode())
            elif isinstance(data, np.ndarray):
                h.update(data.tobytes())
            else:
                h.update(repr(data).encode())
        else:
            name = f"{name}/"
        for key in sorted(obj.attrs):
            if key != "colnames":
                h.update(key.encode() + repr(obj.attrs[key]).encode())
        sums[name] = h.hexdigest()

    with h5py.File(path, "r") as f:
        f.visititems(visit)
    return sums


def colnames(path: Path, table: str = "units") -> list[str]:
    with h5py.File(path, "r") as f:
        return [c.decode() if isinstance(c, bytes) else c for c in f[table].attrs["colnames"]]


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="session")
def small_session(tmp_path_factory):
    """The ``small`` simulated session (seed 0), loaded: (SessionData, GroundTruth)."""
    from nwb_subspace.io.session import load_session_data
    from nwb_subspace.simulate import load_truth, simulate_session

    folder = tmp_path_factory.mktemp("small")
    nwb_path, truth_path = simulate_session(folder / "small.nwb", preset="small", seed=0)
    return load_session_data(nwb_path), load_truth(truth_path)


def session_masks(session) -> tuple[np.ndarray, np.ndarray]:
    """Boolean (fit, holdout) bin masks of a SessionData (the pipeline's own masks)."""
    from nwb_subspace.pipeline import session_masks as pipeline_masks

    masks = pipeline_masks(session)
    return masks["fit"], masks["holdout"]


@pytest.fixture(scope="session")
def small_fits(small_session):
    """CNN (the default recipe: 3 initialisations, all kept in ``members_`` for ensemble
    dSTRFs, as the pipeline uses them) and LN (one initialisation) on the small session."""
    from nwb_subspace.models.estimator import EncodingEstimator
    from nwb_subspace.models.training import TrainingConfig

    session, _ = small_session
    fit, hold = session_masks(session)
    X, Y = session.spectrogram.data, session.counts
    return {
        "cnn": EncodingEstimator("cnn", training=TrainingConfig()).fit(X, Y, fit, hold),
        "ln": EncodingEstimator("ln", training=TrainingConfig(n_initializations=1)).fit(
            X, Y, fit, hold
        ),
    }
