"""DynamicLowRankLayer: init equivalence, Theorem 2 bound, fusion paths, merge, rank changes, options."""

import pytest
import torch
from torch import nn

from loraven.adapters.loraven.hebbian import hebbian_update
from loraven.adapters.loraven.layer import DynamicLowRankLayer
from loraven.errors import ConfigError


def _linear(i=20, o=12, seed=0, bias=True):
    torch.manual_seed(seed)
    return nn.Linear(i, o, bias=bias)


def test_adapter_mode_equals_linear_at_init():
    base = _linear()
    x = torch.randn(5, 3, 20)
    ref = base(x)
    layer = DynamicLowRankLayer(base, r_max=8, mode="adapter")
    out = layer(x)
    assert isinstance(out, torch.Tensor) and out.dtype == ref.dtype and out.shape == ref.shape
    assert torch.equal(out, ref)


def test_replace_mode_is_truncated_svd_within_theorem2_bound():
    torch.manual_seed(1)
    true_rank = 7
    w = torch.randn(16, true_rank) @ torch.randn(true_rank, 24)  # r* = 7 < min(16, 24)
    base = nn.Linear(24, 16)
    with torch.no_grad():
        base.weight.copy_(w)
    sigma = torch.linalg.svdvals(w)
    x = torch.randn(9, 24)
    for r in (1, 3, 6, 7):
        layer = DynamicLowRankLayer(_copy(base), r_max=12, r_init=r, mode="replace")
        u, s, vh = torch.linalg.svd(w, full_matrices=False)
        recon = u[:, :r] @ torch.diag(s[:r]) @ vh[:r]
        assert torch.allclose(layer.weight, recon, atol=1e-4)
        assert torch.allclose(layer(x), x @ recon.T + base.bias, atol=1e-4)
        err = torch.linalg.norm(w - layer.weight)
        bound = (sigma[r] if r < len(sigma) else 0.0) * (true_rank - r) ** 0.5
        assert err <= bound + 1e-3
    assert DynamicLowRankLayer(_copy(base), r_max=12, r_init=5, mode="replace").bias.requires_grad


def _copy(base):
    new = nn.Linear(base.in_features, base.out_features, bias=base.bias is not None)
    new.load_state_dict(base.state_dict())
    return new


@pytest.mark.parametrize("mode", ["adapter", "replace"])
def test_paths_agree_and_merge_round_trips(mode):
    layer = DynamicLowRankLayer(_linear(), r_max=8, r_init=6, mode=mode)
    with torch.no_grad():
        layer.U.normal_()
        layer.S.uniform_(0.5, 1.5)
    x = torch.randn(7, 20)
    with torch.no_grad():
        ref = layer(x)
        outs = {}
        for path in ("three_matmul", "fused", "inplace", "factored"):
            layer.set_path(path)
            outs[path] = layer(x).clone()
        for path, out in outs.items():
            assert torch.allclose(out, ref, atol=1e-5), path
        w0 = layer.weight.detach().clone()
        layer.merge()
        assert torch.allclose(layer(x), ref, atol=1e-5)
        layer.unmerge()
        assert torch.allclose(layer.weight, w0, atol=1e-6)
        assert torch.allclose(layer(x), ref, atol=1e-5)


def test_fused_cache_invalidated_by_updates_and_rank_changes():
    layer = DynamicLowRankLayer(_linear(), r_max=8, mode="replace")
    layer.set_path("fused")
    x = torch.randn(4, 20)
    with torch.no_grad():
        a = layer(x)
        layer.S.mul_(2.0)  # in-place update, as an optimizer does
        b = layer(x)
        layer.set_rank(3)
        c = layer(x)
        layer.set_path("factored")
        assert torch.allclose(c, layer(x), atol=1e-5)
    assert not torch.allclose(a, b) and not torch.allclose(b, c)


def test_rank_decrease_then_increase_restores_values_and_keeps_adamw_state():
    layer = DynamicLowRankLayer(_linear(), r_max=8, mode="adapter")
    opt = torch.optim.AdamW([layer.U, layer.S, layer.V], lr=1e-2, weight_decay=0.1)
    x, target = torch.randn(16, 20), torch.randn(16, 12)

    def step():
        opt.zero_grad()
        torch.nn.functional.mse_loss(layer(x), target).backward()
        opt.step()

    for _ in range(3):
        step()
    trained = [p.detach().clone() for p in (layer.U, layer.S, layer.V)]
    state_ids = {id(opt.state[p]["exp_avg"]) for p in (layer.U, layer.S, layer.V)}
    layer.set_rank(4)
    out_low = layer(x)
    u, s, v = trained[0][:, :4], trained[1][:4], trained[2][:, :4]
    assert torch.allclose(out_low, layer.base_layer(x) + layer.scaling * ((x @ v) * s) @ u.T, atol=1e-6)
    for _ in range(3):
        step()  # columns 4..7 keep drifting under AdamW momentum / weight decay while inactive
    layer.set_rank(8)
    for p, t in zip((layer.U, layer.S, layer.V), trained, strict=True):
        assert torch.equal(p.detach()[..., 4:], t[..., 4:])  # parked columns restored exactly
    assert {id(opt.state[p]["exp_avg"]) for p in (layer.U, layer.S, layer.V)} == state_ids
    assert opt.state[layer.U]["exp_avg"].shape == (12, 8) and int(opt.state[layer.U]["step"]) == 6
    step()  # training continues at full rank with the same parameters


