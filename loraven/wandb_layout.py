"""What a job's W&B run looks like: its group, job type and tags, its step axis and summaries, and the keys it logs.

One declaration read by both sides: :class:`loraven.track.WandbTracker` calls ``define_metric`` from
:data:`METRICS` and :mod:`loraven.job` names the run with :func:`comparison_group`, :func:`job_type` and
:func:`tags`; the W&B report (``python -m analysis --wandb-report``) checks every key its panels read against
the real runs, and against :data:`DECLARED` when there are none to read. ``tests/e2e/test_wandb_dashboard.py``
checks that real offline runs log every key declared here, so the declaration cannot drift from the code.

Imports nothing heavy (no torch, no wandb): the analysis side reads it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

STEP = "train/step"  # the optimizer step: the x axis of every train/* series (W&B's _step follows it too)


@dataclass(frozen=True)
class MetricDef:
    """One ``run.define_metric(name, step_metric=..., summary=...)`` call."""

    name: str
    step_metric: str | None = None
    summary: str | None = None


# Order matters to W&B: the step axis is defined before the glob that uses it.
METRICS: tuple[MetricDef, ...] = (
    MetricDef(STEP),
    MetricDef("train/*", step_metric=STEP),  # loss, lr and the method's own step metrics, against the step
    MetricDef("train/loss", step_metric=STEP, summary="min,last"),  # summary: train/loss.min, train/loss.last
    MetricDef("eval/*", summary="last"),  # one evaluation at the end: its value, never a best-of
)

# The keys a job logs, by where they land. "history": run.log series; "summary": the run summary (the record's
# numbers, flattened with "/", written at the end; a defined summary op appears as "<key>.<op>"); "config":
# the resolved Hydra config (dotted); "table": a wandb.Table logged by name. Keys under ``when`` are logged
# only by the runs that condition selects (see :func:`applies`).
DECLARED: dict[str, frozenset[str]] = {
    "history": frozenset(
        {
            STEP,
            "train/loss",
            "train/lr",
            "eval/accuracy",
            "eval/accuracy_stderr",
            "eval/n",
            "eval/loss",
            "time/train_s",
            "time/step_ms_median",
            "time/tokens_per_s",
            "energy/kwh",
            "energy/evidence",
            "energy/method",
        }
    ),
    "summary": frozenset(
        {
            "status",
            "reason",
            "metrics/accuracy",
            "metrics/accuracy_stderr",
            "metrics/n",
            "metrics/base_accuracy",
            "energy/kwh",
            "energy/evidence",
            "energy/method",
            "time/train_s",
            "time/step_ms_median",
            "time/tokens_per_s",
            "memory/peak_mb",
            "model/trainable_params",
            "adapter/label",
            "adapter/size/value",
            "train/loss.min",
            "train/loss.last",
            "eval/accuracy.last",
        }
    ),
    "config": frozenset(
        {
            "experiment_name",
            "seed",
            "adapter.name",
            "scheduler.name",
            "trainer.lr",
            "trainer.steps",
            "model.kind",
            "task.kind",
            "energy.name",
        }
    ),
    "table": frozenset(),
}

# Keys only some runs log, with the condition that selects them. A dynamic rank scheduler's runs log the rank
# per step (the adapter's step metrics, under train/); a method with a per-module allocation logs it as a table
# named "<method>_allocation" (and its CSV beside result.json).
CONDITIONAL: tuple[tuple[Mapping[str, Any], str, frozenset[str]], ...] = (
    (
        {"config_not": {"scheduler.name": "static"}},
        "history",
        frozenset({"train/loraven/rank_mean", "train/loraven/rank_min", "train/loraven/rank_max"}),
    ),
    ({"config_not": {"scheduler.name": "static"}}, "table", frozenset({"rank_trace"})),
    ({"logs_suffix": "_allocation"}, "table", frozenset({"lora_ar_allocation"})),
)

ARTIFACT_TYPE = "run-result"  # result.json, config.json and the run's CSVs (rank trace, allocation, emissions)


def declared(source: str, when: Mapping[str, Any] | None = None) -> frozenset[str]:
    """The keys of one source every run logs, and with ``when`` also those only the runs of that condition do."""
    keys = set(DECLARED.get(source, frozenset()))
    for condition, where, names in CONDITIONAL:
        if where == source and when is not None and dict(condition) == dict(when):
            keys |= names
    return frozenset(keys)


def dotted(config: Mapping[str, Any], key: str) -> Any:
    """``config["a"]["b"]`` for ``"a.b"``; None where a part is missing."""
    node: Any = config
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def applies(when: Mapping[str, Any] | None, config: Mapping[str, Any], keys: set[str] | frozenset[str]) -> bool:
    """Whether a run (its config, and every key it logged) is one a condition selects.

    ``{"config_not": {"scheduler.name": "static"}}``: the config value differs (and is set);
    ``{"config_is": {...}}``: equals; ``{"logs_suffix": "_allocation"}``: the run logged a key ending so.
    """
    if not when:
        return True
    for key, value in (when.get("config_not") or {}).items():
        found = dotted(config, key)
        if found is None or found == value:
            return False
    for key, value in (when.get("config_is") or {}).items():
        if dotted(config, key) != value:
            return False
    suffix = when.get("logs_suffix")
    return not (suffix and not any(k.endswith(suffix) for k in keys))


def _comparison_hash(cfg: Mapping[str, Any]) -> str:
    """What the runs of one comparison share: every semantic key but the seed, and the energy meter (energy
    figures of two meters are never pooled). Kept here, not imported from track, so analysis stays light."""
    from loraven.track import SEMANTIC_KEYS

    shared = {k: cfg.get(k) for k in SEMANTIC_KEYS if k in cfg and k != "seed"}
    shared["energy"] = (cfg.get("energy") or {}).get("name")
    blob = json.dumps(shared, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:6]


def comparison_group(cfg: Mapping[str, Any]) -> str:
    """The W&B group: ``<experiment>/<method>/<scheduler>/<config hash>``.

    Seeds of one configuration share a group, so W&B's grouped charts show their mean and spread; anything
    else that differs (lr, rank, task, model, steps, energy meter) makes another group, so a mean never pools
    different work. The hash is over the same semantic keys as the run id, less the seed.
    """
    experiment = str(cfg.get("experiment_name") or "default")
    method = str((cfg.get("adapter") or {}).get("name"))
    scheduler = str((cfg.get("scheduler") or {}).get("name"))
    return f"{experiment}/{method}/{scheduler}/{_comparison_hash(cfg)}"


def job_type(cfg: Mapping[str, Any]) -> str:
    """``bench`` (microbenchmarks), ``validation`` (scored on the validation split: search trials) or ``train``."""
    if str(cfg.get("job", "train")) == "bench":
        return "bench"
    if str((cfg.get("task") or {}).get("eval_split") or "test") == "validation":
        return "validation"
    return "train"


def tags(cfg: Mapping[str, Any]) -> list[str]:
    """Filterable facts of a run (the group already holds experiment/method/scheduler)."""
    out = [
        f"method:{(cfg.get('adapter') or {}).get('name')}",
        f"scheduler:{(cfg.get('scheduler') or {}).get('name')}",
        f"seed:{cfg.get('seed')}",
        f"model:{(cfg.get('model') or {}).get('kind')}",
        f"task:{(cfg.get('task') or {}).get('kind')}",
        f"experiment:{cfg.get('experiment_name') or 'default'}",
    ]
    role = (cfg.get("tuning") or {}).get("role")
    if role:
        out.append(f"tuning:{role}")
    return out


def per_task_metrics(per_task: Mapping[str, Any] | None) -> dict[str, Any]:
    """``metrics.per_task`` (task=commonsense/glue, and every LM run) as ``eval/<task>/<metric>`` keys.

    Each lm-eval score ``"<metric>,<filter>"`` becomes ``eval/<task>/<metric>`` (filter ``none``) or
    ``eval/<task>/<metric>_<filter>``; its stderr ``..._stderr``; and ``eval/<task>/n``.
    """
    out: dict[str, Any] = {}
    for task, entry in (per_task or {}).items():
        if not isinstance(entry, Mapping):
            continue
        for kind, suffix in (("scores", ""), ("stderrs", "_stderr")):
            for name, value in (entry.get(kind) or {}).items():
                metric, _, filt = str(name).partition(",")
                label = metric if filt in ("", "none") else f"{metric}_{filt}"
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    out[f"eval/{task}/{label}{suffix}"] = value
        if isinstance(entry.get("n"), (int, float)):
            out[f"eval/{task}/n"] = entry["n"]
    return out
