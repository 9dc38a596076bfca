"""Population statistics: hand-computed definitions and locality science on synthetic bases."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from nwb_subspace.population.locality import (
    LOCALITY_STATISTIC,
    PAIR_TYPES,
    REFERENCE_POOLING_STATISTIC,
    population_locality,
)
from nwb_subspace.population.statistics import (
    cell_types_and_layers,
    depth_profile,
    dimensionality_distribution,
    model_comparison,
    tiling_across_sites,
)
from nwb_subspace.results import STATISTIC_FIELDS
from nwb_subspace.site.groups import compare_cell_types_and_layers_across_sites
from nwb_subspace.site.subspace import pairwise_similarity

# --------------------------------------------------------------------------------------
# helpers


def _rows_by_name(rows):
    return {r["statistic"]: r for r in rows or []}


def _rank_biserial(diff):
    diff = np.asarray(diff, float)
    diff = diff[diff != 0]
    ranks = stats.rankdata(np.abs(diff))
    return (ranks[diff > 0].sum() - ranks[diff < 0].sum()) / ranks.sum()


def _check_rows(rows):
    """Every row has the statistics fields and no claim rests on a NaN p-value."""
    for r in rows or []:
        assert set(r) == set(STATISTIC_FIELDS)
        if not np.isfinite(r["p_value"]):
            assert r["verdict"] == "descriptive", r


def _unit(v):
    v = np.asarray(v, float)
    return (v / np.linalg.norm(v))[:, None]


def _orth(x):
    q, r = np.linalg.qr(x)
    return q * np.sign(np.diag(r))


def _toy():
    """Two sessions, k = 1 bases in R^4: similarities are 0, 1/2 or 1 by construction."""
    e = np.eye(4)
    bases = [_unit(e[0]), _unit(e[0]), _unit(e[1]), _unit(e[0] + e[1]),
             _unit(e[2]), _unit(e[2]), _unit(e[3])]  # fmt: skip
    sessions = ["A"] * 4 + ["B"] * 3
    sites = ["a1", "a1", "a2", "a2", "b1", "b1", "b2"]
    return bases, sessions, sites


def _population(seed, *, local, core, single_site=False, n_sessions=8, units=6, p=200):
    """Synthetic unit bases (P = 200, k = 2-5).

    ``local``: each site's units lie near a site-specific random 6-D subspace (noise 0.3);
    else every unit has its own random subspace. ``core``: weight of a per-session shared
    4-D component mixed into every unit of the session (the fitted model's shared core);
    ``core = 1`` adds about +0.36 mean pairwise similarity within a session.
    """
    rng = np.random.default_rng(seed)
    bases, sessions, sites = [], [], []
    for s in range(n_sessions):
        shared = _orth(rng.standard_normal((p, 4)))
        for g in range(1 if single_site else 2):
            site_sub = _orth(rng.standard_normal((p, 6)))
            for _ in range(units):
                k = int(rng.integers(2, 6))
                if local:
                    own = _orth(site_sub @ rng.standard_normal((6, k)))
                else:
                    own = _orth(rng.standard_normal((p, k)))
                own = _orth(own + 0.3 * _orth(rng.standard_normal((p, k))))
                bases.append(_orth(own + core * shared @ rng.standard_normal((4, k))))
                sessions.append(f"S{s}")
                sites.append(f"g{g}")
    return bases, sessions, sites


# --------------------------------------------------------------------------------------
# locality: definitions


def test_locality_toy_statistic_and_exact_within_session_null():
    bases, sessions, sites = _toy()
    res = population_locality(bases, sessions, sites, n_permutations=9000, seed=1)
    rows = _rows_by_name(res.rows)
    _check_rows(res.rows)
    assert res.rows[0]["statistic"] == LOCALITY_STATISTIC  # primary first
    row = rows[LOCALITY_STATISTIC]
    # same-site pairs: (a1: 1), (a2: 1/2), (b1: 1) -> 5/6; different-site: 6 same-session
    # pairs summing to 1 and 12 cross-session pairs of 0 -> 1/18; T = 7/9
    assert row["value"] == pytest.approx(5 / 6)
    assert row["null_mean"] == pytest.approx(1 / 18)
    assert res.observed == pytest.approx(7 / 9)
    # within-session permutations: session A's pairings give a same-site sum 1.5 (1/3) or
    # 0.5 (2/3); session B's 1 (1/3) or 0 (2/3): T = 7/9 (1/9), 7/18 (4/9), 0 (4/9)
    values, counts = np.unique(np.round(res.null, 9), return_counts=True)
    assert values == pytest.approx([0.0, 7 / 18, 7 / 9], abs=1e-9)
    assert counts / counts.sum() == pytest.approx([4 / 9, 4 / 9, 1 / 9], abs=0.015)
    assert row["p_value"] == pytest.approx(1 / 9, abs=0.01)
    pairs = res.pairs
    assert [pairs[t].n for t in PAIR_TYPES] == [3, 6, 12]
    assert [pairs[t].mean for t in PAIR_TYPES] == pytest.approx([5 / 6, 1 / 6, 0.0])
    # E[same-site sum] = 5/6 + 1/3 = 7/6 under the null
    assert pairs["same site"].null_mean == pytest.approx(7 / 18, abs=0.01)
    assert sorted(pairs["same site"].sample) == pytest.approx([0.5, 1.0, 1.0])
    assert pairs["different session"].sample.size == 12  # all of them (fewer than the cap)
    assert res.n_tested_sessions == 2 and res.n_sites == 4 and res.n_units == 7


def test_locality_toy_reference_pooling_matches_enumeration():
    bases, sessions, sites = _toy()
    res = population_locality(bases, sessions, sites, n_permutations=9000, seed=2)
    row = _rows_by_name(res.rows)[REFERENCE_POOLING_STATISTIC]
    assert row["test"].startswith("reference pooling; confounded with per-session model fits")
    sim = pairwise_similarity(bases)
    ids = [f"{a}/{b}" for a, b in zip(sessions, sites, strict=True)]
    iu = np.triu_indices(7, 1)

    def t_of(labels):
        same = np.array([labels[i] == labels[j] for i, j in zip(*iu, strict=True)])
        return sim[iu][same].mean() - sim[iu][~same].mean()

    obs = t_of(ids)
    null = [t_of(p) for p in set(itertools.permutations(ids))]  # 630 distinct assignments
    exact = np.mean(np.array(null) >= obs - 1e-9)
    assert res.observed_pooled == pytest.approx(obs, abs=1e-6)
    assert row["p_value"] == pytest.approx(exact, abs=0.006)


def test_cross_session_mean_is_exact_for_mixed_dimensionalities():
    rng = np.random.default_rng(3)
    bases = [_orth(rng.standard_normal((30, int(rng.integers(1, 6))))) for _ in range(40)]
    sessions = [f"s{i % 4}" for i in range(40)]
    sites = [f"g{i % 3}" for i in range(40)]
    res = population_locality(bases, sessions, sites, n_permutations=50, seed=0)
    sim = pairwise_similarity(bases)
    ses, ids = np.array(sessions), np.array([f"{a}/{b}" for a, b in zip(sessions, sites,
                                                                           strict=True)])  # fmt: skip
    i, j = np.triu_indices(40, 1)
    cross = ses[i] != ses[j]
    same = ids[i] == ids[j]
    assert res.pairs["different session"].mean == pytest.approx(sim[i, j][cross].mean())
    assert res.pairs["different session"].n == cross.sum()
    row = _rows_by_name(res.rows)[LOCALITY_STATISTIC]
    assert row["value"] == pytest.approx(sim[i, j][same].mean())
    assert row["null_mean"] == pytest.approx(sim[i, j][~same].mean())


def test_locality_inputs_checked_and_unlabelled_units_counted():
    bases, sessions, sites = _toy()
    with pytest.raises(ValueError, match="one entry per unit"):
        population_locality(bases, sessions[:-1], sites)
    with pytest.raises(ValueError, match="orthonormal"):
        population_locality([2 * b for b in bases], sessions, sites)
    with pytest.raises(ValueError, match="same P"):
        population_locality([*bases[:-1], np.eye(5)[:, :1]], sessions, sites)
    with pytest.raises(ValueError, match="n_permutations"):
        population_locality(bases, sessions, sites, n_permutations=0)
    res = population_locality(bases, sessions, [*sites[:-1], None], n_permutations=20)
    assert res.n_units == 6 and any("1 unit(s) without a session or site" in n for n in res.notes)
    empty = population_locality([], [], [])
    assert empty.rows is None and empty.notes


def test_reference_pooling_subsample_is_said():
    bases, sessions, sites = _population(0, local=False, core=0.0, n_sessions=3)
    res = population_locality(bases, sessions, sites, n_permutations=50, max_pooled_units=20)
    assert res.n_pooled_units == 20
    assert any("20 of 36 units (seeded random subsample)" in n for n in res.notes)
    assert _rows_by_name(res.rows)[REFERENCE_POOLING_STATISTIC]["n"] == 20


# --------------------------------------------------------------------------------------
# locality: science on synthetic bases


def test_local_sites_detected_despite_the_session_core():
    # (a) site-specific subspaces, with the per-session shared component on top
    for seed in range(5):
        res = population_locality(*_population(seed, local=True, core=1.0), seed=seed)
        row = _rows_by_name(res.rows)[LOCALITY_STATISTIC]
        assert row["p_value"] < 0.01, (seed, row)
        assert row["verdict"].startswith("units more similar within a site")


def test_session_core_alone_fools_pooling_but_not_the_primary_test():
    # (b) independent unit subspaces plus a per-session shared component (the model core):
    # the within-session null keeps p uniform; the paper's pooling calls every one local
    primary, pooled, excess = [], [], []
    for seed in range(10):
        res = population_locality(*_population(seed, local=False, core=1.0), seed=seed)
        rows = _rows_by_name(res.rows)
        primary.append(rows[LOCALITY_STATISTIC]["p_value"])
        pooled.append(rows[REFERENCE_POOLING_STATISTIC]["p_value"])
        p = res.pairs
        excess.append(p["different site, same session"].mean - p["different session"].mean)
        assert p["same site"].mean - p["different site, same session"].mean < 0.03
    assert np.mean(excess) == pytest.approx(0.36, abs=0.05)  # the core's added similarity
    assert sum(p < 0.05 for p in primary) <= 1, primary
    assert all(p < 0.01 for p in pooled), pooled


def test_single_site_sessions_give_no_primary_row():
    # (c) every session holds one site: same-site pairs are all within one model
    res = population_locality(*_population(0, local=False, core=1.0, single_site=True))
    rows = _rows_by_name(res.rows)
    assert LOCALITY_STATISTIC not in rows and res.null is None
    assert any("primary test not run" in n and "confounded" in n for n in res.notes)
    assert rows[REFERENCE_POOLING_STATISTIC]["p_value"] < 0.01  # pooling still says "local"
    assert res.pairs["different site, same session"].n == 0
    assert np.isnan(res.pairs["same site"].null_mean)


# --------------------------------------------------------------------------------------
# statistics.py: hand-made site and unit tables


def _sites_table():
    rng = np.random.default_rng(5)
    n = 9
    cnn = rng.uniform(0.4, 0.8, n)
    return pd.DataFrame({
        "session": [f"s{i // 3}" for i in range(n)], "site": [f"g{i % 3}" for i in range(n)],
        "site_id": [f"s{i // 3}/g{i % 3}" for i in range(n)],
        "r_ln_mean": cnn - rng.uniform(0.05, 0.15, n), "r_cnn_mean": cnn,
        "r_subspace_mean": cnn + rng.normal(0, 0.01, n),
        "ev_ln_mean": cnn**2 - 0.1, "ev_cnn_mean": cnn**2, "ev_subspace_mean": 0.97 * cnn**2,
        "subspace_fraction": [0.97, 0.99, 0.96, 0.98, 0.94, 1.0, 0.97, 0.985, np.nan],
        "tiling_overlap_neighbours": [0.3, 0.25, 0.4, np.nan, 0.2, 0.35, 0.3, 0.28, 0.33],
        "tiling_overlap_neighbours_null": [0.2, 0.22, 0.25, np.nan, 0.21, 0.2, 0.22, 0.2, 0.2],
        "tiling_overlap_neighbours_p": [0.01, 0.3, 0.002, np.nan, 0.8, 0.01, 0.2, 0.04, 0.01],
        "tiling_overlap_mean": [0.2] * 9, "tiling_overlap_mean_null": [0.25] * 9,
        "tiling_overlap_mean_p": [0.5] * 9,
    })  # fmt: skip


def test_model_comparison_matches_scipy_on_site_means():
    sites = _sites_table()
    rows, notes = model_comparison(sites)
    _check_rows(rows)
    r = _rows_by_name(rows)
    diff = sites.r_cnn_mean - sites.r_ln_mean
    row = r["r_cnn_vs_ln_site_means"]
    assert row["p_value"] == pytest.approx(stats.wilcoxon(diff).pvalue)
    assert row["effect_size"] == pytest.approx(1.0) and row["n"] == 9
    assert row["value"] == pytest.approx(np.median(sites.r_cnn_mean))
    assert "higher in CNN" in row["verdict"]
    d2 = sites.r_subspace_mean - sites.r_cnn_mean
    row = r["r_subspace_vs_cnn_site_means"]
    assert row["p_value"] == pytest.approx(stats.wilcoxon(d2).pvalue)
    assert row["effect_size"] == pytest.approx(_rank_biserial(d2))
    frac = sites.subspace_fraction.dropna().to_numpy()
    row = r["subspace_fraction_across_sites"]
    assert row["value"] == pytest.approx(np.median(frac)) and row["n"] == 8
    p = stats.wilcoxon(frac - 0.95, alternative="greater").pvalue
    assert row["p_value"] == pytest.approx(p)
    assert "7 of 8 sites (88%) >= 0.95" in row["test"]
    one, notes = model_comparison(sites.iloc[:1])
    assert one is None and any("needs >= 2" in n for n in notes)


def test_tiling_across_sites_wilcoxon_and_binomial():
    sites = _sites_table()
    rows, _ = tiling_across_sites(sites)
    _check_rows(rows)
    r = _rows_by_name(rows)
    ok = sites.tiling_overlap_neighbours.notna()
    excess = (sites.tiling_overlap_neighbours - sites.tiling_overlap_neighbours_null)[ok]
    row = r["tiling_overlap_neighbours_excess_across_sites"]
    assert row["p_value"] == pytest.approx(stats.wilcoxon(excess).pvalue) and row["n"] == 8
    assert "above chance" in row["verdict"]
    row = r["tiling_overlap_neighbours_sites_below_alpha"]
    assert row["value"] == pytest.approx(5 / 8)
    assert row["p_value"] == pytest.approx(stats.binomtest(5, 8, 0.05, "greater").pvalue)
    assert "5 of 8 sites" in row["test"] and "(5 above, 0 below" in row["test"]
    row = r["tiling_overlap_mean_excess_across_sites"]  # every site 0.05 below its null
    assert "below chance" in row["verdict"] and row["effect_size"] == pytest.approx(-1.0)
    assert r["tiling_overlap_mean_sites_below_alpha"]["p_value"] == pytest.approx(1.0)
    empty = sites.assign(**{c: np.nan for c in sites.columns if c.startswith("tiling")})
    none, notes = tiling_across_sites(empty)
    assert none is None and len(notes) == 4


def _units_table():
    rows = []
    rng = np.random.default_rng(7)
    for s in range(4):
        for u in range(8):
            narrow = u % 2 == 0
            rows.append({
                "session": f"s{s}", "site": "g0", "site_id": f"s{s}/g0",
                "cell_type": "narrow" if narrow else "broad",
                "layer": "13" if u < 4 else "44",
                "breadth": 0.5 + 0.2 * narrow + rng.normal(0, 0.02),
                "shape_index": rng.normal(0.3 if narrow else -0.3, 0.1),
                "shape_class": ["bowl", "hill", "monotonic", ""][u % 4],
                "dimensionality": float([2, 3, 3, 4][u % 4]),
                "dimensionality_reference": float([3, 3, 4, 5][u % 4]),
                "depth_below_l34_um": -300.0 + 80 * u,
                "site_similarity_loo": 0.2 + 0.05 * u + rng.normal(0, 0.01),
            })  # fmt: skip
    return pd.DataFrame(rows)


def test_dimensionality_distribution_histogram_and_site_comparison():
    units = _units_table()
    rows, hist, _ = dimensionality_distribution(units)
    _check_rows(rows)
    r = _rows_by_name(rows)
    assert r["dimensionality_distribution"]["value"] == 3.0
    assert r["dimensionality_distribution"]["verdict"] == "descriptive"
    assert r["dimensionality_reference_distribution"]["value"] == 3.5
    assert hist.dimensionality.tolist() == [1, 2, 3, 4, 5]
    assert hist.n_ours.tolist() == [0, 8, 16, 8, 0]
    assert hist.n_reference.tolist() == [0, 0, 16, 8, 8]
    assert hist.fraction_ours.sum() == pytest.approx(1.0)
    row = r["dimensionality_ours_vs_reference_site_means"]  # every site: 3 - 3.75
    assert row["effect_size"] == pytest.approx(-1.0) and row["n"] == 4
    assert row["p_value"] == pytest.approx(stats.wilcoxon(np.full(4, -0.75)).pvalue)
    none, hist0, notes = dimensionality_distribution(
        units.assign(dimensionality=np.nan, dimensionality_reference=np.nan)
    )
    assert none is None and hist0.empty and len(notes) == 2


def test_cell_types_and_layers_uses_site_ids_and_fraction_table():
    units = _units_table()
    rows, table, _ = cell_types_and_layers(units, "site_means", 2)
    _check_rows(rows)
    expected, _ = compare_cell_types_and_layers_across_sites(
        {"breadth": units.breadth.to_numpy(), "shape_index": units.shape_index.to_numpy()},
        units.cell_type, units.layer, units.site_id, name="population",
    )  # fmt: skip
    assert rows == expected
    row = _rows_by_name(rows)["breadth_narrow_vs_broad_site_means"]
    assert row["site"] == "population" and row["n"] == 4 and "higher in narrow" in row["verdict"]
    narrow = table[(table.cell_type == "narrow") & (table.layer == "all")].iloc[0]
    # narrow units are u = 0, 2, 4, 6: shape classes bowl, monotonic, bowl, monotonic
    assert narrow.n_units == 16 and narrow.n_classified == 16 and narrow.bowl_fraction == 0.5
    broad = table[(table.cell_type == "broad") & (table.layer == "all")].iloc[0]
    # broad: hill, "" (unclassified), hill, "" -> 8 classified, all hill
    assert broad.n_classified == 8 and broad.hill_fraction == 1.0 and broad.bowl_fraction == 0
    both = table[(table.cell_type == "all") & (table.layer == "all")].iloc[0]
    assert both.n_units == 32 and both.n_sites == 4
    assert both.breadth_mean == pytest.approx(units.breadth.mean())


def test_depth_profile_spearman_per_site_then_wilcoxon():
    units = _units_table()
    rows, profile, _ = depth_profile(units, bin_um=200)
    _check_rows(rows)
    (row,) = rows
    rhos = [stats.spearmanr(g.depth_below_l34_um, g.site_similarity_loo).statistic
            for _, g in units.groupby("site_id")]  # fmt: skip
    assert row["value"] == pytest.approx(np.median(rhos)) and row["n"] == 4
    assert row["p_value"] == pytest.approx(stats.wilcoxon(rhos).pvalue)
    assert "higher deeper" in row["verdict"]
    # depths -300, -220, ..., 260 (u = 0..7): bins [-400, -200) hold u = 0, 1; [-200, 0)
    # u = 2, 3; [0, 200) u = 4, 5, 6; [200, 400) u = 7; times 4 sites
    assert profile.depth_lo_um.tolist() == [-400.0, -200.0, 0.0, 200.0]
    assert profile.n_units.tolist() == [8, 8, 12, 4] and (profile.n_sites == 4).all()
    first = units[units.depth_below_l34_um < -200].site_similarity_loo
    assert profile["mean"].iloc[0] == pytest.approx(first.mean())
    assert profile["sem"].iloc[0] == pytest.approx(first.std(ddof=1) / np.sqrt(first.size))
    none, empty, notes = depth_profile(units.assign(depth_below_l34_um=np.nan))
    assert none is None and empty.empty and "set [layers]" in notes[0]
    few, _, notes = depth_profile(units.iloc[:6])
    assert few is None and "1 of 1 site(s)" in notes[0]
