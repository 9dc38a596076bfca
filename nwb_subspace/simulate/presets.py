"""Every knob of a simulated session (:class:`SimulationConfig`) and the named presets."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from nwb_subspace.stimulus.spectrogram import SpectrogramSettings

__all__ = [
    "DESIGNS",
    "LAYOUTS",
    "NONLINEARITIES",
    "PRESETS",
    "SOUND_FORMATS",
    "SimulationConfig",
    "resolve_config",
]

#: Nonlinearity kinds, in the order of :attr:`SimulationConfig.nonlinearity_mix`.
NONLINEARITIES = ("hill", "bowl", "monotonic")
_SUBSPACES = ("shared", "independent")
_INDEPENDENT_BFS = ("site", "whole range")
_TILINGS = ("scattered", "clustered")
#: Presentation designs (see :attr:`SimulationConfig.design`).
DESIGNS = ("mixed", "all-repeated", "none-repeated")
#: How the sound is written to the NWB file (see :attr:`SimulationConfig.layout`).
LAYOUTS = ("continuous", "per-presentation", "templates")
#: Number format of the written sound (see :attr:`SimulationConfig.sound_format`).
SOUND_FORMATS = ("float", "int16")


def _range(name: str, value: Any, low: float, high: float) -> None:
    if not (isinstance(value, tuple | list) and len(value) == 2):
        raise ValueError(f"{name} must be a (low, high) pair, got {value!r}")
    a, b = value
    if not (low <= a <= b <= high):
        raise ValueError(f"{name} must satisfy {low} <= low <= high <= {high}, got {value!r}")


@dataclass(frozen=True)
class SimulationConfig:
    """Every setting of a simulated recording session.

    Sound
    -----
    audio_fs : float
        Sampling rate of the synthesised sound in Hz (>= 40 kHz).
    estimation_s : float
        Total duration of the estimation sounds (each presented once), in seconds.
    sequence_s : float
        Duration of one estimation sequence; ``round(estimation_s / sequence_s)`` sequences.
    n_validation, validation_s, validation_repeats : int, float, int
        Number of validation sequences, the duration of each, and how often each is played.
    gap_s : float
        Silence before every presentation (>= the filter memory, so repeats are identical).
    sound_rms : float
        RMS level of the synthesised sounds in the waveform's units (a.u.). The analysis
        spectrogram (and so the ground truth) is level-free: the sound is scaled to the
        spectrogram's reference RMS first (``SpectrogramSettings.level``).

    Design and file layout
    ----------------------
    design : {"mixed", "all-repeated", "none-repeated"}
        ``"mixed"``: estimation sounds once, validation sounds ``validation_repeats`` times
        (the reference design). ``"all-repeated"``: every sound is presented ``repeats``
        times and the session keeps the mixed design's total presented duration
        (``estimation_s + n_validation * validation_s * validation_repeats``): there are
        ``round(total / (sequence_s * repeats))`` distinct sounds of ``sequence_s`` each.
        ``"none-repeated"``: the mixed design's sounds, each presented once.
        Only ``"mixed"`` writes the ``is_validation`` trials column (the others leave the
        choice of validation sounds to the analysis).
    repeats : int
        Presentations of every sound in the ``"all-repeated"`` design (>= 2).
    layout : {"continuous", "per-presentation", "templates"}
        ``"continuous"``: one ``TimeSeries`` of the whole session in
        ``stimulus/presentation``. ``"per-presentation"``: one ndx-sound
        ``AcousticWaveformSeries`` per presentation (as NeuroConv's audio interface writes
        them), each with its own ``starting_time``. ``"templates"``: each distinct sound
        once in ``stimulus/templates``, named by its sound id, played at the trials' start
        times.
    sound_format : {"float", "int16"}
        ``"float"``: float32 samples; ``"int16"``: samples scaled to int16 full scale and
        written without a ``conversion`` factor (as NeuroConv writes WAV files).

    Spectrogram and filters
    -----------------------
    spectrogram : SpectrogramSettings
        The space the neurons' filters live in.
    n_lags : int
        Filter length in spectrogram bins (15-25; 10 ms bins).

    Neurons
    -------
    n_units : int
        Units per recording site.
    n_sites : int, default 1
        Recording sites of the session (1-8): one shank each of a single probe, every site
        with its own independent draw of units (site basis, best frequency,
        nonlinearities, positions, waveforms) hearing the same sounds; see
        :func:`~nwb_subspace.simulate.session.simulate_session`. Written to
        :meth:`to_dict` only when above 1, so single-site sessions keep the identifier and
        notes they had before the setting existed.
    fraction_narrow : float
        Fraction of narrow-spiking units.
    subspace : {"shared", "independent"}
        Shared: unit filters are combinations of a site basis of ``site_dim`` filters.
    site_dim : int
    independent_bf : {"site", "whole range"}
        Independent units' best frequencies: scattered around the site's best frequency
        (``"site"``, the default: units of a site then share frequency tuning, so they are
        more alike than units of different sites), or drawn uniformly over the whole channel
        range (``"whole range"``: no site-specific structure at all, the control for the
        same-site vs different-site test). Ignored for shared sites.
    k_range : (int, int)
        Range of each unit's tuning dimensionality k (inclusive, within 1-6).
    tiling : {"scattered", "clustered"}
        Hill centres spread over the site subspace, or bunched around one point (shared
        sites; "clustered" also puts each unit's centre inside its own subspace, so its
        pocket lies near that one point of the site subspace rather than on a slab through
        it).
    nonlinearity_mix : (float, float, float)
        Relative frequency of ``NONLINEARITIES`` ("hill", "bowl", "monotonic").
    narrow_tuning_factor : float
        Narrow units' high-activity regions are this much larger (every nonlinearity kind,
        :func:`~nwb_subspace.simulate.neurons.broaden_nonlinearity`) and, in "independent"
        mode, their spectral bandwidths this much broader.
    balanced_kinds : bool
        Give a site's narrow and broad units the same nonlinearity kinds and dimensionalities
        (each broad unit copies one narrow unit's, while there are narrow units to pair):
        a bowl's high-activity region covers ~0.7 of the map and a hill's ~0.04, so with 4
        narrow and 4 broad units of random kinds a site's narrow-minus-broad breadth mostly
        says which kinds it drew (true breadth, 16 sites x 8 units at factor 1.6: p = 0.38).
        False keeps every earlier simulation identical.
    narrow_modulation : float
        Narrow units' stimulus-driven amplitude is this factor of what their drawn mean rate
        would give, at the same mean rate (the base rate makes up the difference): below 1,
        weaker modulation on a higher spontaneous rate, so noisier maps of the same breadth
        (in (0, 1]; 1 keeps every earlier simulation identical).
    mean_rate_broad, mean_rate_narrow : (float, float)
        Range of session mean firing rates (spikes/s) by cell type.
    response_cv : (float, float)
        Range of the coefficient of variation of each unit's rate over the session (how
        sparse and strongly driven responses are).
    max_rate : float
        Cap on the instantaneous rate (spikes/s).
    refractory_s : float
        Absolute refractory period in seconds.

    Probe and waveforms
    -------------------
    n_electrodes, pitch_um : int, float
        Linear probe, tip at ``rel_y = 0``.
    l34_rel_y : float
        ``rel_y`` (µm) of the L3/4 boundary; larger ``rel_y`` is closer to the surface.
    waveform_fs : float
        Sampling rate of templates, spike-time resolution and the raw series.
    raw_s : float
        Length of the optional raw ``ElectricalSeries`` in seconds.
    noise_uv : float
        Noise level of the raw series, in µV.
    """

    name: str = "custom"
    audio_fs: float = 44100.0
    estimation_s: float = 40.0
    sequence_s: float = 4.0
    n_validation: int = 2
    validation_s: float = 2.0
    validation_repeats: int = 10
    gap_s: float = 0.3
    sound_rms: float = 0.3
    design: str = "mixed"
    repeats: int = 3
    layout: str = "continuous"
    sound_format: str = "float"
    spectrogram: SpectrogramSettings = field(default_factory=SpectrogramSettings)
    n_lags: int = 20
    n_units: int = 8
    n_sites: int = 1
    fraction_narrow: float = 0.3
    subspace: str = "shared"
    site_dim: int = 7
    independent_bf: str = "site"
    k_range: tuple[int, int] = (1, 6)
    tiling: str = "scattered"
    nonlinearity_mix: tuple[float, float, float] = (0.4, 0.3, 0.3)
    narrow_tuning_factor: float = 1.6
    narrow_modulation: float = 1.0
    balanced_kinds: bool = False
    mean_rate_broad: tuple[float, float] = (3.0, 15.0)
    mean_rate_narrow: tuple[float, float] = (8.0, 28.0)
    response_cv: tuple[float, float] = (1.2, 2.5)
    max_rate: float = 200.0
    refractory_s: float = 0.002
    n_electrodes: int = 64
    pitch_um: float = 25.0
    l34_rel_y: float = 800.0
    waveform_fs: float = 30000.0
    raw_s: float = 10.0
    noise_uv: float = 8.0

    def __post_init__(self) -> None:
        if not isinstance(self.spectrogram, SpectrogramSettings):
            raise TypeError(
                f"spectrogram must be a SpectrogramSettings, got {type(self.spectrogram).__name__}"
            )
        if self.audio_fs < 40000:
            raise ValueError(f"audio_fs must be >= 40000 Hz, got {self.audio_fs}; use 44100.0")
        for name in ("estimation_s", "sequence_s", "validation_s", "sound_rms", "max_rate"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if self.sequence_s > self.estimation_s:
            raise ValueError(
                f"sequence_s={self.sequence_s} is longer than estimation_s={self.estimation_s}"
            )
        for name, low in (("n_units", 1), ("n_validation", 1), ("validation_repeats", 2)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
        if isinstance(self.n_sites, bool) or not isinstance(self.n_sites, int):
            raise ValueError(f"n_sites must be an int in 1-8, got {self.n_sites!r}")
        if not 1 <= self.n_sites <= 8:
            raise ValueError(f"n_sites must be in 1-8 (shanks of one probe), got {self.n_sites!r}")
        if not 15 <= self.n_lags <= 25:
            raise ValueError(f"n_lags must be in 15-25 bins (150-250 ms), got {self.n_lags!r}")
        if self.gap_s < self.n_lags * self.spectrogram.bin_s:
            raise ValueError(
                f"gap_s={self.gap_s} s is shorter than the filter memory "
                f"({self.n_lags} x {self.spectrogram.bin_s} s); repeats would not be identical"
            )
        if not 0.0 <= self.fraction_narrow <= 1.0:
            raise ValueError(f"fraction_narrow must be in [0, 1], got {self.fraction_narrow!r}")
        for name, allowed in (
            ("design", DESIGNS),
            ("layout", LAYOUTS),
            ("sound_format", SOUND_FORMATS),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if isinstance(self.repeats, bool) or not isinstance(self.repeats, int) or self.repeats < 2:
            raise ValueError(f"repeats must be an int >= 2, got {self.repeats!r}")
        if self.subspace not in _SUBSPACES:
            raise ValueError(f"subspace must be one of {_SUBSPACES}, got {self.subspace!r}")
        if self.independent_bf not in _INDEPENDENT_BFS:
            raise ValueError(
                f"independent_bf must be one of {_INDEPENDENT_BFS}, got {self.independent_bf!r}"
            )
        if self.tiling not in _TILINGS:
            raise ValueError(f"tiling must be one of {_TILINGS}, got {self.tiling!r}")
        _range("k_range", self.k_range, 1, 6)
        if not (isinstance(self.site_dim, int) and self.k_range[1] <= self.site_dim <= 12):
            raise ValueError(
                f"site_dim must be an int between k_range[1]={self.k_range[1]} and 12, "
                f"got {self.site_dim!r}"
            )
        mix = self.nonlinearity_mix
        if len(mix) != len(NONLINEARITIES) or min(mix) < 0 or sum(mix) <= 0:
            raise ValueError(
                f"nonlinearity_mix must be {len(NONLINEARITIES)} non-negative weights for "
                f"{NONLINEARITIES} with a positive sum, got {mix!r}"
            )
        _range("mean_rate_broad", self.mean_rate_broad, 0.1, 100.0)
        _range("mean_rate_narrow", self.mean_rate_narrow, 0.1, 100.0)
        _range("response_cv", self.response_cv, 0.05, 10.0)
        if not 0 < self.refractory_s < 0.01:
            raise ValueError(f"refractory_s must be in (0, 0.01) s, got {self.refractory_s!r}")
        if self.narrow_tuning_factor <= 0:
            raise ValueError(f"narrow_tuning_factor must be > 0, got {self.narrow_tuning_factor!r}")
        if not isinstance(self.balanced_kinds, bool):
            raise ValueError(f"balanced_kinds must be True or False, got {self.balanced_kinds!r}")
        if not 0 < self.narrow_modulation <= 1:
            raise ValueError(
                f"narrow_modulation must be in (0, 1], got {self.narrow_modulation!r}; e.g. 0.3"
            )
        if not (isinstance(self.n_electrodes, int) and self.n_electrodes >= 4):
            raise ValueError(f"n_electrodes must be an int >= 4, got {self.n_electrodes!r}")
        if self.pitch_um <= 0 or self.waveform_fs < 10000 or self.raw_s <= 0:
            raise ValueError(
                "pitch_um and raw_s must be > 0 and waveform_fs >= 10000, got "
                f"{self.pitch_um!r}, {self.raw_s!r}, {self.waveform_fs!r}"
            )

    @property
    def n_estimation(self) -> int:
        """Number of estimation sequences."""
        return max(1, int(round(self.estimation_s / self.sequence_s)))

    @property
    def presented_s(self) -> float:
        """Total presented sound of the mixed design, in seconds (kept by "all-repeated")."""
        return self.estimation_s + self.n_validation * self.validation_s * self.validation_repeats

    @property
    def n_repeated_sounds(self) -> int:
        """Distinct sounds of the "all-repeated" design."""
        return max(2, int(round(self.presented_s / (self.sequence_s * self.repeats))))

    def replace(self, **changes: Any) -> SimulationConfig:
        """Return a copy with some settings changed (validated again)."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise TypeError(f"unknown SimulationConfig settings {unknown}; known: {sorted(known)}")
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Every setting as a plain JSON-serialisable dict."""
        out = asdict(self)
        out["spectrogram"] = self.spectrogram.to_dict()
        if self.n_sites == 1:  # single-site sessions keep their former identifier and notes
            del out["n_sites"]
        for key, value in out.items():
            if isinstance(value, tuple):
                out[key] = list(value)
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> SimulationConfig:
        """Inverse of :meth:`to_dict`."""
        values = dict(values)
        values["spectrogram"] = SpectrogramSettings.from_dict(values["spectrogram"])
        for key in (
            "k_range",
            "nonlinearity_mix",
            "mean_rate_broad",
            "mean_rate_narrow",
            "response_cv",
        ):
            values[key] = tuple(values[key])
        return cls(**values)


PRESETS: dict[str, SimulationConfig] = {
    # Unit tests: ~90 s of session, 8 units; simulates in a few seconds.
    "tiny": SimulationConfig(name="tiny", raw_s=3.0),
    # The demo: 5 min of estimation sound, 30 units.
    "small": SimulationConfig(
        name="small",
        estimation_s=300.0,
        sequence_s=6.0,
        n_validation=3,
        validation_s=5.0,
        validation_repeats=10,
        gap_s=0.5,
        n_units=30,
    ),
    # Real-like statistics, for tests (~4 min of session, 12 units): a quiet sound
    # (without level normalisation its spectrogram spreads ~0.01 per channel, as in a real
    # recording written as float in [-1, 1]) and sparse, bursty units of 2-80 spikes/s.
    "realistic": SimulationConfig(
        name="realistic",
        estimation_s=120.0,
        sequence_s=5.0,
        n_validation=2,
        validation_s=5.0,
        validation_repeats=10,
        sound_rms=0.01,
        n_units=12,
        mean_rate_broad=(2.0, 20.0),
        mean_rate_narrow=(5.0, 80.0),
        response_cv=(2.0, 4.0),
        raw_s=3.0,
    ),
    # Populations of sessions (simulate_population): 2 sites x 8 units, 2 min of estimation
    # sound + 6 validation sounds of 4 s x 10 repeats (~6 min of session): enough for the
    # CNN, quick to analyse (see nwb_subspace.simulate.cohort); the repeated sounds are what
    # the measured SRFs (and their noise-aware breadth) are made of, so fewer (2 sounds) left
    # the narrow-vs-broad breadth test without power.
    "population": SimulationConfig(
        name="population",
        estimation_s=120.0,
        sequence_s=5.0,
        n_validation=6,
        validation_s=4.0,
        validation_repeats=10,
        n_units=8,
        # half narrow: with 30% (2 of 8 units) a site's narrow mean is too noisy for the
        # site-level narrow-vs-broad test to see a 1.6x broadening on 8 sites
        fraction_narrow=0.5,
        # narrow and broad units of the same kinds: the site-level breadth comparison then
        # sees the broadening, not which kinds a site drew
        balanced_kinds=True,
        n_sites=2,
        raw_s=3.0,
    ),
    # Benchmarks: 30 min of estimation sound, 60 units.
    "paper": SimulationConfig(
        name="paper",
        estimation_s=1800.0,
        sequence_s=20.0,
        n_validation=5,
        validation_s=10.0,
        validation_repeats=10,
        gap_s=0.5,
        n_units=60,
    ),
}


def resolve_config(preset: str | SimulationConfig) -> SimulationConfig:
    """Return the config for a preset name or a config object."""
    if isinstance(preset, SimulationConfig):
        return preset
    if isinstance(preset, str):
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
        return PRESETS[preset]
    raise TypeError(
        f"preset must be a preset name or a SimulationConfig, got {type(preset).__name__}"
    )
