"""``python -m loraven.rescore RUN_DIR [RUN_DIR...|GLOB|STORE] [task=... task.names=... ...]``: score saved weights
on any task without training.

Each source is a completed run whose weights were saved (``<run>/adapter/``, or ``<run>/model/`` with
``save.full_model=true``); a folder that holds no result.json (a store, an experiment) stands for every run under
it, and a glob for every match. Each re-score is its own record, written by the one job wrapper
(:func:`loraven.job.run_job` with the body below): status, contract, resume (an identical second re-score is
skipped), claim, W&B (offline like every run). Its run id hashes the source run, the task config and
``trainer.eval_batch_size``; its top-level ``rescore`` section links it to the source (``source_run_id``,
``source_experiment``, ``source_path``); its ``adapter`` and ``model`` sections are the source's, so the analysis
shows it beside its source.

The task comes from ``conf/`` through Hydra's compose API and the same schemas as a run's (``task_settings``):
``task=<kind>`` starts from that kind's defaults; without it the source's own task config is the start and
``task.<key>=...`` overrides change only those keys. ``task.retention`` does not apply (re-score the retention
tasks themselves). Other keys: ``trainer.eval_batch_size``, ``energy``, ``tracking``, ``device``, ``rerun``,
``results_dir`` (default: the source's store) and ``experiment_name`` (default ``rescore``).

Several runs on one base model load it once: the first adapter wraps it with peft (``PeftModel.from_pretrained``),
the next is added with ``load_adapter`` and made active with ``set_adapter``, and the previous one is deleted.
Adapters are scored as peft runs them (unmerged: ``adapter.eval_path`` says so), as lm-eval's ``peft=`` does; the
base weights are never modified, so the base score (``job.base_metrics``, cached per model × task) is taken with
the adapter disabled. A saved whole model (``model/``) is loaded as its own base.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import logging
import sys
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loraven.artifacts import ADAPTER_DIR, load_artifact_entry
from loraven.contract import contract_violations
from loraven.errors import ConfigError

log = logging.getLogger(__package__)  # the package logger, as the job's

DEFAULT_EXPERIMENT = "rescore"
ALLOWED_KEYS = (
    "task",
    "trainer.eval_batch_size",
    "energy",
    "tracking",
    "device",
    "rerun",
    "results_dir",
    "experiment_name",
)
GROUP_PREFIXES = ("task.", "energy.", "tracking.")
LM_MODEL_KINDS = ("smollm2_135m", "tiny_llama", "hf")
RESCORE_RECORD = "a re-score record (re-score its source instead)"
EVAL_PATH = "unmerged (peft PeftModel, re-scored)"


@dataclass
class Source:
    """A completed run with usable saved weights."""

    run_dir: Path
    record: dict[str, Any]
    kind: str  # adapter | model
    folder: Path
    entry: dict[str, Any]

    @property
    def run_id(self) -> str:
        return str(self.record["run_id"])

    @property
    def store(self) -> Path:
        return self.run_dir.parent.parent


# --------------------------------------------------------------------------- finding the runs


def find_sources(items: Sequence[str]) -> tuple[list[Source], list[str]]:
    """(usable sources in a stable order, one line per run that cannot be re-scored and why)."""
    dirs: list[Path] = []
    for item in items:
        matches = sorted(glob.glob(item)) if glob.has_magic(item) else [item]
        if not matches:
            raise ConfigError(f"{item!r} matches nothing")
        for match in matches:
            path = Path(match).expanduser()
            if (path / "result.json").is_file():
                dirs.append(path)
            elif path.is_dir():
                dirs += sorted(p.parent for p in path.rglob("result.json"))
            else:
                raise ConfigError(f"{item!r} is not a run folder, a results store or a glob of them")
    sources, skipped, seen = [], [], set()
    for run_dir in dirs:
        run_dir = run_dir.resolve()
        if run_dir in seen:
            continue
        seen.add(run_dir)
        source, why = _source(run_dir)
        if source is not None:
            sources.append(source)
        elif why != RESCORE_RECORD or len(dirs) == 1:  # a store's own re-score records are left out quietly
            skipped.append(f"{run_dir}: {why}")
    return sources, skipped


def _source(run_dir: Path) -> tuple[Source | None, str]:
    try:
        record = json.loads((run_dir / "result.json").read_text())
    except (OSError, ValueError) as err:
        return None, f"unreadable result.json ({err})"
    problems = contract_violations(record)
    if problems:
        return None, f"not a valid record ({problems[0]})"
    if record.get("status") != "completed":
        return None, f"status {record.get('status')}"
    if record.get("rescore"):
        return None, RESCORE_RECORD
    if "bench" in record:
        return None, "a benchmark record"
    kind = str((record.get("config") or {}).get("model", {}).get("kind"))
    if kind not in LM_MODEL_KINDS:
        return None, f"model kind {kind!r}: re-scoring needs an LM run ({', '.join(LM_MODEL_KINDS)})"
    found = load_artifact_entry(record, run_dir)
    if found is None:
        saved = (record.get("artifacts") or {}).get(ADAPTER_DIR) or {}
        why = saved.get("reason") or "no saved adapter (run with save.adapter=true, the default)"
        return None, f"nothing to load: {why}"
    return Source(run_dir, record, *found), ""


# --------------------------------------------------------------------------- the task and the configs


def parse_overrides(overrides: Sequence[str]) -> list[Any]:
    """Hydra's own override parser; a key outside :data:`ALLOWED_KEYS` is one line naming the valid ones."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except Exception as err:  # hydra's OverrideParseException: its message names the override
        raise ConfigError(str(err).splitlines()[0]) from None
    for override in parsed:
        key = override.key_or_group
        if key not in ALLOWED_KEYS and not key.startswith(GROUP_PREFIXES):
            raise ConfigError(
                f"{key}={override.input_line.split('=', 1)[-1]}: re-scoring takes only "
                f"{', '.join(ALLOWED_KEYS)} and their sub-keys (task.<key>, energy.<key>, tracking.<key>)"
            )
    return parsed


