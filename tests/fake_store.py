"""Hand-built results stores with known numbers, shared by the analysis, verdict, notebook and reliability tests."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from loraven.contract import SCHEMA_VERSION


def _describe_method(adapter: str, scheduler: str) -> dict[str, Any]:
    from loraven.adapters.base import ADAPTERS

    if adapter in ADAPTERS:
        return ADAPTERS.get(adapter).describe(scheduler)
    return {"label": adapter, "order": None, "baseline": False, "size": None}


def _family(task: str | None, regression: bool) -> str | None:
    from loraven.tasks import TASKS

    if task in TASKS:
        return TASKS.get(str(task)).family
    return "regression" if regression else "custom"


def _evidence(method: str | None) -> str:
    text = str(method or "")
    if "rapl" in text or "nvml" in text:
        return "measured"
    return "estimated" if "estimate" in text else "not measured"


def write_run(
    root: Path,
    experiment: str,
    run_id: str,
    *,
    status: str = "completed",
    reason: str | None = None,
    adapter: str = "loraven",
    scheduler: str = "static",
    mode: str | None = None,
    seed: int = 0,
    task: str | None = "arith_mc",
    accuracy: float | None = None,
    mse: float | None = None,
    kwh: float | None = None,
    method: str | None = "codecarbon-rapl",
    step_ms: float | None = None,
    peak_mb: float | None = None,
    torch: str = "2.13.0",
    model: str = "tiny",
    bench: list[dict[str, Any]] | None = None,
    rank_trace: str | None = None,
    allocation: str | None = None,
    steps: int = 300,
    chance: Any = "absent",
    stderr: float | None = None,
    below_resolution: bool | None = None,
    family: str | None = None,
    memory_scope: str = "job",
    n: int = 50,
    lr: float = 3e-4,
    per_task: dict[str, float] | None = None,
    base_per_task: dict[str, float] | None = None,
    per_task_n: int = 100,
    base_accuracy: float | None = None,
    retention: dict[str, Any] | None = None,
    rescore: dict[str, Any] | None = None,
    trainable_params: int = 10,
    total_params: int = 100,
    config: dict[str, Any] | None = None,
    threads: int | None = None,
    train_cpu_s: float | None = None,
) -> Path:
    """One run directory in the store layout, result.json per the contract (+ optional side CSVs).

    What the harness writes from its registries (the method's label, order and baseline flag; the task's family)
    is filled from the same registries here, as a real run would record it. ``per_task`` (task → accuracy) writes
    ``metrics.per_task`` as lm-eval scoring does (n = ``per_task_n``, binomial stderr) and, when ``accuracy`` is
    None, the macro average as the headline; ``config`` is merged into the run's config."""
    run_dir = root / experiment / run_id
    run_dir.mkdir(parents=True)
    adapter_section: dict[str, Any] = {
        "type": adapter,
        "scheduler": scheduler,
        "ranks": {"l.0.q_proj": 4},
        **_describe_method(adapter, scheduler),
    }
    if mode:
        adapter_section["mode"] = mode
    result = {
        "schema_version": SCHEMA_VERSION,
        "run_id": run_id,
        "status": status,
        "reason": reason,
        "created_at": "2026-01-01T00:00:00+00:00",
        "experiment": experiment,
        "seed": seed,
        "config": {
            "seed": seed,
            "adapter": {"name": adapter, "r_max": 8},
            "scheduler": {"name": scheduler},
            "trainer": {"lr": lr, "steps": steps},
            "experiment_name": experiment,
        },
        "model": {"name": model, "total_params": total_params, "trainable_params": trainable_params},
        "adapter": adapter_section,
        "task": {
            "kind": task,
            "family": family if family is not None else _family(task, mse is not None),
            "metric": "acc" if mse is None else "mse",
            "higher_is_better": mse is None,
        },
        "metrics": {
            "task": task,
            "metric": "acc" if mse is None else "mse",
            "accuracy": accuracy,
            "accuracy_stderr": stderr,
            "n": n,
            "mse": mse,
        },
        "time": {
            "train_s": 1.0,
            "eval_s": 0.5,
            "total_s": 2.0,
            "step_ms_median": step_ms,
            "tokens_per_s": 10.0,
            "steps": steps,
        },
        "energy": {
            "method": method,
            "evidence": _evidence(method),
            "kwh": kwh,
            "emissions_kg": None,
            "cpu_kwh": kwh,
            "gpu_kwh": 0.0,
            "ram_kwh": 0.0,
        },
        "env": {
            "git_sha": "abc",
            "dirty": False,
            "python": "3.11",
            "torch": torch,
            "transformers": "5.0",
            "peft": "0.21",
            "lm_eval": "0.4",
            "codecarbon": "3.3",
            "device": "cpu",
        },
        "memory": {"peak_mb": peak_mb, "scope": memory_scope, "device": "cpu-rss"},
    }
    if threads is not None:
        result["env"]["torch_threads"] = threads
    if train_cpu_s is not None:
        result["time"]["train_cpu_s"] = train_cpu_s
    if chance != "absent":
        result["metrics"]["chance"] = chance
    metrics = result["metrics"]
    if per_task is not None:
        metrics["per_task"] = suite_entries(per_task, per_task_n)
        if accuracy is None:
            entries = metrics["per_task"].values()
            metrics["accuracy"] = sum(e["accuracy"] for e in entries) / len(per_task)
            metrics["accuracy_stderr"] = math.sqrt(sum(e["accuracy_stderr"] ** 2 for e in entries)) / len(per_task)
            metrics["n"] = per_task_n * len(per_task)
    if base_per_task is not None:
        metrics["base_per_task"] = suite_entries(base_per_task, per_task_n)
        if base_accuracy is None:
            base_accuracy = sum(base_per_task.values()) / len(base_per_task)
    if base_accuracy is not None:
        metrics["base_accuracy"] = base_accuracy
    if retention is not None:
        metrics["retention"] = retention
    if rescore is not None:
        result["rescore"] = rescore
    if config:
        result["config"] = _deep_merge(result["config"], config)
    if below_resolution is not None:
        result["energy"]["below_resolution"] = below_resolution
    if bench is not None:
        result["bench"] = bench
        result["config"]["job"] = "bench"
    (run_dir / "result.json").write_text(json.dumps(result))
    if rank_trace:
        (run_dir / "rank_trace.csv").write_text(rank_trace)
    if allocation:
        (run_dir / "lora_ar_allocation.csv").write_text(allocation)
    return run_dir


