"""Exact dSTRFs of the population CNN and LN models through their gated-linear maps.

A ReLU network is piecewise linear: once the ReLU gates of one input are fixed, the map from
the input window to the linear drive is linear, and its matrix is the product of the layer
matrices with the gates as diagonal masks. For :class:`~nwb_subspace.models.PopulationCNN`
and bin ``t`` (model lag order, ``M = T1 + T2 - 1`` bins of memory)::

    d rate_u(t) / d x[t-M+1+p, f] = o'_u(t) * sum_{c1} G_u[p, c1] S[c1, f]
    G_u[p, c1]  = sum_{i + j = p} B_u[i, c1] g1[i, c1] w1[c1, j]          (temporal filter 1)
    B_u[i, c1]  = sum_{c2} A_u[c2] w2[c2, i] Mix[c2, c1]                  (filter 2, mix)
    A_u[c2]     = g2[c2] sum_h R[u, h] g3[h] W[h, c2]                     (readout, dense)

with ``g1`` the gates of the first ReLU at the ``T2`` positions the second filter reads,
``g2``, ``g3`` the gates at ``t``, and ``o'`` the derivative of the output nonlinearity at
the drive. One forward pass over a batch of windows records every gate; the products are a
few large GEMMs (``(B*N, H) @ (H, C2)``, ``(B*N, C2) @ (C2, T2*C1)``, ``(B*N*M, C1) @ (C1,
F)``) instead of ``N`` backward passes. The result is exact (the same numbers autograd
computes, up to float32 rounding order). For :class:`~nwb_subspace.models.PopulationLN`
the map has no gates: ``J_u(t) = o'_u(t) * strf_u``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from nwb_subspace.models.cnn import PopulationCNN
from nwb_subspace.models.ln import PopulationLN

__all__ = [
    "CNNGates",
    "cnn_channel_map",
    "cnn_gates",
    "cnn_lag_major",
    "gated_jacobian",
    "gated_lag_major",
    "gated_work_per_bin",
    "lag_major",
    "rows_times",
    "supports_gated",
    "unit_blocks",
]


def supports_gated(model: nn.Module) -> bool:
    """True for models whose gated-linear map is implemented (population CNN and LN)."""
    return isinstance(model, PopulationCNN | PopulationLN)


def rows_times(a: Tensor, b: Tensor, out: Tensor | None = None, *, add: bool = False) -> Tensor:
    """``a @ b`` for a tall ``a`` (rows, k) and a small ``b`` (k, m), written to (or with
    ``add``, added to) ``out`` (rows, m) when given.

    On the CPU in float32 the product runs as a 1 x 1 convolution over the rows in the
    channels-last layout (oneDNN), which on a 2-core AMD EPYC (AVX-512, torch 2.13) took a
    third to a half of the time of the BLAS ``mm`` for these narrow products (``(46560,
    70) @ (70, 32)``: 0.6 against 1.6 ms; MKL's single-precision GEMM runs its generic
    code there); elsewhere, plain ``mm``. Same numbers up to float rounding order.
    """
    rows, k = a.shape
    m = b.shape[1]
    if a.device.type != "cpu" or a.dtype != torch.float32 or not a.is_contiguous():
        if out is None:
            return a @ b
        return out.addmm_(a, b) if add else torch.mm(a, b, out=out)
    x = a.view(1, rows, k).permute(0, 2, 1).unsqueeze(2)  # (1, k, 1, rows), channels last
    y = torch.nn.functional.conv2d(x, b.T.reshape(m, k, 1, 1))
    y = y.permute(0, 2, 3, 1).reshape(rows, m)  # a view when oneDNN kept channels last
    if out is None:
        return y
    return out.add_(y) if add else out.copy_(y)


def gated_work_per_bin(model: nn.Module, n_units: int) -> int:
    """Float32 elements of the largest per-bin intermediate (to size chunks)."""
    m, f = int(model.memory), int(model.n_frequencies)
    if isinstance(model, PopulationCNN):
        c1 = model.core.spectral.shape[0]
        return n_units * m * max(c1, f) * 2
    return n_units * m * f * 2


def _output_slope(model: nn.Module, drive: Tensor) -> Tensor:
    """Elementwise derivative of the output nonlinearity at ``drive`` (ones without one)."""
    if model.output is None:
        return torch.ones_like(drive)
    z = drive.detach().requires_grad_(True)
    with torch.enable_grad():
        (slope,) = torch.autograd.grad(model.output(z).sum(), z)
    return slope


class CNNGates(NamedTuple):
    """What one forward pass of a population CNN over windows of ``memory`` bins leaves for
    its gated-linear map: the ReLU gates and the output nonlinearity's slope."""

    first: Tensor  # (B, T2 * C1): the first ReLU's gates at the T2 positions filter 2 reads
    second: Tensor  # (B, C2): the second ReLU's gates at the last bin
    dense: Tensor  # (B, H): the dense layer's gates
    slope: Tensor  # (B, N): d rate / d drive of every unit


