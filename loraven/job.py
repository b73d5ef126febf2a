"""One job, end to end: validate → resume → claim → body (load → base score → adapt → train → evaluate) → one record.

Every outcome is written as a result.json: ``completed``, ``failed`` (with the reason: divergence, out of
memory, interruption, any error) or ``skipped`` (an incompatible adapter/scheduler pair in a sweep). A
failure never takes down the sweep: the caller gets the record back, not an exception.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import hashlib
import json
import logging
import os
import signal
import time
import traceback
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from loraven import checkpoint, measure, provenance, retention, threads
from loraven.adapters.base import AdapterContext, apply_adapter, check_fits, fit_param_budget, get_adapter
from loraven.errors import ConfigError, IncompatibleCombination
from loraven.evaluate import evaluate
from loraven.meters import EnergyReading, combine, make_meter
from loraven.models import LoadedModel, cache_dir, load_model
from loraven.record import ModelInfo, Record, TimeInfo
from loraven.run_config import RunConfig, validate_run_config
from loraven.signals import deferred as deferred_signals
from loraven.signals import name as signal_name
from loraven.signals import redeliver_to_job
from loraven.tasks import TASKS, build_task
from loraven.testhooks import event
from loraven.track import (
    ContractViolation,
    ResultsStore,
    Tracker,
    atomic_write_text,
    flatten,
    make_tracker,
    redact,
    run_id_for,
)
from loraven.train import DivergenceError, train
from loraven.wandb_layout import comparison_group, job_type, per_task_metrics, tags

log = logging.getLogger("loraven")


class Interrupted(KeyboardInterrupt):
    """SIGTERM turned into an exception so the run is recorded and W&B finished as interrupted."""

    def __init__(self, message: str = "interrupted", signum: int = signal.SIGTERM) -> None:
        super().__init__(message)
        self.signum = int(signum)


def experiment_name(cfg: Mapping[str, Any]) -> str:
    return str(cfg.get("experiment_name") or "default")


def new_record(cfg: Mapping[str, Any], run_id: str, status: str = "failed", reason: str | None = "did not finish"):
    """A record with every contract section present; what the method and task *are* comes from their registry
    entries (labels, order, baseline, family), so analysis never needs the registries."""
    adapter_name, scheduler = str(cfg["adapter"]["name"]), str(cfg["scheduler"]["name"])
    adapter: dict[str, Any] = {"type": adapter_name, "scheduler": scheduler, "ranks": {}}
    try:
        adapter.update(get_adapter(adapter_name).describe(scheduler))
    except ConfigError:  # an unknown method (a config error being recorded): shown as it is named
        adapter.update(label=adapter_name, order=None, baseline=False, size=None)
    kind = str(cfg["task"].get("kind"))
    task: dict[str, Any] = {"kind": kind, "family": None, "metric": None, "higher_is_better": None}
    if kind in TASKS:
        spec = TASKS.get(kind)
        metric = str(cfg["task"].get("metric") or spec.default_metric)
        task.update(family=spec.family, metric=metric, higher_is_better=spec.higher_is_better(metric))
    return Record(
        cfg, run_id, experiment=experiment_name(cfg), adapter=adapter, task=task, status=status, reason=reason
    )


def is_main_process() -> bool:
    """Rank 0 of a data-parallel launch (or a plain process): the only one that writes results and W&B."""
    dist = torch.distributed
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


JobBody = Callable[[RunConfig, Record, Path, Tracker, bool, bool], None]
"""What a job does between resume and record: ``body(run, record, run_dir, tracker, progress, main)`` fills the
record; raising records the run as failed with the reason."""


def run_job(
    cfg: Mapping[str, Any],
    *,
    multirun: bool = False,
    progress: bool = True,
    parallel_jobs: int = 1,
    body: JobBody | None = None,
    search_dirs: Iterable[str | Path] = (),
    on_record: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Run one resolved config; returns its result record (also written to the results store).

    ``on_record(result)`` is called as soon as the record is on disk, before W&B finishes (the CLI writes the
    sweep's job pointer there: a worker stopped while W&B finishes has its record listed all the same).

    The one job wrapper: validate every group → resume (a completed record is not redone) → claim → ``body``
    (default: train and evaluate; the benchmarks pass theirs) → one record, whatever happened.
    ``parallel_jobs`` (how many jobs the launcher runs at once) is recorded in ``energy.parallel_jobs``.
    Under data parallelism every rank trains; only rank 0 evaluates and writes (result, W&B, artifacts).
    """
    run = validate_run_config(cfg, search_dirs)
    cfg = run.raw  # with method_settings merged into its method's sections: what runs is what is hashed
    main = is_main_process()
    results_dir = run.top.results_dir
    store = ResultsStore(results_dir) if main else _NoStore(results_dir)
    store.check_writable()
    run_id = run_id_for(cfg)
    experiment = experiment_name(cfg)
    if not run.top.rerun:
        existing = store.load(experiment, run_id)
        if existing and existing["status"] == "completed":
            log.info("run %s already completed; skipping (rerun=true forces)", run_id)
            return {**existing, "_resumed": True}
    if run.incompatible is not None:
        if not multirun:
            raise run.incompatible
        record = new_record(cfg, run_id, "skipped", str(run.incompatible))
        store.write(experiment, record.to_dict())
        return record.to_dict()

    if body is None:  # the training job's data and cache must be usable before anything is written
        check_cache_writable()
    if main:  # a second sweep on the same results_dir skips a job another live process is running
        owner = store.claim(experiment, run_id)  # an unverifiable lock raises locks.LockError (nothing written)
        if owner is not None:
            log.warning("run %s skipped: %s", run_id, owner)
            return new_record(cfg, run_id, "skipped", f"running elsewhere: {owner}").to_dict()  # theirs to write
    previous = _set_interrupt_handlers(InterruptOnce())  # before loading: an interrupt is always one exception
    try:
        later = None if run.top.rerun else store.load(experiment, run_id, quiet=True)
        if later and later["status"] == "completed":  # finished by its owner while we waited for the claim
            return {**later, "_resumed": True}
        if body is None:
            body = _prepared_body(run)  # config errors found while building the task or the model: nothing written
        outer_sigterm = previous.get(signal.SIGTERM)  # what a checkpointed preemption hands the signal back to
        return _run_claimed(
            run, store, experiment, run_id, multirun, progress, parallel_jobs, main, body, on_record, outer_sigterm
        )
    finally:
        _set_interrupt_handlers(previous)
        if main:
            store.release(experiment, run_id)
            _remove_if_empty(store.run_dir(experiment, run_id))


