"""SRFs and plots on a synthetic unit with known shape (fast, no simulation)."""

from __future__ import annotations

import matplotlib.image as mpimg
import numpy as np
import pytest

from nwb_subspace.report.plots import plot_dstrf_pcs, plot_srf
from nwb_subspace.results import TuningSubspaces
from nwb_subspace.subspace.srf import (
    GRIDS,
    marginal_profile,
    noise_aware_breadth,
    normalised_map,
    project_stimulus,
    repeat_index_per_bin,
    shape_test,
    srf_shape_classes,
    subspace_rfs,
)


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
    counts = rng.poisson(r[:, None] * 5.0)
    srfs = subspace_rfs(tuning, X, prediction=r[:, None] * 0.1, counts=counts, rate=100.0)
    # reference grid: PC1-PC2 and PC1-PC3 (3 components stored), model rows then measured
    assert srfs.response_map.shape == (4, 20, 20)
    assert list(srfs.response_source) == ["model", "measured"] * 2
    assert srfs.dimensions.tolist() == [[0, 1], [0, 1], [0, 2], [0, 2]]
    assert srf_shape_classes(srfs)[0] == kind and srf_shape_classes(srfs, "measured")[0] == kind
    assert 0 < srfs.breadth[0] < 400 and 0 < srfs.breadth_fraction[0] < 1
    assert np.isnan(srfs.response_map_sem[0]).all()  # a prediction has no error bars
    assert np.isfinite(srfs.response_map_sem[1]).any() and srfs.sem_method == "samples"
    # overlapping windows two bins wide: every sample counts in up to 4 windows
    assert srfs.occupancy[0].sum() > 3.5 * 20000
    ours = subspace_rfs(tuning, X, prediction=r[:, None], rate=100.0, grid="ours")
    assert ours.response_map.shape == (1, 20, 20)
    assert 0.9 * 20000 < ours.occupancy[0].sum() <= 20000
    png = plot_srf(srfs, 0, tmp_path / "srf.png")
    img = mpimg.imread(png)
    assert img.size and np.ptp(img) > 0


def test_empty_bins_nan_and_pairs(tmp_path):
    X = np.random.default_rng(2).standard_normal((3000, 6))
    tuning = _tuning(2)
    srfs = subspace_rfs(
        tuning, X, prediction=np.ones((3000, 2)), rate=100.0, pairs="all", min_occupancy=50,
        grid="ours",
    )  # fmt: skip
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
    with pytest.raises(ValueError, match="grid"):
        subspace_rfs(tuning, X, prediction=np.zeros((100, 1)), rate=100.0, grid="paper")
    with pytest.raises(ValueError, match="repeats"):
        subspace_rfs(tuning, X, prediction=np.zeros((100, 1)), rate=100.0, repeats=np.zeros(3))
    with pytest.raises(ValueError, match="window"):
        subspace_rfs(tuning, X, prediction=np.zeros((100, 1)), rate=100.0, window=0)


def _lattice(responses_per_repeat):
    """40 silent bins, then every (x, y) of {0.5, 1.5, 2.5, 3.5}^2 once per repeat.

    Channels 0 and 1 are x and y; PC k reads channel k at the current bin, so the
    projections are x and y. ``responses_per_repeat[r]`` maps (xi, yi) to the response.
    """
    vals = np.array([0.5, 1.5, 2.5, 3.5])
    rows, resp, rep = [np.zeros((40, 6))], [np.zeros(40)], [np.full(40, -1)]
    for r, f in enumerate(responses_per_repeat):
        block = np.zeros((16, 6))
        block[:, 0] = np.repeat(vals, 4)
        block[:, 1] = np.tile(vals, 4)
        rows.append(block)
        resp.append([f(xi, yi) for xi in range(4) for yi in range(4)])
        rep.append(np.full(16, r))
    X = np.concatenate(rows)
    return X, np.concatenate(resp)[:, None].astype(float), np.concatenate(rep), X[:, 0] > 0


