"""Every setting of an analysis run, as one dataclass and one TOML file.

``AnalysisConfig.from_toml(path)`` reads a file whose tables mirror the sections below;
unknown keys are errors (a typo must not silently fall back to a default). Every value is
checked, type and range, when the config is built (by the TOML reader or the dataclass
constructors), before any data are read: a wrong type (a string or bool for a number) is an
error, never coerced, and the message names the section and key, the value and an example
of a good one. The top-level ``seed`` is also the training seed (``[training] seed`` may only
repeat it). The effective configuration is stored with the results
(``SubspaceAnalysis.config_json``).

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

import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from nwb_subspace.models.training import TrainingConfig
from nwb_subspace.site.groups import GROUP_METHODS as _GROUP_METHODS
from nwb_subspace.site.subspace import SiteSubspaceAnalysis as _SiteAnalysis
from nwb_subspace.stimulus.spectrogram import SpectrogramSettings
from nwb_subspace.units.celltypes import LAYER_DEPTHS_UM, CellTypeParams, LayerBoundaries

MODEL_KINDS = ("ln", "cnn")


#: Values of ``[session] layout`` (how the sound presented in each trial is found).
SOUND_LAYOUTS = ("auto", "continuous", "per-presentation", "templates", "sound-dir", "stored")


#: ``run_name`` rule (the one :mod:`nwb_subspace.io.writer` applies when storing results;
#: repeated here so that reading a config does not import the NWB stack).
_RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")


def _got(value: Any, wrong_type: bool) -> str:
    return f"{value!r} ({type(value).__name__})" if wrong_type else repr(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_number(
    key: str,
    value: Any,
    example: Any,
    *,
    gt: float | None = None,
    ge: float | None = None,
    lt: float | None = None,
    le: float | None = None,
    allow_inf: bool = False,
) -> None:
    """Refuse ``value`` unless it is a real number (not a bool or a string) within the bounds.

    ``key`` is ``"[section] name"``; the message names it, the value and ``example``.
    """
    low = "(" if gt is not None else "["
    high = ")" if lt is not None else "]"
    lo, hi = (gt if gt is not None else ge), (lt if lt is not None else le)
    if lo is not None and hi is not None:
        what = f"in {low}{lo:g}, {hi:g}{high}"
    elif lo is not None:
        what = f"a number {'>' if gt is not None else '>='} {lo:g}"
    elif hi is not None:
        what = f"a number {'<' if lt is not None else '<='} {hi:g}"
    else:
        what = "a finite number"
    if not _is_number(value):
        raise ValueError(f"{key} must be {what}; got {_got(value, True)}, e.g. {example}")
    ok = (math.isfinite(value) or (allow_inf and value == math.inf)) and not (
        (gt is not None and not value > gt)
        or (ge is not None and not value >= ge)
        or (lt is not None and not value < lt)
        or (le is not None and not value <= le)
    )
    if not ok:
        raise ValueError(f"{key} must be {what}; got {value!r}, e.g. {example}")


def _check_int(key: str, value: Any, low: int, example: int) -> None:
    """Refuse ``value`` unless it is an ``int`` (not a bool, float or string) ``>= low``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        wrong = isinstance(value, bool) or not isinstance(value, int)
        raise ValueError(
            f"{key} must be an integer >= {low}; got {_got(value, wrong)}, e.g. {example}"
        )


def _check_bool(key: str, value: Any, example: bool = True) -> None:
    if not isinstance(value, bool):
        raise ValueError(
            f"{key} must be true or false; got {_got(value, True)}, e.g. {str(example).lower()}"
        )


def _check_choice(key: str, value: Any, choices: tuple[str, ...]) -> None:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(
            f"{key} must be one of {list(choices)}; got {_got(value, not isinstance(value, str))}"
            f", e.g. {choices[0]!r}"
        )


