"""Mid-run checkpoints: a run that is killed, preempted or timed out resumes where it stopped, bit for bit.

What a checkpoint holds (``<run folder>/checkpoints/step-000000123/``): the model's trainable parameters and
buffers, the optimizer and lr-scheduler states, the RNG states (torch CPU and CUDA, python ``random``, numpy), the
data position (:class:`~loraven.tasks.batching.EpochBatches`, or the batch count for a task's own iterator, which
is then replayed), the loop's accumulators (loss curve, step times, tokens, time so far, first non-finite step)
and the method's own state (:meth:`AdaptedModel.state_dict_extra`: LoRAven's ranks, parked columns, scheduler,
budget, events, scorers, trace). On CPU in fp32 a resumed run ends with the uninterrupted run's exact numbers.

When: every ``trainer.checkpoint_every`` steps and after the last step (when that is > 0; a periodic save waits
while the last one cost more than ``trainer.checkpoint_max_overhead`` of the training time since it, so a big
state on fast steps costs at most that share), and at the first step boundary after a SIGTERM, SIGUSR1 or SIGUSR2
(a preemption, a coming time limit, ``scancel``, ``scontrol requeue``): the signal handler only sets a flag — a
handler runs between bytecodes, possibly inside the optimizer step — and the loop saves after the step and stops
with :class:`Preempted`. The job records the attempt (``failed``, with a reason that says it resumes) and hands
the signal on (:func:`loraven.job._hand_over`).

How: the state file is written to a temp folder with ``torch.save``, fsynced and hashed; its manifest (schema,
run_id, step, sha256, size) is written last, and the folder is renamed into place. On start the newest
checkpoint whose manifest, size and checksum all agree is loaded with ``torch.load(weights_only=True)``; one that
fails any check is skipped with a warning (in the record too), and the next older one is tried; the newest
``trainer.checkpoint_keep`` are kept. A completed run deletes them unless ``trainer.checkpoint_keep_finished``.

Attempts: ``checkpoints/attempts.json`` lists every training attempt of the run (started at which step, ended how
and where, its train-phase time and energy reading). The record sums time and energy over attempts and says how
many there were (top-level ``attempts``; details in the ``checkpoint`` section). An attempt killed without warning
(SIGKILL, a node failure) counts with its time up to its last save and no energy reading: the record then says
its energy covers fewer attempts than there were.

Why our own code: torch's distributed checkpoint (DCP) saves state dicts but leaves the loop, RNG, data position,
attempt bookkeeping and the signal protocol to the caller, and ``accelerate``'s ``save_state`` assumes its own
dataloaders and prepared objects, which the one training loop does not use.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import random
import re
import shutil
import signal
import socket
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from loraven.meters.base import EVIDENCE, EnergyReading
from loraven.record import Record, now_iso

log = logging.getLogger("loraven.checkpoint")

SCHEMA = 1
DIR_NAME = "checkpoints"
STATE_FILE = "state.pt"
MANIFEST_FILE = "manifest.json"
LEDGER_FILE = "attempts.json"
SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)  # what Slurm sends before it stops a job
_NAME = re.compile(r"^step-(\d{9})$")


class CheckpointRejected(ValueError):
    """A checkpoint that fails a check (manifest, size, checksum, format, or it does not fit this run)."""


class Preempted(BaseException):  # noqa: N818 - an outcome, like KeyboardInterrupt, not an error
    """Training stopped at a step boundary after a signal, its state saved; the job records it and hands the
    signal on. A BaseException so that no ``except Exception`` between the loop and the job swallows it."""

    def __init__(self, step: int, signum: int, signals: DeferredSignals) -> None:
        self.step, self.signum, self.signals = int(step), int(signum), signals
        self.previous = signals.previous.get(int(signum))  # the handler the signal is handed on to
        super().__init__(self.reason)

    @property
    def reason(self) -> str:
        name = signal.Signals(self.signum).name
        return (
            f"interrupted ({name}) at step {self.step}: checkpoint saved; the run resumes from it"
            " when requeued or rerun"
        )


# --------------------------------------------------------------------------- files


def checkpoint_dir(run_dir: Path) -> Path:
    return Path(run_dir) / DIR_NAME


def list_checkpoints(root: Path) -> list[tuple[int, Path]]:
    """(step, folder) of every finished-looking checkpoint folder, newest first (temp folders are not listed)."""
    if not root.is_dir():
        return []
    found = [(int(m[1]), p) for p in root.iterdir() if p.is_dir() and (m := _NAME.match(p.name))]
    return sorted(found, reverse=True)


def _sha256(path: Path) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 22):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_checkpoint(root: Path, step: int, state: Mapping[str, Any], meta: Mapping[str, Any]) -> Path:
    """Write ``state`` as checkpoint ``step`` under ``root``, all or nothing: temp folder, state file fsynced and
    hashed, manifest last, rename. A failure leaves no folder that :func:`list_checkpoints` would show."""
    final = root / f"step-{int(step):09d}"
    tmp = root / f".{final.name}.tmp-{os.getpid()}"
    root.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        with (tmp / STATE_FILE).open("wb") as fh:
            torch.save(dict(state), fh)
            fh.flush()
            os.fsync(fh.fileno())
        digest, size = _sha256(tmp / STATE_FILE)
        manifest = {"schema": SCHEMA, "step": int(step), "sha256": digest, "bytes": size, "created_at": now_iso()}
        manifest.update(meta)
        with (tmp / MANIFEST_FILE).open("w") as fh:
            json.dump(manifest, fh, indent=1, default=str)
            fh.flush()
            os.fsync(fh.fileno())
        if final.exists():  # a rejected checkpoint of the same step
            shutil.rmtree(final)
        os.rename(tmp, final)
        _fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def verify(folder: Path, run_id: str) -> dict[str, Any]:
    """The checkpoint's manifest if every check passes, else :class:`CheckpointRejected` naming the failed one."""
    try:
        manifest = json.loads((folder / MANIFEST_FILE).read_text())
    except FileNotFoundError as err:
        raise CheckpointRejected("no manifest (a save that did not finish)") from err
    except (OSError, ValueError) as err:
        raise CheckpointRejected(f"unreadable manifest ({err})") from err
    m = _NAME.match(folder.name)
    checks = [
        (isinstance(manifest, dict), "manifest is not an object"),
        (manifest.get("schema") == SCHEMA, f"schema {manifest.get('schema')!r}, expected {SCHEMA}"),
        (manifest.get("run_id") == run_id, f"written by run {manifest.get('run_id')!r}, not {run_id}"),
        (m is not None and manifest.get("step") == int(m[1]), f"step {manifest.get('step')!r} != its folder's"),
    ]
    for ok, why in checks:
        if not ok:
            raise CheckpointRejected(why)
    state = folder / STATE_FILE
    if not state.is_file():
        raise CheckpointRejected(f"{STATE_FILE} is missing")
    digest, size = _sha256(state)
    if size != manifest.get("bytes"):
        raise CheckpointRejected(f"{STATE_FILE} has {size} bytes, its manifest says {manifest.get('bytes')}")
    if digest != manifest.get("sha256"):
        raise CheckpointRejected(f"{STATE_FILE} fails its sha256 checksum")
    return manifest