def cnn_gates(model: PopulationCNN, win: Tensor) -> CNNGates:
    """One forward pass over windows ``win`` of exactly ``memory`` bins, recording the gates
    (no depthwise convolution: unfold + sum)."""
    core = model.core
    t1 = core.temporal1.n_taps
    w1, w2 = core.temporal1.weight, core.temporal2.weight  # (C1, T1), (C2, T2)
    a1 = win @ core.spectral.T  # (B, M, C1)
    pre1 = (a1.unfold(1, t1, 1) * w1).sum(-1)  # (B, T2, C1)
    if core.temporal1.bias is not None:
        pre1 = pre1 + core.temporal1.bias
    m = torch.relu(pre1) @ core.mix.T  # (B, T2, C2)
    pre2 = (m * w2.T).sum(1)  # (B, C2)
    if core.temporal2.bias is not None:
        pre2 = pre2 + core.temporal2.bias
    pre3 = core.dense(torch.relu(pre2))  # (B, H)
    slope = _output_slope(model, model.readout(torch.relu(pre3)))  # (B, N)
    dtype = win.dtype
    return CNNGates(
        (pre1 > 0).to(dtype).flatten(1), (pre2 > 0).to(dtype), (pre3 > 0).to(dtype), slope
    )


def cnn_channel_map(model: PopulationCNN, gates: CNNGates, units: Tensor) -> Tensor:
    """The Jacobians before the spectral weightings, ``G[(n, b, p), c1]``: (N*B*M, C1).

    ``J_n(b)[p, f] = sum_c1 G[(n, b, p), c1] S[c1, f]``, so ``G @ S`` is the lag-major
    ``(N, B, M, F)`` Jacobian array. ``gates`` come from :func:`cnn_gates`; keep
    ``N * B`` near a few thousand (the intermediates then stay in the CPU's caches).
    """
    core = model.core
    t1, t2 = core.temporal1.n_taps, core.temporal2.n_taps
    w1, w2, mix = core.temporal1.weight, core.temporal2.weight, core.mix
    c1 = core.spectral.shape[0]
    b, n = gates.slope.shape[0], units.numel()
    # readout and dense layer, (N, B, C2)
    r = model.readout.weight[units]  # (N, H)
    a = (r[:, None, :] * gates.dense[None]) @ core.dense.weight
    a *= gates.second[None] * gates.slope[:, units].T[:, :, None]
    # filter 2 and mix as one GEMM: q[c2, i * C1 + c1] = w2[c2, i] * mix[c2, c1]
    q = (w2[:, :, None] * mix[:, None, :]).reshape(-1, t2 * c1)
    bg = rows_times(a.view(n * b, -1), q).view(n, b, t2 * c1)
    bg *= gates.first[None]  # gates of the first ReLU (the same for every unit)
    # filter 1: a full depthwise convolution along the lags, channels-last (T2 -> M lags)
    x = bg.view(n * b, 1, t2, c1).permute(0, 3, 1, 2)
    kernel = w1.flip(-1).reshape(c1, 1, 1, t1)
    g = torch.nn.functional.conv2d(x, kernel, padding=(0, t1 - 1), groups=c1)
    return g.permute(0, 2, 3, 1).reshape(-1, c1)  # (N*B*M, C1), a view when channels-last


