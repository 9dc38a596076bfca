"""Local circuits: a recording site's shared dSTRF subspace, pairwise similarity and tiling.

Site subspace
-------------
Each unit's dSTRF covariance ``C_u`` (centred, ``P = F*D`` pixels, from
:func:`nwb_subspace.dstrf.compute.dstrf_moments`) is divided by its trace so every unit weighs the
same (``weighting="equal"``; ``"variance"`` keeps the raw scale, letting strongly driven units
dominate), and the site covariance is their sum. Pooling centred covariances means the site
subspace is the common span of the units' *tuning* subspaces (which are centred PCAs too);
differences between the units' mean dSTRFs are not part of it. Its principal axes
(:func:`nwb_subspace.subspace.tuning.pca_from_moments`, sign-fixed) are the site PCs; the site
dimensionality ``K`` is ``n_components`` or the smallest ``K`` reaching ``variance_threshold``
(default 0.85, within the 75-90% usual for similarity analyses). Each unit's **variance
fraction** is ``trace(V^T C_u V) / trace(C_u)`` with ``V`` the ``P x K`` site PCs.

Nulls
-----
* *Random subspaces*: ``n_null`` Haar-random ``K``-dimensional subspaces (QR of a Gaussian
  ``P x K`` matrix, sign-fixed; seeded). Per unit: the null mean and ``p = (1 + #{null >= obs})
  / (1 + n_null)``; per site the same with the mean over units.
* *Other sites* (:meth:`SiteSubspaceAnalysis.test_other_sites`): each unit's fraction in
  another site's top-``K`` PCs (mean over the other sites); one-sided Wilcoxon signed-rank of
  own minus other across units, matched-pairs rank-biserial effect size.
* *Pairwise similarity*: per unit its own top-``k_u`` PCs (``k_u`` reaches
  ``unit_variance_threshold`` of its variance, at most ``max_unit_components``); similarity =
  mean squared cosine of the principal angles (``||Q_u^T Q_v||_F^2 / min(k_u, k_v)``, as
  :func:`nwb_subspace.subspace.tuning.subspace_similarity`). Shuffle null: each draw permutes the
  ``P`` pixels of every unit's PCs with its own random permutation (orthonormality, dimension
  and the distribution of values are kept; alignment between units is destroyed); per pair and
  for the site mean, ``p = (1 + #{null >= obs}) / (1 + n_null)``.

Tiling lives in :mod:`nwb_subspace.site.tiling` (``tiling`` and ``TilingResult`` are re-exported
here). All random draws come from ``seed``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from nwb_subspace.dstrf.compute import DSTRFMoments
from nwb_subspace.results import SiteSubspaceResult, TuningSubspaces
from nwb_subspace.site.groups import null_row, p_greater, stat_row, verdict_text, wilcoxon_greater
from nwb_subspace.site.tiling import TilingResult, nan_diag, tiling
from nwb_subspace.subspace.tuning import pca_from_moments

__all__ = [
    "SiteSubspaceAnalysis",
    "TilingResult",
    "haar_subspaces",
    "pairwise_similarity",
    "tiling",
]

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
        )
        self.rows_ = [
            stat_row(site, "site_dimensionality", k, None, None, None, use.size,
                     f"smallest K reaching {self.variance_threshold:.0%} of pooled variance",
                     f"{k} of {f * d} dimensions"),
            null_row(site, "variance_fraction_mean", frac.mean(), null.mean(1), use.size,
                     f"vs {self.n_null} Haar-random {k}-dim subspaces (one-sided)",
                     "site subspace captures more unit variance than random subspaces"),
        ]  # fmt: skip
        self._similarity(rng, tuning, use)
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

    def _similarity(self, rng: np.random.Generator, tuning, use: np.ndarray) -> None:
        bases, dims = [], []
        for i, u in enumerate(use):
            if tuning is not None:
                evr = np.nan_to_num(tuning.explained_variance_ratio[u])
                vecs = tuning.components[u].reshape(evr.size, -1).T
            else:
                ev, vecs = np.linalg.eigh(self._covs[i])
                ev, vecs = ev[::-1][: self.max_unit_components], vecs[:, ::-1]
                evr = np.clip(ev, 0, None) / self._tr[i]
            cum = np.cumsum(evr[: self.max_unit_components])
            k_u = int(min(np.searchsorted(cum, self.unit_variance_threshold - 1e-12) + 1, cum.size))
            bases.append(vecs[:, :k_u])
            dims.append(k_u)
        self.unit_dimensionality_ = np.asarray(dims, dtype=np.int64)
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
                     f"mean over unit pairs vs {self.n_null} pixel shuffles (one-sided)",
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
