"""Every ``ndx-subspace`` type survives a write/read round trip with plain pynwb.

Only pynwb, hdmf and this package are used (no ``nwb_subspace``): each test builds small valid
objects by hand, writes them to an NWB file, reads the file back and compares field by field
(:func:`assert_same`, which walks every field of every object: hdmf's ``assertContainerEqual``
skips the groups a container holds through ``__clsconf__``); every table type gives a
``to_dataframe()``.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
from hdmf.common import DynamicTableRegion, VectorData
from hdmf.container import AbstractContainer, Data
from pynwb import NWBHDF5IO, NWBFile, TimeSeries, get_class
from ruamel.yaml import YAML

import ndx_subspace
from ndx_subspace import (
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

N_UNITS, N_FREQ, N_LAGS, N_COMP, N_BINS = 3, 4, 5, 2, 3
TABLE_TYPES = [
    ModelLayerTable,
    UnitScoresTable,
    TuningSubspaceTable,
    SubspaceRFTable,
    SiteUnitTable,
    SiteStatisticsTable,
]
RNG = np.random.default_rng(0)
#: Fields that are links (or a region's target table): compared by type and name only.
LINK_FIELDS = {"spectrogram", "units", "source_sound", "table", "electrode_group"}

pytestmark = pytest.mark.filterwarnings(
    # a region built before its table joins the file: harmless, the file links it correctly
    "ignore:The linked table for DynamicTableRegion:UserWarning"
)


def _values(value):
    if isinstance(value, (str, bytes)):
        return value.decode() if isinstance(value, bytes) else value
    array = np.asarray(value)
    if array.dtype.kind in "OSU":
        return [
            (type(v).__name__, v.name)  # object references: compared by type and name
            if isinstance(v, AbstractContainer)
            else v.decode()
            if isinstance(v, bytes)
            else v
            for v in array.ravel().tolist()
        ]
    return array


def assert_same(a, b, where: str = "") -> None:
    """Assert that ``b`` (read back) holds what ``a`` (written) held, field by field."""
    where = f"{where}/{a.name}"
    assert type(a) is type(b), where
    assert a.name == b.name, where
    assert len(a.children) == len(b.children), where
    if isinstance(a, Data):
        np.testing.assert_array_equal(_values(a.data), _values(b.data), err_msg=where)
    for key, va in a.fields.items():
        vb, at = b.fields.get(key), f"{where}.{key}"
        if key in LINK_FIELDS and isinstance(va, AbstractContainer):
            assert type(vb) is type(va) and vb.name == va.name, at
        elif isinstance(va, dict):
            assert sorted(va) == sorted(vb or {}), at  # empty == absent
            for name in va:
                assert_same(va[name], vb[name], at)
        elif isinstance(va, (list, tuple)) and va and isinstance(va[0], AbstractContainer):
            assert [c.name for c in va] == [c.name for c in vb], at
            for ca, cb in zip(va, vb, strict=True):
                assert_same(ca, cb, at)
        elif isinstance(va, AbstractContainer):
            assert_same(va, vb, at)
        elif isinstance(va, datetime):
            assert va == vb, at
        else:
            np.testing.assert_array_equal(_values(va), _values(vb), err_msg=at)


def _nwbfile() -> NWBFile:
    nwbfile = NWBFile(
        session_description="ndx-subspace round trip",
        identifier="ndx-subspace-test",
        session_start_time=datetime(2026, 1, 1, tzinfo=timezone.utc),
    )
    device = nwbfile.create_device(name="probe", description="A probe.")
    nwbfile.create_electrode_group("shank0", description="A shank.", location="AC", device=device)
    for i in range(N_UNITS):
        nwbfile.add_unit(spike_times=np.sort(RNG.uniform(0, 10, 20 + i)))
    nwbfile.add_stimulus(
        TimeSeries(name="sound", data=RNG.standard_normal(1000), unit="Pa", rate=100.0)
    )
    return nwbfile


def _column(cls, name: str, data) -> VectorData:
    doc = next(c["description"] for c in cls.__columns__ if c["name"] == name)
    return VectorData(name=name, description=doc, data=data)


def _region(nwbfile: NWBFile, rows) -> DynamicTableRegion:
    return DynamicTableRegion(
        name="units", data=list(rows), table=nwbfile.units, description="Unit of each row."
    )


def _table(cls, name: str, n: int, columns: dict, **fields):
    cols = [v if isinstance(v, VectorData) else _column(cls, k, v) for k, v in columns.items()]
    return cls(
        name=name, description=f"A {cls.__name__}.", columns=cols, id=list(range(n)), **fields
    )


def _axes() -> dict:
    return {"frequencies": np.geomspace(200.0, 8000.0, N_FREQ), "lags": np.arange(N_LAGS) * 0.01}


def spectrogram(nwbfile: NWBFile) -> Spectrogram:
    return Spectrogram(
        name="spectrogram",
        data=RNG.random((50, N_FREQ)).astype(np.float32),
        unit="a.u.",
        rate=100.0,
        starting_time=0.0,
        frequencies=np.geomspace(200.0, 8000.0, N_FREQ),
        filterbank="gammatone",
        f_min=200.0,
        f_max=8000.0,
        window_s=0.01,
        compression="log((sqrt(rms) + 0.1) / 0.1)",
        settings_json=json.dumps({"bin_s": 0.01}),
        description="A spectrogram.",
        source_sound=nwbfile.stimulus["sound"],
    )


def layer_table() -> ModelLayerTable:
    table = ModelLayerTable(name="layers", description="Layers from input to output.")
    table.add_row(
        layer_name="conv1",
        layer_type="temporal_conv",
        in_size=N_FREQ,
        out_size=2,
        kernel_size=N_LAGS,
        activation="relu",
    )
    table.add_row(
        layer_name="out",
        layer_type="dense",
        in_size=2,
        out_size=N_UNITS,
        kernel_size=1,
        activation="none",
    )
    return table


def scores_table(nwbfile: NWBFile) -> UnitScoresTable:
    columns = {"units": _region(nwbfile, range(N_UNITS))}
    for name in ("correlation", "noise_floor", "noise_corrected_correlation", "explained_variance"):
        columns[name] = RNG.random(N_UNITS)
    return _table(UnitScoresTable, "scores", N_UNITS, columns)


def encoding_model(nwbfile: NWBFile, spec: Spectrogram | None) -> EncodingModel:
    weights = [
        ModelWeight(
            name="conv1.weight",
            data=RNG.standard_normal((2, N_FREQ, N_LAGS)).astype(np.float32),
            dimension_names=["out_channels", "in_channels", "kernel"],
        ),
        ModelWeight(name="out.bias", data=np.zeros(N_UNITS), dimension_names=["unit"]),
    ]
    links = {"spectrogram": spec} if spec is not None else {}
    return EncodingModel(
        name="cnn",
        model_kind="cnn",
        architecture="1D-CNN x1",
        config_json=json.dumps({"n_frequencies": N_FREQ, "n_units": N_UNITS}),
        bin_size_s=0.01,
        n_lags=N_LAGS,
        n_frequencies=N_FREQ,
        n_units=N_UNITS,
        loss="poisson",
        epochs=3,
        best_epoch=2,
        seed=0,
        learning_rates=np.array([1e-3, 1e-4]),
        l2=1e-5,
        n_initializations=1,
        software_versions=json.dumps({"python": "3"}),
        device="cpu",
        model_weights=weights,
        training_loss=np.array([3.0, 2.0, 1.5]),
        validation_loss=np.array([3.1, 2.2, 1.9]),
        layers=layer_table(),
        scores=scores_table(nwbfile),
        units=nwbfile.units,
        output_units=DynamicTableRegion(
            name="output_units",
            data=list(range(N_UNITS)),
            table=nwbfile.units,
            description="Units-table row of each output.",
        ),
        validation_prediction=TimeSeries(
            name="validation_prediction",
            data=RNG.random((8, N_UNITS)).astype(np.float32),
            unit="spikes/s",
            timestamps=np.r_[1.0 + np.arange(4) * 0.01, 5.0 + np.arange(4) * 0.01],
            description="Predicted rate on the validation bins.",
        ),
        **links,
    )


def tuning_table(nwbfile: NWBFile) -> TuningSubspaceTable:
    n = N_UNITS
    columns = {
        "units": _region(nwbfile, range(n)),
        "components": RNG.standard_normal((n, N_COMP, N_FREQ, N_LAGS)).astype(np.float32),
        "explained_variance_ratio": RNG.random((n, N_COMP)),
        "dimensionality": np.array([1, 2, 1]),
        "mean_dstrf": RNG.standard_normal((n, N_FREQ, N_LAGS)).astype(np.float32),
        "n_frames": np.array([40, 41, 42]),
        "noise_floor": RNG.random((n, N_COMP)),
        "dimensionality_reference": np.array([1, 1, 2]),
        "n_outlier_frames": np.array([0, 1, 2]),
    }
    return _table(
        TuningSubspaceTable,
        "tuning_subspaces",
        n,
        columns,
        variance_threshold=0.95,
        reference_n_components=15,
        reference_variance_threshold=0.95,
        **_axes(),
    )


def srf_table(nwbfile: NWBFile, name: str = "subspace_rfs") -> SubspaceRFTable:
    n = 2 * N_UNITS  # one model row and one measured row per unit
    columns = {
        "units": _region(nwbfile, [0, 0, 1, 1, 2, 2]),
        "dimensions": np.tile([0, 1], (n, 1)),
        "response_source": ["model", "measured"] * N_UNITS,
        "response_map": RNG.standard_normal((n, N_BINS, N_BINS)),
        "occupancy": RNG.integers(0, 50, (n, N_BINS, N_BINS)),
        "edges_x": np.tile(np.linspace(-1, 1, N_BINS + 1), (n, 1)),
        "edges_y": np.tile(np.linspace(-1, 1, N_BINS + 1), (n, 1)),
        "breadth": RNG.integers(0, 9, n),
        "shape_asymmetry": RNG.uniform(-1, 1, (n, 2)),
        "response_map_sem": RNG.random((n, N_BINS, N_BINS)),
        "breadth_fraction": RNG.random(n),
        "curve_asymmetry": RNG.uniform(-1, 1, n),
        "shape_p_value": RNG.random(n),
    }
    return _table(
        SubspaceRFTable,
        name,
        n,
        columns,
        high_activity_threshold=0.5,
        grid=json.dumps({"bins": N_BINS}),
        sem_method="repeats",
    )


def site_unit_table(nwbfile: NWBFile) -> SiteUnitTable:
    columns = {
        "units": _region(nwbfile, range(N_UNITS)),
        "variance_fraction": RNG.random(N_UNITS),
        "null_mean": RNG.random(N_UNITS),
        "p_value": RNG.random(N_UNITS),
        "variance_fraction_loo": RNG.random(N_UNITS),
        "site_pc_similarity": RNG.random((N_UNITS, N_COMP)),
        "site_similarity_loo": RNG.random(N_UNITS),
    }
    return _table(SiteUnitTable, "unit_fractions", N_UNITS, columns)


def site_subspace(nwbfile: NWBFile) -> SiteSubspace:
    return SiteSubspace(
        name="site_subspace_shank0",
        site="shank0",
        dimensionality=N_COMP,
        dimensionality_reference=1,
        components=RNG.standard_normal((N_COMP, N_FREQ, N_LAGS)).astype(np.float32),
        explained_variance_ratio=RNG.random(N_COMP),
        components_reference=RNG.standard_normal((N_COMP, N_FREQ, N_LAGS)).astype(np.float32),
        explained_variance_ratio_reference=RNG.random(N_COMP),
        unit_fractions=site_unit_table(nwbfile),
        srfs=srf_table(nwbfile, name="srfs"),
        electrode_group=nwbfile.electrode_groups["shank0"],
        **_axes(),
    )


def statistics_table(nwbfile: NWBFile) -> SiteStatisticsTable:
    columns = {
        "site": ["shank0", "shank0"],
        "statistic": ["shared_subspace_fraction", "tiling_overlap"],
        "value": [0.8, 0.2],
        "null_mean": [0.3, float("nan")],
        "p_value": [0.01, 0.5],
        "effect_size": [float("nan"), 0.1],
        "n": [3, 3],
        "test": ["permutation, one-sided", "permutation, two-sided"],
        "verdict": ["shared", "no tiling"],
        "electrode_group": [nwbfile.electrode_groups["shank0"]] * 2,
    }
    return _table(SiteStatisticsTable, "site_statistics", 2, columns)


def full_analysis(nwbfile: NWBFile) -> SubspaceAnalysis:
    spec = spectrogram(nwbfile)
    return SubspaceAnalysis(
        name="run1",
        config_json=json.dumps({"seed": 0}),
        software_version="test",
        created=datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc),
        spectrograms=[spec],
        encoding_models=[encoding_model(nwbfile, spec)],
        tuning_subspace_tables=[tuning_table(nwbfile)],
        subspace_rf_tables=[srf_table(nwbfile)],
        site_subspaces=[site_subspace(nwbfile)],
        site_statistics_tables=[statistics_table(nwbfile)],
    )


def _write(path: Path, nwbfile: NWBFile) -> Path:
    with NWBHDF5IO(str(path), "w") as io:
        io.write(nwbfile)
    return path


def _all_objects(run) -> dict[str, object]:
    """Every ndx-subspace object below ``run`` (inclusive), keyed by name."""
    found = {}
    stack = [run]
    while stack:
        obj = stack.pop()
        if getattr(obj, "namespace", None) == ndx_subspace.NAMESPACE:
            found[obj.name] = obj
        stack.extend(getattr(obj, "children", []))
    return found


@pytest.fixture
def written(tmp_path):
    nwbfile = _nwbfile()
    module = nwbfile.create_processing_module("misc", "Analysis results.")
    run = full_analysis(nwbfile)
    module.add(run)
    return _write(tmp_path / "full.nwb", nwbfile), run


def test_every_type_round_trips(written):
    path, original = written
    with NWBHDF5IO(str(path), "r") as io:
        back = io.read().processing["misc"]["run1"]
        assert_same(original, back)
        objects = _all_objects(back)
        kinds = {type(o).__name__ for o in objects.values()}
        assert kinds == {c.__name__ for c in (*TABLE_TYPES, EncodingModel, ModelWeight)} | {
            "Spectrogram",
            "SiteSubspace",
            "SubspaceAnalysis",
        }
        model = back.encoding_models["cnn"]
        assert model.spectrogram is back.spectrograms["spectrogram"]
        assert model.units is io.read().units
        assert back.spectrograms["spectrogram"].source_sound.name == "sound"
        weight = model.model_weights["conv1.weight"]
        assert weight.data.dtype == np.float32 and weight.data.shape == (2, N_FREQ, N_LAGS)
        assert list(weight.dimension_names) == ["out_channels", "in_channels", "kernel"]
        subspaces = back.tuning_subspace_tables["tuning_subspaces"]
        assert subspaces["units"].table is io.read().units
        assert subspaces["components"].data.shape == (N_UNITS, N_COMP, N_FREQ, N_LAGS)
        # spec 0.2.0: outputs mapped to units, predictions, electrode groups
        assert model.output_units.table is io.read().units
        assert list(model.output_units.data[:]) == list(range(N_UNITS))
        prediction = model.validation_prediction
        assert prediction.unit == "spikes/s" and prediction.data.dtype == np.float32
        assert prediction.data.shape == (8, N_UNITS) and prediction.timestamps.shape == (8,)
        group = io.read().electrode_groups["shank0"]
        assert back.site_subspaces["site_subspace_shank0"].electrode_group is group
        statistics = back.site_statistics_tables["site_statistics"]
        assert [g for g in statistics["electrode_group"][:]] == [group, group]


def test_quantities_are_written_with_their_unit(written):
    """hdmf writes each column's spec'd ``unit`` (its default value) without being asked."""
    import h5py

    path, _ = written
    expected = {
        "tuning_subspaces/mean_dstrf": "(spikes/bin) per spectrogram unit",
        "subspace_rfs/response_map": "spikes/s",
        "subspace_rfs/response_map_sem": "spikes/s",
        "subspace_rfs/edges_x": "spectrogram units",
        "subspace_rfs/edges_y": "spectrogram units",
        "site_subspace_shank0/srfs/response_map": "spikes/s",
        "tuning_subspaces/frequencies": "Hz",
        "tuning_subspaces/lags": "seconds",
        "cnn/validation_prediction/data": "spikes/s",
        "spectrogram/data": "a.u.",
    }
    with h5py.File(path, "r") as f:
        run = f["processing/misc/run1"]
        found = {key: run[key].attrs.get("unit") for key in expected}
    assert found == expected


def test_required_fields_only_round_trip(tmp_path):
    """Optional fields, groups and links left out: the file is valid and reads back equal."""
    nwbfile = _nwbfile()
    model = EncodingModel(
        name="ln",
        model_kind="ln",
        architecture="LN",
        config_json="{}",
        bin_size_s=0.01,
        n_lags=N_LAGS,
        n_frequencies=N_FREQ,
        n_units=N_UNITS,
        loss="mse",
        epochs=1,
        seed=0,
        learning_rates=[1e-3],
        software_versions="{}",
    )
    run = SubspaceAnalysis(
        name="bare",
        config_json="{}",
        software_version="test",
        created=datetime(2026, 1, 2, tzinfo=timezone.utc),
        encoding_models=[model],
    )
    nwbfile.create_processing_module("misc", "Analysis results.").add(run)
    _write(tmp_path / "bare.nwb", nwbfile)
    with NWBHDF5IO(str(tmp_path / "bare.nwb"), "r") as io:
        back = io.read().processing["misc"]["bare"]
        assert_same(run, back)
        assert back.encoding_models["ln"].scores is None
        assert back.encoding_models["ln"].units is None


@pytest.mark.parametrize("cls", TABLE_TYPES, ids=lambda c: c.__name__)
def test_to_dataframe_of_every_table_type(written, cls):
    path, _ = written
    with NWBHDF5IO(str(path), "r") as io:
        tables = [
            o for o in _all_objects(io.read().processing["misc"]["run1"]).values() if type(o) is cls
        ]
        assert tables, f"no {cls.__name__} in the file"
        for table in tables:
            frame = table.to_dataframe()
            assert len(frame) == len(table)
            expected = set(table.colnames)
            assert expected <= set(frame.columns)
            if "units" in table.colnames:  # the region resolves to rows of the units table
                assert len(frame["units"].iloc[0]) == 1


def test_package_exports_every_type_of_the_spec():
    yaml = YAML(typ="safe", pure=True)
    ext = yaml.load(ndx_subspace.spec_path().with_name("ndx-subspace.extensions.yaml"))
    defined = {t["neurodata_type_def"] for t in ext.get("groups", []) + ext.get("datasets", [])}
    exported = {n for n in ndx_subspace.__all__ if n[0].isupper() and n != "NAMESPACE"}
    assert exported == defined
    for name in defined:
        assert getattr(ndx_subspace, name) is get_class(name, ndx_subspace.NAMESPACE)
    namespace = yaml.load(ndx_subspace.spec_path())["namespaces"][0]
    assert ndx_subspace.__version__ == namespace["version"]


def test_cached_spec_reads_without_the_package(written):
    """The spec is cached in the file: pynwb's load_namespaces=True finds ndx-subspace."""
    path, _ = written
    with NWBHDF5IO(str(path), "r", load_namespaces=True) as io:
        run = io.read().processing["misc"]["run1"]
        assert run.namespace == ndx_subspace.NAMESPACE
        assert type(run).__name__ == "SubspaceAnalysis"
