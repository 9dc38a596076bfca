"""Building blocks shared by the encoding models.

Conventions used by every model in :mod:`nwb_subspace.models`
-------------------------------------------------------------
* Input ``x`` is a spectrogram tensor of shape ``(batch, time, n_frequencies)``, float32.
* Output is a rate tensor of shape ``(batch, time, n_units)``, same length as the input.
* Models are **causal** with a finite ``memory``: the output at bin ``t`` depends only on
  ``x[t - memory + 1 .. t]``. The input is padded on the left with ``memory - 1`` zero bins
  once, before the first layer; in the log-compressed spectrogram zero is silence, so the
  first outputs equal those of the same model run on a recording preceded by silence.
* Temporal filters and spectro-temporal bases are stored in **time order**: along a ``"lag"``
  dimension of length ``L``, index ``j`` multiplies bin ``t - (L - 1) + j`` (oldest first,
  the last index is the current bin), the same order as the window ``x[t - L + 1 : t + 1]``.

This module holds the output nonlinearity (:class:`DoubleExponential`), the causal temporal
filter (:class:`CausalDepthwiseConv1d`), the dense population :class:`Readout`, and
:class:`EncodingModel`, the ``core -> readout -> output`` composition that every model kind
subclasses (neuralpredictors style).

A *core* is any ``nn.Module`` with ``forward(x) -> features`` (features' leading dims
``(batch, time)``), integer attributes ``n_frequencies`` and ``memory``, and methods
``regularizer() -> Tensor`` and ``tensor_dims() -> dict`` (optionally ``roughness() ->
Tensor``, the smoothness penalty of its spectro-temporal filters). A *readout* maps the core's
features to ``(batch, time, n_units)`` and has ``n_units``, ``regularizer()`` and
``tensor_dims()``.
"""

from __future__ import annotations

import inspect
import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "CausalDepthwiseConv1d",
    "DoubleExponential",
    "EncodingModel",
    "Readout",
    "causal_pad",
    "check_bool",
    "check_int",
    "layer_row",
    "second_difference_roughness",
    "sum_of_squares",
    "uniform_",
]

#: Lower clamp on the scaled input of the double exponential, ``exp(kappa) * (x + shift)``.
#: Below it the function equals ``base`` to float precision; the clamp keeps
#: ``exp(-exp(-s))`` and its gradient finite (no ``0 * inf``) for very negative drives.
_DEXP_MIN_SCALED_INPUT = -30.0


# --------------------------------------------------------------------------------------
# validation helpers (private; error messages quote the bad value and the fix)
# --------------------------------------------------------------------------------------


