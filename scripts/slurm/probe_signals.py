"""What a Hydra job run by the submitit launcher sees when Slurm requeues, preempts or times it out.

A tiny Hydra app for studying the plumbing around mid-run checkpoints (issue 27) without a model: its task
counts ``steps`` steps of ``step_s`` seconds, saves its step counter after every step (atomically) and
resumes from it, and appends one JSON line per event to ``<out>/job<N>.jsonl``:

* ``start``: pid, time, Slurm ids, ``SLURM_RESTART_COUNT``, Hydra job num and output dir, the step it
  resumes from, and the Python signal handlers installed when the task starts (submitit's);
* ``signal``: each SIGTERM/SIGCONT/SIGUSR1/SIGUSR2/SIGINT/SIGHUP the task process receives, with time
  (then the handler that was there before runs, so submitit's behaviour is unchanged);
* ``step``: a heartbeat per step (the last one before a gap dates a SIGKILL, which cannot be caught);
* ``exit``: the exception that ends the task (SystemExit from submitit's requeue, an error), or ``done``.

    python scripts/slurm/probe_signals.py -m hydra/launcher=submitit_slurm hydra.launcher.partition=debug \
        out=/tmp/probe job=0,1 hydra.sweep.dir=/tmp/probe/multirun

then, from another shell, ``scontrol requeue <jobid>``, ``scancel --signal=USR2 <jobid>``, or run with
``hydra.launcher.timeout_min=1 hydra.launcher.signal_delay_s=30`` to reach the time limit.
"""

from __future__ import annotations

import json
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig

SIGNALS = (signal.SIGTERM, signal.SIGCONT, signal.SIGUSR1, signal.SIGUSR2, signal.SIGINT, signal.SIGHUP)
ENV = ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_RESTART_COUNT", "SLURM_JOB_NAME")


@dataclass
class ProbeConf:
    out: str = "/tmp/loraven-probe"
    job: int = 0  # a sweep key, so `job=0,1` makes two jobs
    steps: int = 60
    step_s: float = 1.0


ConfigStore.instance().store(name="probe", node=ProbeConf)


def _append(path: Path, **record: Any) -> None:
    record.update(t=round(time.time(), 3), pid=os.getpid())
    with path.open("a") as fh:  # one short line per write: appends of < PIPE_BUF bytes do not interleave
        fh.write(json.dumps(record) + "\n")


def _watch(log: Path) -> None:
    """Log every listed signal, then hand it to the handler that was installed before (submitit's)."""
    for sig in SIGNALS:
        previous = signal.getsignal(sig)

        def handler(signum: int, frame: Any, previous: Any = previous) -> None:
            _append(log, event="signal", name=signal.Signals(signum).name)
            if callable(previous):
                previous(signum, frame)
            elif previous == signal.SIG_DFL and signum != signal.SIGCONT:  # default action: die of it
                signal.signal(signum, signal.SIG_DFL)
                os.kill(os.getpid(), signum)

        signal.signal(sig, handler)


@hydra.main(version_base="1.3", config_path=None, config_name="probe")
def main(cfg: ProbeConf) -> str:
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    num = HydraConfig.get().job.num
    log, state = out / f"job{num}.jsonl", out / f"job{num}.state.json"
    start = json.loads(state.read_text())["step"] if state.exists() else 0
    handlers = {signal.Signals(s).name: repr(signal.getsignal(s)) for s in SIGNALS}
    _append(
        log,
        event="start",
        env={k: os.environ.get(k) for k in ENV},
        job_num=num,
        output_dir=HydraConfig.get().runtime.output_dir,
        resume_step=start,
        handlers=handlers,
    )
    _watch(log)
    try:
        for step in range(start, cfg.steps):
            time.sleep(cfg.step_s)
            tmp = state.with_suffix(".tmp")
            tmp.write_text(json.dumps({"step": step + 1}))
            os.replace(tmp, state)  # atomic: a kill between steps leaves the previous or the new counter
            _append(log, event="step", step=step + 1)
    except BaseException as err:
        _append(log, event="exit", exc=type(err).__name__, message=str(err)[:200])
        raise
    _append(log, event="exit", exc="done")
    return "done"


if __name__ == "__main__":
    main()
