"""Build the ``ndx-subspace`` NWB extension spec (ndx-template convention).

Run ``python src/spec/create_extension_spec.py`` (from the ``ndx-subspace`` folder) to
regenerate ``spec/ndx-subspace.namespace.yaml`` and ``spec/ndx-subspace.extensions.yaml``;
``python src/spec/create_extension_spec.py FOLDER`` writes them into ``FOLDER`` instead. The
YAML is the one source the package loads at import; the tests regenerate it into a temporary
folder and fail on any difference, so edit this script, never the YAML.
"""

from __future__ import annotations

import sys
from pathlib import Path

from pynwb.spec import (
    NWBAttributeSpec,
    NWBDatasetSpec,
    NWBGroupSpec,
    NWBLinkSpec,
    NWBNamespaceBuilder,
    NWBRefSpec,
    export_spec,
)

NAMESPACE = "ndx-subspace"
# 0.1.1: optional columns of issue 19; 0.2.0: output-to-unit region and validation prediction
# of EncodingModel, units of every quantity, bin convention, electrode-group links (files of
# 0.1.x still read: everything new is optional)
VERSION = "0.2.0"
MAX_WEIGHT_RANK = 5


def _attr(name, doc, dtype="text", required=True, **kw):
    return NWBAttributeSpec(name=name, doc=doc, dtype=dtype, required=required, **kw)


def _unit_attr(unit: str) -> NWBAttributeSpec:
    return NWBAttributeSpec(
        name="unit",
        doc=f"Unit of measurement of the values ({unit}).",
        dtype="text",
        default_value=unit,
        required=False,
    )


def _seconds_attr() -> NWBAttributeSpec:
    """The fixed ``unit`` of a TimeSeries time axis (as in the core schema)."""
    return NWBAttributeSpec(
        name="unit", doc="Unit of the times: 'seconds' (fixed).", dtype="text", value="seconds"
    )


def _column(name, doc, dtype, dims, quantity=1, inc="VectorData", unit=None):
    """A DynamicTable column: the first dim is always the row dim ``num_rows``; ``unit``
    adds a ``unit`` attribute (written with its default value by hdmf)."""
    dims = ["num_rows", *dims]
    return NWBDatasetSpec(
        name=name,
        neurodata_type_inc=inc,
        doc=doc,
        dtype=dtype,
        dims=dims,
        shape=[None] * len(dims),
        quantity=quantity,
        **({"attributes": [_unit_attr(unit)]} if unit else {}),
    )


def _units_region(doc: str) -> NWBDatasetSpec:
    return NWBDatasetSpec(
        name="units",
        neurodata_type_inc="DynamicTableRegion",
        dtype="int",
        dims=["num_rows"],
        shape=[None],
        doc=f"{doc} Each value is a row index into the NWB file's ``units`` table.",
    )


def _axis(name: str, doc: str, unit: str, dim: str) -> NWBDatasetSpec:
    return NWBDatasetSpec(
        name=name,
        doc=doc,
        dtype="float64",
        dims=[dim],
        shape=[None],
        attributes=[_unit_attr(unit)],
    )


