"""Several population-CNN fits of one session as one stacked network.

The initialisations and jackknife members of a session are fits of one architecture to the
same timeline; fitted one after the other, each pays the fixed cost of a step (Python,
autograd bookkeeping, Adam) and runs small matrix products. :class:`StackedCNN` holds ``K``
members of :class:`~nwb_subspace.models.cnn.PopulationCNN` with a leading member axis and
runs every layer as one grouped convolution over ``K x channels`` (the dense layers as
1 x 1 convolutions with ``K`` groups, the temporal filters depthwise), channels last, with
backward passes of our own for the weight gradients (oneDNN's grouped and depthwise
backward-weights kernels took 2-8x their forward; see :class:`_GroupedDense` and
:class:`_Depthwise`). :func:`fit_stacked` runs the two-stage recipe of
:func:`~nwb_subspace.models.training.fit_model` for all members at once and gives back
ordinary models and their histories.

Each member is the separate fit with its seed, up to float rounding:

* member ``k`` is built under ``torch.manual_seed(seed_k)`` (the separate fit's model) and
  draws its window order from its own ``torch.Generator`` seeded with ``seed_k``, so every
  member sees the minibatches the separate fit sees (members may have different training
  masks: jackknife members leave out their fold);
* the loss is the sum of the members' losses, so member ``k``'s gradient is its own loss's
  gradient; Adam is elementwise and keeps a step count per member (a member that has no
  minibatch left in an epoch, or has stopped, is not updated, not even its moment
  estimates);
* early stopping, restoring the best weights, the output initialisation from the data,
  retries of failed fits (:func:`~nwb_subspace.models.training.fit_problem`) and the input
  standardisation (statistics over each member's own training bins) are per member.

What differs: the order of float summations inside batched products and grouped
convolutions, and minibatches padded with unscored windows where members' minibatches
differ in size. On a tiny synthetic session the members' weights agree with separate fits
to ~5e-6 (relative) after 20 stage-1 steps; on the ``small`` simulated session they differed
by up to 0.6 (relative, per tensor) after 10 stage-1 epochs (120 steps), while the separate
fit itself moved by 0.28 when its spectrogram was moved by one ulp (after one epoch: 1.1e-5
and 5.4e-6); the holdout-loss curves of all three agreed to ~3e-4 relative, with the same
best epoch: the fit amplifies rounding differences, stacked or not. Stopped members are still carried through the
forward pass until the last member stops (their updates are masked), so the cost of a
stage is that of its longest member.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import nwb_subspace.models.training as training_module
from nwb_subspace.denormals import flushed_denormals
from nwb_subspace.heap import kept_heap
from nwb_subspace.models.cnn import PopulationCNN
from nwb_subspace.models.training import (
    FitHistory,
    TrainingConfig,
    TrainingWindows,
    better_fit,
    check_training_data,
    check_training_memory,
    output_start,
    standardizer,
)

__all__ = [
    "StackMember",
    "StackedCNN",
    "fit_model_stacked",
    "fit_stacked",
    "jackknife_members",
]

#: Stacked parameter -> the member's ``state_dict`` key, input first.
_CORE_KEYS = {
    "spectral": "core.spectral",
    "t1_weight": "core.temporal1.weight",
    "t1_bias": "core.temporal1.bias",
    "mix": "core.mix",
    "t2_weight": "core.temporal2.weight",
    "t2_bias": "core.temporal2.bias",
    "dense_weight": "core.dense.weight",
    "dense_bias": "core.dense.bias",
    "readout_weight": "readout.weight",
    "readout_bias": "readout.bias",
}
_OUTPUT_KEYS = {name: f"output.{name}" for name in ("base", "amp", "kappa", "shift")}
#: Same clamp as :class:`~nwb_subspace.models.layers.DoubleExponential`.
_MIN_SCALED_INPUT = -30.0


def _conv_input_grad(gy: Tensor, x: Tensor, weight: Tensor, groups: int) -> Tensor:
    """Gradient of ``conv2d(x, weight, groups=groups)`` (stride 1, no padding) w.r.t. ``x``."""
    grads = torch.ops.aten.convolution_backward(
        gy, x, weight, None, [1, 1], [0, 0], [1, 1], False, [0, 0], groups, [True, False, False]
    )
    return grads[0]


class _GroupedDense(torch.autograd.Function):
    """``K`` dense layers as one 1 x 1 grouped convolution of ``(batch, K x in, 1, time)``
    (channels last); the backward takes the weight gradient as ``K`` matrix products and the
    bias gradient as a sum (oneDNN's grouped backward-weights took 2-3x the forward)."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None, k: int) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.k, ctx.has_bias = k, bias is not None
        return F.conv2d(x, weight, bias, groups=k)

    @staticmethod
    def backward(ctx, gy: Tensor):
        x, weight = ctx.saved_tensors
        k = ctx.k
        gx = _conv_input_grad(gy, x, weight, k) if ctx.needs_input_grad[0] else None
        n_in, n_out = x.shape[1] // k, weight.shape[0] // k
        # (batch, time, K, channels) in memory: per member (rows, channels), strided views
        xm = x.permute(0, 2, 3, 1).reshape(-1, k, n_in).transpose(0, 1)
        gm = gy.permute(0, 2, 3, 1).reshape(-1, k, n_out).permute(1, 2, 0)
        gw = torch.bmm(gm, xm).reshape(weight.shape)
        gb = gy.sum(dim=(0, 2, 3)) if ctx.has_bias else None
        return gx, gw, gb, None


class _Depthwise(torch.autograd.Function):
    """Per-channel temporal filters as one depthwise convolution of ``(batch, C, 1, time)``
    (channels last); the backward takes the weight gradient as another depthwise forward
    convolution (oneDNN's depthwise backward-weights took ~8x the forward)."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
        ctx.save_for_backward(x, weight)
        return F.conv2d(x, weight, bias, groups=weight.shape[0])

    @staticmethod
    def backward(ctx, gy: Tensor):
        x, weight = ctx.saved_tensors
        n_channels, n_taps = weight.shape[0], weight.shape[-1]
        gx = None
        if ctx.needs_input_grad[0]:
            gx = _conv_input_grad(gy, x, weight, n_channels)
        gw = _depthwise_weight_grad(gy, x, n_taps)
        gb = gy.sum(dim=(0, 2, 3))
        return gx, gw.reshape(weight.shape), gb


def _depthwise_weight_grad(gy: Tensor, x: Tensor, n_taps: int) -> Tensor:
    """``gw[c, j] = sum_(b, t) gy[b, c, 0, t] x[b, c, 0, t + j]``, (C, n_taps).

    Each (window, channel) pair's correlation is one depthwise forward convolution of ``x``
    with ``gy`` as the filter (``batch x C`` groups, ``n_taps`` outputs), then a sum over the
    windows: ~3x faster than tap-by-tap products on 2 threads (K = 8 stack of the paper
    architecture), one copy of ``x`` and ``gy`` each.
    """
    batch, n_channels, _, n_out = gy.shape
    xi = x.reshape(batch * n_channels, x.shape[-1])  # a copy from channels last: time last
    xi = xi.view(1, batch * n_channels, 1, x.shape[-1])
    w = gy.contiguous().view(batch * n_channels, 1, 1, n_out)
    out = F.conv2d(xi, w, groups=batch * n_channels)  # (1, batch * C, 1, n_taps)
    return out.view(batch, n_channels, n_taps).sum(0)


class StackedCNN(nn.Module):
    """``K`` population CNNs of one architecture as one network (member axis first).

    Parameters
    ----------
    models : sequence of PopulationCNN
        The members (at least one), all with the same ``config``; their weights are copied.

    Attributes
    ----------
    spectral, t1_weight, t1_bias, mix, t2_weight, t2_bias, dense_weight, dense_bias, \
readout_weight, readout_bias : nn.Parameter
        The members' core and readout weights stacked along a new first axis, e.g.
        ``spectral`` of shape ``(K, n_channels1, F)``.
    base, amp, kappa, shift : nn.Parameter of shape (K, N), or None
        The members' double exponentials (None without an output nonlinearity).
    config : dict
        The members' architecture.

    Notes
    -----
    :meth:`drive` and :meth:`forward` take windows that already carry ``memory - 1`` bins of
    context and return that many bins fewer ("valid" filtering): member ``k``'s output at
    bin ``t`` equals ``models[k]`` at ``t`` to float rounding.
    """

    def __init__(self, models: Sequence[PopulationCNN]) -> None:
        super().__init__()
        models = list(models) if isinstance(models, Sequence) else []
        if not models or not all(isinstance(m, PopulationCNN) for m in models):
            raise TypeError("models must be a non-empty sequence of PopulationCNN")
        config = models[0].config
        if any(m.config != config for m in models[1:]):
            raise ValueError("every stacked model must have the same architecture (config)")
        self.config = dict(config)
        self.n_members = len(models)
        self.memory = models[0].memory
        self.n_units = models[0].n_units
        self.n_frequencies = models[0].n_frequencies
        self.has_output = bool(config["output_nonlinearity"])
        states = [m.state_dict() for m in models]
        keys = dict(_CORE_KEYS, **(_OUTPUT_KEYS if self.has_output else {}))
        for name, key in keys.items():
            stacked = torch.stack([s[key].detach() for s in states]).clone()
            setattr(self, name, nn.Parameter(stacked))
        if not self.has_output:
            for name in _OUTPUT_KEYS:
                self.register_parameter(name, None)

    def core_parameters(self) -> list[nn.Parameter]:
        """Core and readout weights (stage 1 trains these)."""
        return [getattr(self, name) for name in _CORE_KEYS]

    def output_parameters(self) -> list[nn.Parameter]:
        """The double exponentials' parameters (empty without them)."""
        return [getattr(self, name) for name in _OUTPUT_KEYS] if self.has_output else []

    def drive(self, x: Tensor) -> Tensor:
        """Linear drive of every member.

        Parameters
        ----------
        x : Tensor, shape (K, batch, time, F)
            Each member's windows, with ``memory - 1`` bins of context first.

        Returns
        -------
        Tensor, shape (K, batch, time - memory + 1, N)
        """
        if x.ndim != 4 or x.shape[0] != self.n_members or x.shape[-1] != self.n_frequencies:
            raise ValueError(
                f"x must have shape ({self.n_members}, batch, time, {self.n_frequencies}); "
                f"got {tuple(x.shape)}"
            )
        if x.shape[2] < self.memory:
            raise ValueError(f"need at least {self.memory} bins (memory); got {x.shape[2]}")
        k, b, t, n_freq = x.shape
        c1, c2, n_hidden = self.spectral.shape[1], self.mix.shape[1], self.dense_weight.shape[1]
        # Every layer is a grouped convolution over (batch, K x channels, 1, time) in the
        # channels-last layout, where oneDNN's depthwise kernels vectorise over the K x
        # channels (2-3x faster forward and backward than channels-first at K = 8).
        h = x.permute(1, 0, 3, 2).reshape(b, k * n_freq, 1, t)
        h = h.contiguous(memory_format=torch.channels_last)
        h = _GroupedDense.apply(h, self.spectral.reshape(k * c1, n_freq, 1, 1), None, k)
        h = _Depthwise.apply(h, self.t1_weight.reshape(k * c1, 1, 1, -1), self.t1_bias.reshape(-1))
        h = _GroupedDense.apply(torch.relu(h), self.mix.reshape(k * c2, c1, 1, 1), None, k)
        h = _Depthwise.apply(h, self.t2_weight.reshape(k * c2, 1, 1, -1), self.t2_bias.reshape(-1))
        h = _GroupedDense.apply(
            torch.relu(h),
            self.dense_weight.reshape(k * n_hidden, c2, 1, 1),
            self.dense_bias.reshape(-1),
            k,
        )
        z = _GroupedDense.apply(
            torch.relu(h),
            self.readout_weight.reshape(k * self.n_units, n_hidden, 1, 1),
            self.readout_bias.reshape(-1),
            k,
        )  # (b, k x N, 1, time - memory + 1), stored as (b, time, k, N)
        return z.view(b, k, self.n_units, -1).permute(1, 0, 3, 2)

    def forward(self, x: Tensor) -> Tensor:
        """Predicted rates of every member, ``(K, batch, time - memory + 1, N)``."""
        z = self.drive(x)
        if not self.has_output:
            return z
        shape = (self.n_members, 1, 1, self.n_units)
        scaled = torch.exp(self.kappa.view(shape)) * (z + self.shift.view(shape))
        scaled = scaled.clamp(min=_MIN_SCALED_INPUT)
        return self.base.view(shape) + self.amp.view(shape) * torch.exp(-torch.exp(-scaled))

    def regularizer(self) -> Tensor:
        """Each member's sum of squared weights (biases excluded), shape ``(K,)``."""
        names = ("spectral", "t1_weight", "mix", "t2_weight", "dense_weight", "readout_weight")
        return _sum_of_squares_per_member(*(getattr(self, n) for n in names))

    def roughness(self) -> Tensor:
        """Each member's smoothness penalty (see ``PopulationCNN.roughness``), shape ``(K,)``."""
        return _second_differences(self.spectral) + _second_differences(self.t1_weight)

    def member_state(self, k: int) -> dict[str, Tensor]:
        """Member ``k``'s weights as a ``PopulationCNN`` ``state_dict``."""
        keys = dict(_CORE_KEYS, **(_OUTPUT_KEYS if self.has_output else {}))
        return {key: getattr(self, name)[k].detach().clone() for name, key in keys.items()}

    def to_models(self) -> list[PopulationCNN]:
        """The members as separate ``PopulationCNN`` s (copies, on this network's device)."""
        device = self.spectral.device
        out = []
        with torch.random.fork_rng(devices=[]):  # building draws random weights
            for k in range(self.n_members):
                model = PopulationCNN(**self.config)
                model.load_state_dict(self.member_state(k))
                out.append(model.to(device).eval())
        return out


def _sum_of_squares_per_member(*tensors: Tensor) -> Tensor:
    """Per member (first axis), the sum of squared entries over ``tensors``, added in order."""
    sums = [t.pow(2).flatten(1).sum(1) for t in tensors]
    total = sums[0]
    for s in sums[1:]:
        total = total + s
    return total


def _second_differences(weight: Tensor) -> Tensor:
    """Per member, squared second differences along the last axis, summed."""
    if weight.shape[-1] < 3:
        return weight.new_zeros(weight.shape[0])
    d2 = weight[..., 2:] - 2 * weight[..., 1:-1] + weight[..., :-2]
    return d2.pow(2).flatten(1).sum(1)


def _member_loss(pred: Tensor, y: Tensor, w: Tensor, kind: str) -> Tensor:
    """Per member, the sum over scored bins and units of the per-bin loss, shape ``(K,)``."""
    if kind == "poisson":
        per = pred - y * torch.log(pred.clamp_min(1e-8))
    else:
        per = (pred - y) ** 2
    return (per * w[..., None]).sum(dim=(1, 2, 3))


class _MemberAdam:
    """Adam (torch's defaults and arithmetic) with a step count per member.

    ``step(active)`` updates the members flagged in ``active`` exactly as ``torch.optim.Adam``
    updates a separate model; the others are left as they are (weights and moments).
    """

    def __init__(self, params: list[nn.Parameter], lr: float, n_members: int) -> None:
        self.params = params
        self.lr = float(lr)
        self.beta1, self.beta2, self.eps = 0.9, 0.999, 1e-8
        self.exp_avg = [torch.zeros_like(p) for p in params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in params]
        self.steps = np.zeros(n_members, dtype=np.int64)

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self, active: np.ndarray) -> None:
        self.steps[active] += 1
        b1, b2, dev = self.beta1, self.beta2, self.params[0].device
        dtype = self.params[0].dtype

        def per_member(on: float | Sequence[float], off: float) -> Tensor:
            values = on if isinstance(on, Sequence) else [on] * active.size
            return torch.tensor(
                [v if a else off for v, a in zip(values, active, strict=True)],
                dtype=dtype,
                device=dev,
            )

        lerp = per_member(1 - b1, 0.0)
        decay = per_member(b2, 1.0)
        add = per_member(1 - b2, 0.0)
        size = per_member(
            [-(self.lr / (1 - b1 ** int(s))) if s > 0 else 0.0 for s in self.steps], 0.0
        )
        bc2 = per_member([(1 - b2 ** int(s)) ** 0.5 if s > 0 else 1.0 for s in self.steps], 1.0)
        mask = torch.as_tensor(active, device=dev)
        every = bool(active.all())
        for p, m, v in zip(self.params, self.exp_avg, self.exp_avg_sq, strict=True):
            shape = (active.size,) + (1,) * (p.ndim - 1)
            g = p.grad if p.grad is not None else torch.zeros_like(p)
            if not every:
                g = torch.where(mask.view(shape), g, torch.zeros((), dtype=dtype, device=dev))
            m.lerp_(g, lerp.view(shape))
            v.mul_(decay.view(shape)).addcmul_(g * add.view(shape), g)
            denom = (v.sqrt() / bc2.view(shape)).add_(self.eps)
            p.addcdiv_(m * size.view(shape), denom)


