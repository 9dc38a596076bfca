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
  forward pass (:mod:`nwb_subspace.dstrf_gated`); or
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
float64. Outlier frames (deviation from the mean dSTRF ``> outlier_threshold`` times the RMS
deviation, the reference's "> 5x its spread") are then removed in a second pass that runs
only for units whose largest deviation could exceed the threshold, subtracting those frames'
contributions exactly. Non-finite Jacobian frames are dropped and counted. Memory is
``O(units * (F*D)^2 + chunk * units * L * F)`` whatever the recording length; bound it with
``unit_batch`` (units are processed in groups, one pass over time per group).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

from .dstrf_accumulate import MomentAccumulator
from .dstrf_gated import gated_jacobian, gated_work_per_bin, supports_gated
from .progress import progress_bar

__all__ = ["DSTRFMoments", "compute_dstrf", "dstrf_moments", "jacobian_windows"]

_MODES = ("auto", "gated", "reverse", "forward")
_WORK_BYTES = 64 * 2**20  # float32 gradient buffer per chunk


def _check_model(model: nn.Module) -> None:
    for name in ("memory", "n_frequencies", "n_units"):
        if not hasattr(model, name):
            raise TypeError(
                f"model must be an nwb_subspace EncodingModel (with memory, n_frequencies and "
                f"n_units); got {type(model).__name__} without {name!r}"
            )


def _members(model) -> list[nn.Module]:
    """One model, or the members of an ensemble (a sequence of models of one class with the
    same memory, frequencies and units)."""
    if isinstance(model, nn.Module):
        _check_model(model)
        return [model]
    try:
        members = list(model)
    except TypeError:
        raise TypeError(
            f"model must be an EncodingModel or a sequence of them; got {type(model).__name__}"
        ) from None
    if not members:
        raise ValueError("an ensemble needs at least one model; got an empty sequence")
    for m in members:
        if not isinstance(m, nn.Module):
            raise TypeError(f"ensemble members must be EncodingModels; got {type(m).__name__}")
        _check_model(m)
    first = members[0]
    for m in members[1:]:
        if type(m) is not type(first) or any(
            int(getattr(m, a)) != int(getattr(first, a))
            for a in ("memory", "n_frequencies", "n_units")
        ):
            raise ValueError(
                "ensemble members must be models of one class with the same memory, "
                "n_frequencies and n_units (fits of one architecture to one session)"
            )
    return members


def _ensemble_jacobian(
    members: list[nn.Module], windows: Tensor, units: np.ndarray, n_lags: int, mode: str
) -> tuple[Tensor, Tensor | None]:
    """Mean Jacobian over the members, (N_sel, B, F*D), and for two or more members the
    scaled half-difference ``D`` whose covariance is that of the mean's fit-to-fit error.

    Members alternate between halves A (even) and B (odd); ``D = c (mean_A - mean_B) / 2``
    with ``c^2 = 4 / (M (1/|A| + 1/|B|))``, so for independent member errors of covariance
    ``S``, ``Cov(D) = S / M`` (the error covariance of the mean of ``M`` members).
    """
    halves: list[Tensor | None] = [None, None]
    for j, m in enumerate(members):
        jac = jacobian_windows(m, windows, units, n_lags, mode)
        jac = jac.reshape(jac.shape[0], jac.shape[1], -1)
        h = halves[j % 2]
        halves[j % 2] = jac.clone() if h is None else h.add_(jac)
    n = len(members)
    if n == 1:
        return halves[0], None
    n_a, n_b = (n + 1) // 2, n // 2
    mean = (halves[0] + halves[1]) / n
    scale = math.sqrt(4.0 / (n * (1.0 / n_a + 1.0 / n_b)))
    diff = halves[0].div_(n_a).sub_(halves[1].div_(n_b)).mul_(scale / 2)
    return mean, diff


def _check_X(model: nn.Module, X: np.ndarray | Tensor) -> Tensor:
    if isinstance(X, Tensor):
        X = X.detach().cpu().numpy()
    X = np.asarray(X)
    if X.ndim != 2 or X.shape[1] != model.n_frequencies:
        raise ValueError(
            f"X must be a spectrogram of shape (n_bins, {model.n_frequencies}); got {X.shape}"
        )
    if not np.isfinite(X).all():
        raise ValueError("X holds NaN/inf; recompute the spectrogram or drop those bins")
    return torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))


def _model_device(model: nn.Module) -> torch.device:
    """The device of the model's weights (CPU for a model without parameters)."""
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