def _check_name(key: str, value: Any, what: str, example: str) -> None:
    if value is not None and not (isinstance(value, str) and value.strip()):
        raise ValueError(
            f"{key} must be {what}; got {_got(value, not isinstance(value, str))}, e.g. {example!r}"
        )


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
    overlapping_trials : {"error", "trim"}, default "error"
        Trials that overlap in time are refused (naming them), or each is ended where the
        next one starts, with a warning naming the trials and bins trimmed.
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
    overlapping_trials: str = "error"
    sound_dir: str | None = None

    def __post_init__(self) -> None:
        examples = {
            "sound_name": "stimulus",
            "sound_column": "stimulus_name",
            "trials_table": "trials",
        }
        for key, example in examples.items():
            _check_name(
                f"[session] {key}",
                getattr(self, key),
                "a name (a non-empty string) or left out",
                example,
            )
        _check_name(
            "[session] sound_dir", self.sound_dir, "a folder (a non-empty string) or left out",
            "sounds",
        )  # fmt: skip
        if self.min_repeats is not None:
            _check_int("[session] min_repeats", self.min_repeats, 2, 3)
        _check_number("[session] holdout_fraction", self.holdout_fraction, 0.2, ge=0, lt=1)
        _check_number("[session] validation_fraction", self.validation_fraction, 0.2, gt=0, lt=1)
        _check_number("[session] chunk_s", self.chunk_s, 60.0, gt=0)
        if self.validation_sounds is not None:
            sounds = self.validation_sounds
            if isinstance(sounds, str) or not isinstance(sounds, list | tuple):
                raise ValueError(
                    "[session] validation_sounds must be a list of sound names; got "
                    f'{_got(sounds, True)}, e.g. ["a", "b"]'
                )
            bad = [x for x in sounds if isinstance(x, bool) or not isinstance(x, str | int)]
            if bad or not sounds or any(not str(x).strip() for x in sounds):
                raise ValueError(
                    "[session] validation_sounds must list one or more sound names (strings); "
                    f'got {list(sounds)!r}, e.g. ["ripple_03", "speech_07"]; leave it out to '
                    "choose them from the repeat counts"
                )
            object.__setattr__(self, "validation_sounds", tuple(str(x) for x in sounds))
        _check_choice("[session] layout", self.layout, SOUND_LAYOUTS)
        _check_choice("[session] overlapping_trials", self.overlapping_trials, ("error", "trim"))


