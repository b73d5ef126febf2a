"""Output a person reads: the end of a run says where its records are, lm-eval's noise is quieted (our bars stay),
sweep tables are never cut in a log file, a sweep run without -m says how to run it, --help describes the tool,
and the configs ship inside the package."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import FAST_LM, ROOT, cli_env, compose_cfg
from omegaconf import OmegaConf

from loraven import CONF_DIR
from loraven.cli.console import print_summary, summary_lines
from loraven.cli.hydra_glue import JOB_POINTER


def _fake_run(results: Path, experiment: str = "default", run_id: str = "abc123", wandb: str | None = "offline"):
    """A stored result.json (and a W&B run folder as W&B lays it out) without running anything."""
    run_dir = results / experiment / run_id
    run_dir.mkdir(parents=True)
    result = {
        "run_id": run_id,
        "status": "completed",
        "reason": None,
        "created_at": "2026-11-24T20:00:00+00:00",
        "adapter": {"type": "lora", "scheduler": "static"},
        "metrics": {"task": "arith_mc", "accuracy": 0.5},
    }
    (run_dir / "result.json").write_text(json.dumps(result))
    if wandb:
        folder = (
            run_dir / "wandb" / f"{wandb}-run-20261124_200000-x1y2z3"
            if wandb == "offline"
            else (run_dir / "wandb" / "run-20261124_200000-x1y2z3")
        )
        folder.mkdir(parents=True)
        (run_dir / "wandb" / "latest-run").symlink_to(folder.name)
    cfg = {"results_dir": str(results), "experiment_name": experiment, "tracking": {"name": "wandb"}}
    return result, cfg, run_dir


def test_summary_names_the_result_file_the_offline_wandb_run_and_its_sync_command(tmp_path: Path, capsys) -> None:
    result, cfg, run_dir = _fake_run(tmp_path / "results")
    folder = run_dir / "wandb" / "offline-run-20261124_200000-x1y2z3"
    assert summary_lines(result, cfg) == [
        f"result: {run_dir / 'result.json'}",
        f"W&B offline run: {folder}",
        f"upload it with: wandb sync {folder}",
    ]
    print_summary(result, cfg)
    err = capsys.readouterr().err
    assert f"wandb sync {folder}\n" in err, "the command must be on one line, whole, copyable"
    # a resumed run made no new W&B run; tracking=none has none; an online run needs no sync
    assert summary_lines({**result, "_resumed": True}, cfg) == [f"result: {run_dir / 'result.json'}"]
    assert summary_lines(result, {**cfg, "tracking": {"name": "none"}}) == [f"result: {run_dir / 'result.json'}"]
    online, online_cfg, online_dir = _fake_run(tmp_path / "online", wandb="online")
    assert summary_lines(online, online_cfg)[1:] == [f"W&B run: {online_dir / 'wandb' / 'run-20261124_200000-x1y2z3'}"]
    # a result that was not saved names no file
    assert summary_lines({**result, "_unsaved": "No space left on device"}, cfg) == []


def test_a_failed_rerun_names_the_failed_attempt_file(tmp_path: Path) -> None:
    result, cfg, run_dir = _fake_run(tmp_path / "results", wandb=None)
    failed = {**result, "status": "failed", "reason": "diverged", "created_at": "2026-11-24T21:00:00+00:00"}
    (run_dir / "result.failed-attempt.json").write_text(json.dumps(failed))
    assert summary_lines(failed, cfg) == [f"result: {run_dir / 'result.failed-attempt.json'}"]


def test_a_run_ends_with_its_paths_and_lm_eval_noise_is_quieted(tmp_path: Path, run_cli) -> None:
    """Tiny model, W&B offline, adapter=lora (peft): the last lines name result.json, the offline W&B run and the
    exact ``wandb sync`` command; lm-eval's expected warnings and per-call bars are gone, our eval bar stays."""
    results = tmp_path / "r"
    args = [a for a in FAST_LM if a != "tracking=none"]
    proc = run_cli(
        [*args, "adapter=lora", "tracking=wandb", f"results_dir={results}", f"hydra.run.dir={tmp_path}/h"],
        tmp_path,
        env={"WANDB_MODE": "offline", "HF_DATASETS_CACHE": str(tmp_path / "hf-datasets"), "PYTHONWARNINGS": "always"},
    )  # every warning shown: only the scoped filters act
    assert proc.returncode == 0, proc.stderr[-3000:]
    (path,) = results.glob("default/*/result.json")
    lines = proc.stderr.splitlines()
    folder = path.parent / "wandb" / os.readlink(path.parent / "wandb" / "latest-run")
    assert folder.name.startswith("offline-run-") and folder.is_dir()
    assert lines[-3:] == [f"result: {path}", f"W&B offline run: {folder}", f"upload it with: wandb sync {folder}"]
    for noise in (
        "Passed an already-initialized model",
        "is not of type `str`",
        "is_gradient_checkpointing",
        "Building contexts",
        "Generating train split",
        "fatal: not a git repository",
    ):
        assert noise not in proc.stderr, noise
    assert "eval arith_mc" in proc.stderr  # our own progress bar stays