def compose(overrides: Sequence[str]) -> dict[str, Any]:
    """``conf/config.yaml`` composed with ``overrides`` by Hydra's compose API (as ``run.py`` would compose it)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    from loraven import CONF_DIR

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = hydra_compose(config_name="config", overrides=list(overrides))
    except Exception as err:  # hydra's ConfigCompositionException / missing option: one line
        raise ConfigError(str(err).splitlines()[0]) from None
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


class Plan:
    """The user's overrides applied to each source: the task, the batch size and where the records go."""

    def __init__(self, overrides: Sequence[str]) -> None:
        self.overrides = list(overrides)
        self.parsed = parse_overrides(overrides)
        self.keys = [o.key_or_group for o in self.parsed]
        self.new_task = "task" in self.keys
        self._composed: dict[str, dict[str, Any]] = {}

    def _compose_for(self, source_kind: str) -> dict[str, Any]:
        """Composed once per source task kind (without ``task=``, the overrides apply to the source's kind)."""
        extra = [] if self.new_task else [f"task={source_kind}"]
        if source_kind not in self._composed:
            self._composed[source_kind] = compose([*extra, *self.overrides])
        return self._composed[source_kind]

    def config(self, source: Source) -> dict[str, Any]:
        """The re-score job's config: the source's, with the task, batch size, meter, tracker and store replaced."""
        from loraven.tasks import task_settings

        src = json.loads(json.dumps(source.record["config"]))
        composed = self._compose_for(str(src["task"]["kind"]))
        if self.new_task:
            task = dict(composed["task"])
        else:  # the source's task, with only the keys the user set
            task = dict(src["task"])
            for key in self.keys:
                if key.startswith("task."):
                    _set_path(task, key.split(".")[1:], _get_path(composed["task"], key.split(".")[1:]))
        task["retention"] = []
        task_settings(task)  # the same schema as a run's: one line naming a bad key, before anything loads
        cfg = {k: v for k, v in src.items() if k not in ("rescore",)}
        cfg["task"] = task
        if "trainer.eval_batch_size" in self.keys:
            cfg["trainer"] = {**src["trainer"], "eval_batch_size": composed["trainer"]["eval_batch_size"]}
        for group in ("energy", "tracking"):
            if any(k == group or k.startswith(f"{group}.") for k in self.keys):
                cfg[group] = composed[group]
        cfg["device"] = composed["device"] if "device" in self.keys else src.get("device", "auto")
        cfg["rerun"] = bool(composed["rerun"]) if "rerun" in self.keys else False
        cfg["results_dir"] = str(composed["results_dir"]) if "results_dir" in self.keys else str(source.store)
        cfg["experiment_name"] = composed["experiment_name"] if "experiment_name" in self.keys else DEFAULT_EXPERIMENT
        cfg["save"] = {"adapter": False, "full_model": False}  # nothing new is trained
        cfg["rescore"] = {
            "source_run_id": source.run_id,
            "source_experiment": str(source.record.get("experiment")),
            "source_path": str(source.run_dir),
        }
        return cfg