@dataclass(frozen=True)
class SubspaceSettings:
    """dSTRF PCA and SRF settings (defaults: ``docs/methods.md`` sections 6-8).

    Attributes
    ----------
    n_components : int, default 20
        Principal components of each unit's dSTRFs kept (>= 1).
    variance_threshold : float, default 0.95
        Cumulative explained-variance ratio setting each unit's dimensionality, in (0, 1].
    outlier_threshold : float, default 5.0
        dSTRF frames further from the mean dSTRF than this many times the outlier rule's
        scale are left out (> 0; ``inf`` keeps every finite frame).
    outlier_rule : {"rms", "reference"}, default "rms"
        ``"rms"``: a frame ``J`` is left out when ``||J - mean||`` exceeds
        ``outlier_threshold`` times the frames' RMS deviation (drops at most
        ``1 / outlier_threshold^2`` of the frames); ``"reference"`` (the paper's rule): when
        the spread of ``J - mean`` over the pixels exceeds ``outlier_threshold`` times the
        spread of the mean dSTRF over the pixels. The mean is that of every finite frame.
        ``"rms"`` recovered the simulated dimensionalities more often (``paper`` preset:
        88% vs 83% within +-1, 3 initialisations; docs/methods.md, section 6).
    frames : {"estimation", "all"}, default "estimation"
        Stimulus bins whose dSTRFs enter the tuning subspaces (and the SRFs): those of the
        estimation (fit and holdout) trials, or of every trial (validation too). Each
        distinct sound counts once, at its first presentation: repeats of a sound give the
        same dSTRFs and are never weighted by their repeat count.
    reference_n_components : int, default 15
        Principal components whose variance the reference dimensionality rule shares out
        (``dimensionality_reference``; >= 1).
    reference_variance_threshold : float, default 0.95
        The reference dimensionality is the smallest ``k`` whose cumulative share of the
        top ``reference_n_components`` eigenvalues exceeds this, in (0, 1).
    srf_grid : {"reference", "ours"}, default "reference"
        SRF grid recipe (``nwb_subspace.subspace.srf.GRIDS``): "reference", the paper's maps
        (20 x 20 bins over the 0.025-99.975th percentiles, >= 2 samples, windows two bins
        wide, PC1-PC2 and PC1-PC3); "ours" (disjoint bins over the 1-99th percentiles, PC1-PC2)
        with ``srf_bins`` and ``min_occupancy``.
    srf_bins : int, default 20
        Grid bins per axis of the SRF maps (>= 2; the "ours" grid).
    min_occupancy : int, default 10
        Samples an SRF grid bin needs to be shown (>= 1; the "ours" grid).
    high_activity_threshold : float, default 0.5
        Normalised-map level defining the high-activity region (breadth), in (0, 1].
    min_noise_corrected_r : float, default 0.5
        Quality cut: units whose CNN noise-corrected correlation is below it get no dSTRFs
        (a finite number; -1 keeps every unit, a value above the best unit's, such as 1.5,
        computes no dSTRFs: noise-corrected correlations can exceed 1).
    ensemble : bool, default True
        The dSTRFs are those of the mean prediction of every initialisation's CNN fit
        (``[training] n_initializations``; all are stored), and the dimensionality counts
        only the variance the fits agree on; false uses the best fit alone. Averaging fits
        brought the subspaces of simulated units closer to the truth (see
        ``benchmarks/README.md`` and issue 7's notes).
    breadth_match_draws : int, default 10
        Thinning draws of the SNR-matched breadth (``breadth_snr_matched``: each unit's
        measured SRF brought to its site's signal-to-noise ratio before its breadth is
        measured; :func:`nwb_subspace.subspace.srf.snr_matched_breadth`), the breadth the
        cell-type and layer comparisons judge; 0 computes none (>= 0). Needs repeated sounds.
    breadth_match_gate : float, default 5.0
        Peak z of a measured SRF below which a unit is not thinned (no reliable SRF), and
        above which the lowest peak z of a site is its target (> 0).
    """

    n_components: int = 20
    variance_threshold: float = 0.95
    outlier_threshold: float = 5.0
    srf_bins: int = 20
    min_occupancy: int = 10
    high_activity_threshold: float = 0.5
    min_noise_corrected_r: float = 0.5
    ensemble: bool = True
    outlier_rule: str = "rms"
    frames: str = "estimation"
    reference_n_components: int = 15
    reference_variance_threshold: float = 0.95
    srf_grid: str = "reference"
    breadth_match_draws: int = 10
    breadth_match_gate: float = 5.0

    def __post_init__(self) -> None:
        _check_int("[subspace] n_components", self.n_components, 1, 20)
        _check_int("[subspace] breadth_match_draws", self.breadth_match_draws, 0, 10)
        _check_number("[subspace] breadth_match_gate", self.breadth_match_gate, 5.0, gt=0)
        _check_number("[subspace] variance_threshold", self.variance_threshold, 0.95, gt=0, le=1)
        _check_number(
            "[subspace] outlier_threshold", self.outlier_threshold, 5.0, gt=0, allow_inf=True
        )
        _check_int("[subspace] srf_bins", self.srf_bins, 2, 20)
        _check_int("[subspace] min_occupancy", self.min_occupancy, 1, 10)
        _check_number(
            "[subspace] high_activity_threshold", self.high_activity_threshold, 0.5, gt=0, le=1
        )
        _check_number("[subspace] min_noise_corrected_r", self.min_noise_corrected_r, 0.5)
        _check_bool("[subspace] ensemble", self.ensemble)
        _check_choice("[subspace] outlier_rule", self.outlier_rule, ("reference", "rms"))
        _check_choice("[subspace] frames", self.frames, ("estimation", "all"))
        _check_choice("[subspace] srf_grid", self.srf_grid, ("reference", "ours"))
        _check_int("[subspace] reference_n_components", self.reference_n_components, 1, 15)
        _check_number(
            "[subspace] reference_variance_threshold",
            self.reference_variance_threshold,
            0.95,
            gt=0,
            lt=1,
        )


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
        Cumulative pooled-variance ratio setting the site dimensionality (within the 75-90%
        range used for similarity analyses; see ``docs/methods.md`` section 10).
    unit_variance_threshold : float, default 0.85
        Sets each unit's own dimensionality for pairwise similarity.
    max_unit_components : int, default 20
    weighting : {"equal", "variance"}, default "equal"
        Pool trace-normalised (every unit weighs the same) or raw dSTRF covariances.
    n_null : int, default 200
        Draws of the random-subspace and pixel-shuffle nulls (secondary rows; any auditory
        data beats them).
    n_permutations : int, default 1000
        Permutations of the units' site labels in the same-site vs different-site test (the
        locality test; a file with one site cannot run it and says so).
    n_shifts : int, default 500
        Draws of the tiling null (random rotations of each unit's region about the centre
        of the site plane, or grid shifts with ``tiling_null = "shift"``).
    tiling_null : {"rotation", "shift"}, default "rotation"
        The tiling null: rotations keep each region's size and distance from the centre
        (occupancy); "shift" is the earlier null (circular shifts on the grid), which calls
        pockets near the centre "above chance" whether they cluster or scatter.
    neighbour_um : float, default 100.0
        Units within this depth distance (µm) are neighbours for the tiling row
        ``tiling_overlap_neighbours``; without known depths all pairs are used (said in the
        notes).
    high_activity_threshold : float, default 0.5
        Normalised-map level defining a unit's high-activity region on the site plane (the
        grid and occupancy come from ``[subspace] srf_bins`` and ``min_occupancy``).
    alpha : float, default 0.05
        Level of the two-sided tiling verdict.
    min_units : int, default 2
        Units passing the quality cut a site needs for a site subspace.
    min_per_group : int, default 2
        Units per cell type or layer a group comparison needs (with several sites: per site
        for ``group_method = "site_means"``, over all sites for ``"mixed_model"``).
    group_method : {"site_means", "mixed_model"}, default "site_means"
        The test of cell types and layers over a file's sites, units nested in sites
        (:func:`~nwb_subspace.site.groups.compare_across_sites`): per-site group means with a
        Wilcoxon signed-rank test across sites (Friedman for layers), as the paper, or a
        linear mixed model with a random intercept per site (statsmodels). Each site's own
        unit-level test is reported too, labelled ``..._within_site``.

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
    n_permutations: int = 1000
    n_shifts: int = 500
    tiling_null: str = "rotation"
    neighbour_um: float = 100.0
    high_activity_threshold: float = 0.5
    alpha: float = 0.05
    min_units: int = 2
    min_per_group: int = 2
    group_method: str = "site_means"

    def __post_init__(self) -> None:
        _check_bool("[sites] enabled", self.enabled)
        _check_name(
            "[sites] group_by", self.group_by, "a units-table column (a non-empty string) or left "
            "out", "shank",
        )  # fmt: skip
        for name in ("variance_threshold", "unit_variance_threshold", "high_activity_threshold"):
            example = 0.5 if name == "high_activity_threshold" else 0.85
            _check_number(f"[sites] {name}", getattr(self, name), example, gt=0, le=1)
        _check_number("[sites] alpha", self.alpha, 0.05, gt=0, lt=1)
        _check_number("[sites] neighbour_um", self.neighbour_um, 100.0, gt=0)
        _check_choice("[sites] tiling_null", self.tiling_null, ("rotation", "shift"))
        ints = {"max_unit_components": (1, 20), "n_null": (1, 200), "n_shifts": (1, 500)}
        ints["n_permutations"] = (1, 1000)
        ints.update(min_units=(2, 2), min_per_group=(1, 2))
        if self.n_components is not None:
            ints["n_components"] = (1, 3)
        for name, (low, example) in ints.items():
            _check_int(f"[sites] {name}", getattr(self, name), low, example)
        _check_choice("[sites] weighting", self.weighting, ("equal", "variance"))
        _check_choice("[sites] group_method", self.group_method, _GROUP_METHODS)


