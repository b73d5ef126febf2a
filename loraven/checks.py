"""Config checks that run before anything is loaded: a bad value fails in a second, not after training."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from loraven.adapters.base import ConfigError


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
    adapter = cfg["adapter"]
    for key in ("r", "r_max", "r_min", "alpha"):
        if key in adapter and adapter[key] is not None:
            _number("adapter", key, adapter[key], float if key == "alpha" else int, 1 if key != "alpha" else 0)
    if "r_min" in adapter and "r_max" in adapter and adapter["r_min"] > adapter["r_max"]:
        raise ConfigError(f"adapter.r_min={adapter['r_min']} > adapter.r_max={adapter['r_max']}; need r_min <= r_max")
    targets = adapter.get("target_modules", "all-linear")
    if not isinstance(targets, (str, list, tuple)) or (not isinstance(targets, str) and not targets):
        raise ConfigError(f"adapter.target_modules={targets!r} must be 'all-linear' or a non-empty list of names")
