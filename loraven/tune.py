"""``python -m loraven.tune``: every method at its own best learning rate, then over seeds on the test split.

Hydra cannot chain two sweeps in one command, so this driver runs, per method, two ordinary ``run.py``
sweeps (each job a normal run in the results store, with resume and failure records):

1. the search: ``run.py -m experiment=tune adapter=M`` — Hydra's Optuna sweeper, ``--trials`` trials over
   ``trainer.lr`` (log scale; ``--sizes`` adds the method's own size key), each scored on the *validation*
   split; the study is ``<results>/tune/optuna.db``, so an interrupted search resumes;
2. the final runs: the best trial's config over ``--seeds`` on the *test* split (``tuning.role=tuned``), and
   the same seeds at the default config (``tuning.role=untuned``) for comparison, in ``<results>/tuned/``.

Both train on the same data (the training split minus the validation carve). ``<results>/tuned/summary.json``
holds each method's study, best trial and every trial; ``python -m analysis`` shows the "tuned" table.
Anything after ``--`` is passed to every run (``-- model=tiny_llama trainer=smoke``).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from loraven.adapters.base import available_adapters, get_adapter, registered_specs
from loraven.cli.hydra_glue import JOB_POINTER
from loraven.cli.lifecycle import PARENT_PID_ENV
from loraven.search import storage_url, study_summary

ROOT = Path(__file__).resolve().parents[1]
SEARCH_EXPERIMENT = "tune"
FINAL_EXPERIMENT = "tuned"
LR_SPACE = "tag(log, interval(1e-5, 1e-2))"
POLL_S = 5.0


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m loraven.tune",
        description=__doc__.split("\n\n")[0],
        epilog="Overrides for every run go after --, e.g. -- trainer.steps=30",
    )
    parser.add_argument(
        "--methods",
        default=None,
        help="adapters, comma-separated (default: every registered method but the dense baseline)",
    )
    parser.add_argument("--trials", type=int, default=6, help="Optuna trials per method (the study's total)")
    parser.add_argument("--seeds", default="0,1,2", help="seeds of the final runs (>= 3 for an interval)")
    parser.add_argument("--results", default="results", help="results store (default: results)")
    parser.add_argument(
        "--validation-fraction",
        type=float,
        default=0.1,
        help="share of the training data held out for the search (same data for the final runs)",
    )
    parser.add_argument("--lr-space", default=LR_SPACE, help=f"Optuna search space of trainer.lr ({LR_SPACE})")
    parser.add_argument("--sizes", action="store_true", help="also search each method's size key (r, r_max, ...)")
    parser.add_argument("--no-untuned", action="store_true", help="skip the default-config runs")
    args, extra = parser.parse_known_args(argv)
    args.overrides = [a for a in extra if a != "--"]
    if args.methods is None:
        args.methods = ",".join(spec.name for spec in registered_specs() if not spec.baseline)
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    bad = [m for m in args.methods if m not in available_adapters()]
    if bad:
        parser.error(f"--methods: unknown {', '.join(bad)}; valid: {', '.join(available_adapters())}")
    if args.trials < 1:
        parser.error(f"--trials {args.trials}: need at least 1")
    if not 0.0 < args.validation_fraction < 1.0:
        parser.error(f"--validation-fraction {args.validation_fraction}: must be in (0, 1)")
    return args


def say(message: str) -> None:
    print(f"[tune {time.strftime('%H:%M:%S')}] {message}", flush=True)


def run_sweep(args: list[str], log_path: Path, sweep_dir: Path, label: str) -> int:
    """``python run.py -m *args`` with its output in ``log_path``; one progress line per finished job (read from
    the job records the sweep leaves in ``sweep_dir``); returns the exit code."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    seen: set[Path] = set(sweep_dir.glob(f"*/{JOB_POINTER}"))
    with log_path.open("a") as log:  # a resumed tune appends to the same log
        log.write("$ python run.py -m " + " ".join(args) + "\n")
        log.flush()
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "run.py"), "-m", *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            # the sweep ends when this driver dies, however it dies (loraven.cli.lifecycle.watch_parent)
            env={**os.environ, "PYTHONUNBUFFERED": "1", PARENT_PID_ENV: str(os.getpid())},
        )
        try:
            while True:
                done = proc.poll() is not None
                for pointer in sorted(set(sweep_dir.glob(f"*/{JOB_POINTER}")) - seen):
                    seen.add(pointer)
                    say(f"{label}: job {pointer.parent.name} {_job_line(pointer)}")
                if done:
                    return int(proc.returncode)
                time.sleep(POLL_S)
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM: the sweep records its run as interrupted, then we stop
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=180)
            except subprocess.TimeoutExpired:
                proc.kill()
            raise


def _stamp() -> str:
    """A sweep folder name of its own: the time and this driver's pid (two drivers in one second, two folders)."""
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"


def _job_line(pointer: Path) -> str:
    try:
        job = json.loads(pointer.read_text())
    except (OSError, ValueError):
        return "(record unreadable)"
    s = job.get("summary") or {}
    acc = s.get("accuracy")
    score = f"{s.get('split')} acc {acc:.3f}" if isinstance(acc, (int, float)) else (job.get("reason") or "")[:80]
    lr = s.get("lr")
    return (
        f"{job.get('status')}: seed {s.get('seed')}, lr {lr:.3g}, {score}"
        if isinstance(lr, float)
        else f"{job.get('status')}: {score}"
    )


