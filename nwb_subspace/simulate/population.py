"""Draw a site's units (filters, tuning dimensionality, nonlinearities, rates).

The filters are calibrated on the session's spectrogram: they are recombined so each unit's
projections are white over the session, and each unit's gain is set to reach a drawn mean
rate. The result is everything :class:`~nwb_subspace.simulate.truth.GroundTruth` needs per
unit, except the waveform fields (filled in by the session).
"""

from __future__ import annotations

import numpy as np

from nwb_subspace.simulate.neurons import (
    K_MAX,
    broaden_nonlinearity,
    draw_strf,
    orthonormal_basis,
    population_drive,
    whiten_filters,
)
from nwb_subspace.simulate.presets import NONLINEARITIES, SimulationConfig

__all__ = ["draw_population"]


def _random_orthonormal(rng: np.random.Generator, m: int, k: int) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((m, k)))
    return q * np.sign(np.diag(r))[None, :]


def _containing(q: np.ndarray, v: np.ndarray) -> np.ndarray:
    """An orthonormal basis (m, k) of ``k`` dimensions whose first axis is ``v``'s direction,
    the others from ``q`` made orthogonal to it (Gram-Schmidt, QR)."""
    a = np.column_stack([v, q[:, : q.shape[1] - 1]])
    out, r = np.linalg.qr(a)
    return out * np.where(np.diag(r) < 0, -1.0, 1.0)[None, :]


