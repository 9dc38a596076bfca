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
from nwb_subspace.report.html import best_units, make_report, statistic_kind
from nwb_subspace.results import SubspaceRFs
from nwb_subspace.site.subspace import LOCALITY_STATISTIC
from nwb_subspace.site.tiling import TILING_STATISTIC
from nwb_subspace.testing import mock_result_set, write_mock_nwbfile

N_BINS = 20


def _bump_srfs(n_units: int, seed: int = 0, new: bool = False) -> SubspaceRFs:
    """Smooth 20x20 SRFs (one Gaussian bump each; model and measured rows per unit).

    ``new``: the issue-19 fields as the pipeline stores them: PC1-PC2 and PC1-PC3 maps of
    each source, the measured maps with an SEM map, noise-aware breadth and the shape test.
    """
    rng = np.random.default_rng(seed)
    g = np.arange(N_BINS) + 0.5
    pairs = [[0, 1], [0, 2]] if new else [[0, 1]]
    n = 2 * n_units * len(pairs)
    maps = []
    for _ in range(n):
        cx, cy = rng.uniform(4, 16, 2)
        maps.append(5 * np.exp(-((g[:, None] - cx) ** 2 + (g[None, :] - cy) ** 2) / 8))
    edges = np.tile(np.linspace(-2, 2, N_BINS + 1), (n, 1))
    # per unit: model maps on each pair, then measured maps on each pair
    source = np.repeat(np.tile(["model", "measured"], n_units), len(pairs))
    extra = {}
    if new:
        measured = source == "measured"
        sem = np.where(measured[:, None, None], 0.2 + 0.1 * rng.random((n, N_BINS, N_BINS)), np.nan)
        p = np.where(measured, rng.uniform(0.001, 0.2, n), np.nan)
        extra = dict(
            response_map_sem=sem,
            breadth_fraction=rng.uniform(0.05, 0.4, n),
            curve_asymmetry=rng.uniform(-1, 1, n),
            shape_p_value=p,
            grid="20x20 bins over percentiles 0.025-99.975, >= 2 samples, window 2 bin(s)",
            sem_method="repeats",
        )
    return SubspaceRFs(
        unit_rows=np.repeat(np.arange(n_units), 2 * len(pairs)),
        dimensions=np.tile(pairs, (2 * n_units, 1)),
        response_source=source,
        response_map=np.stack(maps),
        occupancy=np.full((n, N_BINS, N_BINS), 30),
        edges_x=edges,
        edges_y=edges,
        breadth=rng.integers(5, 40, n),
        shape_asymmetry=rng.uniform(-1, 1, (n, 2)),
        **extra,
    )


def _row(site: str, statistic: str, test: str, p: float = 0.5) -> dict:
    return {"site": site, "statistic": statistic, "value": 0.4, "null_mean": 0.2,
            "p_value": p, "effect_size": 0.3, "n": 5, "test": test, "verdict": "-"}  # fmt: skip


#: Site statistics of the issue-19 site step: the paper's tests, then the rest.
NEW_ROWS = [
    _row("all sites", LOCALITY_STATISTIC, "site-label permutations", 0.001),
    _row("shank0", "site_dimensionality", "ours: smallest K"),
    _row("shank0", "site_dimensionality_reference", "reference: top 15 PCs"),
    _row("shank0", "site_similarity_loo_mean", "leave-one-out"),
    _row("shank0", "variance_fraction_mean", "secondary null (any auditory data beats it): x"),
    _row("all sites", "breadth_narrow_vs_broad_site_means", "2 sites, 5 units"),
    _row("shank0", "breadth_narrow_vs_broad_within_site", "units as independent, within one"),
]


