"""The SpikeInterface units reader: spike times, waveforms, cell types, depths, layers.

Science checks (the issue's "done when"), on two kinds of files:

1. sessions written by our simulator (``tiny`` preset, raw voltage included), read through
   the ``waveform_mean`` path and the raw-voltage path;
2. a SpikeInterface ``generate_ground_truth_recording`` with narrow and broad templates,
   written to NWB by NeuroConv (a file this project did not write).

Criteria: narrow/broad accuracy >= 98% for units whose true trough-to-peak is at least
0.1 ms from the threshold; median depth error <= 15 µm; layer correct for >= 95% of units
at least 20 µm from a boundary; raw and waveform_mean paths agree on >= 95% of units.
"""

from __future__ import annotations

import warnings
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from nwb_subspace.io.units.reader import (
    UnitInfo,
    UnitsReadWarning,
    add_unit_columns,
    read_units,
    unit_columns,
    units_result_set,
)
from nwb_subspace.units.celltypes import CellTypeParams, LayerBoundaries, trough_to_peak_ms
from nwb_subspace.units.columns import UNIT_COLUMNS

FS = 30000.0


# --------------------------------------------------------------------------- criteria


def check_done_when(
    info: UnitInfo,
    true_ttp_ms: np.ndarray,
    true_rel_y: np.ndarray,
    true_layer: np.ndarray | None = None,
    boundaries: LayerBoundaries | None = None,
    units: np.ndarray | None = None,
) -> dict:
    """Assert the issue's numbers on the units selected (default: all); return them."""
    sel = np.arange(info.n_units) if units is None else units
    thr = info.threshold_ms
    truth_ct = np.where(true_ttp_ms < thr, "narrow", "broad")
    clear = sel[np.abs(true_ttp_ms[sel] - thr) >= 0.1]
    assert clear.size, "no unit clear of the threshold"
    accuracy = float(np.mean(info.cell_type[clear] == truth_ct[clear]))
    depth_err = float(np.median(np.abs(info.depth_um[sel] - true_rel_y[sel])))
    out = {"accuracy": accuracy, "n_clear": int(clear.size), "median_depth_err": depth_err}
    assert accuracy >= 0.98, out
    assert depth_err <= 15.0, out
    if true_layer is not None:
        far = sel[boundaries.distance_to_boundary(true_rel_y[sel]) >= 20.0]
        out["layer_accuracy"] = float(np.mean(info.layer[far] == true_layer[far]))
        out["n_far"] = int(far.size)
        assert out["layer_accuracy"] >= 0.95, out
    return out


def agreement(a: UnitInfo, b: UnitInfo, units: np.ndarray) -> float:
    return float(np.mean(a.cell_type[units] == b.cell_type[units]))


# --------------------------------------------------------------------------- simulated sessions


def _simulate(tmp_path_factory, seed: int):
    from nwb_subspace.simulate import load_truth, simulate_session

    folder = tmp_path_factory.mktemp(f"sim{seed}")
    nwb, truth = simulate_session(folder / "site.nwb", preset="tiny", seed=seed, raw=True)
    return nwb, load_truth(truth)


@pytest.fixture(scope="module")
def sim0(tmp_path_factory):
    return _simulate(tmp_path_factory, 0)


def _read_both(nwb, truth):
    bounds = LayerBoundaries.from_boundaries(truth.layer_boundaries)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnitsReadWarning)
        tpl = read_units(nwb, prefer="waveform_mean", layers=bounds)
        raw = read_units(nwb, prefer="raw", layers=bounds, min_spikes=3)
    return bounds, tpl, raw


def _check_sim(nwb, truth):
    bounds, tpl, raw = _read_both(nwb, truth)
    assert tpl.unit_ids.tolist() == truth.unit_names.tolist()  # NWB row order, unit_name ids
    assert (tpl.source == "waveform_mean").all()
    ttp = truth.trough_to_peak_s * 1e3
    rel_y = truth.position_um[:, 1]
    res_tpl = check_done_when(tpl, ttp, rel_y, truth.layer, bounds)
    on_raw = np.flatnonzero(raw.source == "raw")
    assert on_raw.size >= truth.n_units // 2, raw.source
    res_raw = check_done_when(raw, ttp, rel_y, truth.layer, bounds, units=on_raw)
    agree = agreement(raw, tpl, on_raw)
    assert agree >= 0.95
    return res_tpl, res_raw, agree


def test_simulated_session_both_paths(sim0):
    _check_sim(*sim0)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_simulated_sessions_more_seeds(tmp_path_factory, seed):
    _check_sim(*_simulate(tmp_path_factory, seed))