def _get_path(obj: Mapping[str, Any], path: Sequence[str]) -> Any:
    for part in path:
        obj = obj[part]
    return obj


def _set_path(obj: dict[str, Any], path: Sequence[str], value: Any) -> None:
    for part in path[:-1]:
        obj = obj.setdefault(part, {})
    obj[path[-1]] = value


# --------------------------------------------------------------------------- one base model, adapters swapped


class BaseModels:
    """The base model loaded once per model config; peft adapters swapped on it (``loads`` counts the loads)."""

    def __init__(self) -> None:
        self.loads = 0
        self._key: str | None = None
        self.loaded = None  # LoadedModel
        self.peft = None  # the PeftModel around it once an adapter was loaded
        self.active: str | None = None

    def get(self, source: Source, device) -> Any:
        from loraven.models import LoadedModel, load_model

        model_cfg = source.record["config"]["model"]
        if source.kind == "model":  # a saved whole model is its own base
            model_cfg = {"kind": "hf", "name_or_path": str(source.folder), "dtype": model_cfg.get("dtype", "float32")}
        key = json.dumps(model_cfg, sort_keys=True, default=str)
        if key != self._key:
            self.release()
            loaded = load_model(model_cfg)
            loaded.model.to(device).eval()
            self.loaded = LoadedModel(loaded.model, loaded.tokenizer, loaded.name, loaded.kind)
            self._key = key
            self.loads += 1
        return self.loaded

    @contextlib.contextmanager
    def plain(self) -> Iterator[Any]:
        """The base model without any adapter (peft's ``disable_adapter`` once one is loaded)."""
        if self.peft is None:
            yield self.loaded.model
        else:
            with self.peft.disable_adapter():
                yield self.peft

    def activate(self, source: Source) -> Any:
        """The model to score for ``source``: the base with its adapter active (or the saved whole model)."""
        if source.kind == "model":
            return self.loaded.model
        from peft import PeftModel

        name = f"run_{source.run_id}"
        with warnings.catch_warnings():  # peft reads transformers' deprecated alias; its FutureWarning is not ours
            warnings.filterwarnings("ignore", r".*`is_gradient_checkpointing` is deprecated", FutureWarning)
            if self.peft is None:
                self.peft = PeftModel.from_pretrained(self.loaded.model, str(source.folder), adapter_name=name)
            elif name not in self.peft.peft_config:
                self.peft.load_adapter(str(source.folder), adapter_name=name)
        self.peft.set_adapter(name)
        previous, self.active = self.active, name
        if previous is not None and previous != name and previous in self.peft.peft_config:
            self.peft.delete_adapter(previous)
        self.peft.eval()
        return self.peft

    def release(self) -> None:
        self.loaded = self.peft = self.active = self._key = None


# --------------------------------------------------------------------------- the job body


