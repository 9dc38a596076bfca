"""Tuning subspaces: per-unit PCA of dSTRFs, dimensionality and a pixel-shuffle noise floor.

PCA runs on the streamed covariance of :func:`nwb_subspace.dstrf.compute.dstrf_moments` (centred, with
outlier and non-finite frames already left out), so no frame matrix is ever formed.

Noise floor
-----------
The reference shuffles each pixel of the ``frames x pixels`` dSTRF matrix independently over
time and runs PCA again; the explained-variance ratios of that shuffled PCA are the floor. A
pixel-wise shuffle keeps every pixel's variance ``v_i`` and makes the pixels independent, so
the shuffled sample covariance is distributed (for many frames) as a Wishart matrix
``W(diag(v), n - 1) / (n - 1)`` (exactly so for Gaussian pixels; by universality of sample
covariance spectra otherwise). We draw ``n_shuffles`` such matrices by the Bartlett
decomposition (``O((F*D)^3)``, independent of the number of frames) and average their
sorted eigenvalue ratios: the same floor as the reference in expectation, from the streamed
moments alone.

Dimensionality
--------------
Ours (``dimensionality``, used downstream): the smallest ``k`` whose cumulative
explained-variance ratio, a share of the **total** variance over all ``F*D`` pixels,
reaches ``variance_threshold`` (default 0.95), capped by the number of leading components
whose ratio exceeds the noise floor and by ``n_components``. When the dSTRFs are the
average over several model fits (:func:`nwb_subspace.dstrf.compute.dstrf_moments` with an
ensemble), the cumulative ratio is that of the variance the fits **agree on**: along each
principal axis the fit-to-fit error variance (from the moments' ``noise_covariance``) is
subtracted first (a cross-validated PCA), so directions in which only the fits' noise
varies do not inflate the dimensionality.

The reference's (``dimensionality_reference``, :func:`dimensionality_reference`, stored so
results compare with the paper): with ``lambda_1 >= lambda_2 >= ...`` the raw eigenvalues
of the dSTRF covariance (no noise subtraction, no floor) and ``n = reference_n_components``
(default 15), the smallest ``k`` with
``sum_{i<=k} lambda_i / sum_{i<=n} lambda_i > reference_variance_threshold`` (default 0.95;
a strict inequality, as the reference code has it). The share is of the top ``n``
eigenvalues only, so the rule cannot exceed ``n`` and reads a slowly decaying spectrum as
lower-dimensional than ours: eigenvalues ``i^-1.5`` give 11 with the reference rule and
101 of 768 pixels (capped at 20) with ours.

A unit with a flat (all-zero) dSTRF, or fewer than 2 kept frames, gets dimensionality 0, NaN
ratios and a note in ``status``.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch

from nwb_subspace.dstrf.compute import DSTRFMoments
from nwb_subspace.results import TuningSubspaces

__all__ = [
    "TuningSubspaceEstimator",
    "dimensionality_reference",
    "jackknife_subspaces",
    "noise_floor",
    "pca_from_moments",
    "subspace_similarity",
]


@contextmanager
def _one_thread() -> Iterator[None]:
    """Run LAPACK on one thread: per-unit eigendecompositions of <= ~1000 x 1000 matrices
    gain little from threads and slow down by 10-100x when the cores are shared."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _eigh(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    with _one_thread():
        w, v = torch.linalg.eigh(torch.from_numpy(np.ascontiguousarray(a, dtype=np.float64)))
    return w.numpy(), v.numpy()


def _eigvalsh(a: np.ndarray) -> np.ndarray:
    with _one_thread():
        return torch.linalg.eigvalsh(torch.from_numpy(np.ascontiguousarray(a))).numpy()


