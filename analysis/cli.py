"""Command line: read a results store or a W&B project, write tables and figures, print a summary."""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table

from analysis.compare import parse_reference
from analysis.load import load_results
from analysis.report import FORMATS, build_report
from analysis.wandb_source import load_wandb


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m analysis", description=__doc__)
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--results", default="results", help="results store to read (default: results)")
    source.add_argument("--wandb", metavar="ENTITY/PROJECT", help="read runs from W&B instead")
    parser.add_argument("--out", default="reports", help="where tables/ and figures/ go (default: reports)")
    parser.add_argument(
        "--format",
        default=",".join(FORMATS),
        help=f"comma-separated table formats among {', '.join(FORMATS)} (default: all)",
    )
    parser.add_argument("--no-figures", action="store_true", help="tables only")
    parser.add_argument(
        "--reference",
        metavar="KEY=VALUE[,KEY=VALUE]",
        help="each group's reference row, e.g. adapter=lora, scheduler=linear, adapter=loraven,scheduler=linear "
        "or a setting that differs in the group (lr=0.001); default: full fine-tuning if present, else the first "
        "method by adapter.order",
    )
    parser.add_argument(
        "--wandb-report",
        metavar="ENTITY/PROJECT",
        help="also build the W&B report of the paper's figures (saved with a W&B key; offline: written as a spec "
        "to --out with the command that publishes it)",
    )
    parser.add_argument("--publish", metavar="SPEC", help="save a spec written offline (needs --wandb-report, a key)")
    args = parser.parse_args(argv)
    try:
        wanted = parse_reference(args.reference)
    except ValueError as err:
        parser.error(str(err))
    bad_keys = [k for k in wanted if "=" in k]
    if bad_keys:
        parser.error(f"--reference {args.reference!r}: bad key(s) {', '.join(bad_keys)}")
    if args.wandb_report is not None and not _is_project_path(args.wandb_report):
        parser.error(f"--wandb-report {args.wandb_report!r}: expected ENTITY/PROJECT, e.g. me/loraven")
    if args.publish is not None:
        if args.wandb_report is None:
            parser.error("--publish SPEC needs --wandb-report ENTITY/PROJECT (where to save the report)")
        if not Path(args.publish).is_file():
            parser.error(f"--publish {args.publish!r}: no such file (it is written by --wandb-report offline)")
        args.formats = []
        return args
    args.formats = [f.strip() for f in args.format.split(",") if f.strip()]
    bad = [f for f in args.formats if f not in FORMATS]
    if bad or not args.formats:
        parser.error(f"--format {args.format!r}: valid choices are {', '.join(FORMATS)}")
    if not args.wandb and not Path(args.results).is_dir():
        parser.error(
            f"results directory {args.results!r} does not exist (run `python run.py` first, "
            "or pass --results DIR or --wandb ENTITY/PROJECT)"
        )
    problem = _out_problem(Path(args.out))
    if problem:
        parser.error(problem)
    return args


def _is_project_path(text: str) -> bool:
    parts = text.split("/")
    return len(parts) == 2 and all(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", p) for p in parts)


def _out_problem(out: Path) -> str | None:
    """Why ``--out`` cannot take the report (a file, or not writable), checked before any work; else None."""
    if out.exists() and not out.is_dir():
        return f"--out {str(out)!r} is a file; give a directory for tables/ and figures/"
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out) as probe:
            probe.write(b"probe")
    except OSError as err:
        return f"--out {str(out)!r} is not writable ({err.strerror or err})"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console(stderr=False)
    if args.publish is not None:
        return publish_spec(args.wandb_report, Path(args.publish), console)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        records = load_wandb(args.wandb) if args.wandb else load_results(args.results)
        try:
            report = build_report(
                records, args.out, args.formats, figures=not args.no_figures, reference=args.reference
            )
        except OSError as err:  # the disk filled or a permission changed while writing
            print(
                f"error: could not write the report under {args.out!r}: {err.strerror or err} "
                f"({getattr(err, 'filename', '')})",
                file=sys.stderr,
            )
            return 2
    for warning in caught:
        console.print(f"[yellow]warning:[/] {warning.message}", highlight=False)
    statuses = report.runs["status"].value_counts().to_dict() if not report.runs.empty else {}
    out = Path(args.out)
    summary = Table(title=f"{args.wandb or args.results}: {len(records)} runs {statuses} → {out}/")
    summary.add_column("kind")
    summary.add_column("name")
    summary.add_column("rows")
    summary.add_column("written")
    for name, paths in report.tables.items():
        summary.add_row("table", name, str(len(report.frames[name])), ", ".join(str(p.relative_to(out)) for p in paths))
    for name, path in report.figures.items():
        summary.add_row("figure", name, "-", str(path.relative_to(out)))
    if report.summary is not None:
        summary.add_row("report", "your runs, then the paper's claims", "-", str(report.summary.relative_to(out)))
    console.print(summary)
    if args.wandb_report:
        return wandb_report(args.wandb_report, out, None if args.wandb else Path(args.results), report.summary, console)
    return 0


def wandb_report(path: str, out: Path, results: Path | None, report_md: Path | None, console: Console) -> int:
    """Build the W&B report's spec, check its keys against the runs, then save it (a key) or write it (offline).

    Exit 2 with one line per missing key: no chart is built on a key nobody logs.
    """
    from analysis.wandb_spec import build_spec, check_spec, publish_blocker, publish_command, write_spec

    entity, project = path.split("/")
    spec = build_spec(entity, project, report_md)
    check = check_spec(spec, results)
    for note in check.notes:
        console.print(f"[yellow]note:[/] {note}", highlight=False, soft_wrap=True)
    if not check.ok:
        for line in check.missing:
            print(f"error: W&B report: {line}", file=sys.stderr)
        return 2
    spec_path = write_spec(spec, out, check)
    against = check.against
    if against == "offline runs":
        against = f"{check.runs_read} of {check.runs_found} offline W&B runs"
    console.print(
        f"W&B report: {len(spec['panels'])} panels, keys checked against {against} → {spec_path}",
        highlight=False,
        soft_wrap=True,
    )
    blocker = publish_blocker()
    if blocker is not None:
        console.print(
            f"offline ({blocker}): not published. To publish, with a W&B key set:", highlight=False, soft_wrap=True
        )
        print(publish_command(path, spec_path))
        return 0
    return _save(spec, console)


def publish_spec(path: str, spec_path: Path, console: Console) -> int:
    """``--publish SPEC``: save a spec written offline (to ``path``'s entity and project)."""
    from analysis.wandb_spec import publish_blocker, read_spec

    try:
        spec = read_spec(spec_path)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    spec["entity"], spec["project"] = path.split("/")
    blocker = publish_blocker()
    if blocker is not None:
        print(f"error: cannot publish the W&B report: {blocker}", file=sys.stderr)
        return 2
    return _save(spec, console)


def _save(spec: dict, console: Console) -> int:
    from analysis.wandb_report import publish

    try:
        url = publish(spec)
    except Exception as err:  # noqa: BLE001 - the library's and the server's errors, as one line
        print(f"error: could not save the W&B report: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    console.print(f"W&B report saved: {url}", highlight=False, soft_wrap=True)
    return 0
