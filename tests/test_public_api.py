"""The public API at ``nwb_subspace``: every name resolves and is documented, the import is
light (no torch), the estimators share one contract, and a whole tiny session runs through
the public names only."""

from __future__ import annotations

import inspect
import subprocess
import sys
import warnings

import numpy as np
import pytest

import nwb_subspace as ns
from nwb_subspace.testing.data import poisson_data

QUICK = ns.AnalysisConfig(
    training=ns.TrainingConfig(
        n_initializations=2, max_epochs_stage1=15, max_epochs_stage2=8, patience=5
    ),
    subspace=ns.SubspaceSettings(n_components=6, min_noise_corrected_r=0.0),
    sites=ns.SiteSettings(n_null=50, n_shifts=100),
    run_name="public",
)

FAST = ns.TrainingConfig(
    max_epochs_stage1=3, max_epochs_stage2=2, patience=2, n_initializations=1, window=64
)


def _data(n_bins=600, n_freq=6, n_units=3, seed=0):
    return poisson_data(n_bins, n_freq, n_units, seed)


def test_every_public_name_resolves_and_has_a_docstring():
    assert len(set(ns.__all__)) == len(ns.__all__)
    assert set(ns.__all__) == set(ns._LAZY) | {"ndx", "__version__"}
    assert set(ns.__all__) <= set(dir(ns))
    for name in ns.__all__:
        if name == "__version__":
            assert isinstance(ns.__version__, str)
            continue
        obj = getattr(ns, name)
        doc = inspect.getdoc(obj) or ""
        # a dataclass without a docstring gets "Name(field, ...)": that does not count
        assert doc.strip() and not doc.startswith(f"{name}("), f"{name} has no docstring"
    with pytest.raises(AttributeError, match="no attribute 'not_a_name'"):
        ns.not_a_name  # noqa: B018