_LAYER_EXAMPLE = 'l34_rel_y = 800.0, or layers = { "44" = [800.0, 600.0] }'


def _check_cell_types(cell_types: Any) -> None:
    """Build a :class:`CellTypeParams` from ``[cell_types]`` so that bad values fail now."""
    if not isinstance(cell_types, Mapping):
        raise ValueError(
            f"[cell_types] must be a table of settings; got {_got(cell_types, True)}, e.g. "
            "threshold_ms = 0.35"
        )
    allowed = [f.name for f in fields(CellTypeParams)]
    extra = sorted(set(cell_types) - set(allowed), key=str)
    if extra:
        raise ValueError(f"unknown keys {extra} in [cell_types]; allowed: {allowed}")
    try:
        CellTypeParams(**cell_types)
    except (TypeError, ValueError) as err:
        raise ValueError(f"[cell_types] {err}") from None


def _check_layer_table(key: str, table: Any, example: dict[str, float]) -> None:
    """``[layers] <key>``: a table giving a finite number (µm) for each key of ``example``."""
    names = list(example)
    shown = "{ " + ", ".join(f'"{n}" = {v:g}' for n, v in example.items()) + " }"
    if not isinstance(table, Mapping) or set(table) != set(names):
        raise ValueError(
            f"[layers] {key} must be a table with exactly the keys {names} (µm); got "
            f"{table!r}, e.g. {key} = {shown}"
        )
    for name, value in table.items():
        _check_number(f"[layers] {key}.{name!r}", value, example[name])


