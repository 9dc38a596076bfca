"""Columns of the population tables built by ``nwb-subspace summarize``.

Three tidy tables (pandas DataFrames; written as CSV and Parquet) plus one long table of
statistics:

* **units** (:data:`UNIT_COLUMNS`): one row per unit of every summarised session, analysed or
  not.
* **sites** (:data:`SITE_COLUMNS`): one row per recording site (a site is named within its
  session; ``site_id`` = ``"<session>/<site>"`` is unique across the population).
* **sessions** (:data:`SESSION_COLUMNS`): one row per summarised result file.
* **statistics**: rows with ``nwb_subspace.results.STATISTIC_FIELDS`` (``site`` is
  ``"population"`` or the subset a test ran on).

Every measure is read from the stored result tables of a run (never from the models).
"""

from __future__ import annotations

__all__ = ["SESSION_COLUMNS", "SITE_COLUMNS", "UNIT_COLUMNS", "COLUMN_DOCS"]

#: Meaning of every column of the three tables (the report and docs/methods.md use these).
COLUMN_DOCS: dict[str, str] = {
    # identity
    "session": (
        "Session name: the result file's name without .nwb / .nwb.zarr (unique within a summary)."
    ),
    "file": "Result file (path or URL) as given to summarize.",
    "run": "Name of the stored run (SubspaceAnalysis container).",
    "site": "Site label within the session (electrode group, or the [sites] group_by column).",
    "site_id": "'<session>/<site>': unique across the population.",
    "unit_row": "Row of the unit in the session's NWB units table.",
    "unit_id": "The units table's unit_name when present, else its id.",
    "cell_type": "'narrow', 'broad' or 'unknown' (spike width; units column cell_type).",
    "layer": "Layer group ('13', '44', '56', 'outside' or 'unknown'; units column layer).",
    "depth_um": "Position along the probe in um from the tip (units column depth_um).",
    "depth_below_l34_um": (
        "Depth below the L3/4 boundary in um (positive = deeper), when the run's [layers] "
        "setting gives the boundary; NaN otherwise."
    ),
    "status": (
        "'analysed' (has a tuning subspace), 'scored' (CNN scores only: left out of the "
        "subspace analysis) or 'not analysed'."
    ),
    # model scores (validation data)
    "r_ln": "LN model's noise-corrected correlation on the validation sounds.",
    "r_cnn": "Population CNN's noise-corrected correlation on the validation sounds.",
    "r_subspace": "Subspace model's noise-corrected correlation on the validation sounds.",
    "ev_ln": "LN model's explained variance (noise-corrected) on the validation sounds.",
    "ev_cnn": "CNN's explained variance (noise-corrected) on the validation sounds.",
    "ev_subspace": "Subspace model's explained variance (noise-corrected).",
    "ev_fraction": "ev_subspace / ev_cnn (NaN where ev_cnn <= 0): the subspace-model fraction.",
    # tuning subspace
    "dimensionality": (
        "Tuning-subspace dimensionality, ours (the default; docs/methods.md). Not the "
        "session units CSV's column of that name, which is the number of PCs the site step "
        "compares (k_u)."
    ),
    "dimensionality_reference": "The paper's rule: 95% of the top-15 PCs' variance.",
    "n_frames": "dSTRF frames behind the unit's PCA.",
    "n_outlier_frames": "Frames removed by the outlier rule.",
    # site subspace
    "variance_fraction": "Fraction of the unit's dSTRF variance inside its site subspace.",
    "variance_fraction_loo": "The same, site subspace built without the unit.",
    "site_pc_similarity": "The reference's similarity of the unit to its site's top PCs.",
    "site_similarity_loo": "The same, site PCs built without the unit.",
    # SRF measures (measured maps where stored, else the model's)
    "breadth": "Noise-aware breadth: fraction of occupied SRF bins reliably high.",
    "breadth_bins": "The former count of high-activity SRF bins.",
    "breadth_measure": (
        "Which breadth: 'fraction' (noise-aware, the default) or 'bins' (runs stored before "
        "it); breadth and shape come from the measured SRFs where stored, else the model's."
    ),
    "breadth_model": (
        "Breadth of the model SRF (the CNN's prediction over every stimulus bin, the paper's "
        "maps): fraction of occupied bins >= 0.5 of the way from floor to peak (noise-free, so "
        "no reliability test); NaN for runs stored before the noise-aware breadth."
    ),
    "breadth_model_bins": (
        "Bins >= 0.5 of the min-max normalised model SRF (the reference's count)."
    ),
    "breadth_snr_matched": (
        "SNR-matched breadth: the noise-aware breadth of the measured SRF after its spikes "
        "were thinned to its site's lowest reliable peak z (mean over the thinning draws); "
        "the breadth the narrow-vs-broad and layer comparisons judge. NaN without repeats "
        "and for runs stored before it."
    ),
    "shape_index": "Signed asymmetry of the most modulated tuning curve (bowl > 0.33 > hill).",
    "shape_p": "p-value of the tuning curve's non-monotonicity against noise.",
    "shape_class": "'bowl', 'hill', 'monotonic' or '' (not classified).",
    # sites
    "n_units": "Units in the units table (site or session).",
    "n_analysed": (
        "Units with a tuning subspace (the session sites CSV counts the units in the site "
        "subspace instead)."
    ),
    "n_sites": "Sites of the session.",
    "r_ln_mean": "Mean of r_ln over the site's scored units.",
    "r_cnn_mean": "Mean of r_cnn over the site's scored units.",
    "r_subspace_mean": "Mean of r_subspace over the site's scored units.",
    "ev_ln_mean": "Mean of ev_ln over the site's scored units.",
    "ev_cnn_mean": "Mean of ev_cnn over the site's scored units.",
    "ev_subspace_mean": "Mean of ev_subspace over the site's scored units.",
    "subspace_fraction": (
        "Median of ev_fraction over the site's units (the value the session's own run "
        "reports for the site)."
    ),
    "dimensionality_median": "Median unit dimensionality (ours) of the site.",
    "dimensionality_reference_median": "Median unit dimensionality (reference rule).",
    "site_dimensionality": "Dimensionality of the site subspace (ours).",
    "site_dimensionality_reference": "Dimensionality of the site subspace (reference rule).",
    "variance_fraction_mean": "Mean variance_fraction of the site's units.",
    "site_similarity_loo_mean": "Mean site_similarity_loo of the site's units.",
    "same_site_similarity": "Session run's same-site similarity row: same-site mean.",
    "same_site_similarity_null": "Its different-site mean (within the session).",
    "same_site_similarity_p": "Its permutation p-value.",
    "tiling_overlap_neighbours": "Mean overlap of neighbouring units' high-activity regions.",
    "tiling_overlap_neighbours_null": "Its null mean (the run's tiling null).",
    "tiling_overlap_neighbours_p": "Its p-value (two-sided: overlap above or below the null).",
    "tiling_overlap_mean": "Mean overlap over all unit pairs of the site.",
    "tiling_overlap_mean_null": "Its null mean.",
    "tiling_overlap_mean_p": "Its p-value.",
    # sessions
    "software_version": "nwb-subspace version that wrote the run.",
    "created": "When the run was stored (ISO 8601).",
    "r_cnn_median": "Median r_cnn over the session's scored units.",
    "settings_key": "Short hash of the settings that must match across sessions.",
}

