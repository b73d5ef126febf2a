"""LM tasks: an lm-eval task (its own YAML config) plus the (context, continuation) pairs it is fine-tuned on.

Training pairs are built exactly as lm-eval builds a 0-shot prompt (rendered with the tokenizer's chat template
when ``task.apply_chat_template``) and the loss is taken on the continuation only, as lm-eval scores it. Scoring is
lm-eval's ``simple_evaluate`` on the in-memory model (:mod:`loraven.tasks.lm_scoring`).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from loraven.errors import ConfigError
from loraven.files import atomic_write_text, sha256_of
from loraven.tasks.base import Task
from loraven.tasks.splits import eval_split_of, lm_splits, split_fingerprint

log = logging.getLogger(__name__)


@dataclass
class LMTask(Task):
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
    eval_split: str = "test"  # test | validation (task.eval_split): what score() reads, metrics.split
    metric_higher_is_better: bool = True
    family: str = "custom"
    info: dict[str, Any] = field(default_factory=dict)
    train_unit: str = "token"

    @property
    def metric_key(self) -> str:
        """How the result is named in result.json: ``acc`` for plain scores, ``metric,filter`` otherwise."""
        return self.metric if self.filter == "none" else f"{self.metric},{self.filter}"

    @property
    def higher_is_better(self) -> bool:
        return self.metric_higher_is_better

    def train_batches(
        self, tokenizer: Any, batch_size: int, max_len: int, seed: int, rank: int = 0, world: int = 1
    ) -> Iterator[dict[str, torch.Tensor]]:
        return lm_batches(self, tokenizer, batch_size, max_len, seed, rank, world)

    def batch_loss(self, model: torch.nn.Module, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return lm_loss(model, batch)

    def batch_units(self, batch: Mapping[str, torch.Tensor]) -> int:
        return int(batch["attention_mask"].sum())

    def score(self, model: torch.nn.Module, tokenizer: Any, batch_size: int, seed: int) -> dict[str, Any]:
        from loraven.tasks.lm_scoring import evaluate_lm

        return evaluate_lm(model, tokenizer, self, batch_size=batch_size, seed=seed)

    def check_tokenizer(self, tokenizer: Any) -> None:
        if self.apply_chat_template:
            chat_pair(tokenizer, "Question: 1 + 1?\nAnswer:", " 2")


def lm_loss(model: torch.nn.Module, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Next-token cross-entropy on the labelled (continuation) tokens only."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return torch.nn.functional.cross_entropy(
        logits[:, :-1].flatten(0, 1).float(), batch["labels"][:, 1:].flatten(), ignore_index=-100
    )


def lm_batches(
    task: LMTask, tokenizer: Any, batch_size: int, max_len: int, seed: int, rank: int = 0, world: int = 1
) -> Iterator[dict[str, torch.Tensor]]:
    """Endless shuffled batches of (context, continuation) with loss on the continuation only.

    Context and continuation are encoded separately and concatenated, as lm-eval scores them. With
    ``world`` > 1 every process draws the same global batch and keeps its own slice (data parallel). The
    iterator's position can be saved and restored (:class:`~loraven.tasks.batching.EpochBatches`).
    """
    from loraven.tasks.batching import EpochBatches, fit_batch_size

    encoded = []
    for context, continuation in task.train_pairs:
        if getattr(task, "apply_chat_template", False):  # train on the prompt lm-eval will evaluate with
            context, continuation = chat_pair(tokenizer, context, continuation)
        ctx = tokenizer(context, add_special_tokens=False)["input_ids"]
        cont = tokenizer(continuation, add_special_tokens=False)["input_ids"]
        ids = (ctx + cont)[-max_len:]
        n_cont = min(len(cont), len(ids))
        encoded.append((ids, n_cont))
    if not encoded:
        raise ValueError(f"task {task.name} has no training examples")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    def make_batch(idx: torch.Tensor) -> dict[str, torch.Tensor]:
        chosen = [encoded[i] for i in idx.tolist()][rank::world]
        width = max(len(ids) for ids, _ in chosen)
        input_ids = torch.full((len(chosen), width), pad, dtype=torch.long)
        labels = torch.full((len(chosen), width), -100, dtype=torch.long)
        mask = torch.zeros((len(chosen), width), dtype=torch.long)
        for row, (ids, n_cont) in enumerate(chosen):
            input_ids[row, : len(ids)] = torch.tensor(ids)
            mask[row, : len(ids)] = 1
            labels[row, len(ids) - n_cont : len(ids)] = torch.tensor(ids[len(ids) - n_cont :])
        return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}

    return EpochBatches(len(encoded), fit_batch_size(batch_size, len(encoded), world), seed, make_batch)


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


def fingerprint(obj: Any) -> str:
    """A short content hash: task data and options → cache folder names and the base-score cache key."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


_fingerprint = fingerprint  # older name, kept for the task modules that import it


