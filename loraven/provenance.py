"""Provenance for every result: git commit, dirty flag, package versions, device and host."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

PACKAGES = {
    "torch": "torch",
    "transformers": "transformers",
    "peft": "peft",
    "lm_eval": "lm_eval",
    "codecarbon": "codecarbon",
    "wandb": "wandb",
    "hydra": "hydra-core",
    "accelerate": "accelerate",
}


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def environment(device: torch.device, code_dir: Path | None = None) -> dict[str, Any]:
    code_dir = code_dir or Path(__file__).resolve().parent
    status = _git(["status", "--porcelain", "--untracked-files=no"], code_dir)
    env: dict[str, Any] = {
        "git_sha": _git(["rev-parse", "HEAD"], code_dir),
        "dirty": bool(status) if status is not None else None,
        "python": platform.python_version(),
    }
    for key, dist in PACKAGES.items():
        try:
            env[key] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            env[key] = None
    env["device"] = device_name(device)
    env["host"] = platform.node()
    env["cpu_threads"] = torch.get_num_threads()
    env["platform"] = platform.platform()
    env["cuda"] = torch.version.cuda
    return env


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return f"cpu:{platform.processor() or platform.machine()} x{os.cpu_count()}"


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        from loraven.errors import ConfigError

        raise ConfigError(f"device={name!r} but no CUDA device is available; valid choices here: auto, cpu")
    device = torch.device(name)
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        from loraven.errors import ConfigError

        count = torch.cuda.device_count()
        raise ConfigError(f"device={name!r} but this machine has {count} CUDA device(s): cuda:0..cuda:{count - 1}")
    return device
