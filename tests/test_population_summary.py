"""Issue 20: ``summarize`` over stored runs - tables, skipped files, exit codes, and the
subspace-model fraction per site equal to what each session's own run reported."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

from nwb_subspace.cli import main
from nwb_subspace.config import AnalysisConfig, SiteSettings, SubspaceSettings
from nwb_subspace.models.training import TrainingConfig
from nwb_subspace.pipeline import run_session
from nwb_subspace.population import SITE_COLUMNS, UNIT_COLUMNS, summarize_runs
from nwb_subspace.population.summary import differing_settings
from nwb_subspace.simulate import simulate_session

pytestmark = pytest.mark.slow

QUICK = AnalysisConfig(
    training=TrainingConfig(
        n_initializations=1, max_epochs_stage1=10, max_epochs_stage2=5, patience=5
    ),
    subspace=SubspaceSettings(n_components=6, min_noise_corrected_r=0.0),
    sites=SiteSettings(n_null=20, n_shifts=20, n_permutations=100),
    run_name="quick",
)


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """Two tiny sessions analysed with the quick recipe, and the raw source of a third."""
    folder = tmp_path_factory.mktemp("population")
    outputs = []
    for seed in (0, 1):
        src, _ = simulate_session(folder / f"src{seed}.nwb", preset="tiny", seed=seed)
        out = folder / f"ses{seed}.nwb"
        run_session(src, QUICK, output=out)
        outputs.append(out)
    return folder, outputs


def test_tables_written_and_fraction_matches_each_sessions_run(two_runs, tmp_path):
    folder, outputs = two_runs
    summary = summarize_runs(outputs, tmp_path / "pop", "quick", n_permutations=50)
    assert summary.skipped == []
    assert list(summary.units.columns) == list(UNIT_COLUMNS)
    assert list(summary.sites.columns) == list(SITE_COLUMNS)
    assert sorted(summary.sessions["session"]) == ["ses0", "ses1"]
    for name in ("units", "sites", "sessions", "statistics"):
        csv = pd.read_csv(tmp_path / "pop" / f"population_{name}.csv")
        pq = pd.read_parquet(tmp_path / "pop" / f"population_{name}.parquet")
        assert len(csv) == len(pq) == len(getattr(summary, name))
    assert (tmp_path / "pop" / "population_report.html").exists()
    for out in outputs:
        own = pd.read_csv(out.with_name(f"{out.stem}_quick_sites.csv"))
        mine = summary.sites[summary.sites["session"] == out.stem].set_index("site")
        for row in own.itertuples():
            stored, pooled = row.subspace_fraction, mine.loc[row.site, "subspace_fraction"]
            assert np.isfinite(stored)
            assert stored == pooled  # exactly: the same stored scores, the same rule
        n_units = len(pd.read_csv(out.with_name(f"{out.stem}_quick_units.csv")))
        assert (summary.units["session"] == out.stem).sum() == n_units
    ids = summary.units["site_id"]
    assert (ids == summary.units["session"] + "/" + summary.units["site"]).all()


def test_unusable_files_are_skipped_with_reasons_and_the_rest_summarised(two_runs, tmp_path):
    folder, outputs = two_runs
    junk = tmp_path / "notes.nwb"
    junk.write_text("not an NWB file")
    raw = folder / "src0.nwb"  # a session without any stored run
    missing = tmp_path / "gone.nwb"
    out = tmp_path / "pop"
    code = main(
        ["summarize", str(outputs[0]), str(junk), str(raw), str(missing),
         "--outdir", str(out), "--run", "quick", "--permutations", "20", "--no-report"]
    )  # fmt: skip
    assert code == 1  # some were skipped
    skipped = pd.read_csv(out / "skipped.csv")
    assert len(skipped) == 3
    names = skipped["file"].map(lambda p: p.rsplit("/", 1)[-1])
    reasons = dict(zip(names, skipped["reason"], strict=True))
    assert "no nwb-subspace run" in reasons["src0.nwb"]
    assert "not found" in reasons["gone.nwb"]
    assert "cannot be read" in reasons["notes.nwb"]
    sessions = pd.read_csv(out / "population_sessions.csv")
    assert sessions["session"].tolist() == ["ses0"]
    # a wrong run name everywhere: nothing to summarise -> exit 2, skipped.csv still written
    code = main(["summarize", str(outputs[0]), "--outdir", str(tmp_path / "none"),
                 "--run", "nosuchrun", "--no-report"])  # fmt: skip
    assert code == 2
    skipped = pd.read_csv(tmp_path / "none" / "skipped.csv")
    assert len(skipped) == 1 and "nosuchrun" in skipped["reason"][0]  # says which run is missing


def test_duplicate_stems_get_distinct_sessions(two_runs, tmp_path):
    _, outputs = two_runs
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    copies = [shutil.copy(outputs[0], tmp_path / d / "same.nwb") for d in ("a", "b")]
    summary = summarize_runs(copies, tmp_path / "pop", "quick", n_permutations=20, report=False)
    assert summary.sessions["session"].nunique() == 2
    assert summary.sites["site_id"].nunique() == len(summary.sites)


def test_bad_arguments_fail_early(tmp_path):
    with pytest.raises(ValueError, match="n_permutations"):
        summarize_runs([tmp_path], tmp_path / "o", n_permutations=0)
    with pytest.raises(ValueError, match="no .nwb"):
        summarize_runs([tmp_path], tmp_path / "o")


def test_differing_settings_named_per_session():
    got = differing_settings(
        {"s1": {"n_lags": 20, "bin_s": 0.01}, "s2": {"n_lags": 15, "bin_s": 0.01}}
    )
    assert got == {"n_lags": {"s1": 20, "s2": 15}}
