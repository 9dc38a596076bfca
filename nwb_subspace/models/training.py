"""Fitting encoding models: the reference two-stage Adam recipe with early stopping.

Data are one continuous session: a spectrogram ``X`` (n_bins, F) and spike counts ``Y``
(n_bins, N) on the same clock, plus boolean masks saying which bins are fitted
(``train_mask``) and which decide early stopping (``holdout_mask``). The timeline is cut into
windows of ``window`` bins, each preceded by ``memory - 1`` bins of real stimulus context, so
every scored bin sees exactly the stimulus history it had in the experiment; bins outside the
masks (validation repeats, silences) are never scored.

Recipe (docs/methods.md, "Training recipe"): stage 1 fits the linear drive with the output
nonlinearity held out (mean squared error); the double exponential is then initialised from
the data and stage 2 fits the whole model (Poisson or MSE loss). Learning rates: ours default
to 6e-3 (stage 1) / 2e-3 (stage 2) for minibatch steps, where the reference uses 1e-3 / 1e-4
with full-batch epochs (``TrainingConfig.lr_stage1`` / ``lr_stage2``). Both stages use L2 on core
and readout weights and early stopping on the holdout bins with the best weights restored;
the best of several random initialisations is kept.
"""

from __future__ import annotations

import copy
import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

from nwb_subspace.denormals import flushed_denormals
from nwb_subspace.errors import ModelFitError  # noqa: F401  (raised by callers; re-exported here)
from nwb_subspace.heap import kept_heap
from nwb_subspace.io.session import available_memory, check_memory
from nwb_subspace.models.layers import EncodingModel
from nwb_subspace.progress import progress_bar

__all__ = [
    "FLAT_PREDICTION",
    "FitHistory",
    "INPUT_SPREAD",
    "JackknifeFolds",
    "LOSSES",
    "TrainingConfig",
    "TrainingWindows",
    "available_memory",
    "better_fit",
    "check_training_data",
    "check_training_memory",
    "estimate_memory",
    "fit_model",
    "fit_problem",
    "jackknife_folds",
    "output_start",
    "predict",
    "standardizer",
    "training_info",
]

LOSSES = ("poisson", "mse")


