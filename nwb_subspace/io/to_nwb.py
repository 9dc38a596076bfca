"""Turn in-memory results (``nwb_subspace.results``) into NWB extension objects.

Every builder takes the open ``NWBFile`` so that unit references become
``DynamicTableRegion`` objects into its ``units`` table.
"""

from __future__ import annotations

import json
import platform
from datetime import datetime

import numpy as np
from hdmf.common import DynamicTableRegion
from pynwb import NWBFile, TimeSeries
from pynwb.ecephys import ElectrodeGroup

from nwb_subspace import __version__
from nwb_subspace.ndx import (
    EncodingModel,
    ModelLayerTable,
    ModelWeight,
    SiteStatisticsTable,
    SiteSubspace,
    SiteUnitTable,
    Spectrogram,
    SubspaceAnalysis,
    SubspaceRFTable,
    TuningSubspaceTable,
    UnitScoresTable,
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
    TuningSubspaces,
)


def software_versions() -> dict[str, str]:
    """Versions of the software that shapes the results."""
    import hdmf
    import pynwb
    import scipy
    import torch

    return {
        "nwb-subspace": __version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "torch": torch.__version__,
        "pynwb": pynwb.__version__,
        "hdmf": hdmf.__version__,
    }


def _units_region(
    nwbfile: NWBFile, rows: np.ndarray, doc: str, name: str = "units"
) -> DynamicTableRegion:
    return DynamicTableRegion(
        name=name,
        data=np.asarray(rows, dtype=np.int64),
        table=nwbfile.units,
        description=doc,
    )


def spectrogram_to_nwb(spec: SpectrogramResult, nwbfile: NWBFile) -> Spectrogram:
    """Build a ``Spectrogram`` TimeSeries, linking its source sound when it is in the file."""
    settings = dict(spec.settings)
    source = None
    if spec.source_sound is not None:
        for pool in (nwbfile.stimulus, nwbfile.acquisition):
            if spec.source_sound in pool:
                source = pool[spec.source_sound]
                break
    kwargs = {"source_sound": source} if source is not None else {}
    bin_s = float(settings.get("bin_s", 1.0 / spec.rate))
    return Spectrogram(
        name=spec.name,
        data=np.asarray(spec.data, dtype=np.float32),
        unit="a.u.",
        frequencies=np.asarray(spec.frequencies, dtype=float),
        rate=float(spec.rate),
        starting_time=float(spec.starting_time),
        filterbank=str(settings.get("filterbank", "unknown")),
        f_min=float(settings.get("f_min", float(np.min(spec.frequencies)))),
        f_max=float(settings.get("f_max", float(np.max(spec.frequencies)))),
        window_s=float(settings.get("window_s", bin_s)),
        compression=str(settings.get("compression", "none")),
        settings_json=json.dumps(settings, sort_keys=True, default=_jsonable),
        description=f"Spectrogram computed by nwb-subspace {__version__}.",
        **kwargs,
    )


