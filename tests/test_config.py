"""The analysis config: reference defaults (``docs/methods.md``), TOML round trip, unknown keys
refused, and every setting checked (type and range) when the config is built."""

from __future__ import annotations

import json
import time

import pytest

from nwb_subspace.config import AnalysisConfig, SiteSettings, SubspaceSettings
from nwb_subspace.models.training import TrainingConfig
from nwb_subspace.stimulus.spectrogram import SpectrogramSettings


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
        ("[session]\nchunk_s = 0\n", r"\[session\] chunk_s must be a number > 0"),
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


# --------------------------------------------------------------------------- every field checked

#: (TOML text, the "[section] key" the message must name, the bad value as the message shows
#: it, an example of a good value as the message shows it). At least one per section.
BAD_VALUES = [
    # top level
    ("seed = true\n", "seed", "True (bool)", "e.g. 1"),
    ("seed = 1.5\n", "seed", "1.5 (float)", "e.g. 1"),
    ('device = "tpu"\n', "device", "'tpu'", "e.g. 'cpu'"),
    ('models = "cnn"\n', "models", "'cnn' (str)", 'e.g. ["ln", "cnn"]'),
    ('models = ["cnn", "cnn"]\n', "models", "['cnn', 'cnn']", 'e.g. ["ln", "cnn"]'),
    ('run_name = "a/b"\n', "run_name", "'a/b'", "e.g. 'subspace_analysis'"),
    ("keep_partial = 1\n", "keep_partial", "1 (int)", "e.g. false"),
    # [session]
    ("[session]\nmin_repeats = 2.0\n", "[session] min_repeats", "2.0 (float)", "e.g. 3"),
    ('[session]\nchunk_s = "60"\n', "[session] chunk_s", "'60' (str)", "e.g. 60.0"),
    ("[session]\ntrials_table = 3\n", "[session] trials_table", "3 (int)", "e.g. 'trials'"),
    ('[session]\nlayout = "wav"\n', "[session] layout", "'wav'", "e.g. 'auto'"),
    # [spectrogram]
    ('[spectrogram]\nbin_s = "10ms"\n', "[spectrogram] bin_s", "'10ms' (str)", "e.g. 0.01"),
    ("[spectrogram]\nbin_s = 2.0\n", "[spectrogram] bin_s", "2.0", "e.g. 0.01"),
    ("[spectrogram]\nn_channels = 3.5\n", "[spectrogram] n_channels", "3.5 (float)", "e.g. 32"),
    ("[spectrogram]\nn_channels = true\n", "[spectrogram] n_channels", "True (bool)", "e.g. 32"),
    ("[spectrogram]\nf_min = 0\n", "[spectrogram] f_min", "0", "e.g. 200.0"),
    ("[spectrogram]\nf_min = 3e4\n", "[spectrogram] f_min", "f_min=30000.0", "f_min=200.0"),
    ("[spectrogram]\nlog_offset = -1\n", "[spectrogram] log_offset", "-1", "e.g. 0.1"),
    ('[spectrogram]\nlevel = "peak"\n', "[spectrogram] level", "'peak'", "e.g. 'rms'"),
    ("[spectrogram]\nchannel = 1.0\n", "[spectrogram] channel", "1.0 (float)", "e.g. 'mean'"),
    # [training]
    ("[training]\nmax_epochs_stage1 = 0\n", "[training] max_epochs_stage1", "0", "e.g. 100"),
    ('[training]\nlr_stage1 = "1e-3"\n', "[training] lr_stage1", "'1e-3' (str)", "e.g. 0.006"),
    ("[training]\nlr_stage2 = 0\n", "[training] lr_stage2", "got 0", "e.g. 0.002"),
    ("[training]\nl2 = nan\n", "[training] l2", "nan", "e.g. 0.0001"),
    ("[training]\npatience = true\n", "[training] patience", "True (bool)", "e.g. 10"),
    ("[training]\nwindow = 64.0\n", "[training] window", "64.0 (float)", "e.g. 128"),
    ('[training]\nloss = "l1"\n', "[training] loss", "'l1'", 'e.g. "poisson"'),
    ("[training]\nstandardize = 1\n", "[training] standardize", "1 (int)", "e.g. true"),
    ("[training]\nseed = -1\n", "[training] seed", "-1", "e.g. 0"),
    # [subspace]: all of these used to pass until after the CNN fit
    ("[subspace]\nsrf_bins = 0\n", "[subspace] srf_bins", "0", "e.g. 20"),
    ("[subspace]\nn_components = 0\n", "[subspace] n_components", "0", "e.g. 20"),
    ("[subspace]\nvariance_threshold = 2\n", "[subspace] variance_threshold", "2", "e.g. 0.95"),
    ("[subspace]\nmin_occupancy = 0\n", "[subspace] min_occupancy", "0", "e.g. 10"),
    ("[subspace]\noutlier_threshold = 0\n", "[subspace] outlier_threshold", "0", "e.g. 5.0"),
    (
        "[subspace]\nhigh_activity_threshold = 1.5\n",
        "[subspace] high_activity_threshold",
        "1.5",
        "e.g. 0.5",
    ),
    (
        '[subspace]\nmin_noise_corrected_r = "0.5"\n',
        "[subspace] min_noise_corrected_r",
        "'0.5' (str)",
        "e.g. 0.5",
    ),
    ("[subspace]\nensemble = 1\n", "[subspace] ensemble", "1 (int)", "e.g. true"),
    # [sites]
    ("[sites]\nn_null = 0\n", "[sites] n_null", "0", "e.g. 200"),
    ("[sites]\nalpha = 1\n", "[sites] alpha", "1", "e.g. 0.05"),
    ('[sites]\nweighting = "max"\n', "[sites] weighting", "'max'", "e.g. 'equal'"),
    ("[sites]\nvariance_threshold = 0\n", "[sites] variance_threshold", "0", "e.g. 0.85"),
    ("[sites]\nenabled = 0\n", "[sites] enabled", "0 (int)", "e.g. true"),
    # [cell_types]: checked by building a CellTypeParams now, not when units are read
    ('[cell_types]\nthreshold_ms = "0.35"\n', "[cell_types] threshold_ms", "'0.35'", "e.g. 0.35"),
    ("[cell_types]\nthreshold_ms = 10\n", "[cell_types] threshold_ms", "10", "e.g. 0.35"),
    ("[cell_types]\nupsample = 0\n", "[cell_types] upsample", "0", "e.g. 10"),
    ("[cell_types]\nupsample = true\n", "[cell_types] upsample", "True (bool)", "e.g. 10"),
    # [layers]: its shape and values, checked now
    ('[layers]\nl34_rel_y = "800"\n', "[layers] l34_rel_y", "'800' (str)", "e.g. 800.0"),
    ("[layers]\nl34_rel_y = true\n", "[layers] l34_rel_y", "True (bool)", "e.g. 800.0"),
    ("[layers]\nl34_rel_y = inf\n", "[layers] l34_rel_y", "inf", "e.g. 800.0"),
    ("[layers.layers]\nL4 = [600.0, 800.0]\n", "[layers] layers.'L4'", "[600.0, 800.0]", "e.g. ["),
    ('[layers.layers]\nL4 = ["a", 1]\n', "[layers] layers.'L4'", "['a', 1]", "e.g. ["),
    ("[layers.layers]\nL4 = 800.0\n", "[layers] layers.'L4'", "800.0", "e.g. [800.0, 600.0]"),
    ("[layers]\nlayers = {}\n", "[layers] layers", "{}", "e.g. layers ="),
    (
        "[layers.layers]\nL4 = [800.0, 600.0]\nL5 = [700.0, 300.0]\n",
        "[layers] layers 'L5' and 'L4' overlap",
        "700.0 > 600.0",  # L5's top is above L4's bottom
        "e.g. l34_rel_y",
    ),
    ("[layers]\nthreshold = 1\n", "in [layers]", "'threshold'", "allowed: ['l34_rel_y'"),
    (
        "[layers]\nl34_rel_y = 800.0\nlayers = {L4 = [800.0, 600.0]}\n",
        "[layers] needs exactly one of",
        "got {'l34_rel_y': 800.0",
        "e.g. l34_rel_y = 800.0",
    ),
    ("[layers.boundaries]\nL4 = 1\n", "[layers] boundaries", "{'L4': 1}", "e.g. boundaries = {"),
]


