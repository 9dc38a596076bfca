"""The SNR-matched SRF breadth (issue 20): definitions on hand-computed cases, and the science.

The noise-aware breadth of a measured SRF depends on the unit's signal-to-noise ratio, so a
group of units that fires more can read broader at the same true breadth. The SNR-matched
breadth (:func:`~nwb_subspace.subspace.srf.with_snr_matched_breadth`) thins every unit of a
site to the site's lowest reliable peak z before measuring. The science tests simulate sites
without fitting (true filters as the subspace, Poisson counts, 4 sounds x 10 repeats) and
compare narrow vs broad across sites (site means, Wilcoxon; ``compare_across_sites``):

* bowl units, equal breadth, narrow units firing ~2x more (8-28 vs 3-15 spikes/s, the
  simulator's defaults): the unmatched breadth calls narrow units broader, the matched one
  does not;
* hill units simulated 1.6x broader: both find it;
* narrow units modulated more weakly on a higher baseline (same rate, same breadth): both
  call them broader with 20 sites (a known limitation, strict xfail: peak-z matching thins the
  strongly modulated units to a few percent of their spikes, and such sparse maps read
  narrower).
"""

from __future__ import annotations

import numpy as np
import pytest

from nwb_subspace.simulate.presets import SimulationConfig
from nwb_subspace.subspace.srf import (
    site_keep_probability,
    smoothed_map,
    snr_matched_breadth,
    srf_peak_z,
    subspace_rfs,
    with_snr_matched_breadth,
)
from nwb_subspace.testing.sites import (
    found_broader,
    narrow_vs_broad,
    plan_spectrogram,
    true_filter_site,
)

CONFIG = SimulationConfig(
    name="snr_match",
    estimation_s=10.0,
    sequence_s=5.0,
    n_validation=4,
    validation_s=5.0,
    validation_repeats=10,
    n_units=12,
    fraction_narrow=0.5,
    subspace="independent",
    k_range=(2, 3),
    nonlinearity_mix=(1.0, 0.0, 0.0),
    mean_rate_broad=(5.0, 15.0),
    mean_rate_narrow=(5.0, 15.0),
)


# ---------------------------------------------------------------- definitions, by hand


def test_site_keep_probability_by_hand():
    z = np.array([10.0, 6.0, 3.0, np.nan, 20.0, 4.0])
    sites = ["a", "a", "a", "a", "b", "c"]
    keep, target = site_keep_probability(z, sites, gate=5.0)
    # site a: z* = 6 (lowest at or above the gate); 10 -> (6/10)^2; 6, 3 and NaN untouched
    np.testing.assert_allclose(keep, [0.36, 1.0, 1.0, 1.0, 1.0, 1.0])
    # site b: its only unit is its own target; site c: no unit passes the gate
    np.testing.assert_allclose(target, [6.0, 6.0, 6.0, 6.0, 20.0, np.nan])


@pytest.mark.parametrize(
    "z, sites, gate",
    [
        (np.ones(3), ["a", "b"], 5.0),
        (np.ones(2), ["a", "b"], 0.0),
        (np.ones(2), ["a", "b"], np.nan),
    ],
)
def test_site_keep_probability_refuses_bad_input(z, sites, gate):
    with pytest.raises(ValueError):
        site_keep_probability(z, sites, gate)


def test_peak_z_by_hand():
    # one bump on a flat 20 x 20 map, the same SEM everywhere (no per-repeat maps: the
    # smoothed map's own formula), pooling sigma ~0: peak z = (max(s) - 10th pct(s)) / SE at
    # the peak, the SE floored at its median over the bins
    m = np.zeros((20, 20))
    m[10, 10] = 10.0
    sem = np.full((20, 20), 2.0)
    s, se = smoothed_map(m, sem)
    floor = np.percentile(s, 10)
    expected = (s.max() - floor) / max(se[10, 10], np.median(se))
    assert srf_peak_z(m, sem, pool_sigma=1e-6) == pytest.approx(expected, rel=1e-9)
    # invariances and scaling: a constant offset changes nothing, twice the noise halves z
    assert srf_peak_z(m + 3.0, sem, pool_sigma=1e-6) == pytest.approx(expected, rel=1e-9)
    assert srf_peak_z(m, 2 * sem, pool_sigma=1e-6) == pytest.approx(expected / 2, rel=1e-9)
    # a bin with a tiny SE cannot set the peak (the floor)
    tiny = sem.copy()
    tiny[3, 3] = 1e-6
    m2 = m.copy()
    m2[3, 3] = 1.0
    assert srf_peak_z(m2, tiny, pool_sigma=1e-6) < 2 * expected
    assert np.isnan(srf_peak_z(m, None))
    assert np.isnan(srf_peak_z(np.full((8, 8), np.nan), sem[:8, :8]))


