"""Turn stored NWB extension objects back into in-memory results.

``rebuild_model`` recreates a fitted PyTorch model from an ``EncodingModel`` whose
predictions match the original's (weights are stored with their exact dtype).
"""

from __future__ import annotations

import json

import numpy as np

from nwb_subspace.ndx import (
    EncodingModel,
    SiteStatisticsTable,
    SiteSubspace,
    Spectrogram,
    SubspaceAnalysis,
    SubspaceRFTable,
    TuningSubspaceTable,
)
from nwb_subspace.results import (
    STATISTIC_FIELDS,
    FittedModel,
    ModelPrediction,
    ResultSet,
    SiteStatistics,
    SiteSubspaceResult,
    SpectrogramResult,
    SubspaceRFs,
    TrainingInfo,
    TuningSubspaces,
    UnitScores,
)


def _col(table, name: str) -> np.ndarray:
    return np.asarray(table[name].data[:])


def _rows(table) -> np.ndarray:
    return np.asarray(table["units"].data[:], dtype=np.int64)


def spectrogram_from_nwb(obj: Spectrogram) -> SpectrogramResult:
    settings = json.loads(obj.settings_json) if obj.settings_json else {}
    return SpectrogramResult(
        data=np.asarray(obj.data[:]),
        frequencies=np.asarray(obj.frequencies[:]),
        rate=float(obj.rate),
        starting_time=float(obj.starting_time or 0.0),
        settings=settings,
        name=obj.name,
        source_sound=obj.source_sound.name if obj.source_sound is not None else None,
    )


def rebuild_model(obj: EncodingModel, device: str = "cpu"):
    """Rebuild the ``torch.nn.Module`` stored in an ``EncodingModel``.

    Parameters
    ----------
    obj : EncodingModel
        The stored model.
    device : str
        Torch device for the rebuilt module.

    Returns
    -------
    torch.nn.Module
        The model in eval mode, with every stored tensor loaded.
    """
    import torch

    from nwb_subspace.models import build_model

    module = build_model(obj.model_kind, json.loads(obj.config_json))
    expected = module.state_dict()
    stored = {name: w for name, w in obj.model_weights.items()}
    missing = sorted(set(expected) - set(stored))
    extra = sorted(set(stored) - set(expected))
    if missing or extra:
        raise ValueError(
            f"EncodingModel {obj.name!r} does not match its architecture: missing tensors "
            f"{missing}, unexpected tensors {extra}"
        )
    state = {}
    for key, ref in expected.items():
        arr = np.asarray(stored[key].data[:])
        state[key] = torch.from_numpy(arr.reshape(tuple(ref.shape)).copy()).to(ref.dtype)
    module.load_state_dict(state)
    return module.to(device).eval()


def model_unit_rows(obj: EncodingModel) -> np.ndarray:
    """Units-table row of each output of a stored model, in output order.

    Spec 0.2.0 stores them on the model (``output_units``); files of spec 0.1.x only in the
    scores table (row ``i`` scores output ``i``); a 0.1.x model stored without scores has no
    record of them, and its outputs are taken to be rows ``0 .. n_units - 1`` (right only
    when the model predicted every unit in order: the gap spec 0.2.0 closes).

    Parameters
    ----------
    obj : EncodingModel
        The stored model.

    Returns
    -------
    ndarray of int64, shape (n_units,)
    """
    region = getattr(obj, "output_units", None)
    if region is not None:
        return np.asarray(region.data[:], dtype=np.int64)
    if obj.scores is not None:
        return _rows(obj.scores)
    return np.arange(int(obj.n_units), dtype=np.int64)


def prediction_from_nwb(obj: EncodingModel) -> ModelPrediction | None:
    """The stored validation prediction of a model (numpy; no torch), None if absent."""
    series = getattr(obj, "validation_prediction", None)
    if series is None:
        return None
    return ModelPrediction(
        timestamps=np.asarray(series.get_timestamps(), dtype=np.float64),
        rate=np.asarray(series.data[:], dtype=np.float32),
    )


def model_from_nwb(obj: EncodingModel, device: str = "cpu") -> FittedModel:
    """Read an ``EncodingModel`` back into a ``FittedModel`` with a working module."""
    module = rebuild_model(obj, device=device)
    scores = None
    rows = model_unit_rows(obj)
    if obj.scores is not None:
        scored = _rows(obj.scores)
        if not np.array_equal(scored, rows):
            raise ValueError(
                f"EncodingModel {obj.name!r}: its output_units {rows.tolist()} and the units "
                f"of its scores table {scored.tolist()} differ; the file is inconsistent"
            )
        scores = UnitScores(
            **{
                k: _col(obj.scores, k).astype(float)
                for k in (
                    "correlation",
                    "noise_floor",
                    "noise_corrected_correlation",
                    "explained_variance",
                )
            }
        )
    training = TrainingInfo(
        loss=obj.loss,
        epochs=int(obj.epochs),
        seed=int(obj.seed),
        learning_rates=tuple(float(x) for x in np.atleast_1d(obj.learning_rates)),
        best_epoch=None if obj.best_epoch is None else int(obj.best_epoch),
        l2=None if obj.l2 is None else float(obj.l2),
        n_initializations=None if obj.n_initializations is None else int(obj.n_initializations),
        device=obj.device,
        training_loss=None if obj.training_loss is None else np.asarray(obj.training_loss[:]),
        validation_loss=None if obj.validation_loss is None else np.asarray(obj.validation_loss[:]),
        software_versions=json.loads(obj.software_versions),
    )
    return FittedModel(
        name=obj.name,
        module=module,
        unit_rows=rows,
        bin_size_s=float(obj.bin_size_s),
        training=training,
        scores=scores,
        architecture=obj.architecture,
        spectrogram=obj.spectrogram.name if obj.spectrogram is not None else None,
        validation_prediction=prediction_from_nwb(obj),
    )


