"""Every extension type survives a write/read round trip, with and without the package."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from dataclasses import replace

import h5py
import numpy as np
import pytest
import torch
from nwbinspector import Importance, inspect_nwbfile

from nwb_subspace.io.writer import read_results, write_results
from nwb_subspace.models import SubspaceModel, build_model
from nwb_subspace.results import FittedModel

EXPECTED_TYPES = {
    "processing/misc/run1": "SubspaceAnalysis",
    "processing/misc/run1/spectrogram": "Spectrogram",
    "processing/misc/run1/cnn": "EncodingModel",
    "processing/misc/run1/cnn/core.spectral": "ModelWeight",
    "processing/misc/run1/cnn/layers": "ModelLayerTable",
    "processing/misc/run1/cnn/scores": "UnitScoresTable",
    "processing/misc/run1/tuning_subspaces": "TuningSubspaceTable",
    "processing/misc/run1/subspace_rfs": "SubspaceRFTable",
    "processing/misc/run1/site_subspace_shank0": "SiteSubspace",
    "processing/misc/run1/site_subspace_shank0/unit_fractions": "SiteUnitTable",
    "processing/misc/run1/site_subspace_shank0/srfs": "SubspaceRFTable",
    "processing/misc/run1/site_statistics": "SiteStatisticsTable",
}


def _add_all_model_kinds(results, n_units=5, n_freq=6):
    torch.manual_seed(1)
    ln = build_model(
        "ln", {"n_frequencies": n_freq, "n_units": n_units, "n_channels": 3, "n_taps": 7}
    )
    rng = np.random.default_rng(2)
    bases = [rng.standard_normal((k, n_freq, 8)) for k in (1, 3, 2, 4, 1)]
    sub = SubspaceModel.from_bases(bases)
    for name, module in (("ln", ln), ("subspace", sub)):
        results.models.append(
            FittedModel(
                name=name,
                module=module,
                unit_rows=np.arange(n_units),
                bin_size_s=0.01,
                spectrogram="spectrogram",
            )
        )
    return results


def _add_site_srfs(results):
    """The site's units mapped on its first two components (as the tiling step stores them)."""
    site = results.site_subspaces[0]
    site.srfs = replace(results.srfs[0], name="site_srfs", high_activity_threshold=0.6)
    return results


@pytest.fixture
def written(mock_file, results):
    _add_all_model_kinds(results)
    _add_site_srfs(results)
    write_results(mock_file, results, "run1")
    return mock_file, results


def test_round_trip_with_package(written):
    path, original = written
    back = read_results(path, "run1")
    a, b = original.spectrograms[0], back.spectrograms[0]
    np.testing.assert_array_equal(a.data, b.data)
    np.testing.assert_array_equal(a.frequencies, b.frequencies)
    assert (b.rate, b.starting_time, b.source_sound) == (a.rate, a.starting_time, "sound")
    assert b.settings == a.settings
    for field in (
        "components",
        "explained_variance_ratio",
        "dimensionality",
        "mean_dstrf",
        "n_frames",
        "noise_floor",
        "unit_rows",
        "frequencies",
        "lags_s",
    ):
        np.testing.assert_allclose(
            getattr(back.subspaces[0], field), getattr(original.subspaces[0], field), rtol=1e-6
        )
    for field in (
        "unit_rows",
        "dimensions",
        "response_map",
        "occupancy",
        "edges_x",
        "edges_y",
        "breadth",
        "shape_asymmetry",
    ):
        np.testing.assert_array_equal(
            getattr(back.srfs[0], field), getattr(original.srfs[0], field)
        )
    assert list(back.srfs[0].response_source) == list(original.srfs[0].response_source)
    s0, s1 = original.site_subspaces[0], back.site_subspaces[0]
    np.testing.assert_allclose(s1.components, s0.components, rtol=1e-6)
    np.testing.assert_array_equal(s1.variance_fraction, s0.variance_fraction)
    assert (s1.site, s1.dimensionality) == (s0.site, s0.dimensionality)
    assert s1.srfs is not None and s1.srfs.name == "srfs"
    assert s1.srfs.high_activity_threshold == 0.6
    for field in ("unit_rows", "dimensions", "response_map", "occupancy", "edges_x", "breadth"):
        np.testing.assert_array_equal(getattr(s1.srfs, field), getattr(s0.srfs, field))
    assert list(s1.srfs.response_source) == list(s0.srfs.response_source)
    r0, r1 = original.site_statistics[0].rows[0], back.site_statistics[0].rows[0]
    assert {k: v for k, v in r1.items() if k != "effect_size"} == {
        k: v for k, v in r0.items() if k != "effect_size"
    }
    assert np.isnan(r1["effect_size"])
    assert back.config == original.config
    cols = {c.name: c for c in back.unit_columns}
    np.testing.assert_array_equal(cols["trough_to_peak_ms"].values, original.unit_columns[0].values)
    assert [str(v) for v in cols["cell_type"].values] == list(original.unit_columns[1].values)


