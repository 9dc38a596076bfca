"""Tuning subspaces: ground-truth recovery (a model reproducing the simulator), bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nwb_subspace.dstrf.compute import dstrf_moments
from nwb_subspace.io.session import load_session_data
from nwb_subspace.simulate import PRESETS, load_truth, simulate_session
from nwb_subspace.subspace.tuning import (
    TuningSubspaceEstimator,
    jackknife_subspaces,
    noise_floor,
    subspace_similarity,
)
from nwb_subspace.testing.truth_model import TruthRateModel, truth_filters_model_order


@pytest.fixture(scope="session")
def truth_session(tmp_path_factory):
    """A small simulated session, its truth, the truth model and its tuning subspaces."""
    cfg = PRESETS["tiny"].replace(
        n_units=5, estimation_s=12.0, sequence_s=4.0, n_validation=1, validation_repeats=3
    )
    path = tmp_path_factory.mktemp("truth") / "site.nwb"
    nwb_path, truth_path = simulate_session(path, cfg, seed=3)
    data = load_session_data(nwb_path)
    truth = load_truth(truth_path)
    X = data.spectrogram.data.astype(np.float32)
    model = TruthRateModel(truth, data.rate).eval()
    mom = dstrf_moments(model, X)  # every bin
    est = TuningSubspaceEstimator().fit(mom, frequencies=data.frequencies, bin_s=1 / data.rate)
    return {"data": data, "truth": truth, "model": model, "X": X, "moments": mom, "est": est}


def test_truth_model_reproduces_simulator(truth_session):
    s = truth_session
    pred = s["model"](torch.from_numpy(s["X"][:3000])[None])[0].double().numpy()
    true = s["truth"].rate(s["X"][:3000]) / s["data"].rate
    np.testing.assert_allclose(pred, true, rtol=1e-4, atol=1e-5)


def test_ground_truth_subspace_and_dimensionality_recovered(truth_session):
    s = truth_session
    truth, tu = s["truth"], s["est"].to_result()
    assert tu.components.shape[1:] == (20, 32, truth.filters.shape[3])
    for u in range(truth.n_units):
        k = int(truth.k[u])
        true = truth_filters_model_order(truth, u, tu.components.shape[3])
        assert subspace_similarity(true, tu.components[u, :k]) > 0.999
        # PCs are orthonormal and sum positive; ratios sorted
        flat = tu.components[u].reshape(20, -1)
        np.testing.assert_allclose(flat @ flat.T, np.eye(20), atol=1e-8)
        assert (flat.sum(1) >= 0).all()
        assert np.all(np.diff(tu.explained_variance_ratio[u]) <= 1e-12)
        # exact model: the dSTRFs span exactly k dimensions; the 95% rule never exceeds it
        assert int((tu.explained_variance_ratio[u] > 1e-6).sum()) == k
        assert 1 <= tu.dimensionality[u] <= k
    np.testing.assert_allclose(tu.lags_s[-1], 0.0)
    assert tu.lags_s[0] == pytest.approx((tu.components.shape[3] - 1) * 0.01)


def test_noise_floor_matches_explicit_pixel_shuffle():
    rng = np.random.default_rng(0)
    n, p = 4000, 30
    frames = rng.standard_normal((n, 3)) @ rng.standard_normal((3, p)) + rng.standard_normal((n, p))
    shuffled = np.stack([rng.permutation(frames[:, i]) for i in range(p)], 1)
    ev = np.linalg.eigvalsh(np.cov(shuffled, rowvar=False))[::-1]
    ref = ev / ev.sum()
    ours = noise_floor(np.var(frames, 0, ddof=1), n, 5, n_shuffles=20)
    np.testing.assert_allclose(ours, ref[:5], rtol=0.1)


def test_flat_unit_and_too_few_frames_recorded():
    from nwb_subspace.dstrf.compute import DSTRFMoments

    p = 4 * 3
    cov = np.zeros((3, p, p))
    v = np.random.default_rng(0).standard_normal((2, p))
    cov[1] = v.T @ np.diag([4.0, 1.0]) @ v + 1e-3 * np.eye(p)  # two strong dimensions
    mom = DSTRFMoments(
        units=np.arange(3),
        n_frequencies=4,
        n_lags=3,
        count=np.array([100, 100, 1]),
        n_total=np.array([100, 100, 1]),
        n_outliers=np.zeros(3, int),
        n_nonfinite=np.zeros(3, int),
        mean=np.zeros((3, 4, 3)),
        covariance=cov,
        spread=np.zeros(3),
        outlier_threshold=5.0,
        mode="reverse",
    )
    est = TuningSubspaceEstimator(n_components=20).fit(
        mom, frequencies=np.arange(1.0, 5.0), bin_s=0.01
    )
    r = est.to_result()
    assert r.components.shape == (3, 12, 4, 3)  # capped by F*D
    assert "flat" in est.status_[0] and r.dimensionality[0] == 0
    assert np.isnan(r.explained_variance_ratio[0]).all()
    assert est.status_[1] == "ok" and r.dimensionality[1] == 2
    assert "too few frames" in est.status_[2] and r.dimensionality[2] == 0


def test_jackknife_and_bad_settings(truth_session):
    tu = truth_session["est"].to_result()
    assert np.allclose(jackknife_subspaces([tu, tu]), 1.0)
    with pytest.raises(ValueError, match="n_components"):
        TuningSubspaceEstimator(n_components=0).fit(
            truth_session["moments"], frequencies=tu.frequencies, bin_s=0.01
        )
    with pytest.raises(ValueError, match="variance_threshold"):
        TuningSubspaceEstimator(variance_threshold=95).fit(
            truth_session["moments"], frequencies=tu.frequencies, bin_s=0.01
        )
    with pytest.raises(ValueError, match="frequencies"):
        TuningSubspaceEstimator().fit(truth_session["moments"], frequencies=[1.0], bin_s=0.01)


def _moments(cov: np.ndarray, noise: np.ndarray | None, f: int = 5, d: int = 8):
    from nwb_subspace.dstrf.compute import DSTRFMoments

    n = cov.shape[0]
    return DSTRFMoments(
        units=np.arange(n),
        n_frequencies=f,
        n_lags=d,
        count=np.full(n, 5000),
        n_total=np.full(n, 5000),
        n_outliers=np.zeros(n, int),
        n_nonfinite=np.zeros(n, int),
        mean=np.zeros((n, f, d)),
        covariance=cov,
        spread=np.ones(n),
        outlier_threshold=5.0,
        mode="gated",
        n_models=1 if noise is None else 4,
        noise_covariance=noise,
    )


def test_dimensionality_counts_only_the_variance_fits_agree_on():
    rng = np.random.default_rng(0)
    p = 40
    q, _ = np.linalg.qr(rng.standard_normal((p, 2)))
    signal = q @ np.diag([1.0, 0.5]) @ q.T  # two shared dimensions
    r, _ = np.linalg.qr(rng.standard_normal((p, p)))
    err = r @ np.diag(0.4 * 0.85 ** np.arange(p)) @ r.T  # correlated fit-to-fit error
    cov = (signal + err)[None]
    plain = TuningSubspaceEstimator().fit(
        _moments(cov, None), frequencies=np.arange(5.0), bin_s=0.01
    )
    # the error's variance (trace 2.7, more than the signal's 1.5) inflates the 95% rule
    assert plain.to_result().dimensionality[0] > 8
    agreed = TuningSubspaceEstimator().fit(
        _moments(cov, err[None]), frequencies=np.arange(5.0), bin_s=0.01
    )
    assert agreed.to_result().dimensionality[0] == 2
    assert agreed.status_ == ["ok"]
    # the PCs are those of the averaged dSTRFs (error included), close to the shared span
    assert subspace_similarity(q.T, agreed.to_result().components[0, :2].reshape(2, -1)) > 0.9
    # nothing beyond the error: dimensionality 0, said so
    none = TuningSubspaceEstimator().fit(
        _moments(err[None], err[None]), frequencies=np.arange(5.0), bin_s=0.01
    )
    assert none.to_result().dimensionality[0] == 0
    assert "fit-to-fit noise of 4 fits" in none.status_[0]


def test_reference_dimensionality_rule_pinned_to_hand_computed_cases():
    """The reference rule: smallest k with sum_{i<=k} l_i / sum_{i<=15} l_i > 0.95."""
    from nwb_subspace.subspace.tuning import dimensionality_reference

    p = 40  # F*D of _moments
    ev = np.arange(1, p + 1) ** -1.5
    # direct computation: the share of the top 15 eigenvalues passes 0.95 at k = 11
    share = np.cumsum(ev[:15]) / ev[:15].sum()
    np.testing.assert_allclose(share[9:11], [0.94816, 0.96118], atol=5e-6)
    assert int(np.argmax(share > 0.95)) + 1 == 11
    assert dimensionality_reference(ev) == 11
    assert dimensionality_reference(ev[::-1]) == 11  # order does not matter
    assert dimensionality_reference(ev, threshold=0.9) == 8  # share[7] = 0.9155
    # a share exactly at the threshold is not enough (strict >, as the reference code)
    assert dimensionality_reference(np.array([0.95, 0.05])) == 2
    assert dimensionality_reference(np.ones(20)) == 15  # 14 / 15 = 0.933
    assert dimensionality_reference(np.zeros(5)) == 0
    with pytest.raises(ValueError, match="threshold"):
        dimensionality_reference(ev, threshold=1.0)
    # through the estimator, from a covariance whose spectrum is the toy spectrum
    q, _ = np.linalg.qr(np.random.default_rng(1).standard_normal((p, p)))
    cov = (q * ev) @ q.T
    est = TuningSubspaceEstimator().fit(_moments(cov[None], None), frequencies=np.arange(5.0),
                                        bin_s=0.01)  # fmt: skip
    tu = est.to_result()
    assert est.dimensionality_reference_.tolist() == [11]
    assert tu.dimensionality_reference.tolist() == [11] and tu.reference_n_components == 15
    # ours shares out the total variance over all 40 pixels (95% needs 22 components), then
    # caps it by the noise floor (this rotated spectrum spreads evenly over the pixels, so the
    # pixel-shuffle floor is ~1/40 a component and binds) and by n_components
    assert int(np.argmax(np.cumsum(ev) / ev.sum() >= 0.95)) + 1 == 22
    above = tu.explained_variance_ratio[0] > tu.noise_floor[0]
    assert tu.dimensionality[0] == min(22, int(np.argmin(above)), 20)
    # the reference rule uses the raw eigenvalues: fit-to-fit noise does not change it
    noisy = TuningSubspaceEstimator().fit(
        _moments(cov[None], 0.5 * cov[None]), frequencies=np.arange(5.0), bin_s=0.01
    )
    assert noisy.dimensionality_reference_.tolist() == [11]
    # its own settings
    wide = TuningSubspaceEstimator(reference_n_components=40, reference_variance_threshold=0.9)
    wide.fit(_moments(cov[None], None), frequencies=np.arange(5.0), bin_s=0.01)
    assert wide.dimensionality_reference_.tolist() == [
        int(np.argmax(np.cumsum(ev) / ev.sum() > 0.9)) + 1
    ]
    with pytest.raises(ValueError, match="reference_variance_threshold"):
        TuningSubspaceEstimator(reference_variance_threshold=0.0).fit(
            _moments(cov[None], None), frequencies=np.arange(5.0), bin_s=0.01
        )


def test_reference_dimensionality_and_outlier_counts_round_trip_through_nwb(tmp_path):
    from dataclasses import replace

    from nwb_subspace.io.writer import read_results, write_results
    from nwb_subspace.testing import mock_result_set, write_mock_nwbfile

    path = write_mock_nwbfile(tmp_path / "session.nwb")
    results = mock_result_set()
    sub = results.subspaces[0]
    n = sub.unit_rows.size
    results.subspaces[0] = replace(
        sub,
        dimensionality_reference=np.arange(n) + 1,
        n_outlier_frames=np.arange(n) * 7,
        reference_n_components=12,
        reference_variance_threshold=0.9,
    )
    results.subspaces.append(replace(sub, name="without_reference"))  # as older files
    write_results(path, results, "run1")
    back = {s.name: s for s in read_results(path, "run1").subspaces}
    a = back["tuning_subspaces"]
    assert a.dimensionality_reference.tolist() == list(range(1, n + 1))
    assert a.n_outlier_frames.tolist() == [7 * i for i in range(n)]
    assert (a.reference_n_components, a.reference_variance_threshold) == (12, 0.9)
    old = back["without_reference"]
    assert old.dimensionality_reference is None and old.n_outlier_frames is None
    np.testing.assert_array_equal(old.dimensionality, sub.dimensionality)
