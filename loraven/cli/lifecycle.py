"""Process lifecycle: interrupts ending in one line that says what was recorded and a documented exit code, a
launcher's children stopped with it (and ending when it dies, however it dies), and data-parallel start-up. The
checks before Hydra runs (credentials, composition errors) are :mod:`loraven.cli.precheck`."""

from __future__ import annotations

import os
import sys
from typing import Any

LAUNCHER_PID_ENV = "LORAVEN_LAUNCHER_PID"  # set by run.py: a job in another process is a launcher's worker
EXIT_CONFIG, EXIT_FAILED, EXIT_SIGINT, EXIT_SIGTERM = 2, 1, 130, 143  # documented in README (exit codes)


def in_launcher_worker() -> bool:
    launcher = os.environ.get(LAUNCHER_PID_ENV)
    return bool(launcher) and launcher != str(os.getpid())


def exit_worker(err: BaseException) -> None:
    """End a launcher worker right after its job recorded the interruption (W&B finished, result written).

    Without this a loky worker would report the exception and wait for the next job; the launcher that
    forwarded the signal waits for its workers to exit.
    """
    import signal

    signum = int(getattr(err, "signum", signal.SIGINT))
    with suppress_all():
        import wandb

        wandb.teardown()
    kill_descendants()  # W&B's service or anything else this worker started: no orphan outlives it
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(EXIT_SIGTERM if signum == signal.SIGTERM else EXIT_SIGINT)


_WORKER: dict[str, Any] = {"busy": False, "pending": None}


def install_worker_handlers() -> None:
    """A launcher worker's own SIGINT/SIGTERM handling outside :func:`loraven.job.run_job` (which installs its own):
    while the worker is busy with a job, a signal is held: one that came before the job's own handler was in is
    re-sent to the job as soon as its record exists (it records itself as interrupted), one that came while the
    job's pointer is written after it ends the worker once that is written; an idle worker ends at once.
    Without this, loky's default SIGTERM killed a worker between writing its record and writing its pointer, and
    the launcher's last line undercounted what was recorded."""
    import signal

    signal.signal(signal.SIGTERM, _worker_signal)
    signal.signal(signal.SIGINT, _worker_signal)


def _worker_signal(signum: int, frame: Any) -> None:
    if _WORKER["busy"]:
        from loraven.signals import hold_for_job

        _WORKER["pending"] = signum
        hold_for_job(signum)  # a job not yet under way gets it as soon as its own handler is in (job._run_claimed)
        return
    from loraven.job import Interrupted

    exit_worker(Interrupted(f"signal {signum}", signum))


def worker_busy(busy: bool) -> None:
    """Mark the start or the end of a job in a launcher worker; at the end, a held signal ends the worker."""
    _WORKER["busy"] = busy
    if not busy and _WORKER["pending"] is not None:
        from loraven.job import Interrupted

        signum = int(_WORKER["pending"])
        exit_worker(Interrupted(f"signal {signum}", signum))


class suppress_all:
    def __enter__(self) -> None: ...

    def __exit__(self, *exc: Any) -> bool:
        return True


SWEEP_STATE: dict[str, Any] = {}  # the running sweep's dir (set by loraven.sweep.SweepSummary in the launcher)


def run_guarded(main: Any) -> None:
    """Run Hydra's ``main`` with interrupts ending in one line and a documented exit code.

    SIGINT → 130, SIGTERM → 143 (128 + signal number, as shells report them). Jobs record themselves as
    ``failed: interrupted (SIG...)`` first (a record being written is finished first: :mod:`loraven.signals`).
    In a sweep, a SIGINT or SIGTERM to the launcher is forwarded to its children as SIGTERM (joblib workers,
    loky's resource tracker) and the launcher waits for them to record before exiting. The last line says what
    was recorded, read back from the records themselves, never assumed.
    """
    import signal

    from loraven.job import Interrupted

    os.environ[LAUNCHER_PID_ENV] = str(os.getpid())
    signal.signal(signal.SIGTERM, _launcher_signal)
    signal.signal(signal.SIGINT, _launcher_signal)
    watch_parent_from_env()
    try:
        main()
    except KeyboardInterrupt as err:
        signum = int(getattr(err, "signum", signal.SIGINT)) if isinstance(err, Interrupted) else signal.SIGINT
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the children's records short
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stop_children(signal.SIGTERM)
        name = signal.Signals(signum).name
        code = EXIT_SIGTERM if signum == signal.SIGTERM else EXIT_SIGINT
        print(f"interrupted ({name}): {recorded_summary(err)}; exit {code}", file=sys.stderr)
        sys.stderr.flush()
        os._exit(code)  # not sys.exit: joblib/loky teardown after an interrupt can block on dead workers


