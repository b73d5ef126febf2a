"""Evaluation speed: the harness's scoring path against lm-eval's own, on the same documents, model and batch size.

``python -m loraven.bench.eval_speed --tasks arc_easy,boolq --limit 50 --batch-size 32 --repeats 4``

Both sides score the same held-out documents of the offline suites (``task=commonsense``/``glue``, lm-eval's own
configs) with the same in-memory weights:

- ``harness``: :func:`loraven.evaluate.evaluate` — the path every run takes (our progress-reporting HFLM subclass,
  requests fed in chunks of ``batch_size × 8``);
- ``lm_eval``: lm-eval's ``HFLM(pretrained=<the same weights' folder>, batch_size=...)`` passed to its
  ``simple_evaluate`` (what ``lm_eval --model hf`` runs once the model is loaded).

Rounds alternate the two (A B A B ...) so background load hits both alike; the ratio harness ÷ lm-eval per round
gets a bootstrap interval. The scores must be identical (same documents, same log-likelihoods), else the numbers
are not comparable and the run says so. Model loading is outside both timings; ``--cli`` also times one end-to-end
``lm_eval`` command (process start, model load and task load included) for reference.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def _score(metrics: dict[str, Any]) -> dict[str, float]:
    return {t: round(v["accuracy"], 10) for t, v in (metrics.get("per_task") or {}).items()}


def run(tasks: list[str], limit: int, batch_size: int, repeats: int, cli: bool) -> dict[str, Any]:
    import torch
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM

    from loraven.evaluate import evaluate
    from loraven.models import cache_dir, load_model
    from loraven.tasks import build_task
    from loraven.tasks.benchmarks import SUITES
    from loraven.tasks.registry import quiet_lm_eval, task_manager

    suite = next(s for s, names in SUITES.items() if set(tasks) <= set(names))
    task = build_task({"kind": suite, "names": tasks, "limit": limit}, cache_dir() / "data")
    loaded = load_model({"kind": "smollm2_135m", "dtype": "float32"})
    model_dir = cache_dir() / "smollm2-135m-instruct"
    theirs = HFLM(pretrained=str(model_dir), batch_size=batch_size, device="cpu", dtype="float32")
    manager = task_manager(task.include_path, include_defaults=False)

    def harness() -> dict[str, Any]:
        return evaluate(loaded.model, loaded.tokenizer, task, batch_size=batch_size, seed=0)

    def lm_eval_own() -> dict[str, Any]:
        with quiet_lm_eval():
            out = simple_evaluate(
                model=theirs,
                tasks=list(task.eval_specs or task.eval_tasks),
                task_manager=manager,
                limit=limit,
                log_samples=False,
                random_seed=0,
                numpy_random_seed=0,
                torch_random_seed=0,
                fewshot_random_seed=0,
                verbosity=None,
            )
        return {"per_task": {t: {"accuracy": out["results"][t]["acc,none"]} for t in task.eval_tasks}}

    times: dict[str, list[float]] = {"harness": [], "lm_eval": []}
    scores: dict[str, dict[str, float]] = {}
    for name, fn in (("harness", harness), ("lm_eval", lm_eval_own)):  # warm-up round, untimed
        scores[name] = _score(fn())
    for _ in range(repeats):
        for name, fn in (("harness", harness), ("lm_eval", lm_eval_own)):
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    ratios = [h / t for h, t in zip(times["harness"], times["lm_eval"], strict=True)]
    out: dict[str, Any] = {
        "tasks": tasks,
        "limit_per_task": limit,
        "batch_size": batch_size,
        "repeats": repeats,
        "harness_s": times["harness"],
        "lm_eval_s": times["lm_eval"],
        "ratio_median": statistics.median(ratios),
        "ratio_interval": _bootstrap(ratios),
        "same_scores": scores["harness"] == scores["lm_eval"],
        "scores": scores,
        "torch_threads": torch.get_num_threads(),
        "device": f"cpu:{platform.processor() or platform.machine()}",
        "dtype": "float32",
    }
    if cli:
        out["cli_total_s"] = _cli_total(model_dir, task.include_path, tasks, limit, batch_size)
    return out


def _bootstrap(values: list[float]) -> list[float] | None:
    """95 % percentile bootstrap of the median ratio (scipy); None with fewer than 3 rounds."""
    if len(values) < 3:
        return None
    from scipy.stats import bootstrap

    res = bootstrap((values,), statistics.median, n_resamples=2000, method="percentile", random_state=0)
    return [float(res.confidence_interval.low), float(res.confidence_interval.high)]


def _cli_total(model_dir: Path, include: str | None, tasks: list[str], limit: int, batch_size: int) -> float | None:
    exe = shutil.which("lm_eval") or shutil.which("lm-eval")
    if exe is None or include is None:
        return None
    start = time.perf_counter()
    subprocess.run(
        [
            exe,
            "--model",
            "hf",
            "--model_args",
            f"pretrained={model_dir},dtype=float32",
            "--tasks",
            ",".join(tasks),
            "--include_path",
            include,
            "--limit",
            str(limit),
            "--batch_size",
            str(batch_size),
            "--device",
            "cpu",
        ],
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loraven.bench.eval_speed", description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="arc_easy,boolq", help="tasks of one offline suite (commonsense or glue)")
    parser.add_argument("--limit", type=int, default=50, help="held-out documents per task")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=4, help="timed rounds (each: harness, then lm-eval)")
    parser.add_argument("--cli", action="store_true", help="also time one end-to-end lm_eval command")
    parser.add_argument("--out", type=Path, help="write the result as JSON here")
    args = parser.parse_args(argv)
    result = run(
        [t.strip() for t in args.tasks.split(",") if t.strip()], args.limit, args.batch_size, args.repeats, args.cli
    )
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    if not result["same_scores"]:
        print("warning: the two paths scored differently; the timing compares different work", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
