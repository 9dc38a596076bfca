"""Every setting of an analysis run, as one dataclass and one TOML file.

``AnalysisConfig.from_toml(path)`` reads a file whose tables mirror the sections below;
unknown keys are errors (a typo must not silently fall back to a default). The effective
configuration is stored with the results (``SubspaceAnalysis.config_json``).

Example::

    seed = 1
    device = "cpu"

    [spectrogram]
    n_channels = 32
    f_min = 200.0

    [session]
    trials_table = "presentations"  # default: trials, else epochs
    validation_sounds = ["ripple_03", "speech_07"]  # default: chosen from repeat counts

    [training]
    n_initializations = 3

    [cell_types]
    threshold_ms = 0.35

    [layers]
    l34_rel_y = 800.0

    [sites]
    group_by = "shank"      # a units-table column; default: each unit's electrode group
    n_null = 200
"""

from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from nwb_subspace.models.training import TrainingConfig
from nwb_subspace.site.subspace import SiteSubspaceAnalysis as _SiteAnalysis
from nwb_subspace.stimulus.spectrogram import SpectrogramSettings

MODEL_KINDS = ("ln", "cnn")


#: Values of ``[session] layout`` (how the sound presented in each trial is found).
SOUND_LAYOUTS = ("auto", "continuous", "per-presentation", "templates", "sound-dir", "stored")


def _check_name(key: str, value: Any, what: str) -> None:
    if value is not None and not (isinstance(value, str) and value.strip()):
        raise ValueError(f"[session] {key} must be {what}; got {value!r}")


@dataclass(frozen=True)
class SessionSettings:
    """How the session is read: which sound, which trials table and column, how trials are
    split (see ``nwb_subspace.stimulus.responses`` for the split rule).

    Attributes
    ----------
    sound_name : str or None
        Name of the sound series when the file holds several.
    sound_column : str or None
        Trials column naming the sound (default: auto-detected).
    trials_table : str or None
        Interval table holding the presentations (default: ``trials``, else ``epochs``).
    min_repeats : int or None
        A sound presented at least this often counts as repeated (>= 2; default
        ``max(3, ceil(max_repeats / 2))``).
    holdout_fraction : float, default 0.2
        Fraction of estimation trials held out (as whole sounds) for early stopping, in
        ``[0, 1)``.
    validation_sounds : tuple of str or None
        The validation sounds by name (a TOML list); default: chosen from repeat counts.
    validation_fraction : float, default 0.2
        Fraction of sounds drawn to validate when every sound reaches ``min_repeats`` or
        none does, in ``(0, 1)``.
    chunk_s : float, default 60.0
        Seconds of sound per spectrogram chunk.
    layout : str, default "auto"
        How the sound of each presentation is stored: one of :data:`SOUND_LAYOUTS`.
    sound_dir : str or None
        Folder of sound files (for ``layout = "sound-dir"``).
    """

    sound_name: str | None = None
    sound_column: str | None = None
    min_repeats: int | None = None
    holdout_fraction: float = 0.2
    chunk_s: float = 60.0
    trials_table: str | None = None
    validation_sounds: tuple[str, ...] | None = None
    validation_fraction: float = 0.2
    layout: str = "auto"
    sound_dir: str | None = None

    def __post_init__(self) -> None:
        for key in ("sound_name", "sound_column", "trials_table"):
            _check_name(key, getattr(self, key), "a name (a non-empty string) or left out")
        _check_name("sound_dir", self.sound_dir, "a folder (a non-empty string) or left out")
        if self.min_repeats is not None:
            _check_int("session", "min_repeats", self.min_repeats, 2)
        h = self.holdout_fraction
        if isinstance(h, bool) or not isinstance(h, int | float) or not 0 <= h < 1:
            raise ValueError(f"[session] holdout_fraction must be in [0, 1); got {h!r}, e.g. 0.2")
        v = self.validation_fraction
        if isinstance(v, bool) or not isinstance(v, int | float) or not 0 < v < 1:
            raise ValueError(
                f"[session] validation_fraction must be in (0, 1); got {v!r}, e.g. 0.2"
            )
        c = self.chunk_s
        if isinstance(c, bool) or not isinstance(c, int | float) or not c > 0:
            raise ValueError(f"[session] chunk_s must be a positive number of seconds; got {c!r}")
        if self.validation_sounds is not None:
            sounds = self.validation_sounds
            if isinstance(sounds, str) or not isinstance(sounds, list | tuple):
                raise ValueError(
                    "[session] validation_sounds must be a list of sound names, e.g. "
                    f'["a", "b"]; got {sounds!r}'
                )
            bad = [x for x in sounds if isinstance(x, bool) or not isinstance(x, str | int)]
            if bad or not sounds or any(not str(x).strip() for x in sounds):
                raise ValueError(
                    "[session] validation_sounds must list one or more sound names (strings); "
                    f"got {list(sounds)!r}; leave it out to choose them from the repeat counts"
                )
            object.__setattr__(self, "validation_sounds", tuple(str(x) for x in sounds))
        if self.layout not in SOUND_LAYOUTS:
            raise ValueError(
                f"[session] layout must be one of {list(SOUND_LAYOUTS)}; got {self.layout!r}"
            )


