"""Issue 19, sites: the reference site subspace, the locality test and tiling, pinned and proven.

Definitions are pinned to hand-computed cases (pooled PCA about the grand mean with each
unit's frames scaled by their RMS; the reference's per-PC similarity; leave-one-out; the
same-site vs different-site permutation test; neighbour pairs). The claims run the site step
on simulated sites (the simulator's sounds, one shared stimulus, 8 units a site) with dSTRF
moments of the *true* rate (no model fitting): for a unit with filters ``W_i`` and rate
``G(z)``, ``z_i = W_i . X``, the dSTRF at bin ``t`` is ``sum_i dG/dz_i(t) W_i`` (lags flipped to
the model order).
"""

from __future__ import annotations

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from nwb_subspace.config import SiteSettings
from nwb_subspace.dstrf.compute import DSTRFMoments
from nwb_subspace.simulate.neurons import nonlinearity, project
from nwb_subspace.simulate.population import draw_population
from nwb_subspace.simulate.presets import SimulationConfig
from nwb_subspace.simulate.sounds import synthesize_sequence
from nwb_subspace.site.step import SiteInputs, SiteStep
from nwb_subspace.site.subspace import (
    LOCALITY_STATISTIC,
    SiteSubspaceAnalysis,
    reference_site_covariance,
    same_site_similarity,
    site_pc_similarity,
)
from nwb_subspace.site.tiling import neighbour_pairs
from nwb_subspace.stimulus.spectrogram import SpectrogramSettings, compute_spectrogram


@pytest.fixture(autouse=True, scope="module")
def _one_blas_thread():
    """One BLAS thread: the machine is shared."""
    with threadpool_limits(limits=1):
        yield


# ------------------------------------------------------------------ definitions, by hand


def test_reference_pooled_covariance_by_hand():
    """Unit a: frames (2, 0), (-2, 0); unit b: frames (0, 1), (0, 3). Each unit's frames are
    divided by the SD of all its values (sqrt(2) and sqrt(1.5)); the four scaled frames,
    centred on their grand mean (0, 2/sqrt(6)), have covariance exactly the identity."""
    mean = np.array([[0.0, 0.0], [0.0, 2.0]])
    cov = np.array([[[8.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 2.0]]])  # ddof 1
    pooled = reference_site_covariance(mean, cov, count=np.array([2, 2]))
    np.testing.assert_allclose(pooled, np.eye(2), atol=1e-12)
    # unit b alone: its scaled frames (0, 0.816), (0, 2.449) vary along y only
    np.testing.assert_allclose(
        reference_site_covariance(mean, cov, count=np.array([2, 2]), leave_out=0),
        [[0.0, 0.0], [0.0, 2 / 3]],  # ((3 - 1) / 2 / sqrt(1.5))^2
        atol=1e-12,
    )


def test_reference_pooled_covariance_is_the_pooled_frames_covariance():
    rng = np.random.default_rng(0)
    p = 12
    frames = [
        rng.standard_normal((int(rng.integers(20, 40)), p)) @ rng.standard_normal((p, p))
        * rng.uniform(0.1, 5.0)
        + rng.standard_normal(p)
        for _ in range(5)
    ]  # fmt: skip
    mean = np.array([f.mean(0) for f in frames])
    cov = np.array([np.cov(f, rowvar=False) for f in frames])
    count = np.array([len(f) for f in frames])
    scaled = [f / f.std() for f in frames]
    np.testing.assert_allclose(
        reference_site_covariance(mean, cov, count),
        np.cov(np.concatenate(scaled), rowvar=False, ddof=0),
        atol=1e-12,
    )
    np.testing.assert_allclose(
        reference_site_covariance(mean, cov, count, leave_out=3),
        np.cov(np.concatenate(scaled[:3] + scaled[4:]), rowvar=False, ddof=0),
        atol=1e-12,
    )


def test_site_pc_similarity_is_summed_squared_correlation():
    # site PC (1, -1, 0, 0)/sqrt(2); unit PC e1, centred (3, -1, -1, -1)/sqrt(12):
    # correlation 4/sqrt(24), squared 2/3; a second unit PC e3 adds (-1 + 1)^2 = 0
    v = np.array([[1.0, -1.0, 0.0, 0.0]]) / np.sqrt(2)
    basis = np.eye(4)[:, [0, 2]]
    np.testing.assert_allclose(site_pc_similarity(v, [basis]), [[2 / 3]], atol=1e-12)


def _diag_moments(diagonals: list[list[float]], f: int = 2, d: int = 2) -> DSTRFMoments:
    n = len(diagonals)
    cov = np.stack([np.diag(x) for x in diagonals])
    return DSTRFMoments(
        units=np.arange(n), n_frequencies=f, n_lags=d, count=np.full(n, 100),
        n_total=np.full(n, 100), n_outliers=np.zeros(n, int), n_nonfinite=np.zeros(n, int),
        mean=np.zeros((n, f, d)), covariance=cov, spread=np.ones(n), outlier_threshold=5.0,
        mode="reverse",
    )  # fmt: skip


