"""lm-eval tasks by name: the registry, task YAMLs under an include path, and registry tasks on local data.

Every LM task of the harness ends here, so training pairs, metric/filter choice and evaluation all read the
task's *own* lm-eval config. What lm-eval falls short on, and this module adds:

- pointing a registry task at local files: lm-eval's inline-config loader does not merge a dict with the
  registered YAML, so we load the registered YAML with lm-eval's own loader and override only the data keys;
- checking ``metric``/``filter`` names before the (long) base evaluation instead of after it;
- one clear message offline, instead of a stack of dataset-hub retries.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loraven.errors import ConfigError

DATA_FORMATS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet", ".arrow": "arrow"}


@dataclass
class LMEvalSpec:
    """What ``simple_evaluate`` is given (names or inline configs) and how to read its results."""

    specs: list[str | dict[str, Any]]
    names: list[str]
    include_path: str | None = None
    metric: str = "acc"
    filter: str = "none"
    output_type: str = "multiple_choice"
    chance: float | None = None
    test_split: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def task_manager(include_path: str | None = None, include_defaults: bool = True):
    """lm-eval's TaskManager, one per (include_path, include_defaults) per process: indexing the registry takes
    seconds and a run needs it three times (build, base evaluation, final evaluation)."""
    if include_path is not None:
        check_include_path(include_path)
    return _cached_manager(include_path, include_defaults)


def check_include_path(include_path: str, key: str = "task.include_path") -> None:
    """A folder of lm-eval task YAMLs whose every YAML parses. lm-eval skips a file it cannot parse with a log line,
    so its task became "unknown" (with suggestions from the registry); here the file and the line are named."""
    from lm_eval.tasks._yaml_loader import load_yaml

    folder = Path(str(include_path)).expanduser()
    if not folder.is_dir():
        raise ConfigError(f"{key}={str(include_path)!r}: no such directory (a folder of lm-eval task YAMLs)")
    for path in sorted(folder.rglob("*.yaml")) + sorted(folder.rglob("*.yml")):
        try:
            load_yaml(path, resolve_func=False, recursive=False)
        except Exception as err:  # yaml.YAMLError (with its line), ValueError (not a mapping), OSError
            mark = getattr(err, "problem_mark", None)
            where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
            problem = getattr(err, "problem", None) or str(err).splitlines()[0]
            raise ConfigError(
                f"{where}: not a valid lm-eval task YAML ({problem}), in {key}={str(include_path)!r}; "
                "lm-eval would skip it and its task would be unknown"
            ) from None


@functools.lru_cache(maxsize=8)
def _cached_manager(include_path: str | None, include_defaults: bool):
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=include_path, include_defaults=include_defaults)


def check_registry_names(names: Sequence[str], manager=None) -> None:
    """Unknown names are a config error listing the closest valid names (before any training)."""
    manager = manager or task_manager()
    known = set(manager.all_tasks)
    for name in names:
        if name not in known:
            close = difflib.get_close_matches(name, sorted(known), n=5)
            hint = f"did you mean: {', '.join(close)}" if close else "run `lm-eval ls tasks` for the list"
            raise ConfigError(f"unknown lm-eval task {name!r}; {hint}")


def data_overrides(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The task config keys that redirect a task's data: ``data_files`` (local files per split) or
    ``dataset_path``/``dataset_name``/``dataset_kwargs`` (a local folder or any ``datasets`` loader)."""
    data_files = cfg.get("data_files")
    out: dict[str, Any] = {}
    if data_files:
        if not isinstance(data_files, Mapping):
            raise ConfigError(f"task.data_files={data_files!r} must map split names to files, e.g. {{test: a.jsonl}}")
        files = {}
        for split, path_text in data_files.items():
            path = Path(str(path_text)).expanduser().resolve()
            if not path.is_file():
                raise ConfigError(f"task.data_files.{split}={str(path_text)!r}: no such file")
            files[str(split)] = str(path)
        suffixes = {Path(p).suffix.lower() for p in files.values()}
        formats = {DATA_FORMATS.get(s) for s in suffixes}
        if None in formats or len(formats) != 1:
            raise ConfigError(
                f"task.data_files: files must share one format of {', '.join(sorted(DATA_FORMATS))}; "
                f"got {', '.join(sorted(suffixes))}"
            )
        out = {"dataset_path": formats.pop(), "dataset_name": None, "dataset_kwargs": {"data_files": files}}
    if cfg.get("dataset_path"):
        if data_files:
            raise ConfigError("task.data_files and task.dataset_path both set; use one of them")
        path = str(cfg["dataset_path"])
        local = Path(path).expanduser()
        out = {
            "dataset_path": str(local.resolve()) if local.exists() else path,
            "dataset_name": cfg.get("dataset_name"),
            "dataset_kwargs": dict(cfg.get("dataset_kwargs") or {}),
        }
    return out


