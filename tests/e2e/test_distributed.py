"""Data-parallel training through ``accelerate launch`` on CPU (gloo, 2 processes): one result, written once
by rank 0, whose final loss matches the single-process run at the same global batch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import FAST_LM, ROOT, cli_env, compose_cfg, results, sweep_args

from loraven.job import run_job


def test_two_cpu_processes_match_one(tmp_path: Path, session_cache: Path, monkeypatch) -> None:
    overrides = [*FAST_LM, "trainer.steps=6", "trainer.batch_size=8", "trainer.log_every=3", "adapter=lora"]
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--multi_gpu",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        "29533",
        str(ROOT / "run.py"),
        *overrides,
        f"results_dir={tmp_path}/ddp",
        *sweep_args(tmp_path),
    ]
    proc = subprocess.run(cmd, cwd=tmp_path, env=cli_env(session_cache), capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-4000:]
    # (accelerate 1.x on a CPU-only machine: --multi_gpu starts the processes; --cpu would start just one)
    ddp = results(tmp_path / "ddp")
    assert len(ddp) == 1 and ddp[0]["status"] == "completed"  # written once, by rank 0
    assert proc.stderr.count("│ adapter") == 1  # one summary table, not one per rank
    assert ddp[0]["energy"]["ddp_world_size"] == 2  # really two processes

    monkeypatch.setenv("LORAVEN_CACHE", str(session_cache))
    single = run_job(compose_cfg([*overrides, f"results_dir={tmp_path}/single"]), progress=False)
    assert single["run_id"] == ddp[0]["run_id"]  # same config ⇒ same run_id, however it was launched
    a, b = ddp[0]["metrics"]["loss"], single["metrics"]["loss"]
    # per-rank token means vs one global token mean differ slightly; parameters stay in lockstep
    assert abs(a - b) <= 0.02 * abs(b), (a, b)
    assert ddp[0]["model"]["trainable_params"] == single["model"]["trainable_params"]
