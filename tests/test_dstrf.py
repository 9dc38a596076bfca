"""dSTRFs: exactness against autograd, streaming moments, memory, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nwb_subspace.dstrf.compute import DSTRFMoments, compute_dstrf, dstrf_moments
from nwb_subspace.models import PopulationCNN, PopulationLN


def _small_cnn(n_units: int = 5, seed: int = 0) -> PopulationCNN:
    torch.manual_seed(seed)
    return PopulationCNN(8, n_units, n_channels1=6, n_taps1=4, n_channels2=5, n_taps2=3, n_hidden=7)


def _reference(model, X, t, D):
    """d rate(t) / d window by torch.autograd.functional.jacobian, (N, F, D) model lag order."""
    L = max(D, model.memory)
    w = torch.zeros(L, X.shape[1])
    src = torch.from_numpy(X[max(t - L + 1, 0) : t + 1])
    w[L - src.shape[0] :] = src
    jac = torch.autograd.functional.jacobian(lambda w: model(w[None])[0, -1], w)
    return jac.permute(0, 2, 1)[:, :, L - D :].numpy()


@pytest.mark.parametrize("mode", ["reverse", "forward", "auto"])
@pytest.mark.parametrize("n_lags", [3, 6, 9])
def test_exact_against_autograd_jacobian(mode, n_lags):
    model = _small_cnn().eval()
    X = np.random.default_rng(1).random((80, 8)).astype(np.float32)
    bins = np.array([0, 2, 5, 17, 40, 79])
    J = compute_dstrf(model, X, bins, n_lags=n_lags, mode=mode, chunk_size=4)
    assert J.shape == (bins.size, 5, 8, n_lags)
    for i, t in enumerate(bins):
        np.testing.assert_allclose(J[i], _reference(model, X, int(t), n_lags), atol=1e-5)


def test_exact_for_ln_model_and_unit_subset():
    torch.manual_seed(3)
    model = PopulationLN(8, 4, n_channels=5, n_taps=7).eval()
    X = np.random.default_rng(2).random((50, 8)).astype(np.float32)
    J = compute_dstrf(model, X, [10, 49], units=[1, 3])
    for i, t in enumerate([10, 49]):
        np.testing.assert_allclose(J[i], _reference(model, X, t, 7)[[1, 3]], atol=1e-5)


def test_streaming_moments_equal_batch_moments():
    model = _small_cnn().eval()
    X = np.random.default_rng(0).random((70, 8)).astype(np.float32)
    mom = dstrf_moments(model, X, n_lags=6, outlier_threshold=None, chunk_size=9)
    J = compute_dstrf(model, X, np.arange(70), n_lags=6).reshape(70, 5, -1).astype(np.float64)
    assert isinstance(mom, DSTRFMoments)
    assert mom.count.tolist() == [70] * 5
    for u in range(5):
        np.testing.assert_allclose(mom.mean[u].ravel(), J[:, u].mean(0), atol=1e-9)
        np.testing.assert_allclose(mom.covariance[u], np.cov(J[:, u], rowvar=False), atol=1e-9)
    # a bins mask and keep_frames
    mask = np.zeros(70, bool)
    mask[10:40] = True
    mom2 = dstrf_moments(model, X, n_lags=6, bins=mask, keep_frames=[12, 30])
    np.testing.assert_allclose(mom2.frames[:, 0].reshape(2, -1), J[[12, 30], 0], atol=1e-6)
    assert mom2.n_total.tolist() == [30] * 5


@pytest.mark.parametrize(("rule", "threshold"), [("rms", 2.0), ("reference", 0.5)])
def test_outliers_left_out_exactly(rule, threshold):
    model = _small_cnn().eval()
    X = np.random.default_rng(0).random((60, 8)).astype(np.float32)
    kw = {"outlier_threshold": threshold, "outlier_rule": rule, "chunk_size": 7}
    mom = dstrf_moments(model, X, n_lags=6, **kw)
    J = compute_dstrf(model, X, np.arange(60), n_lags=6).reshape(60, 5, -1).astype(np.float64)
    for u in range(5):
        mu = J[:, u].mean(0)  # the mean of every frame, not recomputed
        if rule == "rms":
            dev = np.linalg.norm(J[:, u] - mu, axis=1)
            keep = dev <= threshold * np.sqrt(np.mean(dev**2))
        else:
            keep = np.std(J[:, u] - mu, axis=1) <= threshold * np.std(mu)
        assert mom.n_outliers[u] == (~keep).sum()
        np.testing.assert_allclose(mom.mean[u].ravel(), J[keep, u].mean(0), atol=1e-8)
        np.testing.assert_allclose(mom.covariance[u], np.cov(J[keep, u], rowvar=False), atol=1e-8)
    assert mom.n_outliers.sum() > 0 and mom.outlier_rule == rule
    assert any(f"{rule} rule" in n for n in mom.notes)


class _FramesAsJacobians(torch.nn.Module):
    """rate(t) = |X[t]|^2 / 2 (memory 1): the dSTRF at bin t is the spectrogram row X[t]."""

    memory, n_frequencies, n_units = 1, 4, 1

    def forward(self, x):
        return 0.5 * (x**2).sum(-1, keepdim=True)


def test_reference_and_rms_outlier_rules_on_hand_computed_frames():
    """Eight frames b = [0, 0, 4, 4], U = b + 10 (a uniform offset), V = b + 5 [1, -1, 1, -1].

    Mean m = b + [1.5, 0.5, 1.5, 0.5] = [1.5, 0.5, 5.5, 4.5]; spread over the pixels
    std_p(m) = sqrt(17 / 4) = 2.06. Deviations from m: b: [-1.5, -0.5, -1.5, -0.5] (std_p 0.5,
    norm sqrt 5), U: [8.5, 9.5, 8.5, 9.5] (std_p 0.5, norm sqrt 325 = 18.0), V: [3.5, -5.5,
    3.5, -5.5] (std_p 4.5, norm sqrt 85 = 9.2); RMS deviation sqrt((8*5 + 325 + 85) / 10) =
    sqrt 45 = 6.7. At threshold 2: the reference rule drops V (4.5 > 2 * 2.06 = 4.12; a
    uniform offset has no spread over the pixels, so U stays); the RMS rule drops U (18.0 >
    2 * 6.7 = 13.4) and keeps V (9.2).
    """
    b = np.array([0.0, 0.0, 4.0, 4.0])
    frames = np.vstack([np.tile(b, (8, 1)), b + 10, b + 5 * np.array([1, -1, 1, -1])])
    X = frames.astype(np.float32)
    model = _FramesAsJacobians()
    np.testing.assert_allclose(compute_dstrf(model, X, np.arange(10))[:, 0, :, 0], frames)
    m = frames.mean(0)
    np.testing.assert_allclose(m, [1.5, 0.5, 5.5, 4.5])
    assert np.std(m) == pytest.approx(np.sqrt(17 / 4))
    expected = {"reference": [9], "rms": [8]}  # frame V, frame U
    for rule, dropped in expected.items():
        mom = dstrf_moments(model, X, n_lags=1, outlier_threshold=2.0, outlier_rule=rule)
        keep = np.setdiff1d(np.arange(10), dropped)
        assert mom.n_outliers.tolist() == [1] and mom.count.tolist() == [9]
        np.testing.assert_allclose(mom.mean[0, :, 0], frames[keep].mean(0), atol=1e-6)
        np.testing.assert_allclose(mom.covariance[0], np.cov(frames[keep], rowvar=False), atol=1e-5)
        assert mom.mean_spread[0] == pytest.approx(np.sqrt(17 / 4), rel=1e-6)
    # at the default threshold 5 neither rule drops a frame
    for rule in expected:
        assert dstrf_moments(model, X, n_lags=1, outlier_rule=rule).n_outliers.tolist() == [0]
    with pytest.raises(ValueError, match="outlier_rule must be one of"):
        dstrf_moments(model, X, n_lags=1, outlier_rule="mad")


def test_memory_constant_in_recording_length():
    """No buffer of the result or the accumulators scales with the number of bins."""
    model = _small_cnn().eval()
    sizes = []
    for n in (50, 200):
        X = np.random.default_rng(n).random((n, 8)).astype(np.float32)
        mom = dstrf_moments(model, X, n_lags=6, chunk_size=16)
        sizes.append(sum(np.asarray(v).nbytes for v in vars(mom).values() if hasattr(v, "nbytes")))
    assert sizes[0] == sizes[1]


def test_non_finite_jacobian_frames_are_dropped_and_recorded():
    class Bad(torch.nn.Module):
        memory, n_frequencies, n_units = 3, 4, 2

        def forward(self, x):
            pad = torch.nn.functional.pad(x, (0, 0, 2, 0))
            s = pad.unfold(1, 3, 1).sum((-1, -2))  # (b, t)
            return torch.stack([s, torch.sqrt(s)], -1)  # sqrt'(0) = inf at silent windows

    X = np.random.default_rng(0).random((30, 4)).astype(np.float32)
    X[10:15] = 0.0
    mom = dstrf_moments(Bad(), X, outlier_threshold=None)
    # reverse mode shares the graph: 0 * inf from unit 1 can reach unit 0's frames too
    assert mom.n_nonfinite[1] >= 3
    assert (mom.count == mom.n_total - mom.n_nonfinite).all()
    fwd = dstrf_moments(Bad(), X, outlier_threshold=None, mode="forward")
    assert fwd.n_nonfinite.tolist() == [0, 3]
    assert fwd.count.tolist() == [30, 27]
    assert np.isfinite(mom.covariance).all()
    assert any("non-finite" in n for n in mom.notes)


def test_bad_input_messages():
    model = _small_cnn()
    X = np.zeros((20, 8), np.float32)
    with pytest.raises(ValueError, match="shape"):
        dstrf_moments(model, np.zeros((20, 7)))
    with pytest.raises(ValueError, match="NaN"):
        dstrf_moments(model, np.full((20, 8), np.nan))
    with pytest.raises(ValueError, match="mode"):
        dstrf_moments(model, X, mode="sideways")
    with pytest.raises(ValueError, match="units"):
        dstrf_moments(model, X, units=[7])
    with pytest.raises(ValueError, match="no bins"):
        dstrf_moments(model, X, bins=np.zeros(20, bool))
    with pytest.raises(ValueError, match="n_lags"):
        dstrf_moments(model, X, n_lags=0)
    with pytest.raises(TypeError, match="EncodingModel"):
        dstrf_moments(torch.nn.Linear(3, 3), X)


@pytest.mark.parametrize("n_lags", [5, 9, 12])
def test_gated_map_matches_autograd_at_every_bin(n_lags):
    """The gated-linear map equals torch.autograd.functional.jacobian (CNN and LN)."""
    model = _small_cnn(n_units=4, seed=5).eval()
    X = np.random.default_rng(7).random((40, 8)).astype(np.float32) * 3
    J = compute_dstrf(model, X, np.arange(40), n_lags=n_lags, mode="gated", chunk_size=16)
    for t in range(40):
        np.testing.assert_allclose(J[t], _reference(model, X, t, n_lags), atol=1e-5)
    torch.manual_seed(1)
    ln = PopulationLN(8, 3, n_channels=4, n_taps=6).eval()
    J = compute_dstrf(ln, X, np.arange(40), n_lags=n_lags, mode="gated", units=[0, 2])
    for t in (0, 3, 39):
        np.testing.assert_allclose(J[t], _reference(ln, X, t, n_lags)[[0, 2]], atol=1e-5)


def test_auto_mode_picks_gated_map_and_gated_needs_a_known_model():
    model = _small_cnn().eval()
    X = np.random.default_rng(0).random((30, 8)).astype(np.float32)
    assert dstrf_moments(model, X).mode == "gated"
    mom = dstrf_moments(model, X, mode="reverse", outlier_threshold=None)
    gated = dstrf_moments(model, X, outlier_threshold=None)
    np.testing.assert_allclose(gated.covariance, mom.covariance, atol=1e-9)
    assert set(gated.timings) == {"jacobian_s", "accumulate_s", "outlier_pass_s"}

    class Lin(torch.nn.Module):
        memory, n_frequencies, n_units = 2, 8, 1

        def forward(self, x):
            return x.sum(-1, keepdim=True)

    with pytest.raises(ValueError, match="gated"):
        dstrf_moments(Lin(), X, mode="gated")


class _MeanOf(torch.nn.Module):
    """Reference ensemble: the mean prediction of its members, differentiated by autograd."""

    def __init__(self, members):
        super().__init__()
        self.members = torch.nn.ModuleList(members)
        self.memory = members[0].memory
        self.n_frequencies = members[0].n_frequencies
        self.n_units = members[0].n_units

    def forward(self, x):
        return torch.stack([m(x) for m in self.members]).mean(0)


def test_ensemble_dstrf_is_the_jacobian_of_the_mean_prediction():
    members = [_small_cnn(seed=s).eval() for s in range(3)]
    X = np.random.default_rng(4).random((60, 8)).astype(np.float32)
    bins = np.array([3, 20, 59])
    J = compute_dstrf(members, X, bins, n_lags=6)
    ref = _MeanOf(members).eval()
    for i, t in enumerate(bins):
        np.testing.assert_allclose(J[i], _reference(ref, X, int(t), 6), atol=1e-5)


def test_ensemble_noise_covariance_is_the_half_difference_covariance():
    members = [_small_cnn(seed=s).eval() for s in range(3)]
    X = np.random.default_rng(5).random((90, 8)).astype(np.float32)
    mom = dstrf_moments(members, X, n_lags=5, outlier_threshold=None, chunk_size=16)
    assert mom.n_models == 3 and mom.noise_covariance.shape == (5, 40, 40)
    J = [compute_dstrf(m, X, np.arange(90), n_lags=5).reshape(90, 5, -1) for m in members]
    mean = (J[0] + J[1] + J[2]) / 3
    # halves A = {0, 2}, B = {1}; c^2 = 4 / (M (1/|A| + 1/|B|)) = 4 / (3 * 1.5)
    diff = np.sqrt(4 / 4.5) * ((J[0] + J[2]) / 2 - J[1]) / 2
    for u in range(5):
        np.testing.assert_allclose(mom.mean[u].ravel(), mean[:, u].mean(0), atol=1e-7)
        np.testing.assert_allclose(mom.covariance[u], np.cov(mean[:, u], rowvar=False), atol=1e-8)
        np.testing.assert_allclose(
            mom.noise_covariance[u], np.cov(diff[:, u], rowvar=False), atol=1e-8
        )
    single = dstrf_moments(members[0], X, n_lags=5)
    assert single.n_models == 1 and single.noise_covariance is None


def test_identical_fits_have_no_fit_to_fit_noise():
    model = _small_cnn().eval()
    X = np.random.default_rng(6).random((80, 8)).astype(np.float32)
    one = dstrf_moments(model, X, n_lags=4)
    two = dstrf_moments([model, model], X, n_lags=4)
    np.testing.assert_allclose(two.covariance, one.covariance, atol=1e-10)
    assert np.abs(two.noise_covariance).max() < 1e-12


def test_bad_ensembles_are_refused():
    X = np.random.default_rng(0).random((30, 8)).astype(np.float32)
    with pytest.raises(ValueError, match="at least one model"):
        dstrf_moments([], X)
    with pytest.raises(ValueError, match="same memory"):
        dstrf_moments([_small_cnn(5), _small_cnn(4)], X)
    with pytest.raises(TypeError, match="EncodingModel"):
        dstrf_moments([_small_cnn(), "model"], X)
    with pytest.raises(TypeError, match="sequence"):
        dstrf_moments(3.0, X)


def test_ensemble_moments_do_not_depend_on_unit_groups():
    members = [_small_cnn(seed=s).eval() for s in range(2)]
    X = np.random.default_rng(7).random((70, 8)).astype(np.float32)
    whole = dstrf_moments(members, X, n_lags=4)
    grouped = dstrf_moments(members, X, n_lags=4, unit_batch=2)
    np.testing.assert_allclose(grouped.covariance, whole.covariance, atol=1e-10)
    np.testing.assert_allclose(grouped.noise_covariance, whole.noise_covariance, atol=1e-10)
    np.testing.assert_array_equal(grouped.n_outliers, whole.n_outliers)


def test_gated_map_in_unit_blocks_equals_autograd():
    """Many units x bins: the gated map runs in blocks of units (unit_blocks); every block
    gives autograd's Jacobians."""
    from nwb_subspace.dstrf.gated import unit_blocks

    model = _small_cnn(n_units=40).eval()
    X = np.random.default_rng(4).random((120, 8)).astype(np.float32)
    bins = np.arange(20, 120)
    assert len(unit_blocks(40, bins.size)) == 2  # 20 units a block at 100 bins a chunk
    gated = compute_dstrf(model, X, bins, mode="gated", chunk_size=100)
    reverse = compute_dstrf(model, X, bins, mode="reverse", chunk_size=100)
    np.testing.assert_allclose(gated, reverse, atol=1e-5)


