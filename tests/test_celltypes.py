"""Pure numerics of nwb_subspace.units.celltypes: spike widths, narrow/broad classes, layers."""

from __future__ import annotations

import numpy as np
import pytest

from nwb_subspace.units.celltypes import (
    LAYER_DEPTHS_UM,
    CellTypeParams,
    LayerBoundaries,
    assign_layers,
    classify_spike_width,
    default_threshold_ms,
    is_positive_going,
    layer_from_location,
    trough_to_peak_ms,
)

FS = 30000.0


def _shape(t: np.ndarray, bump_s: float) -> np.ndarray:
    trough = -np.exp(-0.5 * (t / 0.06e-3) ** 2)
    bump = 0.3 * np.exp(-0.5 * ((t - bump_s) / (0.25 * bump_s + 0.03e-3)) ** 2)
    return 100.0 * (trough + bump)


def spike(bump_s: float, n: int = 120, before: int = 30, fs: float = FS) -> np.ndarray:
    """A smooth negative spike: Gaussian trough at ``before``, positive bump after it."""
    return _shape((np.arange(n) - before) / fs, bump_s)


def true_ttp_ms(bump_s: float) -> float:
    """Trough-to-peak of the analytic shape, on a 0.1 µs grid."""
    t = np.arange(-1e-3, 3e-3, 1e-7)
    w = _shape(t, bump_s)
    i = int(np.argmin(w))
    return (int(np.argmax(w[i:])) * 1e-7) * 1e3


@pytest.mark.parametrize("ttp_ms", [0.15, 0.25, 0.4, 0.6, 0.8])
def test_trough_to_peak_negative_and_positive(ttp_ms):
    w = spike(ttp_ms * 1e-3)
    truth = true_ttp_ms(ttp_ms * 1e-3)
    assert trough_to_peak_ms(w, FS) == pytest.approx(truth, abs=0.01)
    # positive-going spike (e.g. near the soma's return current): flipped first
    assert trough_to_peak_ms(-w, FS) == pytest.approx(truth, abs=0.01)
    assert not is_positive_going(w) and is_positive_going(-w)


def test_trough_to_peak_batch_and_nan():
    waves = np.stack([spike(0.2e-3), spike(0.6e-3), np.full(120, np.nan), np.zeros(120)])
    out = trough_to_peak_ms(waves, FS)
    assert out.shape == (4,)
    np.testing.assert_allclose(out[:2], [true_ttp_ms(0.2e-3), true_ttp_ms(0.6e-3)], atol=0.01)
    assert np.isnan(out[2:]).all()
    with pytest.raises(ValueError, match="positive sampling rate"):
        trough_to_peak_ms(spike(0.2e-3), 0.0)
    with pytest.raises(ValueError, match="n_samples"):
        trough_to_peak_ms(np.zeros((2, 3, 4)), FS)


def test_trough_to_peak_upsampling_resolves_sub_sample():
    # 0.21 ms is 6.3 samples at 30 kHz: upsampling resolves it better than one sample
    w, truth = spike(0.21e-3), true_ttp_ms(0.21e-3)
    fine = abs(trough_to_peak_ms(w, FS, upsample=10) - truth)
    assert fine < 0.005
    assert fine <= abs(trough_to_peak_ms(w, FS, upsample=1) - truth) + 1e-9


def test_classify_threshold_edges_and_nan():
    params = CellTypeParams(threshold_ms=0.35)
    labels, margin = classify_spike_width([0.1, 0.3499, 0.35, 0.36, np.nan], params)
    assert labels.tolist() == ["narrow", "narrow", "broad", "broad", "unknown"]
    np.testing.assert_allclose(margin[:4], [-0.25, -0.0001, 0.0, 0.01], atol=1e-12)
    assert np.isnan(margin[4])
    # default params are 0.35 ms
    assert classify_spike_width([0.36])[0].tolist() == ["broad"]
    # re-thresholding with another params flips the 0.36 ms unit
    assert classify_spike_width([0.36], CellTypeParams(0.40))[0].tolist() == ["narrow"]


def test_classify_rejects_bad_input():
    with pytest.raises(ValueError, match=">= 0 ms"):
        classify_spike_width([-0.1])
    with pytest.raises(TypeError, match="CellTypeParams"):
        classify_spike_width([0.1], {"threshold_ms": 0.3})


@pytest.mark.parametrize("bad", [0.0, -1.0, 10.0, float("nan")])
def test_params_reject_implausible_threshold(bad):
    with pytest.raises(ValueError, match=r"threshold_ms=.*\(0, 5\) ms"):
        CellTypeParams(threshold_ms=bad)


