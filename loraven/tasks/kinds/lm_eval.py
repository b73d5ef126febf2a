"""``task=lm_eval``: lm-eval tasks by name — the registry, YAMLs under ``task.include_path``, or a registry task
redirected to local files (``task.data_files`` / ``task.dataset_path``)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import model_validator

from loraven.tasks.base import register_task
from loraven.tasks.lm import LMTask, fingerprint, lm_eval_task
from loraven.tasks.options import LMOptions


class LMEvalConfig(LMOptions):
    names: list[str]
    include_path: str | None
    data_files: dict[str, str] | None
    dataset_path: str | None
    dataset_name: str | None
    dataset_kwargs: dict[str, Any] | None

    @model_validator(mode="after")
    def _rules(self) -> LMEvalConfig:
        if not self.names:
            raise ValueError("task=lm_eval needs task.names=[...] (lm-eval task names, e.g. [arc_easy])")
        if self.eval_split != "test" or self.validation_fraction > 0:
            # a registry task's own "validation" is often what lm-eval reports as its score
            raise ValueError(
                "task=lm_eval does not carve a validation split (task.eval_split/validation_fraction); "
                "search on task=arith_mc, local_mc or gsm8k, or give your own split files as local_mc"
            )
        if self.data_files and self.dataset_path:
            raise ValueError("task.data_files and task.dataset_path both set; use one of them")
        for split, path in (self.data_files or {}).items():
            if not Path(str(path)).expanduser().is_file():
                raise ValueError(f"task.data_files.{split}={str(path)!r}: no such file")
        if self.include_path is not None:
            from loraven.tasks.registry import check_include_path

            check_include_path(self.include_path)  # every YAML there parses (lm-eval would skip a broken one)
        return self


def needs_network(task: Mapping[str, Any]) -> bool:
    """Registry tasks read their data from the dataset hub unless pointed at local data."""
    return not (task.get("data_files") or task.get("dataset_path") or task.get("include_path"))


@register_task("lm_eval", config=LMEvalConfig, family="custom", needs_network=needs_network)
def build_registry_task(settings: LMEvalConfig, data_root: Path) -> LMTask:
    """lm-eval tasks by name, scored with their own configs."""
    from loraven.tasks.registry import data_overrides

    cfg = settings.dump()
    names = [str(n) for n in cfg["names"]]
    include = cfg.get("include_path")
    include = str(Path(str(include)).expanduser().resolve()) if include else None
    overrides = data_overrides(cfg)
    digest = fingerprint({"names": names, "include": include, "data": overrides, "files": _file_digests(overrides)})
    return lm_eval_task(cfg, names, include, digest, overrides=overrides)


def _file_digests(overrides: Mapping[str, Any]) -> dict[str, str]:
    """Content hashes of local data files, so a changed file is a different task (base-accuracy cache key)."""
    files = (overrides.get("dataset_kwargs") or {}).get("data_files") or {}
    return {split: hashlib.sha256(Path(p).read_bytes()).hexdigest()[:16] for split, p in files.items()}