@dataclass(frozen=True)
class TrainingConfig:
    """Settings of :func:`fit_model`.

    The recipe is the reference one (two stages, Adam, L2 1e-4, early stopping, best of
    several initialisations) plus a smoothness penalty on the first layer's filters (see
    ``smoothness``); the step sizes differ because we take minibatch steps
    (``batch_windows`` x ``window`` = 16 x 128 bins, plus context) instead of full-batch
    gradient descent: the reference's lr 1e-3 / 1e-4 with patience 150 assumes full-batch
    epochs. Minibatches of 16 windows keep the fixed cost of a step (Python, autograd
    bookkeeping, Adam) a small share of its time while leaving enough steps per epoch; at 4
    windows that share was about 40% (``benchmarks/training_speed.py`` prints it). On the
    ``small`` simulated session these defaults reach the held-out optimum in about 30-60
    epochs per stage (see benchmarks/README.md).

    Parameters
    ----------
    loss : {"poisson", "mse"}
        Loss of stage 2 (stage 1 always fits the linear drive with MSE).
    lr_stage1, lr_stage2 : float
        Adam learning rates of the two stages.
    l2 : float
        Weight of the L2 penalty (``model.regularizer()``), per scored bin and unit.
    smoothness : float
        Weight of the smoothness penalty (``model.roughness()``: squared second differences
        of the first layer's spectral weightings along frequency and temporal filters along
        lag), per scored bin and unit; 0 turns it off. Natural-sound spectrograms leave many
        spectro-temporal directions with little variance; without it those parts of the
        filters, and so of the dSTRFs, stay at whatever the initialisation and the noise put
        there. On the ``small`` simulated session 1e-2 raised the CNN's median
        noise-corrected correlation from 0.84 to 0.85-0.87 and the match of its dSTRF PCs to
        the true subspace (median cos^2) from 0.45 to 0.52-0.61 over two fits.
    max_epochs_stage1, max_epochs_stage2 : int
        Upper bounds on epochs (passes over the training windows). Stage 1 needs at least
        one (0 would leave the model untrained); ``max_epochs_stage2 = 0`` skips stage 2,
        keeping the stage-1 fit with the data-initialised output nonlinearity.
    patience : int
        Epochs without holdout improvement before a stage stops.
    n_initializations : int
        Random initialisations tried; the one with the lowest holdout loss is kept.
    window : int
        Scored bins per training window.
    batch_windows : int
        Windows per optimiser step.
    seed : int
        Seed of initialisation and window order (>= 0); the same seed gives bitwise-equal
        fits on the CPU. In an analysis run it is the top-level ``seed`` of
        :class:`~nwb_subspace.config.AnalysisConfig` (a differing ``[training] seed`` is
        refused there).
    standardize : bool
        Fit on the spectrogram centred per channel and scaled to a common spread of
        :data:`INPUT_SPREAD` (statistics over the fit bins), then fold the scaling into the
        first layer, so that the stored model takes the spectrogram itself (models whose
        core supports it: CNN and LN). This makes the fit independent of the spectrogram's
        level and spread: on a simulated session with a per-channel spread of ~0.01 (a quiet
        recording) the CNN's prediction collapsed to a constant without it (median
        noise-corrected r NaN; with it 0.69, LN 0.47).
    max_retries : int
        A fit that fails (:func:`fit_problem`: non-finite, a loss that ran away, a prediction
        that is constant on the holdout bins or correlates with no unit's response) is
        retried this many times, each time with a new initialisation and a learning rate 4x
        smaller; if every attempt fails the fit is reported as failed (``FitHistory.problem``).
    jackknife : int
        0 (default): one fit on all the fit data, whose ``n_initializations`` fits are the
        ensemble behind averaged dSTRFs. ``K >= 2``: also ``K`` jackknife fits of the CNN, as
        the reference does (8 fits, best of 5 initialisations each): the fit sounds are dealt
        into ``K`` folds balanced by duration (:func:`jackknife_folds`), and fit ``j`` is
        fitted on the fit data without fold ``j`` (the holdout data, for early stopping, is
        the same for all), keeping the best of ``n_initializations``; the dSTRFs are then
        averaged over the jackknife fits, and fit ``j``'s prediction of fold ``j`` gives
        out-of-fold predictions. It costs ``K`` times the fits.
    stacked : bool
        Fit the population CNN's ``n_initializations`` as one stacked network
        (:func:`~nwb_subspace.models.stacked.fit_model_stacked`), and its jackknife fits'
        ``jackknife x n_initializations`` as another: the same fits as one at a time (same
        seeds, minibatches, early stopping, retries and best-of selection per fit), up to
        float rounding, in less time (``small`` simulated session, 2 CPU cores: best of 3
        in 17 s instead of 24 s, same median noise-corrected correlation over two seeds;
        8 fits of 15 epochs 4.0 x one fit instead of 6.9 x). The rounding differences grow
        over a long fit, so the individual fits end in other (as good) optima than one at
        a time; on the ``paper`` preset the default recipe's recovery of the simulated
        truth was the same either way (docs/methods.md, section 5). Other model kinds are
        fitted one at a time either way, and so is a CNN with one initialisation and no
        jackknife (a stack of one gains nothing).

    Raises
    ------
    ValueError
        When a setting has the wrong type (a string or bool for a number, a float for an
        integer) or is out of range; the message names ``[training]`` and the key, the
        value and an example of a good one.
    """

    loss: str = "poisson"
    lr_stage1: float = 6e-3
    lr_stage2: float = 2e-3
    l2: float = 1e-4
    smoothness: float = 1e-2
    max_epochs_stage1: int = 100
    max_epochs_stage2: int = 60
    patience: int = 10
    n_initializations: int = 3
    window: int = 128
    batch_windows: int = 16
    seed: int = 0
    standardize: bool = True
    max_retries: int = 2
    jackknife: int = 0
    stacked: bool = True

    def __post_init__(self) -> None:
        def fail(name: str, what: str, value: object, example: object, wrong_type: bool) -> None:
            got = f"{value!r} ({type(value).__name__})" if wrong_type else repr(value)
            raise ValueError(f"[training] {name} must be {what}; got {got}, e.g. {example}")

        if not isinstance(self.loss, str) or self.loss not in LOSSES:
            fail("loss", f"one of {list(LOSSES)}", self.loss, '"poisson"', False)
        numbers = {"lr_stage1": (6e-3, 0), "lr_stage2": (2e-3, 0)}  # name: (example, > low)
        numbers.update(l2=(1e-4, None), smoothness=(1e-2, None))  # >= 0
        for name, (example, above) in numbers.items():
            value = getattr(self, name)
            what = "a number > 0" if above is not None else "a number >= 0"
            number = isinstance(value, int | float) and not isinstance(value, bool)
            if not number or not math.isfinite(value) or not value >= 0 or value == above:
                fail(name, what, value, example, not number)
        # max_epochs_stage2 = 0 skips stage 2 (the linear fit with the initialised output
        # nonlinearity is kept); max_epochs_stage1 = 0 would leave the model untrained.
        ints = {"max_epochs_stage1": (1, 100), "max_epochs_stage2": (0, 60), "patience": (1, 10)}
        ints.update(n_initializations=(1, 3), window=(1, 128), batch_windows=(1, 16))
        ints.update(seed=(0, 0), max_retries=(0, 2))
        for name, (low, example) in ints.items():
            value = getattr(self, name)
            integer = isinstance(value, int) and not isinstance(value, bool)
            if not integer or value < low:
                fail(name, f"an integer >= {low}", value, example, not integer)
        for name in ("standardize", "stacked"):
            if not isinstance(getattr(self, name), bool):
                fail(name, "true or false", getattr(self, name), "true", True)
        value = self.jackknife
        integer = isinstance(value, int) and not isinstance(value, bool)
        if not integer or value < 0 or value == 1:
            fail("jackknife", "0 (off) or an integer >= 2", value, 8, not integer)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class FitHistory:
    """What happened during a fit (per stage: training and holdout loss per epoch)."""

    train_loss: list[float] = field(default_factory=list)
    holdout_loss: list[float] = field(default_factory=list)
    stage: list[int] = field(default_factory=list)
    best_epoch: int = -1
    best_holdout_loss: float = math.inf
    initialization: int = 0
    seconds: float = 0.0
    attempts: int = 1
    problem: str | None = None
    failed_attempts: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        """True when every attempt of this fit failed (see :attr:`problem`)."""
        return self.problem is not None