def spectrogram_spec() -> NWBGroupSpec:
    return NWBGroupSpec(
        neurodata_type_def="Spectrogram",
        neurodata_type_inc="TimeSeries",
        doc=(
            "Auditory spectrogram of a sound stimulus: the compressed output of a bank of "
            "band-pass filters, binned in time. The time base (starting_time, rate) is the "
            "session clock, so bins align with spike times. Bin convention: the time of a bin "
            "(starting_time + i / rate, or timestamps[i]) is the START of the bin; row i "
            "summarises the sound in [t_i, t_i + 1 / rate), and a model's prediction for bin "
            "i is the spike count in that same interval."
        ),
        datasets=[
            NWBDatasetSpec(
                name="data",
                doc="Compressed filterbank energy, one row per time bin; row i covers the "
                "interval that starts at the bin's time (starting_time + i / rate, or "
                "timestamps[i]) and lasts one bin (1 / rate).",
                dtype="float32",
                dims=["num_times", "num_frequencies"],
                shape=[None, None],
                attributes=[
                    NWBAttributeSpec(
                        name="unit",
                        dtype="text",
                        default_value="a.u.",
                        doc="Unit of the compressed energy; 'a.u.' (dimensionless) by default.",
                    )
                ],
            ),
            _axis(
                "frequencies",
                "Centre frequency of each filterbank channel.",
                "Hz",
                "num_frequencies",
            ),
            NWBDatasetSpec(
                name="starting_time",
                doc="Start time of the first bin, in seconds on the session clock (bins are "
                "stamped by their start: bin i starts at starting_time + i / rate).",
                dtype="float64",
                quantity="?",
                attributes=[_seconds_attr()],
            ),
            NWBDatasetSpec(
                name="timestamps",
                doc="Start time of each bin, in seconds on the session clock, when the bins "
                "are stamped one by one instead of by starting_time and rate: bin i covers "
                "[timestamps[i], timestamps[i] + bin width).",
                dtype="float64",
                dims=["num_times"],
                shape=[None],
                quantity="?",
                attributes=[_seconds_attr()],
            ),
        ],
        attributes=[
            _attr(
                "filterbank",
                "Kind of filterbank, e.g. 'gammatone' (4th-order IIR, scipy.signal.gammatone).",
            ),
            _attr("f_min", "Lowest channel centre frequency requested, in Hz.", "float64"),
            _attr(
                "f_max",
                "Highest channel centre frequency used (after any cap at the "
                "Nyquist frequency), in Hz.",
                "float64",
            ),
            _attr(
                "window_s",
                "Length of the time window over which energy is pooled for each bin, in seconds.",
                "float64",
            ),
            _attr(
                "compression",
                "The compression applied to each bin's filter output, "
                "written as a formula, e.g. 'log((sqrt(rms) + 0.1) / 0.1)'.",
            ),
            _attr(
                "settings_json",
                "Every setting of the computation as a JSON object, "
                "so the spectrogram can be recomputed exactly.",
                required=False,
            ),
        ],
        links=[
            NWBLinkSpec(
                name="source_sound",
                target_type="TimeSeries",
                quantity="?",
                doc="The sound waveform this spectrogram was computed from.",
            )
        ],
    )


def model_weight_spec() -> NWBDatasetSpec:
    dims = [[f"dim{i}" for i in range(r)] for r in range(1, MAX_WEIGHT_RANK + 1)]
    return NWBDatasetSpec(
        neurodata_type_def="ModelWeight",
        neurodata_type_inc="NWBData",
        doc=(
            "One tensor of a fitted model (a PyTorch state_dict entry), stored with its "
            "exact dtype and shape. The dataset name is the state_dict key."
        ),
        dtype="numeric",
        dims=dims,
        shape=[[None] * len(d) for d in dims],
        attributes=[
            _attr(
                "dimension_names",
                "Meaning of each axis, e.g. ['out_channels', 'in_channels', 'kernel'].",
                dims=["rank"],
                shape=[None],
            ),
        ],
    )


def layer_table_spec() -> NWBGroupSpec:
    return NWBGroupSpec(
        neurodata_type_def="ModelLayerTable",
        neurodata_type_inc="DynamicTable",
        doc="The layers of a fitted model in order from input to output, one row per layer.",
        datasets=[
            _column("layer_name", "Name of the layer (prefix of its weight tensors).", "text", []),
            _column(
                "layer_type",
                "Kind of layer: 'dense', 'temporal_conv', 'double_exponential', 'projection', ...",
                "text",
                [],
            ),
            _column("in_size", "Number of input channels or features.", "int", []),
            _column("out_size", "Number of output channels or features.", "int", []),
            _column(
                "kernel_size",
                "Temporal filter length in time bins (1 for dense layers).",
                "int",
                [],
            ),
            _column(
                "activation",
                "Nonlinearity applied after the layer ('relu', 'none', ...).",
                "text",
                [],
            ),
        ],
    )