def noise_floor(
    variances: np.ndarray, n_frames: int, n_components: int, *, n_shuffles: int = 5, seed: int = 0
) -> np.ndarray:
    """Explained-variance ratios of PCA on pixel-shuffled frames (expected, see module notes).

    Parameters
    ----------
    variances : ndarray, shape (P,)
        Per-pixel variance of the dSTRFs.
    n_frames : int
        Frames that entered the covariance.
    n_components : int
        Ratios returned (largest first).
    n_shuffles : int, default 5
        Independent shuffles averaged (:class:`TuningSubspaceEstimator` passes its own
        ``n_shuffles``, default 1).
    seed : int, default 0

    Returns
    -------
    ndarray, shape (n_components,)
    """
    v = np.clip(np.asarray(variances, dtype=np.float64), 0.0, None)
    total = v.sum()
    if total <= 0 or n_frames < 2:
        return np.full(n_components, np.nan)
    keep = v > total * 1e-12
    vs = v[keep]
    p = vs.size
    dof = n_frames - 1
    rng = np.random.default_rng(seed)
    sq = np.sqrt(vs)
    ratios = np.zeros(p)
    for _ in range(n_shuffles):
        # Bartlett: W(I, dof) = A A^T with A lower triangular
        a = np.tril(rng.standard_normal((p, p)), -1)
        a[np.diag_indices(p)] = np.sqrt(rng.chisquare(np.maximum(dof - np.arange(p), 1)))
        m = sq[:, None] * a
        ev = _eigvalsh(m @ m.T / dof)[::-1]
        ratios += np.clip(ev, 0, None) / max(ev.sum(), 1e-300)
    ratios /= n_shuffles
    out = np.zeros(n_components)
    n = min(n_components, p)
    out[:n] = ratios[:n]
    return out


def pca_from_moments(covariance: np.ndarray, n_components: int) -> tuple[np.ndarray, np.ndarray]:
    """Top principal axes of a covariance, sign-fixed so each sums positive.

    Returns
    -------
    components : ndarray, shape (n_components, P)
        Unit-norm rows.
    eigenvalues : ndarray, shape (n_components,)
        Variance along each (clipped at 0).
    """
    evals, evecs = _eigh(covariance)
    order = np.argsort(evals)[::-1][:n_components]
    comps = evecs[:, order].T
    signs = np.where(comps.sum(1) < 0, -1.0, 1.0)
    return comps * signs[:, None], np.clip(evals[order], 0.0, None)


def dimensionality_reference(
    eigenvalues: np.ndarray, n_components: int = 15, threshold: float = 0.95
) -> int:
    """The reference's dimensionality: the smallest ``k`` whose cumulative share of the top
    ``n_components`` eigenvalues exceeds ``threshold``.

    Parameters
    ----------
    eigenvalues : ndarray, shape (m,)
        Variances along the principal axes (any order; negatives from rounding count as 0).
    n_components : int, default 15
        Eigenvalues whose sum is the denominator (all of them when fewer are given).
    threshold : float, default 0.95
        In (0, 1); the cumulative share must be strictly above it.

    Returns
    -------
    int
        In ``1..min(n_components, m)``; 0 when the eigenvalues sum to 0 (a flat dSTRF).
    """
    if isinstance(n_components, bool) or not isinstance(n_components, int | np.integer):
        raise TypeError(f"n_components must be an int; got {n_components!r}, e.g. 15")
    if n_components < 1:
        raise ValueError(f"n_components must be >= 1; got {n_components}, e.g. 15")
    if not 0 < threshold < 1:
        raise ValueError(f"threshold must be in (0, 1); got {threshold!r}, e.g. 0.95")
    ev = np.sort(np.clip(np.asarray(eigenvalues, dtype=np.float64).ravel(), 0.0, None))[::-1]
    if not np.isfinite(ev).all():
        raise ValueError("eigenvalues must be finite")
    top = ev[:n_components]
    total = top.sum()
    if not total > 0:
        return 0
    above = np.cumsum(top) / total > threshold
    return int(np.argmax(above) + 1) if above.any() else int(top.size)