def make_body(source: Source, models: BaseModels):
    """``run_job``'s body for one re-score: load (once), base score, adapter, evaluate (metered), record."""

    def body(run, record, run_dir: Path, tracker, progress: bool, main: bool) -> None:
        import torch

        from loraven import measure, provenance
        from loraven.evaluate import evaluate
        from loraven.job import base_metrics
        from loraven.meters import combine, make_meter
        from loraven.models import LoadedModel, cache_dir
        from loraven.record import ModelInfo, TimeInfo
        from loraven.tasks import build_task
        from loraven.track import flatten

        timer = measure.PhaseTimes()
        device = provenance.pick_device(run.top.device)
        seed = run.top.seed
        torch.manual_seed(seed)
        memory = measure.PeakMemory(device)
        record.set_env(provenance.environment(device))
        start = time.perf_counter()
        with timer.phase("load", device):
            task = build_task(run.task, cache_dir() / "data")
            loaded = models.get(source, device)
        record.set_metrics({"task": task.name, "metric": task.metric_key})
        record.update_task(task.describe())
        eval_bs = run.trainer.eval_batch_size
        with models.plain() as plain:
            base = base_metrics(run.raw, LoadedModel(plain, loaded.tokenizer, loaded.name, "lm"), task, eval_bs, seed)
        with timer.phase("adapt", device):
            model = models.activate(source)
        meter = make_meter(run.energy, run_dir)
        with meter.measure("eval") as box, timer.phase("eval", device):
            metrics = evaluate(model, loaded.tokenizer, task, batch_size=eval_bs, seed=seed)
        src = source.record
        record.set_metrics({**metrics, **base})
        record.set_model(ModelInfo(**{k: src["model"][k] for k in ("name", "total_params", "trainable_params")}))
        record.update_adapter({**src["adapter"], "eval_path": EVAL_PATH if source.kind == "adapter" else "whole model"})
        record.set_time(
            TimeInfo(eval_s=timer.phases["eval"], load_s=timer.phases["load"], total_s=time.perf_counter() - start)
        )
        record.set_energy(combine({"eval": box["reading"]}, None, metrics.get("n"), task.train_unit))
        record.set_memory(memory.read())
        record.add_section(
            "rescore",
            {
                **run.raw["rescore"],
                "artifact": {
                    "kind": source.kind,
                    "path": str(source.folder),
                    "format": source.entry.get("format"),
                    "sha256": source.entry.get("sha256"),
                },
                "source_task": src["task"],
                "source_metrics": {k: src["metrics"].get(k) for k in ("task", "metric", "accuracy", "n")},
            },
        )
        tracker.log(flatten("eval", {k: v for k, v in record["metrics"].items() if k != "per_task"}))

    return body


# --------------------------------------------------------------------------- the command


def rescore(items: Sequence[str], overrides: Sequence[str] = (), progress: bool = True) -> tuple[list[dict], int]:
    """Re-score every usable run under ``items``; returns (the records, how many times a base model was loaded)."""
    from loraven.job import run_job
    from loraven.run_config import validate_run_config

    plan = Plan(overrides)
    sources, skipped = find_sources(items)
    for line in skipped:
        print(f"not re-scored: {line}", file=sys.stderr)
    if not sources:
        raise ConfigError("no run with saved weights to re-score" + (f" ({len(skipped)} skipped)" if skipped else ""))
    configs = [plan.config(source) for source in sources]
    for cfg in configs:  # every config checked before a model is loaded
        validate_run_config(cfg)
    # one load per base model: runs on the same model are scored one after another
    order = sorted(
        range(len(sources)), key=lambda i: (sources[i].kind, json.dumps(configs[i]["model"], sort_keys=True))
    )
    models, results = BaseModels(), []
    for i in order:
        source, cfg = sources[i], configs[i]
        result = run_job(cfg, progress=progress, body=make_body(source, models))
        results.append(result)
        _print_line(source, result)
    return results, models.loads


def _print_line(source: Source, result: Mapping[str, Any]) -> None:
    from loraven.track import ResultsStore

    where = ResultsStore(result["config"]["results_dir"]).run_dir(result["experiment"], result["run_id"])
    status = "skipped (already re-scored)" if result.get("_resumed") else result["status"]
    metrics = result.get("metrics") or {}
    score = f"{metrics.get('metric')}={metrics.get('accuracy')}" if metrics.get("accuracy") is not None else ""
    reason = f" ({result.get('reason')})" if result.get("status") != "completed" else ""
    print(f"{source.run_id} → {result['run_id']} {metrics.get('task')}: {status}{reason} {score}  {where}/result.json")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m loraven.rescore",
        description="Score saved adapters on any task without training; each re-score is its own result record.",
        epilog="example: python -m loraven.rescore results/default task=commonsense "
        "'task.names=[arc_easy]' task.limit=100",
    )
    parser.add_argument("items", nargs="+", help="run folders, stores, globs; then Hydra-style overrides (key=value)")
    args = parser.parse_args(argv)
    items = [a for a in args.items if "=" not in a]
    overrides = [a for a in args.items if "=" in a]
    logging.basicConfig(level=logging.WARNING, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    logging.getLogger(__package__).setLevel(logging.INFO)
    try:
        results, loads = rescore(items, overrides, progress=sys.stderr.isatty())
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    done = sum(1 for r in results if r.get("_resumed"))
    print(f"{len(results) - done} re-scored, {done} already done; base model loaded {loads} time(s)")
    return 1 if any(r.get("status") == "failed" for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
