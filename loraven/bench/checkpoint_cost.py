"""What mid-run checkpoints cost: the same training run with ``trainer.checkpoint_every=0`` (off) and at an interval.

    python -m loraven.bench.checkpoint_cost --model tiny_llama --steps 200 --every 50 --pairs 6
    python -m loraven.bench.checkpoint_cost --model smollm2_135m --steps 60 --pairs 3
    python -m loraven.bench.checkpoint_cost --save-only --model smollm2_135m --adapter none   # one save, timed

Runs go through the real job (:func:`loraven.job.run_job`, ``energy=none tracking=none``) in ABBA order (off, on,
on, off, ...) so that drift in a shared machine's load hits both alike. Per pair: the ``train_s`` ratio on ÷ off
(wall, noisy under load) and the ``train_cpu_s`` ratio; per "on" run, the direct figure: seconds spent saving
(``checkpoint.save_s``, timed around each save) ÷ the rest of the training phase, i.e. the overhead per step.
Medians over pairs with 95 % bootstrap intervals (:func:`loraven.bench.overhead.median_interval`); the 1-minute
load average before each run. ``--save-only`` times :meth:`CheckpointSession.save` alone (after one real optimizer
step, so AdamW's state exists) ``--pairs`` times: the cost of one checkpoint and its size, without training runs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from loraven.bench.overhead import compose_config, median_interval


def run_pairs(
    model: str, adapter: str | None, steps: int, every: int, pairs: int, extra: list[str], log=print
) -> dict[str, Any]:
    from loraven.job import run_job

    common = [
        f"model={model}",
        *([f"adapter={adapter}"] if adapter else []),  # None: the default run's method
        f"trainer.steps={steps}",
        "energy=none",
        "tracking=none",
        "rerun=true",
        "experiment_name=bench_checkpoint",
        *extra,
    ]
    settings = {"off": ["trainer.checkpoint_every=0"], "on": [f"trainer.checkpoint_every={every}"]}
    samples: dict[str, dict[str, list[float]]] = {k: {"train_s": [], "cpu_s": [], "load1": []} for k in settings}
    direct, per_save, sizes, step_ms = [], [], [], []
    with tempfile.TemporaryDirectory(prefix="loraven-ckpt-cost-") as tmp:
        run_job(compose_config([*common, *settings["off"], f"results_dir={tmp}/warmup"]), progress=False)
        for i in range(pairs):
            order = list(settings.items()) if i % 2 == 0 else list(reversed(settings.items()))
            for label, more in order:
                cfg = compose_config(
                    [*common, *more, "trainer.checkpoint_keep_finished=true", f"results_dir={tmp}/{i}{label}"]
                )
                samples[label]["load1"].append(os.getloadavg()[0])
                result = run_job(cfg, progress=False)
                if result["status"] != "completed":
                    raise RuntimeError(f"{label} run failed: {result['reason']}")
                train_s = float(result["time"]["train_s"])
                samples[label]["train_s"].append(train_s)
                samples[label]["cpu_s"].append(float(result["time"]["train_cpu_s"]))
                if label == "on":
                    ck = result["checkpoint"]
                    direct.append(ck["save_s"] / (train_s - ck["save_s"]))
                    per_save.append(ck["save_s"] / max(ck["saves"], 1))
                    step_ms.append(float(result["time"]["step_ms_median"]))
                    folders = list(Path(ck["dir"]).glob("step-*/state.pt"))
                    sizes.append(max(p.stat().st_size for p in folders) / 1e6 if folders else 0.0)
                log(f"pair {i} {label}: train_s {train_s:.3f} load {samples[label]['load1'][-1]:.1f}")
    wall = [a / b for a, b in zip(samples["on"]["train_s"], samples["off"]["train_s"], strict=True)]
    cpu = [a / b for a, b in zip(samples["on"]["cpu_s"], samples["off"]["cpu_s"], strict=True)]
    return {
        "model": model,
        "adapter": adapter or "default",
        "steps": steps,
        "every": every,
        "pairs": pairs,
        "saves_per_run": steps // every + (steps % every != 0),
        "direct_overhead": statistics.median(direct),
        "direct_overhead_ci95": median_interval(direct),
        "train_s_ratio": statistics.median(wall),
        "train_s_ratio_ci95": median_interval(wall),
        "train_cpu_ratio": statistics.median(cpu),
        "train_cpu_ratio_ci95": median_interval(cpu),
        "save_ms_median": 1000 * statistics.median(per_save),
        "step_ms_median": statistics.median(step_ms),
        "checkpoint_mb": statistics.median(sizes),
        "load1": {k: [round(x, 1) for x in v["load1"]] for k, v in samples.items()},
        "samples": samples,
    }


def save_cost(model: str, adapter: str | None, repeats: int, extra: list[str]) -> dict[str, Any]:
    """Seconds per :meth:`CheckpointSession.save` and the state file's size, for this model and method."""
    import time

    import torch

    from loraven.adapters.base import AdapterContext, apply_adapter
    from loraven.checkpoint import CheckpointSession, list_checkpoints
    from loraven.models import load_model
    from loraven.tasks.batching import EpochBatches
    from loraven.train import TrainStep

    cfg = compose_config([f"model={model}", *([f"adapter={adapter}"] if adapter else []), *extra])
    torch.manual_seed(0)
    loaded = load_model(cfg["model"])
    adapted = apply_adapter(loaded.model, cfg["adapter"], cfg["scheduler"], AdapterContext(total_steps=100))
    step = TrainStep(adapted, cfg["trainer"], torch.device("cpu"))
    vocab = int(loaded.model.get_input_embeddings().num_embeddings)
    ids = torch.randint(5, vocab, (int(cfg["trainer"]["batch_size"]), 32))
    step({"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}, 1)
    batches = EpochBatches(100, 4, 0, lambda idx: idx)
    times = []
    with tempfile.TemporaryDirectory(prefix="loraven-save-cost-") as tmp:
        session = CheckpointSession(Path(tmp), "bench", 1, 2, False)
        session._refs = (adapted, step, batches, None)
        loop = {"loss_curve": [], "step_ms": [], "tokens": 0, "train_s": 0.0, "first_bad": -1}
        for i in range(repeats):
            start = time.perf_counter()
            session.save(i + 1, loop)
            times.append(time.perf_counter() - start)
        size = (list_checkpoints(session.root)[0][1] / "state.pt").stat().st_size
    return {
        "model": model,
        "adapter": cfg["adapter"]["name"],
        "trainable_params": adapted.trainable_param_count(),
        "save_s": times,
        "save_s_median": statistics.median(times),
        "checkpoint_mb": size / 1e6,
        "load1": round(os.getloadavg()[0], 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loraven.bench.checkpoint_cost", description=__doc__)
    parser.add_argument("--model", default="tiny_llama")
    parser.add_argument("--adapter", default=None, help="the method (default: the default run's)")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--every", type=int, default=50)
    parser.add_argument("--pairs", type=int, default=6)
    parser.add_argument("--save-only", action="store_true", help="time one save (--pairs times), no runs")
    parser.add_argument("overrides", nargs="*", help="more config overrides (e.g. trainer=smoke)")
    args = parser.parse_args(argv)
    if args.save_only:
        print(json.dumps(save_cost(args.model, args.adapter, args.pairs, args.overrides), indent=1))
        return 0
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    out = run_pairs(args.model, args.adapter, args.steps, args.every, args.pairs, args.overrides, log)
    print(json.dumps({k: v for k, v in out.items() if k != "samples"}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
