"""The results-store contract (docs/design.md) as data, so tests and tools check it key by key.

Keys may be added freely; these may never be renamed or dropped.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

TOP_LEVEL = (
    "run_id",
    "status",
    "reason",
    "created_at",
    "config",
    "model",
    "adapter",
    "metrics",
    "time",
    "energy",
    "env",
)
SECTIONS: dict[str, tuple[str, ...]] = {
    "model": ("name", "total_params", "trainable_params"),
    "adapter": ("type", "scheduler", "ranks"),
    "metrics": ("task", "metric", "accuracy", "accuracy_stderr", "n"),
    "time": ("train_s", "eval_s", "total_s", "step_ms_median", "tokens_per_s"),
    "energy": ("method", "kwh", "emissions_kg", "cpu_kwh", "gpu_kwh", "ram_kwh"),
    "env": ("git_sha", "dirty", "python", "torch", "transformers", "peft", "lm_eval", "codecarbon", "device"),
}
BENCH_ROW = ("shape", "batch", "dim", "rank", "variant", "ms", "device", "dtype")
STATUSES = ("completed", "failed", "skipped")
RANK_TRACE_HEADER = "step,module,rank"


def empty_sections() -> dict[str, dict[str, Any]]:
    """Every contract section with its required keys set to None: the job's skeleton starts from this, so the
    record a run writes and the validator that reads it back share one definition of the required keys."""
    return {section: dict.fromkeys(keys) for section, keys in SECTIONS.items()}


def contract_violations(result: Mapping[str, Any]) -> list[str]:
    """Every way ``result`` breaks the contract (empty list = valid)."""
    if not isinstance(result, Mapping):
        return [f"not a JSON object ({type(result).__name__})"]
    problems = [f"missing top-level key {k!r}" for k in TOP_LEVEL if k not in result]
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
    for i, row in enumerate(result.get("bench") or []):
        problems += [f"bench[{i}] missing {k!r}" for k in BENCH_ROW if k not in row]
    return problems
