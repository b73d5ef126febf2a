"""A run's whole config validated in one pass, before W&B, the results store or a model is touched.

Every group is parsed by its own schema — the trainer, the model kind, the task kind (registered with the task),
the method and its scheduler (registered with the method), the meter (registered with the meter), tracking and the
top level — and the typed sections are handed down; nothing downstream checks the same key again.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator

from loraven.artifacts import SaveConfig
from loraven.errors import ConfigError, IncompatibleCombination
from loraven.paths import check_name_part
from loraven.registry import load_config_plugins
from loraven.schema import Section, parse
from loraven.settings import TrainerConfig, trainer_config
from loraven.threads import parse_threads

GROUPS = ("model", "scheduler", "adapter", "trainer", "task", "energy", "tracking")
# folders a results store must never be (it creates <experiment>/<run_id>/ folders in them)
SYSTEM_DIRS = frozenset(
    Path(p).resolve()
    for p in (
        "/bin",
        "/boot",
        "/dev",
        "/etc",
        "/lib",
        "/lib64",
        "/proc",
        "/root",
        "/run",
        "/sbin",
        "/sys",
        "/usr",
        "/var",
    )
)


class TrackingConfig(Section):
    where: ClassVar[str] = "tracking"
    name: Literal["wandb", "none"]
    mode: Literal["online", "offline", "disabled"]
    project: str | None = None
    entity: str | None = None

    @field_validator("project", "entity")
    @classmethod
    def _wandb_name(cls, value: str | None, info) -> str | None:
        """W&B refuses these characters in project and entity names (at init, after the run had started)."""
        if value is not None and (not value.strip() or len(value) > 128 or re.search(r"[/\\#?%:\s]", value)):
            raise ValueError(
                f"tracking.{info.field_name}={value!r} is not a W&B name: 1 to 128 characters, none of / \\ # ? % : "
                "or spaces"
            )
        return value


class TuningConfig(Section):
    where: ClassVar[str] = "tuning"
    role: Literal["tuned", "untuned"] | None = None
    study: str | None = None
    searched: list[str] = Field(default_factory=list)


class RescoreLink(Section):
    """``rescore``: the source run a re-score record scores (part of its run id, with its task and batch size)."""

    where: ClassVar[str] = "rescore"
    source_run_id: str
    source_experiment: str
    source_path: str


class TopLevel(Section):
    """The keys outside the groups (config.yaml); an unknown one (``+typo=1``) is refused."""

    where: ClassVar[str] = ""
    experiment_name: str
    results_dir: str
    seed: int = Field(ge=0)
    device: str
    threads: int | Literal["auto"] = "auto"  # torch's CPU thread count: timed on the job's own steps, or fixed
    rerun: bool
    job: Literal["train", "bench"]
    tuning: TuningConfig = Field(default_factory=TuningConfig)
    save: SaveConfig = Field(default_factory=SaveConfig)  # what a completed run keeps of its weights
    rescore: RescoreLink | None = None  # set by python -m loraven.rescore: the run whose saved weights are scored
    bench: dict[str, Any] | None = None  # experiment=paper_speedup's suites (validated by the benchmark job)

    @field_validator("experiment_name")
    @classmethod
    def _safe_experiment(cls, value: str) -> str:
        return check_name_part(value, "experiment_name")

    @field_validator("results_dir")
    @classmethod
    def _results_dir(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("results_dir is empty; give a folder for the results store (default: results)")
        where = Path(value).expanduser().resolve()
        if where == Path("/"):
            raise ValueError(f"results_dir={value!r} is the filesystem root; give a folder of its own")
        if where in SYSTEM_DIRS or where == Path.home().resolve():
            raise ValueError(
                f"results_dir={value!r} is a system folder or your home folder itself; give a folder of its own "
                "(default: results)"
            )
        if any(c in value for c in "\x00\n\r"):
            raise ValueError(f"results_dir={value!r} holds a control character")
        return value

    @field_validator("threads", mode="before")
    @classmethod
    def _threads(cls, value: Any) -> int | str:
        return parse_threads(value)

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", value):
            raise ValueError(f"device={value!r}; valid choices: auto, cpu, cuda, cuda:N, mps")
        return value


METHOD_SETTINGS_KEY = "method_settings"
METHOD_SECTIONS = ("adapter", "scheduler", "trainer")


def apply_method_settings(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Merge ``method_settings.<the run's method>.{adapter,scheduler,trainer}`` into those sections.

    A sweep over methods (``adapter: none,loraven``) often needs settings that only one method has (LoRAven's
    ``mode: replace``) or that suit one method (full fine-tuning's ~10x smaller learning rate); under its method's
    name they apply to that method's jobs and no other, so the dense baseline never receives a key it does not
    know. Method names are checked (a typo is an error).
    """
    from loraven.adapters.base import available_adapters

    out = dict(cfg)
    settings = out.pop(METHOD_SETTINGS_KEY, None) or {}
    if not isinstance(settings, Mapping):
        raise ConfigError(
            f"{METHOD_SETTINGS_KEY}={settings!r} must map method names to {{adapter: ..., scheduler: ...}}"
        )
    for method, sections in settings.items():
        if method not in available_adapters():
            raise ConfigError(
                f"{METHOD_SETTINGS_KEY}.{method}: unknown method; valid: {', '.join(available_adapters())}"
            )
        bad = [k for k in (sections or {}) if k not in METHOD_SECTIONS]
        if not isinstance(sections, Mapping) or bad:
            raise ConfigError(f"{METHOD_SETTINGS_KEY}.{method}: valid keys: {', '.join(METHOD_SECTIONS)}")
    mine = settings.get(str((out.get("adapter") or {}).get("name"))) or {}
    for section in METHOD_SECTIONS:
        if mine.get(section):
            out[section] = {**(out.get(section) or {}), **mine[section]}
    return out


