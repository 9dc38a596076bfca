"""In-memory results of an analysis run, independent of any file format.

The analysis steps fill these plain dataclasses; ``nwb_subspace.io.to_nwb`` turns them into
NWB extension objects (``nwb_subspace.io.writer`` stores them in a file) and
``nwb_subspace.io.from_nwb`` turns stored objects back into them (``read_results``). Units
are always referred to by their **row index** in the NWB file's ``units`` table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: Kinds of fitted model a result set can hold (``config.MODEL_KINDS``: those a run fits).
STORED_MODEL_KINDS = ("ln", "cnn", "subspace")


def _as_rows(rows: Any, name: str) -> np.ndarray:
    arr = np.asarray(rows)
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{name} must be a 1-D array of integer unit rows; got {arr!r}")
    if arr.size and arr.min() < 0:
        raise ValueError(f"{name} holds negative unit rows: {arr[arr < 0][:5]}")
    return arr.astype(np.int64)


def _check_len(owner: str, n: int, **arrays: Any) -> None:
    for key, value in arrays.items():
        if value is None:
            continue
        if len(value) != n:
            raise ValueError(
                f"{owner}.{key} has {len(value)} rows but unit_rows has {n}; give one row per unit"
            )


@dataclass
class SpectrogramResult:
    """A spectrogram on the session clock.

    Parameters
    ----------
    data : ndarray, shape (n_bins, n_frequencies)
        Compressed filterbank energy (dimensionless).
    frequencies : ndarray, shape (n_frequencies,)
        Channel centre frequencies in Hz.
    rate : float
        Bins per second.
    starting_time : float
        Session time of the first bin's start, in seconds.
    settings : dict
        Every setting of the computation (filterbank, f_min, f_max, bin_s, compression...).
    name : str
        Name of the stored object.
    source_sound : str or None
        Name of the sound ``TimeSeries`` it was computed from, if any.
    """

    data: np.ndarray
    frequencies: np.ndarray
    rate: float
    starting_time: float = 0.0
    settings: dict = field(default_factory=dict)
    name: str = "spectrogram"
    source_sound: str | None = None

    def __post_init__(self) -> None:
        self.data = np.asarray(self.data)
        self.frequencies = np.asarray(self.frequencies, dtype=float)
        if self.data.ndim != 2 or self.data.shape[1] != self.frequencies.size:
            raise ValueError(
                f"spectrogram data must be (n_bins, {self.frequencies.size}); "
                f"got shape {self.data.shape}"
            )
        if not self.rate > 0:
            raise ValueError(f"spectrogram rate must be positive; got {self.rate}")


@dataclass
class TrainingInfo:
    """How a model was fitted (stored as attributes of the ``EncodingModel``)."""

    loss: str = "poisson"
    epochs: int = 0
    seed: int = 0
    learning_rates: tuple[float, ...] = ()
    best_epoch: int | None = None
    l2: float | None = None
    n_initializations: int | None = None
    device: str | None = None
    training_loss: np.ndarray | None = None
    validation_loss: np.ndarray | None = None
    software_versions: dict = field(default_factory=dict)


@dataclass
class UnitScores:
    """Per-unit validation scores, aligned with a model's ``unit_rows``."""

    correlation: np.ndarray
    noise_floor: np.ndarray
    noise_corrected_correlation: np.ndarray
    explained_variance: np.ndarray


@dataclass
class ModelPrediction:
    """A model's predicted firing rate on some bins (the validation bins, when stored).

    Attributes
    ----------
    timestamps : ndarray of float64, shape (n_bins,)
        Start of each bin on the session clock, in seconds (strictly increasing); each bin
        lasts the model's ``bin_size_s``.
    rate : ndarray of float32, shape (n_bins, n_outputs)
        Predicted rate in spikes/s; column ``i`` is the model's output ``i`` (units-table row
        ``unit_rows[i]``).
    """

    timestamps: np.ndarray
    rate: np.ndarray

    def __post_init__(self) -> None:
        self.timestamps = np.asarray(self.timestamps, dtype=np.float64)
        self.rate = np.asarray(self.rate, dtype=np.float32)
        if self.timestamps.ndim != 1 or self.rate.ndim != 2:
            raise ValueError(
                "ModelPrediction needs 1-D timestamps and a 2-D rate (n_bins, n_outputs); got "
                f"{self.timestamps.shape} and {self.rate.shape}"
            )
        if self.rate.shape[0] != self.timestamps.size:
            raise ValueError(
                f"ModelPrediction.rate has {self.rate.shape[0]} bins but there are "
                f"{self.timestamps.size} timestamps"
            )
        if self.timestamps.size > 1 and not np.all(np.diff(self.timestamps) > 0):
            raise ValueError("ModelPrediction.timestamps must be strictly increasing")


