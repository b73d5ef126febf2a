"""The adapter contract: how a fine-tuning method plugs into the one training loop.

A method is a function ``apply(model, adapter_cfg, scheduler_cfg, ctx) -> AdaptedModel`` registered
under a name with :func:`register_adapter`. The training loop only ever talks to :class:`AdaptedModel`,
so adding a method never forks the loop (docs/design.md: "How to add a method").
Adapters must not import train, track or measure.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn


class ConfigError(ValueError):
    """A bad user setting: the message names the bad value and the valid choices."""


class IncompatibleCombination(ConfigError):
    """An adapter/scheduler pair that makes no sense (e.g. lora + energy); a multirun records it as skipped."""


@dataclass
class AdapterContext:
    """What an adapter may know about the run besides its own config."""

    run_dir: Path | None = None
    total_steps: int = 0
    seed: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))


EVAL_PATH = "merged"


class AdaptedModel:
    """A model with an adapter applied, plus the hooks the training loop calls.

    Subclasses override only what their method needs; the defaults describe a plain
    static adapter (peft LoRA/DoRA, or full fine-tuning).

    Evaluation path: every method is evaluated *merged* (ΔW folded into the dense weight, one GEMM per
    layer). Deployment merges, and only one common path makes eval time and eval energy comparable across
    methods (LoRAven used to be evaluated merged and the peft methods unmerged). ``summary()`` records it
    as ``adapter.eval_path`` in result.json.
    """

    eval_path = EVAL_PATH

    def __init__(self, model: nn.Module, adapter_type: str, scheduler: str = "static") -> None:
        self.model = model
        self.adapter_type = adapter_type
        self.scheduler = scheduler

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        return (p for p in self.model.parameters() if p.requires_grad)

    def regularization_loss(self) -> torch.Tensor | None:
        """Extra loss term added to the task loss (e.g. L2 / orthogonality on factors)."""
        return None

    def after_optimizer_step(self, step: int, loss: torch.Tensor) -> None:
        """Called after every optimizer step; dynamic-rank methods decide ranks here.

        ``loss`` is the detached on-device loss: implementations must not call ``.item()`` on it
        every step (no host sync per step); sample it at their own decision interval.
        """

    def step_metrics(self) -> dict[str, float]:
        """Numbers to log at a logging step (may host-sync: called only every log interval)."""
        return {}

    def ranks(self) -> dict[str, int]:
        """Final per-module ranks for result.json ``adapter.ranks``."""
        return {}

    def write_artifacts(self, run_dir: Path) -> list[Path]:
        """Write method-specific files beside result.json (rank_trace.csv, allocations)."""
        return []

    def artifact_tables(self) -> Mapping[str, Any]:
        """Tables (name -> pandas.DataFrame) to log to the tracker."""
        return {}

    def summary(self) -> dict[str, Any]:
        """Extra keys merged into result.json's ``adapter`` section (subclasses keep ``eval_path``)."""
        return {"eval_path": self.eval_path}

    def prepare_for_inference(self) -> None:
        """Switch to the merged inference path before evaluation (full fine-tuning: nothing to merge)."""

    def trainable_param_count(self) -> int:
        return sum(p.numel() for p in self.trainable_parameters())


AdapterFactory = Callable[[nn.Module, Mapping[str, Any], Mapping[str, Any], AdapterContext], AdaptedModel]
# (model, adapter config, budget) -> the config keys that bring the method's trainable count to <= budget
BudgetFitter = Callable[[nn.Module, Mapping[str, Any], int], dict[str, Any]]
PARAM_BUDGET_KEY = "param_budget"  # adapter.param_budget: a trainable-parameter count every method is fitted to


@dataclass(frozen=True)
class AdapterSpec:
    name: str
    factory: AdapterFactory
    schedulers: tuple[str, ...]
    doc: str = ""
    fit_budget: BudgetFitter | None = None  # None: the method has no rank to fit (full fine-tuning)
    size_space: tuple[str, str] | None = None  # (config key, Hydra sweep) that loraven.tune --sizes searches


_REGISTRY: dict[str, AdapterSpec] = {}


def register_adapter(name: str, schedulers: tuple[str, ...] = ("static",), doc: str = "",
                     fit_budget: BudgetFitter | None = None, size_space: tuple[str, str] | None = None):
    """Decorator: register ``factory`` as adapter ``name`` accepting the given schedulers.

    ``fit_budget`` (optional) maps ``adapter.param_budget`` to the method's own size keys (LoRA's ``r``,
    LoRAven's ``r_max``, ...), so that parameter-matched comparisons need no method names outside the method;
    ``size_space`` is the method's size key and the values a small search tries (``--sizes`` of loraven.tune).
    """

    def wrap(factory: AdapterFactory) -> AdapterFactory:
        if name in _REGISTRY and _REGISTRY[name].factory is not factory:
            raise ValueError(f"adapter {name!r} is registered twice")
        _REGISTRY[name] = AdapterSpec(name, factory, tuple(schedulers), doc or (factory.__doc__ or ""), fit_budget,
                                      size_space)
        return factory

    return wrap