def test_simulated_session_fields(sim0):
    nwb, truth = sim0
    info = read_units(nwb, prefer="waveform_mean")
    n = truth.n_units
    assert info.n_units == n and len(info.spike_times) == n
    # spike times are the file's (NWB seconds), through SpikeInterface
    from pynwb import NWBHDF5IO

    with NWBHDF5IO(str(nwb), "r") as io:
        units = io.read().units
        for i in range(n):
            np.testing.assert_allclose(info.spike_times[i], units["spike_times"][i], atol=1e-6)
    assert info.waveform.shape == (n, 120) and info.waveform_fs == FS
    # main-channel waveforms in µV (NWB stores volts)
    assert 20.0 < np.nanmax(np.ptp(info.waveform, axis=1)) < 2000.0
    np.testing.assert_array_equal(info.main_channel, truth.main_electrode)
    # a linear silicon probe (not Neuropixels): 0.40 ms threshold (DESIGN §3)
    assert info.threshold_ms == 0.40
    # no boundaries given and locations say only "auditory cortex": layers unknown
    assert set(info.layer) == {"unknown"}
    np.testing.assert_allclose(info.margin_ms, info.trough_to_peak_ms - 0.40)
    assert info.depth_source.tolist() == ["location"] * n


# --------------------------------------------------------------------------- NeuroConv file


def _ground_truth_recording(n_units: int = 12, seed: int = 0):
    """A SpikeInterface ground-truth recording with narrow (even) and broad (odd) units."""
    import probeinterface
    from spikeinterface.core import generate_ground_truth_recording, generate_templates
    from spikeinterface.core.generate import generate_unit_locations

    probe = probeinterface.generate_multi_columns_probe(
        num_columns=2, num_contact_per_column=16, xpitch=20, ypitch=20
    )
    probe.set_device_channel_indices(np.arange(32))
    rng = np.random.default_rng(seed)
    narrow = np.arange(n_units) % 2 == 0
    params = {
        # narrow units need a fast repolarization (DESIGN §5); defaults give only broad ones
        "repolarization_ms": np.where(
            narrow, rng.uniform(0.12, 0.2, n_units), rng.uniform(0.5, 0.75, n_units)
        ),
        "alpha": rng.uniform(300.0, 600.0, n_units),
        "depolarization_ms": rng.uniform(0.09, 0.14, n_units),
    }
    locations = generate_unit_locations(
        n_units,
        probe.contact_positions,
        seed=seed,
        margin_um=10.0,
        minimum_z=5.0,
        maximum_z=40.0,
        minimum_distance=20.0,
    )
    templates = generate_templates(
        probe.contact_positions, locations, FS, 1.0, 3.0, seed=seed, unit_params=params
    )
    rec, sort = generate_ground_truth_recording(
        durations=[10.0],
        sampling_frequency=FS,
        probe=probe,
        num_units=n_units,
        templates=templates,
        generate_sorting_kwargs={"firing_rates": 8.0, "refractory_period_ms": 4.0},
        noise_kwargs={"noise_levels": 5.0, "strategy": "on_the_fly"},
        seed=seed,
    )
    main = np.argmax(np.ptp(templates, axis=1), axis=1)
    true_ttp = trough_to_peak_ms(templates[np.arange(n_units), :, main], FS)
    return rec, sort, templates, locations, true_ttp


def _metadata() -> dict:
    start = datetime(2024, 1, 1, tzinfo=UTC)
    return {
        "NWBFile": {
            "session_description": "SpikeInterface ground truth",
            "identifier": "gt-0",
            "session_start_time": start,
        }
    }


@pytest.fixture(scope="module")
def neuroconv_files(tmp_path_factory):
    """The same ground truth, written by NeuroConv three ways."""
    from neuroconv.tools.spikeinterface import (
        write_sorting_analyzer_to_nwbfile,
        write_sorting_to_nwbfile,
    )
    from spikeinterface.core import create_sorting_analyzer

    folder = tmp_path_factory.mktemp("neuroconv")
    rec, sort, templates, locations, true_ttp = _ground_truth_recording()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        analyzer = create_sorting_analyzer(sort, rec, sparse=False, format="memory")
        analyzer.compute(["random_spikes", "templates"], progress_bar=False)
        bare = folder / "no_positions.nwb"
        write_sorting_analyzer_to_nwbfile(
            analyzer, nwbfile_path=bare, metadata=_metadata(), write_electrical_series=True
        )
        # NeuroConv 0.10.2 writes rel_x/rel_y from a "location" channel property only
        # (SpikeInterface 0.105 keeps positions in the probe): set it as a user would.
        rec_loc = rec.clone()
        rec_loc.set_property("location", rec.get_channel_locations())
        full = folder / "gt.nwb"
        write_sorting_analyzer_to_nwbfile(
            analyzer,
            nwbfile_path=full,
            metadata=_metadata(),
            recording=rec_loc,
            write_electrical_series=True,
        )
        sorting_only = folder / "sorting_only.nwb"
        depth_sort = sort.clone()
        depth_sort.set_property("depth_um", locations[:, 1])
        write_sorting_to_nwbfile(depth_sort, nwbfile_path=sorting_only, metadata=_metadata())
        no_depth = folder / "sorting_no_depth.nwb"
        write_sorting_to_nwbfile(sort, nwbfile_path=no_depth, metadata=_metadata())
    return {
        "full": full,
        "bare": bare,
        "sorting_only": sorting_only,
        "no_depth": no_depth,
        "truth": (templates, locations, true_ttp),
        "recording": rec,
        "sorting": sort,
    }