def check_training_data(
    X: np.ndarray,
    Y: np.ndarray,
    train_mask: np.ndarray,
    holdout_mask: np.ndarray,
    memory: int,
) -> None:
    """Raise a clear error for data a model cannot be fitted on."""
    if X.ndim != 2 or Y.ndim != 2 or X.shape[0] != Y.shape[0]:
        raise ValueError(
            f"X must be (n_bins, n_frequencies) and Y (n_bins, n_units) with the same n_bins; "
            f"got {X.shape} and {Y.shape}"
        )
    for name, mask in (("train_mask", train_mask), ("holdout_mask", holdout_mask)):
        if mask.shape != (X.shape[0],) or mask.dtype != bool:
            raise ValueError(f"{name} must be a boolean array of shape ({X.shape[0]},)")
    if not np.isfinite(X).all():
        bad = np.argwhere(~np.isfinite(X))[0]
        raise ValueError(
            f"the spectrogram holds NaN/inf (first at bin {bad[0]}, channel "
            f"{bad[1]}); recompute it or drop those bins"
        )
    if not np.isfinite(Y).all() or (Y < 0).any():
        raise ValueError("responses must be finite, non-negative spike counts")
    if X.shape[0] < memory:
        raise ValueError(f"{X.shape[0]} bins is fewer than the model's memory ({memory} bins)")
    if train_mask.sum() < memory or holdout_mask.sum() < 1:
        raise ValueError(
            f"need at least {memory} training bins and 1 holdout bin; got "
            f"{int(train_mask.sum())} and {int(holdout_mask.sum())}"
        )
    silent = np.flatnonzero(Y[train_mask].sum(axis=0) == 0)
    if silent.size:
        raise ValueError(
            f"units {silent.tolist()} have no spikes in the training data; exclude them "
            "before fitting (nwb_subspace.models.estimator drops them with a warning)"
        )


def estimate_memory(
    n_bins: int,
    n_channels: int,
    n_units: int,
    window: int,
    memory: int,
    n_windows: int | None = None,
) -> dict[str, int]:
    """Bytes the training windows and the dSTRF moments of a fit will take.

    Parameters
    ----------
    n_bins : int
        Bins of the session.
    n_channels : int
        Spectrogram channels F.
    n_units : int
        Units fitted together N.
    window : int
        ``TrainingConfig.window``.
    memory : int
        The model's memory (lags D).
    n_windows : int, optional
        Windows holding training or holdout bins, each; default ``ceil(n_bins / window)``.

    Returns
    -------
    dict of str to int
        ``"training windows"``: the fit and holdout windows, stimulus with context, targets
        and weights in float32, ``2 x n_windows x (window + memory) x (F + N + 1) x 4``;
        ``"dSTRF moments"``: the float64 covariance of each unit's dSTRFs,
        ``N x (F x D)^2 x 8``.
    """
    if n_windows is None:
        n_windows = max(1, math.ceil(int(n_bins) / int(window)))
    per_bin = (int(n_channels) + int(n_units) + 1) * 4
    return {
        "training windows": 2 * int(n_windows) * (int(window) + int(memory)) * per_bin,
        "dSTRF moments": int(n_units) * (int(n_channels) * int(memory)) ** 2 * 8,
    }


def check_training_memory(
    X: np.ndarray,
    Y: np.ndarray,
    masks: tuple[np.ndarray, np.ndarray],
    config: TrainingConfig,
    memory: int,
) -> None:
    """Refuse a fit whose windows or dSTRF moments would not fit in memory (before allocating).

    Raises
    ------
    nwb_subspace.io.session.InsufficientMemoryError
        Naming the setting, the estimate and the memory available.
    """
    n_bins, n_channels = X.shape
    n_units = Y.shape[1]
    n_windows = max(len(_windows(m, config.window)) for m in masks) if n_bins else 1
    est = estimate_memory(n_bins, n_channels, n_units, config.window, memory, n_windows)
    check_memory(
        est["training windows"],
        f"the training windows (2 x {n_windows} windows x ({config.window} + {memory}) bins x "
        f"({n_channels} channels + {n_units} units + 1) x 4 bytes)",
        f"[training] window = {config.window}",
    )
    check_memory(
        est["dSTRF moments"],
        f"the dSTRF moments computed from the fit ({n_units} units x ({n_channels} channels "
        f"x {memory} lags)^2 x 8 bytes)",
        f"[spectrogram] n_channels = {n_channels} and the model's memory ({memory} lags)",
    )


def _windows(mask: np.ndarray, window: int) -> np.ndarray:
    """Start bins of the windows of ``window`` bins that contain at least one masked bin."""
    starts = np.arange(0, mask.size, window)
    keep = [s for s in starts if mask[s : s + window].any()]
    return np.asarray(keep, dtype=np.int64)


class TrainingWindows:
    """Windows of the timeline as tensors: stimulus with context, targets, score weights.

    Parameters
    ----------
    X : Tensor, shape (n_bins, F)
        Spectrogram (already standardised when the fit standardises).
    Y : Tensor, shape (n_bins, N)
        Counts.
    mask : ndarray of bool, shape (n_bins,)
        Bins scored; the windows are those of ``window`` bins (on the grid ``0, window, ...``)
        that hold at least one of them.
    window, memory : int
        Scored bins per window; the model's memory (each window starts with ``memory - 1``
        bins of context, zeros before the first bin).

    Attributes
    ----------
    starts : ndarray of int64
        First scored bin of each window.
    x : Tensor, shape (n_windows, window + memory - 1, F)
    y : Tensor, shape (n_windows, window, N)
    w : Tensor, shape (n_windows, window)
        1 at the scored bins, else 0.
    ctx : int
        ``memory - 1``.
    n_scored : float
        Number of scored bins.
    """

    def __init__(self, X: Tensor, Y: Tensor, mask: np.ndarray, window: int, memory: int):
        self.starts = _windows(mask, window)
        ctx = memory - 1
        n_bins, n_freq = X.shape
        Xp = torch.cat([X.new_zeros(ctx, n_freq), X, X.new_zeros(window, n_freq)])
        Yp = torch.cat([Y, Y.new_zeros(window, Y.shape[1])])
        Mp = torch.cat(
            [
                torch.as_tensor(mask, device=X.device),
                torch.zeros(window, dtype=torch.bool, device=X.device),
            ]
        )
        idx = torch.as_tensor(self.starts, device=X.device)
        span = torch.arange(window + ctx, device=X.device)
        self.x = Xp[idx[:, None] + span[None, :]]  # (n_win, window + ctx, F)
        self.y = Yp[idx[:, None] + span[None, ctx:] - ctx]  # (n_win, window, N)
        self.w = Mp[idx[:, None] + span[None, ctx:] - ctx].to(X.dtype)  # (n_win, window)
        self.ctx = ctx
        self.n_scored = float(self.w.sum())
        self.features = False

    def __len__(self) -> int:
        return int(self.starts.size)

    def core_features(self, core: nn.Module, chunk: int = 64) -> TrainingWindows:
        """The same windows with ``x`` replaced by a fixed core's output at their scored
        positions, ``(n_windows, window, ...)`` (``ctx`` 0, ``features`` True).

        ``core`` maps windows with their ``memory - 1`` bins of context to one output per
        scored bin (:class:`~nwb_subspace.models.subspace.SubspaceProjection`).
        """
        out = copy.copy(self)
        with torch.no_grad():
            parts = [core(self.x[i : i + chunk]) for i in range(0, len(self), chunk)]
        out.x = torch.cat(parts) if parts else self.x.new_zeros(0)
        out.ctx, out.features = 0, True
        return out


