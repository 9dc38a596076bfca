"""The population report: every figure referenced, written and a real image; n units / n
sites stated; skipped files, differing settings and notes listed (escaped); a population
without cell types or depths still writes, saying what is not available."""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest

from nwb_subspace.population.columns import SESSION_COLUMNS, SITE_COLUMNS, UNIT_COLUMNS
from nwb_subspace.population.locality import LocalityResult, population_locality
from nwb_subspace.report.plots_population import (
    count_text,
    find_statistic,
    pair_summaries,
    plot_depth_profile,
)
from nwb_subspace.report.population import statistic_topic, write_population_report
from nwb_subspace.results import STATISTIC_FIELDS
from nwb_subspace.site.groups import stat_row, verdict_text

N_SESSIONS, N_SITES, N_UNITS = 3, 2, 6
FIGURES = (
    "model_comparison", "subspace_fraction", "dimensionality", "locality", "tiling",
    "cell_type_layer", "depth_profile",
)  # fmt: skip


def _population(seed: int = 0, groups: bool = True):
    """3 sessions x 2 sites x 6 units with the contract's columns (``groups=False``: no cell
    type, layer or depth known)."""
    rng = np.random.default_rng(seed)
    units = []
    for s in range(N_SESSIONS):
        for site in range(N_SITES):
            for u in range(N_UNITS):
                r_cnn = rng.uniform(0.4, 0.9)
                ev_cnn = r_cnn**2
                ev_sub = ev_cnn * rng.uniform(0.85, 1.02)
                units.append(
                    dict(
                        session=f"sess{s}",
                        site=f"shank{site}",
                        site_id=f"sess{s}/shank{site}",
                        unit_row=site * N_UNITS + u,
                        unit_id=f"u{u}",
                        cell_type=("narrow" if u % 2 == 0 else "broad") if groups else "unknown",
                        layer=["13", "44", "56"][u % 3] if groups else "unknown",
                        depth_um=100.0 * u,
                        depth_below_l34_um=(100.0 * u - 250) if groups else np.nan,
                        status="analysed" if u < 5 else "scored",
                        r_ln=r_cnn - rng.uniform(0.05, 0.2),
                        r_cnn=r_cnn,
                        r_subspace=r_cnn - rng.uniform(0, 0.05),
                        ev_ln=ev_cnn * 0.7,
                        ev_cnn=ev_cnn,
                        ev_subspace=ev_sub,
                        ev_fraction=ev_sub / ev_cnn,
                        dimensionality=rng.integers(2, 7) if u < 5 else np.nan,
                        dimensionality_reference=rng.integers(5, 12) if u < 5 else np.nan,
                        n_frames=2000,
                        n_outlier_frames=10,
                        variance_fraction=rng.uniform(0.3, 0.9),
                        variance_fraction_loo=rng.uniform(0.3, 0.9),
                        site_pc_similarity=rng.uniform(0.3, 0.9),
                        site_similarity_loo=rng.uniform(0.3, 0.9) if u < 5 else np.nan,
                        breadth=rng.uniform(0.05, 0.5),
                        breadth_bins=rng.integers(5, 40),
                        breadth_measure="measured",
                        shape_index=rng.uniform(-1, 1),
                        shape_p=rng.uniform(0, 0.2),
                        shape_class=rng.choice(["bowl", "hill", "monotonic", ""]),
                    )  # fmt: skip
                )
    units = pd.DataFrame(units, columns=list(UNIT_COLUMNS))
    sites = _sites(units, rng)
    sessions = pd.DataFrame(
        [
            dict(session=f"sess{s}", file=f"/data/sess{s}.nwb", run="demo", software_version="0.9",
                 created="2026-11-30T12:00:00", n_units=N_SITES * N_UNITS, n_sites=N_SITES,
                 n_analysed=N_SITES * 5, r_cnn_median=0.6, settings_key="abc123")
            for s in range(N_SESSIONS)
        ],
        columns=list(SESSION_COLUMNS),
    )  # fmt: skip
    return units, sites, sessions


def _sites(units: pd.DataFrame, rng) -> pd.DataFrame:
    g = units.groupby("site_id", sort=True)
    sites = pd.DataFrame({"site_id": list(g.groups)})
    sites["session"] = [s.split("/")[0] for s in sites.site_id]
    sites["site"] = [s.split("/")[1] for s in sites.site_id]
    sites["n_units"] = g.size().to_numpy()
    sites["n_analysed"] = g["status"].apply(lambda s: (s == "analysed").sum()).to_numpy()
    for m in ("r_ln", "r_cnn", "r_subspace", "ev_ln", "ev_cnn", "ev_subspace"):
        sites[f"{m}_mean"] = g[m].mean().to_numpy()
    sites["subspace_fraction"] = g["ev_fraction"].median().to_numpy()
    n = len(sites)
    sites["tiling_overlap_neighbours_null"] = rng.uniform(0.2, 0.3, n)
    excess = np.resize([0.2, 0.01, 0.15, -0.02, 0.18, 0.0], n)
    sites["tiling_overlap_neighbours"] = sites["tiling_overlap_neighbours_null"] + excess
    sites["tiling_overlap_neighbours_p"] = np.resize([0.01, 0.4, 0.02, 0.7, 0.001, 0.5], n)
    return sites.reindex(columns=list(SITE_COLUMNS))


