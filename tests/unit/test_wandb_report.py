"""The W&B side without a sweep: run naming (group, job type, tags), per-task keys, the report spec, its key check
on hand-built runs with known keys, the offline build (no network, the spec and the publish command) and the
translation into wandb-workspaces' objects. Real offline runs: tests/e2e/test_wandb_dashboard.py."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest
from conftest import compose_cfg
from fake_store import energy_store

from analysis import cli, wandb_spec
from analysis.wandb_runs import RunLog, flat_summary, fold, tables
from loraven import wandb_layout as layout

# --------------------------------------------------------------------------- naming the runs


def test_seeds_share_a_group_and_anything_else_splits_it() -> None:
    base = compose_cfg(["model=tiny_llama", "experiment_name=exp"])
    group = layout.comparison_group(base)
    assert group.startswith(f"exp/{base['adapter']['name']}/{base['scheduler']['name']}/")
    assert layout.comparison_group({**base, "seed": 7}) == group  # seeds inside a group
    assert layout.comparison_group({**base, "tracking": {"name": "none"}}) == group  # not what is computed
    other_lr = {**base, "trainer": {**base["trainer"], "lr": 1e-2}}
    other_meter = {**base, "energy": {"name": "nvml"}}
    other_scheduler = {**base, "scheduler": {**base["scheduler"], "name": "energy"}}
    assert len({group, *map(layout.comparison_group, (other_lr, other_meter, other_scheduler))}) == 4


def test_job_type_and_tags() -> None:
    cfg = compose_cfg(["model=tiny_llama", "seed=3"])
    assert layout.job_type(cfg) == "train"
    assert layout.job_type({**cfg, "job": "bench"}) == "bench"
    assert layout.job_type({**cfg, "task": {**cfg["task"], "eval_split": "validation"}}) == "validation"
    tags = layout.tags({**cfg, "tuning": {"role": "tuned"}})
    assert {f"method:{cfg['adapter']['name']}", "seed:3", "model:tiny_llama", "tuning:tuned"} <= set(tags)


def test_per_task_scores_become_eval_task_metric_keys() -> None:
    per_task = {
        "arc_easy": {
            "accuracy": 0.5,
            "n": 50,
            "scores": {"acc,none": 0.5, "acc_norm,none": 0.36},
            "stderrs": {"acc,none": 0.07, "acc_norm,none": 0.069},
        },
        "gsm8k": {"n": 10, "scores": {"exact_match,strict-match": 0.1, "alias": "gsm8k"}, "stderrs": {}},
    }
    assert layout.per_task_metrics(per_task) == {
        "eval/arc_easy/acc": 0.5,
        "eval/arc_easy/acc_norm": 0.36,
        "eval/arc_easy/acc_stderr": 0.07,
        "eval/arc_easy/acc_norm_stderr": 0.069,
        "eval/arc_easy/n": 50,
        "eval/gsm8k/exact_match_strict-match": 0.1,
        "eval/gsm8k/n": 10,
    }
    assert layout.per_task_metrics(None) == {}


def test_conditions_select_runs() -> None:
    dynamic = {"config_not": {"scheduler.name": "static"}}
    assert layout.applies(dynamic, {"scheduler": {"name": "linear"}}, set())
    assert not layout.applies(dynamic, {"scheduler": {"name": "static"}}, set())
    assert not layout.applies(dynamic, {}, set())  # unset is not "not static"
    assert layout.applies({"logs_suffix": "_allocation"}, {}, {"x_allocation"})
    assert not layout.applies({"logs_suffix": "_allocation"}, {}, {"rank_trace"})
    assert layout.applies(None, {}, set())


# --------------------------------------------------------------------------- reading a run's records


def test_fold_keeps_the_last_summary_and_names_tables_in_both_forms() -> None:
    records = [
        {"type": "run", "run": {"run_id": "a1", "run_group": "g", "job_type": "train", "tags": ["t"],
                                "config": {"update": {"adapter": {"name": "m"}, "_wandb": {}}}}},
        {"type": "metric", "metric": {"name": "train/loss", "summary": {"min": True}}},
        {"type": "history", "history": {"item": {"_step": 1, "train/step": 1, "train/loss": 3.0}}},
        {"type": "summary", "summary": {"update": {"train/loss": {"min": 3.0, "last": 3.0}}}},
        {"type": "history", "history": {"item": {"_step": 2, "train/step": 2, "train/loss": 4.0}}},
        {"type": "summary", "summary": {"update": {"train/loss": {"min": 3.0, "last": 4.0}, "gone": 1}}},
        {"type": "summary", "summary": {"update": {"t1._type": "table-file", "t1.nrows": 3}, "remove": ["gone"]}},
        {"type": "summary", "summary": {"update": {"t2": {"_type": "table-file", "nrows": 2}, "status": "completed"}}},
        {"type": "artifact", "artifact": {"name": "result-x", "type": "run-result",
                                          "manifest": {"contents": [{"path": "result.json", "digest": "abc"}]}}},
        {"type": "exit", "exit": {"exit_code": 0}},
    ]  # fmt: skip
    run = fold(records, Path("x.wandb"))
    assert (run.run_id, run.group, run.job_type, run.tags, run.exit_code) == ("a1", "g", "train", ["t"], 0)
    assert run.keys("config") == {"adapter.name"} and run.keys("history") == {"train/step", "train/loss"}
    assert {"train/loss.min", "train/loss.last", "status"} <= run.keys("summary") and "gone" not in run.summary
    assert run.value("summary", "train/loss.last") == 4.0 and run.value("history", "train/loss") == 4.0
    assert run.keys("table") == {"t1", "t2"} and tables(run.summary)["t1"]["nrows"] == 3
    assert run.artifacts == [{"name": "result-x", "type": "run-result", "files": {"result.json": "abc"}}]
    assert run.status == "completed"
    assert flat_summary({"_step": 2, "x": {"last": 1}, "y": {"a": 1}}) == {"x.last": 1, "y": {"a": 1}}


def test_the_reader_runs_offline_and_is_never_handed_a_key(monkeypatch) -> None:
    import subprocess

    from analysis import wandb_runs

    seen: dict[str, Any] = {}

    def fake_run(cmd, **kwargs):
        seen.update(cmd=cmd, env=kwargs["env"])
        return subprocess.CompletedProcess(cmd, 0, stdout='{"num":1,"type":"exit","exit":{"exit_code":0}}\n')

    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.setattr(wandb_runs.subprocess, "run", fake_run)
    assert list(wandb_runs.inspect_records("run-x.wandb")) == [{"num": 1, "type": "exit", "exit": {"exit_code": 0}}]
    assert seen["cmd"][-4:] == ["leet", "inspect", "--json", "run-x.wandb"]
    assert seen["env"]["WANDB_MODE"] == "offline" and "WANDB_API_KEY" not in seen["env"]


# --------------------------------------------------------------------------- the key check


def _run(summary: dict[str, Any], history: dict[str, Any], config: dict[str, Any], **kw: Any) -> RunLog:
    return RunLog(
        path=Path("x"),
        summary={"status": "completed", **summary},
        history=[history],
        history_keys=set(history),
        config=config,
        **kw,
    )


def _logged_runs() -> list[RunLog]:
    """A LoRAven-like run (dynamic scheduler: rank per step) and a LoRA-AR-like one (an allocation table)."""
    common = {
        "metrics/accuracy": 0.5,
        "energy/kwh": 1e-6,
        "time/step_ms_median": 20.0,
        "adapter/size/value": 8,
    }
    config = {"trainer": {"lr": 3e-4}}
    dynamic = _run(
        common,
        {layout.STEP: 4, "train/loss": 3.0, "train/loraven/rank_mean": 5.0},
        {**config, "adapter": {"name": "a"}, "scheduler": {"name": "linear"}},
    )
    static = _run(
        {**common, "lora_ar_allocation": {"_type": "table-file"}},
        {layout.STEP: 4, "train/loss": 3.0},
        {**config, "adapter": {"name": "b"}, "scheduler": {"name": "static"}},
    )
    return [dynamic, static]


def test_every_panel_key_found_in_the_runs_passes() -> None:
    check = wandb_spec.check_runs(wandb_spec.build_spec("me", "p"), _logged_runs())
    assert check.ok, check.missing
    assert check.notes == [] and check.runs_read == 2


def test_a_renamed_panel_key_fails_and_names_the_key() -> None:
    spec = wandb_spec.build_spec("me", "p")
    spec["panels"][0]["keys"][1]["key"] = "metrics/acc"  # the scatter's y
    check = wandb_spec.check_runs(spec, _logged_runs())
    assert len(check.missing) == 1
    assert "'metrics/acc'" in check.missing[0] and "closest logged key: 'metrics/accuracy'" in check.missing[0]
    assert "none of the 2 completed runs" in check.missing[0]


def test_a_metric_the_runs_stopped_logging_fails() -> None:
    runs = _logged_runs()
    for run in runs:  # the harness renamed time/step_ms_median
        run.summary["time/step_median_ms"] = run.summary.pop("time/step_ms_median")
    check = wandb_spec.check_runs(wandb_spec.build_spec("me", "p"), runs)
    assert [m for m in check.missing if "'time/step_ms_median'" in m and "time/step_median_ms" in m]
    runs = _logged_runs()
    del runs[0].history[0]["train/loraven/rank_mean"]
    runs[0].history_keys.discard("train/loraven/rank_mean")  # only the dynamic run is in the rank panel's scope
    check = wandb_spec.check_runs(wandb_spec.build_spec("me", "p"), runs)
    assert len(check.missing) == 1 and "'train/loraven/rank_mean'" in check.missing[0]


def test_a_panel_with_no_run_in_scope_falls_back_to_the_declared_keys() -> None:
    dynamic_only = _logged_runs()[:1]  # no allocation table in any run
    check = wandb_spec.check_runs(wandb_spec.build_spec("me", "p"), dynamic_only)
    assert check.ok and any("'lora_ar_allocation'" in n and "declared keys only" in n for n in check.notes)
    spec = wandb_spec.build_spec("me", "p")
    spec["panels"][5]["keys"][0]["key"] = "allocation_table"  # neither logged nor declared
    assert not wandb_spec.check_runs(spec, dynamic_only).ok


def test_a_key_logged_only_empty_is_a_note_and_failed_runs_do_not_count() -> None:
    runs = _logged_runs()
    for run in runs:
        run.summary["energy/kwh"] = None  # energy=none
    check = wandb_spec.check_runs(wandb_spec.build_spec("me", "p"), runs)
    assert check.ok and any("'energy/kwh'" in n and "empty in every run" in n for n in check.notes)
    for run in runs:
        run.summary["status"] = "failed"
    check = wandb_spec.check_runs(wandb_spec.build_spec("me", "p"), runs)
    assert any("no completed offline W&B run" in n for n in check.notes)


def test_reading_stops_once_every_key_is_found() -> None:
    read = []

    def lazily():
        for run in [*_logged_runs(), *_logged_runs(), *_logged_runs()]:
            read.append(run)
            yield run

    assert wandb_spec.check_runs(wandb_spec.build_spec("me", "p"), lazily()).ok
    assert len(read) == 2  # both kinds of run seen: the other four logs are never read


def test_the_declared_keys_cover_the_spec_and_a_rename_fails() -> None:
    spec = wandb_spec.build_spec("me", "p")
    assert wandb_spec.check_declared(spec).ok
    spec["panels"][3]["keys"][1]["key"] = "train/rank_mean"
    (line,) = wandb_spec.check_declared(spec).missing
    assert "'train/rank_mean'" in line and "does not declare" in line


# --------------------------------------------------------------------------- the verdict text


def test_verdict_text_keeps_the_verdict_tables_and_degrades(tmp_path: Path) -> None:
    page = tmp_path / "REPORT.md"
    page.write_text(
        "# Title\n\nlegend\n\n## §5.2 energy\n\n| level | verdict |\n|---|---|\n| x | inconclusive |\n\n"
        "## Figures\n\n- [a](a.png)\n"
    )
    text = wandb_spec.verdict_text(page)["markdown"]
    assert text.startswith("## §5.2 energy") and "inconclusive" in text and "Figures" not in text
    page.write_text("# Report\n\nno tables yet\n")
    assert "has no verdict table" in wandb_spec.verdict_text(page)["markdown"]
    assert "No REPORT.md" in wandb_spec.verdict_text(tmp_path / "missing.md")["markdown"]


# --------------------------------------------------------------------------- building offline


@pytest.fixture
def no_network(monkeypatch) -> list[Any]:
    """Every attempt to open a connection is recorded and refused; no W&B key anywhere."""
    attempts: list[Any] = []

    def refuse(*args: Any, **kwargs: Any):
        attempts.append(args)
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("NETRC", "/nonexistent/netrc")
    return attempts


def test_offline_build_writes_the_spec_and_prints_the_publish_command(tmp_path: Path, no_network, capsys) -> None:
    energy_store(tmp_path / "r")  # a store without W&B runs: keys are checked against the declared ones
    code = cli.main(["--results", str(tmp_path / "r"), "--out", str(tmp_path / "o"), "--wandb-report", "me/proj"])
    out = capsys.readouterr().out
    assert code == 0 and no_network == []
    spec = json.loads((tmp_path / "o" / "wandb_report.json").read_text())
    assert spec["format"] == wandb_spec.SPEC_FORMAT and (spec["entity"], spec["project"]) == ("me", "proj")
    assert spec["key_check"]["against"] == "declared keys" and spec["key_check"]["missing"] == []
    assert spec["runset"]["groupby"] == ["group"] and len(spec["panels"]) == 8
    assert "verdict" in spec["verdicts"]["markdown"]  # from the REPORT.md written beside it
    command = f"python -m analysis --wandb-report me/proj --publish {tmp_path / 'o' / 'wandb_report.json'}"
    assert out.rstrip().splitlines()[-1] == command and "no W&B key" in out


def test_a_key_set_with_wandb_mode_offline_still_touches_no_network(tmp_path: Path, no_network, monkeypatch) -> None:
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    monkeypatch.setenv("WANDB_MODE", "offline")
    energy_store(tmp_path / "r")
    assert cli.main(["--results", str(tmp_path / "r"), "--out", str(tmp_path / "o"), "--wandb-report", "me/p"]) == 0
    assert no_network == [] and (tmp_path / "o" / "wandb_report.json").is_file()
    code = cli.main(["--wandb-report", "me/p", "--publish", str(tmp_path / "o" / "wandb_report.json")])
    assert code == 2 and no_network == []


def test_publish_without_a_key_is_one_line_exit_2(tmp_path: Path, no_network, capsys) -> None:
    spec = tmp_path / "wandb_report.json"
    wandb_spec.write_spec(wandb_spec.build_spec("me", "p"), tmp_path)
    assert cli.main(["--wandb-report", "me/p", "--publish", str(spec)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no W&B key" in err[0] and no_network == []
    spec.write_text("{}")
    assert cli.main(["--wandb-report", "me/p", "--publish", str(spec)]) == 2
    assert "not a report spec" in capsys.readouterr().err


def test_a_missing_key_stops_the_build_with_one_line_naming_it(tmp_path: Path, no_network, monkeypatch, capsys):
    real = wandb_spec.panels

    def renamed() -> list[dict[str, Any]]:
        out = real()
        out[4]["keys"][0]["key"] = "time/step_median"
        return out

    monkeypatch.setattr(wandb_spec, "panels", renamed)
    energy_store(tmp_path / "r")
    code = cli.main(["--results", str(tmp_path / "r"), "--out", str(tmp_path / "o"), "--wandb-report", "me/p"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "'time/step_median'" in err[0]
    assert not (tmp_path / "o" / "wandb_report.json").exists()


@pytest.mark.parametrize("bad", ["me", "me/p/x", "/p", "me/"])
def test_bad_project_path_is_refused_before_work(bad: str, tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.parse_args(["--results", str(tmp_path), "--wandb-report", bad])
    assert exit_info.value.code == 2 and "expected ENTITY/PROJECT" in capsys.readouterr().err


# --------------------------------------------------------------------------- the library


def test_spec_becomes_a_wandb_workspaces_report_without_network(no_network) -> None:
    """The pinned library accepts every panel as the spec describes it (built locally; saving is not tried)."""
    from analysis.wandb_report import to_report

    report = to_report(wandb_spec.build_spec("me", "p"))
    grids = [b for b in report.blocks if type(b).__name__ == "PanelGrid"]
    panels = {type(g.panels[0]).__name__: g.panels[0] for g in grids}
    assert len(grids) == 8 and no_network == []
    assert set(panels) == {"ScatterPlot", "BarPlot", "LinePlot", "WeavePanelSummaryTable", "ParallelCoordinatesPlot"}
    bars = [g.panels[0] for g in grids if type(g.panels[0]).__name__ == "BarPlot"]
    assert {b.metrics[0] for b in bars} == {"metrics/accuracy", "energy/kwh", "time/step_ms_median"}
    assert all((b.groupby_aggfunc, b.groupby_rangefunc) == ("mean", "stddev") for b in bars)
    rank = next(g.panels[0] for g in grids if g.panels[0].title.startswith("Mean rank"))
    assert rank.x == layout.STEP and rank.y == ["train/loraven/rank_mean"]
    assert grids[0].runsets[0].groupby == ["group"] and report.entity == "me"
    assert [c.metric.name for c in panels["ParallelCoordinatesPlot"].columns][:3] == [
        "adapter.name",
        "scheduler.name",
        "trainer.lr",
    ]
