"""The CUDA path: models, dSTRFs and a whole session on a GPU give the CPU's answers.

Skipped where torch sees no CUDA GPU (CI has none); run on a GPU machine with
``python -m pytest tests/test_cuda.py``. cuDNN may use TF32 for convolutions, so numbers
that pass through a convolution are compared at a relative 2e-3; the gated-linear dSTRF map
uses plain float32 products and is compared at 1e-5.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from nwb_subspace.dstrf.compute import compute_dstrf, dstrf_moments
from nwb_subspace.models import PopulationCNN
from nwb_subspace.models.estimator import EncodingEstimator
from nwb_subspace.models.training import TrainingConfig, predict
from nwb_subspace.testing.data import poisson_data

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

FAST = TrainingConfig(
    max_epochs_stage1=6, max_epochs_stage2=4, patience=3, n_initializations=2, window=64, seed=1
)


def _cnn(n_units: int = 5) -> PopulationCNN:
    torch.manual_seed(0)
    return PopulationCNN(8, n_units, n_channels1=6, n_taps1=4, n_channels2=5, n_taps2=3, n_hidden=7)


def _pair(model: torch.nn.Module) -> tuple[torch.nn.Module, torch.nn.Module]:
    return model.eval(), copy.deepcopy(model).to("cuda").eval()


def _data(n_bins: int = 3000, n_freq: int = 8, n_units: int = 4, seed: int = 0):
    return poisson_data(n_bins, n_freq, n_units, seed)


@pytest.mark.parametrize("mode", ["gated", "reverse", "forward"])
def test_dstrfs_on_cuda_equal_cpu(mode):
    cpu, gpu = _pair(_cnn())
    X = np.random.default_rng(1).random((200, 8)).astype(np.float32)
    bins = np.array([0, 3, 50, 199])
    a = compute_dstrf(cpu, X, bins, n_lags=7, mode=mode)
    b = compute_dstrf(gpu, X, bins, n_lags=7, mode=mode)
    scale = np.abs(a).max()
    tol = 1e-5 if mode == "gated" else 2e-3
    np.testing.assert_allclose(b, a, atol=tol * scale)


def test_moments_on_cuda_equal_cpu_with_outliers_and_frames():
    cpu, gpu = _pair(_cnn())
    X = np.random.default_rng(2).random((900, 8)).astype(np.float32)
    kw = {
        "n_lags": 6,
        "outlier_threshold": 1.5,
        "outlier_rule": "rms",
        "keep_frames": [5, 600],
        "chunk_size": 128,
    }
    a = dstrf_moments(cpu, X, **kw)
    b = dstrf_moments(gpu, X, **kw)
    assert a.n_outliers.sum() > 0  # the second pass ran
    np.testing.assert_array_equal(b.count, a.count)
    np.testing.assert_array_equal(b.n_outliers, a.n_outliers)
    scale = np.abs(a.covariance).max()
    np.testing.assert_allclose(b.covariance, a.covariance, atol=1e-5 * scale)
    np.testing.assert_allclose(b.mean, a.mean, atol=1e-5 * np.abs(a.mean).max())
    np.testing.assert_allclose(b.frames, a.frames, atol=1e-5 * np.abs(a.frames).max())


def test_ensemble_moments_on_cuda_equal_cpu():
    pairs = [_pair(_cnn())]
    torch.manual_seed(1)
    second = PopulationCNN(8, 5, n_channels1=6, n_taps1=4, n_channels2=5, n_taps2=3, n_hidden=7)
    pairs.append(_pair(second))
    X = np.random.default_rng(3).random((500, 8)).astype(np.float32)
    a = dstrf_moments([c for c, _ in pairs], X, n_lags=6)
    b = dstrf_moments([g for _, g in pairs], X, n_lags=6)
    assert a.n_models == b.n_models == 2
    for key in ("covariance", "noise_covariance"):
        ref = getattr(a, key)
        np.testing.assert_allclose(getattr(b, key), ref, atol=1e-5 * np.abs(ref).max())


def test_cnn_fits_on_cuda_and_predicts_like_its_cpu_copy():
    X, Y, train, hold = _data()
    arch = {"n_channels1": 6, "n_channels2": 5, "n_hidden": 8, "n_taps1": 4, "n_taps2": 3}
    gpu = EncodingEstimator("cnn", architecture=arch, training=FAST, device="cuda")
    gpu.fit(X, Y, train, hold)
    assert gpu.device_ == "cuda" and len(gpu.members_) == 2
    assert all(p.device.type == "cuda" for m in gpu.members_ for p in m.parameters())
    pred = gpu.predict(X)
    assert np.isfinite(pred).all()
    on_cpu = predict(copy.deepcopy(gpu.model_).cpu(), X)
    np.testing.assert_allclose(pred, on_cpu, rtol=2e-3, atol=2e-3 * np.abs(on_cpu).max())
    cpu = EncodingEstimator("cnn", architecture=arch, training=FAST, device="cpu")
    cpu.fit(X, Y, train, hold)
    loss_gpu, loss_cpu = gpu.history_.best_holdout_loss, cpu.history_.best_holdout_loss
    assert abs(loss_gpu - loss_cpu) < 0.05 * abs(loss_cpu), (loss_gpu, loss_cpu)


@pytest.mark.slow
def test_whole_session_on_cuda(tmp_path):
    from dataclasses import replace

    from test_pipeline import QUICK  # the quick recipe of the CPU pipeline test

    from nwb_subspace.config import SiteSettings
    from nwb_subspace.io.writer import read_results
    from nwb_subspace.pipeline import run_session
    from nwb_subspace.simulate import simulate_session

    path, _ = simulate_session(tmp_path / "tiny.nwb", preset="tiny", seed=0)
    sites = SiteSettings(n_null=20, n_shifts=20)
    config = replace(QUICK, sites=sites, run_name="gpu", device="cuda")
    result = run_session(path, config)
    back = read_results(path, "gpu")  # rebuilt on the CPU
    models = {m.name: m for m in back.models}
    assert {"ln", "cnn", "cnn_fit2", "subspace"} <= set(models)  # dSTRFs of both CNN fits
    assert models["cnn"].training.device == "cuda"
    X = result.session.spectrogram.data.astype(np.float32)
    stored = predict(models["cnn"].module, X)
    fitted = result.estimators["cnn"].predict(X)
    np.testing.assert_allclose(stored, fitted, rtol=2e-3, atol=2e-3 * np.abs(fitted).max())
    assert back.subspaces
    assert np.isfinite(result.tuning.components).all()
    assert np.isfinite(result.ev_fraction).any()