def _jsonable(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def _layer_table(module) -> ModelLayerTable | None:
    layers = getattr(module, "layer_summary", None)
    if layers is None:
        return None
    rows = layers() if callable(layers) else layers
    if not rows:
        return None
    table = ModelLayerTable(name="layers", description="Layers from input to output.")
    for row in rows:
        table.add_row(**row)
    return table


def model_to_nwb(
    model: FittedModel, nwbfile: NWBFile, spectrograms: dict[str, Spectrogram]
) -> EncodingModel:
    """Build an ``EncodingModel`` holding every weight tensor and the training record."""
    module = model.module
    dims = module.tensor_dims()
    weights = []
    for key, tensor in module.state_dict().items():
        arr = tensor.detach().cpu().numpy()
        if arr.ndim == 0:
            arr = arr.reshape(1)
        names = list(dims.get(key, [f"dim{i}" for i in range(arr.ndim)]))
        if len(names) != arr.ndim:
            names = [f"dim{i}" for i in range(arr.ndim)]
        weights.append(ModelWeight(name=key, data=arr, dimension_names=names))
    train = model.training
    versions = train.software_versions or software_versions()
    kwargs = {}
    for opt in ("best_epoch", "l2", "n_initializations", "device"):
        value = getattr(train, opt)
        if value is not None:
            kwargs[opt] = value
    for curve in ("training_loss", "validation_loss"):
        value = getattr(train, curve)
        if value is not None and len(value):
            kwargs[curve] = np.asarray(value, dtype=float)
    if model.scores is not None:
        kwargs["scores"] = _scores_table(model, nwbfile)
    if model.validation_prediction is not None:
        kwargs["validation_prediction"] = _prediction_series(
            model.validation_prediction, model.bin_size_s
        )
    layers = _layer_table(module)
    if layers is not None:
        kwargs["layers"] = layers
    if model.spectrogram is not None:
        if model.spectrogram not in spectrograms:
            raise ValueError(
                f"model {model.name!r} names spectrogram {model.spectrogram!r}, which is not "
                f"in this result set (have {sorted(spectrograms)})"
            )
        kwargs["spectrogram"] = spectrograms[model.spectrogram]
    em = EncodingModel(
        name=model.name,
        model_kind=module.kind,
        architecture=model.architecture or type(module).__name__,
        config_json=json.dumps(module.config, sort_keys=True, default=_jsonable),
        bin_size_s=float(model.bin_size_s),
        n_lags=int(module.memory),
        n_frequencies=int(module.config.get("n_frequencies", 0)),
        n_units=int(model.unit_rows.size),
        loss=train.loss,
        epochs=int(train.epochs),
        seed=int(train.seed),
        learning_rates=np.asarray(train.learning_rates, dtype=float),
        software_versions=json.dumps(versions, sort_keys=True),
        model_weights=weights,
        units=nwbfile.units,
        output_units=_units_region(
            nwbfile,
            model.unit_rows,
            "Units-table row of each model output, in output order.",
            name="output_units",
        ),
        **kwargs,
    )
    return em


def _prediction_series(pred: ModelPrediction, bin_size_s: float) -> TimeSeries:
    """The validation prediction as a TimeSeries (float32 spikes/s, bin-start times):
    ``starting_time`` and ``rate`` when the bins are contiguous, else ``timestamps``."""
    times = np.asarray(pred.timestamps, dtype=np.float64)
    steps = np.diff(times)
    if times.size > 1 and np.allclose(steps, bin_size_s, rtol=0.0, atol=1e-9):
        clock = {"starting_time": float(times[0]), "rate": 1.0 / float(bin_size_s)}
    else:
        clock = {"timestamps": times}
    return TimeSeries(
        name="validation_prediction",
        data=np.asarray(pred.rate, dtype=np.float32),
        unit="spikes/s",
        **clock,
        description=(
            "Predicted firing rate on every validation bin, in time order; column i is model "
            "output i (units-table row output_units[i]); times are bin starts."
        ),
        comments="Bins last the model's bin_size_s; the scores use the repeat average.",
    )


def _scores_table(model: FittedModel, nwbfile: NWBFile) -> UnitScoresTable:
    s = model.scores
    columns = {"units": _units_region(nwbfile, model.unit_rows, "Scored unit.")}
    for name in ("correlation", "noise_floor", "noise_corrected_correlation", "explained_variance"):
        columns[name] = np.asarray(getattr(s, name), dtype=float)
    return _table(
        UnitScoresTable,
        "scores",
        "Validation scores, one row per unit predicted by the model.",
        model.unit_rows.size,
        columns,
    )


def _col_doc(cls, name: str) -> str:
    for col in cls.__columns__:
        if col["name"] == name:
            return col["description"]
    raise KeyError(name)


def _table(cls, name: str, description: str, n: int, columns: dict, **fields):
    """Build a DynamicTable subtype from whole columns (the fast path; no add_row loop)."""
    from hdmf.common import VectorData

    cols = []
    for key, value in columns.items():
        if isinstance(value, DynamicTableRegion):
            cols.append(value)
        else:
            cols.append(VectorData(name=key, description=_col_doc(cls, key), data=value))
    table = cls(name=name, description=description, columns=cols, id=list(range(n)), **fields)
    return table


def subspaces_to_nwb(sub: TuningSubspaces, nwbfile: NWBFile) -> TuningSubspaceTable:
    n = sub.unit_rows.size
    columns = {
        "units": _units_region(nwbfile, sub.unit_rows, "Unit of each row."),
        "components": np.asarray(sub.components, dtype=np.float32),
        "explained_variance_ratio": np.asarray(sub.explained_variance_ratio, float),
        "dimensionality": np.asarray(sub.dimensionality, dtype=np.int64),
        "mean_dstrf": np.asarray(sub.mean_dstrf, dtype=np.float32),
        "n_frames": np.asarray(sub.n_frames, dtype=np.int64),
        "noise_floor": np.asarray(sub.noise_floor, dtype=float),
    }
    for key in ("dimensionality_reference", "n_outlier_frames"):  # optional columns
        if getattr(sub, key) is not None:
            columns[key] = np.asarray(getattr(sub, key), dtype=np.int64)
    return _table(
        TuningSubspaceTable,
        sub.name,
        "Tuning subspace (dSTRF PCA) of each unit.",
        n,
        columns,
        variance_threshold=float(sub.variance_threshold),
        reference_n_components=int(sub.reference_n_components),
        reference_variance_threshold=float(sub.reference_variance_threshold),
        frequencies=np.asarray(sub.frequencies, dtype=float),
        lags=np.asarray(sub.lags_s, dtype=float),
    )


def srfs_to_nwb(
    srf: SubspaceRFs,
    nwbfile: NWBFile,
    *,
    name: str | None = None,
    description: str = "Subspace receptive fields.",
) -> SubspaceRFTable:
    """Build a ``SubspaceRFTable`` (named ``srf.name`` unless ``name`` is given)."""
    n = srf.unit_rows.size
    return _table(
        SubspaceRFTable,
        name or srf.name,
        description,
        n,
        {
            "units": _units_region(nwbfile, srf.unit_rows, "Unit of each row."),
            "dimensions": np.asarray(srf.dimensions, dtype=np.int64),
            "response_source": [str(s) for s in srf.response_source],
            "response_map": np.asarray(srf.response_map, dtype=float),
            "occupancy": np.asarray(srf.occupancy, dtype=np.int64),
            "edges_x": np.asarray(srf.edges_x, dtype=float),
            "edges_y": np.asarray(srf.edges_y, dtype=float),
            "breadth": np.asarray(srf.breadth, dtype=np.int64),
            "shape_asymmetry": np.asarray(srf.shape_asymmetry, dtype=float),
            **{
                key: np.asarray(value, dtype=float)
                for key, value in (
                    ("response_map_sem", srf.response_map_sem),
                    ("breadth_fraction", srf.breadth_fraction),
                    ("curve_asymmetry", srf.curve_asymmetry),
                    ("shape_p_value", srf.shape_p_value),
                    ("peak_z", srf.peak_z),
                    ("snr_target_z", srf.snr_target_z),
                    ("keep_probability", srf.keep_probability),
                    ("breadth_snr_matched", srf.breadth_snr_matched),
                )
                if value is not None
            },
        },
        high_activity_threshold=float(srf.high_activity_threshold),
        **{
            k: v
            for k, v in (
                ("grid", srf.grid),
                ("sem_method", srf.sem_method),
                ("snr_matching", srf.snr_matching),
            )
            if v
        },  # fmt: skip
    )


def site_subspace_to_nwb(site: SiteSubspaceResult, nwbfile: NWBFile) -> SiteSubspace:
    n = site.unit_rows.size
    fractions = _table(
        SiteUnitTable,
        "unit_fractions",
        f"Unit variance fractions in site {site.site}.",
        n,
        {
            "units": _units_region(nwbfile, site.unit_rows, "Unit of each row."),
            "variance_fraction": np.asarray(site.variance_fraction, dtype=float),
            "null_mean": np.asarray(site.null_mean, dtype=float),
            "p_value": np.asarray(site.p_value, dtype=float),
            **{
                key: np.asarray(value, dtype=float)
                for key, value in (
                    ("variance_fraction_loo", site.variance_fraction_loo),
                    ("site_pc_similarity", site.site_pc_similarity),
                    ("site_similarity_loo", site.site_similarity_loo),
                )
                if value is not None
            },
        },
    )
    kwargs = {}
    if site.components_reference is not None:
        kwargs["components_reference"] = np.asarray(site.components_reference, dtype=np.float32)
        kwargs["explained_variance_ratio_reference"] = np.asarray(
            site.explained_variance_ratio_reference, dtype=float
        )
    if site.dimensionality_reference is not None:
        kwargs["dimensionality_reference"] = int(site.dimensionality_reference)
    group = site_electrode_group(nwbfile, site.site, site.unit_rows)
    if group is not None:
        kwargs["electrode_group"] = group
    if site.srfs is not None and site.srfs.unit_rows.size:
        kwargs["srfs"] = srfs_to_nwb(
            site.srfs,
            nwbfile,
            name="srfs",
            description=f"Unit SRFs on the top two components of site {site.site}.",
        )
    return SiteSubspace(
        name=site.name,
        site=site.site,
        dimensionality=int(site.dimensionality),
        components=np.asarray(site.components, dtype=np.float32),
        explained_variance_ratio=np.asarray(site.explained_variance_ratio, dtype=float),
        frequencies=np.asarray(site.frequencies, dtype=float),
        lags=np.asarray(site.lags_s, dtype=float),
        unit_fractions=fractions,
        **kwargs,
    )


def site_electrode_group(
    nwbfile: NWBFile, site: str, unit_rows: np.ndarray | None = None
) -> ElectrodeGroup | None:
    """The file's ``ElectrodeGroup`` that the site ``site`` is, else None.

    Parameters
    ----------
    nwbfile : pynwb.NWBFile
        The file the results go into.
    site : str
        The site's name (sites formed from electrode groups carry the group's name).
    unit_rows : ndarray of int, optional
        The site's units-table rows: when the units table has an ``electrode_group`` column,
        the site is the group only if every one of these units is in it.

    Returns
    -------
    pynwb.ecephys.ElectrodeGroup or None
        None when no electrode group of the file has that name, or when the site's units are
        not all in it (the site was formed from another units column).
    """
    groups = nwbfile.electrode_groups or {}
    group = groups.get(str(site))
    if group is None:
        return None
    units = nwbfile.units
    if unit_rows is not None and units is not None and "electrode_group" in units.colnames:
        column = units["electrode_group"]
        for row in np.asarray(unit_rows, dtype=np.int64).tolist():
            if getattr(column[row], "name", None) != group.name:
                return None
    return group


def site_statistics_to_nwb(
    stats: SiteStatistics,
    nwbfile: NWBFile | None = None,
    site_groups: dict[str, ElectrodeGroup | None] | None = None,
) -> SiteStatisticsTable:
    """Build a ``SiteStatisticsTable``.

    With ``nwbfile``, its ``electrode_group`` column references each row's ``ElectrodeGroup``
    when every row's site is one of the file: ``site_groups`` (site -> group or None, from the
    site subspaces, whose units were checked) first, else the group of the same name.
    """
    kinds = {
        "site": str,
        "statistic": str,
        "value": float,
        "null_mean": float,
        "p_value": float,
        "effect_size": float,
        "n": int,
        "test": str,
        "verdict": str,
    }
    columns = {key: [kinds[key](row[key]) for row in stats.rows] for key in STATISTIC_FIELDS}
    if nwbfile is not None and stats.rows:
        known = site_groups or {}
        groups = [
            known[site] if site in known else site_electrode_group(nwbfile, site)
            for site in columns["site"]
        ]
        if all(g is not None for g in groups):
            columns["electrode_group"] = groups
    return _table(
        SiteStatisticsTable, stats.name, "Site statistics with nulls.", len(stats.rows), columns
    )


def analysis_to_nwb(results: ResultSet, nwbfile: NWBFile, run_name: str) -> SubspaceAnalysis:
    """Build the ``SubspaceAnalysis`` container holding a whole result set."""
    n_units = 0 if nwbfile.units is None else len(nwbfile.units)
    if results.max_unit_row() >= n_units:
        raise ValueError(
            f"results refer to unit row {results.max_unit_row()} but the file's units table "
            f"has {n_units} rows"
        )
    spectrograms = {s.name: spectrogram_to_nwb(s, nwbfile) for s in results.spectrograms}
    site_groups = {
        s.site: site_electrode_group(nwbfile, s.site, s.unit_rows) for s in results.site_subspaces
    }
    return SubspaceAnalysis(
        name=run_name,
        config_json=json.dumps(results.config, sort_keys=True, default=_jsonable),
        software_version=__version__,
        created=datetime.now().astimezone(),
        spectrograms=list(spectrograms.values()),
        encoding_models=[model_to_nwb(m, nwbfile, spectrograms) for m in results.models],
        tuning_subspace_tables=[subspaces_to_nwb(s, nwbfile) for s in results.subspaces],
        subspace_rf_tables=[srfs_to_nwb(s, nwbfile) for s in results.srfs],
        site_subspaces=[site_subspace_to_nwb(s, nwbfile) for s in results.site_subspaces],
        site_statistics_tables=[
            site_statistics_to_nwb(s, nwbfile, site_groups) for s in results.site_statistics
        ],
    )