@dataclass(frozen=True)
class StackMember:
    """One fit in a stack.

    Attributes
    ----------
    seed : int
        The seed of the separate fit's first attempt (``fit_model`` uses
        ``config.seed * 1000 + initialization``): the model is built under
        ``torch.manual_seed(seed)`` and the window order drawn from a generator seeded with it;
        retry ``a`` uses ``seed + 100000 * a``.
    train_mask : ndarray of bool, shape (n_bins,)
        The bins this member is fitted on.
    initialization : int
        Recorded in its :class:`~nwb_subspace.models.training.FitHistory`.
    """

    seed: int
    train_mask: np.ndarray
    initialization: int = 0


def jackknife_members(
    config: TrainingConfig, train_mask: np.ndarray, folds: np.ndarray
) -> list[StackMember]:
    """The members of a jackknife fit, fold by fold, ``n_initializations`` each.

    Fit ``j`` uses the training bins outside fold ``j`` and the seeds the estimator gives the
    separate jackknife fit ``j`` (its ``TrainingConfig.seed`` is ``seed * 1000 + 1 + j``).
    Member ``j * n_initializations + i`` is initialisation ``i`` of fit ``j``.
    """
    train_mask = np.asarray(train_mask, dtype=bool)
    folds = np.asarray(folds)
    if folds.shape != train_mask.shape:
        raise ValueError(f"folds must have shape {train_mask.shape}; got {folds.shape}")
    out = []
    for j in range(config.jackknife):
        base = (config.seed * 1000 + 1 + j) * 1000
        mask = train_mask & (folds != j)
        out += [StackMember(base + i, mask, i) for i in range(config.n_initializations)]
    return out


