"""A real single-node Slurm (scripts/slurm/start.sh): sweeps through ``hydra/launcher=submitit_slurm`` go through
slurmctld, and a job requeued mid-run with ``scontrol requeue`` runs again and completes.

Where Slurm cannot start (not root, no apt, a daemon that dies) these tests FAIL with the script's reason: a
skipped Slurm test would let CI pass without ever having scheduled a job.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import FAST_LM, ROOT, cli_env, results

from loraven.contract import contract_violations

pytestmark = pytest.mark.slow

SCRIPTS = ROOT / "scripts" / "slurm"
STATE = Path(os.environ.get("LORAVEN_SLURM_DIR", "/tmp/loraven-slurm"))
SLURM = ["hydra/launcher=slurm_local"]  # submitit_slurm on the local partition (conf/hydra/launcher/slurm_local.yaml)


@pytest.fixture(scope="session")
def slurm_env() -> Iterator[dict[str, str]]:
    """Start the local Slurm (or find it running); the env its clients and jobs need. Stops it only if it started it.

    PYTHONPATH: a job runs ``python -m submitit.core._submit`` in the sweep's cwd, so without it a job would import
    whichever loraven the environment has installed, not this checkout.
    """
    try:
        proc = subprocess.run(["bash", str(SCRIPTS / "start.sh")], capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired as err:
        pytest.fail(f"scripts/slurm/start.sh did not finish in {err.timeout} s:\n{err.stderr or ''}", pytrace=False)
    if proc.returncode != 0:
        reason = [line for line in proc.stderr.splitlines() if "FAILED" in line] or ["(no reason printed)"]
        pytest.fail(
            f"the local Slurm did not start (scripts/slurm/start.sh exit {proc.returncode}): {reason[-1]}\n"
            f"{proc.stderr[-6000:]}",
            pytrace=False,
        )
    started_here = "already running" not in proc.stderr
    yield {"SLURM_CONF": str(STATE / "slurm.conf"), "PYTHONPATH": str(ROOT)}
    if started_here:
        subprocess.run(["bash", str(SCRIPTS / "stop.sh")], capture_output=True, timeout=120)


def _slurm_job(job: str, env: dict[str, str]) -> dict[str, str]:
    """``scontrol show job`` as a dict (finished jobs stay visible for MinJobAge=600 s; there is no sacct here)."""
    out = subprocess.run(
        ["scontrol", "-o", "show", "job", job], env=env, capture_output=True, text=True, timeout=30, check=True
    ).stdout
    return dict(tok.split("=", 1) for tok in out.split() if "=" in tok)


def _finished_job(job: str, env: dict[str, str], timeout: float = 120) -> dict[str, str]:
    """The job once Slurm has finished it: the launcher returns when the result pickle lands, while the job's
    process is still exiting (RUNNING, then COMPLETING)."""
    deadline = time.monotonic() + timeout
    while (info := _slurm_job(job, env))["JobState"] in ("RUNNING", "COMPLETING") and time.monotonic() < deadline:
        time.sleep(0.5)
    return info


def _array_tasks(sweep_dir: Path) -> dict[int, str]:
    """Hydra job num → Slurm array task id (``<array>_<num>``), from the submitit folders of the sweep."""
    found = (re.fullmatch(r"(\d+)_(\d+)", p.name) for p in (sweep_dir / ".submitit").glob("*_*"))
    return {int(m[2]): m[0] for m in found if m}


def _wait_for(what: str, check: Callable[[], bool], timeout: float, launcher: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if launcher.poll() is not None:
            pytest.fail(f"the sweep ended (exit {launcher.returncode}) before {what}", pytrace=False)
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} after {timeout:.0f} s", pytrace=False)
        time.sleep(0.2)


def test_sweep_runs_through_slurmctld(tmp_path: Path, slurm_env: dict[str, str], run_cli) -> None:
    args = ["-m", *SLURM, *FAST_LM, "seed=0,1", f"results_dir={tmp_path}/res", f"hydra.sweep.dir={tmp_path}/multirun"]
    proc = run_cli(args, tmp_path, env=slurm_env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    rows = results(tmp_path / "res")
    assert sorted((r["seed"], r["status"]) for r in rows) == [(0, "completed"), (1, "completed")]
    assert all(not contract_violations(r) for r in rows)
    assert "loraven sweep summary: 2 completed" in proc.stderr
    # the two jobs were one sbatch array that slurmctld ran to completion, once each
    tasks = _array_tasks(tmp_path / "multirun")
    assert sorted(tasks) == [0, 1], tasks
    for task in tasks.values():
        job = _finished_job(task, slurm_env)
        assert (job["JobState"], job["Partition"], job["Restarts"]) == ("COMPLETED", "debug", "0"), job


REQUEUES = {  # how the running job is stopped: what the task process receives (docs/slurm.md)
    "scontrol_requeue": (["scontrol", "requeue"], "SIGTERM"),  # SIGTERM now, SIGKILL after KillWait; Slurm requeues
    "usr2": (["scancel", "--signal=USR2"], "SIGUSR2"),  # a coming time limit/preemption: submitit requeues
}


@pytest.mark.parametrize("how", list(REQUEUES))
def test_requeued_job_resumes_from_its_checkpoint_and_completes(
    how: str, tmp_path: Path, slurm_env: dict[str, str], session_cache
) -> None:
    """Two identical jobs (they differ only in results_dir, which is not part of the run): job 0 is requeued while
    it trains, job 1 is not; both complete, and the requeued one resumes from its checkpoint and ends with the
    uninterrupted one's results."""
    res = {0: tmp_path / "res_requeued", 1: tmp_path / "res_uninterrupted"}
    sweep_dir = tmp_path / "multirun"
    args = [*SLURM, *FAST_LM, "trainer.steps=400", "trainer.checkpoint_every=20", "seed=0"]
    cmd = [sys.executable, str(ROOT / "run.py"), "-m", *args, f"results_dir={res[0]},{res[1]}"]
    log = (tmp_path / "launcher.log").open("w")
    launcher = subprocess.Popen(
        [*cmd, f"hydra.sweep.dir={sweep_dir}"],
        cwd=tmp_path,
        env=cli_env(session_cache, slurm_env),
        stdout=log,
        stderr=log,
    )
    try:
        _wait_for("Slurm array task for job 0", lambda: 0 in _array_tasks(sweep_dir), 120, launcher)
        task = _array_tasks(sweep_dir)[0]
        # job 0 is training: its first checkpoint is on disk (so the requeue lands mid-training)
        _wait_for(
            "first checkpoint of job 0", lambda: any(res[0].rglob("checkpoints/step-*/manifest.json")), 300, launcher
        )
        assert not any(res[0].rglob("result.json")), "job 0 finished before it could be requeued"
        command, signal_name = REQUEUES[how]
        signalled = time.time()
        subprocess.run([*command, task], env=slurm_env, check=True, timeout=30)
        launcher.wait(timeout=600)
    finally:
        if launcher.poll() is None:
            launcher.kill()
        log.close()
    out = (tmp_path / "launcher.log").read_text()
    assert launcher.returncode == 0, out[-4000:]

    requeued, uninterrupted = (results(res[k]) for k in (0, 1))
    assert [r["status"] for r in requeued] == ["completed"] and [r["status"] for r in uninterrupted] == ["completed"]
    assert not contract_violations(requeued[0])
    # Slurm restarted the same array task once, and the first attempt was stopped by the requeue, not finished
    job = _finished_job(task, slurm_env)
    assert (job["JobState"], job["Restarts"]) == ("COMPLETED", "1"), job
    submitit_out = (sweep_dir / ".submitit" / task / f"{task}_0_log.out").read_text()
    submitit_err = (sweep_dir / ".submitit" / task / f"{task}_0_log.err").read_text()
    starts = [m.start() for m in re.finditer("Starting with JobEnvironment", submitit_out)]
    assert len(starts) == 2, submitit_out[-3000:]
    assert submitit_out.find("Job completed successfully") > starts[1], "the first attempt ran to completion"
    assert "DUE TO JOB REQUEUE" in submitit_err, submitit_err[-3000:]
    # the same run (same run_id) ends with the same numbers as the run nobody interrupted (CPU, fp32, seeded)
    a, b = requeued[0], uninterrupted[0]
    assert a["run_id"] == b["run_id"]
    assert a["metrics"] == b["metrics"]
    assert a["train"]["loss_curve"] == b["train"]["loss_curve"]
    # ...and got there in two attempts: the first saved at the step boundary after the signal, the second resumed
    assert a["attempts"] == 2 and b["attempts"] == 1
    first, second = a["checkpoint"]["attempts"]
    assert (first["outcome"], second["outcome"]) == ("preempted", "completed"), a["checkpoint"]
    assert 20 <= first["end_step"] == second["start_step"] == a["checkpoint"]["resumed_from_step"] < 400
    assert first["slurm_job_id"] == second["slurm_job_id"] and second["slurm_restart_count"] == 1
    assert first["reason"].startswith(f"interrupted ({signal_name}) at step {first['end_step']}: checkpoint saved")
    print(
        f"{how}: signal → saved {first['ended_unix'] - signalled:.2f} s, → training resumed "
        f"{second['started_unix'] - signalled:.1f} s (attempt 2 started at step {second['start_step']})"
    )
