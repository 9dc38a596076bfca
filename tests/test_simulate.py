"""Tests of nwb_subspace.simulate (simulated sessions with ground truth)."""

from __future__ import annotations

import numpy as np
import pytest
from pynwb import NWBHDF5IO
from scipy.ndimage import gaussian_filter1d

from nwb_subspace.simulate import (
    PRESETS,
    GroundTruth,
    SimulationConfig,
    load_truth,
    simulate_session,
)
from nwb_subspace.simulate.neurons import nonlinearity, poisson_spikes, project
from nwb_subspace.simulate.population import draw_population
from nwb_subspace.simulate.waveforms import (
    PTP_RANGE_UV,
    assign_layers,
    make_probe,
    make_templates,
    trough_to_peak,
)
from nwb_subspace.stimulus.spectrogram import SpectrogramSettings, compute_spectrogram

# A small, fast session for determinism and mode checks.
MINI = SimulationConfig(
    name="mini",
    estimation_s=6.0,
    sequence_s=3.0,
    n_validation=1,
    validation_s=1.0,
    validation_repeats=2,
    n_units=4,
    spectrogram=SpectrogramSettings(n_channels=16),
)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The ``tiny`` preset with a raw series, seed 1: (nwb path, truth)."""
    path = tmp_path_factory.mktemp("sim") / "tiny.nwb"
    nwb_path, truth_path = simulate_session(path, preset="tiny", seed=1, raw=True)
    return nwb_path, GroundTruth.load(truth_path)


@pytest.fixture(scope="module")
def tiny_data(tiny):
    """Sound spectrogram recomputed from the file, trials, spike trains and waveforms."""
    path, truth = tiny
    settings = SpectrogramSettings.from_dict(
        {k: v for k, v in truth.meta["spectrogram"].items() if k in SpectrogramSettings().to_dict()}
    )
    with NWBHDF5IO(path, "r") as io:
        nwb = io.read()
        sound = nwb.stimulus["sound"]
        trials = nwb.trials.to_dataframe()
        # level="rms": the analysis measures the RMS over the presented samples
        presented = np.round(trials[["start_time", "stop_time"]].to_numpy() * sound.rate)
        spec = compute_spectrogram(
            sound.data, sound.rate, settings, presented=presented.astype(np.int64)
        )
        units = nwb.units.to_dataframe()
        waveforms = np.asarray(nwb.units["waveform_mean"].data[:])
        electrodes = nwb.electrodes.to_dataframe()
    spikes = [np.asarray(s) for s in units["spike_times"]]
    return {
        "spec": spec,
        "trials": trials,
        "units": units,
        "spikes": spikes,
        "waveforms": waveforms,
        "electrodes": electrodes,
    }


# --------------------------------------------------------------------------- file checks


def test_tiny_passes_pynwb_validate_and_nwbinspector(tiny):
    import pynwb
    from nwbinspector import Importance, inspect_nwbfile

    path, _ = tiny
    errors = pynwb.validate(path=str(path))
    errors = errors[0] if isinstance(errors, tuple) else errors
    assert list(errors) == []
    messages = [m for m in inspect_nwbfile(nwbfile_path=path) if m is not None]
    bad = [m for m in messages if m.importance.value >= Importance.BEST_PRACTICE_VIOLATION.value]
    assert bad == [], [m.message for m in bad]


def test_read_nwb_sorting_reads_units(tiny, tiny_data):
    from spikeinterface.extractors import read_nwb_recording, read_nwb_sorting

    path, truth = tiny
    sorting = read_nwb_sorting(str(path), electrical_series_path="acquisition/ElectricalSeries")
    assert list(sorting.get_unit_ids()) == list(truth.unit_names)
    counts = sorting.count_num_spikes_per_unit()
    for name, train in zip(truth.unit_names, tiny_data["spikes"], strict=True):
        assert counts[name] == train.size > 0
    rec = read_nwb_recording(str(path))
    assert rec.get_num_channels() == 64 and rec.get_sampling_frequency() == 30000.0
    np.testing.assert_allclose(rec.get_channel_gains(), 0.195)


def test_raw_series_holds_the_spikes(tiny, tiny_data):
    from spikeinterface.extractors import read_nwb_recording

    path, truth = tiny
    rec = read_nwb_recording(str(path))
    traces = rec.get_traces(return_in_uV=True)
    u = int(np.argmax(np.ptp(tiny_data["waveforms"], axis=1).max(axis=1)))
    ch = int(truth.main_electrode[u])
    t = tiny_data["spikes"][u]
    s = np.round(t[(t > 0.01) & (t < rec.get_total_duration() - 0.01)] * 30000).astype(int)
    trough_uv = tiny_data["waveforms"][u, :, ch].min() * 1e6
    assert s.size > 0
    assert np.median(traces[s, ch]) < 0.5 * trough_uv  # spikes injected, in volts x 1e6


def test_templates_are_visible_above_the_noise(tiny_data):
    """Every unit's main-channel peak-to-peak lies in PTP_RANGE_UV (40-200 µV; noise ~8 µV)."""
    ptp_uv = np.ptp(tiny_data["waveforms"], axis=1).max(axis=1) * 1e6
    low, high = PTP_RANGE_UV
    assert np.all(ptp_uv >= low * 0.999) and np.all(ptp_uv <= high * 1.001), ptp_uv