@pytest.mark.parametrize(("flush_every", "p"), [(1, 6), (5, 300), (8192, 300)])
def test_moment_accumulator_blocks_match_float64(flush_every, p):
    """The products are computed for the pixel blocks on and below the diagonal (2 blocks
    at 300 pixels) and flushed into float64: the covariance is the frames' own; removing
    frames (sign -1) and taking units from another accumulator keep it exact."""
    from nwb_subspace.dstrf.accumulate import MomentAccumulator, pixel_blocks

    assert len(pixel_blocks(p)) == (1 if p < 256 else 2)
    rng = np.random.default_rng(5)
    frames = rng.normal(size=(3, 40, p)).astype(np.float32) + np.float32(2.0)

    def cov(x):
        return np.cov(x.astype(np.float64), rowvar=False)

    acc = MomentAccumulator(3, p, flush_every=flush_every)
    for start in range(0, 40, 7):
        acc.add(torch.from_numpy(frames[:, start : start + 7].copy()), consume=True)
    for u in range(3):
        np.testing.assert_allclose(acc.covariance()[u].numpy(), cov(frames[u]), atol=2e-5)
    acc.add(torch.from_numpy(frames[:, :10].copy()), sign=-1.0)
    np.testing.assert_allclose(acc.covariance()[1].numpy(), cov(frames[1, 10:]), atol=2e-5)
    other = MomentAccumulator(1, p, flush_every=flush_every)
    other.add(torch.from_numpy(frames[2:3, :20].copy()))
    acc.replace_units(torch.tensor([0]), other)
    np.testing.assert_allclose(acc.covariance()[0].numpy(), cov(frames[2, :20]), atol=2e-5)
    # pixels in another order: the same covariance, permuted (rows and columns)
    perm = rng.permutation(p)
    permuted = acc.covariance(torch.from_numpy(perm))
    np.testing.assert_allclose(
        permuted[0].numpy(), cov(frames[2, :20])[np.ix_(perm, perm)], atol=2e-5
    )
    np.testing.assert_array_equal(permuted.numpy(), acc.covariance()[:, perm][:, :, perm].numpy())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_rows_times_is_the_matrix_product(dtype):
    """The tall-by-small products of the gated map (a oneDNN 1 x 1 convolution on the CPU
    in float32, else mm): a @ b, into ``out`` or added to it, non-contiguous input too."""
    from nwb_subspace.dstrf.gated import rows_times

    gen = torch.Generator().manual_seed(3)
    a = torch.randn(1000, 70, generator=gen, dtype=dtype)
    b = torch.randn(70, 32, generator=gen, dtype=dtype)
    ref = a.double() @ b.double()
    tol = 1e-4 if dtype == torch.float32 else 1e-10
    torch.testing.assert_close(rows_times(a, b).double(), ref, atol=tol, rtol=tol)
    out = torch.full((1000, 32), 2.0, dtype=dtype)
    rows_times(a, b, out, add=True)
    torch.testing.assert_close(out.double(), ref + 2.0, atol=tol, rtol=tol)
    rows_times(a, b, out)
    torch.testing.assert_close(out.double(), ref, atol=tol, rtol=tol)
    strided = torch.randn(70, 1000, generator=gen, dtype=dtype).T
    torch.testing.assert_close(
        rows_times(strided, b).double(), strided.double() @ b.double(), atol=tol, rtol=tol
    )