def test_models_rebuilt_predict_identically(written):
    path, original = written
    back = read_results(path, "run1")
    x = torch.rand(3, 200, 6)
    assert [m.name for m in back.models] == ["cnn", "ln", "subspace"]
    for m0, m1 in zip(original.models, back.models, strict=True):
        with torch.no_grad():
            diff = (m0.module.eval()(x) - m1.module(x)).abs().max().item()
        assert diff < 1e-6, (m0.name, diff)
        assert m1.kind == m0.kind and m1.spectrogram == "spectrogram"
    t0, t1 = original.models[0].training, back.models[0].training
    assert (t1.loss, t1.epochs, t1.seed, t1.best_epoch, t1.l2) == (
        t0.loss,
        t0.epochs,
        t0.seed,
        t0.best_epoch,
        t0.l2,
    )
    assert t1.learning_rates == t0.learning_rates
    np.testing.assert_array_equal(t1.training_loss, t0.training_loss)
    assert "torch" in t1.software_versions
    np.testing.assert_array_equal(
        back.models[0].scores.correlation, original.models[0].scores.correlation
    )


def test_on_disk_types_and_cached_spec(written):
    path, _ = written
    with h5py.File(path, "r") as f:
        for where, kind in EXPECTED_TYPES.items():
            assert f[where].attrs["neurodata_type"] == kind, where
            assert f[where].attrs["namespace"] == "ndx-subspace", where
        assert "ndx-subspace" in f["specifications"]
        assert "core" in f["specifications"]
        dims = f["processing/misc/run1/cnn/core.spectral"].attrs["dimension_names"]
        assert [d.decode() if isinstance(d, bytes) else d for d in dims] == [
            "channel1",
            "frequency",
        ]
        ref = f["processing/misc/run1/tuning_subspaces/units"].attrs["table"]
        assert f[ref].name == "/units"


def test_read_without_package_in_fresh_process(written):
    path, _ = written
    script = textwrap.dedent(f"""
        import json, sys
        from pynwb import NWBHDF5IO
        with NWBHDF5IO({str(path)!r}, "r") as io:
            nwb = io.read()
            run = nwb.processing["misc"]["run1"]
            out = {{"run": [type(run).__name__, run.namespace]}}
            for child in run.children:
                out[child.name] = [type(child).__name__, child.namespace]
            subspaces = run.tuning_subspace_tables["tuning_subspaces"]
            out["components_shape"] = list(subspaces["components"].data.shape)
            out["units_target"] = subspaces["units"].table.name
            out["cnn_weights"] = sorted(run.encoding_models["cnn"].model_weights)
            site_srfs = run.site_subspaces["site_subspace_shank0"].srfs
            out["site_srfs"] = [type(site_srfs).__name__, site_srfs["units"].table.name]
        out["imported"] = "nwb_subspace" in sys.modules
        print(json.dumps(out))
    """)
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=path.parent
    )
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["imported"] is False
    assert out["run"] == ["SubspaceAnalysis", "ndx-subspace"]
    assert out["cnn"] == ["EncodingModel", "ndx-subspace"]
    assert out["spectrogram"] == ["Spectrogram", "ndx-subspace"]
    assert out["tuning_subspaces"] == ["TuningSubspaceTable", "ndx-subspace"]
    assert out["subspace_rfs"] == ["SubspaceRFTable", "ndx-subspace"]
    assert out["site_subspace_shank0"] == ["SiteSubspace", "ndx-subspace"]
    assert out["site_statistics"] == ["SiteStatisticsTable", "ndx-subspace"]
    assert out["components_shape"] == [5, 3, 6, 24]
    assert out["units_target"] == "units"
    assert "core.spectral" in out["cnn_weights"]
    assert out["site_srfs"] == ["SubspaceRFTable", "units"]


def test_pynwb_validate_cli_reports_no_errors(written):
    path, _ = written
    proc = subprocess.run(["pynwb-validate", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "no errors found" in proc.stdout


def test_nwbinspector_finds_nothing_serious(written):
    path, _ = written
    serious = [
        m
        for m in inspect_nwbfile(nwbfile_path=str(path))
        if m.importance in (Importance.CRITICAL, Importance.BEST_PRACTICE_VIOLATION)
    ]
    assert serious == [], [(m.check_function_name, m.object_name, m.message) for m in serious]