class _Stack:
    """The data of one stacked run: the union of the members' training windows (raw
    spectrogram), each member's windows and weights among them, the holdout windows, and
    each member's input standardisation."""

    def __init__(self, Xt: Tensor, Yt: Tensor, masks: list[np.ndarray], hold_mask, cfg, memory):
        self.cfg, self.memory = cfg, memory
        union = np.logical_or.reduce(masks)
        self.train = TrainingWindows(Xt, Yt, union, cfg.window, memory)
        self.hold = TrainingWindows(Xt, Yt, hold_mask, cfg.window, memory)
        dev = Xt.device
        self.windows, weights, self.n_scored = [], [], []
        for mask in masks:
            w = _window_weights(mask, self.train.starts, cfg.window).to(dev, Xt.dtype)
            self.windows.append(torch.as_tensor(np.flatnonzero(w.sum(1).cpu().numpy() > 0)))
            weights.append(w)
            self.n_scored.append(float(w.sum()))
        self.w = torch.stack(weights)  # (K, n_windows, window)
        self.valid_train = _valid_bins(self.train.starts, cfg.window, memory, Xt.shape[0], dev)
        self.valid_hold = _valid_bins(self.hold.starts, cfg.window, memory, Xt.shape[0], dev)
        self.standardize = cfg.standardize
        k, n_freq = len(masks), Xt.shape[1]
        self.mean = torch.zeros(k, n_freq, dtype=Xt.dtype, device=dev)
        self.std = torch.ones(k, n_freq, dtype=Xt.dtype, device=dev)
        if self.standardize:
            for i, mask in enumerate(masks):
                self.mean[i], self.std[i] = standardizer(Xt, mask)

    def inputs(self, x: Tensor, valid: Tensor, members: slice | None = None) -> Tensor:
        """Each member's standardised windows ``(K, batch, time, F)`` from raw windows
        ``(K, batch, time, F)`` or ``(batch, time, F)``; the padding stays zero. With
        ``members``, only those members' (from shared raw windows ``(batch, time, F)``)."""
        mean, std = self.mean, self.std
        if members is not None:
            mean, std = mean[members], std[members]
        k = mean.shape[0]
        if x.ndim == 3:
            x, valid = x.expand(k, *x.shape), valid.expand(k, *valid.shape)
        if not self.standardize:
            return x
        z = (x - mean[:, None, None]) / std[:, None, None]
        return torch.where(valid[..., None], z, torch.zeros((), dtype=x.dtype, device=x.device))

    def batch(self, sel: Tensor, keep: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Inputs, targets and weights of the windows ``sel`` ``(K, batch)`` (rows where
        ``keep`` is False are padding: weight zero)."""
        x = self.inputs(self.train.x[sel], self.valid_train[sel])
        members = torch.arange(sel.shape[0], device=sel.device)[:, None]
        w = self.w[members, sel] * keep[..., None].to(self.w.dtype)
        return x, self.train.y[sel], w


def _window_weights(mask: np.ndarray, starts: np.ndarray, window: int) -> Tensor:
    """``mask`` over the windows starting at ``starts``, as TrainingWindows computes ``w``."""
    padded = np.concatenate([mask, np.zeros(window, dtype=bool)])
    return torch.from_numpy(padded[starts[:, None] + np.arange(window)[None, :]])


def _valid_bins(starts: np.ndarray, window: int, memory: int, n_bins: int, device) -> Tensor:
    """Which bins of the windows (with context) lie inside the recording."""
    pos = starts[:, None] - (memory - 1) + np.arange(window + memory - 1)[None, :]
    return torch.from_numpy((pos >= 0) & (pos < n_bins)).to(device)


class _Run:
    """One attempt of the two-stage recipe for every member of a :class:`StackedCNN`."""

    def __init__(
        self, net: StackedCNN, data: _Stack, cfg: TrainingConfig, seeds: list[int], progress=None
    ):
        self.net, self.data, self.cfg, self.progress = net, data, cfg, progress
        self.gens = [torch.Generator().manual_seed(int(s)) for s in seeds]
        self.k = net.n_members

    def holdout_losses(self, fn, kind: str) -> list[float]:
        """Each member's mean loss over the holdout bins (chunks as ``fit_model`` takes)."""
        hold, chunk = self.data.hold, self.cfg.batch_windows * 4
        totals = [0.0] * self.k
        with torch.no_grad():
            for i in range(0, len(hold), chunk):
                x = self.data.inputs(hold.x[i : i + chunk], self.data.valid_hold[i : i + chunk])
                y = hold.y[i : i + chunk].expand(self.k, -1, -1, -1)
                sums = _member_loss(fn(x), y, hold.w[i : i + chunk].expand(self.k, -1, -1), kind)
                totals = [a + float(b) for a, b in zip(totals, sums.tolist(), strict=True)]
        return [t / max(hold.n_scored, 1.0) for t in totals]

    def _selection(self, orders: list, running: np.ndarray, step: int) -> tuple:
        """Union-window indices ``(K, batch)``, which rows are real, and which members step."""
        bw = self.cfg.batch_windows
        sel = torch.zeros(self.k, bw, dtype=torch.long)
        keep = torch.zeros(self.k, bw, dtype=torch.bool)
        active = np.zeros(self.k, dtype=bool)
        for k in range(self.k):
            if not running[k] or step * bw >= len(orders[k]):
                continue
            rows = self.data.windows[k][orders[k][step * bw : (step + 1) * bw]]
            sel[k, : rows.numel()], keep[k, : rows.numel()] = rows, True
            active[k] = True
        dev = self.data.w.device
        return sel.to(dev), keep.to(dev), active

    def _epoch(self, fn, kind: str, opt: _MemberAdam, running: np.ndarray) -> list[float]:
        """One pass over each running member's windows; its mean training loss."""
        cfg, n_units = self.cfg, self.net.n_units
        orders = [
            torch.randperm(len(self.data.windows[k]), generator=self.gens[k])
            if running[k]
            else torch.zeros(0, dtype=torch.long)
            for k in range(self.k)
        ]
        totals = np.zeros(self.k)
        n_steps = max(math.ceil(len(o) / cfg.batch_windows) for o in orders)
        for step in range(n_steps):
            sel, keep, active = self._selection(orders, running, step)
            x, y, w = self.data.batch(sel, keep)
            n = w.flatten(1).sum(1).clamp_min(1.0)
            data_loss = _member_loss(fn(x), y, w, kind) / n
            loss = data_loss + cfg.l2 * self.net.regularizer() / n_units
            if cfg.smoothness:
                loss = loss + cfg.smoothness * self.net.roughness() / n_units
            opt.zero_grad()
            loss[torch.as_tensor(active, device=loss.device)].sum().backward()
            opt.step(active)
            totals += np.where(active, np.asarray(data_loss.tolist()) * np.asarray(n.tolist()), 0)
        return [t / max(s, 1.0) for t, s in zip(totals, self.data.n_scored, strict=True)]

    def stage(self, stage: int, kind: str, lr: float, epochs: int, hists: list[FitHistory]):
        """One stage for every member, each with its own early stopping; best weights kept."""
        net, cfg = self.net, self.cfg
        fn = net.drive if stage == 1 else net.forward
        params = net.core_parameters() + (net.output_parameters() if stage == 2 else [])
        opt = _MemberAdam(params, lr, self.k)
        every = list(net.parameters())
        best_state = [p.detach().clone() for p in every]
        best = self.holdout_losses(fn, kind)
        best_epoch = [len(h.train_loss) - 1 for h in hists]
        waited = np.zeros(self.k, dtype=np.int64)
        running = np.ones(self.k, dtype=bool)
        for _ in range(epochs):
            if not running.any():
                break
            train_loss = self._epoch(fn, kind, opt, running)
            hold_loss = self.holdout_losses(fn, kind)
            for k in np.flatnonzero(running):
                h = hists[k]
                h.train_loss.append(train_loss[k])
                h.holdout_loss.append(hold_loss[k])
                h.stage.append(stage)
                if self.progress is not None:
                    self.progress(stage, len(h.train_loss), hold_loss[k])
                if hold_loss[k] < best[k] - 1e-7 * abs(best[k]):
                    best[k], best_epoch[k], waited[k] = hold_loss[k], len(h.train_loss) - 1, 0
                    with torch.no_grad():
                        for saved, p in zip(best_state, every, strict=True):
                            saved[k] = p[k]
                else:
                    waited[k] += 1
                    running[k] = waited[k] < cfg.patience
        with torch.no_grad():
            for saved, p in zip(best_state, every, strict=True):
                p.copy_(saved)
        for k, h in enumerate(hists):
            h.best_epoch, h.best_holdout_loss = best_epoch[k], best[k]

    @torch.no_grad()
    def init_output(self) -> None:
        """Each member's double exponential from its stage-1 drive at its training bins.

        The drives come from stacked forward passes (a K = 8 stack's pass costs about
        what two separate models' passes do), over groups of members whose drives at every
        training bin stay under ~256 MB (``K x n_bins x N`` floats for the whole stack)."""
        data, train, n_units = self.data, self.data.train, self.net.n_units
        y = train.y.reshape(-1, n_units)
        per_group = max(1, _INIT_DRIVE_FLOATS // max(1, y.numel()))
        models = self.net.to_models() if per_group < self.k else None
        for g0 in range(0, self.k, per_group):
            group = slice(g0, min(g0 + per_group, self.k))
            net = self.net if models is None else StackedCNN(models[group])
            drives = []
            for i in range(0, len(train), 64):
                x = data.inputs(train.x[i : i + 64], data.valid_train[i : i + 64], group)
                drives.append(net.drive(x))  # (members, windows, window, N)
            drive = torch.cat(drives, dim=1)
            for j, k in enumerate(range(group.start, group.stop)):
                scored = data.w[k].reshape(-1) > 0
                start = output_start(drive[j].reshape(-1, n_units)[scored], y[scored])
                for name, value in start.items():
                    getattr(self.net, name)[k] = value


#: Floats of stage-1 drives held at once while the members' output layers are initialised.
_INIT_DRIVE_FLOATS = 1 << 26


def _check_members(members: Sequence[StackMember], n_bins: int) -> list[StackMember]:
    members = list(members) if isinstance(members, Sequence) else []
    if not members or not all(isinstance(m, StackMember) for m in members):
        raise TypeError("members must be a non-empty sequence of StackMember")
    for m in members:
        if isinstance(m.seed, bool) or not isinstance(m.seed, int | np.integer) or m.seed < 0:
            raise ValueError(f"a member's seed must be an integer >= 0; got {m.seed!r}")
        mask = np.asarray(m.train_mask)
        if mask.shape != (n_bins,) or mask.dtype != bool:
            raise ValueError(f"a member's train_mask must be a boolean array of shape ({n_bins},)")
    return members


@flushed_denormals()
@kept_heap()
def fit_stacked(  # long: validation, then the attempt loop over the members still failing
    architecture: Mapping,
    X: np.ndarray,
    Y: np.ndarray,
    members: Sequence[StackMember],
    holdout_mask: np.ndarray,
    config: TrainingConfig | None = None,
    *,
    device: str | torch.device = "cpu",
    progress: Callable[[int, int, float], None] | None = None,
) -> list[tuple[PopulationCNN, FitHistory]]:
    """Fit several population CNNs at once, each as :func:`fit_model` fits one initialisation.

    Parameters
    ----------
    architecture : dict
        ``PopulationCNN`` settings (``model.config``), the same for every member.
    X : ndarray, shape (n_bins, F)
        Spectrogram.
    Y : ndarray, shape (n_bins, N)
        Spike counts per bin.
    members : sequence of StackMember
        Seed and training bins of each fit.
    holdout_mask : ndarray of bool, shape (n_bins,)
        Bins deciding early stopping (all members); no member's training bins among them.
    config : TrainingConfig, optional
        The recipe (``n_initializations``, ``seed`` and ``jackknife`` are not used: the members
        say which fits to make).
    device : str or torch.device
    progress : callable, optional
        Called as ``progress(stage, epoch, holdout_loss)`` after each epoch of each member
        (the members' calls interleave).

    Returns
    -------
    list of (PopulationCNN, FitHistory)
        One per member, in order, in eval mode and taking the spectrogram itself (the input
        standardisation folded in). ``FitHistory.seconds`` is the time of the whole stacked
        fit. A member whose every attempt failed carries ``history.problem`` (a warning is
        issued for every failed attempt, as :func:`fit_model` does).
    """
    cfg = config or TrainingConfig()
    if not isinstance(cfg, TrainingConfig):
        raise TypeError(f"config must be a TrainingConfig; got {type(cfg).__name__}")
    if not isinstance(architecture, Mapping):
        raise TypeError(f"architecture must be a dict; got {type(architecture).__name__}")
    with torch.random.fork_rng(devices=[]):
        probe = PopulationCNN.from_config(architecture)
    X = np.asarray(X, dtype=np.float32)
    Y = np.asarray(Y, dtype=np.float32)
    if X.ndim != 2 or Y.ndim != 2 or X.shape[0] != Y.shape[0]:
        raise ValueError(
            f"X must be (n_bins, n_frequencies) and Y (n_bins, n_units) with the same n_bins; "
            f"got {X.shape} and {Y.shape}"
        )
    holdout_mask = np.asarray(holdout_mask)
    members = _check_members(members, X.shape[0])
    for m in members:
        check_training_data(X, Y, m.train_mask, holdout_mask, probe.memory)
        if (m.train_mask & holdout_mask).any():
            raise ValueError("train_mask and holdout_mask overlap; holdout bins must be unseen")
    if Y.shape[1] != probe.n_units or X.shape[1] != probe.n_frequencies:
        raise ValueError(
            f"the architecture takes {probe.n_frequencies} channels and {probe.n_units} units; "
            f"got X {X.shape} and Y {Y.shape}"
        )
    union = np.logical_or.reduce([m.train_mask for m in members])
    check_training_memory(X, Y, (union, holdout_mask), cfg, probe.memory)
    dev = torch.device(device)
    Xt, Yt = torch.from_numpy(X).to(dev), torch.from_numpy(Y).to(dev)
    start = time.perf_counter()
    results: list = [None] * len(members)
    failures: list[list[str]] = [[] for _ in members]
    pending = list(range(len(members)))
    for attempt in range(cfg.max_retries + 1):
        if not pending:
            break
        batch = [members[i] for i in pending]
        fits = _fit_attempt(architecture, Xt, Yt, batch, holdout_mask, cfg, attempt, dev, progress)
        retry = []
        for i, (model, hist, problem) in zip(pending, fits, strict=True):
            results[i] = (model, hist, problem)
            if problem is None:
                continue
            failures[i].append(f"attempt {attempt + 1}: {problem}")
            last = attempt == cfg.max_retries
            warnings.warn(
                f"cnn fit (stacked member {i + 1}), initialisation "
                f"{members[i].initialization + 1}, attempt {attempt + 1} failed ({problem})"
                + ("" if last else "; retrying with a new initialisation and a 4x smaller step"),
                UserWarning,
                stacklevel=2,
            )
            if not last:
                retry.append(i)
        pending = retry
    seconds = time.perf_counter() - start
    out = []
    for i, (model, hist, problem) in enumerate(results):
        hist.failed_attempts, hist.problem, hist.seconds = failures[i], problem, seconds
        out.append((model, hist))
    return out


def _fit_attempt(architecture, Xt, Yt, members, holdout_mask, cfg, attempt, dev, progress) -> list:
    """Attempt ``attempt`` of ``members``: build, train, check and unstack."""
    seeds = [int(m.seed) + 100_000 * attempt for m in members]
    built = []
    with torch.random.fork_rng(devices=[]):
        for seed in seeds:
            torch.manual_seed(seed)
            built.append(PopulationCNN.from_config(architecture))
    net = StackedCNN(built).to(dev).train()
    masks = [np.asarray(m.train_mask) for m in members]
    data = _Stack(Xt, Yt, masks, holdout_mask, cfg, net.memory)
    hists = [FitHistory(initialization=m.initialization, attempts=attempt + 1) for m in members]
    run = _Run(net, data, cfg, seeds, progress)
    factor = 0.25**attempt
    with torch.no_grad():
        for k, mask in enumerate(masks):
            net.readout_bias[k] = Yt[torch.from_numpy(mask).to(dev)].mean(0)
    run.stage(1, "mse", cfg.lr_stage1 * factor, cfg.max_epochs_stage1, hists)
    loss_kind = "mse"
    if net.has_output:
        run.init_output()
        loss_kind = cfg.loss
        run.stage(2, loss_kind, cfg.lr_stage2 * factor, cfg.max_epochs_stage2, hists)
    out = []
    for k, model in enumerate(net.to_models()):
        problem = _member_problem(model, Xt, Yt, masks[k], holdout_mask, data, k, cfg, hists[k])
        if data.standardize:
            model.fold_input_standardization(data.mean[k], data.std[k])
        out.append((model, hists[k], problem))
    return out


def _member_problem(model, Xt, Yt, mask, holdout_mask, data, k, cfg, hist) -> str | None:
    """:func:`fit_problem` of member ``k`` on its own (standardised) windows."""
    Xk = (Xt - data.mean[k]) / data.std[k] if data.standardize else Xt
    train = TrainingWindows(Xk, Yt, mask, cfg.window, model.memory)
    hold = TrainingWindows(Xk, Yt, holdout_mask, cfg.window, model.memory)
    kind = cfg.loss if model.output is not None else "mse"
    # looked up on the module, as fit_model's call is (a test's patch there applies here too)
    return training_module.fit_problem(model, train, hold, hist, kind, cfg.batch_windows * 4)


def fit_model_stacked(
    architecture: Mapping,
    X: np.ndarray,
    Y: np.ndarray,
    train_mask: np.ndarray,
    holdout_mask: np.ndarray,
    config: TrainingConfig | None = None,
    *,
    device: str | torch.device = "cpu",
    every_fit: list[tuple[PopulationCNN, FitHistory]] | None = None,
    progress: Callable[[int, int, float], None] | None = None,
) -> tuple[PopulationCNN, FitHistory]:
    """:func:`fit_model`'s ``n_initializations`` fits of a population CNN as one stack.

    Initialisation ``i`` has seed ``config.seed * 1000 + i``, as in :func:`fit_model` with the
    first model built under ``torch.manual_seed(config.seed * 1000)`` (the estimator's way).
    Returns the best fit and its history (a working fit beats a failed one, then the lower
    holdout loss wins); ``every_fit`` receives every initialisation, in order.
    """
    cfg = config or TrainingConfig()
    mask = np.asarray(train_mask)
    members = [StackMember(cfg.seed * 1000 + i, mask, i) for i in range(cfg.n_initializations)]
    fits = fit_stacked(
        architecture, X, Y, members, holdout_mask, cfg, device=device, progress=progress
    )
    if every_fit is not None:
        every_fit.extend(fits)
    best = fits[0]
    for fit in fits[1:]:
        if better_fit(fit[1], best[1]):
            best = fit
    return best
