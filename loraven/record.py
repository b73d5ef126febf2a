"""The one place a run's record (result.json) is assembled, section by section, each value written once.

A job starts a :class:`Record` as ``failed: did not finish`` with every contract section present
(:mod:`loraven.contract`), fills typed sections as the run goes (:class:`ModelInfo`, :class:`TimeInfo`, the
meters' readings, the task's metrics) and finally marks it completed, failed or skipped. The training job, the
benchmark job, the sweep's config-error records and re-scoring all build records here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any

from loraven.contract import SCHEMA_VERSION, empty_sections


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class ModelInfo:
    name: str
    total_params: int
    trainable_params: int


@dataclass
class TimeInfo:
    """Wall seconds per phase, the loop's throughput, and CPU seconds of the train phase (this process's threads,
    and its helper processes such as W&B's service): what the harness itself costs on a busy machine."""

    train_s: float | None = None
    eval_s: float | None = None
    total_s: float | None = None
    step_ms_median: float | None = None
    tokens_per_s: float | None = None
    load_s: float | None = None
    steps: int | None = None
    train_tokens: int | None = None
    train_cpu_s: float | None = None
    train_helper_cpu_s: float | None = None
    retention_s: float | None = None  # task.retention: scoring the fine-tuned model on the retention tasks
    retention_base_s: float | None = None  # the same on the untrained model (near 0 when its scores were cached)


@dataclass
class MemoryInfo:
    """Peak memory of this job: GPU ``max_memory_allocated``, or on CPU the process's resident-set peak since the
    job started (``scope="job"``) or, where the kernel cannot reset it, over the process's life
    (``scope="whole process"``, an upper bound that a sweep's earlier jobs inflate)."""

    peak_mb: float | None = None
    scope: str | None = None
    device: str | None = None


class Record:
    """A result record under construction; :meth:`to_dict` is what the results store writes."""

    def __init__(
        self,
        cfg: Mapping[str, Any],
        run_id: str,
        *,
        experiment: str,
        adapter: Mapping[str, Any],
        task: Mapping[str, Any],
        status: str = "failed",
        reason: str | None = "did not finish",
    ) -> None:
        sections = empty_sections()
        sections["adapter"].update(adapter)
        sections["adapter"].setdefault("ranks", {})
        sections["adapter"]["ranks"] = sections["adapter"]["ranks"] or {}
        sections["task"].update(task)
        sections["energy"].update(method="none", evidence="not measured")
        sections["env"] = {}  # filled once the run reaches the machine (provenance.environment)
        self.data: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "run_id": run_id,
            "status": status,
            "reason": reason,
            "created_at": now_iso(),
            "experiment": experiment,
            "seed": cfg.get("seed"),
            "config": dict(cfg),
            "attempts": 1,  # training attempts behind this record (mid-run checkpoints: loraven/checkpoint.py)
            **sections,
        }

    # ---------------------------------------------------------------- sections
    def set_model(self, info: ModelInfo) -> None:
        self.data["model"] = asdict(info)

    def set_env(self, env: Mapping[str, Any]) -> None:
        self.data["env"] = dict(env)

    def update_env(self, values: Mapping[str, Any]) -> None:
        """Keys known only at the end of the job (the thread count it ran with) beside the provenance."""
        self.data.setdefault("env", {}).update(values)

    def set_metrics(self, metrics: Mapping[str, Any]) -> None:
        self.data["metrics"] = {**self.data["metrics"], **metrics}

    def set_time(self, info: TimeInfo) -> None:
        self.data["time"] = asdict(info)

    def set_energy(self, energy: Mapping[str, Any]) -> None:
        self.data["energy"] = dict(energy)

    def set_memory(self, info: MemoryInfo) -> None:
        self.data["memory"] = asdict(info)

    def update_adapter(self, values: Mapping[str, Any]) -> None:
        self.data["adapter"].update(values)

    def update_task(self, values: Mapping[str, Any]) -> None:
        self.data["task"].update(values)

    def add_section(self, name: str, value: Any) -> None:
        """A section outside the contract's required ones (``bench``, ``train``, ``checkpoint``...)."""
        self.data[name] = value

    def warn(self, message: str) -> None:
        """A warning that belongs to the record (``warnings`` in result.json)."""
        self.data.setdefault("warnings", []).append(message)

    # ---------------------------------------------------------------- outcome
    def complete(self) -> None:
        self.data["status"], self.data["reason"] = "completed", None

    def fail(self, reason: str, traceback_text: str | None = None) -> None:
        self.data["status"], self.data["reason"] = "failed", reason
        if traceback_text:
            self.data["traceback"] = traceback_text

    def skip(self, reason: str) -> None:
        self.data["status"], self.data["reason"] = "skipped", reason

    @property
    def status(self) -> str:
        return str(self.data["status"])

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    def to_dict(self) -> dict[str, Any]:
        return self.data