@pytest.mark.parametrize(("text", "key", "value", "example"), BAD_VALUES)
def test_every_bad_value_names_key_value_and_example(tmp_path, text, key, value, example):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ValueError) as caught:
        AnalysisConfig.from_toml(path)
    message = str(caught.value)
    assert key in message and value in message and example in message, message


def test_every_section_is_covered():
    sections = {t.split("]")[0].lstrip("[").split(".")[0] for t, *_ in BAD_VALUES if "[" in t}
    assert {"session", "spectrogram", "training", "subspace", "sites", "cell_types", "layers"} <= (
        sections
    )
    assert any(not t.startswith("[") for t, *_ in BAD_VALUES)  # top-level keys


def test_issue_examples_are_refused_at_construction():
    """The dataclass constructors check too, not only the TOML reader."""
    with pytest.raises(ValueError, match=r"\[subspace\] variance_threshold must be in \(0, 1\]; "):
        SubspaceSettings(variance_threshold=2)
    with pytest.raises(ValueError, match=r"\[subspace\] srf_bins .* got 0, e\.g\. 20"):
        SubspaceSettings(srf_bins=0)
    with pytest.raises(ValueError, match=r"\[sites\] min_units must be an integer >= 2; got 1"):
        SiteSettings(min_units=1)
    with pytest.raises(TypeError, match=r"\[spectrogram\] bin_s .* got '10ms' \(str\)"):
        SpectrogramSettings(bin_s="10ms")  # used to be "'<' not supported between ..."
    with pytest.raises(ValueError, match=r"\[cell_types\] threshold_ms"):
        AnalysisConfig(cell_types={"threshold_ms": "0.35"})
    with pytest.raises(ValueError, match=r"unknown keys \['width'\] in \[cell_types\]"):
        AnalysisConfig(cell_types={"width": 0.35})
    with pytest.raises(ValueError, match=r"\[layers\] needs exactly one of"):
        AnalysisConfig(layers={})
    with pytest.raises(ValueError, match=r"\[layers\] must be a table"):
        AnalysisConfig(layers=[800.0])
    with pytest.raises(ValueError, match=r"session must be a SessionSettings"):
        AnalysisConfig(session={"chunk_s": 1.0})


