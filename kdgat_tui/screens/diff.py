"""Diff (mark runs with space, press d): the params that differ (a toggles all), then metrics side by side with deltas."""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.widgets import Footer, Static

from kdgat_core.config import metric_direction
from kdgat_core.query.compare import letters
from kdgat_tui.runs_model import column_widths
from kdgat_tui.screens.base import KdgatScreen
from kdgat_tui.widgets.arrow_table import ArrowTable


@dataclass
class DiffLoaded(Message):
    params: pa.Table
    metrics: pa.Table


class DiffScreen(KdgatScreen):
    STATUS_LINE, ERROR_PREFIX = "#diff-title", "diff"
    BINDINGS = [
        Binding("escape,q", "app.pop_screen", "Back"),
        Binding("a", "toggle_all", "All params", tooltip="Show every param, not only those that differ"),
        Binding("tab", "switch", "Params/metrics", show=False, priority=False),
    ]

    def __init__(self, run_ids: list[str]) -> None:
        super().__init__()
        self.run_ids = run_ids
        self.all_params = False

    def compose(self) -> ComposeResult:
        yield Static(
            f"diff of {len(self.run_ids)} runs · loading…", classes="screen-title", id="diff-title", markup=False
        )
        yield Static("params that differ", classes="section muted", id="params-label")
        yield ArrowTable(id="diff-params")
        yield Static("final metrics (Δ against the first run; ↑/↓ marks the better direction)", classes="section muted")
        yield ArrowTable(id="diff-metrics")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#diff-params", ArrowTable).focus()
        self.load()

    @work(thread=True, exclusive=True, exit_on_error=False, group="diff")
    def load(self) -> None:
        source = self.app.source
        params = source.config_diff(self.run_ids, self.all_params)
        self.post_message(DiffLoaded(params, metrics_side_by_side(source.compare(self.run_ids))))

    def on_diff_loaded(self, message: DiffLoaded) -> None:
        params, metrics = message.params, message.metrics
        n = params.num_rows
        what = "params" if self.all_params else "params that differ"
        self.query_one("#diff-title", Static).update(
            f"diff of {len(self.run_ids)} runs · {n} {what} · a: {'only differences' if self.all_params else 'all params'}"
        )
        self.query_one("#params-label", Static).update(what if n else "no param differs between these runs")
        self.query_one("#diff-params", ArrowTable).replace(params, column_widths(params), cursor_row=0)
        self.query_one("#diff-metrics", ArrowTable).replace(metrics, column_widths(metrics), cursor_row=0)

    def action_toggle_all(self) -> None:
        self.all_params = not self.all_params
        self.load()

    def action_switch(self) -> None:
        params, metrics = self.query_one("#diff-params"), self.query_one("#diff-metrics")
        (metrics if params.has_focus else params).focus()


def metrics_side_by_side(compared: pa.Table) -> pa.Table:
    """metric | run 1 | run 2 (Δ) | ...: `kdgat compare`'s table (standard metrics first) as the diff shows it."""
    import json

    runs = json.loads((compared.schema.metadata or {}).get(b"kdgat.runs", b"[]"))
    labels = []
    for run_id, name in runs:
        label = f"{name or '?'}@{run_id[:8]}"
        labels.append(label if label not in labels else f"{label}#{len(labels) + 1}")
    columns = letters(len(runs))
    deltas = ["delta"] if len(runs) == 2 else [f"delta_{c}" for c in columns[1:]]
    out: dict[str, list] = {"metric": []}
    for label in labels:
        out[label] = []
    for row in compared.to_pylist():
        arrow = "↓" if metric_direction(row["metric"]) == "asc" else "↑"
        out["metric"].append(f"{row['metric']} {arrow}")
        out[labels[0]].append(_cell(row[columns[0]], None))
        for label, col, delta in zip(labels[1:], columns[1:], deltas):
            out[label].append(_cell(row[col], row[delta]))
    return pa.table({k: pa.array(v, pa.string()) for k, v in out.items()})


def _cell(value, delta) -> str:
    if value is None:
        return ""
    if delta is None:  # the first run, or the first run has no value
        return f"{value:.4f}"
    return f"{value:.4f} ({delta:+.4f})"
