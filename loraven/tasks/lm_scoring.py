"""Scoring an LM task: lm-eval's ``simple_evaluate`` on the in-memory model, the task's own config.

lm-eval results are keyed ``"<metric>,<filter>"`` (``"acc,none"``, ``"exact_match,strict-match"``); batch size and
device belong on ``HFLM`` (``simple_evaluate`` ignores them for model objects); ``log_samples=False`` keeps sweeps
lean; ``include_defaults=False`` keeps our local task names from colliding with the built-in registry.
"""

from __future__ import annotations

import math
import sys
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:
    from loraven.tasks.lm import LMTask


def evaluate_lm(model: nn.Module, tokenizer: Any, task: LMTask, batch_size: int = 32, seed: int = 0) -> dict[str, Any]:
    """lm-eval's ``simple_evaluate`` with the task's own config; the score is ``results[task]["metric,filter"]``."""
    from lm_eval import simple_evaluate

    from loraven.tasks.registry import quiet_lm_eval, task_manager

    device = next(model.parameters()).device
    generative = task.output_type != "multiple_choice"
    bs = generation_batch_size(device, batch_size) if generative else batch_size
    manager = task_manager(task.include_path, include_defaults=task.include_defaults)
    with quiet_lm_eval():
        lm = progress_lm(model, tokenizer, bs, device, desc=f"eval {task.name}")
        try:
            # verbosity=None: a level here would make lm-eval reset its logger and add a handler of its own
            out = simple_evaluate(
                model=lm,
                tasks=list(task.eval_specs or task.eval_tasks),
                task_manager=manager,
                limit=task.eval_limit,
                num_fewshot=task.num_fewshot,
                apply_chat_template=task.apply_chat_template,
                gen_kwargs={"max_gen_toks": task.max_gen_toks} if task.max_gen_toks else None,
                log_samples=False,
                random_seed=seed,
                numpy_random_seed=seed,
                torch_random_seed=seed,
                fewshot_random_seed=seed,
                bootstrap_iters=BOOTSTRAP_ITERS,
                verbosity=None,
            )
        finally:
            lm.close_progress()
    per_task = {}
    key, stderr_key = f"{task.metric},{task.filter}", f"{task.metric}_stderr,{task.filter}"
    for name in task.eval_tasks:
        res = out["results"][name]
        if key not in res:
            found = sorted(k for k in res if "," in k and "_stderr" not in k)
            raise RuntimeError(f"lm-eval reported no {key!r} for task {name!r}; it reported: {', '.join(found)}")
        n = out.get("n-samples", {}).get(name, {}).get("effective")
        per_task[name] = {
            "accuracy": float(res[key]),
            "accuracy_stderr": _stderr(res.get(stderr_key)),
            "n": n,
            "scores": reported_scores(res),
            "stderrs": reported_stderrs(res),
        }
    accs = [v["accuracy"] for v in per_task.values()]
    stderrs = [v["accuracy_stderr"] for v in per_task.values()]
    metrics: dict[str, Any] = {
        "task": task.name,
        "metric": task.metric_key,
        "accuracy": float(sum(accs) / len(accs)),
        "accuracy_stderr": None
        if None in stderrs
        else (stderrs[0] if len(stderrs) == 1 else math.sqrt(sum(s**2 for s in stderrs)) / len(stderrs)),
        "n": int(sum(v["n"] or 0 for v in per_task.values())),
        "chance": task.chance,
        "higher_is_better": task.higher_is_better,
        "output_type": task.output_type,
        "eval_batch_size": bs,
        "split": task.eval_split,
    }
    if generative:
        metrics["max_gen_toks"] = task.max_gen_toks
    if task.num_fewshot is not None:
        metrics["num_fewshot"] = task.num_fewshot
    if task.apply_chat_template:
        metrics["chat_template"] = True
    if len(per_task) == 1:  # every metric/filter the task reports, e.g. both of gsm8k's filters
        metrics["scores"] = per_task[task.eval_tasks[0]]["scores"]
    metrics["per_task"] = per_task  # one shape for every LM run: each task's scores, stderrs and n
    return metrics


# lm-eval bootstraps the stderr of metrics without a closed form (f1 on MRPC and CB) with 100,000 resamples by
# default: ~100 s per metric per evaluation on a 2-core CPU. 1,000 resamples put the stderr within a few percent of
# its value; accuracy's stderr is closed-form and does not depend on this.
BOOTSTRAP_ITERS = 1000


def reported_scores(res: dict[str, Any]) -> dict[str, float]:
    """All ``metric,filter`` values lm-eval reported for one task (stderrs and aliases left out)."""
    return {
        k: float(v)
        for k, v in res.items()
        if "," in k and "_stderr" not in k and isinstance(v, (int, float)) and not isinstance(v, bool)
    }


def reported_stderrs(res: dict[str, Any]) -> dict[str, float | None]:
    """The stderr lm-eval reported for each ``metric,filter`` (``acc_stderr,none`` → ``acc,none``)."""
    return {k.replace("_stderr,", ",", 1): _stderr(v) for k, v in res.items() if "_stderr," in k}


def _stderr(reported: Any) -> float | None:
    """lm-eval's stderr; None when it reports none ("N/A", missing, NaN) — never invented here."""
    if isinstance(reported, (int, float)) and not isinstance(reported, bool) and math.isfinite(float(reported)):
        return float(reported)
    return None


def generation_batch_size(device: torch.device, batch_size: int) -> int:
    """Generation batches sized for the device: a GPU wants the whole ``eval_batch_size``; on a CPU each decoding
    step's fixed cost still favours batching (SmolLM2-135M on 2 cores: batch 16 ran far faster per example than
    batch 4), but the bar should move every few seconds, so CPU batches stop at 16."""
    return batch_size if device.type == "cuda" else max(1, min(batch_size, CPU_GENERATION_BATCH))


CPU_GENERATION_BATCH = 16


def progress_lm(model: nn.Module, tokenizer: Any, batch_size: int, device: torch.device, desc: str):
    """lm-eval's HFLM on the in-memory model, fed in chunks so that *our* progress bar moves per batch of
    examples (lm-eval's bars are off: one bar for the whole evaluation, ours, stays)."""
    from lm_eval.models.huggingface import HFLM

    class ProgressHFLM(HFLM):
        def _chunked(self, method, requests, unit: str, chunk: int):
            if not requests:
                return []
            bar = _bar(len(requests), desc, unit)
            self._bars.append(bar)
            # longest contexts first, as lm-eval orders them, so chunks pad little
            order = sorted(range(len(requests)), key=lambda i: -len(str(requests[i].args[0])))
            out: list[Any] = [None] * len(requests)
            for start in range(0, len(order), chunk):
                idx = order[start : start + chunk]
                for i, value in zip(idx, method([requests[i] for i in idx], disable_tqdm=True), strict=True):
                    out[i] = value
                bar.update(len(idx))
            bar.close()
            return out

        def generate_until(self, requests, disable_tqdm: bool = False):
            return self._chunked(super().generate_until, requests, "ex", batch_size)

        def loglikelihood(self, requests, disable_tqdm: bool = False):
            return self._chunked(super().loglikelihood, requests, "req", batch_size * 8)

        def close_progress(self) -> None:
            for bar in self._bars:
                bar.close()

    lm = ProgressHFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, device=str(device))
    lm._bars = []
    return lm


def _bar(total: int, desc: str, unit: str):
    from tqdm.auto import tqdm

    return tqdm(
        total=total, desc=desc, unit=unit, dynamic_ncols=True, mininterval=0.5 if sys.stderr.isatty() else 15.0
    )  # a log file gets a line every 15 s
