"""Streaming per-unit first and second moments of dSTRF frames (float32 GEMMs, float64 sums).

Each unit's covariance is ``sum_t (J_t - c)(J_t - c)^T`` over its frames, with ``c`` a fixed
provisional centre (the mean of the first chunk, for numerical stability). A chunk of ``B``
frames of ``n`` units, ``(n, B, P)``, adds ``dev^T dev`` for every unit into a float32
buffer with batched GEMMs (``torch.baddbmm``) over the pixel blocks on and below the block
diagonal (10 of 16 blocks for ``P >= 512``; the others follow by symmetry); the buffer is flushed into the float64
total every ``flush_every`` frames, so the float64 conversion (``n * P^2`` per flush) costs
little next to the products (``n P^2`` flops per frame). Memory is ``n * P^2 * 12`` bytes
whatever the number of frames.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["MomentAccumulator", "pixel_blocks"]


def pixel_blocks(p: int, n_blocks: int = 4, smallest: int = 128) -> list[slice]:
    """Up to ``n_blocks`` equal slices of ``p`` pixels, none under ``smallest`` (one block
    for small ``p``): the blocks of the symmetric products that are computed."""
    k = max(1, min(n_blocks, p // smallest))
    edges = [round(i * p / k) for i in range(k + 1)]
    return [slice(a, b) for a, b in zip(edges[:-1], edges[1:], strict=True)]


class MomentAccumulator:
    """Float64 moments of ``n`` units' frames of ``P`` pixels, fed float32 chunks (n, B, P).

    Parameters
    ----------
    n, p : int
        Units and pixels.
    flush_every : int, default 8192
        Frames summed in float32 before they are added to the float64 totals (the
        flush costs ``n * P^2`` float64 additions, about 0.2 us per unit and frame at 8192;
        a float32 sum of 8192 products has a relative rounding error of order
        ``sqrt(8192) * 6e-8 = 5e-6``).
    device : str or torch.device, default "cpu"
        Where the totals live: the device the frames come from.
    """

    def __init__(
        self, n: int, p: int, *, flush_every: int = 8192, device: str | torch.device = "cpu"
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
        self._buf: list[Tensor] | None = None
        blocks = pixel_blocks(p)
        self._block_pairs = [(r, c) for i, r in enumerate(blocks) for c in blocks[: i + 1]]
        self._buffered = 0
        self.flush_every = int(flush_every)

    def add(
        self,
        jac: Tensor,
        sign: float = 1.0,
        weight: Tensor | None = None,
        *,
        consume: bool = False,
    ) -> Tensor:
        """Add (``sign=+1``) or remove (``-1``) frames; ``weight`` (n, B) of 0/1 selects them.

        Frames with a NaN or inf pixel are never added; on adding they are counted in
        ``nonfinite``. ``consume=True`` lets the frames' memory be reused (the caller does
        not read ``jac`` afterwards), which saves a copy of the chunk. Returns each frame's
        distance from the provisional centre, ``||J - centre||`` (n, B), 0 for frames left
        out.
        """
        if self.centre is None:
            self.centre = self._first_centre(jac, weight)
        dev = jac.sub_(self.centre[:, None, :]) if consume else jac - self.centre[:, None, :]
        norm = torch.linalg.vector_norm(dev, dim=-1)  # (n, B): finite iff every pixel is
        finite = torch.isfinite(norm)
        all_finite = bool(finite.all())
        if not all_finite:
            dev = torch.where(finite[..., None], dev, dev.new_zeros(()))
            norm = torch.where(finite, norm, norm.new_zeros(()))
        w = finite.to(jac.dtype) if weight is None else weight.to(jac.dtype) * finite
        if weight is not None or not all_finite:
            dev.mul_(w[..., None])
            norm = norm * w
        sq = norm.double().square()
        if sign > 0:
            self.total += jac.shape[1]
            self.nonfinite += (~finite).sum(1)
            self.max_dev = torch.maximum(self.max_dev, sq.max(1).values.sqrt())
        self.count += sign * w.sum(1).double()
        ones = dev.new_ones(dev.shape[0], 1, dev.shape[1])
        self.sum_dev += sign * torch.bmm(ones, dev)[:, 0].double()  # a GEMV: one fast pass
        self.sumsq_dev += sign * sq.sum(1)
        self._add_products(dev, sign)
        self._buffered += jac.shape[1]
        if self._buffered >= self.flush_every:
            self.flush()
        return norm

    @staticmethod
    def _first_centre(jac: Tensor, weight: Tensor | None) -> Tensor:
        """The provisional centre: the mean of the first chunk's finite (selected) frames."""
        w = torch.isfinite(jac.sum(-1)).to(jac.dtype)  # a sum is finite iff every term is
        if weight is not None:
            w = w * weight.to(jac.dtype)
        clean = torch.where(w[..., None] > 0, jac, jac.new_zeros(()))
        return clean.sum(1) / w.sum(1).clamp_min(1.0)[:, None]

    def _add_products(self, dev: Tensor, sign: float) -> None:
        """``sign * dev^T dev`` per unit into the float32 buffers, only the pixel blocks on
        and below the block diagonal (:func:`pixel_blocks`; the rest follows by symmetry):
        one batched GEMM over the units per block, into a buffer of its own (62.5% of a
        full product's work with 4 blocks)."""
        if self._buf is None:
            self._buf = [
                dev.new_zeros(dev.shape[0], rows.stop - rows.start, cols.stop - cols.start)
                for rows, cols in self._block_pairs
            ]
        cols_t = dev.transpose(1, 2)
        for buf, (rows, cols) in zip(self._buf, self._block_pairs, strict=True):
            buf.baddbmm_(cols_t[:, rows], dev[:, :, cols], alpha=sign)

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

    def subtract_units(self, rows: Tensor, other: MomentAccumulator) -> None:
        """Remove from units ``rows`` the frames ``other`` holds (one row per entry of
        ``rows``, accumulated around the same centres): count, sums and second moments, in
        float64. ``total``, ``nonfinite`` and ``max_dev`` are kept."""
        if other.centre is None:
            return
        if self.centre is None or not torch.equal(self.centre[rows], other.centre):
            raise ValueError("other must be accumulated around these units' own centres")
        self.flush()
        other.flush()
        for name in ("count", "sum_dev", "sumsq_dev", "m2"):
            getattr(self, name)[rows] -= getattr(other, name)

    def flush(self) -> None:
        """Move the float32 buffer into the float64 totals."""
        if self._buf is not None and self._buffered:
            for buf, (rows, cols) in zip(self._buf, self._block_pairs, strict=True):
                self.m2[:, rows, cols] += buf
                buf.zero_()
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

    def covariance(self, order: Tensor | None = None) -> Tensor:
        """Centred covariance (divided by ``count - 1``), (n, P, P) float64.

        Parameters
        ----------
        order : Tensor of int, shape (P,), optional
            A permutation of the pixels: the covariance of the pixels in this order
            (``cov[:, order][:, :, order]``) is returned, at no extra cost.

        Notes
        -----
        One new ``(n, P, P)`` array is made (a gather of the float64 sums, completed by
        symmetry in place), and the rest is done in place: at 60 units of 768 pixels the
        old chain of whole-array expressions took ~2 s, a cost per unit that the frames
        of a short recording (8,000 bins) did not amortise (~4 us per unit and frame).
        """
        self.flush()
        m2 = self.m2
        for rows, cols in self._block_pairs:  # the blocks above the diagonal, by symmetry
            if rows != cols:
                m2[:, cols, rows] = m2[:, rows, cols].transpose(1, 2)
        delta = self._delta()
        if order is None:
            cov = m2.clone()
        else:
            order = order.to(m2.device)
            cov = m2[:, order[:, None], order[None, :]]
            delta = delta[:, order]
        n = self.count.clamp_min(1.0)
        dof = (n - 1).clamp_min(1.0)
        # (m2 / n - delta delta^T) * n / dof, as m2 / dof - (delta s)(delta s)^T, s^2 = n / dof
        cov.div_(dof[:, None, None])
        scaled = delta * (n / dof).sqrt()[:, None]
        return cov.baddbmm_(scaled[:, :, None], scaled[:, None, :], alpha=-1.0)