def available_adapters() -> list[str]:
    _load_builtin()
    return sorted(_REGISTRY)


def get_adapter(name: str) -> AdapterSpec:
    _load_builtin()
    if name not in _REGISTRY:
        raise ConfigError(f"unknown adapter {name!r}; valid choices: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def check_combination(adapter: str, scheduler: str) -> None:
    """Raise :class:`IncompatibleCombination` if ``adapter`` cannot run under ``scheduler``."""
    spec = get_adapter(adapter)
    if scheduler not in spec.schedulers:
        raise IncompatibleCombination(
            f"adapter={adapter} does not accept scheduler={scheduler}; "
            f"valid schedulers for {adapter}: {', '.join(spec.schedulers)}"
        )


def apply_adapter(
    model: nn.Module, adapter_cfg: Mapping[str, Any], scheduler_cfg: Mapping[str, Any], ctx: AdapterContext
) -> AdaptedModel:
    """Apply the method; an ``adapter.param_budget`` is first turned into its size keys (:func:`fit_param_budget`)."""
    name = str(adapter_cfg["name"])
    check_combination(name, str(scheduler_cfg["name"]))
    fitted, _ = fit_param_budget(model, adapter_cfg)
    return get_adapter(name).factory(model, fitted, scheduler_cfg, ctx)


def fit_param_budget(model: nn.Module, adapter_cfg: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the adapter config the method is built from, what the budget did) for ``adapter.param_budget``.

    Without a budget the config is returned unchanged (minus the key). With one, the method's registered
    ``fit_budget`` picks its size keys so its trainable-parameter count is the largest that fits the budget;
    a method without one (full fine-tuning) trains what it trains, and the info says the budget did not apply.
    """
    cfg = {str(k): v for k, v in adapter_cfg.items() if k != PARAM_BUDGET_KEY}
    budget = adapter_cfg.get(PARAM_BUDGET_KEY)
    if budget is None:
        return cfg, {}
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise ConfigError(f"adapter.param_budget={budget!r}; valid: null or a trainable-parameter count >= 1")
    spec = get_adapter(str(cfg["name"]))
    if spec.fit_budget is None:
        return cfg, {"param_budget": budget, "budget_applied": False}
    chosen = spec.fit_budget(model, cfg, int(budget))
    return {**cfg, **chosen}, {"param_budget": budget, "budget_applied": True, "budget_fit": chosen}


def linear_targets(model: nn.Module, target_modules: str | list[str] | tuple[str, ...]) -> list[tuple[str, nn.Linear]]:
    """The nn.Linear layers a low-rank method adapts: name-suffix matches, or ``all-linear`` = every Linear but
    the output head (peft's rule, which LoRAven and LoRA-AR follow): the shapes a budget is counted on."""
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if target_modules == "all-linear":
        get = getattr(model, "get_output_embeddings", None)
        head = get() if callable(get) else None
        if head is None and linears and isinstance(model, nn.Sequential):
            head = linears[-1][1]
        return [(n, m) for n, m in linears if m is not head and n.rsplit(".", 1)[-1] not in ("lm_head", "score",
                                                                                              "classifier")]
    names = [target_modules] if isinstance(target_modules, str) else [str(t) for t in target_modules]
    return [(n, m) for n, m in linears if any(n == t or n.endswith("." + t) for t in names)]


def rank_for_budget(budget: int, per_rank: int, fixed: int, key: str, limit: int) -> int:
    """The largest rank r with ``fixed + r·per_rank <= budget``, within 1..limit; one clear error if even r=1
    does not fit (the message names the smallest budget that does)."""
    r = (budget - fixed) // per_rank if per_rank > 0 else 0
    if r < 1:
        raise ConfigError(f"adapter.param_budget={budget} is below this method's smallest size "
                          f"({key}=1 needs {fixed + per_rank} trainable parameters)")
    return int(min(r, limit))


def _load_builtin() -> None:
    """Import the built-in adapter modules so their ``register_adapter`` calls run."""
    import importlib

    for module in ("full", "lora", "lora_ar", "loraven"):
        importlib.import_module(f"loraven.adapters.{module}")
