"""``run`` end to end on every sound layout and every presentation design (issue 16).

Each design (few sounds repeated + many once; every sound repeated; none repeated) is
simulated as the same session written three ways (one continuous series; one ndx-sound
``AcousticWaveformSeries`` per presentation; templates in ``stimulus/templates``), plus a
folder of WAV files and a stored spectrogram; ``run`` must complete with the expected split,
and layouts (a)-(c) must give the same spectrogram and the same scores.
"""

from __future__ import annotations

import warnings
from dataclasses import replace

import numpy as np
import pytest
import scipy.io.wavfile
from pynwb import NWBHDF5IO

from nwb_subspace.config import AnalysisConfig, SessionSettings, SiteSettings, SubspaceSettings
from nwb_subspace.io.writer import read_results
from nwb_subspace.models.training import TrainingConfig
from nwb_subspace.pipeline import run_session
from nwb_subspace.simulate import PRESETS, simulate_session

pytestmark = pytest.mark.slow

SESSION = PRESETS["tiny"].replace(
    estimation_s=24.0, sequence_s=4.0, validation_s=2.0, validation_repeats=6, n_units=4
)
FAST = AnalysisConfig(
    models=("cnn",),
    training=TrainingConfig(
        n_initializations=1, max_epochs_stage1=4, max_epochs_stage2=2, patience=2
    ),
    subspace=SubspaceSettings(n_components=3, min_noise_corrected_r=1.5),  # no dSTRFs
    sites=SiteSettings(enabled=False),
    run_name="fast",
)


def _run(path, layout="auto", sound_dir=None, run_name="fast", output=None):
    config = replace(
        FAST,
        run_name=run_name,
        session=SessionSettings(
            layout=layout, sound_dir=None if sound_dir is None else str(sound_dir)
        ),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return run_session(path, config, output=output)


def _write_wavs(templates_file, folder):
    """The templates of a file as WAV files named by sound id (what a lab's stimulus folder
    holds), for the sound-dir layout."""
    folder.mkdir()
    with NWBHDF5IO(str(templates_file), "r") as io:
        nwb = io.read()
        for name, ts in nwb.stimulus_template.items():
            scipy.io.wavfile.write(folder / f"{name}.wav", int(ts.rate), ts.data[:])


def _common(a, b):
    """Two spectrograms on the same bin grid, cut to the bins both cover (an assembled
    timeline ends 1 s after the last presentation, a continuous series where it ends)."""
    rate = a.rate
    assert b.rate == pytest.approx(rate)
    offset = round((b.starting_time - a.starting_time) * rate)
    assert offset >= 0 and b.starting_time == pytest.approx(a.starting_time + offset / rate)
    n = min(a.data.shape[0] - offset, b.data.shape[0])
    return a.data[offset : offset + n], b.data[:n]


def _expected_split(design, split, n_sounds):
    if design == "mixed":
        assert split.design == "mixed"
        assert all(s.startswith("val_") for s in split.validation_sounds)
        assert split.has_noise_ceiling
    elif design == "all-repeated":
        assert split.design == "all-repeated"
        assert len(split.validation_sounds) == max(1, round(0.2 * n_sounds))
        assert split.has_noise_ceiling
    else:
        assert split.design == "none-repeated"
        assert not split.has_noise_ceiling
    assert not set(split.holdout_sounds) & set(split.validation_sounds)
    assert split.fit_trials.size and split.holdout_trials.size


@pytest.mark.parametrize("design", ["mixed", "all-repeated", "none-repeated"])
def test_run_completes_on_every_layout(tmp_path, design):
    results = {}
    paths = {}
    for layout in ("continuous", "per-presentation", "templates"):
        cfg = SESSION.replace(design=design, layout=layout)
        paths[layout], _ = simulate_session(tmp_path / f"{layout}.nwb", cfg, seed=0)
        results[layout] = _run(paths[layout])
        assert results[layout].session.spectrogram_source.layout == layout
    wavs = tmp_path / "sounds"
    _write_wavs(paths["templates"], wavs)
    results["sound-dir"] = _run(paths["templates"], "sound-dir", wavs, run_name="from_wavs")
    # a stored spectrogram: the continuous run stored one; a second run reuses it
    results["stored"] = _run(paths["continuous"], "stored", run_name="again")

    ref = results["continuous"]
    n_sounds = len(ref.session.trials.repeat_counts())
    for layout, result in results.items():
        assert result.output is not None, layout
        _expected_split(design, result.session.split, n_sounds)
        np.testing.assert_array_equal(
            result.session.split.validation_sounds, ref.session.split.validation_sounds
        )
        expected, got = _common(ref.session.spectrogram, result.session.spectrogram)
        assert got.shape[0] >= 0.9 * ref.session.n_bins
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
        back = read_results(result.output, result.results.config.get("run_name", layout))
        assert {m.name for m in back.models} >= {"cnn"}
    assert results["stored"].session.spectrogram_source.kind == "stored"
    # the same session in layouts (a)-(c): the same spectrogram (float32 rounding; silent
    # bins differ below 1e-12, the filters' ringing), the same fit and scores
    for layout in ("per-presentation", "templates"):
        expected, got = _common(ref.session.spectrogram, results[layout].session.spectrogram)
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-11)
        np.testing.assert_array_equal(
            results[layout].scores["cnn"].correlation, ref.scores["cnn"].correlation
        )
    nc = ref.scores["cnn"].noise_corrected_correlation
    if design == "none-repeated":
        assert np.isnan(nc).all() and np.isfinite(ref.scores["cnn"].correlation).all()
        assert any("no unit has a noise ceiling" in n for n in ref.notes)
    else:
        assert np.isfinite(nc).any()
