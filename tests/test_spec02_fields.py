"""What spec 0.2.0 adds, written by nwb-subspace and read back (issue 21).

- ``EncodingModel.output_units``: each output's units-table row, stored on the model (a model
  stored without scores no longer maps to the wrong units);
- ``EncodingModel.validation_prediction``: the predicted rate on the validation bins, a
  ``TimeSeries`` in spikes/s (float32) read back as numpy (no torch needed to use it);
- ``unit`` attributes on every stored quantity;
- ``SiteSubspace.electrode_group`` and the site statistics' ``electrode_group`` column when
  the site is an electrode group of the file.
"""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import h5py
import numpy as np
import pytest
from pynwb import NWBHDF5IO

from nwb_subspace.io.writer import read_results, write_results
from nwb_subspace.models.estimator import validation_bins, validation_predictions
from nwb_subspace.models.training import predict
from nwb_subspace.pipeline import with_validation_predictions
from nwb_subspace.results import ModelPrediction


def _cnn(results):
    return next(m for m in results.models if m.name == "cnn")


def test_output_units_map_a_model_without_scores_to_its_units(mock_file, results):
    # the 5-output CNN stored as predicting rows 4, 0, 3, 1, 2, without scores: in spec 0.1.x
    # nothing in the file said so, and it was read back as rows 0..4
    cnn = _cnn(results)
    results.models = [replace(cnn, unit_rows=np.array([4, 0, 3, 1, 2]), scores=None)]
    write_results(mock_file, results, "run1")
    with h5py.File(mock_file, "r") as f:
        stored = f["processing/misc/run1/cnn/output_units"]
        assert stored.attrs["neurodata_type"] == "DynamicTableRegion"
        assert f[stored.attrs["table"]].name == "/units"
        assert stored[()].tolist() == [4, 0, 3, 1, 2]
    back = read_results(mock_file, "run1")
    assert back.models[0].unit_rows.tolist() == [4, 0, 3, 1, 2]


def test_output_units_disagreeing_with_the_scores_are_refused(mock_file, results):
    write_results(mock_file, results, "run1")
    with h5py.File(mock_file, "r+") as f:
        f["processing/misc/run1/cnn/output_units"][0] = 4
    with pytest.raises(ValueError, match="output_units .* and the units of its scores table"):
        read_results(mock_file, "run1")


@pytest.mark.parametrize("contiguous", [True, False])
def test_validation_prediction_round_trip(mock_file, results, contiguous):
    cnn = _cnn(results)
    times = 2.0 + np.arange(30) * cnn.bin_size_s
    if not contiguous:  # two validation presentations, far apart
        times[15:] += 10.0
    rate = np.random.default_rng(5).random((30, cnn.unit_rows.size)) * 30.0
    pred = ModelPrediction(timestamps=times, rate=rate)
    results.models = [
        replace(m, validation_prediction=pred) if m is cnn else m for m in results.models
    ]
    write_results(mock_file, results, "run1")
    with h5py.File(mock_file, "r") as f:
        series = f["processing/misc/run1/cnn/validation_prediction"]
        assert series["data"].dtype == np.float32 and series["data"].attrs["unit"] == "spikes/s"
        assert ("timestamps" in series) != contiguous
        assert ("starting_time" in series) == contiguous
    back = _cnn(read_results(mock_file, "run1")).validation_prediction
    np.testing.assert_allclose(back.timestamps, times, rtol=0, atol=1e-9)
    np.testing.assert_array_equal(back.rate, rate.astype(np.float32))
    with NWBHDF5IO(str(mock_file), "r") as io:  # plain pynwb: a TimeSeries like any other
        series = io.read().processing["misc"]["run1"].encoding_models["cnn"].validation_prediction
        assert series.data.shape == (30, cnn.unit_rows.size)


def test_bad_predictions_are_refused_early(results):
    with pytest.raises(ValueError, match="strictly increasing"):
        ModelPrediction(timestamps=[0.0, 0.0], rate=np.zeros((2, 5)))
    with pytest.raises(ValueError, match="3 bins but there are 2 timestamps"):
        ModelPrediction(timestamps=[0.0, 0.01], rate=np.zeros((3, 5)))
    with pytest.raises(ValueError, match="has 2 outputs but the model predicts 5 units"):
        replace(_cnn(results), validation_prediction=ModelPrediction([0.0], np.zeros((1, 2))))


