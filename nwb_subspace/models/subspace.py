"""Subspace model (docs/methods.md, "Subspace model"): each unit sees the stimulus only through its own
tuning subspace.

::

    x (batch, time, F)
      -> per unit u: project the last D bins onto its k_u basis filters (F, D)   (SubspaceProjection)
      -> per unit u: MLP k_u -> 15 -> ReLU -> 15 -> ReLU -> 1                   (UnitMLP)
      -> double exponential per unit                                            (optional)

All units run together: bases are zero-padded to ``k_max = max(k_u)`` and a mask zeroes the
padding projections, and the per-unit MLPs use batched weights (``einsum``), so there is no
Python loop over units. The bases are fixed (a buffer, saved in ``state_dict``); the config
holds only sizes. Memory is ``n_lags`` (D) bins.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nwb_subspace.models.layers import (
    DoubleExponential,
    EncodingModel,
    check_bool,
    check_int,
    layer_row,
    sum_of_squares,
    uniform_,
)

__all__ = ["SubspaceModel", "SubspaceProjection", "UnitMLP"]


def _check_components(n_components: int | Sequence[int], n_units: int) -> list[int]:
    """Normalise ``n_components`` to a list of ``n_units`` ints >= 1."""
    if isinstance(n_components, int | np.integer) and not isinstance(n_components, bool):
        n_components = [int(n_components)] * n_units
    if isinstance(n_components, str | bytes) or not isinstance(n_components, Sequence | np.ndarray):
        raise TypeError(
            f"n_components must be an int or a list of n_units={n_units} ints, got {n_components!r}"
        )
    if len(n_components) != n_units:
        raise ValueError(
            f"n_components has {len(n_components)} entries but n_units={n_units}; "
            "give one subspace dimensionality per unit"
        )
    return [check_int(f"n_components[{u}]", k) for u, k in enumerate(n_components)]


class SubspaceProjection(nn.Module):
    """Project the stimulus onto each unit's basis filters (the subspace model's core).

    Parameters
    ----------
    n_frequencies : int
        Spectrogram channels F.
    n_lags : int
        Bins D spanned by each basis filter; the memory.
    n_components : list of int
        Subspace dimensionality k_u of each unit (its length is the number of units).

    Attributes
    ----------
    bases : Tensor buffer, shape (n_units, k_max, n_frequencies, n_lags)
        Basis filters, zero beyond ``n_components[u]``; time order on the last axis (last =
        current bin). Starts at zero; set with :meth:`set_bases` or ``load_state_dict``.
    mask : Tensor buffer (not saved), shape (n_units, k_max)
        1 for real components, 0 for padding.
    memory : int
    """

    def __init__(self, n_frequencies: int, n_lags: int, n_components: Sequence[int]) -> None:
        super().__init__()
        self.n_frequencies = check_int("n_frequencies", n_frequencies)
        self.memory = check_int("n_lags", n_lags)
        self.n_components = [check_int("n_components[u]", k) for k in n_components]
        if not self.n_components:
            raise ValueError("n_components is empty; give at least one unit")
        self.n_units = len(self.n_components)
        self.k_max = max(self.n_components)
        k = torch.tensor(self.n_components)
        mask = (torch.arange(self.k_max)[None, :] < k[:, None]).to(torch.float32)
        self.register_buffer(
            "bases", torch.zeros(self.n_units, self.k_max, self.n_frequencies, self.memory)
        )
        self.register_buffer("mask", mask, persistent=False)

    def set_bases(self, bases: Sequence[np.ndarray | Tensor]) -> SubspaceProjection:
        """Copy per-unit bases in; returns ``self``.

        Parameters
        ----------
        bases : sequence of arrays, one per unit, each of shape (k_u, n_frequencies, n_lags)
            ``k_u`` must equal ``n_components[u]``.
        """
        if len(bases) != self.n_units:
            raise ValueError(
                f"got {len(bases)} bases for {self.n_units} units; give one (k_u, F, D) "
                "array per unit"
            )
        new = torch.zeros_like(self.bases)
        for u, basis in enumerate(bases):
            b = torch.as_tensor(np.asarray(basis) if not isinstance(basis, Tensor) else basis)
            expected = (self.n_components[u], self.n_frequencies, self.memory)
            if tuple(b.shape) != expected:
                raise ValueError(
                    f"basis of unit {u} has shape {tuple(b.shape)}, expected {expected} "
                    "(n_components[u], n_frequencies, n_lags)"
                )
            new[u, : expected[0]] = b.to(new.dtype)
        if not torch.isfinite(new).all():
            raise ValueError("bases contain NaN or inf values; fix the basis arrays")
        with torch.no_grad():
            self.bases.copy_(new)
        return self

    def forward(self, x: Tensor) -> Tensor:
        """Map padded ``(batch, time + D - 1, F)`` to projections ``(batch, time, N, k_max)``."""
        weight = (self.bases * self.mask[:, :, None, None]).reshape(
            self.n_units * self.k_max, self.n_frequencies, self.memory
        )
        p = F.conv1d(x.transpose(1, 2), weight)  # (batch, N * k_max, time)
        return p.transpose(1, 2).reshape(x.shape[0], -1, self.n_units, self.k_max)

    def regularizer(self) -> Tensor:
        """Zero: the bases are fixed."""
        return self.bases.new_zeros(())

    def layer_summary(self, prefix: str = "core") -> list[dict[str, Any]]:
        """One row: the per-unit projection onto ``k_max`` basis filters of ``n_lags`` bins."""
        f, k = self.n_frequencies, self.k_max
        return [layer_row(f"{prefix}.bases", "projection", f, k, self.memory, "none")]

    def tensor_dims(self) -> dict[str, tuple[str, ...]]:
        """Dimension names of each ``state_dict`` entry."""
        return {"bases": ("unit", "component", "frequency", "lag")}

    def extra_repr(self) -> str:
        return (
            f"n_frequencies={self.n_frequencies}, n_lags={self.memory}, "
            f"n_units={self.n_units}, k_max={self.k_max}"
        )


class UnitMLP(nn.Module):
    """Independent per-unit MLPs ``k_max -> n_hidden1 -> n_hidden2 -> 1``, batched over units.

    Parameters
    ----------
    n_units : int
    n_inputs : int
        Input size per unit (``k_max``).
    n_hidden1, n_hidden2 : int, default 15, 15
    fan_in : sequence of int, optional
        Real input size of each unit (``n_components``) for the initial weight scale
        U(-1/sqrt(fan_in), 1/sqrt(fan_in)); defaults to ``n_inputs`` for every unit.

    Attributes
    ----------
    weight1 : (n_units, n_inputs, n_hidden1)     bias1 : (n_units, n_hidden1)
    weight2 : (n_units, n_hidden1, n_hidden2)    bias2 : (n_units, n_hidden2)
    weight3 : (n_units, n_hidden2)               bias3 : (n_units,)
    """

    def __init__(
        self,
        n_units: int,
        n_inputs: int,
        *,
        n_hidden1: int = 15,
        n_hidden2: int = 15,
        fan_in: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        self.n_units = check_int("n_units", n_units)
        self.n_inputs = check_int("n_inputs", n_inputs)
        h1 = self.n_hidden1 = check_int("n_hidden1", n_hidden1)
        h2 = self.n_hidden2 = check_int("n_hidden2", n_hidden2)
        n = self.n_units
        fans = [self.n_inputs] * n if fan_in is None else list(fan_in)
        self.weight1 = nn.Parameter(torch.empty(n, self.n_inputs, h1))
        self.bias1 = nn.Parameter(torch.empty(n, h1))
        for u, fan in enumerate(fans):
            uniform_(self.weight1.data[u], fan)
            uniform_(self.bias1.data[u], fan)
        self.weight2 = nn.Parameter(uniform_(torch.empty(n, h1, h2), h1))
        self.bias2 = nn.Parameter(uniform_(torch.empty(n, h2), h1))
        self.weight3 = nn.Parameter(uniform_(torch.empty(n, h2), h2))
        self.bias3 = nn.Parameter(uniform_(torch.empty(n), h2))

    def forward(self, p: Tensor) -> Tensor:
        """Map ``(batch, time, n_units, n_inputs)`` to ``(batch, time, n_units)``.

        On the CPU in float32 the units' layers run as grouped 1 x 1 convolutions over the
        time bins (channels last, one group per unit; oneDNN): a training step of 16 windows
        x 128 bins x 60 units took 10-11 ms against 13-14 ms with batched ``einsum``
        products (MKL's small batched GEMMs) on a 2-core AMD EPYC. Elsewhere, ``einsum``.
        Same numbers up to float rounding order.
        """
        if p.device.type == "cpu" and p.dtype == torch.float32:
            return self._grouped_conv_forward(p)
        h = torch.relu(torch.einsum("btuk,ukh->btuh", p, self.weight1) + self.bias1)
        h = torch.relu(torch.einsum("btuh,uhg->btug", h, self.weight2) + self.bias2)
        return torch.einsum("btug,ug->btu", h, self.weight3) + self.bias3

    def _grouped_conv_forward(self, p: Tensor) -> Tensor:
        b, t, u, k = p.shape
        h1, h2 = self.n_hidden1, self.n_hidden2
        x = p.reshape(b, t, u * k).permute(0, 2, 1).unsqueeze(2)  # (b, u*k, 1, t), channels last
        w1 = self.weight1.transpose(1, 2).reshape(u * h1, k, 1, 1)
        h = torch.relu(F.conv2d(x, w1, self.bias1.reshape(-1), groups=u))
        w2 = self.weight2.transpose(1, 2).reshape(u * h2, h1, 1, 1)
        h = torch.relu(F.conv2d(h, w2, self.bias2.reshape(-1), groups=u))
        out = F.conv2d(h, self.weight3.reshape(u, h2, 1, 1), self.bias3, groups=u)  # (b, u, 1, t)
        return out.squeeze(2).transpose(1, 2)

    def offset(self) -> Tensor:
        """The per-unit offset of the output (``bias3``)."""
        return self.bias3

    def regularizer(self) -> Tensor:
        """Sum of squared weights (biases excluded)."""
        return sum_of_squares(self.weight1, self.weight2, self.weight3)

    def layer_summary(self, prefix: str = "readout") -> list[dict[str, Any]]:
        """Rows of the per-unit MLP (sizes are per unit; all units share the shapes)."""
        h1, h2 = self.n_hidden1, self.n_hidden2
        return [
            layer_row(f"{prefix}.weight1", "unit_dense", self.n_inputs, h1, 1, "relu"),
            layer_row(f"{prefix}.weight2", "unit_dense", h1, h2, 1, "relu"),
            layer_row(f"{prefix}.weight3", "unit_dense", h2, 1, 1, "none"),
        ]

    def tensor_dims(self) -> dict[str, tuple[str, ...]]:
        """Dimension names of each ``state_dict`` entry."""
        return {
            "weight1": ("unit", "component", "hidden1"),
            "bias1": ("unit", "hidden1"),
            "weight2": ("unit", "hidden1", "hidden2"),
            "bias2": ("unit", "hidden2"),
            "weight3": ("unit", "hidden2"),
            "bias3": ("unit",),
        }

    def extra_repr(self) -> str:
        return (
            f"n_units={self.n_units}, n_inputs={self.n_inputs}, "
            f"n_hidden1={self.n_hidden1}, n_hidden2={self.n_hidden2}"
        )


class SubspaceModel(EncodingModel):
    """Per-unit subspace model for N units at once.

    Parameters
    ----------
    n_frequencies : int
        Spectrogram channels F.
    n_units : int
        Number of units N.
    n_lags : int
        Bins D spanned by each basis filter; the model's memory.
    n_components : int or list of int
        Subspace dimensionality k_u per unit (an int applies to every unit).
    n_hidden1, n_hidden2 : int, default 15, 15
        Hidden layer sizes of each unit's MLP.
    output_nonlinearity : bool, default True
        End with a per-unit double exponential; ``False`` returns the MLP output.

    Notes
    -----
    The bases start at zero. Set them with :meth:`set_bases`, build the model directly from
    them with :meth:`from_bases`, or restore them with ``load_state_dict`` (key
    ``"core.bases"``). Unit ``u``'s output depends only on its own basis and weights.

    Examples
    --------
    >>> bases = [torch.randn(3, 32, 20), torch.randn(5, 32, 20)]
    >>> model = SubspaceModel.from_bases(bases)
    >>> model.config["n_components"], model.memory
    ([3, 5], 20)
    """

    kind = "subspace"

    def __init__(
        self,
        n_frequencies: int,
        n_units: int,
        *,
        n_lags: int,
        n_components: int | Sequence[int],
        n_hidden1: int = 15,
        n_hidden2: int = 15,
        output_nonlinearity: bool = True,
    ) -> None:
        n_units = check_int("n_units", n_units)
        components = _check_components(n_components, n_units)
        core = SubspaceProjection(n_frequencies, n_lags, components)
        readout = UnitMLP(
            n_units, core.k_max, n_hidden1=n_hidden1, n_hidden2=n_hidden2, fan_in=components
        )
        use_output = check_bool("output_nonlinearity", output_nonlinearity)
        output = DoubleExponential(n_units) if use_output else None
        super().__init__(core, readout, output)
        self._set_config(
            n_frequencies=core.n_frequencies,
            n_units=n_units,
            n_lags=core.memory,
            n_components=components,
            n_hidden1=readout.n_hidden1,
            n_hidden2=readout.n_hidden2,
            output_nonlinearity=use_output,
        )

    @classmethod
    def from_bases(
        cls,
        bases: Sequence[np.ndarray | Tensor],
        *,
        n_hidden1: int = 15,
        n_hidden2: int = 15,
        output_nonlinearity: bool = True,
    ) -> SubspaceModel:
        """Build a model whose sizes are read from per-unit bases, and copy the bases in.

        Parameters
        ----------
        bases : sequence of arrays, one per unit, each of shape (k_u, n_frequencies, n_lags)
        n_hidden1, n_hidden2, output_nonlinearity
            As in the constructor.
        """
        if isinstance(bases, Tensor | np.ndarray) or not isinstance(bases, Sequence):
            raise TypeError(
                "bases must be a list with one (k_u, F, D) array per unit, got "
                f"{type(bases).__name__}; for a (N, k, F, D) array pass list(array)"
            )
        if not bases:
            raise ValueError("bases is empty; give one (k_u, F, D) array per unit")
        shapes = [tuple(np.shape(b)) for b in bases]
        if any(len(s) != 3 for s in shapes) or len({s[1:] for s in shapes}) != 1:
            raise ValueError(
                f"every basis must have shape (k_u, F, D) with the same F and D; got {shapes}"
            )
        model = cls(
            shapes[0][1],
            len(bases),
            n_lags=shapes[0][2],
            n_components=[s[0] for s in shapes],
            n_hidden1=n_hidden1,
            n_hidden2=n_hidden2,
            output_nonlinearity=output_nonlinearity,
        )
        model.set_bases(bases)
        return model

    def set_bases(self, bases: Sequence[np.ndarray | Tensor]) -> SubspaceModel:
        """Copy per-unit bases ``(k_u, F, D)`` into the model; returns ``self``."""
        self.core.set_bases(bases)
        return self

    @property
    def n_components(self) -> list[int]:
        """Subspace dimensionality of each unit."""
        return list(self.core.n_components)
