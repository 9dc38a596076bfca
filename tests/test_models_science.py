"""The CNN predicts simulated neurons well, and beats the LN model where tuning is not
monotonic (issue: encoding models). Slow: fits both models on the ``small`` session."""

from __future__ import annotations

import numpy as np
import pytest

# Both files share the session-scoped small-session fits: keep them on one xdist worker.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("small_session")]


def _scores(est, session):
    return est.score(session.spectrogram.data, session.validation, session.noise_ceiling)


def test_cnn_noise_corrected_correlation(small_session, small_fits):
    session, truth = small_session
    cnn = _scores(small_fits["cnn"], session)
    nc = cnn.noise_corrected_correlation
    print("CNN median noise-corrected r:", np.nanmedian(nc))
    assert np.nanmedian(nc) >= 0.8
    assert (cnn.correlation > cnn.noise_floor).mean() >= 0.9


def test_cnn_beats_ln_on_non_monotonic_units(small_session, small_fits):
    session, truth = small_session
    cnn = _scores(small_fits["cnn"], session)
    ln = _scores(small_fits["ln"], session)
    units = small_fits["cnn"].units_
    assert np.array_equal(units, small_fits["ln"].units_)
    kinds = np.asarray(truth.nl_kind)[units]
    non_mono = np.isin(kinds, ["hill", "bowl"])
    assert non_mono.sum() >= 5
    c, lin = cnn.noise_corrected_correlation[non_mono], ln.noise_corrected_correlation[non_mono]
    print("non-monotonic units: CNN", np.nanmedian(c), "LN", np.nanmedian(lin))
    assert np.nanmedian(c) > np.nanmedian(lin)
    assert np.mean(c > lin) >= 0.7


def test_fitted_model_round_trips_through_nwb(small_session, small_fits, tmp_path):
    import torch

    from nwb_subspace.io.writer import read_results, write_results
    from nwb_subspace.results import ResultSet

    session, _ = small_session
    est = small_fits["cnn"]
    scores = _scores(est, session)
    src = tmp_path / "copy.nwb"
    import shutil

    shutil.copy(session.path, src)
    result = est.to_result(
        "cnn", unit_rows=session.unit_rows, bin_size_s=1 / session.rate, scores=scores
    )
    write_results(src, ResultSet(models=[result]), "fit")
    back = read_results(src, "fit").models[0]
    x = torch.from_numpy(session.spectrogram.data[:3000])[None]
    with torch.no_grad():
        diff = (back.module(x) - est.model_.cpu().eval()(x)).abs().max().item()
    assert diff < 1e-6
    np.testing.assert_array_equal(back.scores.correlation, scores.correlation)