def _statistics() -> pd.DataFrame:
    rows = [
        stat_row("population", "r_cnn_vs_ln_site_means", 0.7, 0.55, 0.031, 0.9, 6,
                 "Wilcoxon signed-rank across sites", verdict_text(0.031, "CNN above LN")),
        stat_row("population", "r_subspace_vs_cnn_site_means", 0.68, 0.7, 0.4, -0.2, 6,
                 "Wilcoxon signed-rank across sites", verdict_text(0.4, "subspace below CNN")),
        stat_row("population", "tiling_overlap_neighbours_across_sites", 0.1, 0.0, 0.03, 0.8, 6,
                 "Wilcoxon across sites", verdict_text(0.03, "neighbours overlap more")),
        stat_row("population", "breadth_narrow_vs_broad_site_means", 0.3, 0.25, 0.2, 0.4, 6,
                 "Wilcoxon across sites", verdict_text(0.2, "narrow broader")),
    ]  # fmt: skip
    return pd.DataFrame(rows, columns=list(STATISTIC_FIELDS))


def _locality(units: pd.DataFrame, seed: int = 0) -> LocalityResult:
    """The real locality result of the analysed units: each site's units share 3 of their
    directions (plus noise) in a 40-dimensional dSTRF space."""
    rng = np.random.default_rng(seed)
    analysed = units[units.status == "analysed"]
    shared = {s: rng.normal(size=(40, 3)) for s in analysed.site_id.unique()}
    bases = [
        np.linalg.qr(shared[s] @ rng.normal(size=(3, 3)) + 0.3 * rng.normal(size=(40, 3)))[0]
        for s in analysed.site_id
    ]
    return population_locality(bases, analysed.session, analysed.site, n_permutations=200)


SKIPPED = [("/data/broken.nwb", "not an HDF5 file"), ("/data/x<y>.nwb", "holds no run 'demo'")]


def _images(html: Path) -> list[str]:
    return re.findall(r'<img src="([^"]+)"', html.read_text())


def _check_images(html: Path) -> None:
    refs = _images(html)
    assert sorted(Path(r).stem for r in refs) == sorted(FIGURES)
    assert sorted(p.name for p in (html.parent / "figures").glob("*.png")) == sorted(
        Path(r).name for r in refs
    )
    for ref in refs:
        assert not Path(ref).is_absolute() and ref.startswith("figures/")
        img = mpimg.imread(html.parent / ref)
        assert img.shape[0] > 250 and img.shape[1] > 400, (ref, img.shape)
        assert np.unique(img[..., :3].reshape(-1, 3), axis=0).shape[0] > 10, f"{ref} is blank"


@pytest.fixture(scope="module")
def full(tmp_path_factory) -> Path:
    units, sites, sessions = _population()
    locality = _locality(units)
    locality.notes.append("a locality note")
    # the summary passes the locality rows in the statistics too: they are listed once
    stats = pd.concat([_statistics(), pd.DataFrame(locality.rows)], ignore_index=True)
    return write_population_report(
        tmp_path_factory.mktemp("pop") / "report", units, sites, sessions, stats,
        locality=locality, skipped=SKIPPED, notes=["note <b>&</b>"],
        comparability={"spectrogram.n_bands": {"sess0": 18, "sess1": 18, "sess2": 32}},
    )  # fmt: skip


def test_every_figure_is_written_and_is_an_image(full: Path):
    assert full.name == "population_report.html"
    _check_images(full)


def test_counts_verdicts_and_tables_are_in_the_page(full: Path):
    text = full.read_text()
    n_units, n_sites = N_SESSIONS * N_SITES * N_UNITS, N_SESSIONS * N_SITES
    assert f"n = {n_units} units / {n_sites} sites" in text
    # each caption states its counts: the analysed units (5 per site) for the subspace figures
    assert f"n = {N_SESSIONS * N_SITES * 5} units / {n_sites} sites" in text
    # headline verdicts come before the figures, in the order
    order = [text.index(f"<h3>{t}</h3>") for t in ("model comparison", "locality", "tiling",
                                                    "narrow vs broad", "layers", "depth")]  # fmt: skip
    assert order == sorted(order) and order[-1] < text.index("<img")
    assert "CNN above LN (p=0.031)" in text
    # locality: the primary row (within-session permutations) first and once, the confounded
    # reference pooling row after it, labelled secondary
    head = text[text.index("<h3>locality</h3>") : text.index("<h3>tiling</h3>")]
    assert head.count("same_vs_different_site_similarity,") == 1
    assert head.index("<b>units more similar within a site than to units of") < head.index(
        "secondary: units more similar within a site than across sites (pooled"
    )
    # skipped files: both, escaped
    skipped = text[text.index('<table class="skipped">') :]
    assert "/data/broken.nwb" in skipped and "not an HDF5 file" in skipped
    assert "/data/x&lt;y&gt;.nwb" in skipped and "<y>" not in text
    # differing settings with a warning, notes escaped (locality notes appended)
    assert "Warning: 1 setting(s) differ" in text and "32: sess2" in text
    assert "note &lt;b&gt;&amp;&lt;/b&gt;" in text and "<b>&</b>" not in text
    assert "a locality note" in text