def build_spec(names: Sequence[str], manager, overrides: Mapping[str, Any] | None = None) -> list[str | dict]:
    """Names as they are, or — with data overrides — the task's registered YAML (read by lm-eval's own loader)
    with only the data keys replaced, as an inline config."""
    if not overrides:
        return list(names)
    if len(names) != 1:
        raise ConfigError(f"task.data_files/dataset_path redirect one task's data; got task.names={list(names)}")
    from lm_eval.tasks._yaml_loader import load_yaml

    entry = manager.task_index.get(names[0])
    if entry is None or not entry.yaml_path or entry.kind.name not in ("TASK", "PY_TASK"):
        raise ConfigError(
            f"task {names[0]!r} is not a single YAML-defined lm-eval task; its data cannot be redirected"
            " (point task.include_path at a folder with your own YAML instead)"
        )
    cfg = load_yaml(entry.yaml_path, resolve_func=True)
    for key in ("tag", "group", "task_list"):
        cfg.pop(key, None)
    cfg.update(overrides)
    cfg["task"] = names[0]
    return [cfg]


# lm-eval's warnings that are expected when it is handed an in-memory model, as we always do
LM_EVAL_EXPECTED = (
    "Passed an already-initialized model through `pretrained`",
    "`pretrained` model kwarg is not of type `str`",
)


class LMEvalNoise(logging.Filter):
    """Drops lm-eval's expected warnings (``LM_EVAL_EXPECTED``) and any warning it already gave in this
    process (every evaluation repeats them: base score, final score, each job of a sweep). Errors pass."""

    seen: set[str] = set()  # per process, shared by every evaluation

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR:
            return True
        message = record.getMessage()
        if any(expected in message for expected in LM_EVAL_EXPECTED):
            return False
        if message in self.seen:
            return False
        self.seen.add(message)
        return True