def unit_scores_spec() -> NWBGroupSpec:
    return NWBGroupSpec(
        neurodata_type_def="UnitScoresTable",
        neurodata_type_inc="DynamicTable",
        doc="Per-unit prediction scores of a fitted model on the validation data.",
        datasets=[
            _units_region("The unit each row scores."),
            _column(
                "correlation",
                "Pearson correlation of the prediction with the "
                "repeat-averaged validation PSTH (dimensionless).",
                "float64",
                [],
            ),
            _column(
                "noise_floor",
                "95th percentile of the correlation after shuffling "
                "the prediction in time (dimensionless).",
                "float64",
                [],
            ),
            _column(
                "noise_corrected_correlation",
                "Correlation divided by the ceiling "
                "estimated from the repeats (dimensionless; NaN where undefined).",
                "float64",
                [],
            ),
            _column(
                "explained_variance",
                "Fraction of the variance of the "
                "repeat-averaged validation PSTH explained by the prediction.",
                "float64",
                [],
            ),
        ],
    )


def encoding_model_spec() -> NWBGroupSpec:
    return NWBGroupSpec(
        neurodata_type_def="EncodingModel",
        neurodata_type_inc="NWBDataInterface",
        doc=(
            "A fitted encoding model predicting units' firing rates from a spectrogram: "
            "its architecture, every weight tensor, how it was trained and how well it "
            "predicts. The architecture fields plus the weights rebuild the model exactly."
        ),
        attributes=[
            _attr(
                "model_kind",
                "Kind of model: 'ln' (linear-nonlinear), 'cnn' "
                "(population convolutional network) or 'subspace' (per-unit projection "
                "onto a tuning subspace followed by a small network).",
            ),
            _attr("architecture", "Name of the architecture, e.g. '1D-CNN x2'."),
            _attr(
                "config_json",
                "Constructor arguments of the architecture as a JSON "
                "object; with the weights this rebuilds the model.",
            ),
            _attr(
                "bin_size_s",
                "Width of one time bin of the input and output, in seconds.",
                "float64",
            ),
            _attr(
                "n_lags",
                "Memory of the model: number of past input bins (including "
                "the current one) each output depends on.",
                "int",
            ),
            _attr("n_frequencies", "Number of spectrogram channels the model takes.", "int"),
            _attr("n_units", "Number of units the model predicts.", "int"),
            _attr("loss", "Training loss, e.g. 'poisson' or 'mse'."),
            _attr("epochs", "Number of training epochs run (all stages).", "int"),
            _attr(
                "best_epoch",
                "Epoch whose weights were kept (early stopping).",
                "int",
                required=False,
            ),
            _attr("seed", "Random seed of the fit.", "int"),
            _attr(
                "learning_rates",
                "Learning rate of each training stage.",
                "float64",
                dims=["num_stages"],
                shape=[None],
            ),
            _attr("l2", "L2 penalty weight.", "float64", required=False),
            _attr(
                "n_initializations",
                "Number of random initialisations tried (the best was kept).",
                "int",
                required=False,
            ),
            _attr(
                "software_versions",
                "Versions of the software used, as a JSON object "
                "(python, torch, numpy, nwb-subspace, ...).",
            ),
            _attr("device", "Device the model was trained on ('cpu', 'cuda').", required=False),
        ],
        datasets=[
            NWBDatasetSpec(
                neurodata_type_inc="ModelWeight",
                quantity="*",
                doc="The model's weight tensors, one dataset per state_dict entry.",
            ),
            NWBDatasetSpec(
                name="training_loss",
                doc="Training loss after each epoch.",
                dtype="float64",
                dims=["num_epochs"],
                shape=[None],
                quantity="?",
            ),
            NWBDatasetSpec(
                name="validation_loss",
                doc="Early-stopping (held-out estimation data) loss after each epoch.",
                dtype="float64",
                dims=["num_epochs"],
                shape=[None],
                quantity="?",
            ),
            NWBDatasetSpec(
                name="output_units",
                neurodata_type_inc="DynamicTableRegion",
                dtype="int",
                dims=["num_outputs"],
                shape=[None],
                quantity="?",
                doc="Which unit each model output predicts: output i (column i of the model's "
                "prediction and of validation_prediction) predicts the unit in row "
                "output_units[i] of the NWB file's units table; n_units values. Written by "
                "spec 0.2.0 and later; in files of spec 0.1.x the mapping is the scores "
                "table's units column (row i of scores is output i).",
            ),
        ],
        groups=[
            NWBGroupSpec(
                name="layers",
                neurodata_type_inc="ModelLayerTable",
                quantity="?",
                doc="The model's layers in order.",
            ),
            NWBGroupSpec(
                name="scores",
                neurodata_type_inc="UnitScoresTable",
                quantity="?",
                doc="Per-unit validation scores; row i scores output i.",
            ),
            NWBGroupSpec(
                name="validation_prediction",
                neurodata_type_inc="TimeSeries",
                quantity="?",
                doc="The model's predicted firing rate on the validation bins (every bin of "
                "every presentation of the validation sounds, in time order), so the "
                "predictions can be used without rebuilding the model: data (num_times, "
                "num_outputs) in spikes/s (unit 'spikes/s'), column i for output i (the unit "
                "in row output_units[i] of the units table); its times (timestamps, or "
                "starting_time and rate when the bins are contiguous) are the bin starts on "
                "the session clock, each bin lasting bin_size_s (the Spectrogram's "
                "convention). The scores compare the repeat average of these predictions with "
                "the repeat-averaged PSTH.",
            ),
        ],
        links=[
            NWBLinkSpec(
                name="spectrogram",
                target_type="Spectrogram",
                quantity="?",
                doc="The spectrogram the model was fitted on.",
            ),
            NWBLinkSpec(
                name="units",
                target_type="DynamicTable",
                quantity="?",
                doc="The units table the model's outputs refer to: output i predicts the unit "
                "in row output_units[i] of it (files of spec 0.1.x: row i of the scores "
                "table's units column).",
            ),
        ],
    )


