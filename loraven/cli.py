"""What ``run.py`` does with a composed config: one job, its summary table, and clean errors."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("loraven")

JOB_POINTER = "loraven_job.json"  # written into Hydra's job dir so the sweep summary can find every result
LAUNCHER_PID_ENV = "LORAVEN_LAUNCHER_PID"  # set by run.py: a job in another process is a launcher's worker
EXIT_CONFIG, EXIT_FAILED, EXIT_SIGINT, EXIT_SIGTERM = 2, 1, 130, 143  # documented in README (exit codes)


def _is_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    try:
        return HydraConfig.get().mode == RunMode.MULTIRUN
    except ValueError:
        return False


def _job_dir() -> Path | None:
    from hydra.core.hydra_config import HydraConfig

    try:
        return Path(HydraConfig.get().runtime.output_dir)
    except ValueError:
        return None


def sweep_params() -> dict[str, Any]:
    """``hydra.sweeper.params`` of the composed config: non-empty for a named sweep (experiment=paper_energy)."""
    from hydra.core.hydra_config import HydraConfig

    try:
        params = HydraConfig.get().sweeper.get("params")
    except ValueError:
        return {}
    return dict(params or {})


def refuse_sweep_without_multirun(argv: list[str] | None = None) -> None:
    """A sweep config run without ``-m`` would run one arbitrary grid point: exit 2 with the command instead."""
    from hydra.core.hydra_config import HydraConfig

    params = sweep_params()
    if not params:
        return
    import shlex

    try:
        name = HydraConfig.get().runtime.choices.get("experiment")
    except ValueError:
        name = None
    args = sys.argv[1:] if argv is None else argv
    what = f"experiment={name}" if name and name != "null" else "this config"
    print(
        f"error: {what} is a sweep (over {', '.join(map(str, params))}); run it with: "
        f"python run.py -m {shlex.join(args)}",
        file=sys.stderr,
    )
    sys.exit(EXIT_CONFIG)


def run_from_hydra(cfg: DictConfig) -> float | None:
    """Run the job; in a single run a config error exits 2 with one line, in a sweep it is recorded."""
    multirun = _is_multirun()
    if not multirun:
        refuse_sweep_without_multirun()  # before anything is imported or loaded
    from loraven.errors import ConfigError
    from loraven.hub import configure_hub_access
    from loraven.search import check_trial, current_sweeper

    os.environ.setdefault("WANDB_MODE", str(cfg.get("tracking", {}).get("mode", "offline")))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if multirun:  # joblib/loky workers: W&B's default process start fails ("cannot find context for 'loky'")
        os.environ.setdefault("WANDB_START_METHOD", "thread")
    resolved: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
    sweeper = current_sweeper() if multirun else None
    check_trial(resolved, sweeper)  # raised, not recorded: an Optuna search must stop, not score the test split
    configure_hub_access(resolved)
    main_process = init_distributed() == 0
    try:
        if resolved.get("job", "train") == "bench":
            from loraven.bench.job import run_bench_job

            result = run_bench_job(resolved)
        else:
            from loraven.job import run_job

            result = run_job(
                resolved, multirun=multirun, progress=sys.stderr.isatty() or not multirun, parallel_jobs=parallel_jobs()
            )
    except KeyboardInterrupt as err:  # recorded as interrupted by run_job; here: how this process ends
        if multirun and _in_launcher_worker():  # a joblib/loky worker: stop now, the launcher reports it
            _exit_worker(err)
        raise
    except ConfigError as err:
        if multirun:
            result = _record_config_error(resolved, err)
        else:
            print(f"error: {err}", file=sys.stderr)
            if os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            sys.exit(2)
    if not main_process:  # data-parallel ranks > 0: rank 0 writes the result, the pointer and the table
        return None
    try:
        _write_pointer(result)
    except OSError as err:
        log.error("could not write the sweep's job record: %s", err.strerror or err)
    print_summary(result, resolved)
    if not multirun and result.get("_unsaved"):  # the metrics are in the table above; the file is not
        print(
            f"error: run {result.get('run_id')} finished but its result was not saved: {result['_unsaved']}",
            file=sys.stderr,
        )
        sys.exit(EXIT_FAILED)
    if not multirun and result.get("status") == "failed":  # a failed single run must fail the shell too
        print(f"error: run {result.get('run_id')} failed: {result.get('reason')}", file=sys.stderr)
        sys.exit(EXIT_FAILED)
    return objective(result)


def _in_launcher_worker() -> bool:
    launcher = os.environ.get(LAUNCHER_PID_ENV)
    return bool(launcher) and launcher != str(os.getpid())


def _exit_worker(err: BaseException) -> None:
    """End a launcher worker right after its job recorded the interruption (W&B finished, result written).

    Without this a loky worker would report the exception and wait for the next job; the launcher that
    forwarded the signal waits for its workers to exit.
    """
    import signal

    signum = int(getattr(err, "signum", signal.SIGINT))
    with _suppress_all():
        import wandb

        wandb.teardown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(EXIT_SIGTERM if signum == signal.SIGTERM else EXIT_SIGINT)


class _suppress_all:
    def __enter__(self) -> None: ...

    def __exit__(self, *exc: Any) -> bool:
        return True


# --------------------------------------------------------------------------- before Hydra: secrets, signals


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
        with _suppress_all():
            child.send_signal(signum)
    _, alive = psutil.wait_procs(children, timeout=grace_s)
    rest = [p for p in everyone if p.is_running()]
    for proc in [*alive, *rest]:
        with _suppress_all():
            proc.terminate()
    _, alive = psutil.wait_procs([*alive, *rest], timeout=5)
    for proc in alive:
        with _suppress_all():
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


def parallel_jobs() -> int:
    """How many jobs of this sweep run at once (joblib n_jobs, submitit array parallelism), else 1.

    Recorded as ``energy.parallel_jobs``: codecarbon's process mode splits CPU/RAM energy by this
    process's share, so concurrent jobs are visible in the numbers.
    """
    from hydra.core.hydra_config import HydraConfig

    try:
        launcher = HydraConfig.get().launcher
    except ValueError:
        return 1
    target = str(launcher.get("_target_", ""))
    if "joblib" in target.lower():
        n_jobs = int(launcher.get("n_jobs") or 1)
        return max(1, (os.cpu_count() or 1) + 1 + n_jobs) if n_jobs < 0 else n_jobs  # joblib: -1 = all cores
    if "submitit" in target.lower() and "Local" in target:
        return int(launcher.get("array_parallelism") or 1)
    return 1


def _record_config_error(cfg: dict[str, Any], err: Exception) -> dict[str, Any]:
    from loraven.job import experiment_name, skeleton
    from loraven.track import ResultsStore, run_id_for

    result = skeleton(cfg, run_id_for(cfg), "failed", f"config error: {err}")
    try:
        ResultsStore(cfg.get("results_dir", "results")).write(experiment_name(cfg), result)
    except OSError as write_err:
        log.error("could not record the failure: %s", write_err)
    return result


def _write_pointer(result: dict[str, Any]) -> None:
    job_dir = _job_dir()
    if job_dir is None:
        return
    from loraven.track import atomic_write_text

    keep = {k: result.get(k) for k in ("run_id", "status", "reason", "experiment", "_resumed")}
    keep["summary"] = summary_row(result)
    atomic_write_text(job_dir / JOB_POINTER, json.dumps(keep, default=str))


def objective(result: dict[str, Any]) -> float | None:
    """What a Hydra sweeper (Optuna) reads: see :func:`loraven.search.objective` (None = a failed trial)."""
    from loraven.search import objective as search_objective

    return search_objective(result)


def _section(result: dict[str, Any], name: str) -> dict[str, Any]:
    body = result.get(name)
    return body if isinstance(body, dict) else {}


def summary_row(result: dict[str, Any]) -> dict[str, Any]:
    metrics, time_, energy = _section(result, "metrics"), _section(result, "time"), _section(result, "energy")
    adapter = _section(result, "adapter")
    return {
        "run": result.get("run_id"),
        "status": result.get("status"),
        "adapter": adapter.get("type"),
        "scheduler": adapter.get("scheduler"),
        "seed": result.get("seed"),
        "lr": (_section(result, "config").get("trainer") or {}).get("lr"),
        "split": metrics.get("split"),
        "task": metrics.get("task"),
        "accuracy": metrics.get("accuracy"),
        "stderr": metrics.get("accuracy_stderr"),
        "base": metrics.get("base_accuracy"),
        "mse": metrics.get("mse"),
        "train_s": time_.get("train_s"),
        "step_ms": time_.get("step_ms_median"),
        "kwh": energy.get("kwh"),
        "energy_method": energy.get("method"),
        "reason": result.get("reason"),
        "resumed": bool(result.get("_resumed")),
    }


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1e-2 and value != 0 else f"{value:.4f}".rstrip("0").rstrip(".")
    return str(value)


WIDE = 1000  # columns for rich output to a file or pipe: a table is as wide as its content, never wrapped


def console():
    """A rich console on stderr: the terminal's width on a TTY; in a log file or pipe, wide enough that tables
    keep every cell on one line (rich would otherwise wrap them to 80 columns)."""
    from rich.console import Console

    return Console(stderr=True) if sys.stderr.isatty() else Console(stderr=True, width=WIDE)


def result_path(result: dict[str, Any], cfg: dict[str, Any] | None) -> Path | None:
    """The file holding this result: result.json, or result.failed-attempt.json beside an earlier completed one."""
    if not cfg or result.get("_unsaved") or not result.get("run_id"):
        return None
    from loraven.job import experiment_name
    from loraven.track import FAILED_ATTEMPT, ResultsStore

    run_dir = ResultsStore(cfg.get("results_dir", "results")).run_dir(experiment_name(cfg), str(result["run_id"]))
    for path in (run_dir / "result.json", run_dir / FAILED_ATTEMPT):
        try:
            stored = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(stored, dict) and all(stored.get(k) == result.get(k) for k in ("created_at", "status")):
            return path
    return None


def summary_lines(result: dict[str, Any], cfg: dict[str, Any] | None) -> list[str]:
    """Where this run's records are, as plain lines: result.json, and this run's W&B folder with the
    ``wandb sync`` command when W&B logged offline. A resumed run made no new W&B run, so none is named."""
    import shlex

    from loraven.track import wandb_run_folder

    lines = []
    path = result_path(result, cfg)
    if path is not None:
        lines.append(f"result: {path}")
    tracking = (cfg or {}).get("tracking") or {}
    if path is not None and tracking.get("name") == "wandb" and not result.get("_resumed"):
        folder = wandb_run_folder(path.parent)
        if folder is not None and folder.name.startswith("offline-"):
            lines.append(f"W&B offline run: {folder}")
            lines.append(f"upload it with: wandb sync {shlex.quote(str(folder))}")
        elif folder is not None:
            lines.append(f"W&B run: {folder}")
    return lines


def print_summary(result: dict[str, Any], cfg: dict[str, Any] | None = None) -> None:
    """The run's table, then where its records are (plain lines: a path is never wrapped or cut)."""
    from rich.table import Table

    row = summary_row(result)
    title = f"loraven run {row['run']} — {row['status']}"
    table = Table(title=title, show_header=False, min_width=len(title) + 4)  # the title on one line
    table.add_column("key", style="bold")
    table.add_column("value")
    for key in (
        "adapter",
        "scheduler",
        "task",
        "split",
        "lr",
        "accuracy",
        "stderr",
        "base",
        "mse",
        "train_s",
        "step_ms",
        "kwh",
        "energy_method",
        "reason",
    ):
        if row.get(key) is not None:
            table.add_row(key, _fmt(row[key]))
    if row["resumed"]:
        table.add_row("note", "already completed earlier; not re-run (rerun=true forces)")
    console().print(table)
    for line in summary_lines(result, cfg):
        print(line, file=sys.stderr)
    sys.stderr.flush()
