"""Read offline W&B runs back from their ``.wandb`` transaction logs with wandb's own reader.

wandb 0.31 has no Python reader of the log any more (``wandb.sdk.internal.datastore`` is gone with the Python
backend); the supported one is the CLI's ``wandb leet inspect --json PATH``, which prints every record of the
log as one JSON line (run, config, metric definitions, history, summary updates, artifacts, exit). This module
runs it (``python -m wandb``, the installed wandb, offline: ``WANDB_MODE=offline`` makes wandb-core skip its
telemetry, so nothing is sent anywhere) and folds the records into a :class:`RunLog`: what W&B will show once
the run is synced — group, job type, tags, config, the history keys, the final summary.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SUMMARY_OPS = frozenset({"min", "max", "mean", "last", "first", "best"})  # define_metric's summary ops
READ_TIMEOUT_S = 120.0


class RunLogError(RuntimeError):
    """A ``.wandb`` file wandb's reader could not read (or wandb's CLI is missing)."""


@dataclass
class RunLog:
    """One offline W&B run as its log says it (the fields the dashboard reads)."""

    path: Path
    run_id: str = ""
    group: str = ""
    job_type: str = ""
    tags: list[str] = field(default_factory=list)
    display_name: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    history_keys: set[str] = field(default_factory=set)
    history: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    metrics: list[dict[str, Any]] = field(default_factory=list)  # define_metric records, as logged
    artifacts: list[dict[str, Any]] = field(default_factory=list)  # name, type, files {path: md5 digest}
    exit_code: int | None = None

    def keys(self, source: str) -> set[str]:
        """Keys of one source: ``history``, ``summary`` (a summary op as ``key.op``), ``config`` (dotted) or
        ``table`` (a wandb.Table logged by name)."""
        if source == "history":
            return {k for k in self.history_keys if not k.startswith("_")}
        if source == "summary":
            return set(flat_summary(self.summary))
        if source == "config":
            return set(flat_config(self.config))
        if source == "table":
            return set(tables(self.summary))
        raise ValueError(f"unknown key source {source!r}; valid: history, summary, config, table")

    def value(self, source: str, key: str) -> Any:
        """The final value of a key (the summary's, the config's, or the last history row holding it)."""
        if source == "summary":
            return flat_summary(self.summary).get(key)
        if source == "config":
            return flat_config(self.config).get(key)
        if source == "table":
            return tables(self.summary).get(key)
        for row in reversed(self.history):
            if key in row:
                return row[key]
        return None

    @property
    def status(self) -> str | None:
        """The record's status as the job wrote it into the summary (completed / failed)."""
        value = self.summary.get("status")
        return str(value) if value is not None else None


def tables(summary: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The wandb.Tables in a summary, by name: W&B writes one as a nested entry (``{"_type": "table-file", ...}``)
    or flattened with dots (``name._type``, ``name.nrows``, ...) depending on the path it was logged by."""
    out: dict[str, dict[str, Any]] = {}
    for key, value in summary.items():
        if isinstance(value, Mapping) and str(value.get("_type", "")).startswith("table"):
            out[str(key)] = dict(value)
        elif str(key).endswith("._type") and str(value).startswith("table"):
            name = str(key)[: -len("._type")]
            out[name] = {k[len(name) + 1 :]: v for k, v in summary.items() if str(k).startswith(f"{name}.")}
    return out


def flat_summary(summary: Mapping[str, Any]) -> dict[str, Any]:
    """The summary with each defined summary op as ``key.op`` (``train/loss.min``); tables stay one key."""
    out: dict[str, Any] = {}
    for key, value in summary.items():
        if str(key).startswith("_"):
            continue
        if isinstance(value, Mapping) and value and set(value) <= SUMMARY_OPS:
            for op, v in value.items():
                out[f"{key}.{op}"] = v
        else:
            out[str(key)] = value
    return out


def flat_config(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """The nested config as dotted keys (``adapter.name``); W&B's own ``_wandb`` entry left out."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        if not prefix and str(key).startswith("_"):
            continue
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping) and value:
            out.update(flat_config(value, name))
        else:
            out[name] = value
    return out


def wandb_files(root: str | Path) -> list[Path]:
    """Every offline run's ``.wandb`` log under a results store (``<exp>/<run_id>/wandb/offline-run-*/``)."""
    return sorted(Path(root).glob("**/wandb/offline-run-*/run-*.wandb"))


def inspect_records(path: str | Path, timeout: float = READ_TIMEOUT_S) -> Iterator[dict[str, Any]]:
    """Every record of one ``.wandb`` log, as wandb's ``leet inspect --json`` prints it."""
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_ERROR_REPORTING": "false"}
    env.pop("WANDB_API_KEY", None)  # a reader needs no key: never hand one to it
    try:
        out = subprocess.run(
            [sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(path)],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        raise RunLogError(f"could not read {path} with `wandb leet inspect` ({err})") from err
    if out.returncode != 0:
        why = (out.stderr or out.stdout).strip().splitlines()[-1:] or [f"exit {out.returncode}"]
        raise RunLogError(f"could not read {path} with `wandb leet inspect`: {why[0]}")
    for line in out.stdout.splitlines():
        line = line.strip()
        if line.startswith("{"):
            yield json.loads(line)


def fold(records: Iterable[Mapping[str, Any]], path: Path) -> RunLog:
    """Records in log order → the run's final state (later summary/config updates win, as on W&B)."""
    run = RunLog(path=Path(path))
    for rec in records:
        kind = rec.get("type")
        body = rec.get(str(kind)) or {}
        if kind == "run":
            run.run_id = str(body.get("run_id", ""))
            run.group = str(body.get("run_group", ""))
            run.job_type = str(body.get("job_type", ""))
            run.tags = list(body.get("tags") or [])
            run.display_name = str(body.get("display_name", ""))
            _update(run.config, (body.get("config") or {}).get("update") or {})
        elif kind == "config":
            _update(run.config, body.get("update") or {})
            for key in body.get("remove") or {}:
                run.config.pop(key, None)
        elif kind == "history":
            item = dict(body.get("item") or {})
            run.history.append(item)
            run.history_keys |= set(item)
        elif kind == "summary":
            _update(run.summary, body.get("update") or {})
            for key in body.get("remove") or {}:
                run.summary.pop(key, None)
        elif kind == "metric":
            run.metrics.append(dict(body))
        elif kind == "artifact":
            contents = (body.get("manifest") or {}).get("contents") or []
            files = {str(c.get("path")): c.get("digest") for c in contents}  # path -> base64 MD5, as W&B keeps it
            run.artifacts.append({"name": body.get("name"), "type": body.get("type"), "files": files})
        elif kind == "exit":
            run.exit_code = int(body.get("exit_code", 0))
    return run


def _update(target: dict[str, Any], update: Mapping[str, Any]) -> None:
    for key, value in update.items():
        target[str(key)] = value


def read_run(path: str | Path) -> RunLog:
    """One offline run (its ``.wandb`` file or its ``offline-run-*`` folder) read with wandb's reader."""
    path = Path(path)
    if path.is_dir():
        found = sorted(path.glob("run-*.wandb"))
        if not found:
            raise RunLogError(f"no run-*.wandb file in {path}")
        path = found[0]
    return fold(inspect_records(path), path)


def read_runs(root: str | Path) -> list[RunLog]:
    """Every offline run under a results store."""
    return [read_run(p) for p in wandb_files(root)]