def _loss(pred: Tensor, y: Tensor, w: Tensor, kind: str) -> Tensor:
    """Sum over scored bins and units of the per-bin loss."""
    if kind == "poisson":
        per = pred - y * torch.log(pred.clamp_min(1e-8))
    else:
        per = (pred - y) ** 2
    return (per * w[..., None]).sum()


def _epoch_loss(
    fn: Callable[[Tensor], Tensor], data: TrainingWindows, kind: str, chunk: int
) -> float:
    total = 0.0
    with torch.no_grad():
        for i in range(0, len(data), chunk):
            out = fn(data.x[i : i + chunk])[:, data.ctx :]
            total += float(_loss(out, data.y[i : i + chunk], data.w[i : i + chunk], kind))
    return total / max(data.n_scored, 1.0)


def _run_stage(
    model: EncodingModel,
    fn,
    train: TrainingWindows,
    hold: TrainingWindows,
    kind: str,
    lr: float,
    epochs: int,
    cfg: TrainingConfig,
    gen: torch.Generator,
    history: FitHistory,
    stage: int,
    progress=None,
) -> None:
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)
    n_units = train.y.shape[-1]
    best = (
        _epoch_loss(fn, hold, kind, cfg.batch_windows * 4),
        copy.deepcopy(model.state_dict()),
        len(history.train_loss) - 1,
    )
    waited = 0
    kind_name = getattr(model, "kind", "model")
    desc = f"{kind_name} fit, init {history.initialization + 1}, stage {stage}"
    with progress_bar(epochs, desc, unit="epoch") as bar:
        for _ in range(epochs):
            order = torch.randperm(len(train), generator=gen).to(train.x.device)
            total = 0.0
            for i in range(0, len(train), cfg.batch_windows):
                sel = order[i : i + cfg.batch_windows]
                out = fn(train.x[sel])[:, train.ctx :]
                w = train.w[sel]
                n = w.sum().clamp_min(1.0)
                data_loss = _loss(out, train.y[sel], w, kind) / n
                loss = data_loss + cfg.l2 * model.regularizer() / n_units
                if cfg.smoothness:
                    loss = loss + cfg.smoothness * model.roughness() / n_units
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += float(data_loss.detach()) * float(n)
            hold_loss = _epoch_loss(fn, hold, kind, cfg.batch_windows * 4)
            history.train_loss.append(total / max(train.n_scored, 1.0))
            history.holdout_loss.append(hold_loss)
            history.stage.append(stage)
            bar.update(1)
            bar.set_postfix(holdout_loss=f"{hold_loss:.4g}", refresh=False)
            if progress is not None:
                progress(stage, len(history.train_loss), hold_loss)
            if hold_loss < best[0] - 1e-7 * abs(best[0]):
                best = (hold_loss, copy.deepcopy(model.state_dict()), len(history.train_loss) - 1)
                waited = 0
            else:
                waited += 1
                if waited >= cfg.patience:
                    break
    model.load_state_dict(best[1])
    history.best_epoch = best[2]
    history.best_holdout_loss = best[0]


def column_quantiles(x: Tensor, qs: Sequence[float]) -> Tensor:
    """``torch.quantile(x, qs, dim=0)`` (linear interpolation), the same numbers, by
    selection instead of a full sort of every column.

    The two order statistics around each quantile's rank come from one ``numpy.partition``
    per column (introselect, linear in the rows): ~3x faster than ``torch.quantile``'s sort
    at 24000 x 30 on 2 threads. The ranks and interpolation weights are computed as
    ``torch.quantile`` computes them (in ``x``'s dtype), so the results are equal bit for
    bit. Off the CPU, or with a NaN or inf in ``x``, it is ``torch.quantile`` itself.

    Parameters
    ----------
    x : Tensor, shape (n, m)
    qs : sequence of float in [0, 1]

    Returns
    -------
    Tensor, shape (len(qs), m)
    """
    q = x.new_tensor(list(qs))
    if x.device.type != "cpu" or x.shape[0] == 0 or not bool(torch.isfinite(x).all()):
        return torch.quantile(x, q, dim=0)
    ranks = q * (x.shape[0] - 1)
    below, above = ranks.floor().long(), ranks.ceil().long()
    kth = sorted(set(below.tolist()) | set(above.tolist()))
    cols = x.detach().T.contiguous().numpy()
    picked = np.partition(cols, kth, axis=1)
    lo = torch.from_numpy(picked[:, below.numpy()].T.copy())
    hi = torch.from_numpy(picked[:, above.numpy()].T.copy())
    return torch.lerp(lo, hi, (ranks - below)[:, None])