def write_verified(path: Path, text: str) -> None:
    """Make ``path`` hold exactly ``text``: a cached copy is reused only if its checksum matches what would be
    written; a truncated or edited one is rewritten, with a warning (it used to be read as it was: a truncated
    test file was scored on 10 documents instead of 200, without a word)."""
    want = hashlib.sha256(text.encode()).hexdigest()
    if path.is_file():
        try:
            have = sha256_of(path)
        except OSError:
            have = None
        if have == want:
            return
        log.warning("cached task file %s fails its checksum; writing it again", path)
    atomic_write_text(path, text)


def write_splits(folder: Path, docs: Mapping[str, list[dict]]) -> dict[str, str]:
    """One ``<split>.jsonl`` per split in a cache folder named by its content's fingerprint (written atomically;
    a cached file is checked against the content and rewritten if it differs); returns {split: absolute path}."""
    files = {}
    for split, rows in docs.items():
        target = folder / f"{split}.jsonl"
        write_verified(target, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        files[split] = str(target.resolve())
    return files


def render_mc_task(
    task_name: str, docs: Mapping[str, list[dict]], data_root: Path, digest: str, cfg: Any, seed: int
) -> Path:
    """Write the split files and the lm-eval YAML (from the shipped multiple-choice template) into a cache folder.

    ``docs`` are {train, test}; the files written are train (minus any validation carve) and the evaluated
    split only (:func:`splits.lm_splits`), and the YAML's ``test_split`` names that split.
    """
    folder = data_root / f"{task_name}-{digest}"
    split = eval_split_of(cfg)
    write_splits(folder, lm_splits(docs, cfg, seed))
    template = resources.files("loraven.tasks").joinpath("templates/arith_mc.yaml").read_text()
    yaml_text = (
        template.replace("__TASK_NAME__", task_name)
        .replace("__DATA_DIR__", str(folder.resolve()))
        .replace("__EVAL_SPLIT__", split)
    )
    write_verified(folder / f"{task_name}.yaml", yaml_text)
    return folder


def lm_eval_task(
    cfg: Any,
    names: list[str],
    include_path: str | None,
    digest: str,
    *,
    overrides: Mapping[str, Any] | None = None,
    include_defaults: bool = True,
    pairs: Callable[[Mapping[str, Any]], list[tuple[str, str]]] | None = None,
) -> LMTask:
    """The one LM-task builder: load the lm-eval task(s) now (data errors and bad metric/filter names surface
    before any training), take training pairs from their training split and record how they are scored.

    ``pairs`` builds the training pairs from the loaded {name: lm-eval Task} (default: each task's first
    ``task.max_train_docs`` documents in turn; the benchmark suites mix tasks by ``task.mixing``).

    ``cfg`` is the task's validated settings (an :class:`~loraven.tasks.options.LMOptions`) or a plain mapping.
    """
    from loraven.tasks import registry

    get = cfg.get if isinstance(cfg, Mapping) else (lambda key, default=None: getattr(cfg, key, default))
    manager = registry.task_manager(include_path, include_defaults=include_defaults)
    registry.check_registry_names(names, manager)
    specs = registry.build_spec(names, manager, overrides)
    tasks = registry.load_tasks(specs, manager)
    metric, filter_name = registry.resolve_metric_filter(tasks, get("metric"), get("filter"))
    limit = get("limit")
    output_types = {t.OUTPUT_TYPE for t in tasks.values()}
    options = {k: get(k) for k in ("num_fewshot", "max_gen_toks", "apply_chat_template", "limit", "max_seq_len")}
    split_cfg = {"eval_split": get("eval_split"), "validation_fraction": get("validation_fraction")}
    options.update(split_fingerprint(split_cfg))
    return LMTask(
        name="+".join(names) if len(names) > 1 else names[0],
        train_pairs=pairs(tasks) if pairs else registry.train_pairs(tasks, int(get("max_train_docs") or 2000)),
        eval_tasks=list(tasks),
        include_path=include_path,
        eval_limit=int(limit) if limit else None,
        metric=metric,
        filter=filter_name,
        eval_specs=specs,
        output_type=output_types.pop() if len(output_types) == 1 else "mixed",
        chance=registry.chance_level(tasks),
        num_fewshot=None if get("num_fewshot") is None else int(get("num_fewshot")),
        max_gen_toks=None if get("max_gen_toks") is None else int(get("max_gen_toks")),
        apply_chat_template=bool(get("apply_chat_template") or False),
        max_seq_len=None if get("max_seq_len") is None else int(get("max_seq_len")),
        include_defaults=include_defaults,
        eval_split=eval_split_of(split_cfg),
        metric_higher_is_better=registry.higher_is_better(tasks, metric),
        fingerprint=fingerprint({"task": digest, "metric": metric, "filter": filter_name, **options}),
    )
