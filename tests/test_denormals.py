"""Denormal floats are flushed while fitting, predicting and differentiating, then restored."""

from __future__ import annotations

import numpy as np
import torch

from nwb_subspace.denormals import denormals_flushed, flushed_denormals
from nwb_subspace.dstrf.compute import dstrf_moments
from nwb_subspace.models import PopulationCNN
from nwb_subspace.models.training import predict


def test_flushing_is_scoped_and_restores_the_previous_mode():
    torch.set_flush_denormal(False)
    assert not denormals_flushed()
    with flushed_denormals():
        assert denormals_flushed()
        assert float(torch.tensor([1e-39]) * 1.0) == 0.0  # denormal flushed
    assert not denormals_flushed()
    torch.set_flush_denormal(True)
    try:
        with flushed_denormals():
            pass
        assert denormals_flushed()  # a mode set by the caller is kept
    finally:
        torch.set_flush_denormal(False)


def test_models_run_with_denormals_flushed(monkeypatch):
    seen = []
    real = PopulationCNN.forward

    def spy(self, x):
        seen.append(denormals_flushed())
        return real(self, x)

    monkeypatch.setattr(PopulationCNN, "forward", spy)
    torch.manual_seed(0)
    model = PopulationCNN(8, 3, n_channels1=4, n_taps1=3, n_channels2=4, n_taps2=2, n_hidden=5)
    X = np.random.default_rng(0).random((40, 8)).astype(np.float32)
    predict(model, X)
    dstrf_moments(model, X, mode="reverse")
    assert seen and all(seen)
    assert not denormals_flushed()
