"""DynamicLowRankLayer contracts that a plausible bug would break: each test names the bug it catches.

Dropout only on the adapter path, a frozen base, compute that follows the active rank (counted FLOPs),
the custom backward with scaling != 1 (gradcheck), fused-cache invalidation on every factor and the base,
replace-mode SVD precision, and merged-state safety (set_rank, training while merged).
"""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from loraven.adapters.loraven.layer import DynamicLowRankLayer
from loraven.adapters.loraven.lowrank_fn import LowRankMatmul
from loraven.errors import ConfigError


def _linear(i=20, o=12, seed=0, dtype=torch.float32):
    torch.manual_seed(seed)
    return nn.Linear(i, o).to(dtype)


def _trained_adapter(dropout=0.0, alpha=20.0, seed=0, **kw):
    """Adapter layer with U != 0 (as after training), so the adapter branch contributes."""
    layer = DynamicLowRankLayer(_linear(seed=seed), r_max=8, mode="adapter", alpha=alpha, dropout=dropout, **kw)
    with torch.no_grad():
        layer.U.copy_(torch.randn_like(layer.U))
        layer.S.copy_(torch.rand_like(layer.S) + 0.5)
    return layer


def test_dropout_acts_on_the_adapter_path_only():
    x = torch.randn(64, 20)
    # U = 0: the adapter adds nothing, so a train-mode output must be exactly the base output
    zero = DynamicLowRankLayer(_linear(), r_max=8, mode="adapter", dropout=0.5).train()
    assert torch.equal(zero(x), zero.base_layer(x))  # dropout on the base path would change it
    layer = _trained_adapter(dropout=0.5).train()
    with torch.no_grad():
        base = layer.base_layer(x)
        torch.manual_seed(1)
        y1 = layer(x)
        torch.manual_seed(2)
        y2 = layer(x)
        layer.eval()
        y_eval = layer(x)
    assert not torch.allclose(y1, y2)  # dropout is active in training (removed dropout: equal)
    assert not torch.allclose(y1, y_eval)
    # the adapter branch of a train-mode call equals the low-rank map of x with dropped (and rescaled) entries
    torch.manual_seed(1)
    mask_x = nn.functional.dropout(x, 0.5, training=True)
    u, s, v = layer.active_factors()
    expected = base + (mask_x @ v) * (s * layer.scaling) @ u.T
    assert torch.allclose(y1, expected, atol=1e-5)


def test_dropout_in_replace_mode_is_rejected():
    with pytest.raises(ConfigError, match="dropout=0.1"):
        DynamicLowRankLayer(_linear(), r_max=4, mode="replace", dropout=0.1)


def test_adapter_base_is_frozen_and_unchanged_by_training():
    layer = _trained_adapter()
    w0, b0 = layer.base_layer.weight.detach().clone(), layer.base_layer.bias.detach().clone()
    trainable = {n for n, p in layer.named_parameters() if p.requires_grad}
    assert trainable == {"U", "S", "V"}
    opt = torch.optim.SGD([p for p in layer.parameters() if p.requires_grad], lr=0.1)
    layer(torch.randn(8, 20)).pow(2).sum().backward()
    opt.step()
    assert layer.base_layer.weight.grad is None and layer.base_layer.bias.grad is None
    assert torch.equal(layer.base_layer.weight, w0) and torch.equal(layer.base_layer.bias, b0)
    assert layer.U.grad is not None and layer.V.grad.abs().sum() > 0


@pytest.mark.parametrize("rank", [1, 3, 8])
def test_compute_follows_the_active_rank(rank):
    """Counted FLOPs of forward + backward equal the rank-r formula (masking would count r_max)."""
    n, i, o = 16, 20, 12
    layer = DynamicLowRankLayer(_linear(i, o), r_max=8, r_init=rank, mode="replace")
    x = torch.randn(n, i, requires_grad=True)
    with FlopCounterMode(display=False) as fwd:
        y = layer(x)
    with FlopCounterMode(display=False) as bwd:
        y.sum().backward()
    assert fwd.get_total_flops() == 2 * n * rank * (i + o)  # x·V_r, then ·U_rᵀ
    # backward: gU, gV and gx, one rank-r GEMM each, plus g·U_r for the bottleneck gradient
    assert bwd.get_total_flops() == 2 * n * rank * (2 * i + 2 * o)


@pytest.mark.parametrize("r", [2, 5])
def test_custom_backward_gradcheck_with_scaling(r):
    """Finite differences on every input, scaling != 1, inactive columns present (r < r_max)."""
    torch.manual_seed(0)
    x = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    u = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    s = torch.rand(5, dtype=torch.float64, requires_grad=True)
    v = torch.randn(5, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *t: LowRankMatmul.apply(*t, r, 2.5), (x, u, s, v))


