"""SQL console: a read-only SELECT against the views (runs, params, tags, metrics, metric_history, lineage,
runs_wide), results in the table, errors inline, history (kept across sessions), export to csv, parquet or json."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.widgets import Footer, Static, TextArea
from textual.worker import Worker

from kdgat_core.config import resolve_cache_dir
from kdgat_tui.runs_model import column_widths
from kdgat_tui.screens.base import KdgatScreen
from kdgat_tui.widgets.arrow_table import ArrowTable
from kdgat_tui.widgets.dialogs import Ask, Pick

DEFAULT_QUERY = (
    "SELECT dataset, stage, model_size, use_kd, count(*) AS runs, round(max(f1), 4) AS best_f1\n"
    "FROM runs GROUP BY ALL ORDER BY dataset, stage, model_size, use_kd"
)
MAX_SHOWN = 100_000  # rows kept for the table; exports write everything the query returned
HISTORY_SIZE = 200
EXPORT_FORMATS = ("csv", "parquet", "json")


def history_file() -> Path:
    return resolve_cache_dir() / "tui" / "sql_history.jsonl"


@dataclass
class QueryDone(Message):
    query: str
    table: pa.Table
    seconds: float


class SqlConsole(KdgatScreen):
    clock = staticmethod(__import__("time").perf_counter)  # seam for snapshot tests (query times vary)
    BINDINGS = [
        Binding(
            "ctrl+r", "run", "Run", priority=True, tooltip="Run the query (read-only; the views are listed on top)"
        ),
        Binding("ctrl+t", "history", "History", priority=True, tooltip="Pick an earlier query"),
        Binding("ctrl+e", "export", "Export", priority=True, tooltip="Write the results to .csv, .parquet or .json"),
        Binding("ctrl+o", "switch", "Editor/results", priority=True, tooltip="Move between the editor and the results"),
        Binding("ctrl+a", "select_all", "Select all", show=False, priority=True, tooltip="Select the whole query"),
        Binding("escape", "app.pop_screen", "Back"),
    ]

    def __init__(self, query: str | None = None) -> None:
        super().__init__()
        self.initial = query
        self.result: pa.Table | None = None
        self.history: list[str] = load_history()
        self._query_of: dict[Worker, str] = {}  # a query's worker -> its text (history keeps failed queries too)

    def compose(self) -> ComposeResult:
        yield Static(
            "SQL · views: runs, params, tags, metrics, metric_history, lineage, runs_wide · ctrl-r run",
            classes="screen-title",
            markup=False,
        )
        yield TextArea(
            self.initial or (self.history[-1] if self.history else DEFAULT_QUERY),
            id="sql-editor",
            soft_wrap=True,
            show_line_numbers=False,
        )
        yield Static("", id="sql-error", classes="inline-error hidden", markup=False)
        yield Static("", id="sql-info", classes="section muted", markup=False)
        yield ArrowTable(id="sql-results")
        yield Footer()

    def on_mount(self) -> None:
        editor = self.query_one(TextArea)
        editor.focus()
        if self.initial:
            self.action_run()
        else:
            # the example (or the last query) is selected: what the user types replaces it instead of joining it
            editor.select_all()

    def action_select_all(self) -> None:
        editor = self.query_one(TextArea)
        editor.focus()
        editor.select_all()

    def action_run(self) -> None:
        query = self.query_one(TextArea).text.strip()
        if not query:
            return
        self.query_one("#sql-info", Static).update("running…")
        # the worker's failure is handled on this thread, after this method returns: the query is recorded in time
        self._query_of[self.run_query(query)] = query

    @work(thread=True, exclusive=True, exit_on_error=False, group="sql")
    def run_query(self, query: str) -> None:
        t0 = self.clock()
        table = self.app.source.sql(query)
        self.post_message(QueryDone(query, table, self.clock() - t0))

    def worker_failed(self, worker: Worker, error: BaseException) -> None:
        """The error goes under the editor (the whole of it: DuckDB points at the place in the query)."""
        box = self.query_one("#sql-error", Static)
        box.update(str(error).strip() or type(error).__name__)
        box.remove_class("hidden")
        self.query_one("#sql-info", Static).update("")
        query = self._query_of.pop(worker, None)
        if query is not None:
            self._remember(query)  # a query that failed is history too: fixing it is the next step

    def on_query_done(self, message: QueryDone) -> None:
        table, seconds = message.table, message.seconds
        self._query_of = {w: q for w, q in self._query_of.items() if q != message.query}
        self.query_one("#sql-error", Static).add_class("hidden")
        self.result = table
        shown = table.slice(0, MAX_SHOWN)
        self.query_one("#sql-results", ArrowTable).replace(shown, column_widths(shown), cursor_row=0)
        more = f" (first {MAX_SHOWN:,} shown)" if table.num_rows > MAX_SHOWN else ""
        self.query_one("#sql-info", Static).update(
            f"{table.num_rows:,} rows × {table.num_columns} columns in {seconds * 1000:.0f} ms{more} · ctrl-e export"
        )
        self._remember(message.query)

    def _remember(self, query: str) -> None:
        if self.history and self.history[-1] == query:
            return
        self.history = [q for q in self.history if q != query] + [query]
        self.history = self.history[-HISTORY_SIZE:]
        save_history(self.history)

    def action_history(self) -> None:
        if not self.history:
            self.notify("no queries yet")
            return
        items = [(str(i), " ".join(q.split())[:200]) for i, q in reversed(list(enumerate(self.history)))]
        self.app.push_screen(Pick("Earlier queries", items), self._picked)

    def _picked(self, index: str | None) -> None:
        if index is not None:
            self.query_one(TextArea).text = self.history[int(index)]
            self.query_one(TextArea).focus()

    def action_export(self) -> None:
        if self.result is None:
            self.notify("run a query first", severity="warning")
            return
        self.app.push_screen(Ask("Export the results to (.csv, .parquet or .json)", "results.csv"), self._export)

    def _export(self, path: str | None) -> None:
        if not path:
            return
        try:
            written = export(self.result, Path(path).expanduser(), self.app.source.label)
        except ValueError as exc:
            box = self.query_one("#sql-error", Static)
            box.update(str(exc))
            box.remove_class("hidden")
            return
        self.notify(f"wrote {self.result.num_rows:,} rows to {written}")

    def action_switch(self) -> None:
        editor, results = self.query_one(TextArea), self.query_one("#sql-results")
        (results if editor.has_focus else editor).focus()


def export(table: pa.Table, path: Path, tracking_db: str) -> Path:
    """Write `table` in the format its suffix names; never over the tracking DB or an existing file."""
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"cannot export to '{path.name}': the name must end in .csv, .parquet or .json")
    target = path.resolve()
    if str(target) == str(Path(tracking_db).resolve()) or target.exists():
        raise ValueError(f"{path} already exists; choose a new file name")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        if fmt == "csv":
            import pyarrow.csv as pacsv

            pacsv.write_csv(table, target)
        elif fmt == "parquet":
            import pyarrow.parquet as pq

            pq.write_table(table, target)
        else:
            from kdgat_core.query.encode import json_records

            target.write_text(
                json_records(
                    table.column_names, [list(r) for r in zip(*(c.to_pylist() for c in table.columns))], indent=1
                )
            )
    except OSError as exc:
        raise ValueError(f"cannot write {path}: {exc.strerror or exc}") from None
    return target


def load_history() -> list[str]:
    try:
        lines = history_file().read_text().splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return [q for q in out if isinstance(q, str)][-HISTORY_SIZE:]


def save_history(history: list[str]) -> None:
    try:
        f = history_file()
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text("".join(json.dumps(q) + "\n" for q in history))
    except OSError:
        pass  # history is a convenience: a read-only home must not break the console
