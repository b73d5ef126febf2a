"""task=commonsense / task=glue end to end: a run records every task, and the harness scores each document
exactly as lm-eval's own CLI does on the same YAMLs, data and model."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import cli_env, compose_cfg, results

from loraven.tasks import benchmarks

pytestmark = pytest.mark.slow


def test_commonsense_run_records_all_eight_tasks(run_cli, tmp_path):
    """``python run.py task=commonsense task.limit=2`` on the tiny model: eight per-task scores, before and after."""
    proc = run_cli(
        [
            "task=commonsense",
            "task.limit=2",
            "task.max_train_docs=20",
            "model=tiny_llama",
            "trainer=smoke",
            "energy=none",
            "tracking=none",
            f"results_dir={tmp_path / 'results'}",
            f"hydra.run.dir={tmp_path / 'outputs'}",
        ],
        cwd=tmp_path,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (result,) = results(tmp_path / "results")
    metrics = result["metrics"]
    names = list(benchmarks.SUITES["commonsense"])
    assert result["status"] == "completed" and metrics["task"] == "commonsense"
    for key in ("per_task", "base_per_task"):
        assert list(metrics[key]) == names
        for name, entry in metrics[key].items():
            assert entry["n"] == 2 and 0.0 <= entry["accuracy"] <= 1.0, (key, name)
            assert entry["scores"]["acc,none"] == entry["accuracy"]
            assert set(entry["stderrs"]) == set(entry["scores"])
    with_norm = {n for n, e in metrics["per_task"].items() if "acc_norm,none" in e["scores"]}
    assert with_norm == {"piqa", "hellaswag", "arc_easy", "arc_challenge", "openbookqa"}
    per_task = [e["accuracy"] for e in metrics["per_task"].values()]
    assert metrics["accuracy"] == pytest.approx(sum(per_task) / 8)  # the headline is the macro average
    assert metrics["n"] == 16 and metrics["metric"] == "acc"


def test_harness_loglikelihoods_equal_lm_eval_cli(session_cache, tmp_path, monkeypatch):
    """Per document and per choice, the in-memory harness path (evaluate.evaluate) and ``lm_eval --include_path``
    on the written YAMLs give the same log-likelihoods: same prompts, same documents, same numbers."""
    import torch

    from loraven import evaluate as evaluate_mod
    from loraven.models import build_tiny_llama
    from loraven.tasks import build_task, lm_scoring

    monkeypatch.setenv("LORAVEN_CACHE", str(session_cache))
    names, limit = ["boolq", "winogrande", "arc_easy", "hellaswag"], 4
    model, tok = build_tiny_llama(seed=3)
    model_dir = tmp_path / "model"
    model.save_pretrained(model_dir)
    tok.save_pretrained(model_dir)

    seen: dict[tuple, float] = {}
    real_progress_lm = lm_scoring.progress_lm

    def recording_lm(*args, **kwargs):
        lm = real_progress_lm(*args, **kwargs)
        inner = lm.loglikelihood

        def loglikelihood(requests, disable_tqdm=False):
            out = inner(requests, disable_tqdm)
            for req, (ll, _) in zip(requests, out, strict=True):
                seen[(req.task_name, req.doc_id, *req.args)] = ll
            return out

        lm.loglikelihood = loglikelihood
        return lm

    monkeypatch.setattr(lm_scoring, "progress_lm", recording_lm)
    task_cfg = {**compose_cfg(["task=commonsense", f"task.limit={limit}"])["task"], "names": names}
    torch.manual_seed(0)
    task = build_task(task_cfg, session_cache / "data")
    evaluate_mod.evaluate(model, tok, task, batch_size=8)

    out = tmp_path / "cli"
    cmd = [sys.executable, "-m", "lm_eval", "--model", "hf", "--model_args", f"pretrained={model_dir},dtype=float32"]
    cmd += ["--include_path", task.include_path, "--tasks", ",".join(names), "--limit", str(limit)]
    cmd += ["--batch_size", "1", "--device", "cpu", "--log_samples", "--output_path", str(out)]
    env = cli_env(session_cache, {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"})
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]

    cli: dict[tuple, float] = {}
    for name in names:
        (samples,) = out.rglob(f"samples_{name}_*.jsonl")
        for line in samples.read_text().splitlines():
            sample = json.loads(line)
            for args, resp in zip(sample["arguments"].values(), sample["resps"], strict=True):
                cli[(name, sample["doc_id"], args["arg_0"], args["arg_1"])] = float(resp[0][0])
    assert {k[0] for k in cli} == set(names) and len({k[:2] for k in cli}) == limit * len(names)
    assert set(cli) == set(seen)  # the same documents, prompts and choices
    for key, value in cli.items():
        assert seen[key] == pytest.approx(value, abs=1e-3, rel=1e-5), key