def subspaces_from_nwb(t: TuningSubspaceTable) -> TuningSubspaces:
    # optional columns and attributes: absent from files written before they existed
    optional = {
        key: _col(t, key) if key in t.colnames else None
        for key in ("dimensionality_reference", "n_outlier_frames")
    }
    ref_k, ref_threshold = t.reference_n_components, t.reference_variance_threshold
    return TuningSubspaces(
        unit_rows=_rows(t),
        components=_col(t, "components"),
        explained_variance_ratio=_col(t, "explained_variance_ratio"),
        dimensionality=_col(t, "dimensionality"),
        mean_dstrf=_col(t, "mean_dstrf"),
        n_frames=_col(t, "n_frames"),
        noise_floor=_col(t, "noise_floor"),
        frequencies=np.asarray(t.frequencies[:]),
        lags_s=np.asarray(t.lags[:]),
        variance_threshold=float(t.variance_threshold),
        name=t.name,
        **optional,
        reference_n_components=15 if ref_k is None else int(ref_k),
        reference_variance_threshold=0.95 if ref_threshold is None else float(ref_threshold),
    )


def srfs_from_nwb(t: SubspaceRFTable) -> SubspaceRFs:
    return SubspaceRFs(
        unit_rows=_rows(t),
        dimensions=_col(t, "dimensions"),
        response_source=np.asarray([str(s) for s in t["response_source"].data[:]]),
        response_map=_col(t, "response_map"),
        occupancy=_col(t, "occupancy"),
        edges_x=_col(t, "edges_x"),
        edges_y=_col(t, "edges_y"),
        breadth=_col(t, "breadth"),
        shape_asymmetry=_col(t, "shape_asymmetry"),
        high_activity_threshold=float(t.high_activity_threshold),
        name=t.name,
        **{  # issue 19's and 20's columns: absent (None) in files written before them
            k: _col(t, k) if k in t.colnames else None
            for k in (
                "response_map_sem",
                "breadth_fraction",
                "curve_asymmetry",
                "shape_p_value",
                "peak_z",
                "snr_target_z",
                "keep_probability",
                "breadth_snr_matched",
            )
        },  # fmt: skip
        grid=str(getattr(t, "grid", None) or ""),
        sem_method=str(getattr(t, "sem_method", None) or ""),
        snr_matching=str(getattr(t, "snr_matching", None) or ""),
    )


def site_subspace_from_nwb(s: SiteSubspace) -> SiteSubspaceResult:
    t = s.unit_fractions
    return SiteSubspaceResult(
        site=s.site,
        components=np.asarray(s.components[:]),
        explained_variance_ratio=np.asarray(s.explained_variance_ratio[:]),
        dimensionality=int(s.dimensionality),
        frequencies=np.asarray(s.frequencies[:]),
        lags_s=np.asarray(s.lags[:]),
        unit_rows=_rows(t),
        variance_fraction=_col(t, "variance_fraction"),
        null_mean=_col(t, "null_mean"),
        p_value=_col(t, "p_value"),
        name=s.name,
        srfs=srfs_from_nwb(s.srfs) if s.srfs is not None else None,
        # issue 19: absent from files written before it
        variance_fraction_loo=_site_col(t, "variance_fraction_loo"),
        site_pc_similarity=_site_col(t, "site_pc_similarity"),
        site_similarity_loo=_site_col(t, "site_similarity_loo"),
        components_reference=_site_data(s, "components_reference"),
        explained_variance_ratio_reference=_site_data(s, "explained_variance_ratio_reference"),
        dimensionality_reference=(
            None if s.dimensionality_reference is None else int(s.dimensionality_reference)
        ),
    )


def _site_col(table, name: str) -> np.ndarray | None:
    """A site table's optional column, None when the file predates it."""
    return _col(table, name) if name in table.colnames else None


def _site_data(obj, name: str) -> np.ndarray | None:
    """A ``SiteSubspace``'s optional dataset, None when the file predates it."""
    value = getattr(obj, name, None)
    return None if value is None else np.asarray(value[:])


def site_statistics_from_nwb(t: SiteStatisticsTable) -> SiteStatistics:
    cols = {k: t[k].data[:] for k in STATISTIC_FIELDS}
    rows = [
        {k: (v[i].item() if isinstance(v[i], np.generic) else v[i]) for k, v in cols.items()}
        for i in range(len(t))
    ]
    return SiteStatistics(rows=rows, name=t.name)


def analysis_from_nwb(obj: SubspaceAnalysis, device: str = "cpu") -> ResultSet:
    """Read a whole ``SubspaceAnalysis`` run back into a ``ResultSet``."""
    return ResultSet(
        spectrograms=[spectrogram_from_nwb(s) for s in obj.spectrograms.values()],
        models=[model_from_nwb(m, device) for m in obj.encoding_models.values()],
        subspaces=[subspaces_from_nwb(t) for t in obj.tuning_subspace_tables.values()],
        srfs=[srfs_from_nwb(t) for t in obj.subspace_rf_tables.values()],
        site_subspaces=[site_subspace_from_nwb(s) for s in obj.site_subspaces.values()],
        site_statistics=[site_statistics_from_nwb(t) for t in obj.site_statistics_tables.values()],
        config=json.loads(obj.config_json),
    )
