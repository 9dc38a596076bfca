"""Simulated neurons: STRF-like filters, a k-dimensional projection, a nonlinearity, spikes.

Conventions
-----------
A filter ``W`` has shape ``(n_channels, n_lags)`` over the spectrogram of
:func:`nwb_subspace.stimulus.spectrogram.compute_spectrogram` (10 ms bins). The projection of a
spectrogram ``X`` (n_bins, n_channels) on it is causal and includes lag 0::

    z[t] = sum_{c, l} W[c, l] * X[t - l, c] - offset      (X[t < 0] = 0, i.e. silence)

A unit with k filters gets a k-vector ``z[t]``; the filters are scaled so that ``z`` has zero
mean and identity covariance over the simulated session. Its rate (spikes/s) in bin ``t`` is
``base + amplitude * g(z[t]) ** power`` with ``g`` one of:

- ``"hill"`` (peaked):       ``exp(-0.5 * |z - c|^2 / w^2)``;
- ``"bowl"`` (energy-like):  ``1 - exp(-0.5 * |z - c|^2 / w^2)``;
- ``"monotonic"`` (rectified): ``mean_j w * softplus((s_j * z_j - c_j) / w)``.

The power (>= 1) makes responses sparse (it keeps a peak a peak, a bowl a bowl and a
monotonic function monotonic); it is set per unit to reach a drawn coefficient of variation.

Broader tuning
--------------
:func:`broaden_nonlinearity` makes a unit's high-activity region (where ``g ** power`` is
high) larger by a factor, whatever its kind: a hill's width is multiplied by the factor, a
bowl's width is *divided* by it (a smaller hole: a wider bowl would shrink the region outside
the hole where it fires), a monotonic unit's thresholds are lowered by ``2 (factor - 1)``
(its width is left alone: a wider softplus barely moves the high region). Measured on 128
units drawn by :func:`~nwb_subspace.simulate.population.draw_population` (16 sites of the
``"population"`` preset, half shared, half independent, every unit narrow), the same draws
at factor 1 and 1.6 (same power), the true SRF breadth
(:func:`nwb_subspace.simulate.breadth.true_breadth`) went, median at 1 -> at 1.6 (share of
units broader): hill 0.037 -> 0.048 (93 %), bowl 0.68 -> 0.80 (100 %), monotonic
0.115 -> 0.163 (85 %; 95 % of shared units; independent units also get a broader spectral
bandwidth, which redraws their filters). Multiplying every kind's width by the factor (the
simulator before issue 20) broadened hills only: bowls shrank (0.68 -> 0.43, no unit
broader) and monotonic units barely changed (0.115 -> 0.128, 43 % broader); lowering
monotonic thresholds by ``factor - 1`` gave 0.136 (72 %).

Spikes come from an inhomogeneous Poisson process with the rate held constant over each
bin, then an absolute refractory period (dead time) is imposed.
"""

from __future__ import annotations

import numpy as np

from nwb_subspace.stimulus.projection import causal_projection as project

__all__ = [
    "K_MAX",
    "broaden_nonlinearity",
    "draw_strf",
    "nonlinearity",
    "orthonormal_basis",
    "poisson_spikes",
    "population_drive",
    "project",
    "whiten_filters",
]

#: Largest tuning dimensionality; per-unit arrays are padded to this size.
K_MAX = 6


def draw_strf(
    rng: np.random.Generator,
    n_channels: int,
    n_lags: int,
    bf_channel: float,
    bandwidth: float,
) -> np.ndarray:
    """One smooth STRF-like filter: a Gabor over log frequency times onset dynamics.

    Parameters
    ----------
    rng : numpy.random.Generator
    n_channels, n_lags : int
        Filter shape.
    bf_channel : float
        Best frequency as a (fractional) channel index.
    bandwidth : float
        Spectral Gaussian width in channels.

    Returns
    -------
    ndarray, shape (n_channels, n_lags)
        Unit-norm filter. Temporal kernel: a delayed excitatory gamma bump minus a slower,
        weaker one (latency 5-25 ms); spectral profile: Gaussian x cosine (side bands) whose
        centre may drift with lag (frequency-sweep selectivity).
    """
    lags = np.arange(n_lags, dtype=float)
    latency = rng.uniform(0.5, 2.5)
    tau1 = rng.uniform(0.8, 2.0)
    tau2 = tau1 * rng.uniform(1.5, 3.0)
    x = np.maximum(lags - latency, 0.0)
    h = (x / tau1) ** 2 * np.exp(-x / tau1) - rng.uniform(0.0, 0.6) * (x / tau2) ** 2 * np.exp(
        -x / tau2
    )
    tilt = rng.uniform(-0.4, 0.4) if rng.random() < 0.5 else 0.0
    centre = bf_channel + tilt * (lags - latency)  # (n_lags,)
    chans = np.arange(n_channels, dtype=float)[:, None]
    d = chans - centre[None, :]
    omega = rng.uniform(0.0, 0.12)
    spectral = np.exp(-0.5 * (d / bandwidth) ** 2) * np.cos(2 * np.pi * omega * d)
    w = spectral * h[None, :]
    return w / np.linalg.norm(w)


