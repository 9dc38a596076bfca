"""ndx-subspace on its own (issue 21, done-when): in a fresh virtual environment holding only
``pip install ./ndx-subspace`` (pynwb and hdmf from the package index; no torch, no
nwb-subspace, no spikeinterface), a result file written by nwb-subspace opens with the
extension's classes and ``to_dataframe()`` works on every table.

The file is written by ``nwb_subspace.write_results`` (the writer ``nwb-subspace run`` uses)
from the mock result set, which holds one object of every extension type, plus a site's SRF
table nested in its ``SiteSubspace``. The test is skipped, saying why, when pip cannot reach
a package index.
"""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
import venv
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from nwb_subspace.io.writer import write_results
from nwb_subspace.testing import mock_result_set, write_mock_nwbfile

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
NDX = ROOT / "ndx-subspace"
HEAVY = ("torch", "nwb_subspace", "spikeinterface")
#: pip's words when no index answers (offline machine, blocked network).
NO_INDEX = (
    "(from versions: none)",
    "Failed to establish a new connection",
    "Temporary failure in name resolution",
    "Network is unreachable",
    "No matching distribution found",
)

CHECK = textwrap.dedent(
    """
    import importlib.util, json, sys

    heavy = {name: importlib.util.find_spec(name) is not None for name in sys.argv[2:]}
    import ndx_subspace
    from hdmf.common import DynamicTable
    from pynwb import NWBHDF5IO

    out = {"heavy": heavy, "version": ndx_subspace.__version__, "objects": {}, "tables": []}
    with NWBHDF5IO(sys.argv[1], "r", load_namespaces=False) as io:
        nwbfile = io.read()
        for obj in nwbfile.objects.values():
            kind = type(obj).__name__
            if getattr(obj, "namespace", None) == ndx_subspace.NAMESPACE:
                assert type(obj) is getattr(ndx_subspace, kind), kind  # the package's class
                out["objects"].setdefault(kind, []).append(obj.name)
            if isinstance(obj, DynamicTable):
                frame = obj.to_dataframe()
                out["tables"].append([kind, obj.name, len(frame), len(frame.columns)])
    out["imported"] = sorted(m for m in sys.modules if m.split(".")[0] in sys.argv[2:])
    print(json.dumps(out))
    """
)


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


@pytest.fixture(scope="module")
def ndx_venv(tmp_path_factory) -> Path:
    """A fresh venv (no system site packages) with only ``pip install ./ndx-subspace``."""
    folder = tmp_path_factory.mktemp("ndx_venv")
    venv.EnvBuilder(with_pip=True, system_site_packages=False).create(folder / "venv")
    python = folder / "venv" / ("Scripts" if os.name == "nt" else "bin") / "python"
    proc = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", str(NDX)],
        capture_output=True,
        text=True,
        env=_clean_env(),
        cwd=folder,
        timeout=600,
    )
    if proc.returncode != 0:
        if any(sign in proc.stdout + proc.stderr for sign in NO_INDEX):
            pytest.skip(f"pip cannot reach a package index for pynwb/hdmf: {proc.stderr[-300:]}")
        pytest.fail(f"pip install ./ndx-subspace failed:\n{proc.stdout}\n{proc.stderr}")
    return python


@pytest.fixture(scope="module")
def result_file(tmp_path_factory) -> Path:
    path = write_mock_nwbfile(tmp_path_factory.mktemp("ndx_result") / "session.nwb")
    results = mock_result_set()
    site = results.site_subspaces[0]
    site.srfs = replace(results.srfs[0], name="site_srfs", high_activity_threshold=0.6)
    write_results(path, results, "run1")
    return path


def _spec_types() -> set[str]:
    ext = yaml.safe_load((NDX / "spec" / "ndx-subspace.extensions.yaml").read_text())
    return {t["neurodata_type_def"] for t in ext.get("groups", []) + ext.get("datasets", [])}


def test_result_file_opens_with_only_ndx_subspace_installed(ndx_venv, result_file, tmp_path):
    script = tmp_path / "check.py"
    script.write_text(CHECK)
    proc = subprocess.run(
        [str(ndx_venv), str(script), str(result_file), *HEAVY],
        capture_output=True,
        text=True,
        env=_clean_env(),
        cwd=tmp_path,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["heavy"] == dict.fromkeys(HEAVY, False), "the venv is not bare"
    assert out["imported"] == []
    assert set(out["objects"]) == _spec_types()  # every extension type came back as its class
    assert set(out["objects"]["SubspaceRFTable"]) == {"subspace_rfs", "srfs"}  # run's, site's
    tables = out["tables"]
    assert {kind for kind, *_ in tables if kind in _spec_types()} == {
        "ModelLayerTable",
        "UnitScoresTable",
        "TuningSubspaceTable",
        "SubspaceRFTable",
        "SiteUnitTable",
        "SiteStatisticsTable",
    }
    assert all(rows > 0 and cols > 0 for *_, rows, cols in tables), tables
    assert ["Units", "units"] in [t[:2] for t in tables]  # the file's own tables read too
    namespace = yaml.safe_load((NDX / "spec" / "ndx-subspace.namespace.yaml").read_text())
    assert out["version"] == namespace["namespaces"][0]["version"]