def binomial_stderr(p: float, n: int) -> float:
    """lm-eval's stderr of a mean of 0/1 scores: √(p(1−p)/(n−1))."""
    return math.sqrt(p * (1 - p) / (n - 1))


def suite_entries(accuracies: dict[str, float], n: int) -> dict[str, dict[str, Any]]:
    """``metrics.per_task`` as loraven.tasks.lm_scoring writes it (acc and acc_norm equal here)."""
    return {
        task: {
            "accuracy": p,
            "accuracy_stderr": binomial_stderr(p, n),
            "n": n,
            "scores": {"acc,none": p, "acc_norm,none": p},
            "stderrs": {"acc,none": binomial_stderr(p, n), "acc_norm,none": binomial_stderr(p, n)},
        }
        for task, p in accuracies.items()
    }


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        out[key] = _deep_merge(out[key], value) if isinstance(out.get(key), dict) and isinstance(value, dict) else value
    return out


def bench_rows(shape: str, **ms: float) -> list[dict[str, Any]]:
    batch, dim = (int(v) for v in shape.split("x"))
    return [
        {
            "shape": shape,
            "batch": batch,
            "dim": dim,
            "rank": 8,
            "variant": v,
            "ms": t,
            "ms_p10": t * 0.9,
            "ms_p90": t * 1.1,
            "device": "cpu",
            "dtype": "float32",
        }
        for v, t in ms.items()
    ]


def energy_store(root: Path) -> Path:
    """Dense vs the three LoRAven levels on one task, two seeds where it matters, one failed run."""
    w = write_run
    w(
        root,
        "paper_energy",
        "d0",
        adapter="none",
        scheduler="static",
        seed=0,
        accuracy=0.90,
        kwh=1.0,
        step_ms=100,
        peak_mb=500,
    )
    w(
        root,
        "paper_energy",
        "d1",
        adapter="none",
        scheduler="static",
        seed=1,
        accuracy=0.90,
        kwh=1.2,
        step_ms=110,
        peak_mb=510,
    )
    w(
        root,
        "paper_energy",
        "s0",
        scheduler="static",
        seed=0,
        accuracy=0.88,
        kwh=0.5,
        step_ms=60,
        peak_mb=300,
        rank_trace="step,module,rank\n0,a,8\n0,b,8\n10,a,8\n10,b,8\n",
    )
    w(root, "paper_energy", "s1", scheduler="static", seed=1, accuracy=0.90, kwh=0.5, step_ms=62, peak_mb=300)
    w(
        root,
        "paper_energy",
        "l0",
        scheduler="linear",
        seed=0,
        accuracy=0.90,
        kwh=0.9,
        step_ms=70,
        peak_mb=310,
        rank_trace="step,module,rank\n0,a,8\n0,b,8\n10,a,4\n20,b,2\n",
    )
    w(root, "paper_energy", "e0", scheduler="energy", seed=0, accuracy=0.50, kwh=0.4, step_ms=65, peak_mb=305)
    w(
        root,
        "paper_energy",
        "e1",
        scheduler="energy",
        seed=1,
        status="failed",
        reason="RuntimeError: boom",
        accuracy=0.99,
        kwh=0.01,
    )
    w(
        root,
        "paper_energy",
        "ar0",
        adapter="lora_ar",
        seed=0,
        accuracy=0.89,
        kwh=0.7,
        step_ms=80,
        peak_mb=320,
        allocation="module,alpha_hill,spikes,score,rank\nmodel.layers.0.self_attn.q_proj,3.1,0,0.2,4\n"
        "model.layers.0.mlp.up_proj,2.5,1,0.6,8\nmodel.layers.1.self_attn.q_proj,4.0,0,0.1,2\n",
    )
    return root


def level_row(table: pd.DataFrame, level: str) -> pd.Series:
    rows = table[table["level"] == level]
    assert len(rows) == 1, (level, table["level"].tolist())
    return rows.iloc[0]
