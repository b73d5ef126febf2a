"""Config checks that run before anything is loaded: a bad value fails in a second, not after training."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from loraven.adapters.targets import target_names
from loraven.errors import ConfigError
from loraven.settings import trainer_settings
from loraven.threads import THREADS_KEY, parse_threads

WANDB_MODES = ("online", "offline", "disabled")
LR_SCHEDULERS = ("linear", "cosine", "constant", "constant_with_warmup", "cosine_with_restarts", "polynomial")


def _number(section: str, key: str, value: Any, kind: type, low: float | None = None, strict: bool = False) -> None:
    ok_types = (int,) if kind is int else (int, float)
    if isinstance(value, bool) or not isinstance(value, ok_types):
        raise ConfigError(f"{section}.{key}={value!r} must be {'an integer' if kind is int else 'a number'}")
    if low is not None and (value <= low if strict else value < low):
        raise ConfigError(f"{section}.{key}={value!r} must be {'>' if strict else '>='} {low}")


def check_config(cfg: Mapping[str, Any]) -> None:
    """Types and ranges of the keys the loop relies on; adapters validate their own keys."""
    trainer = trainer_settings(cfg["trainer"])
    _number("trainer", "lr", trainer["lr"], float, 0, strict=True)
    _number("trainer", "steps", trainer["steps"], int, 1)
    _number("trainer", "batch_size", trainer["batch_size"], int, 1)
    _number("trainer", "max_seq_len", trainer["max_seq_len"], int, 2)
    _number("trainer", "warmup_steps", trainer["warmup_steps"], int, 0)
    _number("trainer", "weight_decay", trainer["weight_decay"], float, 0)
    if trainer["grad_clip"] is not None:
        _number("trainer", "grad_clip", trainer["grad_clip"], float, 0, strict=True)
    if trainer["lr_scheduler"] not in LR_SCHEDULERS:
        bad = trainer["lr_scheduler"]
        raise ConfigError(f"trainer.lr_scheduler={bad!r}; valid choices: {', '.join(LR_SCHEDULERS)}")
    if trainer["precision"] not in ("auto", "bf16", "fp32"):
        raise ConfigError(f"trainer.precision={trainer['precision']!r}; valid choices: auto, bf16, fp32")
    _number("", "seed", cfg.get("seed"), int, 0)
    if "task" in cfg:
        from loraven.tasks import check_task_keys

        check_task_keys(cfg["task"])
    check_environment_keys(cfg)
    adapter = cfg["adapter"]
    for key in ("r", "r_max", "r_min", "alpha"):
        if key == "r_max" and adapter.get(key) == "full":
            continue  # r_max=full (each layer's smaller side): the method's own config accepts it or says no
        if key in adapter and adapter[key] is not None:
            _number("adapter", key, adapter[key], float if key == "alpha" else int, 1 if key != "alpha" else 0)
    r_min, r_max = adapter.get("r_min"), adapter.get("r_max")
    if isinstance(r_min, int) and isinstance(r_max, int) and r_min > r_max:
        raise ConfigError(f"adapter.r_min={adapter['r_min']} > adapter.r_max={adapter['r_max']}; need r_min <= r_max")
    if adapter.get("dropout") is not None:  # before peft, whose error would list every Linear layer
        _number("adapter", "dropout", adapter["dropout"], float, 0)
        if not adapter["dropout"] < 1:
            raise ConfigError(f"adapter.dropout={adapter['dropout']!r} must be in [0, 1)")
    target_names(adapter.get("target_modules", "all-linear"))  # a malformed value fails here, before loading


def check_environment_keys(cfg: Mapping[str, Any]) -> None:
    """Device, tracking, energy and scheduler-budget values: all fail here, before W&B or a meter starts."""
    device = str(cfg.get("device", "auto"))
    parse_threads(cfg.get(THREADS_KEY, "auto"))  # issue 26 #8: threads: auto | <int >= 1>
    if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", device):
        raise ConfigError(f"device={device!r}; valid choices: auto, cpu, cuda, cuda:N, mps")
    tracking = cfg.get("tracking") or {}
    if tracking.get("name", "none") not in ("wandb", "none"):
        raise ConfigError(f"tracking={tracking.get('name')!r}; valid choices: wandb, none")
    if tracking.get("mode") is not None and tracking["mode"] not in WANDB_MODES:
        raise ConfigError(f"tracking.mode={tracking['mode']!r}; valid choices: {', '.join(WANDB_MODES)}")
    energy = cfg.get("energy") or {}
    if energy.get("name") == "codecarbon":
        _number("energy", "measure_power_secs", energy.get("measure_power_secs", 1), float, 0, strict=True)
    budget = (cfg.get("scheduler") or {}).get("budget") or {}
    if budget.get("joules_per_step") is not None:
        _number("scheduler.budget", "joules_per_step", budget["joules_per_step"], float, 0, strict=True)
    if budget.get("fraction") is not None:
        _number("scheduler.budget", "fraction", budget["fraction"], float, 0)
    model = cfg.get("model") or {}
    if model.get("kind") == "hf" and model.get("name_or_path"):
        local = Path(str(model["name_or_path"])).expanduser()
        if local.is_dir() and not (local / "config.json").is_file():
            what = "an empty directory" if not any(local.iterdir()) else "a directory without config.json"
            raise ConfigError(
                f"model.name_or_path={str(local)!r} is {what}; a local model needs a Hugging Face "
                "model folder (config.json, tokenizer files, *.safetensors)"
            )
