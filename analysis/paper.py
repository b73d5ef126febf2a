"""The LoRAven paper's reported numbers (seeds/000, §5) and the mapping of our runs onto its levels.

Kept as data in one place so every table prints the paper beside our measurements from the same source.
"""

from __future__ import annotations

# Table 5.1, keyed by (batch, dim): the paper's "Configuration 32×512" is read as batch × layer width.
PAPER_SPEEDUP: dict[tuple[int, int], dict[str, float]] = {
    (32, 512): {
        "original_ms": 7.82,
        "fused_ms": 4.11,
        "inplace_ms": 4.14,
        "fusion_speedup": 1.90,
        "inplace_speedup": 1.89,
    },
    (64, 1024): {
        "original_ms": 10.36,
        "fused_ms": 4.04,
        "inplace_ms": 4.26,
        "fusion_speedup": 2.56,
        "inplace_speedup": 2.43,
    },
    (128, 2048): {
        "original_ms": 45.49,
        "fused_ms": 4.30,
        "inplace_ms": 4.27,
        "fusion_speedup": 10.58,
        "inplace_speedup": 10.65,
    },
}

# §5.2: "40-60% energy reduction while maintaining 95%+ accuracy" (no per-level numbers are given).
PAPER_ENERGY_REDUCTION_PCT = (40.0, 60.0)
PAPER_ACCURACY_RETENTION_PCT = 95.0
ENERGY_CLAIM = "40–60 % energy reduction at ≥95 % accuracy (§5.2, no per-level numbers reported)"

# §5.3, by what a task is (the family its record declares: task.family). The paper's "98.8% accuracy on GLUE" is
# read as retention (98.8 % GLUE accuracy in absolute terms is implausible and every other number in the section is
# relative to the dense model).
PAPER_ACCURACY: dict[str, dict[str, object]] = {
    "image-classification": {
        "value": 99.2,
        "unit": "retention %",
        "claim": "99.2 % retention, CIFAR-10 (ours: digits images)",
    },
    "text-classification": {
        "value": 98.8,
        "unit": "retention %",
        "claim": "98.8 % retention, GLUE (ours: text classification)",
    },
    "regression": {"value": 2.0, "unit": "MSE increase %", "claim": "<2 % MSE increase (regression)"},
}


def claim_for(family: object) -> str | None:
    """The §5.3 claim a task of this family tests (``task.family`` in its record), or None: a task that matches
    no claim (generated arithmetic, commonsense benchmarks, your own data) is left out of the claims."""
    return str(family) if family in PAPER_ACCURACY else None


def claim_text(kind: str, task: object = None) -> str:
    """The claim as the tables print it, naming what our runs used for the paper's benchmark: task=glue is lm-eval's
    GLUE/SuperGLUE tasks on their validation sets, so the GLUE claim is tested there."""
    claim = str(PAPER_ACCURACY[kind]["claim"])
    if kind == "text-classification" and task == "glue":
        return "98.8 % retention, GLUE (ours: task=glue, lm-eval's GLUE/SuperGLUE tasks on held-out validation data)"
    return claim


def level_ranks(frame) -> dict[str, float]:
    """Each shown label's sort key: the smallest ``adapter.order`` its runs recorded (the method's registry
    order, written into every record), so tables sort the paper's levels first without the registry."""
    if frame is None or getattr(frame, "empty", True) or "level_order" not in frame:
        return {}
    return frame.groupby("level")["level_order"].min().fillna(float("inf")).to_dict()


def sort_levels(levels, ranks: dict[str, float]) -> list[str]:
    return sorted(set(levels), key=lambda lv: (ranks.get(lv, float("inf")), str(lv)))


# The LoRA-AR README's commonsense table (shared/seeds/002, "Commonsense Reasoning Tasks": "Performance on eight
# commonsense reasoning benchmarks using LLaMA3-8B"), kept as data: accuracy in %, trainable parameters in % of the
# model. ANOTHER MODEL (an 8B Llama on its own fine-tuning data and full test sets): shown beside ours in paper_*
# columns for orientation, never compared with a verdict. Keyed by the README's method names, which are the methods'
# labels in our records (adapter.label); DoRA has two rows.
PAPER_COMMONSENSE_MODEL = "LLaMA3-8B"
PAPER_COMMONSENSE_SOURCE = "LoRA-AR README (shared/seeds/002), Commonsense Reasoning Tasks, LLaMA3-8B"
COMMONSENSE_TASKS: dict[str, str] = {  # lm-eval task name → the column the PEFT tables print
    "boolq": "BoolQ",
    "piqa": "PIQA",
    "social_iqa": "SIQA",
    "hellaswag": "HellaSwag",
    "winogrande": "WinoGrande",
    "arc_easy": "ARC-e",
    "arc_challenge": "ARC-c",
    "openbookqa": "OBQA",
}
_CS_COLUMNS = ("params_pct", *COMMONSENSE_TASKS, "average")
PAPER_COMMONSENSE: dict[str, list[dict[str, float]]] = {
    method: [dict(zip(_CS_COLUMNS, values, strict=True)) for values in rows]
    for method, rows in {
        "LoRA": [(0.70, 70.8, 85.2, 79.9, 91.7, 84.3, 84.2, 71.2, 79.0, 80.8)],
        "DoRA": [
            (0.35, 74.5, 88.8, 80.3, 95.5, 84.7, 90.1, 79.1, 87.2, 85.0),
            (0.71, 74.6, 89.3, 79.9, 95.5, 85.6, 90.5, 80.4, 85.8, 85.2),
        ],
        "LoRA-AR": [(0.48, 75.01, 88.73, 80.6, 95.74, 85.87, 90.53, 80.71, 86.0, 85.4)],
    }.items()
}


def paper_commonsense_row(label: object, params_pct: float) -> dict[str, float] | None:
    """The README's row for the method labelled ``label`` (``adapter.label``); where it has several (DoRA), the one
    whose trainable share is closest to ours. None when the README does not report the method."""
    rows = PAPER_COMMONSENSE.get(str(label))
    if not rows:
        return None
    if params_pct != params_pct:  # NaN: unknown share, take the first
        return rows[0]
    return min(rows, key=lambda r: abs(r["params_pct"] - params_pct))
