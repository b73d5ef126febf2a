"""Shared fixtures: compose the real config (loraven/conf/) and run ``run.py`` as a user would, small and offline."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from loraven import CONF_DIR

ROOT = Path(__file__).resolve().parents[1]
CONF = CONF_DIR  # the packaged configs (loraven/conf/), as run.py reads them
# the fastest real path: a digits MLP for a few steps, no meters, no tracker
FAST_CLASSIC = [
    "model=mlp_digits",
    "task=digits",
    "trainer=classic",
    "trainer.steps=20",
    "energy=none",
    "tracking=none",
]
# the fastest LM path: random tiny Llama, 4 steps, 20 eval questions
FAST_LM = ["model=tiny_llama", "trainer=smoke", "task.n_train=200", "task.n_test=20", "energy=none", "tracking=none"]


def compose_cfg(overrides: Sequence[str] = (), hydra_cfg: bool = False) -> dict[str, Any]:
    """The resolved config ``run.py`` would see for these overrides (hydra section on request)."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=list(overrides), return_hydra_config=hydra_cfg)
    return OmegaConf.to_container(cfg, resolve=not hydra_cfg)  # type: ignore[return-value]


def cli_env(cache: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("HYDRA_FULL_ERROR", "LORAVEN_FAULT_INJECT")}
    env.update(
        LORAVEN_CACHE=str(cache),
        WANDB_MODE="offline",
        WANDB_SILENT="true",
        PYTHONUNBUFFERED="1",
        TOKENIZERS_PARALLELISM="false",
        OMP_NUM_THREADS="1",
        PYTHONPATH=os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]),  # this checkout
    )
    env.update(extra or {})
    return env


@pytest.fixture(scope="session")
def session_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One model/data cache for the session (base-accuracy cache shared across runs; never ~/.cache)."""
    return tmp_path_factory.mktemp("loraven-cache")


@pytest.fixture
def run_cli(session_cache: Path) -> Callable[..., subprocess.CompletedProcess]:
    """``run_cli(args, cwd, env=None, timeout=300)`` runs ``python run.py *args`` in ``cwd``."""

    def _run(
        args: Sequence[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 300
    ) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, str(ROOT / "run.py"), *args],
            cwd=cwd,
            env=cli_env(session_cache, env),
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    return _run


def results(results_dir: Path) -> list[dict[str, Any]]:
    """Every result.json under a results tree (parsed; a corrupt file fails the test loudly)."""
    return [json.loads(p.read_text()) for p in sorted(Path(results_dir).rglob("result.json"))]


def sweep_args(tmp: Path) -> list[str]:
    """Keep Hydra's own output (multirun/, outputs/) inside the test's tmp dir."""
    return [f"hydra.sweep.dir={tmp}/multirun", f"hydra.run.dir={tmp}/outputs"]


@pytest.fixture(autouse=True)
def _hermetic_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process tests see the environment a user's plain shell has: CI exports ``HYDRA_FULL_ERROR=1`` (full traces
    in its log), which turns the one-line exit-2 errors the tests check into raised exceptions."""
    for name in ("HYDRA_FULL_ERROR", "LORAVEN_FAULT_INJECT"):
        monkeypatch.delenv(name, raising=False)


def pytest_collection_modifyitems(config, items) -> None:
    """Every test under tests/e2e is ``slow`` (subprocesses, real runs, sweeps, Slurm): ``-m "not slow"`` is the
    inner loop (the unit tests, minutes), the README's command runs everything (CI)."""
    slow = pytest.mark.slow
    for item in items:
        if "e2e" in item.path.parts and "slow" not in item.keywords:
            item.add_marker(slow)
