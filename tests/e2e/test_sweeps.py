"""Sweeps that scale: adapter→scheduler defaults in a multirun, skipped pairs, experiments that pin their
grids, launchers (basic, joblib, submitit_local, SLURM config), resume, W&B one-run-per-job, W&B sweep files."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import yaml
from conftest import CONF, FAST_CLASSIC, ROOT, compose_cfg, results, sweep_args

from loraven.adapters.base import available_adapters, check_combination
from loraven.contract import contract_violations
from loraven.errors import ConfigError, IncompatibleCombination
from loraven.run_config import apply_method_settings
from loraven.run_config import validate_run_config as check_config
from loraven.tasks import build_task

EXPERIMENTS = ("paper_energy", "paper_accuracy", "adapters")


def _pairs(rows: list[dict]) -> set[tuple[str, str, str]]:
    return {(r["adapter"]["type"], r["adapter"]["scheduler"], r["status"]) for r in rows}


def test_multirun_gives_each_adapter_its_scheduler_then_resumes(tmp_path: Path, run_cli) -> None:
    assert "loraven" in available_adapters()
    args = ["-m", "adapter=lora,loraven", *FAST_CLASSIC, f"results_dir={tmp_path}/res", *sweep_args(tmp_path)]
    proc = run_cli(args, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = results(tmp_path / "res")
    assert _pairs(rows) == {("lora", "static", "completed"), ("loraven", "linear", "completed")}
    assert all(not contract_violations(r) for r in rows)
    assert "loraven sweep summary: 2 completed" in proc.stderr
    listed = [line.strip().split(" ", 1)[1] for line in proc.stderr.splitlines() if line.startswith("  #")]
    assert sorted(listed) == sorted(str(tmp_path / "res" / r["experiment"] / r["run_id"] / "result.json") for r in rows)
    # the same sweep again: same configs → same run_ids → nothing re-trained, counted as resumed
    again = run_cli(
        args[:1] + args[1:-2] + [f"hydra.sweep.dir={tmp_path}/multirun2", f"hydra.run.dir={tmp_path}/o"], tmp_path
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert "loraven sweep summary: 2 completed (resumed)" in again.stderr
    assert {r["run_id"] for r in results(tmp_path / "res")} == {r["run_id"] for r in rows}
    assert [r["created_at"] for r in results(tmp_path / "res")] == [r["created_at"] for r in rows]


def test_incompatible_pair_is_an_error_alone_and_a_skip_in_a_sweep(tmp_path: Path, run_cli) -> None:
    single = run_cli(
        ["adapter=lora", "scheduler=energy", *FAST_CLASSIC, f"results_dir={tmp_path}/one", *sweep_args(tmp_path)],
        tmp_path,
    )
    assert single.returncode != 0
    first = single.stderr.strip().splitlines()[0]
    assert "scheduler=energy" in first and "static" in first, single.stderr[-2000:]
    assert not list((tmp_path / "one").rglob("result.json"))
    # joblib launcher, 2 workers: one completed, one skipped with its reason; skip is not a failure
    sweep = run_cli(
        [
            "-m",
            "adapter=lora",
            "scheduler=static,energy",
            "hydra/launcher=joblib",
            "hydra.launcher.n_jobs=2",
            *FAST_CLASSIC,
            "energy=codecarbon",
            f"results_dir={tmp_path}/res",
            *sweep_args(tmp_path),
        ],
        tmp_path,
    )
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    rows = {r["status"]: r for r in results(tmp_path / "res")}
    assert set(rows) == {"completed", "skipped"}
    assert "scheduler=energy" in rows["skipped"]["reason"] and not contract_violations(rows["skipped"])
    energy = rows["completed"]["energy"]
    assert energy["parallel_jobs"] == 2 and energy["tracking_mode"] == "process"
    assert energy["method"].startswith("codecarbon") or energy["method"] == "unavailable"


def test_submitit_local_sweep_summary(tmp_path: Path, run_cli) -> None:
    proc = run_cli(
        [
            "-m",
            "hydra/launcher=submitit_local",
            "hydra.launcher.timeout_min=10",
            "adapter=none,lora",
            *FAST_CLASSIC,
            f"results_dir={tmp_path}/res",
            *sweep_args(tmp_path),
        ],
        tmp_path,
        timeout=400,
    )
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-2000:]
    assert _pairs(results(tmp_path / "res")) == {("none", "static", "completed"), ("lora", "static", "completed")}
    assert "loraven sweep summary: 2 completed" in proc.stderr


def test_paper_energy_runs_its_four_levels(tmp_path: Path, run_cli) -> None:
    proc = run_cli(
        [
            "-m",
            "experiment=paper_energy",
            "seed=0",
            "trainer.steps=20",
            "energy=none",
            "tracking=none",
            f"results_dir={tmp_path}/res",
            *sweep_args(tmp_path),
        ],
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = results(tmp_path / "res")
    assert {r["experiment"] for r in rows} == {"paper_energy"}
    done = {(r["adapter"]["type"], r["adapter"]["scheduler"]) for r in rows if r["status"] == "completed"}
    assert done == {("none", "static"), ("loraven", "static"), ("loraven", "linear"), ("loraven", "energy")}
    skipped = [r for r in rows if r["status"] == "skipped"]
    assert {r["adapter"]["scheduler"] for r in skipped} == {"linear", "energy"} and all(r["reason"] for r in skipped)
    assert all(
        r["adapter"].get("mode") == "replace"
        for r in rows
        if r["adapter"]["type"] == "loraven" and r["status"] == "completed"
    )


def _grid(params: dict[str, str]) -> list[list[str]]:
    keys = list(params)
    return [
        [f"{k}={v}" for k, v in zip(keys, combo, strict=True)]
        for combo in itertools.product(*(str(params[k]).split(",") for k in keys))
    ]


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_pins_a_sweep_whose_every_job_is_valid(name: str) -> None:
    text = (CONF / "experiment" / f"{name}.yaml").read_text()
    assert text.startswith("# @package _global_")
    params = compose_cfg([f"experiment={name}"], hydra_cfg=True)["hydra"]["sweeper"]["params"]
    assert params, f"experiment={name} pins no sweep"
    for job in _grid(params):
        cfg = apply_method_settings(compose_cfg([f"experiment={name}", *job]))
        assert cfg["experiment_name"] == name
        check_config(cfg)
        classic = cfg["task"]["kind"] in ("digits", "regression", "text_cls")
        assert (cfg["model"]["kind"] == "mlp") == classic, job  # MLPs on classic tasks, LMs on LM tasks
        try:
            check_combination(cfg["adapter"]["name"], cfg["scheduler"]["name"])
        except IncompatibleCombination:
            assert name == "paper_energy", f"{job}: an unintended skip"
        if classic and cfg["adapter"]["name"] == "loraven":
            assert cfg["adapter"]["mode"] == "replace" and cfg["trainer"]["steps"] >= 100
        if classic:  # shape errors (a rank above a layer's size) only show once the model exists
            _build_and_adapt(cfg)


def _build_and_adapt(cfg: dict) -> None:
    """Build the job's task, model and adapter exactly as a run would, without training."""
    from loraven.adapters.base import AdapterContext, apply_adapter
    from loraven.models import load_model
    from loraven.tasks.classic import build_classic

    if cfg["adapter"]["name"] == "loraven" or cfg["scheduler"]["name"] == "static":
        task = build_classic(cfg["task"])
        model = load_model(cfg["model"], task.info).model
        apply_adapter(model, cfg["adapter"], cfg["scheduler"], AdapterContext())