def _results(
    site: bool = True, site_srfs: bool = True, notes: list[str] | None = None, new: bool = True
):
    """A mock run; ``new=False``: as written before issue 19 (no reference measures)."""
    rs = mock_result_set(n_units=5)
    rng = np.random.default_rng(3)
    # A longer spectrogram, so that the site tiling map can be recomputed on a 20x20 grid.
    rs.spectrograms[0] = replace(
        rs.spectrograms[0], data=rng.random((6000, rs.spectrograms[0].frequencies.size))
    )
    rs.srfs = [_bump_srfs(5, new=new)]
    rs.unit_columns.append(
        replace(rs.unit_columns[1], name="layer", values=np.array(["13", "44", "56", "44", "13"]))
    )
    rs.config = {"seed": 0, "subspace": {"srf_bins": N_BINS}, "notes": notes or []}
    if new:
        rs.subspaces[0].dimensionality_reference = np.array([7, 8, 9, 10, 11])
        rs.subspaces[0].n_outlier_frames = np.array([41, 42, 43, 44, 45])
        rs.config["subspace"]["outlier_rule"] = "reference"
    if not site:
        rs.site_subspaces, rs.site_statistics = [], []
    else:
        rs.site_statistics[0].rows[0]["statistic"] = TILING_STATISTIC
        if site_srfs:  # the maps behind the tiling test, stored with the site
            rs.site_subspaces[0].srfs = _bump_srfs(5, seed=1)
        if new:
            rs.site_statistics[0].rows += [dict(r) for r in NEW_ROWS]
            rs.site_subspaces[0].dimensionality_reference = 4
            rs.site_subspaces[0].site_similarity_loo = np.full(5, 0.6)
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


def _table_row(text: str, first_cell: object) -> str:
    m = re.search(rf"<tr><td>{first_cell}</td>.*?</tr>", text)
    assert m, f"no table row starting with {first_cell}"
    return m.group(0)


def test_units_show_our_and_the_reference_dimensionality(report: Path):
    text = report.read_text()
    for col in ("dimensionality (ours)", "dimensionality (reference)", "outlier frames"):
        assert f"<th>{col}</th>" in text
    rs = read_results(report.parent.parent / "session.nwb", "full")
    for r in best_units(rs):  # the stored values sit in the unit's row
        row = _table_row(text, r)
        assert f"<td>{7 + r}</td>" in row and f"<td>{41 + r}</td>" in row
    assert "the default used downstream" in text
    assert "more than 95% of the variance of the top 15 PCs" in text
    assert "spread of the mean dSTRF" in text  # the stored outlier rule, in words


def test_srf_figures_show_both_pairs_and_the_measured_error(report: Path):
    text = report.read_text()
    srfs = read_results(report.parent.parent / "session.nwb", "full").srfs[0]
    r = best_units(read_results(report.parent.parent / "session.nwb", "full"))[0]
    measured = np.flatnonzero((srfs.unit_rows == r) & (srfs.response_source == "measured"))
    assert [tuple(srfs.dimensions[j]) for j in measured] == [(0, 1), (0, 2)]
    cap = re.search(rf"Unit row {r}: SRF from the measured response[^<]*", text).group(0)
    for j, pair in zip(measured, ("PC1-PC2", "PC1-PC3"), strict=True):
        b = srfs.breadth_fraction[j]
        assert f"{pair}: noise-aware breadth {b:.2f} of 400 occupied bins" in cap
        assert f"p = {srfs.shape_p_value[j]:.3g}" in cap
    assert "SEM of each bin (across repeats" in cap
    model_cap = re.search(rf"Unit row {r}: SRF from the model response[^<]*", text).group(0)
    assert "PC1-PC3" in model_cap and "no noise test" in model_cap and "SEM" not in model_cap
    # two pairs side by side; the measured figure has a second row of panels (the SEM)
    figures = report.parent / "figures"
    model = mpimg.imread(figures / f"srf_unit{r}_model.png")
    meas = mpimg.imread(figures / f"srf_unit{r}_measured.png")
    assert model.shape[1] > 1.5 * model.shape[0]
    assert meas.shape[0] > 1.7 * model.shape[0] and meas.shape[1] == model.shape[1]


