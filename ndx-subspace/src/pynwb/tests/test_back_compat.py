"""Files written with older ``ndx-subspace`` specs open with the current classes (ndx-pose way).

``back_compat/<version>/`` holds pinned copies of the spec YAML of each older release (0.1.0:
before the optional columns of issue 19; 0.1.1: with them). For each, a fresh interpreter that
loads only that pinned namespace writes a file (``back_compat/write_old_file.py``, every field
the old spec has, filled), so the file is what that release wrote and caches that spec. This
interpreter, where ``ndx_subspace`` (the current spec) is loaded, then opens it with plain pynwb:
the objects are the current classes, every value reads back as written, the fields added since
are absent (None), and every table gives a ``to_dataframe()``.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from pynwb import NWBHDF5IO
from ruamel.yaml import YAML

import ndx_subspace

BACK_COMPAT = Path(__file__).resolve().parent / "back_compat"
WRITER = BACK_COMPAT / "write_old_file.py"
VERSIONS = ("0.1.0", "0.1.1")
#: Optional fields added by 0.1.1 (issue 19): absent from 0.1.0 files.
ADDED_IN_0_1_1 = {
    "tuning_subspaces": {"dimensionality_reference", "n_outlier_frames"},
    "subspace_rfs": {"response_map_sem", "breadth_fraction", "curve_asymmetry", "shape_p_value"},
    "unit_fractions": {"variance_fraction_loo", "site_pc_similarity", "site_similarity_loo"},
}


def _writer_module():
    spec = importlib.util.spec_from_file_location("write_old_file", WRITER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


OLD = _writer_module()


def write_old_file(version: str, out: Path, models: Path | None = None) -> Path:
    """Write ``out`` with the pinned spec ``version`` in a fresh interpreter (its own type map)."""
    args = [sys.executable, str(WRITER), str(BACK_COMPAT / version), str(out)]
    proc = subprocess.run(
        args + ([str(models)] if models else []), capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


@pytest.fixture(scope="module", params=VERSIONS)
def old_file(request, tmp_path_factory):
    version = request.param
    return version, write_old_file(version, tmp_path_factory.mktemp(version) / "old.nwb")


def test_pinned_specs_are_the_old_versions():
    yaml = YAML(typ="safe", pure=True)
    current = yaml.load(ndx_subspace.spec_path())["namespaces"][0]["version"]
    for version in VERSIONS:
        (ns,) = yaml.load(BACK_COMPAT / version / "ndx-subspace.namespace.yaml")["namespaces"]
        assert ns["name"] == ndx_subspace.NAMESPACE and ns["version"] == version != current
    text = (BACK_COMPAT / "0.1.0" / "ndx-subspace.extensions.yaml").read_text()
    assert "response_map_sem" not in text and "output_units" not in text
    assert (
        "response_map_sem" in (BACK_COMPAT / "0.1.1" / "ndx-subspace.extensions.yaml").read_text()
    )


def test_old_file_caches_the_old_spec_and_validates(old_file):
    import h5py

    version, path = old_file
    with h5py.File(path, "r") as f:
        assert list(f["specifications/ndx-subspace"]) == [version]
        assert "output_units" not in f["processing/misc/run1/cnn"]
    proc = subprocess.run(["pynwb-validate", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0 and "no errors found" in proc.stdout, proc.stdout + proc.stderr


def test_old_file_opens_with_the_current_classes(old_file):
    version, path = old_file
    data = OLD.payload()
    # hdmf says which spec it reads the file with: the current one (backward compatible)
    with pytest.warns(UserWarning, match=f"cached version: {version}, loaded version"):
        io = NWBHDF5IO(str(path), "r")
    with io:
        nwbfile = io.read()
        run = nwbfile.processing[OLD.MODULE][OLD.RUN]
        assert type(run) is ndx_subspace.SubspaceAnalysis
        cnn, ln = run.encoding_models["cnn"], run.encoding_models["ln"]
        assert type(cnn) is ndx_subspace.EncodingModel
        # fields added in 0.2.0 are absent; the 0.1.x mapping is the scores' units column
        assert cnn.output_units is None and cnn.validation_prediction is None
        assert list(cnn.scores["units"].data[:]) == OLD.CNN_ROWS
        assert cnn.scores["units"].table is nwbfile.units
        assert ln.scores is None and int(ln.n_units) == OLD.N_UNITS
        site = run.site_subspaces[f"site_subspace_{OLD.SITE}"]
        assert site.electrode_group is None and site.site == OLD.SITE
        spec = run.spectrograms["spectrogram"]
        assert type(spec) is ndx_subspace.Spectrogram
        np.testing.assert_array_equal(spec.data[:], data["spectrogram"]["data"])
        assert spec.starting_time == data["spectrogram"]["starting_time"]
        for name, values in data["scores"].items():
            np.testing.assert_array_equal(cnn.scores[name].data[:], values)
        tables = {
            "tuning_subspaces": (run.tuning_subspace_tables["tuning_subspaces"], data["tuning"]),
            "subspace_rfs": (run.subspace_rf_tables["subspace_rfs"], data["srf"]),
            "unit_fractions": (site.unit_fractions, data["site_units"]),
            "site_statistics": (run.site_statistics_tables["site_statistics"], data["statistics"]),
        }
        for key, (table, columns) in tables.items():
            absent = ADDED_IN_0_1_1.get(key, set()) if version == "0.1.0" else set()
            assert set(table.colnames) == set(columns) - absent, key
            for name in table.colnames:
                got = np.asarray(table[name].data[:])
                if got.dtype.kind in "OSU":
                    got = [v.decode() if isinstance(v, bytes) else v for v in got.tolist()]
                np.testing.assert_array_equal(got, columns[name], err_msg=f"{key}.{name}")
            frame = table.to_dataframe()
            assert len(frame) == len(columns["site" if key == "site_statistics" else "units"])
        assert "electrode_group" not in run.site_statistics_tables["site_statistics"].colnames
        for table in (cnn.scores, site.srfs):
            assert len(table.to_dataframe()) == len(table)