# ---------------------------------------------------------------- simulated sites


@pytest.fixture(scope="module")
def sounds():
    """Spectrogram, repeat index per bin and stimulus mask of one presentation plan."""
    return plan_spectrogram(CONFIG)


def _site(sounds, seed: int, **changes):
    """One simulated site: tuning (true filters), counts, cell types and bins per second."""
    X, _, _ = sounds
    cfg = CONFIG.replace(**changes)
    tuning, counts, pop = true_filter_site(X, cfg, seed)
    return tuning, counts, pop["cell_type"], 1 / cfg.spectrogram.bin_s


def _matched(sounds, seed: int, n_draws: int = 10, **changes):
    X, rep, stim = sounds
    tuning, counts, cell_type, rate = _site(sounds, seed, **changes)
    srfs = subspace_rfs(
        tuning, X, counts=counts, rate=rate, bins=stim, repeats=rep, pairs="first",
        n_shape_null=0,
    )  # fmt: skip
    sites = np.full(cell_type.size, f"site{seed}")
    out = with_snr_matched_breadth(
        srfs, tuning, X, counts, sites, rate=rate, bins=stim, repeats=rep, n_draws=n_draws,
        seed=seed,
    )  # fmt: skip
    return out, cell_type


def test_unthinned_units_keep_their_breadth_and_draws_are_reproducible(sounds):
    X, rep, stim = sounds
    tuning, counts, _, rate = _site(sounds, 7)
    srfs = subspace_rfs(
        tuning, X, counts=counts, rate=rate, bins=stim, repeats=rep, pairs="first",
        n_shape_null=0,
    )  # fmt: skip
    keep = np.ones(counts.shape[1])
    keep[3] = 0.2
    kw = dict(rate=rate, bins=stim, repeats=rep, n_draws=3)
    a, used = snr_matched_breadth(tuning, X, counts, keep, seed=1, **kw)
    # keep == 1: measured once, exactly the stored noise-aware breadth
    np.testing.assert_array_equal(np.delete(a, 3), np.delete(srfs.breadth_fraction, 3))
    np.testing.assert_array_equal(used, keep)  # no target: no calibration
    b, _ = snr_matched_breadth(tuning, X, counts, keep, seed=1, **kw)
    np.testing.assert_array_equal(a, b)  # same seed, same draws
    # each unit draws from its own stream: thinning another unit changes nothing here
    keep2 = keep.copy()
    keep2[5] = 0.5
    c, _ = snr_matched_breadth(tuning, X, counts, keep2, seed=1, **kw)
    assert c[3] == a[3]


def test_calibration_brings_the_thinned_maps_to_the_target(sounds):
    X, rep, stim = sounds
    tuning, counts, _, rate = _site(sounds, 3, mean_rate_narrow=(20.0, 30.0))
    srfs = subspace_rfs(
        tuning, X, counts=counts, rate=rate, bins=stim, repeats=rep, pairs="first",
        n_shape_null=0,
    )  # fmt: skip
    keep, target = site_keep_probability(srfs.peak_z, np.zeros(counts.shape[1]), 5.0)
    strong = int(np.argmin(keep))
    assert keep[strong] < 0.5, keep  # a unit far above the site's target
    one = np.ones_like(keep)
    one[strong] = keep[strong]
    _, used = snr_matched_breadth(
        tuning, X, counts, one, target=target, rate=rate, bins=stim, repeats=rep, n_draws=1
    )
    rng = np.random.default_rng(0)
    zs = []
    for p in (keep[strong], used[strong]):
        thinned = counts.copy()
        zs.append([])
        for _ in range(8):
            thinned[:, strong] = rng.binomial(counts[:, strong].astype(np.int64), p)
            again = subspace_rfs(
                tuning, X, counts=thinned, rate=rate, bins=stim, repeats=rep, pairs="first",
                n_shape_null=0,
            )  # fmt: skip
            zs[-1].append(again.peak_z[strong])
    before, after = (np.mean(z) / target[strong] for z in zs)
    # (z*/Z)^2 alone leaves the thinned map above the target; calibrated, it is close
    assert after < before
    assert abs(after - 1) < 0.08, (before, after)