@dataclass
class FittedModel:
    """A fitted encoding model with its metadata.

    ``module`` is a ``torch.nn.Module`` built by ``nwb_subspace.models.build_model``: it has
    ``kind``, ``config``, ``memory`` and ``tensor_dims()``. ``validation_prediction``
    (optional) is its predicted rate on the validation bins, stored with the model so the
    predictions can be used without torch.
    """

    name: str
    module: Any
    unit_rows: np.ndarray
    bin_size_s: float
    training: TrainingInfo = field(default_factory=TrainingInfo)
    scores: UnitScores | None = None
    spectrogram: str | None = None
    architecture: str = ""
    validation_prediction: ModelPrediction | None = None

    def __post_init__(self) -> None:
        self.unit_rows = _as_rows(self.unit_rows, "FittedModel.unit_rows")
        kind = getattr(self.module, "kind", None)
        if kind not in STORED_MODEL_KINDS:
            raise ValueError(f"model kind must be one of {STORED_MODEL_KINDS}; got {kind!r}")
        if self.scores is not None:
            _check_len("UnitScores", self.unit_rows.size, **vars(self.scores))
        pred = self.validation_prediction
        if pred is not None and pred.rate.shape[1] != self.unit_rows.size:
            raise ValueError(
                f"FittedModel.validation_prediction has {pred.rate.shape[1]} outputs but the "
                f"model predicts {self.unit_rows.size} units"
            )

    @property
    def kind(self) -> str:
        return self.module.kind


@dataclass
class TuningSubspaces:
    """Per-unit tuning subspaces (PCA of dSTRFs).

    ``dimensionality`` is ours (cumulative share of the total variance the fits agree on,
    capped by the noise floor); ``dimensionality_reference`` is the paper's rule (the
    smallest ``k`` whose cumulative share of the top ``reference_n_components``
    eigenvalues exceeds ``reference_variance_threshold``), stored so results compare with
    the paper. ``n_outlier_frames`` counts each unit's frames left out as outliers
    (``n_frames`` were kept). The three optional arrays are None for results read from
    files written before they existed.
    """

    unit_rows: np.ndarray
    components: np.ndarray  # (n, K, F, D)
    explained_variance_ratio: np.ndarray  # (n, K)
    dimensionality: np.ndarray  # (n,)
    mean_dstrf: np.ndarray  # (n, F, D)
    n_frames: np.ndarray  # (n,)
    noise_floor: np.ndarray  # (n, K)
    frequencies: np.ndarray  # (F,)
    lags_s: np.ndarray  # (D,)
    variance_threshold: float = 0.95
    name: str = "tuning_subspaces"
    dimensionality_reference: np.ndarray | None = None  # (n,)
    n_outlier_frames: np.ndarray | None = None  # (n,)
    reference_n_components: int = 15
    reference_variance_threshold: float = 0.95

    def __post_init__(self) -> None:
        self.unit_rows = _as_rows(self.unit_rows, "TuningSubspaces.unit_rows")
        n = self.unit_rows.size
        _check_len(
            "TuningSubspaces",
            n,
            components=self.components,
            explained_variance_ratio=self.explained_variance_ratio,
            dimensionality=self.dimensionality,
            mean_dstrf=self.mean_dstrf,
            n_frames=self.n_frames,
            noise_floor=self.noise_floor,
            dimensionality_reference=self.dimensionality_reference,
            n_outlier_frames=self.n_outlier_frames,
        )
        comps = np.asarray(self.components)
        if comps.ndim != 4 or comps.shape[2:] != (len(self.frequencies), len(self.lags_s)):
            raise ValueError(
                "components must be (n_units, n_components, n_frequencies, n_lags) matching "
                f"frequencies ({len(self.frequencies)}) and lags ({len(self.lags_s)}); "
                f"got {comps.shape}"
            )