def recorded_summary(err: BaseException) -> str:
    """What the interrupted run or sweep left in the results store, read from what was written."""
    sweep_dir = SWEEP_STATE.get("dir")
    if sweep_dir is not None:
        from collections import Counter

        from loraven.sweep import collect

        jobs = collect(sweep_dir)
        if not jobs:
            return f"no job of the sweep had recorded a result ({sweep_dir})"
        counts = Counter(_status_words(j) for j in jobs)
        where = sorted({str(j.get("result_path")).rsplit("/", 2)[0] for j in jobs if j.get("result_path")})
        shown = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
        return f"the sweep recorded {shown} ({', '.join(where) or sweep_dir}; jobs listed in {sweep_dir})"
    record = getattr(err, "record", None)
    if not isinstance(record, dict):
        return "the run had not started a record: nothing was written to the results store"
    if record.get("_unsaved"):
        return f"run {record.get('run_id')} could not be recorded: {record['_unsaved']}"
    status = record.get("status")
    reason = f": {record.get('reason')}" if record.get("reason") else ""
    where = record.get("_path") or "the results store"
    return f"run {record.get('run_id')} recorded as {status}{reason} ({where})"


def _status_words(job: dict[str, Any]) -> str:
    status = str(job.get("status"))
    reason = str(job.get("reason") or "")
    if status == "failed" and reason.startswith("interrupted"):
        return "failed (interrupted)"
    return status + (" (resumed)" if job.get("_resumed") else "")


def _launcher_signal(signum: int, frame: Any) -> None:
    """Outside a job (a sweep's launcher, or between jobs): stop the children first, then unwind.

    The children go first because joblib, on the exception, would kill its workers before they record.
    """
    import signal

    from loraven.job import Interrupted

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # while the children record, a repeated signal waits
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    stop_children(signal.SIGTERM)
    raise Interrupted(f"signal {signal.Signals(signum).name}", signum)


# ------------------------------------------------------------------------------------------- no orphans

PARENT_PID_ENV = "LORAVEN_PARENT_PID"  # set by python -m loraven.tune: its child sweep stops when it dies
_watching: dict[str, int] = {}
WATCH_INTERVAL_S = 0.5
WATCH_GRACE_S = 60.0  # after asking the job to stop, how long it may take to record before the process ends


def watch_parent_from_env() -> None:
    """A process started by a driver that asked for it (``LORAVEN_PARENT_PID``) ends when that driver dies."""
    pid = os.environ.get(PARENT_PID_ENV)
    if pid and pid.isdigit() and int(pid) == os.getppid():
        watch_parent()


def watch_parent() -> None:
    """End this process when its parent dies, however it dies (SIGKILL included).

    A daemon thread polls ``getppid()`` (the kernel re-parents an orphan, so a change means the parent is gone):
    then this process gets SIGTERM, so a job under way records itself as interrupted and finishes W&B; if it has
    not ended ``WATCH_GRACE_S`` later, its children (W&B's service) are killed and it exits. Linux's
    ``PR_SET_PDEATHSIG`` would need no thread, but it fires when the parent *thread* that forked us ends, and loky
    starts workers from helper threads. Started once per process.
    """
    import threading

    if _watching:
        return
    parent = os.getppid()
    _watching["parent"] = parent

    def loop() -> None:
        import signal
        import time

        while os.getppid() == parent:
            time.sleep(WATCH_INTERVAL_S)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(WATCH_GRACE_S)
        kill_descendants()
        os._exit(EXIT_SIGTERM)

    threading.Thread(target=loop, name="loraven-parent-watch", daemon=True).start()


def kill_descendants(grace_s: float = 5.0) -> None:
    """Terminate every descendant of this process (W&B's service, loky helpers), then kill what is left."""
    import psutil

    try:
        everyone = psutil.Process().children(recursive=True)
    except psutil.Error:
        return
    for proc in everyone:
        with suppress_all():
            proc.terminate()
    _, alive = psutil.wait_procs(everyone, timeout=grace_s)
    for proc in alive:
        with suppress_all():
            proc.kill()


def stop_children(signum: int, grace_s: float = 60.0) -> None:
    """Forward ``signum`` to this process's children, wait ``grace_s`` for them, then kill what is left.

    Descendants are listed before signalling, so grandchildren (wandb-core under a worker) are stopped too.
    """
    import psutil

    me = psutil.Process()
    try:
        children, everyone = me.children(recursive=False), me.children(recursive=True)
    except psutil.Error:
        return
    for child in children:
        with suppress_all():
            child.send_signal(signum)
    _, alive = psutil.wait_procs(children, timeout=grace_s)
    rest = [p for p in everyone if p.is_running()]
    for proc in [*alive, *rest]:
        with suppress_all():
            proc.terminate()
    _, alive = psutil.wait_procs([*alive, *rest], timeout=5)
    for proc in alive:
        with suppress_all():
            proc.kill()


def init_distributed() -> int:
    """This process's rank; joins the process group when launched by ``accelerate launch``/torchrun.

    accelerate's :class:`PartialState` reads the environment the launcher set (RANK, WORLD_SIZE,
    MASTER_ADDR) and initialises torch.distributed (gloo on CPU, nccl on GPU). On a CPU-only machine
    accelerate 1.x starts several processes only with ``--multi_gpu`` (``--cpu`` means one process), so
    the CPU recipe is ``accelerate launch --multi_gpu --num_processes 2 run.py`` (or torchrun).
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0
    import torch.distributed as dist
    from accelerate import PartialState

    PartialState()
    if not dist.is_initialized():  # accelerate leaves plain CPU launches to us
        dist.init_process_group(backend="nccl" if torch_cuda_available() else "gloo")
    return int(dist.get_rank())


def torch_cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()
