"""One job, end to end: check → load → base accuracy → adapt → train → evaluate → one result record.

Every outcome is written as a result.json: ``completed``, ``failed`` (with the reason: divergence, out of
memory, interruption, any error) or ``skipped`` (an incompatible adapter/scheduler pair in a sweep). A
failure never takes down the sweep: the caller gets the record back, not an exception.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import resource
import signal
import time
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from loraven import measure, provenance, threads
from loraven.adapters.base import (
    AdapterContext,
    apply_adapter,
    check_combination,
    check_fits,
    display_label,
    fit_param_budget,
)
from loraven.checks import check_config
from loraven.contract import empty_sections
from loraven.errors import ConfigError, IncompatibleCombination
from loraven.evaluate import evaluate
from loraven.models import LoadedModel, cache_dir, load_model
from loraven.settings import trainer_settings
from loraven.tasks import ClassicTask, build_task, check_tokenizer
from loraven.track import (
    ContractViolation,
    ResultsStore,
    Tracker,
    atomic_write_text,
    flatten,
    make_tracker,
    now_iso,
    redact,
    run_id_for,
)
from loraven.train import DivergenceError, train

log = logging.getLogger("loraven")


class Interrupted(KeyboardInterrupt):
    """SIGTERM turned into an exception so the run is recorded and W&B finished as interrupted."""

    def __init__(self, message: str = "interrupted", signum: int = signal.SIGTERM) -> None:
        super().__init__(message)
        self.signum = int(signum)


def experiment_name(cfg: Mapping[str, Any]) -> str:
    return str(cfg.get("experiment_name") or "default")


def skeleton(cfg: Mapping[str, Any], run_id: str, status: str, reason: str | None) -> dict[str, Any]:
    """A result with every contract key present (from :mod:`loraven.contract`); sections fill in as the run goes."""
    sections = empty_sections()
    sections["adapter"].update(type=cfg["adapter"]["name"], scheduler=cfg["scheduler"]["name"], ranks={})
    sections["adapter"]["label"] = display_label(cfg["adapter"]["name"], cfg["scheduler"]["name"])
    sections["energy"]["method"] = "none"
    sections["env"] = {}  # filled by provenance.environment once the run reaches the machine
    return {
        "run_id": run_id,
        "status": status,
        "reason": reason,
        "created_at": now_iso(),
        "experiment": experiment_name(cfg),
        "seed": cfg.get("seed"),
        "config": dict(cfg),
        **sections,
        "memory": {"peak_mb": None, "device": None},
    }


def is_main_process() -> bool:
    """Rank 0 of a data-parallel launch (or a plain process): the only one that writes results and W&B."""
    dist = torch.distributed
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


JobBody = Callable[[Mapping[str, Any], dict[str, Any], Path, Tracker, bool, bool], None]
"""What a job does between resume and record: ``body(cfg, result, run_dir, tracker, progress, main)`` fills
``result`` in place; raising records the run as failed with the reason."""


def run_job(
    cfg: Mapping[str, Any],
    *,
    multirun: bool = False,
    progress: bool = True,
    parallel_jobs: int = 1,
    body: JobBody | None = None,
) -> dict[str, Any]:
    """Run one resolved config; returns its result record (also written to the results store).

    The one job wrapper: check → resume (a completed record is not redone) → claim → ``body`` (default:
    train and evaluate; the benchmarks pass theirs) → one record, whatever happened.
    ``parallel_jobs`` (how many jobs the launcher runs at once) is recorded in ``energy.parallel_jobs``.
    Under data parallelism every rank trains; only rank 0 evaluates and writes (result, W&B, artifacts).
    """
    check_config(cfg)
    main = is_main_process()
    store = ResultsStore(cfg.get("results_dir", "results")) if main else _NoStore(cfg.get("results_dir", "results"))
    store.check_writable()
    run_id = run_id_for(cfg)
    experiment = experiment_name(cfg)
    if not cfg.get("rerun", False):
        existing = store.load(experiment, run_id)
        if existing and existing["status"] == "completed":
            log.info("run %s already completed; skipping (rerun=true forces)", run_id)
            return {**existing, "_resumed": True}
    try:
        check_combination(cfg["adapter"]["name"], cfg["scheduler"]["name"])
    except IncompatibleCombination as err:
        if not multirun:
            raise
        result = skeleton(cfg, run_id, "skipped", str(err))
        store.write(experiment, result)
        return result

    if main:  # a second sweep on the same results_dir skips a job another live process is running
        owner = store.claim(experiment, run_id)
        if owner is not None:
            log.warning("run %s skipped: %s", run_id, owner)
            return skeleton(cfg, run_id, "skipped", f"running elsewhere: {owner}")  # theirs to write, not ours
    try:
        later = None if cfg.get("rerun", False) else store.load(experiment, run_id, quiet=True)
        if later and later["status"] == "completed":  # finished by its owner while we waited for the claim
            return {**later, "_resumed": True}
        return _run_claimed(cfg, store, experiment, run_id, multirun, progress, parallel_jobs, main, body or _execute)
    finally:
        if main:
            store.release(experiment, run_id)


def _run_claimed(
    cfg: Mapping[str, Any],
    store: ResultsStore,
    experiment: str,
    run_id: str,
    multirun: bool,
    progress: bool,
    parallel_jobs: int,
    main: bool,
    body: JobBody,
) -> dict[str, Any]:
    run_dir = store.run_dir(experiment, run_id)
    result = skeleton(cfg, run_id, "failed", "did not finish")
    tracker: Tracker = Tracker()
    previous = _set_sigterm(_raise_interrupted)  # before W&B init: a SIGTERM there is recorded too
    exit_code = 1
    try:
        if main:
            run_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(run_dir / "config.json", json.dumps(redact(dict(cfg)), indent=2, default=str))
            tracker = make_tracker(
                cfg["tracking"],
                cfg,
                run_dir,
                name=_run_name(cfg, run_id),
                group=experiment,
                job_type=cfg["adapter"]["name"],
                tags=_tags(cfg),
            )
        body(cfg, result, run_dir, tracker, progress, main)
        result["energy"].update(parallel_jobs=int(parallel_jobs), tracking_mode=_tracking_mode(cfg))
        result["status"], result["reason"] = "completed", None
        exit_code = 0
    except DivergenceError as err:
        result["reason"] = f"diverged: {err}"
    except torch.cuda.OutOfMemoryError as err:
        result["reason"] = f"out of memory: {str(err)[:300]}"
    except (KeyboardInterrupt, Interrupted) as err:
        result["reason"] = f"interrupted ({signal.Signals(getattr(err, 'signum', signal.SIGINT)).name})"
        exit_code = 255
        _finalise(store, experiment, result, tracker, exit_code)
        raise
    except ConfigError as err:
        result["reason"] = f"config error: {err}"
        if not multirun:
            _finalise(store, experiment, result, tracker, exit_code)
            raise
    except Exception as err:  # a failed run is recorded with its reason; the sweep goes on
        result["reason"] = f"{type(err).__name__}: {err}"
        result["traceback"] = traceback.format_exc(limit=20)
    finally:
        _set_sigterm(previous)
    _finalise(store, experiment, result, tracker, exit_code)
    return result


def _finalise(store: ResultsStore, experiment: str, result: dict[str, Any], tracker, exit_code: int) -> None:
    """Write the record, then always summarise and finish W&B; a failed write (ENOSPC) is one clear line.

    The record that could not be written is kept in memory (``_unsaved``) so the caller still prints its
    metrics; partial files the failure left in the run folder (temp files, empty CSVs) are removed.
    """
    try:
        store.write(experiment, result)
        # the record is on disk: free the claim now, before W&B's finish (slow under load, and a launcher that
        # stops its workers after a grace period could kill us there and leave a stale lock behind)
        store.release(experiment, str(result["run_id"]))
    except (OSError, ContractViolation) as err:
        where = getattr(err, "filename", None) or store.root
        result["_unsaved"] = f"{getattr(err, 'strerror', None) or err} ({where})"
        shown = {k: v for k, v in result["metrics"].items() if isinstance(v, (int, float, str)) and v is not None}
        log.error(
            "could not write the result of run %s: %s; metrics: %s",
            result["run_id"],
            result["_unsaved"],
            json.dumps(shown, default=str),
        )
    finally:
        remove_partial_files(store.run_dir(experiment, str(result["run_id"])))
        try:
            sections = {k: result[k] for k in ("metrics", "time", "energy", "model", "memory", "env")}
            sections["adapter"] = {k: v for k, v in result["adapter"].items() if k != "ranks"}  # ranks: rank_trace
            tracker.summary(flatten("", sections) | {"status": result["status"], "reason": result["reason"] or ""})
        finally:
            tracker.finish(exit_code=exit_code)
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def remove_partial_files(run_dir: Path) -> None:
    """Temp files (``*.tmp``) and empty files a failed write left at the top of a run folder."""
    if not run_dir.is_dir():
        return
    for path in run_dir.iterdir():
        try:
            if path.is_file() and (path.name.endswith(".tmp") or path.stat().st_size == 0):
                path.unlink()
        except OSError:
            continue


def _raise_interrupted(signum, frame):
    raise Interrupted(f"signal {signal.Signals(signum).name}", signum)


def _set_sigterm(handler):
    """Install a SIGTERM handler where Python allows it (the main thread); elsewhere leave it alone."""
    try:
        return signal.signal(signal.SIGTERM, handler)
    except (ValueError, TypeError):  # not the main thread (threaded launcher backends) or handler None
        return None


def _tracking_mode(cfg: Mapping[str, Any]) -> str | None:
    """codecarbon's tracking mode (process: CPU/RAM scaled by this process's share), else None."""
    energy = cfg.get("energy") or {}
    return str(energy.get("tracking_mode", "process")) if energy.get("name") == "codecarbon" else None


class _NoStore(ResultsStore):
    """Data-parallel ranks > 0 read the store (resume decisions match rank 0) but never write it."""

    def check_writable(self) -> None: ...

    def write(self, experiment: str, result: Mapping[str, Any]) -> Path:
        return self.run_dir(experiment, str(result["run_id"])) / "result.json"


def _run_name(cfg: Mapping[str, Any], run_id: str) -> str:
    return f"{cfg['adapter']['name']}-{cfg['scheduler']['name']}-s{cfg.get('seed')}-{run_id[:6]}"


def _tags(cfg: Mapping[str, Any]) -> list[str]:
    return [
        f"scheduler:{cfg['scheduler']['name']}",
        f"seed:{cfg.get('seed')}",
        f"model:{cfg['model']['kind']}",
        f"task:{cfg['task']['kind']}",
    ]


def _job_device(cfg: Mapping[str, Any]) -> torch.device:
    device = provenance.pick_device(str(cfg.get("device", "auto")))
    if device.type == "cuda" and torch.distributed.is_initialized():  # one GPU per data-parallel rank
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


# ---- issue 26 #8: torch's CPU thread count chosen for the job (loraven.threads), recorded, restored after it
def _execute(
    cfg: Mapping[str, Any], result: dict[str, Any], run_dir: Path, tracker, progress: bool, main: bool = True
) -> None:
    """The default body (:func:`_train_and_evaluate`) under a :class:`~loraven.threads.ThreadGovernor`:
    ``env.torch_threads`` and ``env.threads`` say which count ran and how it was chosen."""
    gov = threads.ThreadGovernor(cfg.get(threads.THREADS_KEY, "auto"), _job_device(cfg))
    try:
        _train_and_evaluate(cfg, result, run_dir, tracker, progress, main, gov)
    finally:
        result["env"].update(gov.record())
        gov.restore()


def _train_and_evaluate(
    cfg: Mapping[str, Any],
    result: dict[str, Any],
    run_dir: Path,
    tracker,
    progress: bool,
    main: bool,
    gov: threads.ThreadGovernor,
) -> None:
    timer = measure.PhaseTimes()
    device = _job_device(cfg)
    seed = int(cfg["seed"])
    torch.manual_seed(seed)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    result["env"] = provenance.environment(device)
    start = time.perf_counter()
    with timer.phase("load", device):
        task = build_task(cfg["task"], cache_dir() / "data")
        info = task.info if isinstance(task, ClassicTask) else None
        loaded = load_model(cfg["model"], info)
        check_fits(loaded.model, cfg["adapter"])
        check_tokenizer(task, loaded.tokenizer)
        loaded.model.to(device)
    result["metrics"]["task"], result["metrics"]["metric"] = task.name, getattr(task, "metric_key", task.metric)
    eval_bs = int(trainer_settings(cfg["trainer"])["eval_batch_size"])
    with gov.watch(loaded.model, "base_eval", probe=True):  # no forward calls when the base score is cached
        base = base_metrics(cfg, loaded, task, eval_bs, seed) if main else {}
    total_params = sum(p.numel() for p in loaded.model.parameters())
    ctx = AdapterContext(total_steps=int(cfg["trainer"]["steps"]), seed=seed)
    with timer.phase("adapt", device):
        _, budget = fit_param_budget(loaded.model, cfg["adapter"])  # what adapter.param_budget chose, recorded
        adapted = apply_adapter(loaded.model, cfg["adapter"], cfg["scheduler"], ctx)
        adapted.model.to(device)
    result["model"] = {
        "name": loaded.name,
        "total_params": total_params,
        "trainable_params": adapted.trainable_param_count(),
    }
    meter = measure.make_meter(cfg["energy"] if main else {"name": "none"}, run_dir)
    warmup_s = measure.warm_up(device)  # one-time process costs stay out of the metered phases
    readings: dict[str, measure.EnergyReading] = {}
    gov.new_phase("train", probe=True)
    with meter.measure("train") as box, timer.phase("train", device):
        stats = train(
            adapted,
            task,
            loaded.tokenizer,
            cfg["trainer"],
            device,
            log_fn=tracker.log,
            seed=seed,
            progress=progress,
            threads=gov,
        )
    readings["train"] = box["reading"]
    if not main:  # rank 0 evaluates and writes; the others are done once training is
        result["metrics"]["loss"] = stats.final_loss
        return
    with meter.measure("eval") as box, timer.phase("eval", device):
        adapted.prepare_for_inference()
        with gov.watch(adapted.model, "eval"):
            metrics = evaluate(adapted.model, loaded.tokenizer, task, batch_size=eval_bs, seed=seed)
    readings["eval"] = box["reading"]
    metrics.update(base)
    metrics["loss"] = stats.final_loss
    result["metrics"] = metrics
    result["adapter"].update({"ranks": adapted.ranks(), **adapted.summary(), **budget})
    if budget and not budget.get("budget_applied"):
        _warn(
            result,
            f"adapter.param_budget={budget['param_budget']} does not apply to adapter="
            f"{cfg['adapter']['name']}: it trained {result['model']['trainable_params']} parameters",
        )
    result["time"] = {
        "train_s": timer.phases["train"],
        "train_cpu_s": timer.cpu["train"],  # every thread of this process (compute + meter + W&B threads)
        "train_helper_cpu_s": timer.helper_cpu["train"],  # child processes (W&B's service)
        "eval_s": timer.phases["eval"],
        "load_s": timer.phases["load"],
        "total_s": time.perf_counter() - start,
        "step_ms_median": stats.step_ms_median,
        "tokens_per_s": stats.tokens_per_s,
        "steps": stats.steps,
        "train_tokens": stats.tokens,
    }
    result["energy"] = measure.combine(
        readings, stats.tokens, metrics.get("n"), "sample" if isinstance(task, ClassicTask) else "token"
    )
    result["energy"]["process_warmup_s"] = warmup_s
    world = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
    if world > 1:
        result["energy"]["ddp_world_size"] = world
        result["energy"]["note"] = "rank 0's process only; the other ranks ran alike (total ≈ × ddp_world_size)"
    result["memory"] = peak_memory(device)
    result["train"] = {"loss_curve": stats.loss_curve}
    try:
        for path in adapted.write_artifacts(run_dir):
            log.info("wrote %s", path)
    except OSError as err:  # the result is worth more than its side files: keep it, say what is missing
        remove_partial_files(run_dir)
        _warn(result, f"could not write the method's artifacts ({err.strerror or err})")
    flag_collapse(result, cfg)
    for name, frame in adapted.artifact_tables().items():
        tracker.log_table(name, frame)
    tracker.log(
        flatten("eval", {k: v for k, v in metrics.items() if k != "per_task"})
        | flatten("energy", {k: v for k, v in result["energy"].items() if k != "phases"})
        | flatten("time", result["time"])
    )


def _warn(result: dict[str, Any], message: str) -> None:
    """A warning that belongs to the record (``warnings`` in result.json) and to the log."""
    log.warning("run %s: %s", result["run_id"], message)
    result.setdefault("warnings", []).append(message)


def flag_collapse(result: dict[str, Any], cfg: Mapping[str, Any]) -> None:
    """``metrics.at_chance``: accuracy within noise of the task's chance level (``metrics.chance``).

    A collapsed run (lr far too high: loss pinned at ln(V), guessing) still completes; this makes it visible.
    The margin is two standard errors of the accuracy (at least one point). Only computed when the task
    declares its chance level.
    """
    metrics = result["metrics"]
    chance, accuracy = metrics.get("chance"), metrics.get("accuracy")
    if not isinstance(chance, (int, float)) or not isinstance(accuracy, (int, float)):
        return
    margin = max(2.0 * float(metrics.get("accuracy_stderr") or 0.0), 0.01)
    metrics["at_chance"] = bool(accuracy <= chance + margin)
    if metrics["at_chance"]:
        _warn(
            result,
            f"accuracy {accuracy:.4g} is at chance ({chance:.4g}): the run may have collapsed "
            f"(trainer.lr={cfg['trainer'].get('lr')}, final loss {metrics.get('loss')})",
        )


def peak_memory(device: torch.device) -> dict[str, Any]:
    if device.type == "cuda":
        return {"peak_mb": torch.cuda.max_memory_allocated(device) / 2**20, "device": "cuda-allocated"}
    # ru_maxrss is the whole process's peak resident set (kB on Linux): an upper bound for this job
    return {"peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "device": "cpu-process-peak-rss"}


def base_metrics(cfg: Mapping[str, Any], loaded: LoadedModel, task, eval_bs: int, seed: int) -> dict[str, Any]:
    """Accuracy of the untrained model, measured once per (model, task) and cached."""
    key = run_id_for(
        {"model": cfg["model"], "task": cfg["task"], "seed": 0, "trainer": {"eval": eval_bs}, "job": task.fingerprint}
    )
    path = cache_dir() / "base_metrics" / f"{key}.json"
    if path.is_file():
        try:
            cached = json.loads(path.read_text())
            return _base_fields(cached)
        except (ValueError, KeyError):
            log.warning("ignoring corrupt base-accuracy cache %s", path)
    metrics = evaluate(loaded.model, loaded.tokenizer, task, batch_size=eval_bs, seed=seed)
    atomic_write_text(path, json.dumps(metrics))
    return _base_fields(metrics)


def _base_fields(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The untrained model's score with its stderr and n, so a gain over base gets an interval too."""
    return {
        "base_accuracy": metrics["accuracy"],
        "base_accuracy_stderr": metrics.get("accuracy_stderr"),
        "base_n": metrics.get("n"),
        "base_mse": metrics.get("mse"),
        "base_scores": metrics.get("scores"),
    }
