"""Site subspace, pairwise similarity and tiling: unit checks and the Done-when science.

The science tests use dSTRF moments of the *true* simulated rate (no model fitting): for a
unit with filters ``W_i`` and rate ``G(z)``, ``z_i = W_i . X``, the dSTRF at bin ``t`` is
``sum_i dG/dz_i(t) W_i`` (lags flipped to the model order), so its mean and covariance follow
from the ``k``-dim gradient series alone.
"""

from __future__ import annotations

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from nwb_subspace.io.session import load_session_data
from nwb_subspace.results import SiteStatistics, TuningSubspaces
from nwb_subspace.simulate import PRESETS, load_truth, simulate_session
from nwb_subspace.simulate.neurons import nonlinearity
from nwb_subspace.site.groups import (
    compare_cell_types_and_layers,
    compare_site_subspaces,
    compare_site_tiling,
    to_site_statistics,
)
from nwb_subspace.site.subspace import (
    SiteSubspaceAnalysis,
    haar_subspaces,
    pairwise_similarity,
    tiling,
)
from nwb_subspace.subspace.srf import subspace_rfs
from nwb_subspace.subspace.tuning import pca_from_moments, subspace_similarity


def truth_moments(truth, spec: np.ndarray, eps: float = 1e-4):
    """Mean (U, F, D) and covariance (U, P, P) of the true dSTRFs (central differences in z)."""
    n_units, _, f, d = truth.filters.shape
    mean, cov = np.zeros((n_units, f, d)), np.zeros((n_units, f * d, f * d))
    for u in range(n_units):
        k = int(truth.k[u])
        z = truth.projections(spec, u)
        args = (truth.nl_centre[u, :k], float(truth.nl_width[u]), truth.nl_sign[u, :k])

        def rate(zz, u=u, k=k, args=args):
            kind, power = str(truth.nl_kind[u]), float(truth.nl_power[u])
            return truth.amplitude[u] * nonlinearity(kind, zz, *args, power)

        grad = np.stack([(rate(z + eps * e) - rate(z - eps * e)) / (2 * eps) for e in np.eye(k)], 1)
        w = truth.unit_filters(u)[:, :, ::-1].reshape(k, -1)  # truth lag l -> model j = D-1-l
        mean[u] = (grad.mean(0) @ w).reshape(f, d)
        cov[u] = w.T @ np.atleast_2d(np.cov(grad, rowvar=False)) @ w
    return mean, cov


@pytest.fixture(autouse=True, scope="module")
def _one_blas_thread():
    """One BLAS thread: the machine is shared, and threads oversubscribe under load."""
    with threadpool_limits(limits=1):
        yield


def _session(tmp_path_factory, name: str, seed: int, **changes):
    cfg = PRESETS["tiny"].replace(raw_s=1.0, n_units=24, **changes)
    path, _ = simulate_session(tmp_path_factory.mktemp(name) / "s.nwb", cfg, seed=seed)
    truth = load_truth(path)
    data = load_session_data(path)
    spec = np.asarray(data.spectrogram.data, dtype=np.float64)
    mean, cov = truth_moments(truth, spec)
    return {"truth": truth, "X": spec, "counts": data.counts, "mean": mean, "cov": cov}


def _fit(s, site, **params):
    return SiteSubspaceAnalysis(seed=0, **params).fit(
        (s["mean"], s["cov"]), site=site, frequencies=s["truth"].frequencies, bin_s=0.01
    )


# sites that differ only in the simulated property (shared vs independent subspace)
@pytest.fixture(scope="module")
def subspace_sites(tmp_path_factory):
    return {m: _session(tmp_path_factory, m, 3, subspace=m) for m in ("shared", "independent")}


# hill units in a 2-D site space (so the site plane holds the tiling), responses not made
# sparse by the power law (response_cv low: the power stays ~1 and cannot undo the narrow
# units' broader tuning), half the units narrow
TILING = dict(
    nonlinearity_mix=(1.0, 0.0, 0.0),
    site_dim=2,
    k_range=(2, 2),
    response_cv=(0.2, 0.4),
    fraction_narrow=0.5,
)


@pytest.fixture(scope="module")
def tiling_sites(tmp_path_factory):
    return {
        m: _session(tmp_path_factory, m, 4, subspace="shared", tiling=m, **TILING)
        for m in ("clustered", "scattered")
    }


# ---------------------------------------------------------------- unit checks (synthetic)