def test_sites_list_the_papers_tests_first_and_label_the_rest(report: Path):
    text = report.read_text()
    paper, other = text.index("<h3>paper's tests</h3>"), text.index("other site statistics")
    assert paper < other
    for stat in (LOCALITY_STATISTIC, "site_dimensionality_reference", TILING_STATISTIC,
                 "site_similarity_loo_mean", "breadth_narrow_vs_broad_site_means"):  # fmt: skip
        assert paper < text.index(f"<td>{stat}</td>") < other, stat
    assert "<td>secondary null</td><td>shank0</td><td>variance_fraction_mean</td>" in text
    assert "<td>units as independent</td><td>shank0</td>" in text
    assert text.index("breadth_narrow_vs_broad_within_site") > other
    assert "reference&#x27;s pooled PCA about the grand mean: dimensionality 4" in text


def test_statistic_kind():
    assert statistic_kind({"statistic": "tiling_overlap_neighbours", "test": ""}) == "paper's test"
    assert statistic_kind({"statistic": "shape_index_across_13_44_mixed_model"}) == "paper's test"
    assert statistic_kind({"statistic": "x", "test": "secondary null (any...)"}) == "secondary null"
    assert statistic_kind({"statistic": "breadth_a_vs_b_within_site"}) == "units as independent"
    assert statistic_kind({"statistic": "pairwise_similarity_x", "test": "y"}) == "other"


def test_groups_plot_the_measured_noise_aware_breadth(report: Path):
    text = report.read_text()
    assert "noise-aware breadth of the measured SRFs" in text
    srfs = read_results(report.parent.parent / "session.nwb", "full").srfs[0]
    first = {}  # the first measured map of each unit (PC1-PC2), as the group tests read it
    for j, (r, src) in enumerate(zip(srfs.unit_rows, srfs.response_source, strict=True)):
        if src == "measured":
            first.setdefault(int(r), j)
    new = np.median([srfs.breadth_fraction[first[r]] for r in (0, 4)])  # layer 13
    old = np.median([srfs.breadth[first[r]] for r in (0, 4)])
    row = f"<tr><td>layer</td><td>13</td><td>2</td><td>{new:.3g}</td><td>{old:.3g}</td></tr>"
    assert row in text


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
    write_results(path, _results(site=False, new=False), "nosite")
    html = make_report(path)
    assert html == tmp_path / "nosite_report_nosite" / "report.html"
    text = html.read_text()
    assert "No site analysis stored" in text
    assert "tiling" not in "".join(_images(html))
    assert "breadth_groups" in "".join(_images(html))
    # stored as before issue 19: no reference measures, one pair, no noise-aware breadth
    assert "<th>dimensionality (reference)</th>" in text and "not stored in this run" in text
    rows = re.findall(r"<tr><td>\d</td>.*?</tr>", text)
    assert rows and all(row.count("<td>-</td>") == 2 for row in rows)
    assert "PC1-PC3:" not in text and "noise-aware" not in text
    assert "PC1-PC2: breadth" in text  # the old count in the SRF captions
    assert "breadth (high-activity bins of the model SRF on PCs 1-2)" in text


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
    write_results(path, _results(site_srfs=False, new=False), "b")
    with pytest.raises(ValueError, match="holds 2 runs"):
        make_report(path)
    html = make_report(path, run="b", outdir=tmp_path / "rb")
    # Without stored site-plane SRFs the map is redrawn from the stored CNN's prediction.
    assert "tiling_shank0.png" in "".join(_images(html))
    assert "map recomputed from the stored spectrogram and CNN prediction" in html.read_text()
    # a site analysis stored before issue 19: its tiling row still heads the table, and the
    # missing locality test is explained
    text = html.read_text()
    assert text.index(f"<td>{TILING_STATISTIC}</td>") < text.index("No same_vs_different")
    assert "other site statistics" not in text


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
