"""Issue 24 end to end: a run's saved adapter is scored by lm-eval's own CLI to the harness's number; re-scoring
loads the base model once for several runs, is its own record and is skipped the second time; retention of a run
scored on its own training task is its gain."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import FAST_LM, cli_env, compose_cfg

from loraven import rescore
from loraven.contract import contract_violations
from loraven.job import run_job
from loraven.retention import summarise


@pytest.fixture
def cache(session_cache, monkeypatch) -> Path:
    monkeypatch.setenv("LORAVEN_CACHE", str(session_cache))
    return session_cache


def _run(tmp_path: Path, *overrides: str) -> dict:
    result = run_job(compose_cfg([*FAST_LM, f"results_dir={tmp_path / 'r'}", *overrides]), progress=False)
    assert result["status"] == "completed", result.get("reason")
    return result


def test_retention_on_its_own_training_task_equals_its_gain(tmp_path, cache):
    """arith_mc at its defaults, 20 documents: retention's base, after and change are the run's base, accuracy and
    gain (same model, same documents, same batch size)."""
    result = _run(
        tmp_path,
        "task.n_train=2000",
        "task.n_test=200",  # the task's defaults: the retention entry arith_mc is built at them
        "task.limit=20",
        "task.retention=[arith_mc]",
        "task.retention_limit=20",
        "trainer.lr=0.01",
    )
    metrics = result["metrics"]
    entry = metrics["retention"]["tasks"]["arith_mc"]
    assert entry["base"] == metrics["base_accuracy"] and entry["after"] == metrics["accuracy"]
    assert entry["change"] == pytest.approx(metrics["accuracy"] - metrics["base_accuracy"], abs=1e-12)
    assert entry["n"] == metrics["n"] == 20
    assert entry["stderr"] == pytest.approx(math.hypot(metrics["accuracy_stderr"], metrics["base_accuracy_stderr"]))
    assert metrics["retention"]["mean_change"] == entry["change"]
    lo, hi = metrics["retention"]["mean_change_lo"], metrics["retention"]["mean_change_hi"]
    assert lo == pytest.approx(entry["change"] - 1.959964 * entry["stderr"]) and hi > entry["change"] > lo
    assert result["time"]["retention_s"] > 0


def test_summarise_known_answer():
    base = {
        "a": {"base_accuracy": 0.5, "base_accuracy_stderr": 0.03},
        "b": {"base_accuracy": 0.8, "base_accuracy_stderr": 0.04},
    }
    after = {
        "a": {"accuracy": 0.6, "accuracy_stderr": 0.04, "n": 100},
        "b": {"accuracy": 0.7, "accuracy_stderr": 0.03, "n": 50},
    }
    out = summarise(base, after)
    assert out["tasks"]["a"] == {
        "base": 0.5,
        "after": 0.6,
        "change": pytest.approx(0.1),
        "n": 100,
        "stderr": pytest.approx(0.05),
    }
    assert out["tasks"]["b"]["change"] == pytest.approx(-0.1) and out["tasks"]["b"]["stderr"] == pytest.approx(0.05)
    se = math.sqrt(0.05**2 + 0.05**2) / 2
    assert out["mean_change"] == pytest.approx(0.0, abs=1e-12)
    assert out["mean_change_lo"] == pytest.approx(-1.959964 * se) and out["mean_change_hi"] == pytest.approx(
        1.959964 * se
    )
    no_stderr = summarise({"a": {"base_accuracy": 0.5}}, {"a": {"accuracy": 0.6, "n": 3}})
    assert no_stderr["tasks"]["a"]["stderr"] is None and no_stderr["mean_change_lo"] is None


def test_bad_retention_name_is_one_line_before_anything_runs(tmp_path):
    from loraven.errors import ConfigError
    from loraven.run_config import validate_run_config

    with pytest.raises(ConfigError, match=r"task.retention: 'arc_eazy' is not a task it can score; valid: boolq"):
        validate_run_config(compose_cfg([*FAST_LM, "task.retention=[arc_eazy]"]))
    with pytest.raises(ConfigError, match=r"task.retention_limit=0 is out of range; valid: >= 1"):
        validate_run_config(compose_cfg([*FAST_LM, "task.retention=[arc_easy]", "task.retention_limit=0"]))


def test_rescore_loads_the_base_once_and_is_skipped_the_second_time(tmp_path, cache, monkeypatch, capsys):
    """Three runs on one tiny model, re-scored on their own task and on a second one: one base-model load per
    invocation, every re-score its own contract-valid record linked to its source; the second identical re-score
    is skipped (no load at all). Re-scored on its own task, a run's score is the harness's."""
    import loraven.models

    sources = [
        _run(tmp_path, "adapter=lora", "trainer.lr=0.01"),
        _run(tmp_path, "adapter=dora", "trainer.lr=0.01"),
        _run(tmp_path, "adapter=loraven", "trainer.lr=0.01"),
        _run(tmp_path, "adapter=none", "trainer.lr=0.001"),  # no adapter saved: reported, not scored
    ]
    loads = []
    real = loraven.models.load_model
    monkeypatch.setattr(loraven.models, "load_model", lambda *a, **k: loads.append(a[0]) or real(*a, **k))
    store = tmp_path / "r"

    assert rescore.main([str(store), "tracking=none", "energy=none"]) == 0  # the source's own task
    assert len(loads) == 1
    records = [json.loads(p.read_text()) for p in sorted((store / "rescore").glob("*/result.json"))]
    assert len(records) == 3 and all(not contract_violations(r) for r in records)
    by_source = {r["rescore"]["source_run_id"]: r for r in records}
    for src in sources[:3]:
        mine = by_source[src["run_id"]]
        assert mine["status"] == "completed" and mine["adapter"]["ranks"] == src["adapter"]["ranks"]
        assert mine["rescore"]["source_path"] == str(store / "default" / src["run_id"])
        assert mine["metrics"]["n"] == src["metrics"]["n"] and mine["metrics"]["accuracy"] == src["metrics"]["accuracy"]
        assert mine["metrics"]["base_accuracy"] == src["metrics"]["base_accuracy"]
    assert "full fine-tuning" in capsys.readouterr().err  # the dense run was named, with why

    second = ["task=arith_mc", "task.n_choices=3", "task.n_test=30", "tracking=none", "energy=none"]
    assert rescore.main([str(store / "default"), *second]) == 0
    assert len(loads) == 2  # one more load for three more runs
    records = [json.loads(p.read_text()) for p in sorted((store / "rescore").glob("*/result.json"))]
    assert len(records) == 6
    new = [r for r in records if r["config"]["task"]["n_choices"] == 3]
    assert (
        len(new) == 3 and {r["metrics"]["n"] for r in new} == {30} and {r["metrics"]["chance"] for r in new} == {1 / 3}
    )

    capsys.readouterr()
    assert rescore.main([str(store / "default"), *second]) == 0
    assert len(loads) == 2  # skipped: nothing loaded
    out = capsys.readouterr().out
    assert out.count("skipped (already re-scored)") == 3 and "0 re-scored, 3 already done" in out


def test_rescore_refuses_bad_input_with_one_line(tmp_path, cache, capsys):
    _run(tmp_path, "adapter=lora")
    assert rescore.main([str(tmp_path / "r"), "adapter=dora"]) == 2
    assert "adapter=dora: re-scoring takes only task" in capsys.readouterr().err
    assert rescore.main([str(tmp_path / "r"), "task.limit=0"]) == 2
    assert "task.limit=0 is out of range" in capsys.readouterr().err
    assert rescore.main([str(tmp_path / "nothing-here*")]) == 2
    assert "matches nothing" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("method", ["loraven", "dora"])
def test_lm_eval_cli_scores_the_saved_adapter_to_the_harness_number(method, tmp_path, cache, monkeypatch):
    """``lm_eval --model hf --model_args pretrained=<base>,peft=<adapter>`` on the saved folder: the same documents,
    per-choice log-likelihoods equal to the harness's final evaluation, and the harness's final score. The
    adapter matters: the CLI without ``peft=`` gives other log-likelihoods."""
    from loraven.tasks import lm_scoring

    seen: list[dict] = []  # one dict per evaluate call: base, then final
    real = lm_scoring.progress_lm

    def recording_lm(*args, **kwargs):
        lm, calls = real(*args, **kwargs), {}
        seen.append(calls)
        inner = lm.loglikelihood

        def loglikelihood(requests, disable_tqdm=False):
            out = inner(requests, disable_tqdm)
            for req, (ll, _) in zip(requests, out, strict=True):
                calls[(req.doc_id, *req.args)] = ll
            return out

        lm.loglikelihood = loglikelihood
        return lm

    monkeypatch.setattr(lm_scoring, "progress_lm", recording_lm)
    result = _run(tmp_path, f"adapter={method}", "trainer.lr=0.01", "trainer.steps=8", "rerun=true")
    harness = seen[-1]
    entry = result["artifacts"]["adapter"]
    run_dir = tmp_path / "r" / "default" / result["run_id"]
    from loraven.tasks import build_task

    task = build_task(result["config"]["task"], cache / "data")

    def cli(model_args: str, out: Path) -> tuple[dict, dict]:
        cmd = [sys.executable, "-m", "lm_eval", "--model", "hf", "--model_args", model_args]
        cmd += ["--include_path", task.include_path, "--tasks", "arith_mc", "--batch_size", "8", "--device", "cpu"]
        cmd += ["--log_samples", "--output_path", str(out)]
        env = cli_env(cache, {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"})
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        (results,) = out.rglob("results_*.json")
        (samples,) = out.rglob("samples_arith_mc_*.jsonl")
        lls = {}
        for line in samples.read_text().splitlines():
            sample = json.loads(line)
            for args, resp in zip(sample["arguments"].values(), sample["resps"], strict=True):
                lls[(sample["doc_id"], args["arg_0"], args["arg_1"])] = float(resp[0][0])
        return json.loads(results.read_text())["results"]["arith_mc"], lls

    base_path = entry["base_model"]["path"]
    scores, lls = cli(f"pretrained={base_path},peft={run_dir / 'adapter'},dtype=float32", tmp_path / "cli")
    assert set(lls) == set(harness) and len({k[0] for k in lls}) == result["metrics"]["n"] == 20
    for key, value in lls.items():
        assert harness[key] == pytest.approx(value, abs=1e-4), key
    assert scores["acc,none"] == result["metrics"]["accuracy"]
    _, plain = cli(f"pretrained={base_path},dtype=float32", tmp_path / "cli-base")
    assert max(abs(plain[k] - lls[k]) for k in lls) > 1e-3


def test_retention_off_keeps_the_run_id_it_had_before_the_option():
    """Run ids (and base-score cache keys) of runs without retention are what they were before task.retention
    existed; turning it on is another run."""
    from loraven.track import run_id_for

    cfg = compose_cfg(FAST_LM)
    older = {**cfg, "task": {k: v for k, v in cfg["task"].items() if k not in ("retention", "retention_limit")}}
    assert cfg["task"]["retention"] == [] and run_id_for(cfg) == run_id_for(older)
    assert run_id_for({**cfg, "task": {**cfg["task"], "retention_limit": 50}}) == run_id_for(older)
    on = compose_cfg([*FAST_LM, "task.retention=[arc_easy]"])
    assert run_id_for(on) != run_id_for(cfg)
    assert run_id_for({**on, "task": {**on["task"], "retention_limit": 50}}) != run_id_for(on)