def test_grid_windows_pinned_to_a_hand_computed_lattice():
    # 3 bins over percentiles 0-100: edges 0.5, 1.5, 2.5, 3.5; the top edge belongs to bin 2
    X, r, _, stim = _lattice([lambda xi, yi: 10 * xi + yi])
    tuning = _tuning(1)
    kw = dict(rate=1.0, bins=stim, n_bins=3, percentiles=(0.0, 100.0), min_occupancy=1)
    one = subspace_rfs(tuning, X, prediction=r, pairs="first", window=1, **kw)
    np.testing.assert_allclose(one.edges_x[0], [0.5, 1.5, 2.5, 3.5])
    # disjoint bins: x in {0.5} | {1.5} | {2.5, 3.5}; spontaneous (silence) is 0
    np.testing.assert_array_equal(one.occupancy[0], [[1, 1, 2], [1, 1, 2], [2, 2, 4]])
    np.testing.assert_allclose(one.response_map[0][2, 2], 27.5)  # xi, yi in {2, 3}
    np.testing.assert_allclose(one.response_map[0][0, 2], 2.5)  # xi 0, yi in {2, 3}
    # the reference's windows: bin i averages [e_i - h/2, e_{i+1} + h/2), two lattice points
    two = subspace_rfs(tuning, X, prediction=r, pairs="first", window=2, **kw)
    np.testing.assert_array_equal(two.occupancy[0], np.full((3, 3), 4))
    np.testing.assert_allclose(
        two.response_map[0], [[5.5, 6.5, 7.5], [15.5, 16.5, 17.5], [25.5, 26.5, 27.5]]
    )
    assert GRIDS["reference"].window == 2 and GRIDS["reference"].min_occupancy == 2
    assert GRIDS["reference"].percentiles == (0.025, 99.975) and GRIDS["reference"].n_bins == 20


def test_repeat_wise_sem_is_the_sd_of_per_repeat_maps_over_sqrt_r():
    # repeat 0 gives 10*xi + yi, repeat 1 adds 2*xi: per-bin SEM = |M0 - M1| / 2
    X, r, rep, stim = _lattice([lambda xi, yi: 10 * xi + yi, lambda xi, yi: 12 * xi + yi])
    srfs = subspace_rfs(
        _tuning(1), X, counts=r, rate=1.0, bins=stim, n_bins=3, percentiles=(0.0, 100.0),
        min_occupancy=1, window=1, pairs="first", repeats=rep,
    )  # fmt: skip
    assert srfs.sem_method == "repeats"
    m, sem = srfs.response_map[0], srfs.response_map_sem[0]
    np.testing.assert_allclose(m[0, 0], 0.0)  # xi 0: both repeats 0
    np.testing.assert_allclose(sem[0, 0], 0.0)
    np.testing.assert_allclose(m[1, 0], 11.0)  # xi 1, yi 0: 10 and 12
    np.testing.assert_allclose(sem[1, 0], 1.0)
    np.testing.assert_allclose(m[2, 2], 0.5 * (27.5 + 32.5))  # xi 2-3, yi 2-3
    np.testing.assert_allclose(sem[2, 2], 2.5)


def test_repeat_index_per_bin():
    trial_bins = np.array([[0, 3], [5, 7], [8, 10], [11, 12]])
    rep = repeat_index_per_bin(["a", "b", "a", "c"], trial_bins, 13)
    # "a" twice (repeats 0, 1 in time order), "b" and "c" once (-1), gaps -1
    np.testing.assert_array_equal(rep, [0, 0, 0, -1, -1, -1, -1, -1, 1, 1, -1, -1, -1])
    with pytest.raises(ValueError, match="align"):
        repeat_index_per_bin(["a"], trial_bins, 13)


def test_noise_aware_breadth_pinned_cases():
    # a step: left half 10, right half 0. The smoothed map crosses 5 exactly at the step, the
    # floor (10th percentile) is 0 and the peak 10: half the occupied bins are high
    step = np.zeros((20, 20))
    step[:10] = 10.0
    sem = np.full_like(step, 0.01)
    assert noise_aware_breadth(step, sem) == 0.5
    assert noise_aware_breadth(step) == 0.5  # no reliability test: same here
    # pure noise of known SEM: few bins pass as reliably above the floor (the floor, a low
    # percentile of noisy values, sits ~1.3 SE low), while the level set alone reads ~20%
    # of the bins as "high" and the old min-max measure about a third
    noise = np.random.default_rng(3).standard_normal((20, 20))
    assert noise_aware_breadth(noise, np.ones((20, 20))) < 0.05
    assert noise_aware_breadth(noise) > 0.1
    assert (normalised_map(noise) >= 0.5).mean() > 0.25
    # a half-occupied step: the fraction is of the occupied bins
    half = np.where(np.arange(20)[None, :] < 10, step, np.nan)
    assert noise_aware_breadth(half, sem) == 0.5
    assert np.isnan(noise_aware_breadth(np.full((4, 4), np.nan)))
    with pytest.raises(ValueError, match="baseline"):
        noise_aware_breadth(step, baseline="zero")


