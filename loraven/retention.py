"""Retention: how much a fine-tuned model keeps of what it could do before (``task.retention=[...]``).

Each entry names a task scored on the untrained model (cached like the base score, per model × task) and again
after fine-tuning; ``metrics.retention`` in result.json holds, per task, ``{base, after, change = after − base,
n, stderr}`` and ``mean_change`` over the tasks with a 95 % interval ``[mean_change_lo, mean_change_hi]``.

What an entry names (checked before anything runs):

- a task of the offline suites (``boolq``, ``piqa``, ``social_iqa``, ``hellaswag``, ``winogrande``, ``arc_easy``,
  ``arc_challenge``, ``openbookqa``, ``sst2``, ``rte``, ``mrpc``, ``cb``, ``copa``): lm-eval's own config scored on
  the task's *held-out* part at the suite's default split (``task=commonsense`` / ``task=glue`` with ``names=[it]``;
  the same documents a suite run scores, never the ones it fine-tunes on);
- an LM task kind at its defaults (``arith_mc``, ``gsm8k``, ``commonsense``, ``glue``): e.g. the training task
  itself, whose retention is the run's gain;
- ``lm_eval:<name>``: an lm-eval registry task (its data from the hub, or lm-eval's cache; online users).

``task.retention_limit`` caps the documents scored per entry (null = all of them).

The interval: per task, the change's stderr is √(se_after² + se_base²) from lm-eval's per-task stderrs (a normal
approximation that treats the two scores as independent; they are scored on the same documents and positively
correlated, so this is conservative: wider than a paired interval). The mean's stderr is √Σ stderr² / k and the
interval mean ± 1.96·stderr. It covers document sampling only, not seeds: spread over seeds is the analysis's.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from loraven.errors import ConfigError

REGISTRY_PREFIX = "lm_eval:"
Z95 = 1.959963984540054
SUITE_KINDS = ("commonsense", "glue")
ENTRY_KINDS = ("arith_mc", "gsm8k", "commonsense", "glue")  # LM task kinds that build at their defaults


def suite_of(name: str) -> str | None:
    """The suite (``commonsense`` / ``glue``) a task name belongs to, or None."""
    from loraven.tasks.benchmarks import SUITES

    return next((suite for suite, names in SUITES.items() if name in names), None)


def valid_names() -> list[str]:
    from loraven.tasks.benchmarks import SUITES

    return [*(n for names in SUITES.values() for n in names), *ENTRY_KINDS, f"{REGISTRY_PREFIX}<task>"]


def check_names(names: Sequence[str]) -> None:
    """Every entry is a suite task, an LM task kind or ``lm_eval:<name>``; no entry twice (a ValueError: the
    schema turns it into one line)."""
    if len(set(names)) != len(names):
        raise ValueError(f"task.retention={list(names)} names a task twice")
    for name in names:
        if name.startswith(REGISTRY_PREFIX) and len(name) > len(REGISTRY_PREFIX):
            continue
        if suite_of(name) is None and name not in ENTRY_KINDS:
            raise ValueError(f"task.retention: {name!r} is not a task it can score; valid: {', '.join(valid_names())}")


def entry_config(name: str, limit: int | None) -> dict[str, Any]:
    """The full task config one retention entry is scored with (its kind's YAML defaults; test split)."""
    from loraven.schema import with_defaults

    common = {"limit": limit, "retention": [], "eval_split": "test", "validation_fraction": 0.0}
    if name.startswith(REGISTRY_PREFIX):
        kind, extra = "lm_eval", {"names": [name[len(REGISTRY_PREFIX) :]]}
    elif (suite := suite_of(name)) is not None:
        kind, extra = suite, {"names": [name]}
    elif name in ENTRY_KINDS:
        kind, extra = name, {}
    else:
        raise ConfigError(f"task.retention: {name!r}; valid: {', '.join(valid_names())}")
    return with_defaults("task", kind, {"kind": kind, **extra, **common})


def entries(task_settings: Any) -> list[str]:
    return [str(n) for n in (getattr(task_settings, "retention", None) or [])]


@dataclass
class Baseline:
    """The untrained model's score per retention entry (and the seconds it took: ~0 when cached)."""

    scores: dict[str, dict[str, Any]] = field(default_factory=dict)
    configs: dict[str, dict[str, Any]] = field(default_factory=dict)
    seconds: float = 0.0


def measure_base(run, loaded, eval_bs: int, seed: int) -> Baseline:
    """Score every retention entry on the untrained model (``job.base_metrics``: cached per model × task)."""
    from loraven.job import base_metrics
    from loraven.models import cache_dir
    from loraven.tasks import build_task

    out = Baseline()
    names = entries(run.task)
    if not names:
        return out
    start = time.perf_counter()
    limit = getattr(run.task, "retention_limit", None)
    for name in names:
        cfg = entry_config(name, limit)
        task = build_task(cfg, cache_dir() / "data")
        out.configs[name] = cfg
        out.scores[name] = base_metrics({"model": run.raw["model"], "task": cfg}, loaded, task, eval_bs, seed)
    out.seconds = time.perf_counter() - start
    return out


def measure_after(baseline: Baseline, model, tokenizer, eval_bs: int, seed: int) -> tuple[dict[str, Any], float]:
    """Score every retention entry on the fine-tuned model; returns (``metrics.retention``, seconds)."""
    from loraven.evaluate import evaluate
    from loraven.models import cache_dir
    from loraven.tasks import build_task

    start = time.perf_counter()
    after = {}
    for name, cfg in baseline.configs.items():
        task = build_task(cfg, cache_dir() / "data")
        after[name] = evaluate(model, tokenizer, task, batch_size=eval_bs, seed=seed)
    return summarise(baseline.scores, after), time.perf_counter() - start


def summarise(base: Mapping[str, Mapping[str, Any]], after: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """``{"tasks": {task: {base, after, change, n, stderr}}, "mean_change", "mean_change_lo", "mean_change_hi"}``.

    ``base`` holds ``job.base_metrics`` fields (``base_accuracy``...), ``after`` evaluation metrics (``accuracy``...).
    ``stderr`` is the change's: √(se_after² + se_base²); None when lm-eval reported no stderr for either score.
    """
    tasks: dict[str, dict[str, Any]] = {}
    for name, post in after.items():
        pre = base[name]
        b, a = float(pre["base_accuracy"]), float(post["accuracy"])
        se_b, se_a = pre.get("base_accuracy_stderr"), post.get("accuracy_stderr")
        stderr = math.sqrt(float(se_a) ** 2 + float(se_b) ** 2) if se_a is not None and se_b is not None else None
        tasks[name] = {"base": b, "after": a, "change": a - b, "n": post.get("n"), "stderr": stderr}
    changes = [t["change"] for t in tasks.values()]
    mean = sum(changes) / len(changes) if changes else None
    errs = [t["stderr"] for t in tasks.values()]
    se = math.sqrt(sum(e**2 for e in errs)) / len(errs) if errs and None not in errs else None
    return {
        "tasks": tasks,
        "mean_change": mean,
        "mean_change_lo": None if se is None or mean is None else mean - Z95 * se,
        "mean_change_hi": None if se is None or mean is None else mean + Z95 * se,
    }
