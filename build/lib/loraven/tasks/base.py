"""The task contract: what a run trains on and how it is scored, and the registry every task kind plugs into.

A task kind is one module (in ``loraven/tasks/kinds/``, or a plug-in: see :mod:`loraven.registry`) that registers a
:class:`TaskSpec` — its config schema, its builder and what it *is* (its ``family``: which of the papers' claims it
can test) — plus one YAML (``conf/task/<kind>.yaml``) with its defaults. The training loop, the evaluation path
and the job only talk to :class:`Task`'s methods, so a new kind never edits them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from loraven.registry import TARGET_KEY, Registry
from loraven.schema import Section, parse, with_defaults

# What a task is, for matching a paper's claim to it (analysis reads it from the record, never from a name).
FAMILIES = (
    "image-classification",  # §5.3's CIFAR-10 claim
    "text-classification",  # §5.3's GLUE claim
    "regression",  # §5.3's MSE claim
    "commonsense",  # LoRA-AR's eight-task table
    "math-reasoning",
    "generated",  # synthetic skills (2-digit addition): no paper claim
    "custom",  # the user's own data or registry tasks: no paper claim
)


class Task:
    """A built task. Subclasses (LM tasks scored by lm-eval, classic tensor tasks scored directly) implement the
    methods; the loop, the evaluation and the job use nothing else."""

    name: str
    kind: str
    family: str = "custom"
    fingerprint: str = ""
    eval_split: str = "test"
    train_unit: str = "token"  # what J/unit counts: training tokens (LM) or samples (classic)
    info: dict[str, Any]  # what a model builder needs to know (an MLP's in/out sizes); {} for LMs
    max_seq_len: int | None = None

    @property
    def metric_key(self) -> str:
        """The headline metric as result.json names it (``acc``, ``mse``, ``exact_match,strict-match``)."""
        raise NotImplementedError

    @property
    def higher_is_better(self) -> bool:
        raise NotImplementedError

    def train_batches(
        self, tokenizer: Any, batch_size: int, max_len: int, seed: int, rank: int = 0, world: int = 1
    ) -> Iterator[dict[str, torch.Tensor]]:
        """Endless shuffled training batches (the loop takes ``trainer.steps`` of them)."""
        raise NotImplementedError

    def batch_loss(self, model: torch.nn.Module, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def batch_units(self, batch: Mapping[str, torch.Tensor]) -> int:
        """Tokens (LM) or samples (classic) in a batch, for throughput and energy per unit."""
        raise NotImplementedError

    def score(self, model: torch.nn.Module, tokenizer: Any, batch_size: int, seed: int) -> dict[str, Any]:
        """The contract's ``metrics`` section for ``model`` (already in eval mode)."""
        raise NotImplementedError

    def check_tokenizer(self, tokenizer: Any) -> None:
        """Task options the loaded model must support (checked right after loading)."""

    def describe(self) -> dict[str, Any]:
        """The record's ``task`` section: what the task is, for analysis (kind, family, metric direction)."""
        return {
            "kind": self.kind,
            "family": self.family,
            "metric": self.metric_key,
            "higher_is_better": self.higher_is_better,
        }


TaskBuilder = Callable[[Any, Path], Task]


@dataclass(frozen=True)
class TaskSpec:
    """Everything the harness knows about a task kind before building it.

    - ``config``: the schema of ``cfg.task`` (a :class:`~loraven.schema.Section`; the YAML holds the defaults);
    - ``build(settings, data_root)``: the task, from the validated settings; generated data under ``data_root``;
    - ``family``: what kind of task it is (:data:`FAMILIES`), so analysis can match paper claims;
    - ``default_metric`` and ``metric_directions``: the metric a run reports unless ``task.metric`` names one, and
      whether higher is better for each metric the kind can report (a search needs it before any run; metrics
      not listed fall back to lm-eval's own registry).
    """

    kind: str
    config: type[Section]
    build: TaskBuilder
    family: str = "custom"
    default_metric: str = "acc"
    metric_directions: Mapping[str, bool] = field(default_factory=lambda: {"acc": True})
    needs_network: Callable[[Any], bool] | None = None  # e.g. registry tasks without local data
    doc: str = ""

    def higher_is_better(self, metric: str) -> bool:
        base = metric.split(",")[0]
        if base in self.metric_directions:
            return bool(self.metric_directions[base])
        return _lm_eval_direction(base)


def _lm_eval_direction(metric: str) -> bool:
    """lm-eval's declared direction for a metric it knows (perplexity: lower); higher for anything unknown."""
    try:
        from lm_eval.api.registry import is_higher_better

        value = is_higher_better(metric)
        return True if value is None else bool(value)
    except Exception:
        return metric not in ("perplexity", "word_perplexity", "byte_perplexity", "bits_per_byte", "mse")


TASKS: Registry[TaskSpec] = Registry("task", "loraven.tasks.kinds", "loraven.tasks")


def register_task(
    kind: str,
    *,
    config: type[Section],
    family: str = "custom",
    default_metric: str = "acc",
    metric_directions: Mapping[str, bool] | None = None,
    needs_network: Callable[[Any], bool] | None = None,
) -> Callable[[TaskBuilder], TaskBuilder]:
    """Decorator: register ``build`` as task kind ``kind`` (see :class:`TaskSpec`)."""
    if family not in FAMILIES:
        raise ValueError(f"task kind {kind!r}: family {family!r} not in {FAMILIES}")

    def wrap(build: TaskBuilder) -> TaskBuilder:
        TASKS.register(
            kind,
            TaskSpec(
                kind,
                config,
                build,
                family=family,
                default_metric=default_metric,
                metric_directions=dict(metric_directions or {default_metric: True}),
                needs_network=needs_network,
                doc=build.__doc__ or "",
            ),
        )
        return build

    return wrap


def task_settings(cfg: Mapping[str, Any]) -> Section:
    """``cfg.task`` validated by its kind's schema (completed from ``conf/task/<kind>.yaml`` when partial)."""
    kind = str(cfg.get("kind"))
    spec = TASKS.get(kind)
    full = with_defaults("task", kind, cfg)
    return parse(spec.config, full, "task", drop=(TARGET_KEY,))


def build_task(cfg: Mapping[str, Any] | Section, data_root: Path) -> Task:
    """Build the task ``cfg.kind`` names; a mapping is validated first, a parsed section is used as is."""
    settings = cfg if isinstance(cfg, Section) else task_settings(cfg)
    spec = TASKS.get(str(settings.kind))  # type: ignore[attr-defined]
    task = spec.build(settings, data_root)
    task.kind = spec.kind
    task.family = spec.family
    return task
