"""Run detail (enter on a run): tags, searchable params, final metrics, per-scenario table, curves, artifacts."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
from rich.table import Table
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.message import Message
from textual.widgets import Footer, Input, Static, TabbedContent, TabPane
from textual.worker import Worker

from kdgat_core.config import METRIC_PREFIX, PARAM_PREFIX, STANDARD_METRICS, TAG_PREFIX, Metric, Tag, metric_direction
from kdgat_tui.runs_model import column_widths as _widths
from kdgat_tui.runs_model import fixed4
from kdgat_tui.screens.base import KdgatScreen
from kdgat_tui.widgets.arrow_table import ArrowTable
from kdgat_tui.widgets.curves import Curves

# Run fields shown first on the overview, then every convention tag.
RUN_FIELDS = ("run_id", "run_name", "experiment", "mlflow_status", "start_time", "end_time", "duration_s")
TABS = ("overview", "params", "scenarios", "curves", "artifacts")
# Curves: one plot per group, the run's own series and (for a distilled student) its teacher's.
CURVE_PLOTS = (("loss", (Metric.TRAIN_LOSS.value, Metric.VAL_LOSS.value)), ("F1", (Metric.VAL_F1.value,)))


@dataclass
class RunLoaded(Message):
    row: dict


@dataclass
class RunCurvesLoaded(Message):
    plots: dict  # plot title -> [(label, steps, values, is_teacher)]


class RunDetailScreen(KdgatScreen):
    MUTATING = frozenset({"submit"})
    STATUS_LINE = "#run-title"
    BINDINGS = [
        Binding("escape,q", "back", "Back"),
        Binding("1", "tab('overview')", "Overview", show=False),
        Binding("2", "tab('params')", "Params", show=False),
        Binding("3", "tab('scenarios')", "Scenarios", show=False),
        Binding("4", "tab('curves')", "Curves", show=False),
        Binding("5", "tab('artifacts')", "Artifacts", show=False),
        Binding("/", "search_params", "Search params", tooltip="Narrow the params by key or value"),
        Binding("t", "teacher", "Teacher", tooltip="Open this student's teacher run"),
        Binding("l", "lineage", "Lineage", tooltip="This run's teacher and students"),
        Binding("n", "submit", "Submit next", tooltip="Submit the next stage from this run"),
    ]

    def __init__(self, run_id: str) -> None:
        super().__init__()
        self.run_id = run_id
        self.row: dict | None = None

    def compose(self) -> ComposeResult:
        yield Static(f"run {self.run_id[:12]} · loading…", classes="screen-title", id="run-title", markup=False)
        with TabbedContent(id="detail-tabs", initial="overview"):
            with TabPane("1 Overview", id="overview"):
                with VerticalScroll():
                    yield Static("", id="overview-body")
            with TabPane("2 Params", id="params"):
                yield Input(placeholder="search params (key or value)", id="param-search")
                yield ArrowTable(id="param-table")
            with TabPane("3 Scenarios", id="scenarios"):
                yield ArrowTable(id="scenario-table")
            with TabPane("4 Curves", id="curves"):
                with VerticalScroll():
                    for title, _ in CURVE_PLOTS:
                        yield Curves(title, classes="curves", id=f"curve-{title.lower()}")
            with TabPane("5 Artifacts", id="artifacts"):
                with VerticalScroll():
                    yield Static("", id="artifact-list")
        yield Footer()

    def on_mount(self) -> None:
        self.load()

    def action_state(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "teacher" and not (self.row or {}).get(Tag.TEACHER_RUN_ID.value):
            return None  # shown dimmed: this run has no teacher
        return True

    @work(thread=True, exclusive=True, exit_on_error=False, group="detail")
    def load(self) -> None:
        source = self.app.source
        row = source.run_row(self.run_id)
        self.post_message(RunLoaded(row))
        teacher = row.get(Tag.TEACHER_RUN_ID.value) or None
        plots = {}
        for title, metrics in CURVE_PLOTS:
            series = []
            for metric in metrics:
                for rid, who in ((self.run_id, ""), (teacher, "teacher ")):
                    if not rid:
                        continue
                    hist = source.history(rid, metric)
                    if hist is not None and hist.num_rows:
                        series.append(
                            (f"{who}{metric}", hist["step"].to_pylist(), hist["value"].to_pylist(), bool(who))
                        )
            plots[title] = series
        self.post_message(RunCurvesLoaded(plots))

    def error_line(self, worker: Worker, error: BaseException) -> str:
        return f"run {self.run_id[:12]}: {self.app.source.describe_error(error)}"

    def on_run_loaded(self, message: RunLoaded) -> None:
        self.row = row = message.row
        status = row.get(Tag.STATUS.value) or row.get("mlflow_status") or ""
        self.query_one("#run-title", Static).update(
            f"{row.get('run_name') or '?'} · {status} · {self.run_id[:12]} · esc back"
        )
        self.query_one("#overview-body", Static).update(overview(row))
        self._params = params_table(row)
        self._fill_params("")
        scen = scenario_table(row)
        self.query_one("#scenario-table", ArrowTable).replace(scen, _widths(scen))
        self.query_one("#artifact-list", Static).update(artifacts(row))
        self.refresh_bindings()

    def on_run_curves_loaded(self, message: RunCurvesLoaded) -> None:
        for title, series in message.plots.items():
            self.query_one(f"#curve-{title.lower()}", Curves).set_series(series)

    def _fill_params(self, text: str) -> None:
        table = self._params
        if text:
            import pyarrow.compute as pc

            low = text.lower()
            keep = pc.or_(
                pc.match_substring(pc.utf8_lower(table["param"]), low),
                pc.match_substring(pc.utf8_lower(pc.fill_null(table["value"], "")), low),
            )
            table = table.filter(keep)
        self.query_one("#param-table", ArrowTable).replace(table, _widths(table), cursor_row=0)

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "param-search" and self.row is not None:
            self._fill_params(event.value)

    def action_back(self) -> None:
        search = self.query_one("#param-search", Input)
        if search.has_focus:
            self.query_one("#param-table", ArrowTable).focus()  # esc leaves the search box first, then the screen
        else:
            self.app.pop_screen()

    def action_tab(self, tab: str) -> None:
        self.query_one(TabbedContent).active = tab

    def action_search_params(self) -> None:
        self.action_tab("params")
        self.query_one("#param-search", Input).focus()

    def action_teacher(self) -> None:
        teacher = (self.row or {}).get(Tag.TEACHER_RUN_ID.value)
        if teacher:
            self.app.open_run(teacher)

    def action_lineage(self) -> None:
        self.app.open_lineage(run_id=self.run_id)

    def action_submit(self) -> None:
        self.app.open_submit(run_id=self.run_id)


def overview(row: dict) -> Table:
    """Final metrics first (what the user came for), then run fields and tags."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")
    error = row.get(Tag.ERROR_MSG.value)
    if error:
        grid.add_row(Text("error", style="bold red"), Text(str(error), style="red"))
    metrics = [(m.value, row.get(m.value)) for m in STANDARD_METRICS if row.get(m.value) is not None]
    metrics += [
        (k[len(METRIC_PREFIX) :], v)
        for k, v in sorted(row.items())
        if k.startswith(METRIC_PREFIX) and "/" not in k and v is not None
    ]
    for name, value in metrics:
        arrow = "↓" if metric_direction(name) == "asc" else "↑"
        grid.add_row(f"{name} {arrow}", f"{value:.4f}" if isinstance(value, float) else str(value))
    grid.add_row("", "")
    for key in RUN_FIELDS:
        value = row.get(key)
        if key == "duration_s" and value is not None:
            value = f"{value:.1f} s"
        grid.add_row(key, "" if value is None else str(value))
    for tag in Tag:
        if tag.value in row and tag.value not in RUN_FIELDS and tag is not Tag.ERROR_MSG:
            grid.add_row(tag.value, "" if row.get(tag.value) is None else str(row.get(tag.value)))
    for key, value in sorted(row.items()):
        if key.startswith(TAG_PREFIX) and value is not None:
            grid.add_row(key, str(value))
    return grid


