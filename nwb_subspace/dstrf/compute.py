"""Exact dSTRFs (Jacobians of predicted rates) at every bin, with streaming moments.

The dSTRF of unit ``u`` at bin ``t`` is ``d rate_u(t) / d X[t-D+1 .. t, :]``, an ``(F, D)``
array in the **model lag order** (index ``j`` of the lag axis multiplies bin ``t-D+1+j``; the
last index is the current bin). It is exact: computed from the model itself, not by finite
differences or a linearised surrogate.

How it is computed
------------------
A causal model's output at ``t`` depends only on ``X[t-M+1 .. t]`` (``M = model.memory``),
so each bin of a chunk becomes one window of ``L = max(M, D)`` bins (zeros before the
recording, as the model itself pads) and the model runs once on the whole window batch,
keeping the last output bin. Then either

* **gated** (default for :class:`~nwb_subspace.models.PopulationCNN` and
  :class:`~nwb_subspace.models.PopulationLN`): the exact gated-linear map of the ReLU
  network, composed with a few large GEMMs over all (bin, unit) pairs from the gates of one
  forward pass (:mod:`nwb_subspace.dstrf.gated`); or
* **reverse mode** (``N_sel <= F*D``): one vector-Jacobian product per unit, all units at
  once through ``torch.autograd.grad(..., is_grads_batched=True)`` (a ``vmap`` over the
  cotangents), batched over the windows; or
* **forward mode** (``N_sel > F*D``): one Jacobian-vector product per input pixel
  (``torch.func.jvp`` under ``vmap`` over a chunk of one-hot tangents).

``mode="auto"`` picks the gated map when the model has one, else the autograd mode with
fewer passes, ``min(units, F*D)`` (any causal module, e.g. the subspace model or a truth
model).

Streaming moments
-----------------
:func:`dstrf_moments` never holds a ``units x time x F x D`` array. Pass 1 accumulates, per
unit, the count, the sum, the sum of squared norms, the largest deviation from a provisional
centre, and the shifted second moment ``sum (J - c)(J - c)^T`` (``c`` = the mean of the
first chunk, for numerical stability): chunk products in float32 (BLAS), accumulated in
float64. Non-finite Jacobian frames are dropped and counted.

Outlier frames are then removed in a second pass, against the mean dSTRF ``m`` of pass 1
(every finite frame; it is not recomputed while frames are removed):

* ``outlier_rule="reference"`` (the paper's rule): frame ``J`` is an outlier
  when the spread of ``J - m`` over the pixels exceeds ``outlier_threshold`` times the
  spread of ``m`` over the pixels, ``std_p(J - m) > threshold * std_p(m)`` (``std_p``: the
  population standard deviation over the ``F*D`` pixels, each array centred on its own
  pixel mean). A unit whose mean dSTRF is flat (``std_p(m) = 0``) has no outliers.
* ``outlier_rule="rms"`` (the default): ``||J - m|| > threshold * sqrt(mean_t ||J_t - m||^2)``,
  the deviation against the frames' RMS deviation. By Chebyshev's inequality it drops at
  most ``1 / threshold^2`` of the frames (4% at 5), usually far fewer. The reference rule
  drops the frames with the largest dSTRFs (8% of a unit's frames on the simulated
  ``paper`` session, up to half for bowl-shaped units) and recovered the dimensionality
  less often there (docs/methods.md, section 6).

Pass 1 keeps each frame's distance from the provisional centre, ``||J - c||``, which bounds
its distance from the mean (``||J - m|| <= ||J - c|| + ||m - c||``). The second pass
differentiates again only the frames whose bound reaches the limit (a few percent of the
bins), for the units that have such frames, and subtracts the outliers among them in
float64 (accumulated apart around the same centres). A unit with a frame beyond 100x its
median frame's distance is instead accumulated afresh from its kept frames, so that the
float32 rounding of pass 1's sums of such huge frames is not left behind. Memory is
``O(units * (F*D)^2 + chunk * units * L * F)`` whatever the recording length; bound it with
``unit_batch`` (units are processed in groups, one pass over time per group).

Frames
------
Every bin passed in ``bins`` is one frame. A repeated presentation of a sound (with the
same context within the model memory) gives the same dSTRFs as its first presentation, so
callers pass each stimulus bin once (the pipeline: the first presentation of each distinct
sound, :meth:`nwb_subspace.io.session.SessionData.frame_bins`); passing the repeats too
weights those sounds by their repeat count.

Ensembles
---------
Both functions also take a sequence of fits of one architecture (e.g. every initialisation
of the CNN): the dSTRF at a bin is then the mean of the fits' exact Jacobians, which is the
exact Jacobian of the fits' mean prediction. Errors of the fits' gradients that differ from
fit to fit average out. :func:`dstrf_moments` then also accumulates the covariance of the
scaled difference between the two halves of the fits (``noise_covariance``), an estimate of
the averaged dSTRF's remaining fit-to-fit error, which the tuning step subtracts before it
sets the dimensionality.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

from nwb_subspace.denormals import flushed_denormals
from nwb_subspace.dstrf.accumulate import MomentAccumulator
from nwb_subspace.dstrf.jacobian import (
    bins_per_chunk,
    check_lags,
    check_stimulus,
    check_units,
    choose_mode,
    ensemble_jacobian,
    ensemble_members,
    jacobian_windows,
    model_device,
    stimulus_windows,
)
from nwb_subspace.progress import progress_bar

__all__ = ["DSTRFMoments", "compute_dstrf", "dstrf_moments", "jacobian_windows"]


@flushed_denormals()
def compute_dstrf(
    model: nn.Module | Sequence[nn.Module],
    X: np.ndarray | Tensor,
    bins: np.ndarray,
    *,
    units=None,
    n_lags: int | None = None,
    mode: str = "auto",
    chunk_size: int | None = None,
) -> np.ndarray:
    """Raw dSTRFs at chosen bins (for plots, checks and small data).

    Parameters
    ----------
    model : EncodingModel or sequence of EncodingModel
        One model, or an ensemble (its mean dSTRF; see :func:`dstrf_moments`).
    X : ndarray, shape (n_bins, F)
        Spectrogram.
    bins : array of int
        Bins ``t`` at which to differentiate.
    units : array of int, optional
        Output units (default all).
    n_lags : int, optional
        D, default ``model.memory``.
    mode : {"auto", "gated", "reverse", "forward"}
        See :func:`jacobian_windows`.
    chunk_size : int, optional
        Bins per batch.

    Returns
    -------
    ndarray of float32, shape (len(bins), N_sel, F, D)
    """
    members = ensemble_members(model)
    model = members[0]
    Xt = check_stimulus(model, X).to(model_device(model))
    units = check_units(model, units)
    d = check_lags(model, n_lags)
    bins = np.atleast_1d(np.asarray(bins))
    if bins.size and (not np.issubdtype(bins.dtype, np.integer) or bins.min() < 0):
        raise ValueError(f"bins must be non-negative integer bin indices; got {bins[:5]}")
    if bins.size and bins.max() >= Xt.shape[0]:
        raise ValueError(f"bins reach {bins.max()} but X has only {Xt.shape[0]} bins")
    length = max(int(model.memory), d)
    chosen = choose_mode(mode, units.size, Xt.shape[1] * d, model)
    step = bins_per_chunk(model, chosen, units.size, length, d, chunk_size)
    out = np.empty((bins.size, units.size, Xt.shape[1], d), np.float32)
    was_training = [m.training for m in members]
    for m in members:
        m.eval()
    try:
        for s in range(0, bins.size, step):
            b = torch.as_tensor(bins[s : s + step], dtype=torch.long, device=Xt.device)
            jac, _ = ensemble_jacobian(members, stimulus_windows(Xt, b, length), units, d, chosen)
            jac = jac.view(units.size, b.numel(), d, Xt.shape[1])  # lag major
            out[s : s + b.numel()] = jac.permute(1, 0, 3, 2).cpu().numpy()
    finally:
        for m, flag in zip(members, was_training, strict=True):
            m.train(flag)
    return out


@dataclass
class DSTRFMoments:
    """Per-unit streaming statistics of dSTRFs (everything PCA needs; no per-frame arrays).

    Attributes
    ----------
    units : ndarray of int, shape (n,)
        Model output index of each row.
    n_frequencies, n_lags : int
        F and D; pixels are flattened as ``f * D + j`` (C order of ``(F, D)``).
    count : ndarray of int, shape (n,)
        Frames kept (finite, not outliers).
    n_total : ndarray of int, shape (n,)
        Frames differentiated.
    n_outliers, n_nonfinite : ndarray of int, shape (n,)
        Frames left out as outliers / for NaN or inf entries.
    mean : ndarray of float64, shape (n, F, D)
        Mean dSTRF of the kept frames.
    covariance : ndarray of float64, shape (n, F*D, F*D)
        Centred covariance of the kept frames (divided by ``count - 1``).
    spread : ndarray of float64, shape (n,)
        RMS deviation ``sqrt(mean ||J - mean||^2)`` over the finite frames (pass 1).
    outlier_threshold : float
    outlier_rule : {"reference", "rms"}
        Which outlier rule removed the ``n_outliers`` frames (see the module notes).
    mean_spread : ndarray of float64, shape (n,) or None
        Spread over the pixels of the pass-1 mean dSTRF, ``std_p(m)`` (population standard
        deviation): the scale of the reference outlier rule.
    mode : str
        "gated", "reverse" or "forward".
    frames : ndarray of float32, shape (n_keep, n, F, D) or None
        Raw dSTRFs at ``frame_bins`` (``keep_frames``).
    frame_bins : ndarray of int or None
    notes : list of str
        What was handled (outliers, non-finite frames, passes).
    timings : dict of str to float
        Seconds spent computing Jacobians (``jacobian_s``), accumulating moments
        (``accumulate_s``) and removing outliers (``outlier_pass_s``, Jacobians excluded).
    n_models : int
        Model fits whose Jacobians were averaged (1 for a single model).
    noise_covariance : ndarray of float64, shape (n, F*D, F*D) or None
        With two or more fits: the covariance of the averaged dSTRF's fit-to-fit error,
        estimated from the difference of the two halves of the fits (see
        :func:`dstrf_moments`); what the tuning step subtracts to find the variance that
        the fits agree on. None for a single model.
    """

    units: np.ndarray
    n_frequencies: int
    n_lags: int
    count: np.ndarray
    n_total: np.ndarray
    n_outliers: np.ndarray
    n_nonfinite: np.ndarray
    mean: np.ndarray
    covariance: np.ndarray
    spread: np.ndarray
    outlier_threshold: float
    mode: str
    frames: np.ndarray | None = None
    frame_bins: np.ndarray | None = None
    notes: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    n_models: int = 1
    noise_covariance: np.ndarray | None = None
    outlier_rule: str = "rms"
    mean_spread: np.ndarray | None = None


#: Values of ``outlier_rule`` (:func:`dstrf_moments`; the module notes define them).
OUTLIER_RULES = ("reference", "rms")


@flushed_denormals()
def dstrf_moments(  # long: the numpy docstring is half of it; the steps are helpers
    model: nn.Module | Sequence[nn.Module],
    X: np.ndarray | Tensor,
    *,
    bins: np.ndarray | None = None,
    units=None,
    n_lags: int | None = None,
    mode: str = "auto",
    outlier_threshold: float | None = 5.0,
    outlier_rule: str = "rms",
    keep_frames: np.ndarray | None = None,
    chunk_size: int | None = None,
    unit_batch: int | None = None,
) -> DSTRFMoments:
    """Streaming per-unit mean and covariance of the exact dSTRFs at every requested bin.

    Parameters
    ----------
    model : EncodingModel or sequence of EncodingModel
        Fitted model (used in eval mode; its weights are not changed), or an **ensemble**:
        several fits of one architecture to the same data (e.g. every initialisation, or
        jackknife fits). An ensemble's dSTRF at a bin is the mean of its members' exact
        Jacobians, i.e. the exact Jacobian of the ensemble's mean prediction; with two or
        more members ``noise_covariance`` is filled too (the fits are split into halves A
        (even) and B (odd) and the covariance of their scaled difference estimates the
        fit-to-fit error of the mean).
    X : ndarray, shape (n_bins, F)
        Spectrogram of the whole recording (context before each bin is real stimulus).
    bins : ndarray, optional
        Boolean mask (n_bins,) or integer indices of the bins whose dSTRFs count (each
        bin once; repeated indices count once); default every bin.
    units : array of int, optional
        Output units (default all).
    n_lags : int, optional
        D, default ``model.memory`` (the whole memory).
    mode : {"auto", "gated", "reverse", "forward"}
        ``"auto"``: the gated-linear map for a PopulationCNN / PopulationLN, else reverse
        if ``units <= F*D`` and forward otherwise.
    outlier_threshold : float or None, default 5.0
        Frames further from the mean dSTRF than this many times the rule's scale are left
        out; ``None`` keeps all finite frames.
    outlier_rule : {"reference", "rms"}, default "reference"
        ``"reference"``: ``std_p(J - m) > threshold * std_p(m)`` (spreads over the pixels;
        the paper's rule); ``"rms"``: ``||J - m|| > threshold * sqrt(mean ||J - m||^2)``.
        ``m`` is the mean of every finite frame (pass 1); see the module notes.
    keep_frames : array of int, optional
        Bins whose raw dSTRFs are returned in ``frames`` (for plotting).
    chunk_size : int, optional
        Bins per batch (default sized for a ~64 MB gradient buffer).
    unit_batch : int, optional
        Units per group (default: all units when their ``(F*D)^2`` float64 moments, two
        sets for an ensemble, fit in 1 GiB, else groups that do).

    Returns
    -------
    DSTRFMoments
    """
    members = ensemble_members(model)
    model = members[0]
    Xt = check_stimulus(model, X).to(model_device(model))
    units = check_units(model, units)
    d = check_lags(model, n_lags)
    n_bins, n_freq = Xt.shape
    idx = _selected_bins(bins, n_bins)
    if outlier_threshold is not None and not outlier_threshold > 0:
        raise ValueError(f"outlier_threshold must be > 0 or None; got {outlier_threshold!r}")
    if outlier_rule not in OUTLIER_RULES:
        raise ValueError(f"outlier_rule must be one of {OUTLIER_RULES}; got {outlier_rule!r}")
    p = n_freq * d
    unit_batch = _unit_batch(unit_batch, p, len(members))
    length = max(int(model.memory), d)
    chosen = choose_mode(mode, min(units.size, unit_batch), p, model)
    timings = {"jacobian_s": 0.0, "accumulate_s": 0.0, "outlier_pass_s": 0.0}
    results, frames = _moments_in_eval_mode(
        members,
        Xt,
        idx,
        units,
        unit_batch,
        d,
        length,
        chosen,
        chunk_size,
        (outlier_threshold, outlier_rule),
        keep_frames,
        timings,
    )
    # one unit group (the usual case): its arrays as they are (a copy of the float64
    # covariances, 280 MB at 60 units, took ~0.8 s on a 2-core VM, mostly page faults)
    cat = {k: results[0][k] if len(results) == 1 else np.concatenate([r[k] for r in results])
           for k in results[0]}  # fmt: skip
    n_out, n_nf = cat["n_outliers"], cat["n_nonfinite"]
    notes = _dropped_frame_notes(units, n_out, n_nf, cat["n_total"], outlier_rule)
    flat = (cat["mean_spread"] == 0) & (cat["n_total"] > cat["n_nonfinite"])
    if outlier_threshold is not None and outlier_rule == "reference" and flat.any():
        notes.append(
            f"units {units[flat].tolist()}: flat mean dSTRF, so the reference outlier rule "
            "(relative to its spread) removed no frames"
        )
    return DSTRFMoments(
        units=units,
        n_frequencies=n_freq,
        n_lags=d,
        count=cat["count"],
        n_total=cat["n_total"],
        n_outliers=n_out,
        n_nonfinite=n_nf,
        mean=cat["mean"].reshape(units.size, n_freq, d),
        covariance=cat["covariance"],
        spread=cat["spread"],
        outlier_threshold=math.inf if outlier_threshold is None else float(outlier_threshold),
        outlier_rule=outlier_rule,
        mean_spread=cat["mean_spread"],
        mode=chosen,
        frames=frames,
        frame_bins=None if keep_frames is None else np.asarray(keep_frames, dtype=np.int64),
        notes=notes,
        timings=timings,
        n_models=len(members),
        noise_covariance=cat.get("noise_covariance"),
    )


def _moments_in_eval_mode(
    members: list[nn.Module],
    Xt: Tensor,
    idx: np.ndarray,
    units: np.ndarray,
    unit_batch: int,
    d: int,
    length: int,
    mode: str,
    chunk_size: int | None,
    outlier: tuple[float | None, str],
    keep_frames: np.ndarray | None,
    timings: dict[str, float],
) -> tuple[list[dict[str, np.ndarray]], np.ndarray | None]:
    """Each unit group's moments, and the raw frames kept, with every member in eval mode
    (each member's training flag is restored afterwards); ``outlier`` is the threshold
    (None: none) and the rule."""
    was_training = [m.training for m in members]
    for m in members:
        m.eval()
    try:
        results = []
        for g0 in range(0, units.size, unit_batch):
            group = units[g0 : g0 + unit_batch]
            n_work = 64 if mode == "forward" else group.size
            step = bins_per_chunk(members[0], mode, n_work, length, d, chunk_size)
            results.append(
                _group_moments(members, Xt, idx, group, d, length, mode, step, outlier, timings)
            )
        frames = None
        if keep_frames is not None:
            kf = np.asarray(keep_frames, dtype=np.int64)
            frames = compute_dstrf(members, Xt, kf, units=units, n_lags=d, mode=mode)
    finally:
        for m, flag in zip(members, was_training, strict=True):
            m.train(flag)
    return results, frames


def _selected_bins(bins: np.ndarray | None, n_bins: int) -> np.ndarray:
    """Sorted indices of the bins whose dSTRFs count (a mask or indices; None: every bin)."""
    if bins is None:
        idx = np.arange(n_bins)
    else:
        b = np.asarray(bins)
        if b.dtype == bool:
            if b.shape != (n_bins,):
                raise ValueError(f"bins mask must have shape ({n_bins},); got {b.shape}")
            idx = np.flatnonzero(b)
        elif np.issubdtype(b.dtype, np.integer) and b.ndim == 1:
            idx = np.unique(b)
            if idx.size and (idx[0] < 0 or idx[-1] >= n_bins):
                raise ValueError(f"bins must be in [0, {n_bins}); got {idx[0]}..{idx[-1]}")
        else:
            raise TypeError(f"bins must be a boolean mask or integer indices; got {b.dtype}")
    if idx.size == 0:
        raise ValueError("no bins selected; pass bins=None for every bin or a non-empty mask")
    return idx


def _unit_batch(unit_batch: int | None, p: int, n_members: int) -> int:
    """Units per group: as given, or as many as keep their float64 moments within 1 GiB."""
    if unit_batch is None:
        n_acc = 2 if n_members > 1 else 1  # an ensemble also accumulates its error
        return max(1, int(2**30 // (8 * p * p * n_acc)))
    if isinstance(unit_batch, bool) or not isinstance(unit_batch, int) or unit_batch < 1:
        raise ValueError(f"unit_batch must be a positive int; got {unit_batch!r}")
    return unit_batch


def _dropped_frame_notes(
    units: np.ndarray, n_out: np.ndarray, n_nf: np.ndarray, n_total: np.ndarray, rule: str
) -> list[str]:
    """What was left out of the moments, in words (nothing: no notes)."""
    notes: list[str] = []
    if n_nf.any():
        notes.append(
            f"non-finite Jacobian frames dropped for units {units[n_nf > 0].tolist()} "
            f"(counts {n_nf[n_nf > 0].tolist()})"
        )
    if n_out.any():
        share = n_out / np.maximum(n_total, 1)
        worst = int(np.argmax(share))
        notes.append(
            f"{int(n_out.sum())} outlier frames left out over {int((n_out > 0).sum())} units "
            f"({rule} rule; at most {share[worst]:.1%} of a unit's frames, unit {units[worst]})"
        )
    return notes


def _group_moments(
    members: list[nn.Module],
    Xt: Tensor,
    idx: np.ndarray,
    group: np.ndarray,
    d: int,
    length: int,
    mode: str,
    step: int,
    outlier: tuple[float | None, str],
    timings: dict[str, float],
) -> dict[str, np.ndarray]:
    """One unit group's moments: pass 1 over every bin, then the outlier pass."""
    n_freq = Xt.shape[1]
    p = n_freq * d
    acc = MomentAccumulator(group.size, p, device=Xt.device)
    noise = MomentAccumulator(group.size, p, device=Xt.device) if len(members) > 1 else None

    def jac_at(positions: np.ndarray, units: np.ndarray) -> tuple[Tensor, Tensor | None]:
        t0 = time.perf_counter()
        b = torch.as_tensor(idx[positions], dtype=torch.long, device=Xt.device)
        jac, diff = ensemble_jacobian(members, stimulus_windows(Xt, b, length), units, d, mode)
        timings["jacobian_s"] += time.perf_counter() - t0
        return jac, diff

    # each frame's ||J - centre|` from pass 1 bounds its distance from the mean (pass 2)
    norms = torch.zeros(group.size, idx.size, dtype=torch.float32, device=Xt.device)
    desc = f"dSTRFs of {group.size} unit(s)"
    with torch.no_grad(), progress_bar(idx.size, desc, unit="bin") as bar:
        for s in range(0, idx.size, step):
            jac, diff = jac_at(np.arange(s, min(s + step, idx.size)), group)
            t0 = time.perf_counter()
            norms[:, s : s + jac.shape[1]] = acc.add(jac, consume=True)
            if noise is not None:
                noise.add(diff, consume=True)
            timings["accumulate_s"] += time.perf_counter() - t0
            bar.update(jac.shape[1])
    mean = acc.mean()
    spread = acc.rms_deviation()
    mean_spread = mean.std(dim=1, unbiased=False)
    n_outliers = torch.zeros(group.size, dtype=torch.long, device=Xt.device)
    threshold, rule = outlier
    if threshold is not None:
        t_pass2 = time.perf_counter()
        j_before = timings["jacobian_s"]
        with torch.no_grad():
            _remove_outliers(
                (acc, noise), (mean, spread, mean_spread), (threshold, rule), norms, step,
                lambda positions, sub: jac_at(positions, group[sub]), n_outliers,
            )  # fmt: skip
        timings["outlier_pass_s"] += (
            time.perf_counter() - t_pass2 - (timings["jacobian_s"] - j_before)
        )
    t0 = time.perf_counter()
    order = pixel_order(n_freq, d, Xt.device)  # lag major (j * F + f) -> f * D + j
    cov = acc.covariance(order)
    out = {
        "count": acc.count.round().long(),
        "n_total": acc.total,
        "n_outliers": n_outliers,
        "n_nonfinite": acc.nonfinite,
        "mean": acc.mean()[:, order],
        "covariance": cov,
        "spread": spread,
        "mean_spread": mean_spread,
    }
    if noise is not None:
        out["noise_covariance"] = noise.covariance(order)
    timings["accumulate_s"] += time.perf_counter() - t0
    return {key: value.cpu().numpy() for key, value in out.items()}


def pixel_order(n_freq: int, n_lags: int, device: torch.device | str = "cpu") -> Tensor:
    """Indices that turn lag-major pixels (``j * F + f``, how the Jacobians are computed)
    into the frequency-major order of the results (``f * D + j``)."""
    lag_major = torch.arange(n_lags * n_freq, device=device).view(n_lags, n_freq)
    return lag_major.T.reshape(-1)


def _remove_outliers(
    accumulators: tuple[MomentAccumulator, MomentAccumulator | None],
    pass1: tuple[Tensor, Tensor, Tensor],
    outlier: tuple[float, str],
    norms: Tensor,
    step: int,
    jac_at,
    n_outliers: Tensor,
) -> None:
    """Pass 2: the moments of ``acc`` and ``noise`` without the outlier frames (module notes).

    ``pass1`` is the mean, RMS deviation and pixel spread of the mean of pass 1; ``norms``
    (units, frames) each frame's ``||J - c||`` from pass 1, so ``||J - m|| <= ||J - c|| +
    ||m - c||`` bounds every frame's deviation from the mean (``std_p(J - m) <= ||J - m|| /
    sqrt(P)``). Only the frames whose bound reaches the limit are differentiated again
    (``jac_at(frame_positions, unit_indices)``), for the units that have such frames; the
    outliers among them are accumulated apart (around the same centres) and subtracted in
    float64. A unit with a frame beyond 100x its median frame's distance (where the float32
    rounding of pass 1's sums would no longer be negligible) is accumulated afresh from its
    kept frames instead. ``n_outliers`` is incremented in place.
    """
    acc, noise = accumulators
    mean, spread, mean_spread = pass1
    threshold, rule = outlier
    p = mean.shape[1]
    shift = (mean - acc.centre.double()).norm(dim=1)
    bound = (norms.double() + shift[:, None]) * (1 + 1e-4)  # >= ||J - m|| (float rounding)
    if rule == "reference":
        limit, bound, scale = threshold * mean_spread, bound / math.sqrt(p), mean_spread
    else:
        limit, scale = threshold * spread, spread
    candidate = (bound > limit[:, None]) & (scale > 0)[:, None]  # (units, frames)
    suspect = np.flatnonzero(candidate.any(1).cpu().numpy())
    if not suspect.size:
        return
    # frames far beyond the typical one (the median; the RMS itself grows with them) would
    # leave pass 1's float32 rounding of their products behind if subtracted
    typical = norms.median(dim=1).values.double() + shift
    extreme = (norms.max(1).values.double() > 100 * typical).cpu().numpy()
    fresh, subtract = suspect[extreme[suspect]], suspect[~extreme[suspect]]
    if subtract.size:
        _subtract_outliers(
            accumulators, mean, limit, rule, candidate, subtract, step, jac_at, n_outliers
        )
    if fresh.size:
        _accumulate_kept(accumulators, mean, limit, rule, norms.shape[1], fresh, step, jac_at,
                         n_outliers)  # fmt: skip


def _outlier_stat(jac: Tensor, centre: Tensor, rule: str) -> Tensor:
    """Each frame's distance from the mean under ``rule`` (float32 deviations)."""
    dev = jac - centre[:, None, :]
    return dev.std(dim=-1, unbiased=False) if rule == "reference" else dev.norm(dim=-1)


def _subtract_outliers(
    accumulators, mean, limit, rule, candidate, units, step, jac_at, n_outliers
) -> None:
    """Differentiate ``units`` again at their candidate frames only, and subtract the
    outliers among them (accumulated apart around the same centres) in float64."""
    acc, noise = accumulators
    p = mean.shape[1]
    sub = torch.as_tensor(units, device=mean.device)
    cand = candidate[sub]
    positions = np.flatnonzero(cand.any(0).cpu().numpy())
    removed = MomentAccumulator(units.size, p, device=mean.device)
    removed.centre = acc.centre[sub].clone()
    removed_noise = None
    if noise is not None:
        removed_noise = MomentAccumulator(units.size, p, device=mean.device)
        removed_noise.centre = noise.centre[sub].clone()
    centre32 = mean[sub].float()
    for start in range(0, positions.size, step):
        pos = positions[start : start + step]
        jac, diff = jac_at(pos, units)
        stat = _outlier_stat(jac, centre32, rule)
        out = (stat.double() > limit[sub][:, None]) & torch.isfinite(stat)
        out &= cand[:, torch.as_tensor(pos, device=mean.device)]
        if not bool(out.any()):
            continue
        removed.add(jac, weight=out, consume=True)
        if removed_noise is not None:
            removed_noise.add(diff, weight=out, consume=True)
        n_outliers[sub] += out.sum(1)
    acc.subtract_units(sub, removed)
    if noise is not None:
        noise.subtract_units(sub, removed_noise)


def _accumulate_kept(
    accumulators, mean, limit, rule, n_frames, units, step, jac_at, n_outliers
) -> None:
    """Accumulate ``units``' kept frames afresh over every frame (units with extreme
    outliers) and put those moments in place of pass 1's."""
    acc, noise = accumulators
    p = mean.shape[1]
    sub = torch.as_tensor(units, device=mean.device)
    kept = MomentAccumulator(units.size, p, device=mean.device)
    kept_noise = None if noise is None else MomentAccumulator(units.size, p, device=mean.device)
    centre32 = mean[sub].float()
    for start in range(0, n_frames, step):
        jac, diff = jac_at(np.arange(start, min(start + step, n_frames)), units)
        stat = _outlier_stat(jac, centre32, rule)
        out = (stat.double() > limit[sub][:, None]) & torch.isfinite(stat)
        kept.add(jac, weight=~out, consume=True)
        if kept_noise is not None:
            kept_noise.add(diff, weight=~out, consume=True)
        n_outliers[sub] += out.sum(1)
    acc.replace_units(sub, kept)
    if noise is not None:
        noise.replace_units(sub, kept_noise)
