"""``python -m loraven.bench SUITE [options]``: run one benchmark suite and print it (quick, console use).

Defaults come from the ``bench:`` section of conf/experiment/paper_speedup.yaml (one source of defaults);
flags override them. For a stored, provenance-stamped result use ``python run.py experiment=paper_speedup``.

    python -m loraven.bench fusion --shapes 32x512,64x1024 --ranks 8,16 --repeats 20
    python -m loraven.bench train_step --layers 2 --methods none,lora,loraven_static
    python -m loraven.bench inference --layers 2
    python -m loraven.bench overhead --steps 60
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from loraven.bench.job import SUITES, load_defaults, run_suites
from loraven.errors import ConfigError


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m loraven.bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("suite", choices=SUITES)
    parser.add_argument("--device", help="auto | cpu | cuda[:N]")
    parser.add_argument("--dtype", help="auto | float32 | bfloat16 | float16")
    parser.add_argument("--threads", help="torch intra-op threads (auto = one per core)")
    parser.add_argument("--repeats", type=int, help="timed samples per variant/method")
    parser.add_argument("--warmup", type=int, help="untimed rounds first")
    parser.add_argument("--json", type=Path, help="also write the rows to this JSON file")
    fusion = parser.add_argument_group("fusion")
    fusion.add_argument("--shapes", type=_csv, help="BATCHxDIM list, e.g. 32x512,64x1024")
    fusion.add_argument("--ranks", help="auto (8..dim/2) or a list, e.g. 8,16,64")
    fusion.add_argument(
        "--variants", type=_csv, help="subset of original,factored,fused,fused_precompute,inplace,dense"
    )
    fusion.add_argument("--max-gflop", dest="max_gflop", help="skip larger shapes (auto: 10 on CPU)")
    lm = parser.add_argument_group("train_step / inference")
    lm.add_argument("--model", help="smollm2 | tiny")
    lm.add_argument("--layers", type=int, help="keep only the first N decoder layers")
    lm.add_argument("--batch-size", dest="batch_size", type=int)
    lm.add_argument("--seq-len", dest="seq_len", type=int)
    lm.add_argument("--rank", type=int)
    lm.add_argument("--methods", type=_csv, help="e.g. none,lora,dora,lora_ar,loraven_static,loraven_linear")
    rc = parser.add_argument_group("rank_cost")
    rc.add_argument("--dim", type=int, help="square layer size (r_max = dim/2)")
    rc.add_argument("--batch", type=int)
    ov = parser.add_argument_group("overhead")
    ov.add_argument("--steps", type=int, help="training steps per run")
    return parser.parse_args(argv)


def bench_config(args: argparse.Namespace) -> dict[str, Any]:
    """The experiment's bench section with the flags that were given laid over it."""
    bench = load_defaults()
    bench["suite"] = [args.suite]
    for key in ("device", "dtype", "threads"):
        if getattr(args, key) is not None:
            bench[key] = getattr(args, key)
    if args.suite == "fusion":
        for key in ("shapes", "variants", "max_gflop", "repeats", "warmup"):
            if getattr(args, key) is not None:
                bench[key] = getattr(args, key)
        if args.ranks is not None:
            bench["ranks"] = "auto" if args.ranks == "auto" else [int(r) for r in _csv(args.ranks)]
    else:
        sub = dict(bench.get(args.suite) or {})
        for key in (
            "model",
            "layers",
            "batch_size",
            "seq_len",
            "rank",
            "methods",
            "steps",
            "repeats",
            "warmup",
            "dim",
            "batch",
        ):
            if getattr(args, key) is not None:
                sub[key] = getattr(args, key)
        bench[args.suite] = sub
    return bench


def main(argv: list[str] | None = None) -> int:
    from loraven.bench.report import print_tables

    args = parse_args(argv)
    try:
        out = run_suites(bench_config(args), log_fn=lambda msg: print(msg, file=sys.stderr, flush=True))
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print_tables(out, stderr=False)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
