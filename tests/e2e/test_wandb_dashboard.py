"""Real offline W&B runs of a small sweep, read back from their ``.wandb`` logs with wandb's own reader: they
carry the grouping and the defined summaries, log every key the report's panels read and every key the harness
declares, and ``python -m analysis --wandb-report`` builds the spec from them without touching the network."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
import textwrap
from collections import defaultdict
from pathlib import Path

import pytest
from conftest import ROOT, cli_env, results

from analysis import wandb_spec
from analysis.wandb_runs import RunLog, read_runs
from loraven import wandb_layout as layout

pytestmark = pytest.mark.slow

SWEEP = [
    "-m",
    "adapter=loraven,lora_ar",  # a dynamic scheduler (rank per step) and an allocation table
    "seed=0,1",
    "model=tiny_llama",
    "trainer=smoke",  # 4 steps, a log every 2
    "task.n_train=200",
    "task.n_test=20",
    "energy=none",
    "tracking=wandb",
]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory, session_cache: Path) -> Path:
    root = tmp_path_factory.mktemp("wandb-sweep")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "run.py"), *SWEEP, f"results_dir={root / 'r'}", f"hydra.sweep.dir={root / 'm'}"],
        cwd=root,
        env=cli_env(session_cache, {"HOME": str(root)}),  # W&B's staging area and settings stay in the test
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root


@pytest.fixture(scope="module")
def runs(sweep: Path) -> list[RunLog]:
    return read_runs(sweep / "r")


def test_runs_arrive_grouped_by_comparison_with_seeds_inside(sweep: Path, runs: list[RunLog]) -> None:
    records = {r["run_id"]: r for r in results(sweep / "r")}
    assert len(runs) == 4 and len(records) == 4
    groups: dict[str, set[int]] = defaultdict(set)
    for run in runs:
        record = next(r for r in records.values() if r["config"]["seed"] == run.config["seed"]
                      and r["adapter"]["type"] == run.config["adapter"]["name"])  # fmt: skip
        method, scheduler = record["adapter"]["type"], record["adapter"]["scheduler"]
        assert run.group.startswith(f"default/{method}/{scheduler}/") and run.job_type == "train"
        assert {f"method:{method}", f"scheduler:{scheduler}", f"seed:{record['seed']}"} <= set(run.tags)
        groups[run.group].add(run.config["seed"])
    assert sorted(groups.values(), key=sorted) == [{0, 1}, {0, 1}]  # two comparisons, both seeds in each


def test_step_axis_and_summaries_are_defined_and_hold_known_values(sweep: Path, runs: list[RunLog]) -> None:
    for run in runs:
        defined = {m.get("name") or m.get("glob_name"): m for m in run.metrics}
        assert defined["train/*"]["step_metric"] == layout.STEP
        assert defined["train/loss"]["summary"] == {"min": True, "last": True}
        assert defined["eval/*"]["summary"] == {"last": True}
        train = [row for row in run.history if "train/loss" in row]
        assert [row[layout.STEP] for row in train] == [2, 4]  # trainer=smoke: steps 4, log_every 2
        assert [row["_step"] for row in train] == [2, 4]
        losses = [row["train/loss"] for row in train]
        summary = run.keys("summary")
        assert {"train/loss.min", "train/loss.last", "eval/accuracy.last"} <= summary
        assert run.value("summary", "train/loss.min") == pytest.approx(min(losses))
        assert run.value("summary", "train/loss.last") == pytest.approx(losses[-1])
        (record,) = [json.loads(p.read_text()) for p in run.path.parents[2].glob("result.json")]
        assert run.value("summary", "eval/accuracy.last") == record["metrics"]["accuracy"]
        assert run.value("summary", "metrics/accuracy") == record["metrics"]["accuracy"]
        task = record["metrics"]["task"]  # every LM run's per-task scores, as eval/<task>/<metric>
        assert run.value("history", f"eval/{task}/acc") == record["metrics"]["per_task"][task]["accuracy"]
        assert run.exit_code == 0


def test_result_files_are_an_artifact_matching_the_files_on_disk(runs: list[RunLog]) -> None:
    for run in runs:
        run_dir = run.path.parents[2]
        (artifact,) = [a for a in run.artifacts if a["type"] == layout.ARTIFACT_TYPE]
        expected = {"result.json", "config.json", *(p.name for p in run_dir.glob("*.csv"))}
        assert set(artifact["files"]) == expected
        assert "rank_trace.csv" in expected or "lora_ar_allocation.csv" in expected
        for name, digest in artifact["files"].items():
            assert digest == base64.b64encode(hashlib.md5((run_dir / name).read_bytes()).digest()).decode(), name


def test_every_panel_key_is_logged_by_the_runs(runs: list[RunLog]) -> None:
    check = wandb_spec.check_runs(wandb_spec.build_spec("me", "loraven"), runs)
    assert check.ok, check.missing
    assert not [n for n in check.notes if "declared keys only" in n]  # every panel had runs in scope
    assert [n for n in check.notes if "'energy/kwh'" in n]  # energy=none: logged, empty, said so


def test_the_declared_keys_are_what_the_runs_log(runs: list[RunLog]) -> None:
    """loraven/wandb_layout.py declares what a run logs; these runs must log all of it (a key renamed in the
    code but not in the declaration fails here)."""
    for run in runs:
        every = set().union(*(run.keys(s) for s in wandb_spec.SOURCES))
        for source, keys in layout.DECLARED.items():
            assert keys <= run.keys(source), (source, sorted(keys - run.keys(source)))
        for condition, source, keys in layout.CONDITIONAL:
            if layout.applies(condition, run.config, every):
                assert keys <= run.keys(source), (condition, sorted(keys - run.keys(source)))
    kinds = {run.config["adapter"]["name"] for run in runs}
    assert len(kinds) == 2  # both conditions were exercised


def test_renaming_a_logged_metric_fails_the_check(runs: list[RunLog]) -> None:
    spec = wandb_spec.build_spec("me", "loraven")
    spec["panels"][1]["keys"][0]["key"] = "metrics/acc"
    (line,) = wandb_spec.check_runs(spec, runs).missing
    assert "'metrics/acc'" in line and "'metrics/accuracy'" in line


GUARD = textwrap.dedent(
    """
    import os, socket
    def _refuse(*args, **kwargs):
        with open(os.environ["NET_ATTEMPTS"], "a") as fh:
            fh.write(repr(args[1:] or args) + "\\n")
        raise OSError("network disabled in this test")
    socket.socket.connect = _refuse
    socket.socket.connect_ex = _refuse
    socket.create_connection = _refuse
    """
)


def test_cli_builds_the_spec_offline_without_any_connection_attempt(sweep: Path, session_cache: Path) -> None:
    """No key, no netrc: every Python process of the build (analysis and wandb's reader) has its sockets
    refused and recorded; the spec is written, checked against the offline runs, and the publish command printed."""
    guard = sweep / "guard"
    guard.mkdir(exist_ok=True)
    (guard / "sitecustomize.py").write_text(GUARD)
    attempts = sweep / "attempts.txt"
    env = cli_env(session_cache, {"HOME": str(sweep), "NETRC": str(sweep / "no-netrc"), "NET_ATTEMPTS": str(attempts)})
    env.pop("WANDB_API_KEY", None)
    env.pop("WANDB_MODE", None)
    env["PYTHONPATH"] = os.pathsep.join([str(guard), env["PYTHONPATH"]])
    out_dir = sweep / "report"
    proc = subprocess.run(
        [sys.executable, "-m", "analysis", "--results", str(sweep / "r"), "--wandb-report", "me/loraven",
         "--out", str(out_dir)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not attempts.exists(), attempts.read_text()
    spec = json.loads((out_dir / "wandb_report.json").read_text())
    check = spec["key_check"]
    assert check["against"] == "offline runs" and check["missing"] == [] and 1 <= check["runs_read"] <= 4
    command = f"python -m analysis --wandb-report me/loraven --publish {out_dir / 'wandb_report.json'}"
    assert proc.stdout.rstrip().splitlines()[-1] == command
