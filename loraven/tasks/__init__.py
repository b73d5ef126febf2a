"""Tasks: what a run trains on and how it is scored.

LM tasks are lm-eval tasks (YAML, scored by ``simple_evaluate`` on the in-memory model); their training
split is turned into (context, continuation) pairs that the training loop scores exactly the way lm-eval
does (loss on the continuation only). Classic tasks (digits, regression, text classification) are tensors
scored by direct metrics.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from loraven.adapters.base import ConfigError

TASK_KINDS = ("arith_mc", "local_mc", "lm_eval", "digits", "regression", "text_cls")


@dataclass
class LMTask:
    """An lm-eval scored task plus the (context, continuation) pairs used for fine-tuning."""

    name: str
    train_pairs: list[tuple[str, str]]
    eval_tasks: list[str]
    include_path: str | None
    eval_limit: int | None
    metric: str = "acc"
    fingerprint: str = ""
    kind: str = "lm"


@dataclass
class ClassicTask:
    """Tensors for the paper's §5.2/§5.3 classic experiments, scored directly (accuracy or MSE)."""

    name: str
    x_train: Any
    y_train: Any
    x_test: Any
    y_test: Any
    regression: bool
    info: dict[str, Any] = field(default_factory=dict)
    fingerprint: str = ""
    kind: str = "classic"

    @property
    def metric(self) -> str:
        return "mse" if self.regression else "acc"


Task = LMTask | ClassicTask


def build_task(cfg: Mapping[str, Any], data_root: Path) -> Task:
    """Build the task named by ``cfg.kind``; generated data go under ``data_root`` (a cache)."""
    kind = cfg.get("kind")
    if kind == "arith_mc":
        return _arith_mc(cfg, data_root)
    if kind == "local_mc":
        return _local_mc(cfg, data_root)
    if kind == "lm_eval":
        return _registry_task(cfg)
    if kind in ("digits", "regression", "text_cls"):
        from loraven.tasks.classic import build_classic

        return build_classic(cfg)
    raise ConfigError(f"unknown task kind {kind!r}; valid choices: {', '.join(TASK_KINDS)}")


def _fingerprint(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".tmp-")
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


def _render_mc_task(task_name: str, docs: Mapping[str, list[dict]], data_root: Path, fingerprint: str) -> Path:
    """Write the split files and the lm-eval YAML (from the shipped template) into a cache folder."""
    folder = data_root / f"{task_name}-{fingerprint}"
    for split, rows in docs.items():
        target = folder / f"{split}.jsonl"
        if not target.is_file():
            _write_atomic(target, "".join(json.dumps(r) + "\n" for r in rows))
    template = resources.files("loraven.tasks").joinpath("templates/arith_mc.yaml").read_text()
    yaml_text = template.replace("__TASK_NAME__", task_name).replace("__DATA_DIR__", str(folder.resolve()))
    _write_atomic(folder / f"{task_name}.yaml", yaml_text)
    return folder


def _pairs(docs: list[dict]) -> list[tuple[str, str]]:
    """(context, continuation) exactly as lm-eval builds them for a multiple-choice doc."""
    return [(f"{d['question']}\nAnswer:", " " + str(d["choices"][int(d["label"])])) for d in docs]


def _arith_mc(cfg: Mapping[str, Any], data_root: Path) -> LMTask:
    from loraven.tasks.arith import generate

    params = {k: int(cfg[k]) for k in ("seed", "n_train", "n_test", "n_choices")}
    try:
        docs = generate(params["seed"], params["n_train"], params["n_test"], params["n_choices"])
    except ValueError as err:
        raise ConfigError(str(err)) from err
    fingerprint = _fingerprint({"kind": "arith_mc", **params})
    folder = _render_mc_task("arith_mc", docs, data_root, fingerprint)
    return LMTask("arith_mc", _pairs(docs["train"]), ["arith_mc"], str(folder), None, fingerprint=fingerprint)


def _read_jsonl(path_text: Any, key: str) -> list[dict]:
    """Multiple-choice docs, one JSON object a line; any bad line is one ConfigError naming file:line."""
    if not path_text:
        raise ConfigError(f"task=local_mc needs task.{key}=<path to a .jsonl file of question/choices/label docs>")
    path = Path(str(path_text)).expanduser()
    if not path.is_file():
        raise ConfigError(f"task.{key}={str(path_text)!r}: no such file")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise ConfigError(f"{path}:{line}: not UTF-8 text (byte {raw[err.start]:#x}); save the file as UTF-8") from err
    rows = []
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(_mc_doc(json.loads(line)))
        except (ValueError, KeyError, TypeError) as err:
            raise ConfigError(f"{path}:{i}: each line needs question, choices (a list of >= 2), label (an index "
                              f"into choices): {err}") from err
    if not rows:
        raise ConfigError(f"task.{key}={str(path_text)!r} holds no documents")
    return rows


def _mc_doc(doc: Any) -> dict:
    if not isinstance(doc, dict):
        raise TypeError(f"a JSON object, not {type(doc).__name__}")
    choices, label = doc["choices"], doc["label"]
    if not isinstance(choices, list) or len(choices) < 2:
        raise ValueError(f"choices={choices!r} is not a list of at least two answers")
    if isinstance(label, bool) or not isinstance(label, (int, str)) or not str(label).lstrip("-").isdigit():
        raise ValueError(f"label={label!r} is not an integer")
    if not 0 <= int(label) < len(choices):
        raise ValueError(f"label={label!r} is out of range for {len(choices)} choices (valid: 0..{len(choices) - 1})")
    str(doc["question"])
    return {**doc, "choices": [str(c) for c in choices], "label": int(label)}


def _local_mc(cfg: Mapping[str, Any], data_root: Path) -> LMTask:
    """Your own multiple-choice data: two JSONL files with ``question``, ``choices``, ``label``."""
    docs = {"train": _read_jsonl(cfg.get("train_file"), "train_file"),
            "test": _read_jsonl(cfg.get("test_file"), "test_file")}
    fingerprint = _fingerprint(docs)
    name = str(cfg.get("name", "local_mc"))
    folder = _render_mc_task(name, docs, data_root, fingerprint)
    return LMTask(name, _pairs(docs["train"]), [name], str(folder), None, fingerprint=fingerprint)


def _registry_task(cfg: Mapping[str, Any]) -> LMTask:
    """lm-eval registry tasks by name (online users); training pairs from each task's training split."""
    from loraven.tasks.registry import registry_train_pairs

    names = [str(n) for n in (cfg.get("names") or [])]
    if not names:
        raise ConfigError("task=lm_eval needs task.names=[...] (lm-eval registry names, e.g. [arc_easy])")
    pairs = registry_train_pairs(names, int(cfg.get("max_train_docs", 2000)))
    limit = cfg.get("limit")
    return LMTask("+".join(names), pairs, names, None, int(limit) if limit else None,
                  metric=str(cfg.get("metric", "acc")), fingerprint=_fingerprint({"names": names, "limit": limit}))
