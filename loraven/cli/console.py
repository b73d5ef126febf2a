"""Console output: a run's summary table and the plain lines saying where its records are."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def _section(result: dict[str, Any], name: str) -> dict[str, Any]:
    body = result.get(name)
    return body if isinstance(body, dict) else {}


def summary_row(result: dict[str, Any]) -> dict[str, Any]:
    metrics, time_, energy = _section(result, "metrics"), _section(result, "time"), _section(result, "energy")
    adapter = _section(result, "adapter")
    return {
        "run": result.get("run_id"),
        "status": result.get("status"),
        "model": _section(result, "model").get("name"),
        "adapter": adapter.get("type"),
        "scheduler": adapter.get("scheduler"),
        "seed": result.get("seed"),
        "lr": (_section(result, "config").get("trainer") or {}).get("lr"),
        "split": metrics.get("split"),
        "task": metrics.get("task"),
        "accuracy": metrics.get("accuracy"),
        "stderr": metrics.get("accuracy_stderr"),
        "n": metrics.get("n"),
        "at_chance": metrics.get("at_chance"),
        "base": metrics.get("base_accuracy"),
        "mse": metrics.get("mse"),
        "train_s": time_.get("train_s"),
        "step_ms": time_.get("step_ms_median"),
        "kwh": energy.get("kwh"),
        "energy_method": energy.get("method"),
        "reason": result.get("reason"),
        "resumed": bool(result.get("_resumed")),
    }


def fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1e-2 and value != 0 else f"{value:.4f}".rstrip("0").rstrip(".")
    return str(value)


WIDE = 1000  # columns for rich output to a file or pipe: a table is as wide as its content, never wrapped


def console():
    """A rich console on stderr: the terminal's width on a TTY; in a log file or pipe, wide enough that tables
    keep every cell on one line (rich would otherwise wrap them to 80 columns)."""
    from rich.console import Console

    return Console(stderr=True) if sys.stderr.isatty() else Console(stderr=True, width=WIDE)


def result_path(result: dict[str, Any], cfg: dict[str, Any] | None) -> Path | None:
    """The file holding this result: result.json, or result.failed-attempt.json beside an earlier completed one."""
    if not cfg or result.get("_unsaved") or not result.get("run_id"):
        return None
    from loraven.job import experiment_name
    from loraven.track import FAILED_ATTEMPT, ResultsStore

    run_dir = ResultsStore(cfg.get("results_dir", "results")).run_dir(experiment_name(cfg), str(result["run_id"]))
    for path in (run_dir / "result.json", run_dir / FAILED_ATTEMPT):
        try:
            stored = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(stored, dict) and all(stored.get(k) == result.get(k) for k in ("created_at", "status")):
            return path
    return None


def summary_lines(result: dict[str, Any], cfg: dict[str, Any] | None) -> list[str]:
    """Where this run's records are, as plain lines: result.json, and this run's W&B folder with the
    ``wandb sync`` command when W&B logged offline. A resumed run made no new W&B run, so none is named."""
    import shlex

    from loraven.track import wandb_run_folder

    lines = []
    path = result_path(result, cfg)
    if path is not None:
        lines.append(f"result: {path}")
    tracking = (cfg or {}).get("tracking") or {}
    if path is not None and tracking.get("name") == "wandb" and not result.get("_resumed"):
        folder = wandb_run_folder(path.parent)
        if folder is not None and folder.name.startswith("offline-"):
            lines.append(f"W&B offline run: {folder}")
            lines.append(f"upload it with: wandb sync {shlex.quote(str(folder))}")
        elif folder is not None:
            lines.append(f"W&B run: {folder}")
    return lines


def print_summary(result: dict[str, Any], cfg: dict[str, Any] | None = None) -> None:
    """The run's table, then where its records are (plain lines: a path is never wrapped or cut)."""
    from rich.table import Table

    row = summary_row(result)
    title = f"loraven run {row['run']} — {row['status']}"
    table = Table(title=title, show_header=False, min_width=len(title) + 4)  # the title on one line
    table.add_column("key", style="bold")
    table.add_column("value")
    for key in (
        "adapter",
        "scheduler",
        "task",
        "split",
        "lr",
        "accuracy",
        "stderr",
        "base",
        "mse",
        "train_s",
        "step_ms",
        "kwh",
        "energy_method",
        "reason",
    ):
        if row.get(key) is not None:
            table.add_row(key, fmt(row[key]))
    if row["resumed"]:
        table.add_row("note", "already completed earlier; not re-run (rerun=true forces)")
    console().print(table)
    for line in summary_lines(result, cfg):
        print(line, file=sys.stderr)
    sys.stderr.flush()
