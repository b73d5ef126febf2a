"""The one evaluation path: lm-eval ``simple_evaluate`` on the in-memory model, or direct metrics.

lm-eval results are keyed ``"acc,none"`` / ``"acc_stderr,none"``; batch size and device belong on
``HFLM`` (``simple_evaluate`` ignores them for model objects); ``log_samples=False`` keeps sweeps lean;
``include_defaults=False`` keeps our local task names from colliding with the built-in registry.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch
from torch import nn

from loraven.tasks import ClassicTask, LMTask


def evaluate(model: nn.Module, tokenizer: Any, task: LMTask | ClassicTask, batch_size: int = 32,
             seed: int = 0) -> dict[str, Any]:
    """Score ``model`` on ``task``; returns the contract's ``metrics`` section."""
    was_training = model.training
    model.eval()
    try:
        if isinstance(task, ClassicTask):
            return evaluate_classic(model, task)
        return evaluate_lm(model, tokenizer, task, batch_size=batch_size, seed=seed)
    finally:
        model.train(was_training)


def evaluate_lm(model: nn.Module, tokenizer: Any, task: LMTask, batch_size: int = 32,
                seed: int = 0) -> dict[str, Any]:
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    device = next(model.parameters()).device
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, device=str(device))
    if task.include_path:
        manager = TaskManager(include_path=task.include_path, include_defaults=False)
    else:
        manager = TaskManager()
    quiet = logging.getLogger("lm_eval")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # "pretrained is not a str" warnings are expected for in-memory models
    try:
        out = simple_evaluate(
            model=lm, tasks=list(task.eval_tasks), task_manager=manager, limit=task.eval_limit,
            log_samples=False, random_seed=seed, numpy_random_seed=seed, torch_random_seed=seed,
            fewshot_random_seed=seed, verbosity="WARNING",
        )
    finally:
        quiet.setLevel(level)
    per_task = {}
    for name in task.eval_tasks:
        res = out["results"][name]
        acc = res.get(f"{task.metric},none")
        stderr = res.get(f"{task.metric}_stderr,none")
        n = out.get("n-samples", {}).get(name, {}).get("effective")
        per_task[name] = {"accuracy": acc, "accuracy_stderr": _stderr(stderr, acc, n), "n": n}
    accs = [v["accuracy"] for v in per_task.values()]
    ns = [v["n"] or 0 for v in per_task.values()]
    metrics: dict[str, Any] = {
        "task": task.name, "metric": task.metric,
        "accuracy": float(sum(accs) / len(accs)),
        "accuracy_stderr": per_task[task.eval_tasks[0]]["accuracy_stderr"] if len(accs) == 1 else
        math.sqrt(sum(v["accuracy_stderr"] ** 2 for v in per_task.values())) / len(accs),
        "n": int(sum(ns)),
    }
    if len(per_task) > 1:
        metrics["per_task"] = per_task
    return metrics


def _stderr(reported: Any, acc: float, n: int | None) -> float:
    """lm-eval's stderr, or the binomial one when it reports "N/A"."""
    if isinstance(reported, (int, float)) and not math.isnan(float(reported)):
        return float(reported)
    if n and n > 1:
        return math.sqrt(acc * (1 - acc) / (n - 1))
    return float("nan")


@torch.no_grad()
def evaluate_classic(model: nn.Module, task: ClassicTask) -> dict[str, Any]:
    device = next(model.parameters()).device
    x = task.x_test.to(device)
    y = task.y_test.to(device)
    pred = model(x)
    n = int(y.shape[0])
    if task.regression:
        mse = torch.mean((pred.squeeze(-1).float() - y.float()) ** 2).item()
        return {"task": task.name, "metric": "mse", "accuracy": None, "accuracy_stderr": None, "n": n,
                "mse": mse}
    acc = (pred.argmax(-1) == y).float().mean().item()
    return {"task": task.name, "metric": "acc", "accuracy": acc,
            "accuracy_stderr": math.sqrt(acc * (1 - acc) / max(n - 1, 1)), "n": n}