def test_import_is_light_and_loads_the_extension():
    code = (
        "import sys, nwb_subspace, pydoc\n"
        "from pynwb import get_type_map\n"
        "heavy = [m for m in ('torch', 'spikeinterface', 'matplotlib') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "assert 'ndx-subspace' in get_type_map().namespace_catalog.namespaces\n"
        "assert 'run_session' in dir(nwb_subspace)\n"
        "assert 'run_session' in nwb_subspace.__doc__\n"
        "print('ok')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]


def test_help_lists_the_api_in_flow_order():
    text = inspect.getdoc(ns)
    order = ["simulate_session", "read_units", "AnalysisConfig", "run_session", "run_batch"]
    order += ["EncodingEstimator", "TuningSubspaceEstimator", "SubspaceModelEstimator"]
    order += ["SiteSubspaceAnalysis", "read_results", "make_report", "ModelFitError"]
    where = [text.index(f"``{name}``") for name in order]
    assert where == sorted(where)
    for name in ns.__all__:
        if name != "__version__":
            assert f"``{name}``" in text, f"{name} missing from the package docstring"


def test_constructors_store_their_arguments_unchanged():
    est = ns.EncodingEstimator("ln")
    assert est.architecture is None and est.training is None
    arch = {"n_channels": 2, "n_taps": 3}
    est = ns.EncodingEstimator("ln", architecture=arch, training=FAST, device="auto")
    assert est.architecture is arch and est.training is FAST and est.device == "auto"
    sm = ns.SubspaceModelEstimator(n_hidden1=4, training=FAST)
    assert sm.n_hidden1 == 4 and sm.training is FAST and sm.model_ is None
    tu = ns.TuningSubspaceEstimator(n_components=3, n_shuffles=2)
    assert (tu.n_components, tu.n_shuffles) == (3, 2)
    site = ns.SiteSubspaceAnalysis(n_null=7)
    assert site.n_null == 7


def test_every_estimator_fits_to_self_and_turns_into_a_result():
    from nwb_subspace.dstrf.compute import dstrf_moments
    from nwb_subspace.stimulus.responses import ValidationPSTH
    from nwb_subspace.testing import mock_result_set

    X, Y, train, hold = _data()
    enc = ns.EncodingEstimator("ln", architecture={"n_channels": 2, "n_taps": 3}, training=FAST)
    assert enc.fit(X, Y, train, hold) is enc
    fitted = enc.to_result("ln", unit_rows=np.arange(3), bin_size_s=0.01)
    assert isinstance(fitted, ns.FittedModel) and fitted.unit_rows.tolist() == [0, 1, 2]

    tuning_est = ns.TuningSubspaceEstimator(n_components=3)
    moments = dstrf_moments(enc.model_, X, bins=np.arange(50, 200))
    freqs = np.linspace(200.0, 8000.0, X.shape[1])
    assert tuning_est.fit(moments, frequencies=freqs, bin_s=0.01) is tuning_est
    tuning = tuning_est.to_result()
    assert isinstance(tuning, ns.TuningSubspaces)
    np.testing.assert_array_equal(tuning_est.dimensionality_, tuning.dimensionality)
    with pytest.warns(DeprecationWarning, match="to_result"):
        assert tuning_est.result_ is tuning
    with pytest.raises(RuntimeError, match="fit"):
        ns.TuningSubspaceEstimator().to_result()

    tuning = mock_result_set().subspaces[0]
    n, _, n_freq, _ = tuning.components.shape
    X, Y, train, hold = _data(n_freq=n_freq, n_units=n)
    sm = ns.SubspaceModelEstimator(training=FAST)
    with pytest.raises(RuntimeError, match="fit"):
        sm.to_result(bin_size_s=0.01)
    assert sm.fit(tuning, X, Y, train, hold) is sm
    stored = sm.to_result(bin_size_s=0.01)
    assert isinstance(stored, ns.FittedModel) and stored.name == "subspace"
    with pytest.warns(DeprecationWarning, match="to_result"):
        old = sm.to_fitted_model(0.01)
    assert old.name == "subspace_model" and old.module is stored.module
    # score: against repeat-averaged PSTHs of validation sounds, as EncodingEstimator.score
    starts = np.array([400, 500])
    repeats = np.stack([Y[s : s + 100] for s in starts])
    validation = {"v": ValidationPSTH("v", trials=np.arange(2), start_bins=starts, repeats=repeats)}
    scores = sm.score(X, validation, np.ones(n), seed=0)
    assert isinstance(scores, ns.UnitScores) and scores.correlation.shape == (n,)
    with pytest.raises(ValueError, match="columns="):
        sm.score(X, validation, np.ones(n + 1))


@pytest.mark.slow
def test_a_tiny_session_through_the_public_api(tmp_path):
    nwb_path, truth_path = ns.simulate_session(tmp_path / "tiny.nwb", preset="tiny", seed=0)
    truth = ns.load_truth(truth_path)
    assert isinstance(truth, ns.GroundTruth)
    result = ns.run_session(nwb_path, QUICK)
    assert isinstance(result, ns.SessionResult) and result.output == nwb_path
    assert isinstance(result.session, ns.SessionData)
    assert isinstance(result.tuning, ns.TuningSubspaces)
    back = ns.read_results(nwb_path, "public")
    assert isinstance(back, ns.ResultSet)
    assert {"ln", "cnn", "cnn_fit2", "subspace"} == {m.name for m in back.models}
    assert all(isinstance(m, ns.FittedModel) for m in back.models)
    assert back.subspaces and isinstance(back.subspaces[0], ns.TuningSubspaces)
    assert back.site_subspaces or back.config["notes"]
    cnn = result.estimators["cnn"]
    assert isinstance(cnn, ns.EncodingEstimator)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        again = cnn.to_result("cnn", unit_rows=result.session.unit_rows, bin_size_s=0.01)
    stored_cnn = next(m for m in back.models if m.name == "cnn")
    assert again.unit_rows.tolist() == stored_cnn.unit_rows.tolist()
    html = ns.make_report(nwb_path, run="public", outdir=tmp_path / "report")
    assert html.exists() and (html.parent / "figures").is_dir()