def test_make_templates_bounds_amplitude_without_changing_shape():
    rng_a, rng_b = np.random.default_rng(0), np.random.default_rng(0)
    probe = make_probe(16, 20.0)
    positions = np.column_stack([np.zeros(6), np.linspace(20, 280, 6), np.full(6, 150.0)])
    narrow = np.arange(6) % 2 == 0
    loud, _ = make_templates(rng_a, probe, positions, narrow, 30000.0)
    quiet, _ = make_templates(rng_b, probe, positions, narrow, 30000.0, ptp_range_uv=(1.0, 1.0))
    ptp = np.ptp(loud, axis=1).max(axis=1)
    assert np.all((ptp >= 40.0 * 0.999) & (ptp <= 200.0 * 1.001)), ptp
    np.testing.assert_allclose(np.ptp(quiet, axis=1).max(axis=1), 1.0, rtol=1e-5)
    # Scaling only: same durations and main channels.
    np.testing.assert_array_equal(
        trough_to_peak(loud, 30000.0)[1], trough_to_peak(quiet, 30000.0)[1]
    )
    np.testing.assert_allclose(trough_to_peak(loud, 30000.0)[0], trough_to_peak(quiet, 30000.0)[0])
    with pytest.raises(ValueError, match="ptp_range_uv"):
        make_templates(rng_a, probe, positions, narrow, 30000.0, ptp_range_uv=(0.0, 10.0))


def test_file_layout(tiny, tiny_data):
    path, truth = tiny
    cfg = PRESETS["tiny"]
    trials = tiny_data["trials"]
    assert {"start_time", "stop_time", "sound_id", "is_validation", "repeat"} <= set(trials)
    assert np.all(np.diff(trials.start_time) > 0)
    assert np.all(trials.start_time.values[1:] - trials.stop_time.values[:-1] >= cfg.gap_s - 1e-9)
    val = trials[trials.is_validation]
    assert val.sound_id.nunique() == cfg.n_validation
    assert (val.groupby("sound_id").size() == cfg.validation_repeats).all()
    est = trials[~trials.is_validation]
    assert est.sound_id.is_unique and len(est) == cfg.n_estimation
    # validation repeats are interleaved with estimation sounds
    assert not trials.is_validation.is_monotonic_increasing
    with NWBHDF5IO(path, "r") as io:
        nwb = io.read()
        sound = nwb.stimulus["sound"]
        assert sound.rate == 44100.0 and sound.data.dtype == np.float32
        assert sound.data.shape[0] / sound.rate >= trials.stop_time.max()
        assert nwb.units.waveform_rate == 30000.0
        assert nwb.subject.species.endswith("NCBITaxon_9669")
        assert len(nwb.units["electrodes"][0]) == 64
    ele = tiny_data["electrodes"]
    assert {"rel_x", "rel_y", "location", "group"} <= set(ele)
    np.testing.assert_allclose(ele.rel_y, np.arange(64) * 25.0)
    w = tiny_data["waveforms"]
    assert w.shape[0] == truth.n_units and w.shape[2] == 64
    assert 1e-5 < np.abs(w).max() < 1e-3  # volts
    assert list(tiny_data["units"]["unit_name"]) == list(truth.unit_names)


# --------------------------------------------------------------------------- science checks


