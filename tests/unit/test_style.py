"""House style is part of CI: ``ruff check`` and ``ruff format --check`` over the whole tree (pyproject.toml's
settings), so a change that breaks either fails the README's test command, not a reviewer's eye."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("command", [["check"], ["format", "--check"]], ids=["ruff-check", "ruff-format"])
def test_ruff_is_clean(command: list[str]) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "ruff", *command, "."], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, f"ruff {' '.join(command)} found problems:\n{proc.stdout[-4000:]}{proc.stderr[-2000:]}"
