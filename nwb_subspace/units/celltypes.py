"""Narrow/broad spike classes and cortical layers (pure numerics, no file I/O).

Spike width
-----------
The trough-to-peak duration of a unit's mean waveform on its main channel separates
narrow-spiking (putative fast-spiking interneurons) from broad-spiking (putative pyramidal)
units. The paper's lab code (docs/methods.md, "Cell types, depths and layers"): below 0.35 ms = narrow on Neuropixels
probes, 0.40 ms on other probes. :func:`default_threshold_ms` picks between the two from a
probe description; :class:`CellTypeParams` holds the threshold actually used, and
:func:`classify_spike_width` returns the signed margin to it so users can re-threshold.

Layers
------
Depths are in the NWB electrodes ``rel_y`` frame: micrometres along the probe from its tip
(tip = 0), so **larger** ``rel_y`` is **more superficial**. The nominal boundaries
(docs/methods.md, "Cell types, depths and layers") are given as depths below the L3/4 boundary (positive = deeper):
BS/1 = -800 µm, L3/4 = 0, L4/5 = 200, L6/WM = 800. With the L3/4 boundary at ``rel_y = l34``,
a boundary at depth ``d`` sits at ``rel_y = l34 - d``. The layer groups are the paper's (and
the simulator's, :mod:`nwb_subspace.simulate.waveforms`): ``"13"`` (L1-3, between BS/1 and
L3/4), ``"44"`` (L4, between L3/4 and L4/5) and ``"56"`` (L5-6, between L4/5 and L6/WM).
A depth inside no layer is ``"outside"``; an unknown depth (NaN) gives ``"unknown"``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "LAYER_DEPTHS_UM",
    "LAYER_GROUPS",
    "NARROW_THRESHOLD_MS",
    "NON_NEUROPIXELS_THRESHOLD_MS",
    "CellTypeParams",
    "LayerBoundaries",
    "assign_layers",
    "classify_spike_width",
    "default_threshold_ms",
    "is_positive_going",
    "layer_from_location",
    "trough_to_peak_ms",
]

#: Default narrow/broad threshold (ms) for Neuropixels probes and unknown probes.
NARROW_THRESHOLD_MS = 0.35
#: Threshold (ms) for other probes (linear silicon probes, tetrodes...), the paper's lab code.
NON_NEUROPIXELS_THRESHOLD_MS = 0.40
#: Nominal boundary depths below the L3/4 boundary (µm, positive = deeper), as in the paper.
LAYER_DEPTHS_UM: dict[str, float] = {"BS/1": -800.0, "L3/4": 0.0, "L4/5": 200.0, "L6/WM": 800.0}
#: Layer groups and the boundaries above and below them.
LAYER_GROUPS: tuple[tuple[str, str, str], ...] = (
    ("13", "BS/1", "L3/4"),
    ("44", "L3/4", "L4/5"),
    ("56", "L4/5", "L6/WM"),
)

UNKNOWN = "unknown"
OUTSIDE = "outside"


# --------------------------------------------------------------------------- spike width


def default_threshold_ms(probe_description: str | None) -> float:
    """Narrow/broad threshold for a probe, following the paper's lab code.

    Parameters
    ----------
    probe_description : str or None
        Any text naming the probe: device name, description, manufacturer or probeinterface
        ``model_name``, joined. ``None`` or empty means the probe is not known.

    Returns
    -------
    float
        0.35 ms when the text mentions Neuropixels (or the probe is unknown: the general
        default), otherwise 0.40 ms (a named probe that is not a Neuropixels probe).
    """
    if probe_description is not None and not isinstance(probe_description, str):
        raise TypeError(
            f"probe_description must be a str or None; got {type(probe_description).__name__} "
            f"{probe_description!r}"
        )
    text = (probe_description or "").strip().lower()
    if not text or re.search(r"neuro\s*pixel|\bnp\s?[12]\.?\d*\b|\bnp[12]\d{3}\b", text):
        return NARROW_THRESHOLD_MS
    return NON_NEUROPIXELS_THRESHOLD_MS


@dataclass
class CellTypeParams:
    """Settings of the narrow/broad classification.

    Parameters
    ----------
    threshold_ms : float, default 0.35
        Trough-to-peak durations strictly below it are ``"narrow"``, at or above it
        ``"broad"``. Use :meth:`for_probe` for the probe-dependent default.
    upsample : int, default 10
        Upsampling factor of the main-channel waveform before finding trough and peak.
    """

    threshold_ms: float = NARROW_THRESHOLD_MS
    upsample: int = 10

    def __post_init__(self) -> None:
        t = self.threshold_ms
        if isinstance(t, bool) or not isinstance(t, int | float | np.floating | np.integer):
            raise TypeError(
                f"threshold_ms must be a number of milliseconds in (0, 5); got {t!r} "
                f"({type(t).__name__}), e.g. 0.35 (Neuropixels) or 0.40 (other probes)"
            )
        if not (math.isfinite(t) and 0.0 < t < 5.0):
            raise ValueError(
                f"threshold_ms={t!r} is not a plausible spike-width threshold; give a value in "
                "(0, 5) ms, e.g. 0.35 (Neuropixels) or 0.40 (other probes)"
            )
        self.threshold_ms = float(t)
        u = self.upsample
        if isinstance(u, bool) or not isinstance(u, int | np.integer):
            kind = type(u).__name__
            raise TypeError(f"upsample must be an integer in [1, 100]; got {u!r} ({kind}), e.g. 10")
        if not 1 <= u <= 100:
            raise ValueError(f"upsample must be an integer in [1, 100]; got {u!r}, e.g. 10")
        self.upsample = int(u)

    @classmethod
    def for_probe(cls, probe_description: str | None, **kwargs) -> CellTypeParams:
        """Parameters with the threshold of :func:`default_threshold_ms` for that probe."""
        return cls(threshold_ms=default_threshold_ms(probe_description), **kwargs)

    def to_dict(self) -> dict:
        """Plain-dict form (for the analysis config)."""
        return {"threshold_ms": self.threshold_ms, "upsample": self.upsample}


def is_positive_going(waveform: np.ndarray) -> bool:
    """Whether a 1-D spike waveform's largest deflection from baseline is positive.

    The baseline is the median of the waveform. NaN-only or flat waveforms are not positive.
    """
    w = np.asarray(waveform, dtype=float)
    if w.ndim != 1:
        raise ValueError(f"waveform must be 1-D (n_samples,); got shape {w.shape}")
    if not np.isfinite(w).any():
        return False
    w = w - np.nanmedian(w)
    return bool(np.nanmax(w) > -np.nanmin(w))


def trough_to_peak_ms(
    waveform: np.ndarray,
    fs: float,
    upsample: int = 10,
    edge_ms: float = 0.09,
) -> float | np.ndarray:
    """Trough-to-peak duration of spike waveforms, in milliseconds.

    A positive-going waveform (largest deflection positive, see :func:`is_positive_going`)
    is flipped first, so its trough is the main positive peak. The trough is the minimum
    away from the edges; the peak is the maximum after it.

    Parameters
    ----------
    waveform : ndarray, shape (n_samples,) or (n_units, n_samples)
        Mean waveform(s) on the main channel, any amplitude unit.
    fs : float
        Sampling rate of the waveform in Hz.
    upsample : int, default 10
        Polyphase upsampling factor before locating trough and peak.
    edge_ms : float, default 0.09
        Time at each end where the trough is not looked for.

    Returns
    -------
    float or ndarray of float
        Duration in ms (NaN for waveforms that are all NaN, flat, or whose trough is at the
        end); an array of shape (n_units,) for 2-D input.
    """
    from scipy.signal import resample_poly

    w = np.asarray(waveform, dtype=float)
    if w.ndim == 2:
        return np.array([trough_to_peak_ms(x, fs, upsample, edge_ms) for x in w])
    if w.ndim != 1:
        raise ValueError(f"waveform must be (n_samples,) or (n_units, n_samples); got {w.shape}")
    if isinstance(fs, bool) or not (isinstance(fs, int | float | np.number) and fs > 0):
        raise ValueError(f"fs must be a positive sampling rate in Hz; got {fs!r}")
    if not np.isfinite(w).all() or w.size < 4 or np.ptp(w) == 0:
        return float("nan")
    w = w - np.median(w)
    if is_positive_going(w):
        w = -w
    fs_up = float(fs) * upsample
    if upsample > 1:
        w = resample_poly(w, upsample, 1)
    edge = min(int(edge_ms * 1e-3 * fs_up), w.size // 4)
    trough = edge + int(np.argmin(w[edge : w.size - edge]))
    if trough >= w.size - 1:
        return float("nan")
    peak = trough + int(np.argmax(w[trough:]))
    if peak == trough:
        return float("nan")
    return (peak - trough) / fs_up * 1e3


def classify_spike_width(
    trough_to_peak: np.ndarray | Iterable[float], params: CellTypeParams | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Narrow/broad class of each unit from its trough-to-peak duration.

    Parameters
    ----------
    trough_to_peak : array-like of float, shape (n_units,)
        Durations in milliseconds; NaN where unknown.
    params : CellTypeParams, optional
        Threshold; defaults to ``CellTypeParams()`` (0.35 ms).

    Returns
    -------
    labels : ndarray of str, shape (n_units,)
        ``"narrow"`` (below the threshold), ``"broad"`` (at or above it) or ``"unknown"``.
    margin_ms : ndarray of float, shape (n_units,)
        ``trough_to_peak - threshold_ms`` (negative = narrow); NaN where unknown.
    """
    params = CellTypeParams() if params is None else params
    if not isinstance(params, CellTypeParams):
        raise TypeError(f"params must be a CellTypeParams; got {type(params).__name__}")
    d = np.asarray(trough_to_peak, dtype=float).reshape(-1)
    if np.any(d[np.isfinite(d)] < 0):
        raise ValueError(f"trough-to-peak durations must be >= 0 ms; got {d[d < 0][:5]}")
    margin = d - params.threshold_ms
    labels = np.full(d.shape, UNKNOWN, dtype="<U7")
    finite = np.isfinite(d)
    labels[finite & (margin < 0)] = "narrow"
    labels[finite & (margin >= 0)] = "broad"
    return labels, margin


