"""``job: bench`` — the benchmark suites as one result record in the results store.

``python run.py experiment=paper_speedup`` lands here (via loraven.cli) with the resolved config; its
``bench:`` section (conf/experiment/paper_speedup.yaml, the single source of defaults, also read by
``python -m loraven.bench``) picks the suites: fusion (Table 5.1 rows in ``bench``, the contract's
section), train_step (``bench_train_step``), inference (``bench_inference``), overhead (``bench_overhead``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import torch

from loraven import CONF_DIR, provenance
from loraven.bench.timing import dtype_name, resolve_device, resolve_dtype, set_threads
from loraven.errors import ConfigError

log = logging.getLogger("loraven.bench")

EXPERIMENT_FILE = CONF_DIR / "experiment" / "paper_speedup.yaml"


def load_defaults() -> dict[str, Any]:
    """The ``bench:`` section of conf/experiment/paper_speedup.yaml (defaults for the module CLI too)."""
    from omegaconf import OmegaConf

    if not EXPERIMENT_FILE.is_file():
        raise ConfigError(f"missing {EXPERIMENT_FILE}: the benchmark defaults live there")
    data = OmegaConf.to_container(OmegaConf.load(EXPERIMENT_FILE), resolve=True)
    assert isinstance(data, dict)
    return dict(data["bench"])


def suites_of(bench: Mapping[str, Any]) -> list[str]:
    raw = bench.get("suite", "fusion")
    names = [s.strip() for s in raw.split(",")] if isinstance(raw, str) else [str(s) for s in raw]
    bad = [s for s in names if s not in SUITES and s != "all"]
    if bad or not names:
        raise ConfigError(f"bench.suite={raw!r}; valid choices: {', '.join(SUITES)}, all (or a list)")
    return list(SUITES) if "all" in names else names


def run_suites(bench: Mapping[str, Any], log_fn: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run the selected suites; returns the result sections (bench, bench_train_step, ...) + settings."""
    device = resolve_device(bench.get("device", "auto"))
    dtype = resolve_dtype(bench.get("dtype", "auto"), device)
    threads = set_threads(bench.get("threads", "auto"))
    out: dict[str, Any] = {
        "bench_settings": {
            "device": provenance.device_name(device),
            "dtype": dtype_name(dtype),
            "threads": threads,
            "suites": suites_of(bench),
        }
    }
    for suite in out["bench_settings"]["suites"]:
        section, runner = SUITE_RUNNERS[suite]
        out[section] = runner(bench, dict(bench.get(suite) or {}), device, dtype, threads, log_fn)
    return out


def _fusion(bench, sub, device, dtype, threads, log_fn):
    from loraven.bench.fusion import VARIANTS, run_fusion

    return run_fusion(
        list(bench.get("shapes") or []),
        bench.get("ranks", "auto"),
        repeats=int(bench.get("repeats", 20)),
        warmup=int(bench.get("warmup", 3)),
        device=device,
        dtype=dtype,
        threads=threads,
        variant_names=list(bench.get("variants") or VARIANTS),
        max_gflop=bench.get("max_gflop", "auto"),
        min_sample_ms=float(bench.get("min_sample_ms", 2.0)),
        log=log_fn,
    )


def _train_step(bench, sub, device, dtype, threads, log_fn):
    from loraven.bench.train_step import run_train_step

    return run_train_step(
        **_lm_kwargs(sub),
        lr=float(sub.get("lr", 1e-4)),
        profile=bool(sub.get("profile", True)),
        device=device,
        dtype=_lm_dtype(sub, device),
        threads=threads,
        log=log_fn,
    )


def _inference(bench, sub, device, dtype, threads, log_fn):
    from loraven.bench.inference import run_inference

    return run_inference(**_lm_kwargs(sub), device=device, dtype=_lm_dtype(sub, device), threads=threads, log=log_fn)


def _overhead(bench, sub, device, dtype, threads, log_fn):
    from loraven.bench.overhead import run_overhead

    return run_overhead(
        model=str(sub.get("model", "tiny_llama")),
        adapter=sub.get("adapter"),
        steps=int(sub.get("steps", 60)),
        repeats=int(sub.get("repeats", 3)),
        warmup=int(sub.get("warmup", 1)),
        extra_overrides=list(sub.get("overrides") or []),
        log=log_fn,
    )


def _rank_cost(bench, sub, device, dtype, threads, log_fn):
    from loraven.bench.rank_cost import run_rank_cost

    return run_rank_cost(
        dim=int(sub.get("dim", 2048)),
        batch=int(sub.get("batch", 128)),
        fractions=sub.get("fractions"),
        repeats=int(sub.get("repeats", 10)),
        warmup=int(sub.get("warmup", 2)),
        device=device,
        dtype=dtype,
        threads=threads,
        log=log_fn,
    )


# suite name → (result section, runner(bench, its sub-section, device, dtype, threads, log))
SUITE_RUNNERS: dict[str, tuple[str, Callable[..., Any]]] = {
    "fusion": ("bench", _fusion),
    "train_step": ("bench_train_step", _train_step),
    "inference": ("bench_inference", _inference),
    "overhead": ("bench_overhead", _overhead),
    "rank_cost": ("bench_rank_cost", _rank_cost),
}
SUITES = tuple(SUITE_RUNNERS)


def _lm_kwargs(sub: Mapping[str, Any]) -> dict[str, Any]:
    names = ("model", "layers", "rank_mode", "reference")
    kwargs: dict[str, Any] = {k: sub[k] for k in names if sub.get(k) is not None}
    kwargs.update({k: int(sub[k]) for k in ("batch_size", "seq_len", "rank", "warmup", "repeats") if k in sub})
    if sub.get("methods"):
        kwargs["methods"] = [str(m) for m in sub["methods"]]
    return kwargs


def _lm_dtype(sub: Mapping[str, Any], device: torch.device) -> torch.dtype:
    """Model dtype for the LM suites: fp32 on CPU (as the harness trains there) unless set."""
    return resolve_dtype(sub.get("dtype", "float32" if device.type == "cpu" else "auto"), device)


def run_bench_job(cfg: dict[str, Any], search_dirs=()) -> dict[str, Any]:
    """Run ``cfg['bench']`` through the one job wrapper (:func:`loraven.job.run_job`: resume, claim, one
    record at ``<results_dir>/<experiment_name>/<run_id>/result.json``) and print its tables."""
    from loraven.bench.report import print_tables
    from loraven.job import run_job

    bench = cfg.get("bench")
    if not isinstance(bench, Mapping):
        raise ConfigError("job=bench needs a bench: section; use experiment=paper_speedup")
    suites_of(bench)
    result = run_job(cfg, body=_bench_body, search_dirs=search_dirs)
    if result["status"] == "completed" and not result.get("_resumed"):
        print_tables(result)
    return result


def _bench_body(run, record, run_dir, tracker, progress: bool, main: bool) -> None:
    """The benchmark suites as a job body: the record is a benchmark, not a training run of an adapter."""
    from loraven.record import TimeInfo

    bench = run.raw["bench"]
    record.update_adapter({"type": "bench", "scheduler": "none", "label": "benchmark", "order": None, "size": None})
    record.update_task({"kind": "bench", "family": None, "metric": None, "higher_is_better": None})
    start = time.perf_counter()
    env = provenance.environment(resolve_device(bench.get("device", "auto")))
    for section, value in run_suites(bench, log_fn=lambda msg: log.info("%s", msg)).items():
        record.add_section(section, value)
    env["cpu_threads"] = torch.get_num_threads()
    record.set_env(env)
    record.set_time(TimeInfo(total_s=time.perf_counter() - start))
