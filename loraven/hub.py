"""Hub access: offline switches so nothing waits on hub retries on a machine without a network."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any

OFFLINE_VARS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")


def needs_hub(cfg: Mapping[str, Any]) -> bool:
    """A hub model id (not a local folder), or a task kind that declares it needs the network for this config."""
    from loraven.tasks import TASKS

    model, task = cfg["model"], cfg["task"]
    remote_model = model.get("kind") == "hf" and not Path(str(model.get("name_or_path") or "")).expanduser().exists()
    kind = str(task.get("kind"))
    spec = TASKS.get(kind) if kind in TASKS else None
    return remote_model or bool(spec and spec.needs_network and spec.needs_network(task))


def hub_reachable(host: str = "huggingface.co", timeout: float = 2.0) -> bool:
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def configure_hub_access(cfg: Mapping[str, Any]) -> bool:
    """Go offline unless this run needs the hub and can reach it; returns True when online.

    Must run before transformers / datasets / lm-eval are imported (they read these variables once).
    """
    online = needs_hub(cfg) and os.environ.get("HF_HUB_OFFLINE") != "1" and hub_reachable()
    if not online:
        for var in OFFLINE_VARS:
            os.environ.setdefault(var, "1")
    return online
