"""The W&B report as data: its panels (the paper's figures), the metric keys each reads, the grouping, the
verdict text — and the check that every key is one the runs log.

Plain Python and JSON only: building, checking and writing the spec never imports ``wandb_workspaces``, so it
works offline and in tests even where that library is missing or changed. :mod:`analysis.wandb_report` turns a
spec into a report with the library and saves it (the only module that imports it).

Key check ("no chart on a key nobody logs"): each panel key is looked up in the offline W&B runs of the results
store, read back with wandb's own reader (:mod:`analysis.wandb_runs`), among the completed runs the panel is
about (``where``); with no runs to read it is looked up in the keys the harness declares it logs
(:mod:`loraven.wandb_layout`). A missing key is one line naming the panel, the key and the closest logged key.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loraven import wandb_layout as layout

SPEC_FORMAT = "loraven-wandb-report/1"
SPEC_NAME = "wandb_report.json"
SOURCES = ("history", "summary", "config", "table")
AGGREGATE = {"func": "mean", "range": "stddev"}  # grouped panels: mean over the seeds of a group, ± one std
MAX_RUNS_READ = 24  # reading a log costs ~1 s: stop once every key is found, and after this many runs at most
GROUPING = (
    "W&B group = <experiment>/<method>/<scheduler>/<config hash>: the seeds of one configuration (every semantic "
    "config key but the seed, and the energy meter, hashed), so a grouped panel shows their mean ± std and never "
    "pools different work; job_type train | validation (search trials) | bench; tags method:, scheduler:, seed:, "
    "model:, task:, experiment:"
)


def _key(role: str, source: str, key: str) -> dict[str, str]:
    return {"role": role, "source": source, "key": key}


def panels() -> list[dict[str, Any]]:
    """The report's panels: one per paper figure (W&B's grouped charts give the spread over seeds)."""
    dynamic = {"config_not": {"scheduler.name": "static"}}
    return [
        {
            "id": "accuracy_vs_energy",
            "kind": "scatter",
            "title": "Accuracy vs training energy (one point per run)",
            "description": "§5.2's trade-off: each run's accuracy (metrics/accuracy) against its training-phase "
            "energy in kWh (energy/kwh, measured or estimated as energy/evidence says); runs of one group "
            "share a colour. Empty where energy was not measured (energy=none).",
            "keys": [_key("x", "summary", "energy/kwh"), _key("y", "summary", "metrics/accuracy")],
        },
        {
            "id": "accuracy_per_group",
            "kind": "bar",
            "title": "Accuracy per method and scheduler (mean ± std over seeds)",
            "description": "§5.3: the final evaluation's accuracy (metric of the task, on its split), one bar "
            "per group, the whisker one standard deviation over its seeds.",
            "keys": [_key("y", "summary", "metrics/accuracy")],
            "aggregate": AGGREGATE,
        },
        {
            "id": "energy_per_group",
            "kind": "bar",
            "title": "Training energy per method and scheduler, kWh (mean ± std over seeds)",
            "description": "§5.2: the training phase's energy; an estimate (codecarbon TDP × load) is never "
            "a measurement: compare only groups whose energy/evidence and energy/method agree.",
            "keys": [_key("y", "summary", "energy/kwh")],
            "aggregate": AGGREGATE,
        },
        {
            "id": "rank_over_steps",
            "kind": "line",
            "title": "Mean rank over training steps per scheduler",
            "description": "LoRAven's dynamic schedulers: the mean rank over adapted layers at each optimizer "
            "step (train/step), mean ± std over the seeds of a group. Runs of a static scheduler are left out.",
            "keys": [_key("x", "history", layout.STEP), _key("y", "history", "train/loraven/rank_mean")],
            "aggregate": AGGREGATE,
            "where": dynamic,
        },
        {
            "id": "step_time_per_group",
            "kind": "bar",
            "title": "Median training step time per method, ms (mean ± std over seeds)",
            "description": "The median of each run's per-step wall time (time/step_ms_median), the same "
            "measurement as the step-time benchmark; one bar per group.",
            "keys": [_key("y", "summary", "time/step_ms_median")],
            "aggregate": AGGREGATE,
        },
        {
            "id": "allocation",
            "kind": "table",
            "title": "LoRA-AR's per-module rank allocation",
            "description": "LoRA-AR's spectral allocation of each run (module, Hill alpha, spikes, score, "
            "rank; rank 0 = not selected), the table logged as lora_ar_allocation.",
            "keys": [_key("table", "table", "lora_ar_allocation")],
            "where": {"logs_suffix": "_allocation"},
        },
        {
            "id": "parallel_coordinates",
            "kind": "parallel",
            "title": "Method, scheduler, lr, rank → accuracy, energy",
            "description": "Every run as one line through its method, scheduler, learning rate and nominal "
            "rank (the method's size key: r, r_max or budget_rank) to its accuracy and training energy.",
            "keys": [
                _key("column", "config", "adapter.name"),
                _key("column", "config", "scheduler.name"),
                _key("column", "config", "trainer.lr"),
                _key("column", "summary", "adapter/size/value"),
                _key("column", "summary", "metrics/accuracy"),
                _key("column", "summary", "energy/kwh"),
            ],
        },
        {
            "id": "train_loss",
            "kind": "line",
            "title": "Training loss over steps (mean ± std over seeds)",
            "description": "The training loss at each logged optimizer step, per group.",
            "keys": [_key("x", "history", layout.STEP), _key("y", "history", "train/loss")],
            "aggregate": AGGREGATE,
        },
    ]


def runset() -> dict[str, Any]:
    """Which runs the panels show and how they are grouped (W&B's group: the seeds of one comparison)."""
    return {
        "groupby": ["group"],
        "filters": [
            {"section": "run", "key": "JobType", "op": "==", "value": "train"},
            {"section": "summary", "key": "status", "op": "==", "value": "completed"},
        ],
        "grouping": GROUPING,
    }


def verdict_text(report_md: str | Path | None) -> dict[str, Any]:
    """The verdict tables of REPORT.md (``python -m analysis``'s page) as Markdown: each section whose table
    has a ``verdict`` column, with its heading; whatever that page looks like, a missing or verdict-free one
    gives a line saying so instead of failing."""
    path = Path(report_md) if report_md else None
    if path is None or not path.is_file():
        return {"source": str(path) if path else None, "markdown": "_No REPORT.md: run `python -m analysis`._"}
    text = path.read_text(errors="replace")
    sections = re.split(r"(?m)^(?=#{1,6} )", text)
    kept = []
    for section in sections:
        header_rows = [ln for ln in section.splitlines() if ln.lstrip().startswith("|")][:1]
        if header_rows and "verdict" in header_rows[0].lower():
            kept.append(section.strip())
    markdown = "\n\n".join(kept) if kept else f"_{path.name} has no verdict table._"
    return {"source": str(path), "markdown": markdown}


def build_spec(entity: str, project: str, report_md: str | Path | None = None, title: str | None = None) -> dict:
    """What the report will contain, as JSON-ready data (no W&B library, no network)."""
    return {
        "format": SPEC_FORMAT,
        "entity": entity,
        "project": project,
        "title": title or "LoRAven claims: accuracy, energy, rank and time per method",
        "description": "Built by `python -m analysis --wandb-report`: the paper's figures over this project's "
        "runs, grouped by comparison (seeds inside a group), and the verdicts of REPORT.md.",
        "runset": runset(),
        "panels": panels(),
        "verdicts": verdict_text(report_md),
    }


def panel_keys(spec: Mapping[str, Any]) -> list[tuple[Mapping[str, Any], Mapping[str, str]]]:
    """Every (panel, key) the spec reads, the runset's summary filters included (as a pseudo-panel)."""
    out = [(p, k) for p in spec["panels"] for k in p["keys"]]
    filters = {"id": "runset", "title": "runset filter"}
    out += [(filters, {"source": f["section"], "key": f["key"]}) for f in spec["runset"]["filters"]]
    return [(p, k) for p, k in out if k["source"] in SOURCES]


# --------------------------------------------------------------------------- the key check


@dataclass
class KeyCheck:
    """What the check found: ``missing`` (one line each; the build stops) and ``notes`` (warnings)."""

    against: str  # "offline runs" | "declared keys"
    runs_read: int = 0
    runs_found: int = 0
    missing: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.missing

    def to_dict(self) -> dict[str, Any]:
        return {
            "against": self.against,
            "runs_read": self.runs_read,
            "runs_found": self.runs_found,
            "missing": self.missing,
            "notes": self.notes,
        }


def _closest(key: str, known: Iterable[str]) -> str:
    near = difflib.get_close_matches(key, sorted(set(known)), n=1, cutoff=0.6)
    return f" (closest logged key: {near[0]!r})" if near else ""


def _is_empty(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value)


def check_declared(spec: Mapping[str, Any]) -> KeyCheck:
    """Every panel key against the keys the harness declares it logs (loraven/wandb_layout.py)."""
    check = KeyCheck(against="declared keys")
    for panel, key in panel_keys(spec):
        known = layout.declared(key["source"], panel.get("where"))
        if key["key"] not in known:
            check.missing.append(
                f"panel {panel['title']!r} reads {key['source']} key {key['key']!r}, which the harness does not "
                f"declare it logs (loraven/wandb_layout.py){_closest(key['key'], known)}"
            )
    return check


def check_runs(
    spec: Mapping[str, Any], runs: Iterable[Any], where_from: str = "", total: int | None = None
) -> KeyCheck:
    """Every panel key against real runs (:class:`analysis.wandb_runs.RunLog`): it must be logged by at least one
    completed run the panel is about; a key logged only as null (energy=none) is a note, not an error.

    ``runs`` may be a lazy iterator: reading stops once every key has been found with a value.
    """
    pairs = panel_keys(spec)
    check = KeyCheck(against="offline runs", runs_found=total or 0)
    found: dict[int, bool] = {}  # index into pairs -> seen with a value (True) or only empty (False)
    in_scope = [0] * len(pairs)
    seen: dict[str, set[str]] = {s: set() for s in SOURCES}
    for run in runs:
        check.runs_read += 1
        if run.status != "completed":
            continue
        keys = {s: run.keys(s) for s in SOURCES}
        for source in SOURCES:
            seen[source] |= keys[source]
        every = set().union(*keys.values())
        for i, (panel, key) in enumerate(pairs):
            if not layout.applies(panel.get("where"), run.config, every):
                continue
            in_scope[i] += 1
            if key["key"] in keys[key["source"]]:
                found[i] = found.get(i, False) or not _is_empty(run.value(key["source"], key["key"]))
        if len(found) == len(pairs) and all(found.values()):
            break
    completed_seen = any(in_scope)
    where = f" under {where_from}" if where_from else ""
    empty: dict[tuple[str, str], list[str]] = {}  # (source, key) -> the panels reading it
    for i, (panel, key) in enumerate(pairs):
        label = f"panel {panel['title']!r} reads {key['source']} key {key['key']!r}"
        if i in found:
            if not found[i]:
                empty.setdefault((key["source"], key["key"]), []).append(str(panel["id"]))
            continue
        if in_scope[i] == 0:  # no completed run this panel is about: the declaration is all there is to check
            known = layout.declared(key["source"], panel.get("where"))
            scope = "completed run" if not panel.get("where") else f"completed run it is about ({panel['where']})"
            if key["key"] in known:
                check.notes.append(f"{label}: no {scope}{where}; checked against the declared keys only")
            else:
                check.missing.append(
                    f"{label}, which no run{where} logs and the harness does not declare{_closest(key['key'], known)}"
                )
            continue
        check.missing.append(
            f"{label}, which none of the {in_scope[i]} completed runs it covers{where} logs"
            f"{_closest(key['key'], seen[key['source']])}"
        )
    for (source, name), ids in empty.items():
        check.notes.append(
            f"{source} key {name!r} (panels {', '.join(ids)}) is logged but empty in every run read: "
            "not measured in these runs"
        )
    if not completed_seen:
        check.notes.append(f"no completed offline W&B run{where}: keys checked against the declared keys")
    return check


def _candidates(root: Path) -> list[Path]:
    """The store's ``.wandb`` logs, completed runs first and one of each (method, scheduler) before a second,
    so that a few reads cover every kind of run."""
    from analysis.wandb_runs import wandb_files

    def about(path: Path) -> tuple[int, tuple[str, str]]:
        run_dir = path.parents[2]  # <run_dir>/wandb/offline-run-*/run-*.wandb
        try:
            record = json.loads((run_dir / "result.json").read_text())
        except (OSError, ValueError):
            return 1, ("", "")
        adapter = record.get("adapter") or {}
        kind = (str(adapter.get("type")), str(adapter.get("scheduler")))
        return (0 if record.get("status") == "completed" else 1), kind

    files = wandb_files(root)
    order: dict[tuple[int, tuple[str, str]], list[Path]] = {}
    for path in sorted(files, key=lambda p: p.stat().st_mtime, reverse=True):  # newest run of a folder first
        order.setdefault(about(path), []).append(path)
    out: list[Path] = []
    for status in (0, 1):
        buckets = [v for k, v in order.items() if k[0] == status]
        while any(buckets):
            for bucket in buckets:
                if bucket:
                    out.append(bucket.pop(0))
    return out


def _read_lazily(paths: Sequence[Path], notes: list[str]) -> Iterator[Any]:
    from analysis.wandb_runs import RunLogError, read_run

    for path in paths[:MAX_RUNS_READ]:
        try:
            yield read_run(path)
        except RunLogError as err:
            notes.append(str(err))


def check_spec(spec: Mapping[str, Any], results: str | Path | None) -> KeyCheck:
    """The build-time check: against the store's offline runs when it has any, else the declared keys."""
    paths = _candidates(Path(results)) if results and Path(results).is_dir() else []
    if not paths:
        check = check_declared(spec)
        check.notes.insert(0, f"no offline W&B runs under {results}: keys checked against the declared keys")
        return check
    notes: list[str] = []
    check = check_runs(spec, _read_lazily(paths, notes), where_from=str(results), total=len(paths))
    check.notes[:0] = notes
    if check.runs_read == 0 and notes:  # wandb's reader failed on every run: say so, fall back honestly
        fallback = check_declared(spec)
        fallback.notes = [*notes, "wandb's reader could not read any run: keys checked against the declared keys"]
        return fallback
    return check


# --------------------------------------------------------------------------- writing and publishing


def write_spec(spec: Mapping[str, Any], out: str | Path, check: KeyCheck | None = None) -> Path:
    """``out/wandb_report.json`` (temp file + rename): the spec and what its key check found."""
    from loraven.track import atomic_write_text

    data = dict(spec)
    if check is not None:
        data["key_check"] = check.to_dict()
    path = Path(out) / SPEC_NAME
    atomic_write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    return path


def read_spec(path: str | Path) -> dict[str, Any]:
    """A spec written by :func:`write_spec`; a file of another format is one clear error."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"--publish {str(path)!r}: not a readable report spec ({err})") from err
    if not isinstance(data, dict) or data.get("format") != SPEC_FORMAT:
        raise ValueError(f"--publish {str(path)!r}: not a report spec (format {SPEC_FORMAT!r} expected)")
    return data


def publish_blocker() -> str | None:
    """Why the report cannot be saved to W&B from here (None: it can). Never prompts and never probes the
    network unless a key is set and W&B is not switched off."""
    mode = os.environ.get("WANDB_MODE", "").lower()
    if mode in ("offline", "disabled", "dryrun"):
        return f"WANDB_MODE={mode} (unset it to publish)"
    from loraven.track import _wandb_logged_in, wandb_reachable

    if not _wandb_logged_in():
        return "no W&B key: set WANDB_API_KEY (or `wandb login`); it is never asked for"
    if not wandb_reachable():
        return f"W&B unreachable ({os.environ.get('WANDB_BASE_URL') or 'https://api.wandb.ai'})"
    return None


def publish_command(path_arg: str, spec_path: Path) -> str:
    import shlex

    return f"python -m analysis --wandb-report {shlex.quote(path_arg)} --publish {shlex.quote(str(spec_path))}"