def search(method: str, args: argparse.Namespace, logs: Path) -> dict[str, Any]:
    """One method's Optuna search; returns :func:`study_summary` (best trial and every trial)."""
    space = [f"trainer.lr={args.lr_space}"]
    size = get_adapter(method).size_space  # the method's own size key, from the adapter registry
    if args.sizes and size is not None:
        space.append(f"{size[0]}={size[1]}")
    sweep_dir = Path(args.results) / SEARCH_EXPERIMENT / "hydra" / method / _stamp()
    sweep = [
        "experiment=tune",
        f"adapter={method}",
        f"results_dir={args.results}",
        f"hydra.sweeper.n_trials={args.trials}",
        f"task.validation_fraction={args.validation_fraction}",
        f"hydra.sweep.dir={sweep_dir}",
        *space,
        *args.overrides,
    ]
    start = time.perf_counter()
    code = run_sweep(sweep, logs / f"{method}-search.log", sweep_dir, f"{method} search")
    study = study_summary(storage_url(args.results, SEARCH_EXPERIMENT), f"{SEARCH_EXPERIMENT}-{method}")
    states = [t["state"] for t in study["trials"]]
    say(
        f"{method}: search done in {time.perf_counter() - start:.0f} s (exit {code}): "
        f"{states.count('COMPLETE')} complete, {states.count('FAIL')} failed; best validation "
        f"{study['best']['value']:.4f} at {_params(study['best']['params'])}"
    )
    return study


def finals(
    method: str, role: str, params: dict[str, Any], study: str | None, args: argparse.Namespace, logs: Path
) -> int:
    """The final runs of one method and role over the seeds, scored on the test split."""
    chosen = [f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}" for k, v in params.items()]
    searched = "[" + ",".join(params) + "]"
    sweep_dir = Path(args.results) / FINAL_EXPERIMENT / "hydra" / f"{method}-{role}" / _stamp()
    sweep = [
        f"adapter={method}",
        f"seed={args.seeds}",
        f"results_dir={args.results}",
        f"experiment_name={FINAL_EXPERIMENT}",
        "task.eval_split=test",
        f"task.validation_fraction={args.validation_fraction}",
        f"tuning.role={role}",
        f"tuning.study={study or 'null'}",
        f"tuning.searched={searched if params else '[]'}",
        f"hydra.sweep.dir={sweep_dir}",
        *chosen,
        *args.overrides,
    ]
    start = time.perf_counter()
    code = run_sweep(sweep, logs / f"{method}-{role}.log", sweep_dir, f"{method} {role}")
    say(f"{method}: {role} runs (seeds {args.seeds}) done in {time.perf_counter() - start:.0f} s (exit {code})")
    return code


def _params(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


class Stopped(KeyboardInterrupt):
    """SIGTERM to the driver, as an exception (so the running sweep is stopped and waited for first)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _sigterm(signum: int, frame: Any) -> None:
    raise Stopped(signum)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _sigterm)
    try:
        return _tune(args)
    except KeyboardInterrupt as err:
        signum = getattr(err, "signum", signal.SIGINT)
        name = signal.Signals(signum).name
        say(f"interrupted ({name}): the running sweep recorded its job as interrupted; run the same command to resume")
        return 128 + int(signum)  # 130 for SIGINT, 143 for SIGTERM, as shells report them


def _tune(args: argparse.Namespace) -> int:
    out = Path(args.results) / FINAL_EXPERIMENT
    logs = out / "logs"
    summary: dict[str, Any] = {
        "methods": {},
        "trials": args.trials,
        "seeds": args.seeds,
        "validation_fraction": args.validation_fraction,
        "overrides": args.overrides,
    }
    summary["methods"] = previous_methods(out / "summary.json")  # a resumed or partial tune keeps what it has
    say(
        f"methods {', '.join(args.methods)}: {args.trials} trial(s) each on the validation split, then seeds "
        f"{args.seeds} on the test split (logs: {logs}/)"
    )
    start = time.perf_counter()
    failed = 0
    for method in args.methods:
        say(f"{method}: searching {'lr and size' if args.sizes else 'lr'} ({args.trials} trials)")
        try:
            study = search(method, args, logs)
        except Exception as err:  # no completed trial, or the search could not start: say so, go on
            say(f"{method}: search gave no best trial: {err} (see {logs / f'{method}-search.log'})")
            summary["methods"][method] = {"error": str(err)}
            failed += 1
            continue
        summary["methods"][method] = study
        failed += finals(method, "tuned", study["best"]["params"], study["study_name"], args, logs) != 0
        if not args.no_untuned:
            failed += finals(method, "untuned", {}, None, args, logs) != 0
        _write(out / "summary.json", summary)
    summary["wall_s"] = time.perf_counter() - start
    _write(out / "summary.json", summary)
    say(
        f"done in {summary['wall_s'] / 60:.1f} min; {out / 'summary.json'}; tables: python -m analysis "
        f"--results {args.results} --out reports  (reports/tables/tuned.md)"
    )
    return 1 if failed else 0


def previous_methods(path: Path) -> dict[str, Any]:
    """The methods an earlier tune summarised; a summary that cannot be read (truncated, edited, another shape) is
    reported and redone, never a traceback (its searches resume from the study, its runs from the store)."""
    if not path.is_file():
        return {}
    try:
        methods = json.loads(path.read_text()).get("methods", {})
        if not isinstance(methods, dict) or not all(isinstance(v, dict) for v in methods.values()):
            raise ValueError("'methods' is not a mapping of method summaries")
    except (OSError, ValueError, AttributeError) as err:
        say(f"warning: {path} cannot be read ({type(err).__name__}: {err}); every method is summarised again")
        return {}
    return methods


def _write(path: Path, data: dict[str, Any]) -> None:
    from loraven.track import atomic_write_text

    atomic_write_text(path, json.dumps(data, indent=2, default=str))


if __name__ == "__main__":
    sys.exit(main())