def _unit_vector(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.standard_normal(n)
    return v / np.linalg.norm(v)


# long: one seeded sequence of draws per unit; their order fixes the simulated population
def draw_population(
    rng: np.random.Generator, cfg: SimulationConfig, spec: np.ndarray
) -> dict[str, np.ndarray]:
    """Draw and calibrate the units of one site.

    Parameters
    ----------
    rng : numpy.random.Generator
    cfg : SimulationConfig
    spec : ndarray, shape (n_bins, n_channels)
        The session's spectrogram (the space the filters live in).

    Returns
    -------
    dict
        Arrays named as the per-unit and site fields of ``GroundTruth`` (``k``, ``filters``,
        ``offsets``, ``nl_*``, ``base_rate``, ``amplitude``, ``mean_rate``, ``cell_type``,
        ``site_coords``, ``site_centre``, ``site_basis``).
    """
    n_units, n_ch, n_lags, m = cfg.n_units, spec.shape[1], cfg.n_lags, cfg.site_dim
    narrow = np.zeros(n_units, dtype=bool)
    narrow[rng.permutation(n_units)[: int(round(cfg.fraction_narrow * n_units))]] = True
    tune = np.where(narrow, cfg.narrow_tuning_factor, 1.0)
    k = rng.integers(cfg.k_range[0], cfg.k_range[1] + 1, n_units)
    mix = np.asarray(cfg.nonlinearity_mix, dtype=float)
    kinds = np.array(NONLINEARITIES)[rng.choice(len(mix), n_units, p=mix / mix.sum())]
    if cfg.balanced_kinds:  # each broad unit copies a narrow unit's kind and k (no new draws)
        pairs = list(zip(np.flatnonzero(narrow), np.flatnonzero(~narrow), strict=False))
        for a, b in pairs:
            kinds[b], k[b] = kinds[a], k[a]

    # Site basis: STRF-like filters around a site best frequency, orthonormalised.
    site_bf = rng.uniform(0.25, 0.75) * (n_ch - 1)
    raw = np.stack(
        [
            draw_strf(rng, n_ch, n_lags, site_bf + rng.normal(0, 0.1 * n_ch), rng.uniform(1.5, 3.5))
            for _ in range(m)
        ]
    )
    site_basis = orthonormal_basis(raw)
    cluster_centre = _unit_vector(rng, m) * 1.0

    filters = np.zeros((n_units, K_MAX, n_ch, n_lags))
    offsets = np.zeros((n_units, K_MAX))
    site_coords = np.full((n_units, K_MAX, m), np.nan)
    site_centre = np.full((n_units, m), np.nan)
    centre = np.zeros((n_units, K_MAX))
    sign = np.ones((n_units, K_MAX))
    width = np.zeros(n_units)
    plain_centre = np.zeros((n_units, K_MAX))  # before broadening (narrow units)
    plain_width = np.zeros(n_units)

    if cfg.subspace == "shared":
        white, white_off = whiten_filters(spec, site_basis)
        coords = white.reshape(m, -1) @ site_basis.reshape(m, -1).T  # white = coords @ basis
    for u in range(n_units):
        kk = int(k[u])
        if cfg.subspace == "shared":
            q = _random_orthonormal(rng, m, kk)  # (m, k)
            if cfg.tiling == "clustered":
                c_site = cluster_centre + 0.2 * rng.standard_normal(m)
                # the unit's subspace holds its centre, so its pocket is near that one point
                # of the site subspace (not a slab through it); every unit's near one point
                q = _containing(q, c_site)
            else:
                c_site = _unit_vector(rng, m) * rng.uniform(0.5, 1.5)
            filters[u, :kk] = np.tensordot(q.T, white, axes=(1, 0))
            offsets[u, :kk] = q.T @ white_off
            site_coords[u, :kk] = q.T @ coords
            site_centre[u] = c_site
            c = q.T @ c_site
        else:
            if cfg.independent_bf == "whole range":  # no site-specific tuning at all
                bf = rng.uniform(0.0, n_ch - 1.0)
            else:
                bf = site_bf + rng.normal(0, 0.15 * n_ch)
            # narrow units get broader spectral tuning (bandwidth x narrow_tuning_factor)
            own = np.stack(
                [
                    draw_strf(
                        rng, n_ch, n_lags, bf + rng.normal(0, 1.5), rng.uniform(1.5, 3.5) * tune[u]
                    )
                    for _ in range(kk)
                ]
            )
            filters[u, :kk], offsets[u, :kk] = whiten_filters(spec, own)
            if cfg.tiling == "clustered":
                c = cluster_centre[:kk] + 0.2 * rng.standard_normal(kk)
            else:
                c = _unit_vector(rng, kk) * rng.uniform(0.5, 1.5)
        if kinds[u] == "hill":
            plain_width[u] = rng.uniform(0.6, 1.0) * kk**0.25
            plain_centre[u, :kk] = c
        elif kinds[u] == "bowl":
            plain_width[u] = rng.uniform(0.7, 1.1) * kk**0.5
            plain_centre[u, :kk] = 0.3 * c
        else:
            plain_width[u] = rng.uniform(0.2, 0.5)
            plain_centre[u, :kk] = rng.uniform(-0.5, 1.0, kk)
            sign[u, :kk] = rng.choice([-1.0, 1.0], kk)
        # narrow units: a high-activity region larger by the factor, whatever the kind
        centre[u, :kk], width[u] = broaden_nonlinearity(
            str(kinds[u]), plain_centre[u, :kk], float(plain_width[u]), float(tune[u])
        )

    base, amp, mean, power = _calibrate_gains(
        rng, cfg, spec, narrow, k, filters, offsets, kinds, (centre, width),
        (plain_centre, plain_width), sign,
    )  # fmt: skip
    return {
        "k": k.astype(np.int64),
        "filters": filters,
        "offsets": offsets,
        "nl_kind": kinds.astype("<U9"),
        "nl_centre": centre,
        "nl_width": width,
        "nl_sign": sign,
        "nl_power": power,
        "base_rate": base,
        "amplitude": amp,
        "mean_rate": mean,
        "cell_type": np.where(narrow, "narrow", "broad").astype("<U6"),
        "site_coords": site_coords,
        "site_centre": site_centre,
        "site_basis": site_basis,
    }


def _calibrate_gains(
    rng: np.random.Generator,
    cfg: SimulationConfig,
    spec: np.ndarray,
    narrow: np.ndarray,
    k: np.ndarray,
    filters: np.ndarray,
    offsets: np.ndarray,
    kinds: np.ndarray,
    params: tuple[np.ndarray, np.ndarray],
    plain: tuple[np.ndarray, np.ndarray],
    sign: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Power, base rate and gain per unit: sparse responses with a drawn mean rate.

    ``params`` is each unit's nonlinearity ``(centre, width)`` as simulated, ``plain`` the
    same before narrow units were broadened (:func:`broaden_nonlinearity`). The power that
    gives the drawn sparseness (``response_cv``) is found on the unit's *plain* drive, then
    applied to the simulated one: a power found on the broadened drive would re-sharpen it to
    the same sparseness and undo the broadening (narrow units simulated broader came out as
    broad as the others).
    """
    (centre, width), (plain_centre, plain_width) = params, plain
    n_units = k.size
    base, amp, mean, power = (np.zeros(n_units) for _ in range(4))
    drive = population_drive(spec, filters, k, offsets, kinds, centre, width, sign)
    plain_drive = drive
    if not (np.array_equal(plain_centre, centre) and np.array_equal(plain_width, width)):
        plain_drive = population_drive(
            spec, filters, k, offsets, kinds, plain_centre, plain_width, sign
        )
    for u in range(n_units):
        g = drive[:, u]
        power[u] = _power_for_cv(plain_drive[:, u], rng.uniform(*cfg.response_cv))
        gp = g ** power[u]
        lo, hi = cfg.mean_rate_narrow if narrow[u] else cfg.mean_rate_broad
        target = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
        base[u] = target * rng.uniform(0.05, 0.2)
        amp[u] = (target - base[u]) / max(float(gp.mean()), 1e-300)
        if base[u] + amp[u] * float(gp.max()) > cfg.max_rate:
            amp[u] = (cfg.max_rate - base[u]) / float(gp.max())
        if narrow[u] and cfg.narrow_modulation != 1.0:  # same mean rate, weaker modulation
            driven = amp[u] * float(gp.mean())
            amp[u] *= cfg.narrow_modulation
            base[u] += driven - amp[u] * float(gp.mean())
        mean[u] = base[u] + amp[u] * float(gp.mean())
    return base, amp, mean, power


def _power_for_cv(g: np.ndarray, target_cv: float, max_power: float = 40.0) -> float:
    """Smallest power >= 1 (bisection on log scale) giving ``std/mean(g**p) >= target_cv``."""
    g = g / max(float(g.max()), 1e-300)

    def cv(p: float) -> float:
        gp = g**p
        return float(gp.std() / max(gp.mean(), 1e-300))

    if cv(1.0) >= target_cv:
        return 1.0
    if cv(max_power) <= target_cv:
        return max_power
    lo, hi = 0.0, np.log(max_power)
    for _ in range(30):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if cv(float(np.exp(mid))) < target_cv else (lo, mid)
    return float(np.exp(hi))
