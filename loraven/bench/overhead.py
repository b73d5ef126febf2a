"""Harness overhead: the same short training run with ``energy=none tracking=none`` vs the defaults
(codecarbon + W&B offline), through the real pipeline (:func:`loraven.job.run_job` on Hydra-composed
configs). The runs alternate (bare, full, bare, full, ...) so background load hits both alike; the figure
is the ratio of median ``train_s`` (goal ≤ 1.02), with ``total_s`` beside it (it also pays W&B start-up and
codecarbon's per-phase tracker creation, which happen outside the training phase).
"""

from __future__ import annotations

import os
import statistics
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from loraven.bench.methods import CONF_DIR

BARE = ("energy=none", "tracking=none")
FULL = ("energy=codecarbon", "tracking=wandb")


def compose_config(overrides: Sequence[str]) -> dict[str, Any]:
    """The resolved run config for ``overrides`` (inside a running Hydra app its global state is reused)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    if GlobalHydra.instance().is_initialized():
        cfg = compose(config_name="config", overrides=list(overrides))
    else:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(config_name="config", overrides=list(overrides))
    out = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(out, dict)
    return out


def run_overhead(*, model: str = "tiny_llama", adapter: str = "lora", steps: int = 60, repeats: int = 3,
                 warmup: int = 1, extra_overrides: Sequence[str] = (), results_dir: str | Path | None = None,
                 log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Median train_s/total_s of each setting over ``repeats`` alternating runs, and their ratios.

    ``warmup`` untimed bare runs come first: the first run also fills caches (task data, base accuracy).
    """
    from loraven.job import run_job

    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")
    tmp = tempfile.TemporaryDirectory(prefix="loraven-overhead-") if results_dir is None else None
    root = Path(results_dir or tmp.name)  # type: ignore[union-attr]
    common = [f"model={model}", f"adapter={adapter}", "trainer=smoke", f"trainer.steps={steps}",
              "trainer.log_every=10", "rerun=true", "experiment_name=bench_overhead", *extra_overrides]
    samples: dict[str, dict[str, list[float]]] = {"bare": {"train_s": [], "total_s": []},
                                                  "full": {"train_s": [], "total_s": []}}
    methods: dict[str, str] = {}
    try:
        for i in range(warmup):
            run_job(compose_config([*common, *BARE, f"results_dir={root / 'warmup' / str(i)}"]), progress=False)
        for i in range(repeats):
            for label, extra in (("bare", BARE), ("full", FULL)):
                cfg = compose_config([*common, *extra, f"results_dir={root / label / str(i)}"])
                result = run_job(cfg, progress=False)
                if result["status"] != "completed":
                    raise RuntimeError(f"overhead run ({label}) failed: {result.get('reason')}")
                for key in ("train_s", "total_s"):
                    samples[label][key].append(float(result["time"][key]))
                methods[label] = str(result["energy"]["method"])
                if log:
                    log(f"overhead {label} #{i}: train_s {result['time']['train_s']:.3f}, "
                        f"total_s {result['time']['total_s']:.3f}")
    finally:
        if tmp is not None:
            tmp.cleanup()
    med = {label: {k: statistics.median(v) for k, v in s.items()} for label, s in samples.items()}
    return {"model": model, "adapter": adapter, "steps": steps, "repeats": repeats, "warmup": warmup,
            "bare": {"overrides": list(BARE), **med["bare"], "energy_method": methods.get("bare")},
            "full": {"overrides": list(FULL), **med["full"], "energy_method": methods.get("full")},
            "train_s_ratio": med["full"]["train_s"] / med["bare"]["train_s"],
            "total_s_ratio": med["full"]["total_s"] / med["bare"]["total_s"],
            "samples": samples, "goal_train_s_ratio": 1.02}
