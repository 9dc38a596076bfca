"""DANDI conventions: derived output names and DANDI addresses (parsing only, no network).

The address tests run twice where possible: with the regular expressions of
``nwb_subspace.io.dandi_address`` and with the ``dandi`` client's own parser, either in this
environment or, when the client lives in a separate venv (``NWB_SUBSPACE_DANDI`` pointing at
its ``dandi`` executable, or ``dandi`` on PATH), in that venv's Python. The client's parser
asks the archive which server version it runs and falls back to its built-in URLs offline.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from nwb_subspace.batch import run_batch, session_output, source_key
from nwb_subspace.io.dandi_address import (
    DandiClientMissing,
    is_dandi_address,
    parse_dandi_address,
)
from nwb_subspace.io.dandi_names import derived_output_name, is_dandi_like, source_file_name
from nwb_subspace.io.remote import parse_dandi_spec
from nwb_subspace.io.writer import default_output_path

# The organised-file rule of `dandi validate` (dandi/organize.py of the dandi client 0.81).
_LABEL = r"[^_*\\/<>:|\"'?%@;.]+"
DANDI_FILENAME = re.compile(
    rf"sub-{_LABEL}(_ses-{_LABEL})?(_(tis|slice|cell|desc|probe|obj)-{_LABEL})*"
    r"(_[a-z]+(\+[a-z]+)*)?\.nwb"
)
BIDS_LABEL = re.compile(r"[0-9A-Za-z]+")

NAMES = [
    ("sub-01_ses-2_ecephys.nwb", "sub-01_ses-2_desc-subspace_ecephys.nwb"),
    ("sub-A_ses-B_behavior+ecephys.nwb", "sub-A_ses-B_desc-subspace_behavior+ecephys.nwb"),
    ("sub-01_ecephys.nwb", "sub-01_desc-subspace_ecephys.nwb"),
    ("sub-01.nwb", "sub-01_desc-subspace.nwb"),
    ("sub-01_ses-1.nwb", "sub-01_ses-1_desc-subspace.nwb"),
    ("sub-IBL-ecephys_ses-3_ecephys.nwb", "sub-IBL-ecephys_ses-3_desc-subspace_ecephys.nwb"),
    (
        "sub-01_ses-1_probe-A_obj-x1_ecephys.nwb",
        "sub-01_ses-1_probe-A_obj-x1_desc-subspace_ecephys.nwb",
    ),
    # an existing desc keeps its place and gains "Subspace"
    ("sub-01_desc-raw_ecephys.nwb", "sub-01_desc-rawSubspace_ecephys.nwb"),
    (
        "sub-01_ses-1_desc-raw_probe-A_ecephys.nwb",
        "sub-01_ses-1_desc-rawSubspace_probe-A_ecephys.nwb",
    ),
    # an output of an output stays distinct from its source
    ("sub-01_desc-subspace_ecephys.nwb", "sub-01_desc-subspaceSubspace_ecephys.nwb"),
    # not DANDI-like: <stem>_desc-subspace
    ("session.nwb", "session_desc-subspace.nwb"),
    ("my.session.v2.nwb", "my.session.v2_desc-subspace.nwb"),
    ("sub-01_ses-1.5_ecephys.nwb", "sub-01_ses-1.5_ecephys_desc-subspace.nwb"),
    ("sub-01_ses-1_Ecephys.nwb", "sub-01_ses-1_Ecephys_desc-subspace.nwb"),
    ("Sub-01_ecephys.nwb", "Sub-01_ecephys_desc-subspace.nwb"),
    ("sub-01__ecephys.nwb", "sub-01__ecephys_desc-subspace.nwb"),
    ("2024-05-01 mouse 3.nwb", "2024-05-01 mouse 3_desc-subspace.nwb"),
    ("noext", "noext_desc-subspace.nwb"),
    (".nwb", "session_desc-subspace.nwb"),
    # extensions: HDF5 -> .nwb, Zarr keeps .nwb.zarr
    ("rec.h5", "rec_desc-subspace.nwb"),
    ("sub-01_ses-1_ecephys.nwb.h5", "sub-01_ses-1_desc-subspace_ecephys.nwb"),
    ("sub-01_ses-1_ecephys.nwb.zarr", "sub-01_ses-1_desc-subspace_ecephys.nwb.zarr"),
    ("sub-01_ses-1_ecephys.nwb.zarr/", "sub-01_ses-1_desc-subspace_ecephys.nwb.zarr"),
    ("x.zarr", "x_desc-subspace.nwb.zarr"),
    ("SESSION.NWB", "SESSION_desc-subspace.nwb"),
]


@pytest.mark.parametrize(("name", "expected"), NAMES)
def test_derived_output_names(name, expected):
    assert derived_output_name(name) == expected
    assert derived_output_name(Path("/data/000123/sub-01") / name.rstrip("/")) == expected
    if DANDI_FILENAME.fullmatch(name):  # a DANDI-valid source gives a DANDI-valid output
        assert DANDI_FILENAME.fullmatch(expected), expected
        assert is_dandi_like(name)


@pytest.mark.parametrize(("name", "expected"), NAMES)
def test_batch_key_stays_in_a_valid_desc_label(name, expected):
    out = derived_output_name(name, key="1a2b3c4d")
    assert out.count("1a2b3c4d") == 1 and out.replace("1a2b3c4d", "") == expected
    desc = re.search(r"_desc-([^_.]+)", out)[1]
    assert desc.endswith("1a2b3c4d") and BIDS_LABEL.fullmatch(desc)
    if DANDI_FILENAME.fullmatch(name):
        assert DANDI_FILENAME.fullmatch(out), out


def test_bad_key_and_extension():
    for key in ("", "1a_2b", "a-b", "a.b", 12):
        with pytest.raises(ValueError, match="letters and digits"):
            derived_output_name("sub-01_ecephys.nwb", key=key)
    with pytest.raises(ValueError, match="extension"):
        derived_output_name("sub-01_ecephys.nwb", extension=".h5")
    assert derived_output_name("x.nwb.zarr", extension=".nwb") == "x_desc-subspace.nwb"
    assert derived_output_name("x.nwb", extension=".nwb.zarr") == "x_desc-subspace.nwb.zarr"


@pytest.mark.parametrize(
    ("source", "name"),
    [
        ("dandi://dandi/000123/sub-1/sub-1_ses-2_ecephys.nwb", "sub-1_ses-2_ecephys.nwb"),
        ("dandi://dandi/000123@draft/sub-1/sub%201_ecephys.nwb", "sub 1_ecephys.nwb"),
        ("https://host/a%20b/sub-1_ecephys.nwb?x=1", "sub-1_ecephys.nwb"),
        ("https://host/", "remote.nwb"),
        ("https://api.dandiarchive.org/api/assets/0a1b-2c/download/", "0a1b-2c"),
        ("DANDI:000123", "remote.nwb"),
        ("relative/dir/session.nwb", "session.nwb"),
        (Path("/x/https:/y.nwb"), "y.nwb"),
    ],
)
def test_source_file_names(source, name):
    assert source_file_name(source) == name


def test_writer_default_output_is_beside_a_local_source_and_local_for_a_remote_one(tmp_path):
    local = tmp_path / "sub-01" / "sub-01_ses-1_ecephys.nwb"
    assert default_output_path(local) == local.with_name("sub-01_ses-1_desc-subspace_ecephys.nwb")
    assert default_output_path(str(local)) == default_output_path(local)
    url = "dandi://dandi/000123/sub-01/sub-01_ses-1_ecephys.nwb"
    assert default_output_path(url) == Path("sub-01_ses-1_desc-subspace_ecephys.nwb")
    assert default_output_path("https://h/s.nwb") == Path("s_desc-subspace.nwb")


def test_batch_outputs_are_dandi_names(tmp_path):
    src = str(tmp_path / "a" / "sub-01_ses-1_ecephys.nwb")
    key = source_key(src)
    out = session_output(src, "sub-01_ses-1_ecephys.nwb", tmp_path / "o")
    assert out == tmp_path / "o" / f"sub-01_ses-1_desc-subspace{key}_ecephys.nwb"
    assert DANDI_FILENAME.fullmatch(out.name)


def test_batch_resumes_a_folder_written_under_the_old_names(tmp_path):
    """A finished output named the pre-DANDI way is skipped, not run again; one without
    the run is reported, never overwritten (nothing is fitted here)."""
    from nwb_subspace.io.writer import write_results
    from nwb_subspace.testing import mock_result_set, write_mock_nwbfile

    src = write_mock_nwbfile(tmp_path / "session.nwb")
    outdir = tmp_path / "out"
    outdir.mkdir()
    legacy = outdir / f"session_{source_key(str(src.resolve()))}_subspace.nwb"  # the old name
    write_results(src, mock_result_set(), "old", output=legacy)
    table = run_batch([src], outdir, _config("old"), summarize=False)
    assert table["status"].tolist() == ["skipped"]
    assert table["output"].tolist() == [str(legacy)]
    before = legacy.read_bytes()
    table = run_batch([src], outdir, _config("other"), summarize=False)
    assert table["status"].tolist() == ["failed"]
    assert "exists but holds no run" in table["error"].iloc[0]
    assert legacy.read_bytes() == before
    assert not session_output(str(src.resolve()), src.name, outdir).exists()


def _config(run_name: str):
    from nwb_subspace.config import AnalysisConfig

    return AnalysisConfig(run_name=run_name)


# ---------------------------------------------------------------- DANDI addresses

#: address -> (dandiset id, version, path, kind); the same with the client and without it.
ADDRESSES = {
    "DANDI:000123": ("000123", None, None, "dandiset"),
    "DANDI:000123/draft": ("000123", "draft", None, "dandiset"),
    "DANDI:000123/0.230101.1234": ("000123", "0.230101.1234", None, "dandiset"),
    "DANDI-SANDBOX:000123": ("000123", None, None, "dandiset"),
    "dandi://dandi/000123/sub-1/sub-1_ecephys.nwb": (
        "000123",
        None,
        "sub-1/sub-1_ecephys.nwb",
        "asset",
    ),
    "dandi://DANDI/000123@draft/a.nwb": ("000123", "draft", "a.nwb", "asset"),
    "dandi://dandi/000123@0.1.2/sub-1/": ("000123", "0.1.2", "sub-1/", "folder"),
    "dandi://dandi/000123/sub%201/a.nwb": ("000123", None, "sub 1/a.nwb", "asset"),
    "dandi://dandi-sandbox/000123": ("000123", None, None, "dandiset"),
    "https://dandiarchive.org/dandiset/000123": ("000123", None, None, "dandiset"),
    "https://dandiarchive.org/dandiset/000123/draft": ("000123", "draft", None, "dandiset"),
    "https://dandiarchive.org/#/dandiset/000123/draft/files": ("000123", "draft", None, "dandiset"),
    "https://dandiarchive.org/dandiset/000123/0.230101.1234/files?location=sub-1": (
        "000123",
        "0.230101.1234",
        "sub-1/",
        "folder",
    ),
    "https://api.dandiarchive.org/api/dandisets/000123/versions/draft/": (
        "000123",
        "draft",
        None,
        "dandiset",
    ),
    "https://api.dandiarchive.org/api/dandisets/000123/versions/draft/assets/?path=sub-1/a": (
        "000123",
        "draft",
        "sub-1/a",
        "prefix",
    ),
    "https://api.dandiarchive.org/api/dandisets/000123/versions/draft/assets/?glob=sub-*": (
        "000123",
        "draft",
        "sub-*",
        "glob",
    ),
    "https://api.dandiarchive.org/api/dandisets/000123/versions/draft/assets/0a-1b/download/": (
        "000123",
        "draft",
        None,
        "asset_id",
    ),
    "https://api.dandiarchive.org/api/assets/0a-1b/": (None, None, None, "asset_id"),
    "https://sandbox.dandiarchive.org/dandiset/000123": ("000123", None, None, "dandiset"),
}

#: forms the client rejects; the old nwb-subspace forms name the one to write instead.
REFUSED = {
    "dandi://000123/sub-1/a.nwb": "write dandi://dandi/000123/sub-1/a.nwb",
    "DANDI:000123/sub-1/a.nwb": "write dandi://dandi/000123/sub-1/a.nwb",
    "DANDI:000123@draft/a.nwb": "write dandi://dandi/000123@draft/a.nwb",
    "dandi:000123": "write DANDI:000123",
    "DANDI:000123@draft": "write DANDI:000123/draft",
    "dandi://dandi/000123@v1/a.nwb": "not a DANDI address",
    "DANDI:12345": "not a DANDI address",
    "dandi://dandi/abc/x.nwb": "not a DANDI address",
}

#: forms only the client handles (redirects, other archive instances).
CLIENT_ONLY = [
    "https://gui.dandiarchive.org/#/dandiset/000123",
    "https://identifiers.org/DANDI:000123",
    "dandi://linc/000123/a.nwb",
    "LINC:000123",
]


def _as_tuple(address) -> tuple:
    return (address.dandiset_id, address.version, address.path, address.kind)


@pytest.mark.parametrize("text", ADDRESSES)
def test_addresses_without_the_client(text):
    address = parse_dandi_address(text, client=False)
    assert _as_tuple(address) == ADDRESSES[text]
    assert address.instance == ("dandi-sandbox" if "sandbox" in text.lower() else "dandi")
    assert is_dandi_address(text) or text.endswith("/download/")


@pytest.mark.parametrize("text", REFUSED)
def test_refused_addresses_say_what_to_write(text):
    with pytest.raises(ValueError, match=re.escape(REFUSED[text])):
        parse_dandi_address(text, client=False)


@pytest.mark.parametrize("text", CLIENT_ONLY)
def test_client_only_forms_name_the_install(text):
    assert is_dandi_address(text)
    with pytest.raises(DandiClientMissing, match=re.escape('pip install "nwb-subspace[dandi]"')):
        parse_dandi_address(text, client=False)


def test_parse_dandi_spec_keeps_its_tuple():
    if importlib.util.find_spec("dandi") is None:
        assert parse_dandi_spec("DANDI:000123/draft") == ("000123", "draft", None)
        assert parse_dandi_spec("dandi://dandi/000123/s/a.nwb") == ("000123", None, "s/a.nwb")
    assert not is_dandi_address("https://example.org/dandiarchive.org/a.nwb")
    assert not is_dandi_address("data/DANDI/x.nwb") and not is_dandi_address(Path("DANDI:1"))


@pytest.mark.skipif(importlib.util.find_spec("dandi") is None, reason="dandi not installed here")
def test_addresses_with_the_client_here():
    for text, expected in ADDRESSES.items():
        assert _as_tuple(parse_dandi_address(text, client=True)) == expected, text
    for text, why in REFUSED.items():
        with pytest.raises(ValueError, match=re.escape(why)):
            parse_dandi_address(text, client=True)


def dandi_executable() -> str | None:
    """The ``dandi`` command: ``NWB_SUBSPACE_DANDI`` or on PATH."""
    given = os.environ.get("NWB_SUBSPACE_DANDI")
    if given:
        return given if Path(given).is_file() else None
    return shutil.which("dandi")


_CLIENT_SCRIPT = """
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("dandi_address", sys.argv[1])
mod = importlib.util.module_from_spec(spec)
sys.modules["dandi_address"] = mod
spec.loader.exec_module(mod)
out = {}
for text in json.loads(sys.argv[2]):
    try:
        a = mod.parse_dandi_address(text, client=True)
        out[text] = [a.dandiset_id, a.version, a.path, a.kind]
    except ValueError as err:
        out[text] = ["error", str(err)]
