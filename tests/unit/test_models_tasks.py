"""Model and task loading: offline errors are one clear message; generated data are seeded and disjoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loraven.errors import ConfigError
from loraven.files import sha256_of as _sha256
from loraven.models import _cache_valid, load_model
from loraven.tasks import build_task
from loraven.tasks.kinds.arith_mc import generate
from loraven.tasks.registry import check_registry_names


def test_arith_splits_are_seeded_and_disjoint() -> None:
    a, b = generate(1, 300, 50), generate(1, 300, 50)
    assert a == b and generate(2, 300, 50) != a
    train_q = {d["question"] for d in a["train"]}
    assert not train_q & {d["question"] for d in a["test"]}
    for doc in a["train"] + a["test"]:
        x, y = map(int, doc["question"].removeprefix("Question: What is ").rstrip("?").split(" + "))
        assert doc["choices"][doc["label"]] == str(x + y) and len(set(doc["choices"])) == 4


def test_arith_task_renders_an_lm_eval_yaml(tmp_path: Path) -> None:
    task = build_task({"kind": "arith_mc", "seed": 3, "n_train": 40, "n_test": 10, "n_choices": 4}, tmp_path)
    (yaml_file,) = Path(task.include_path).glob("*.yaml")
    text = yaml_file.read_text()
    assert "output_type: multiple_choice" in text and str(Path(task.include_path).resolve()) in text
    assert len(task.train_pairs) == 40 and task.train_pairs[0][0].endswith("\nAnswer:")


def test_missing_local_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="train_file='/nope.jsonl'"):
        build_task({"kind": "local_mc", "train_file": "/nope.jsonl", "test_file": "/nope.jsonl"}, tmp_path)


def test_local_mc_reads_jsonl(tmp_path: Path) -> None:
    rows = [{"question": f"Q{i}", "choices": ["a", "b"], "label": i % 2} for i in range(6)]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    f = str(tmp_path / "d.jsonl")
    task = build_task({"kind": "local_mc", "train_file": f, "test_file": f}, tmp_path / "cache")
    assert task.train_pairs[1] == ("Q1\nAnswer:", " b")


def test_unknown_task_kind_and_model_kind_list_choices(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="valid choices: arith_mc"):
        build_task({"kind": "nope"}, tmp_path)
    with pytest.raises(ConfigError, match="valid choices: smollm2_135m"):
        load_model({"kind": "nope"})


def test_registry_names_are_checked_and_offline_loading_is_one_clear_error(monkeypatch) -> None:
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError, match="unknown lm-eval task 'arc_eazy'; did you mean: .*arc_easy"):
        check_registry_names(["arc_eazy"])
    with pytest.raises(ConfigError, match="offline, point them at local copies"):
        build_task({"kind": "lm_eval", "names": ["arc_easy"]}, Path("/tmp/unused"))


def test_hf_model_offline_is_a_config_error(monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError, match="model.name_or_path='no-such-org/no-such-model'"):
        load_model({"kind": "hf", "name_or_path": "no-such-org/no-such-model", "dtype": "float32"})


def test_model_cache_is_verified_before_use(tmp_path: Path) -> None:
    (tmp_path / "model.safetensors").write_bytes(b"x" * 100)
    manifest = {"files": {"model.safetensors": {"size": 100, "sha256": _sha256(tmp_path / "model.safetensors")}}}
    (tmp_path / "loraven_manifest.json").write_text(json.dumps(manifest))
    assert _cache_valid(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"y" * 100)  # same size, other bytes: corrupt
    assert not _cache_valid(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"x" * 50)  # truncated
    assert not _cache_valid(tmp_path)
    (tmp_path / "loraven_manifest.json").write_text("{not json")
    assert not _cache_valid(tmp_path)