def output_start(drive: Tensor, y: Tensor) -> dict[str, Tensor]:
    """Starting values of the double exponential from the stage-1 drive and the counts.

    Parameters
    ----------
    drive : Tensor, shape (n_scored, N)
        The linear drive at the scored training bins.
    y : Tensor, shape (n_scored, N)
        The counts at the same bins.

    Returns
    -------
    dict of str to Tensor
        ``base``, ``amp``, ``kappa``, ``shift`` (each ``(N,)``), for
        :meth:`~nwb_subspace.models.layers.DoubleExponential.reset_parameters`.
    """
    mean_y = y.mean(0)
    lo, hi = column_quantiles(drive, (0.01, 0.99))
    spread = (hi - lo).clamp_min(1e-3)
    return {
        "base": torch.zeros_like(mean_y),
        "amp": y.max(0).values.clamp_min(1.0) * 1.0 + 2 * mean_y,
        "kappa": torch.log(4.0 / spread),
        "shift": -(lo + hi) / 2,
    }


#: Bytes of a fixed core's output (train and holdout windows) that a fit may hold in memory
#: instead of running the core at every step (the subspace model's projections: 0.74 GB on
#: the ``paper`` preset at 60 units and up to 13 dimensions).
FIXED_CORE_BYTES = 2 << 30


def fixed_core(model: EncodingModel) -> bool:
    """Whether ``model``'s core has nothing to train (no parameter that requires a
    gradient): its output for a window never changes during a fit."""
    return not any(p.requires_grad for p in model.core.parameters())


def _head_drive(model: EncodingModel) -> Callable[[Tensor], Tensor]:
    """The linear drive from a fixed core's output (what ``model.drive`` does after it)."""
    return model.readout


def _head_forward(model: EncodingModel) -> Callable[[Tensor], Tensor]:
    """The prediction from a fixed core's output (what ``model.forward`` does after it)."""
    if model.output is None:
        return model.readout
    return lambda f: model.output(model.readout(f))


def _drive_fn(model: EncodingModel, windows: TrainingWindows) -> Callable[[Tensor], Tensor]:
    return _head_drive(model) if windows.features else model.drive


def _forward_fn(model: EncodingModel, windows: TrainingWindows) -> Callable[[Tensor], Tensor]:
    return _head_forward(model) if windows.features else model


class _CoreFeatures:
    """The train and holdout windows as a fixed core's output, computed once and reused
    by every candidate with the same core (its buffers and parameters equal)."""

    def __init__(self, train: TrainingWindows, hold: TrainingWindows) -> None:
        self.train, self.hold = train, hold
        self._core: dict[str, Tensor] | None = None
        self._windows: tuple[TrainingWindows, TrainingWindows] | None = None

    def windows(self, model: EncodingModel) -> tuple[TrainingWindows, TrainingWindows]:
        """``(train, hold)`` for ``model``: feature windows when its core is fixed and its
        output fits in :data:`FIXED_CORE_BYTES`, else the raw windows."""
        if not fixed_core(model) or not self._fits(model):
            return self.train, self.hold
        state = {k: v.detach() for k, v in model.core.state_dict().items()}
        same = self._core is not None and self._core.keys() == state.keys()
        if not (same and all(torch.equal(self._core[k], v) for k, v in state.items())):
            was_training = model.core.training
            model.core.eval()
            self._windows = (
                self.train.core_features(model.core),
                self.hold.core_features(model.core),
            )
            model.core.train(was_training)
            self._core = {k: v.clone() for k, v in state.items()}
        return self._windows

    def _fits(self, model: EncodingModel) -> bool:
        with torch.no_grad():
            one = model.core(self.train.x[:1]) if len(self.train) else None
        if one is None:
            return False
        per_window = one.numel() * one.element_size()
        return per_window * (len(self.train) + len(self.hold)) <= FIXED_CORE_BYTES


def _init_output(model: EncodingModel, train: TrainingWindows) -> None:
    """Start the double exponential where the stage-1 drive and the data say it should be."""
    if model.output is None:
        return
    drive_fn = _drive_fn(model, train)
    with torch.no_grad():
        chunks = [drive_fn(train.x[i : i + 64])[:, train.ctx :] for i in range(0, len(train), 64)]
        drive = torch.cat(chunks).reshape(-1, model.n_units)
        weight = train.w.reshape(-1) > 0
        drive, y = drive[weight], train.y.reshape(-1, model.n_units)[weight]
        model.output.reset_parameters(**output_start(drive, y))


def _fresh_like(model: EncodingModel) -> EncodingModel:
    """A newly initialised model of the same architecture, keeping its fixed buffers
    (e.g. the subspace model's bases), built under the current torch seed."""
    fresh = type(model).from_config(model.config)
    buffers = dict(model.named_buffers())
    if buffers:
        fresh.load_state_dict(
            {k: v for k, v in model.state_dict().items() if k in buffers}, strict=False
        )
    return fresh


#: Spread (RMS over channels of the per-channel standard deviation) of the standardised
#: spectrogram the models are fitted on; about that of a reference-level spectrogram, for
#: which the default step sizes and penalties were chosen (see ``TrainingConfig``).
INPUT_SPREAD = 0.25

#: A unit whose holdout prediction varies by less than this fraction of its mean is flat.
FLAT_PREDICTION = 1e-3


def _holdout_prediction(model: EncodingModel, hold: TrainingWindows, chunk: int) -> Tensor:
    """The model's prediction at every scored holdout bin, ``(n_scored, N)``."""
    outs = []
    with torch.no_grad():
        for i in range(0, len(hold), chunk):
            out = _forward_fn(model, hold)(hold.x[i : i + chunk])[:, hold.ctx :]
            outs.append(out[hold.w[i : i + chunk] > 0])
    return torch.cat(outs)


