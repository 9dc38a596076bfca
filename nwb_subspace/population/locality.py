"""Same-site vs different-site subspace similarity across a population of sessions.

Similarity of two units ``u, v`` = mean squared cosine of the principal angles between their
own tuning subspaces (orthonormal bases ``Q_u`` of shape ``(P, k_u)``)::

    s(u, v) = ||Q_u^T Q_v||_F^2 / min(k_u, k_v)

(:func:`nwb_subspace.site.subspace.pairwise_similarity`). Pair types: **same site** (both
units at one site of one session), **different site, same session** and **different
session** (always different sites: a site is named within its session, ``site_id =
"<session>/<site>"``).

Statistic
---------
``T = mean(s over same-site pairs) - mean(s over different-site pairs)``, where the
different-site pairs are all pairs at different sites, within **and** across sessions. The
cross-session sum is exact (every pair, not a sample): with ``G_c = sum_{u: k_u >= c} Q_u Q_u^T``
and ``1 / min(a, b) = sum_{c <= min(a, b)} w_c`` (``w_1 = 1``, ``w_c = 1/c - 1/(c-1)``)::

    sum_{u, v} s(u, v) = sum_c w_c ||G_c||_F^2      (ordered pairs, u = v included)

and the within-session pairs (from each session's ``n_s x n_s`` block) are subtracted; cost
``O(sum_u k_u P^2)``, memory one ``P x P`` matrix.

Why the null permutes site labels within sessions
-------------------------------------------------
The units of one session come from one fitted population CNN whose shared core adds
similarity between its units (``benchmarks/core_sharing.py``: +0.27 to +0.39 mean pairwise
similarity for units whose true filters are independent). Same-site pairs are always within
one model; most different-site pairs of a population are across sessions, i.e. across
separately fitted models. Pooling the two and permuting site labels over all units (the
paper's way) therefore calls any population "local": the null mixes cross-session pairs into
the "same-site" group and loses the model's shared similarity. **Primary test**
(``site = "population"``, :data:`LOCALITY_STATISTIC`): site labels are permuted **within each
session** (site sizes kept). Cross-session pairs stay different-site pairs in every draw, so
the per-session model fits add the same amount to observed and null; only the within-session
same-site sum ``A = sum_s A_s`` changes, and ``T`` is increasing-affine in ``A``, so the test
is a stratified permutation test of same-site against different-site pairs of the same
session. A population whose sessions each hold one site (or no session with two sites and a
site of two units) cannot be tested this way: no primary row, and a note says so.
**Secondary row** (:data:`REFERENCE_POOLING_STATISTIC`, test text starting "reference
pooling; confounded with per-session model fits"): the same ``T`` against site labels
permuted over the whole population (site sizes kept), on at most ``max_pooled_units`` units
(seeded subsample; its full ``n x n`` similarity matrix is built in blocks).

One-sided ``p = (1 + #{null >= obs}) / (1 + n_permutations)``; ``value`` = same-site mean,
``null_mean`` = different-site mean (as the per-session rows), ``effect_size`` = z of ``T``
against its null, ``n`` = units. All draws come from ``seed``.

Synthetic evidence (``tests/test_population_stats.py`` generator; 8 sessions x 2 sites x 6
units, P = 200, k = 2-5; 100 populations each): units with independent subspaces plus a
per-session shared component that adds +0.36 similarity within a session (the model core):
primary p < 0.05 in 3/100, the pooled row p < 0.01 in 100/100; units of a site near a
site-specific subspace (same-site excess +0.09 over same-session pairs, with the core):
primary p < 0.01 in 100/100.

Speed: per permutation only the within-session same-site sums change; all draws of a session
are one matrix product of its ``n_s x n_s`` block with the one-hot codes of the permuted
labels. 100 sessions x 60 units (P = 200, k = 2-5), 1000 permutations, one core: the
within-session null 0.3 s, everything about 3 s (of which the secondary's 3000 x 3000
similarity matrix 1.8 s; with P = 768, k = 2-10: 8 s of 11 s).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from nwb_subspace.site.groups import p_greater, stat_row, verdict_text, z_score
from nwb_subspace.site.subspace import LOCALITY_STATISTIC, pairwise_similarity

__all__ = [
    "LOCALITY_STATISTIC",
    "PAIR_TYPES",
    "REFERENCE_POOLING_STATISTIC",
    "LocalityResult",
    "PairSummary",
    "population_locality",
]

#: Name of the secondary row (permutation over the whole population).
REFERENCE_POOLING_STATISTIC = LOCALITY_STATISTIC + "_reference_pooling"
#: The three pair types, in plotting order.
PAIR_TYPES = ("same site", "different site, same session", "different session")
_MAX_GRAM_BYTES = 64 * 2**20  # per block of the pooled similarity matrix
_MAX_DRAW_ENTRIES = 4_000_000  # per chunk of permutation draws


@dataclass
class PairSummary:
    """Similarities of one pair type.

    Attributes
    ----------
    pair_type : str
        One of :data:`PAIR_TYPES`.
    n : int
        Pairs of that type in the population (all, not the sample).
    mean : float
        Mean similarity over all of them (NaN when there are none).
    null_mean : float
        Its expectation under the primary null (site labels permuted within sessions; NaN
        when the primary test was not run). Different-session pairs: equal to ``mean``.
    sample : ndarray
        Seeded random sample of at most ``max_samples`` pair similarities (for the figure);
        same-session types without replacement, different-session pairs with replacement.
    """

    pair_type: str
    n: int
    mean: float
    null_mean: float = float("nan")
    sample: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)


@dataclass
class LocalityResult:
    """Population same-site vs different-site similarity (see the module docstring).

    Attributes
    ----------
    rows : list of dict or None
        Primary row (:data:`LOCALITY_STATISTIC`, first) and secondary row
        (:data:`REFERENCE_POOLING_STATISTIC`), ``results.STATISTIC_FIELDS``; None when
        neither could be tested.
    notes : list of str
    pairs : dict of str -> PairSummary
        Keyed by pair type (:data:`PAIR_TYPES`).
    observed : float
        ``T`` (same-site minus different-site mean) over all units.
    null : ndarray or None
        ``T`` of each primary permutation (None when not run).
    observed_pooled : float
        ``T`` over the units of the secondary test (NaN when not run).
    null_pooled : ndarray or None
        ``T`` of each secondary permutation.
    n_units, n_sites, n_sessions, n_tested_sessions : int
        Units, sites and sessions used; sessions whose within-session permutation can move a
        unit between sites with a same-site pair (>= 2 sites, a site with >= 2 units).
    n_pooled_units : int
        Units of the secondary test.
    """

    rows: list[dict] | None
    notes: list[str]
    pairs: dict[str, PairSummary]
    observed: float = float("nan")
    null: np.ndarray | None = None
    observed_pooled: float = float("nan")
    null_pooled: np.ndarray | None = None
    n_units: int = 0
    n_sites: int = 0
    n_sessions: int = 0
    n_tested_sessions: int = 0
    n_pooled_units: int = 0


@dataclass
class _Session:
    """One session's units, its similarity block (zero diagonal) and site codes."""

    units: np.ndarray
    sim: np.ndarray
    site: np.ndarray
    n_sites: int

    @property
    def testable(self) -> bool:
        return self.n_sites >= 2 and np.bincount(self.site).max() >= 2


