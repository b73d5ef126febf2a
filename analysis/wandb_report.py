"""A report spec (:mod:`analysis.wandb_spec`) as a W&B report, through ``wandb-workspaces``' Reports API.

The only module that imports ``wandb_workspaces`` (pinned in pyproject.toml: the API is in public preview and
changes between releases): if it moves, this one file follows. Building a report object needs no network;
:func:`publish` saves it (needs a key) and returns its URL.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

WORKSPACES_PIN = "wandb-workspaces==0.4.13"  # as in pyproject.toml


def _library():
    try:
        import wandb_workspaces.reports.v2 as wr
        from wandb_workspaces import expr
    except ImportError as err:  # publishing alone needs it; the spec was written without it
        raise RuntimeError(f"publishing needs {WORKSPACES_PIN} (pip install '{WORKSPACES_PIN}'): {err}") from err
    return wr, expr


def _keys(panel: Mapping[str, Any], role: str) -> list[Mapping[str, str]]:
    return [k for k in panel["keys"] if k["role"] == role]


def _metric(wr, key: Mapping[str, str]):
    """A spec key as the library's metric: summary → SummaryMetric, config → Config, history → its name."""
    if key["source"] == "summary":
        return wr.SummaryMetric(key["key"])
    if key["source"] == "config":
        return wr.Config(key["key"])
    return key["key"]


def _panel(wr, panel: Mapping[str, Any]):
    agg = panel.get("aggregate") or {}
    grouped = {"groupby_aggfunc": agg.get("func"), "groupby_rangefunc": agg.get("range")} if agg else {}
    kind, title = panel["kind"], panel["title"]
    if kind == "scatter":
        x, y = _keys(panel, "x")[0], _keys(panel, "y")[0]
        return wr.ScatterPlot(title=title, x=_metric(wr, x), y=_metric(wr, y), layout=wr.Layout(w=12, h=8))
    if kind == "bar":  # a bar per group: W&B draws the group's mean and its spread over seeds
        return wr.BarPlot(
            title=title,
            metrics=[k["key"] for k in _keys(panel, "y")],
            orientation="v",
            layout=wr.Layout(w=12, h=8),
            **grouped,
        )
    if kind == "line":
        x = _keys(panel, "x")[0]["key"]
        return wr.LinePlot(
            title=title,
            x=x,
            y=[k["key"] for k in _keys(panel, "y")],
            title_x=x,
            layout=wr.Layout(w=12, h=8),
            **grouped,
        )
    if kind == "table":
        return wr.WeavePanelSummaryTable(table_name=_keys(panel, "table")[0]["key"], layout=wr.Layout(w=24, h=10))
    if kind == "parallel":
        columns = [wr.ParallelCoordinatesPlotColumn(metric=_metric(wr, k)) for k in _keys(panel, "column")]
        return wr.ParallelCoordinatesPlot(title=title, columns=columns, layout=wr.Layout(w=24, h=10))
    raise ValueError(f"unknown panel kind {kind!r} in the spec; valid: scatter, bar, line, table, parallel")


def _filters(expr, filters: list[Mapping[str, Any]]):
    """The runset's filters, all of them required (``expr.And``)."""
    sections = {"run": expr.Metric, "summary": expr.Summary, "config": expr.Config}
    out = []
    for f in filters:
        if f["op"] != "==":
            raise ValueError(f"runset filter op {f['op']!r} is not supported; valid: ==")
        out.append(sections[f["section"]](f["key"]) == f["value"])
    return expr.And(*out)


def to_report(spec: Mapping[str, Any]):
    """The ``wandb_workspaces`` Report for a spec (built locally: no network until :func:`publish` saves it)."""
    wr, expr = _library()
    entity, project = spec["entity"], spec["project"]
    runset = wr.Runset(
        entity=entity,
        project=project,
        name="completed train runs, grouped by comparison",
        groupby=list(spec["runset"]["groupby"]),
        filters=_filters(expr, spec["runset"]["filters"]),
    )
    blocks: list[Any] = [wr.P(spec["description"]), wr.P(spec["runset"]["grouping"])]
    for panel in spec["panels"]:  # one grid per panel: each figure with its own heading and description
        blocks += [
            wr.H2(panel["title"]),
            wr.P(panel["description"]),
            wr.PanelGrid(runsets=[runset], panels=[_panel(wr, panel)]),
        ]
    blocks += [wr.H2("Verdicts (REPORT.md)"), wr.MarkdownBlock(text=spec["verdicts"]["markdown"])]
    return wr.Report(
        entity=entity, project=project, title=spec["title"], description=spec["description"], blocks=blocks
    )


def publish(spec: Mapping[str, Any]) -> str:
    """Save the report to W&B and return its URL (needs a key: call only when ``publish_blocker()`` is None)."""
    report = to_report(spec)
    report.save()
    return str(report.url)
