"""Breadth claims on simulated sites (issue 19's Done-when), units nested in sites.

No model is fitted: each unit's tuning subspace is its true filters (orthonormalised, model lag
order) and the SRFs are maps of its simulated spike counts, with repeat-wise errors from the
repeated sounds. Every site is one draw of 12 hill units (6 narrow, 6 broad) on the same
sounds; the comparison is per-site mean breadth narrow minus broad, Wilcoxon signed-rank
across 10 sites (``compare_across_sites``, two-sided; the sign of the effect gives the
direction).

* Narrow units simulated with the *same* breadth but a weaker modulation on a higher base
  rate (``narrow_modulation=0.3``, same mean rate, so noisier maps) are not found broader by
  the noise-aware breadth on these 10 sites, while the old measure (bins >= 0.5 of the
  min-max normalised map) calls them broader: the confound that motivated the change. The
  noise-aware breadth only shrinks it: on 20 other sites it calls them broader too
  (p = 0.0005; tests/test_snr_matched_breadth.py keeps that as a strict xfail).
* Narrow units simulated broader (``narrow_tuning_factor=1.6``) are found broader, at the
  simulator's default sparseness (``response_cv`` 1.2-2.5: the power is calibrated on the
  unbroadened nonlinearity, so it no longer re-sharpens the wider bump) and when narrow units
  also fire more, as real narrow-spiking units do.
"""

from __future__ import annotations

import pytest

from nwb_subspace.simulate.presets import SimulationConfig
from nwb_subspace.subspace.srf import subspace_rfs
from nwb_subspace.testing.sites import (
    found_broader,
    narrow_vs_broad,
    plan_spectrogram,
    true_filter_site,
)

N_SITES = 10
CONFIG = SimulationConfig(
    name="breadth",
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
LOW_CV = (0.3, 0.6)  # power 1 for every unit: the nonlinearity width sets the breadth


@pytest.fixture(scope="module")
def sounds():
    """Spectrogram, repeat index per bin and stimulus mask of one presentation plan."""
    return plan_spectrogram(CONFIG)


def _site(sounds, seed: int, **changes):
    """Noise-aware and old breadth of one simulated site's measured SRFs, and cell types."""
    X, rep, stim = sounds
    cfg = CONFIG.replace(**changes)
    tuning, counts, pop = true_filter_site(X, cfg, seed)
    srfs = subspace_rfs(
        tuning, X, counts=counts, rate=1 / cfg.spectrogram.bin_s, bins=stim,
        repeats=rep, pairs="first", n_shape_null=0,
    )  # fmt: skip
    return srfs.breadth_fraction, srfs.breadth.astype(float), pop["cell_type"]


def _compare(sounds, **changes) -> dict[str, dict]:
    """compare_across_sites row (narrow vs broad) of each breadth measure over N_SITES."""
    out: dict[str, list] = {"new": [], "old": []}
    types, sites = [], []
    for s in range(N_SITES):
        new, old, cell_type = _site(sounds, 100 + s, **changes)
        out["new"].append(new)
        out["old"].append(old)
        types.extend(cell_type.tolist())
        sites.extend([f"site{s}"] * cell_type.size)
    return narrow_vs_broad(out, types, sites)


_broader = found_broader


@pytest.mark.slow
@pytest.mark.parametrize("cv", [None, LOW_CV], ids=["default_cv", "low_cv"])
def test_noisy_narrow_units_of_equal_breadth_are_not_found_broader(sounds, cv):
    extra = {} if cv is None else {"response_cv": cv}
    rows = _compare(sounds, narrow_tuning_factor=1.0, narrow_modulation=0.3, **extra)
    assert not _broader(rows["new"], 0.05), rows["new"]
    # the old min-max breadth shows the confound: weak, noisy maps read as broad
    assert _broader(rows["old"], 0.01), rows["old"]


@pytest.mark.slow
def test_narrow_units_simulated_broader_are_found_broader(sounds):
    rows = _compare(
        sounds, narrow_tuning_factor=1.6, mean_rate_narrow=(8.0, 28.0), mean_rate_broad=(3.0, 15.0)
    )
    assert _broader(rows["new"], 0.01), rows["new"]


@pytest.mark.slow
def test_narrow_units_of_equal_breadth_firing_more_are_not_found_broader(sounds):
    """The simulator's default rates (narrow 8-28, broad 3-15 spikes/s): more spikes give
    more reliable maps, which must not read as broader."""
    rows = _compare(
        sounds, narrow_tuning_factor=1.0, mean_rate_narrow=(8.0, 28.0), mean_rate_broad=(3.0, 15.0)
    )
    assert not _broader(rows["new"], 0.05), rows["new"]