def _agreed_variance_ratio(
    components: np.ndarray, eigenvalues: np.ndarray, noise: np.ndarray
) -> np.ndarray:
    """Cumulative share of the variance the fits agree on, along each principal axis.

    Along axis ``v_i`` the averaged dSTRFs vary by ``lambda_i``, of which ``v_i^T N v_i`` is
    fit-to-fit error (``N`` = noise covariance); the rest, clipped at 0, is variance the fits
    share. Returns its cumulative sum over the axes (all of them given, strongest first)
    divided by its total; NaN where nothing is shared (below 1e-9 of the variance).
    """
    err = np.einsum("ip,pq,iq->i", components, noise, components)
    agreed = np.clip(eigenvalues - err, 0.0, None)
    total = agreed.sum()
    if not total > 1e-9 * eigenvalues.sum():  # rounding, not shared variance
        return np.full(agreed.size, np.nan)
    return np.cumsum(agreed) / total


def subspace_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Mean squared cosine of the principal angles between the spans of ``a`` and ``b``.

    Parameters
    ----------
    a, b : ndarray, shape (k_a, ...) and (k_b, ...)
        Vectors (flattened over the trailing axes) spanning each subspace.

    Returns
    -------
    float
        In [0, 1]; 1 when the smaller span lies inside the larger.
    """
    qa, _ = np.linalg.qr(np.asarray(a, dtype=np.float64).reshape(len(a), -1).T)
    qb, _ = np.linalg.qr(np.asarray(b, dtype=np.float64).reshape(len(b), -1).T)
    s = np.linalg.svd(qa.T @ qb, compute_uv=False)
    return float(np.mean(np.clip(s, 0, 1) ** 2))


@dataclass
class TuningSubspaceEstimator:
    """Per-unit PCA of dSTRF moments (scikit-learn style; keyword-only settings).

    Follows the package's estimator contract: constructor arguments stored unchanged,
    :meth:`fit` returns ``self`` and sets the learned attributes (ending in ``_``), and
    :meth:`to_result` returns the stored :class:`~nwb_subspace.results.TuningSubspaces`.
    There is no ``predict`` or ``score``: a PCA of dSTRFs has no held-out target (the
    subspace model, :class:`~nwb_subspace.subspace.model.SubspaceModelEstimator`, scores
    the subspaces).

    Parameters
    ----------
    n_components : int, default 20
        Components kept per unit (15-25 in the reference); capped by the frames.
    variance_threshold : float, default 0.95
        Cumulative explained-variance ratio that sets the dimensionality.
    n_shuffles : int, default 1
        Shuffles averaged in the noise floor.
    seed : int, default 0
    reference_n_components : int, default 15
        Eigenvalues the reference dimensionality rule shares the variance out over.
    reference_variance_threshold : float, default 0.95
        Cumulative share the reference rule must exceed, in (0, 1).

    Attributes
    ----------
    components_ : ndarray, shape (n_units, n_components, F, D)
        Each unit's principal components (zero rows past what the unit supports).
    explained_variance_ratio_ : ndarray, shape (n_units, n_components)
    noise_floor_ : ndarray, shape (n_units, n_components)
        Explained-variance ratios of pixel-shuffled dSTRFs (:func:`noise_floor`).
    dimensionality_ : ndarray of int, shape (n_units,)
        Ours (module notes): used downstream.
    dimensionality_reference_ : ndarray of int, shape (n_units,)
        The reference's rule (:func:`dimensionality_reference` on the raw eigenvalues of
        each unit's dSTRF covariance); 0 where there is no PCA.
    n_outlier_frames_ : ndarray of int, shape (n_units,)
        Frames each unit lost as outliers (from the moments).
    status_ : list of str
        One entry per unit: "ok", or what was handled (flat dSTRF, too few frames, ...).
    notes_ : list of str
        Notes carried from the moments (outliers, non-finite frames).
    """

    n_components: int = 20
    variance_threshold: float = 0.95
    n_shuffles: int = 1
    seed: int = 0
    reference_n_components: int = 15
    reference_variance_threshold: float = 0.95
    status_: list[str] = field(default_factory=list, init=False, repr=False)
    notes_: list[str] = field(default_factory=list, init=False, repr=False)
    _result: TuningSubspaces | None = field(default=None, init=False, repr=False)

    def _unit_pca(self, moments: DSTRFMoments, u: int, k_keep: int):  # long: one unit's PCA
        """PCA of unit ``u``'s dSTRFs: ``(status, k_u, components, variance ratios, noise
        floor, dimensionality, reference dimensionality)``; ``k_u = 0`` (and a status saying
        why) when there is none."""
        cov = moments.covariance[u]
        count = int(moments.count[u])
        total = float(np.trace(cov)) if np.isfinite(cov).all() else np.nan
        if count < 2:
            return f"too few frames ({count}); no PCA", 0, None, None, None, 0, 0
        if not np.isfinite(total):
            return "non-finite covariance; no PCA", 0, None, None, None, 0, 0
        if total <= 1e-24:
            flat = not np.abs(moments.mean[u]).max() > 0
            status = (
                "flat dSTRF (all zero); dimensionality 0"
                if flat
                else "constant dSTRF (zero variance; a linear unit); dimensionality 0"
            )
            return status, 0, None, None, None, 0, 0
        p = cov.shape[0]
        k_u = min(k_keep, count - 1)
        n_ref = min(self.reference_n_components, p)
        noise = None if moments.noise_covariance is None else moments.noise_covariance[u]
        c, ev = pca_from_moments(cov, p if noise is not None else max(k_u, n_ref))
        dim_ref = dimensionality_reference(
            ev[:n_ref], self.reference_n_components, self.reference_variance_threshold
        )
        evr = ev[:k_u] / total
        floor = noise_floor(
            np.diag(cov), count, k_keep, n_shuffles=self.n_shuffles, seed=self.seed + u
        )
        problems = []
        if noise is None:
            cum = np.cumsum(evr)
        else:
            cum = _agreed_variance_ratio(c, ev, noise)[:k_u]
            if not np.isfinite(cum).all():
                problems.append(
                    f"no dSTRF variance beyond the fit-to-fit noise of "
                    f"{moments.n_models} fits; dimensionality 0"
                )
                cum = np.zeros(k_u)
        k95 = int(np.searchsorted(cum, self.variance_threshold - 1e-12) + 1)
        above = evr > floor[:k_u]
        n_above = int(np.argmin(above)) if not above.all() else k_u
        dim = 0 if problems else max(min(k95, n_above, k_u), 0)
        if k_u < k_keep:
            problems.append(f"only {count} frames: {k_u} of {k_keep} components")
        if k95 > k_u:
            problems.append(
                f"{self.variance_threshold:.0%} of the dSTRF variance not reached within "
                f"{k_u} components (dimensionality capped at {dim})"
            )
        return "; ".join(problems) or "ok", k_u, c, evr, floor, dim, dim_ref

    def to_result(self) -> TuningSubspaces:
        """The fitted tuning subspaces, as stored (``ResultSet.subspaces``).

        Returns
        -------
        TuningSubspaces

        Raises
        ------
        RuntimeError
            Before :meth:`fit`.
        """
        if self._result is None:
            raise RuntimeError("call fit() before to_result()")
        return self._result

    @property
    def result_(self) -> TuningSubspaces | None:
        """Deprecated: the fitted :class:`~nwb_subspace.results.TuningSubspaces`; use
        :meth:`to_result`."""
        warnings.warn(
            "TuningSubspaceEstimator.result_ is deprecated; use to_result()",
            DeprecationWarning,
            stacklevel=2,
        )
        return self._result

    def _validate(self) -> None:
        k = self.n_components
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
            raise ValueError(f"n_components must be a positive int; got {k!r}, e.g. 20")
        if not 0 < self.variance_threshold <= 1:
            raise ValueError(
                f"variance_threshold must be in (0, 1]; got {self.variance_threshold!r}, e.g. 0.95"
            )
        if isinstance(self.n_shuffles, bool) or not isinstance(self.n_shuffles, int):
            raise TypeError(f"n_shuffles must be an int; got {self.n_shuffles!r}")
        k = self.reference_n_components
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
            raise ValueError(f"reference_n_components must be a positive int; got {k!r}, e.g. 15")
        if not 0 < self.reference_variance_threshold < 1:
            raise ValueError(
                "reference_variance_threshold must be in (0, 1); got "
                f"{self.reference_variance_threshold!r}, e.g. 0.95"
            )

    def fit(
        self,
        moments: DSTRFMoments,
        *,
        frequencies: np.ndarray,
        bin_s: float,
        unit_rows: np.ndarray | None = None,
    ) -> TuningSubspaceEstimator:
        """Run PCA per unit; returns ``self``, fitted (see :meth:`to_result`).

        Parameters
        ----------
        moments : DSTRFMoments
        frequencies : ndarray, shape (F,)
            Spectrogram channel centre frequencies (Hz).
        bin_s : float
            Bin width in seconds (for ``lags_s``).
        unit_rows : ndarray of int, optional
            Units-table row of each unit (default ``moments.units``).

        Returns
        -------
        TuningSubspaceEstimator
            ``self``, fitted.
        """
        self._validate()
        if not isinstance(moments, DSTRFMoments):
            raise TypeError(f"moments must be a DSTRFMoments; got {type(moments).__name__}")
        frequencies = np.asarray(frequencies, dtype=float)
        if frequencies.shape != (moments.n_frequencies,):
            raise ValueError(
                f"frequencies must have shape ({moments.n_frequencies},); got {frequencies.shape}"
            )
        if not bin_s > 0:
            raise ValueError(f"bin_s must be > 0 seconds; got {bin_s!r}")
        n, f, d = moments.units.size, moments.n_frequencies, moments.n_lags
        p = f * d
        k_keep = min(int(self.n_components), p)
        comps = np.zeros((n, k_keep, f, d))
        evr = np.full((n, k_keep), np.nan)
        floor = np.full((n, k_keep), np.nan)
        dim = np.zeros(n, dtype=np.int64)
        dim_ref = np.zeros(n, dtype=np.int64)
        self.status_ = []
        for u in range(n):
            status, k_u, c_u, evr_u, floor_u, dim[u], dim_ref[u] = self._unit_pca(
                moments, u, k_keep
            )
            self.status_.append(status)
            if k_u:
                comps[u, :k_u] = c_u[:k_u].reshape(k_u, f, d)
                evr[u, :k_u] = evr_u[:k_u]
            if floor_u is not None:
                floor[u] = floor_u
        self.notes_ = list(moments.notes)
        rows = moments.units if unit_rows is None else np.asarray(unit_rows)
        self.components_, self.explained_variance_ratio_ = comps, evr
        self.noise_floor_, self.dimensionality_ = floor, dim
        self.dimensionality_reference_ = dim_ref
        self.n_outlier_frames_ = np.asarray(moments.n_outliers, dtype=np.int64)
        self._result = TuningSubspaces(
            unit_rows=rows,
            components=comps,
            explained_variance_ratio=evr,
            dimensionality=dim,
            mean_dstrf=moments.mean,
            n_frames=moments.count.astype(np.int64),
            noise_floor=floor,
            frequencies=frequencies,
            lags_s=(d - 1 - np.arange(d)) * float(bin_s),
            variance_threshold=float(self.variance_threshold),
            dimensionality_reference=dim_ref,
            n_outlier_frames=self.n_outlier_frames_,
            reference_n_components=int(self.reference_n_components),
            reference_variance_threshold=float(self.reference_variance_threshold),
        )
        return self


def jackknife_subspaces(results: list[TuningSubspaces]) -> np.ndarray:
    """Per-unit stability across jackknife model fits: mean pairwise subspace similarity.

    Parameters
    ----------
    results : list of TuningSubspaces
        One per model fit, same units in the same order.

    Returns
    -------
    ndarray, shape (n_units,)
        Mean over fit pairs of :func:`subspace_similarity` between the top-``k`` PCs (``k`` =
        median dimensionality over fits, at least 1); NaN with fewer than two fits.
    """
    if len(results) < 2:
        return np.full(results[0].unit_rows.size if results else 0, np.nan)
    n = results[0].unit_rows.size
    out = np.full(n, np.nan)
    for u in range(n):
        k = max(1, int(np.median([r.dimensionality[u] for r in results])))
        sims = [
            subspace_similarity(a.components[u, :k], b.components[u, :k])
            for i, a in enumerate(results)
            for b in results[i + 1 :]
        ]
        out[u] = float(np.mean(sims))
    return out
