"""Rich tables of benchmark results (console) — the numbers themselves live in result.json."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from loraven.bench.fusion import VARIANTS, crossover, speedup_rows


def _f(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def print_tables(result: dict[str, Any], stderr: bool = True) -> None:
    from rich.console import Console

    console = Console(stderr=stderr, width=160)
    for table in tables(result):
        console.print(table)


def tables(result: dict[str, Any]) -> list:
    out = []
    if result.get("bench"):
        out.append(fusion_table(result["bench"]))
    if result.get("bench_train_step"):
        out.append(train_step_table(result["bench_train_step"]))
    if result.get("bench_inference"):
        out.append(inference_table(result["bench_inference"]))
    if result.get("bench_overhead"):
        out.append(overhead_table(result["bench_overhead"]))
    if result.get("bench_rank_cost"):
        out.append(rank_cost_table(result["bench_rank_cost"]))
    return out


def rank_cost_table(rows: Sequence[dict[str, Any]]):
    from rich.table import Table

    first = rows[0]
    table = Table(
        title=f"LoRAven replace-mode fwd+bwd vs active rank — {first['dim']}x{first['dim']}, batch "
        f"{first['batch']}, r_max {first['r_max']} ({first['device']}, {first['dtype']})"
    )
    for col in ("variant", "ms (median)", "p10–p90", "÷ full rank"):
        table.add_column(col)
    for r in rows:
        ratio = r["ratio_to_full_rank"]
        table.add_row(
            r["variant"],
            f"{r['ms']:.2f}",
            f"{r['ms_p10']:.2f}–{r['ms_p90']:.2f}",
            f"{ratio:.2f}" if ratio is not None else "-",
        )
    return table


def fusion_table(rows: Sequence[dict[str, Any]]):
    from rich.table import Table

    first = rows[0]
    present = [v for v in VARIANTS if any(r["variant"] == v for r in rows)]
    cross = crossover(rows)
    table = Table(
        title=f"fusion (ms, median of {first.get('repeats')}) — {first['device']} {first['dtype']}, "
        f"{first.get('threads')} threads"
    )
    for col in ("shape", "rank", *present, "orig/fused", "orig/inplace", "factored/fused"):
        table.add_column(col, justify="right")
    for e in speedup_rows(rows):
        table.add_row(
            e["shape"],
            str(e["rank"]),
            *[_f(e.get(v)) for v in present],
            _f(e["fusion_speedup"]),
            _f(e["inplace_speedup"]),
            _f(e["fused_vs_factored"]),
        )
    table.caption = "fused beats factored from rank: " + ", ".join(f"{s}: {r or 'never'}" for s, r in cross.items())
    return table


def train_step_table(rows: Sequence[dict[str, Any]]):
    from rich.table import Table

    first = rows[0]
    table = Table(
        title=f"train step — {first['model']}, batch {first['batch_size']}x{first['seq_len']}, "
        f"r={first['rank']}, {first['device']} {first['dtype']}, {first['threads']} threads"
    )
    for col in (
        "method",
        "ms",
        "p10",
        "p90",
        "tokens/s",
        "peak MB",
        "trainable",
        "÷ full FT",
        f"÷ {first.get('reference') or 'reference'}",
    ):
        table.add_column(col, justify="right")
    for r in rows:
        if r.get("status") != "measured":
            table.add_row(r["method"], r.get("status", "-"), *["-"] * 7)
            continue
        table.add_row(
            r["method"],
            _f(r["ms"], 4),
            _f(r["ms_p10"], 4),
            _f(r["ms_p90"], 4),
            _f(r["tokens_per_s"]),
            _f(r.get("peak_mb"), 4),
            f"{r['trainable_params']:,}",
            _f(r["vs_full_ft"]),
            _f(r.get("vs_reference")),
        )
    return table


def inference_table(rows: Sequence[dict[str, Any]]):
    from rich.table import Table

    first = rows[0]
    table = Table(
        title=f"inference forward — {first['model']}, batch {first['batch_size']}x{first['seq_len']}, "
        f"r={first['rank']}, {first['device']} {first['dtype']}"
    )
    for col in ("method", "variant", "ms", "p10", "p90", "÷ base", "max |merged−unmerged|"):
        table.add_column(col, justify="right")
    for r in rows:
        if "ms" not in r:
            table.add_row(r["method"], r["variant"], r.get("status", "-"), "-", "-", "-", "-")
            continue
        table.add_row(
            r["method"],
            r["variant"],
            _f(r["ms"], 4),
            _f(r["ms_p10"], 4),
            _f(r["ms_p90"], 4),
            _f(r["vs_base"]),
            _f(r.get("max_abs_diff"), 2),
        )
    return table


def overhead_table(o: dict[str, Any]):
    from rich.table import Table

    table = Table(title=f"harness overhead — {o['model']} {o['adapter']}, {o['steps']} steps, median of {o['repeats']}")
    for col in ("setting", "train_s", "total_s", "energy method"):
        table.add_column(col, justify="right")
    for label in ("bare", "full"):
        s = o[label]
        table.add_row(" ".join(s["overrides"]), _f(s["train_s"], 4), _f(s["total_s"], 4), str(s["energy_method"]))
    table.add_row("ratio full ÷ bare", _f(o["train_s_ratio"], 4), _f(o["total_s_ratio"], 4), "goal ≤ 1.02")
    return table
