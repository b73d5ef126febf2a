"""The results store (one writer, atomic files) and the W&B tracker.

Store layout: ``<results_dir>/<experiment>/<run_id>/result.json`` (+ config.yaml, rank traces, ...).
``run_id`` is a stable hash of the config's semantic keys, so the same config (seed included) always
lands in the same folder and a finished run is never repeated.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import tempfile
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

log = logging.getLogger("loraven.track")

# Config keys that change what a run computes; everything else (tracking, paths, energy meter) does not.
SEMANTIC_KEYS = ("model", "adapter", "scheduler", "task", "trainer", "seed", "job", "bench")
RESULT_STATUSES = ("completed", "failed", "skipped")
# key names that hold credentials ("hf_token", "WANDB_API_KEY"), not counters such as "tokens_per_s"
SECRET_PATTERN = re.compile(r"(^|[_-])(api[_-]?key|token|secret|password|auth)$", re.IGNORECASE)


def run_id_for(cfg: Mapping[str, Any]) -> str:
    semantic = {k: cfg.get(k) for k in SEMANTIC_KEYS if k in cfg}
    blob = json.dumps(semantic, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def atomic_write_text(path: Path, text: str) -> None:
    """Write to a temp file in the same folder, fsync, rename: readers see all or nothing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def redact(obj: Any) -> Any:
    """Drop values of keys that look like secrets (a config must never carry a key or token)."""
    if isinstance(obj, Mapping):
        return {k: ("<redacted>" if SECRET_PATTERN.search(str(k)) and v not in (None, "") else redact(v))
                for k, v in obj.items()}
    if isinstance(obj, list):
        return [redact(v) for v in obj]
    return obj


class ResultsStore:
    def __init__(self, results_dir: str | Path) -> None:
        self.root = Path(results_dir)

    def run_dir(self, experiment: str, run_id: str) -> Path:
        return self.root / experiment / run_id

    def check_writable(self) -> None:
        """Fail before training, not after, if results cannot be written."""
        from loraven.adapters.base import ConfigError

        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = tempfile.NamedTemporaryFile(dir=self.root, prefix=".probe-", delete=True)
            probe.close()
        except OSError as err:
            raise ConfigError(f"results_dir={str(self.root)!r} is not writable: {err}") from err

    def load(self, experiment: str, run_id: str) -> dict[str, Any] | None:
        """The stored result, or None if absent, truncated or corrupt (never trusted)."""
        path = self.run_dir(experiment, run_id) / "result.json"
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            log.warning("ignoring corrupt %s (%s); the run will be redone", path, err)
            return None
        if not isinstance(data, dict) or data.get("status") not in RESULT_STATUSES or data.get("run_id") != run_id:
            log.warning("ignoring malformed %s; the run will be redone", path)
            return None
        return data

    def is_completed(self, experiment: str, run_id: str) -> bool:
        result = self.load(experiment, run_id)
        return bool(result and result["status"] == "completed")

    def write(self, experiment: str, result: Mapping[str, Any]) -> Path:
        path = self.run_dir(experiment, str(result["run_id"])) / "result.json"
        atomic_write_text(path, json.dumps(redact(dict(result)), indent=2, default=_json_default) + "\n")
        return path


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    return str(obj)


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# --------------------------------------------------------------------------- W&B


class Tracker:
    """No-op tracker (tracking=none); the W&B one below has the same methods."""

    url: str | None = None

    def log(self, metrics: Mapping[str, Any], step: int | None = None) -> None: ...

    def log_table(self, name: str, frame: Any) -> None: ...

    def summary(self, values: Mapping[str, Any]) -> None: ...

    def finish(self, exit_code: int = 0) -> None: ...


class WandbTracker(Tracker):
    """One W&B run per job, offline unless the user asks for online; never prompts for a login."""

    def __init__(self, cfg: Mapping[str, Any], run_config: Mapping[str, Any], run_dir: Path, name: str,
                 group: str, job_type: str, tags: list[str]) -> None:
        import wandb

        mode = os.environ.get("WANDB_MODE") or str(cfg.get("mode", "offline"))
        if mode == "online" and not _wandb_logged_in():
            log.warning("W&B: not logged in; logging offline instead (sync later with `wandb sync`)")
            mode = "offline"
        os.environ.setdefault("WANDB_SILENT", "true")
        run_dir.mkdir(parents=True, exist_ok=True)
        kwargs = dict(project=str(cfg.get("project", "loraven")), entity=cfg.get("entity") or None, group=group,
                      job_type=job_type, name=name, tags=tags, dir=str(run_dir), mode=mode,
                      config=redact(dict(run_config)), reinit="finish_previous",
                      settings=wandb.Settings(console="off", silent=True, x_disable_stats=True))
        try:
            self.run = wandb.init(**kwargs)
        except Exception as err:  # W&B unreachable: fall back to offline with one warning
            if mode == "offline":
                raise
            log.warning("W&B online init failed (%s); logging offline instead", err)
            kwargs["mode"] = "offline"
            self.run = wandb.init(**kwargs)
        self.url = getattr(self.run, "url", None)
        self.dir = getattr(self.run, "dir", None)

    def log(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        self.run.log(dict(metrics), step=step)

    def log_table(self, name: str, frame: Any) -> None:
        import wandb

        self.run.log({name: wandb.Table(dataframe=frame)})

    def summary(self, values: Mapping[str, Any]) -> None:
        for key, value in values.items():
            self.run.summary[key] = value

    def finish(self, exit_code: int = 0) -> None:
        self.run.finish(exit_code=exit_code)


def _wandb_logged_in() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    return netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore")


def make_tracker(cfg: Mapping[str, Any], run_config: Mapping[str, Any], run_dir: Path, name: str, group: str,
                 job_type: str, tags: list[str]) -> Tracker:
    kind = cfg.get("name", "none")
    if kind == "none":
        return Tracker()
    if kind == "wandb":
        return WandbTracker(cfg, run_config, run_dir, name, group, job_type, tags)
    from loraven.adapters.base import ConfigError

    raise ConfigError(f"unknown tracking {kind!r}; valid choices: wandb, none")


def flatten(prefix: str, obj: Mapping[str, Any]) -> dict[str, Any]:
    """``{"energy": {"kwh": 1}}`` → ``{"energy/kwh": 1}`` for W&B summaries (numbers and strings only)."""
    out: dict[str, Any] = {}
    for key, value in obj.items():
        name = f"{prefix}/{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            out.update(flatten(name, value))
        elif isinstance(value, (int, float, str, bool)) or value is None:
            out[name] = value
    return out
