"""SRFs and plots on a synthetic unit with known shape (fast, no simulation)."""

from __future__ import annotations

import matplotlib.image as mpimg
import numpy as np
import pytest

from nwb_subspace.report.plots import plot_dstrf_pcs, plot_srf
from nwb_subspace.results import TuningSubspaces
from nwb_subspace.subspace.srf import project_stimulus, srf_shape_classes, subspace_rfs


def _tuning(n_units: int, f: int = 6, d: int = 4) -> TuningSubspaces:
    comps = np.zeros((n_units, 3, f, d))
    for u in range(n_units):
        for k in range(3):
            comps[u, k, k, d - 1] = 1.0  # PC k reads channel k at the current bin
    return TuningSubspaces(
        unit_rows=np.arange(n_units),
        components=comps,
        explained_variance_ratio=np.tile([0.6, 0.3, 0.1], (n_units, 1)),
        dimensionality=np.full(n_units, 2),
        mean_dstrf=comps[:, 0],
        n_frames=np.full(n_units, 1000),
        noise_floor=np.full((n_units, 3), 0.01),
        frequencies=np.geomspace(200, 2e4, f),
        lags_s=(d - 1 - np.arange(d)) * 0.01,
    )


def test_projection_uses_model_lag_order():
    X = np.random.default_rng(0).random((10, 2))
    comps = np.zeros((1, 2, 3))
    comps[0, 1, 0] = 1.0  # oldest lag: bin t-2, channel 1
    p = project_stimulus(X, comps)[:, 0]
    np.testing.assert_allclose(p[2:], X[:-2, 1])
    assert p[0] == p[1] == 0


@pytest.mark.parametrize("kind", ["hill", "bowl", "monotonic"])
def test_shape_class_and_breadth(kind, tmp_path):
    rng = np.random.default_rng(1)
    X = rng.standard_normal((20000, 6))
    z = X[:, :2]
    if kind == "hill":
        r = np.exp(-0.5 * (z**2).sum(1))
    elif kind == "bowl":
        r = 1 - np.exp(-0.5 * (z**2).sum(1))
    else:
        r = np.logaddexp(0, 2 * z[:, 0])
    tuning = _tuning(1)
    srfs = subspace_rfs(tuning, X, prediction=r[:, None] * 0.1, counts=r[:, None], rate=100.0)
    assert srfs.response_map.shape == (2, 20, 20)
    assert list(srfs.response_source) == ["model", "measured"]
    assert srf_shape_classes(srfs)[0] == kind
    assert 0 < srfs.breadth[0] < 400
    assert (srfs.occupancy[0] >= 0).all() and srfs.occupancy[0].sum() > 0.9 * 20000
    png = plot_srf(srfs, 0, tmp_path / "srf.png")
    img = mpimg.imread(png)
    assert img.size and np.ptp(img) > 0


def test_empty_bins_nan_and_pairs(tmp_path):
    X = np.random.default_rng(2).standard_normal((3000, 6))
    tuning = _tuning(2)
    srfs = subspace_rfs(
        tuning, X, prediction=np.ones((3000, 2)), rate=100.0, pairs="all", min_occupancy=50
    )
    assert srfs.dimensions.tolist() == [[0, 1], [0, 1]]  # dimensionality 2 -> one pair each
    assert np.isnan(srfs.response_map[0]).any()  # corners hold < 50 samples
    png = plot_dstrf_pcs(tuning, 0, tmp_path / "pcs.png")
    img = mpimg.imread(png)
    assert img.size and np.ptp(img) > 0


def test_bad_input():
    X = np.zeros((100, 6))
    tuning = _tuning(1)
    with pytest.raises(ValueError, match="prediction and/or counts"):
        subspace_rfs(tuning, X, rate=100.0)
    with pytest.raises(ValueError, match="shape"):
        subspace_rfs(tuning, X, prediction=np.zeros((100, 2)), rate=100.0)
    with pytest.raises(ValueError, match="n_bins"):
        subspace_rfs(tuning, X, prediction=np.zeros((100, 1)), rate=100.0, n_bins=1)