def _remove_if_empty(folder: Path) -> None:
    """A claim that ended before anything was written (a config error found while preparing) leaves no folder."""
    with contextlib.suppress(OSError):
        folder.rmdir()


def check_cache_writable() -> None:
    """``$LORAVEN_CACHE`` (task data, the model copy, base scores) must be writable: one line before anything starts."""
    import tempfile

    from loraven.models import CACHE_ENV

    root = Path(os.environ.get(CACHE_ENV) or "~/.cache/loraven").expanduser()
    try:
        root = cache_dir()  # creates it
        with tempfile.NamedTemporaryFile(dir=root, prefix=".probe-"):
            pass
    except OSError as err:
        raise ConfigError(
            f"the cache folder {root} (LORAVEN_CACHE) is not writable ({err.strerror or err}); "
            "set LORAVEN_CACHE to a writable folder"
        ) from None


def _prepared_body(run: RunConfig) -> JobBody:
    """The training body with its preparation done now (:func:`prepare`): a config error there (bad data, a model
    the method does not fit, a parameter budget beyond the method's largest size) is raised before the run's
    folder, record or W&B run exist. Any other failure is recorded as the run's failure, as before."""
    try:
        prepared = prepare(run)
    except (ConfigError, KeyboardInterrupt):
        raise
    except Exception as err:  # noqa: BLE001 - recorded by the body, with its traceback
        failure, text = err, traceback.format_exc(limit=20)

        def failed(run, record, run_dir, tracker, progress, main) -> None:
            record.data["traceback"] = text
            raise failure

        return failed
    return functools.partial(_execute, prepared=prepared)


