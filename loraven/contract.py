"""The results-store contract (docs/design.md) as data, so the writer, resume, analysis and tests check it alike.

Keys may be added freely; these may never be renamed or dropped. ``schema_version`` says which version of this
contract a record follows: a record of another version (or none) is not trusted by resume or read by analysis.
Version 2 added the sections analysis reads instead of importing the training code: ``task`` (what the task is),
``adapter.{label, order, baseline, size}`` (how a method is shown and sorted), ``energy.evidence`` and ``memory``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

SCHEMA_VERSION = 2

TOP_LEVEL = (
    "schema_version",
    "run_id",
    "status",
    "reason",
    "created_at",
    "experiment",
    "seed",
    "config",
    "model",
    "adapter",
    "task",
    "metrics",
    "time",
    "energy",
    "memory",
    "env",
)
SECTIONS: dict[str, tuple[str, ...]] = {
    "model": ("name", "total_params", "trainable_params"),
    "adapter": ("type", "scheduler", "ranks", "label", "order", "baseline", "size"),
    "task": ("kind", "family", "metric", "higher_is_better"),
    "metrics": ("task", "metric", "accuracy", "accuracy_stderr", "n"),
    "time": ("train_s", "eval_s", "total_s", "step_ms_median", "tokens_per_s"),
    "energy": ("method", "evidence", "kwh", "emissions_kg", "cpu_kwh", "gpu_kwh", "ram_kwh"),
    "memory": ("peak_mb", "scope"),
    "env": ("git_sha", "dirty", "python", "torch", "transformers", "peft", "lm_eval", "codecarbon", "device"),
}
BENCH_ROW = ("shape", "batch", "dim", "rank", "variant", "ms", "device", "dtype")
STATUSES = ("completed", "failed", "skipped")
EVIDENCE = ("measured", "estimated", "not measured")
RANK_TRACE_HEADER = "step,module,rank"

# value ranges a trusted record keeps (a record outside them is never resumed from or analysed)
UNIT_INTERVAL = ("accuracy", "base_accuracy", "chance")
NON_NEGATIVE = {
    "metrics": ("accuracy_stderr", "n", "mse"),
    "time": ("train_s", "eval_s", "total_s", "step_ms_median", "tokens_per_s"),
    "energy": ("kwh", "emissions_kg", "cpu_kwh", "gpu_kwh", "ram_kwh"),
    "model": ("total_params", "trainable_params"),
    "memory": ("peak_mb",),
}


def empty_sections() -> dict[str, dict[str, Any]]:
    """Every contract section with its required keys set to None: the record builder starts from this, so the
    record a run writes and the validator that reads it back share one definition of the required keys."""
    return {section: dict.fromkeys(keys) for section, keys in SECTIONS.items()}


def contract_violations(result: Any) -> list[str]:
    """Every way ``result`` breaks the contract (empty list = valid)."""
    if not isinstance(result, Mapping):
        return [f"not a JSON object ({type(result).__name__})"]
    problems = [f"missing top-level key {k!r}" for k in TOP_LEVEL if k not in result]
    version = result.get("schema_version")
    if "schema_version" in result and version != SCHEMA_VERSION:
        problems.append(f"schema_version {version!r} is not {SCHEMA_VERSION} (written by another loraven version)")
    if result.get("status") not in STATUSES:
        problems.append(f"status {result.get('status')!r} not in {STATUSES}")
    if result.get("status") != "completed" and not result.get("reason"):
        problems.append("a failed or skipped run needs a reason")
    completed = result.get("status") == "completed"
    for section, keys in SECTIONS.items():
        body = result.get(section)
        if not isinstance(body, Mapping):
            problems.append(f"section {section!r} missing or not a mapping")
        elif completed or section != "env":  # a skipped run never reached the machine: env may be empty
            problems += [f"missing {section}.{k}" for k in keys if k not in body]
    problems += _range_violations(result)
    bench = result.get("bench")
    if bench is not None and not isinstance(bench, list):
        problems.append(f"bench is {type(bench).__name__}, not a list of rows")
    for i, row in enumerate(bench if isinstance(bench, list) else []):
        if not isinstance(row, Mapping):
            problems.append(f"bench[{i}] is not a mapping")
            continue
        problems += [f"bench[{i}] missing {k!r}" for k in BENCH_ROW if k not in row]
    return problems


def _range_violations(result: Mapping[str, Any]) -> list[str]:
    problems = []
    metrics = result.get("metrics") if isinstance(result.get("metrics"), Mapping) else {}
    for key in UNIT_INTERVAL:
        value = metrics.get(key)
        if value is not None and not (_is_number(value) and 0.0 <= float(value) <= 1.0):
            problems.append(f"metrics.{key}={value!r} outside [0, 1]")
    for section, keys in NON_NEGATIVE.items():
        body = result.get(section) if isinstance(result.get(section), Mapping) else {}
        for key in keys:
            value = body.get(key)
            if value is not None and not (_is_number(value) and float(value) >= 0.0):
                problems.append(f"{section}.{key}={value!r} is not a non-negative number")
    energy = result.get("energy") if isinstance(result.get("energy"), Mapping) else {}
    if energy.get("evidence") is not None and energy.get("evidence") not in EVIDENCE:
        problems.append(f"energy.evidence={energy.get('evidence')!r} not in {EVIDENCE}")
    return problems


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(float(value))
