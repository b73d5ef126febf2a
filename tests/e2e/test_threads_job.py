"""The job chooses torch's thread count and records how (issue 26, item 8): auto probes on the job's own
steps, OMP_NUM_THREADS and ``threads=N`` are respected, a bad value is one line before anything starts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import FAST_LM, ROOT, cli_env, results, sweep_args

AUTO_HOWS = {"probe", "probe-tie", "probe-unclear", "idle-rule", "probe-unfinished"}


@pytest.mark.slow
def test_auto_threads_are_chosen_per_job_and_recorded(tmp_path: Path, session_cache: Path) -> None:
    """Two jobs in one process (basic launcher), no OMP_NUM_THREADS so nothing fixes the count: each job
    probes on its own steps and records the count and how it was chosen."""
    env = {k: v for k, v in cli_env(session_cache).items() if k != "OMP_NUM_THREADS"}
    args = ["-m", *FAST_LM, "trainer.steps=8", "seed=0,1", f"results_dir={tmp_path}/r", *sweep_args(tmp_path)]
    cmd = [sys.executable, str(ROOT / "run.py"), *args]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = results(tmp_path / "r")
    assert len(records) == 2
    for record in records:
        assert record["status"] == "completed"
        t = record["env"]["threads"]
        assert t["how"] in AUTO_HOWS and t["requested"] == "auto" and t["candidates"][0] == 1
        assert record["env"]["torch_threads"] == t["n"] and t["n"] in t["candidates"]
        assert t["units"] >= 8  # every training step (and evaluation forward) went through the governor
        if t["how"] == "probe-unfinished":  # short tiny-model units on a loaded machine: warm-up took the steps
            assert t["unfinished_probe"] and t["probe_ms_per_unit"] == {}
        elif t["how"] != "idle-rule":
            assert set(t["probe_ms_per_unit"]) == {str(n) for n in t["candidates"]}
        else:
            assert t["spare_cores"] is not None and t["probe_ms_per_unit"] == {"1": []}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "threads", "how"),
    [([], 1, "env:OMP_NUM_THREADS"), (["threads=2"], 2, "config")],  # the config key wins over the environment
)
def test_explicit_threads_are_respected(tmp_path: Path, run_cli, args, threads, how) -> None:
    proc = run_cli([*FAST_LM, *args, f"results_dir={tmp_path}/r", f"hydra.run.dir={tmp_path}/o"], tmp_path)  # OMP=1
    assert proc.returncode == 0, proc.stderr[-3000:]
    (record,) = results(tmp_path / "r")
    assert record["env"]["torch_threads"] == threads
    assert record["env"]["threads"]["how"] == how and record["env"]["threads"]["decisions"] == []


@pytest.mark.parametrize("bad", ["two", "0", "-3", "1.5"])
def test_bad_threads_value_is_one_line_exit_2_before_anything(tmp_path: Path, run_cli, bad: str) -> None:
    proc = run_cli([*FAST_LM, f"threads={bad}", f"results_dir={tmp_path}/r", f"hydra.run.dir={tmp_path}/o"], tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "threads=" in lines[0] and "auto or an integer >= 1" in lines[0], proc.stderr
    assert not list(tmp_path.rglob("result.json"))
