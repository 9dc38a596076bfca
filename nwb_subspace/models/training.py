"""Fitting encoding models: the reference two-stage Adam recipe with early stopping.

Data are one continuous session: a spectrogram ``X`` (n_bins, F) and spike counts ``Y``
(n_bins, N) on the same clock, plus boolean masks saying which bins are fitted
(``train_mask``) and which decide early stopping (``holdout_mask``). The timeline is cut into
windows of ``window`` bins, each preceded by ``memory - 1`` bins of real stimulus context, so
every scored bin sees exactly the stimulus history it had in the experiment; bins outside the
masks (validation repeats, silences) are never scored.

Recipe (DESIGN.md section 3): stage 1 fits the linear drive with the output nonlinearity held
out (mean squared error, lr 1e-3); the double exponential is then initialised from the data
and stage 2 fits the whole model (Poisson or MSE loss, lr 1e-4). Both stages use L2 on core
and readout weights and early stopping on the holdout bins with the best weights restored;
the best of several random initialisations is kept.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import Tensor

from ..denormals import flushed_denormals
from ..progress import progress_bar
from .layers import EncodingModel

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
        Upper bounds on epochs (passes over the training windows).
    patience : int
        Epochs without holdout improvement before a stage stops.
    n_initializations : int
        Random initialisations tried; the one with the lowest holdout loss is kept.
    window : int
        Scored bins per training window.
    batch_windows : int
        Windows per optimiser step.
    seed : int
        Seed of initialisation and window order; the same seed gives bitwise-equal fits on
        the CPU.
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

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}; got {self.loss!r}")
        for name in ("lr_stage1", "lr_stage2"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0; got {getattr(self, name)!r}")
        for name in ("l2", "smoothness"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
                raise ValueError(f"{name} must be a number >= 0; got {value!r}")
        for name in (
            "max_epochs_stage1",
            "max_epochs_stage2",
            "patience",
            "n_initializations",
            "window",
            "batch_windows",
        ):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, int)
                or value < (0 if name.startswith("max_epochs") else 1)
            ):
                raise ValueError(f"{name} must be a positive integer; got {value!r}")

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


def _windows(mask: np.ndarray, window: int) -> np.ndarray:
    """Start bins of the windows of ``window`` bins that contain at least one masked bin."""
    starts = np.arange(0, mask.size, window)
    keep = [s for s in starts if mask[s : s + window].any()]
    return np.asarray(keep, dtype=np.int64)


class _Batches:
    """Windows of the timeline as tensors: stimulus with context, targets, score weights."""

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

    def __len__(self) -> int:
        return int(self.starts.size)


def _loss(pred: Tensor, y: Tensor, w: Tensor, kind: str) -> Tensor:
    """Sum over scored bins and units of the per-bin loss."""
    if kind == "poisson":
        per = pred - y * torch.log(pred.clamp_min(1e-8))
    else:
        per = (pred - y) ** 2
    return (per * w[..., None]).sum()


def _epoch_loss(fn: Callable[[Tensor], Tensor], data: _Batches, kind: str, chunk: int) -> float:
    total = 0.0
    with torch.no_grad():
        for i in range(0, len(data), chunk):
            out = fn(data.x[i : i + chunk])[:, data.ctx :]
            total += float(_loss(out, data.y[i : i + chunk], data.w[i : i + chunk], kind))
    return total / max(data.n_scored, 1.0)


def _run_stage(
    model: EncodingModel,
    fn,
    train: _Batches,
    hold: _Batches,
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


def _init_output(model: EncodingModel, train: _Batches) -> None:
    """Start the double exponential where the stage-1 drive and the data say it should be."""
    if model.output is None:
        return
    with torch.no_grad():
        chunks = [
            model.drive(train.x[i : i + 64])[:, train.ctx :] for i in range(0, len(train), 64)
        ]
        drive = torch.cat(chunks).reshape(-1, model.n_units)
        weight = train.w.reshape(-1) > 0
        drive, y = drive[weight], train.y.reshape(-1, model.n_units)[weight]
        mean_y = y.mean(0)
        hi = torch.quantile(drive, 0.99, dim=0)
        lo = torch.quantile(drive, 0.01, dim=0)
        spread = (hi - lo).clamp_min(1e-3)
        model.output.reset_parameters(
            base=torch.zeros_like(mean_y),
            amp=(y.max(0).values.clamp_min(1.0) * 1.0 + 2 * mean_y),
            kappa=torch.log(4.0 / spread),
            shift=-(lo + hi) / 2,
        )


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


@flushed_denormals()
def fit_model(
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
        Of the initialisation with the lowest holdout loss.
    """
    cfg = config or TrainingConfig()
    X = np.asarray(X, dtype=np.float32)
    Y = np.asarray(Y, dtype=np.float32)
    train_mask = np.asarray(train_mask)
    holdout_mask = np.asarray(holdout_mask)
    check_training_data(X, Y, train_mask, holdout_mask, model.memory)
    if (train_mask & holdout_mask).any():
        raise ValueError("train_mask and holdout_mask overlap; holdout bins must be unseen")
    dev = torch.device(device)
    Xt, Yt = torch.from_numpy(X).to(dev), torch.from_numpy(Y).to(dev)
    train = _Batches(Xt, Yt, train_mask, cfg.window, model.memory)
    hold = _Batches(Xt, Yt, holdout_mask, cfg.window, model.memory)
    build = build or (lambda: _fresh_like(model))
    train_mean = Yt[torch.from_numpy(train_mask).to(dev)].mean(0)
    best_model, best_hist = None, None
    start = time.perf_counter()
    for init in range(cfg.n_initializations):
        torch.manual_seed(cfg.seed * 1000 + init)
        gen = torch.Generator().manual_seed(cfg.seed * 1000 + init)
        candidate = model if init == 0 else build()
        torch.manual_seed(cfg.seed * 1000 + init)
        candidate = candidate.to(dev).train()
        hist = FitHistory(initialization=init)
        candidate.set_drive_offset(train_mean)
        _run_stage(
            candidate,
            candidate.drive,
            train,
            hold,
            "mse",
            cfg.lr_stage1,
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
                candidate.forward,
                train,
                hold,
                cfg.loss,
                cfg.lr_stage2,
                cfg.max_epochs_stage2,
                cfg,
                gen,
                hist,
                2,
                progress,
            )
        if every_fit is not None:
            every_fit.append((candidate.eval(), hist))
        if best_hist is None or hist.best_holdout_loss < best_hist.best_holdout_loss:
            best_model, best_hist = candidate, hist
    best_hist.seconds = time.perf_counter() - start
    return best_model.eval(), best_hist


def training_info(config: TrainingConfig, history: FitHistory, device: str):
    """The training record stored with a fitted model (``results.TrainingInfo``)."""
    from ..results import TrainingInfo

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
