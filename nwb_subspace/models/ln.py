"""Population linear-nonlinear (LN) model, the comparison model of docs/methods.md ("Architectures").

::

    x (batch, time, F)
      -> dense F -> 120 (rank-reduced spectral weighting)
      -> 25-tap causal filter per channel                          (LNCore)
      -> dense 120 -> N                                            (Readout)
      -> double exponential per unit                               (optional)

Everything before the output nonlinearity is linear, so each unit's drive is a
spectro-temporal receptive field of rank <= ``n_channels`` and ``n_taps`` bins. Memory is
``n_taps`` bins (25 with the defaults).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from nwb_subspace.models.layers import (
    CausalDepthwiseConv1d,
    DoubleExponential,
    EncodingModel,
    Readout,
    check_bool,
    check_int,
    layer_row,
    second_difference_roughness,
    sum_of_squares,
    uniform_,
)

__all__ = ["LNCore", "PopulationLN"]


class LNCore(nn.Module):
    """Linear core: spectral weighting followed by one causal filter per channel.

    Parameters
    ----------
    n_frequencies : int
        Spectrogram channels F.
    n_channels : int, default 120
        Spectral weightings (rank of the shared filter bank).
    n_taps : int, default 25
        Temporal filter length (bins); also the memory.

    Attributes
    ----------
    spectral : nn.Parameter, shape (n_channels, n_frequencies)
    temporal : CausalDepthwiseConv1d
        Without bias (the readout's bias covers it).
    memory : int
    """

    def __init__(self, n_frequencies: int, *, n_channels: int = 120, n_taps: int = 25) -> None:
        super().__init__()
        self.n_frequencies = check_int("n_frequencies", n_frequencies)
        self.n_channels = check_int("n_channels", n_channels)
        n_taps = check_int("n_taps", n_taps)
        self.spectral = nn.Parameter(
            uniform_(torch.empty(self.n_channels, self.n_frequencies), self.n_frequencies)
        )
        self.temporal = CausalDepthwiseConv1d(self.n_channels, n_taps, bias=False, pad=False)
        self.memory = n_taps

    def forward(self, x: Tensor) -> Tensor:
        """Map padded ``(batch, time + memory - 1, F)`` to ``(batch, time, n_channels)``."""
        h = torch.matmul(x, self.spectral.T).transpose(1, 2)  # (batch, channel, time)
        return self.temporal(h).transpose(1, 2)

    def regularizer(self) -> Tensor:
        """Sum of squared weights."""
        return sum_of_squares(self.spectral, self.temporal.weight)

    @torch.no_grad()
    def fold_input_standardization(self, mean: Tensor, std: Tensor) -> Tensor:
        """Make a core trained on ``(x - mean) / std`` act on ``x`` itself.

        The spectral weightings are divided by ``std``; the constant this leaves on each
        output channel (``-(spectral / s) @ m`` times the sum of its temporal taps; the
        temporal filters have no bias) is returned for the readout to absorb.
        """
        self.spectral.div_(std[None, :])
        shift = self.spectral @ mean
        return -shift * self.temporal.weight.sum(dim=1)

    def roughness(self) -> Tensor:
        """Squared second differences of the spectral weightings (along frequency) and the
        temporal filters (along lag)."""
        return second_difference_roughness(self.spectral) + second_difference_roughness(
            self.temporal.weight
        )

    def tensor_dims(self) -> dict[str, tuple[str, ...]]:
        """Dimension names of each ``state_dict`` entry."""
        dims: dict[str, tuple[str, ...]] = {"spectral": ("channel", "frequency")}
        for key, names in self.temporal.tensor_dims("channel", "lag").items():
            dims[f"temporal.{key}"] = names
        return dims

    def layer_summary(self, prefix: str = "core") -> list[dict[str, Any]]:
        """Rows describing the core's layers, input first."""
        c = self.n_channels
        return [
            layer_row(f"{prefix}.spectral", "dense", self.n_frequencies, c, 1, "none"),
            layer_row(f"{prefix}.temporal", "temporal_conv", c, c, self.memory, "none"),
        ]

    def extra_repr(self) -> str:
        return f"n_frequencies={self.n_frequencies}, memory={self.memory}"


class PopulationLN(EncodingModel):
    """Population LN model: :class:`LNCore` -> :class:`Readout` -> :class:`DoubleExponential`.

    Parameters
    ----------
    n_frequencies : int
        Spectrogram channels F.
    n_units : int
        Units predicted together (N).
    n_channels : int, default 120
        Spectral weightings shared by all units.
    n_taps : int, default 25
        Temporal filter length (bins); the model's memory.
    output_nonlinearity : bool, default True
        End with a per-unit double exponential; ``False`` returns the linear drive.
    """

    kind = "ln"

    def __init__(
        self,
        n_frequencies: int,
        n_units: int,
        *,
        n_channels: int = 120,
        n_taps: int = 25,
        output_nonlinearity: bool = True,
    ) -> None:
        core = LNCore(n_frequencies, n_channels=n_channels, n_taps=n_taps)
        readout = Readout(core.n_channels, n_units, input_dim="channel")
        use_output = check_bool("output_nonlinearity", output_nonlinearity)
        output = DoubleExponential(readout.n_units) if use_output else None
        super().__init__(core, readout, output)
        self._set_config(
            n_frequencies=core.n_frequencies,
            n_units=readout.n_units,
            n_channels=core.n_channels,
            n_taps=core.memory,
            output_nonlinearity=use_output,
        )

    def strf(self) -> Tensor:
        """Each unit's effective spectro-temporal filter (before the output nonlinearity).

        Returns
        -------
        Tensor, shape (n_units, n_frequencies, n_taps)
            Time order along the last axis (last = current bin); detached.
        """
        with torch.no_grad():
            # drive_u(t) = sum_c W[u, c] sum_j h[c, j] sum_f S[c, f] x[t - L + 1 + j, f]
            return torch.einsum(
                "uc,cj,cf->ufj", self.readout.weight, self.core.temporal.weight, self.core.spectral
            )