def load_state(folder: Path) -> dict[str, Any]:
    """The state of a verified checkpoint, on the CPU; only tensors and plain containers are unpickled."""
    try:
        return torch.load(folder / STATE_FILE, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable state is a rejected checkpoint
        raise CheckpointRejected(f"cannot load {STATE_FILE} ({type(err).__name__}: {err})") from err


def prune(root: Path, keep: int) -> None:
    """Delete all but the newest ``keep`` checkpoints, and temp folders this process left behind."""
    for _, folder in list_checkpoints(root)[keep:]:
        shutil.rmtree(folder, ignore_errors=True)


def remove_all(run_dir: Path) -> None:
    shutil.rmtree(checkpoint_dir(run_dir), ignore_errors=True)


# --------------------------------------------------------------------------- RNG


def rng_state() -> dict[str, Any]:
    """Every RNG a training step may draw from, as tensors and plain values (``weights_only`` loadable)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state(legacy=True)  # type: ignore[misc]
    version, internal, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": [version, list(internal), gauss_next],
        "numpy": [kind, torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos), int(has_gauss), float(gauss)],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@contextlib.contextmanager
def preserved_rng() -> Iterator[None]:
    """Leave every RNG as it was: lm-eval's ``simple_evaluate`` reseeds torch, numpy and ``random`` globally, so
    without this a run's adapter initialisation depended on whether the base score was cached."""
    saved = rng_state()
    try:
        yield
    finally:
        set_rng_state(saved)


# --------------------------------------------------------------------------- signals


class DeferredSignals:
    """While training: SIGTERM/SIGUSR1/SIGUSR2 only set a flag, read at step boundaries.

    Outside the main thread (a threaded launcher backend) Python cannot install handlers: nothing is deferred
    and the periodic checkpoints are what a resume has."""

    def __init__(self) -> None:
        self.pending: int | None = None
        self.previous: dict[int, Any] = {}

    def install(self) -> None:
        for sig in SIGNALS:
            try:
                self.previous[int(sig)] = signal.signal(sig, self._note)
            except (ValueError, TypeError, OSError):
                continue

    def _note(self, signum: int, frame: Any) -> None:
        if self.pending is None:
            self.pending = int(signum)
            return
        previous = self.previous.get(int(signum))  # the same signal again: no waiting for the step boundary (a
        if int(signum) == self.pending and callable(previous):  # step that hangs, a second Ctrl-\ or kill)
            previous(signum, frame)

    def uninstall(self, redeliver: bool = True) -> None:
        """Put the previous handlers back; a signal that came after the last step boundary is sent again to them."""
        for sig, handler in self.previous.items():
            with contextlib.suppress(ValueError, TypeError, OSError):
                signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        self.previous = {}
        pending, self.pending = self.pending, None
        if pending is not None and redeliver:
            os.kill(os.getpid(), pending)


# --------------------------------------------------------------------------- energy over attempts


def sum_readings(readings: list[EnergyReading | None]) -> tuple[EnergyReading, int]:
    """(one reading for all attempts, how many attempts it covers): energies and durations add up; the label is
    the attempts' own (joined when they differ) and the evidence the weakest of theirs."""
    have = [r for r in readings if r is not None and r.kwh is not None]
    if not have:
        last = next((r for r in reversed(readings) if r is not None), None)
        return (last or EnergyReading("none")), 0
    last = have[-1]

    def total(key: str) -> float | None:
        values = [getattr(r, key) for r in have]
        return None if any(v is None for v in values) else float(sum(values))

    methods = list(dict.fromkeys(r.method for r in have))
    evidence = max((r.evidence for r in have), key=EVIDENCE.index)
    return (
        EnergyReading(
            "+".join(methods),
            evidence,
            kwh=total("kwh"),
            emissions_kg=total("emissions_kg"),
            cpu_kwh=total("cpu_kwh"),
            gpu_kwh=total("gpu_kwh"),
            ram_kwh=total("ram_kwh"),
            duration_s=total("duration_s"),
            detail=dict(last.detail),
            sampling_s=last.sampling_s,
        ),
        len(have),
    )


def _reading(data: Mapping[str, Any] | None) -> EnergyReading | None:
    if not data:
        return None
    known = set(EnergyReading.__dataclass_fields__)
    return EnergyReading(**{k: v for k, v in data.items() if k in known and k != "below_resolution"})


def _check_optimizer(saved: Mapping[str, Any], params: list[torch.Tensor]) -> None:
    """The saved AdamW state belongs to these parameters (count and shapes); torch checks only the count."""
    ids = [i for group in saved["param_groups"] for i in group["params"]]
    if len(ids) != len(params):
        raise CheckpointRejected(f"its optimizer holds {len(ids)} parameters, this run trains {len(params)}")
    for i, param in zip(ids, params, strict=True):
        moment = saved["state"].get(i, {}).get("exp_avg")
        if moment is not None and tuple(moment.shape) != tuple(param.shape):
            raise CheckpointRejected(f"its optimizer state has shape {tuple(moment.shape)} for a {tuple(param.shape)}")


# --------------------------------------------------------------------------- one attempt


@dataclass
class ResumePoint:
    """Where the loop starts: after ``step`` (0 = from the beginning), with its first non-finite step so far."""

    step: int = 0
    first_bad: int = -1


class CheckpointSession:
    """One training attempt of one run: finds and restores the newest valid checkpoint, saves new ones, keeps the
    attempts ledger. Created by the job (:func:`for_run`) and handed to :func:`loraven.train.train`."""

    def __init__(
        self,
        run_dir: Path,
        run_id: str,
        every: int | None,
        keep: int,
        keep_finished: bool,
        *,
        max_overhead: float | None = None,
        fresh: bool = False,
        warn: Callable[[str], None] | None = None,
        job_started: float | None = None,
    ) -> None:
        self.run_dir, self.root, self.run_id = Path(run_dir), checkpoint_dir(run_dir), run_id
        self.every, self.keep, self.keep_finished = int(every or 0), int(keep), bool(keep_finished)
        self.max_overhead = float(max_overhead or 0.0)
        self.postponed = 0  # periodic saves put off by max_overhead
        self._last_save_end: float | None = None
        self._last_save_cost = 0.0
        self.warn = warn or (lambda message: log.warning("%s", message))
        self.job_started = job_started if job_started is not None else time.perf_counter()
        if fresh:
            remove_all(self.run_dir)
        self.ledger: list[dict[str, Any]] = self._read_ledger()
        self.signals = DeferredSignals()
        self.rejected: list[str] = []
        self.resumed_from: int | None = None
        self.last_saved = -1
        self.saves, self.save_s = 0, 0.0
        self._entry: dict[str, Any] | None = None
        self._t0 = 0.0
        self._cpu0 = 0.0
        self._refs: tuple[Any, Any, Any, Any] | None = None
        self._touched = False
        self.step_done: int | None = None  # the last step this attempt finished

    # ------------------------------------------------------------------ ledger
    def _read_ledger(self) -> list[dict[str, Any]]:
        path = self.root / LEDGER_FILE
        if not path.is_file():
            return []
        try:
            entries = json.loads(path.read_text())
            if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
                raise ValueError("not a list of attempts")
        except (OSError, ValueError) as err:
            self.warn(f"attempts ledger {path} is unreadable ({err}); earlier attempts are not counted")
            return []
        for entry in entries:  # an attempt that never said how it ended was killed (its time: up to its last save)
            if entry.get("outcome") == "running":
                entry["outcome"] = "killed"
        return entries

    def _write_ledger(self) -> None:
        from loraven.track import atomic_write_text

        atomic_write_text(self.root / LEDGER_FILE, json.dumps(self.ledger, indent=1, default=str))

    # ------------------------------------------------------------------ restore (start of the training loop)
    def restore(self, adapted: Any, step_fn: Any, batches: Any, stats: Any) -> ResumePoint:
        """Begin this attempt (signals deferred from here on) and load the newest valid checkpoint into the loop's
        objects; every checkpoint that fails is named in a warning and the next older one is tried."""
        self._refs = (adapted, step_fn, batches, stats)
        self._t0, self._cpu0 = time.perf_counter(), time.process_time()
        point = ResumePoint()
        self._touched = False
        for step, folder in list_checkpoints(self.root):
            try:
                verify(folder, self.run_id)
                point = self._load(load_state(folder), adapted, step_fn, batches, stats)
                self.resumed_from = step
                break
            except CheckpointRejected as err:
                self._reject(folder, str(err))
            except (ValueError, KeyError, RuntimeError, TypeError, IndexError) as err:
                self._reject(folder, f"does not fit this run ({type(err).__name__}: {err})")
        else:
            if self._touched:  # a half-loaded state must not train on as if it were a fresh start
                raise RuntimeError(
                    f"no checkpoint under {self.root} could be restored (see the warnings); the run stops rather "
                    "than train from a half-restored state: delete that folder or set rerun=true"
                )
        self._entry = {
            "attempt": len(self.ledger) + 1,
            "outcome": "running",
            "started_at": now_iso(),
            "started_unix": time.time(),  # training (re)starts here: a requeue's lost time ends here
            "ended_unix": None,
            "start_step": point.step,
            "end_step": point.step,
            "train_s": 0.0,
            "train_cpu_s": 0.0,
            "job_s": None,
            "saves": 0,
            "save_s": 0.0,
            "energy": None,
            "reason": None,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
            "slurm_restart_count": int(os.environ.get("SLURM_RESTART_COUNT") or 0),
        }
        self.ledger.append(self._entry)
        self._write_ledger()
        self.signals.install()
        if self.resumed_from is not None:
            log.info("resuming run %s at step %d (%s)", self.run_id, point.step, self.root)
        return point

    def _reject(self, folder: Path, why: str) -> None:
        message = f"checkpoint {folder} ignored: {why}"
        self.rejected.append(message)
        self.warn(message)

    def _load(self, state: Mapping[str, Any], adapted: Any, step_fn: Any, batches: Any, stats: Any) -> ResumePoint:
        model = adapted.model
        params = {n: p for n, p in model.named_parameters() if p.requires_grad}
        buffers = dict(model.named_buffers())
        saved_p, saved_b = state["model"]["params"], state["model"]["buffers"]
        for kind, live, saved in (("trainable parameters", params, saved_p), ("buffers", buffers, saved_b)):
            if set(live) != set(saved):
                diff = sorted(set(live) ^ set(saved))
                raise CheckpointRejected(f"its {kind} are not this model's ({len(diff)} differ, e.g. {diff[:3]})")
            for name, tensor in saved.items():
                if tuple(tensor.shape) != tuple(live[name].shape) or tensor.dtype != live[name].dtype:
                    raise CheckpointRejected(f"{name}: {tuple(tensor.shape)} {tensor.dtype} in the checkpoint")
        _check_optimizer(state["optimizer"], step_fn.params)
        data = state["data"]
        if data is not None:
            if not hasattr(batches, "load_state_dict"):
                raise CheckpointRejected("it saved a data position this task's batch iterator cannot restore")
            mine = (getattr(batches, "rows", None), getattr(batches, "batch_size", None))
            if (int(data["rows"]), int(data["batch_size"])) != mine:
                raise CheckpointRejected(
                    f"its data position ({data['rows']} rows, batch {data['batch_size']}) is not this task's {mine}"
                )
        self._touched = True  # from here on the run's objects change: a failure must not let it start fresh
        adapted.load_state_extra(state["adapter"])
        with torch.no_grad():
            for name, tensor in saved_p.items():
                params[name].copy_(tensor)
            for name, tensor in saved_b.items():
                buffers[name].copy_(tensor)
        step_fn.optimizer.load_state_dict(state["optimizer"])
        step_fn.scheduler.load_state_dict(state["lr_scheduler"])
        loop = state["loop"]
        if data is not None:
            batches.load_state_dict(data)
        else:  # a task's own generator: replay its batches (deterministic, costs one pass of batching)
            for _ in range(int(loop["batches_taken"])):
                next(batches)
        stats.loss_curve = [(int(s), float(v)) for s, v in loop["loss_curve"]]
        stats.step_ms = [float(v) for v in loop["step_ms"]]
        stats.tokens = int(loop["tokens"])
        stats.train_s = float(loop["train_s"])
        set_rng_state(state["rng"])  # last: nothing above may draw from an RNG after it
        return ResumePoint(int(state["step"]), int(loop["first_bad"]))

    # ------------------------------------------------------------------ save (end of each step)
    def after_step(self, step: int, total: int, loop: Callable[[], dict[str, Any]]) -> None:
        """At the boundary after ``step``: save when it is a checkpoint step, the last step, or a signal came; after
        a signal, stop with :class:`Preempted`."""
        self.step_done = int(step)
        signum = self.signals.pending
        due = self.every > 0 and (step % self.every == 0 or step == total)
        if due and step != total and signum is None and self._too_soon():
            self.postponed += 1
            due = False
        if (due or signum is not None) and self.last_saved != step:
            self.save(step, loop())
        if signum is not None:  # handlers stay deferred until the job has recorded the attempt (job._hand_over)
            self.signals.pending = None
            raise Preempted(step, signum, self.signals)

    def _too_soon(self) -> bool:
        """``max_overhead``: the last save cost more than that share of the training time since it ended."""
        if not self.max_overhead or self._last_save_end is None:
            return False
        return self._last_save_cost > self.max_overhead * (time.perf_counter() - self._last_save_end)

    def save(self, step: int, loop: Mapping[str, Any]) -> Path:
        adapted, step_fn, batches, _ = self._refs  # type: ignore[misc]
        start = time.perf_counter()
        model = adapted.model
        state = {
            "step": int(step),
            "model": {
                "params": {n: p.detach() for n, p in model.named_parameters() if p.requires_grad},
                "buffers": {n: b.detach() for n, b in model.named_buffers()},
            },
            "optimizer": step_fn.optimizer.state_dict(),
            "lr_scheduler": step_fn.scheduler.state_dict(),
            "adapter": adapted.state_dict_extra(),
            "data": batches.state_dict() if hasattr(batches, "state_dict") else None,
            "rng": rng_state(),
            "loop": {**loop, "batches_taken": int(step)},
        }
        attempt = self._entry["attempt"] if self._entry else None
        meta = {"run_id": self.run_id, "attempt": attempt, "torch": torch.__version__}
        folder = write_checkpoint(self.root, step, state, meta)
        prune(self.root, self.keep)
        self._last_save_end = time.perf_counter()
        spent = self._last_save_end - start
        self._last_save_cost = spent
        self.last_saved, self.saves, self.save_s = int(step), self.saves + 1, self.save_s + spent
        if self._entry is not None:
            self._entry.update(
                end_step=int(step),
                train_s=time.perf_counter() - self._t0,
                train_cpu_s=time.process_time() - self._cpu0,
                job_s=time.perf_counter() - self.job_started,
                saves=self.saves,
                save_s=self.save_s,
                ended_unix=time.time(),  # of a killed attempt: its last save
            )
            self._write_ledger()
        log.debug("checkpoint %s (%.2f s)", folder, spent)
        return folder

    # ------------------------------------------------------------------ end of the attempt
    def end_attempt(
        self,
        outcome: str,
        train_s: float | None,
        train_cpu_s: float | None,
        reading: EnergyReading | None,
        reason: str | None = None,
    ) -> None:
        """The attempt's training phase is over (completed, interrupted, failed): the ledger gets its time and
        energy, and signals go back to their handlers — except after :class:`Preempted`, whose handler the job
        restores once the attempt is recorded."""
        if outcome != "preempted":
            self.signals.uninstall(redeliver=outcome == "completed")
        if self._entry is None:
            return
        self._entry.update(
            outcome=outcome,
            train_s=train_s if train_s is not None else self._entry["train_s"],
            train_cpu_s=train_cpu_s if train_cpu_s is not None else self._entry["train_cpu_s"],
            job_s=time.perf_counter() - self.job_started,
            ended_unix=time.time(),
            energy=None if reading is None else reading.as_dict(),
            reason=None if reason is None else reason[:300],
        )
        if self.step_done is not None:
            self._entry["end_step"] = self.step_done
        with contextlib.suppress(OSError):
            self._write_ledger()

    # ------------------------------------------------------------------ what the record says
    @property
    def attempts(self) -> int:
        return max(len(self.ledger), 1)

    def totals(self) -> dict[str, Any]:
        """Time and energy summed over every attempt in the ledger (this one included, once ended)."""
        reading, metered = sum_readings([_reading(e.get("energy")) for e in self.ledger])
        return {
            "train_s": sum(float(e.get("train_s") or 0.0) for e in self.ledger),
            "train_cpu_s": sum(float(e.get("train_cpu_s") or 0.0) for e in self.ledger),
            "prior_job_s": sum(float(e.get("job_s") or 0.0) for e in self.ledger[:-1]),
            "energy": reading,
            "energy_attempts": metered,
        }

    def describe(self, record: Record) -> None:
        """The record's top-level ``attempts`` and its ``checkpoint`` section."""
        record.data["attempts"] = self.attempts
        record.add_section("checkpoint", self.section())

    def section(self) -> dict[str, Any]:
        """The record's ``checkpoint`` section."""
        return {
            "every": self.every,
            "max_overhead": self.max_overhead,
            "postponed": self.postponed,
            "dir": str(self.root),
            "resumed_from_step": self.resumed_from,
            "saves": self.saves,
            "save_s": round(self.save_s, 4),
            "kept": self.keep_finished,
            "rejected": list(self.rejected),
            "attempts": [{k: v for k, v in e.items() if k != "energy"} | _energy_brief(e) for e in self.ledger],
        }


@dataclass
class TrainPhase:
    """The training phase as the record sees it: the energy reading and, with checkpoints, the sums over attempts."""

    reading: EnergyReading | None = None
    totals: dict[str, Any] | None = None


@contextlib.contextmanager
def train_phase(
    session: CheckpointSession | None, meter: Any, timer: Any, device: Any, record: Record
) -> Iterator[TrainPhase]:
    """Meter and time the training phase of this attempt; with a session, close the attempt's ledger entry however
    the phase ends and put the ``checkpoint`` section and ``attempts`` in the record (energy and time summed)."""
    phase, box = TrainPhase(), {}
    try:
        with meter.measure("train") as box, timer.phase("train", device):
            yield phase
    except BaseException as err:
        if session is not None:
            why = err.reason if isinstance(err, Preempted) else f"{type(err).__name__}: {err}"
            train_s, cpu_s = timer.phases.get("train"), timer.cpu.get("train")
            session.end_attempt(outcome_of(err), train_s, cpu_s, box.get("reading"), reason=why)
            session.describe(record)
        raise
    phase.reading = box["reading"]
    if session is None:
        return
    session.end_attempt("completed", timer.phases["train"], timer.cpu["train"], phase.reading)
    phase.totals = session.totals()
    phase.reading = phase.totals["energy"]
    session.describe(record)
    n, covered = session.attempts, phase.totals["energy_attempts"]
    if box["reading"].kwh is not None and covered < n:
        session.warn(
            f"energy covers {covered} of {n} training attempts (the others were killed without warning: "
            "their energy was never read)"
        )


def outcome_of(err: BaseException) -> str:
    """How an attempt's training ended, for the ledger (``preempted``: saved after a signal)."""
    if isinstance(err, Preempted):
        return "preempted"
    return "interrupted" if isinstance(err, KeyboardInterrupt) else "failed"


def resume_note(run_dir: Path) -> str:
    """For a failed record: whether a later run resumes, and from which step."""
    newest = list_checkpoints(checkpoint_dir(run_dir))
    return f" (checkpoint at step {newest[0][0]} kept: a rerun resumes from it)" if newest else ""


def finish_run(run_dir: Path, keep_finished: bool) -> None:
    """After a completed record is on disk: its checkpoints (and attempts ledger) go unless they are to be kept."""
    if not keep_finished:
        remove_all(run_dir)


def _energy_brief(entry: Mapping[str, Any]) -> dict[str, Any]:
    energy = entry.get("energy") or {}
    return {"energy_kwh": energy.get("kwh"), "energy_method": energy.get("method")}


def for_run(
    run: Any, run_dir: Path, run_id: str, *, warn: Callable[[str], None], job_started: float
) -> CheckpointSession | None:
    """The job's checkpoint session, or None where checkpoints cannot be exact (data parallel: each rank has its
    own RNG and slice; not implemented). ``rerun=true`` starts from step 0 (its old checkpoints are deleted)
    except in a requeued Slurm job, which resumes whatever the config says (``SLURM_RESTART_COUNT`` ≥ 1)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        if torch.distributed.get_world_size() > 1:
            warn("mid-run checkpoints are off under data parallelism (not implemented): a rerun starts at step 0")
            return None
    requeued = int(os.environ.get("SLURM_RESTART_COUNT") or 0) > 0
    t = run.trainer
    return CheckpointSession(
        run_dir,
        run_id,
        t.checkpoint_every,
        t.checkpoint_keep,
        t.checkpoint_keep_finished,
        max_overhead=t.checkpoint_max_overhead,
        fresh=bool(run.top.rerun) and not requeued,
        warn=warn,
        job_started=job_started,
    )
