"""Local circuits: a recording site's shared dSTRF subspace, pairwise similarity and tiling.

Site subspace, two definitions side by side
-------------------------------------------
* **Reference** (the paper's code; :func:`reference_site_covariance`): every unit's dSTRF frames
  are divided by the unit's RMS (the standard deviation of all its frames' pixel values), all
  units' frames are pooled and the PCA is centred on the **grand mean**::

      s_u^2  = (c_u tr C_u + ||m_u - mean(m_u)||^2) / P,   a_u = m_u / s_u,   c_u = (n_u-1)/n_u
      pooled = sum_u w_u (c_u C_u / s_u^2 + a_u a_u^T) - abar abar^T,   abar = sum_u w_u a_u

  with ``w_u = n_u / sum n`` (``n_u`` frames of unit ``u``; the reference differentiates every
  unit at the same bins, so the weights are equal up to frames left out as outliers). The top
  ``REFERENCE_N_COMPONENTS`` (15) axes are the reference site PCs (``components_reference``);
  ``dimensionality_reference`` is the smallest ``k`` whose cumulative share of their variance
  exceeds 95% (:func:`nwb_subspace.subspace.tuning.dimensionality_reference`). Differences
  between the units' mean dSTRFs are part of this subspace.
  Per unit the reference's **similarity to each site PC** ``j`` is ``sum_i corr(v_j, q_i)^2``
  over the unit's own top PCs ``q_i`` (Pearson correlation over pixels;
  :func:`site_pc_similarity`, stored as ``site_pc_similarity``, the unit included as in the
  reference). **Leave-one-out** (``site_similarity_loo``): the site PCs are rebuilt without
  the unit (its frames removed from the pooled moments, the grand mean moved accordingly) and
  the similarity is ``||Q_u^T V_-u||_F^2 / min(k_u, K)`` with ``V_-u`` the top
  ``K = dimensionality_reference`` of them: the mean squared cosine of the principal angles.
* **Ours**: each unit's centred covariance ``C_u`` divided by its trace (``weighting="equal"``;
  ``"variance"`` keeps the raw scale), summed; mean dSTRFs are not part of it. Its principal
  axes (sign-fixed) are the site PCs; ``K`` is ``n_components`` or the smallest ``K`` reaching
  ``variance_threshold`` (default 0.85). A unit's **variance fraction** is
  ``trace(V^T C_u V) / trace(C_u)``; ``variance_fraction_loo`` uses the site PCs rebuilt
  without the unit (same ``K``), so a unit is not scored against a subspace it helped make.

Locality: same site vs different site
-------------------------------------
The headline test (:func:`same_site_similarity`): pairwise subspace similarity of units at the
same site against units at different sites, with a permutation null over the units' site
labels (site sizes kept). Within a file it runs across the file's sites (electrode groups,
shanks) in :class:`~nwb_subspace.site.step.SiteStep`; it takes per-unit bases and labels, so
units of several files can be pooled the same way. A file with one site cannot test it (a note
says so).

Secondary nulls (kept, but any auditory data beats them)
--------------------------------------------------------
* *Random subspaces* (row ``variance_fraction_mean``): ``n_null`` Haar-random ``K``-dimensional
  subspaces (QR of a Gaussian ``P x K`` matrix, sign-fixed; seeded). Per unit: the null mean
  and ``p = (1 + #{null >= obs}) / (1 + n_null)``; per site the same with the mean over units.
* *Other sites* (:meth:`SiteSubspaceAnalysis.test_other_sites`): each unit's fraction in
  another site's top-``K`` PCs (mean over the other sites); one-sided Wilcoxon signed-rank of
  own minus other across units, matched-pairs rank-biserial effect size.
* *Pairwise similarity* (row ``pairwise_similarity_mean``): per unit its own top-``k_u`` PCs
  (``k_u`` reaches ``unit_variance_threshold`` of its variance, at most
  ``max_unit_components``); similarity = mean squared cosine of the principal angles
  (``||Q_u^T Q_v||_F^2 / min(k_u, k_v)``). Shuffle null: each draw permutes the ``P`` pixels of
  every unit's PCs with its own random permutation; per pair and for the site mean,
  ``p = (1 + #{null >= obs}) / (1 + n_null)``.

Tiling lives in :mod:`nwb_subspace.site.tiling` (``tiling`` and ``TilingResult`` are re-exported
here). All random draws come from ``seed``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.linalg

from nwb_subspace.dstrf.compute import DSTRFMoments
from nwb_subspace.results import SiteSubspaceResult, TuningSubspaces
from nwb_subspace.site.groups import (
    null_row,
    p_greater,
    stat_row,
    verdict_text,
    wilcoxon_greater,
    z_score,
)
from nwb_subspace.site.tiling import TilingResult, nan_diag, tiling
from nwb_subspace.subspace.tuning import dimensionality_reference, pca_from_moments

__all__ = [
    "LOCALITY_STATISTIC",
    "REFERENCE_N_COMPONENTS",
    "SiteSubspaceAnalysis",
    "TilingResult",
    "haar_subspaces",
    "pairwise_similarity",
    "reference_site_covariance",
    "same_site_similarity",
    "site_pc_similarity",
    "tiling",
    "unit_basis",
]

#: Site PCs the reference keeps (its ``pc_count``), and its dimensionality rule's threshold.
REFERENCE_N_COMPONENTS = 15
REFERENCE_VARIANCE_THRESHOLD = 0.95
#: Name of the site statistics rows of the same-site vs different-site test.
LOCALITY_STATISTIC = "same_vs_different_site_similarity"

_WEIGHTINGS = ("equal", "variance")
_NULL_CHUNK = 8  # random subspaces per Frobenius-product batch


def haar_subspaces(rng: np.random.Generator, p: int, k: int, n: int) -> np.ndarray:
    """``n`` Haar-random orthonormal bases of ``k``-dim subspaces of R^p, shape (n, p, k)."""
    q, r = np.linalg.qr(rng.standard_normal((n, p, k)))
    return q * np.sign(np.diagonal(r, axis1=1, axis2=2))[:, None, :]


def pairwise_similarity(bases: list[np.ndarray]) -> np.ndarray:
    """Similarity of every pair of orthonormal bases (each ``(P, k_u)``), shape (n, n).

    ``||Q_u^T Q_v||_F^2 / min(k_u, k_v)``: the mean squared cosine of the principal angles.
    """
    ks = np.array([b.shape[1] for b in bases])
    ends = np.cumsum(ks)
    gram = np.square(np.hstack(bases).T @ np.hstack(bases))
    blocks = np.add.reduceat(np.add.reduceat(gram, ends - ks, axis=0), ends - ks, axis=1)
    return blocks / np.minimum(ks[:, None], ks[None, :])


def unit_basis(
    components: np.ndarray,
    explained_variance_ratio: np.ndarray,
    threshold: float,
    max_components: int,
) -> np.ndarray:
    """A unit's own subspace for pairwise similarity: its top ``k_u`` PCs as columns.

    ``k_u`` is the smallest ``k`` whose cumulative explained-variance ratio reaches
    ``threshold`` (``[sites] unit_variance_threshold``), counting at most ``max_components``
    PCs (``[sites] max_unit_components``); when they never reach it, ``k_u`` is the number
    counted. NaN ratios count as 0. The site step, the same-site vs different-site test and
    the population tables all use this rule.

    Parameters
    ----------
    components : ndarray, shape (K, ...)
        The unit's PCs in order, one per row (e.g. ``(K, F, D)`` from a tuning subspace
        table); trailing axes are flattened to ``P`` pixels.
    explained_variance_ratio : ndarray, shape (K,)
        Each PC's share of the unit's variance.
    threshold : float
        In (0, 1].
    max_components : int
        >= 1.

    Returns
    -------
    ndarray, shape (P, k_u)
        Columns are the unit's top ``k_u`` PCs (a view of ``components`` where possible).
    """
    evr = np.nan_to_num(np.asarray(explained_variance_ratio, dtype=float).ravel())
    comps = np.asarray(components)
    if comps.shape[0] != evr.size:
        raise ValueError(
            f"components hold {comps.shape[0]} PCs but explained_variance_ratio has {evr.size} "
            "values; give one ratio per PC"
        )
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold must be in (0, 1]; got {threshold!r}, e.g. 0.85")
    if isinstance(max_components, bool) or not int(max_components) == max_components >= 1:
        raise ValueError(f"max_components must be an int >= 1; got {max_components!r}")
    cum = np.cumsum(evr[: int(max_components)])
    k_u = int(min(np.searchsorted(cum, threshold - 1e-12) + 1, cum.size))
    return comps.reshape(evr.size, -1).T[:, :k_u]


def _pool_terms(
    mean: np.ndarray, cov: np.ndarray, count: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-unit pieces of the reference pooling: frames ``n``, ``c = (n-1)/n``, ``1/s^2``
    and the scaled means ``a = m / s`` (see :func:`reference_site_covariance`)."""
    u, p = cov.shape[0], cov.shape[1]
    m = np.asarray(mean, dtype=np.float64).reshape(u, p)
    if count is None:
        n, c = np.ones(u), np.ones(u)
    else:
        n = np.asarray(count, dtype=np.float64)
        if n.shape != (u,) or not np.all(n >= 2):
            raise ValueError(
                f"count must give >= 2 frames for each of the {u} units; got {count!r}"
            )
        c = (n - 1.0) / n
    spread = c * np.einsum("uii->u", cov) + np.square(m - m.mean(1, keepdims=True)).sum(1)
    if not np.all(np.isfinite(spread) & (spread > 0)):
        raise ValueError("every unit needs finite, non-zero dSTRF frames (RMS 0 or non-finite)")
    inv_s2 = p / spread
    return n, c, inv_s2, m * np.sqrt(inv_s2)[:, None]