def test_population_without_cell_types_or_depth_still_writes(tmp_path: Path):
    units, sites, sessions = _population(seed=1, groups=False)
    sites[["tiling_overlap_neighbours", "tiling_overlap_neighbours_null"]] = np.nan
    units.loc[0, ["r_cnn", "r_ln", "breadth"]] = np.nan  # NaN never crashes
    html = write_population_report(tmp_path, units, sites, sessions, None)
    _check_images(html)
    text = html.read_text()
    assert "not tested (the notes below say why)" in text and "No file was skipped." in text
    assert "No population statistics were computed" in text
    for name in ("cell type layer", "depth profile", "locality", "tiling"):
        assert f"{name}: not available: " in text, name
    assert "model comparison: not available" not in text
    # the panels say so (checked on the figures' texts, drawn the same way)
    fig = plot_depth_profile(units)
    said = " ".join(t.get_text() for ax in fig.axes for t in ax.texts).replace("\n", " ")
    assert "No depth below the L3/4 boundary" in said


def test_helpers_pin_their_definitions():
    units, _, _ = _population()
    assert count_text(units) == "n = 36 units / 6 sites"
    assert count_text(units, units.site_id.str.startswith("sess0").to_numpy()) == (
        "n = 12 units / 2 sites"
    )
    stats = _statistics()
    assert find_statistic(stats, ("ln", "cnn"))["p_value"] == pytest.approx(0.031)
    assert find_statistic(stats, ("depth",)) is None
    assert [statistic_topic(s) for s in stats.statistic] == [
        "model comparison", "model comparison", "tiling", "narrow vs broad",
    ]  # fmt: skip
    assert statistic_topic("same_vs_different_site_similarity_reference_pooling") == "locality"
    assert statistic_topic("breadth_across_13_44_56_site_means") == "layers"
    assert statistic_topic("site_similarity_loo_vs_depth_spearman") == "depth"
    s = pair_summaries(_locality(units))
    assert list(s) == ["same site", "different site, same session", "different session"]
    # 30 analysed units: 6 sites x C(5, 2) same-site pairs, 3 sessions x 5 x 5 pairs across
    # the two sites of a session, the remaining C(30, 2) - 135 pairs across sessions
    assert [s[t]["n"] for t in s] == [60, 75, 300]
    assert s["same site"]["mean"] == pytest.approx(s["same site"]["sample"].mean())
    assert s["same site"]["mean"] > s["different session"]["mean"]  # sites share directions
    assert pair_summaries(None) == {}
    with pytest.raises(ValueError, match="statistics lacks the columns"):
        write_population_report("unused", units, None, None, pd.DataFrame({"site": ["a"]}))
    with pytest.raises(ValueError, match="skipped\\[0\\] must be a \\(file, reason\\) pair"):
        write_population_report("unused", units, None, None, None, skipped=["x.nwb"])


def test_real_statistics_rows_each_land_under_their_headline():
    """The rows population.statistics and population.locality make, on the synthetic
    population, are each sorted under their own headline topic (none is 'other')."""
    from nwb_subspace.population import statistics as st

    units, sites, _ = _population()
    rows = []
    for result in (
        st.model_comparison(sites), st.dimensionality_distribution(units),
        st.tiling_across_sites(sites), st.cell_types_and_layers(units), st.depth_profile(units),
    ):  # fmt: skip
        rows += result[0] or []
    rows += _locality(units).rows
    topics = {r["statistic"]: statistic_topic(r["statistic"]) for r in rows}
    expected = {
        "r_cnn_vs_ln_site_means": "model comparison",
        "subspace_fraction_across_sites": "model comparison",
        "dimensionality_ours_vs_reference_site_means": "dimensionality",
        "tiling_overlap_neighbours_excess_across_sites": "tiling",
        "breadth_narrow_vs_broad_site_means": "narrow vs broad",
        "breadth_across_13_44_56_site_means": "layers",
        "site_similarity_loo_depth_spearman_across_sites": "depth",
        "same_vs_different_site_similarity": "locality",
        "same_vs_different_site_similarity_reference_pooling": "locality",
    }
    assert {k: topics.get(k) for k in expected} == expected
    assert "other" not in topics.values(), topics
