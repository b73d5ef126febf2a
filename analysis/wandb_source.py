"""Read runs back from W&B into result.json-shaped records, so dashboards and local tables agree.

Our jobs log ``run.summary`` as result.json flattened with "/" (``metrics/accuracy``, ``energy/kwh``...,
plus ``status`` and ``reason``), ``run.config`` as the resolved Hydra config (whose ``experiment_name`` is the
experiment; ``run.group`` is the comparison, see :mod:`loraven.wandb_layout`). The adapter below inverts that;
``api`` is any object with ``runs(path)`` (``wandb.Api()`` by default) so tests can pass a fake. Bench rows are
not logged to summaries: Table 5.1 needs the local store.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from loraven.contract import SCHEMA_VERSION

_STATE_TO_STATUS = {"finished": "completed", "failed": "failed", "crashed": "failed", "killed": "failed"}


def _plain(obj: Any) -> dict[str, Any]:
    """A W&B summary/config (dict-like, sometimes {"key": {"value": v}}) as a plain dict."""
    data = getattr(obj, "_json_dict", None)
    data = dict(data if isinstance(data, Mapping) else (obj.items() if hasattr(obj, "items") else {}))
    if data and all(isinstance(v, Mapping) and set(v) <= {"value", "desc"} and "value" in v for v in data.values()):
        data = {k: v["value"] for k, v in data.items()}
    return data


def unflatten(flat: Mapping[str, Any], sep: str = "/") -> dict[str, Any]:
    """``{"energy/kwh": 1}`` → ``{"energy": {"kwh": 1}}``; W&B internals (``_step``, ``_runtime``) dropped."""
    nested: dict[str, Any] = {}
    for key, value in flat.items():
        if str(key).startswith("_"):
            continue
        node = nested
        *parents, leaf = str(key).split(sep)
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                break
        else:
            node[leaf] = value
    return nested


def record_from_run(run: Any) -> dict[str, Any]:
    """One W&B run as a result.json-shaped record (the fields analysis reads)."""
    summary = unflatten(_plain(run.summary))
    config = _plain(run.config)
    adapter_cfg = config.get("adapter") if isinstance(config.get("adapter"), Mapping) else {}
    scheduler_cfg = config.get("scheduler") if isinstance(config.get("scheduler"), Mapping) else {}
    adapter = {
        "type": adapter_cfg.get("name"),
        "scheduler": scheduler_cfg.get("name"),
        **(summary.get("adapter") or {}),
    }
    if adapter_cfg.get("mode") is not None:  # a method with modes (LoRAven's adapter | replace)
        adapter.setdefault("mode", adapter_cfg.get("mode"))
    status = summary.get("status") or _STATE_TO_STATUS.get(getattr(run, "state", ""), "failed")
    return {
        "schema_version": summary.get("schema_version", SCHEMA_VERSION),
        "run_id": summary.get("run_id") or getattr(run, "id", None),
        "status": status,
        "reason": summary.get("reason") or (None if status == "completed" else f"W&B state {run.state}"),
        # the group is experiment/method/scheduler/<config> (loraven.wandb_layout); older runs grouped by experiment
        "experiment": config.get("experiment_name") or str(getattr(run, "group", None) or "").split("/")[0] or None,
        "seed": config.get("seed"),
        "config": config,
        "model": summary.get("model") or {},
        "adapter": {"ranks": {}, **adapter},
        "task": summary.get("task") or {},
        "metrics": summary.get("metrics") or {},
        "time": summary.get("time") or {},
        "energy": summary.get("energy") or {},
        "memory": summary.get("memory") or {},
        "env": summary.get("env") or {},
        "wandb": {
            "id": getattr(run, "id", None),
            "name": getattr(run, "name", None),
            "url": getattr(run, "url", None),
        },
    }


def load_wandb(path: str, api: Any = None) -> list[dict[str, Any]]:
    """All runs of ``ENTITY/PROJECT`` as records (needs network and a W&B login unless ``api`` is a fake)."""
    if api is None:
        import wandb

        api = wandb.Api()
    return [record_from_run(run) for run in api.runs(path)]