def reference_site_covariance(
    mean: np.ndarray,
    cov: np.ndarray,
    count: np.ndarray | None = None,
    *,
    leave_out: int | None = None,
) -> np.ndarray:
    """The reference's pooled dSTRF covariance of a site, about the grand mean.

    Each unit's frames are divided by their RMS ``s_u`` (standard deviation of all the unit's
    frame values, about their scalar mean), then all frames are pooled and centred on the
    grand mean. From the streamed moments::

        s_u^2  = (c_u tr C_u + ||m_u - mean(m_u)||^2) / P,   c_u = (n_u - 1) / n_u
        pooled = sum_u w_u (c_u C_u / s_u^2 + a_u a_u^T) - abar abar^T
        a_u = m_u / s_u,   w_u = n_u / sum_v n_v,   abar = sum_u w_u a_u

    i.e. exactly the (population) covariance of the pooled scaled frames.

    Parameters
    ----------
    mean : ndarray, shape (n, F, D) or (n, P)
        Per-unit mean dSTRF.
    cov : ndarray, shape (n, P, P)
        Per-unit centred covariance (divided by ``n_u - 1``).
    count : ndarray of int, shape (n,), optional
        Frames per unit; None: the same number for every unit (the reference differentiates
        every unit at the same bins) and ``c_u = 1``.
    leave_out : int, optional
        Pool every unit but this one (its frames removed, the grand mean moved).

    Returns
    -------
    ndarray, shape (P, P)
    """
    cov = np.asarray(cov, dtype=np.float64)
    if cov.ndim != 3 or cov.shape[1] != cov.shape[2]:
        raise ValueError(f"cov must be (n_units, P, P); got shape {cov.shape}")
    n, c, inv_s2, a = _pool_terms(mean, cov, count)
    w = n.copy()
    if leave_out is not None:
        if not 0 <= int(leave_out) < w.size:
            raise ValueError(f"leave_out must be a unit index in 0..{w.size - 1}; got {leave_out}")
        if w.size < 2:
            raise ValueError("leave_out needs at least two units")
        w[int(leave_out)] = 0.0
    w = w / w.sum()
    abar = w @ a
    return np.einsum("u,uij->ij", w * c * inv_s2, cov) + (a.T * w) @ a - np.outer(abar, abar)


