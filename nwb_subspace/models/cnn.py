"""Population CNN ("1D-CNN x2", docs/methods.md "Architectures") as a core and a readout.

::

    x (batch, time, F)
      -> dense F -> 70 (spectral weightings) -> 15-tap causal filter per channel -> ReLU
      -> dense 70 -> 80                      -> 10-tap causal filter per channel -> ReLU
      -> dense 80 -> 100 -> ReLU                                   (end of CNNCore)
      -> dense 100 -> N                                            (Readout)
      -> double exponential per unit                               (optional)

Memory is ``n_taps1 + n_taps2 - 1`` bins (24 with the defaults, 240 ms at 100 Hz).
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

__all__ = ["CNNCore", "PopulationCNN"]


class CNNCore(nn.Module):
    """Shared feature extractor of the population CNN.

    Parameters
    ----------
    n_frequencies : int
        Spectrogram channels F.
    n_channels1 : int, default 70
        Spectral weightings of the first layer.
    n_taps1 : int, default 15
        Temporal filter length of the first layer (bins).
    n_channels2 : int, default 80
        Channels of the second layer.
    n_taps2 : int, default 10
        Temporal filter length of the second layer (bins).
    n_hidden : int, default 100
        Size of the dense layer that ends the core (the features given to the readout).

    Attributes
    ----------
    spectral : nn.Parameter, shape (n_channels1, n_frequencies)
    temporal1 : CausalDepthwiseConv1d
    mix : nn.Parameter, shape (n_channels2, n_channels1)
    temporal2 : CausalDepthwiseConv1d
    dense : nn.Linear
    memory : int
        ``n_taps1 + n_taps2 - 1``.

    Notes
    -----
    The two channel-mixing matrices have no bias: the temporal filter that follows each has
    one. The core expects its input already padded by ``memory - 1`` bins (as
    :meth:`EncodingModel.drive` does) and returns ``memory - 1`` fewer bins.
    """

    def __init__(
        self,
        n_frequencies: int,
        *,
        n_channels1: int = 70,
        n_taps1: int = 15,
        n_channels2: int = 80,
        n_taps2: int = 10,
        n_hidden: int = 100,
    ) -> None:
        super().__init__()
        self.n_frequencies = check_int("n_frequencies", n_frequencies)
        n_channels1 = check_int("n_channels1", n_channels1)
        n_channels2 = check_int("n_channels2", n_channels2)
        n_taps1 = check_int("n_taps1", n_taps1)
        n_taps2 = check_int("n_taps2", n_taps2)
        self.n_hidden = check_int("n_hidden", n_hidden)
        self.spectral = nn.Parameter(
            uniform_(torch.empty(n_channels1, n_frequencies), n_frequencies)
        )
        self.temporal1 = CausalDepthwiseConv1d(n_channels1, n_taps1, pad=False)
        self.mix = nn.Parameter(uniform_(torch.empty(n_channels2, n_channels1), n_channels1))
        self.temporal2 = CausalDepthwiseConv1d(n_channels2, n_taps2, pad=False)
        self.dense = nn.Linear(n_channels2, self.n_hidden)
        self.memory = self.temporal1.n_taps + self.temporal2.n_taps - 1

    def forward(self, x: Tensor) -> Tensor:
        """Map padded ``(batch, time + memory - 1, F)`` to ``(batch, time, n_hidden)``."""
        h = torch.matmul(x, self.spectral.T).transpose(1, 2)  # (batch, channel1, time)
        h = torch.relu(self.temporal1(h))
        h = torch.matmul(self.mix, h)  # (batch, channel2, time)
        h = torch.relu(self.temporal2(h))
        return torch.relu(self.dense(h.transpose(1, 2)))

    def regularizer(self) -> Tensor:
        """Sum of squared weights (biases excluded)."""
        return sum_of_squares(
            self.spectral, self.temporal1.weight, self.mix, self.temporal2.weight, self.dense.weight
        )

    @torch.no_grad()
    def fold_input_standardization(self, mean: Tensor, std: Tensor) -> None:
        """Make a core trained on ``(x - mean) / std`` act on ``x`` itself.

        ``spectral @ ((x - m) / s) = (spectral / s) @ x - (spectral / s) @ m``: the spectral
        weightings are divided by ``std`` and the constant goes into the first temporal
        filters' bias (times the sum of their taps). Exact, except in the ``memory - 1``
        zero-padded bins before the first bin of a recording. Returns None (nothing is left
        for the readout).
        """
        self.spectral.div_(std[None, :])
        shift = self.spectral @ mean  # (n_channels1,)
        self.temporal1.bias.sub_(shift * self.temporal1.weight.sum(dim=1))

    def roughness(self) -> Tensor:
        """Squared second differences of the first layer's filters: the spectral weightings
        along frequency and the first temporal filters along lag (the layer that sets the
        dSTRFs' spectro-temporal detail)."""
        return second_difference_roughness(self.spectral) + second_difference_roughness(
            self.temporal1.weight
        )

    def layer_summary(self, prefix: str = "core") -> list[dict[str, Any]]:
        """Rows describing the core's layers, input first."""
        c1, c2 = self.spectral.shape[0], self.mix.shape[0]
        t1, t2 = self.temporal1.n_taps, self.temporal2.n_taps
        return [
            layer_row(f"{prefix}.spectral", "dense", self.n_frequencies, c1, 1, "none"),
            layer_row(f"{prefix}.temporal1", "temporal_conv", c1, c1, t1, "relu"),
            layer_row(f"{prefix}.mix", "dense", c1, c2, 1, "none"),
            layer_row(f"{prefix}.temporal2", "temporal_conv", c2, c2, t2, "relu"),
            layer_row(f"{prefix}.dense", "dense", c2, self.n_hidden, 1, "relu"),
        ]

    def tensor_dims(self) -> dict[str, tuple[str, ...]]:
        """Dimension names of each ``state_dict`` entry."""
        dims: dict[str, tuple[str, ...]] = {"spectral": ("channel1", "frequency")}
        for key, names in self.temporal1.tensor_dims("channel1", "lag1").items():
            dims[f"temporal1.{key}"] = names
        dims["mix"] = ("channel2", "channel1")
        for key, names in self.temporal2.tensor_dims("channel2", "lag2").items():
            dims[f"temporal2.{key}"] = names
        dims["dense.weight"] = ("hidden", "channel2")
        dims["dense.bias"] = ("hidden",)
        return dims

    def extra_repr(self) -> str:
        return f"n_frequencies={self.n_frequencies}, memory={self.memory}"


class PopulationCNN(EncodingModel):
    """Population CNN: :class:`CNNCore` -> :class:`Readout` -> :class:`DoubleExponential`.

    Parameters
    ----------
    n_frequencies : int
        Spectrogram channels F.
    n_units : int
        Units predicted together (N).
    n_channels1, n_taps1, n_channels2, n_taps2, n_hidden : int, default 70, 15, 80, 10, 100
        Core sizes, see :class:`CNNCore`.
    output_nonlinearity : bool, default True
        End with a per-unit double exponential; ``False`` returns the linear drive.

    Examples
    --------
    >>> model = PopulationCNN(32, 60)
    >>> model(torch.zeros(2, 100, 32)).shape
    torch.Size([2, 100, 60])
    >>> model.memory
    24
    """

    kind = "cnn"

    def __init__(
        self,
        n_frequencies: int,
        n_units: int,
        *,
        n_channels1: int = 70,
        n_taps1: int = 15,
        n_channels2: int = 80,
        n_taps2: int = 10,
        n_hidden: int = 100,
        output_nonlinearity: bool = True,
    ) -> None:
        core = CNNCore(
            n_frequencies,
            n_channels1=n_channels1,
            n_taps1=n_taps1,
            n_channels2=n_channels2,
            n_taps2=n_taps2,
            n_hidden=n_hidden,
        )
        readout = Readout(core.n_hidden, n_units, input_dim="hidden")
        use_output = check_bool("output_nonlinearity", output_nonlinearity)
        output = DoubleExponential(readout.n_units) if use_output else None
        super().__init__(core, readout, output)
        self._set_config(
            n_frequencies=core.n_frequencies,
            n_units=readout.n_units,
            n_channels1=int(n_channels1),
            n_taps1=int(n_taps1),
            n_channels2=int(n_channels2),
            n_taps2=int(n_taps2),
            n_hidden=core.n_hidden,
            output_nonlinearity=use_output,
        )
