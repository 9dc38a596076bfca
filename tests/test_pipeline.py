"""One session end to end on the tiny simulated preset (quick recipe): everything written,
readable back, and the source's data untouched."""

from __future__ import annotations

import subprocess

import numpy as np
import pandas as pd
import pytest
from conftest import dataset_checksums
from pynwb import NWBHDF5IO

from nwb_subspace.config import AnalysisConfig, SiteSettings, SubspaceSettings
from nwb_subspace.io.writer import read_results
from nwb_subspace.models.training import TrainingConfig
from nwb_subspace.pipeline import run_session
from nwb_subspace.simulate import simulate_session
from nwb_subspace.site.tiling import tiling_from_stored

pytestmark = pytest.mark.slow

QUICK = AnalysisConfig(
    training=TrainingConfig(
        n_initializations=2, max_epochs_stage1=15, max_epochs_stage2=8, patience=5
    ),
    subspace=SubspaceSettings(n_components=6, min_noise_corrected_r=0.0),
    sites=SiteSettings(n_null=50, n_shifts=100),
    run_name="quick",
)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pipeline")
    path, _ = simulate_session(folder / "tiny.nwb", preset="tiny", seed=0)
    before = dataset_checksums(path)
    result = run_session(path, QUICK)
    return path, before, result


def test_results_are_appended_and_source_kept(tiny_run):
    path, before, result = tiny_run
    assert result.output == path
    after = dataset_checksums(path)
    assert [k for k in before if after.get(k) != before[k]] == []
    back = read_results(path, "quick")
    # two initialisations: the CNN's second fit is stored too (its dSTRFs are averaged in)
    assert {"ln", "cnn", "cnn_fit2", "subspace"} == {m.name for m in back.models}
    assert back.spectrograms[0].data.shape == result.session.spectrogram.data.shape
    assert back.config["seed"] == 0 and back.config["split"]["validation_sounds"]
    with NWBHDF5IO(str(path), "r") as io:
        units = io.read().units
        for col in ("trough_to_peak_ms", "cell_type", "depth_um", "layer"):
            assert col in units.colnames


def test_each_step_is_timed(tiny_run):
    """The run records the wall-clock seconds of every step it ran (benchmarks print their
    shares), in run order, and none is left out."""
    from nwb_subspace.pipeline import TIMED_STEPS

    seconds = tiny_run[2].seconds
    assert list(seconds) == list(TIMED_STEPS)  # every step ran on the tiny session
    assert all(value > 0 for value in seconds.values())


def test_subspaces_and_srfs_are_stored(tiny_run):
    path, _, result = tiny_run
    back = read_results(path, "quick")
    assert result.tuning is not None and back.subspaces
    t = back.subspaces[0]
    assert t.components.shape[1:] == (6, 32, result.estimators["cnn"].model_.memory)
    assert np.all(t.dimensionality >= 1)
    assert back.srfs and set(back.srfs[0].response_source) == {"model", "measured"}
    # the SNR-matched breadth: on each unit's measured map of dimensions 0-1 only
    srfs = back.srfs[0]
    first = (srfs.response_source == "measured") & np.all(srfs.dimensions == [0, 1], axis=1)
    assert np.isfinite(srfs.peak_z[first]).all() and np.isnan(srfs.peak_z[~first & (
        srfs.response_source == "model")]).all()  # fmt: skip
    keep = srfs.keep_probability[first]
    assert np.all((keep > 0) & (keep <= 1)) and np.isnan(srfs.keep_probability[~first]).all()
    matched = srfs.breadth_snr_matched[first]
    assert np.isfinite(matched).all() and np.all((matched >= 0) & (matched <= 1))
    # units not thinned keep their own noise-aware breadth
    np.testing.assert_array_equal(matched[keep == 1], srfs.breadth_fraction[first][keep == 1])
    assert "10 thinning draws, seed 0" in srfs.snr_matching
    units_csv = result.sites.unit_table
    assert np.isfinite(units_csv["breadth_snr_matched"].astype(float)).any()
    sub = next(m for m in back.models if m.kind == "subspace")
    # the subspace model's validation scores are stored like the CNN's, for its units
    np.testing.assert_array_equal(sub.unit_rows, t.unit_rows)
    assert sub.scores is not None and sub.scores.explained_variance.shape == sub.unit_rows.shape
    cnn = next(m for m in back.models if m.kind == "cnn")
    cnn_ev = dict(zip(cnn.unit_rows.tolist(), cnn.scores.explained_variance, strict=True))
    ev_cnn = np.array([cnn_ev[r] for r in sub.unit_rows.tolist()])
    ratio = np.where(
        ev_cnn > 0, sub.scores.explained_variance / np.where(ev_cnn > 0, ev_cnn, 1), np.nan
    )
    np.testing.assert_allclose(ratio, result.ev_fraction, rtol=1e-6)


