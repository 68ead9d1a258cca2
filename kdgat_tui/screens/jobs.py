"""Jobs (j): the SLURM queue and recent history joined with runs, refreshed live; `o` tails a job's log;
ctrl+d cancels after a confirmation that names the job (hidden under --readonly)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.widgets import Footer, RichLog, Static
from textual.worker import Worker

from kdgat_tui.runs_model import column_widths
from kdgat_tui.screens.base import KdgatScreen, first_line
from kdgat_tui.widgets.arrow_table import ArrowTable
from kdgat_tui.widgets.dialogs import Confirm

COLUMNS = ("job", "name", "state", "run", "elapsed", "node", "why", "metric", "run_id")
# from sacct (kdgat_core.slurm.accounting): what the job used of what it asked for, and why it failed
USAGE_COLUMNS = ("cause", "cpu_eff", "mem_eff", "time_eff")
TAIL_BYTES = 64 * 1024


@dataclass
class JobsLoaded(Message):
    rows: list
    usage: dict  # job id -> what it used of what it asked for (empty without accounting)


@dataclass
class JobCancelled(Message):
    job_id: str


@dataclass
class LogRead(Message):
    chunk: str  # the lines written since the last read ("" when none)
    title: str


class JobsScreen(KdgatScreen):
    MUTATING = frozenset({"cancel_job"})
    STATUS_LINE = "#jobs-title"
    BINDINGS = [
        Binding("escape,q", "app.pop_screen", "Back"),
        Binding("o", "log", "Log", tooltip="Tail the job's stdout and stderr"),
        Binding("enter", "open_run", "Run", tooltip="Open the run this job started"),
        Binding("ctrl+d", "cancel_job", "Cancel job", tooltip="scancel, after a confirmation"),
        Binding("a", "toggle_ended", "Active/all", tooltip="Show only queued and running jobs, or recent history too"),
        Binding("r", "refresh", "Refresh", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.rows: list = []
        self.include_ended = True
        self._job_of: dict[Worker, str] = {}  # a cancel worker -> its job id (for the error notification)

    def compose(self) -> ComposeResult:
        yield Static("jobs · loading…", classes="screen-title", id="jobs-title", markup=False)
        yield ArrowTable(pa.table({c: pa.array([], pa.string()) for c in COLUMNS}), id="jobs-table")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(ArrowTable).focus()
        self.action_refresh()
        interval = max(self.app.refresh_s or 0, 2.0) if self.app.refresh_s else 0
        if interval:
            self.set_interval(interval, self.action_refresh)

    def action_refresh(self) -> None:
        self.load()

    @work(thread=True, exclusive=True, exit_on_error=False, group="jobs")
    def load(self) -> None:
        from kdgat_core.query.jobs import runs_of_jobs

        rows = self.app.slurm.job_table(
            tracking_uri=self.app.source.uri, refresh=True, include_ended=self.include_ended, runs=runs_of_jobs
        )
        try:
            usage = {u.job_id: u for u in self.app.slurm.job_usage()}
        except Exception:
            usage = {}  # no accounting here: the queue alone
        self.post_message(JobsLoaded(rows, usage))

    def worker_failed(self, worker: Worker, error: BaseException) -> None:
        job_id = self._job_of.pop(worker, None)
        if job_id is not None:
            self.notify(f"cancel {job_id} failed: {error}", severity="error")
        else:
            super().worker_failed(worker, error)

    def error_line(self, worker: Worker, error: BaseException) -> str:
        return f"jobs: {first_line(error)}"

    def on_jobs_loaded(self, message: JobsLoaded) -> None:
        rows, usage = message.rows, message.usage
        table = self.query_one(ArrowTable)
        keep = self.current_job()
        self.rows = rows
        data = pa.table({c: pa.array([str(getattr(r, c) or "") for r in rows], pa.string()) for c in COLUMNS})
        if usage:
            for column in USAGE_COLUMNS:
                data = data.append_column(column, pa.array([_usage(usage.get(r.job), column) for r in rows]))
        index = next((i for i, r in enumerate(rows) if r.job == keep), None)
        table.replace(data, column_widths(data), cursor_row=index)
        active = sum(1 for r in rows if r.state in ("RUNNING", "PENDING", "CONFIGURING", "COMPLETING"))
        lost = sum(1 for r in rows if r.run == "lost")
        parts = [f"jobs · {len(rows)} shown · {active} queued or running"]
        if lost:
            parts.append(f"{lost} lost (job ended, run never closed: kdgat reconcile)")
        parts.append("a: " + ("active only" if self.include_ended else "with history"))
        self.query_one("#jobs-title", Static).update(" · ".join(parts))

    def current_job(self) -> str | None:
        row = self.current_row()
        return row.job if row is not None else None

    def current_row(self):
        if not self.rows:
            return None
        i = self.query_one(ArrowTable).cursor_row
        return self.rows[i] if 0 <= i < len(self.rows) else None

    def action_log(self) -> None:
        row = self.current_row()
        if row is not None:
            self.app.push_screen(LogScreen(row.job, row.name))

    def action_open_run(self) -> None:
        row = self.current_row()
        if row is not None and row.run_id:
            self.app.open_run(row.run_id)
        elif row is not None:
            self.notify(f"job {row.job} has not started a run yet")

    def on_data_table_row_selected(self, event) -> None:
        event.stop()
        self.action_open_run()

    def action_toggle_ended(self) -> None:
        self.include_ended = not self.include_ended
        self.load()

    def action_cancel_job(self) -> None:
        if self.app.readonly:
            return
        row = self.current_row()
        if row is None:
            return
        if row.state not in ("RUNNING", "PENDING", "CONFIGURING", "REQUEUED", "SUSPENDED"):
            self.notify(f"job {row.job} is {row.state}: nothing to cancel", severity="warning")
            return
        body = f"scancel {row.job}\n\njob  {row.job}  {row.name}\nstate {row.state}" + (
            f"\nrun  {row.run_id[:12]} ({row.run}) will end KILLED" if row.run_id else ""
        )
        self.app.push_screen(
            Confirm(f"Cancel job {row.job}?", body), lambda yes: self._cancel(row.job) if yes else None
        )

    def _cancel(self, job_id: str) -> None:
        # the worker's failure is handled on this thread, after this method returns: the id is recorded in time
        self._job_of[self.cancel(job_id)] = job_id

    @work(thread=True, exit_on_error=False, group="jobs-cancel")
    def cancel(self, job_id: str) -> None:
        self.app.slurm.cancel([job_id], tracking_uri=self.app.source.uri)
        self.post_message(JobCancelled(job_id))

    def on_job_cancelled(self, message: JobCancelled) -> None:
        self._job_of = {w: j for w, j in self._job_of.items() if j != message.job_id}
        self.notify(f"cancelled job {message.job_id}")
        self.action_refresh()


def _usage(job, column: str) -> str:
    if job is None:
        return ""
    if column == "cause":
        return job.job_cause + (f" by {job.cancelled_by}" if job.cancelled_by else "")
    value = getattr(job, column)
    return "" if value is None else f"{value:.0%}"


class LogScreen(KdgatScreen):
    """`o` on a job: the end of its stdout and stderr, followed while the job writes."""

    STATUS_LINE = "#log-title"
    BINDINGS = [
        Binding("escape,q", "app.pop_screen", "Back"),
        Binding("e", "toggle_stream", "stdout/stderr", tooltip="Switch between the job's stdout and stderr"),
        Binding("f", "toggle_follow", "Follow", tooltip="Keep scrolling to new lines"),
    ]

    def __init__(self, job_id: str, name: str = "") -> None:
        super().__init__()
        self.job_id, self.job_name = job_id, name
        self.stream = 0
        self.paths: tuple[Path, Path] | None = None
        self.offset = 0
        self.follow = True

    def compose(self) -> ComposeResult:
        yield Static(f"log of job {self.job_id} {self.job_name}", classes="screen-title", id="log-title", markup=False)
        yield RichLog(id="log", wrap=False, markup=False, highlight=False, max_lines=5000)
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(RichLog).focus()
        self.poll()
        self.set_interval(1.0, self.poll)

    @work(thread=True, exclusive=True, exit_on_error=False, group="log")
    def poll(self) -> None:
        if self.paths is None:
            self.paths = tuple(self.app.slurm.job_logs(self.job_id, tracking_uri=self.app.source.uri))
        path = self.paths[self.stream]
        size = path.stat().st_size if path.exists() else 0
        if size < self.offset:
            self.offset = 0  # the file was truncated or replaced (requeue)
        start = max(self.offset, size - TAIL_BYTES) if self.offset == 0 else self.offset
        if size <= start:
            self.post_message(LogRead("", f"{path} · {size:,} bytes · waiting for output"))
            return
        with open(path, "rb") as fh:
            fh.seek(start)
            chunk = fh.read(size - start).decode(errors="replace")
        self.offset = size
        self.post_message(LogRead(chunk, f"{path} · {size:,} bytes"))

    def error_line(self, worker: Worker, error: BaseException) -> str:
        return f"log of job {self.job_id}: {error}"

    def on_log_read(self, message: LogRead) -> None:
        log = self.query_one(RichLog)
        for line in message.chunk.splitlines():
            log.write(line, scroll_end=self.follow)
        self.query_one("#log-title", Static).update(message.title)

    def action_toggle_stream(self) -> None:
        self.stream = 1 - self.stream
        self.offset = 0
        self.query_one(RichLog).clear()
        self.poll()

    def action_toggle_follow(self) -> None:
        self.follow = not self.follow
        self.notify("following new lines" if self.follow else "stopped following")