def test_neuroconv_file_both_paths(neuroconv_files):
    path = neuroconv_files["full"]
    _, locations, true_ttp = neuroconv_files["truth"]
    # two layers split in the middle of the probe (rel_y frame)
    bounds = LayerBoundaries({"upper": (400.0, 150.0), "lower": (150.0, -100.0)})
    true_layer = np.where(locations[:, 1] > 150.0, "upper", "lower")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnitsReadWarning)
        tpl = read_units(path, prefer="waveform_mean", layers=bounds)
        raw = read_units(path, layers=bounds)  # auto: raw voltage is there
    assert (tpl.source == "waveform_mean").all() and (raw.source == "raw").all()
    assert tpl.threshold_ms == 0.35  # NeuroConv's placeholder device: probe unknown
    assert (true_ttp < 0.25).sum() == 6 and (true_ttp > 0.45).sum() == 6  # narrow and broad
    for info in (tpl, raw):
        check_done_when(info, true_ttp, locations[:, 1], true_layer, bounds)
    assert agreement(raw, tpl, np.arange(tpl.n_units)) >= 0.95
    np.testing.assert_allclose(raw.trough_to_peak_ms, tpl.trough_to_peak_ms, atol=0.05)


def test_neuroconv_file_without_positions(neuroconv_files):
    """Electrodes without rel_x/rel_y: cell types still measured, depths unknown + warning."""
    _, _, true_ttp = neuroconv_files["truth"]
    with pytest.warns(UnitsReadWarning, match="rel_x/rel_y"):
        info = read_units(neuroconv_files["bare"], prefer="waveform_mean")
    assert np.isnan(info.depth_um).all()
    truth_ct = np.where(true_ttp < info.threshold_ms, "narrow", "broad")
    assert (info.cell_type == truth_ct).all()
    assert any("depth unknown" in w for w in info.warnings)


def test_sorting_only_file_unknown_with_warning(neuroconv_files):
    """No raw voltage, no waveform_mean: 'unknown' with a warning saying why; depth column."""
    _, locations, _ = neuroconv_files["truth"]
    with pytest.warns(UnitsReadWarning, match="no raw ElectricalSeries and no waveform_mean"):
        info = read_units(neuroconv_files["sorting_only"])
    assert set(info.cell_type) == {"unknown"} and set(info.source) == {"none"}
    assert np.isnan(info.trough_to_peak_ms).all()
    # the depth column already in the units table is used
    np.testing.assert_allclose(info.depth_um, locations[:, 1], rtol=1e-6)
    assert set(info.depth_source) == {"column"}
    # layers from boundaries still work on column depths
    info2 = read_units(neuroconv_files["sorting_only"], layers={"l34_rel_y": 150.0})
    assert set(info2.layer) <= {"13", "44", "56", "outside"}
    # spike times survive (read through SpikeInterface)
    sort = neuroconv_files["sorting"]
    t0 = sort.get_unit_spike_train(sort.unit_ids[0], return_times=True)
    np.testing.assert_allclose(info.spike_times[0], t0, atol=1e-4)


def test_sorting_only_file_without_depth(neuroconv_files):
    with pytest.warns(UnitsReadWarning, match="depth unknown"):
        info = read_units(neuroconv_files["no_depth"])
    assert np.isnan(info.depth_um).all() and set(info.layer) == {"unknown"}


def test_explicit_depth_column_overrides(neuroconv_files):
    with pytest.warns(UnitsReadWarning):
        info = read_units(neuroconv_files["sorting_only"], depth_column="depth_um")
    assert set(info.depth_source) == {"column"}
    with pytest.raises(ValueError, match="depth_column='nope' is not a units column"):
        read_units(neuroconv_files["sorting_only"], depth_column="nope")


# --------------------------------------------------------------------------- SpikeInterface objects