def test_truth_rate_explains_validation_psth(tiny, tiny_data):
    _, truth = tiny
    spec = tiny_data["spec"]
    rate = truth.rate(spec.data)
    assert rate.shape == (spec.n_bins, truth.n_units)
    val = tiny_data["trials"][tiny_data["trials"].is_validation]
    r_native, r_smooth = [], []
    for u, train in enumerate(tiny_data["spikes"]):
        psth, true = [], []
        for _, grp in val.groupby("sound_id"):
            b0 = np.round(grp.start_time.values * spec.rate).astype(int)
            nb = int(round((grp.stop_time.values[0] - grp.start_time.values[0]) * spec.rate))
            counts = [np.histogram(train, (b + np.arange(nb + 1)) / spec.rate)[0] for b in b0]
            psth.append(np.mean(counts, axis=0) * spec.rate)
            true.append(rate[b0[0] : b0[0] + nb, u])
            # the true rate is identical across repeats (silent gaps >= the filter memory)
            np.testing.assert_allclose(rate[b0[-1] : b0[-1] + nb, u], true[-1], rtol=1e-6)
        p, r = np.concatenate(psth), np.concatenate(true)
        r_native.append(np.corrcoef(p, r)[0, 1])
        r_smooth.append(np.corrcoef(gaussian_filter1d(p, 1.0), r)[0, 1])
    # measured on this seed: median 0.71 (native 10 ms bins), 0.84 (smoothed, sigma 10 ms)
    assert np.median(r_native) > 0.5
    assert np.median(r_smooth) > 0.7


def test_rates_realistic(tiny, tiny_data):
    _, truth = tiny
    duration = tiny_data["spec"].n_bins / tiny_data["spec"].rate
    observed = np.array([t.size for t in tiny_data["spikes"]]) / duration
    assert np.all((observed > 1.0) & (observed < 30.0)), observed
    assert np.all((truth.mean_rate > 1.0) & (truth.mean_rate < 30.0))
    # dead time lowers the observed rate a little below the free rate
    assert np.all(observed <= truth.mean_rate * 1.15)
    assert np.all(observed >= truth.mean_rate * 0.7)
    for t in tiny_data["spikes"]:
        assert np.all(np.diff(t) >= PRESETS["tiny"].refractory_s - 1e-9)


def test_cell_type_waveform_durations(tiny, tiny_data):
    _, truth = tiny
    narrow = truth.cell_type == "narrow"
    assert narrow.any() and (~narrow).any()
    ttp_ms = truth.trough_to_peak_s * 1000
    assert np.all((ttp_ms[narrow] >= 0.15) & (ttp_ms[narrow] <= 0.3)), ttp_ms
    assert np.all((ttp_ms[~narrow] >= 0.5) & (ttp_ms[~narrow] <= 0.8)), ttp_ms
    # the file's waveforms give the same durations on the main channel
    w = tiny_data["waveforms"]
    for u, ch in enumerate(truth.main_electrode):
        trace = w[u, :, ch]
        trough = int(np.argmin(trace))
        assert int(np.argmax(trace[trough:])) / 30000.0 == pytest.approx(truth.trough_to_peak_s[u])


def test_depths_and_layers_consistent(tiny, tiny_data):
    _, truth = tiny
    b = truth.layer_boundaries
    l34 = truth.meta["l34_rel_y"]
    assert b == {"BS/1": l34 + 800, "L3/4": l34, "L4/5": l34 - 200, "L6/WM": l34 - 800}
    rel_y = truth.position_um[:, 1]
    np.testing.assert_allclose(truth.depth_um, l34 - rel_y)
    np.testing.assert_array_equal(truth.layer, assign_layers(rel_y, b))
    assert set(truth.layer) <= {"13", "44", "56"}
    assert np.all((rel_y > b["L6/WM"]) & (rel_y < b["BS/1"]))
    ele_y = tiny_data["electrodes"].rel_y.values
    assert np.all(np.abs(ele_y[truth.main_electrode] - rel_y) < 50.0)