def params_table(row: dict) -> pa.Table:
    keys = sorted(k for k, v in row.items() if k.startswith(PARAM_PREFIX) and v is not None)
    return pa.table(
        {
            "param": pa.array([k[len(PARAM_PREFIX) :] for k in keys], pa.string()),
            "value": pa.array([str(row[k]) for k in keys], pa.string()),
        }
    )


def scenario_table(row: dict) -> pa.Table:
    """Rows: test scenarios; columns: the metrics logged per scenario (`metrics.<scenario>/<metric>`)."""
    cells: dict[str, dict[str, float]] = {}
    leaves: list[str] = []
    for key, value in row.items():
        if key.startswith(METRIC_PREFIX) and "/" in key and value is not None:
            scenario, leaf = key[len(METRIC_PREFIX) :].rsplit("/", 1)
            cells.setdefault(scenario, {})[leaf] = value
            if leaf not in leaves:
                leaves.append(leaf)
    if not cells:
        return pa.table({"scenario": pa.array(["this run logged no per-scenario metrics"], pa.string())})
    order = [m.value for m in Metric]
    leaves.sort(key=lambda m: order.index(m) if m in order else len(order))
    scenarios = sorted(cells)
    data = {"scenario": pa.array(scenarios, pa.string())}
    for leaf in leaves:
        data[leaf.rstrip("_")] = fixed4(pa.array([cells[s].get(leaf) for s in scenarios], pa.float64()))
    return pa.table(data)


def artifacts(row: dict) -> Text:
    folder = row.get(Tag.ARTIFACT_DIR.value)
    if not folder:
        return Text("no artifact folder recorded for this run", style="dim")
    path = Path(folder)
    out = Text(f"{path}\n\n", style="bold")
    try:
        files = sorted(p for p in path.rglob("*") if p.is_file())
    except OSError as exc:
        return out + Text(f"cannot list it: {exc.strerror or exc}", style="red")
    if not files:
        return out + Text("(empty, or not reachable from this machine)", style="dim")
    for f in files[:500]:
        size = f.stat().st_size
        out.append(f"{_size(size):>9}  {f.relative_to(path)}\n")
    return out


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"