def _loss_floor(hold: TrainingWindows, kind: str) -> float:
    """Lowest value the per-bin loss can take on these bins (a prediction equal to the
    counts): ``sum(y - y log y)`` for the Poisson loss, 0 for squared error."""
    if kind != "poisson":
        return 0.0
    y = hold.y
    per = y - torch.xlogy(y, y)
    return float((per * hold.w[..., None]).sum()) / max(hold.n_scored, 1.0)


def fit_problem(
    model: EncodingModel,
    train: TrainingWindows,
    hold: TrainingWindows,
    history: FitHistory,
    loss_kind: str,
    chunk: int,
) -> str | None:
    """Why a fitted model must not be used (None if it may).

    A fit fails when

    - its weights, its holdout loss or any training loss are not finite;
    - its training loss fell below the lowest value the loss can take on the training data
      (``sum(y - y log y)`` per bin for the Poisson loss, 0 for squared error): the loss ran
      away numerically;
    - its prediction on the holdout bins is constant: every unit's prediction varies by less
      than :data:`FLAT_PREDICTION` of its mean;
    - no unit's prediction on the holdout bins correlates positively with its response.
    """
    if not all(bool(torch.isfinite(p).all()) for p in model.parameters()):
        return "non-finite weights"
    if not math.isfinite(history.best_holdout_loss):
        return f"non-finite holdout loss ({history.best_holdout_loss})"
    losses = np.asarray(history.train_loss, dtype=float)
    if losses.size and not np.isfinite(losses).all():
        return "non-finite training loss"
    floor = min(_loss_floor(train, "mse"), _loss_floor(train, loss_kind))
    if losses.size and losses.min() < floor - 1e-3 * max(abs(floor), 1.0):
        return (
            f"the training loss ran away: it fell to {losses.min():.4g}, below the lowest "
            f"value it can take on these data ({floor:.4g})"
        )
    pred = _holdout_prediction(model, hold, chunk)
    if not bool(torch.isfinite(pred).all()):
        return "non-finite prediction on the holdout bins"
    spread = pred.std(dim=0) / pred.mean(dim=0).abs().clamp_min(1e-12)
    if bool((spread < FLAT_PREDICTION).all()):
        return (
            "constant prediction: every unit's prediction on the holdout bins varies by less "
            f"than {FLAT_PREDICTION:g} of its mean (largest {float(spread.max()):.2g})"
        )
    y = torch.cat([hold.y[i][hold.w[i] > 0] for i in range(len(hold))])
    pc, yc = pred - pred.mean(0), y - y.mean(0)
    r = (pc * yc).sum(0) / (pc.norm(dim=0) * yc.norm(dim=0)).clamp_min(1e-30)
    if not bool((r > 0).any()):
        return "no unit's prediction on the holdout bins correlates with its response"
    return None


def standardizer(X: Tensor, train_mask: np.ndarray) -> tuple[Tensor, Tensor]:
    """Per-channel mean and one common scale over the training bins (float64 sums).

    Every channel is centred; all are divided by one number, the RMS over channels of their
    standard deviations, times ``1 / INPUT_SPREAD``. One scale keeps the spectrogram's
    spectral shape (a per-channel scale would blow channels the sound barely reaches up to
    the spread of the loud ones); :data:`INPUT_SPREAD` is the spread the recipe's step sizes
    and penalties were set for. Returned as per-channel vectors.
    """
    fit = X[torch.from_numpy(train_mask).to(X.device)].double()
    mean = fit.mean(dim=0)
    spread = float(fit.std(dim=0).square().mean().sqrt())
    scale = spread / INPUT_SPREAD if spread > 1e-30 else 1.0
    std = torch.full_like(mean, scale)
    return mean.to(X.dtype), std.to(X.dtype)


def _train_once(
    candidate: EncodingModel,
    train: TrainingWindows,
    hold: TrainingWindows,
    cfg: TrainingConfig,
    lr_factor: float,
    gen: torch.Generator,
    hist: FitHistory,
    train_mean: Tensor,
    progress,
) -> None:
    """One attempt of the two-stage recipe on ``candidate`` (in place)."""
    candidate.set_drive_offset(train_mean)
    _run_stage(
        candidate,
        _drive_fn(candidate, train),
        train,
        hold,
        "mse",
        cfg.lr_stage1 * lr_factor,
        cfg.max_epochs_stage1,
        cfg,
        gen,
        hist,
        1,
        progress,
    )
    if candidate.output is not None:
        _init_output(candidate, train)
        _run_stage(
            candidate,
            _forward_fn(candidate, train),
            train,
            hold,
            cfg.loss,
            cfg.lr_stage2 * lr_factor,
            cfg.max_epochs_stage2,
            cfg,
            gen,
            hist,
            2,
            progress,
        )


