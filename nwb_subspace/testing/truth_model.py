"""The simulator's true rate as a causal torch model (a shipped test helper).

:class:`TruthRateModel` reproduces :meth:`nwb_subspace.simulate.GroundTruth.rate` (divided
by the bin rate: counts per bin) as an ``nn.Module`` with the attributes the dSTRF code
needs (``memory``, ``n_frequencies``, ``n_units``), so exact dSTRFs, tuning subspaces and
SRFs can be checked against the ground truth without fitting a model.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["TruthRateModel", "truth_filters_model_order"]


class TruthRateModel(nn.Module):
    """Causal torch model of the simulated true rate, in counts per bin.

    Parameters
    ----------
    truth : GroundTruth
        From :func:`nwb_subspace.simulate.load_truth`.
    rate_hz : float, default 100.0
        Bins per second (the rate is divided by it).

    Notes
    -----
    The truth's filters use "lag ``l`` = ``l`` bins back"; the model lag order (index ``j``
    multiplies bin ``t - D + 1 + j``) is the reverse, ``j = D - 1 - l``.
    """

    kind = "truth"

    def __init__(self, truth, rate_hz: float = 100.0) -> None:
        super().__init__()
        if not rate_hz > 0:
            raise ValueError(f"rate_hz must be > 0 bins/s; got {rate_hz!r}, e.g. 100.0")
        self.truth = truth
        u, kmax, f, d = truth.filters.shape
        self.n_units, self.n_frequencies, self.memory = u, f, d
        w = torch.as_tensor(truth.filters[..., ::-1].copy(), dtype=torch.float32)
        self.register_buffer("weight", w.reshape(u * kmax, f, d))
        self.register_buffer("offsets", torch.as_tensor(truth.offsets, dtype=torch.float32))
        self.kmax = kmax
        self.scale = 1.0 / float(rate_hz)

    def forward(self, x: Tensor) -> Tensor:
        """Counts per bin ``(batch, time, n_units)`` for ``x`` ``(batch, time, F)``."""
        t = self.truth
        b, n = x.shape[0], x.shape[1]
        xp = F.pad(x.transpose(1, 2), (self.memory - 1, 0))
        z = F.conv1d(xp, self.weight).transpose(1, 2).reshape(b, n, self.n_units, self.kmax)
        z = z - self.offsets
        outs = []
        for u in range(self.n_units):
            k = int(t.k[u])
            zu = z[..., u, :k]
            c = torch.as_tensor(t.nl_centre[u, :k], dtype=x.dtype)
            w = float(t.nl_width[u])
            if str(t.nl_kind[u]) in ("hill", "bowl"):
                bump = torch.exp(-0.5 * ((zu - c) ** 2).sum(-1) / w**2)
                g = bump if str(t.nl_kind[u]) == "hill" else 1.0 - bump
            else:
                s = torch.as_tensor(t.nl_sign[u, :k], dtype=x.dtype)
                g = (w * F.softplus((s * zu - c) / w)).mean(-1)
            g = g.clamp_min(0) ** float(t.nl_power[u])
            outs.append(float(t.base_rate[u]) + float(t.amplitude[u]) * g)
        return torch.stack(outs, -1) * self.scale


def truth_filters_model_order(truth, unit: int, n_lags: int) -> np.ndarray:
    """The unit's ``k`` true filters, shape (k, F, n_lags), in model lag order.

    Lags beyond the truth's filter length are zero; with ``n_lags`` shorter than it, the
    oldest lags are cut.
    """
    f = truth.unit_filters(unit)[..., ::-1]
    out = np.zeros((f.shape[0], f.shape[1], n_lags))
    d = min(n_lags, f.shape[2])
    out[..., n_lags - d :] = f[..., f.shape[2] - d :]
    return out
