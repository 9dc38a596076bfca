"""``read_results`` reads files written with the older ndx-subspace specs 0.1.0 and 0.1.1.

The files are generated in the test: ``ndx-subspace/src/pynwb/tests/back_compat/
write_old_file.py`` writes them in a fresh interpreter that loads only the pinned copy of the
old spec (see the ndx package's ``test_back_compat.py``), here with a real tiny CNN and LN
(:func:`nwb_subspace.models.build_model`, nothing fitted) so the models can be rebuilt.
``read_results`` must give back the arrays written; the CNN's outputs map to the units its
scores table names (spec 0.1.x keeps that mapping nowhere else), and the LN, stored without
scores, maps to every unit in order.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from nwb_subspace.io.writer import read_results, write_results
from nwb_subspace.models import build_model
from nwb_subspace.testing import write_mock_nwbfile

ROOT = Path(__file__).resolve().parent.parent
BACK_COMPAT = ROOT / "ndx-subspace" / "src" / "pynwb" / "tests" / "back_compat"
WRITER = BACK_COMPAT / "write_old_file.py"


def _writer_module():
    spec = importlib.util.spec_from_file_location("write_old_file", WRITER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


OLD = _writer_module()


def _modules() -> dict[str, torch.nn.Module]:
    torch.manual_seed(3)
    cnn = build_model(
        "cnn",
        {
            "n_frequencies": OLD.N_FREQ,
            "n_units": len(OLD.CNN_ROWS),
            "n_channels1": 4,
            "n_channels2": 5,
            "n_hidden": 6,
        },
    )
    ln = build_model(
        "ln", {"n_frequencies": OLD.N_FREQ, "n_units": OLD.N_UNITS, "n_channels": 3, "n_taps": 7}
    )
    return {"cnn": cnn, "ln": ln}


@pytest.fixture(scope="module")
def modules():
    return _modules()


@pytest.fixture(scope="module", params=["0.1.0", "0.1.1"])
def old_file(request, tmp_path_factory, modules):
    version = request.param
    folder = tmp_path_factory.mktemp(f"spec{version}")
    arrays = {}
    for name, module in modules.items():
        arrays[f"{name}/__kind__"] = np.array(module.kind)
        arrays[f"{name}/__config__"] = np.array(json.dumps(module.config))
        for key, tensor in module.state_dict().items():
            arrays[f"{name}/{key}"] = tensor.detach().numpy()
    np.savez(folder / "models.npz", **arrays)
    out = folder / "old.nwb"
    proc = subprocess.run(
        [
            sys.executable,
            str(WRITER),
            str(BACK_COMPAT / version),
            str(out),
            str(folder / "models.npz"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return version, out


def _same(a, b, what: str) -> None:
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=what)


def test_read_results_gives_back_what_the_old_spec_wrote(old_file, modules):
    version, path = old_file
    data = OLD.payload()
    with pytest.warns(UserWarning, match=f"cached version: {version}"):
        back = read_results(path, OLD.RUN, module=OLD.MODULE)
    models = {m.name: m for m in back.models}
    # the output-to-unit mapping: the scores table (cnn), else every unit in order (ln)
    _same(models["cnn"].unit_rows, OLD.CNN_ROWS, "cnn unit rows")
    _same(models["ln"].unit_rows, np.arange(OLD.N_UNITS), "ln unit rows")
    assert models["ln"].scores is None
    for name, values in data["scores"].items():
        _same(getattr(models["cnn"].scores, name), values, f"scores.{name}")
    for name, module in modules.items():
        assert models[name].validation_prediction is None  # spec 0.2.0 only
        stored = models[name].module.state_dict()
        for key, tensor in module.state_dict().items():
            assert torch.equal(stored[key], tensor), f"{name}.{key}"
        _same(models[name].training.training_loss, data["training_loss"], "training_loss")
    (spec,) = back.spectrograms
    _same(spec.data, data["spectrogram"]["data"], "spectrogram")
    assert (spec.rate, spec.starting_time) == (100.0, data["spectrogram"]["starting_time"])
    new_in_0_1_1 = version != "0.1.0"
    (tuning,) = back.subspaces
    _same(tuning.unit_rows, data["tuning"]["units"], "tuning units")
    for name in ("components", "explained_variance_ratio", "dimensionality", "mean_dstrf"):
        _same(getattr(tuning, name), data["tuning"][name], name)
    for name in ("dimensionality_reference", "n_outlier_frames"):
        value = getattr(tuning, name)
        assert (value is not None) == new_in_0_1_1, name
        if value is not None:
            _same(value, data["tuning"][name], name)
    _same(tuning.lags_s, data["axes"]["lags"], "lags")
    (srfs,) = back.srfs
    _same(srfs.unit_rows, data["srf"]["units"], "srf units")
    for name in ("response_map", "occupancy", "edges_x", "edges_y", "breadth"):
        _same(getattr(srfs, name), data["srf"][name], name)
    assert list(srfs.response_source) == data["srf"]["response_source"]
    assert (srfs.response_map_sem is not None) == new_in_0_1_1
    (site,) = back.site_subspaces
    assert site.site == OLD.SITE and site.srfs is not None
    _same(site.unit_rows, data["site_units"]["units"], "site units")
    _same(site.variance_fraction, data["site_units"]["variance_fraction"], "variance_fraction")
    _same(site.components, data["site"]["components"], "site components")
    assert (site.variance_fraction_loo is not None) == new_in_0_1_1
    (stats,) = back.site_statistics
    assert [row["statistic"] for row in stats.rows] == data["statistics"]["statistic"]
    _same([row["value"] for row in stats.rows], data["statistics"]["value"], "statistics")
    assert back.config == data["config"]


def test_old_results_rewritten_carry_the_mapping_on_the_model(old_file, tmp_path):
    """Read from a 0.1.x file, written again (spec 0.2.0): the mapping is on the model."""
    version, path = old_file
    with pytest.warns(UserWarning, match=f"cached version: {version}"):
        back = read_results(path, OLD.RUN, module=OLD.MODULE)
    target = write_mock_nwbfile(tmp_path / "session.nwb", n_units=OLD.N_UNITS)
    back.models = [m for m in back.models if m.name != "ln"]  # keep the file small
    back.models[0].scores = None  # without scores: the mapping must still survive
    write_results(target, back, "upgraded")
    again = read_results(target, "upgraded")
    _same(again.models[0].unit_rows, OLD.CNN_ROWS, "cnn unit rows after rewrite")