def _run_claimed(
    run: RunConfig,
    store: ResultsStore,
    experiment: str,
    run_id: str,
    multirun: bool,
    progress: bool,
    parallel_jobs: int,
    main: bool,
    body: JobBody,
    on_record: Callable[[dict[str, Any]], None] | None = None,
    outer_sigterm: Any = None,
) -> dict[str, Any]:
    cfg = run.raw
    run_dir = store.run_dir(experiment, run_id)
    record = new_record(cfg, run_id)
    tracker: Tracker = Tracker()
    exit_code = 1
    try:
        redeliver_to_job()  # a signal that reached a launcher worker while this job was starting: recorded here
        if main:
            run_dir.mkdir(parents=True, exist_ok=True)
            event("config_write")
            atomic_write_text(run_dir / "config.json", json.dumps(redact(dict(cfg)), indent=2, default=str))
            tracker = make_tracker(
                cfg["tracking"],
                cfg,
                run_dir,
                name=_run_name(cfg, run_id),
                group=comparison_group(cfg),  # experiment/method/scheduler/<config>: the seeds of one comparison
                job_type=job_type(cfg),
                tags=tags(cfg),
            )
        body(run, record, run_dir, tracker, progress, main)
        record.data["energy"]["parallel_jobs"] = int(parallel_jobs)
        record.complete()
        exit_code = 0
    except checkpoint.Preempted as err:  # CHECKPOINTS: saved after a signal; record the attempt, then hand it on
        record.fail(err.reason)
        exit_code = 255
        _finalise(store, experiment, record, tracker, exit_code, on_record)
        _hand_over(err, outer_sigterm, store, experiment, record)
    except DivergenceError as err:
        record.fail(f"diverged: {err}")
    except torch.cuda.OutOfMemoryError as err:
        record.fail(f"out of memory: {str(err)[:300]}")
    except (KeyboardInterrupt, Interrupted) as err:
        record.fail(f"interrupted ({signal.Signals(getattr(err, 'signum', signal.SIGINT)).name})")
        exit_code = 255
        _finalise(store, experiment, record, tracker, exit_code, on_record)  # a 2nd signal here raises with the record
        err.record = record.to_dict()  # type: ignore[attr-defined]  # what was written, for the exit message
        raise
    except ConfigError as err:
        record.fail(f"config error: {err}")
        if not multirun:
            _finalise(store, experiment, record, tracker, exit_code, on_record)
            raise
    except Exception as err:  # a failed run is recorded with its reason; the sweep goes on
        record.fail(f"{type(err).__name__}: {err}", record.data.get("traceback") or traceback.format_exc(limit=20))
    _finalise(store, experiment, record, tracker, exit_code, on_record)
    if record.status == "completed" and not record.get("_unsaved"):  # CHECKPOINTS: the record is on disk
        checkpoint.finish_run(run_dir, run.trainer.checkpoint_keep_finished)
    return record.to_dict()


def _hand_over(err: checkpoint.Preempted, outer_sigterm, store: ResultsStore, experiment: str, record: Record):
    """After a preempted attempt is recorded, the signal goes where it would have gone without checkpoints:
    SIGUSR1/SIGUSR2 to the handler installed before (submitit's: resubmit, ``scontrol requeue``, exit), SIGTERM and
    unhandled user signals end the job as interrupted (exit 143 in a launcher's worker; Slurm requeues it)."""
    err.signals.uninstall(redeliver=False)
    if err.signum != signal.SIGTERM and callable(err.previous):
        # requeue sends us a SIGTERM: it goes to the handler from before the job (or is ignored)
        _set_interrupt_handlers({signal.SIGTERM: outer_sigterm if callable(outer_sigterm) else signal.SIG_IGN})
        try:
            err.previous(err.signum, None)
        except Exception as exc:  # submitit: "timed-out too many times" — no requeue; a rerun still resumes
            record.fail(f"{err.reason}; not requeued ({exc})")
            with contextlib.suppress(OSError, ContractViolation):
                store.write(experiment, record.to_dict())
            raise
    raise Interrupted(f"signal {signal.Signals(err.signum).name}", err.signum)