def _top_axes(covariance: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top ``k`` principal axes (rows, sign-fixed so each sums positive) and variances."""
    p = covariance.shape[0]
    k = min(k, p)
    ev, vecs = scipy.linalg.eigh(covariance, subset_by_index=[p - k, p - 1])
    comps = vecs[:, ::-1].T
    signs = np.where(comps.sum(1) < 0, -1.0, 1.0)
    return comps * signs[:, None], np.clip(ev[::-1], 0.0, None)


def site_pc_similarity(components: np.ndarray, bases: list[np.ndarray]) -> np.ndarray:
    """The reference's similarity of each unit to each site PC, shape (n_units, n_pcs).

    ``sim[u, j] = sum_i corr(v_j, q_ui)^2``: squared Pearson correlations (over pixels) of
    site PC ``v_j`` with the unit's own PCs ``q_ui`` (the columns of ``bases[u]``), summed.
    For zero-mean vectors this is the squared norm of ``v_j`` projected on the unit's
    subspace.

    Parameters
    ----------
    components : ndarray, shape (R, P) or (R, F, D)
        Site PCs.
    bases : list of ndarray, each (P, k_u)
        Each unit's own top PCs as columns.
    """
    v = np.asarray(components, dtype=np.float64)
    v = v.reshape(v.shape[0], -1)

    def unit_rows(x: np.ndarray) -> np.ndarray:
        x = x - x.mean(1, keepdims=True)
        norm = np.linalg.norm(x, axis=1, keepdims=True)
        return np.divide(x, norm, out=np.zeros_like(x), where=norm > 0)

    vc = unit_rows(v)
    out = np.empty((len(bases), v.shape[0]))
    for u, b in enumerate(bases):
        b = np.asarray(b, dtype=np.float64)
        if b.ndim != 2 or b.shape[0] != v.shape[1]:
            raise ValueError(f"bases[{u}] must be (P={v.shape[1]}, k); got shape {b.shape}")
        out[u] = np.square(unit_rows(b.T) @ vc.T).sum(0)
    return out


def same_site_similarity(
    bases: list[np.ndarray],
    labels,
    *,
    n_permutations: int = 1000,
    seed: int = 0,
    name: str = "all sites",
) -> tuple[list[dict] | None, list[str]]:
    """Same-site vs different-site pairs of units: the locality test.

    Similarity of two units = mean squared cosine of the principal angles between their
    subspaces (:func:`pairwise_similarity`). Per site ``s`` with at least two units:
    ``d_s`` = mean over same-site pairs (both units in ``s``) minus mean over different-site
    pairs (one unit in ``s``, one elsewhere); overall (``name``): mean over all same-site
    pairs minus mean over all different-site pairs. Null: ``n_permutations`` random
    permutations of the units' site labels (site sizes kept; seeded); one-sided
    ``p = (1 + #{null >= obs}) / (1 + n_permutations)``. A site of one unit has no same-site
    pair (no row of its own) but its unit counts in the different-site pairs.

    Parameters
    ----------
    bases : list of ndarray, each (P, k_u)
        Each unit's own orthonormal top PCs as columns (same ``P`` for all).
    labels : sequence of str, length n
        Site of each unit (e.g. electrode group; across files, file and group).
    n_permutations : int, default 1000
    seed : int, default 0
    name : str, default "all sites"
        ``site`` of the overall row.

    Returns
    -------
    rows : list of dict or None
        :data:`LOCALITY_STATISTIC` rows (``results.STATISTIC_FIELDS``): ``value`` = mean
        same-site similarity, ``null_mean`` = mean different-site similarity, ``effect_size``
        = z of the difference against its permutation null, ``n`` = units. None when fewer
        than two sites, or no site with two units.
    notes : list of str
    """
    labels = np.asarray(labels, dtype=object).astype(str)
    if labels.shape != (len(bases),):
        raise ValueError(f"labels must give the site of each of the {len(bases)} units")
    if (
        isinstance(n_permutations, bool)
        or not isinstance(n_permutations, int | np.integer)
        or (n_permutations < 1)
    ):
        raise ValueError(
            f"n_permutations must be a positive int; got {n_permutations!r}, e.g. 1000"
        )
    sites = list(dict.fromkeys(labels.tolist()))
    sizes = np.array([(labels == s).sum() for s in sites])
    if len(sites) < 2 or sizes.max() < 2:
        why = "one site" if len(sites) < 2 else "no site with two units"
        return None, [
            f"same-site vs different-site similarity not tested: {why} "
            f"({len(bases)} unit(s)); it needs units of two sites or more"
        ]
    sim = pairwise_similarity(bases)
    np.fill_diagonal(sim, 0.0)
    onehot = (labels[:, None] == np.array(sites)[None, :]).astype(np.float64)
    obs = _locality_stats(sim, onehot, sizes)
    rng = np.random.default_rng(seed)
    null = np.stack([_locality_stats(sim, onehot[rng.permutation(labels.size)], sizes)
                     for _ in range(int(n_permutations))])  # fmt: skip
    test = (
        f"mean subspace similarity of same-site minus different-site unit pairs vs "
        f"{n_permutations} permutations of the site labels (one-sided); value: same-site mean, "
        "null_mean: different-site mean; effect: z"
    )
    rows = []
    for j, (site, size) in enumerate([(name, labels.size), *zip(sites, sizes, strict=True)]):
        if j > 0 and size < 2:
            continue
        same, diff = obs[0, j], obs[1, j]
        d, d_null = same - diff, null[:, 0, j] - null[:, 1, j]
        p = float(p_greater(d, d_null))
        claim = "units more similar within the site than to units of other sites"
        rows.append(stat_row(site, LOCALITY_STATISTIC, same, diff, p, z_score(d, d_null), size,
                             test, verdict_text(p, claim)))  # fmt: skip
    notes = [
        f"{s}: one unit; no same-site pair" for s, k in zip(sites, sizes, strict=True) if k < 2
    ]
    return rows, notes


def _locality_stats(sim: np.ndarray, onehot: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Same-site and different-site mean similarity, overall then per site, shape (2, 1 + S).

    ``sim`` has a zero diagonal; ``onehot`` (n, S) gives each unit's site."""
    n = sim.shape[0]
    by_site = sim @ onehot  # (n, S): unit's summed similarity to each site
    within = (onehot * by_site).sum(0)  # ordered same-site pairs per site
    to_all = onehot.T @ sim.sum(1)  # ordered pairs from the site's units to anyone
    between = to_all - within
    with np.errstate(invalid="ignore", divide="ignore"):
        same_s = within / (sizes * (sizes - 1))
        diff_s = between / (sizes * (n - sizes))
    pairs_same = (sizes * (sizes - 1)).sum()
    same = within.sum() / pairs_same
    diff = (sim.sum() - within.sum()) / (n * (n - 1) - pairs_same)
    return np.stack([np.r_[same, same_s], np.r_[diff, diff_s]])


@dataclass
class SiteSubspaceAnalysis:
    """A site's pooled dSTRF subspace, unit variance fractions and pairwise similarity.

    Parameters
    ----------
    n_components : int or None, default None
        Site dimensionality ``K``; None picks it from ``variance_threshold``.
    variance_threshold : float, default 0.85
        Cumulative explained-variance ratio of the pooled covariance that sets ``K``.
    unit_variance_threshold : float, default 0.85
        Sets each unit's own dimensionality for pairwise similarity.
    max_unit_components : int, default 20
    weighting : {"equal", "variance"}, default "equal"
        Pool trace-normalised (equal) or raw per-unit covariances.
    n_null : int, default 200
        Draws of each null (random subspaces, pixel shuffles).
    min_units : int, default 2
        Fewer usable units than this: no site result (``notes_`` says why).
    seed : int, default 0

    Attributes
    ----------
    result_ : SiteSubspaceResult or None
    rows_ : list of dict
        Site-level statistics rows (``results.STATISTIC_FIELDS``).
    unit_rows_ : ndarray of int
        Units analysed (passing the quality cut).
    excluded_ : dict of int -> str
        Unit row -> why it was left out.
    unit_capture_ : ndarray, shape (n, n_stored)
        Fraction of each unit's variance in the top ``j + 1`` site PCs (for comparisons).
    unit_dimensionality_ : ndarray of int, shape (n,)
    similarity_, similarity_null_mean_, similarity_p_ : ndarray, shape (n, n)
        Pairwise similarity, its shuffle-null mean and one-sided p-value (diagonal NaN).
    bases_ : list of ndarray, each (P, k_u)
        Each analysed unit's own top PCs (what the similarities and the same-site vs
        different-site test use).
    notes_ : list of str
    """

    n_components: int | None = None
    variance_threshold: float = 0.85
    unit_variance_threshold: float = 0.85
    max_unit_components: int = 20
    weighting: str = "equal"
    n_null: int = 200
    min_units: int = 2
    seed: int = 0
    result_: SiteSubspaceResult | None = field(default=None, init=False, repr=False)
    rows_: list[dict] = field(default_factory=list, init=False, repr=False)
    notes_: list[str] = field(default_factory=list, init=False, repr=False)

    def _validate(self) -> None:
        for name in ("variance_threshold", "unit_variance_threshold"):
            v = getattr(self, name)
            if not 0 < v <= 1:
                raise ValueError(f"{name} must be in (0, 1]; got {v!r}, e.g. 0.85")
        ints = {"max_unit_components": 1, "n_null": 1, "min_units": 2, "seed": 0}
        if self.n_components is not None:
            ints["n_components"] = 1
        for name, low in ints.items():
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < low:
                raise ValueError(f"{name} must be an int >= {low}; got {v!r}")
        if self.weighting not in _WEIGHTINGS:
            raise ValueError(f"weighting must be one of {_WEIGHTINGS}; got {self.weighting!r}")

    # long: the site fit's seeded draws (null, similarity) share one generator in a fixed order
    def fit(
        self,
        moments: DSTRFMoments | tuple[np.ndarray, np.ndarray],
        *,
        site: str,
        frequencies: np.ndarray,
        bin_s: float,
        unit_rows: np.ndarray | None = None,
        keep: np.ndarray | None = None,
        tuning: TuningSubspaces | None = None,
        other_sites: list[SiteSubspaceResult] | None = None,
    ) -> SiteSubspaceAnalysis:
        """Fit the site subspace and run the nulls; returns ``self``.

        Parameters
        ----------
        moments : DSTRFMoments or (mean, covariance)
            Per-unit mean ``(n, F, D)`` and centred covariance ``(n, F*D, F*D)``.
        site : str
            Site name (e.g. the electrode group of the probe insertion).
        frequencies : ndarray, shape (F,)
        bin_s : float
            Bin width in seconds (for ``lags_s``, model lag order as in ``tuning``).
        unit_rows : ndarray of int, optional
            Units-table row of each unit (default ``moments.units``, else ``0..n-1``).
        keep : ndarray of bool, shape (n,), optional
            Quality cut (e.g. model score above its noise floor); False units are left out.
        tuning : TuningSubspaces, optional
            Per-unit PCs (same units and order); saves one eigendecomposition per unit.
        other_sites : list of SiteSubspaceResult, optional
            Runs :meth:`test_other_sites` with them.
        """
        self._validate()
        mean, cov, rows = _unpack(moments, unit_rows)
        count = np.asarray(moments.count) if isinstance(moments, DSTRFMoments) else None
        n, f, d = mean.shape
        frequencies = np.asarray(frequencies, dtype=float)
        if frequencies.shape != (f,):
            raise ValueError(f"frequencies must have shape ({f},); got {frequencies.shape}")
        if not bin_s > 0:
            raise ValueError(f"bin_s must be > 0 seconds; got {bin_s!r}")
        keep = np.ones(n, bool) if keep is None else np.asarray(keep, dtype=bool)
        if keep.shape != (n,):
            raise ValueError(f"keep must be a boolean mask of shape ({n},); got {keep.shape}")
        traces = np.einsum("uii->u", cov)
        self.excluded_, use = {}, []
        for u in range(n):
            if not keep[u]:
                self.excluded_[int(rows[u])] = "fails the quality cut"
            elif not (np.isfinite(traces[u]) and traces[u] > 1e-24):
                self.excluded_[int(rows[u])] = "flat or non-finite dSTRF covariance"
            else:
                use.append(u)
        use = np.asarray(use, dtype=np.int64)
        self.unit_rows_, self.result_, self.rows_ = rows[use], None, []
        self.notes_ = [f"unit {r} left out: {why}" for r, why in self.excluded_.items()]
        if use.size < self.min_units:
            self.notes_.insert(
                0,
                f"site {site!r}: {use.size} of {n} units pass the quality cut; a site subspace "
                f"needs at least {self.min_units}; nothing to write",
            )
            return self
        if use.size < 4:
            self.notes_.insert(0, f"site {site!r}: only {use.size} units; little power")
        covs = cov if use.size == n else cov[use]  # a copy only when units are left out
        self._site, self._covs, self._tr = site, covs, traces[use]
        w = 1.0 / self._tr if self.weighting == "equal" else np.ones(use.size)
        pooled = np.einsum("u,uij->ij", w, covs)
        k_max = min(f * d, max(40, self.n_components or 0))
        comps, ev = pca_from_moments(pooled, k_max)
        evr = ev / np.trace(pooled)
        if self.n_components is None:
            k = int(np.searchsorted(np.cumsum(evr), self.variance_threshold - 1e-12) + 1)
        else:
            k = int(self.n_components)
        k = min(k, k_max)
        self.components_ = comps[:k]
        # cumulative capture of each unit by the top j site PCs (j = 1..k_max)
        per_pc = np.einsum("uik,ik->uk", covs @ comps.T, comps.T)
        self.unit_capture_ = np.cumsum(per_pc, axis=1) / self._tr[:, None]
        frac = self.unit_capture_[:, k - 1]
        self._unit_bases(tuning, use)
        loo_fraction = self._own_loo(pooled, w, comps[:k])
        reference = self._reference(mean[use], count if count is None else count[use], f, d)
        rng = np.random.default_rng(self.seed)
        null = self._random_null(rng, f * d, k)
        self.result_ = SiteSubspaceResult(
            site=str(site),
            components=comps[:k].reshape(k, f, d),
            explained_variance_ratio=evr[:k],
            dimensionality=k,
            frequencies=frequencies,
            lags_s=(d - 1 - np.arange(d)) * float(bin_s),
            unit_rows=self.unit_rows_,
            variance_fraction=frac,
            null_mean=null.mean(0),
            p_value=p_greater(frac, null),
            variance_fraction_loo=loo_fraction,
            **reference,
        )
        k_ref = reference["dimensionality_reference"]
        self.rows_ = [
            stat_row(site, "site_dimensionality", k, None, None, None, use.size,
                     f"ours: smallest K reaching {self.variance_threshold:.0%} of the pooled "
                     "trace-normalised unit covariances", f"{k} of {f * d} dimensions"),
            stat_row(site, "site_dimensionality_reference", k_ref, None, None, None, use.size,
                     "reference: PCA of all units' RMS-scaled frames about the grand mean; "
                     f"smallest k above {REFERENCE_VARIANCE_THRESHOLD:.0%} of the top "
                     f"{REFERENCE_N_COMPONENTS} PCs' variance", f"{k_ref} of {f * d} dimensions"),
            stat_row(site, "site_similarity_loo_mean",
                     np.mean(reference["site_similarity_loo"]), None, None, None, use.size,
                     f"mean over units of the similarity of each unit's subspace to the top "
                     f"{k_ref} reference site PCs rebuilt without it (no null; the locality test "
                     f"is {LOCALITY_STATISTIC})", "descriptive"),
            null_row(site, "variance_fraction_mean", frac.mean(), null.mean(1), use.size,
                     f"secondary null (any auditory data beats it): vs {self.n_null} Haar-random "
                     f"{k}-dim subspaces (one-sided)",
                     "site subspace captures more unit variance than random subspaces"),
        ]  # fmt: skip
        self._similarity(rng)
        if other_sites:
            self.test_other_sites(other_sites)
        return self

    def _random_null(self, rng: np.random.Generator, p: int, k: int) -> np.ndarray:
        """Variance fractions of every unit in ``n_null`` random subspaces, shape (n_null, n)."""
        flat = self._covs.reshape(self._covs.shape[0], -1)
        out = np.empty((self.n_null, flat.shape[0]))
        for start in range(0, self.n_null, _NULL_CHUNK):
            q = haar_subspaces(rng, p, k, min(_NULL_CHUNK, self.n_null - start))
            proj = (q @ q.transpose(0, 2, 1)).reshape(q.shape[0], -1)
            out[start : start + q.shape[0]] = (flat @ proj.T).T / self._tr
        return out

    def _own_loo(self, pooled: np.ndarray, w: np.ndarray, comps: np.ndarray) -> np.ndarray:
        """Each unit's variance fraction in our site subspace rebuilt without it (same K)."""
        k = comps.shape[0]
        out = np.empty(self._covs.shape[0])
        for i, c in enumerate(self._covs):
            if out.size < 2:
                out[i] = np.nan
                continue
            v, _ = _top_axes(pooled - w[i] * c, k)
            out[i] = np.einsum("ki,ij,kj->", v, c, v) / self._tr[i]
        return out

    def _reference(self, mean: np.ndarray, count, f: int, d: int) -> dict:
        """The reference site PCs, its dimensionality, and each unit's similarity to them:
        per PC with the unit included (as the reference), and leave-one-out."""
        n, c, inv_s2, a = _pool_terms(mean, self._covs, count)
        pooled = reference_site_covariance(mean, self._covs, count)
        r = min(REFERENCE_N_COMPONENTS, f * d)
        comps, ev = _top_axes(pooled, r)
        k_ref = max(1, dimensionality_reference(ev, r, REFERENCE_VARIANCE_THRESHOLD))
        # leave-one-out: remove the unit's frames from the pooled sums, move the grand mean
        total, m_sum = n.sum(), n @ a
        second = pooled + np.outer(m_sum, m_sum) / total**2  # sum_u w_u (c_u B_u + a_u a_u^T)
        loo = np.full(n.size, np.nan)
        for i, b in enumerate(self.bases_):
            if n.size < 2:
                break
            own = c[i] * inv_s2[i] * self._covs[i] + np.outer(a[i], a[i])
            rest = total - n[i]
            m_rest = (m_sum - n[i] * a[i]) / rest
            cov_i = (second * total - n[i] * own) / rest - np.outer(m_rest, m_rest)
            v, _ = _top_axes(cov_i, k_ref)
            loo[i] = np.square(b.T @ v.T).sum() / min(b.shape[1], k_ref)
        return {
            "components_reference": comps.reshape(r, f, d),
            "explained_variance_ratio_reference": ev / np.trace(pooled),
            "dimensionality_reference": int(k_ref),
            "site_pc_similarity": site_pc_similarity(comps, self.bases_),
            "site_similarity_loo": loo,
        }

    def _unit_bases(self, tuning, use: np.ndarray) -> None:
        """Each unit's own top PCs (``bases_``) and their number."""
        bases, dims = [], []
        for i, u in enumerate(use):
            if tuning is not None:
                comps, evr = tuning.components[u], tuning.explained_variance_ratio[u]
            else:
                ev, vecs = np.linalg.eigh(self._covs[i])
                ev = ev[::-1][: self.max_unit_components]
                comps = vecs[:, ::-1][:, : ev.size].T
                evr = np.clip(ev, 0, None) / self._tr[i]
            basis = unit_basis(comps, evr, self.unit_variance_threshold, self.max_unit_components)
            bases.append(basis)
            dims.append(basis.shape[1])
        self.unit_dimensionality_ = np.asarray(dims, dtype=np.int64)
        self.bases_ = bases

    def _similarity(self, rng: np.random.Generator) -> None:
        bases = self.bases_
        sim = pairwise_similarity(bases)
        null = np.empty((self.n_null, *sim.shape), dtype=np.float32)
        p = bases[0].shape[0]
        b32 = [b.astype(np.float32) for b in bases]
        for i in range(self.n_null):
            null[i] = pairwise_similarity([b[rng.permutation(p)] for b in b32])
        iu = np.triu_indices(sim.shape[0], 1)
        obs, null_site = sim[iu].mean(), null[:, iu[0], iu[1]].mean(1)
        self.similarity_ = nan_diag(sim)
        self.similarity_null_mean_ = nan_diag(null.mean(0).astype(float))
        self.similarity_p_ = nan_diag(p_greater(sim, null))
        self.rows_.append(
            null_row(self._site, "pairwise_similarity_mean", obs, null_site, iu[0].size,
                     f"secondary null (any auditory data beats it): mean over unit pairs vs "
                     f"{self.n_null} pixel shuffles (one-sided)",
                     "unit subspaces more similar than pixel-shuffled ones")
        )  # fmt: skip

    def test_other_sites(self, other_sites: list[SiteSubspaceResult]) -> dict | None:
        """Each unit's fraction in its own site subspace vs in other sites' (same ``K``).

        Appends a row to ``rows_`` and returns it (None when nothing was fitted or no other
        site has the same pixel grid).
        """
        if self.result_ is None:
            return None
        k, p = self.result_.dimensionality, self.components_.shape[1]
        others = []
        for o in other_sites:
            oc = np.asarray(o.components).reshape(len(o.components), -1)
            if oc.shape[1] == p and o.site != self.result_.site:
                others.append(oc[: min(k, oc.shape[0])])
        if not others:
            self.notes_.append("no other site with the same pixel grid; other-site null skipped")
            return None
        other = np.mean(
            [np.einsum("uik,ik->u", self._covs @ v.T, v.T) / self._tr for v in others],
            axis=0,
        )
        own = self.result_.variance_fraction
        p_val, effect = wilcoxon_greater(own - other)
        row = stat_row(
            self.result_.site,
            "variance_fraction_vs_other_sites",
            own.mean(),
            other.mean(),
            p_val,
            effect,
            own.size,
            f"Wilcoxon signed-rank, own vs {len(others)} other site(s) (one-sided); "
            "effect: matched-pairs rank-biserial",
            verdict_text(p_val, "units captured better by their own site subspace than by others'"),
        )
        self.rows_.append(row)
        return row


def _unpack(moments, unit_rows) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if isinstance(moments, DSTRFMoments):
        mean, cov, default = moments.mean, moments.covariance, moments.units
    elif isinstance(moments, tuple | list) and len(moments) == 2:
        mean, cov = (np.asarray(a, dtype=np.float64) for a in moments)
        default = np.arange(mean.shape[0])
    else:
        raise TypeError(
            f"moments must be a DSTRFMoments or a (mean, covariance) pair; got "
            f"{type(moments).__name__}"
        )
    if mean.ndim != 3:
        raise ValueError(f"mean dSTRFs must be (n_units, F, D); got shape {mean.shape}")
    n, f, d = mean.shape
    if cov.shape != (n, f * d, f * d):
        raise ValueError(
            f"covariance must be (n_units, F*D, F*D) = ({n}, {f * d}, {f * d}); got {cov.shape}"
        )
    rows = np.asarray(default if unit_rows is None else unit_rows)
    if rows.shape != (n,) or not np.issubdtype(rows.dtype, np.integer):
        raise ValueError(f"unit_rows must be {n} integer unit rows; got {rows!r}")
    return mean, cov, rows.astype(np.int64)