def unit_blocks(n_units: int, n_bins: int, size: int = 2048) -> list[slice]:
    """Slices of at most ``max(1, size // n_bins)`` units: blocks of about ``size``
    (unit, bin) pairs, whose intermediates stay in the CPU's caches."""
    step = max(1, size // max(n_bins, 1))
    return [slice(u, min(u + step, n_units)) for u in range(0, n_units, step)]


def cnn_lag_major(
    model: PopulationCNN, win: Tensor, units: Tensor, out: Tensor, *, add: bool = False
) -> Tensor:
    """Write (or with ``add``, add) the lag-major Jacobians of ``units`` for windows ``win``
    (exactly ``memory`` bins) into ``out``, (N_sel, B, M, F) contiguous, one block of
    units at a time."""
    gates = cnn_gates(model, win)
    spectral = model.core.spectral
    for block in unit_blocks(units.numel(), win.shape[0]):
        g = cnn_channel_map(model, gates, units[block])
        rows_times(g, spectral, out[block].view(-1, spectral.shape[1]), add=add)
    return out


def _cnn_jacobian(model: PopulationCNN, win: Tensor, units: Tensor) -> Tensor:
    """Lag-major (N_sel, B, M, F) Jacobians for windows ``win`` of exactly ``memory`` bins."""
    out = win.new_empty(units.numel(), *win.shape)
    return cnn_lag_major(model, win, units, out)


def _ln_jacobian(model: PopulationLN, win: Tensor, units: Tensor) -> Tensor:
    strf = model.strf()[units].transpose(1, 2)  # (N, M, F), time order
    slope = _output_slope(model, model.drive(win)[:, -1])[:, units]  # (B, N)
    return slope.T[:, :, None, None] * strf[:, None]  # (N, B, M, F)


def lag_major(frames: Tensor, n_lags: int) -> Tensor:
    """Lag-major ``(N, B, M, F)`` frames with the last ``n_lags`` lags (zeros before the
    model's memory): ``(N, B, n_lags * F)``, pixel ``j * F + f``."""
    n, b, mem, n_freq = frames.shape
    if n_lags < mem:
        frames = frames[:, :, mem - n_lags :]
    elif n_lags > mem:
        frames = torch.cat([frames.new_zeros(n, b, n_lags - mem, n_freq), frames], dim=2)
    return frames.reshape(n, b, n_lags * n_freq)


def gated_lag_major(model: nn.Module, windows: Tensor, units: Tensor) -> Tensor:
    """Exact Jacobians of the last output bin w.r.t. the last ``memory`` window bins, lag
    major: ``(N_sel, B, M, F)`` contiguous (each unit's frames one ``(B, M*F)`` matrix)."""
    if not supports_gated(model):
        raise TypeError(
            f"the gated-linear map is implemented for PopulationCNN and PopulationLN; got "
            f"{type(model).__name__}; use mode='reverse' or 'forward'"
        )
    mem = int(model.memory)
    win = windows[:, windows.shape[1] - mem :].detach()
    with torch.no_grad():
        if isinstance(model, PopulationCNN):
            return _cnn_jacobian(model, win, units)
        return _ln_jacobian(model, win, units)


def gated_jacobian(model: nn.Module, windows: Tensor, units: Tensor, n_lags: int) -> Tensor:
    """Exact Jacobians of the last output bin w.r.t. the last ``n_lags`` window bins.

    Parameters
    ----------
    model : PopulationCNN or PopulationLN
    windows : Tensor, shape (B, L, F)
        ``L >= model.memory``; each window ends at the bin whose output is differentiated.
    units : Tensor of int, shape (N_sel,)
    n_lags : int
        D; lags beyond the model's memory are zero.

    Returns
    -------
    Tensor, shape (N_sel, B, F, D)
        A view of a lag-major ``(N_sel, B, D, F)`` array (see :func:`gated_lag_major`).
    """
    jac = gated_lag_major(model, windows, units)
    n, b, _, n_freq = jac.shape
    return lag_major(jac, n_lags).view(n, b, n_lags, n_freq).transpose(2, 3)