def tuning_subspace_spec() -> NWBGroupSpec:
    return NWBGroupSpec(
        neurodata_type_def="TuningSubspaceTable",
        neurodata_type_inc="DynamicTable",
        doc=(
            "Each unit's tuning subspace: the principal components of its dSTRFs (Jacobians "
            "of the predicted rate with respect to the recent spectrogram), one row per unit."
        ),
        datasets=[
            _units_region("The unit each row describes."),
            _column(
                "components",
                "Principal components of the unit's dSTRFs, as "
                "spectro-temporal filters (unit-norm, dimensionless), strongest first; "
                "each component's sign makes its sum positive.",
                "float32",
                ["num_components", "num_frequencies", "num_lags"],
            ),
            _column(
                "explained_variance_ratio",
                "Fraction of the dSTRF variance along each component (dimensionless).",
                "float64",
                ["num_components"],
            ),
            _column(
                "dimensionality",
                "Number of components reaching the cumulative "
                "variance threshold and above the noise floor.",
                "int",
                [],
            ),
            _column(
                "mean_dstrf",
                "Mean dSTRF of the unit of the row (the units column gives its units-table "
                "row): the derivative of the "
                "model's predicted spike count per bin with respect to each spectrogram pixel, "
                "in spikes per bin per spectrogram unit (divide by the model's bin_size_s for "
                "(spikes/s) per spectrogram unit).",
                "float32",
                ["num_frequencies", "num_lags"],
                unit="(spikes/bin) per spectrogram unit",
            ),
            _column("n_frames", "Number of time bins whose dSTRFs entered the PCA.", "int", []),
            _column(
                "noise_floor",
                "Explained variance ratio of each component after "
                "shuffling every dSTRF pixel independently over time.",
                "float64",
                ["num_components"],
            ),
            _column(
                "dimensionality_reference",
                "Dimensionality by the reference (paper's) rule: the smallest k whose "
                "cumulative share of the top reference_n_components eigenvalues of the dSTRF "
                "covariance exceeds reference_variance_threshold (0 without a PCA).",
                "int",
                [],
                quantity="?",
            ),
            _column(
                "n_outlier_frames",
                "Number of dSTRF frames left out as outliers (not counted in n_frames).",
                "int",
                [],
                quantity="?",
            ),
            *_axes(),
        ],
        attributes=[
            _attr(
                "variance_threshold",
                "Cumulative explained variance used to choose the dimensionality (e.g. 0.95).",
                "float64",
            ),
            _attr(
                "reference_n_components",
                "Eigenvalues the reference dimensionality rule shares the variance out over "
                "(e.g. 15).",
                "int",
                required=False,
            ),
            _attr(
                "reference_variance_threshold",
                "Cumulative share the reference dimensionality rule must exceed (e.g. 0.95).",
                "float64",
                required=False,
            ),
        ],
    )