@pytest.mark.parametrize("scale", [30.0, 1e6])
def test_outlier_moments_exact_when_subtracted_and_when_reaccumulated(scale):
    """dSTRFs equal to the spectrogram rows (_FramesAsJacobians): one frame is an outlier
    `scale` times the others' size. At 30x it is subtracted from pass 1's moments; at 1e6x
    (beyond 100x the median frame, where float32 sums of pass 1 would keep its rounding)
    the unit is accumulated afresh. Both give the kept frames' own moments (to float32
    accumulation: 1.1e-6 of the largest entry without any outlier, 5e-6 at 30x)."""
    rng = np.random.default_rng(6)
    X = rng.normal(size=(3000, 4)).astype(np.float32) + np.float32(1.0)
    X[1234] *= np.float32(scale)
    mom = dstrf_moments(_FramesAsJacobians(), X, outlier_threshold=5.0, chunk_size=256)
    J = X.astype(np.float64)
    dev = np.linalg.norm(J - J.mean(0), axis=1)
    keep = dev <= 5.0 * np.sqrt(np.mean(dev**2))
    assert not keep[1234] and mom.n_outliers[0] == (~keep).sum()
    np.testing.assert_allclose(mom.mean[0].ravel(), J[keep].mean(0), rtol=1e-6, atol=1e-7)
    cov = np.cov(J[keep], rowvar=False)
    np.testing.assert_allclose(mom.covariance[0], cov, rtol=0, atol=2e-5 * np.abs(cov).max())
