"""Config checks that run before anything is loaded: a bad value fails in a second, not after training."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from loraven.adapters.base import ConfigError

WANDB_MODES = ("online", "offline", "disabled")


def _number(section: str, key: str, value: Any, kind: type, low: float | None = None, strict: bool = False) -> None:
    ok_types = (int,) if kind is int else (int, float)
    if isinstance(value, bool) or not isinstance(value, ok_types):
        raise ConfigError(f"{section}.{key}={value!r} must be {'an integer' if kind is int else 'a number'}")
    if low is not None and (value <= low if strict else value < low):
        raise ConfigError(f"{section}.{key}={value!r} must be {'>' if strict else '>='} {low}")


def check_config(cfg: Mapping[str, Any]) -> None:
    """Types and ranges of the keys the loop relies on; adapters validate their own keys."""
    trainer = cfg["trainer"]
    _number("trainer", "lr", trainer.get("lr"), float, 0, strict=True)
    _number("trainer", "steps", trainer.get("steps"), int, 1)
    _number("trainer", "batch_size", trainer.get("batch_size"), int, 1)
    _number("trainer", "max_seq_len", trainer.get("max_seq_len", 128), int, 2)
    _number("trainer", "warmup_steps", trainer.get("warmup_steps", 0), int, 0)
    _number("trainer", "weight_decay", trainer.get("weight_decay", 0.0), float, 0)
    if trainer.get("grad_clip") is not None:
        _number("trainer", "grad_clip", trainer["grad_clip"], float, 0, strict=True)
    schedulers = ("linear", "cosine", "constant", "constant_with_warmup", "cosine_with_restarts", "polynomial")
    if trainer.get("lr_scheduler", "linear") not in schedulers:
        bad = trainer.get("lr_scheduler")
        raise ConfigError(f"trainer.lr_scheduler={bad!r}; valid choices: {', '.join(schedulers)}")
    if trainer.get("precision", "auto") not in ("auto", "bf16", "fp32"):
        raise ConfigError(f"trainer.precision={trainer.get('precision')!r}; valid choices: auto, bf16, fp32")
    _number("", "seed", cfg.get("seed"), int, 0)
    if "task" in cfg:
        from loraven.tasks import check_task_keys

        check_task_keys(cfg["task"])
    check_environment_keys(cfg)
    adapter = cfg["adapter"]
    for key in ("r", "r_max", "r_min", "alpha"):
        if key == "r_max" and adapter.get(key) == "full" and adapter.get("name") == "loraven":
            continue  # documented: LoRAven's r_max=full = each layer's smaller side
        if key in adapter and adapter[key] is not None:
            _number("adapter", key, adapter[key], float if key == "alpha" else int, 1 if key != "alpha" else 0)
    r_min, r_max = adapter.get("r_min"), adapter.get("r_max")
    if isinstance(r_min, int) and isinstance(r_max, int) and r_min > r_max:
        raise ConfigError(f"adapter.r_min={adapter['r_min']} > adapter.r_max={adapter['r_max']}; need r_min <= r_max")
    if adapter.get("dropout") is not None:  # before peft, whose error would list every Linear layer
        _number("adapter", "dropout", adapter["dropout"], float, 0)
        if not adapter["dropout"] < 1:
            raise ConfigError(f"adapter.dropout={adapter['dropout']!r} must be in [0, 1)")
    targets = adapter.get("target_modules", "all-linear")
    if not isinstance(targets, (str, list, tuple)) or (not isinstance(targets, str) and not targets):
        raise ConfigError(f"adapter.target_modules={targets!r} must be 'all-linear' or a non-empty list of names")


def check_environment_keys(cfg: Mapping[str, Any]) -> None:
    """Device, tracking, energy and scheduler-budget values: all fail here, before W&B or a meter starts."""
    device = str(cfg.get("device", "auto"))
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


def check_rank_fits(model: Any, adapter: Mapping[str, Any]) -> None:
    """``target_modules`` matching no Linear layer, or a fixed LoRA rank (``adapter.r``) above a targeted
    layer's smaller side, is a config error found right after loading, not after evaluation or training.
    Only ``r`` is checked: LoRA-AR and LoRAven cap their ranks per layer.
    """
    from torch import nn

    targets = adapter.get("target_modules", "all-linear")
    linears = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if targets != "all-linear" and adapter.get("name") != "none":  # before any evaluation or training
        names = [targets] if isinstance(targets, str) else [str(t) for t in targets]
        if not any(n == t or n.endswith("." + t) for n, _ in linears for t in names):
            valid = sorted({n.split(".")[-1] for n, _ in linears})
            raise ConfigError(
                f"adapter.target_modules={names} matches no Linear layer of this model; "
                f"valid names: {', '.join(valid)} (or all-linear)"
            )
    rank = adapter.get("r")
    if rank is None or adapter.get("name") not in ("lora", "dora"):
        return
    if targets == "all-linear":  # peft's rule: every Linear except the output head
        chosen = [(n, m) for n, m in linears if n.split(".")[-1] not in ("lm_head", "score", "classifier")]
        chosen = chosen[:-1] if chosen and chosen == linears else chosen  # an MLP's last layer is its head
    else:
        names = [targets] if isinstance(targets, str) else list(targets)
        chosen = [(n, m) for n, m in linears if any(n == t or n.endswith("." + t) for t in names)]
    if not chosen:
        return  # "matches nothing" is reported by the adapter with the list of valid names
    name, smallest = min(chosen, key=lambda nm: min(nm[1].in_features, nm[1].out_features))
    limit = min(smallest.in_features, smallest.out_features)
    if int(rank) > limit:
        raise ConfigError(
            f"adapter.r={rank} exceeds layer {name} ({smallest.in_features}->{smallest.out_features}); "
            f"valid: 1..{limit} for these target_modules"
        )