def _axes() -> list[NWBDatasetSpec]:
    """The frequency and lag axes shared by every spectro-temporal array of a type."""
    return [
        _axis(
            "frequencies", "Centre frequency of each spectrogram channel.", "Hz", "num_frequencies"
        ),
        _axis(
            "lags",
            "Time lag of each filter column before the predicted bin (0 = the current bin).",
            "seconds",
            "num_lags",
        ),
    ]


def subspace_rf_spec() -> NWBGroupSpec:
    return NWBGroupSpec(
        neurodata_type_def="SubspaceRFTable",
        neurodata_type_inc="DynamicTable",
        doc=(
            "Subspace receptive fields: the mean response over the stimulus projected onto "
            "two of a unit's subspace dimensions, one row per unit, dimension pair and "
            "response source."
        ),
        datasets=[
            _units_region("The unit each row describes."),
            _column(
                "dimensions",
                "The two subspace dimensions (0-based component indices) spanning the map: (x, y).",
                "int",
                ["xy"],
            ),
            _column(
                "response_source",
                "Which response is mapped: 'model' (the CNN "
                "prediction) or 'measured' (binned spikes).",
                "text",
                [],
            ),
            _column(
                "response_map",
                "Response map of the unit of the row (the units column gives its units-table "
                "row): mean response minus "
                "the spontaneous rate in each bin, in spikes/s; NaN where too few samples fell "
                "in the bin.",
                "float64",
                ["num_bins_x", "num_bins_y"],
                unit="spikes/s",
            ),
            _column(
                "occupancy",
                "Number of time bins of stimulus falling in each map bin.",
                "int",
                ["num_bins_x", "num_bins_y"],
            ),
            _column(
                "edges_x",
                "Bin edges along dimension x: values of the projection of the spectrogram "
                "onto the (unit-norm, dimensionless) component x, so in the spectrogram's "
                "data unit ('a.u.' for the compressed energy).",
                "float64",
                ["num_edges_x"],
                unit="spectrogram units",
            ),
            _column(
                "edges_y",
                "Bin edges along dimension y: values of the projection of the spectrogram "
                "onto the (unit-norm, dimensionless) component y, so in the spectrogram's "
                "data unit ('a.u.' for the compressed energy).",
                "float64",
                ["num_edges_y"],
                unit="spectrogram units",
            ),
            _column(
                "breadth",
                "Number of high-activity bins (normalised map >= the threshold).",
                "int",
                [],
            ),
            _column(
                "shape_asymmetry",
                "Shape index (asymmetry) of each axis' marginal: > 0 bowl "
                "(U-shaped), < 0 hill (inverted U), near 0 monotonic; in [-1, 1].",
                "float64",
                ["xy"],
            ),
            _column(
                "response_map_sem",
                "Standard error of each bin of response_map, in spikes/s: across repeats "
                "(SD over the per-repeat maps of the repeated sounds / sqrt(number of "
                "repeats)) or within the bin (SD of its samples / sqrt(n)), as the table's "
                "sem_method says; NaN for model rows and where undefined.",
                "float64",
                ["num_bins_x", "num_bins_y"],
                quantity="?",
                unit="spikes/s",
            ),
            _column(
                "breadth_fraction",
                "Noise-aware breadth: fraction of occupied bins whose smoothed value is at "
                "least high_activity_threshold of the way from the unit's response floor to "
                "its peak and reliably above the floor (Benjamini-Hochberg over the bins, from "
                "the repeat-wise errors; model rows: no reliability test); in [0, 1].",
                "float64",
                [],
                quantity="?",
            ),
            _column(
                "curve_asymmetry",
                "Signed asymmetry of the 1-D tuning curve (occupancy-weighted marginal, "
                "smoothed) of the more modulated dimension: < -0.33 hill, > 0.33 bowl.",
                "float64",
                [],
                quantity="?",
            ),
            _column(
                "shape_p_value",
                "p-value of that tuning curve's departure from its best monotonic fit "
                "against the curve's own noise (NaN for model rows); hill or bowl needs < 0.05.",
                "float64",
                [],
                quantity="?",
            ),
            _column(
                "peak_z",
                "Peak signal-to-noise ratio of a measured map: the largest (smoothed value - "
                "floor) / pooled repeat-wise standard error over the occupied bins "
                "(dimensionless); NaN for model rows and without repeats.",
                "float64",
                [],
                quantity="?",
            ),
            _column(
                "snr_target_z",
                "SNR matching: the peak_z the unit's site was brought to (the lowest peak_z "
                "of the site's units at or above the gate; dimensionless). Filled on the "
                "measured rows of dimensions 0-1; NaN elsewhere or when no unit passes the "
                "gate.",
                "float64",
                [],
                quantity="?",
            ),
            _column(
                "keep_probability",
                "SNR matching: probability with which each spike of the unit was kept when "
                "its counts were binomially thinned ((snr_target_z / peak_z)^2, calibrated "
                "so that the thinned maps' mean peak z is snr_target_z), 1 when not "
                "thinned; measured rows of dimensions 0-1, NaN elsewhere.",
                "float64",
                [],
                quantity="?",
            ),
            _column(
                "breadth_snr_matched",
                "SNR-matched breadth: the mean breadth_fraction of the thinned measured map "
                "over the thinning draws (the breadth the cell-type and layer comparisons "
                "judge, free of the unit's signal-to-noise ratio within its site); in [0, 1]; "
                "measured rows of dimensions 0-1, NaN elsewhere.",
                "float64",
                [],
                quantity="?",
            ),
        ],
        attributes=[
            _attr(
                "high_activity_threshold",
                "Threshold on the normalised map defining high-activity bins (e.g. 0.5).",
                "float64",
            ),
            _attr(
                "grid",
                "The grid recipe (bins, percentiles, minimum samples, window, pairs).",
                required=False,
            ),
            _attr(
                "sem_method",
                "How response_map_sem was computed: 'repeats' or 'samples'.",
                required=False,
            ),
            _attr(
                "snr_matching",
                "How breadth_snr_matched was computed: the gate, the number of thinning "
                "draws, the random seed and the sites the units were matched within.",
                required=False,
            ),
        ],
    )