def test_lm_eval_quieting_is_scoped_and_says_each_other_warning_once(caplog) -> None:
    import datasets.utils.logging as datasets_logging
    import lm_eval.api.task
    import lm_eval.evaluator

    from loraven.tasks.registry import LMEvalNoise, quiet_lm_eval

    LMEvalNoise.seen.clear()
    logger = logging.getLogger("lm_eval.models.huggingface")
    before, bar, git = logging.getLogger("lm_eval").level, lm_eval.api.task.tqdm, lm_eval.evaluator.get_git_commit_hash
    assert datasets_logging.is_progress_bar_enabled()
    with caplog.at_level(logging.WARNING):
        with quiet_lm_eval():
            assert lm_eval.api.task.tqdm([1], total=1).disable  # lm-eval's own bars are off inside
            assert not datasets_logging.is_progress_bar_enabled()  # and the datasets library's
            assert lm_eval.evaluator.get_git_commit_hash() is None  # no `git describe` in the working directory
            logger.warning("`pretrained` model kwarg is not of type `str`. Many other model arguments may be ignored.")
            logger.warning("some other warning")
            logger.warning("some other warning")
            logger.info("Building contexts for arith_mc on rank 0...")
            logger.error("a real error")
        logger.warning("some other warning")  # outside the scope: nothing is filtered
    messages = [r.getMessage() for r in caplog.records if r.name.startswith("lm_eval")]
    assert messages == ["some other warning", "a real error", "some other warning"]
    assert logging.getLogger("lm_eval").level == before and not logger.filters
    assert lm_eval.api.task.tqdm is bar and lm_eval.evaluator.get_git_commit_hash is git  # restored
    assert datasets_logging.is_progress_bar_enabled()


def _sweep_dir(tmp_path: Path, reason: str, results: Path | None = None) -> Path:
    """Two job pointers as hydra_glue.write_pointer leaves them: a completed job with its result file, a failed
    one whose config was refused (no file)."""
    sweep = tmp_path / "multirun"
    for i, (status, why) in enumerate([("completed", None), ("failed", reason)]):
        job = sweep / str(i)
        job.mkdir(parents=True)
        summary = {
            "adapter": "loraven",
            "scheduler": "energy",
            "seed": i,
            "accuracy": 0.91234,
            "stderr": 0.0123,
            "n": 200,
            "at_chance": False,
            "model": "tiny-llama-random",
            "train_s": 12.5,
        }
        path = str(results / "paper_energy" / f"r{i}" / "result.json") if results and status == "completed" else None
        (job / JOB_POINTER).write_text(
            json.dumps(
                {
                    "run_id": f"r{i}",
                    "status": status,
                    "reason": why,
                    "experiment": "paper_energy",
                    "summary": summary,
                    "result_path": path,
                }
            )
        )
    return sweep