def test_leave_one_out_scores_a_unit_against_the_others_only():
    """Unit 0 alone varies along pixel 0, units 1-2 along pixel 1 (a little along 2 and 3):
    with the unit in, its own direction is a site PC (fraction 1); without it, the site PCs
    are pixels 1 and 2 and the unit's similarity and fraction are 0."""
    eps = [0.0, 0.0, 2e-3, 1e-3]
    moments = _diag_moments([[1.0, *eps[1:]], [0.0, 1.0, *eps[2:]], [0.0, 1.0, *eps[2:]]])
    an = SiteSubspaceAnalysis(n_null=5).fit(
        moments, site="s", frequencies=np.array([1.0, 2.0]), bin_s=0.01
    )
    res = an.result_
    assert res.dimensionality == 2 and res.dimensionality_reference == 2
    assert res.variance_fraction[0] == pytest.approx(1.0, abs=0.01)
    assert res.variance_fraction_loo[0] == pytest.approx(0.0, abs=0.01)
    assert res.site_similarity_loo[0] == pytest.approx(0.0, abs=1e-6)
    np.testing.assert_allclose(res.site_similarity_loo[1:], 1.0, atol=1e-6)
    assert res.site_pc_similarity.shape == (3, 4)
    rows = {r["statistic"]: r for r in an.rows_}
    assert rows["site_dimensionality_reference"]["value"] == 2
    assert "secondary null" in rows["variance_fraction_mean"]["test"]


def test_same_site_test_by_hand():
    """Units (e1, e1, e2, e2) at sites (a, a, b, b): same-site similarity 1, different-site
    0; of the three ways to split four units into two pairs, one gives the observed
    difference, so the permutation p-value is about 1/3 (too few units to show anything)."""
    e = np.eye(4)
    bases = [e[:, [0]], e[:, [0]], e[:, [1]], e[:, [1]]]
    rows, notes = same_site_similarity(bases, ["a", "a", "b", "b"], n_permutations=600)
    by = {r["site"]: r for r in rows}
    assert set(by) == {"all sites", "a", "b"} and notes == []
    for r in by.values():
        assert r["statistic"] == LOCALITY_STATISTIC
        assert (r["value"], r["null_mean"]) == (1.0, 0.0)
        assert r["p_value"] == pytest.approx(1 / 3, abs=0.06)
    rows, notes = same_site_similarity(bases, ["a"] * 4)
    assert rows is None and "one site" in notes[0]


def test_neighbour_pairs_by_depth():
    near, why = neighbour_pairs(np.array([0.0, 50.0, 300.0, np.nan]), 100.0)
    assert why is None
    assert np.argwhere(np.triu(near)).tolist() == [[0, 1]]
    assert neighbour_pairs(None, 100.0) == (None, "unit depths unknown")
    assert neighbour_pairs(np.array([0.0, 500.0]), 100.0)[1].startswith("no two units")


# ------------------------------------------------------------------ claims on simulated sites

N_UNITS, N_LAGS, N_CHANNELS = 8, 15, 24
SITE_KINDS = {  # 5 sites each; tiling sites: hill units only (the claim is about hill pockets)
    "clustered": dict(subspace="shared", tiling="clustered", nonlinearity_mix=(1.0, 0.0, 0.0)),
    "scattered": dict(subspace="shared", tiling="scattered", nonlinearity_mix=(1.0, 0.0, 0.0)),
    "independent": dict(subspace="independent", independent_bf="whole range"),
}


def _true_dstrf_moments(pop: dict, spec: np.ndarray, eps: float = 1e-4):
    """Mean (U, F, D), covariance (U, P, P) of the true dSTRFs and the true rate (bins, U)."""
    n_units, _, f, d = pop["filters"].shape
    mean, cov = np.zeros((n_units, f, d)), np.zeros((n_units, f * d, f * d))
    rate = np.zeros((spec.shape[0], n_units))
    for u in range(n_units):
        k = int(pop["k"][u])
        w = pop["filters"][u, :k]
        z = project(spec, w) - pop["offsets"][u, :k]
        args = (pop["nl_centre"][u, :k], float(pop["nl_width"][u]), pop["nl_sign"][u, :k])

        def g(zz, u=u, args=args):
            kind, power = str(pop["nl_kind"][u]), float(pop["nl_power"][u])
            return pop["base_rate"][u] + pop["amplitude"][u] * nonlinearity(kind, zz, *args, power)

        grad = np.stack([(g(z + eps * e) - g(z - eps * e)) / (2 * eps) for e in np.eye(k)], 1)
        flat = w[:, :, ::-1].reshape(k, -1)  # truth lag l -> model lag D - 1 - l
        mean[u] = (grad.mean(0) @ flat).reshape(f, d)
        cov[u] = flat.T @ np.atleast_2d(np.cov(grad, rowvar=False)) @ flat
        rate[:, u] = g(z)
    return mean, cov, rate


