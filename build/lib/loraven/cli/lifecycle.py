"""Process lifecycle: credentials refused before Hydra writes anything, interrupts ending in one line and a
documented exit code, a launcher's children stopped with it, and data-parallel start-up."""

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
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(EXIT_SIGTERM if signum == signal.SIGTERM else EXIT_SIGINT)


class suppress_all:
    def __enter__(self) -> None: ...

    def __exit__(self, *exc: Any) -> bool:
        return True


def credential_overrides(argv: list[str]) -> list[str]:
    """Command-line overrides whose key looks like a credential (``trainer.passwd=...``, ``+secret_key=...``)."""
    from loraven.track import is_credential_key

    found = []
    for arg in argv:
        if arg.startswith("-") or "=" not in arg:
            continue
        key = arg.split("=", 1)[0].lstrip("+~").strip()
        if key and is_credential_key(key):
            found.append(key)
    return found


def refuse_credential_overrides(argv: list[str]) -> None:
    """Exit 2 with one line before Hydra writes anything if a credential is passed on the command line.

    Hydra copies every override into ``.hydra/{config,overrides,hydra}.yaml`` and ``multirun.yaml``, W&B
    records the command line in its run file, and both happen before any code of ours could redact a value;
    so credentials are refused here and taken from the environment instead. The value is never echoed.
    """
    keys = credential_overrides(argv)
    if keys:
        print(
            f"error: {', '.join(keys)} on the command line looks like a credential; command lines are written to "
            ".hydra/*.yaml, multirun.yaml and W&B run files. Pass credentials as environment variables instead "
            "(WANDB_API_KEY, HF_TOKEN, AWS_SECRET_ACCESS_KEY, ...); nothing was run or written.",
            file=sys.stderr,
        )
        sys.exit(EXIT_CONFIG)


def run_guarded(main: Any) -> None:
    """Run Hydra's ``main`` with interrupts ending in one line and a documented exit code.

    SIGINT → 130, SIGTERM → 143 (128 + signal number, as shells report them). Jobs record themselves as
    ``failed: interrupted (SIG...)`` first. In a sweep, a SIGTERM to the launcher is forwarded to its children
    (joblib workers, loky's resource tracker) and the launcher waits for them before exiting.
    """
    import signal

    from loraven.job import Interrupted

    os.environ[LAUNCHER_PID_ENV] = str(os.getpid())
    signal.signal(signal.SIGTERM, _launcher_sigterm)
    try:
        main()
    except KeyboardInterrupt as err:
        signum = int(getattr(err, "signum", signal.SIGINT)) if isinstance(err, Interrupted) else signal.SIGINT
        stop_children(signal.SIGTERM)
        name = signal.Signals(signum).name
        code = EXIT_SIGTERM if signum == signal.SIGTERM else EXIT_SIGINT
        print(
            f"interrupted ({name}): runs under way were recorded as failed: interrupted; exit {code}", file=sys.stderr
        )
        sys.stderr.flush()
        os._exit(code)  # not sys.exit: joblib/loky teardown after an interrupt can block on dead workers


def _launcher_sigterm(signum: int, frame: Any) -> None:
    """Outside a job (a sweep's launcher, or between jobs): stop the children first, then unwind.

    The children go first because joblib, on the exception, would kill its workers before they record.
    """
    from loraven.job import Interrupted

    stop_children(signum)
    raise Interrupted("signal SIGTERM", signum)


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