def _low_rank_site(rng, n_units=6, p=60, shared_dim=3, shared=True):
    basis = haar_subspaces(rng, p, shared_dim, 1)[0]
    covs = []
    for _ in range(n_units):
        a = basis @ rng.standard_normal((shared_dim, 2)) if shared else rng.standard_normal((p, 2))
        covs.append(a @ a.T + 1e-6 * np.eye(p))
    return np.zeros((n_units, 6, 10)), np.asarray(covs)


def test_pairwise_similarity_matches_principal_angles():
    rng = np.random.default_rng(0)
    bases = [haar_subspaces(rng, 30, k, 1)[0] for k in (1, 2, 4)]
    sim = pairwise_similarity(bases)
    for i in range(3):
        for j in range(3):
            assert sim[i, j] == pytest.approx(subspace_similarity(bases[i].T, bases[j].T))


def test_haar_null_mean_is_k_over_p():
    rng = np.random.default_rng(1)
    mean, cov = _low_rank_site(rng)
    an = SiteSubspaceAnalysis(n_components=3, n_null=400, seed=0).fit(
        (mean, cov), site="a", frequencies=np.arange(6.0), bin_s=0.01
    )
    assert an.result_.null_mean == pytest.approx(np.full(6, 3 / 60), abs=0.01)
    assert np.all(an.result_.variance_fraction > 0.99)
    assert np.all(an.result_.p_value < 0.01)
    # the same seed gives the same nulls
    again = SiteSubspaceAnalysis(n_components=3, n_null=400, seed=0).fit(
        (mean, cov), site="a", frequencies=np.arange(6.0), bin_s=0.01
    )
    np.testing.assert_array_equal(again.result_.null_mean, an.result_.null_mean)


def test_bad_params_and_inputs_say_how_to_fix():
    mean, cov = _low_rank_site(np.random.default_rng(2))
    with pytest.raises(ValueError, match="variance_threshold.*0.85"):
        SiteSubspaceAnalysis(variance_threshold=1.5).fit(
            (mean, cov), site="a", frequencies=np.arange(6.0), bin_s=0.01
        )
    with pytest.raises(ValueError, match=r"covariance must be \(n_units, F\*D, F\*D\)"):
        SiteSubspaceAnalysis().fit(
            (mean, cov[:, :10, :10]), site="a", frequencies=np.arange(6.0), bin_s=0.01
        )
    with pytest.raises(TypeError, match="DSTRFMoments or a \\(mean, covariance\\) pair"):
        SiteSubspaceAnalysis().fit(cov, site="a", frequencies=np.arange(6.0), bin_s=0.01)


def test_two_units_work_and_say_little_power():
    mean, cov = _low_rank_site(np.random.default_rng(3), n_units=2)
    an = SiteSubspaceAnalysis(n_null=50).fit(
        (mean, cov), site="pair", frequencies=np.arange(6.0), bin_s=0.01
    )
    assert an.result_ is not None and an.result_.unit_rows.size == 2
    assert any("only 2 units; little power" in n for n in an.notes_)
    assert an.similarity_.shape == (2, 2)
    assert isinstance(to_site_statistics(an.rows_), SiteStatistics)


def test_no_units_pass_quality_cut_gives_none_and_a_reason():
    mean, cov = _low_rank_site(np.random.default_rng(4), n_units=3)
    cov[2] = 0.0  # flat unit
    an = SiteSubspaceAnalysis().fit(
        (mean, cov),
        site="empty",
        frequencies=np.arange(6.0),
        bin_s=0.01,
        keep=np.array([False, False, True]),
        unit_rows=np.array([10, 11, 12]),
    )
    assert an.result_ is None and an.rows_ == []
    assert "0 of 3 units pass the quality cut" in an.notes_[0]
    assert an.excluded_ == {
        10: "fails the quality cut",
        11: "fails the quality cut",
        12: "flat or non-finite dSTRF covariance",
    }
    assert to_site_statistics(an.rows_) is None  # no empty table


def test_tiling_not_tested_for_one_dimensional_site():
    mean, cov = _low_rank_site(np.random.default_rng(5), shared_dim=1)
    an = SiteSubspaceAnalysis(n_components=1, n_null=20).fit(
        (mean, cov), site="line", frequencies=np.arange(6.0), bin_s=0.01
    )
    til = tiling(an.result_, np.zeros((100, 6)), counts=np.zeros((100, 6)), rate=100.0)
    assert not til.tested and til.rows() == []
    assert "tiling needs 2" in til.verdict


# ---------------------------------------------------------------- Done-when science