def test_nan_inputs_give_finite_outputs_and_bad_ranks_raise():
    layer = DynamicLowRankLayer(_linear(), r_max=4, mode="replace")
    x = torch.randn(3, 20)
    x[0, 0], x[1, 1], x[2, 2] = float("nan"), float("inf"), float("-inf")
    assert torch.isfinite(layer(x)).all()
    with pytest.raises(ConfigError):
        layer.set_rank(5)
    with pytest.raises(ConfigError):
        DynamicLowRankLayer(_linear(), r_max=13)
    with pytest.raises(ConfigError):
        DynamicLowRankLayer(_linear(), r_max=4, mode="bogus")


def test_hebbian_update_is_shape_correct_for_non_square_layers():
    layer = DynamicLowRankLayer(_linear(i=20, o=12), r_max=8, r_init=5, mode="replace")
    before = [layer.U.detach().clone(), layer.V.detach().clone()]
    x_mean, y_mean = torch.randn(20), torch.randn(12)
    hebbian_update(layer.U, layer.V, layer.r, x_mean, y_mean, lr=1e-3, max_rel=1.0)
    assert layer.U.shape == (12, 8) and layer.V.shape == (20, 8)
    du = layer.U.detach() - before[0]
    dv = layer.V.detach() - before[1]
    assert torch.allclose(du[:, :5], 1e-3 * torch.outer(y_mean, before[1][:, :5].T @ x_mean), atol=1e-6)
    assert torch.allclose(dv[:, :5], 1e-3 * torch.outer(x_mean, before[0][:, :5].T @ y_mean), atol=1e-6)
    assert not du[:, 5:].any() and not dv[:, 5:].any()


def test_gate_option_runs_is_identity_at_init_and_learns():
    base = _linear()
    plain = DynamicLowRankLayer(_copy(base), r_max=8, mode="replace")
    gated = DynamicLowRankLayer(_copy(base), r_max=8, mode="replace", gate_blocks=4)
    x = torch.randn(6, 20)
    assert torch.allclose(gated(x), plain(x), atol=1e-6)
    gated(x).pow(2).sum().backward()
    assert gated.gate.proj.weight.grad is not None and gated.gate.proj.weight.grad.abs().sum() > 0


def test_regularization_zero_at_init_and_positive_after_perturbation():
    for mode in ("adapter", "replace"):
        layer = DynamicLowRankLayer(_linear(), r_max=8, mode=mode)
        assert float(layer.regularization_loss(orthogonality=1.0)) < 1e-8
        with torch.no_grad():
            layer.U.add_(torch.randn_like(layer.U))
        reg = layer.regularization_loss(l2=1e-3, orthogonality=1.0)
        assert float(reg) > 0 and reg.requires_grad


def test_gradient_checkpointing_matches():
    base = _linear()
    a = DynamicLowRankLayer(_copy(base), r_max=6, mode="replace")
    b = DynamicLowRankLayer(_copy(base), r_max=6, mode="replace", gradient_checkpointing=True)
    x = torch.randn(4, 20)
    a(x).sum().backward()
    b(x).sum().backward()
    assert torch.allclose(a.U.grad, b.U.grad, atol=1e-6)


def test_adapter_bottleneck_guard_keeps_the_adapter_branch_finite():
    layer = DynamicLowRankLayer(_linear(), r_max=4, mode="adapter")
    with torch.no_grad():
        layer.U.normal_()
    x = torch.randn(3, 20)
    x[0, 0] = float("nan")
    assert torch.isfinite(layer._low_rank(x)).all()
    assert torch.isfinite(layer(x)[1:]).all()  # rows without NaN are untouched


def test_fast_backward_matches_plain_autograd():
    base = _linear(i=20, o=12)
    fast = DynamicLowRankLayer(_copy(base), r_max=10, r_init=6, mode="replace", nan_guard="input")
    plain = DynamicLowRankLayer(_copy(base), r_max=10, r_init=6, mode="replace", gate_blocks=1)  # sliced
    x = torch.randn(2, 5, 20, requires_grad=True)
    x2 = x.detach().clone().requires_grad_(True)
    target = torch.randn(2, 5, 12)
    ((fast(x) - target) ** 2).sum().backward()
    ((plain(x2) - target) ** 2).sum().backward()
    for name in ("U", "S", "V", "bias"):
        assert torch.allclose(getattr(fast, name).grad, getattr(plain, name).grad, atol=1e-5), name
    assert torch.allclose(x.grad, x2.grad, atol=1e-5)
    assert not fast.U.grad[:, 6:].any() and not fast.V.grad[:, 6:].any() and not fast.S.grad[6:].any()