def test_snr_matched_breadth_refuses_bad_input(sounds):
    X, rep, stim = sounds
    tuning, counts, _, rate = _site(sounds, 1)
    keep = np.ones(counts.shape[1])
    kw = dict(rate=rate, bins=stim, repeats=rep)
    with pytest.raises(ValueError, match="whole spike counts"):
        snr_matched_breadth(tuning, X, counts + 0.5, keep, **kw)
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        snr_matched_breadth(tuning, X, counts, keep * 0, **kw)
    with pytest.raises(ValueError, match="n_draws"):
        snr_matched_breadth(tuning, X, counts, keep, n_draws=0, **kw)
    with pytest.raises(ValueError, match="repeats"):
        snr_matched_breadth(tuning, X, counts, keep, rate=rate, bins=stim, repeats=-np.ones(
            X.shape[0], dtype=np.int64))  # fmt: skip
    with pytest.raises(ValueError, match="site"):
        srfs = subspace_rfs(tuning, X, counts=counts, **kw, pairs="first", n_shape_null=0)
        with_snr_matched_breadth(srfs, tuning, X, counts, ["a"], **kw)


def _compare(
    sounds, n_sites: int, first_seed: int, n_draws: int = 10, **changes
) -> dict[str, dict]:
    values: dict[str, list] = {"unmatched": [], "matched": []}
    types, sites = [], []
    for s in range(first_seed, first_seed + n_sites):
        srfs, cell_type = _matched(sounds, s, n_draws=n_draws, **changes)
        values["unmatched"].append(srfs.breadth_fraction)
        values["matched"].append(srfs.breadth_snr_matched)
        types.extend(cell_type.tolist())
        sites.extend([f"site{s}"] * cell_type.size)
    return narrow_vs_broad(values, types, sites)


_broader = found_broader


@pytest.mark.slow
def test_units_firing_more_are_not_found_broader_once_matched(sounds):
    # bowl units of equal breadth, narrow units firing ~2x more (the simulator's default rates)
    rows = _compare(
        sounds, 10, 100, narrow_tuning_factor=1.0, nonlinearity_mix=(0.0, 1.0, 0.0),
        mean_rate_narrow=(8.0, 28.0), mean_rate_broad=(3.0, 15.0),
    )  # fmt: skip
    assert _broader(rows["unmatched"], 0.01), rows["unmatched"]  # the confound (p = 0.002)
    assert not _broader(rows["matched"], 0.05), rows["matched"]  # measured: p = 0.56


@pytest.mark.slow
def test_units_simulated_broader_are_found_broader_once_matched(sounds):
    rows = _compare(sounds, 10, 100, narrow_tuning_factor=1.6)
    assert _broader(rows["matched"], 0.01), rows["matched"]  # measured: p = 0.002
    assert _broader(rows["unmatched"], 0.01), rows["unmatched"]


@pytest.mark.slow
@pytest.mark.xfail(
    strict=True,
    reason="known limitation (docs/methods.md, section 8): narrow units modulated more weakly "
    "on a higher baseline (same rate, same true breadth, p = 0.99) read broader with 20 sites, "
    "unmatched (p = 0.0005) and matched (p < 0.0001): matching peak z thins the strongly "
    "modulated broad units to ~3% of their spikes, and such sparse maps read narrower",
)
def test_weakly_modulated_units_are_not_found_broader(sounds):
    # 4 draws (not 10) keep this documented failure cheap; the p-value is far from 0.05 either way
    rows = _compare(sounds, 20, 300, n_draws=4, narrow_tuning_factor=1.0, narrow_modulation=0.3)
    assert not _broader(rows["matched"], 0.05), rows["matched"]


def test_units_alone_in_their_site_are_not_thinned(sounds):
    """Each unit its own site is its own target: keep probability 1, and its matched breadth
    is its stored noise-aware breadth."""
    X, rep, stim = sounds
    tuning, counts, _, rate = _site(sounds, 11)
    srfs = subspace_rfs(
        tuning, X, counts=counts, rate=rate, bins=stim, repeats=rep, pairs="first",
        n_shape_null=0,
    )  # fmt: skip
    out = with_snr_matched_breadth(
        srfs, tuning, X, counts, np.arange(counts.shape[1]).astype(str), rate=rate, bins=stim,
        repeats=rep,
    )  # fmt: skip
    # every unit alone in its site is its own target: nothing is thinned
    np.testing.assert_array_equal(out.keep_probability, np.ones(counts.shape[1]))
    np.testing.assert_array_equal(out.breadth_snr_matched, srfs.breadth_fraction)
    assert "12 site(s)" in out.snr_matching
