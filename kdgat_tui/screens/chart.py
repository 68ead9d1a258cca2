"""Chart (c): one metric's curves for the marked runs (or the cursor run), or for groups in the grouped view (a mean
line with a ± std band per group); a distilled student's teacher drawn underneath in grey. The numbers and colours
are `kdgat plot`'s (kdgat_core.query.curves)."""

from __future__ import annotations

from dataclasses import dataclass

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.widgets import Footer, Static
from textual.worker import Worker

from kdgat_core.config import Metric
from kdgat_tui.screens.base import KdgatScreen
from kdgat_tui.widgets.curves import render_lines

SMOOTHING = (0.0, 0.6, 0.9)


class Chart(Static):
    """Redraws at its own size whenever the size, the data or the options change."""

    DEFAULT_CSS = "Chart { height: 1fr; min-height: 8; }"

    def __init__(self, **kwargs) -> None:
        super().__init__("", **kwargs)
        self.lines: list = []
        self.options: dict = {}

    def show(self, lines: list, **options) -> None:
        self.lines, self.options = lines, options
        self._draw()

    def on_resize(self) -> None:
        self._draw()

    def _draw(self) -> None:
        w, h = self.size.width, self.size.height
        if w >= 10 and h >= 4:
            self.update(render_lines(self.lines, w, h, **self.options))


@dataclass
class CurvesLoaded(Message):
    lines: list


class ChartScreen(KdgatScreen):
    STATUS_LINE, ERROR_PREFIX = "#chart-title", "chart"
    BINDINGS = [
        Binding("escape,q", "app.pop_screen", "Back"),
        Binding("m", "metric", "Metric", tooltip="Next metric with a history"),
        Binding("l", "log", "Log y", tooltip="Logarithmic y axis"),
        Binding("s", "smooth", "Smooth", tooltip="EMA smoothing: off, 0.6, 0.9"),
        Binding("x", "x_axis", "Step/time", tooltip="x by step or by seconds since the first point"),
        Binding("t", "teachers", "Teachers", tooltip="Draw a KD student's teacher underneath"),
    ]

    def __init__(
        self, run_ids: list[str] | None = None, groups: list[tuple[str, list[str]]] | None = None, metric: str = ""
    ) -> None:
        super().__init__()
        self.run_ids, self.groups = run_ids or [], groups or []
        self.metric = metric or Metric.VAL_LOSS.value
        self.keys: list[str] = []
        self.log_y, self.smooth, self.x, self.teachers = False, 0, "step", True

    def compose(self) -> ComposeResult:
        yield Static("chart · loading…", classes="screen-title", id="chart-title", markup=False)
        yield Chart(id="chart")
        yield Footer()

    def on_mount(self) -> None:
        self.load()

    @work(thread=True, exclusive=True, exit_on_error=False, group="chart")
    def load(self) -> None:
        source = self.app.source
        ids = self.run_ids or [r for _, g in self.groups for r in g]
        if not self.keys:
            self.keys = source.history_keys(ids)
            if self.keys and self.metric not in self.keys:
                self.metric = self.keys[0]
        if self.groups:
            lines = source.group_curves(self.groups, self.metric, self.x)
        else:
            lines = source.run_curves(self.run_ids, self.metric, self.x, self.teachers)
        self.post_message(CurvesLoaded(lines))

    def worker_failed(self, worker: Worker, error: BaseException) -> None:
        super().worker_failed(worker, error)
        self.query_one(Chart).show([])

    def on_curves_loaded(self, message: CurvesLoaded) -> None:
        self._show(message.lines)

    def _show(self, lines: list) -> None:
        what = f"{len(self.groups)} groups (mean ± std)" if self.groups else f"{len(self.run_ids)} runs"
        opts = (
            [f"x: {self.x}"]
            + (["log y"] if self.log_y else [])
            + ([f"EMA {SMOOTHING[self.smooth]}"] if self.smooth else [])
        )
        self.query_one("#chart-title", Static).update(f"{self.metric} · {what} · {' · '.join(opts)}")
        self.query_one(Chart).show(lines, title="", log_y=self.log_y, smooth=SMOOTHING[self.smooth])

    def _redraw(self) -> None:
        chart = self.query_one(Chart)
        self._show(chart.lines)

    def action_metric(self) -> None:
        if self.keys:
            self.metric = (
                self.keys[(self.keys.index(self.metric) + 1) % len(self.keys)]
                if self.metric in self.keys
                else self.keys[0]
            )
            self.load()

    def action_log(self) -> None:
        self.log_y = not self.log_y
        self._redraw()

    def action_smooth(self) -> None:
        self.smooth = (self.smooth + 1) % len(SMOOTHING)
        self._redraw()

    def action_x_axis(self) -> None:
        self.x = "time" if self.x == "step" else "step"
        self.load()

    def action_teachers(self) -> None:
        self.teachers = not self.teachers
        self.load()