def test_sweep_table_in_a_log_file_is_never_wrapped_or_cut(tmp_path: Path, capsys, monkeypatch) -> None:
    from loraven.sweep import SweepSummary

    monkeypatch.delenv("WANDB_MODE", raising=False)

    reason = "RuntimeError: " + " ".join(f"word{i}" for i in range(40)) + " THE-END"  # ~300 characters
    results = tmp_path / "results"
    sweep = _sweep_dir(
        tmp_path / "a very long folder name to make the title longer than eighty columns", reason, results
    )
    config = OmegaConf.create(
        {
            "hydra": {"sweep": {"dir": str(sweep)}},
            "results_dir": str(tmp_path / "results"),
            "tracking": {"name": "wandb", "mode": "offline"},
        }
    )
    with pytest.raises(SystemExit):  # one job failed
        SweepSummary().on_multirun_end(config)
    err = capsys.readouterr().err  # captured: not a TTY, as in a log file
    (failed_row,) = [line for line in err.splitlines() if "failed" in line and "word0" in line]
    assert reason in failed_row, "the reason must be whole, on the row's one line"
    assert str(sweep) in err, "the title must not be wrapped mid-path"
    (ok_row,) = [line for line in err.splitlines() if line.startswith("│ 0 ")]
    cells = [c.strip() for c in ok_row.split("│")[1:-1]]
    header = [c.strip() for c in next(x for x in err.splitlines() if "run_id" in x).split("┃")[1:-1]]
    row = dict(zip(header, cells, strict=True))
    assert row["run_id"] == "r0" and row["model"] == "tiny-llama-random" and row["n"] == "200"
    assert row["accuracy"] == "0.9123" and row["stderr"] == "0.0123" and row["at chance"] == "no"
    assert row["scheduler"] == "energy"
    run = results / "paper_energy" / "r0"
    assert f"  #0 {run / 'result.json'}" in err.splitlines() and "<run_id>" not in err
    assert f"upload this sweep's offline W&B runs: wandb sync {run}/wandb/offline-run-*" in err.splitlines()


@pytest.mark.parametrize("experiment", ["paper_energy", "adapters"])
def test_a_sweep_experiment_without_multirun_says_how_to_run_it(tmp_path: Path, run_cli, experiment: str) -> None:
    proc = run_cli([f"experiment={experiment}", f"results_dir={tmp_path}/r"], tmp_path, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"error: experiment={experiment} is a sweep")
    assert lines[0].endswith(f"python run.py -m experiment={experiment} results_dir={tmp_path}/r")
    assert not (tmp_path / "r").exists(), "nothing may run"


def test_every_experiment_with_sweeper_params_is_a_sweep_and_paper_speedup_is_not() -> None:
    sweeps = {
        p.stem
        for p in (CONF_DIR / "experiment").glob("*.yaml")
        if compose_cfg([f"experiment={p.stem}"], hydra_cfg=True)["hydra"]["sweeper"].get("params")
    }
    assert sweeps == {"adapters", "commonsense", "glue", "gsm8k", "paper_accuracy", "paper_energy", "tune"}


def test_help_describes_the_tool_its_groups_and_where_results_go(tmp_path: Path, run_cli) -> None:
    proc = run_cli(["--help"], tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    assert out.startswith("loraven: fine-tune a model with LoRA, DoRA, LoRA-AR or LoRAven")
    for group in ("adapter", "energy", "experiment", "model", "scheduler", "task", "tracking", "trainer"):
        options = sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))
        assert f"{group}: {', '.join(options)}" in out, group
    assert "hydra/launcher: basic, joblib, local_parallel" in out
    assert "python run.py -m experiment=paper_energy" in out and "python -m analysis" in out
    assert "results/<experiment_name>/<run_id>/result.json" in out and "wandb sync" in out
    assert "Powered by Hydra" not in out and not (tmp_path / "outputs").exists()


def test_the_configs_ship_in_the_wheel_and_resolve_from_an_installed_copy(tmp_path: Path) -> None:
    """Build the wheel from a copy of the sources, unpack it as site-packages would, and compose the config and
    read an adapter file from there (not from a source tree)."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for pkg in ("loraven", "analysis", "conf"):
        shutil.copytree(ROOT / pkg, src / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            ".",
            "-w",
            str(tmp_path / "dist"),
        ],
        cwd=src,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("loraven-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert CONF_DIR == ROOT / "conf"  # the source tree's configs live at the top level (Hydra's convention)
    shipped = {f"loraven/conf/{p.relative_to(CONF_DIR)}" for p in CONF_DIR.rglob("*.yaml")}
    assert shipped and shipped <= names, sorted(shipped - names)
    assert "loraven/tasks/templates/arith_mc.yaml" in names
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    probe = (
        "import loraven, json; from hydra import compose, initialize_config_dir;"
        "from loraven.bench.methods import method_configs;"
        "ctx = initialize_config_dir(config_dir=str(loraven.CONF_DIR), version_base='1.3'); ctx.__enter__();"
        "cfg = compose(config_name='config', overrides=['experiment=paper_energy']);"
        "print(json.dumps({'conf': str(loraven.CONF_DIR), 'exp': cfg.experiment_name,"
        " 'r': method_configs('lora', 4)[0]['r']}))"
    )
    env = {**cli_env(tmp_path / "cache"), "PYTHONPATH": str(site)}
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert Path(got["conf"]) == site / "loraven" / "conf"
    assert got["exp"] == "paper_energy" and got["r"] == 4
