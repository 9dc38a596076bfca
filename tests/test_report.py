"""The HTML report: built from stored results only, every figure referenced and non-blank,
site sections present only when stored, clear errors for files without (that) run."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest
from conftest import dataset_checksums

from nwb_subspace.cli.main import main
from nwb_subspace.io.writer import read_results, write_results
from nwb_subspace.report.html import best_units, make_report
from nwb_subspace.results import SubspaceRFs
from nwb_subspace.site.tiling import TILING_STATISTIC
from nwb_subspace.testing import mock_result_set, write_mock_nwbfile

N_BINS = 20


def _bump_srfs(n_units: int, seed: int = 0) -> SubspaceRFs:
    """Smooth 20x20 SRFs (one Gaussian bump each; model and measured rows per unit)."""
    rng = np.random.default_rng(seed)
    g = np.arange(N_BINS) + 0.5
    maps = []
    for _ in range(2 * n_units):
        cx, cy = rng.uniform(4, 16, 2)
        maps.append(5 * np.exp(-((g[:, None] - cx) ** 2 + (g[None, :] - cy) ** 2) / 8))
    edges = np.tile(np.linspace(-2, 2, N_BINS + 1), (2 * n_units, 1))
    rows = np.repeat(np.arange(n_units), 2)
    return SubspaceRFs(
        unit_rows=rows,
        dimensions=np.tile([[0, 1]], (2 * n_units, 1)),
        response_source=np.array(["model", "measured"] * n_units),
        response_map=np.stack(maps),
        occupancy=np.full((2 * n_units, N_BINS, N_BINS), 30),
        edges_x=edges,
        edges_y=edges,
        breadth=rng.integers(5, 40, 2 * n_units),
        shape_asymmetry=rng.uniform(-1, 1, (2 * n_units, 2)),
    )


def _results(site: bool = True, site_srfs: bool = True, notes: list[str] | None = None):
    rs = mock_result_set(n_units=5)
    rng = np.random.default_rng(3)
    # A longer spectrogram, so that the site tiling map can be recomputed on a 20x20 grid.
    rs.spectrograms[0] = replace(
        rs.spectrograms[0], data=rng.random((6000, rs.spectrograms[0].frequencies.size))
    )
    rs.srfs = [_bump_srfs(5)]
    rs.unit_columns.append(
        replace(rs.unit_columns[1], name="layer", values=np.array(["13", "44", "56", "44", "13"]))
    )
    rs.config = {"seed": 0, "subspace": {"srf_bins": N_BINS}, "notes": notes or []}
    if not site:
        rs.site_subspaces, rs.site_statistics = [], []
    else:
        rs.site_statistics[0].rows[0]["statistic"] = TILING_STATISTIC
        if site_srfs:  # the maps behind the tiling test, stored with the site
            rs.site_subspaces[0].srfs = _bump_srfs(5, seed=1)
    return rs


@pytest.fixture(scope="module")
def stored(tmp_path_factory) -> Path:
    """A mock session holding one run with every kind of result, site analysis included."""
    path = write_mock_nwbfile(tmp_path_factory.mktemp("report") / "session.nwb")
    write_results(path, _results(notes=["unit <3> & co: <script>alert(1)</script>"]), "full")
    return path


@pytest.fixture(scope="module")
def report(stored: Path) -> Path:
    before = dataset_checksums(stored)
    html = make_report(stored, outdir=stored.parent / "out")
    assert dataset_checksums(stored) == before, "building a report must not touch the file"
    return html


def _images(html: Path) -> list[str]:
    return re.findall(r'<img src="([^"]+)"', html.read_text())


def test_html_references_every_png_and_each_opens(report: Path):
    assert report.name == "report.html" and report.is_file()
    refs = _images(report)
    pngs = sorted(p.name for p in (report.parent / "figures").glob("*.png"))
    assert sorted(Path(r).name for r in refs) == pngs
    assert all(not Path(r).is_absolute() and r.startswith("figures/") for r in refs)
    for ref in refs:
        img = mpimg.imread(report.parent / ref)
        assert img.shape[0] > 50 and img.shape[1] > 50, ref
        flat = img[..., :3].reshape(-1, 3)
        assert np.unique(flat, axis=0).shape[0] > 10, f"{ref} is (nearly) a single colour"


def test_report_has_every_section_and_expected_figures(report: Path):
    text = report.read_text()
    names = {Path(r).stem for r in _images(report)}
    expected = {
        "spectrogram_spectrogram",
        "model_scores",
        "loss_curves",
        "site_subspace_shank0",
        "tiling_shank0",
        "breadth_groups",
    }
    assert expected <= names, expected - names
    best = best_units(read_results(report.parent.parent / "session.nwb", "full"))
    assert len(best) == 3
    for r in best:
        assert {f"dstrf_pcs_unit{r}", f"srf_unit{r}_model", f"srf_unit{r}_measured"} <= names
    for title in (
        "Data summary",
        "Model performance",
        "Best units",
        "Site analysis",
        "Cell types and layers",
        "Notes and configuration",
    ):
        assert f">{title}" in text
    assert "overlap below chance" in text  # the stored tiling verdict
    assert "from the SRFs stored with the site" in text
    assert "units in the file</td><td>5<" in text
    assert "&quot;srf_bins&quot;: 20" in text  # the effective config


def test_text_is_escaped(report: Path):
    text = report.read_text()
    assert "<script>" not in text
    assert "unit &lt;3&gt; &amp; co: &lt;script&gt;" in text


def test_best_units_rank_by_cnn_score():
    rs = _results()
    cnn = rs.models[0]
    cnn.scores.noise_corrected_correlation[:] = [0.1, np.nan, 0.9, 0.5, 0.3]
    assert best_units(rs, 3) == [2, 3, 4]
    assert best_units(rs, 10) == [2, 3, 4, 0, 1]
    rs.subspaces = []
    assert best_units(rs) == []


def test_without_site_analysis_the_report_says_so(tmp_path):
    path = write_mock_nwbfile(tmp_path / "nosite.nwb")
    write_results(path, _results(site=False), "nosite")
    html = make_report(path)
    assert html == tmp_path / "nosite_report_nosite" / "report.html"
    text = html.read_text()
    assert "No site analysis stored" in text
    assert "tiling" not in "".join(_images(html))
    assert "breadth_groups" in "".join(_images(html))


def test_bad_input_gives_one_line_errors(tmp_path, stored):
    empty = write_mock_nwbfile(tmp_path / "empty.nwb")
    with pytest.raises(ValueError, match="holds no nwb-subspace results") as info:
        make_report(empty)
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match=r"no run named 'nope'; runs: \['full'\]"):
        make_report(stored, run="nope", outdir=tmp_path / "x")
    with pytest.raises(FileNotFoundError, match="no such file"):
        make_report(tmp_path / "missing.nwb")
    text = tmp_path / "text.nwb"
    text.write_text("not hdf5")
    with pytest.raises(ValueError, match="not an HDF5/NWB file"):
        make_report(text)


def test_several_runs_need_a_name(tmp_path):
    path = write_mock_nwbfile(tmp_path / "two.nwb")
    write_results(path, _results(site=False), "a")
    write_results(path, _results(site_srfs=False), "b")
    with pytest.raises(ValueError, match="holds 2 runs"):
        make_report(path)
    html = make_report(path, run="b", outdir=tmp_path / "rb")
    # Without stored site-plane SRFs the map is redrawn from the stored CNN's prediction.
    assert "tiling_shank0.png" in "".join(_images(html))
    assert "map recomputed from the stored spectrogram and CNN prediction" in html.read_text()


def test_cli_report(stored, tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["report", "--help"])
    assert info.value.code == 0
    assert "--outdir" in capsys.readouterr().out
    out = tmp_path / "cli_report"
    assert main(["report", str(stored), "--run", "full", "--outdir", str(out)]) == 0
    printed = capsys.readouterr().out
    assert str(out / "report.html") in printed and (out / "report.html").is_file()
    assert main(["report", str(stored), "--run", "nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("nwb-subspace: error:") and len(err.splitlines()) == 1
    assert "no run named 'nope'" in err
    empty = write_mock_nwbfile(tmp_path / "empty.nwb")
    assert main(["report", str(empty)]) == 2
    assert "holds no nwb-subspace results" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "missing.nwb")]) == 2
    assert "no such file" in capsys.readouterr().err
