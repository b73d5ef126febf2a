"""LoRA and DoRA through peft (the field's implementation; nothing here re-implements them)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field
from torch import nn

from loraven.adapters.base import (
    AdaptedModel,
    AdapterContext,
    NotSaved,
    linear_targets,
    rank_for_budget,
    register_adapter,
)
from loraven.adapters.options import AdapterOptions, TargetModules
from loraven.adapters.targets import resolve_targets, smallest_side
from loraven.errors import ConfigError


class LoraSettings(AdapterOptions):
    """``cfg.adapter`` for peft LoRA (and DoRA, the same keys): conf/adapter/lora.yaml holds the defaults."""

    name: Literal["lora", "dora"]
    r: int = Field(ge=1)
    alpha: float = Field(gt=0)
    dropout: float = Field(ge=0.0, lt=1.0)
    target_modules: TargetModules
    use_rslora: bool


class PeftAdapted(AdaptedModel):
    """A peft-wrapped model; ranks are read back from the injected layers (what peft really built)."""

    def ranks(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for name, module in self.model.named_modules():
            r = getattr(module, "r", None)
            if isinstance(r, dict) and "default" in r and hasattr(module, "lora_A"):
                out[_strip_peft_prefix(name)] = int(r["default"])
        return out

    def prepare_for_inference(self) -> None:
        """Merge (peft ``merge_adapter``; ``unmerge_adapter`` undoes it): every method is evaluated merged."""
        self.model.merge_adapter()

    def save_adapter(self, folder: Path) -> dict[str, Any]:
        """peft's own ``save_pretrained`` (per-module ranks and alphas, e.g. LoRA-AR's, in ``rank_pattern``)."""
        from loraven.adapters.export import save_peft_model

        return save_peft_model(self.model, folder)

    def save_model(self, folder: Path) -> dict[str, Any]:
        raise NotSaved(
            "the adapter holds every change this method made (save.adapter); a merged model is peft's "
            "merge_and_unload() of the base model with it"
        )


def _strip_peft_prefix(name: str) -> str:
    for prefix in ("base_model.model.", "base_model."):
        if name.startswith(prefix):
            return name[len(prefix) :]
    return name


def peft_lora_config(settings: LoraSettings, **overrides: Any):
    """Build a peft ``LoraConfig`` from the validated adapter settings (r, alpha, dropout, target_modules, ...)."""
    from peft import LoraConfig

    kwargs: dict[str, Any] = dict(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=settings.target_modules,
        use_rslora=settings.use_rslora,
        bias="none",
    )
    kwargs.update(overrides)
    return LoraConfig(**kwargs)


def wrap_with_peft(model: nn.Module, config) -> nn.Module:
    import warnings

    from peft import get_peft_model

    try:
        with warnings.catch_warnings():  # peft reads transformers' deprecated alias; its FutureWarning is not ours
            warnings.filterwarnings("ignore", r".*`is_gradient_checkpointing` is deprecated", FutureWarning)
            return get_peft_model(model, config)
    except ValueError as err:  # peft's "Target modules ... not found" etc.
        if "target" not in str(err).lower():  # e.g. a dropout error: the layer names would only bury it
            raise ConfigError(str(err).splitlines()[0]) from err
        names = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, nn.Linear)})
        raise ConfigError(f"{err}. Linear module names in this model: {', '.join(names)}") from err


def check_rank_fits(model: nn.Module, settings: LoraSettings) -> None:
    """A fixed rank ``r`` above a target layer's smaller side is a config error (peft would build it anyway)."""
    rank = settings.r
    name, limit = smallest_side(resolve_targets(model, settings.target_modules))
    if int(rank) > limit:
        raise ConfigError(
            f"adapter.r={rank} exceeds layer {name} (smaller side {limit}); valid: 1..{limit} for these target_modules"
        )


def match_rank(cfg: dict[str, Any], rank: int, mode: str) -> dict[str, Any]:
    """Benchmarks at matched rank r: ``r`` on every layer (uniform and budget are the same count here)."""
    return {**cfg, "r": rank, "alpha": 2 * rank}


def budget_fit(model: nn.Module, settings: LoraSettings, budget: int, dora: bool) -> dict[str, Any]:
    """``r`` for a trainable-parameter budget: LoRA trains r·(in+out) per target layer (A and B); DoRA adds
    its magnitude vector (out) per layer. ``alpha`` keeps the configured alpha/r, so the update's scale
    (hence the learning rate that suits it) does not change with the fitted rank."""
    layers = linear_targets(model, settings.target_modules)
    per_rank = sum(m.in_features + m.out_features for _, m in layers)
    fixed = sum(m.out_features for _, m in layers) if dora else 0
    limit = min(min(m.in_features, m.out_features) for _, m in layers)
    r = rank_for_budget(budget, per_rank, fixed, "adapter.r", limit)
    return {"r": r, "alpha": settings.alpha * r / settings.r}


SIZE_SPACE = ("adapter.r", "choice(4,8,16)")


_LORA_SPEC = {
    "config": LoraSettings,
    "size_key": "r",
    "check_fits": check_rank_fits,
    "match_rank": match_rank,
    "size_space": SIZE_SPACE,
}


@register_adapter(
    "lora",
    schedulers=("static",),
    labels={"static": "LoRA"},
    order=20,
    fit_budget=lambda m, c, b: budget_fit(m, c, b, dora=False),
    **_LORA_SPEC,
)
def apply_lora(model: nn.Module, settings: LoraSettings, ctx: AdapterContext) -> AdaptedModel:
    """peft LoRA: W0 + (alpha/r)·B·A on the target modules."""
    return PeftAdapted(wrap_with_peft(model, peft_lora_config(settings, use_dora=False)))


@register_adapter(
    "dora",
    schedulers=("static",),
    labels={"static": "DoRA"},
    order=21,
    fit_budget=lambda m, c, b: budget_fit(m, c, b, dora=True),
    **_LORA_SPEC,
)
def apply_dora(model: nn.Module, settings: LoraSettings, ctx: AdapterContext) -> AdaptedModel:
    """peft DoRA (``use_dora=True``): LoRA direction plus a trained per-output magnitude vector."""
    return PeftAdapted(wrap_with_peft(model, peft_lora_config(settings, use_dora=True)))