def site_subspace_spec() -> NWBGroupSpec:
    return NWBGroupSpec(
        neurodata_type_def="SiteSubspace",
        neurodata_type_inc="NWBDataInterface",
        doc=(
            "The tuning subspace shared by the units of one recording site: principal "
            "components of all units' dSTRFs pooled, and how much of each unit's dSTRF "
            "variance they capture."
        ),
        attributes=[
            _attr(
                "site",
                "Name of the recording site (e.g. the probe or shank); when the site is an "
                "electrode group of the file, its name (and the electrode_group link).",
            ),
            _attr("dimensionality", "Number of site components kept.", "int"),
            _attr(
                "dimensionality_reference",
                "Site dimensionality by the reference (paper's) rule on the reference site "
                "PCA: the smallest k whose cumulative share of the top 15 components' variance "
                "exceeds 0.95.",
                "int",
                required=False,
            ),
        ],
        datasets=[
            NWBDatasetSpec(
                name="components",
                doc="Site principal components as spectro-temporal "
                "filters (unit-norm, dimensionless), strongest first.",
                dtype="float32",
                dims=["num_components", "num_frequencies", "num_lags"],
                shape=[None, None, None],
            ),
            NWBDatasetSpec(
                name="explained_variance_ratio",
                doc="Fraction of the pooled dSTRF variance along each site component.",
                dtype="float64",
                dims=["num_components"],
                shape=[None],
            ),
            NWBDatasetSpec(
                name="components_reference",
                doc="Reference (paper's) site principal components, strongest first "
                "(unit-norm, dimensionless): PCA of all units' dSTRF frames pooled, each "
                "unit's frames divided by their RMS, centred on the grand mean.",
                dtype="float32",
                dims=["num_reference_components", "num_frequencies", "num_lags"],
                shape=[None, None, None],
                quantity="?",
            ),
            NWBDatasetSpec(
                name="explained_variance_ratio_reference",
                doc="Fraction of the reference pooled variance along each reference component.",
                dtype="float64",
                dims=["num_reference_components"],
                shape=[None],
                quantity="?",
            ),
            *_axes(),
        ],
        groups=[
            NWBGroupSpec(
                name="unit_fractions",
                neurodata_type_inc="SiteUnitTable",
                doc="Per-unit fraction of dSTRF variance captured by the site subspace.",
            ),
            NWBGroupSpec(
                name="srfs",
                neurodata_type_inc="SubspaceRFTable",
                quantity="?",
                doc="Subspace receptive fields of the site's units on the site subspace: the "
                "'dimensions' column indexes this site's components (0-based), so every unit "
                "is mapped on the same plane and grid. The maps behind the tiling test; each "
                "unit's high-activity region is its normalised map >= the table's "
                "high_activity_threshold. Absent when the site has fewer than two components.",
            ),
        ],
        links=[
            NWBLinkSpec(
                name="electrode_group",
                target_type="ElectrodeGroup",
                quantity="?",
                doc="The ElectrodeGroup the site is, when the site is an electrode group of "
                "the file (the site attribute then holds its name); absent otherwise (sites "
                "defined by another units column) and in files of spec 0.1.x.",
            )
        ],
    )


