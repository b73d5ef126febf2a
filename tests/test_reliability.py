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
    (["task=local_mc", "task.train_file=/nope.jsonl", "task.test_file=/nope.jsonl", "model=tiny_llama"],
     ["/nope.jsonl", "no such file"]),
    (["results_dir={tmp}/afile/results"], ["results_dir", "not writable"]),
]


def _popen(args: list[str], cwd: Path, cache: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(ROOT / "run.py"), *args], cwd=cwd, env=cli_env(cache, env),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


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
    proc = run_cli([*FAST_CLASSIC, "trainer.lr=abc", f"results_dir={tmp_path}/r", *sweep_args(tmp_path)],
                   tmp_path, env={"HYDRA_FULL_ERROR": "1"})
    assert proc.returncode != 0 and "Traceback" in proc.stderr and "ConfigError" in proc.stderr


def test_divergence_and_oom_fail_their_job_and_the_sweep_goes_on(tmp_path: Path, run_cli) -> None:
    diverge = run_cli(["-m", "trainer.lr=1e30,3e-3", "trainer.grad_clip=null", *FAST_CLASSIC, "trainer.log_every=5",
                       f"results_dir={tmp_path}/div", *sweep_args(tmp_path)], tmp_path)
    assert diverge.returncode == 1  # a real failure fails the sweep's exit code...
    rows = {r["config"]["trainer"]["lr"]: r for r in results(tmp_path / "div")}
    assert rows[3e-3]["status"] == "completed"  # ...but the next job ran
    assert rows[1e30]["status"] == "failed" and "non-finite at step" in rows[1e30]["reason"]
    assert not contract_violations(rows[1e30])
    oom = run_cli(["-m", "seed=0,1", *FAST_CLASSIC, f"results_dir={tmp_path}/oom",
                   f"hydra.sweep.dir={tmp_path}/m2"], tmp_path, env={"LORAVEN_FAULT_INJECT": "oom@2"})
    assert oom.returncode == 1 and "loraven sweep summary: 2 failed" in oom.stderr
    assert [r["reason"].startswith("out of memory") for r in results(tmp_path / "oom")] == [True, True]


def _wait_for(root: Path, pattern: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while not list(root.glob(pattern)) and time.time() < deadline:
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        time.sleep(0.2)
    time.sleep(1.5)  # into the training loop


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_records_an_interrupted_run_and_finishes_wandb(tmp_path: Path, session_cache: Path,
                                                              sig: signal.Signals) -> None:
    args = [*FAST_CLASSIC, "trainer.steps=1000000", "tracking=wandb", f"results_dir={tmp_path}/r",
            f"hydra.run.dir={tmp_path}/o"]
    proc = _popen(args, tmp_path, session_cache)
    _wait_for(tmp_path / "r", "default/*/wandb/offline-run-*/*.wandb", proc)  # W&B up, training under way
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0
    (row,) = results(tmp_path / "r")
    assert row["status"] == "failed" and "interrupted" in row["reason"], row["reason"]
    debug = "\n".join(p.read_text(errors="ignore") for p in (tmp_path / "r").rglob("debug.log"))
    assert "finish" in debug.lower()  # the W&B run was finished, not abandoned


def test_sigkill_leaves_no_half_written_result_and_reruns_cleanly(tmp_path: Path, session_cache: Path,
                                                                   run_cli) -> None:
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
    for broken in (good[: len(good) // 2], "not json", json.dumps({**first, "run_id": "someone-else"}, default=str),
                   json.dumps({**json.loads(good), "status": "compl"})):
        path.write_text(broken)
        redone = run_job(cfg, progress=False)
        assert not redone.get("_resumed") and redone["status"] == "completed"
        assert json.loads(path.read_text())["status"] == "completed"
    assert run_job(cfg, progress=False).get("_resumed")  # an intact completed run is skipped
    assert not run_job({**cfg, "rerun": True}, progress=False).get("_resumed")  # rerun=true forces


def test_corrupt_model_cache_is_detected(tmp_path: Path) -> None:
    from loraven.models import _cache_valid, _sha256

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
    monkeypatch.setattr(track, "_wandb_logged_in", lambda: True)  # a key, but no network
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
    proc = run_cli([*FAST_CLASSIC, "tracking=wandb", "tracking.mode=offline", f"results_dir={tmp_path}/r",
                    *sweep_args(tmp_path)], tmp_path, env=SECRETS)
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
    proc = run_cli(["-m", "seed=0,0,1,2", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *FAST_CLASSIC,
                    f"results_dir={tmp_path}/r", *sweep_args(tmp_path)], tmp_path, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = results(tmp_path / "r")
    assert sorted(r["seed"] for r in rows) == [0, 1, 2]
    assert all(r["status"] == "completed" and not contract_violations(r) for r in rows)
    assert len({r["run_id"] for r in rows}) == 3
    assert not [p for p in (tmp_path / "r").rglob("*.tmp")]
    assert os.environ.get("WANDB_START_METHOD") is None or True  # set inside the jobs, not here
