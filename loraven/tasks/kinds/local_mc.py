"""``task=local_mc``: your own multiple-choice data, two JSONL files of ``question``, ``choices``, ``label``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator, model_validator

from loraven.errors import ConfigError
from loraven.paths import check_name_part
from loraven.tasks.base import register_task
from loraven.tasks.lm import LMTask, fingerprint, lm_eval_task, render_mc_task
from loraven.tasks.options import LMOptions
from loraven.tasks.splits import split_fingerprint


class LocalMCConfig(LMOptions):
    name: str
    seed: int = Field(ge=0)
    train_file: str | None
    test_file: str | None

    @field_validator("name")
    @classmethod
    def _safe_name(cls, value: str) -> str:
        return check_name_part(value, "task.name")  # it names a cache folder and an lm-eval YAML

    @model_validator(mode="after")
    def _files_exist(self) -> LocalMCConfig:
        for key in ("train_file", "test_file"):
            given = getattr(self, key)
            if not given:
                raise ValueError(f"task=local_mc needs task.{key}=<a .jsonl file of question/choices/label docs>")
            if not Path(str(given)).expanduser().is_file():
                raise ValueError(f"task.{key}={given!r}: no such file")
        return self


def read_jsonl(path_text: Any, key: str) -> list[dict]:
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
            raise ConfigError(
                f"{path}:{i}: each line needs question, choices (a list of >= 2), label (an index into choices): {err}"
            ) from err
    if not rows:
        raise ConfigError(f"task.{key}={str(path_text)!r} holds no documents")
    return rows


_read_jsonl = read_jsonl  # the name the reliability tests use


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


@register_task("local_mc", config=LocalMCConfig, family="custom")
def build_local_mc(settings: LocalMCConfig, data_root: Path) -> LMTask:
    """Your own multiple-choice data: two JSONL files with ``question``, ``choices``, ``label``."""
    cfg = settings.dump()
    name = check_name_part(cfg["name"], "task.name")
    docs = {"train": read_jsonl(cfg["train_file"], "train_file"), "test": read_jsonl(cfg["test_file"], "test_file")}
    digest = fingerprint({"docs": docs, **split_fingerprint(cfg)} if split_fingerprint(cfg) else docs)
    folder = render_mc_task(name, docs, data_root, digest, cfg, int(cfg["seed"]))
    return lm_eval_task(cfg, [name], str(folder), digest, include_defaults=False)
