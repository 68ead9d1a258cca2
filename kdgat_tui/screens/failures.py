"""Failures (F): failed and lost runs grouped by cause (out of memory, time limit, cancelled, an exception, ...),
with the last lines of the selected job's log; `R` resubmits the selected run's job, `G` the whole group, each after
a confirmation that shows the #SBATCH lines that change (hidden under --readonly)."""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.widgets import Footer, Static
from textual.worker import Worker

from kdgat_tui.runs_model import column_widths
from kdgat_tui.screens.base import KdgatScreen, first_line
from kdgat_tui.widgets.arrow_table import ArrowTable
from kdgat_tui.widgets.dialogs import Confirm

COLUMNS = ("cause", "job", "run", "run_id", "state", "retried", "error")
LOG_LINES = 6


@dataclass
class FailuresLoaded(Message):
    groups: list


@dataclass
class FailureLogRead(Message):
    text: str  # the last lines of the selected run's job log ("" when it has none)


@dataclass
class Resubmitted(Message):
    job_ids: list[str]


class FailuresScreen(KdgatScreen):
    MUTATING = frozenset({"resubmit_one", "resubmit_group"})
    STATUS_LINE = "#failures-title"
    BINDINGS = [
        Binding("escape,q", "app.pop_screen", "Back"),
        Binding("enter", "open_run", "Run", tooltip="Open the failed run"),
        Binding("R", "resubmit_one", "Resubmit", tooltip="Resubmit this run's job with resources fixed by its cause"),
        Binding("G", "resubmit_group", "Resubmit group", tooltip="Resubmit every job of this cause"),
        Binding("r", "refresh", "Refresh", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[dict] = []
        self.groups: list = []

    def compose(self) -> ComposeResult:
        yield Static("failures · loading…", classes="screen-title", id="failures-title", markup=False)
        yield ArrowTable(pa.table({c: pa.array([], pa.string()) for c in COLUMNS}), id="failures-table")
        yield Static("", id="failures-log", markup=False)
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(ArrowTable).focus()
        self.load()

    def action_refresh(self) -> None:
        self.load()

    @work(thread=True, exclusive=True, exit_on_error=False, group="failures")
    def load(self) -> None:
        self.post_message(FailuresLoaded(self.app.source.failure_groups()))

    def worker_failed(self, worker: Worker, error: BaseException) -> None:
        if worker.group == "failures-log":
            self.query_one("#failures-log", Static).update(f"no log: {error}")
        elif worker.group == "failures-resubmit":
            self.notify(f"resubmit failed: {error}", severity="error")
        else:
            super().worker_failed(worker, error)

    def error_line(self, worker: Worker, error: BaseException) -> str:
        return f"failures: {first_line(error)}"

    def _title(self, text: str) -> None:
        self.query_one("#failures-title", Static).update(text)

    def on_failures_loaded(self, message: FailuresLoaded) -> None:
        self.groups = groups = message.groups
        self.rows = [dict(r, group=g.cause) for g in groups for r in g.runs]
        data = pa.table(
            {
                "cause": pa.array([r["group"] for r in self.rows], pa.string()),
                "job": pa.array([str(r.get("job_id") or "") for r in self.rows], pa.string()),
                "run": pa.array([str(r.get("run_name") or "") for r in self.rows], pa.string()),
                "run_id": pa.array([str(r.get("run_id") or "")[:8] for r in self.rows], pa.string()),
                "state": pa.array([str(r.get("state") or r.get("run_status") or "") for r in self.rows], pa.string()),
                "retried": pa.array([str(r.get("retried_by") or "") for r in self.rows], pa.string()),
                "error": pa.array([str(r.get("error_msg") or "")[:80] for r in self.rows], pa.string()),
            }
        )
        self.query_one(ArrowTable).replace(data, column_widths(data), cursor_row=0 if self.rows else None)
        counts = " · ".join(f"{g.cause} {g.count}" + (f" ({g.detail})" if g.detail else "") for g in groups)
        self._title(f"failures · {len(self.rows)} runs · {counts}" if groups else "failures · none")
        self.show_log()

    def current_row(self) -> dict | None:
        if not self.rows:
            return None
        i = self.query_one(ArrowTable).cursor_row
        return self.rows[i] if 0 <= i < len(self.rows) else None

    def on_data_table_row_highlighted(self, event) -> None:
        self.show_log()

    @work(thread=True, exclusive=True, exit_on_error=False, group="failures-log")
    def show_log(self) -> None:
        row = self.current_row()
        text = ""
        if row is not None and row.get("job_id"):
            out, err = self.app.slurm.job_logs(str(row["job_id"]), tracking_uri=self.app.source.uri)
            for path in (err, out):
                if path.exists():
                    lines = [x for x in path.read_text(errors="replace").splitlines() if x.strip()]
                    if lines:
                        text = f"{path}:\n" + "\n".join(lines[-LOG_LINES:])
                        break
        self.post_message(FailureLogRead(text))

    def on_failure_log_read(self, message: FailureLogRead) -> None:
        self.query_one("#failures-log", Static).update(message.text)

    def action_open_run(self) -> None:
        row = self.current_row()
        if row is not None and row.get("run_id"):
            self.app.open_run(str(row["run_id"]))

    def on_data_table_row_selected(self, event) -> None:
        event.stop()
        self.action_open_run()

    def action_resubmit_one(self) -> None:
        row = self.current_row()
        if row is not None:
            self._confirm([row])

    def action_resubmit_group(self) -> None:
        row = self.current_row()
        if row is not None:
            self._confirm([r for r in self.rows if r["group"] == row["group"]])

    def _confirm(self, rows: list[dict]) -> None:
        if self.app.readonly:
            return
        rows = [r for r in rows if r.get("job_id")]
        if not rows:
            self.notify("no SLURM job to resubmit for this run", severity="warning")
            return
        try:
            retries = self.app.source.plan_retries(rows)
        except Exception as exc:
            self.notify(f"cannot resubmit: {exc}", severity="error")
            return
        lines = []
        for retry in retries:
            ids = ", ".join(f.job_id for f in retry.failed)
            lines.append(f"{retry.job.run_name}: retry of {ids}" + (f" (array {retry.array})" if retry.array else ""))
            lines += [f"  - {old}" for old, _ in retry.changed if old] + [
                f"  + {new}" for _, new in retry.changed if new
            ]
            if not retry.changed:
                lines.append("  #SBATCH lines unchanged")
        title = f"Resubmit {len(retries)} job{'s' * (len(retries) != 1)}?"
        self.app.push_screen(Confirm(title, "\n".join(lines)), lambda yes: self.resubmit(retries) if yes else None)

    @work(thread=True, exit_on_error=False, group="failures-resubmit")
    def resubmit(self, retries) -> None:
        subs = self.app.source.submit_retries(retries)
        self.post_message(Resubmitted([str(s.job_id) for s in subs]))

    def on_resubmitted(self, message: Resubmitted) -> None:
        self.notify(f"resubmitted as job {', '.join(message.job_ids)}")
        self.load()