def _check_units(model: nn.Module, units) -> np.ndarray:
    if units is None:
        return np.arange(model.n_units)
    arr = np.atleast_1d(np.asarray(units))
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"units must be a 1-D sequence of unit indices; got {units!r}")
    if arr.size == 0 or arr.min() < 0 or arr.max() >= model.n_units:
        raise ValueError(
            f"units must be non-empty indices in [0, {model.n_units}); got {arr.tolist()[:10]}"
        )
    return arr.astype(np.int64)


def _check_lags(model: nn.Module, n_lags: int | None) -> int:
    if n_lags is None:
        return int(model.memory)
    if isinstance(n_lags, bool) or not isinstance(n_lags, int | np.integer) or n_lags < 1:
        raise ValueError(f"n_lags must be a positive int (bins); got {n_lags!r}; e.g. 24")
    return int(n_lags)


def _choose_mode(mode: str, n_units: int, n_pixels: int, model: nn.Module | None = None) -> str:
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}; got {mode!r}")
    gated_ok = model is not None and supports_gated(model)
    if mode == "gated" and model is not None and not gated_ok:
        raise ValueError(
            f"mode='gated' needs a PopulationCNN or PopulationLN; got {type(model).__name__}; "
            "use mode='auto'"
        )
    if mode == "auto":
        if gated_ok:
            return "gated"
        return "reverse" if n_units <= n_pixels else "forward"
    return mode


def _windows(X: Tensor, bins: Tensor, length: int) -> Tensor:
    """Windows ``X[t-length+1 .. t]`` for each bin (zeros before the start): (B, length, F)."""
    offsets = torch.arange(-length + 1, 1, device=bins.device)
    idx = bins[:, None] + offsets[None, :]
    win = X[idx.clamp(min=0)]
    return win * (idx >= 0)[..., None].to(X.dtype)


def jacobian_windows(
    model: nn.Module,
    windows: Tensor,
    units: np.ndarray,
    n_lags: int,
    mode: str = "auto",
    *,
    forward_chunk: int = 64,
) -> Tensor:
    """Exact Jacobians of the last output bin with respect to the last ``n_lags`` window bins.

    Parameters
    ----------
    model : EncodingModel
    windows : Tensor, shape (B, L, F)
        ``L >= model.memory``; each window ends at the bin whose output is differentiated.
    units : ndarray of int, shape (N_sel,)
    n_lags : int
        D; if ``D > L`` the oldest ``D - L`` lags are zero (outside the model's memory).
    mode : {"auto", "gated", "reverse", "forward"}
        ``"auto"``: the gated-linear map for a PopulationCNN / PopulationLN, else reverse
        if ``N_sel <= F*D`` and forward otherwise.
    forward_chunk : int
        Tangent directions per ``vmap`` call in forward mode.

    Returns
    -------
    Tensor, shape (N_sel, B, F, D)
    """
    b, length, n_freq = windows.shape
    use = min(n_lags, length)
    units_t = torch.as_tensor(units, device=windows.device)
    n_sel = units_t.numel()
    mode = _choose_mode(mode, n_sel, n_freq * use, model)
    if mode == "gated":
        return gated_jacobian(model, windows, units_t, n_lags)
    params = dict(model.named_parameters())
    frozen = {k: v.detach() for k, v in params.items()}
    buffers = dict(model.named_buffers())

    def last(x: Tensor) -> Tensor:
        out = torch.func.functional_call(model, (frozen, buffers), (x,))
        return out[:, -1, units_t]

    if mode == "reverse":
        x = windows.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            out = last(x)  # (B, N_sel)
            eye = torch.eye(n_sel, dtype=out.dtype, device=out.device)[:, None, :].expand(
                n_sel, b, n_sel
            )
            (grad,) = torch.autograd.grad(out, x, grad_outputs=eye, is_grads_batched=True)
        jac = grad[:, :, length - use :, :]  # (N_sel, B, use, F)
    else:
        x = windows.detach()
        n_dir = n_freq * use
        pieces = []
        for start in range(0, n_dir, forward_chunk):
            stop = min(start + forward_chunk, n_dir)
            tang = x.new_zeros(stop - start, b, length, n_freq)
            d = torch.arange(start, stop, device=x.device)
            tang[
                torch.arange(stop - start, device=x.device),
                :,
                length - use + d // n_freq,
                d % n_freq,
            ] = 1.0

            def jvp_one(t: Tensor) -> Tensor:
                return torch.func.jvp(last, (x,), (t,))[1]

            pieces.append(torch.func.vmap(jvp_one)(tang))  # (chunk, B, N_sel)
        jac = torch.cat(pieces).reshape(use, n_freq, b, n_sel).permute(3, 2, 0, 1)
    jac = jac.permute(0, 1, 3, 2)  # (N_sel, B, F, use)
    if use < n_lags:
        jac = torch.cat([jac.new_zeros(n_sel, b, n_freq, n_lags - use), jac], dim=-1)
    return jac


