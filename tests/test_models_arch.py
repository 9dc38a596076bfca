"""Architecture tests for nwb_subspace.models (shapes, causality, rebuild, metadata)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from nwb_subspace.models import (
    MODEL_CLASSES,
    CausalDepthwiseConv1d,
    DoubleExponential,
    EncodingModel,
    PopulationCNN,
    PopulationLN,
    SubspaceModel,
    build_model,
)

F_BINS = 12
N_UNITS = 5

# Small but structurally complete configurations of each kind.
CONFIGS: dict[str, dict] = {
    "cnn": dict(
        n_frequencies=F_BINS,
        n_units=N_UNITS,
        n_channels1=7,
        n_taps1=4,
        n_channels2=6,
        n_taps2=3,
        n_hidden=9,
    ),
    "ln": dict(n_frequencies=F_BINS, n_units=N_UNITS, n_channels=8, n_taps=6),
    "subspace": dict(n_frequencies=F_BINS, n_units=N_UNITS, n_lags=5, n_components=[1, 3, 2, 3, 1]),
}
EXPECTED_MEMORY = {"cnn": 4 + 3 - 1, "ln": 6, "subspace": 5}


def _model(kind: str, seed: int = 0, **overrides) -> EncodingModel:
    torch.manual_seed(seed)
    model = build_model(kind, {**CONFIGS[kind], **overrides})
    if kind == "subspace":
        gen = torch.Generator().manual_seed(seed + 100)
        model.set_bases(
            [torch.randn(k, F_BINS, 5, generator=gen) for k in model.config["n_components"]]
        )
    return model.eval()


def _x(batch: int = 3, time: int = 40, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, time, F_BINS, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(params=sorted(CONFIGS))
def kind(request) -> str:
    return request.param


# ---- defaults from docs/methods.md ("Architectures") ---------------------------------------------------------


def test_default_sizes_and_memory():
    cnn = PopulationCNN(32, 60)
    assert cnn.memory == 24
    assert cnn.core.spectral.shape == (70, 32)
    assert cnn.core.temporal1.weight.shape == (70, 15)
    assert cnn.core.mix.shape == (80, 70)
    assert cnn.core.temporal2.weight.shape == (80, 10)
    assert cnn.core.dense.weight.shape == (100, 80)
    assert cnn.readout.weight.shape == (60, 100)
    ln = PopulationLN(32, 60)
    assert ln.memory == 25
    assert ln.core.spectral.shape == (120, 32)
    assert ln.core.temporal.weight.shape == (120, 25)
    sub = SubspaceModel(32, 4, n_lags=20, n_components=[3, 1, 4, 2])
    assert sub.memory == 20
    assert sub.core.bases.shape == (4, 4, 32, 20)
    assert sub.readout.weight1.shape == (4, 4, 15)
    assert sub.readout.weight2.shape == (4, 15, 15)
    assert set(MODEL_CLASSES) == {"cnn", "ln", "subspace"}
    assert SubspaceModel(32, 3, n_lags=20, n_components=4).config["n_components"] == [4, 4, 4]


# ---- shapes, memory, config ----------------------------------------------------------


def test_output_shape_and_memory(kind):
    model = _model(kind)
    assert model.kind == kind
    assert model.memory == EXPECTED_MEMORY[kind]
    for time in (1, 7, 40):
        y = model(_x(time=time))
        assert y.shape == (3, time, N_UNITS)
        assert y.dtype == torch.float32
        assert torch.isfinite(y).all()
    assert model.drive(_x()).shape == (3, 40, N_UNITS)


def test_config_is_json_and_rebuild_predicts_identically(kind):
    model = _model(kind, seed=3)
    config = json.loads(json.dumps(model.config))
    assert config == model.config
    torch.manual_seed(99)  # a different init, overwritten by load_state_dict
    rebuilt = build_model(kind, config)
    rebuilt.load_state_dict(model.state_dict())
    rebuilt.eval()
    x = _x(batch=2, time=60)
    with torch.no_grad():
        diff = (rebuilt(x) - model(x)).abs().max().item()
    assert diff < 1e-6
    assert rebuilt.config == model.config


def test_init_is_deterministic_under_manual_seed(kind):
    a, b = _model(kind, seed=5), _model(kind, seed=5)
    for key, value in a.state_dict().items():
        torch.testing.assert_close(value, b.state_dict()[key], rtol=0, atol=0)


def test_no_output_nonlinearity_returns_drive(kind):
    model = _model(kind, output_nonlinearity=False)
    assert model.output is None
    x = _x()
    torch.testing.assert_close(model(x), model.drive(x))
    assert not any(key.startswith("output.") for key in model.state_dict())


# ---- causality -----------------------------------------------------------------------


def test_causal_with_exact_memory(kind):
    """d y[t] / d x[s] is nonzero exactly for t - memory < s <= t."""
    model = _model(kind).double()
    x = _x(batch=4, time=30).double().requires_grad_(True)
    memory = model.memory
    for t in (0, 3, 17, 29):
        (grad,) = torch.autograd.grad(model(x)[:, t].sum(), x)
        support = grad.abs().sum(dim=(0, 2)) > 0  # over time
        expected = torch.zeros(30, dtype=torch.bool)
        expected[max(0, t - memory + 1) : t + 1] = True
        assert torch.equal(support, expected), (t, support.nonzero().ravel().tolist())


def test_perturbation_changes_only_the_memory_window(kind):
    model = _model(kind)
    x = _x(time=50)
    s = 20
    x2 = x.clone()
    x2[:, s] += 1.0
    with torch.no_grad():
        changed = (model(x2) - model(x)).abs().amax(dim=(0, 2)) > 0
    assert changed[s : s + model.memory].all()
    assert not changed[:s].any()
    assert not changed[s + model.memory :].any()


def test_start_behaves_as_preceded_by_silence(kind):
    """Left zero padding = running on the same input preceded by silent (zero) bins."""
    model = _model(kind)
    x = _x(time=30)
    padded = torch.cat([torch.zeros(3, 11, F_BINS), x], dim=1)
    with torch.no_grad():
        torch.testing.assert_close(model(padded)[:, 11:], model(x), rtol=0, atol=1e-6)


def test_causal_depthwise_conv_matches_definition():
    torch.manual_seed(0)
    conv = CausalDepthwiseConv1d(3, 4)
    x = torch.randn(2, 3, 10)
    y = conv(x)
    assert y.shape == x.shape
    xp = torch.nn.functional.pad(x, (3, 0))
    t = 6
    manual = (conv.weight[None] * xp[:, :, t : t + 4]).sum(-1) + conv.bias
    torch.testing.assert_close(y[:, :, t], manual)
    # last tap multiplies the current bin
    assert torch.isclose(
        conv.weight[1, -1], (conv(torch.eye(1, 10).expand(1, 3, 10)) - conv.bias[:, None])[0, 1, 0]
    )


def test_ln_strf_reproduces_drive():
    model = _model("ln")
    x = _x(time=25)
    strf = model.strf()  # (unit, frequency, lag), time order
    mem = model.memory
    xp = torch.cat([torch.zeros(3, mem - 1, F_BINS), x], dim=1)
    t = 12
    window = xp[:, t : t + mem]  # (batch, lag, frequency)
    manual = torch.einsum("ufj,bjf->bu", strf, window) + model.readout.bias
    with torch.no_grad():
        torch.testing.assert_close(model.drive(x)[:, t], manual, rtol=1e-5, atol=1e-5)


# ---- tensor_dims ---------------------------------------------------------------------


def test_tensor_dims_cover_state_dict(kind):
    for output_nonlinearity in (True, False):
        model = _model(kind, output_nonlinearity=output_nonlinearity)
        state = model.state_dict()
        dims = model.tensor_dims()
        assert set(dims) == set(state)
        sizes: dict[str, int] = {}
        for key, names in dims.items():
            assert isinstance(names, tuple) and all(isinstance(n, str) for n in names)
            assert len(names) == state[key].ndim, key
            assert len(set(names)) == len(names), key
            for name, size in zip(names, state[key].shape, strict=True):
                # one name, one size, across the whole model
                assert sizes.setdefault(name, size) == size, (key, name)
        assert sizes["unit"] == N_UNITS
        assert sizes.get("frequency", F_BINS) == F_BINS


# ---- bad config / bad input ----------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "config", "error", "match"),
    [
        ("rnn", {}, ValueError, "unknown model kind 'rnn'"),
        ("cnn", {"n_frequencies": 32, "n_units": 4, "n_taps": 3}, ValueError, "unknown config"),
        ("cnn", {"n_frequencies": 32}, ValueError, "lacks required key"),
        ("cnn", {"n_frequencies": 32, "n_units": 0}, ValueError, "n_units must be >= 1"),
        ("cnn", {"n_frequencies": 32, "n_units": 4, "n_taps1": 2.5}, TypeError, "n_taps1"),
        ("ln", {"n_frequencies": 32, "n_units": 4, "n_taps": True}, TypeError, "n_taps"),
        ("ln", {"n_frequencies": 32, "n_units": 4, "output_nonlinearity": 1}, TypeError, "True"),
        ("ln", [("n_frequencies", 32)], TypeError, "must be a dict"),
        (
            "subspace",
            {"n_frequencies": 32, "n_units": 3, "n_lags": 20, "n_components": [2, 2]},
            ValueError,
            "2 entries but n_units=3",
        ),
        (
            "subspace",
            {"n_frequencies": 32, "n_units": 2, "n_lags": 20, "n_components": [2, 0]},
            ValueError,
            r"n_components\[1\]",
        ),
    ],
)
def test_bad_config_raises(kind, config, error, match):
    with pytest.raises(error, match=match):
        build_model(kind, config)


def test_bad_input_raises():
    model = _model("cnn")
    with pytest.raises(ValueError, match=r"unsqueeze"):
        model(torch.zeros(10, F_BINS))
    with pytest.raises(ValueError, match=r"\(batch, time, 12\)"):
        model(torch.zeros(1, 10, F_BINS + 1))
    with pytest.raises(TypeError, match="float64"):
        model(torch.zeros(1, 10, F_BINS, dtype=torch.float64))
    with pytest.raises(TypeError, match="torch.Tensor"):
        model(np.zeros((1, 10, F_BINS), dtype=np.float32))


def test_bad_bases_raise():
    model = SubspaceModel(4, 2, n_lags=3, n_components=[1, 2])
    with pytest.raises(ValueError, match=r"unit 1 has shape \(1, 4, 3\), expected \(2, 4, 3\)"):
        model.set_bases([np.zeros((1, 4, 3)), np.zeros((1, 4, 3))])
    with pytest.raises(ValueError, match="got 1 bases for 2 units"):
        model.set_bases([np.zeros((1, 4, 3))])
    with pytest.raises(TypeError, match="list"):
        SubspaceModel.from_bases(np.zeros((2, 1, 4, 3)))
    with pytest.raises(ValueError, match="same F and D"):
        SubspaceModel.from_bases([np.zeros((1, 4, 3)), np.zeros((1, 5, 3))])


# ---- subspace model ------------------------------------------------------------------


def test_subspace_from_bases_projects_the_stimulus():
    gen = torch.Generator().manual_seed(0)
    bases = [torch.randn(k, F_BINS, 4, generator=gen) for k in (2, 1, 3)]
    model = SubspaceModel.from_bases(bases, output_nonlinearity=False)
    assert model.config["n_components"] == [2, 1, 3] == model.n_components
    assert model.memory == 4
    x = _x(batch=2, time=20)
    proj = model.core(torch.cat([torch.zeros(2, 3, F_BINS), x], dim=1))  # (b, t, unit, k_max)
    t = 10
    window = x[:, t - 3 : t + 1]  # (batch, lag, frequency), time order
    for u, basis in enumerate(bases):
        manual = torch.einsum("kfj,bjf->bk", basis, window)
        torch.testing.assert_close(proj[:, t, u, : basis.shape[0]], manual, rtol=1e-5, atol=1e-5)
        assert (proj[:, :, u, basis.shape[0] :] == 0).all()


def test_subspace_units_are_independent():
    model = _model("subspace")
    x = _x()
    with torch.no_grad():
        before = model(x)
        bases = model.core.bases.clone()
        bases[0] = torch.randn_like(bases[0]) * 5
        model.core.bases.copy_(bases)
        model.readout.weight1[0].mul_(-3.0)
        model.output.amp[0] += 2.0
        after = model(x)
    assert not torch.allclose(before[..., 0], after[..., 0])
    torch.testing.assert_close(before[..., 1:], after[..., 1:], rtol=0, atol=0)


def test_subspace_padding_components_have_no_effect():
    model = _model("subspace")
    x = _x()
    k = model.config["n_components"]
    with torch.no_grad():
        before = model(x)
        for u, k_u in enumerate(k):
            model.core.bases[u, k_u:] = torch.randn_like(model.core.bases[u, k_u:]) * 10
            model.readout.weight1[u, k_u:] = torch.randn_like(model.readout.weight1[u, k_u:])
        after = model(x)
    torch.testing.assert_close(before, after, rtol=0, atol=0)


def test_subspace_bases_are_fixed_and_saved():
    model = _model("subspace")
    assert "core.bases" in model.state_dict()
    assert "core.mask" not in model.state_dict()
    assert all(p is not model.core.bases for p in model.parameters())
    model(_x()).sum().backward()
    assert model.core.bases.grad is None
    assert model.readout.weight1.grad is not None


# ---- double exponential --------------------------------------------------------------


def test_double_exponential_monotonic_and_bounded():
    torch.manual_seed(0)
    n = 6
    dexp = DoubleExponential(n).reset_parameters(
        base=torch.randn(n),
        amp=torch.rand(n) * 3 + 0.1,
        kappa=torch.randn(n),
        shift=torch.randn(n),
    )
    x = torch.linspace(-1e4, 1e4, 20001)[:, None].expand(-1, n).contiguous()
    x.requires_grad_(True)
    y = dexp(x)
    assert torch.isfinite(y).all()
    lo, hi = dexp.base.detach(), (dexp.base + dexp.amp).detach()
    assert (y >= lo - 1e-6).all() and (y <= hi + 1e-6).all()
    assert (y.diff(dim=0) >= 0).all()
    assert torch.allclose(y[0], lo) and torch.allclose(y[-1], hi)
    (grad,) = torch.autograd.grad(y.sum(), x)
    assert torch.isfinite(grad).all() and (grad >= 0).all()
    # inflection point at x = -shift, value base + amp / e
    mid = dexp(-dexp.shift.detach()[None])
    torch.testing.assert_close(mid[0], (dexp.base + dexp.amp / np.e).detach())


def test_double_exponential_reset_parameters_validates():
    dexp = DoubleExponential(3)
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        dexp.reset_parameters(amp=[1.0, 2.0])
    with pytest.raises(ValueError, match="finite"):
        dexp.reset_parameters(base=float("nan"))


def test_freeze_output_and_regularizer(kind):
    model = _model(kind)
    n_all = model.n_parameters()
    model.freeze_output()
    assert model.output.frozen
    assert model.n_parameters(trainable_only=True) == n_all - 4 * N_UNITS
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert all(p is not model.output.amp for p in trainable)
    model.unfreeze_output()
    assert not model.output.frozen
    assert model.n_parameters(trainable_only=True) == n_all
    reg = model.regularizer()
    assert reg.ndim == 0 and reg.item() > 0
    reg.backward()
    assert any(p.grad is not None for p in model.readout.parameters())
    assert model.output.amp.grad is None  # not regularised


@pytest.mark.parametrize("kind", ["cnn", "ln"])
def test_roughness_is_second_differences_of_the_first_layer(kind):
    model = _model(kind)
    core = model.core
    temporal = core.temporal1 if kind == "cnn" else core.temporal
    with torch.no_grad():
        # straight lines along frequency and lag: no second differences
        core.spectral.copy_(torch.arange(core.spectral.shape[1]).float().expand_as(core.spectral))
        temporal.weight.copy_(2.0 - 0.5 * torch.arange(temporal.n_taps).float())
        assert float(model.roughness()) == pytest.approx(0.0, abs=1e-6)
        core.spectral[0, 3] += 1.0  # one bump: second differences 1, -2, 1
        assert float(model.roughness()) == pytest.approx(6.0, rel=1e-6)
    model.roughness().backward()
    assert core.spectral.grad is not None and float(core.spectral.grad.abs().sum()) > 0


def test_subspace_model_has_no_roughness():
    model = _model("subspace")
    assert float(model.roughness()) == 0.0


def test_unit_mlp_grouped_convolutions_are_the_einsum_layers():
    """The subspace model's per-unit MLPs as grouped 1 x 1 convolutions (CPU, float32) give
    the batched-einsum layers' outputs and gradients (float64 einsum as the reference)."""
    from nwb_subspace.models.subspace import UnitMLP

    torch.manual_seed(0)
    mlp = UnitMLP(4, 3, n_hidden1=5, n_hidden2=6, fan_in=[1, 3, 2, 3])
    p = torch.randn(2, 7, 4, 3)
    ref = mlp.double()
    p64 = p.double().requires_grad_()
    out64 = ref(p64)  # float64: the einsum path
    out64.sum().backward()
    grads64 = {n: q.grad.clone() for n, q in ref.named_parameters()}
    mlp = mlp.float()
    mlp.zero_grad()
    p32 = p.clone().requires_grad_()
    out32 = mlp(p32)  # float32 on the CPU: the grouped convolutions
    assert out32.shape == (2, 7, 4)
    torch.testing.assert_close(out32.double(), out64, rtol=1e-5, atol=1e-5)
    out32.sum().backward()
    torch.testing.assert_close(p32.grad.double(), p64.grad, rtol=1e-4, atol=1e-5)
    for name, q in mlp.named_parameters():
        torch.testing.assert_close(q.grad.double(), grads64[name], rtol=1e-4, atol=1e-5)