def _check_layers(layers: Any) -> None:
    """``[layers]``: one of the shapes :meth:`LayerBoundaries.from_dict` reads, with usable
    values (see ``nwb_subspace.units.celltypes``)."""
    if not isinstance(layers, Mapping):
        raise ValueError(
            f"[layers] must be a table; got {_got(layers, True)}, e.g. {_LAYER_EXAMPLE}"
        )
    allowed = ["l34_rel_y", "depths_um", "boundaries", "layers"]
    extra = sorted(set(layers) - set(allowed), key=str)
    if extra:
        raise ValueError(f"unknown keys {extra} in [layers]; allowed: {allowed}")
    given = [k for k in ("l34_rel_y", "boundaries", "layers") if k in layers]
    if len(given) != 1:
        raise ValueError(
            "[layers] needs exactly one of l34_rel_y (rel_y µm of the L3/4 boundary; nominal "
            "depths below it), boundaries (BS/1, L3/4, L4/5, L6/WM -> rel_y µm) or layers "
            f"(name -> [top, bottom] in rel_y µm); got {dict(layers)!r}, e.g. {_LAYER_EXAMPLE}"
            "; leave [layers] out to take layers from the electrode locations"
        )
    if "depths_um" in layers:
        if "l34_rel_y" not in layers:
            raise ValueError("[layers] depths_um goes with l34_rel_y (depths below L3/4)")
        _check_layer_table("depths_um", layers["depths_um"], LAYER_DEPTHS_UM)
    if "l34_rel_y" in layers:
        _check_number("[layers] l34_rel_y", layers["l34_rel_y"], 800.0)
    elif "boundaries" in layers:
        nominal = {name: 800.0 - depth for name, depth in LAYER_DEPTHS_UM.items()}
        _check_layer_table("boundaries", layers["boundaries"], nominal)
    else:
        table = layers["layers"]
        if not isinstance(table, Mapping) or not table:
            raise ValueError(
                "[layers] layers must be a non-empty table name -> [top, bottom] (rel_y µm, "
                f'top > bottom); got {table!r}, e.g. layers = {{ "44" = [800.0, 600.0] }}'
            )
        for name, rng in table.items():
            good = (
                isinstance(rng, list | tuple)
                and len(rng) == 2
                and all(_is_number(v) and math.isfinite(v) for v in rng)
                and rng[0] > rng[1]
            )
            if not good:
                raise ValueError(
                    f"[layers] layers.{name!r} must be [top, bottom], two numbers (rel_y µm) "
                    f"with top > bottom; got {rng!r}, e.g. [800.0, 600.0]"
                )
    try:
        LayerBoundaries.from_dict(layers)
    except (TypeError, ValueError) as err:
        raise ValueError(f"[layers] {err}; e.g. {_LAYER_EXAMPLE}") from None


