"""The trainer's settings: ``conf/trainer/default.yaml`` holds the defaults, :class:`TrainerConfig` the rules.

Code used to fall back to its own values when a key was missing (``max_seq_len`` 128 in the loop and the checks
while the YAML said 64); a trainer config given as a plain mapping (tests, the benchmarks, a notebook) is
completed from the same YAML file that ``python run.py`` composes, then validated once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from loraven.schema import Section, parse, with_defaults, yaml_defaults

LR_SCHEDULERS = ("linear", "cosine", "constant", "constant_with_warmup", "cosine_with_restarts", "polynomial")


class TrainerConfig(Section):
    where: ClassVar[str] = "trainer"
    steps: int = Field(ge=1)
    batch_size: int = Field(ge=1)
    lr: float = Field(gt=0.0)
    weight_decay: float = Field(ge=0.0)
    lr_scheduler: Literal[LR_SCHEDULERS]  # type: ignore[valid-type]
    warmup_steps: int = Field(ge=0)
    grad_clip: float | None = Field(gt=0.0)
    max_seq_len: int = Field(ge=2)
    eval_batch_size: int = Field(ge=1)
    log_every: int = Field(ge=1)
    precision: Literal["auto", "bf16", "fp32"]
    betas: list[float] = Field(min_length=2, max_length=2)
    # mid-run checkpoints (loraven/checkpoint.py); not part of the run_id (track.NON_SEMANTIC_TRAINER_PREFIX):
    # they change where a run can resume from, never what it computes
    checkpoint_every: int | None = Field(ge=0)
    checkpoint_max_overhead: float | None = Field(ge=0.0, lt=1.0)
    checkpoint_keep: int = Field(ge=1)
    checkpoint_keep_finished: bool

    @model_validator(mode="after")
    def _rules(self) -> TrainerConfig:
        if not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"trainer.betas={self.betas}: each must be in [0, 1)")
        if self.warmup_steps > self.steps:
            raise ValueError(f"trainer.warmup_steps={self.warmup_steps} > trainer.steps={self.steps}")
        return self


def trainer_defaults() -> dict[str, Any]:
    """``conf/trainer/default.yaml`` as a dict."""
    return yaml_defaults("trainer", "default")


def trainer_config(cfg: Mapping[str, Any] | TrainerConfig) -> TrainerConfig:
    """``cfg.trainer`` completed with the default trainer's values and validated (an instance is kept as is)."""
    if isinstance(cfg, TrainerConfig):
        return cfg
    return parse(TrainerConfig, with_defaults("trainer", "default", cfg), "trainer")


def trainer_settings(cfg: Mapping[str, Any] | TrainerConfig) -> dict[str, Any]:
    """``cfg`` completed and validated, as a dict (for code that reads trainer keys by name)."""
    return trainer_config(cfg).dump()