def _finalise(
    store: ResultsStore,
    experiment: str,
    record: Record,
    tracker,
    exit_code: int,
    on_record: Callable[[dict[str, Any]], None] | None = None,
) -> None:
    """Write the record, then always summarise and finish W&B; a failed write (ENOSPC) is one clear line.

    The record that could not be written is kept in memory (``_unsaved``) so the caller still prints its
    metrics; partial files the failure left in the run folder (temp files, empty CSVs) are removed.
    """
    result = record.to_dict()
    written: Path | None = None
    if result["status"] == "failed" and "checkpoint" not in str(result["reason"]):  # CHECKPOINTS: can it resume?
        note = checkpoint.resume_note(store.run_dir(experiment, str(result["run_id"])))
        result["reason"] = f"{result['reason']}{note}"
    pending: list[int] = []
    with deferred_signals(pending):  # a SIGINT/SIGTERM now waits until the record is on disk (then raises)
        try:
            written = store.write(experiment, result)
            result["_path"] = str(written)  # where it went (result.json or failed-attempt)
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
        if on_record is not None:
            try:
                on_record(result)
            except OSError as err:
                log.error("could not note run %s's record for the sweep: %s", result["run_id"], err)
    try:
        try:
            if written is not None:  # the files as written: result.json, config.json, the run's CSVs
                run_dir = store.run_dir(experiment, str(result["run_id"]))
                files = [written, run_dir / "config.json", *sorted(run_dir.glob("*.csv"))]
                tracker.log_files(f"result-{result['run_id']}", files)
            sections = {k: result[k] for k in ("metrics", "time", "energy", "model", "memory", "env", "task")}
            sections["adapter"] = {k: v for k, v in result["adapter"].items() if k != "ranks"}  # ranks: rank_trace
            tracker.summary(flatten("", sections) | {"status": result["status"], "reason": result["reason"] or ""})
        finally:
            tracker.finish(exit_code=exit_code)
    except KeyboardInterrupt as err:  # a signal while W&B finishes: the record is written already
        pending.append(int(getattr(err, "signum", signal.SIGINT)))
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    if pending:  # held while the record was written: the run stops now, and says what it recorded
        stop = Interrupted(f"signal {signal_name(pending[0])}", pending[0])
        stop.record = result  # type: ignore[attr-defined]
        raise stop


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


