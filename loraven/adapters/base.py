"""The adapter contract: how a fine-tuning method plugs into the one training loop.

A method is a function ``apply(model, adapter_cfg, ctx) -> AdaptedModel`` registered under a name with
:func:`register_adapter`, which also carries everything else the harness needs to know about the method
(:class:`AdapterSpec`: schedulers, display labels, rank check, benchmark rank matching). The training loop
only ever talks to :class:`AdaptedModel`, so adding a method never forks the loop (docs/design.md: "How to
add a method"). Adapters must not import train, track or measure.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from loraven.errors import ConfigError, IncompatibleCombination
from loraven.registry import TARGET_KEY, Registry
from loraven.schema import Section, parse, with_defaults


@dataclass
class AdapterContext:
    """What an adapter may know about the run besides its own config."""

    total_steps: int = 0
    seed: int = 0
    scheduler: Any = None  # the validated scheduler settings; only dynamic methods read them


EVAL_PATH = "merged"


class NotSaved(Exception):
    """Raised by a saving hook when the method has nothing of that kind to save; the message is the reason the
    record gives (e.g. full fine-tuning has no adapter apart from the model)."""


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

    def __init__(self, model: nn.Module) -> None:
        self.model = model

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

    # ---------------------------------------------------------------- saving (loraven.artifacts calls these)
    def save_adapter(self, folder: Path) -> dict[str, Any]:
        """Write the trained adapter into ``folder`` (an empty temp folder) in the method's standard format
        (peft's ``save_pretrained`` layout, loadable by anything that loads peft adapters); returns what the
        record says about it (``format`` at least). Raises :class:`NotSaved` when the method has no adapter apart
        from the model (the default: full fine-tuning changes every weight). Called after evaluation."""
        raise NotSaved("full fine-tuning changes every weight: there is no adapter apart from the model")

    def save_model(self, folder: Path) -> dict[str, Any]:
        """Write the weights this method changed as a whole model folder (``save_pretrained``; a plain
        safetensors state dict for models without it). Only called when the run asks (``save.full_model``)."""
        from loraven.adapters.export import save_whole_model

        return save_whole_model(self.model, folder)

    def changed_bytes(self) -> int:
        """Bytes :meth:`save_model` would write (the whole model), stated in the record when it is not saved."""
        from loraven.adapters.export import state_bytes

        return state_bytes(self.model)

    def state_dict_extra(self) -> dict[str, Any]:
        """The method's own training state beyond the model's trainable parameters and buffers (which the
        checkpoint saves itself): what ``after_optimizer_step`` accumulates (ranks, schedulers, traces...).

        Saved in mid-run checkpoints (:mod:`loraven.checkpoint`) with ``torch.load(weights_only=True)``: only
        tensors, numbers, strings, None and lists/tuples/dicts of them. A static method has none.
        """
        return {}

    def load_state_extra(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict_extra` into a freshly applied adapter (same config, same model), after the
        trainable parameters were loaded. Raise ``ValueError`` when ``state`` does not fit this model: the
        checkpoint is then refused with that reason, never half-loaded into a run that goes on."""
        if state:
            raise ValueError(f"{type(self).__name__} keeps no extra training state; got {sorted(state)}")


AdapterFactory = Callable[[nn.Module, Any, AdapterContext], AdaptedModel]
FitCheck = Callable[[nn.Module, Any], None]
RankMatcher = Callable[[dict[str, Any], int, str], dict[str, Any]]
RANK_MATCH_MODES = ("uniform", "budget")
# (model, adapter settings, budget) -> the config keys that bring the method's trainable count to <= budget
BudgetFitter = Callable[[nn.Module, Any, int], dict[str, Any]]
PARAM_BUDGET_KEY = "param_budget"  # adapter.param_budget: a trainable-parameter count every method is fitted to


class StaticScheduler(Section):
    """The scheduler of a method that has only a fixed rank: nothing to set."""

    name: str


@dataclass(frozen=True)
class AdapterSpec:
    """Everything the harness needs to know about a method, so no module outside its folder names it.

    - ``config``: the schema of ``cfg.adapter`` (a :class:`~loraven.schema.Section`, validated once before the run
      starts and handed to the factory; ``conf/adapter/<name>.yaml`` holds the defaults).
    - ``schedulers``: the rank schedulers it accepts (a sweep records any other pair as ``skipped``), and
      ``scheduler_config`` the schema of ``cfg.scheduler`` for them (a fixed-rank method takes no options).
    - ``labels``: display label per scheduler, written to result.json as ``adapter.label`` and used by every
      table and figure (the LoRAven paper's levels: dense, fixed low-rank, dynamic, full LoRAven).
    - ``order``: where its rows sort in tables (written to the record as ``adapter.order``).
    - ``baseline``: the dense reference every ratio is taken against (full fine-tuning; ``adapter.baseline``).
    - ``size_key``: the adapter key that says how big the method is (``r``, ``r_max``...; ``adapter.size``).
    - ``check_fits``: the method's own check that its ranks fit the loaded model, run right after loading
      (before the base evaluation), e.g. LoRA's ``r`` ≤ every target layer's smaller side.
    - ``match_rank``: how the benchmarks set this method to matched rank r (``cfg, r, mode -> cfg``;
      mode ``uniform`` = r on every layer, ``budget`` = the parameter count of rank r spread as the method
      allocates); None = the method has no rank (full fine-tuning).
    """

    name: str
    factory: AdapterFactory
    schedulers: tuple[str, ...]
    config: type[Section]
    scheduler_config: type[Section] = StaticScheduler
    doc: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    order: int = 100
    baseline: bool = False
    size_key: str | None = None
    check_fits: FitCheck | None = None
    match_rank: RankMatcher | None = None
    fit_budget: BudgetFitter | None = None  # None: the method has no rank to fit (full fine-tuning)
    size_space: tuple[str, str] | None = None  # (config key, Hydra sweep) that loraven.tune --sizes searches

    def label(self, scheduler: str | None = None) -> str:
        """Display label of this method under ``scheduler`` (``name+scheduler`` when none is declared)."""
        scheduler = scheduler or "static"
        if scheduler in self.labels:
            return self.labels[scheduler]
        return self.name if scheduler == "static" else f"{self.name}+{scheduler}"

    def bench_variants(self) -> dict[str, str]:
        """Benchmark method name → scheduler: ``<name>`` for a single-scheduler method, else ``<name>_<sched>``."""
        if len(self.schedulers) == 1:
            return {self.name: self.schedulers[0]}
        return {f"{self.name}_{s}": s for s in self.schedulers}

    def describe(self, scheduler: str, settings: Section | None = None) -> dict[str, Any]:
        """What the record's ``adapter`` section says about the method itself: analysis reads these, never the
        registry (label, sort order, whether it is the dense reference, its nominal size)."""
        size = None
        if settings is not None and self.size_key is not None:
            size = {"key": self.size_key, "value": getattr(settings, self.size_key, None)}
        return {"label": self.label(scheduler), "order": self.order, "baseline": self.baseline, "size": size}


ADAPTERS: Registry[AdapterSpec] = Registry("adapter", "loraven.adapters", "loraven.adapters")


def register_adapter(
    name: str,
    schedulers: tuple[str, ...] = ("static",),
    doc: str = "",
    *,
    config: type[Section],
    scheduler_config: type[Section] = StaticScheduler,
    labels: Mapping[str, str] | None = None,
    order: int = 100,
    baseline: bool = False,
    size_key: str | None = None,
    check_fits: FitCheck | None = None,
    match_rank: RankMatcher | None = None,
    fit_budget: BudgetFitter | None = None,
    size_space: tuple[str, str] | None = None,
):
    """Decorator: register ``factory`` as adapter ``name`` (see :class:`AdapterSpec` for the fields)."""

    def wrap(factory: AdapterFactory) -> AdapterFactory:
        ADAPTERS.register(
            name,
            AdapterSpec(
                name,
                factory,
                tuple(schedulers),
                config,
                scheduler_config=scheduler_config,
                doc=doc or (factory.__doc__ or ""),
                labels=dict(labels or {}),
                order=order,
                baseline=baseline,
                size_key=size_key,
                check_fits=check_fits,
                match_rank=match_rank,
                fit_budget=fit_budget,
                size_space=size_space,
            ),
        )
        return factory

    return wrap


def available_adapters() -> list[str]:
    return ADAPTERS.names()


def registered_specs() -> list[AdapterSpec]:
    """Every registered method in table order."""
    return sorted(ADAPTERS.specs(), key=lambda spec: (spec.order, spec.name))


def get_adapter(name: str) -> AdapterSpec:
    return ADAPTERS.get(name)


def display_label(adapter: str, scheduler: str | None = None) -> str:
    """The label tables show for a run of ``adapter`` under ``scheduler`` (unknown names shown as they are)."""
    if str(adapter) not in ADAPTERS:
        return str(adapter) if scheduler in (None, "static") else f"{adapter}+{scheduler}"
    return get_adapter(str(adapter)).label(scheduler)


def label_order() -> list[str]:
    """Every registered label in table order (the paper's levels first, then the other methods)."""
    return [spec.label(s) for spec in registered_specs() for s in spec.schedulers]


def check_combination(adapter: str, scheduler: str) -> None:
    """Raise :class:`IncompatibleCombination` if ``adapter`` cannot run under ``scheduler``."""
    spec = get_adapter(adapter)
    if scheduler not in spec.schedulers:
        raise IncompatibleCombination(
            f"adapter={adapter} does not accept scheduler={scheduler}; "
            f"valid schedulers for {adapter}: {', '.join(spec.schedulers)}"
        )


def adapter_settings(cfg: Mapping[str, Any] | Section) -> Section:
    """``cfg.adapter`` validated by its method's schema (completed from ``conf/adapter/<name>.yaml`` when partial)."""
    if isinstance(cfg, Section):
        return cfg
    name = str(cfg.get("name"))
    spec = get_adapter(name)
    return parse(spec.config, with_defaults("adapter", name, cfg), "adapter", drop=(TARGET_KEY,))


def scheduler_settings(adapter: str, cfg: Mapping[str, Any] | Section) -> Section:
    """``cfg.scheduler`` validated by the schema the method declares for its schedulers."""
    if isinstance(cfg, Section):
        return cfg
    spec = get_adapter(adapter)
    name = str(cfg.get("name"))
    check_combination(adapter, name)
    data = with_defaults("scheduler", name, cfg) if spec.scheduler_config is not StaticScheduler else dict(cfg)
    return parse(spec.scheduler_config, data, "scheduler")


def check_fits(model: nn.Module, settings: Mapping[str, Any] | Section) -> None:
    """``target_modules`` must match a layer of ``model`` and the method's ranks must fit it: a config error
    right after loading, not after the base evaluation or training."""
    from loraven.adapters.targets import resolve_targets

    settings = adapter_settings(settings)
    spec = get_adapter(str(settings.name))  # type: ignore[attr-defined]
    if spec.baseline:
        return  # full fine-tuning adapts every weight; target_modules does not apply
    resolve_targets(model, getattr(settings, "target_modules", "all-linear"))
    if spec.check_fits is not None:
        spec.check_fits(model, settings)


def apply_adapter(
    model: nn.Module,
    adapter_cfg: Mapping[str, Any] | Section,
    scheduler_cfg: Mapping[str, Any] | Section,
    ctx: AdapterContext,
) -> AdaptedModel:
    """Apply the method ``adapter_cfg.name`` under ``scheduler_cfg`` (handed to it as ``ctx.scheduler``); an
    ``adapter.param_budget`` is first turned into the method's size keys (:func:`fit_param_budget`).

    Mappings are validated here (tests, notebooks, the benchmarks); the job passes the sections it validated
    before the run started, which are used as they are."""
    settings = adapter_settings(adapter_cfg)
    name = str(settings.name)  # type: ignore[attr-defined]
    scheduler = scheduler_settings(name, scheduler_cfg)
    check_combination(name, str(scheduler.name))  # type: ignore[attr-defined]
    fitted, _ = fit_param_budget(model, settings)
    return get_adapter(name).factory(model, fitted, replace(ctx, scheduler=scheduler))


def fit_param_budget(model: nn.Module, settings: Mapping[str, Any] | Section) -> tuple[Section, dict[str, Any]]:
    """(the settings the method is built from, what the budget did) for ``adapter.param_budget``.

    Without a budget the settings are returned unchanged. With one, the method's registered ``fit_budget`` picks
    its size keys so its trainable-parameter count is the largest that fits the budget (the result is validated
    again by the method's schema); a method without one (full fine-tuning) trains what it trains, and the info
    says the budget did not apply.
    """
    settings = adapter_settings(settings)
    budget = getattr(settings, PARAM_BUDGET_KEY, None)
    if budget is None:
        return settings, {}
    spec = get_adapter(str(settings.name))  # type: ignore[attr-defined]
    if spec.fit_budget is None:
        return settings, {"param_budget": budget, "budget_applied": False}
    chosen = spec.fit_budget(model, settings, int(budget))
    fitted = parse(spec.config, {**settings.dump(), **chosen, PARAM_BUDGET_KEY: None}, "adapter")  # applied
    return fitted, {"param_budget": budget, "budget_applied": True, "budget_fit": chosen}


def linear_targets(model: nn.Module, target_modules: str | list[str] | tuple[str, ...]) -> list[tuple[str, nn.Linear]]:
    """The nn.Linear layers a low-rank method adapts (the shared resolver, :mod:`loraven.adapters.targets`): the
    shapes a budget is counted on."""
    from loraven.adapters.targets import resolve_targets

    return list(resolve_targets(model, target_modules, classes=(nn.Linear,)).items())


def rank_for_budget(budget: int, per_rank: int, fixed: int, key: str, limit: int) -> int:
    """The largest rank r with ``fixed + r·per_rank <= budget``, within 1..limit; one clear error if even r=1
    does not fit (the message names the smallest budget that does) or if the budget is beyond the largest size
    (``limit``, the layers' smaller side: the message names the largest budget; it used to be capped silently,
    so two methods "at the same budget" trained different counts)."""
    r = (budget - fixed) // per_rank if per_rank > 0 else 0
    if r < 1:
        raise ConfigError(
            f"adapter.param_budget={budget} is below this method's smallest size "
            f"({key}=1 needs {fixed + per_rank} trainable parameters)"
        )
    largest = fixed + limit * per_rank
    if budget > largest:
        raise ConfigError(
            f"adapter.param_budget={budget} is beyond this method's largest size on this model "
            f"({key}={limit}, the target layers' smaller side, trains {largest} parameters); "
            f"give at most {largest}"
        )
    return int(r)