def test_truth_fields_and_space(tiny):
    path, truth = tiny
    assert truth.filters.shape == (truth.n_units, 6, 32, 20)
    assert np.all((truth.k >= 1) & (truth.k <= 6))
    for u in range(truth.n_units):
        assert np.all(truth.filters[u, truth.k[u] :] == 0)
    assert set(truth.nl_kind) <= {"hill", "bowl", "monotonic"}
    assert truth.meta["spectrogram"]["n_channels"] == 32 and truth.meta["bin_s"] == 0.01
    np.testing.assert_allclose(truth.frequencies[[0, -1]], [200.0, 20000.0])
    again = load_truth(path)  # via the NWB path
    for name in ("filters", "nl_kind", "unit_names", "site_basis"):
        np.testing.assert_array_equal(getattr(again, name), getattr(truth, name))
    assert again.meta == truth.meta


def test_shared_filters_lie_in_site_basis(tiny):
    _, truth = tiny
    basis = truth.site_basis.reshape(truth.site_basis.shape[0], -1)
    np.testing.assert_allclose(basis @ basis.T, np.eye(basis.shape[0]), atol=1e-10)
    for u in range(truth.n_units):
        f = truth.unit_filters(u).reshape(int(truth.k[u]), -1)
        resid = f - (f @ basis.T) @ basis
        assert np.linalg.norm(resid) < 1e-8 * np.linalg.norm(f)