@contextlib.contextmanager
def quiet_lm_eval() -> Iterator[None]:
    """While our code calls lm-eval (loading tasks, evaluating), and only then:

    - its loggers at WARNING with :class:`LMEvalNoise` (``LMEVAL_LOG_LEVEL``, lm-eval's own variable, set:
      its logging is left as it is, for debugging);
    - its per-call progress bars off ("Building contexts", "Checking cached requests", and the datasets
      library's "Generating train split" when it builds a task's data);
    - its per-evaluation environment report off: ``git describe`` in the working directory (which printed
      "fatal: not a git repository" outside one) and ``add_env_info`` (torch's collect_env, pip included:
      1.2-1.7 s of every metered eval phase on a 2-core CPU). result.json's ``env`` is ours
      (:mod:`loraven.provenance`); lm-eval's copy of it was discarded.

    Everything is restored on exit; our own progress bar (``evaluate.progress_lm``) and every other logger
    stay as they are.
    """
    import functools

    import datasets.utils.logging as datasets_logging
    import lm_eval.api.model
    import lm_eval.api.task
    import lm_eval.evaluator
    import lm_eval.models.huggingface  # noqa: F401 - imported first, so that its logger exists and gets the filter

    names = ["lm_eval", *(n for n in list(logging.root.manager.loggerDict) if n.startswith("lm_eval."))]
    loggers = [logging.getLogger(n) for n in names]
    top = loggers[0]
    level = top.level
    noise = LMEvalNoise()
    quiet_logs = not os.environ.get("LMEVAL_LOG_LEVEL")
    if quiet_logs:
        top.setLevel(logging.WARNING)
        for logger in loggers:  # a logger's filter sees only its own records, so each module's logger gets it
            logger.addFilter(noise)
    patched = [
        (mod, "tqdm", functools.partial(mod.tqdm, disable=True))
        for mod in (lm_eval.api.task, lm_eval.api.model)
        if hasattr(mod, "tqdm")
    ]
    patched += [
        (lm_eval.evaluator, "get_git_commit_hash", lambda: None),
        (lm_eval.evaluator, "add_env_info", lambda storage: None),
    ]
    saved = [(mod, name, getattr(mod, name)) for mod, name, _ in patched if hasattr(mod, name)]
    for mod, name, value in patched:
        if hasattr(mod, name):
            setattr(mod, name, value)
    datasets_bars = datasets_logging.is_progress_bar_enabled()
    datasets_logging.disable_progress_bar()
    try:
        yield
    finally:
        if datasets_bars:
            datasets_logging.enable_progress_bar()
        for mod, name, value in saved:
            setattr(mod, name, value)
        if quiet_logs:
            top.setLevel(level)
            for logger in loggers:
                logger.removeFilter(noise)


def load_tasks(specs: Sequence[str | dict], manager) -> dict[str, Any]:
    """{name: lm-eval Task}, groups expanded; data loading failures become one config error that says where the
    data were read from: local files, a YAML under an include path, or the dataset hub (registry tasks only)."""
    try:
        with quiet_lm_eval():
            return manager.load(list(specs))["tasks"]
    except Exception as err:  # datasets raises ConnectionError/OSError/ValueError variants when offline
        names = [s if isinstance(s, str) else s.get("task") for s in specs]
        why = f"{type(err).__name__}: {' '.join(str(err).split())[:300]}"
        raise ConfigError(f"could not load lm-eval task(s) {names}: {why}. {_data_source(specs, manager)}") from err


def _data_source(specs: Sequence[str | dict], manager) -> str:
    """Where the failing task's data come from, so the hint fits: a hub download only for registry tasks."""
    local = [s for s in specs if isinstance(s, dict)]
    if local:
        kwargs = local[0].get("dataset_kwargs") or {}
        files = kwargs.get("data_files") or local[0].get("dataset_path")
        return f"Its data were read from local files ({files}): check that they hold the columns the task uses."
    yamls = []
    for name in specs:
        entry = manager.task_index.get(name) if hasattr(manager, "task_index") else None
        path = getattr(entry, "yaml_path", None)
        if path and not _in_lm_eval(path):
            yamls.append(str(path))
    if yamls:
        return f"It is defined in {', '.join(yamls)}: check its dataset_path/data_files and its doc_to_* fields."
    return (
        "Registry tasks download their data from the dataset hub; offline, point them at local copies with "
        "task.data_files={test: ..., train: ...} (or task.dataset_path=DIR), or use task=gsm8k / arith_mc / local_mc."
    )


def _in_lm_eval(path: Any) -> bool:
    import lm_eval

    return str(Path(str(path)).resolve()).startswith(str(Path(lm_eval.__file__).resolve().parent))


