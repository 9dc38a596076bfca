"""Simulated sites without a fitted model: the harness of the breadth tests.

No session file and no model: one presentation plan's spectrogram (with the repeat index of
every bin and the presented bins), and sites of units drawn by
:func:`~nwb_subspace.simulate.population.draw_population` on it, whose true filters
(orthonormalised, in the model's lag order) stand in for the tuning subspace and whose
Poisson counts stand in for the measured response. What the SRF measures do with a known
truth, free of any fitting error.
"""

from __future__ import annotations

import numpy as np

from nwb_subspace.results import TuningSubspaces
from nwb_subspace.simulate.neurons import population_drive
from nwb_subspace.simulate.population import draw_population
from nwb_subspace.simulate.presets import SimulationConfig
from nwb_subspace.simulate.session import plan_presentations, truth_spectrogram
from nwb_subspace.simulate.sounds import synthesize_sequence
from nwb_subspace.site.groups import compare_across_sites
from nwb_subspace.subspace.srf import repeat_index_per_bin

__all__ = ["found_broader", "narrow_vs_broad", "plan_spectrogram", "true_filter_site"]


def plan_spectrogram(
    cfg: SimulationConfig, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The spectrogram of one presentation plan of ``cfg``.

    Returns
    -------
    X : ndarray of float64, shape (n_bins, F)
    repeats : ndarray of int64, shape (n_bins,)
        Repeat index of each bin of a repeated sound, -1 elsewhere.
    presented : ndarray of bool, shape (n_bins,)
        Bins of a presentation (not the silences between).
    """
    rng = np.random.default_rng(seed)
    plan = plan_presentations(rng, cfg)
    fs, hop = cfg.audio_fs, int(round(cfg.spectrogram.bin_s * cfg.audio_fs))
    wave = np.zeros(plan[-1]["start"] + plan[-1]["n_samples"] + hop, dtype=np.float32)
    made: dict[str, np.ndarray] = {}
    for p in plan:
        if p["sound_id"] not in made:
            made[p["sound_id"]] = synthesize_sequence(rng, p["n_samples"] / fs, fs, cfg.sound_rms)
        wave[p["start"] : p["start"] + p["n_samples"]] = made[p["sound_id"]][: p["n_samples"]]
    X = np.asarray(truth_spectrogram(wave, fs, cfg.spectrogram, plan).data, dtype=np.float64)
    bounds = np.array([[p["start"] // hop, (p["start"] + p["n_samples"]) // hop] for p in plan])
    presented = np.zeros(X.shape[0], bool)
    for a, b in bounds:
        presented[a:b] = True
    repeats = repeat_index_per_bin([p["sound_id"] for p in plan], bounds, X.shape[0])
    return X, repeats, presented


def true_filter_site(
    X: np.ndarray, cfg: SimulationConfig, seed: int
) -> tuple[TuningSubspaces, np.ndarray, dict[str, np.ndarray]]:
    """One site of ``cfg.n_units`` units on ``X``: its true-filter subspaces and counts
    (``cfg.k_range`` must start at 2: the SRFs map two true filters).

    Returns
    -------
    tuning : TuningSubspaces
        Each unit's first two true filters, orthonormalised, in the model's lag order.
    counts : ndarray of float64, shape (n_bins, n_units)
        Poisson spike counts of the noise-free rate.
    population : dict
        :func:`~nwb_subspace.simulate.population.draw_population`'s arrays, plus ``rate``
        (the noise-free rate, spikes/s, (n_bins, n_units)).
    """
    if cfg.k_range[0] < 2:
        raise ValueError(
            f"true_filter_site maps two true filters: k_range must start at 2, got {cfg.k_range}"
        )
    rng = np.random.default_rng(seed)
    pop = draw_population(rng, cfg, X)
    drive = population_drive(
        X, pop["filters"], pop["k"], pop["offsets"], pop["nl_kind"], pop["nl_centre"],
        pop["nl_width"], pop["nl_sign"], pop["nl_power"],
    )  # fmt: skip
    pop["rate"] = pop["base_rate"] + pop["amplitude"] * drive
    counts = rng.poisson(pop["rate"] * cfg.spectrogram.bin_s).astype(float)
    n, f, d = cfg.n_units, X.shape[1], cfg.n_lags
    comps = np.zeros((n, 2, f, d))
    for u in range(n):
        q, _ = np.linalg.qr(pop["filters"][u, : pop["k"][u]].reshape(pop["k"][u], -1).T)
        comps[u] = q.T[:2].reshape(2, f, d)[..., ::-1]  # true order -> model lag order
    tuning = TuningSubspaces(
        unit_rows=np.arange(n), components=comps, explained_variance_ratio=np.full((n, 2), 0.5),
        dimensionality=np.full(n, 2), mean_dstrf=comps[:, 0], n_frames=np.full(n, X.shape[0]),
        noise_floor=np.zeros((n, 2)), frequencies=np.arange(f, dtype=float),
        lags_s=(d - 1 - np.arange(d)) * cfg.spectrogram.bin_s,
    )  # fmt: skip
    return tuning, counts, pop


def narrow_vs_broad(
    measures: dict[str, list[np.ndarray]], cell_types: list[str], sites: list[str]
) -> dict[str, dict]:
    """Narrow vs broad of each measure, units nested in sites (``compare_across_sites``).

    ``measures`` maps a name to one array per site (concatenated in order); ``cell_types``
    and ``sites`` give each unit's type and site, in the same order. Returns the test row of
    each measure."""
    rows = {}
    for name, values in measures.items():
        (row,), _ = compare_across_sites(
            np.concatenate(values), cell_types, sites, statistic="breadth",
            groups=["narrow", "broad"],
        )  # fmt: skip
        rows[name] = row
    return rows


def found_broader(row: dict, alpha: float) -> bool:
    """Narrow units found broader: two-sided site-level p < ``alpha``, narrow > broad."""
    return row["p_value"] < alpha and row["effect_size"] > 0