@dataclass(frozen=True)
class SubspaceSettings:
    """dSTRF PCA and SRF settings (DESIGN.md section 3 defaults).

    ``ensemble`` (default true): the dSTRFs are those of the mean prediction of every
    initialisation's CNN fit (``[training] n_initializations``; all are stored), and the
    dimensionality counts only the variance the fits agree on; false uses the best fit alone.
    Averaging fits brought the subspaces of simulated units closer to the truth (see
    ``benchmarks/README.md`` and issue 7's notes).
    """

    n_components: int = 20
    variance_threshold: float = 0.95
    outlier_threshold: float = 5.0
    srf_bins: int = 20
    min_occupancy: int = 10
    high_activity_threshold: float = 0.5
    min_noise_corrected_r: float = 0.5
    ensemble: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.ensemble, bool):
            raise ValueError(f"[subspace] ensemble must be true or false; got {self.ensemble!r}")


def _check_fraction(section: str, name: str, value: Any, example: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1:
        raise ValueError(f"[{section}] {name} must be in (0, 1]; got {value!r}, e.g. {example}")


def _check_int(section: str, name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"[{section}] {name} must be an integer >= {low}; got {value!r}")


@dataclass(frozen=True)
class SiteSettings:
    """The site step: shared subspace, tiling, narrow/broad and layer comparisons.

    Attributes
    ----------
    enabled : bool, default True
        Run the site step at all.
    group_by : str or None, default None
        Units-table column whose values name each unit's site. None: the unit's electrode
        group (the ``electrode_group`` column, else the ``group_name`` of its electrodes),
        one site per probe insertion/shank; a file without either forms one site "all".
    n_components : int or None, default None
        Site dimensionality; None (leave it out of the TOML) picks it from
        ``variance_threshold``.
    variance_threshold : float, default 0.85
        Cumulative pooled-variance ratio setting the site dimensionality (DESIGN.md: 75-90%
        for similarity analyses).
    unit_variance_threshold : float, default 0.85
        Sets each unit's own dimensionality for pairwise similarity.
    max_unit_components : int, default 20
    weighting : {"equal", "variance"}, default "equal"
        Pool trace-normalised (every unit weighs the same) or raw dSTRF covariances.
    n_null : int, default 200
        Draws of the random-subspace and pixel-shuffle nulls.
    n_shifts : int, default 500
        Random circular shifts in the tiling null.
    high_activity_threshold : float, default 0.5
        Normalised-map level defining a unit's high-activity region on the site plane (the
        grid and occupancy come from ``[subspace] srf_bins`` and ``min_occupancy``).
    alpha : float, default 0.05
        Level of the two-sided tiling verdict.
    min_units : int, default 2
        Units passing the quality cut a site needs for a site subspace.
    min_per_group : int, default 2
        Units per cell type or layer a group comparison needs.

    Seeds come from ``AnalysisConfig.seed``.
    """

    enabled: bool = True
    group_by: str | None = None
    # the site-subspace settings default to SiteSubspaceAnalysis's own (one source of truth)
    n_components: int | None = _SiteAnalysis.n_components
    variance_threshold: float = _SiteAnalysis.variance_threshold
    unit_variance_threshold: float = _SiteAnalysis.unit_variance_threshold
    max_unit_components: int = _SiteAnalysis.max_unit_components
    weighting: str = _SiteAnalysis.weighting
    n_null: int = _SiteAnalysis.n_null
    n_shifts: int = 500
    high_activity_threshold: float = 0.5
    alpha: float = 0.05
    min_units: int = 2
    min_per_group: int = 2

    def __post_init__(self) -> None:
        if not isinstance(self.enabled, bool):
            raise ValueError(f"[sites] enabled must be true or false; got {self.enabled!r}")
        if self.group_by is not None and not (
            isinstance(self.group_by, str) and self.group_by.strip()
        ):
            raise ValueError(
                f"[sites] group_by must name a units-table column; got {self.group_by!r}"
            )
        for name in ("variance_threshold", "unit_variance_threshold", "high_activity_threshold"):
            _check_fraction("sites", name, getattr(self, name), 0.85)
        if not (isinstance(self.alpha, float) and 0 < self.alpha < 1):
            raise ValueError(f"[sites] alpha must be in (0, 1); got {self.alpha!r}, e.g. 0.05")
        ints = {"max_unit_components": 1, "n_null": 1, "n_shifts": 1, "min_units": 2}
        ints["min_per_group"] = 1
        if self.n_components is not None:
            ints["n_components"] = 1
        for name, low in ints.items():
            _check_int("sites", name, getattr(self, name), low)
        if self.weighting not in ("equal", "variance"):
            raise ValueError(
                f"[sites] weighting must be 'equal' or 'variance'; got {self.weighting!r}"
            )


@dataclass(frozen=True)
class AnalysisConfig:
    """All settings of ``nwb-subspace run``.

    Attributes
    ----------
    seed : int
        Seed of every random step (splits, initialisations, nulls).
    device : {"cpu", "cuda", "auto"}
    models : tuple of str
        Encoding models to fit (``"ln"``, ``"cnn"``).
    run_name : str
        Name of the results container in the NWB file.
    session, spectrogram, training, subspace, sites : section dataclasses
    cell_types : dict
        ``threshold_ms`` for narrow/broad (default: probe-dependent, see celltypes).
    layers : dict or None
        Layer boundaries: ``{"l34_rel_y": ...}`` or ``{"layers": {name: [top, bottom]}}``.
    keep_partial : bool, default False
        When the CNN fit fails (every initialisation non-finite, constant, runaway or
        uncorrelated with every unit, after the retries), the run normally stops with
        :class:`~nwb_subspace.models.training.ModelFitError` and writes nothing; true
        stores the failed fit and the other models, marked in the run's notes, without
        dSTRFs or subspaces.
    """

    seed: int = 0
    device: str = "cpu"
    models: tuple[str, ...] = MODEL_KINDS
    run_name: str = "subspace_analysis"
    session: SessionSettings = field(default_factory=SessionSettings)
    spectrogram: SpectrogramSettings = field(default_factory=SpectrogramSettings)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    subspace: SubspaceSettings = field(default_factory=SubspaceSettings)
    sites: SiteSettings = field(default_factory=SiteSettings)
    cell_types: dict = field(default_factory=dict)
    layers: dict | None = None
    keep_partial: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.keep_partial, bool):
            raise ValueError(f"keep_partial must be true or false; got {self.keep_partial!r}")
        if self.device not in ("cpu", "cuda", "auto"):
            raise ValueError(f"device must be 'cpu', 'cuda' or 'auto'; got {self.device!r}")
        bad = [m for m in self.models if m not in MODEL_KINDS]
        if bad or "cnn" not in self.models:
            raise ValueError(
                f"models must include 'cnn' and be drawn from {MODEL_KINDS}; got "
                f"{list(self.models)}"
            )
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer; got {self.seed!r}")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict of every setting."""
        out = asdict(self)
        out["models"] = list(self.models)
        return out

    def with_overrides(self, **kwargs: Any) -> AnalysisConfig:
        """A copy with top-level fields replaced (``None`` values are ignored)."""
        return replace(self, **{k: v for k, v in kwargs.items() if v is not None})

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> AnalysisConfig:
        """Build from a dict shaped like the TOML file; unknown keys raise ``ValueError``."""
        sections = {
            "session": SessionSettings,
            "spectrogram": SpectrogramSettings,
            "training": TrainingConfig,
            "subspace": SubspaceSettings,
            "sites": SiteSettings,
        }
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown config keys {unknown}; known keys are {sorted(known)}")
        kwargs: dict[str, Any] = {}
        for key, value in values.items():
            if key in sections:
                if not isinstance(value, dict):
                    raise ValueError(f"[{key}] must be a table of settings; got {value!r}")
                allowed = {f.name for f in fields(sections[key])}
                extra = sorted(set(value) - allowed)
                if extra:
                    raise ValueError(f"unknown keys {extra} in [{key}]; allowed: {sorted(allowed)}")
                kwargs[key] = sections[key](**value)
            elif key == "models":
                kwargs[key] = tuple(value)
            else:
                kwargs[key] = value
        return cls(**kwargs)

    @classmethod
    def from_toml(cls, path: str | Path) -> AnalysisConfig:
        """Read a TOML config file (see the module docstring for its layout)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no such config file: {path}")
        try:
            values = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as err:
            raise ValueError(f"{path} is not valid TOML: {err}") from None
        return cls.from_dict(values)
