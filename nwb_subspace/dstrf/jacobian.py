"""Exact Jacobians of a causal model's last output bin over windows of the spectrogram.

The building blocks of :mod:`nwb_subspace.dstrf.compute`: input checks, the window batch of each bin,
the choice between the gated-linear map and reverse/forward-mode autograd, the mean over an
ensemble of fits (with the half-difference that estimates its fit-to-fit error) and the
chunk size. See :mod:`nwb_subspace.dstrf.compute` for the method.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn

from nwb_subspace.dstrf.gated import (
    cnn_lag_major,
    gated_jacobian,
    gated_work_per_bin,
    lag_major,
    supports_gated,
)
from nwb_subspace.models.cnn import PopulationCNN

__all__ = [
    "bins_per_chunk",
    "check_lags",
    "check_stimulus",
    "check_units",
    "choose_mode",
    "ensemble_jacobian",
    "ensemble_members",
    "jacobian_windows",
    "model_device",
    "stimulus_windows",
]

_MODES = ("auto", "gated", "reverse", "forward")
_WORK_BYTES = 64 * 2**20  # float32 gradient buffer per chunk
_FRAME_BYTES = 256 * 2**20  # float32 frames of a chunk (population CNN, gated mode)


def _check_model(model: nn.Module) -> None:
    for name in ("memory", "n_frequencies", "n_units"):
        if not hasattr(model, name):
            raise TypeError(
                f"model must be an nwb_subspace EncodingModel (with memory, n_frequencies and "
                f"n_units); got {type(model).__name__} without {name!r}"
            )


def ensemble_members(model) -> list[nn.Module]:
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


def ensemble_jacobian(
    members: list[nn.Module], windows: Tensor, units: np.ndarray, n_lags: int, mode: str
) -> tuple[Tensor, Tensor | None]:
    """Mean Jacobian over the members, **lag major** ``(N_sel, B, D*F)`` (pixel
    ``j * F + f``), and for two or more members the scaled half-difference ``D`` whose
    covariance is that of the mean's fit-to-fit error.

    Members alternate between halves A (even) and B (odd); ``D = c (mean_A - mean_B) / 2``
    with ``c^2 = 4 / (M (1/|A| + 1/|B|))``, so for independent member errors of covariance
    ``S``, ``Cov(D) = S / M`` (the error covariance of the mean of ``M`` members).

    For population CNNs in gated mode each half is summed before the spectral weightings
    (``sum_k G_k S_k`` as one accumulating GEMM per member), so no member's own
    ``(N_sel, B, D, F)`` array is formed.
    """
    units_t = torch.as_tensor(units, device=windows.device)
    halves = _cnn_halves(members, windows, units_t) if mode == "gated" else None
    if halves is None:
        halves = [None, None]
        for j, m in enumerate(members):
            jac = jacobian_windows(m, windows, units, n_lags, mode)  # (N, B, F, D)
            jac = jac.transpose(2, 3).reshape(jac.shape[0], jac.shape[1], -1)
            h = halves[j % 2]
            halves[j % 2] = jac.clone() if h is None else h.add_(jac)
    else:
        halves = [None if h is None else lag_major(h, n_lags) for h in halves]
    n = len(members)
    if n == 1:
        return halves[0], None
    n_a, n_b = (n + 1) // 2, n // 2
    mean = torch.add(halves[0], halves[1]).div_(n)
    scale = math.sqrt(4.0 / (n * (1.0 / n_a + 1.0 / n_b)))
    diff = halves[0].mul_(scale / (2 * n_a)).sub_(halves[1], alpha=scale / (2 * n_b))
    return mean, diff


def _cnn_halves(members: list[nn.Module], windows: Tensor, units: Tensor) -> list | None:
    """Sums of the population CNN members' lag-major Jacobians over halves A (even members)
    and B (odd), each ``(N, B, M, F)``; None unless every member is a PopulationCNN."""
    if not all(isinstance(m, PopulationCNN) for m in members):
        return None
    mem = int(members[0].memory)
    win = windows[:, windows.shape[1] - mem :].detach()
    halves = [win.new_empty(units.numel(), *win.shape) for _ in range(min(2, len(members)))]
    with torch.no_grad():
        for j, m in enumerate(members):
            cnn_lag_major(m, win, units, halves[j % 2], add=j >= 2)
    return halves + [None] * (2 - len(halves))


def check_stimulus(model: nn.Module, X: np.ndarray | Tensor) -> Tensor:
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


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's weights (CPU for a model without parameters)."""
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


def check_units(model: nn.Module, units) -> np.ndarray:
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


def check_lags(model: nn.Module, n_lags: int | None) -> int:
    if n_lags is None:
        return int(model.memory)
    if isinstance(n_lags, bool) or not isinstance(n_lags, int | np.integer) or n_lags < 1:
        raise ValueError(f"n_lags must be a positive int (bins); got {n_lags!r}; e.g. 24")
    return int(n_lags)


def choose_mode(mode: str, n_units: int, n_pixels: int, model: nn.Module | None = None) -> str:
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


def stimulus_windows(X: Tensor, bins: Tensor, length: int) -> Tensor:
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
    mode = choose_mode(mode, n_sel, n_freq * use, model)
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


def bins_per_chunk(
    model: nn.Module, mode: str, n_sel: int, length: int, d: int, requested: int | None
) -> int:
    """Bins per batch: ``requested``, or what keeps the largest buffers near 64 MB."""
    if requested is not None:
        if isinstance(requested, bool) or not isinstance(requested, int) or requested < 1:
            raise ValueError(f"chunk_size must be a positive int; got {requested!r}, e.g. 128")
        return requested
    n_freq = int(model.n_frequencies)
    n_sel = max(n_sel, 1)
    if mode == "gated" and isinstance(model, PopulationCNN):
        # the CNN's intermediates are bounded by its unit blocks; the frames (two half sums
        # and the mean, float32) set the size, and the per-unit ssyrk of the moments wants
        # a few hundred frames per call to run near the machine's GEMM rate
        per_bin = 4 * 3 * n_sel * n_freq * d
        return int(min(1024, max(256, _FRAME_BYTES // per_bin)))
    if mode == "gated":
        per_bin = 4 * (gated_work_per_bin(model, n_sel) + 3 * n_sel * n_freq * d)
    else:
        per_bin = 4 * (n_sel * length * n_freq * 3 + 3 * n_sel * n_freq * d)
    return int(min(2048, max(16, _WORK_BYTES // per_bin)))