def test_classic_tasks_are_seeded_disjoint_and_standardised() -> None:
    from loraven.tasks.classic import build_classic

    for kind, regression in (("digits", False), ("regression", True), ("text_cls", False)):
        cfg = compose_cfg([f"task={kind}"])["task"]
        a, b = build_classic(cfg), build_classic(cfg)
        assert a.fingerprint == b.fingerprint and bool((a.x_test == b.x_test).all())
        assert a.info["regression"] is regression and a.info["in_features"] == a.x_train.shape[1]
        assert abs(float(a.x_train.mean())) < 1e-4
        train_rows = {tuple(r) for r in a.x_train.tolist()}
        overlap = sum(tuple(r) in train_rows for r in a.x_test.tolist())
        assert overlap <= 0.1 * len(a.x_test)  # disjoint indices (identical digits images can repeat)
        other = build_classic({**cfg, "seed": 7})
        assert other.fingerprint != a.fingerprint
    with pytest.raises(ConfigError, match=r"task.test_fraction=1.5 is out of range; valid: \(0, 1\)"):
        build_task({"kind": "digits", "test_fraction": 1.5}, Path("/nonexistent"))


def test_launcher_configs_compose() -> None:
    slurm = compose_cfg(["hydra/launcher=slurm_gpu"], hydra_cfg=True)["hydra"]["launcher"]
    assert slurm["_target_"].endswith("SlurmLauncher") and slurm["gpus_per_node"] == 1 and slurm["partition"]
    assert slurm["max_num_timeout"] >= 1  # time-outs requeue: the run resumes from its checkpoint
    local_slurm = compose_cfg(["hydra/launcher=slurm_local"], hydra_cfg=True)["hydra"]["launcher"]
    assert local_slurm["_target_"].endswith("SlurmLauncher") and local_slurm["partition"] == "debug"
    plain = compose_cfg(["hydra/launcher=submitit_slurm", "hydra.launcher.partition=p"], hydra_cfg=True)
    assert plain["hydra"]["launcher"]["partition"] == "p"
    local = compose_cfg(["hydra/launcher=local_parallel"], hydra_cfg=True)["hydra"]["launcher"]
    assert local["_target_"].endswith("JoblibLauncher") and local["n_jobs"] == 2


