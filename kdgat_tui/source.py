"""The TUI's one door to the tracking DB: `kdgat_core.query` (DuckDB, read-only), called from worker threads.

It reshapes what the query layer returns into the columns the screens show, remembers what it has already read so a
refresh only re-reads new and changed runs, and turns a locked DB into "stale since ..." instead of an error.
No SQL here: every query is a `TrackingDB` method.
"""

from __future__ import annotations

import threading
import time

import pyarrow as pa

from kdgat_core.config import SQL_TIMEOUT_S, KdgatError, RunStatus, Tag, resolve_tracking_uri, sqlite_path

_LOCK_WORDS = ("locked", "busy")
LOCK_RETRY_S = 2.0
RUNNING_REFRESH_S = 30.0
FULL_SCAN_S = 60.0  # every run's MLflow row, for deletions (the poll in between reads only what can change)
MAX_WATCHED = 5000


class Source:
    def __init__(self, tracking_uri: str | None = None, read_uri: str | None = None) -> None:
        from kdgat_core.query.stores import resolve_reader_uri

        self.uri = resolve_tracking_uri(tracking_uri).value  # what jobs write to (SLURM screens)
        self.reader_uri = resolve_reader_uri(tracking_uri, read_uri).value  # what the screens read
        self._flags = (tracking_uri, read_uri)
        self._db = None
        self._lock = threading.Lock()  # one DuckDB connection, used by one worker at a time
        self._seen: pa.Table | None = None  # MLflow's run rows (status, times) as last read
        self.stale_since: float | None = None
        self._running_read = time.monotonic()
        self._full_scan = 0.0
        self._rowid = 0
        self._recheck: set[str] = set()
        self._seen_events: set[str] | None = None  # watch events already shown (None: not read yet)
        self.loaded_gen: str | None = None  # the read cache's generation when load_runs served it unchanged

    # ---- identity ----------------------------------------------------------------------------------------------
    @property
    def label(self) -> str:
        from kdgat_core.query.stores import mask_uri

        try:
            path = sqlite_path(self.reader_uri, must_exist=False)
        except KdgatError:
            return mask_uri(self.reader_uri)
        return str(path) if path is not None else mask_uri(self.reader_uri)

    def check(self) -> None:
        """A clear sentence now rather than an empty screen: the store must exist and be an MLflow store (opening it
        reads its header and schema: a directory, a text file, a truncated or corrupt DB, a wrong password stop here)."""
        from kdgat_core.query.stores import resolve_store

        resolve_store(*self._flags)  # a server URI, a missing or foreign file: one sentence
        try:
            self.db  # noqa: B018 - open it now, on the main thread, before the screen switches to the app
        except KdgatError:
            raise
        except Exception as exc:  # a DuckDB or OS error while attaching the store
            raise KdgatError(f"cannot open {self.label}: {self.reason(exc)}") from None

    @staticmethod
    def is_locked(exc: BaseException | str) -> bool:
        return any(w in str(exc).lower() for w in _LOCK_WORDS)

    @staticmethod
    def reason(exc: BaseException) -> str:
        """The whole first line of an error, as one sentence (nothing cut off: it is printed after the app exits)."""
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        text = lines[0] if lines else type(exc).__name__
        return text if text.endswith(".") else text + "."

    @property
    def db(self):
        if self._db is None:
            from kdgat_core.query import open_db

            # a short retry: a locked DB shows "stale since ..." and the next refresh tries again
            self._db = open_db(self._flags[0], read_uri=self._flags[1], lock_retry_s=LOCK_RETRY_S)
        return self._db

    def describe_error(self, exc: BaseException) -> str:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if self.is_locked(text):
            return "database locked by a writer"
        return text[:120]

    def _call(self, fn, *args, **kwargs):
        """Run one query; remember when reads started failing so the screen can say how stale it is."""
        with self._lock:
            try:
                out = fn(*args, **kwargs)
            except Exception:
                if self.stale_since is None:
                    self.stale_since = time.time()
                raise
            self.stale_since = None
            return out

    # ---- runs ------------------------------------------------------------------------------------------------
    def cached_runs(self):
        """The query layer's cached copy of the runs table (no DuckDB connection: paints at once), or None."""
        from kdgat_core.query.tui_support import cached_wide

        try:
            return cached_wide(self.reader_uri)  # deleted runs sort last: hiding them is a slice (no copy)
        except Exception:
            return None

    def load_runs(self) -> pa.Table:
        """Every visible run, one row each (the query layer's wide table, served from its read cache)."""

        def read():
            mark = self.db.runs_watermark()  # before the reads: a run inserted meanwhile is seen next poll
            states = self.db.run_states(arrow=True)
            return self.db.wide(arrow=True), states, mark

        table, states, self._rowid = self._call(read)
        refresh = self.db.last_refresh
        self.loaded_gen = refresh.details.get("gen") if refresh.mode == "fresh" else None
        self._seen = states
        self._full_scan = time.monotonic()
        return table

    def poll(self) -> tuple[pa.Table, list[str]]:
        """(rows of new or changed runs, ids of runs that disappeared): only those runs are re-read.

        A run counts as changed when its MLflow row changed (status, end time, lifecycle) or while it runs (its
        metrics move every epoch); new runs are those not seen before.
        """
        import pyarrow.compute as pc

        now = time.monotonic()
        # running runs log metrics every epoch: re-read them on a slower beat than new and finished runs
        running_due = now - self._running_read >= RUNNING_REFRESH_S
        if running_due:
            self._running_read = now
        if self._seen is None or now - self._full_scan >= FULL_SCAN_S:
            # now and then every run's row: deletions and restores show up here
            states = self._call(lambda: self.db.run_states(arrow=True))
            changed, removed = state_changes(self._seen, states, include_running=running_due)
            self._seen, self._full_scan = states, now
        else:
            open_ids = self._seen[RUN_ID].filter(
                pc.is_in(self._seen["mlflow_status"], value_set=pa.array(OPEN_STATES, pa.string()))
            )
            watch = (open_ids.to_pylist() + sorted(self._recheck))[:MAX_WATCHED]
            delta = self._call(lambda: self.db.run_states_since(self._rowid, watch))
            self._recheck.clear()
            if delta.num_rows:
                self._rowid = max(self._rowid, pc.max(delta["rowid"]).as_py() or 0)
            delta = delta.drop_columns(["rowid"])
            known = self._seen.filter(pc.is_in(self._seen[RUN_ID], value_set=delta[RUN_ID]))
            changed, _ = state_changes(known, delta, include_running=running_due)
            removed = []
            if changed:
                keep = pc.invert(pc.is_in(self._seen[RUN_ID], value_set=delta[RUN_ID]))
                self._seen = pa.concat_tables([self._seen.filter(keep), delta.cast(self._seen.schema)])
        if changed:
            table = self._call(lambda: self.db.runs_table(run_ids=changed, arrow=True))
        else:
            table = pa.table({RUN_ID: pa.array([], pa.string())})
        return table, removed

    def forget(self, run_ids: list[str]) -> None:
        """The next poll re-reads these runs as if they were new."""
        if self._seen is not None and run_ids:
            import pyarrow.compute as pc

            keep = pc.invert(pc.is_in(self._seen[RUN_ID], value_set=pa.array(run_ids, pa.string())))
            self._seen = self._seen.filter(keep)
            self._recheck.update(run_ids)

    def lost_runs(self, running_jobs: dict[str, str]) -> set[str] | None:
        """Which of these runs (run id -> SLURM job id, all tagged running) are lost: their job has ended.

        Asks kdgat_core.slurm the way `kdgat jobs` does (one squeue + sacct call, cached a few seconds); None when
        the scheduler cannot be asked (no SLURM here, squeue failing), so nothing is marked lost on a guess."""
        if not running_jobs:
            return set()
        try:
            from kdgat_core.slurm.queue import is_lost, scheduler_jobs

            jobs = {}
            for job in scheduler_jobs(tracking_uri=self.uri):
                jobs[job.raw_id] = job
                jobs.setdefault(job.job_id, job)
        except Exception:
            return None
        return {run for run, job in running_jobs.items() if is_lost(RUNNING_STATUS, jobs.get(job))}

    def job_facts(self) -> dict[str, dict]:
        """run id -> the scheduler's facts about its job (cause, mem_eff, cpu_eff, time_eff), from kdgat_core.query's
        `jobs` view fed with one cached sacct call; {} where SLURM or its accounting is absent."""
        try:
            from kdgat_core.query.jobs import attach_jobs, run_job_facts
            from kdgat_core.slurm.accounting import job_facts
            from kdgat_core.slurm.scheduler import SlurmScheduler

            if not SlurmScheduler.available():
                return {}
            facts = job_facts(tracking_uri=self.uri)
        except Exception:
            return {}
        if not facts:
            return {}

        def read():
            attach_jobs(self.db, facts)
            return run_job_facts(self.db)

        try:
            return self._call(read)
        except Exception:
            return {}  # a locked DB: the columns wait for the next refresh

    def new_events(self) -> list:
        """Events (`kdgat watch`'s rules from kdgat.toml [watch]) that appeared since the first call, each once.

        The first call only remembers what already happened. Uses the `jobs` view job_facts attached last."""
        try:
            from kdgat_core.config import load_settings
            from kdgat_core.query.events import Rules, events, new_events
            from kdgat_core.query.jobs import attach_jobs

            rules = Rules.from_settings(load_settings().section("watch"))

            def read():
                if not getattr(self.db, "_jobs_attached", False):
                    attach_jobs(self.db, [])
                return events(self.db, rules)

            found = self._call(read)
        except Exception:
            return []  # a locked DB or a bad [watch] table: no events this time
        if self._seen_events is None:
            self._seen_events = {e.key for e in found}
            return []
        fresh = new_events(found, self._seen_events)
        self._seen_events |= {e.key for e in fresh}
        return fresh

    def failure_groups(self) -> list:
        """Failed and lost runs grouped by cause (kdgat_core.query over the scheduler's facts), like `kdgat failures`."""
        from kdgat_core.query.jobs import attach_jobs, failures, group_failures

        facts: list[dict] = []
        try:
            from kdgat_core.slurm.accounting import job_facts
            from kdgat_core.slurm.scheduler import SlurmScheduler

            if SlurmScheduler.available():
                facts = job_facts(tracking_uri=self.uri, refresh=True)
        except Exception:
            facts = []  # the scheduler does not answer: runs alone still show their causes

        def read():
            attach_jobs(self.db, facts)
            return failures(self.db)

        return group_failures(self._call(read))

    def plan_retries(self, rows: list[dict]) -> list:
        """What resubmitting these failure rows would submit (rendered, nothing queued)."""
        from kdgat_core.slurm.resubmit import FailedJob, plan_retries

        failed = [
            FailedJob(str(r["job_id"]), str(r.get("cause") or r.get("group")), r.get("run_id"), r.get("max_rss_mb"))
            for r in rows
        ]
        return plan_retries(failed, tracking_uri=self.uri)

    def submit_retries(self, retries: list) -> list:
        from kdgat_core.slurm.resubmit import submit_retries

        return submit_retries(retries, tracking_uri=self.uri)

    # ---- one run and its neighbours ------------------------------------------------------------------------------
    def run_row(self, run_id: str) -> dict:
        rows = self._call(lambda: self.db.runs_table(run_ids=[run_id], arrow=True)).to_pylist()
        if not rows:
            raise KdgatError(f"Run {run_id[:12]} is no longer in the tracking DB.")
        return rows[0]

    def history(self, run_id: str, metric: str) -> pa.Table | None:
        """(step, value) of one metric, or None when the run never logged it."""
        try:
            return self._call(lambda: self.db.history(run_id, metric, arrow=True))
        except KdgatError:
            return None

    def history_keys(self, run_ids: list[str]) -> list[str]:
        """The metrics these runs logged over more than one step (what a chart can draw), most common first."""
        import pyarrow.compute as pc

        def keys():
            s = self.db.metric_summary_table()
            s = s.filter(
                pc.and_(pc.is_in(s["run_id"], value_set=pa.array(run_ids, pa.string())), pc.greater(s["n_steps"], 1))
            )
            counts = s.group_by("key").aggregate([("run_id", "count")]).to_pylist()
            return [c["key"] for c in sorted(counts, key=lambda c: (-c["run_id_count"], c["key"]))]

        return self._call(keys)

    def run_curves(self, run_ids: list[str], metric: str, x: str = "step", teachers: bool = True) -> list:
        from kdgat_core.query.curves import run_curves

        return self._call(lambda: run_curves(self.db, run_ids, metric, x, teachers))

    def group_curves(self, groups: list[tuple[str, list[str]]], metric: str, x: str = "step") -> list:
        from kdgat_core.query.curves import group_curves

        return self._call(lambda: group_curves(self.db, groups, metric, x))

    def compare(self, run_ids: list[str]) -> pa.Table:
        """Final metrics side by side (kdgat_core.query.compare: what `kdgat compare` prints)."""
        return self._call(lambda: self.db.compare(*run_ids, arrow=True))

    def config_diff(self, run_ids: list[str], all_params: bool) -> pa.Table:
        return self._call(lambda: self.db.config_diff(run_ids, all=all_params, arrow=True))

    def lineage(self, dataset: str | None = None, run_id: str | None = None, metric: str = "f1") -> pa.Table:
        """Teacher -> student links, then retry links (link = 'retry'): what `kdgat lineage` draws."""
        return self._call(lambda: self.db.lineage(run=run_id, dataset=dataset, metric=metric, arrow=True, retries=True))

    def sql(self, query: str) -> pa.Table:
        return self._call(lambda: self.db.sql(query, arrow=True, timeout_s=SQL_TIMEOUT_S))

    def wide(self) -> pa.Table:
        return self._call(lambda: self.db.wide(arrow=True))


