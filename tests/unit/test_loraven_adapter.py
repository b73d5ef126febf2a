"""LoRAven through the adapter registry on a tiny Llama and an MLP (the paths the training loop uses)."""

import csv

import pytest
import torch
from torch import nn

from loraven.adapters.base import AdapterContext, apply_adapter
from loraven.adapters.loraven import DynamicLowRankLayer
from loraven.errors import ConfigError, IncompatibleCombination
from loraven.models import build_mlp, build_tiny_llama

SCHED = {"name": "linear", "update_every": 2, "min_steps_between_changes": 2}


def _batch(seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(4, 90, (4, 12), generator=gen)


def test_apply_on_tiny_llama_trains_only_adapter_and_writes_artifacts(tmp_path):
    model, _ = build_tiny_llama(seed=0)
    original = {n for n, m in model.named_modules() if isinstance(m, nn.Linear) and not n.endswith("lm_head")}
    x = _batch()
    with torch.no_grad():
        base_logits = model(x).logits
    adapted = apply_adapter(model, {"name": "loraven", "r_max": 8}, SCHED, AdapterContext(seed=0))
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert names and all(n.rsplit(".", 1)[-1] in ("U", "S", "V") for n in names)
    assert set(adapted.ranks()) == original
    assert "model.layers.0.self_attn.q_proj" in adapted.ranks()
    with torch.no_grad():
        assert torch.equal(model(x).logits, base_logits)
    params = list(adapted.trainable_parameters())
    opt = torch.optim.AdamW(params, lr=1e-2)
    losses = []
    model.train()
    for step in range(1, 9):
        loss = model(x, labels=x).loss
        reg = adapted.regularization_loss()
        (loss if reg is None else loss + reg).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        adapted.after_optimizer_step(step, loss.detach())
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0] - 0.1
    metrics = adapted.step_metrics()
    assert all(k.startswith("loraven/") for k in metrics) and 2 <= metrics["loraven/rank_mean"] <= 8
    summary = adapted.summary()
    assert summary["mode"] == "adapter" and summary["r_max"] == 8 and summary["n_decisions"] == 4
    paths = adapted.write_artifacts(tmp_path)
    with (tmp_path / "rank_trace.csv").open() as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["step", "module", "rank"]
    steps = {int(r[0]) for r in rows[1:]}
    assert 0 in steps and 8 in steps and {r[1] for r in rows[1:]} == original
    assert (tmp_path / "loraven_events.csv").read_text().startswith("step,module,event,old_rank,new_rank")
    assert len(paths) == 2 and set(adapted.artifact_tables()) == {"rank_trace", "loraven_events"}
    model.eval()
    with torch.no_grad():
        before = model(x).logits
        adapted.prepare_for_inference()
        assert torch.allclose(model(x).logits, before, atol=1e-4)


def test_replace_mode_on_mlp_keeps_head_and_bias_trainable():
    torch.manual_seed(0)
    model = build_mlp(16, [24, 20], 3)
    x = torch.randn(5, 16)
    adapted = apply_adapter(
        model,
        {"name": "loraven", "mode": "replace", "r_max": "full", "r_init": 6},
        {"name": "static"},
        AdapterContext(),
    )
    assert set(adapted.ranks()) == {"0", "2"} and adapted.ranks()["0"] == 6
    assert isinstance(model[4], nn.Linear) and model[4].weight.requires_grad  # output head not replaced
    assert model[0].bias.requires_grad and model[0].r_max == 16
    assert model(x).shape == (5, 3)
    adapted.after_optimizer_step(1, torch.tensor(1.0))
    with torch.no_grad():
        ref = model(x)
        adapted.prepare_for_inference()
        assert torch.allclose(model(x), ref, atol=1e-5)


def test_targets_and_bad_config():
    model, _ = build_tiny_llama(seed=0)
    adapted = apply_adapter(
        model,
        {"name": "loraven", "target_modules": ["q_proj", "v_proj"], "r_max": 4},
        {"name": "static"},
        AdapterContext(),
    )
    assert sorted(adapted.ranks()) == [
        "model.layers.0.self_attn.q_proj",
        "model.layers.0.self_attn.v_proj",
        "model.layers.1.self_attn.q_proj",
        "model.layers.1.self_attn.v_proj",
    ]
    assert isinstance(model.model.layers[0].self_attn.q_proj, DynamicLowRankLayer)
    for adapter_cfg in (
        {"name": "loraven", "target_modules": ["nope"]},
        {"name": "loraven", "mode": "x"},
        {"name": "loraven", "r_max": 1000},
        {"name": "loraven", "unknown_key": 1},
    ):
        with pytest.raises(ConfigError):
            apply_adapter(build_tiny_llama(seed=0)[0], adapter_cfg, {"name": "static"}, AdapterContext())
    with pytest.raises(IncompatibleCombination):
        apply_adapter(build_tiny_llama(seed=0)[0], {"name": "lora"}, {"name": "energy"}, AdapterContext())


def test_energy_scheduler_with_events_on_tiny_llama(tmp_path):
    model, _ = build_tiny_llama(seed=0)
    sched = {
        "name": "energy",
        "update_every": 1,
        "min_steps_between_changes": 0,
        "budget": {"fraction": 0.2},
        "events": {"target_loss": 0.0, "error_threshold": 0.1},
    }
    adapted = apply_adapter(
        model, {"name": "loraven", "r_max": 8, "hebbian": True, "gate": True}, sched, AdapterContext()
    )
    opt = torch.optim.AdamW(list(adapted.trainable_parameters()), lr=1e-2)
    x = _batch(1)
    for step in range(1, 5):
        loss = model(x, labels=x).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        adapted.after_optimizer_step(step, loss.detach())
        assert adapted.predicted_energy() <= adapted.scheduler_impl.last_total_budget * (1 + 1e-9)
    kinds = {e.event for e in adapted.events}
    assert "error_threshold" in kinds and "budget_violation" in kinds
    assert adapted.step_metrics()["loraven/budget_use"] <= 1.0 + 1e-9