@pytest.mark.slow
def test_shared_vs_independent_subspace(subspace_sites):
    fits = {m: _fit(s, m) for m, s in subspace_sites.items()}
    shared, indep = fits["shared"], fits["independent"]
    # within each site the units beat random subspaces and pixel shuffles
    for an in fits.values():
        rows = {r["statistic"]: r for r in an.rows_}
        assert rows["variance_fraction_mean"]["p_value"] < 0.01
        assert rows["pairwise_similarity_mean"]["p_value"] < 0.01
    # the shared site is lower-dimensional, and beats the independent one per unit
    assert shared.result_.dimensionality < indep.result_.dimensionality
    rows, _ = compare_site_subspaces(shared, indep)
    for row in rows:
        assert row["p_value"] < 0.01 and row["effect_size"] > 0.5, row
    # other-site null: units are captured better by their own site's subspace
    row = shared.test_other_sites([indep.result_])
    assert row["p_value"] < 0.01 and row["value"] > row["null_mean"]


@pytest.mark.slow
def test_clustered_vs_scattered_tiling(tiling_sites):
    results = {}
    for m, s in tiling_sites.items():
        an = _fit(s, m, n_null=50)
        pred = s["truth"].rate(s["X"]) * 0.01
        results[m] = tiling(an.result_, s["X"], prediction=pred, rate=100.0, seed=0)
    clustered, scattered = results["clustered"], results["scattered"]
    assert clustered.verdict == "overlap above chance" and clustered.p_value < 0.01
    assert clustered.mean_overlap > scattered.mean_overlap
    rows, _ = compare_site_tiling(clustered, scattered)
    assert rows[0]["p_value"] < 0.01 and rows[0]["effect_size"] > 0.5, rows
    # the measured counts tell the same story
    s = tiling_sites["clustered"]
    measured = tiling(
        _fit(s, "clustered", n_null=20).result_, s["X"], counts=s["counts"], rate=100.0
    )
    assert measured.source == "measured" and measured.verdict == "overlap above chance"


@pytest.mark.slow
def test_narrow_units_have_broader_srfs(tiling_sites):
    s = tiling_sites["scattered"]
    truth, n = s["truth"], s["truth"].n_units
    f, d = s["mean"].shape[1:]
    comps = np.zeros((n, 2, f, d))
    for u in range(n):
        comps[u] = pca_from_moments(s["cov"][u], 2)[0].reshape(2, f, d)
    tuning = TuningSubspaces(
        unit_rows=np.arange(n),
        components=comps,
        explained_variance_ratio=np.full((n, 2), 0.5),
        dimensionality=np.full(n, 2),
        mean_dstrf=s["mean"],
        n_frames=np.full(n, s["X"].shape[0]),
        noise_floor=np.zeros((n, 2)),
        frequencies=truth.frequencies,
        lags_s=(d - 1 - np.arange(d)) * 0.01,
    )
    srfs = subspace_rfs(tuning, s["X"], prediction=truth.rate(s["X"]) * 0.01, rate=100.0)
    layer = truth.layer.astype(object)
    layer[:3] = "unknown"
    rows, notes = compare_cell_types_and_layers(
        {"breadth": srfs.breadth}, truth.cell_type, layer, site="scattered"
    )
    row = next(r for r in rows if r["statistic"] == "breadth_narrow_vs_broad")
    assert row["p_value"] < 0.01 and row["effect_size"] > 0.5 and row["value"] > row["null_mean"]
    assert "narrow: 12, broad: 12" in row["test"]
    assert any(
        "scattered breadth by layer: 3 unit(s) of unknown layer left out" in x for x in notes
    )


def test_two_unit_site_tiling_runs_and_says_little_power():
    from nwb_subspace.subspace.srf import project_stimulus

    rng = np.random.default_rng(6)
    mean, cov = _low_rank_site(rng, n_units=2, shared_dim=2)
    site = _fit({"mean": mean, "cov": cov, "truth": type("T", (), {"frequencies": np.arange(6.0)})},
                "pair", n_null=20).result_  # fmt: skip
    X = rng.random((4000, 6))
    proj = project_stimulus(X, site.components)
    z = (proj - proj.mean(0)) / proj.std(0)
    pred = np.stack([np.exp(-np.sum((z - c) ** 2, 1)) for c in ([1, 1], [-1, -1])], 1) * 0.1
    til = tiling(site, X, prediction=pred, rate=100.0, n_shifts=100)
    assert til.tested and til.unit_rows.size == 2 and len(til.rows()) == 1
    assert "only 2 units with a region; little power" in til.notes[0]
    assert til.overlap[0, 1] == pytest.approx(0.0)
