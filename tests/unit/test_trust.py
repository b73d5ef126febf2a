"""Nothing trusted that cannot be, nothing lost to a signal (issue 26): the pieces, one at a time."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from loraven.errors import ConfigError


def test_a_signal_during_a_held_block_waits_for_its_end() -> None:
    from loraven.signals import deferred

    seen: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda s, f: seen.append(s))
    try:
        with deferred() as pending:
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGINT)
            assert seen == []  # held: the write in the block goes on
        assert pending == [signal.SIGTERM, signal.SIGINT] and seen == []  # the caller raises, knowing what it wrote
        assert signal.getsignal(signal.SIGTERM) is not None and seen == []
        os.kill(os.getpid(), signal.SIGTERM)
        assert seen == [signal.SIGTERM]  # the handler is back
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_atomic_writes_are_readable_by_the_group(tmp_path: Path) -> None:
    from loraven.track import atomic_write_text

    old = os.umask(0o002)
    try:
        atomic_write_text(tmp_path / "result.json", "{}")
    finally:
        os.umask(old)
    assert oct((tmp_path / "result.json").stat().st_mode & 0o777) == "0o664"


def test_a_truncated_or_edited_cached_task_file_is_rewritten(tmp_path: Path, caplog) -> None:
    from loraven.tasks.lm import write_splits

    docs = {"test": [{"q": i} for i in range(200)]}
    path = Path(write_splits(tmp_path, docs)["test"])
    whole = path.read_text()
    path.write_text("".join(whole.splitlines(keepends=True)[:10]))
    with caplog.at_level("WARNING"):
        write_splits(tmp_path, docs)
    assert path.read_text() == whole and "fails its checksum" in caplog.text
    caplog.clear()
    write_splits(tmp_path, docs)  # intact: reused without a word
    assert not caplog.text


def test_suite_folder_manifest_detects_every_kind_of_damage(tmp_path: Path) -> None:
    from loraven.tasks.benchmarks import verify_manifest, write_manifest

    (tmp_path / "boolq").mkdir()
    (tmp_path / "boolq" / "test.jsonl").write_text('{"a": 1}\n' * 50)
    (tmp_path / "sizes.json").write_text("{}")
    write_manifest(tmp_path)
    assert verify_manifest(tmp_path) is None
    (tmp_path / "boolq" / "test.jsonl").write_text('{"a": 1}\n' * 10)
    assert "differs" in verify_manifest(tmp_path)
    (tmp_path / "boolq" / "test.jsonl").unlink()
    assert "missing" in verify_manifest(tmp_path)
    (tmp_path / "loraven_manifest.json").write_text("{")
    assert "manifest" in verify_manifest(tmp_path)


def test_each_attempt_has_its_own_codecarbon_files(tmp_path: Path) -> None:
    from loraven.meters.codecarbon import attempt_suffix

    assert attempt_suffix(tmp_path) == ""
    (tmp_path / "emissions_train.csv").write_text("x")
    assert attempt_suffix(tmp_path) == ".attempt-2"
    (tmp_path / "emissions_eval.attempt-2.csv").write_text("x")
    assert attempt_suffix(tmp_path) == ".attempt-3"


def test_a_budget_beyond_the_largest_size_names_it() -> None:
    from loraven.adapters.base import rank_for_budget

    assert rank_for_budget(800, 100, 0, "adapter.r", 8) == 8  # exactly the largest size
    assert rank_for_budget(799, 100, 0, "adapter.r", 8) == 7  # the largest rank within the budget
    for budget in (801, 10_000, 10**15):  # used to be capped at r=8 without a word
        with pytest.raises(ConfigError, match=rf"adapter.param_budget={budget} is beyond .* give at most 800"):
            rank_for_budget(budget, 100, 0, "adapter.r", 8)
    with pytest.raises(ConfigError, match="below this method's smallest size"):
        rank_for_budget(50, 100, 0, "adapter.r", 8)


def test_a_corrupt_tune_summary_is_reported_and_redone(tmp_path: Path, capsys) -> None:
    from loraven.tune import previous_methods

    path = tmp_path / "summary.json"
    for text in ("{", "[1]", '{"methods": [1]}', '{"methods": {"lora": 3}}'):
        path.write_text(text)
        assert previous_methods(path) == {}
        assert "cannot be read" in capsys.readouterr().out
    path.write_text(json.dumps({"methods": {"lora": {"best": {}}}}))
    assert previous_methods(path) == {"lora": {"best": {}}}


def test_a_garbage_optuna_db_is_moved_aside_and_a_bad_storage_is_one_line(tmp_path: Path, caplog) -> None:
    from loraven.search import prepare_storage

    db = tmp_path / "optuna.db"
    db.write_bytes(b"not a database" * 100)
    with caplog.at_level("WARNING"):
        assert prepare_storage(f"sqlite:///{db}", "s") == 0
    assert not db.exists() and len(list(tmp_path.glob("optuna.db.corrupt-*"))) == 1
    assert "not a readable Optuna study" in caplog.text
    with pytest.raises(ConfigError, match="cannot be opened"):
        prepare_storage("nope://x", "s")


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"direction": "sideways"}, ["direction='sideways'", "maximize"]),
        ({"n_trials": 0}, ["n_trials=0"]),
        ({"n_jobs": 0}, ["n_jobs=0"]),
        ({"max_failure_rate": 2.0}, ["max_failure_rate=2.0"]),
        ({"params": {"trainer.lr": "interval(1e-2, 1e-5)"}}, ["trainer.lr", "search space"]),
        ({"params": {"trainer.lr": "tag(log, interval(-1, 1e-2))"}}, ["trainer.lr", "search space"]),
    ],
)
def test_bad_search_settings_are_one_line(changes: dict, words: list[str]) -> None:
    from omegaconf import OmegaConf

    from loraven.search import check_search_settings

    sweeper = OmegaConf.create(
        {"direction": "maximize", "n_trials": 3, "n_jobs": 1, "max_failure_rate": 0.0, "params": {}, **changes}
    )
    with pytest.raises(ConfigError) as info:
        check_search_settings(sweeper, [])
    assert all(w in str(info.value) for w in words) and "\n" not in str(info.value), str(info.value)