class InterruptOnce:
    """The job's SIGINT/SIGTERM handler: the first signal raises :class:`Interrupted`; a second one within
    ``hold_s`` is only noted (``held``), so it cannot raise again while the first interruption unwinds and is recorded.

    Why: a Ctrl-C reaches a joblib worker twice, as SIGINT from the terminal and as SIGTERM forwarded by its
    launcher (a checkpointed run also re-delivers the SIGTERM it held). When the second raised after the first was
    caught but before the record was written, the worker ended with no record at all (seen under load). A signal
    later than ``hold_s`` raises again: the first interruption was swallowed by other code, or recording is stuck.
    """

    def __init__(self, hold_s: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.hold_s = float(hold_s)
        self.clock = clock
        self.raised_at: float | None = None
        self.held: list[int] = []

    def __call__(self, signum: int, frame: Any) -> None:
        now = self.clock()
        if self.raised_at is not None and now - self.raised_at < self.hold_s:
            self.held.append(int(signum))
            return
        self.raised_at = now
        raise Interrupted(f"signal {signal.Signals(signum).name}", signum)


def _set_interrupt_handlers(handler):
    """Install ``handler`` for SIGTERM and SIGINT where Python allows it (the main thread); returns the previous
    handlers (pass them back to restore). Elsewhere (threaded launcher backends) leave them alone."""
    previous = {}
    for sig in (signal.SIGTERM, signal.SIGINT):
        wanted = handler.get(sig) if isinstance(handler, dict) else handler
        if wanted is None:
            continue
        try:
            previous[sig] = signal.signal(sig, wanted)
        except (ValueError, TypeError):  # not the main thread
            continue
    return previous


class _NoStore(ResultsStore):
    """Data-parallel ranks > 0 read the store (resume decisions match rank 0) but never write it."""

    def check_writable(self) -> None: ...

    def write(self, experiment: str, result: Mapping[str, Any]) -> Path:
        return self.run_dir(experiment, str(result["run_id"])) / "result.json"


def _run_name(cfg: Mapping[str, Any], run_id: str) -> str:
    return f"{cfg['adapter']['name']}-{cfg['scheduler']['name']}-s{cfg.get('seed')}-{run_id[:6]}"


def _job_device(device_name: str) -> torch.device:
    device = provenance.pick_device(device_name)
    if device.type == "cuda" and torch.distributed.is_initialized():  # one GPU per data-parallel rank
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


@dataclass
class Prepared:
    """What the training job builds before anything is written: the task (its data read and checked), the model,
    the method's fit to it and the parameter budget's fit. A config error in any of them stops the run before its
    folder, record or W&B run exist."""

    task: Any
    loaded: LoadedModel
    fitted: Any  # the adapter settings the method is built from (after adapter.param_budget)
    budget: dict[str, Any]
    device: torch.device
    timer: measure.PhaseTimes
    memory: measure.PeakMemory
    start: float


def prepare(run: RunConfig) -> Prepared:
    """Device → task → model → the method's rank check → the tokenizer check → the budget fit (the "load" phase)."""
    timer = measure.PhaseTimes()
    device = _job_device(run.top.device)
    torch.manual_seed(run.top.seed)
    memory = measure.PeakMemory(device)
    start = time.perf_counter()
    with timer.phase("load", device):
        task = build_task(run.task, cache_dir() / "data")
        loaded = load_model(run.raw["model"], task.info or None)
        check_fits(loaded.model, run.adapter)
        task.check_tokenizer(loaded.tokenizer)
        fitted, budget = fit_param_budget(loaded.model, run.adapter)  # what adapter.param_budget chose, recorded
        loaded.model.to(device)
    return Prepared(task, loaded, fitted, budget, device, timer, memory, start)


def _execute(
    run: RunConfig,
    record: Record,
    run_dir: Path,
    tracker,
    progress: bool,
    main: bool = True,
    prepared: Prepared | None = None,
) -> None:
    """The training job under a :class:`~loraven.threads.ThreadGovernor` (torch's CPU thread count chosen for
    the job, restored after it): ``env.torch_threads`` and ``env.threads`` say which count ran and why."""
    prepared = prepared or prepare(run)
    gov = threads.ThreadGovernor(run.top.threads, prepared.device)
    try:
        _train_and_evaluate(run, record, run_dir, tracker, progress, main, prepared, gov)
    finally:
        record.update_env(gov.record())
        gov.restore()


def _train_and_evaluate(
    run: RunConfig,
    record: Record,
    run_dir: Path,
    tracker,
    progress: bool,
    main: bool,
    prepared: Prepared,
    gov: threads.ThreadGovernor,
) -> None:
    """(prepared) → base score → adapt → train (metered) → evaluate (metered) → record."""
    task, loaded, fitted, budget = prepared.task, prepared.loaded, prepared.fitted, prepared.budget
    timer, device, memory, start = prepared.timer, prepared.device, prepared.memory, prepared.start
    seed = run.top.seed
    record.set_env(provenance.environment(device))
    record.set_metrics({"task": task.name, "metric": task.metric_key})
    record.update_task(task.describe())
    eval_bs = run.trainer.eval_batch_size
    with gov.watch(loaded.model, "base_eval", probe=True), checkpoint.preserved_rng():
        # lm-eval reseeds every RNG: a cached base score must not change the run; no forward calls when cached
        base = base_metrics(run.raw, loaded, task, eval_bs, seed) if main else {}
        kept = retention.measure_base(run, loaded, eval_bs, seed) if main else retention.Baseline()  # task.retention
    total_params = sum(p.numel() for p in loaded.model.parameters())
    ctx = AdapterContext(total_steps=run.trainer.steps, seed=seed)
    with timer.phase("adapt", device):
        adapted = apply_adapter(loaded.model, fitted, run.scheduler, ctx)
        adapted.model.to(device)
    record.update_adapter(get_adapter(str(fitted.name)).describe(run.scheduler.name, fitted))  # type: ignore[attr-defined]
    record.set_model(ModelInfo(loaded.name, total_params, adapted.trainable_param_count()))
    meter = make_meter(run.energy if main else {"name": "none"}, run_dir)
    warmup_s = measure.warm_up(device)  # one-time process costs stay out of the metered phases
    readings: dict[str, EnergyReading] = {}
    # CHECKPOINTS: resume from / save to <run_dir>/checkpoints; time and energy are summed over the run's attempts
    ckpt = checkpoint.for_run(run, run_dir, record["run_id"], warn=lambda m: _warn(record, m), job_started=start)
    gov.new_phase("train", probe=True)
    with checkpoint.train_phase(ckpt, meter, timer, device, record) as phase:
        stats = train(
            adapted,
            task,
            loaded.tokenizer,
            run.trainer,
            device,
            log_fn=tracker.log,
            seed=seed,
            progress=progress,
            threads=gov,
            checkpoints=ckpt,
        )
    readings["train"] = phase.reading
    totals = phase.totals  # None without checkpoints (data parallel)
    if not main:  # rank 0 evaluates and writes; the others are done once training is
        record.set_metrics({"loss": stats.final_loss})
        return
    with meter.measure("eval") as box, timer.phase("eval", device):
        adapted.prepare_for_inference()
        with gov.watch(adapted.model, "eval"):
            metrics = evaluate(adapted.model, loaded.tokenizer, task, batch_size=eval_bs, seed=seed)
    readings["eval"] = box["reading"]
    record.set_metrics({**metrics, **base, "loss": stats.final_loss})
    retention_s = None
    if kept.configs:  # the same tasks on the fine-tuned model (merged, as evaluated): metrics.retention
        summary, retention_s = retention.measure_after(kept, adapted.model, loaded.tokenizer, eval_bs, seed)
        record.set_metrics({"retention": summary})
    record.update_adapter({"ranks": adapted.ranks(), **adapted.summary(), **budget})
    if budget and not budget.get("budget_applied"):
        _warn(
            record,
            f"adapter.param_budget={budget['param_budget']} does not apply to adapter="
            f"{fitted.name}: it trained {record['model']['trainable_params']} parameters",  # type: ignore[attr-defined]
        )
    record.set_time(
        TimeInfo(  # with checkpoints: train_s, train_cpu_s and total_s summed over the run's attempts
            train_s=totals["train_s"] if totals else timer.phases["train"],
            # every thread of this process (compute + meter + W&B threads)
            train_cpu_s=totals["train_cpu_s"] if totals else timer.cpu["train"],
            train_helper_cpu_s=timer.helper_cpu["train"],  # child processes (W&B's service)
            eval_s=timer.phases["eval"],
            load_s=timer.phases["load"],
            total_s=time.perf_counter() - start + (totals["prior_job_s"] if totals else 0.0),
            step_ms_median=stats.step_ms_median,
            tokens_per_s=stats.tokens_per_s,
            steps=stats.steps,
            train_tokens=stats.tokens,
            retention_s=retention_s,
            retention_base_s=kept.seconds if kept.configs else None,
        )
    )
    energy = combine(readings, stats.tokens, metrics.get("n"), task.train_unit)
    energy["process_warmup_s"] = warmup_s
    world = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
    if world > 1:
        energy["ddp_world_size"] = world
        energy["note"] = "rank 0's process only; the other ranks ran alike (total ≈ × ddp_world_size)"
    record.set_energy(energy)
    record.set_memory(memory.read())
    record.add_section("train", {"loss_curve": stats.loss_curve})
    try:
        for path in adapted.write_artifacts(run_dir):
            log.info("wrote %s", path)
    except OSError as err:  # the result is worth more than its side files: keep it, say what is missing
        remove_partial_files(run_dir)
        _warn(record, f"could not write the method's artifacts ({err.strerror or err})")
    flag_collapse(record, run.raw)
    _save_weights(adapted, loaded, run, run_dir, tracker, record)  # issue 24: <run>/adapter/ (loraven.artifacts)
    for name, frame in adapted.artifact_tables().items():
        tracker.log_table(name, frame)
    per_task = ("per_task", "base_per_task")  # as eval/<task>/<metric> (wandb_layout.per_task_metrics)
    tracker.log(
        flatten("eval", {k: v for k, v in record["metrics"].items() if k not in per_task})
        | per_task_metrics(record["metrics"].get("per_task"))
        | flatten("energy", {k: v for k, v in energy.items() if k != "phases"})
        | flatten("time", record["time"])
    )


def _save_weights(adapted, loaded: LoadedModel, run: RunConfig, run_dir: Path, tracker, record: Record) -> None:
    """The run's trained weights beside its record (:mod:`loraven.artifacts`); a failed save is a warning in the
    record, never a failed run: the scores stand without the weights."""
    from loraven.artifacts import save_run_artifacts

    try:
        artifacts = save_run_artifacts(adapted, loaded, run, run_dir, tracker, str(record["run_id"]))
    except Exception as err:  # noqa: BLE001 - a full disk or an export bug: the record says so, the scores stand
        why = getattr(err, "strerror", None) or f"{type(err).__name__}: {err}"
        _warn(record, f"could not save the trained weights ({why})")
        artifacts = {"adapter": {"saved": False, "reason": f"save failed: {why}"}}
    if artifacts:
        record.add_section("artifacts", artifacts)


def _warn(record: Record, message: str) -> None:
    """A warning that belongs to the record (``warnings`` in result.json) and to the log."""
    log.warning("run %s: %s", record["run_id"], message)
    record.warn(message)


def flag_collapse(record: Record, cfg: Mapping[str, Any]) -> None:
    """``metrics.at_chance``: accuracy within noise of the task's chance level (``metrics.chance``).

    A collapsed run (lr far too high: loss pinned at ln(V), guessing) still completes; this makes it visible.
    The margin is two standard errors of the accuracy (at least one point). Only computed when the task
    declares its chance level.
    """
    metrics = record["metrics"]
    chance, accuracy = metrics.get("chance"), metrics.get("accuracy")
    if not isinstance(chance, (int, float)) or not isinstance(accuracy, (int, float)):
        return
    margin = max(2.0 * float(metrics.get("accuracy_stderr") or 0.0), 0.01)
    metrics["at_chance"] = bool(accuracy <= chance + margin)
    if metrics["at_chance"]:
        _warn(
            record,
            f"accuracy {accuracy:.4g} is at chance ({chance:.4g}): the run may have collapsed "
            f"(trainer.lr={cfg['trainer'].get('lr')}, final loss {metrics.get('loss')})",
        )


BASE_CACHE_SCHEMA = 2


def base_metrics(cfg: Mapping[str, Any], loaded: LoadedModel, task, eval_bs: int, seed: int) -> dict[str, Any]:
    """Accuracy of the untrained model, measured once per (model, task, split, limit) and cached.

    The cache entry carries its key, a schema number and a checksum of its metrics; one that fails any of them
    (truncated, edited, another format) is measured again, with a warning, never trusted.
    """
    key = run_id_for(
        {"model": cfg["model"], "task": cfg["task"], "seed": 0, "trainer": {"eval": eval_bs}, "job": task.fingerprint}
    )
    path = cache_dir() / "base_metrics" / f"{key}.json"
    cached = _read_base_cache(path, key)
    if cached is not None:
        return _base_fields(cached)
    metrics = evaluate(loaded.model, loaded.tokenizer, task, batch_size=eval_bs, seed=seed)
    entry = {"schema": BASE_CACHE_SCHEMA, "key": key, "metrics": metrics, "sha256": _digest(metrics)}
    atomic_write_text(path, json.dumps(entry, default=str))
    return _base_fields(metrics)


def _digest(metrics: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(metrics, sort_keys=True, default=str).encode()).hexdigest()


def _read_base_cache(path: Path, key: str) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        entry = json.loads(path.read_text())
        ok = (
            isinstance(entry, dict)
            and entry.get("schema") == BASE_CACHE_SCHEMA
            and entry.get("key") == key
            and isinstance(entry.get("metrics"), dict)
            and entry.get("sha256") == _digest(entry["metrics"])
        )
        accuracy = entry["metrics"].get("accuracy") if ok else None
        if ok and accuracy is not None and not (isinstance(accuracy, (int, float)) and 0.0 <= accuracy <= 1.0):
            ok = False
    except (OSError, ValueError, KeyError, TypeError):
        ok = False
    if not ok:
        log.warning("base-score cache %s fails its check (schema, key or checksum); measuring again", path)
        return None
    return entry["metrics"]


def _base_fields(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The untrained model's score with its stderr and n, so a gain over base gets an interval too."""
    return {
        "base_accuracy": metrics["accuracy"],
        "base_accuracy_stderr": metrics.get("accuracy_stderr"),
        "base_n": metrics.get("n"),
        "base_mse": metrics.get("mse"),
        "base_scores": metrics.get("scores"),
        **({"base_per_task": metrics["per_task"]} if metrics.get("per_task") else {}),
    }


__all__ = ["IncompatibleCombination", "Interrupted", "new_record", "run_job"]
