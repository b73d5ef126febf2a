"""The fault attack of issue 26, re-runnable: bad inputs and faults, as a hostile user would try them.

    python tests/e2e/fault_attack.py                 # everything (~15-30 min on a loaded 2-core CPU)
    python tests/e2e/fault_attack.py --only values   # one category: values, cli, secrets, state, faults
    python tests/e2e/fault_attack.py --json out.json # every case's outcome as well

Each case is run for real (``run.py`` in a subprocess, or the library in process for the config schemas) in a
fresh temp folder, and judged on what it left behind, never on what it says alone:

- **clear**: refused with one line (exit 2, or the code documented for the case) before anything started: no model
  loaded, no W&B run, no record or config.json written (``LORAVEN_TEST_EVENTS`` lists what did start);
- **survived**: no traceback, no hang, the documented exit code;
- **nothing lost**: every result that completed is on disk, and the last line says what was recorded;
- **no orphan**: no process of the run alive 10 s after it ended (SIGKILL included).

A column that does not apply to a case is not counted for it. The table printed at the end is what the report
quotes; ``tests/e2e/test_fault_attack.py`` runs a sample of it in CI.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from fault_cases import BAD_VALUES, CLASSIC  # noqa: E402

PY = sys.executable
FAST = [*CLASSIC, "trainer.steps=20"]
LONG = [*CLASSIC, "trainer.steps=1000000", "trainer.log_every=1000"]
SECRET = "SeCrEt-PlAnTeD-4242-xyz"  # planted through every route; must appear in no file
HF_LIKE = "hf_PlantedTokenAbCdEfGhIjKlMnOp1234"
ENV_SECRET = "EnvPlantedKey0123456789abcdef"


@dataclass
class Outcome:
    category: str
    case: str
    clear: bool | None = None
    survived: bool | None = None
    nothing_lost: bool | None = None
    no_orphan: bool | None = None
    note: str = ""

    @property
    def ok(self) -> bool:
        return all(v is not False for v in (self.clear, self.survived, self.nothing_lost, self.no_orphan))


@dataclass
class Run:
    code: int | None
    out: str
    err: str
    seconds: float
    events: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------------------------------ helpers


def env_for(tmp: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("HYDRA_FULL_ERROR", "LORAVEN_FAULT_INJECT")}
    env.update(
        LORAVEN_CACHE=str(tmp / "cache"),
        LORAVEN_TEST_EVENTS=str(tmp / "events.txt"),
        WANDB_MODE="offline",
        WANDB_SILENT="true",
        PYTHONUNBUFFERED="1",
        TOKENIZERS_PARALLELISM="false",
        OMP_NUM_THREADS="1",
        PYTHONPATH=os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]),
    )
    env.update(extra or {})
    return env


def cli(tmp: Path, args: list[str], extra_env: dict[str, str] | None = None, timeout: float = 600) -> Run:
    """``python run.py *args`` in ``tmp`` (Hydra's folders inside it), with its events."""
    hydra = [f"hydra.run.dir={tmp}/outputs", f"hydra.sweep.dir={tmp}/multirun"]
    hydra = [h for h in hydra if not any(a.startswith(h.split("=")[0] + "=") for a in args)]
    start = time.time()
    try:
        proc = subprocess.run(
            [PY, str(ROOT / "run.py"), *args, *hydra],
            cwd=tmp,
            env=env_for(tmp, extra_env),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        code, out, err = proc.returncode, proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as exc:
        code, out, err = None, str(exc.stdout or ""), str(exc.stderr or "") + "\n[timed out]"
    return Run(code, out, err, time.time() - start, events(tmp))


def popen(tmp: Path, args: list[str], extra_env: dict[str, str] | None = None, module: str | None = None):
    cmd = [PY, "-m", module, *args] if module else [PY, str(ROOT / "run.py"), *args]
    return subprocess.Popen(
        cmd,
        cwd=tmp,
        env=env_for(tmp, extra_env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: a Ctrl-C to it reaches it and its workers only
    )


def events(tmp: Path) -> list[str]:
    path = tmp / "events.txt"
    return [ln.split(" ", 1)[1] for ln in path.read_text().splitlines()] if path.is_file() else []


def error_lines(err: str) -> list[str]:
    """stderr without Python's warnings (third-party deprecations print two lines each)."""
    lines = [ln for ln in err.splitlines() if ln.strip()]
    out = []
    skip_next = False
    for ln in lines:
        if skip_next:
            skip_next = False
            continue
        if re.search(r"\b\w*Warning\b", ln) and ":" in ln:
            skip_next = ln.rstrip().endswith(":") or "warn(" not in ln
            continue
        if ln.strip().startswith(("warnings.warn", "warn(")):
            continue
        out.append(ln)
    return out


STARTS = ("model_load", "tracker_start", "record_write", "config_write")


def refused_cleanly(
    run: Run, tmp: Path, words: Iterable[str] = (), code: int = 2, allow: Iterable[str] = ()
) -> tuple[bool, bool, str]:
    """(clear, survived, note) for a case that must be refused before anything starts (``allow``: the milestones
    the case cannot avoid, e.g. a parameter budget is checked against the loaded model)."""
    lines = error_lines(run.err)
    started = [e for e in run.events if e.startswith(STARTS) and not e.startswith(tuple(allow))]
    wrote = [p for p in tmp.rglob("*") if p.name in ("result.json", "config.json") or p.suffix == ".wandb"]
    missing = [w for w in words if w not in run.err]
    survived = run.code == code and "Traceback" not in run.err
    clear = survived and len(lines) == 1 and lines[0].startswith("error:") and not started and not wrote and not missing
    note = (
        ""
        if clear
        else f"exit {run.code}; lines {len(lines)}; started {started}; wrote {len(wrote)}; missing {missing}"
    )
    return clear, survived, (note + " | " + " / ".join(lines[:3]))[:400] if not clear else ""


def descendants(pid: int) -> list[Any]:
    import psutil

    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def alive(procs: Iterable[Any]) -> list[str]:
    import psutil

    out = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(f"{p.pid} {' '.join(p.cmdline())[:80]}")
        except psutil.Error:
            continue
    return out


def wait_for(predicate: Callable[[], bool], proc: subprocess.Popen | None, timeout: float = 300) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        if proc is not None and proc.poll() is not None:
            return False
        time.sleep(0.2)
    return False


def records(root: Path) -> list[dict[str, Any]]:
    out = []
    for p in sorted(root.rglob("result.json")):
        with contextlib.suppress(OSError, ValueError):
            out.append(json.loads(p.read_text()))
    return out


def files_holding(root: Path, needles: Iterable[str]) -> list[str]:
    hits = []
    for p in root.rglob("*"):
        if p.is_file() and not p.is_symlink():
            try:
                blob = p.read_bytes()
            except OSError:
                continue
            hits += [f"{p.relative_to(root)} holds {n[:6]}..." for n in needles if n.encode() in blob]
    return hits


# ------------------------------------------------------------------------------------------------ values


def attack_values() -> list[Outcome]:
    """Every BAD_VALUES row through the one validator, in process (the CLI runs it the same way)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from loraven import CONF_DIR
    from loraven.errors import ConfigError
    from loraven.run_config import validate_run_config

    out = []
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        for group, overrides, words in BAD_VALUES:
            name = " ".join(o for o in overrides if o not in CLASSIC)
            try:
                cfg = OmegaConf.to_container(compose(config_name="config", overrides=overrides), resolve=True)
                validate_run_config(cfg)
                out.append(Outcome(f"bad value: {group}", name, clear=False, survived=True, note="accepted"))
            except ConfigError as err:
                text = str(err)
                ok = "\n" not in text and all(w in text for w in words)
                out.append(Outcome(f"bad value: {group}", name, clear=ok, survived=True, note="" if ok else text[:200]))
            except Exception as err:  # noqa: BLE001 - a crash is what the attack looks for
                out.append(Outcome(f"bad value: {group}", name, False, False, note=f"{type(err).__name__}: {err}"))
    return out


# ------------------------------------------------------------------------------------------------ CLI


def _cli_cases(tmp_root: Path) -> list[tuple[str, str, Callable[[Path], tuple[list[str], dict, list[str], int]]]]:
    """(category, name, setup(tmp) -> (args, env, words, expected exit))."""

    def plain(args: list[str], words: list[str] = (), env: dict | None = None, code: int = 2):
        return lambda tmp: (list(args), dict(env or {}), list(words), code)

    def broken_include(tmp: Path):
        inc = tmp / "tasks"
        inc.mkdir()
        (inc / "my_task.yaml").write_text("task: my_task\ndataset_path: json\n  bad: [\n")
        args = ["model=tiny_llama", "trainer=smoke", "task=lm_eval", "task.names=[my_task]", f"task.include_path={inc}"]
        return [*args, "energy=none", "tracking=none"], {}, ["my_task.yaml"], 2

    def wrong_columns(tmp: Path):
        data = tmp / "d.jsonl"
        data.write_text('{"x": 1}\n')
        args = ["model=tiny_llama", "trainer=smoke", "task=lm_eval", "task.names=[arc_easy]"]
        args += [f"task.data_files={{train: {data}, test: {data}}}", "energy=none", "tracking=none"]
        return args, {}, ["local files"], 2

    def unwritable_cache(tmp: Path):
        (tmp / "afile").write_text("x")
        return FAST, {"LORAVEN_CACHE": str(tmp / "afile" / "cache")}, ["LORAVEN_CACHE", "not writable"], 2

    def traversal_task(tmp: Path):
        data = tmp / "d.jsonl"
        data.write_text('{"question": "q", "choices": ["a", "b"], "label": 0}\n')
        args = ["model=tiny_llama", "trainer=smoke", "task=local_mc", "task.name=../../../escaped_task"]
        return [*args, f"task.train_file={data}", f"task.test_file={data}", "energy=none", "tracking=none"], {}, [], 2

    lm = ["model=tiny_llama", "trainer=smoke", "task.n_train=200", "task.n_test=20", "energy=none", "tracking=none"]
    lm_eval = ["model=tiny_llama", "trainer=smoke", "task=lm_eval", "energy=none", "tracking=none"]
    search = ["-m", "hydra/sweeper=optuna", "task.validation_fraction=0.1", *FAST, "hydra.sweeper.n_trials=2"]
    cases = [
        ("Hydra composition", "unknown group option", plain([*FAST, "adapter=loraa"], ["loraa", "lora_ar"])),
        ("Hydra composition", "unknown key without +", plain([*FAST, "nope=1"], ["nope"])),
        ("Hydra composition", "+ on an existing group", plain([*FAST, "+adapter=lora"], ["adapter"])),
        ("Hydra composition", "bad override grammar", plain([*FAST, "trainer.lr=0.1=2"], ["="])),
        ("Hydra composition", "unclosed list", plain([*FAST, "trainer.lr=[1,2"], ["[1,2"])),
        ("Hydra composition", "sweep syntax without -m", plain([*FAST, "seed=0,1"], ["--multirun"])),
        ("Hydra composition", "broken interpolation", plain([*FAST, "seed=${nope}"], ["nope"])),
        ("Hydra composition", "missing env interpolation", plain([*FAST, "seed=${oc.env:NO_SUCH_VAR_X}"], ["NO_SUCH"])),
        ("Hydra composition", "unknown launcher", plain([*FAST, "hydra/launcher=nope"], ["hydra/launcher"])),
        ("Hydra composition", "missing --config-dir", plain(["--config-dir", "/nope/dir", *FAST], ["/nope/dir"])),
        ("Hydra composition", "unknown --config-name", plain(["--config-name", "nope", *FAST], ["nope"])),
        ("Hydra composition", "unknown sweeper (-m)", plain(["-m", *FAST, "hydra/sweeper=nope"], ["hydra/sweeper"])),
        ("late check", "task.limit=0 (LM)", plain([*lm, "task.limit=0"], ["task.limit=0"])),
        ("late check", "max_train_docs=0", plain([*lm, "task.max_train_docs=0"], ["max_train_docs"])),
        ("late check", "validation_fraction=0.9999", plain([*FAST, "task.validation_fraction=0.9999"], ["0.9999"])),
        ("late check", "rerun=maybe", plain([*FAST, "rerun=maybe"], ["rerun"])),
        ("late check", "job=bogus", plain([*FAST, "job=bogus"], ["job"])),
        ("late check", "eval_batch_size=0", plain([*FAST, "trainer.eval_batch_size=0"], ["eval_batch_size"])),
        ("late check", "adapter.alpha=nan", plain([*FAST, "adapter.alpha=nan"], ["adapter.alpha"])),
        (
            "late check",
            "scheduler key (was after the model load)",
            plain([*FAST, "scheduler.score_ema=2"], ["score_ema"]),
        ),
        ("late check", "unwritable LORAVEN_CACHE", unwritable_cache),
        ("late check", "device=cuda on a CPU", plain([*FAST, "device=cuda"], ["cuda"])),
        ("late check", "broken YAML in an include path", broken_include),
        (
            "late check",
            "unknown lm-eval task",
            plain([*lm_eval, "task.names=[nonexistent_xyz]"], ["nonexistent_xyz"]),
        ),
        ("late check", "local data with wrong columns", wrong_columns),
        ("late check", "bad task.metric", plain([*lm, "task.metric=bogus"], ["task.metric='bogus'"])),
        (
            "late check",
            "param_budget beyond the largest",
            plain([*FAST, "adapter=lora", "adapter.param_budget=1000000000"], ["largest"]),
        ),
        (
            "late check",
            "results_dir is a file",
            lambda tmp: (
                ((tmp / "f").write_text("x") and None) or ([*FAST, f"results_dir={tmp}/f/r"], {}, ["not writable"], 2)
            ),
        ),
        ("paths", "experiment_name=../../../x", plain([*FAST, "experiment_name=../../../x"], ["experiment_name"])),
        ("paths", "task.name=../../../escaped_task", traversal_task),
        ("paths", "empty results_dir", plain([*FAST, "results_dir="], ["results_dir"])),
        ("paths", "hydra.job.name=../../x", plain([*FAST, "hydra.job.name=../../x"], ["hydra.job.name"])),
        (
            "sweep check",
            "one bad grid point stops the sweep",
            plain(["-m", *FAST, "trainer.lr=0.01,-1"], ["trainer.lr=-1", "job 1 of 2"]),
        ),
        (
            "sweep check",
            "bad value in a named sweep's grid",
            plain(["-m", *FAST, "seed=0,1", "trainer.steps=20,0"], ["trainer.steps=0"]),
        ),
        ("optuna", "reversed interval", plain([*search, "trainer.lr=interval(1e-2, 1e-5)"], ["trainer.lr"])),
        (
            "optuna",
            "negative log interval",
            plain([*search, "trainer.lr=tag(log, interval(-1, 1e-2))"], ["trainer.lr"]),
        ),
        ("optuna", "direction=sideways", plain([*search, "hydra.sweeper.direction=sideways"], ["sideways"])),
        ("optuna", "n_trials=0", plain([*search, "hydra.sweeper.n_trials=0"], ["n_trials"])),
        ("optuna", "bad storage", plain([*search, "hydra.sweeper.storage=nope://x"], ["storage"])),
        (
            "optuna",
            "no validation split",
            plain(["-m", "hydra/sweeper=optuna", *FAST, "trainer.lr=interval(1e-3, 1e-2)"], ["validation_fraction"]),
        ),
        ("optuna", "lr interval reaching 0", plain([*search, "trainer.lr=interval(0, 1e-2)"], ["trainer.lr=0"])),
    ]
    return cases


def attack_cli(workers: int = 3) -> list[Outcome]:
    tmp_root = Path(tempfile.mkdtemp(prefix="attack-cli-"))
    cases = _cli_cases(tmp_root)

    def one(i: int, category: str, name: str, setup) -> Outcome:
        tmp = tmp_root / f"c{i}"
        tmp.mkdir()
        args, env, words, code = setup(tmp)
        if not any(a.startswith("results_dir=") for a in args):
            args = [*args, f"results_dir={tmp}/r"]
        run = cli(tmp, args, env)
        allow = ("model_load",) if "param_budget" in name else ()  # the largest size is a property of the model
        clear, survived, note = refused_cleanly(run, tmp, words, code, allow)
        if name.startswith("task.name="):
            escaped = [p for p in Path("/").glob("escaped_task*")] + list(tmp.parent.glob("**/escaped_task.yaml"))
            clear = clear and not escaped
        return Outcome(category, name, clear=clear, survived=survived, note=note)

    with ThreadPoolExecutor(workers) as pool:
        futures = [pool.submit(one, i, *case) for i, case in enumerate(cases)]
        out = [f.result() for f in futures]
    shutil.rmtree(tmp_root, ignore_errors=True)
    return out


# ------------------------------------------------------------------------------------------------ secrets


def attack_secrets() -> list[Outcome]:
    """A credential planted through every route; each must be refused before Hydra writes, and found in no file."""
    tmp_root = Path(tempfile.mkdtemp(prefix="attack-secrets-"))
    conf = tmp_root / "confdir"
    (conf / "extra").mkdir(parents=True)
    (conf / "leaky.yaml").write_text(f"defaults:\n  - config\n  - _self_\ntracking:\n  api_key: {SECRET}\n")
    (conf / "extra" / "leak.yaml").write_text(f"# @package _global_\nsettings:\n  hfAccessToken: {SECRET}\n")
    (conf / "extra" / "env.yaml").write_text(f"# @package hydra.job.env_set\nWANDB_API_KEY: {SECRET}\n")
    routes = [
        ("command line key", [f"+tracking.api_key={SECRET}"]),
        ("camelCase key", [f"+hf.accessToken={SECRET}"]),
        ("nested dict", [f"+extra={{api_key: {SECRET}}}"]),
        ("list of dicts", [f"+extra=[{{token: {SECRET}}}]"]),
        ("hydra.job.env_set", [f"++hydra.job.env_set={{HF_TOKEN: {SECRET}}}"]),
        ("env_set key", [f"+hydra.job.env_set.WANDB_API_KEY={SECRET}"]),
        ("token-shaped value", [f"+note={HF_LIKE}"]),
        ("value of a credential env var", [f"+note={ENV_SECRET}"]),
        ("in a sweep", ["-m", f"+password={SECRET},x"]),
        ("--config-name YAML", ["--config-dir", str(conf), "--config-name", "leaky"]),
        ("--config-dir group YAML", ["--config-dir", str(conf), "+extra=leak"]),
        ("--config-dir env_set YAML", ["--config-dir", str(conf), "+extra=env"]),
    ]
    out = []

    def one(i: int, name: str, args: list[str]) -> Outcome:
        tmp = tmp_root / f"s{i}"
        tmp.mkdir()
        run = cli(tmp, [*args, *FAST, "tracking=wandb", f"results_dir={tmp}/r"], {"MY_SERVICE_TOKEN": ENV_SECRET})
        clear, survived, note = refused_cleanly(run, tmp, ["credential"])
        leaked = files_holding(tmp, [SECRET, HF_LIKE, ENV_SECRET]) + (
            ["stderr"] if any(s in run.err + run.out for s in (SECRET, HF_LIKE, ENV_SECRET)) else []
        )
        hydra = list(tmp.rglob(".hydra")) + list(tmp.rglob("multirun.yaml"))
        clear = clear and not leaked and not hydra
        return Outcome("credentials", name, clear=clear, survived=survived, note=note or "; ".join(leaked)[:300])

    with ThreadPoolExecutor(3) as pool:
        out = [f.result() for f in [pool.submit(one, i, n, a) for i, (n, a) in enumerate(routes)]]
    # and a real run with credentials in the environment only: they reach no file (W&B's binary included)
    tmp = tmp_root / "env-run"
    tmp.mkdir()
    secrets = {
        "WANDB_API_KEY": "wandbPlanted0123456789abcdef0123456789ab",
        "HF_TOKEN": "hf_PlantedEnvTokenXyz987654321",
    }
    run = cli(tmp, [*FAST, "tracking=wandb", f"results_dir={tmp}/r"], secrets)
    leaked = files_holding(tmp, secrets.values())
    wrote = bool(list(tmp.rglob("*.wandb"))) and bool(list(tmp.rglob("result.json")))
    ok = run.code == 0 and wrote and not leaked
    note = "" if ok else f"exit {run.code}; wandb+record {wrote}; {leaked}; {run.err[-300:]}"
    out.append(
        Outcome("credentials", "environment only (a real run)", survived=run.code == 0, nothing_lost=ok, note=note)
    )
    shutil.rmtree(tmp_root, ignore_errors=True)
    return out


# ------------------------------------------------------------------------------------------------ state


def attack_state() -> list[Outcome]:
    tmp_root = Path(tempfile.mkdtemp(prefix="attack-state-"))
    out: list[Outcome] = []
    out += _locks(tmp_root / "locks")
    out += _caches(tmp_root / "caches")
    out += _records(tmp_root / "records")
    out += _optuna_state(tmp_root / "optuna")
    out += _sweep_dirs(tmp_root / "dirs")
    out += _small(tmp_root / "small")
    shutil.rmtree(tmp_root, ignore_errors=True)
    return out


def _run_dir_of(tmp: Path, args: list[str]) -> Path:
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from loraven import CONF_DIR
    from loraven.track import run_id_for

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = OmegaConf.to_container(compose(config_name="config", overrides=args), resolve=True)
    return tmp / "r" / "default" / run_id_for(cfg)


def _locks(root: Path) -> list[Outcome]:
    root.mkdir(parents=True)
    sleeper = subprocess.Popen([PY, "-c", "import time; time.sleep(600)"])
    host = socket.gethostname()
    try:
        kinds = {
            "an unrelated live pid (legacy lock)": lambda p: p.write_text(f"{sleeper.pid} {host}\n"),
            "another host's pid": lambda p: p.write_text(json.dumps({"host": "node-99", "pid": 12, "started": 1.0})),
            "a directory": lambda p: p.mkdir(),
            "garbage": lambda p: p.write_text("\x00garbage"),
            "a live pid whose start time differs": lambda p: p.write_text(
                json.dumps({"host": host, "pid": sleeper.pid, "started": 1000.0})
            ),
            "a dead pid": lambda p: p.write_text(json.dumps({"host": host, "pid": _dead_pid(), "started": 1000.0})),
        }
        out = []
        for i, (name, plant) in enumerate(kinds.items()):
            tmp = root / f"l{i}"
            tmp.mkdir()
            args = [*FAST, f"results_dir={tmp}/r"]
            run_dir = _run_dir_of(tmp, args)
            run_dir.mkdir(parents=True)
            plant(run_dir / ".claim.lock")
            run = cli(tmp, args)
            taken_over = name in ("a live pid whose start time differs", "a dead pid")
            if taken_over:  # provably stale: taken over with a warning, and the run completes
                ok = run.code == 0 and [r["status"] for r in records(tmp / "r")] == ["completed"]
                ok = ok and "took over the lock" in run.out + run.err  # logged: Hydra logs to stdout
            else:  # cannot be verified: reported with the command that clears it, never "skipped"
                lines = error_lines(run.err)
                ok = run.code == 1 and "clear it with: rm" in run.err and "skipped" not in run.err
                ok = ok and (run_dir / ".claim.lock").exists() and not records(tmp / "r") and len(lines) == 1
            note = "" if ok else f"exit {run.code}: {run.err[-300:]}"
            out.append(
                Outcome("mistrusted state: lock", name, survived="Traceback" not in run.err, nothing_lost=ok, note=note)
            )
        return out
    finally:
        sleeper.kill()
        sleeper.wait()


def _dead_pid() -> int:
    proc = subprocess.Popen([PY, "-c", "pass"])
    proc.wait()
    return proc.pid


def _caches(root: Path) -> list[Outcome]:
    """A truncated cached task file and edited base-score caches are detected and rebuilt."""
    root.mkdir(parents=True)
    out = []
    lm = ["model=tiny_llama", "trainer=smoke", "task.n_train=200", "task.n_test=40", "energy=none", "tracking=none"]
    args = [*lm, f"results_dir={root}/r"]
    first = cli(root, args)
    rec = records(root / "r")
    n0 = rec[0]["metrics"]["n"] if rec else None
    tests = list((root / "cache" / "data").rglob("test.jsonl"))
    if first.code != 0 or not tests:
        return [Outcome("mistrusted state: cache", "first run", survived=False, note=first.err[-300:])]
    text = tests[0].read_text()
    tests[0].write_text("".join(text.splitlines(keepends=True)[:10]))  # truncated to 10 documents
    base_files = list((root / "cache" / "base_metrics").glob("*.json"))
    entry = json.loads(base_files[0].read_text())
    entry["metrics"]["accuracy"] = 0.99  # an edited value, checksum left as it was
    base_files[0].write_text(json.dumps(entry))
    again = cli(root, [*args, "rerun=true"])
    rec = records(root / "r")
    ok_task = again.code == 0 and rec and rec[0]["metrics"]["n"] == n0 and "fails its checksum" in again.out + again.err
    ok_base = rec and rec[0]["metrics"].get("base_accuracy") != 0.99 and "base-score cache" in again.out + again.err
    out.append(
        Outcome(
            "mistrusted state: cache",
            "truncated cached task file",
            survived=again.code == 0,
            nothing_lost=bool(ok_task),
            note="" if ok_task else f"n {rec[0]['metrics']['n'] if rec else None} vs {n0}; {again.err[-200:]}",
        )
    )
    out.append(
        Outcome(
            "mistrusted state: cache", "edited base-score cache", survived=again.code == 0, nothing_lost=bool(ok_base)
        )
    )
    base_files[0].write_text(json.dumps([1, 2, 3]))  # another shape
    third = cli(root, [*args, "rerun=true"])
    out.append(
        Outcome(
            "mistrusted state: cache",
            "base-score cache holding a list",
            survived=third.code == 0,
            nothing_lost=third.code == 0 and "base-score cache" in third.out + third.err,
        )
    )
    return out


def _records(root: Path) -> list[Outcome]:
    """Records that must not be trusted on resume nor crash the analysis."""
    root.mkdir(parents=True)
    args = [*FAST, f"results_dir={root}/r"]
    first = cli(root, args)
    path = next((root / "r").rglob("result.json"), None)
    if first.code != 0 or path is None:
        return [Outcome("mistrusted state: record", "first run", survived=False, note=first.err[-300:])]
    good = json.loads(path.read_text())
    broken = {
        "accuracy 7.5": {**good, "metrics": {**good["metrics"], "accuracy": 7.5}},
        '"bench": [1]': {**good, "bench": [1]},
        "bench a string": {**good, "bench": "x"},
        "metrics a list": {**good, "metrics": [1]},
        "truncated JSON": None,
        "a JSON list": [1, 2],
        "negative train time": {**good, "time": {**good["time"], "train_s": -3}},
    }
    out = []
    for name, content in broken.items():
        path.write_text(json.dumps(content) if content is not None else json.dumps(good)[:200])
        run = cli(root, args)
        redone = records(root / "r")
        ok = run.code == 0 and redone and redone[0]["status"] == "completed" and "will be redone" in run.out + run.err
        path.write_text(json.dumps(content) if content is not None else json.dumps(good)[:200])
        ana = subprocess.run(
            [
                PY,
                "-m",
                "analysis",
                "--results",
                str(root / "r"),
                "--out",
                str(root / f"rep-{len(out)}"),
                "--no-figures",
            ],
            cwd=ROOT,
            env=env_for(root),
            capture_output=True,
            text=True,
            timeout=600,
        )
        ok_ana = "Traceback" not in ana.stderr
        note = "" if ok and ok_ana else f"resume exit {run.code}; analysis exit {ana.returncode} {ana.stderr[-200:]}"
        out.append(
            Outcome(
                "mistrusted state: record",
                name,
                survived=ok_ana and "Traceback" not in run.err,
                nothing_lost=bool(ok),
                note=note,
            )
        )
    return out


def _optuna_state(root: Path) -> list[Outcome]:
    out = []
    root.mkdir(parents=True)
    search = [
        "-m",
        "hydra/sweeper=optuna",
        "task.validation_fraction=0.1",
        *FAST,
        "trainer.lr=tag(log, interval(1e-3, 1e-2))",
    ]
    # a garbage optuna.db: moved aside, the search runs
    tmp = root / "corrupt"
    (tmp / "r" / "default").mkdir(parents=True)
    (tmp / "r" / "default" / "optuna.db").write_bytes(b"this is not a sqlite database" * 100)
    run = cli(tmp, [*search, "hydra.sweeper.n_trials=1", f"results_dir={tmp}/r"])
    ok = (
        run.code == 0
        and list((tmp / "r" / "default").glob("optuna.db.corrupt-*"))
        and "not a readable Optuna study" in run.out + run.err
    )
    out.append(
        Outcome(
            "mistrusted state: optuna",
            "garbage optuna.db",
            survived="Traceback" not in run.err,
            nothing_lost=bool(ok),
            note="" if ok else run.err[-300:],
        )
    )
    # two searches on one study: the second is refused while the first runs
    tmp = root / "two"
    tmp.mkdir()
    first = popen(
        tmp,
        [
            *search,
            "trainer.steps=400000",
            "hydra.sweeper.n_trials=1",
            f"results_dir={tmp}/r",
            f"hydra.sweep.dir={tmp}/m1",
        ],
    )
    try:
        started = wait_for(lambda: bool(list((tmp / "r").rglob("config.json"))), first, 300)
        second = cli(tmp, [*search, "hydra.sweeper.n_trials=1", f"results_dir={tmp}/r", f"hydra.sweep.dir={tmp}/m2"])
        ok = (
            started
            and second.code == 2
            and "being searched by" in second.err
            and not list((tmp / "m2").glob("*/loraven_job.json"))
        )
        note = "" if ok else f"started {started}; second exit {second.code}: {second.err[-300:]}"
    finally:
        os.killpg(first.pid, signal.SIGTERM)
        first.communicate(timeout=300)
    study_ok = _study_matches_store(tmp / "r")
    out.append(
        Outcome(
            "mistrusted state: optuna",
            "two searches on one study",
            clear=ok,
            survived="Traceback" not in second.err,
            nothing_lost=study_ok,
            note=note,
        )
    )
    # a search in which no trial completes: a summary of why, non-zero, no traceback
    tmp = root / "none"
    tmp.mkdir()
    run = cli(tmp, [*search, "hydra.sweeper.n_trials=2", f"results_dir={tmp}/r"], {"LORAVEN_FAULT_INJECT": "error@2"})
    ok = (
        run.code == 1
        and "no trial completed" in run.err
        and "Traceback" not in run.err
        and "simulated failure" in run.err
    )
    out.append(
        Outcome("mistrusted state: optuna", "no trial completes", survived=ok, note="" if ok else run.err[-400:])
    )
    return out


def _study_matches_store(store: Path) -> bool:
    """COMPLETE trials in the study == completed validation runs in the store."""
    import optuna

    from loraven.search import storage_url

    try:
        study = optuna.load_study(study_name="default-loraven", storage=storage_url(store, "default"))
    except Exception:  # noqa: BLE001
        return not records(store)
    complete = sum(t.state.name == "COMPLETE" for t in study.trials)
    return complete == sum(r["status"] == "completed" for r in records(store))


SWEEP_DIR_PROBE = """
import sys, time
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
import loraven.cli.hydra_glue  # registers loraven's resolvers, as run.py does
from loraven import CONF_DIR
with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
    cfg = compose(config_name="config", return_hydra_config=True)
time.sleep(max(0.0, float(sys.argv[1]) - time.time()))
print(OmegaConf.select(cfg, "hydra.sweep.dir"))
"""


def _sweep_dirs(root: Path) -> list[Outcome]:
    """Two sweeps started in the same second get two sweep folders: the default ``hydra.sweep.dir`` resolved by two
    processes at one agreed second must differ; then two real sweeps on the defaults each find their own jobs."""
    root.mkdir(parents=True)
    target = float(int(time.time()) + 20)  # both resolve at the start of the same second
    probes = [
        subprocess.Popen(
            [PY, "-c", SWEEP_DIR_PROBE, str(target)], cwd=root, env=env_for(root), stdout=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    dirs = [p.communicate(timeout=300)[0].strip() for p in probes]
    same_second = len({d.rsplit("/", 1)[-1][:8] for d in dirs}) == 1
    ok_resolve = same_second and len(set(dirs)) == 2
    procs = []
    for i in range(2):
        cmd = [PY, str(ROOT / "run.py"), "-m", *FAST, "seed=0,1", f"results_dir={root}/r{i}", f"hydra.run.dir={root}/o"]
        procs.append(
            subprocess.Popen(
                cmd, cwd=root, env=env_for(root), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
        )
    codes = [p.communicate(timeout=900) and p.returncode for p in procs]
    found = [p for p in (root / "multirun").rglob("multirun.yaml")]
    pointers = {d.parent.name: len(list(d.parent.glob("*/loraven_job.json"))) for d in found}
    ok = ok_resolve and codes == [0, 0] and len(found) == 2 and all(n == 2 for n in pointers.values())
    note = "" if ok else f"resolved at one second: {dirs}; exits {codes}; jobs per sweep dir {pointers}"
    return [
        Outcome(
            "mistrusted state: sweep dir",
            "two sweeps in the same second",
            survived=codes == [0, 0],
            nothing_lost=ok,
            note=note,
        )
    ]


def _small(root: Path) -> list[Outcome]:
    """result.json readable by the group; a rerun's codecarbon rows apart; progress lines in a sweep's log."""
    root.mkdir(parents=True)
    out = []
    args = ["model=mlp_digits", "task=digits", "trainer=classic", "tracking=none", "energy=codecarbon"]
    args += ["trainer.steps=30", "trainer.log_every=10", f"results_dir={root}/r"]
    first = cli(root, ["-m", *args])
    again = cli(root, ["-m", *args, "rerun=true"])
    if first.code != 0 or again.code != 0:
        return [Outcome("small", "two runs", survived=False, note=(first.err + again.err)[-300:])]
    path = next((root / "r").rglob("result.json"), None)
    mode = oct(path.stat().st_mode & 0o777) if path else None
    out.append(Outcome("small", "result.json mode", nothing_lost=mode in ("0o644", "0o664"), note=f"mode {mode}"))
    csvs = sorted(p.name for p in (root / "r").rglob("emissions_train*.csv"))
    ok = csvs == ["emissions_train.attempt-2.csv", "emissions_train.csv"]
    out.append(Outcome("small", "a rerun's codecarbon rows apart", nothing_lost=ok, note="" if ok else str(csvs)))
    lines = [ln for ln in (first.out + first.err).splitlines() if "train: step" in ln]
    out.append(
        Outcome("small", "training progress in a sweep's log", nothing_lost=len(lines) >= 3, note=f"{len(lines)} lines")
    )
    return out


# ------------------------------------------------------------------------------------------------ faults


def attack_faults() -> list[Outcome]:
    tmp_root = Path(tempfile.mkdtemp(prefix="attack-faults-"))
    out: list[Outcome] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        out.append(_signal_during_write(tmp_root / f"single-{sig.name}", sig, sweep=False))
    out.append(_signal_during_write(tmp_root / "rerun", signal.SIGTERM, sweep=False, rerun=True))
    out.append(_signal_during_write(tmp_root / "basic-sweep", signal.SIGTERM, sweep=True))
    for sig in (signal.SIGINT, signal.SIGTERM):
        out.append(_joblib_interrupt(tmp_root / f"joblib-{sig.name}", sig))
    out.append(_sigkill(tmp_root / "kill-joblib", joblib=True))
    out.append(_sigkill(tmp_root / "kill-single", joblib=False))
    out.append(_tune_killed(tmp_root / "tune-kill", signal.SIGKILL))
    out.append(_tune_killed(tmp_root / "tune-term", signal.SIGTERM))
    shutil.rmtree(tmp_root, ignore_errors=True)
    return out


def _signal_during_write(tmp: Path, sig: signal.Signals, sweep: bool, rerun: bool = False) -> Outcome:
    """The signal arrives while a completed run's result.json is being written (an injected 4 s pause)."""
    tmp.mkdir(parents=True)
    name = (
        f"{sig.name} while a completed record is written"
        + (" (rerun=true)" if rerun else "")
        + (" (basic sweep, job 0)" if sweep else "")
    )
    args = [*FAST, "tracking=wandb", f"results_dir={tmp}/r"]
    if rerun:
        first = cli(tmp, args)
        if first.code != 0:
            return Outcome("faults", name, survived=False, note=first.err[-300:])
        before = records(tmp / "r")[0]["created_at"]
        time.sleep(1.1)
    cmd = ["-m", *args, "seed=0,1"] if sweep else [*args, *(["rerun=true"] if rerun else [])]
    cmd += [f"hydra.run.dir={tmp}/outputs", f"hydra.sweep.dir={tmp}/multirun"]
    proc = popen(tmp, cmd, {"LORAVEN_TEST_WRITE_PAUSE": "result.json:4"})
    paused = wait_for(lambda: bool(list((tmp / "r").rglob(".result.json.*.tmp"))), proc, 600)
    if not paused:
        proc.kill()
        return Outcome("faults", name, survived=False, note="the write never started: " + proc.communicate()[1][-300:])
    time.sleep(0.5)
    os.killpg(proc.pid, sig) if sig == signal.SIGINT else proc.send_signal(sig)
    try:
        _, err = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        proc.kill()
        return Outcome("faults", name, survived=False, note="hung")
    code = 143 if sig == signal.SIGTERM else 130
    rows = records(tmp / "r")
    last = err.strip().splitlines()[-1] if err.strip() else ""
    survived = proc.returncode == code and "Traceback" not in err
    completed = [r for r in rows if r["status"] == "completed"]
    lost = not completed or (rerun and completed[0]["created_at"] == before)
    truthful = ("recorded as completed" in last) if not sweep else ("1 completed" in last)
    ok = not lost and truthful and not list((tmp / "r").rglob("*.tmp"))
    return Outcome(
        "faults",
        name,
        survived=survived,
        nothing_lost=ok,
        note=""
        if ok and survived
        else f"exit {proc.returncode}; {[r['status'] for r in rows]}; last line: {last[:200]}",
    )


def _joblib_interrupt(tmp: Path, sig: signal.Signals) -> Outcome:
    """SIGINT (a Ctrl-C: the whole process group) or SIGTERM (the launcher only) to a 2-worker joblib sweep."""
    tmp.mkdir(parents=True)
    args = [
        "-m",
        "seed=0,1",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        *LONG,
        "tracking=wandb",
        f"results_dir={tmp}/r",
    ]
    proc = popen(tmp, args)
    started = wait_for(lambda: len(list((tmp / "r").glob("default/*/wandb/offline-run-*/*.wandb"))) >= 2, proc, 600)
    time.sleep(3)
    family = descendants(proc.pid)
    if sig == signal.SIGINT:
        os.killpg(proc.pid, signal.SIGINT)
    else:
        proc.send_signal(sig)
    try:
        _, err = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        proc.kill()
        return Outcome("faults", f"{sig.name} to a joblib sweep", survived=False, note="hung")
    time.sleep(10)
    left = alive(family)
    rows = records(tmp / "r")
    code = 143 if sig == signal.SIGTERM else 130
    last = err.strip().splitlines()[-1] if err.strip() else ""
    recorded = len(rows) == 2 and all(r["status"] == "failed" and "interrupted" in r["reason"] for r in rows)
    truthful = "2 failed (interrupted)" in last
    ours = [b for b in err.split("Traceback (most recent call last):")[1:] if "resource_tracker.py" not in b]
    survived = started and proc.returncode == code and not ours
    note = (
        ""
        if survived and recorded and truthful and not left
        else f"exit {proc.returncode}; {[r.get('reason') for r in rows]}; {last[:160]}; left {left}"
    )
    return Outcome(
        "faults",
        f"{sig.name} to a joblib sweep",
        survived=survived,
        nothing_lost=recorded and truthful,
        no_orphan=not left,
        note=note,
    )


def _sigkill(tmp: Path, joblib: bool) -> Outcome:
    tmp.mkdir(parents=True)
    launcher = ["-m", "seed=0,1", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"] if joblib else []
    proc = popen(tmp, [*launcher, *LONG, "tracking=wandb", f"results_dir={tmp}/r"])
    want = 2 if joblib else 1
    started = wait_for(lambda: len(list((tmp / "r").glob("default/*/wandb/offline-run-*/*.wandb"))) >= want, proc, 600)
    time.sleep(3)
    family = descendants(proc.pid)
    proc.kill()
    proc.wait()
    time.sleep(10)
    left = alive(family)
    name = "SIGKILL to a joblib sweep" if joblib else "SIGKILL to a run with W&B"
    return Outcome(
        "faults", name, survived=started, no_orphan=started and not left, note="" if not left else f"left: {left}"
    )


def _tune_killed(tmp: Path, sig: signal.Signals) -> Outcome:
    tmp.mkdir(parents=True)
    args = ["--methods", "lora", "--trials", "2", "--seeds", "0", "--results", str(tmp / "r"), "--", *LONG]
    proc = popen(tmp, args, module="loraven.tune")
    started = wait_for(lambda: bool(list((tmp / "r").rglob("config.json"))), proc, 600)
    time.sleep(3)
    family = descendants(proc.pid)
    proc.send_signal(sig)
    try:
        _, err = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        proc.kill()
        return Outcome("faults", f"{sig.name} to python -m loraven.tune", survived=False, note="hung")
    time.sleep(10)
    left = alive(family)
    if sig == signal.SIGKILL:
        return Outcome(
            "faults",
            "SIGKILL to python -m loraven.tune",
            survived=started,
            no_orphan=started and not left,
            note="" if not left else f"left: {left}",
        )
    rows = records(tmp / "r")
    recorded = bool(rows) and all(r["status"] == "failed" and "interrupted" in r["reason"] for r in rows)
    ok = started and proc.returncode == 143 and "Traceback" not in err
    return Outcome(
        "faults",
        "SIGTERM to python -m loraven.tune",
        survived=ok,
        nothing_lost=recorded,
        no_orphan=not left,
        note=""
        if ok and recorded and not left
        else f"exit {proc.returncode}; {[r.get('reason') for r in rows]}; left {left}; {err[-200:]}",
    )


# ------------------------------------------------------------------------------------------------ report


CATEGORIES = {
    "values": attack_values,
    "cli": attack_cli,
    "secrets": attack_secrets,
    "state": attack_state,
    "faults": attack_faults,
}


def table(outcomes: list[Outcome]) -> str:
    """tried / clear before anything started / survived / nothing lost / no orphan, per category (n/applicable)."""
    rows: dict[str, list[Outcome]] = {}
    for o in outcomes:
        rows.setdefault(o.category, []).append(o)

    def count(group: list[Outcome], attr: str) -> str:
        applicable = [getattr(o, attr) for o in group if getattr(o, attr) is not None]
        return f"{sum(applicable)}/{len(applicable)}" if applicable else "—"

    lines = [
        "| category | tried | clear before anything started | survived | nothing lost | no orphan |",
        "|---|---|---|---|---|---|",
    ]
    for category, group in rows.items():
        cells = [count(group, a) for a in ("clear", "survived", "nothing_lost", "no_orphan")]
        lines.append(f"| {category} | {len(group)} | " + " | ".join(cells) + " |")
    cells = [count(outcomes, a) for a in ("clear", "survived", "nothing_lost", "no_orphan")]
    lines.append(f"| **all** | {len(outcomes)} | " + " | ".join(f"**{c}**" for c in cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=list(CATEGORIES), action="append")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    start = time.time()
    outcomes: list[Outcome] = []
    for name in args.only or list(CATEGORIES):
        t0 = time.time()
        got = CATEGORIES[name]()
        outcomes += got
        bad = [o for o in got if not o.ok]
        print(
            f"[attack] {name}: {len(got)} cases, {len(bad)} not ok, {time.time() - t0:.0f} s",
            file=sys.stderr,
            flush=True,
        )
        for o in bad:
            print(f"  NOT OK {o.category} / {o.case}: {o.note}", file=sys.stderr, flush=True)
    print(table(outcomes))
    load = os.getloadavg()
    print(f"\n{len(outcomes)} cases in {time.time() - start:.0f} s; load average {load[0]:.1f} (2-core machine)")
    if args.json:
        args.json.write_text(json.dumps([asdict(o) for o in outcomes], indent=1))
    return 0 if all(o.ok for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
