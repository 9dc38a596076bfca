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

import torch
from torch import Tensor, nn

from nwb_subspace.models.cnn import PopulationCNN
from nwb_subspace.models.ln import PopulationLN

__all__ = ["gated_jacobian", "gated_work_per_bin", "supports_gated"]


def supports_gated(model: nn.Module) -> bool:
    """True for models whose gated-linear map is implemented (population CNN and LN)."""
    return isinstance(model, PopulationCNN | PopulationLN)


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


def _cnn_jacobian(model: PopulationCNN, win: Tensor, units: Tensor) -> Tensor:
    """(N_sel, B, F, M) Jacobians for windows ``win`` of exactly ``memory`` bins."""
    core = model.core
    t1, t2 = core.temporal1.n_taps, core.temporal2.n_taps
    w1, w2 = core.temporal1.weight, core.temporal2.weight  # (C1, T1), (C2, T2)
    spectral, mix, dense = core.spectral, core.mix, core.dense
    c1, n_freq = spectral.shape
    mem = t1 + t2 - 1
    # forward pass over the windows, recording the gates (no depthwise conv: unfold + sum)
    a1 = win @ spectral.T  # (B, M, C1)
    pre1 = (a1.unfold(1, t1, 1) * w1).sum(-1)  # (B, T2, C1)
    if core.temporal1.bias is not None:
        pre1 = pre1 + core.temporal1.bias
    m = torch.relu(pre1) @ mix.T  # (B, T2, C2)
    pre2 = (m * w2.T).sum(1)  # (B, C2)
    if core.temporal2.bias is not None:
        pre2 = pre2 + core.temporal2.bias
    pre3 = dense(torch.relu(pre2))  # (B, H)
    slope = _output_slope(model, model.readout(torch.relu(pre3)))[:, units]  # (B, N)
    b, n = slope.shape
    # backward through the gated-linear map, as GEMMs over all (bin, unit) pairs
    r = model.readout.weight[units]  # (N, H)
    a = (r * (pre3 > 0)[:, None, :]) @ dense.weight  # (B, N, C2)
    a = a * ((pre2 > 0)[:, None, :] * slope[:, :, None])
    a = a.transpose(0, 1).reshape(n * b, -1)  # (unit, bin) order: each unit's frames adjacent
    # filter 2 + mix: qt[c1 * T2 + i, c2] = w2[c2, i] * mix[c2, c1]
    qt = (mix.T[:, None, :] * w2.T[None, :, :]).reshape(c1 * t2, -1)
    bt = (qt @ a.T).view(c1, t2, n, b)  # (C1, T2, N, B)
    bt *= (pre1 > 0).permute(2, 1, 0)[:, :, None, :]  # gates of the first ReLU
    # filter 1 as a banded (M, T2) matrix per channel: k[c, p, i] = w1[c, p - i]
    k = w1.new_zeros(c1, mem, t2)
    for i in range(t2):
        k[:, i : i + t1, i] = w1
    g = torch.bmm(k, bt.view(c1, t2, b * n))  # (C1, M, B*N)
    jac = (spectral.T @ g.view(c1, -1)).view(n_freq, mem, n, b)
    return jac.permute(2, 3, 0, 1)  # (N, B, F, M) view of a pixel-major array


def _ln_jacobian(model: PopulationLN, win: Tensor, units: Tensor) -> Tensor:
    strf = model.strf()[units]  # (N, F, M), time order
    slope = _output_slope(model, model.drive(win)[:, -1])[:, units]  # (B, N)
    return slope.T[:, :, None, None] * strf[:, None]  # (N, B, F, M)


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
        For the CNN, a view of a pixel-major ``(F, D, N_sel, B)`` array (each unit's frames
        form a strided ``(F*D, B)`` matrix that the moment GEMMs read without a copy).
    """
    if not supports_gated(model):
        raise TypeError(
            f"the gated-linear map is implemented for PopulationCNN and PopulationLN; got "
            f"{type(model).__name__}; use mode='reverse' or 'forward'"
        )
    mem = int(model.memory)
    win = windows[:, windows.shape[1] - mem :].detach()
    with torch.no_grad():
        if isinstance(model, PopulationCNN):
            jac = _cnn_jacobian(model, win, units)
        else:
            jac = _ln_jacobian(model, win, units)
    if n_lags < mem:
        return jac[..., mem - n_lags :]
    if n_lags > mem:
        pad = jac.new_zeros(*jac.shape[:3], n_lags - mem)
        return torch.cat([pad, jac], dim=-1)
    return jac