# --------------------------------------------------------------------------- layers


@dataclass
class LayerBoundaries:
    """Named cortical layers, each a range of ``rel_y`` (µm from the probe tip).

    Parameters
    ----------
    layers : dict of str -> (top, bottom)
        ``top > bottom`` in ``rel_y`` (the top is the more superficial edge). A unit at
        ``rel_y`` belongs to a layer when ``bottom < rel_y <= top``. Ranges must not overlap.

    Examples
    --------
    >>> b = LayerBoundaries.from_nominal(l34_rel_y=800.0)
    >>> b.layers["44"]
    (800.0, 600.0)
    >>> assign_layers([900.0, 700.0, 100.0, 2000.0], b).tolist()
    ['13', '44', '56', 'outside']
    """

    layers: dict[str, tuple[float, float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.layers, Mapping) or not self.layers:
            raise ValueError(
                "layers must be a non-empty dict name -> (top, bottom) in rel_y µm; got "
                f"{self.layers!r}"
            )
        clean: dict[str, tuple[float, float]] = {}
        for name, rng in self.layers.items():
            if not isinstance(name, str) or not name or name in (UNKNOWN, OUTSIDE):
                raise ValueError(
                    f"layer name {name!r} is not usable; use a non-empty str other than "
                    f"{UNKNOWN!r}/{OUTSIDE!r}"
                )
            try:
                top, bottom = (float(v) for v in rng)
            except (TypeError, ValueError):
                raise ValueError(
                    f"layer {name!r}: range {rng!r} must be two numbers (top, bottom) in rel_y µm"
                ) from None
            if not (math.isfinite(top) and math.isfinite(bottom)) or not top > bottom:
                raise ValueError(
                    f"layer {name!r}: range (top={top}, bottom={bottom}) needs finite values with "
                    "top > bottom (rel_y grows towards the surface)"
                )
            clean[name] = (top, bottom)
        spans = sorted(clean.items(), key=lambda kv: kv[1][1])
        for (n1, (t1, _)), (n2, (_, b2)) in zip(spans, spans[1:], strict=False):
            if t1 > b2:
                raise ValueError(f"layers {n1!r} and {n2!r} overlap ({t1} > {b2} µm)")
        self.layers = clean

    @classmethod
    def from_nominal(
        cls,
        l34_rel_y: float,
        depths_um: Mapping[str, float] | None = None,
    ) -> LayerBoundaries:
        """Layer groups ``"13"``, ``"44"``, ``"56"`` from the L3/4 boundary position.

        Parameters
        ----------
        l34_rel_y : float
            ``rel_y`` (µm) of the L3/4 boundary.
        depths_um : dict, optional
            Boundary depths below L3/4 (positive = deeper) with keys ``"BS/1"``, ``"L3/4"``,
            ``"L4/5"``, ``"L6/WM"``; defaults to :data:`LAYER_DEPTHS_UM`.
        """
        if isinstance(l34_rel_y, bool) or not isinstance(l34_rel_y, int | float | np.number):
            raise TypeError(f"l34_rel_y must be a number (rel_y µm); got {l34_rel_y!r}")
        depths = dict(LAYER_DEPTHS_UM if depths_um is None else depths_um)
        missing = set(LAYER_DEPTHS_UM) - set(depths)
        if missing:
            raise ValueError(
                f"depths_um lacks {sorted(missing)}; give all of {sorted(LAYER_DEPTHS_UM)}"
            )
        return cls.from_boundaries({k: float(l34_rel_y) - float(v) for k, v in depths.items()})

    @classmethod
    def from_boundaries(cls, boundaries: Mapping[str, float]) -> LayerBoundaries:
        """Layer groups from boundary positions in ``rel_y`` (µm).

        Parameters
        ----------
        boundaries : dict
            ``"BS/1"``, ``"L3/4"``, ``"L4/5"``, ``"L6/WM"`` -> ``rel_y`` µm, as in the
            simulator's ``GroundTruth.layer_boundaries``.
        """
        missing = set(LAYER_DEPTHS_UM) - set(boundaries)
        if missing:
            raise ValueError(
                f"boundaries lacks {sorted(missing)}; give rel_y (µm) of all of "
                f"{sorted(LAYER_DEPTHS_UM)}"
            )
        return cls(
            {g: (float(boundaries[up]), float(boundaries[lo])) for g, up, lo in LAYER_GROUPS}
        )

    @classmethod
    def from_dict(cls, config: Mapping) -> LayerBoundaries:
        """From a config dict: ``{"l34_rel_y": 800}`` (nominal depths, optionally with
        ``"depths_um"``), ``{"boundaries": {...}}`` or ``{"layers": {name: [top, bottom]}}``."""
        if not isinstance(config, Mapping):
            raise TypeError(f"layer config must be a dict; got {type(config).__name__}")
        if "layers" in config:
            return cls(dict(config["layers"]))
        if "boundaries" in config:
            return cls.from_boundaries(config["boundaries"])
        if "l34_rel_y" in config:
            return cls.from_nominal(config["l34_rel_y"], config.get("depths_um"))
        raise ValueError(
            f"layer config {dict(config)!r} needs one of 'layers' (name -> [top, bottom]), "
            "'boundaries' (BS/1, L3/4, L4/5, L6/WM -> rel_y) or 'l34_rel_y'"
        )

    def to_dict(self) -> dict:
        """``{"layers": {name: [top, bottom]}}`` (round-trips through :meth:`from_dict`)."""
        return {"layers": {k: [t, b] for k, (t, b) in self.layers.items()}}

    def distance_to_boundary(self, depths: np.ndarray | Iterable[float]) -> np.ndarray:
        """Distance (µm) of each ``rel_y`` to the nearest layer edge (NaN for NaN)."""
        d = np.asarray(depths, dtype=float).reshape(-1)
        edges = np.unique([v for rng in self.layers.values() for v in rng])
        return np.min(np.abs(d[:, None] - edges[None, :]), axis=1)


def assign_layers(
    depths: np.ndarray | Iterable[float], boundaries: LayerBoundaries | Mapping
) -> np.ndarray:
    """Layer name of each unit depth.

    Parameters
    ----------
    depths : array-like of float, shape (n_units,)
        ``rel_y`` positions in µm (NaN where unknown).
    boundaries : LayerBoundaries or dict
        Layer ranges; a dict is passed to :meth:`LayerBoundaries.from_dict`.

    Returns
    -------
    ndarray of str, shape (n_units,)
        Layer names, ``"outside"`` for depths in no layer, ``"unknown"`` for NaN.
    """
    if not isinstance(boundaries, LayerBoundaries):
        boundaries = LayerBoundaries.from_dict(boundaries)
    d = np.asarray(depths, dtype=float).reshape(-1)
    width = max([len(n) for n in boundaries.layers] + [len(OUTSIDE)])
    out = np.full(d.shape, OUTSIDE, dtype=f"<U{width}")
    for name, (top, bottom) in boundaries.layers.items():
        out[(d <= top) & (d > bottom)] = name
    out[~np.isfinite(d)] = UNKNOWN
    return out


_ROMAN = {"i": 1, "ii": 2, "iii": 3, "iv": 4, "v": 5, "vi": 6}
_GROUP_OF_LAYER = {1: "13", 2: "13", 3: "13", 4: "44", 5: "56", 6: "56"}
# "L2/3", "L5", "L6a", "layer 4", "Layer IV", "layers 2-3", "L23", and Allen-style acronyms
# ("AUDp5", "VISp2/3", "MOp6a"). Bare area names such as "A1", "V1" or "CA1" are not layers.
_TOKEN = r"(?:[1-6]|iv|vi|v|iii|ii|i)"
_LAYER_RE = re.compile(
    r"(?:\blayers?\s*|\bl\s*|(?<=(?-i:[A-Z][A-Z][a-z])))"
    rf"(?P<a>{_TOKEN})(?:[ab])?"
    rf"(?:(?:\s*(?:/|-|–|and|&|to)\s*(?:l\s*)?|(?<=[1-6])(?=[1-6]))(?P<b>{_TOKEN})(?:[ab])?)?"
    r"(?![a-z0-9])",
    re.IGNORECASE,
)


def _layer_number(token: str) -> int:
    token = token.lower()
    return int(token) if token.isdigit() else _ROMAN[token]


def layer_from_location(location: str | None, grouped: bool = True) -> str:
    """Cortical layer named in an electrode ``location`` string.

    Parameters
    ----------
    location : str or None
        For example ``"A1, L2/3"``, ``"auditory cortex layer 4"``, ``"AUDp5"``, ``"L6b"``,
        ``"Layer IV"``.
    grouped : bool, default True
        Return the layer group (``"13"``, ``"44"``, ``"56"``) rather than ``"L<n>"``.

    Returns
    -------
    str
        The layer (group), or ``"unknown"`` when no layer is named or the name spans two
        groups (``"L3/4"``, ``"L4/5"``: a boundary, not a layer).
    """
    if location is None:
        return UNKNOWN
    if isinstance(location, bytes):
        location = location.decode()
    if not isinstance(location, str):
        raise TypeError(f"location must be a str; got {type(location).__name__} {location!r}")
    found: set[int] = set()
    for m in _LAYER_RE.finditer(location):
        a = _layer_number(m["a"])
        b = _layer_number(m["b"]) if m["b"] else a
        found.update(range(min(a, b), max(a, b) + 1))
    if not found:
        return UNKNOWN
    if grouped:
        groups = {_GROUP_OF_LAYER[n] for n in found}
        return groups.pop() if len(groups) == 1 else UNKNOWN
    if len(found) == 1:
        return f"L{found.pop()}"
    return "L" + "/".join(str(n) for n in sorted(found))