def test_sorting_with_recording(neuroconv_files):
    rec, sort = neuroconv_files["recording"], neuroconv_files["sorting"]
    _, locations, true_ttp = neuroconv_files["truth"]
    info = read_units(sort, recording=rec, highpass_hz=None, max_raw_s=5.0)
    assert (info.source == "raw").all()
    check_done_when(info, true_ttp, locations[:, 1])
    # main channel is a recording channel index
    assert ((info.main_channel >= 0) & (info.main_channel < 32)).all()


def test_sorting_with_waveform_property_positive_spikes(neuroconv_files):
    """A sorting carrying waveform_mean (volts): positive-going copies classify the same."""
    templates, locations, true_ttp = neuroconv_files["truth"]
    sort = neuroconv_files["sorting"].clone()
    flipped = templates.copy()
    flipped[1::3] *= -1.0  # every third unit positive-going
    sort.set_property("waveform_mean", flipped * 1e-6)
    sort.set_property("depth_um", locations[:, 1])
    with pytest.warns(UnitsReadWarning, match="no sampling rate"):
        info = read_units(sort, prefer="waveform_mean")
    truth_ct = np.where(true_ttp < info.threshold_ms, "narrow", "broad")
    np.testing.assert_array_equal(info.cell_type, truth_ct)
    np.testing.assert_allclose(info.trough_to_peak_ms, true_ttp, atol=0.03)


def test_sorting_without_probe_or_depth_errors(neuroconv_files):
    with pytest.raises(ValueError, match="no recording with a probe and no depth property"):
        read_units(neuroconv_files["sorting"])


def test_recording_without_probe_errors(neuroconv_files):
    from spikeinterface.core import NumpyRecording

    rec = neuroconv_files["recording"]
    traces = rec.get_traces(start_frame=0, end_frame=int(FS))
    bare = NumpyRecording([traces], sampling_frequency=FS)
    sort = neuroconv_files["sorting"].frame_slice(0, int(FS))
    with pytest.raises(ValueError, match="recording has no probe"):
        read_units(sort, recording=bare)


# --------------------------------------------------------------------------- bad input


def test_missing_and_non_nwb_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such NWB file"):
        read_units(tmp_path / "nope.nwb")
    junk = tmp_path / "junk.nwb"
    junk.write_text("not hdf5")
    with pytest.raises(ValueError, match="not a readable HDF5/NWB file"):
        read_units(junk)
    with pytest.raises(ValueError, match="is a folder"):
        read_units(tmp_path)
    with pytest.raises(TypeError, match="NWB file path or a spikeinterface BaseSorting"):
        read_units(42)


def test_bad_options(mock_file):
    with pytest.raises(ValueError, match="prefer='best'"):
        read_units(mock_file, prefer="best")
    with pytest.raises(TypeError, match="CellTypeParams"):
        read_units(mock_file, cell_type_params=0.3)
    with pytest.raises(TypeError, match="layers must be"):
        read_units(mock_file, layers=[1, 2])
    with pytest.raises(ValueError, match="unknown job_kwargs"):
        read_units(mock_file, job_kwargs={"n_job": 2})
    with pytest.raises(ValueError, match="max_raw_s"):
        read_units(mock_file, max_raw_s=-1)


# --------------------------------------------------------------------------- writing


def test_columns_and_writer(mock_file):
    info = read_units(mock_file, cell_type_params=CellTypeParams(0.3))
    assert info.n_units == 5 and (info.source == "waveform_mean").all()
    cols = {c.name: c for c in unit_columns(info)}
    assert set(cols) == {*UNIT_COLUMNS, "cell_type_margin_ms"} & {
        "trough_to_peak_ms",
        "cell_type",
        "depth_um",
        "layer",
        "cell_type_margin_ms",
    }
    for name in ("trough_to_peak_ms", "cell_type", "depth_um", "layer"):
        assert cols[name].description == UNIT_COLUMNS[name]
    rs = units_result_set(info)
    assert rs.config["units"]["cell_types"]["threshold_ms"] == 0.3
    out = add_unit_columns(mock_file, info)
    from pynwb import NWBHDF5IO

    with NWBHDF5IO(str(out), "r") as io:
        units = io.read().units
        np.testing.assert_array_equal(units["cell_type"][:], info.cell_type)
        np.testing.assert_allclose(units["depth_um"][:], info.depth_um)
        assert units["trough_to_peak_ms"].description == UNIT_COLUMNS["trough_to_peak_ms"]
    # written columns are read back as a depth column next time
    again = read_units(out, cell_type_params=CellTypeParams(0.3))
    np.testing.assert_array_equal(again.cell_type, info.cell_type)
    # re-threshold without re-reading
    assert set(info.reclassify(CellTypeParams(4.0)).cell_type) <= {"narrow", "unknown"}


def test_written_file_is_a_path(mock_file):
    info = read_units(mock_file)
    assert isinstance(add_unit_columns(mock_file, info, include_margin=False), Path)