def test_wandb_one_run_per_job_grouped_and_tagged(tmp_path: Path, monkeypatch) -> None:
    import wandb

    from loraven.job import run_job

    calls: list[dict] = []
    real_init = wandb.init

    def spy(**kwargs):
        calls.append(kwargs)
        return real_init(**kwargs)

    monkeypatch.setattr(wandb, "init", spy)
    monkeypatch.setenv("LORAVEN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("WANDB_MODE", "offline")
    for seed in (0, 1):
        cfg = compose_cfg(
            [
                *FAST_CLASSIC,
                "tracking=wandb",
                "adapter=lora",
                f"seed={seed}",
                "experiment_name=wbtest",
                f"results_dir={tmp_path}/res",
            ]
        )
        assert run_job(cfg, multirun=True, progress=False)["status"] == "completed"
        assert wandb.run is None  # finished, nothing leaks into the next job
    assert len(calls) == 2
    assert calls[0]["group"] == calls[1]["group"]  # the seeds of one comparison share a group
    for seed, call in enumerate(calls):
        assert call["group"].startswith("wbtest/lora/static/") and call["job_type"] == "train"
        assert {f"seed:{seed}", "scheduler:static", "model:mlp", "method:lora"} <= set(call["tags"])
        assert call["config"]["trainer"]["steps"] == 20 and "${" not in str(call["config"])
        assert Path(call["dir"]).is_relative_to(tmp_path / "res")
    assert len({c["dir"] for c in calls}) == 2


SWEEP_FILES = sorted((ROOT / "sweeps").glob("*.yaml"))


def _sample(spec: dict):
    if "values" in spec:
        return spec["values"][0]
    if "value" in spec:
        return spec["value"]
    return spec.get("min", spec.get("max"))


def _as_override(key: str, value) -> str:
    if isinstance(value, list):
        return f"{key}=[{','.join(map(str, value))}]"
    return f"{key}={value}"


@pytest.mark.parametrize("path", SWEEP_FILES, ids=lambda p: p.name)
def test_wandb_sweep_file_names_only_valid_overrides(path: Path) -> None:
    spec = yaml.safe_load(path.read_text())
    assert spec["program"] == "run.py" and spec["method"] in ("grid", "bayes", "random")
    assert spec["command"][-1] == "${args_no_hyphens}"
    if spec["method"] == "bayes":
        assert spec["metric"]["name"].startswith("eval/") and spec["metric"]["goal"] in ("maximize", "minimize")
    overrides = [_as_override(k, _sample(v)) for k, v in spec["parameters"].items()]
    cfg = compose_cfg(overrides)  # what an agent runs: all parameters together (an unknown key fails here)
    check_config(cfg)
    for key in spec["parameters"]:
        node = cfg
        for part in key.split("."):
            assert part in node, f"{key} is not a key of our config"
            node = node[part]


def test_there_are_sweep_files() -> None:
    assert len(SWEEP_FILES) >= 2