@flushed_denormals()
@kept_heap()
def fit_model(  # long: the restart loop (initialisations x retries x two stages) shares its state
    model: EncodingModel,
    X: np.ndarray,
    Y: np.ndarray,
    train_mask: np.ndarray,
    holdout_mask: np.ndarray,
    config: TrainingConfig | None = None,
    *,
    device: str | torch.device = "cpu",
    progress: Callable[[int, int, float], None] | None = None,
    build: Callable[[], EncodingModel] | None = None,
    every_fit: list[tuple[EncodingModel, FitHistory]] | None = None,
) -> tuple[EncodingModel, FitHistory]:
    """Fit ``model`` with the two-stage recipe; return the best initialisation and its history.

    Parameters
    ----------
    model : EncodingModel
        A freshly built model: the first initialisation. Build it under
        ``torch.manual_seed(config.seed * 1000)`` for fits that repeat bit for bit (the
        estimator does). Initialisation ``i > 0`` is built by ``build`` (default: the same
        architecture with the same buffers) under seed ``config.seed * 1000 + i``.
    X : ndarray, shape (n_bins, F)
        Spectrogram.
    Y : ndarray, shape (n_bins, N)
        Spike counts per bin.
    train_mask, holdout_mask : ndarray of bool, shape (n_bins,)
        Bins fitted, and bins deciding early stopping. They must not overlap.
    config : TrainingConfig, optional
    device : str or torch.device
    progress : callable, optional
        Called as ``progress(stage, epoch, holdout_loss)`` after each epoch.
    build : callable, optional
        Builds initialisation ``i > 0``.
    every_fit : list, optional
        If given, ``(model, history)`` of every initialisation is appended to it, in order
        (e.g. to average the dSTRFs of all fits).

    Returns
    -------
    model, history
        Of the initialisation with the lowest holdout loss among those that did not fail
        (:func:`fit_problem`); if every initialisation failed after ``config.max_retries``
        retries each, the least bad one, with ``history.problem`` saying why (a warning is
        issued for every failed attempt).
    """
    cfg = config or TrainingConfig()
    X = np.asarray(X, dtype=np.float32)
    Y = np.asarray(Y, dtype=np.float32)
    train_mask = np.asarray(train_mask)
    holdout_mask = np.asarray(holdout_mask)
    check_training_data(X, Y, train_mask, holdout_mask, model.memory)
    if (train_mask & holdout_mask).any():
        raise ValueError("train_mask and holdout_mask overlap; holdout bins must be unseen")
    check_training_memory(X, Y, (train_mask, holdout_mask), cfg, model.memory)
    dev = torch.device(device)
    Xt, Yt = torch.from_numpy(X).to(dev), torch.from_numpy(Y).to(dev)
    standardize = cfg.standardize and model.can_standardize_input
    if standardize:
        x_mean, x_std = standardizer(Xt, train_mask)
        Xt = (Xt - x_mean) / x_std
    raw = _CoreFeatures(
        TrainingWindows(Xt, Yt, train_mask, cfg.window, model.memory),
        TrainingWindows(Xt, Yt, holdout_mask, cfg.window, model.memory),
    )
    build = build or (lambda: _fresh_like(model))
    train_mean = Yt[torch.from_numpy(train_mask).to(dev)].mean(0)
    chunk = cfg.batch_windows * 4
    loss_kind = cfg.loss if model.output is not None else "mse"
    best_model, best_hist = None, None
    start = time.perf_counter()
    for init in range(cfg.n_initializations):
        failures: list[str] = []
        for attempt in range(cfg.max_retries + 1):
            seed = cfg.seed * 1000 + init + 100_000 * attempt
            torch.manual_seed(seed)
            gen = torch.Generator().manual_seed(seed)
            candidate = model if init == 0 and attempt == 0 else build()
            torch.manual_seed(seed)
            candidate = candidate.to(dev).train()
            # a fixed core (the subspace model's projections) runs once, not at every step
            train, hold = raw.windows(candidate)
            hist = FitHistory(initialization=init, attempts=attempt + 1)
            _train_once(candidate, train, hold, cfg, 0.25**attempt, gen, hist, train_mean, progress)
            candidate.eval()
            problem = fit_problem(candidate, train, hold, hist, loss_kind, chunk)
            if problem is None:
                break
            failures.append(f"attempt {attempt + 1}: {problem}")
            warnings.warn(
                f"{getattr(candidate, 'kind', 'model')} fit, initialisation {init + 1}, "
                f"attempt {attempt + 1} failed ({problem})"
                + (
                    "; retrying with a new initialisation and a 4x smaller step"
                    if attempt < cfg.max_retries
                    else ""
                ),
                UserWarning,
                stacklevel=2,
            )
        hist.failed_attempts = failures
        hist.problem = problem
        if standardize:
            candidate.fold_input_standardization(x_mean, x_std)
        if every_fit is not None:
            every_fit.append((candidate, hist))
        if best_hist is None or better_fit(hist, best_hist):
            best_model, best_hist = candidate, hist
    best_hist.seconds = time.perf_counter() - start
    return best_model.eval(), best_hist


def better_fit(a: FitHistory, b: FitHistory) -> bool:
    """Whether fit ``a`` beats fit ``b``: a working fit beats a failed one, then the lower
    holdout loss wins (NaN never wins)."""
    if a.failed != b.failed:
        return not a.failed
    if not math.isfinite(b.best_holdout_loss):
        return math.isfinite(a.best_holdout_loss)
    return a.best_holdout_loss < b.best_holdout_loss


@dataclass
class JackknifeFolds:
    """Jackknife folds of the fit data (:func:`jackknife_folds`).

    Attributes
    ----------
    labels : ndarray of int64, shape (n_bins,)
        Fold of each bin (0 .. k-1), -1 for bins outside the fit trials.
    bins : ndarray of int64, shape (k,)
        Fit bins in each fold.
    sounds : list of list of str
        The sounds (or, when sounds were cut, ``"sound [a:b)"`` chunks in trial-relative
        bins) of each fold.
    note : str
        Empty, or what was done to make ``k`` folds out of fewer sounds.
    """

    labels: np.ndarray
    bins: np.ndarray
    sounds: list[list[str]]
    note: str = ""

    @property
    def k(self) -> int:
        return int(self.bins.size)


