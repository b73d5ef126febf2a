"""LoRAven schedulers, budget and events: behaviour under controlled inputs."""

import pytest
import torch
from torch import nn

from loraven.adapters.base import AdapterContext, apply_adapter
from loraven.adapters.loraven.energy_model import EnergyModel
from loraven.adapters.loraven.estimators import Workload
from loraven.adapters.loraven.events import EventMonitor
from loraven.adapters.loraven.schedulers import bucket_set, to_bucket
from loraven.errors import ConfigError

D = 32


def _mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(D, D), nn.ReLU(), nn.Linear(D, D), nn.ReLU(), nn.Linear(D, 4))


def _sched(name, **kw):
    cfg = {
        "name": name,
        "update_every": 1,
        "min_steps_between_changes": 0,
        "rank_bucket": 2,
        "weights": {"diversity": 0.0, "gradient": 0.0},
    }
    cfg.update(kw)
    return cfg


def _low(gen):  # rank-1 batches (one direction + an offset): spectral entropy ≈ 0
    a = torch.linspace(-1, 1, D)
    return torch.randn(64, 1, generator=gen) * a + 2.0


def _high(gen):  # isotropic batches: spectral entropy ≈ 1
    return torch.randn(64, D, generator=gen) - 2.0


def _drive(adapted, make, steps, start, gen):
    for step in range(start, start + steps):
        with torch.no_grad():
            adapted.model(make(gen))
        adapted.after_optimizer_step(step, torch.tensor(1.0))
    return start + steps


def test_linear_rank_rises_with_input_complexity():
    adapted = apply_adapter(
        _mlp(), {"name": "loraven", "mode": "replace", "r_max": 16, "r_min": 2}, _sched("linear"), AdapterContext()
    )
    gen = torch.Generator().manual_seed(0)
    step = _drive(adapted, _low, 15, 1, gen)
    low = dict(adapted.ranks())
    _drive(adapted, _high, 15, step, gen)
    high = dict(adapted.ranks())
    assert set(low) == {"0", "2"}
    assert high["0"] > low["0"] and high["0"] >= 12 and low["0"] <= 6
    assert adapted.last_scores["0"] > 0.7


def test_rate_limit_and_bucketing():
    assert bucket_set(3, 10, 4) == [3, 4, 8, 10]
    assert to_bucket(5.9, [2, 4, 6, 8]) == 6 and to_bucket(5.0, [2, 4, 6, 8]) == 4
    adapted = apply_adapter(
        _mlp(),
        {"name": "loraven", "mode": "replace", "r_max": 16, "r_min": 2},
        _sched("linear", min_steps_between_changes=100),
        AdapterContext(),
    )
    gen = torch.Generator().manual_seed(0)
    _drive(adapted, _low, 10, 1, gen)
    changes = [row for row in adapted.trace if row[0] > 0]
    assert len(changes) == 2  # one change per layer at the first decision, then rate-limited
    assert all(r % 2 == 0 or r in (2, 16) for _, _, r in adapted.trace)


@pytest.mark.parametrize("budget", [{"fraction": 0.3}, {"fraction": 0.7, "scaling_factor": 2.0}])
def test_energy_scheduler_never_exceeds_budget(budget):
    adapted = apply_adapter(
        _mlp(),
        {"name": "loraven", "mode": "replace", "r_max": 16, "r_min": 2},
        _sched("energy", budget=budget, alpha=1.0, beta=0.0),
        AdapterContext(),
    )
    gen = torch.Generator().manual_seed(0)
    step = 1
    used = []
    for make in (_high, _low, _high):
        for _ in range(5):
            step = _drive(adapted, make, 1, step, gen)
            total = adapted.scheduler_impl.last_total_budget
            used.append(adapted.predicted_energy() / total)
    assert max(used) <= 1.0 + 1e-9
    assert max(used) > 0.8  # with alpha=1 the budget is actually used, not trivially satisfied
    assert min(adapted.ranks().values()) < 16


def test_energy_model_budget_violation_event_fires_only_when_over_budget():
    sched = _sched("energy", budget={"fraction": 0.0}, min_steps_between_changes=1000)
    adapted = apply_adapter(
        _mlp(), {"name": "loraven", "mode": "replace", "r_max": 16, "r_min": 2}, sched, AdapterContext()
    )
    gen = torch.Generator().manual_seed(0)
    _drive(adapted, _high, 1, 1, gen)  # starts at r_max = 16 > the r_min-only budget
    first = [e for e in adapted.events if e.event == "budget_violation"]
    assert {e.module for e in first} == {"0", "2"}
    assert all(e.old_rank == 16 and e.new_rank == 2 for e in first)
    _drive(adapted, _high, 3, 2, gen)  # now at r_min: within budget, no new events
    assert len([e for e in adapted.events if e.event == "budget_violation"]) == 2


def test_loss_events_fire_exactly_under_their_conditions():
    mon = EventMonitor(target_loss=1.0, error_threshold=0.5, performance_drop_pct=10.0, loss_ema=0.0)
    assert mon.update(1.4) == []  # |1.4 − 1| ≤ 0.5, no best yet
    assert mon.update(1.6) == ["error_threshold", "performance_drop"]  # 1.6 > 1.5 and > 1.4·1.1
    assert mon.update(1.5) == []  # |0.5| not > 0.5; 1.5 ≤ 1.54
    assert mon.update(0.4) == ["error_threshold"]  # |−0.6| > 0.5; new best 0.4
    assert mon.update(0.44) == ["error_threshold"]  # 0.44 = 0.4·1.1: no drop (not strictly above)
    assert mon.update(0.45) == ["error_threshold", "performance_drop"]
    assert mon.update(0.6) == ["performance_drop"]  # |−0.4| ≤ 0.5; 0.6 > 0.44

    assert EventMonitor(target_loss=None).update(100.0) == []


def test_loss_events_are_logged_by_the_adapter():
    sched = _sched("linear", events={"target_loss": 0.0, "error_threshold": 0.5, "loss_ema": 0.0})
    adapted = apply_adapter(_mlp(), {"name": "loraven", "mode": "replace", "r_max": 8}, sched, AdapterContext())
    x = torch.randn(8, D)
    for step, loss in enumerate([0.2, 0.2, 0.9, 0.1], start=1):
        adapted.model(x)
        adapted.after_optimizer_step(step, torch.tensor(loss))
    assert [(e.step, e.event) for e in adapted.events if e.module == "*"] == [
        (3, "error_threshold"),
        (3, "performance_drop"),
    ]


def test_energy_model_fit_recovers_scales():
    model = EnergyModel()
    loads = [Workload(t, 64, 64, r) for t in (8, 64, 512, 4096) for r in (2, 8, 32)]
    true = EnergyModel(scale=(2.0, 0.5, 3.0))
    measured = [true.energy(w) for w in loads]
    fit = model.fit(measured, loads)
    assert fit["r2"] > 0.999
    assert all(abs(model.energy(w) - m) <= 1e-6 * m for w, m in zip(loads, measured, strict=True))
    assert model.energy(Workload(64, 64, 64, 8)) < model.energy(Workload(64, 64, 64, 32))


def test_bad_scheduler_config_raises():
    with pytest.raises(ConfigError):
        apply_adapter(_mlp(), {"name": "loraven"}, {"name": "linear", "bogus": 1}, AdapterContext())
    with pytest.raises(ConfigError):
        apply_adapter(_mlp(), {"name": "loraven"}, {"name": "linear", "update_every": 0}, AdapterContext())
