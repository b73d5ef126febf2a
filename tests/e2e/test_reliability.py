"""Fault injection: bad configs, divergence, OOM, signals, corrupt files, tracking/energy faults, unwritable
results, secrets, concurrent writers. Each fault must end in a clear message or an honest record."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import FAST_CLASSIC, FAST_LM, ROOT, cli_env, compose_cfg, results, sweep_args

from loraven.contract import contract_violations
from loraven.job import run_job
from loraven.track import ResultsStore

BAD_CONFIGS = [  # (overrides, words the first lines of stderr must contain)
    (["adapter=loraa"], ["loraa", "lora_ar"]),
    (["trainer.lrr=0.1"], ["lrr"]),
    (["trainer.lr=abc"], ["trainer.lr", "abc", "number"]),
    (["trainer.lr=-0.1"], ["trainer.lr", "-0.1", "> 0"]),
    (["adapter=loraven", "adapter.r_min=16", "adapter.r_max=4"], ["r_min=16", "r_max=4"]),
    ([*FAST_LM, "adapter=lora", "adapter.r=1000"], ["adapter.r=1000", "valid: 1..64"]),
    ([*FAST_LM, "adapter=lora", "adapter.target_modules=[nope_proj]"], ["nope_proj", "q_proj"]),
    (["task=lm_eval", "task.names=[nonexistent_task_xyz]", "model=tiny_llama"], ["nonexistent_task_xyz"]),
    (
        ["task=local_mc", "task.train_file=/nope.jsonl", "task.test_file=/nope.jsonl", "model=tiny_llama"],
        ["/nope.jsonl", "no such file"],
    ),
    (["results_dir={tmp}/afile/results"], ["results_dir", "not writable"]),
]


def _popen(args: list[str], cwd: Path, cache: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(ROOT / "run.py"), *args],
        cwd=cwd,
        env=cli_env(cache, env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_bad_configs_fail_fast_with_one_clear_message(tmp_path: Path, session_cache: Path) -> None:
    (tmp_path / "afile").write_text("a regular file, so nothing can be created under it")
    procs = []
    for i, (overrides, words) in enumerate(BAD_CONFIGS):
        base = FAST_CLASSIC if not any(o.startswith(("model=", "task=")) for o in overrides) else []
        args = [*base, *(o.format(tmp=tmp_path) for o in overrides)]
        if not any(a.startswith("results_dir=") for a in args):
            args.append(f"results_dir={tmp_path}/res{i}")
        procs.append((args, words, _popen([*args, f"hydra.run.dir={tmp_path}/out{i}"], tmp_path, session_cache)))
    for args, words, proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode != 0, args
        lines = [ln for ln in err.splitlines() if ln.strip() and "Warning" not in ln and "warn(" not in ln]
        head = "\n".join(lines[:6])
        assert "Traceback" not in err, f"{args}: traceback instead of a message:\n{err[-2000:]}"
        for word in words:
            assert word in head, f"{args}: {word!r} not in the first lines:\n{head}"
    for res in tmp_path.glob("res*"):
        assert all(r["status"] != "completed" for r in results(res))
        assert all("train" not in r or not r.get("time", {}).get("train_s") for r in results(res))


def test_full_error_env_still_shows_the_traceback(tmp_path: Path, run_cli) -> None:
    proc = run_cli(
        [*FAST_CLASSIC, "trainer.lr=abc", f"results_dir={tmp_path}/r", *sweep_args(tmp_path)],
        tmp_path,
        env={"HYDRA_FULL_ERROR": "1"},
    )
    assert proc.returncode != 0 and "Traceback" in proc.stderr and "ConfigError" in proc.stderr


def test_divergence_and_oom_fail_their_job_and_the_sweep_goes_on(tmp_path: Path, run_cli) -> None:
    diverge = run_cli(
        [
            "-m",
            "trainer.lr=1e30,3e-3",
            "trainer.grad_clip=null",
            *FAST_CLASSIC,
            "trainer.log_every=5",
            f"results_dir={tmp_path}/div",
            *sweep_args(tmp_path),
        ],
        tmp_path,
    )
    assert diverge.returncode == 1  # a real failure fails the sweep's exit code...
    rows = {r["config"]["trainer"]["lr"]: r for r in results(tmp_path / "div")}
    assert rows[3e-3]["status"] == "completed"  # ...but the next job ran
    assert rows[1e30]["status"] == "failed" and "non-finite at step" in rows[1e30]["reason"]
    assert not contract_violations(rows[1e30])
    oom = run_cli(
        ["-m", "seed=0,1", *FAST_CLASSIC, f"results_dir={tmp_path}/oom", f"hydra.sweep.dir={tmp_path}/m2"],
        tmp_path,
        env={"LORAVEN_FAULT_INJECT": "oom@2"},
    )
    assert oom.returncode == 1 and "loraven sweep summary: 2 failed" in oom.stderr
    assert [r["reason"].startswith("out of memory") for r in results(tmp_path / "oom")] == [True, True]


def _wait_for(root: Path, pattern: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while not list(root.glob(pattern)) and time.time() < deadline:
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        time.sleep(0.2)
    time.sleep(1.5)  # into the training loop


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_records_an_interrupted_run_and_finishes_wandb(
    tmp_path: Path, session_cache: Path, sig: signal.Signals
) -> None:
    args = [
        *FAST_CLASSIC,
        "trainer.steps=1000000",
        "tracking=wandb",
        f"results_dir={tmp_path}/r",
        f"hydra.run.dir={tmp_path}/o",
    ]
    proc = _popen(args, tmp_path, session_cache)
    _wait_for(tmp_path / "r", "default/*/wandb/offline-run-*/*.wandb", proc)  # W&B starting
    deadline = time.time() + 120  # wandb.init returned (a signal inside init leaves no run to finish)
    while time.time() < deadline and not any(
        "returning control" in p.read_text(errors="ignore") for p in (tmp_path / "r").rglob("debug.log")
    ):
        time.sleep(0.2)
    time.sleep(1.5)  # into the training loop
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == (143 if sig == signal.SIGTERM else 130), err[-3000:]  # documented exit codes
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith(f"interrupted ({sig.name})")
    (row,) = results(tmp_path / "r")
    assert row["status"] == "failed" and f"interrupted ({sig.name})" in row["reason"], row["reason"]
    debug = "\n".join(p.read_text(errors="ignore") for p in (tmp_path / "r").rglob("debug.log"))
    assert "finish" in debug.lower()  # the W&B run was finished, not abandoned


def test_sigkill_leaves_no_half_written_result_and_reruns_cleanly(tmp_path: Path, session_cache: Path, run_cli) -> None:
    args = [*FAST_CLASSIC, f"results_dir={tmp_path}/r"]
    proc = _popen([*args, "trainer.steps=1000000", f"hydra.run.dir={tmp_path}/o"], tmp_path, session_cache)
    _wait_for(tmp_path / "r", "default/*/config.json", proc)
    proc.kill()
    proc.wait(timeout=60)
    assert not list((tmp_path / "r").rglob("result.json"))
    assert not list((tmp_path / "r").rglob(".result.json.*"))  # no temp file left behind either
    again = run_cli([*args, "trainer.steps=1000000", "trainer.steps=20", f"hydra.run.dir={tmp_path}/o2"], tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert [r["status"] for r in results(tmp_path / "r")] == ["completed"]


def test_corrupt_or_truncated_result_is_redone_never_trusted(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("LORAVEN_CACHE", str(tmp_path / "cache"))
    cfg = compose_cfg([*FAST_CLASSIC, f"results_dir={tmp_path}/r"])
    first = run_job(cfg, progress=False)
    path = ResultsStore(tmp_path / "r").run_dir("default", first["run_id"]) / "result.json"
    good = path.read_text()
    for broken in (
        good[: len(good) // 2],
        "not json",
        json.dumps({**first, "run_id": "someone-else"}, default=str),
        json.dumps({**json.loads(good), "status": "compl"}),
    ):
        path.write_text(broken)
        redone = run_job(cfg, progress=False)
        assert not redone.get("_resumed") and redone["status"] == "completed"
        assert json.loads(path.read_text())["status"] == "completed"
    assert run_job(cfg, progress=False).get("_resumed")  # an intact completed run is skipped
    assert not run_job({**cfg, "rerun": True}, progress=False).get("_resumed")  # rerun=true forces


def test_corrupt_model_cache_is_detected(tmp_path: Path) -> None:
    from loraven.files import sha256_of as _sha256
    from loraven.models import _cache_valid

    target = tmp_path / "model"
    target.mkdir()
    (target / "model.safetensors").write_bytes(b"x" * 1000)
    manifest = {"files": {"model.safetensors": {"size": 1000, "sha256": _sha256(target / "model.safetensors")}}}
    (target / "loraven_manifest.json").write_text(json.dumps(manifest))
    assert _cache_valid(target)
    (target / "model.safetensors").write_bytes(b"y" + b"x" * 999)  # same size, flipped byte
    assert not _cache_valid(target)
    (target / "model.safetensors").write_bytes(b"x" * 10)  # truncated
    assert not _cache_valid(target)
    (target / "loraven_manifest.json").write_text("{")  # corrupt manifest
    assert not _cache_valid(target)


def test_wandb_not_logged_in_or_unreachable_falls_back_offline(tmp_path: Path, monkeypatch, caplog) -> None:
    import wandb

    from loraven import track

    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("WANDB_MODE", "online")
    modes: list[str] = []
    real_init = wandb.init

    def init(**kwargs):
        modes.append(kwargs["mode"])
        if kwargs["mode"] == "online":
            raise ConnectionError("api.wandb.ai unreachable")
        return real_init(**kwargs)

    monkeypatch.setattr(wandb, "init", init)
    args = dict(run_config={"a": 1}, name="n", group="g", job_type="j", tags=[])
    with caplog.at_level("WARNING", logger="loraven.track"):
        track.make_tracker({"name": "wandb", "mode": "online"}, run_dir=tmp_path / "a", **args).finish()
    assert modes == ["offline"] and len(caplog.records) == 1 and "not logged in" in caplog.text
    monkeypatch.setattr(track, "_wandb_logged_in", lambda: True)  # a key; the probe passes, init still fails
    monkeypatch.setattr(track, "wandb_reachable", lambda: True)
    caplog.clear()
    with caplog.at_level("WARNING", logger="loraven.track"):
        track.make_tracker({"name": "wandb", "mode": "online"}, run_dir=tmp_path / "b", **args).finish()
    assert modes[1:] == ["online", "offline"] and len(caplog.records) == 1 and "unreachable" in caplog.text


def test_codecarbon_failure_records_energy_unavailable(tmp_path: Path, monkeypatch) -> None:
    import codecarbon

    def broken(*args, **kwargs):
        raise RuntimeError("no power sensors here")

    monkeypatch.setattr(codecarbon, "OfflineEmissionsTracker", broken)
    monkeypatch.setenv("LORAVEN_CACHE", str(tmp_path / "cache"))
    cfg = compose_cfg([*FAST_CLASSIC, "energy=codecarbon", f"results_dir={tmp_path}/r"])
    result = run_job(cfg, progress=False)
    assert result["status"] == "completed"
    assert result["energy"]["method"] == "unavailable" and "no power sensors" in result["energy"]["reason"]


SECRETS = {"WANDB_API_KEY": "wandbfakesecret0123456789abcdef0123456789", "HF_TOKEN": "hf_FakeSecretToken987654321"}


def test_no_secret_is_ever_written(tmp_path: Path, run_cli) -> None:
    proc = run_cli(
        [*FAST_CLASSIC, "tracking=wandb", "tracking.mode=offline", f"results_dir={tmp_path}/r", *sweep_args(tmp_path)],
        tmp_path,
        env=SECRETS,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name == "result.json" for p in written) and any(p.suffix == ".wandb" for p in written)
    for path in written:
        blob = path.read_bytes()
        for secret in SECRETS.values():
            assert secret.encode() not in blob, f"{secret} leaked into {path}"
    for secret in SECRETS.values():
        assert secret not in proc.stdout + proc.stderr


def test_remote_code_off_and_safetensors_only(monkeypatch) -> None:
    import transformers

    from loraven import models

    assert compose_cfg(["model=hf"])["model"]["trust_remote_code"] is False
    seen: list[dict] = []

    class Tok:
        pad_token, eos_token = None, "</s>"

    class Model:
        def eval(self):
            return self

    def spy(kind):
        def load(name, **kwargs):
            seen.append({"kind": kind, **kwargs})
            return Tok() if kind == "tok" else Model()

        return load

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", spy("tok"))
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", spy("model"))
    models.load_hf({"name_or_path": "some/model", "trust_remote_code": False}, models._dtype("float32"))
    monkeypatch.setattr(models, "_cache_valid", lambda target: True)
    models.load_smollm2()
    loads = [s for s in seen if s["kind"] == "model"]
    assert len(loads) == 2 and all(s.get("use_safetensors") is True for s in loads)
    assert all(s.get("trust_remote_code", False) is False for s in seen)


def test_parallel_jobs_never_clobber_each_other(tmp_path: Path, run_cli) -> None:
    # joblib, 2 workers, the same results tree; seeds 0,0 are the same run_id written twice at once
    proc = run_cli(
        [
            "-m",
            "seed=0,0,1,2",
            "hydra/launcher=joblib",
            "hydra.launcher.n_jobs=2",
            *FAST_CLASSIC,
            f"results_dir={tmp_path}/r",
            *sweep_args(tmp_path),
        ],
        tmp_path,
        timeout=400,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = results(tmp_path / "r")
    assert sorted(r["seed"] for r in rows) == [0, 1, 2]
    assert all(r["status"] == "completed" and not contract_violations(r) for r in rows)
    assert len({r["run_id"] for r in rows}) == 3
    assert not [p for p in (tmp_path / "r").rglob("*.tmp")]
    assert os.environ.get("WANDB_START_METHOD") is None or True  # set inside the jobs, not here


# =========================================================================== issue 16: no hang, no lost result,
# no leaked secret. Each test below failed before its fix.
import errno  # noqa: E402
import types  # noqa: E402

import torch  # noqa: E402

from loraven import job as job_module  # noqa: E402
from loraven import track  # noqa: E402
from loraven.contract import SECTIONS, TOP_LEVEL  # noqa: E402
from loraven.errors import ConfigError  # noqa: E402
from loraven.run_config import validate_run_config as check_config  # noqa: E402
from loraven.track import FAILED_ATTEMPT, LOCK_NAME, Tracker  # noqa: E402


def _store_path(root: Path, result: dict, name: str = "result.json") -> Path:
    return ResultsStore(root).run_dir("default", result["run_id"]) / name


# ---------------------------------------------------------------- hangs


@pytest.mark.timeout(60)
def test_batch_larger_than_training_rows_is_clamped_not_a_hang(caplog) -> None:
    from loraven.tasks.classic import classic_batches
    from loraven.tasks.lm import lm_batches

    task = types.SimpleNamespace(name="tiny", x_train=torch.randn(3, 4), y_train=torch.tensor([0, 1, 0]))
    with caplog.at_level("WARNING", logger="loraven"):
        batch = next(classic_batches(task, 5000, seed=0))
    assert batch["x"].shape[0] == 3
    assert "trainer.batch_size=5000" in caplog.text and "3 training rows" in caplog.text

    class Tok:
        pad_token_id = 0

        def __call__(self, text, add_special_tokens=False):
            return {"input_ids": [ord(c) % 50 + 1 for c in text]}

    lm_task = types.SimpleNamespace(name="tiny_mc", train_pairs=[("Q: 1+1?", " 2")] * 5)
    assert next(lm_batches(lm_task, Tok(), 10**12, max_len=16, seed=0))["input_ids"].shape[0] == 5


# ---------------------------------------------------------------- results lost or wrongly trusted


def test_failed_or_interrupted_rerun_never_replaces_a_completed_result(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("LORAVEN_CACHE", str(tmp_path / "cache"))
    cfg = compose_cfg([*FAST_CLASSIC, f"results_dir={tmp_path}/r"])
    first = run_job(cfg, progress=False)
    path = _store_path(tmp_path / "r", first)
    completed = path.read_text()
    monkeypatch.setenv("LORAVEN_FAULT_INJECT", "interrupt@2")
    with pytest.raises(KeyboardInterrupt):
        run_job({**cfg, "rerun": True}, progress=False)
    assert path.read_text() == completed  # the earlier completed record stands...
    attempt = json.loads(_store_path(tmp_path / "r", first, FAILED_ATTEMPT).read_text())
    assert attempt["status"] == "failed" and "interrupted" in attempt["reason"]  # ...the attempt beside it
    monkeypatch.setenv("LORAVEN_FAULT_INJECT", "error@2")
    assert run_job({**cfg, "rerun": True}, progress=False)["status"] == "failed"
    assert path.read_text() == completed
    assert "simulated failure" in json.loads(_store_path(tmp_path / "r", first, FAILED_ATTEMPT).read_text())["reason"]
    monkeypatch.delenv("LORAVEN_FAULT_INJECT")
    assert run_job(cfg, progress=False).get("_resumed")  # resume still trusts the completed record


def test_skeleton_and_contract_share_one_definition(tmp_path: Path) -> None:
    cfg = compose_cfg(FAST_CLASSIC)
    record = job_module.new_record(cfg, "abc", "failed", "why").to_dict()
    assert not contract_violations(record)
    assert set(TOP_LEVEL) <= set(record) and all(
        set(keys) <= set(record[s]) for s, keys in SECTIONS.items() if s != "env"
    )


@pytest.mark.parametrize("broken", [{"status": "completed"}, {"metrics": "oops"}, {"time": None}])
def test_resume_rejects_a_schema_invalid_record_and_names_it(tmp_path: Path, monkeypatch, caplog, broken: dict) -> None:
    from loraven.cli.console import summary_row

    monkeypatch.setenv("LORAVEN_CACHE", str(tmp_path / "cache"))
    cfg = compose_cfg([*FAST_CLASSIC, f"results_dir={tmp_path}/r"])
    first = run_job(cfg, progress=False)
    path = _store_path(tmp_path / "r", first)
    bad = {"run_id": first["run_id"], **broken} if "status" in broken else {**first, **broken}
    path.write_text(json.dumps(bad, default=str))
    summary_row(bad)  # the sweep summary never crashes on a bad record
    with caplog.at_level("WARNING", logger="loraven.track"):
        redone = run_job(cfg, progress=False)
    assert not redone.get("_resumed") and redone["status"] == "completed"
    assert str(path) in caplog.text and caplog.text.count("ignoring invalid") == 1  # named, once
    assert not contract_violations(json.loads(path.read_text()))


class RecordingTracker(Tracker):
    def __init__(self) -> None:
        self.finished: list[int] = []
        self.summaries: list[dict] = []

    def summary(self, values) -> None:
        self.summaries.append(dict(values))

    def finish(self, exit_code: int = 0) -> None:
        self.finished.append(exit_code)


def test_disk_full_at_the_end_is_one_line_with_metrics_wandb_finished_no_partial_files(
    tmp_path: Path, monkeypatch, caplog
) -> None:
    import loraven.adapters.loraven.model as loraven_model

    monkeypatch.setenv("LORAVEN_CACHE", str(tmp_path / "cache"))
    cfg = compose_cfg([*FAST_CLASSIC, f"results_dir={tmp_path}/r"])
    tracker = RecordingTracker()
    monkeypatch.setattr(job_module, "make_tracker", lambda *a, **k: tracker)
    full = {"on": False}
    real_train, real_fsync, real_writer = job_module.train, os.fsync, loraven_model.csv.writer

    def train_then_fill_the_disk(*args, **kwargs):
        stats = real_train(*args, **kwargs)
        full["on"] = True
        return stats

    def fsync(fd):
        if full["on"]:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)

    class FullWriter:
        def __init__(self, fh):
            self.inner = real_writer(fh)

        def writerow(self, row):
            return self.inner.writerow(row)

        def writerows(self, rows):
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(job_module, "train", train_then_fill_the_disk)
    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(loraven_model.csv, "writer", FullWriter)
    with caplog.at_level("WARNING"):
        result = run_job(cfg, progress=False)
    assert "No space left on device" in result["_unsaved"]
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "accuracy" in errors[0].getMessage() and "Traceback" not in caplog.text
    assert tracker.finished == [0] and tracker.summaries  # W&B summarised and finished
    run_dir = _store_path(tmp_path / "r", result).parent
    leftovers = [
        p.name for p in run_dir.iterdir() if p.is_file() and (p.name.endswith(".tmp") or p.stat().st_size == 0)
    ]
    assert leftovers == [] and not (run_dir / "result.json").exists()


def test_writability_probe_writes_real_bytes(tmp_path: Path, monkeypatch) -> None:
    def full_disk(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(ConfigError, match="not writable .No space left on device"):
        ResultsStore(tmp_path / "r").check_writable()
    assert [p for p in (tmp_path / "r").iterdir()] == []  # and the probe is gone


def test_cli_says_when_a_finished_result_could_not_be_saved(tmp_path: Path, monkeypatch, capsys) -> None:
    from loraven.cli import app, hydra_glue

    result = {
        **job_module.new_record(compose_cfg(FAST_CLASSIC), "abc", "completed", None).to_dict(),
        "_unsaved": "No space left on device (/x)",
    }
    result["metrics"]["accuracy"] = 0.5
    monkeypatch.setattr(job_module, "run_job", lambda *a, **k: result)
    monkeypatch.setattr(hydra_glue, "job_dir", lambda: None)
    with pytest.raises(SystemExit) as exit_info:
        app.run_from_hydra(OmegaConf_create(compose_cfg([*FAST_CLASSIC, f"results_dir={tmp_path}/r"])))
    err = capsys.readouterr().err
    assert exit_info.value.code == 1 and "not saved: No space left" in err and "0.5" in err


def OmegaConf_create(cfg: dict):  # noqa: N802
    from omegaconf import OmegaConf

    return OmegaConf.create(cfg)


def test_wandb_table_failure_is_a_warning_and_the_result_stands(tmp_path: Path, monkeypatch, caplog) -> None:
    import wandb

    def read_only(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(tmp_path / "wandb-data"))

    monkeypatch.setenv("LORAVEN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(wandb, "Table", read_only)
    cfg = compose_cfg([*FAST_CLASSIC, "tracking=wandb", "tracking.mode=offline", f"results_dir={tmp_path}/r"])
    with caplog.at_level("WARNING", logger="loraven.track"):
        result = run_job(cfg, progress=False)
    assert result["status"] == "completed", result["reason"]
    assert json.loads(_store_path(tmp_path / "r", result).read_text())["status"] == "completed"
    assert "W&B table" in caplog.text and "Permission denied" in caplog.text


def test_a_job_claimed_by_another_live_process_is_skipped_and_stale_locks_are_taken_over(
    tmp_path: Path, monkeypatch
) -> None:
    import socket

    from loraven import locks

    monkeypatch.setenv("LORAVEN_CACHE", str(tmp_path / "cache"))
    cfg = compose_cfg([*FAST_CLASSIC, f"results_dir={tmp_path}/r"])
    lock = ResultsStore(tmp_path / "r").run_dir("default", track.run_id_for(cfg)) / LOCK_NAME
    lock.parent.mkdir(parents=True)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        started = locks.process_start_time(other.pid)
        lock.write_text(json.dumps({"host": socket.gethostname(), "pid": other.pid, "started": started}))
        skipped = run_job(cfg, progress=False)  # a verified live owner: its run, not ours
        assert skipped["status"] == "skipped" and f"pid {other.pid}" in skipped["reason"]
        assert not (lock.parent / "result.json").exists() and lock.exists()  # theirs, untouched
    finally:
        other.kill()
        other.wait()
    # the owner is dead now (SIGKILL): the lock is stale and taken over
    done = run_job(cfg, progress=False)
    assert done["status"] == "completed" and not lock.exists()


def _descendants(pid: int) -> list[int]:
    import psutil

    try:
        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except psutil.Error:
        return []


def test_sigterm_on_a_joblib_sweep_stops_its_children_and_records_them_interrupted(
    tmp_path: Path, session_cache: Path
) -> None:
    import psutil

    args = [
        "-m",
        "seed=0,1",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        *FAST_CLASSIC,
        "trainer.steps=1000000",
        "tracking=wandb",
        f"results_dir={tmp_path}/r",
        *sweep_args(tmp_path),
    ]
    proc = _popen(args, tmp_path, session_cache)
    deadline = time.time() + 240
    while len(list((tmp_path / "r").glob("default/*/wandb/offline-run-*/*.wandb"))) < 2 and time.time() < deadline:
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        time.sleep(0.5)
    time.sleep(3)  # both jobs inside the training loop
    children = _descendants(proc.pid)
    assert children
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == 143, err[-3000:]
    # loky's resource tracker (joblib's, a separate process) sometimes prints its own KeyError traceback when it
    # is stopped mid-cleanup; ours must never print one
    blocks = err.split("Traceback (most recent call last):")[1:]
    ours = [block for block in blocks if "resource_tracker.py" not in block]
    assert not ours and "interrupted (SIGTERM)" in err.strip().splitlines()[-1], err[-3000:]
    time.sleep(1)
    alive = [pid for pid in children if psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"]
    assert alive == [], [psutil.Process(p).cmdline() for p in alive if psutil.pid_exists(p)]
    rows = results(tmp_path / "r")
    assert len(rows) == 2 and all(r["status"] == "failed" and "interrupted (SIGTERM)" in r["reason"] for r in rows)
    assert not list((tmp_path / "r").rglob(LOCK_NAME))


def test_interrupted_sweep_with_the_basic_launcher_exits_130_in_one_line(tmp_path: Path, session_cache: Path) -> None:
    args = [
        "-m",
        "seed=0,1",
        *FAST_CLASSIC,
        "trainer.steps=1000000",
        f"results_dir={tmp_path}/r",
        *sweep_args(tmp_path),
    ]
    proc = _popen(args, tmp_path, session_cache)
    _wait_for(tmp_path / "r", "default/*/config.json", proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err, err[-3000:]
    assert err.strip().splitlines()[-1].startswith("interrupted (SIGINT)")
    (row,) = results(tmp_path / "r")
    assert row["status"] == "failed" and "interrupted (SIGINT)" in row["reason"]


# ---------------------------------------------------------------- analysis


def test_analysis_counts_copies_once_skips_invalid_records_and_exposes_steps(tmp_path: Path) -> None:
    from fake_store import write_run

    from analysis.load import AnalysisWarning, load_results, runs_frame

    write_run(tmp_path / "store", "exp", "run1", accuracy=0.5, steps=10)
    write_run(tmp_path / "store" / "backup", "exp", "run1", accuracy=0.5, steps=10)  # a copied folder
    write_run(tmp_path / "store", "exp", "run2", accuracy=0.9)
    (tmp_path / "store" / "exp" / "run2" / "result.json").write_text(
        json.dumps({"run_id": "run2", "status": "completed"})
    )
    bad_metrics = write_run(tmp_path / "store", "exp", "run3", accuracy=0.7) / "result.json"
    bad_metrics.write_text(json.dumps({**json.loads(bad_metrics.read_text()), "metrics": "oops"}))
    with pytest.warns(AnalysisWarning) as caught:
        records = load_results(tmp_path / "store")
    assert [r["run_id"] for r in records] == ["run1"]
    text = "\n".join(str(w.message) for w in caught)
    assert "appears twice" in text and "run2" in text and "run3" in text and "contract" in text
    frame = runs_frame(records)
    assert list(frame["steps"]) == [10]  # config.trainer.steps of an older record; time.steps wins when present


def test_analysis_out_a_file_or_unwritable_is_one_clear_error(tmp_path: Path, capsys) -> None:
    from fake_store import write_run

    from analysis.cli import main

    write_run(tmp_path / "store", "exp", "run1", accuracy=0.5)
    (tmp_path / "afile").write_text("x")
    for out in (tmp_path / "afile", tmp_path / "afile" / "reports"):
        with pytest.raises(SystemExit) as exit_info:
            main(["--results", str(tmp_path / "store"), "--out", str(out), "--no-figures"])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and "--out" in err and "Traceback" not in err


# ---------------------------------------------------------------- secrets

CLI_SECRETS = {
    "secret_key": "s3cr3t-Key-111",
    "+passwd": "pw-Hunter2-222",
    "+credentials": "cred-Blob-333",
    "+trainer.private_key": "pk-Begin-444",
    "+aws_secret_access_key": "aws-Wjal-555",
    "+tracking.api_key": "apikey-666",
}


def test_credentials_on_the_command_line_are_refused_before_anything_is_written(
    tmp_path: Path, session_cache: Path
) -> None:
    procs = []
    for i, (key, value) in enumerate(CLI_SECRETS.items()):
        sweep = ["-m", "seed=0,1"] if i % 2 else []
        args = [
            *sweep,
            *FAST_CLASSIC,
            "tracking=wandb",
            f"{key}={value}",
            f"results_dir={tmp_path}/r{i}",
            f"hydra.sweep.dir={tmp_path}/m{i}",
            f"hydra.run.dir={tmp_path}/o{i}",
        ]
        procs.append((key, value, _popen(args, tmp_path, session_cache)))
    for key, value, proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 2, err[-2000:]
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert len(lines) == 1 and key.lstrip("+") in lines[0] and "environment variable" in lines[0]
        assert value not in out + err
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    for path in written:
        blob = path.read_bytes()
        assert not any(v.encode() in blob for v in CLI_SECRETS.values()), path
    assert not list(tmp_path.rglob(".hydra")) and not list(tmp_path.rglob("*.wandb"))


def test_redaction_covers_every_credential_like_key_but_not_counters() -> None:
    cfg = {k.lstrip("+").rsplit(".", 1)[-1]: v for k, v in CLI_SECRETS.items()}
    cfg |= {"tokens_per_s": 5.0, "train_tokens": 10, "max_new_tokens": 3, "r_max": 8}
    redacted = track.redact(cfg)
    assert all(
        redacted[k] == "<redacted>" for k in cfg if k not in ("tokens_per_s", "train_tokens", "max_new_tokens", "r_max")
    )
    assert redacted["tokens_per_s"] == 5.0 and redacted["train_tokens"] == 10 and redacted["r_max"] == 8


# ---------------------------------------------------------------- bad input


def test_documented_r_max_full_is_accepted(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("LORAVEN_CACHE", str(tmp_path / "cache"))
    cfg = compose_cfg(
        [*FAST_CLASSIC, "adapter=loraven", "adapter.mode=replace", "adapter.r_max=full", f"results_dir={tmp_path}/r"]
    )
    check_config(cfg)
    assert run_job(cfg, progress=False)["status"] == "completed"
    with pytest.raises(ConfigError, match="r_max='half'"):
        check_config(compose_cfg([*FAST_CLASSIC, "adapter=loraven", "adapter.r_max=half"]))


LOCAL_MC_BAD = [  # (file content, line the message must name, words it must contain)
    (
        '{"question": "q", "choices": ["a", "b"], "label": 0}\n{"question": "q", "choices": ["a", "b"], "label": 2}',
        2,
        ["label=2", "out of range", "0..1"],
    ),
    ('{"question": "q", "choices": ["a", "b"], "label": -1}', 1, ["label=-1", "out of range"]),
    ('{"question": "q", "choices": "abcd", "label": 0}', 1, ["choices='abcd'", "list"]),
    ('{"question": "q", "choices": [], "label": 0}', 1, ["choices=[]"]),
    ('{"question": "q", "choices": ["a", "b"], "label": true}', 1, ["label=True"]),
    ('["not", "an", "object"]', 1, ["JSON object"]),
]


@pytest.mark.parametrize(("content", "line", "words"), LOCAL_MC_BAD)
def test_local_mc_bad_documents_name_file_and_line(tmp_path: Path, content: str, line: int, words: list) -> None:
    from loraven.tasks.kinds.local_mc import _read_jsonl

    path = tmp_path / "docs.jsonl"
    path.write_text(content)
    with pytest.raises(ConfigError) as info:
        _read_jsonl(str(path), "train_file")
    message = str(info.value)
    assert message.startswith(f"{path}:{line}:") and "\n" not in message
    assert all(w in message for w in words), message


def test_local_mc_non_utf8_names_file_and_line(tmp_path: Path) -> None:
    from loraven.tasks.kinds.local_mc import _read_jsonl

    path = tmp_path / "latin1.jsonl"
    path.write_bytes(
        b'{"question": "q", "choices": ["a", "b"], "label": 0}\n'
        + '{"question": "caf\xe9", "choices": ["a", "b"], "label": 0}'.encode("latin-1")
    )
    with pytest.raises(ConfigError, match=rf"^{path}:2: not UTF-8"):
        _read_jsonl(str(path), "test_file")


CHECKED_CONFIGS = [  # overrides that check_config must reject, and the words of its one line
    (["scheduler=energy", "scheduler.budget.joules_per_step=-1"], ["joules_per_step=-1", "> 0"]),
    (["energy=codecarbon", "energy.measure_power_secs=0"], ["measure_power_secs=0", "> 0"]),
    (["device=banana"], ["device='banana'", "cpu", "cuda"]),
    (["tracking=wandb", "tracking.mode=banana"], ["tracking.mode='banana'", "offline"]),
    (["adapter=lora", "adapter.dropout=1.5"], ["adapter.dropout=1.5", "[0, 1)"]),
]


@pytest.mark.parametrize(("overrides", "words"), CHECKED_CONFIGS)
def test_config_checks_reject_values_that_used_to_pass(overrides: list, words: list) -> None:
    with pytest.raises(ConfigError) as info:
        check_config(compose_cfg([*FAST_CLASSIC, *overrides]))
    assert all(w in str(info.value) for w in words) and "\n" not in str(info.value), str(info.value)


def test_hf_model_on_an_empty_directory_says_so(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="is an empty directory") as info:
        check_config(compose_cfg(["model=hf", f"model.name_or_path={tmp_path}/empty"]))
    assert "sentencepiece" not in str(info.value)


def test_peft_errors_other_than_targets_do_not_list_every_layer() -> None:
    from peft import LoraConfig

    from loraven.adapters.lora import wrap_with_peft

    model = torch.nn.Sequential(*[torch.nn.Linear(8, 8) for _ in range(30)])
    with pytest.raises(ConfigError) as info:  # a peft error our schema would have caught first (dropout 1.5)
        wrap_with_peft(model, LoraConfig(r=2, lora_dropout=1.5, target_modules=["0", "1"]))
    assert "Linear module names" not in str(info.value) and len(str(info.value)) < 300


def test_bad_device_or_tracking_mode_exit_2_before_wandb_starts(tmp_path: Path, session_cache: Path) -> None:
    procs = [
        _popen(
            [
                *FAST_CLASSIC,
                "tracking=wandb",
                override,
                f"results_dir={tmp_path}/r{i}",
                f"hydra.run.dir={tmp_path}/o{i}",
            ],
            tmp_path,
            session_cache,
        )
        for i, override in enumerate(["device=banana", "tracking.mode=banana"])
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 2 and "banana" in err and "Traceback" not in err, err[-2000:]
    assert not list(tmp_path.rglob("wandb")) and not list(tmp_path.rglob("result.json"))


def test_wandb_online_without_network_probes_once_and_falls_back_offline(tmp_path: Path, monkeypatch, caplog) -> None:
    from omegaconf import OmegaConf

    from loraven.sweep import SweepSummary

    monkeypatch.setattr(track, "_reachable", {})
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)  # a plausible key
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("WANDB_MODE", "online")
    probes: list[float] = []
    real_connect = track.socket.create_connection

    def connect(address, timeout=None):
        probes.append(timeout)
        return real_connect(address, timeout=timeout)

    monkeypatch.setattr(track.socket, "create_connection", connect)
    start = time.time()
    SweepSummary().on_multirun_start(OmegaConf.create({"tracking": {"name": "wandb", "mode": "online"}}))
    assert os.environ["WANDB_MODE"] == "offline"  # inherited by the sweep's workers
    args = dict(run_config={"a": 1}, name="n", group="g", job_type="j", tags=[])
    monkeypatch.setenv("WANDB_MODE", "online")  # even if a job asks again, this process does not re-probe
    with caplog.at_level("WARNING", logger="loraven.track"):
        for i in range(2):
            tracker = track.make_tracker({"name": "wandb", "mode": "online"}, run_dir=tmp_path / f"j{i}", **args)
            assert tracker.run.settings.mode == "offline"
            tracker.finish()
    assert probes == [track.WANDB_PROBE_TIMEOUT_S] and time.time() - start < 60
    assert list(tmp_path.glob("j1/wandb/offline-run-*"))


def test_collapsed_run_is_flagged_when_the_task_declares_chance(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("LORAVEN_CACHE", str(tmp_path / "cache"))
    real_evaluate = job_module.evaluate

    def at_chance(*args, **kwargs):
        metrics = real_evaluate(*args, **kwargs)
        return {**metrics, "chance": metrics["accuracy"]}  # as a collapsed run scores

    monkeypatch.setattr(job_module, "evaluate", at_chance)
    result = run_job(compose_cfg([*FAST_CLASSIC, f"results_dir={tmp_path}/r"]), progress=False)
    stored = json.loads(_store_path(tmp_path / "r", result).read_text())
    assert stored["status"] == "completed" and stored["metrics"]["at_chance"] is True
    assert any("at chance" in w for w in stored["warnings"])
    healthy = {"run_id": "x", "metrics": {"accuracy": 0.9, "accuracy_stderr": 0.01, "chance": 0.25}, "trainer": {}}
    job_module.flag_collapse(healthy, {"trainer": {"lr": 1e-3}})
    assert healthy["metrics"]["at_chance"] is False and "warnings" not in healthy
    no_chance = {"run_id": "y", "metrics": {"accuracy": 0.1}}
    job_module.flag_collapse(no_chance, {"trainer": {}})
    assert "at_chance" not in no_chance["metrics"]  # only where the task declares metrics.chance