def orthonormal_basis(filters: np.ndarray) -> np.ndarray:
    """Orthonormalise filters (m, F, D) as flattened vectors (QR), keeping their signs."""
    m = filters.shape[0]
    flat = filters.reshape(m, -1).T
    q, r = np.linalg.qr(flat)
    q = q * np.sign(np.diag(r))[None, :]
    return q.T.reshape(filters.shape)


def whiten_filters(
    spec: np.ndarray | None,
    filters: np.ndarray,
    floor: float = 1e-8,
    projections: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Recombine filters so their projections on ``spec`` are white.

    Parameters
    ----------
    spec : ndarray, shape (n_bins, n_channels), or None
        Spectrogram; may be None when ``projections`` is given.
    filters : ndarray, shape (n_filters, n_channels, n_lags)
    floor : float
        Relative floor on the eigenvalues of the projection covariance.
    projections : ndarray, shape (n_bins, n_filters), optional
        ``project(spec, filters)`` if already computed.

    Returns
    -------
    filters_white : ndarray, shape like ``filters``
        ``M @ filters`` with ``M = C^(-1/2)`` (symmetric), ``C`` the covariance of the raw
        projections; a combination of the inputs, so it spans the same subspace.
    offset : ndarray, shape (n_filters,)
        Mean of the whitened projections (subtracted to give zero mean).
    """
    p = project(spec, filters) if projections is None else projections
    mu = p.mean(axis=0)
    cov = np.atleast_2d(np.cov(p, rowvar=False))
    evals, evecs = np.linalg.eigh(cov)
    evals = np.maximum(evals, floor * max(evals.max(), floor))
    m = (evecs / np.sqrt(evals)) @ evecs.T
    white = np.tensordot(m, filters, axes=(1, 0))
    return white, m @ mu


def population_drive(
    spec: np.ndarray,
    filters: np.ndarray,
    k: np.ndarray,
    offsets: np.ndarray,
    kinds: np.ndarray,
    centre: np.ndarray,
    width: np.ndarray,
    sign: np.ndarray,
    power: np.ndarray | None = None,
) -> np.ndarray:
    """``g(z) ** power`` of every unit, projecting all units' filters at once.

    Parameters
    ----------
    spec : ndarray, shape (n_bins, F)
    filters : ndarray, shape (U, K_MAX, F, D)
        Rows ``>= k[u]`` are ignored.
    k : ndarray of int, shape (U,)
    offsets, centre, sign : ndarray, shape (U, K_MAX)
    kinds : ndarray of str, shape (U,)
    width : ndarray, shape (U,)
    power : ndarray, shape (U,), optional
        Defaults to 1.

    Returns
    -------
    ndarray of float64, shape (n_bins, U)
    """
    n_units = k.size
    power = np.ones(n_units) if power is None else power
    stacked = np.concatenate([filters[u, : int(k[u])] for u in range(n_units)])
    ends = np.cumsum(k.astype(int))
    z_all = project(spec, stacked)
    out = np.empty((z_all.shape[0], n_units))
    for u in range(n_units):
        kk = int(k[u])
        z = z_all[:, ends[u] - kk : ends[u]] - offsets[u, :kk]
        out[:, u] = nonlinearity(
            str(kinds[u]), z, centre[u, :kk], float(width[u]), sign[u, :kk], float(power[u])
        )
    return out


def broaden_nonlinearity(
    kind: str, centre: np.ndarray, width: float, factor: float
) -> tuple[np.ndarray, float]:
    """Nonlinearity parameters whose high-activity region is larger by ``factor``.

    Parameters
    ----------
    kind : {"hill", "bowl", "monotonic"}
    centre : array_like, shape (k,)
        Peak (hill), trough (bowl) or thresholds (monotonic), as in :func:`nonlinearity`.
    width : float
        > 0.
    factor : float
        > 0; 1 returns the inputs unchanged, above 1 broadens, below 1 narrows (the inverse
        change: ``broaden(broaden(p, f), 1 / f)`` is ``p`` for hills and bowls).

    Returns
    -------
    (centre, width) : (ndarray of float64, float)
        hill: ``(centre, width * factor)``; bowl: ``(centre, width / factor)`` (a smaller
        hole); monotonic: ``(centre - 2 * (factor - 1), width)`` (thresholds lowered by
        ``2 (factor - 1)`` standard deviations of the white projections, so more of the
        stimulus space drives the unit). See the module docstring for what each does to
        the true SRF breadth.

    Raises
    ------
    ValueError
        Unknown kind, non-positive or non-finite width or factor, non-finite centre.
    """
    if kind not in ("hill", "bowl", "monotonic"):
        raise ValueError(f"unknown nonlinearity kind {kind!r}; use 'hill', 'bowl' or 'monotonic'")
    c = np.array(centre, dtype=np.float64, ndmin=1)
    if c.ndim != 1 or not np.isfinite(c).all():
        raise ValueError(f"centre must be a finite 1-D array, got {centre!r}")
    for name, v in (("width", width), ("factor", factor)):
        if (
            isinstance(v, bool)
            or not isinstance(v, int | float | np.number)
            or not (np.isfinite(v) and v > 0)
        ):
            raise ValueError(f"{name} must be a finite number > 0, got {v!r}")
    width, factor = float(width), float(factor)
    if factor == 1.0:
        return c, width
    if kind == "hill":
        return c, width * factor
    if kind == "bowl":
        return c, width / factor
    return c - 2.0 * (factor - 1.0), width


def _softplus(x: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, x)


def nonlinearity(
    kind: str,
    z: np.ndarray,
    centre: np.ndarray,
    width: float,
    sign: np.ndarray | None = None,
    power: float = 1.0,
) -> np.ndarray:
    """Evaluate a unit's nonlinearity ``g`` on its projections.

    Parameters
    ----------
    kind : {"hill", "bowl", "monotonic"}
    z : ndarray, shape (n_bins, k)
    centre : ndarray, shape (k,)
        Peak (hill), trough (bowl) or per-dimension thresholds (monotonic).
    width : float
        Gaussian width (hill, bowl) or softplus smoothness (monotonic).
    sign : ndarray, shape (k,), optional
        Direction (+1/-1) of each monotonic dimension; ignored otherwise.
    power : float, default 1.0
        The result is ``g ** power``.

    Returns
    -------
    ndarray, shape (n_bins,)
    """
    z = np.asarray(z, dtype=np.float64)
    centre = np.asarray(centre, dtype=np.float64)[: z.shape[1]]
    if kind in ("hill", "bowl"):
        bump = np.exp(-0.5 * np.sum((z - centre) ** 2, axis=1) / width**2)
        g = bump if kind == "hill" else 1.0 - bump
    elif kind == "monotonic":
        s = np.ones(z.shape[1]) if sign is None else np.asarray(sign, dtype=float)[: z.shape[1]]
        g = np.mean(width * _softplus((s * z - centre) / width), axis=1)
    else:
        raise ValueError(f"unknown nonlinearity kind {kind!r}; use 'hill', 'bowl' or 'monotonic'")
    return g if power == 1.0 else g**power


def poisson_spikes(
    rng: np.random.Generator,
    rate: np.ndarray,
    bin_s: float,
    refractory_s: float,
    starting_time: float = 0.0,
    resolution_s: float | None = None,
) -> np.ndarray:
    """Spike times of an inhomogeneous Poisson process with dead time.

    The rate is held constant within each bin; spike times are drawn exactly in
    continuous time (time rescaling), optionally rounded to ``resolution_s``, then any spike
    closer than ``refractory_s`` to the previous kept spike is removed.

    Parameters
    ----------
    rng : numpy.random.Generator
    rate : ndarray, shape (n_bins,)
        Spikes/s in each bin (>= 0).
    bin_s : float
        Bin width in seconds.
    refractory_s : float
        Absolute refractory period in seconds.
    starting_time : float
        Time of the start of bin 0.
    resolution_s : float, optional
        Round spike times to multiples of this (e.g. one sample at 30 kHz).

    Returns
    -------
    ndarray of float64
        Sorted spike times in seconds.
    """
    rate = np.clip(np.asarray(rate, dtype=np.float64), 0.0, None)
    cum = np.concatenate([[0.0], np.cumsum(rate * bin_s)])
    n = rng.poisson(cum[-1])
    u = np.sort(rng.uniform(0.0, cum[-1], n))
    edges = np.arange(rate.size + 1) * bin_s
    # invert the cumulative intensity; bins with zero rate are never hit
    idx = np.clip(np.searchsorted(cum, u, side="right") - 1, 0, rate.size - 1)
    frac = (u - cum[idx]) / np.maximum(rate[idx] * bin_s, 1e-300)
    t = starting_time + edges[idx] + np.clip(frac, 0.0, 1.0) * bin_s
    if resolution_s:
        t = np.round(t / resolution_s) * resolution_s
    return _dead_time(t, refractory_s)


def _dead_time(t: np.ndarray, refractory_s: float) -> np.ndarray:
    """Drop spikes within ``refractory_s`` of the previous kept spike (exact, iterative)."""
    eps = 1e-9
    while t.size > 1:
        close = np.diff(t) < refractory_s - eps
        if not close.any():
            break
        # spike i+1 is dropped where it violates and spike i is surely kept
        prev_ok = np.concatenate([[True], ~close[:-1]])
        drop = np.concatenate([[False], close & prev_ok])
        t = t[~drop]
    return t