def resolve_metric_filter(tasks: Mapping[str, Any], metric: str | None, filter_name: str | None) -> tuple[str, str]:
    """The task's own first metric and first filter unless named; a bad name lists the task's own."""
    first = next(iter(tasks.values()))
    chosen_metric = str(metric) if metric else _metrics_of(first)[0]
    chosen_filter = str(filter_name) if filter_name else _filters_of(first)[0]
    for name, task in tasks.items():
        own = _metrics_of(task)
        if chosen_metric not in own:
            raise ConfigError(
                f"task.metric={chosen_metric!r} is not a metric of lm-eval task {name!r}; "
                f"valid: {', '.join(map(str, own))}"
            )
        own_filters = _filters_of(task)
        if chosen_filter not in own_filters:
            raise ConfigError(
                f"task.filter={chosen_filter!r} is not a filter of lm-eval task {name!r}; "
                f"valid: {', '.join(own_filters)}"
            )
    return chosen_metric, chosen_filter


def _metrics_of(task) -> list[str]:
    """The task's metric names in its config's order (python tasks declare them in code)."""
    listed = [m["metric"] if isinstance(m, Mapping) else str(m) for m in (task.config.metric_list or [])]
    return listed or list(task.aggregation().keys())


def _filters_of(task) -> list[str]:
    """The task's filter names in its config's order; lm-eval calls the unfiltered score "none"."""
    return [f["name"] for f in (task.config.filter_list or [])] or ["none"]


def higher_is_better(tasks: Mapping[str, Any], metric: str) -> bool:
    """lm-eval's own direction for ``metric`` (each task config's ``higher_is_better``; the metric registry's
    declaration where the config leaves it out). Tasks that disagree are a config error."""
    from loraven.tasks.base import _lm_eval_direction

    answers = set()
    for task in tasks.values():
        declared = task.higher_is_better() or {}
        answers.add(bool(declared[metric]) if metric in declared else _lm_eval_direction(metric))
    if len(answers) > 1:
        raise ConfigError(f"task.metric={metric!r} is maximised by some of these tasks and minimised by others")
    return answers.pop() if answers else True


def chance_level(tasks: Mapping[str, Any]) -> float | None:
    """Expected accuracy of a uniform guess over the evaluated documents: mean of 1/n_choices for
    multiple-choice tasks; None (unknown) for generation or anything else."""
    values = []
    for task in tasks.values():
        if task.OUTPUT_TYPE != "multiple_choice":
            return None
        docs = task.test_docs() if task.has_test_docs() else task.validation_docs()
        if docs is None:
            return None
        n_docs = 0
        total = 0.0
        for doc in docs:
            total += 1.0 / max(len(task.doc_to_choice(doc)), 1)
            n_docs += 1
        if not n_docs:
            return None
        values.append(total / n_docs)
    return sum(values) / len(values) if values else None


def train_pairs(tasks: Mapping[str, Any], max_docs: int) -> list[tuple[str, str]]:
    """(context, continuation) from each task's training (else validation) split, exactly as lm-eval builds
    them (0-shot). A task with neither split is a config error, since fine-tuning on the test split is not."""
    pairs: list[tuple[str, str]] = []
    for name, task in tasks.items():
        docs = (
            task.training_docs()
            if task.has_training_docs()
            else (task.validation_docs() if task.has_validation_docs() else None)
        )
        if docs is None:
            raise ConfigError(
                f"lm-eval task {name!r} has no training or validation split to fine-tune on "
                "(give one with task.data_files={train: ..., test: ...})"
            )
        for i, doc in enumerate(docs):
            if i >= max_docs:
                break
            pairs.append(_pair(task, doc))
    return pairs


def _pair(task, doc) -> tuple[str, str]:
    context = task.doc_to_text(doc)
    target = task.doc_to_target(doc)
    delimiter = getattr(task.config, "target_delimiter", " ")
    if task.OUTPUT_TYPE == "multiple_choice":
        choices = task.doc_to_choice(doc)
        target = choices[target] if isinstance(target, int) else target
    elif isinstance(target, list):
        target = target[0]
    if isinstance(context, int):  # doc_to_text may index into a list of contexts (e.g. winogrande)
        context = task.doc_to_choice(doc)[context]
    return str(context), f"{delimiter}{target}"
