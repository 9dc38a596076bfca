"""Progress bars: shown on a terminal or when forced, silent in CI, logs and with --quiet."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from nwb_subspace import progress
from nwb_subspace.dstrf.compute import dstrf_moments
from nwb_subspace.models import build_model
from nwb_subspace.models.training import TrainingConfig, fit_model

FAST = TrainingConfig(
    max_epochs_stage1=2, max_epochs_stage2=1, patience=5, n_initializations=1, window=32
)


@pytest.fixture(autouse=True)
def _automatic_afterwards():
    progress.set_progress(None)  # whatever an earlier test in this process left
    yield
    progress.set_progress(None)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_automatic_rule(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setattr("sys.stderr", _Terminal())
    assert progress.progress_enabled()
    monkeypatch.setenv("CI", "true")
    assert not progress.progress_enabled()
    monkeypatch.delenv("CI")
    monkeypatch.setattr("sys.stderr", io.StringIO())  # a log file or a pipe
    assert not progress.progress_enabled()
    progress.set_progress(True)
    assert progress.progress_enabled()
    progress.set_progress(False)
    monkeypatch.setattr("sys.stderr", _Terminal())
    assert not progress.progress_enabled()
    with pytest.raises(TypeError, match="True, False or None"):
        progress.set_progress("yes")


def _data(n_bins=600, n_freq=5, n_units=3):
    rng = np.random.default_rng(0)
    X = rng.random((n_bins, n_freq)).astype(np.float32)
    Y = rng.poisson(1.0 + X[:, :n_units] * 2).astype(np.float32)
    fit = np.zeros(n_bins, bool)
    fit[:400] = True
    return X, Y, fit, ~fit


def _model():
    torch.manual_seed(0)
    arch = {"n_channels1": 4, "n_channels2": 3, "n_hidden": 5, "n_taps1": 3, "n_taps2": 2}
    return build_model("cnn", {"n_frequencies": 5, "n_units": 3, **arch})


def test_bars_for_fits_and_dstrfs_when_on(capsys):
    X, Y, fit, hold = _data()
    progress.set_progress(True)
    model, _ = fit_model(_model(), X, Y, fit, hold, FAST)
    dstrf_moments(model, X)
    err = capsys.readouterr().err
    assert "cnn fit, init 1, stage 1" in err and "cnn fit, init 1, stage 2" in err
    assert "/2 [" in err and "epoch/s" in err  # a bar of 2 epochs
    assert "dSTRFs of 3 unit(s)" in err and "/600 [" in err  # every bin


def _spectrogram():
    from nwb_subspace.stimulus.spectrogram import SpectrogramSettings, compute_spectrogram

    wave = np.random.default_rng(0).standard_normal(44100 * 3)
    return compute_spectrogram(wave, 44100.0, SpectrogramSettings(n_channels=8), chunk_s=1.0)


def test_spectrogram_bar_counts_chunks(capsys):
    progress.set_progress(True)
    _spectrogram()
    err = capsys.readouterr().err
    assert "spectrogram" in err and "/3 [" in err  # 3 s of sound in 1-s chunks


def test_no_bars_when_off(capsys):
    X, Y, fit, hold = _data()
    progress.set_progress(False)
    model, _ = fit_model(_model(), X, Y, fit, hold, FAST)
    dstrf_moments(model, X)
    _spectrogram()
    assert capsys.readouterr().err == ""


def test_cli_quiet_turns_bars_off_for_that_call(monkeypatch):
    """``--quiet`` turns bars off during the command; an in-process ``main`` puts the
    setting back afterwards (it used to leave bars off for every later test of the
    process, which failed the floors job's test order)."""
    import importlib

    cli = importlib.import_module("nwb_subspace.cli.main")  # the module, not its main()

    seen = []
    monkeypatch.setattr(cli, "_cmd_inspect", lambda args: seen.append(progress.progress_enabled()))
    monkeypatch.setattr("sys.stderr", _Terminal())
    monkeypatch.delenv("CI", raising=False)
    cli.main(["--quiet", "inspect", "x.nwb"])
    assert progress.progress_enabled()  # put back
    cli.main(["inspect", "x.nwb"])
    progress.set_progress(True)
    cli.main(["--quiet", "inspect", "x.nwb"])
    assert seen == [False, True, False]
    assert progress.set_progress(None) is True  # a forced setting survives a quiet call