def test_good_values_pass_and_keep_their_form(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text(
        "[subspace]\noutlier_threshold = inf\nmin_noise_corrected_r = -1\nsrf_bins = 2\n"
        "[training]\nmax_epochs_stage2 = 0\nmax_retries = 0\n"
        "[spectrogram]\nchannel = 1\nbin_s = 1\n"
        "[cell_types]\nthreshold_ms = 0.4\nupsample = 1\n"
        "[layers]\nl34_rel_y = 800\n"
        '[layers.depths_um]\n"BS/1" = -800\n"L3/4" = 0\n"L4/5" = 200\n"L6/WM" = 800\n'
    )
    cfg = AnalysisConfig.from_toml(path)
    assert cfg.subspace.outlier_threshold == float("inf")  # keeps every finite frame
    assert SubspaceSettings(min_noise_corrected_r=1.5).min_noise_corrected_r == 1.5  # no dSTRFs
    assert cfg.training.max_epochs_stage2 == 0  # stage 2 skipped (the benchmarks use it)
    assert cfg.spectrogram.channel == 1 and cfg.cell_types == {"threshold_ms": 0.4, "upsample": 1}
    for layers in (
        {"layers": {"L4": [800.0, 600.0], "L5": [600, 300]}},
        {"boundaries": {"BS/1": 1600, "L3/4": 800, "L4/5": 600, "L6/WM": 0}},
        {"l34_rel_y": -50.0},
    ):
        assert AnalysisConfig(layers=layers).layers == layers


def test_training_needs_stage_one_epochs():
    with pytest.raises(ValueError, match=r"\[training\] max_epochs_stage1 .*>= 1; got 0"):
        TrainingConfig(max_epochs_stage1=0)
    with pytest.raises(ValueError, match=r"\[training\] max_epochs_stage1"):
        TrainingConfig(max_epochs_stage1=0, max_epochs_stage2=0)
    assert TrainingConfig(max_epochs_stage1=1, max_epochs_stage2=0).max_epochs_stage2 == 0


# --------------------------------------------------------------------------- the seed


def test_training_seed_is_the_top_level_seed(tmp_path):
    assert AnalysisConfig(seed=4).training.seed == 4
    assert AnalysisConfig(seed=4, training=TrainingConfig(seed=9)).training.seed == 4
    cfg = AnalysisConfig(seed=2, training=TrainingConfig(n_initializations=1))
    moved = cfg.with_overrides(seed=7)
    assert moved.training.seed == 7 and moved.training.n_initializations == 1
    assert json.loads(json.dumps(moved.to_dict()))["training"]["seed"] == 7

    path = tmp_path / "run.toml"
    path.write_text("[training]\nseed = 3\n")  # used to be accepted and then ignored
    with pytest.raises(ValueError) as caught:
        AnalysisConfig.from_toml(path)
    message = str(caught.value)
    assert "[training] seed = 3 differs from the top-level seed = 0" in message
    assert "e.g. seed = 3" in message and "top of the file" in message
    path.write_text("seed = 3\n[training]\nseed = 3\n")  # the same value is harmless
    assert AnalysisConfig.from_toml(path).training.seed == 3
    path.write_text("seed = 5\n")
    assert AnalysisConfig.from_toml(path).training.seed == 5


# --------------------------------------------------------------------------- the command line


@pytest.mark.parametrize("target", ["missing.nwb", "notes.txt"])
def test_cli_reports_the_config_error_before_opening_the_file(tmp_path, capsys, target):
    import nwb_subspace.io.remote  # noqa: F401  (imports out of the timing)
    import nwb_subspace.pipeline  # noqa: F401
    from nwb_subspace.cli.main import EXIT_BAD_INPUT, main

    bad = tmp_path / "bad.toml"
    bad.write_text("[subspace]\nsrf_bins = 0\n")
    data = tmp_path / target
    if target.endswith(".txt"):
        data.write_text("not an NWB file\n")
    start = time.perf_counter()
    code = main(["--quiet", "run", str(data), "--config", str(bad)])
    elapsed = time.perf_counter() - start
    err = capsys.readouterr().err
    assert code == EXIT_BAD_INPUT
    assert "[subspace] srf_bins must be an integer >= 2; got 0, e.g. 20" in err
    assert "no such file" not in err and "NWB" not in err
    assert elapsed < 0.5, f"the config error took {elapsed:.2f} s"