#: One row per unit.
UNIT_COLUMNS: tuple[str, ...] = (
    "session", "site", "site_id", "unit_row", "unit_id", "cell_type", "layer", "depth_um",
    "depth_below_l34_um", "status",
    "r_ln", "r_cnn", "r_subspace", "ev_ln", "ev_cnn", "ev_subspace", "ev_fraction",
    "dimensionality", "dimensionality_reference", "n_frames", "n_outlier_frames",
    "variance_fraction", "variance_fraction_loo", "site_pc_similarity", "site_similarity_loo",
    "breadth", "breadth_bins", "breadth_measure", "breadth_model", "breadth_model_bins",
    "breadth_snr_matched", "shape_index", "shape_p", "shape_class",
)  # fmt: skip

#: One row per site.
SITE_COLUMNS: tuple[str, ...] = (
    "session", "site", "site_id", "n_units", "n_analysed",
    "r_ln_mean", "r_cnn_mean", "r_subspace_mean", "ev_ln_mean", "ev_cnn_mean",
    "ev_subspace_mean", "subspace_fraction",
    "dimensionality_median", "dimensionality_reference_median",
    "site_dimensionality", "site_dimensionality_reference",
    "variance_fraction_mean", "site_similarity_loo_mean",
    "same_site_similarity", "same_site_similarity_null", "same_site_similarity_p",
    "tiling_overlap_neighbours", "tiling_overlap_neighbours_null", "tiling_overlap_neighbours_p",
    "tiling_overlap_mean", "tiling_overlap_mean_null", "tiling_overlap_mean_p",
)  # fmt: skip

#: One row per session (result file).
SESSION_COLUMNS: tuple[str, ...] = (
    "session", "file", "run", "software_version", "created", "n_units", "n_sites",
    "n_analysed", "r_cnn_median", "settings_key",
)  # fmt: skip