def jackknife_folds(
    n_bins: int, trial_bins: np.ndarray, sound_ids, k: int, seed: int = 0
) -> JackknifeFolds:
    """Deal the fit sounds into ``k`` folds of about equal duration, for jackknife fits.

    Every presentation of a sound goes to the same fold, so a fit without fold ``j`` has
    never heard fold ``j``'s sounds. Sounds are dealt longest first, each to the fold with
    the fewest bins so far (ties between sounds of equal length are broken by a permutation
    seeded by ``seed``, ties between folds by the lower index); the folds then differ by at
    most the longest sound. With fewer sounds than ``k``, the longest piece is cut in two
    halves (in trial-relative bins: the same stretch of every presentation) until there are
    ``k`` pieces, and ``note`` says so; neighbouring chunks of one sound share the stimulus
    context across the cut.

    Parameters
    ----------
    n_bins : int
        Bins of the session.
    trial_bins : ndarray of int, shape (n_trials, 2)
        ``[first, stop)`` bins of the fit trials.
    sound_ids : sequence of str, shape (n_trials,)
        Sound of each fit trial.
    k : int
        Number of folds (>= 2).
    seed : int
        Seed of the tie-breaking permutation.

    Returns
    -------
    JackknifeFolds

    Raises
    ------
    ValueError
        For ``k < 2``, malformed trials, or fit trials too short to give ``k`` pieces.
    """
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 2:
        raise ValueError(f"k (the number of jackknife folds) must be an integer >= 2; got {k!r}")
    trial_bins = np.asarray(trial_bins, dtype=np.int64).reshape(-1, 2)
    sound_ids = np.asarray([str(s) for s in np.asarray(sound_ids, dtype=object).reshape(-1)])
    if sound_ids.size != trial_bins.shape[0]:
        raise ValueError(
            f"need one sound id per fit trial; got {sound_ids.size} for {trial_bins.shape[0]}"
        )
    if trial_bins.size and (
        (trial_bins[:, 0] < 0).any()
        or (trial_bins[:, 1] > n_bins).any()
        or (trial_bins[:, 1] < trial_bins[:, 0]).any()
    ):
        raise ValueError(f"fit trial bins must satisfy 0 <= first <= stop <= {n_bins}")
    lengths = trial_bins[:, 1] - trial_bins[:, 0]
    names = sorted({s for s, n in zip(sound_ids, lengths, strict=True) if n > 0})
    span = {s: int(lengths[sound_ids == s].max()) for s in names}
    pieces = [(s, 0, span[s]) for s in names]  # (sound, first, stop) in trial-relative bins

    def duration(piece: tuple[str, int, int]) -> int:
        s, a, b = piece
        return int(np.clip(lengths[sound_ids == s], a, b).sum() - a * (sound_ids == s).sum())

    cut = len(pieces) < k
    while len(pieces) < k:
        longest = max(range(len(pieces)), key=lambda i: (pieces[i][2] - pieces[i][1], -i))
        s, a, b = pieces[longest]
        if b - a < 2:
            raise ValueError(
                f"the fit data ({int(lengths.sum())} bins in {len(names)} sound(s)) cannot be "
                f"cut into {k} jackknife folds; use fewer folds ([training] jackknife)"
            )
        pieces[longest : longest + 1] = [(s, a, a + (b - a) // 2), (s, a + (b - a) // 2, b)]
    order = np.random.default_rng(seed).permutation(len(pieces))
    order = sorted(order.tolist(), key=lambda i: -duration(pieces[i]))  # stable: longest first
    totals = np.zeros(k, dtype=np.int64)
    fold_of = {}
    for i in order:
        f = int(np.argmin(totals))
        fold_of[pieces[i]] = f
        totals[f] += duration(pieces[i])
    by_sound: dict[str, list[tuple[int, int, int]]] = {}
    for (s, a, b), f in fold_of.items():
        by_sound.setdefault(s, []).append((a, b, f))
    labels = np.full(int(n_bins), -1, dtype=np.int64)
    for (first, stop), s in zip(trial_bins, sound_ids, strict=True):
        for a, b, f in by_sound.get(s, []):
            labels[first + a : min(first + b, stop)] = f
    sounds: list[list[str]] = [[] for _ in range(k)]
    for (s, a, b), f in sorted(fold_of.items(), key=lambda item: item[0]):
        sounds[f].append(str(s) if not cut else f"{s} [{a}:{b})")
    note = ""
    if cut:
        note = (
            f"{len(names)} fit sound(s) for {k} jackknife folds: the sounds were cut into "
            f"{len(pieces)} contiguous chunks (every presentation of a chunk in one fold); a "
            "fold's chunk shares stimulus context with its neighbours across the cut"
        )
    bins = np.bincount(labels[labels >= 0], minlength=k).astype(np.int64)
    return JackknifeFolds(labels=labels, bins=bins, sounds=sounds, note=note)


def training_info(config: TrainingConfig, history: FitHistory, device: str):
    """The training record stored with a fitted model (``results.TrainingInfo``)."""
    from nwb_subspace.results import TrainingInfo

    return TrainingInfo(
        loss=config.loss,
        epochs=len(history.train_loss),
        seed=config.seed,
        learning_rates=(config.lr_stage1, config.lr_stage2),
        best_epoch=history.best_epoch,
        l2=config.l2,
        n_initializations=config.n_initializations,
        device=str(device),
        training_loss=np.asarray(history.train_loss),
        validation_loss=np.asarray(history.holdout_loss),
    )


@flushed_denormals()
def predict(
    model: EncodingModel, X: np.ndarray, *, device: str | torch.device = "cpu", chunk: int = 20000
) -> np.ndarray:
    """Predicted counts per bin ``(n_bins, N)`` for a whole spectrogram, in chunks.

    Each chunk is preceded by ``memory - 1`` bins of real context, so the result equals one
    pass over the whole recording.
    """
    X = np.asarray(X, dtype=np.float32)
    if not np.isfinite(X).all():
        raise ValueError("the spectrogram holds NaN/inf; recompute it before predicting")
    ctx = model.memory - 1
    dev = torch.device(device)
    model = model.to(dev).eval()
    out = []
    with torch.no_grad():
        for start in range(0, X.shape[0], chunk):
            lo = max(0, start - ctx)
            xb = torch.from_numpy(X[lo : start + chunk]).to(dev)[None]
            out.append(model(xb)[0, start - lo :].cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, model.n_units), np.float32)