@dataclass
class SubspaceRFs:
    """Subspace receptive fields, one row per unit, dimension pair and response source."""

    unit_rows: np.ndarray
    dimensions: np.ndarray  # (n, 2)
    response_source: np.ndarray  # (n,) 'model' or 'measured'
    response_map: np.ndarray  # (n, B, B)
    occupancy: np.ndarray  # (n, B, B)
    edges_x: np.ndarray  # (n, B+1)
    edges_y: np.ndarray  # (n, B+1)
    breadth: np.ndarray  # (n,) old measure: bins >= threshold of the min-max normalised map
    shape_asymmetry: np.ndarray  # (n, 2)
    high_activity_threshold: float = 0.5
    name: str = "subspace_rfs"
    # issue 19 (optional: None in files written before it)
    response_map_sem: np.ndarray | None = None  # (n, B, B) SEM of each bin; NaN for model rows
    breadth_fraction: np.ndarray | None = None  # (n,) noise-aware breadth, fraction of bins
    curve_asymmetry: np.ndarray | None = None  # (n,) signed asym of the tested axis' 1-D profile
    shape_p_value: np.ndarray | None = None  # (n,) profile non-monotonic beyond noise; NaN: model
    grid: str = ""  # the grid recipe, in words
    sem_method: str = ""  # "repeats" (across repeats) or "samples" (within bins)
    # issue 20 (optional: None in files written before it; NaN on rows they do not apply to)
    peak_z: np.ndarray | None = None  # (n,) peak SNR of a measured map (repeat-wise SE)
    snr_target_z: np.ndarray | None = None  # (n,) the unit's site target z* of the matching
    keep_probability: np.ndarray | None = None  # (n,) spike keep probability of the thinning
    breadth_snr_matched: np.ndarray | None = None  # (n,) SNR-matched noise-aware breadth
    snr_matching: str = ""  # gate, draws, seed and sites of the matching, in words

    def __post_init__(self) -> None:
        self.unit_rows = _as_rows(self.unit_rows, "SubspaceRFs.unit_rows")
        _check_len(
            "SubspaceRFs",
            self.unit_rows.size,
            dimensions=self.dimensions,
            response_source=self.response_source,
            response_map=self.response_map,
            occupancy=self.occupancy,
            edges_x=self.edges_x,
            edges_y=self.edges_y,
            breadth=self.breadth,
            shape_asymmetry=self.shape_asymmetry,
            response_map_sem=self.response_map_sem,  # the optional ones: None is skipped
            breadth_fraction=self.breadth_fraction,
            curve_asymmetry=self.curve_asymmetry,
            shape_p_value=self.shape_p_value,
            peak_z=self.peak_z,
            snr_target_z=self.snr_target_z,
            keep_probability=self.keep_probability,
            breadth_snr_matched=self.breadth_snr_matched,
        )
        bad = set(np.asarray(self.response_source).tolist()) - {"model", "measured"}
        if bad:
            raise ValueError(f"response_source must be 'model' or 'measured'; got {bad}")


