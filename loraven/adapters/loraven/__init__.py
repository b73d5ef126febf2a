"""LoRAven (dynamic low-rank adaptation, paper seeds/000): registered as adapter ``loraven``.

Modules: layer (§3.1, §4.1.1, §4.2), fusion (§3.1.1, shared with the benchmarks), scorer (§3.2.1),
schedulers (§3.2.2), energy_model + estimators (§3.3.1, §4.1.3), budget (§3.3.2), events (§3.4.1),
hebbian (§3.4.2), gate (§4.1.2), model (the AdaptedModel the training loop drives).

Freezing: in ``adapter`` mode everything but the factors (and gates) is frozen. In ``replace`` mode the
replaced layers train U, S, V and their bias; other parameters (e.g. the output head, which ``all-linear``
skips) stay trainable when ``adapter.train_other`` is true (default), since replace mode fine-tunes a
compressed network rather than adapting a frozen one.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from loraven.adapters.base import AdapterContext, linear_targets, rank_for_budget, register_adapter
from loraven.adapters.loraven.config import AdapterConfig, SchedulerConfig
from loraven.adapters.loraven.layer import DynamicLowRankLayer
from loraven.adapters.loraven.model import LoRAvenModel
from loraven.adapters.targets import resolve_targets, smallest_side
from loraven.errors import ConfigError

__all__ = ["DynamicLowRankLayer", "LoRAvenModel", "apply_loraven", "find_targets", "inject"]


def find_targets(model: nn.Module, target_modules: str | list[str]) -> list[str]:
    """Names of the nn.Linear modules to adapt (the shared resolver; LoRAven's layer needs an nn.Linear)."""
    return list(resolve_targets(model, target_modules, classes=(nn.Linear,)))


def inject(model: nn.Module, cfg: AdapterConfig) -> dict[str, DynamicLowRankLayer]:
    """Replace each target nn.Linear by a DynamicLowRankLayer in place; returns name → layer."""
    layers: dict[str, DynamicLowRankLayer] = {}
    for name in find_targets(model, cfg.target_modules):
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        base = getattr(parent, child)
        limit = min(base.in_features, base.out_features)
        r_max = limit if cfg.r_max == "full" else int(cfg.r_max)
        if r_max > limit:
            raise ConfigError(
                f"adapter.r_max={r_max} exceeds layer {name} ({base.out_features}x"
                f"{base.in_features}); valid: 1..{limit} or 'full'"
            )
        layer = DynamicLowRankLayer(
            base,
            r_max=r_max,
            r_init=None if cfg.r_init is None else min(int(cfg.r_init), r_max),
            r_min=min(int(cfg.r_min), r_max),
            mode=cfg.mode,
            alpha=cfg.alpha,
            dropout=float(cfg.dropout),
            nan_guard=cfg.nan_guard,
            gate_blocks=int(cfg.gate_blocks) if cfg.gate else 0,
            gradient_checkpointing=cfg.gradient_checkpointing,
        )
        setattr(parent, child, layer)
        layers[name] = layer
    return layers


def check_rank_fits(model: nn.Module, settings: AdapterConfig) -> None:
    """An integer ``r_max`` above a target layer's smaller side is a config error ('full' always fits)."""
    r_max = settings.r_max
    if r_max == "full":
        return
    targets = resolve_targets(model, settings.target_modules, classes=(nn.Linear,))
    name, limit = smallest_side(targets)
    if int(r_max) > limit:
        raise ConfigError(
            f"adapter.r_max={r_max} exceeds layer {name} (smaller side {limit}); valid: 1..{limit} or 'full'"
        )


def match_rank(cfg: dict[str, Any], rank: int, mode: str) -> dict[str, Any]:
    """Benchmarks at matched rank r: ``r_max = r`` (the scheduler may lower the live rank, never raise it)."""
    return {**cfg, "r_max": rank, "r_min": min(int(cfg.get("r_min", 2)), rank), "alpha": 2 * rank}


def budget_fit(model: nn.Module, acfg: AdapterConfig, budget: int) -> dict[str, Any]:
    """``r_max`` for a trainable-parameter budget (adapter mode): each layer trains U (out×r_max), S (r_max) and
    V (in×r_max), allocated at r_max whatever the active rank. ``alpha`` keeps the configured alpha/r_max (the
    update's scale). Replace mode trains the other weights too and the gate adds its own network: neither is
    fitted, each is one clear error."""
    if acfg.mode != "adapter" or acfg.gate:
        raise ConfigError(
            f"adapter.param_budget fits LoRAven's adapter mode without a gate; got "
            f"adapter.mode={acfg.mode}, adapter.gate={acfg.gate} (set param_budget=null)"
        )
    layers = linear_targets(model, acfg.target_modules)
    per_rank = sum(m.in_features + m.out_features + 1 for _, m in layers)
    limit = min(min(m.in_features, m.out_features) for _, m in layers)
    r_max = rank_for_budget(budget, per_rank, 0, "adapter.r_max", limit)
    r0 = limit if acfg.r_max == "full" else int(acfg.r_max)
    alpha = float(acfg.alpha if acfg.alpha is not None else 2 * r0) * r_max / r0
    return {"r_max": r_max, "alpha": alpha}


LEVELS = {"static": "fixed low-rank", "linear": "dynamic", "energy": "full LoRAven"}  # the paper's §5.2 levels


@register_adapter(
    "loraven",
    schedulers=("static", "linear", "energy"),
    config=AdapterConfig,
    scheduler_config=SchedulerConfig,
    size_key="r_max",
    labels=LEVELS,
    order=10,
    check_fits=check_rank_fits,
    match_rank=match_rank,
    fit_budget=budget_fit,
    size_space=("adapter.r_max", "choice(4,8,16)"),
)
def apply_loraven(model: nn.Module, acfg: AdapterConfig, ctx: AdapterContext) -> LoRAvenModel:
    """LoRAven: dynamic-rank U·diag(S)·Vᵀ layers (adapter beside frozen W0, or replacing W) + scheduler."""
    scfg = SchedulerConfig.from_mapping(ctx.scheduler)
    if acfg.mode == "adapter" or not acfg.train_other:
        for p in model.parameters():
            p.requires_grad_(False)
    layers = inject(model, acfg)
    for layer in layers.values():
        trainable = [layer.U, layer.S, layer.V]
        if layer.bias is not None:
            trainable.append(layer.bias)
        if layer.gate is not None:
            trainable += list(layer.gate.parameters())
        for p in trainable:
            p.requires_grad_(True)
    return LoRAvenModel(model, layers, acfg, scfg, seed=ctx.seed, total_steps=ctx.total_steps)
