"""The analysis config: defaults from DESIGN.md, TOML round trip, unknown keys refused."""

from __future__ import annotations

import json

import pytest

from nwb_subspace.config import AnalysisConfig


def test_defaults_follow_the_reference():
    cfg = AnalysisConfig()
    assert cfg.spectrogram.n_channels == 32
    assert (cfg.spectrogram.f_min, cfg.spectrogram.f_max) == (200.0, 20000.0)
    assert cfg.spectrogram.bin_s == 0.01
    assert cfg.training.l2 == 1e-4 and cfg.training.loss == "poisson"
    assert cfg.subspace.variance_threshold == 0.95 and cfg.subspace.srf_bins == 20
    assert cfg.subspace.high_activity_threshold == 0.5
    assert cfg.session.holdout_fraction == 0.2
    assert cfg.sites.variance_threshold == 0.85 and cfg.sites.group_by is None
    json.dumps(cfg.to_dict())  # storable with the results


def test_toml_file(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text(
        'seed = 3\nmodels = ["cnn"]\n[spectrogram]\nn_channels = 16\n'
        "[training]\nn_initializations = 1\n[layers]\nl34_rel_y = 700.0\n"
        '[cell_types]\nthreshold_ms = 0.4\n[session]\nsound_column = "stim_name"\n'
        '[sites]\ngroup_by = "shank"\nn_shifts = 300\n'
    )
    cfg = AnalysisConfig.from_toml(path)
    assert cfg.seed == 3 and cfg.models == ("cnn",)
    assert cfg.spectrogram.n_channels == 16 and cfg.training.n_initializations == 1
    assert cfg.layers == {"l34_rel_y": 700.0} and cfg.cell_types == {"threshold_ms": 0.4}
    assert cfg.session.sound_column == "stim_name"
    assert cfg.sites.group_by == "shank" and cfg.sites.n_shifts == 300
    assert cfg.sites.n_null == 200  # untouched defaults stay
    assert cfg.with_overrides(seed=None, device="auto").device == "auto"
    assert cfg.with_overrides(seed=None).seed == 3


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("colour = 1\n", r"unknown config keys \['colour'\]"),
        ("[training]\nlr = 1\n", r"unknown keys \['lr'\] in \[training\]"),
        ("training = 3\n", r"\[training\] must be a table"),
        ('models = ["ln"]\n', "must include 'cnn'"),
        ('device = "tpu"\n', "device must be"),
        ("seed = -1\n", "seed must be"),
        ("[spectrogram]\nf_min = 0\n", "f_min"),
        ("[sites]\nn_null = 0\n", r"\[sites\] n_null must be an integer >= 1"),
        ("[sites]\ncolour = 1\n", r"unknown keys \['colour'\] in \[sites\]"),
        ('[session]\nvalidation_sounds = "a"\n', r"\[session\] validation_sounds must be a list"),
        ("[session]\nvalidation_sounds = []\n", r"\[session\] validation_sounds must list one"),
        ("[session]\nvalidation_sounds = [1.5]\n", r"\[session\] validation_sounds must list"),
        ("[session]\nvalidation_fraction = 1.0\n", r"\[session\] validation_fraction must be in"),
        ("[session]\nvalidation_fraction = 0\n", r"\[session\] validation_fraction must be in"),
        ('[session]\nvalidation_fraction = "0.2"\n', r"\[session\] validation_fraction"),
        ("[session]\ntrials_table = 3\n", r"\[session\] trials_table must be a name"),
        ('[session]\ntrials_table = ""\n', r"\[session\] trials_table must be a name"),
        ("[session]\nmin_repeats = 1\n", r"\[session\] min_repeats must be an integer >= 2"),
        ("[session]\nholdout_fraction = 1.0\n", r"\[session\] holdout_fraction must be in"),
        ('[session]\nlayout = "wav"\n', r"\[session\] layout must be one of"),
        ("[session]\nsound_dir = 1\n", r"\[session\] sound_dir must be a folder"),
        ("[session]\nchunk_s = 0\n", r"\[session\] chunk_s must be a positive"),
        ("seed = \n", "not valid TOML"),
    ],
)
def test_bad_config(tmp_path, text, match):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ValueError, match=match):
        AnalysisConfig.from_toml(path)


def test_session_split_and_table_settings(tmp_path):
    cfg = AnalysisConfig()
    assert cfg.session.trials_table is None and cfg.session.validation_sounds is None
    assert cfg.session.validation_fraction == 0.2
    assert cfg.session.layout == "auto" and cfg.session.sound_dir is None
    path = tmp_path / "run.toml"
    path.write_text(
        '[session]\ntrials_table = "presentations"\nvalidation_sounds = ["ripple_1", 7]\n'
        'validation_fraction = 0.25\nmin_repeats = 4\nlayout = "sound-dir"\n'
        'sound_dir = "sounds"\n'
    )
    s = AnalysisConfig.from_toml(path).session
    assert s.trials_table == "presentations"
    assert s.validation_sounds == ("ripple_1", "7")  # a TOML list becomes a tuple of str
    assert s.validation_fraction == 0.25 and s.min_repeats == 4
    assert s.layout == "sound-dir" and s.sound_dir == "sounds"
    stored = json.loads(json.dumps(AnalysisConfig.from_toml(path).to_dict()))
    assert stored["session"]["validation_sounds"] == ["ripple_1", "7"]


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such config file"):
        AnalysisConfig.from_toml(tmp_path / "none.toml")