def check_int(name: str, value: Any, *, minimum: int = 1) -> int:
    """Return ``value`` as ``int`` if it is an integer >= ``minimum``, else raise."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(
            f"{name} must be an int >= {minimum}, got {value!r} of type {type(value).__name__}; "
            f"pass a whole number such as {max(minimum, 1)}"
        )
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}; pass a larger value")
    return int(value)


def check_bool(name: str, value: Any) -> bool:
    """Return ``value`` if it is a bool, else raise ``TypeError``."""
    if not isinstance(value, bool | np.bool_):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def uniform_(tensor: Tensor, fan_in: int) -> Tensor:
    """Fill ``tensor`` in place from U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (torch's default)."""
    bound = 1.0 / math.sqrt(max(fan_in, 1))
    with torch.no_grad():
        return tensor.uniform_(-bound, bound)


def second_difference_roughness(weight: Tensor) -> Tensor:
    """Sum of squared second differences along the last axis of ``weight``.

    Zero for a straight line; penalises the jagged filters that directions of the stimulus
    with little variance leave undetermined (a smoothness prior, as in STRF estimation).
    """
    if weight.shape[-1] < 3:
        return weight.new_zeros(())
    d2 = weight[..., 2:] - 2 * weight[..., 1:-1] + weight[..., :-2]
    return d2.pow(2).sum()


def sum_of_squares(*tensors: Tensor) -> Tensor:
    """Sum of squared entries over ``tensors`` (at least one), as a scalar tensor."""
    return sum((t.pow(2).sum() for t in tensors[1:]), tensors[0].pow(2).sum())


def causal_pad(x: Tensor, n_bins: int) -> Tensor:
    """Prepend ``n_bins`` zero bins along the time axis (dim 1) of ``x``.

    Parameters
    ----------
    x : Tensor, shape (batch, time, ...)
        Time-major tensor.
    n_bins : int
        Number of zero bins to prepend (``memory - 1`` for a model with that memory).

    Returns
    -------
    Tensor, shape (batch, time + n_bins, ...)
    """
    if n_bins == 0:
        return x
    pad = x.new_zeros((x.shape[0], n_bins, *x.shape[2:]))
    return torch.cat([pad, x], dim=1)


# --------------------------------------------------------------------------------------
# layers
# --------------------------------------------------------------------------------------


def layer_row(
    name: str, layer_type: str, in_size: int, out_size: int, kernel_size: int, activation: str
) -> dict[str, Any]:
    """One row of a model's layer summary (see :meth:`EncodingModel.layer_summary`)."""
    return {
        "layer_name": name,
        "layer_type": layer_type,
        "in_size": int(in_size),
        "out_size": int(out_size),
        "kernel_size": int(kernel_size),
        "activation": activation,
    }


class DoubleExponential(nn.Module):
    r"""Per-unit double-exponential (Gompertz) output nonlinearity.

    .. math:: r_u = b_u + a_u \exp\left(-\exp\left(-e^{\kappa_u} (x_u + s_u)\right)\right)

    For ``amp > 0`` the map is increasing in ``x`` and bounded in ``(base, base + amp)``;
    ``exp(kappa)`` is the slope scale (always positive) and ``shift`` moves the inflection
    point, which sits at ``x = -shift`` with value ``base + amp / e``.

    Parameters
    ----------
    n_units : int
        Number of units; each parameter is a vector of this length.
    base, amp, kappa, shift : float, default 0, 1, 0, 0
        Initial values, broadcast to every unit. Use :meth:`reset_parameters` to set
        per-unit values (e.g. from the data before the second training stage).

    Attributes
    ----------
    base, amp, kappa, shift : nn.Parameter, shape (n_units,)

    Notes
    -----
    :meth:`freeze` / :meth:`unfreeze` switch ``requires_grad`` of all four parameters, so the
    nonlinearity can be held fixed while the rest of the model trains (the two-stage recipe
    of docs/methods.md, "Training recipe"). An optimiser built from ``filter(lambda p: p.requires_grad,
    model.parameters())`` then skips them.
    """

    def __init__(
        self,
        n_units: int,
        *,
        base: float = 0.0,
        amp: float = 1.0,
        kappa: float = 0.0,
        shift: float = 0.0,
    ) -> None:
        super().__init__()
        self.n_units = check_int("n_units", n_units)
        self.base = nn.Parameter(torch.empty(self.n_units))
        self.amp = nn.Parameter(torch.empty(self.n_units))
        self.kappa = nn.Parameter(torch.empty(self.n_units))
        self.shift = nn.Parameter(torch.empty(self.n_units))
        self.reset_parameters(base=base, amp=amp, kappa=kappa, shift=shift)

    def reset_parameters(
        self,
        *,
        base: float | Sequence[float] | np.ndarray | Tensor = 0.0,
        amp: float | Sequence[float] | np.ndarray | Tensor = 1.0,
        kappa: float | Sequence[float] | np.ndarray | Tensor = 0.0,
        shift: float | Sequence[float] | np.ndarray | Tensor = 0.0,
    ) -> DoubleExponential:
        """Set the parameters in place (scalars or per-unit vectors of length ``n_units``).

        Returns
        -------
        DoubleExponential
            ``self``.
        """
        values = {"base": base, "amp": amp, "kappa": kappa, "shift": shift}
        with torch.no_grad():
            for name, value in values.items():
                param: Tensor = getattr(self, name)
                v = torch.as_tensor(value, dtype=param.dtype)
                if v.ndim > 1 or (v.ndim == 1 and v.shape[0] != self.n_units):
                    raise ValueError(
                        f"{name} must be a scalar or have shape ({self.n_units},), got shape "
                        f"{tuple(v.shape)}; pass one value per unit"
                    )
                if not torch.isfinite(v).all():
                    raise ValueError(f"{name} must be finite, got {value!r}")
                param.copy_(v.expand(self.n_units))
        return self

    def forward(self, x: Tensor) -> Tensor:
        """Apply the nonlinearity to ``x`` of shape ``(..., n_units)``."""
        scaled = torch.exp(self.kappa) * (x + self.shift)
        scaled = scaled.clamp(min=_DEXP_MIN_SCALED_INPUT)
        return self.base + self.amp * torch.exp(-torch.exp(-scaled))

    def freeze(self) -> DoubleExponential:
        """Hold the parameters fixed (``requires_grad = False``); returns ``self``."""
        return self.requires_grad_(False)

    def unfreeze(self) -> DoubleExponential:
        """Let the parameters train again (``requires_grad = True``); returns ``self``."""
        return self.requires_grad_(True)

    @property
    def frozen(self) -> bool:
        """True when no parameter requires a gradient."""
        return not any(p.requires_grad for p in self.parameters())

    def tensor_dims(self) -> dict[str, tuple[str, ...]]:
        """Dimension names of each ``state_dict`` entry."""
        return {name: ("unit",) for name in ("base", "amp", "kappa", "shift")}

    def extra_repr(self) -> str:
        return f"n_units={self.n_units}"


class CausalDepthwiseConv1d(nn.Module):
    """One causal FIR filter per channel (a depthwise ``conv1d``).

    Works on channel-first tensors ``(batch, n_channels, time)`` as ``torch.nn.Conv1d`` does.
    The output at ``t`` is ``bias[c] + sum_j weight[c, j] * x[c, t - n_taps + 1 + j]``.

    Parameters
    ----------
    n_channels : int
        Number of channels (each has its own filter).
    n_taps : int
        Filter length in bins.
    bias : bool, default True
        Learn a per-channel offset.
    pad : bool, default True
        Prepend ``n_taps - 1`` zeros so the output has the input's length. Models pass
        ``False`` because they pad their input once (see the module notes); then the output
        is ``n_taps - 1`` bins shorter than the input.

    Attributes
    ----------
    weight : nn.Parameter, shape (n_channels, n_taps)
        Filters in time order (last tap = current bin).
    bias : nn.Parameter of shape (n_channels,) or None
    """

    def __init__(self, n_channels: int, n_taps: int, *, bias: bool = True, pad: bool = True):
        super().__init__()
        self.n_channels = check_int("n_channels", n_channels)
        self.n_taps = check_int("n_taps", n_taps)
        self.pad = check_bool("pad", pad)
        self.weight = nn.Parameter(torch.empty(self.n_channels, self.n_taps))
        uniform_(self.weight, self.n_taps)
        if check_bool("bias", bias):
            self.bias: nn.Parameter | None = nn.Parameter(torch.empty(self.n_channels))
            uniform_(self.bias, self.n_taps)
        else:
            self.register_parameter("bias", None)

    def forward(self, x: Tensor) -> Tensor:
        """Filter ``x`` of shape ``(batch, n_channels, time)``."""
        if self.pad and self.n_taps > 1:
            x = F.pad(x, (self.n_taps - 1, 0))
        return F.conv1d(x, self.weight.unsqueeze(1), self.bias, groups=self.n_channels)

    def tensor_dims(self, channel: str = "channel", lag: str = "lag") -> dict[str, tuple[str, ...]]:
        """Dimension names of each ``state_dict`` entry, with the given dimension names."""
        dims = {"weight": (channel, lag)}
        if self.bias is not None:
            dims["bias"] = (channel,)
        return dims

    def extra_repr(self) -> str:
        return (
            f"n_channels={self.n_channels}, n_taps={self.n_taps}, "
            f"bias={self.bias is not None}, pad={self.pad}"
        )


class Readout(nn.Module):
    """Dense population readout: ``(batch, time, n_inputs) -> (batch, time, n_units)``.

    Parameters
    ----------
    n_inputs : int
        Size of the core's feature vector.
    n_units : int
        Number of units predicted.
    bias : bool, default True
        Learn a per-unit offset.
    input_dim : str, default "feature"
        Name of the input dimension in :meth:`tensor_dims` (e.g. ``"hidden"``).

    Attributes
    ----------
    weight : nn.Parameter, shape (n_units, n_inputs)
    bias : nn.Parameter of shape (n_units,) or None
    """

    def __init__(
        self, n_inputs: int, n_units: int, *, bias: bool = True, input_dim: str = "feature"
    ) -> None:
        super().__init__()
        self.n_inputs = check_int("n_inputs", n_inputs)
        self.n_units = check_int("n_units", n_units)
        self.input_dim = input_dim
        self.weight = nn.Parameter(torch.empty(self.n_units, self.n_inputs))
        uniform_(self.weight, self.n_inputs)
        if check_bool("bias", bias):
            self.bias: nn.Parameter | None = nn.Parameter(torch.empty(self.n_units))
            uniform_(self.bias, self.n_inputs)
        else:
            self.register_parameter("bias", None)

    def forward(self, features: Tensor) -> Tensor:
        """Map ``(batch, time, n_inputs)`` features to ``(batch, time, n_units)``."""
        return F.linear(features, self.weight, self.bias)

    def regularizer(self) -> Tensor:
        """Sum of squared weights (biases excluded); scale it by the L2 strength."""
        return sum_of_squares(self.weight)

    def offset(self) -> Tensor | None:
        """The per-unit offset of the drive (the bias), or None."""
        return self.bias

    def tensor_dims(self) -> dict[str, tuple[str, ...]]:
        """Dimension names of each ``state_dict`` entry."""
        dims = {"weight": ("unit", self.input_dim)}
        if self.bias is not None:
            dims["bias"] = ("unit",)
        return dims

    def extra_repr(self) -> str:
        return f"n_inputs={self.n_inputs}, n_units={self.n_units}, bias={self.bias is not None}"

    def layer_summary(self, prefix: str = "readout") -> list[dict[str, Any]]:
        """Rows describing this layer (see :meth:`EncodingModel.layer_summary`)."""
        return [layer_row(prefix, "dense", self.n_inputs, self.n_units, 1, "none")]


# --------------------------------------------------------------------------------------
# core + readout composition
# --------------------------------------------------------------------------------------


class EncodingModel(nn.Module):
    """Base class: ``rate = output(readout(core(x)))``, causal, rebuildable from ``config``.

    Subclasses set the class attribute ``kind`` and build their core, readout and output
    nonlinearity in ``__init__`` from keyword settings, which they record with
    :meth:`_set_config`; ``type(model)(**model.config)`` then rebuilds the architecture and
    ``load_state_dict`` restores the weights.

    Parameters
    ----------
    core : nn.Module
        Maps ``(batch, time + memory - 1, n_frequencies)`` (already padded) to features of
        shape ``(batch, time, ...)``. See the module notes for the attributes it needs.
    readout : nn.Module
        Maps the core's features to the linear drive ``(batch, time, n_units)``.
    output : DoubleExponential or None
        Output nonlinearity; ``None`` returns the linear drive.
    """

    kind: ClassVar[str] = ""

    def __init__(self, core: nn.Module, readout: nn.Module, output: DoubleExponential | None):
        super().__init__()
        self.core = core
        self.readout = readout
        self.output = output
        self._config: dict[str, Any] = {}

    # ---- configuration ---------------------------------------------------------------

    def _set_config(self, **settings: Any) -> None:
        self._config = dict(settings)

    @property
    def config(self) -> dict[str, Any]:
        """Settings that rebuild this architecture (JSON-serialisable; weights excluded)."""
        return {k: list(v) if isinstance(v, list) else v for k, v in self._config.items()}

    @classmethod
    def config_keys(cls) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """Names of the ``(required, optional)`` config keys of this model kind."""
        params = list(inspect.signature(cls.__init__).parameters.values())[1:]
        required = tuple(p.name for p in params if p.default is inspect.Parameter.empty)
        optional = tuple(p.name for p in params if p.default is not inspect.Parameter.empty)
        return required, optional

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> EncodingModel:
        """Build a freshly initialised model from a ``config`` dict.

        Raises
        ------
        TypeError
            If ``config`` is not a mapping, or a value has the wrong type.
        ValueError
            If a key is unknown or missing, or a value is out of range.
        """
        if not isinstance(config, Mapping):
            raise TypeError(
                f"config for kind {cls.kind!r} must be a dict, got {type(config).__name__}"
            )
        required, optional = cls.config_keys()
        unknown = sorted(set(config) - set(required) - set(optional))
        if unknown:
            raise ValueError(
                f"unknown config key(s) {unknown} for model kind {cls.kind!r}; "
                f"allowed keys are {sorted(required + optional)}"
            )
        missing = [k for k in required if k not in config]
        if missing:
            raise ValueError(
                f"config for model kind {cls.kind!r} lacks required key(s) {missing}; "
                f"add them (required: {list(required)})"
            )
        return cls(**config)

    # ---- sizes -----------------------------------------------------------------------

    @property
    def memory(self) -> int:
        """Number of spectrogram bins (current one included) that each output depends on."""
        return int(self.core.memory)

    @property
    def n_frequencies(self) -> int:
        """Number of spectrogram channels expected on the last input axis."""
        return int(self.core.n_frequencies)

    @property
    def n_units(self) -> int:
        """Number of units predicted."""
        return int(self.readout.n_units)

    def n_parameters(self, *, trainable_only: bool = False) -> int:
        """Number of scalar parameters (buffers excluded).

        Parameters
        ----------
        trainable_only : bool, default False
            Count only parameters with ``requires_grad``.
        """
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    # ---- forward ---------------------------------------------------------------------

    def _check_input(self, x: Tensor) -> None:
        if not isinstance(x, Tensor):
            raise TypeError(
                f"x must be a torch.Tensor, got {type(x).__name__}; "
                "use torch.as_tensor(x, dtype=torch.float32)"
            )
        if x.ndim != 3 or x.shape[-1] != self.n_frequencies:
            hint = "; add a batch axis with x.unsqueeze(0)" if x.ndim == 2 else ""
            raise ValueError(
                f"x must have shape (batch, time, {self.n_frequencies}), got {tuple(x.shape)}{hint}"
            )
        ref = next(itertools.chain(self.parameters(), self.buffers()))
        if x.dtype != ref.dtype:
            raise TypeError(
                f"x has dtype {x.dtype} but the model is {ref.dtype}; "
                f"convert with x.to({ref.dtype})"
            )

    def drive(self, x: Tensor) -> Tensor:
        """Linear drive before the output nonlinearity.

        Parameters
        ----------
        x : Tensor, shape (batch, time, n_frequencies)
            Spectrogram, same dtype as the model (float32 by default).

        Returns
        -------
        Tensor, shape (batch, time, n_units)
        """
        self._check_input(x)
        return self.readout(self.core(causal_pad(x, self.memory - 1)))

    def forward(self, x: Tensor) -> Tensor:
        """Predicted rate ``(batch, time, n_units)`` for ``x`` ``(batch, time, n_frequencies)``.

        Equals :meth:`drive` when the model has no output nonlinearity.
        """
        z = self.drive(x)
        return z if self.output is None else self.output(z)

    # ---- training hooks --------------------------------------------------------------

    def regularizer(self) -> Tensor:
        """Sum of squared weights of core and readout (scale by the L2 strength to train)."""
        return self.core.regularizer() + self.readout.regularizer()

    def roughness(self) -> Tensor:
        """Smoothness penalty of the core's spectro-temporal filters (zero if it has none).

        Scale it by ``TrainingConfig.smoothness`` to train; see :func:`second_difference_roughness`.
        """
        rough = getattr(self.core, "roughness", None)
        if rough is None:
            return next(self.parameters()).new_zeros(())
        return rough()

    def set_drive_offset(self, values: Tensor) -> EncodingModel:
        """Set the per-unit offset of the linear drive (the readout's last bias).

        Training starts it at each unit's mean response: Adam moves a parameter by about the
        learning rate per step, so an offset started at 0 would need hundreds of steps just
        to reach the mean rate. No-op for a readout without an offset; returns ``self``.
        """
        bias = self.readout.offset()
        if bias is not None:
            with torch.no_grad():
                bias.copy_(torch.as_tensor(values, dtype=bias.dtype, device=bias.device))
        return self

    @property
    def can_standardize_input(self) -> bool:
        """Whether :meth:`fold_input_standardization` is available for this core."""
        return hasattr(self.core, "fold_input_standardization")

    @torch.no_grad()
    def fold_input_standardization(self, mean: Tensor, std: Tensor) -> EncodingModel:
        """Turn a model fitted on ``(x - mean) / std`` into one that takes ``x``.

        Training on a spectrogram standardised per channel makes the fit independent of the
        spectrogram's level and spread; folding the scaling into the first layer afterwards
        keeps every stored weight, prediction and Jacobian on the spectrogram itself.

        Parameters
        ----------
        mean, std : Tensor, shape (n_frequencies,)
            The per-channel mean and standard deviation the model was trained with.

        Returns
        -------
        EncodingModel
            ``self``.

        Raises
        ------
        TypeError
            If the core cannot fold a scaling (see :attr:`can_standardize_input`).
        """
        if not self.can_standardize_input:
            raise TypeError(f"{type(self.core).__name__} cannot fold an input standardisation")
        ref = next(self.parameters())
        mean = torch.as_tensor(mean, dtype=ref.dtype, device=ref.device)
        std = torch.as_tensor(std, dtype=ref.dtype, device=ref.device)
        const = self.core.fold_input_standardization(mean, std)
        if const is not None:
            bias = self.readout.offset()
            if bias is None:
                raise TypeError("the readout has no bias to absorb the input offset")
            bias.add_(self.readout.weight @ const)
        return self

    def freeze_output(self) -> EncodingModel:
        """Hold the output nonlinearity fixed (no-op without one); returns ``self``."""
        if self.output is not None:
            self.output.freeze()
        return self

    def unfreeze_output(self) -> EncodingModel:
        """Let the output nonlinearity train again; returns ``self``."""
        if self.output is not None:
            self.output.unfreeze()
        return self

    # ---- metadata --------------------------------------------------------------------

    def tensor_dims(self) -> dict[str, tuple[str, ...]]:
        """Dimension names of every ``state_dict`` entry, keyed like ``state_dict()``."""
        dims: dict[str, tuple[str, ...]] = {}
        parts = {"core": self.core, "readout": self.readout, "output": self.output}
        for prefix, module in parts.items():
            if module is None:
                continue
            for key, names in module.tensor_dims().items():
                dims[f"{prefix}.{key}"] = tuple(names)
        return dims

    def layer_summary(self) -> list[dict[str, Any]]:
        """The layers from input to output, one dict per layer.

        Keys: ``layer_name`` (prefix of its ``state_dict`` entries), ``layer_type``,
        ``in_size``, ``out_size``, ``kernel_size`` (time bins; 1 for dense layers) and
        ``activation`` (applied after the layer).
        """
        rows = list(self.core.layer_summary("core"))
        rows += self.readout.layer_summary("readout")
        if self.output is not None:
            n = self.n_units
            rows.append(layer_row("output", "double_exponential", n, n, 1, "none"))
        return rows
