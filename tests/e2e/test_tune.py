"""Issue 17: fair comparisons by Hydra's Optuna sweeper — searches on the validation split, failed trials
recorded FAIL (never 0), resumable SQLite studies, per-method parameter budgets and the "tuned" table."""

from __future__ import annotations

import json
import math
from pathlib import Path

import optuna
import pandas as pd
import pytest
import yaml
from conftest import FAST_CLASSIC, FAST_LM, ROOT, compose_cfg, results, sweep_args

from loraven.adapters.base import AdapterContext, apply_adapter, fit_param_budget
from loraven.errors import ConfigError
from loraven.models import load_model
from loraven.search import direction_for, objective, storage_url
from loraven.tasks import build_task, task_settings
from loraven.tasks.classic import split_indices
from loraven.tasks.kinds.arith_mc import generate
from loraven.tasks.splits import carve_indices, lm_splits

SEARCH = ["-m", "hydra/sweeper=optuna", "task.validation_fraction=0.1", *FAST_LM]


def _study(store: Path, experiment: str = "default", adapter: str = "loraven") -> optuna.Study:
    return optuna.load_study(study_name=f"{experiment}-{adapter}", storage=storage_url(store, experiment))


def test_three_trial_search_gives_three_learning_rates_a_best_trial_and_resumes(tmp_path: Path, run_cli) -> None:
    store = tmp_path / "r"
    args = [*SEARCH, "trainer.lr=tag(log, interval(1e-4, 1e-2))", f"results_dir={store}"]
    proc = run_cli([*args, "hydra.sweeper.n_trials=3", *sweep_args(tmp_path)], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = results(store)
    lrs = {r["config"]["trainer"]["lr"] for r in runs}
    assert len(runs) == 3 and len(lrs) == 3
    assert all(r["status"] == "completed" and r["metrics"]["split"] == "validation" for r in runs)
    study = _study(store)
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 3
    assert {t.params["trainer.lr"] for t in study.trials} == lrs
    assert study.direction.name == "MAXIMIZE"
    assert study.best_value == max(r["metrics"]["accuracy"] for r in runs)  # the run's own number, as reported
    best = yaml.safe_load((tmp_path / "multirun" / "optimization_results.yaml").read_text())
    assert best["best_params"]["trainer.lr"] == study.best_params["trainer.lr"]
    # the same command resumes the study: n_trials is its total, so one more trial runs for n_trials=4
    more = run_cli(
        [*args, "hydra.sweeper.n_trials=4", f"hydra.sweep.dir={tmp_path}/again", f"hydra.run.dir={tmp_path}/outputs"],
        tmp_path,
    )
    assert more.returncode == 0, more.stderr[-3000:]
    assert len(_study(store).trials) == 4 and len(results(store)) == 4
    assert len(list((tmp_path / "again").glob("*/loraven_job.json"))) == 1


def test_a_diverging_trial_is_failed_in_the_study_and_the_search_goes_on(tmp_path: Path, run_cli) -> None:
    store = tmp_path / "r"
    proc = run_cli(
        # a seeded random sampler draws 3e-3, 1e30, 1e-3: a trial runs after the divergence. (Not the
        # grid sampler: the plugin lets a FAIL on the grid's last point escape as "Study.stop ... outside".)
        [
            *SEARCH,
            "hydra/sweeper/sampler=random",
            "hydra.sweeper.sampler.seed=2",
            "hydra.sweeper.n_trials=3",
            "trainer.grad_clip=null",
            "trainer.lr=choice(1e30,1e-3,3e-3)",
            f"results_dir={store}",
            *sweep_args(tmp_path),
        ],
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]  # a search with a completed trial succeeded
    assert "1 trial(s) failed and were recorded FAIL" in proc.stderr
    trials = _study(store).trials
    assert [(t.params["trainer.lr"], t.state.name, t.value is None) for t in trials] == [
        (3e-3, "COMPLETE", False),
        (1e30, "FAIL", True),
        (1e-3, "COMPLETE", False),
    ]  # FAIL, never a score of 0
    rows = {r["config"]["trainer"]["lr"]: r for r in results(store)}
    assert rows[1e30]["status"] == "failed" and rows[1e30]["reason"].startswith("diverged")


def test_a_search_never_reads_the_test_split(tmp_path: Path, run_cli) -> None:
    # a trial forced onto the test split stops the search before anything runs, with one message
    proc = run_cli(
        [
            *SEARCH,
            "hydra.sweeper.n_trials=2",
            "trainer.lr=tag(log, interval(1e-4, 1e-2))",
            "task.eval_split=test",
            f"results_dir={tmp_path}/r",
            *sweep_args(tmp_path),
        ],
        tmp_path,
    )
    assert proc.returncode != 0 and "must not read the test split" in proc.stderr
    assert not list((tmp_path / "r").rglob("result.json"))
    # in validation mode the test documents are not even written for lm-eval
    cfg = compose_cfg(
        ["task.n_train=200", "task.n_test=20", "task.validation_fraction=0.1", "task.eval_split=validation"]
    )
    task = build_task(cfg["task"], tmp_path / "data")
    folder = Path(task.include_path)
    assert task.eval_split == "validation" and sorted(p.name for p in folder.glob("*.jsonl")) == [
        "train.jsonl",
        "validation.jsonl",
    ]
    assert "test_split: validation" in (folder / "arith_mc.yaml").read_text()
    # the objective is the run's own metric; a failed run gives no value (a FAIL trial), not 0
    assert objective({"status": "completed", "metrics": {"accuracy": 0.4}}) == 0.4
    assert objective({"status": "failed", "metrics": {"accuracy": None}}) is None
    assert objective({"status": "completed", "metrics": {"accuracy": math.nan}}) is None
    assert direction_for({"kind": "regression"}) == "minimize" and direction_for({"kind": "arith_mc"}) == "maximize"


def test_validation_split_is_carved_from_training_data_disjoint_and_seeded() -> None:
    docs = generate(1234, 200, 40)
    cfg = {"validation_fraction": 0.25, "eval_split": "validation"}
    parts = lm_splits(docs, cfg, seed=1234)
    questions = {name: {d["question"] for d in rows} for name, rows in parts.items()}
    test = {d["question"] for d in docs["test"]}
    assert len(questions["validation"]) == 50 and len(questions["train"]) == 150
    assert not questions["validation"] & questions["train"] and not questions["validation"] & test
    assert questions["validation"] <= {d["question"] for d in docs["train"]}  # from training data, never test
    assert lm_splits(docs, cfg, seed=1234) == parts  # deterministic per seed
    assert lm_splits(docs, cfg, seed=7)["validation"] != parts["validation"]
    test_mode = lm_splits(docs, {"validation_fraction": 0.25}, seed=1234)
    assert test_mode["train"] == parts["train"] and test_mode["test"] == docs["test"]  # same training data
    train_idx, test_idx = split_indices(100, 0.2, 3)
    kept, held = carve_indices(len(train_idx), 0.1, 3)
    assert not set(train_idx[held]) & set(test_idx) and not set(train_idx[held]) & set(train_idx[kept])
    digits = build_task(
        compose_cfg([*FAST_CLASSIC, "task.validation_fraction=0.1", "task.eval_split=validation"])["task"],
        Path("unused"),
    )
    assert digits.eval_split == "validation" and digits.info["n_test"] == round(0.1 * (1797 - 359))


@pytest.mark.parametrize(
    "overrides, words",
    [
        (["task.eval_split=valid"], ["task.eval_split='valid'", "test, validation"]),
        (["task.eval_split=validation"], ["validation_fraction"]),
        (["task.validation_fraction=1.5"], ["validation_fraction=1.5", "0.5"]),
    ],
)
def test_bad_split_options_are_one_clear_error(overrides: list[str], words: list[str]) -> None:
    with pytest.raises(ConfigError) as err:
        task_settings(compose_cfg(overrides)["task"])
    assert all(w in str(err.value) for w in words)


@pytest.mark.parametrize("adapter", ["lora", "dora", "loraven", "lora_ar"])
def test_param_budget_fits_every_method_to_one_trainable_count(adapter: str) -> None:
    budget = 9000
    cfg = compose_cfg(
        [
            "model=tiny_llama",
            f"adapter={adapter}",
            f"adapter.param_budget={budget}",
            *(["adapter.top_n_percentile=1.0"] if adapter == "lora_ar" else []),
        ]
    )
    model = load_model(cfg["model"]).model
    fitted, info = fit_param_budget(model, cfg["adapter"])
    count = apply_adapter(model, cfg["adapter"], cfg["scheduler"], AdapterContext()).trainable_param_count()
    assert info["budget_applied"] and fitted.param_budget is None  # applied once, never fitted again
    if adapter == "lora_ar":  # its own budget mode: equal up to one rank step of one layer
        assert abs(count - budget) <= 64 + 128
    else:  # the largest rank that fits: one more rank would exceed the budget
        size = "r_max" if adapter == "loraven" else "r"
        bigger = load_model(cfg["model"]).model
        grown = {**fitted.dump(), size: getattr(fitted, size) + 1}
        over = apply_adapter(bigger, grown, cfg["scheduler"], AdapterContext())
        assert count <= budget < over.trainable_param_count()


def test_param_budget_below_the_smallest_rank_names_the_minimum() -> None:
    cfg = compose_cfg(["model=tiny_llama", "adapter=lora", "adapter.param_budget=10"])
    with pytest.raises(ConfigError, match=r"param_budget=10 is below .*adapter\.r=1 needs 2176 trainable"):
        fit_param_budget(load_model(cfg["model"]).model, cfg["adapter"])


def _record(role: str | None, seed: int, acc: float, lr: float, split: str = "test") -> dict:
    return {
        "run_id": f"{role}-{seed}-{split}",
        "status": "completed",
        "reason": None,
        "created_at": "x",
        "experiment": "tuned",
        "seed": seed,
        "config": {
            "seed": seed,
            "trainer": {"lr": lr},
            "tuning": {"role": role, "searched": ["trainer.lr"] if role == "tuned" else []},
        },
        "model": {"name": "m", "total_params": 10, "trainable_params": 1000},
        "adapter": {
            "type": "lora",
            "scheduler": "static",
            "ranks": {},
            "label": "LoRA",
            "order": 20,
            "baseline": False,
        },
        "task": {"kind": "text_cls", "family": "text-classification", "metric": "acc", "higher_is_better": True},
        "metrics": {
            "task": "text_cls",
            "metric": "acc",
            "accuracy": acc,
            "accuracy_stderr": 0.03,
            "n": 200,
            "split": split,
        },
        "time": {},
        "energy": {},
        "env": {},
    }


def test_tuned_table_shows_intervals_n_chosen_lr_and_params_and_skips_validation(tmp_path: Path) -> None:
    from analysis.load import runs_frame
    from analysis.tables import accuracy_table
    from analysis.tuned import display_tuned, tuned_table

    records = [_record("tuned", s, a, 2e-3) for s, a in enumerate((0.8, 0.82, 0.84))]
    records += [_record("untuned", s, a, 3e-4) for s, a in enumerate((0.6, 0.62, 0.64))]
    records += [_record(None, 0, 0.99, 5e-3, split="validation")]  # a search trial: never a result
    frame = runs_frame(records)
    table = tuned_table(frame)
    row = table.iloc[0]
    assert len(table) == 1 and row["tuned_n"] == 3 and row["untuned_n"] == 3
    assert row["tuned_lo"] < 0.82 < row["tuned_hi"] and row["tuned_lr"] == 2e-3 and row["chosen"] == "trainer.lr=0.002"
    assert row["gain"] == pytest.approx(0.2) and row["gain_lo"] > 0
    shown = display_tuned(table).iloc[0]
    assert shown["trainable params"] == "1,000" and "(n=3)" in shown["tuned accuracy"]
    plain = runs_frame([_record(None, 0, 0.7, 3e-4), _record(None, 1, 0.99, 5e-3, split="validation")])
    assert set(accuracy_table(frame)["level"]) == {"not measured"}  # tuning runs: their own table only
    assert accuracy_table(plain)["mean"].dropna().tolist() == [0.7]  # a validation-scored trial never counts


def test_tune_driver_searches_then_runs_tuned_and_untuned_seeds(tmp_path: Path, session_cache: Path) -> None:
    import subprocess
    import sys

    from conftest import cli_env

    store = tmp_path / "r"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "loraven.tune",
            "--methods",
            "lora",
            "--trials",
            "2",
            "--seeds",
            "0,1",
            "--results",
            str(store),
            "--",
            *FAST_LM,
            f"hydra.run.dir={tmp_path}/outputs",
        ],
        cwd=ROOT,
        env=cli_env(session_cache),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "lora: search done" in proc.stdout and "lora: tuned runs" in proc.stdout
    summary = json.loads((store / "tuned" / "summary.json").read_text())
    best_lr = summary["methods"]["lora"]["best"]["params"]["trainer.lr"]
    finals = results(store / "tuned")
    roles = pd.Series([r["config"]["tuning"]["role"] for r in finals]).value_counts().to_dict()
    assert roles == {"tuned": 2, "untuned": 2}
    assert {r["config"]["trainer"]["lr"] for r in finals if r["config"]["tuning"]["role"] == "tuned"} == {best_lr}
    assert all(r["metrics"]["split"] == "test" for r in finals)
    assert all(r["metrics"]["split"] == "validation" for r in results(store / "tune"))


def test_a_trial_left_running_by_a_killed_search_is_failed_and_not_counted(tmp_path: Path) -> None:
    from loraven.search import prepare_storage

    url = storage_url(tmp_path / "store", "default")
    assert prepare_storage(url, "default-lora") == 0  # no study yet; its folder now exists
    study = optuna.create_study(study_name="default-lora", storage=url, direction="maximize")
    study.tell(study.ask(), 0.5)
    study.ask()  # the killed search's trial: RUNNING forever
    assert prepare_storage(url, "default-lora") == 1  # one finished; the interrupted one is run again
    assert [t.state.name for t in optuna.load_study(study_name="default-lora", storage=url).trials] == [
        "COMPLETE",
        "FAIL",
    ]