def _chunk_size(
    model: nn.Module, mode: str, n_sel: int, length: int, d: int, requested: int | None
) -> int:
    """Bins per batch: ``requested``, or what keeps the largest buffers near 64 MB."""
    if requested is not None:
        if isinstance(requested, bool) or not isinstance(requested, int) or requested < 1:
            raise ValueError(f"chunk_size must be a positive int; got {requested!r}, e.g. 128")
        return requested
    n_freq = int(model.n_frequencies)
    n_sel = max(n_sel, 1)
    if mode == "gated":
        per_bin = 4 * (gated_work_per_bin(model, n_sel) + 3 * n_sel * n_freq * d)
    else:
        per_bin = 4 * (n_sel * length * n_freq * 3 + 3 * n_sel * n_freq * d)
    return int(min(2048, max(16, _WORK_BYTES // per_bin)))


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
    members = _members(model)
    model = members[0]
    Xt = _check_X(model, X).to(_model_device(model))
    units = _check_units(model, units)
    d = _check_lags(model, n_lags)
    bins = np.atleast_1d(np.asarray(bins))
    if bins.size and (not np.issubdtype(bins.dtype, np.integer) or bins.min() < 0):
        raise ValueError(f"bins must be non-negative integer bin indices; got {bins[:5]}")
    if bins.size and bins.max() >= Xt.shape[0]:
        raise ValueError(f"bins reach {bins.max()} but X has only {Xt.shape[0]} bins")
    length = max(int(model.memory), d)
    chosen = _choose_mode(mode, units.size, Xt.shape[1] * d, model)
    step = _chunk_size(model, chosen, units.size, length, d, chunk_size)
    out = np.empty((bins.size, units.size, Xt.shape[1], d), np.float32)
    was_training = [m.training for m in members]
    for m in members:
        m.eval()
    try:
        for s in range(0, bins.size, step):
            b = torch.as_tensor(bins[s : s + step], dtype=torch.long, device=Xt.device)
            jac, _ = _ensemble_jacobian(members, _windows(Xt, b, length), units, d, chosen)
            jac = jac.reshape(units.size, b.numel(), Xt.shape[1], d)
            out[s : s + b.numel()] = jac.permute(1, 0, 2, 3).cpu().numpy()
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


def dstrf_moments(
    model: nn.Module | Sequence[nn.Module],
    X: np.ndarray | Tensor,
    *,
    bins: np.ndarray | None = None,
    units=None,
    n_lags: int | None = None,
    mode: str = "auto",
    outlier_threshold: float | None = 5.0,
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
        Boolean mask (n_bins,) or integer indices of the bins whose dSTRFs count; default
        every bin.
    units : array of int, optional
        Output units (default all).
    n_lags : int, optional
        D, default ``model.memory`` (the whole memory).
    mode : {"auto", "gated", "reverse", "forward"}
        ``"auto"``: the gated-linear map for a PopulationCNN / PopulationLN, else reverse
        if ``units <= F*D`` and forward otherwise.
    outlier_threshold : float or None, default 5.0
        Frames whose deviation from the mean dSTRF exceeds this many times the RMS deviation
        are left out; ``None`` keeps all finite frames.
    keep_frames : array of int, optional
        Bins whose raw dSTRFs are returned in ``frames`` (for plotting).
    chunk_size : int, optional
        Bins per batch (default sized for a ~64 MB gradient buffer).
    unit_batch : int, optional
        Units per group (default: all units when their ``(F*D)^2`` float64 moments fit in
        1 GiB, else groups that do).

    Returns
    -------
    DSTRFMoments
    """
    members = _members(model)
    model = members[0]
    Xt = _check_X(model, X).to(_model_device(model))
    units = _check_units(model, units)
    d = _check_lags(model, n_lags)
    n_bins, n_freq = Xt.shape
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
    if outlier_threshold is not None and not outlier_threshold > 0:
        raise ValueError(f"outlier_threshold must be > 0 or None; got {outlier_threshold!r}")
    p = n_freq * d
    if unit_batch is None:
        unit_batch = max(1, int(2**30 // (8 * p * p)))
    elif isinstance(unit_batch, bool) or not isinstance(unit_batch, int) or unit_batch < 1:
        raise ValueError(f"unit_batch must be a positive int; got {unit_batch!r}")
    length = max(int(model.memory), d)
    chosen = _choose_mode(mode, min(units.size, unit_batch), p, model)
    notes: list[str] = []
    results = []
    timings = {"jacobian_s": 0.0, "accumulate_s": 0.0, "outlier_pass_s": 0.0}
    was_training = [m.training for m in members]
    for m in members:
        m.eval()
    try:
        for g0 in range(0, units.size, unit_batch):
            group = units[g0 : g0 + unit_batch]
            n_work = 64 if chosen == "forward" else group.size
            step = _chunk_size(model, chosen, n_work, length, d, chunk_size)
            results.append(
                _group_moments(
                    members, Xt, idx, group, d, length, chosen, step, outlier_threshold, timings
                )
            )
        frames = None
        if keep_frames is not None:
            kf = np.asarray(keep_frames, dtype=np.int64)
            frames = compute_dstrf(members, Xt, kf, units=units, n_lags=d, mode=chosen)
    finally:
        for m, flag in zip(members, was_training, strict=True):
            m.train(flag)
    cat = {k: np.concatenate([r[k] for r in results]) for k in results[0]}
    n_out, n_nf = cat["n_outliers"], cat["n_nonfinite"]
    if n_nf.any():
        notes.append(
            f"non-finite Jacobian frames dropped for units {units[n_nf > 0].tolist()} "
            f"(counts {n_nf[n_nf > 0].tolist()})"
        )
    if n_out.any():
        notes.append(
            f"{int(n_out.sum())} outlier frames left out over {int((n_out > 0).sum())} units"
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
        mode=chosen,
        frames=frames,
        frame_bins=None if keep_frames is None else np.asarray(keep_frames, dtype=np.int64),
        notes=notes,
        timings=timings,
        n_models=len(members),
        noise_covariance=cat.get("noise_covariance"),
    )


def _group_moments(
    members: list[nn.Module],
    Xt: Tensor,
    idx: np.ndarray,
    group: np.ndarray,
    d: int,
    length: int,
    mode: str,
    step: int,
    threshold: float | None,
    timings: dict[str, float],
) -> dict[str, np.ndarray]:
    n_freq = Xt.shape[1]
    p = n_freq * d
    acc = MomentAccumulator(group.size, p, device=Xt.device)
    noise = MomentAccumulator(group.size, p, device=Xt.device) if len(members) > 1 else None

    def jac_chunk(s: int, units: np.ndarray) -> tuple[Tensor, Tensor | None]:
        t0 = time.perf_counter()
        b = torch.as_tensor(idx[s : s + step], dtype=torch.long, device=Xt.device)
        jac, diff = _ensemble_jacobian(members, _windows(Xt, b, length), units, d, mode)
        timings["jacobian_s"] += time.perf_counter() - t0
        return jac, diff

    desc = f"dSTRFs of {group.size} unit(s)"
    with torch.no_grad(), progress_bar(idx.size, desc, unit="bin") as bar:
        for s in range(0, idx.size, step):
            jac, diff = jac_chunk(s, group)
            t0 = time.perf_counter()
            acc.add(jac)
            if noise is not None:
                noise.add(diff)
            timings["accumulate_s"] += time.perf_counter() - t0
            bar.update(jac.shape[1])
    mean = acc.mean()
    spread = acc.rms_deviation()
    n_outliers = torch.zeros(group.size, dtype=torch.long, device=Xt.device)
    if threshold is not None:
        bound = acc.max_dev + (mean - acc.centre.double()).norm(dim=1)
        limit = threshold * spread
        suspect = np.flatnonzero(((bound > limit) & (spread > 0)).cpu().numpy())
        t_pass2 = time.perf_counter()
        j_before = timings["jacobian_s"]
        if suspect.size:  # pass 2, only for units that may hold outliers
            sub = group[suspect]
            for s in range(0, idx.size, step):
                jac, diff = jac_chunk(s, sub)
                dev = (jac.double() - mean[suspect][:, None, :]).norm(dim=-1)
                out = (dev > limit[suspect][:, None]) & torch.isfinite(dev)
                if out.any():
                    full = out.new_zeros(group.size, jac.shape[1])
                    full[suspect] = out
                    for target, frames in ((acc, jac), (noise, diff)):
                        if target is None:
                            continue
                        padded = frames.new_zeros(group.size, frames.shape[1], p)
                        padded[suspect] = frames
                        target.add(padded, sign=-1.0, weight=full)
                    n_outliers[suspect] += out.sum(1)
        timings["outlier_pass_s"] += (
            time.perf_counter() - t_pass2 - (timings["jacobian_s"] - j_before)
        )
    t0 = time.perf_counter()
    cov = acc.covariance()
    timings["accumulate_s"] += time.perf_counter() - t0
    out = {
        "count": acc.count.round().long(),
        "n_total": acc.total,
        "n_outliers": n_outliers,
        "n_nonfinite": acc.nonfinite,
        "mean": acc.mean(),
        "covariance": cov,
        "spread": spread,
    }
    if noise is not None:
        out["noise_covariance"] = noise.covariance()
    return {key: value.cpu().numpy() for key, value in out.items()}
