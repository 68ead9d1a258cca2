"""Runs (home): every run in a fast Arrow table; sort, filter, quick filters, metric picker, group by config, marks."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import datetime

import pyarrow as pa
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.message import Message
from textual.widgets import Footer, Input, Label, Static
from textual.worker import Worker

from kdgat_core.config import RunStatus, Tag, metric_direction
from kdgat_tui.run_filter import FilterError
from kdgat_tui.runs_model import HEADERS, QUICK_COLUMNS, RUN_ID, RunsModel, View, column_of_header
from kdgat_tui.screens.base import KdgatScreen
from kdgat_tui.widgets.arrow_table import ArrowTable
from kdgat_tui.widgets.dialogs import Ask, Confirm, Pick, PickMany

# Rows formatted for the first paint of the runs table: more than any terminal shows (the rest follows at once).
FIRST_PAGE = 500
FACTS_EVERY_S = 30.0  # efficiency and cause change only when jobs end: no need to ask sacct on every refresh


@dataclass
class RunsLoaded(Message):
    table: pa.Table  # every run: the first read, or a complete re-read
    cached_at: float | None = None  # set when the table is the read cache's copy (painted before the real read)
    shown: threading.Event | None = None  # set once the table is on screen (the worker waits for it)


@dataclass
class RunsChanged(Message):
    changed: pa.Table  # rows of new or changed runs
    removed: list[str]  # ids of runs that disappeared


@dataclass
class LostRuns(Message):
    lost: set[str]  # runs tagged running whose job has ended


@dataclass
class JobFacts(Message):
    facts: dict[str, dict]  # job id -> efficiency and cause, from sacct


@dataclass
class WatchEvents(Message):
    events: list  # what `kdgat watch` would alert, since this screen opened


@dataclass
class Annotated(Message):
    text: str  # the last line `kdgat tag|note|delete` printed
    ok: bool


class RunsScreen(KdgatScreen):
    MUTATING = frozenset({"submit", "annotate"})
    ERROR_PREFIX = "runs"
    clock = staticmethod(time.time)  # one seam for "now", so snapshot tests can fix the status line's time
    BINDINGS = [
        Binding("/", "filter", "Filter", tooltip="Free text, or dataset=hcrl_sa f1>0.9 status!=failed"),
        Binding("enter", "open_run", "Detail", tooltip="Tags, params, metrics, scenarios, curves, artifacts"),
        Binding("space", "mark", "Mark", tooltip="Mark runs to diff"),
        Binding("d", "diff", "Diff", tooltip="Compare the marked runs (or the cursor run with its teacher)"),
        Binding("c", "chart", "Chart", tooltip="Curves of the marked runs, or of the groups (mean ± std)"),
        Binding("s", "sort", "Sort", tooltip="Sort by a column (again: reverse)"),
        Binding("S", "reverse", "Reverse", show=False, tooltip="Reverse the sort"),
        Binding("m", "metrics", "Metrics", tooltip="Choose the metric columns"),
        Binding("g", "group", "Group", tooltip="Group runs that differ only in seed (mean ± std, n)"),
        Binding("G", "group_columns", "Group by", show=False, tooltip="Pick the columns to group by"),
        Binding("v", "views", "Views", show=False, tooltip="Switch to a saved view of kdgat.toml ([views.NAME])"),
        Binding("A", "annotate", "Annotate", show=False, tooltip="Tag, note or delete the marked runs (asks first)"),
        Binding("1", "quick(0)", "Dataset", show=False, tooltip="Cycle the dataset quick filter"),
        Binding("2", "quick(1)", "Stage", show=False, tooltip="Cycle the stage quick filter"),
        Binding("3", "quick(2)", "Size", show=False, tooltip="Cycle the model-size quick filter"),
        Binding("4", "quick(3)", "Status", show=False, tooltip="Cycle the status quick filter"),
        Binding("0", "clear_filters", "Clear", show=False, tooltip="Clear the filter, quick filters and marks"),
        Binding("l", "lineage", "Lineage", tooltip="Teacher -> student -> fusion -> evaluation"),
        Binding("j", "jobs", "Jobs", tooltip="SLURM queue and history, joined with runs"),
        Binding(
            "F",
            "failures",
            "Failures",
            show=False,
            tooltip="Failed and lost runs grouped by cause; resubmit from there",
        ),
        Binding("x", "sql", "SQL", tooltip="SQL console over the views"),
        Binding("n", "submit", "Submit", tooltip="Submit the next stage for this run"),
        Binding("r", "refresh", "Refresh", show=False, tooltip="Re-read new and changed runs now"),
        Binding("R", "reload", "Reload all", show=False, tooltip="Re-read every run (tags edited by hand, ...)"),
        Binding("escape", "clear_filter", "Clear filter", show=False),
        Binding("q", "quit", "Quit", tooltip="Leave kdgat-tui"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.model: RunsModel | None = None
        self.view: View | None = None
        self.last_ok: float | None = None
        self.loaded_at: float | None = None
        self.cached = False
        self._views: dict = {}  # kdgat.toml's saved views, read when `v` is pressed
        self._facts_at = float("-inf")  # when the scheduler's facts (efficiency, cause) were last asked for
        self.last_event = ""  # the newest watch event, shown in the status line

    def compose(self) -> ComposeResult:
        yield Static("kdgat · loading runs…", id="status-line", markup=False)
        with Horizontal(id="filter-row", classes="hidden"):
            yield Label("/", id="filter-prompt")
            yield Input(placeholder="free text or dataset=hcrl_sa f1>0.9 status!=failed", id="filter")
        yield Static("", id="filter-error", classes="hidden", markup=False)
        yield ArrowTable(
            id="runs",
            styled_values={Tag.STATUS.value: {RunStatus.LOST.value: "arrow-table--lost"}},
            fit_right_edge=True,
            prefix_columns=frozenset({HEADERS[RUN_ID]}),  # an id prefix names the run (kdgat takes prefixes)
        )
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(ArrowTable).focus()
        self.load()
        if self.app.refresh_s and self.app.refresh_s > 0:
            self.set_interval(self.app.refresh_s, self.action_refresh)

    # ---- loading and refreshing (workers: input never waits on the database) --------------------------------
    @work(thread=True, exclusive=True, exit_on_error=False, group="runs-load")
    def load(self) -> None:
        cached = self.app.source.cached_runs() if self.model is None else None
        if cached is not None:
            shown = threading.Event()
            if self.post_message(RunsLoaded(cached.table, cached.written_at, shown)):
                shown.wait(10.0)  # the cached copy is drawn first: the heavy read would compete with it for the GIL
            time.sleep(0.05)  # let the first frame reach the terminal before the heavy read competes for the GIL
        table = self.app.source.load_runs()
        if cached is not None and cached.gen is not None and self.app.source.loaded_gen == cached.gen:
            table = cached.table  # the very rows painted: the screen keeps them and their formatted columns
        self.post_message(RunsLoaded(table))

    def worker_failed(self, worker: Worker, error: BaseException) -> None:
        source = self.app.source
        if worker.group == "runs-load" and self.model is None and not source.is_locked(error):
            # nothing to show and nothing a retry fixes (a corrupt DB): leave with the reason, like a missing file
            self.app.exit_with_error(f"cannot read the runs in {source.label}: {source.reason(error)}")
        elif worker.group in ("runs-load", "runs-refresh"):
            self._status(error=error)  # the rows stay, marked stale; the next refresh retries
        else:
            super().worker_failed(worker, error)

    def on_runs_loaded(self, message: RunsLoaded) -> None:
        """Show a full runs table: the first one, or a complete re-read (marks, filters and cursor stay)."""
        table, cached_at = message.table, message.cached_at
        keep = self.current_run_id()
        shown = message.shown
        try:
            unchanged = self.model is not None and self.model.base is table  # the cached copy, found current
            if self.model is None:
                self.model = RunsModel(table)
            elif not unchanged:
                self.model.replace_all(table)
            self.loaded_at = time.monotonic()
            self.last_ok = cached_at if cached_at is not None else self.clock()
            self.cached = cached_at is not None
            if unchanged:
                self._status()  # the same rows, now known current: formatting 100k rows again would show the same
            else:
                # the first paint formats one page of rows; the rest right after that frame (see RunsModel.view)
                self.render_view(keep_run=keep, first=FIRST_PAGE if self.view is None else None)
            if self.view is not None and not self.view.complete:
                self.call_after_refresh(self._complete_view, shown)
                shown = None  # the worker waits until the whole table is in place
        finally:
            if shown is not None:
                shown.set()
        if not self.cached:
            self.check_lost()

    def _complete_view(self, shown: threading.Event | None) -> None:
        """Format the rest of the rows of a first paint (nothing to do when a filter or sort did it meanwhile)."""
        try:
            if self.view is not None and not self.view.complete:
                self.render_view(keep_run=self.current_run_id())
        finally:
            if shown is not None:
                shown.set()

    def action_refresh(self) -> None:
        if self.model is None:
            self.load()
        else:
            self.poll()

    def action_reload(self) -> None:
        self.load()

    @work(thread=True, exclusive=True, exit_on_error=False, group="runs-refresh")
    def poll(self) -> None:
        self.post_message(RunsChanged(*self.app.source.poll()))

    def on_runs_changed(self, message: RunsChanged) -> None:
        self.last_ok = self.clock()
        self.cached = False
        if self.model is None:
            return
        changed, removed = message.changed, message.removed
        self.check_lost()
        if not changed.num_rows and not removed:
            self._status()
            return
        self.model.remove(removed)
        new = self.model.upsert(changed)
        self.render_view(keep_run=self.current_run_id())
        if new:
            self.notify(f"{new} new run{'s' if new != 1 else ''}", timeout=2)

    @work(thread=True, exclusive=True, exit_on_error=False, group="runs-lost")
    def check_lost(self) -> None:
        """Ask the scheduler which runs tagged running have a job that ended (only when there are such runs)."""
        if self.model is None:
            return
        running = self.model.running_jobs()
        lost = self.app.source.lost_runs(running)
        if lost is not None:
            self.post_message(LostRuns(lost & set(running)))
        now = time.monotonic()
        if now - self._facts_at < FACTS_EVERY_S:
            return
        self._facts_at = now
        facts = self.app.source.job_facts()
        if facts:
            self.post_message(JobFacts(facts))
        fresh = self.app.source.new_events()  # what `kdgat watch` would alert, since this screen opened
        if fresh:
            self.post_message(WatchEvents(fresh))

    def on_watch_events(self, message: WatchEvents) -> None:
        fresh = message.events
        self.last_event = f"{datetime.now():%H:%M} {fresh[-1].text}"
        for event in fresh[-3:]:
            self.notify(event.text, title="kdgat watch", timeout=8)
        self._status()

    def on_job_facts(self, message: JobFacts) -> None:
        if self.model is not None and self.model.set_job_facts(message.facts):
            self.render_view(keep_run=self.current_run_id())

    def on_lost_runs(self, message: LostRuns) -> None:
        if self.model is not None and self.model.set_lost(message.lost):
            self.render_view(keep_run=self.current_run_id())

    # ---- drawing --------------------------------------------------------------------------------------------
    def render_view(self, keep_run: str | None, first: int | None = None) -> None:
        """Recompute the rows from the model and show them; the cursor stays on `keep_run` when it is still shown.
        `first`: format only that many rows now (a first paint; `_complete_view` formats the rest)."""
        if self.model is None:
            return
        try:
            view = self.model.view(first=first)
        except FilterError as exc:
            self._filter_error(str(exc))
            return
        self._filter_error(self.model.filter_problem)
        row = view.row_of(keep_run) if keep_run is not None and self.view is not None else None
        self.view = view
        self.query_one(ArrowTable).replace(view.table, view.widths, cursor_row=row)
        self._status()

    def _status(self, error: BaseException | None = None) -> None:
        m, v = self.model, self.view
        parts = ["kdgat"]
        if m is not None and v is not None:
            shown = f"{len(v.ids):,} groups of " if v.grouped else f"{len(v.ids):,} of "
            parts.append(f"{shown}{v.total:,} runs")
            if m.marks:
                parts.append(f"{len(m.marks)} marked")
            if m.lost:
                parts.append(f"{len(m.lost)} lost")
            if m.sort_key:
                parts.append(f"sort {m.sort_key} {'↓' if m.sort_desc else '↑'}")
            for col, value in m.quick.items():
                parts.append(f"{col}={value}")
            if m.filter_text:
                parts.append(f"/{m.filter_text}")
            if m.filter_problem:
                parts.append(m.filter_problem)
        if error is not None:
            since = datetime.fromtimestamp(self.last_ok).strftime("%H:%M:%S") if self.last_ok else "start"
            parts.append(f"STALE since {since}: {self.app.source.describe_error(error)} (retrying)")
        elif self.cached:
            parts.append(f"cached copy of {datetime.fromtimestamp(self.last_ok):%H:%M:%S}, updating…")
        elif self.last_ok:
            parts.append(f"updated {datetime.fromtimestamp(self.last_ok):%H:%M:%S}")
        if self.last_event:
            parts.append(self.last_event)
        line = self.query_one("#status-line", Static)
        line.update(" · ".join(parts))
        line.set_class(error is not None, "stale")

    def _filter_error(self, message: str | None) -> None:
        box = self.query_one("#filter-error", Static)
        box.update(message or "")
        box.set_class(message is None, "hidden")

    # ---- the cursor ----------------------------------------------------------------------------------------
    def current_run_id(self) -> str | None:
        if self.view is None or not len(self.view.ids):
            return None
        row = self.query_one(ArrowTable).cursor_row
        if 0 <= row < len(self.view.ids):
            return self.view.ids[row].as_py()
        return None

    def on_data_table_row_selected(self, event) -> None:
        event.stop()
        self.action_open_run()

    # ---- actions ---------------------------------------------------------------------------------------------
    def action_filter(self) -> None:
        row = self.query_one("#filter-row")
        row.remove_class("hidden")
        box = self.query_one("#filter", Input)
        if self.model is not None:
            box.value = self.model.filter_text
        # at once, not on the next idle (Widget.focus): keys typed right after `/` belong to the filter
        self.set_focus(box)

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "filter" and self.model is not None:
            self.model.filter_text = event.value
            self.render_view(keep_run=self.current_run_id())

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "filter":
            if not event.value:
                self.query_one("#filter-row").add_class("hidden")
            self.query_one(ArrowTable).focus()

    def action_clear_filter(self) -> None:
        box = self.query_one("#filter", Input)
        if box.has_focus or (self.model and self.model.filter_text):
            box.value = ""
            if self.model is not None:
                self.model.filter_text = ""
            self.query_one("#filter-row").add_class("hidden")
            self.query_one(ArrowTable).focus()
            self.render_view(keep_run=self.current_run_id())

    def action_clear_filters(self) -> None:
        if self.model is None:
            return
        self.model.quick.clear()
        self.model.marks.clear()
        self.query_one("#filter", Input).value = ""
        self.model.filter_text = ""
        self.query_one("#filter-row").add_class("hidden")
        self.render_view(keep_run=self.current_run_id())

    def action_open_run(self) -> None:
        if self.view is not None and self.view.grouped:
            run_ids = self.view.groups[self.query_one(ArrowTable).cursor_row] if len(self.view.ids) else []
            if len(run_ids) > 1:
                self.app.open_diff(run_ids)
                return
        run_id = self.current_run_id()
        if run_id:
            self.app.open_run(run_id)

    def action_mark(self) -> None:
        run_id = self.current_run_id()
        if run_id is None or self.model is None or self.view is None or self.view.grouped:
            return
        self.model.toggle_mark(run_id)
        table = self.query_one(ArrowTable)
        row = table.cursor_row
        table.update_cell_value(row, 0, "✓" if run_id in self.model.marks else "")
        if row + 1 < len(self.view.ids):
            table.move_cursor(row=row + 1)
        self._status()

    def action_diff(self) -> None:
        if self.model is None:
            return
        marks = [r for r in self.model.marks]
        if len(marks) < 2:
            run_id = self.current_run_id()
            teacher = self.model.value_of(run_id, "teacher_run_id") if run_id else None
            if teacher and not marks:
                self.app.open_diff([teacher, run_id])  # a distilled student against its teacher
                return
            self.notify("Mark two or more runs with space, then press d.", severity="warning")
            return
        # the order on screen is the order of the diff's columns
        rows = {r: self.view.row_of(r) for r in marks} if self.view else {}
        self.app.open_diff(sorted(marks, key=lambda r: rows.get(r) if rows.get(r) is not None else 1 << 60))

    def action_chart(self) -> None:
        if self.model is None or self.view is None or not len(self.view.ids):
            return
        if self.view.grouped:
            # the cursor's group and the ones below it, at most 8: one legend colour each
            start = self.query_one(ArrowTable).cursor_row
            names = self.view.table.column(0).to_pylist()
            groups = [(names[i], self.view.groups[i]) for i in range(start, min(start + 8, len(names)))]
            self.app.open_chart(groups=groups)
            return
        marks = list(self.model.marks)
        if marks:
            rows = {r: self.view.row_of(r) for r in marks}
            self.app.open_chart(sorted(marks, key=lambda r: rows.get(r) if rows.get(r) is not None else 1 << 60))
        elif self.current_run_id():
            self.app.open_chart([self.current_run_id()])

    def action_sort(self) -> None:
        if self.model is None:
            return
        cols = self.model.visible_columns()
        table = self.query_one(ArrowTable)
        current = None
        if self.view is not None and 0 < table.cursor_column < len(self.view.headers):
            current = column_of_header(self.view.headers[table.cursor_column], self.model)
        items = [(c, c) for c in cols] + [(c, c) for c in self.model.columns if c not in cols]
        self.app.push_screen(Pick("Sort by", items, current or self.model.sort_key), self._sorted)

    def _sorted(self, column: str | None) -> None:
        if column and self.model is not None:
            self.model.sort_by(column)
            self.render_view(keep_run=self.current_run_id())

    def action_reverse(self) -> None:
        if self.model is not None and self.model.sort_key:
            self.model.sort_desc = not self.model.sort_desc
            self.render_view(keep_run=self.current_run_id())

    def action_metrics(self) -> None:
        if self.model is None:
            return
        items = [(m, m) for m in self.model.available_metrics]
        self.app.push_screen(PickMany("Metric columns", items, self.model.metrics), self._metrics_chosen)

    def _metrics_chosen(self, chosen: list[str] | None) -> None:
        if chosen is not None and self.model is not None:
            self.model.metrics = chosen
            self.render_view(keep_run=self.current_run_id())

    def action_group(self) -> None:
        if self.model is not None:
            self.model.grouped = not self.model.grouped
            self.render_view(keep_run=None if self.model.grouped else self.current_run_id())

    def action_group_columns(self) -> None:
        if self.model is None:
            return
        from kdgat_core.query.groups import CONFIG_TAGS

        cols = [c for c in self.model.columns if c in CONFIG_TAGS or c.startswith(("params.", "tags."))]
        items = [(c, c) for c in cols]
        self.app.push_screen(
            PickMany("Group by (none: by configuration)", items, self.model.group_by), self._grouped_by
        )

    def _grouped_by(self, chosen: list[str] | None) -> None:
        if chosen is not None and self.model is not None:
            self.model.group_by = list(chosen)
            self.model.grouped = True
            self.render_view(keep_run=None)

    # ---- annotations: written by `kdgat tag|note|delete` in a subprocess (mlflow never loads in the TUI) --------
    def _targets(self) -> list[str]:
        if self.model is None:
            return []
        return sorted(self.model.marks) or ([self.current_run_id()] if self.current_run_id() else [])

    def action_annotate(self) -> None:
        if self.app.readonly or not self._targets():
            return
        items = [("tag", "tag KEY=VALUE"), ("note", "note (MLflow's description)"), ("delete", "delete (restorable)")]
        self.app.push_screen(Pick(f"Annotate {len(self._targets())} run(s)", items), self._annotate_chosen)

    def _annotate_chosen(self, action: str | None) -> None:
        if action == "delete":
            self._confirm_annotation("delete", [], [f"{self._who(r)}: delete" for r in self._targets()])
        elif action in ("tag", "note"):
            prompt = "tag KEY=VALUE" if action == "tag" else "note"
            self.app.push_screen(Ask(prompt), lambda text: self._annotate_text(action, text))

    def _annotate_text(self, action: str, text: str | None) -> None:
        if not text:
            return
        runs = self._targets()
        if action == "tag":
            key, sep, value = text.partition("=")
            key = key.strip()
            if not sep or not key or key.startswith("mlflow."):
                self.notify(f"'{text}' is not KEY=VALUE (mlflow.* keys are MLflow's own).", severity="error")
                return
            old = {r: self.model.value_of(r, key) or self.model.value_of(r, f"tags.{key}") for r in runs}
            lines = [f"{self._who(r)}: tag {key} = {value!r} (was {old[r]!r})" for r in runs if old[r] != value]
            self._confirm_annotation("tag", ["--set", f"{key}={value}"], lines)
        else:
            self._confirm_annotation("note", ["--text", text], [f"{self._who(r)}: note {text!r}" for r in runs])

    def _who(self, run_id: str) -> str:
        return f"{self.model.value_of(run_id, 'run_name') or '?'} ({run_id[:8]})"

    def _confirm_annotation(self, action: str, args: list[str], lines: list[str]) -> None:
        if not lines:
            self.notify("Nothing to change: the runs already look like that.")
            return
        runs = self._targets()
        body = "\n".join(lines[:12]) + (f"\n... and {len(lines) - 12} more" if len(lines) > 12 else "")
        self.app.push_screen(
            Confirm(f"{action}: {len(lines)} change(s) through MLflow", body),
            lambda yes: self._write_annotation(action, runs, args) if yes else None,
        )

    @work(thread=True, exit_on_error=False, group="annotate")
    def _write_annotation(self, action: str, runs: list[str], args: list[str]) -> None:
        import subprocess
        import sys

        cmd = [
            sys.executable,
            "-m",
            "kdgat_core.cli",
            action,
            *runs,
            *args,
            "--yes",
            "--tracking-uri",
            self.app.source.uri,
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if proc.returncode == 0:
            self.post_message(Annotated(proc.stdout.strip().splitlines()[-1], ok=True))
        else:
            self.post_message(Annotated((proc.stderr.strip().splitlines() or ["failed"])[-1], ok=False))

    def on_annotated(self, message: Annotated) -> None:
        if message.ok:
            self.notify(message.text)
            self.action_reload()  # a full (incremental, exact) read sees tag changes
        else:
            self.notify(message.text, severity="error")

    def action_views(self) -> None:
        from kdgat_core.query.saved_views import load_views

        try:
            self._views = load_views()
        except Exception as exc:  # a malformed kdgat.toml is a sentence, not a crash
            self.notify(str(exc), severity="error")
            return
        if not self._views:
            self.notify("No saved views: add [views.<name>] to kdgat.toml (see docs/analysis.md).", severity="warning")
            return
        items = [(n, f"{n}  {v.where}") for n, v in sorted(self._views.items())]
        self.app.push_screen(Pick("Saved view", items), self._view_chosen)

    def _view_chosen(self, name: str | None) -> None:
        if not name or self.model is None:
            return
        view = self._views[name]
        model = self.model
        model.filter_text = view.where
        self.query_one("#filter", Input).value = view.where
        self.query_one("#filter-row").set_class(not view.where, "hidden")
        metrics = [m for c in view.columns for m in (c, f"metrics.{c}") if m in model.available_metrics]
        if metrics:
            model.metrics = metrics
        if view.sort:
            column = next(
                (c for c in (view.sort, f"metrics.{view.sort}", f"params.{view.sort}") if c in model.columns), None
            )
            if column:
                model.sort_key = column
                model.sort_desc = (
                    view.descending
                    if view.descending is not None
                    else (metric_direction(column) == "desc" if column in model.available_metrics else True)
                )
        found = (next((c for c in (g, f"params.{g}", f"tags.{g}") if c in model.columns), None) for g in view.group_by)
        model.group_by = [c for c in found if c]
        model.grouped = bool(view.group_by)
        self.render_view(keep_run=None)
        self.notify(f"view {name}")

    def action_quick(self, which: int) -> None:
        if self.model is None:
            return
        column = QUICK_COLUMNS[which]
        values = self.model.quick_values(column)
        if not values:
            return
        current = self.model.quick.get(column)
        nxt = (
            values[0]
            if current not in values
            else (values[values.index(current) + 1] if values.index(current) + 1 < len(values) else None)
        )
        if nxt is None:
            self.model.quick.pop(column, None)
        else:
            self.model.quick[column] = nxt
        self.render_view(keep_run=self.current_run_id())

    def action_lineage(self) -> None:
        run_id = self.current_run_id()
        dataset = self.model.quick.get("dataset") if self.model else None
        if dataset is None and run_id is not None and self.model is not None:
            dataset = self.model.value_of(run_id, "dataset")
        self.app.open_lineage(run_id=run_id, dataset=dataset)

    def action_jobs(self) -> None:
        self.app.open_jobs()

    def action_failures(self) -> None:
        self.app.open_failures()

    def action_sql(self) -> None:
        self.app.open_sql()

    def action_submit(self) -> None:
        run_id = self.current_run_id()
        if self.view is not None and self.view.grouped:
            run_id = None
        self.app.open_submit(run_id=run_id)

    def action_quit(self) -> None:
        self.app.exit()

    # used by the command line (`:filter ...`) and tests
    def apply_filter(self, text: str) -> None:
        self.action_filter()
        self.query_one("#filter", Input).value = text