@dataclass(frozen=True)
class AnalysisConfig:
    """All settings of ``nwb-subspace run``, each checked (type and range) when built.

    Attributes
    ----------
    seed : int
        Seed of every random step (splits, initialisations, nulls). It is also the training
        seed: ``training.seed`` is set to it when the config is built, so
        ``config.training.seed == config.seed`` always. A TOML ``[training] seed`` that
        differs from the top-level ``seed`` is refused (set the top-level one).
    device : {"cpu", "cuda", "auto"}
    models : tuple of str
        Encoding models to fit (``"ln"``, ``"cnn"``; ``"cnn"`` is required).
    run_name : str
        Name of the results container in the NWB file (1-128 letters, digits, ``_``, ``-``
        or ``.``, starting with a letter or digit).
    session, spectrogram, training, subspace, sites : section dataclasses
    cell_types : dict
        :class:`~nwb_subspace.units.celltypes.CellTypeParams` settings: ``threshold_ms``
        for narrow/broad (default: probe-dependent, see celltypes) and ``upsample``.
    layers : dict or None
        Layer boundaries, one of the shapes of
        :meth:`~nwb_subspace.units.celltypes.LayerBoundaries.from_dict`:
        ``{"l34_rel_y": ...}`` (optionally with ``"depths_um"``), ``{"boundaries": {...}}``
        or ``{"layers": {name: [top, bottom]}}``; None takes layers from the electrode
        locations.
    keep_partial : bool, default False
        When the CNN fit fails (every initialisation non-finite, constant, runaway or
        uncorrelated with every unit, after the retries), the run normally stops with
        :class:`~nwb_subspace.models.training.ModelFitError` and writes nothing; true
        stores the failed fit and the other models, marked in the run's notes, without
        dSTRFs or subspaces.

    Raises
    ------
    ValueError
        When a setting has the wrong type or is out of range; the message names the section
        and key, the value and an example of a good one.
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
        _check_int("seed", self.seed, 0, 1)
        _check_choice("device", self.device, ("cpu", "cuda", "auto"))
        models = self.models
        if isinstance(models, str) or not isinstance(models, list | tuple):
            raise ValueError(
                f"models must be a list of model names; got {_got(models, True)}, e.g. "
                '["ln", "cnn"]'
            )
        bad = [m for m in models if m not in MODEL_KINDS]
        if bad or "cnn" not in models or len(set(models)) != len(models):
            raise ValueError(
                f"models must include 'cnn' and be drawn from {list(MODEL_KINDS)} without "
                f'repeats; got {list(models)!r}, e.g. ["ln", "cnn"]'
            )
        object.__setattr__(self, "models", tuple(models))
        if not isinstance(self.run_name, str) or not _RUN_NAME.match(self.run_name):
            raise ValueError(
                "run_name must be 1-128 letters, digits, '_', '-' or '.', starting with a "
                f"letter or digit; got {self.run_name!r}, e.g. 'subspace_analysis'"
            )
        sections = {
            "session": SessionSettings,
            "spectrogram": SpectrogramSettings,
            "training": TrainingConfig,
            "subspace": SubspaceSettings,
            "sites": SiteSettings,
        }
        for key, kind in sections.items():
            if not isinstance(getattr(self, key), kind):
                raise ValueError(
                    f"{key} must be a {kind.__name__} (a [{key}] table in TOML); got "
                    f"{_got(getattr(self, key), True)}"
                )
        _check_cell_types(self.cell_types)
        if self.layers is not None:
            _check_layers(self.layers)
        _check_bool("keep_partial", self.keep_partial, False)
        if self.training.seed != self.seed:  # the top-level seed is the training seed
            object.__setattr__(self, "training", replace(self.training, seed=self.seed))

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
        """Build from a dict shaped like the TOML file.

        Raises
        ------
        ValueError
            For unknown keys, a value of the wrong type or out of range (naming the section
            and key, the value and an example), or a ``[training] seed`` that differs from
            the top-level ``seed``.
        """
        sections = {
            "session": SessionSettings,
            "spectrogram": SpectrogramSettings,
            "training": TrainingConfig,
            "subspace": SubspaceSettings,
            "sites": SiteSettings,
        }
        if not isinstance(values, Mapping):
            raise ValueError(f"a config must be a table of settings; got {_got(values, True)}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known, key=str)
        if unknown:
            raise ValueError(f"unknown config keys {unknown}; known keys are {sorted(known)}")
        kwargs: dict[str, Any] = {}
        for key, value in values.items():
            if key in sections:
                if not isinstance(value, Mapping):
                    raise ValueError(
                        f"[{key}] must be a table of settings; got {_got(value, True)}"
                    )
                allowed = {f.name for f in fields(sections[key])}
                extra = sorted(set(value) - allowed, key=str)
                if extra:
                    raise ValueError(f"unknown keys {extra} in [{key}]; allowed: {sorted(allowed)}")
                try:
                    kwargs[key] = sections[key](**value)
                except TypeError as err:  # a wrong type is a bad value like any other
                    text = str(err)
                    raise ValueError(text if text.startswith("[") else f"[{key}] {text}") from None
            else:
                kwargs[key] = value
        training = values.get("training", {})
        if "seed" in training:
            top = values.get("seed", cls.seed)
            if training["seed"] != top or isinstance(top, bool) != isinstance(
                training["seed"], bool
            ):
                raise ValueError(
                    f"[training] seed = {training['seed']!r} differs from the top-level seed = "
                    f"{top!r}; the top-level seed seeds every step, training included: set it "
                    f"at the top of the file (before any [section]), e.g. seed = "
                    f"{training['seed']!r}, and remove seed from [training]"
                )
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