@dataclass(frozen=True)
class RunConfig:
    """The validated run: the composed config as it was given (recorded and hashed into the run id) and each
    group's typed settings."""

    raw: dict[str, Any]
    top: TopLevel
    trainer: TrainerConfig
    model: Section
    task: Section
    adapter: Section
    scheduler: Section | None  # None when the method refuses this scheduler (``incompatible`` says why)
    energy: Section
    tracking: TrackingConfig
    incompatible: IncompatibleCombination | None = None


def validate_run_config(cfg: Mapping[str, Any], search_dirs: Iterable[str | Path] = ()) -> RunConfig:
    """Parse every group; the first bad value is one :class:`ConfigError` line naming the key.

    Plug-in modules the config names (``_target_``) are imported first. An adapter × scheduler pair the method
    does not accept is not an error here: ``incompatible`` carries it (a sweep records it as skipped).
    """
    from loraven.adapters.base import adapter_settings, scheduler_settings
    from loraven.meters import meter_settings
    from loraven.models import model_settings
    from loraven.tasks import task_settings

    load_config_plugins(cfg, search_dirs)
    cfg = apply_method_settings(cfg)
    top = parse(TopLevel, {k: v for k, v in cfg.items() if k not in GROUPS}, "config")
    for group in GROUPS:
        if not isinstance(cfg.get(group), Mapping):
            raise ConfigError(f"config group {group!r} is missing or not a mapping; give {group}=<option>")
    trainer = trainer_config(cfg["trainer"])
    model = model_settings(cfg["model"])
    task = task_settings(cfg["task"])
    adapter = adapter_settings(cfg["adapter"])
    energy = meter_settings(cfg["energy"])
    tracking = parse(TrackingConfig, cfg["tracking"], "tracking")
    scheduler: Section | None
    incompatible = None
    try:
        scheduler = scheduler_settings(str(adapter.name), cfg["scheduler"])  # type: ignore[attr-defined]
    except IncompatibleCombination as err:
        scheduler, incompatible = None, err
    return RunConfig(dict(cfg), top, trainer, model, task, adapter, scheduler, energy, tracking, incompatible)
