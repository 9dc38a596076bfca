"""dSTRF frames: each stimulus bin once (the first presentation of every distinct sound)."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest

from nwb_subspace.io.session import SessionData
from nwb_subspace.stimulus.responses import Split, Trials, noise_ceiling, validation_psth


def _hand_session() -> SessionData:
    """Seven trials on 40 bins; rows not in time order; sounds a, b (fit), h (holdout),
    v (validation, twice)."""
    sounds = ["a", "a", "b", "v", "v", "b", "h"]
    bins = np.array([[20, 24], [2, 6], [8, 12], [14, 17], [26, 29], [30, 34], [35, 38]])
    split = Split(
        validation_sounds=("v",),
        estimation_sounds=("a", "b", "h"),
        holdout_sounds=("h",),
        validation_trials=np.array([3, 4]),
        fit_trials=np.array([0, 1, 2, 5]),
        holdout_trials=np.array([6]),
        min_repeats=2,
        holdout_fraction=0.2,
        seed=0,
    )
    return SessionData(
        path="", spectrogram=None, spectrogram_source=None, counts=np.zeros((40, 1)),
        unit_ids=np.array([0]), trials=Trials(bins[:, 0] * 0.01, bins[:, 1] * 0.01, sounds),
        trial_bins=bins, split=split, validation={}, noise_ceiling=np.zeros(1),
    )  # fmt: skip


def test_frame_bins_keep_the_first_presentation_of_each_sound():
    session = _hand_session()
    # a: its first presentation is row 1 (bins 2-5), not row 0 (bins 20-23); b: row 2, not
    # row 5; h (holdout): bins 35-37
    expected = [*range(2, 6), *range(8, 12), *range(35, 38)]
    assert np.flatnonzero(session.frame_bins()).tolist() == expected
    assert np.flatnonzero(session.frame_bins("estimation")).tolist() == expected
    # "all" adds v's first presentation (bins 14-16), not its repeat (26-28)
    assert np.flatnonzero(session.frame_bins("all")).tolist() == sorted([*expected, 14, 15, 16])
    with pytest.raises(ValueError, match="frames must be one of"):
        session.frame_bins("validation")


def test_frames_and_outlier_rule_settings_are_checked():
    from nwb_subspace.config import AnalysisConfig, SubspaceSettings

    s = SubspaceSettings()
    assert (s.frames, s.outlier_rule) == ("estimation", "rms")
    assert (s.reference_n_components, s.reference_variance_threshold) == (15, 0.95)
    with pytest.raises(ValueError, match=r"\[subspace\] frames must be one of"):
        SubspaceSettings(frames="validation")
    with pytest.raises(ValueError, match=r"\[subspace\] outlier_rule must be one of"):
        AnalysisConfig.from_dict({"subspace": {"outlier_rule": "mad"}})
    with pytest.raises(ValueError, match=r"\[subspace\] reference_variance_threshold"):
        SubspaceSettings(reference_variance_threshold=1.0)


def _keep_repeats(session: SessionData, n_keep: int) -> SessionData:
    """The session with only the first ``n_keep`` presentations of each validation sound
    (trials table, split, validation PSTHs and noise ceilings restricted to them)."""
    tr, split = session.trials, session.split
    val = split.validation_trials[np.argsort(session.trial_bins[split.validation_trials, 0])]
    seen: Counter = Counter()
    drop = []
    for t in val:
        seen[tr.sound_id[t]] += 1
        if seen[tr.sound_id[t]] > n_keep:
            drop.append(int(t))
    keep = np.setdiff1d(np.arange(len(tr)), drop)
    new = np.full(len(tr), -1)
    new[keep] = np.arange(keep.size)
    trials = Trials(tr.start[keep], tr.stop[keep], tr.sound_id[keep], tr.table, tr.sound_column)
    split = replace(
        split,
        validation_trials=np.sort(new[np.setdiff1d(split.validation_trials, drop)]),
        fit_trials=new[split.fit_trials],
        holdout_trials=new[split.holdout_trials],
        validation_repeats=tuple(n_keep for _ in split.validation_sounds),
    )
    psth = validation_psth(session.counts, trials, split, session.rate, session.starting_time)
    return replace(
        session, trials=trials, trial_bins=session.trial_bins[keep], split=split,
        validation=psth, noise_ceiling=noise_ceiling(list(psth.values())),
    )  # fmt: skip


@pytest.mark.slow
def test_tuning_subspaces_do_not_depend_on_the_number_of_validation_repeats(tmp_path):
    """A session whose validation sounds are repeated 20x gives the same tuning subspaces
    whether it holds 2 or 20 repeats of them, with estimation frames and with all frames."""
    from nwb_subspace.config import AnalysisConfig, SubspaceSettings
    from nwb_subspace.io.session import load_session_data
    from nwb_subspace.models.estimator import EncodingEstimator
    from nwb_subspace.models.training import TrainingConfig
    from nwb_subspace.pipeline import session_masks, tuning_subspaces
    from nwb_subspace.simulate import PRESETS, simulate_session

    cfg = PRESETS["tiny"].replace(
        n_units=4, estimation_s=20.0, n_validation=2, validation_s=1.0, validation_repeats=20
    )
    path, _ = simulate_session(tmp_path / "rep20.nwb", cfg, seed=1)
    s20 = load_session_data(path)
    s2 = _keep_repeats(s20, 2)
    assert s20.split.validation_repeats == (20, 20) and len(s2.split.validation_trials) == 4
    m20, m2 = session_masks(s20), session_masks(s2)
    assert m20["validation"].sum() == 10 * m2["validation"].sum()
    # one CNN for both: the estimation data are the same
    training = TrainingConfig(
        n_initializations=1, max_epochs_stage1=10, max_epochs_stage2=5, patience=3
    )
    cnn = EncodingEstimator("cnn", training=training).fit(
        s20.spectrogram.data, s20.counts, m20["fit"], m20["holdout"]
    )
    scores = SimpleNamespace(noise_corrected_correlation=np.ones(cnn.units_.size))
    for frames in ("estimation", "all"):
        config = AnalysisConfig(
            subspace=SubspaceSettings(n_components=8, min_noise_corrected_r=-1.0, frames=frames)
        )
        notes20, notes2 = [], []
        a = tuning_subspaces(s20, cnn, scores, config, m20, notes20)
        b = tuning_subspaces(s2, cnn, scores, config, m2, notes2)
        np.testing.assert_array_equal(a.frames, b.frames)
        n_frames = int(a.frames.sum())
        assert n_frames == int(m20["fit"].sum() + m20["holdout"].sum()) + (
            int(m2["validation"].sum()) // 2 if frames == "all" else 0
        )
        ta, tb = a.tuning, b.tuning
        assert ta.n_frames.tolist() == tb.n_frames.tolist()
        assert (ta.n_frames + ta.n_outlier_frames == n_frames).all()
        np.testing.assert_allclose(ta.components, tb.components, atol=1e-10)
        np.testing.assert_allclose(ta.explained_variance_ratio, tb.explained_variance_ratio)
        np.testing.assert_array_equal(ta.dimensionality, tb.dimensionality)
        np.testing.assert_array_equal(ta.dimensionality_reference, tb.dimensionality_reference)
        assert any(f"dSTRF frames: {n_frames} stimulus bins" in n for n in notes20)
