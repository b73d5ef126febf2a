"""Harness overhead: the same short training run with ``energy=none tracking=none`` vs the defaults (codecarbon +
W&B offline), through the real pipeline (:func:`loraven.job.run_job` on Hydra-composed configs). The runs
alternate in ABBA order (bare, full, full, bare, ...) so background load and drift hit both alike; the figure
is the median over pairs of each pair's ``train_s`` ratio full ÷ bare (goal ≤ 1.02; a ratio per pair, not a
ratio of medians, so a load spike hits one pair, not the whole figure), with ``total_s`` beside it (it also
pays W&B start-up and codecarbon's per-phase tracker creation, outside the training phase). With
``components=True`` each pair also runs codecarbon alone and W&B alone, to say where an overhead comes from.
The 1-minute load average (``os.getloadavg``) is recorded before every run: the machine is shared.
"""

from __future__ import annotations

import os
import statistics
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from loraven import CONF_DIR

BARE = ("energy=none", "tracking=none")
FULL = ("energy=codecarbon", "tracking=wandb")
ENERGY_ONLY = ("energy=codecarbon", "tracking=none")
TRACKING_ONLY = ("energy=none", "tracking=wandb")


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


def run_overhead(
    *,
    model: str = "tiny_llama",
    adapter: str | None = None,
    steps: int = 60,
    repeats: int = 3,
    warmup: int = 1,
    extra_overrides: Sequence[str] = (),
    results_dir: str | Path | None = None,
    log: Callable[[str], None] | None = None,
    components: bool = False,
) -> dict[str, Any]:
    """Median train_s/total_s of each setting over ``repeats`` alternating runs, and their ratios.

    ``warmup`` untimed bare runs come first: the first run also fills caches (task data, base accuracy).
    """
    from loraven.job import run_job

    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")
    tmp = tempfile.TemporaryDirectory(prefix="loraven-overhead-") if results_dir is None else None
    root = Path(results_dir or tmp.name)  # type: ignore[union-attr]
    common = [
        f"model={model}",
        *([f"adapter={adapter}"] if adapter else []),  # None: the default run's adapter
        "trainer=smoke",
        f"trainer.steps={steps}",
        "trainer.log_every=10",
        "rerun=true",
        "experiment_name=bench_overhead",
        *extra_overrides,
    ]
    settings = {"bare": BARE, "full": FULL}
    if components:
        settings |= {"energy_only": ENERGY_ONLY, "tracking_only": TRACKING_ONLY}
    samples: dict[str, dict[str, list[float]]] = {
        k: {"train_s": [], "total_s": [], "train_cpu_s": [], "load1": []} for k in settings
    }
    methods: dict[str, str] = {}
    try:
        for i in range(warmup):
            run_job(compose_config([*common, *BARE, f"results_dir={root / 'warmup' / str(i)}"]), progress=False)
        for i in range(repeats):
            # ABBA order (bare, full, ...; then ..., full, bare): a drift in background load or machine state
            # over the session biases neither setting, as a fixed order would
            order = list(settings.items()) if i % 2 == 0 else list(reversed(settings.items()))
            for label, extra in order:
                cfg = compose_config([*common, *extra, f"results_dir={root / label / str(i)}"])
                samples[label]["load1"].append(os.getloadavg()[0])
                result = run_job(cfg, progress=False)
                if result["status"] != "completed":
                    raise RuntimeError(f"overhead run ({label}) failed: {result.get('reason')}")
                for key in ("train_s", "total_s"):
                    samples[label][key].append(float(result["time"][key]))
                # CPU seconds the train phase cost, helpers included: what the meter and W&B add, measured in a
                # unit other tenants' load (steal, contention) moves far less than wall time
                cpu = float(result["time"]["train_cpu_s"]) + float(result["time"]["train_helper_cpu_s"])
                samples[label]["train_cpu_s"].append(cpu)
                methods[label] = str(result["energy"]["method"])
                if log:
                    log(
                        f"overhead {label} #{i}: train_s {result['time']['train_s']:.3f}, "
                        f"total_s {result['time']['total_s']:.3f}, train CPU s {cpu:.3f}"
                    )
    finally:
        if tmp is not None:
            tmp.cleanup()
    med = {label: {k: statistics.median(v) for k, v in s.items()} for label, s in samples.items()}
    pairs, cpu_pairs = _pair_ratios(samples, "train_s"), _pair_ratios(samples, "train_cpu_s")
    return {
        "model": model,
        "adapter": adapter or "default",
        "steps": steps,
        "repeats": repeats,
        "warmup": warmup,
        **{
            label: {"overrides": list(extra), **med[label], "energy_method": methods.get(label)}
            for label, extra in settings.items()
        },
        "train_s_ratio": statistics.median(pairs["full"]),
        "train_cpu_ratio": statistics.median(cpu_pairs["full"]),
        "train_cpu_ratio_ci95": median_interval(cpu_pairs["full"]),
        "cpu_component_ratios": {k: statistics.median(v) for k, v in cpu_pairs.items()},
        "cpu_pair_ratios": cpu_pairs,
        "train_s_ratio_ci95": median_interval(pairs["full"]),
        "train_s_ratio_of_medians": med["full"]["train_s"] / med["bare"]["train_s"],
        "total_s_ratio": med["full"]["total_s"] / med["bare"]["total_s"],
        "pair_ratios": pairs,
        "component_ratios": {k: statistics.median(v) for k, v in pairs.items()},
        "samples": samples,
        "goal_train_s_ratio": 1.02,
    }


def _pair_ratios(samples: dict[str, dict[str, list[float]]], key: str) -> dict[str, list[float]]:
    """Per pair, each instrumented setting's ``key`` ÷ the bare run's of the same pair."""
    bare = samples["bare"][key]
    return {
        label: [a / b for a, b in zip(values[key], bare, strict=True)]
        for label, values in samples.items()
        if label != "bare"
    }


def median_interval(values: Sequence[float], confidence: float = 0.95) -> list[float] | None:
    """95 % bootstrap (BCa, scipy) interval of the median pair ratio; None below 3 pairs."""
    if len(values) < 3:
        return None
    import numpy as np
    from scipy.stats import bootstrap

    res = bootstrap(
        (np.asarray(values, dtype=float),),
        np.median,
        confidence_level=confidence,
        method="percentile",
        n_resamples=9999,
        random_state=0,
    )
    return [float(res.confidence_interval.low), float(res.confidence_interval.high)]