def test_adapter_layer_with_scaling_uses_the_custom_backward_correctly():
    layer = _trained_adapter(alpha=20.0, nan_guard="off")  # scaling 2.5, same-dtype: LowRankMatmul
    assert layer.scaling == 2.5
    x = torch.randn(7, 20)
    layer(x).pow(2).sum().backward()
    grads = [p.grad.clone() for p in (layer.U, layer.S, layer.V)]
    u, s, v = (t.detach().clone().requires_grad_(True) for t in (layer.U, layer.S, layer.V))
    ref = layer.base_layer(x) + (x @ v[:, :8]) * (s[:8] * 2.5) @ u[:, :8].T
    ref.pow(2).sum().backward()
    for got, want in zip(grads, (u.grad, s.grad, v.grad), strict=True):
        assert torch.allclose(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    ("mode", "what"),
    [
        ("adapter", "U"),
        ("adapter", "S"),
        ("adapter", "V"),
        ("adapter", "base"),
        ("replace", "U"),
        ("replace", "S"),
        ("replace", "V"),
    ],
)  # replace: no base
def test_fused_cache_follows_every_factor_and_the_base(mode, what):
    layer = _trained_adapter() if mode == "adapter" else DynamicLowRankLayer(_linear(), r_max=8, mode="replace")
    layer.requires_grad_(False)
    x = torch.randn(4, 20)
    layer.set_path("fused")
    first = layer(x)
    with torch.no_grad():
        if what == "base":
            layer.base_layer.weight.add_(0.5)
        else:
            getattr(layer, what).mul_(1.5).add_(0.1)
    fused = layer(x)
    layer.set_path("factored")
    assert torch.allclose(fused, layer(x), atol=1e-5)
    assert not torch.allclose(first, fused)


def test_replace_svd_runs_in_the_layer_precision():
    base = _linear(24, 16, dtype=torch.float64)
    layer = DynamicLowRankLayer(base, r_max=16, mode="replace")
    assert layer.U.dtype == torch.float64
    err = (layer.delta_weight() - base.weight).abs().max()
    assert err < 1e-12  # an fp32 SVD leaves ~1e-7


def _merged_pair():
    layer = _trained_adapter()
    w0 = layer.base_layer.weight.detach().clone()
    return layer, w0


def test_set_rank_on_a_merged_layer_keeps_w0():
    layer, w0 = _merged_pair()
    x = torch.randn(5, 20)
    layer.eval()
    with torch.no_grad():
        layer.merge()
        layer.set_rank(3)
        merged_out = layer(x)
        layer.unmerge()
        assert torch.allclose(layer.base_layer.weight, w0, atol=1e-5)
        assert torch.allclose(merged_out, layer(x), atol=1e-5)  # merged at the new rank


def test_training_forward_unmerges_so_factors_train():
    layer, w0 = _merged_pair()
    layer.merge()
    layer.train()
    layer(torch.randn(5, 20)).sum().backward()
    assert not layer.merged and torch.allclose(layer.base_layer.weight, w0, atol=1e-5)
    assert layer.U.grad is not None and layer.U.grad.abs().sum() > 0


@settings(max_examples=20, deadline=None)
@given(st.lists(st.integers(1, 8), min_size=1, max_size=6))
def test_any_rank_sequence_keeps_outputs_equal_to_the_dense_formula(ranks):
    layer = DynamicLowRankLayer(_linear(), r_max=8, mode="replace")
    x = torch.randn(3, 20)
    with torch.no_grad():
        for r in ranks:
            layer.set_rank(r)
            u, s, v = layer.U[:, :r], layer.S[:r], layer.V[:, :r]
            assert torch.allclose(layer(x), x @ v @ torch.diag(s) @ u.T + layer.bias, atol=1e-5)


def test_half_precision_layers_work_in_both_modes():
    """bf16: replace-mode SVD goes through fp32 (no bf16 SVD); adapter mode casts x to the fp32 factors."""
    rep = DynamicLowRankLayer(_linear(dtype=torch.bfloat16), r_max=12, mode="replace")
    assert rep.U.dtype == torch.bfloat16
    assert (rep.delta_weight().float() - _linear(dtype=torch.bfloat16).weight.float()).abs().max() < 0.05
    ada = DynamicLowRankLayer(_linear(dtype=torch.bfloat16), r_max=4, mode="adapter")
    assert ada.U.dtype == torch.float32
    x = torch.randn(3, 20, dtype=torch.bfloat16)
    y = ada(x)
    assert y.dtype == torch.bfloat16 and torch.equal(y, ada.base_layer(x))


def test_bottleneck_guard_zeroes_the_adapter_branch_of_bad_rows():
    layer = _trained_adapter()  # adapter default: nan_guard="bottleneck"
    assert layer.nan_guard == "bottleneck"
    x = torch.randn(3, 20)
    x[0, 5] = float("nan")
    x[1, 7] = float("-inf")
    with torch.no_grad():
        branch = layer._low_rank(x)
    assert torch.equal(branch[:2], torch.zeros_like(branch[:2]))
    assert branch[2].abs().sum() > 0


def test_gate_multiplies_the_rank_components():
    layer = DynamicLowRankLayer(_linear(), r_max=8, mode="adapter", gate_blocks=4)
    with torch.no_grad():
        layer.U.copy_(torch.randn_like(layer.U))
        layer.gate.proj.weight.copy_(torch.randn_like(layer.gate.proj.weight))
    x = torch.randn(5, 20)
    with torch.no_grad():
        u, s, v = layer.active_factors()
        expected = ((x @ v) * (s * layer.scaling) * layer.gate(x, layer.r)) @ u.T
        assert torch.allclose(layer._low_rank(x), expected, atol=1e-5)


def test_observation_records_tokens_and_output_mean():
    layer = _trained_adapter()
    assert layer.obs_tokens == 0 and layer.obs_rows is None and layer.obs_out_mean is None
    layer.observe = True
    x = torch.randn(2, 7, 20)
    with torch.no_grad():
        y = layer(x)
    assert layer.obs_tokens == 14 and layer.obs_rows.shape == (14, 20)
    assert torch.allclose(layer.obs_out_mean, y.reshape(-1, 12).mean(0))
    assert torch.allclose(layer.obs_mean, x.reshape(-1, 20).mean(0))
