"""lm-eval registry tasks for online users: name checking and training pairs from the task's own split.

Offline (no dataset hub), loading a registry task fails inside ``datasets``; we turn that into one clear
message instead of a stack of retries (the HF offline switches are set by ``loraven.env_setup``).
"""

from __future__ import annotations

import difflib

from loraven.adapters.base import ConfigError


def check_registry_names(names: list[str], manager=None) -> None:
    """Unknown names are a config error listing the closest valid names (before any training)."""
    from lm_eval.tasks import TaskManager

    manager = manager or TaskManager()  # indexing the registry takes ~10 s: callers pass theirs
    known = set(manager.all_tasks)
    for name in names:
        if name not in known:
            close = difflib.get_close_matches(name, sorted(known), n=5)
            hint = f"did you mean: {', '.join(close)}" if close else "run `lm-eval ls tasks` for the list"
            raise ConfigError(f"unknown lm-eval task {name!r}; {hint}")


def registry_train_pairs(names: list[str], max_docs: int) -> list[tuple[str, str]]:
    """(context, continuation) pairs from each task's training (else validation) split."""
    from lm_eval.tasks import TaskManager

    manager = TaskManager()
    check_registry_names(names, manager)
    try:
        tasks = manager.load(names)["tasks"]  # flat {name: Task}, groups expanded
    except Exception as err:  # datasets raises ConnectionError/OSError/ValueError variants when offline
        raise ConfigError(
            f"could not load lm-eval task(s) {names}: {type(err).__name__}: {str(err)[:300]}. Registry tasks "
            "download their data from the dataset hub; offline, use task=arith_mc or task=local_mc."
        ) from err
    pairs: list[tuple[str, str]] = []
    for name, task in tasks.items():
        docs = task.training_docs() if task.has_training_docs() else (
            task.validation_docs() if task.has_validation_docs() else None)
        if docs is None:
            raise ConfigError(f"lm-eval task {name!r} has no training or validation split to fine-tune on")
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
    return str(context), f"{delimiter}{target}"
