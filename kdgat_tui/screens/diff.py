"""Diff (mark runs with space, press d): the params that differ (a toggles all), then metrics side by side with deltas."""

from __future__ import annotations

import pyarrow as pa
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Footer, Static

from kdgat_core.config import METRIC_PREFIX, STANDARD_METRICS, metric_direction
from kdgat_tui.runs_model import column_widths
from kdgat_tui.widgets.arrow_table import ArrowTable


class DiffScreen(Screen):
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

    @work(thread=True, exclusive=True, group="diff")
    def load(self) -> None:
        source = self.app.source
        try:
            params = source.config_diff(self.run_ids, self.all_params)
            metrics = metrics_side_by_side([source.run_row(r) for r in self.run_ids])
        except Exception as exc:
            self.app.call_from_thread(self._failed, exc)
            return
        self.app.call_from_thread(self._show, params, metrics)

    def _failed(self, exc: Exception) -> None:
        self.query_one("#diff-title", Static).update(f"diff: {self.app.source.describe_error(exc)}")

    def _show(self, params: pa.Table, metrics: pa.Table) -> None:
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


def metrics_side_by_side(rows: list[dict]) -> pa.Table:
    """metric | run 1 | run 2 (Δ) | ...: standard metrics first, then the rest any of the runs logged."""
    keys = [m.value for m in STANDARD_METRICS if any(r.get(m.value) is not None for r in rows)]
    keys += sorted({k for r in rows for k, v in r.items() if k.startswith(METRIC_PREFIX) and v is not None})
    labels = []
    for r in rows:
        label = f"{r.get('run_name') or '?'}@{r['run_id'][:8]}"
        labels.append(label if label not in labels else f"{label}#{len(labels) + 1}")
    out: dict[str, list] = {"metric": []}
    for label in labels:
        out[label] = []
    for key in keys:
        name = key[len(METRIC_PREFIX) :] if key.startswith(METRIC_PREFIX) else key
        arrow = "↓" if metric_direction(name) == "asc" else "↑"
        out["metric"].append(f"{name} {arrow}")
        base = rows[0].get(key)
        for label, row in zip(labels, rows):
            value = row.get(key)
            out[label].append(_cell(value, base if row is not rows[0] else None))
    return pa.table({k: pa.array(v, pa.string()) for k, v in out.items()})


def _cell(value, base) -> str:
    if value is None:
        return ""
    if not isinstance(value, float):
        return str(value)
    if base is None or not isinstance(base, float):
        return f"{value:.4f}"
    return f"{value:.4f} ({value - base:+.4f})"