def test_params_types():
    with pytest.raises(TypeError, match="milliseconds"):
        CellTypeParams(threshold_ms="0.35")
    with pytest.raises(ValueError, match="upsample"):
        CellTypeParams(upsample=0)
    assert CellTypeParams(0.3).to_dict() == {"threshold_ms": 0.3, "upsample": 10}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (None, 0.35),
        ("", 0.35),
        ("Neuropixels 1.0 probe, imec", 0.35),
        ("NeuroPixel 2.0", 0.35),
        ("NP1010", 0.35),
        ("Linear silicon probe, 64 contacts", 0.40),
        ("NeuroNexus A1x32", 0.40),
    ],
)
def test_probe_dependent_default(text, expected):
    assert default_threshold_ms(text) == expected
    assert CellTypeParams.for_probe(text).threshold_ms == expected


def test_layer_boundaries_nominal_matches_design():
    b = LayerBoundaries.from_nominal(l34_rel_y=800.0)
    # DESIGN §3: BS/1 = -800, L3/4 = 0, L4/5 = 200, L6/WM = 800 µm below L3/4; rel_y = l34 - d
    assert b.layers == {"13": (1600.0, 800.0), "44": (800.0, 600.0), "56": (600.0, 0.0)}
    same = LayerBoundaries.from_boundaries({k: 800.0 - v for k, v in LAYER_DEPTHS_UM.items()})
    assert same == b
    assert LayerBoundaries.from_dict(b.to_dict()) == b
    assert LayerBoundaries.from_dict({"l34_rel_y": 800}) == b


def test_assign_layers_edges():
    b = LayerBoundaries.from_nominal(500.0)
    depths = [1300.0, 1301.0, 500.0, 500.5, 300.0, 299.0, -299.0, -300.0, np.nan]
    assert assign_layers(depths, b).tolist() == [
        "13",
        "outside",
        "44",
        "13",
        "56",
        "56",
        "56",
        "outside",
        "unknown",
    ]
    np.testing.assert_allclose(b.distance_to_boundary([510.0, 320.0]), [10.0, 20.0])
    # a plain config dict works too
    assert assign_layers([400.0], {"layers": {"deep": [450, 0]}}).tolist() == ["deep"]


def test_assign_layers_matches_simulator():
    from nwb_subspace.simulate.waveforms import assign_layers as sim_assign
    from nwb_subspace.simulate.waveforms import layer_boundaries

    bounds = layer_boundaries(800.0)
    y = np.linspace(-100.0, 1700.0, 721)
    ours = assign_layers(y, LayerBoundaries.from_boundaries(bounds))
    np.testing.assert_array_equal(ours, sim_assign(y, bounds))


@pytest.mark.parametrize(
    "layers",
    [
        {},
        {"a": (0.0, 100.0)},
        {"a": (100.0, 0.0), "b": (50.0, -10.0)},
        {"unknown": (1.0, 0.0)},
        {"a": ("x", 0.0)},
    ],
)
def test_layer_boundaries_validation(layers):
    with pytest.raises(ValueError, match="layer|overlap"):
        LayerBoundaries(layers)


def test_layer_config_errors():
    with pytest.raises(ValueError, match="l34_rel_y"):
        LayerBoundaries.from_dict({"foo": 1})
    with pytest.raises(ValueError, match="lacks"):
        LayerBoundaries.from_boundaries({"L3/4": 0.0})
    with pytest.raises(TypeError, match="number"):
        LayerBoundaries.from_nominal("800")


@pytest.mark.parametrize(
    ("location", "grouped", "fine"),
    [
        ("A1, L2/3", "13", "L2/3"),
        ("auditory cortex layer 4", "44", "L4"),
        ("Layer IV", "44", "L4"),
        ("L5", "56", "L5"),
        ("L6b", "56", "L6"),
        ("deep layers 5 and 6", "56", "L5/6"),
        ("AUDp5", "56", "L5"),
        ("VISp2/3", "13", "L2/3"),
        ("L23", "13", "L2/3"),
        ("layer 1", "13", "L1"),
        ("L4/5", "unknown", "L4/5"),
        ("A1", "unknown", "unknown"),
        ("V1", "unknown", "unknown"),
        ("CA1", "unknown", "unknown"),
        ("limbic cortex", "unknown", "unknown"),
        ("auditory cortex", "unknown", "unknown"),
        (None, "unknown", "unknown"),
    ],
)
def test_layer_from_location(location, grouped, fine):
    assert layer_from_location(location) == grouped
    assert layer_from_location(location, grouped=False) == fine


def test_layer_from_location_type():
    assert layer_from_location(b"L5") == "56"
    with pytest.raises(TypeError, match="location must be a str"):
        layer_from_location(5)