RUN_ID = Tag.RUN_ID.value
RUNNING_STATUS = RunStatus.RUNNING.value
RUNNING = "RUNNING"
# MLflow states a run can still leave. A tuple, not an Arrow array: the first conversion of a Python value makes
# pyarrow import pandas (~0.4 s), so nothing converts one at import time (`skip_pyarrow_pandas_probe` runs later)
OPEN_STATES = ("RUNNING", "SCHEDULED")


STATE_COLUMNS = ("mlflow_status", "lifecycle", "start_ms", "end_ms")


def state_changes(before: pa.Table | None, now: pa.Table, include_running: bool) -> tuple[list[str], list[str]]:
    """Run ids that are new or whose MLflow row changed (plus running ones if asked), and ids that disappeared.

    Vectorised (one hash join of 100k rows): comparing Python tuples per run took 0.26 s."""
    import pyarrow.compute as pc

    if before is None or before.num_rows == 0:
        return now[RUN_ID].to_pylist(), []
    old = before.select([RUN_ID, *STATE_COLUMNS]).rename_columns([RUN_ID, *[f"old_{c}" for c in STATE_COLUMNS]])
    joined = now.select([RUN_ID, *STATE_COLUMNS]).join(old, keys=RUN_ID, join_type="left outer")
    differs = pc.is_null(joined[f"old_{STATE_COLUMNS[2]}"])
    for c in STATE_COLUMNS:
        a = pc.fill_null(pc.cast(joined[c], pa.string()), "\0")
        b = pc.fill_null(pc.cast(joined[f"old_{c}"], pa.string()), "\0")
        differs = pc.or_(differs, pc.not_equal(a, b))
    if include_running:
        differs = pc.or_(differs, pc.fill_null(pc.equal(joined["mlflow_status"], RUNNING), False))
    changed = joined[RUN_ID].filter(differs).to_pylist()
    gone = before[RUN_ID].filter(pc.invert(pc.is_in(before[RUN_ID], value_set=now[RUN_ID]))).to_pylist()
    return changed, gone