def test_site_step_is_stored_and_summarised(tiny_run):
    path, _, result = tiny_run
    sites = result.sites
    assert sites is not None and sites.labels.tolist() == ["shank0"] * result.session.n_units
    assert "electrode" in sites.label_source
    back = read_results(path, "quick")
    assert [s.site for s in back.site_subspaces] == [s.site for s in sites.site_subspaces]
    assert result.results.site_subspaces == sites.site_subspaces
    for live, stored in zip(sites.site_subspaces, back.site_subspaces, strict=True):
        np.testing.assert_allclose(stored.components, live.components, rtol=1e-6)
        np.testing.assert_array_equal(stored.variance_fraction, live.variance_fraction)
        assert (stored.srfs is None) == (live.srfs is None)
        if stored.srfs is not None:  # the tiling map redraws from the file alone
            rows = [r for t in back.site_statistics for r in t.rows]
            redrawn = tiling_from_stored(stored, rows)
            np.testing.assert_array_equal(redrawn.regions, result.tilings[live.site].regions)
            assert redrawn.verdict == result.tilings[live.site].verdict
    # the tiny session's site is fitted and mapped (seeded), so the redraw above ran
    assert sites.site_subspaces and sites.site_subspaces[0].srfs is not None
    stored_rows = pd.DataFrame(back.site_statistics[0].rows)
    pd.testing.assert_frame_equal(stored_rows, sites.statistics_table, check_dtype=False)
    # every site note is in the run's notes and in the stored config
    assert set(sites.notes) <= set(result.notes) and set(sites.notes) <= set(back.config["notes"])
    names = [p.name for p in result.summary_files]
    assert names[:2] == ["tiny_quick_units.csv", "tiny_quick_sites.csv"]
    assert all(p.parent == path.parent for p in result.summary_files)
    units = pd.read_csv(result.summary_files[0])
    assert units["unit_row"].tolist() == list(range(result.session.n_units))
    assert set(units["cell_type"]) <= {"narrow", "broad", "unknown"}
    assert pd.read_csv(result.summary_files[1])["site"].tolist() == ["shank0"]
    proc = subprocess.run(["pynwb-validate", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0 and "no errors found" in proc.stdout, proc.stdout + proc.stderr


def test_rerun_needs_overwrite(tiny_run):
    from nwb_subspace.io.writer import ResultsExistError

    path, _, _ = tiny_run
    with pytest.raises(ResultsExistError, match="overwrite=True"):
        run_session(path, QUICK)


def test_ensemble_dstrfs_are_reproducible_from_the_stored_fits(tiny_run):
    from nwb_subspace.dstrf.compute import dstrf_moments

    path, _, result = tiny_run
    back = read_results(path, "quick")
    fits = [next(m for m in back.models if m.name == name) for name in ("cnn", "cnn_fit2")]
    assert all(m.scores is not None for m in fits)
    assert any("mean over 2 CNN fits" in note for note in back.config["notes"])
    t = back.subspaces[0]
    cols = [int(np.flatnonzero(fits[0].unit_rows == r)[0]) for r in t.unit_rows]
    mom = dstrf_moments(
        [m.module for m in fits],
        result.session.spectrogram.data,
        bins=result.session.frame_bins(QUICK.subspace.frames),
        units=cols,
        outlier_threshold=QUICK.subspace.outlier_threshold,
        outlier_rule=QUICK.subspace.outlier_rule,
    )
    assert mom.n_models == 2 and mom.noise_covariance is not None
    # the stored mean dSTRFs are those of the two stored fits
    np.testing.assert_allclose(mom.mean, t.mean_dstrf, atol=1e-5 * np.abs(mom.mean).max())