#: The ``realistic`` preset's unit statistics (issue 16): sparse, bursty units of 2-80
#: spikes/s (the preset's quiet sound does not matter here: the spectrogram is level-free).
REALISTIC_UNITS = dict(
    response_cv=(2.0, 4.0), mean_rate_broad=(2.0, 20.0), mean_rate_narrow=(5.0, 80.0)
)


@pytest.fixture(scope="module")
def simulated_file():
    """15 simulated sites on one stimulus (60 s of the simulator's sounds), run through the
    site step as the electrode groups of one file."""
    return _simulated_file({})


@pytest.fixture(scope="module")
def realistic_file():
    """The same with the ``realistic`` preset's sparse, bursty units."""
    return _simulated_file(REALISTIC_UNITS)


def _simulated_file(unit_changes: dict):
    rng = np.random.default_rng(19)
    settings = SpectrogramSettings(n_channels=N_CHANNELS)
    wave = synthesize_sequence(rng, 60.0, 44100.0, 0.3)
    spec = compute_spectrogram(wave, 44100.0, settings).data.astype(np.float64)
    means, covs, rates, labels = [], [], [], []
    for kind, changes in SITE_KINDS.items():
        cfg = SimulationConfig(
            n_units=N_UNITS, n_lags=N_LAGS, spectrogram=settings, **changes, **unit_changes
        )
        for i in range(5):
            pop = draw_population(np.random.default_rng([19, i, len(labels)]), cfg, spec)
            m, c, r = _true_dstrf_moments(pop, spec)
            means.append(m), covs.append(c), rates.append(r)
            labels += [f"{kind}{i}"] * N_UNITS
    n = len(labels)
    moments = DSTRFMoments(
        units=np.arange(n), n_frequencies=N_CHANNELS, n_lags=N_LAGS,
        count=np.full(n, spec.shape[0]), n_total=np.full(n, spec.shape[0]),
        n_outliers=np.zeros(n, int), n_nonfinite=np.zeros(n, int),
        mean=np.concatenate(means), covariance=np.concatenate(covs), spread=np.ones(n),
        outlier_threshold=5.0, mode="reverse",
    )  # fmt: skip
    rate = np.concatenate(rates, axis=1) / 100.0  # counts per 10-ms bin
    inputs = SiteInputs(
        labels=np.array(labels), moments=moments, unit_rows=np.arange(n), X=spec,
        counts=rate, rate=100.0, frequencies=np.geomspace(200, 20000, N_CHANNELS),
        prediction=rate,
    )  # fmt: skip
    step = SiteStep(settings=SiteSettings(n_null=20, n_shifts=200), srf_bins=20, seed=0)
    return step.run(inputs)


def _rows(out, statistic: str) -> dict[str, dict]:
    return {r["site"]: r for r in out.statistics.rows if r["statistic"] == statistic}


@pytest.mark.parametrize("units", ["simulator default", "realistic"])
def test_shared_sites_beat_different_site_pairs_and_independent_ones_do_not(units, request):
    simulated_file = request.getfixturevalue(
        "simulated_file" if units == "simulator default" else "realistic_file"
    )
    rows = _rows(simulated_file, LOCALITY_STATISTIC)
    p = {site: r["p_value"] for site, r in rows.items()}
    shared = [s for s in p if s.startswith(("clustered", "scattered"))]
    independent = [s for s in p if s.startswith("independent")]
    assert len(shared) == 10 and len(independent) == 5
    assert all(p[s] < 0.05 for s in shared), p
    assert sum(p[s] < 0.05 for s in independent) <= 1, p  # chance allows one of five
    for s in independent:
        assert rows[s]["value"] < rows[s]["null_mean"] + 0.1, rows[s]
    # the reference leave-one-out similarity separates the kinds too
    loo = {s.site: np.mean(s.site_similarity_loo) for s in simulated_file.site_subspaces}
    assert min(loo[s] for s in shared) > max(loo[s] for s in independent), loo


@pytest.mark.parametrize("units", ["simulator default", "realistic"])
def test_clustered_tiling_above_chance_and_scattered_not(units, request):
    simulated_file = request.getfixturevalue(
        "simulated_file" if units == "simulator default" else "realistic_file"
    )
    verdicts = {s: t.verdict for s, t in simulated_file.tilings.items()}
    clustered = [v for s, v in verdicts.items() if s.startswith("clustered")]
    scattered = [v for s, v in verdicts.items() if s.startswith("scattered")]
    assert sum(v == "overlap above chance" for v in clustered) >= 4, verdicts
    assert sum(v == "overlap above chance" for v in scattered) <= 1, verdicts
    # no depths given: neighbour pairs are all pairs, said in the notes; no second row
    assert any("tiling neighbour pairs are all pairs" in n for n in simulated_file.notes)
    assert _rows(simulated_file, "tiling_overlap_neighbours") == {}
    for t in simulated_file.tilings.values():
        assert t.verdict_neighbours.startswith("as all pairs (unit depths unknown)")