def _is_missing(x) -> bool:
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return True
    return str(x).strip().lower() in ("", "nan", "none")


def _check_int(name: str, value, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
        raise ValueError(f"{name} must be an int >= {low}; got {value!r}")


def _check_inputs(bases, sessions, sites) -> tuple[list[np.ndarray], np.ndarray, np.ndarray, list]:
    """Validated bases and labels; units without a session or site label are left out."""
    bases = list(bases)
    sessions, sites = list(sessions), list(sites)
    if not len(bases) == len(sessions) == len(sites):
        raise ValueError(
            f"bases, sessions and sites must have one entry per unit; got {len(bases)} bases, "
            f"{len(sessions)} sessions and {len(sites)} sites"
        )
    out, p = [], None
    for i, b in enumerate(bases):
        b = np.asarray(b)
        if b.ndim != 2 or b.shape[1] < 1 or not np.issubdtype(b.dtype, np.floating):
            raise ValueError(f"bases[{i}] must be a float (P, k) array with k >= 1; got {b.shape}")
        if p is None:
            p = b.shape[0]
        if b.shape[0] != p:
            raise ValueError(f"every basis needs the same P; bases[0] has {p}, bases[{i}] has "
                             f"{b.shape[0]}")  # fmt: skip
        if not np.all(np.isfinite(b)):
            raise ValueError(f"bases[{i}] holds non-finite values")
        gram = b.T.astype(np.float64) @ b.astype(np.float64)
        if not np.allclose(gram, np.eye(b.shape[1]), atol=1e-3):
            raise ValueError(f"bases[{i}] is not orthonormal (Q^T Q != I); pass each unit's PCs")
        out.append(b)
    missing = [_is_missing(a) or _is_missing(b) for a, b in zip(sessions, sites, strict=True)]
    notes = []
    if any(missing):
        notes.append(
            f"same-site vs different-site similarity: {sum(missing)} unit(s) without a session "
            "or site label left out"
        )
    keep = [i for i, m in enumerate(missing) if not m]
    return (
        [out[i] for i in keep],
        np.array([str(sessions[i]) for i in keep], dtype=object),
        # site ids unique across sessions (NUL separator: not part of real labels)
        np.array([f"{sessions[i]}\x00{sites[i]}" for i in keep], dtype=object),
        notes,
    )


def _sessions(bases: list[np.ndarray], session: np.ndarray, site_id: np.ndarray) -> list[_Session]:
    out = []
    for name in dict.fromkeys(session.tolist()):
        units = np.flatnonzero(session == name)
        sim = pairwise_similarity([np.asarray(bases[u], dtype=np.float64) for u in units])
        np.fill_diagonal(sim, 0.0)
        _, code = np.unique(site_id[units], return_inverse=True)
        out.append(_Session(units, sim, code.astype(np.int64), int(code.max()) + 1))
    return out


def _ordered_sum_all_pairs(bases: list[np.ndarray]) -> float:
    """``sum_{u, v} s(u, v)`` over all ordered pairs, ``u = v`` included (exact)."""
    ks = np.array([b.shape[1] for b in bases])
    p = bases[0].shape[0]
    g = np.zeros((p, p))
    total = 0.0
    for c in range(int(ks.max()), 0, -1):
        members = np.flatnonzero(ks == c)
        if members.size:
            h = np.hstack([np.asarray(bases[u], dtype=np.float32) for u in members])
            g += (h @ h.T).astype(np.float64)
        weight = 1.0 if c == 1 else 1.0 / c - 1.0 / (c - 1)
        total += weight * float(np.sum(g * g))
    return total


def _same_site_sums(s: _Session, codes: np.ndarray) -> np.ndarray:
    """Same-site similarity sum (unordered pairs) for each row of site codes ``(m, n_s)``."""
    m, n = codes.shape
    onehot = (codes[:, :, None] == np.arange(s.n_sites)).astype(np.float64)  # (m, n, S)
    flat = onehot.transpose(1, 0, 2).reshape(n, m * s.n_sites)
    prod = (s.sim @ flat).reshape(n, m, s.n_sites).transpose(1, 0, 2)
    return 0.5 * (onehot * prod).sum((1, 2))


def _within_null(sessions: list[_Session], n_perm: int, rng: np.random.Generator) -> np.ndarray:
    """Total same-site sum of each within-session permutation, shape (n_perm,)."""
    total = np.zeros(n_perm)
    for s in sessions:
        if not s.testable:
            total += _same_site_sums(s, s.site[None, :])[0]
            continue
        step = max(1, _MAX_DRAW_ENTRIES // (s.units.size * s.n_sites))
        for start in range(0, n_perm, step):
            m = min(step, n_perm - start)
            codes = rng.permuted(np.tile(s.site, (m, 1)), axis=1)
            total[start : start + m] += _same_site_sums(s, codes)
    return total


def _sample(values: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    if values.size <= k:
        return values.copy()
    return values[np.sort(rng.choice(values.size, k, replace=False))]


def _cross_sample(bases, session: np.ndarray, k: int, rng) -> np.ndarray:
    """Similarities of ``k`` random different-session pairs (uniform, with replacement), or
    of every such pair when there are at most ``k``."""
    n = session.size
    found: list[tuple[int, int]] = []
    n_cross = (n * n - np.square(np.unique(session, return_counts=True)[1]).sum()) // 2
    if n_cross <= k:
        i, j = np.triu_indices(n, 1)
        ok = session[i] != session[j]
        found = list(zip(i[ok].tolist(), j[ok].tolist(), strict=True))
    while n_cross > k and len(found) < k:
        u, v = rng.integers(0, n, size=(2, 2 * k))
        ok = session[u] != session[v]
        found.extend(zip(u[ok].tolist(), v[ok].tolist(), strict=True))
    out = np.empty(min(k, len(found)))
    for i, (u, v) in enumerate(found[: out.size]):
        bu, bv = (np.asarray(bases[x], dtype=np.float64) for x in (u, v))
        out[i] = np.square(bu.T @ bv).sum() / min(bu.shape[1], bv.shape[1])
    return out


def _similarity_matrix(bases: list[np.ndarray]) -> np.ndarray:
    """Pairwise similarity of all units (float32, zero diagonal), built in blocks of rows."""
    ks = np.array([b.shape[1] for b in bases])
    starts = np.r_[0, np.cumsum(ks)[:-1]]
    h = np.hstack([np.asarray(b, dtype=np.float32) for b in bases])
    n, cols = ks.size, h.shape[1]
    out = np.empty((n, n), dtype=np.float32)
    per = max(1, _MAX_GRAM_BYTES // (4 * cols * max(1, int(ks.max()))))
    for u0 in range(0, n, per):
        u1 = min(n, u0 + per)
        c0, c1 = starts[u0], starts[u1 - 1] + ks[u1 - 1]
        gram = np.square(h[:, c0:c1].T @ h)
        gram = np.add.reduceat(gram, starts, axis=1)
        out[u0:u1] = np.add.reduceat(gram, starts[u0:u1] - c0, axis=0)
    out /= np.minimum(ks[:, None], ks[None, :]).astype(np.float32)
    np.fill_diagonal(out, 0.0)
    return out


def _pooled_same_sums(sim: np.ndarray, codes: np.ndarray, n_perm: int, rng) -> np.ndarray:
    """Same-site sums (unordered) for the identity then ``n_perm`` permutations of ``codes``."""
    n = codes.size
    sizes = np.bincount(codes)
    order = np.argsort(codes, kind="stable")
    bounds = np.r_[0, np.cumsum(sizes)]
    pa, pb = [], []
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        i, j = np.triu_indices(hi - lo, 1)
        pa.append(i + lo)
        pb.append(j + lo)
    pa, pb = np.concatenate(pa), np.concatenate(pb)
    out = np.empty(n_perm + 1)
    out[0] = sim[order[pa], order[pb]].sum(dtype=np.float64)
    step = max(1, _MAX_DRAW_ENTRIES // max(1, pa.size, n))
    for start in range(0, n_perm, step):
        m = min(step, n_perm - start)
        perms = np.argsort(rng.random((m, n)), axis=1)
        out[1 + start : 1 + start + m] = sim[perms[:, pa], perms[:, pb]].sum(1, dtype=np.float64)
    return out


def _pooled_test(bases, site_id, n_perm: int, max_units: int, rng, notes: list[str]) -> tuple:
    """Secondary row: site labels permuted over the whole population (reference pooling)."""
    n = len(bases)
    use = np.arange(n)
    if n > max_units:
        use = np.sort(rng.choice(n, max_units, replace=False))
        notes.append(
            f"reference pooling row: {max_units} of {n} units (seeded random subsample) so the "
            "pairwise similarity matrix stays small"
        )
    _, codes = np.unique(site_id[use], return_inverse=True)
    sizes = np.bincount(codes)
    if sizes.size < 2 or sizes.max() < 2:
        notes.append("reference pooling row not computed: needs two sites and a site of two units")
        return None, float("nan"), None, int(use.size)
    sim = _similarity_matrix([bases[u] for u in use])
    same = _pooled_same_sums(sim, codes, n_perm, rng)
    n_same = float((sizes * (sizes - 1) // 2).sum())
    n_all = use.size * (use.size - 1) / 2.0
    total = float(sim.sum(dtype=np.float64)) / 2.0
    t = same / n_same - (total - same) / (n_all - n_same)
    obs, null = float(t[0]), t[1:]
    p = float(p_greater(obs, null))
    test = (
        f"reference pooling; confounded with per-session model fits: mean similarity of "
        f"same-site minus different-site pairs over {use.size} units at {sizes.size} sites, vs "
        f"{n_perm} permutations of the site labels over all units (site sizes kept; the null "
        "mixes pairs of separately fitted models into the same-site group, so the shared core "
        "of each session's model makes any population look local); one-sided; value: "
        "same-site mean, null_mean: different-site mean; effect: z"
    )
    row = stat_row(
        "population", REFERENCE_POOLING_STATISTIC, same[0] / n_same,
        (total - same[0]) / (n_all - n_same), p, z_score(obs, null), use.size, test,
        verdict_text(p, "units more similar within a site than across sites (pooled; "
                     "confounded with the per-session model fits)"),
    )  # fmt: skip
    return row, obs, null, int(use.size)


@dataclass
class _Counts:
    """Pair counts and similarity sums of the three pair types (unordered pairs)."""

    n_same: float
    same: float
    n_within: float
    within: float
    n_cross: float
    cross: float

    def statistic(self, same: np.ndarray | float) -> np.ndarray | float:
        diff = (self.within - same + self.cross) / (self.n_within - self.n_same + self.n_cross)
        return same / self.n_same - diff


def _counts(bases, sessions: list[_Session]) -> _Counts:
    n = sum(s.units.size for s in sessions)
    same = sum(_same_site_sums(s, s.site[None, :])[0] for s in sessions)
    n_same = sum(float((c * (c - 1) // 2).sum()) for c in (np.bincount(s.site) for s in sessions))
    within_ordered = sum(float(s.sim.sum()) for s in sessions)
    n_within = sum(s.units.size * (s.units.size - 1) / 2.0 for s in sessions)
    cross = (_ordered_sum_all_pairs(bases) - within_ordered - n) / 2.0
    n_cross = (n * n - sum(s.units.size**2 for s in sessions)) / 2.0
    return _Counts(n_same, float(same), n_within, within_ordered / 2.0, n_cross, max(cross, 0.0))


def _pair_summaries(bases, session, sessions, c: _Counts, null_same, max_samples, rng):
    same_vals, diff_vals = [], []
    for s in sessions:
        i, j = np.triu_indices(s.units.size, 1)
        same = s.site[i] == s.site[j]
        same_vals.append(s.sim[i[same], j[same]])
        diff_vals.append(s.sim[i[~same], j[~same]])

    def mean(total, n):
        return float(total / n) if n > 0 else float("nan")

    n_diff = c.n_within - c.n_same
    e_same = float(np.mean(null_same)) if null_same is not None else float("nan")
    return {
        PAIR_TYPES[0]: PairSummary(
            PAIR_TYPES[0], int(c.n_same), mean(c.same, c.n_same), mean(e_same, c.n_same),
            _sample(np.concatenate(same_vals), max_samples, rng),
        ),
        PAIR_TYPES[1]: PairSummary(
            PAIR_TYPES[1], int(n_diff), mean(c.within - c.same, n_diff),
            mean(c.within - e_same, n_diff), _sample(np.concatenate(diff_vals), max_samples, rng),
        ),
        PAIR_TYPES[2]: PairSummary(
            PAIR_TYPES[2], int(c.n_cross), mean(c.cross, c.n_cross),
            mean(c.cross, c.n_cross) if null_same is not None else float("nan"),
            _cross_sample(bases, session, max_samples, rng) if c.n_cross else np.zeros(0),
        ),
    }  # fmt: skip


def _primary_row(c: _Counts, null_same: np.ndarray, sessions: list[_Session], n_units: int):
    obs = float(c.statistic(c.same))
    null = np.asarray(c.statistic(null_same), dtype=float)
    p = float(p_greater(obs, null))
    tested = sum(s.testable for s in sessions)
    n_diff = c.n_within - c.n_same
    test = (
        f"mean subspace similarity of same-site minus different-site unit pairs (different "
        f"sites within and across sessions; every pair), vs {null.size} permutations of the "
        f"site labels within each session (site sizes kept; {tested} of {len(sessions)} "
        "sessions have two sites and a same-site pair; cross-session pairs stay different-site "
        "pairs, so separately fitted session models cannot create the effect); one-sided; "
        f"value: same-site mean ({int(c.n_same)} pairs), null_mean: different-site mean "
        f"({int(n_diff)} same-session pairs, mean {(c.within - c.same) / max(n_diff, 1):.3g}; "
        f"{int(c.n_cross)} cross-session pairs, mean {c.cross / max(c.n_cross, 1):.3g}); "
        f"effect: z; difference {obs:.3g} vs null {null.mean():.3g} +- {null.std():.3g}"
    )
    row = stat_row(
        "population", LOCALITY_STATISTIC, c.same / c.n_same,
        (c.within - c.same + c.cross) / (n_diff + c.n_cross), p, z_score(obs, null), n_units,
        test, verdict_text(p, "units more similar within a site than to units of other sites "
                           "(site labels permuted within sessions)"),
    )  # fmt: skip
    return row, obs, null


def population_locality(
    bases: Sequence[np.ndarray],
    sessions: Sequence,
    sites: Sequence,
    *,
    n_permutations: int = 1000,
    seed: int = 0,
    max_pooled_units: int = 3000,
    max_samples: int = 5000,
) -> LocalityResult:
    """Same-site vs different-site similarity of unit pairs across sessions.

    See the module docstring for the statistic, the primary null (site labels permuted within
    sessions) and why, and the secondary row (the paper's pooling).

    Parameters
    ----------
    bases : sequence of ndarray, each (P, k_u)
        Each analysed unit's orthonormal tuning-subspace basis (same ``P`` for all).
    sessions, sites : sequence, length n
        Session and site (named within its session) of each unit; units missing either are
        left out (a note counts them).
    n_permutations : int, default 1000
        Draws of each null.
    seed : int, default 0
    max_pooled_units : int, default 3000
        Units of the secondary test (a seeded subsample when there are more): its
        ``n x n`` similarity matrix costs ``(sum k_u)^2 P`` operations.
    max_samples : int, default 5000
        Pair similarities kept per pair type for the figure.

    Returns
    -------
    LocalityResult
    """
    _check_int("n_permutations", n_permutations, 1)
    _check_int("seed", seed, 0)
    _check_int("max_pooled_units", max_pooled_units, 2)
    _check_int("max_samples", max_samples, 0)
    bases, session, site_id, notes = _check_inputs(bases, sessions, sites)
    if not bases:
        notes.append("same-site vs different-site similarity not tested: no analysed unit")
        return LocalityResult(None, notes, {})
    rng = np.random.default_rng(seed)
    per = _sessions(bases, session, site_id)
    c = _counts(bases, per)
    tested = [s for s in per if s.testable]
    if c.n_within - c.n_same + c.n_cross <= 0 or c.n_same <= 0:
        why = "all units at one site" if c.n_same > 0 else "no site with two analysed units"
        notes.append(
            f"same-site vs different-site similarity not tested: {why} ({len(bases)} unit(s)); "
            "it needs same-site and different-site pairs"
        )
        return LocalityResult(None, notes, {}, n_units=len(bases), n_sessions=len(per))
    rows: list[dict] = []
    result = LocalityResult(
        None, notes, {}, n_units=len(bases), n_sites=len(set(site_id.tolist())),
        n_sessions=len(per), n_tested_sessions=len(tested),
    )  # fmt: skip
    null_same = None
    if tested:
        null_same = _within_null(per, int(n_permutations), rng)
        row, result.observed, result.null = _primary_row(c, null_same, per, len(bases))
        rows.append(row)
    else:
        if c.n_same > 0:
            result.observed = float(c.statistic(c.same))
        notes.append(
            "same-site vs different-site similarity: primary test not run; no session has two "
            "sites and a site with two analysed units, so same-site pairs (always within one "
            "session's fitted model) could only be compared with pairs of different sessions "
            "(separately fitted models): that comparison is confounded with the per-session "
            "model fits (see the reference pooling row)"
        )
    row, result.observed_pooled, result.null_pooled, result.n_pooled_units = _pooled_test(
        bases, site_id, int(n_permutations), int(max_pooled_units), rng, notes
    )
    rows.extend([row] if row is not None else [])
    result.rows = rows or None
    result.pairs = _pair_summaries(bases, session, per, c, null_same, int(max_samples), rng)
    return result