print(json.dumps(out))
"""


def test_addresses_with_the_client_of_another_venv():
    """The client's own parser (in the venv of the ``dandi`` executable) agrees with the
    regular expressions on every accepted form and refuses the same forms."""
    exe = dandi_executable()
    if exe is None:
        pytest.skip("no dandi executable (set NWB_SUBSPACE_DANDI or put dandi on PATH)")
    python = Path(exe).with_name("python")
    if not python.is_file():
        pytest.skip(f"no python next to {exe}")
    module = Path(sys.modules[parse_dandi_address.__module__].__file__)
    texts = [*ADDRESSES, *REFUSED]
    run = subprocess.run(
        [str(python), "-c", _CLIENT_SCRIPT, str(module), json.dumps(texts)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    got = json.loads(run.stdout.strip().splitlines()[-1])
    for text, expected in ADDRESSES.items():
        assert tuple(got[text]) == expected, text
    for text, why in REFUSED.items():
        assert got[text][0] == "error" and why in got[text][1], (text, got[text])


def test_sources_take_the_client_forms_without_contacting_the_archive():
    from nwb_subspace.batch import expand_sources
    from nwb_subspace.io.remote import resolve_source

    asset = "dandi://dandi/000123/sub-1/sub-1_ses-2_ecephys.nwb"
    assert expand_sources([asset]) == [(asset, "sub-1_ses-2_ecephys.nwb")]
    with pytest.raises(ValueError, match="names a dandiset, not one asset"):
        resolve_source("https://dandiarchive.org/dandiset/000123/draft")
    with pytest.raises(ValueError, match="write dandi://dandi/000123/x.nwb"):
        expand_sources(["DANDI:000123/x.nwb"])
    if importlib.util.find_spec("dandi") is None:  # a dandiset URL is a dandiset, not a file
        for spec in ("https://dandiarchive.org/dandiset/000123/draft", "DANDI-SANDBOX:000123"):
            with pytest.raises(ImportError, match=re.escape('pip install "nwb-subspace[dandi]"')):
                expand_sources([spec])
        with pytest.raises(ImportError, match="pip install dandi"):
            resolve_source(asset)
