"""Streaming per-unit first and second moments of dSTRF frames (float32 GEMMs, float64 sums).

Each unit's covariance is ``sum_t (J_t - c)(J_t - c)^T`` over its frames, with ``c`` a fixed
provisional centre (the mean of the first chunk, for numerical stability). A chunk of ``B``
frames of ``n`` units, ``(n, B, P)``, adds ``dev^T dev`` for every unit at once with one
batched GEMM (``torch.baddbmm``) into a float32 buffer; the buffer is flushed into the float64
total every ``flush_every`` frames, so the float64 conversion (``n * P^2`` per flush) costs
little next to the GEMMs (``2 n P^2`` flops per frame). Memory is ``n * P^2 * 12`` bytes
whatever the number of frames.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["MomentAccumulator"]


class MomentAccumulator:
    """Float64 moments of ``n`` units' frames of ``P`` pixels, fed float32 chunks (n, B, P).

    Parameters
    ----------
    n, p : int
        Units and pixels.
    flush_every : int, default 1024
        Frames summed in float32 before they are added to the float64 totals.
    device : str or torch.device, default "cpu"
        Where the totals live: the device the frames come from.
    """

    def __init__(
        self, n: int, p: int, *, flush_every: int = 1024, device: str | torch.device = "cpu"
    ) -> None:
        f64 = {"dtype": torch.float64, "device": device}
        self.count = torch.zeros(n, **f64)
        self.total = torch.zeros(n, dtype=torch.long, device=device)
        self.nonfinite = torch.zeros(n, dtype=torch.long, device=device)
        self.sum_dev = torch.zeros(n, p, **f64)
        self.sumsq_dev = torch.zeros(n, **f64)
        self.m2 = torch.zeros(n, p, p, **f64)
        self.max_dev = torch.zeros(n, **f64)
        self.centre: Tensor | None = None
        self._buf: Tensor | None = None
        self._buffered = 0
        self.flush_every = int(flush_every)

    def add(self, jac: Tensor, sign: float = 1.0, weight: Tensor | None = None) -> None:
        """Add (``sign=+1``) or remove (``-1``) frames; ``weight`` (n, B) of 0/1 selects them.

        Frames with a NaN or inf pixel are never added; on adding they are counted in
        ``nonfinite``.
        """
        finite = torch.isfinite(jac.sum(-1))  # (n, B): a sum is finite iff every term is
        all_finite = bool(finite.all())
        if not all_finite:
            jac = torch.where(finite[..., None], jac, jac.new_zeros(()))
        w = finite.to(jac.dtype) if weight is None else weight.to(jac.dtype) * finite
        if self.centre is None:
            n_f = w.sum(1).clamp_min(1.0)
            self.centre = (jac * w[..., None]).sum(1) / n_f[:, None]
        dev = jac - self.centre[:, None, :]
        if weight is not None or not all_finite:
            dev = dev * w[..., None]
        sq = (dev * dev).sum(-1).double()  # (n, B) squared deviation of each frame
        if sign > 0:
            self.total += jac.shape[1]
            self.nonfinite += (~finite).sum(1)
            self.max_dev = torch.maximum(self.max_dev, sq.max(1).values.sqrt())
        self.count += sign * w.sum(1).double()
        self.sum_dev += sign * dev.sum(1).double()
        self.sumsq_dev += sign * sq.sum(1)
        if self._buf is None:
            self._buf = jac.new_zeros(self.m2.shape)
        self._buf.baddbmm_(dev.transpose(1, 2), dev, alpha=sign)
        self._buffered += jac.shape[1]
        if self._buffered >= self.flush_every:
            self.flush()

    def replace_units(self, rows: Tensor, other: MomentAccumulator) -> None:
        """Take the frame moments of units ``rows`` from ``other`` (one row per entry of
        ``rows``, fed the same pixels); ``total``, ``nonfinite`` and ``max_dev`` are kept."""
        self.flush()
        other.flush()
        if other.centre is None:
            raise ValueError("other holds no frames")
        if self.centre is None:
            self.centre = other.centre.new_zeros(self.sum_dev.shape)
        self.centre[rows] = other.centre
        for name in ("count", "sum_dev", "sumsq_dev", "m2"):
            getattr(self, name)[rows] = getattr(other, name)

    def flush(self) -> None:
        """Move the float32 buffer into the float64 totals."""
        if self._buf is not None and self._buffered:
            self.m2 += self._buf.double()
            self._buf.zero_()
        self._buffered = 0

    def _delta(self) -> Tensor:
        return self.sum_dev / self.count.clamp_min(1.0)[:, None]

    def mean(self) -> Tensor:
        """Mean of the frames added, (n, P) float64."""
        centre = self.centre.double() if self.centre is not None else 0.0
        return centre + self._delta()

    def rms_deviation(self) -> Tensor:
        """``sqrt(mean ||J - mean||^2)`` over the frames added, (n,)."""
        n = self.count.clamp_min(1.0)
        var = self.sumsq_dev / n - (self._delta() ** 2).sum(1)
        return var.clamp_min(0.0).sqrt()

    def covariance(self) -> Tensor:
        """Centred covariance (divided by ``count - 1``), (n, P, P) float64."""
        self.flush()
        n = self.count.clamp_min(1.0)
        delta = self._delta()
        cov = self.m2 / n[:, None, None] - delta[:, :, None] * delta[:, None, :]
        return cov * (n / (n - 1).clamp_min(1.0))[:, None, None]