def _fake_spec(n_bins: int = 3000, n_channels: int = 16, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = gaussian_filter1d(rng.gamma(1.0, 1.0, (n_bins, n_channels)), 2.0, axis=0)
    return gaussian_filter1d(x, 1.0, axis=1)


def test_independent_filters_leave_site_basis():
    cfg = MINI.replace(subspace="independent", n_units=6)
    pop = draw_population(np.random.default_rng(0), cfg, _fake_spec())
    basis = pop["site_basis"].reshape(cfg.site_dim, -1)
    for u in range(cfg.n_units):
        f = pop["filters"][u, : pop["k"][u]].reshape(pop["k"][u], -1)
        resid = f - (f @ basis.T) @ basis
        assert np.linalg.norm(resid) > 0.1 * np.linalg.norm(f)
    assert np.isnan(pop["site_coords"]).all()


def test_projections_are_white_and_tiling_modes_differ():
    spec = _fake_spec()
    spread = {}
    for tiling in ("scattered", "clustered"):
        cfg = MINI.replace(n_units=12, tiling=tiling, k_range=(2, 4))
        pop = draw_population(np.random.default_rng(1), cfg, spec)
        for u in range(cfg.n_units):
            kk = pop["k"][u]
            z = project(spec, pop["filters"][u, :kk]) - pop["offsets"][u, :kk]
            np.testing.assert_allclose(z.mean(axis=0), 0, atol=1e-8)
            np.testing.assert_allclose(np.cov(z, rowvar=False), np.eye(kk), atol=1e-6)
        c = pop["site_centre"]
        spread[tiling] = np.linalg.norm(c - c.mean(axis=0), axis=1).mean()
    assert spread["clustered"] < 0.5 * spread["scattered"]


def test_narrow_units_get_broader_tuning():
    cfg = MINI.replace(n_units=40, fraction_narrow=0.5, nonlinearity_mix=(1.0, 0.0, 0.0))
    pop = draw_population(np.random.default_rng(2), cfg, _fake_spec())
    width = pop["nl_width"] / pop["k"] ** 0.25
    narrow = pop["cell_type"] == "narrow"
    assert width[narrow].mean() > 1.3 * width[~narrow].mean()


# --------------------------------------------------------------------------- neuron pieces


def test_nonlinearity_shapes():
    z = np.linspace(-3, 3, 61)[:, None]
    hill = nonlinearity("hill", z, np.array([0.5]), 1.0)
    bowl = nonlinearity("bowl", z, np.array([0.0]), 1.0)
    mono = nonlinearity("monotonic", z, np.array([0.0]), 0.3, np.array([1.0]))
    assert np.argmax(hill) == 35 and hill[0] < 0.1 and hill[-1] < 0.1
    assert np.argmin(bowl) == 30 and bowl[0] > 0.9 and bowl[-1] > 0.9
    assert np.all(np.diff(mono) >= 0) and mono[0] < 1e-3
    np.testing.assert_allclose(nonlinearity("hill", z, [0.5], 1.0, power=3.0), hill**3)
    with pytest.raises(ValueError, match="sigmoid"):
        nonlinearity("sigmoid", z, [0.0], 1.0)


def test_poisson_spikes_rate_and_refractory():
    rng = np.random.default_rng(0)
    rate = np.where(np.arange(20000) % 200 < 100, 80.0, 5.0)
    t = poisson_spikes(rng, rate, 0.01, 0.002, resolution_s=1 / 30000)
    assert np.all(np.diff(t) >= 0.002 - 1e-9)
    bins = np.floor(t / 0.01).astype(int)
    high = (bins % 200 < 100).sum() / (100 * 100 * 0.01)
    low = (bins % 200 >= 100).sum() / (100 * 100 * 0.01)
    assert high == pytest.approx(80.0 / (1 + 80.0 * 0.002), rel=0.05)
    assert low == pytest.approx(5.0, rel=0.1)
    np.testing.assert_allclose(t * 30000, np.round(t * 30000), atol=1e-6)


# --------------------------------------------------------------------------- determinism, errors


def test_deterministic_from_seed(tmp_path):
    runs = {}
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        nwb_path, _ = simulate_session(tmp_path / f"{name}.nwb", preset=MINI, seed=seed)
        with NWBHDF5IO(nwb_path, "r") as io:
            nwb = io.read()
            runs[name] = (
                nwb.stimulus["sound"].data[:],
                [np.asarray(s) for s in nwb.units.to_dataframe()["spike_times"]],
            )
    (sa, ka), (sb, kb), (sc, kc) = runs["a"], runs["b"], runs["c"]
    np.testing.assert_array_equal(sa, sb)
    for x, y in zip(ka, kb, strict=True):
        np.testing.assert_array_equal(x, y)
    assert sa.shape != sc.shape or not np.array_equal(sa, sc)
    assert any(x.shape != y.shape or not np.array_equal(x, y) for x, y in zip(ka, kc, strict=True))


def test_existing_file_and_bad_arguments(tmp_path):
    path = tmp_path / "x.nwb"
    path.write_bytes(b"")
    with pytest.raises(FileExistsError, match="overwrite"):
        simulate_session(path, preset=MINI)
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        simulate_session(tmp_path / "y.nwb", preset="huge")
    with pytest.raises(TypeError):
        simulate_session(tmp_path / "y.nwb", preset=3)
    with pytest.raises(ValueError, match="seed"):
        simulate_session(tmp_path / "y.nwb", preset=MINI, seed=-1)
    with pytest.raises(FileNotFoundError):
        simulate_session(tmp_path / "no" / "y.nwb", preset=MINI)
    assert not list(tmp_path.glob("*.tmp*"))


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"subspace": "mixed"}, "subspace"),
        ({"tiling": "grid"}, "tiling"),
        ({"n_units": 0}, "n_units"),
        ({"k_range": (0, 3)}, "k_range"),
        ({"k_range": (1, 7)}, "k_range"),
        ({"n_lags": 40}, "n_lags"),
        ({"gap_s": 0.05}, "gap_s"),
        ({"fraction_narrow": 1.5}, "fraction_narrow"),
        ({"audio_fs": 16000.0}, "audio_fs"),
        ({"nonlinearity_mix": (0.0, 0.0, 0.0)}, "nonlinearity_mix"),
        ({"site_dim": 3}, "site_dim"),
        ({"validation_repeats": 1}, "validation_repeats"),
    ],
)
def test_config_validation(changes, match):
    with pytest.raises(ValueError, match=match):
        SimulationConfig(**changes)


def test_config_replace_and_dict_roundtrip():
    with pytest.raises(TypeError, match="unknown"):
        MINI.replace(n_neurons=3)
    for cfg in PRESETS.values():
        assert SimulationConfig.from_dict(cfg.to_dict()) == cfg
    assert set(PRESETS) == {"tiny", "small", "realistic", "population", "paper"}
    assert PRESETS["small"].n_units == 30 and PRESETS["paper"].n_units == 60


@pytest.mark.slow
def test_cli_simulate(tmp_path, capsys):
    from nwb_subspace.cli.main import main

    out = tmp_path / "cli.nwb"
    assert main(["simulate", str(out), "--preset", "tiny", "--seed", "1"]) == 0
    assert out.exists() and (tmp_path / "cli.truth.npz").exists()
    assert main(["simulate", str(out), "--preset", "tiny"]) == 2  # exists, no --overwrite
    assert "wrote" in capsys.readouterr().out