def test_marginal_profile_is_occupancy_weighted():
    m = np.array([[1.0, 3.0], [np.nan, 5.0]])
    occ = np.array([[3, 1], [7, 2]])
    sem = np.array([[1.0, 2.0], [1.0, 1.0]])
    y, se = marginal_profile(m, occ, 0, sem)  # along x: mean over y of each x row
    np.testing.assert_allclose(y, [(3 * 1 + 1 * 3) / 4, 5.0])
    np.testing.assert_allclose(se, [np.sqrt(9 * 1 + 1 * 4) / 4, 1.0])
    y, _ = marginal_profile(m, occ, 1)
    np.testing.assert_allclose(y, [1.0, (1 * 3 + 2 * 5) / 3])


def test_shape_test_needs_non_monotonicity_beyond_noise():
    x = np.linspace(-2, 2, 20)
    occ = np.full((20, 20), 50)
    hill = np.tile(np.exp(-(x**2))[:, None], (1, 20)) * 10
    small = np.full((20, 20), 0.05)
    cls, asym, p = shape_test(hill, occ, small)
    assert cls == "hill" and asym < -0.33 and p < 0.05
    cls, asym, p = shape_test(10 - hill, occ, small)
    assert cls == "bowl" and asym > 0.33
    ramp = np.tile(x[:, None], (1, 20))
    assert shape_test(ramp, occ, small)[0] == "monotonic"
    # the same hill buried in noise 10x its height: its asymmetry alone may look like a
    # hill, but its departure from a monotonic curve is within the noise
    rng = np.random.default_rng(4)
    noisy = hill * 0.01 + rng.standard_normal(hill.shape) * 1.0
    cls, _, p = shape_test(noisy, occ, np.ones_like(hill))
    assert p >= 0.05 and cls == "monotonic"
    # no SEM (a model map): the reference's 0.33 rule alone
    cls, asym, p = shape_test(hill, occ)
    assert cls == "hill" and np.isnan(p)


def test_old_results_keep_the_old_shape_rule():
    rng = np.random.default_rng(5)
    X = rng.standard_normal((5000, 6))
    r = np.exp(-0.5 * (X[:, :2] ** 2).sum(1))
    srfs = subspace_rfs(_tuning(1), X, prediction=r[:, None], rate=100.0, pairs="first")
    assert srf_shape_classes(srfs)[0] == "hill"
    srfs.curve_asymmetry = srfs.shape_p_value = None  # as read from a file before issue 19
    assert srf_shape_classes(srfs)[0] == "hill"


def test_new_columns_round_trip_through_nwb(mock_file, results):
    from dataclasses import replace

    from nwb_subspace.io.writer import read_results, write_results

    old = results.srfs[0]
    n, b = old.unit_rows.size, old.response_map.shape[1]
    rng = np.random.default_rng(6)
    new = replace(
        old,
        response_map_sem=rng.random((n, b, b)),
        breadth_fraction=rng.random(n),
        curve_asymmetry=rng.uniform(-1, 1, n),
        shape_p_value=np.r_[np.nan, rng.random(n - 1)],
        grid=GRIDS["reference"].__repr__(),
        sem_method="repeats",
        peak_z=np.r_[np.nan, rng.uniform(0, 30, n - 1)],
        snr_target_z=np.r_[np.nan, np.full(n - 1, 6.5)],
        keep_probability=np.r_[np.nan, rng.uniform(0.01, 1, n - 1)],
        breadth_snr_matched=np.r_[np.nan, rng.random(n - 1)],
        snr_matching="gate 5, 10 thinning draws, seed 0, matched within 1 site(s): shank0",
    )
    results.srfs = [new, replace(old, name="old_style")]
    write_results(mock_file, results, "run1")
    back = {s.name: s for s in read_results(mock_file, "run1").srfs}
    got = back[new.name]
    fields = (
        "response_map_sem", "breadth_fraction", "curve_asymmetry", "shape_p_value", "peak_z",
        "snr_target_z", "keep_probability", "breadth_snr_matched",
    )  # fmt: skip
    for field in fields:
        np.testing.assert_array_equal(getattr(got, field), getattr(new, field))
    assert (got.grid, got.sem_method) == (new.grid, "repeats")
    assert got.snr_matching == new.snr_matching
    # a table without them (as written before issues 19 and 20) reads them as None / ""
    plain = back["old_style"]
    assert plain.breadth_fraction is None and plain.response_map_sem is None
    assert plain.peak_z is None and plain.breadth_snr_matched is None
    assert plain.grid == "" and plain.snr_matching == ""
    assert srf_shape_classes(plain)  # the old rule still classifies