@dataclass
class SiteSubspaceResult:
    """A recording site's pooled subspace and each unit's variance fraction in it.

    ``srfs`` optionally holds the units' SRFs on the site's top two PCs (``dimensions``
    index the site components), the maps behind the tiling test; stored inside the NWB
    ``SiteSubspace`` so a tiling map can be redrawn without refitting.

    The issue-19 fields (None in results read from files written before them; see
    :mod:`nwb_subspace.site.subspace` for the definitions): ``variance_fraction_loo`` (ours,
    each unit's fraction in our site subspace rebuilt without it); the **reference** site
    subspace ``components_reference`` (R, F, D) with ``explained_variance_ratio_reference``
    (R,) and ``dimensionality_reference``; per unit ``site_pc_similarity`` (n, R), the
    reference's similarity to each reference site PC, and ``site_similarity_loo`` (n,), the
    similarity to the top ``dimensionality_reference`` reference PCs rebuilt without the unit.
    """

    site: str
    components: np.ndarray  # (K, F, D)
    explained_variance_ratio: np.ndarray  # (K,)
    dimensionality: int
    frequencies: np.ndarray
    lags_s: np.ndarray
    unit_rows: np.ndarray
    variance_fraction: np.ndarray
    null_mean: np.ndarray
    p_value: np.ndarray
    name: str = ""
    srfs: SubspaceRFs | None = None
    variance_fraction_loo: np.ndarray | None = None  # (n,)
    components_reference: np.ndarray | None = None  # (R, F, D)
    explained_variance_ratio_reference: np.ndarray | None = None  # (R,)
    dimensionality_reference: int | None = None
    site_pc_similarity: np.ndarray | None = None  # (n, R)
    site_similarity_loo: np.ndarray | None = None  # (n,)

    def __post_init__(self) -> None:
        self.unit_rows = _as_rows(self.unit_rows, "SiteSubspaceResult.unit_rows")
        _check_len(
            "SiteSubspaceResult",
            self.unit_rows.size,
            variance_fraction=self.variance_fraction,
            null_mean=self.null_mean,
            p_value=self.p_value,
            variance_fraction_loo=self.variance_fraction_loo,
            site_pc_similarity=self.site_pc_similarity,
            site_similarity_loo=self.site_similarity_loo,
        )
        if self.dimensionality_reference is not None:
            self.dimensionality_reference = int(self.dimensionality_reference)
        if self.srfs is not None:
            stray = sorted(set(self.srfs.unit_rows.tolist()) - set(self.unit_rows.tolist()))
            if stray:
                raise ValueError(
                    f"site {self.site!r}: SRFs of unit rows {stray[:5]} that are not units of "
                    "the site; give SRFs of the site's own units"
                )
            if self.srfs.unit_rows.size and np.asarray(self.srfs.dimensions).max() >= len(
                self.components
            ):
                raise ValueError(
                    f"site {self.site!r}: SRF dimensions go up to "
                    f"{int(np.asarray(self.srfs.dimensions).max())} but the site has "
                    f"{len(self.components)} components"
                )
        self.name = self.name or f"site_subspace_{self.site}"


STATISTIC_FIELDS = (
    "site",
    "statistic",
    "value",
    "null_mean",
    "p_value",
    "effect_size",
    "n",
    "test",
    "verdict",
)


@dataclass
class SiteStatistics:
    """Rows of site statistics; each row is a dict with the keys of ``STATISTIC_FIELDS``."""

    rows: list[dict]
    name: str = "site_statistics"

    def __post_init__(self) -> None:
        if not self.rows:
            raise ValueError("SiteStatistics needs at least one row; write nothing instead")
        for i, row in enumerate(self.rows):
            missing = set(STATISTIC_FIELDS) - set(row)
            extra = set(row) - set(STATISTIC_FIELDS)
            if missing or extra:
                raise ValueError(
                    f"site statistics row {i} has missing keys {sorted(missing)} and "
                    f"unknown keys {sorted(extra)}; expected {STATISTIC_FIELDS}"
                )


@dataclass
class UnitColumn:
    """A column to add to the ``units`` table, one value per unit (row order)."""

    name: str
    values: np.ndarray
    description: str


@dataclass
class ResultSet:
    """Everything one analysis run writes into an NWB file."""

    spectrograms: list[SpectrogramResult] = field(default_factory=list)
    models: list[FittedModel] = field(default_factory=list)
    subspaces: list[TuningSubspaces] = field(default_factory=list)
    srfs: list[SubspaceRFs] = field(default_factory=list)
    site_subspaces: list[SiteSubspaceResult] = field(default_factory=list)
    site_statistics: list[SiteStatistics] = field(default_factory=list)
    unit_columns: list[UnitColumn] = field(default_factory=list)
    config: dict = field(default_factory=dict)

    def max_unit_row(self) -> int:
        """Largest unit row referenced by any result (-1 if none)."""
        rows = [
            r.unit_rows for r in (*self.models, *self.subspaces, *self.srfs, *self.site_subspaces)
        ]
        return max((int(r.max()) for r in rows if r.size), default=-1)
