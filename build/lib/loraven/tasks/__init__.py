"""Tasks: what a run trains on and how it is scored.

Each task kind registers itself (:func:`register_task`, :mod:`loraven.tasks.base`) from a module in
``loraven/tasks/kinds/`` or a plug-in; LM tasks are lm-eval tasks scored by ``simple_evaluate`` on the in-memory
model (:mod:`loraven.tasks.lm`), the tensor tasks are scored directly (:mod:`loraven.tasks.classic`).
"""

from __future__ import annotations

from loraven.tasks.base import TASKS, Task, TaskSpec, build_task, register_task, task_settings
from loraven.tasks.lm import LMTask, chat_pair, fingerprint, lm_eval_task, write_splits

_fingerprint = fingerprint  # the name older task modules import

__all__ = [
    "TASKS",
    "LMTask",
    "Task",
    "TaskSpec",
    "build_task",
    "chat_pair",
    "fingerprint",
    "lm_eval_task",
    "register_task",
    "task_settings",
    "write_splits",
]