def site_unit_spec() -> NWBGroupSpec:
    return NWBGroupSpec(
        neurodata_type_def="SiteUnitTable",
        neurodata_type_inc="DynamicTable",
        doc="Per-unit fraction of dSTRF variance captured by a site subspace, with nulls.",
        datasets=[
            _units_region("The unit each row describes."),
            _column(
                "variance_fraction",
                "Fraction of the unit's dSTRF variance in the site subspace (dimensionless).",
                "float64",
                [],
            ),
            _column(
                "null_mean",
                "Mean fraction captured by random subspaces of the same dimension.",
                "float64",
                [],
            ),
            _column(
                "p_value",
                "Fraction of random subspaces capturing at least as much (one-sided).",
                "float64",
                [],
            ),
            _column(
                "variance_fraction_loo",
                "Fraction of the unit's dSTRF variance in the site subspace rebuilt without "
                "the unit (same number of components; dimensionless).",
                "float64",
                [],
                quantity="?",
            ),
            _column(
                "site_pc_similarity",
                "Reference (paper's) similarity of the unit to each reference site component: "
                "squared correlations of the component with the unit's own top components, "
                "summed (the unit included in the site PCA, as in the reference).",
                "float64",
                ["num_reference_components"],
                quantity="?",
            ),
            _column(
                "site_similarity_loo",
                "Similarity of the unit's own subspace to the top dimensionality_reference "
                "reference site components rebuilt without the unit: mean squared cosine of "
                "the principal angles (0-1).",
                "float64",
                [],
                quantity="?",
            ),
        ],
    )


def site_statistics_spec() -> NWBGroupSpec:
    return NWBGroupSpec(
        neurodata_type_def="SiteStatisticsTable",
        neurodata_type_inc="DynamicTable",
        doc=(
            "Statistics of a recording site's circuit analysis, one row per test: shared "
            "subspace, tiling overlap, cell-type and layer comparisons, each with its null "
            "and p-value."
        ),
        datasets=[
            _column(
                "site",
                "Recording site the row is about (a SiteSubspace's site; an electrode group's "
                "name when the sites are electrode groups).",
                "text",
                [],
            ),
            _column(
                "statistic",
                "What is measured, e.g. 'shared_subspace_fraction', "
                "'tiling_overlap', 'breadth_narrow_vs_broad'.",
                "text",
                [],
            ),
            _column("value", "Observed value of the statistic.", "float64", []),
            _column(
                "null_mean",
                "Mean of the statistic under the null (NaN if the test has no resampled null).",
                "float64",
                [],
            ),
            _column(
                "p_value",
                "p-value of the test (two-sided unless the test column says otherwise).",
                "float64",
                [],
            ),
            _column(
                "effect_size",
                "Effect size (e.g. rank-biserial correlation); NaN where not applicable.",
                "float64",
                [],
            ),
            _column("n", "Number of units (or pairs) behind the statistic.", "int", []),
            _column(
                "test", "The test used and its null, e.g. 'Mann-Whitney U, two-sided'.", "text", []
            ),
            _column("verdict", "The result in words.", "text", []),
            NWBDatasetSpec(
                name="electrode_group",
                neurodata_type_inc="VectorData",
                doc="Reference to the ElectrodeGroup each row's site is. Present only when the "
                "site of every row is an electrode group of the file (absent otherwise, e.g. "
                "rows about several sites, and in files of spec 0.1.x).",
                dtype=NWBRefSpec(target_type="ElectrodeGroup", reftype="object"),
                dims=["num_rows"],
                shape=[None],
                quantity="?",
            ),
        ],
    )