def test_pipeline_prediction_is_the_model_on_every_validation_bin(results):
    """with_validation_predictions: the rate at each bin of each validation presentation, in
    time order; its repeat average is what the scores compare with the PSTH."""
    cnn = replace(_cnn(results), validation_prediction=None)
    rng = np.random.default_rng(0)
    X = rng.random((400, 6)).astype(np.float32)
    validation = {  # sound "b" presented before and after "a"; 20 and 15 bins long
        "a": SimpleNamespace(start_bins=np.array([100, 300]), n_bins=20),
        "b": SimpleNamespace(start_bins=np.array([50, 200, 350]), n_bins=15),
    }
    session = SimpleNamespace(
        validation=validation,
        spectrogram=SimpleNamespace(data=X),
        starting_time=1.5,
        rate=100.0,
    )
    other = replace(cnn, name="cnn_fit2")
    out = with_validation_predictions([cnn, other], session, names={"cnn"})
    assert out[1] is other and other.validation_prediction is None
    pred = out[0].validation_prediction
    bins = validation_bins(validation)
    assert bins.size == 2 * 20 + 3 * 15 and np.all(np.diff(bins) > 0)
    np.testing.assert_allclose(pred.timestamps, 1.5 + bins / 100.0)
    counts = predict(cnn.module, X)
    np.testing.assert_allclose(pred.rate, counts[bins] / cnn.bin_size_s, rtol=1e-6)
    # the repeat average of the stored rate is the scored prediction (per bin -> per second)
    full = np.zeros_like(counts)
    full[bins] = pred.rate * cnn.bin_size_s
    np.testing.assert_allclose(
        validation_predictions(full, validation), validation_predictions(counts, validation),
        rtol=1e-5, atol=1e-7,
    )  # fmt: skip


def test_quantities_carry_their_unit(mock_file, results):
    write_results(mock_file, results, "run1")
    expected = {
        "tuning_subspaces/mean_dstrf": "(spikes/bin) per spectrogram unit",
        "subspace_rfs/response_map": "spikes/s",
        "subspace_rfs/edges_x": "spectrogram units",
        "subspace_rfs/edges_y": "spectrogram units",
        "spectrogram/frequencies": "Hz",
        "spectrogram/starting_time": "seconds",
        "cnn/validation_prediction/data": "spikes/s",
    }
    with h5py.File(mock_file, "r") as f:
        run = f["processing/misc/run1"]
        assert {k: run[k].attrs.get("unit") for k in expected} == expected


def test_sites_link_their_electrode_group(mock_file, results):
    """The mock file's single shank is electrode group 'shank0', the mock site's name."""
    write_results(mock_file, results, "run1")
    with NWBHDF5IO(str(mock_file), "r") as io:
        nwbfile = io.read()
        run = nwbfile.processing["misc"]["run1"]
        group = nwbfile.electrode_groups["shank0"]
        (site,) = run.site_subspaces.values()
        assert site.site == "shank0" and site.electrode_group is group
        stats = run.site_statistics_tables["site_statistics"]
        assert list(stats["electrode_group"][:]) == [group] * len(stats)
        assert stats.to_dataframe()["site"].tolist() == ["shank0"] * len(stats)


def test_a_site_that_is_no_electrode_group_has_no_link(mock_file, results):
    site = results.site_subspaces[0]
    results.site_subspaces = [replace(site, site="layer 2/3", name="site_subspace_l23")]
    for row in results.site_statistics[0].rows:
        row["site"] = "layer 2/3"
    write_results(mock_file, results, "run1")
    with NWBHDF5IO(str(mock_file), "r") as io:
        run = io.read().processing["misc"]["run1"]
        assert run.site_subspaces["site_subspace_l23"].electrode_group is None
        assert "electrode_group" not in run.site_statistics_tables["site_statistics"].colnames