def analysis_spec() -> NWBGroupSpec:
    return NWBGroupSpec(
        neurodata_type_def="SubspaceAnalysis",
        neurodata_type_inc="NWBDataInterface",
        doc=(
            "All results of one nwb-subspace analysis run: the spectrogram, fitted models, "
            "tuning subspaces, subspace receptive fields and site statistics, with the "
            "configuration that produced them."
        ),
        attributes=[
            _attr("config_json", "The effective configuration of the run as a JSON object."),
            _attr("software_version", "Version of nwb-subspace that wrote the results."),
            _attr("created", "When the run was written (ISO 8601 with time zone).", "isodatetime"),
        ],
        groups=[
            NWBGroupSpec(
                neurodata_type_inc="Spectrogram",
                quantity="*",
                doc="Spectrograms computed in this run.",
            ),
            NWBGroupSpec(
                neurodata_type_inc="EncodingModel",
                quantity="*",
                doc="Encoding models fitted in this run.",
            ),
            NWBGroupSpec(
                neurodata_type_inc="TuningSubspaceTable",
                quantity="*",
                doc="Tuning subspaces computed in this run.",
            ),
            NWBGroupSpec(
                neurodata_type_inc="SubspaceRFTable",
                quantity="*",
                doc="Subspace receptive fields computed in this run.",
            ),
            NWBGroupSpec(
                neurodata_type_inc="SiteSubspace",
                quantity="*",
                doc="Site subspaces computed in this run.",
            ),
            NWBGroupSpec(
                neurodata_type_inc="SiteStatisticsTable",
                quantity="*",
                doc="Site statistics computed in this run.",
            ),
        ],
    )


def build_specs() -> list:
    """Return every new type of the namespace, dependencies first."""
    return [
        spectrogram_spec(),
        model_weight_spec(),
        layer_table_spec(),
        unit_scores_spec(),
        encoding_model_spec(),
        tuning_subspace_spec(),
        subspace_rf_spec(),
        site_unit_spec(),
        site_subspace_spec(),
        site_statistics_spec(),
        analysis_spec(),
    ]


def default_output_dir() -> Path:
    """Return the distribution's ``spec/`` folder: ``<this folder>/../../spec``."""
    return Path(__file__).resolve().parent.parent.parent / "spec"


def main(output_dir: Path | None = None) -> None:
    """Write the namespace and extensions YAML into ``output_dir``.

    Parameters
    ----------
    output_dir : pathlib.Path, optional
        Folder to write into (created if missing); default: the distribution's ``spec/``
        folder, ``ndx-subspace/spec/`` (two levels above this file's folder).
    """
    output_dir = Path(output_dir) if output_dir else default_output_dir()
    output_dir.mkdir(parents=True, exist_ok=True)
    ns_builder = NWBNamespaceBuilder(
        name=NAMESPACE,
        version=VERSION,
        doc="Tuning subspaces of sensory neurons: spectrogram stimuli, fitted encoding "
        "models, dSTRF principal components, subspace receptive fields and site statistics.",
        author=["nwb-subspace developers"],
        contact=["nwb-subspace@users.noreply.github.com"],
    )
    ns_builder.include_namespace("core")
    export_spec(ns_builder, build_specs(), str(output_dir))


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else None)
