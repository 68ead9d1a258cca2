"""The TUI's one door to the tracking DB: `kdgat_core.query` (DuckDB, read-only), called from worker threads.

It reshapes what the query layer returns into the columns the screens show, remembers what it has already read so a
refresh only re-reads new and changed runs, and turns a locked DB into "stale since ..." instead of an error.
No SQL here: every query is a `TrackingDB` method.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path

import pyarrow as pa

from kdgat_core.config import KdgatError, Tag, resolve_tracking_uri, sqlite_path

_LOCK_WORDS = ("locked", "busy")
LOCK_RETRY_S = 2.0


class Source:
    def __init__(self, tracking_uri: str | None = None) -> None:
        self.uri = resolve_tracking_uri(tracking_uri).value
        self._db = None
        self._lock = threading.Lock()  # one DuckDB connection, used by one worker at a time
        self._seen: dict[str, tuple] = {}  # run_id -> fingerprint of what was last read
        self.stale_since: float | None = None

    # ---- identity ----------------------------------------------------------------------------------------------
    @property
    def label(self) -> str:
        try:
            path = sqlite_path(self.uri, must_exist=False)
        except KdgatError:
            return self.uri
        return str(path) if path is not None else self.uri

    def check(self) -> None:
        """A clear sentence now rather than an empty screen: the DB file must exist."""
        path = sqlite_path(self.uri, must_exist=True)
        if path is None:
            raise KdgatError(f"kdgat-tui reads SQLite tracking databases; '{self.uri}' is not one.")

    @property
    def db(self):
        if self._db is None:
            from kdgat_core.query import open_db

            # a short retry: a locked DB shows "stale since ..." and the next refresh tries again
            self._db = open_db(self.uri, lock_retry_s=LOCK_RETRY_S)
        return self._db

    def describe_error(self, exc: BaseException) -> str:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if any(w in text.lower() for w in _LOCK_WORDS):
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
            return cached_wide(self.uri)
        except Exception:  # noqa: BLE001 - an unreadable cache only means waiting for the real read
            return None

    def load_runs(self) -> pa.Table:
        """Every visible run, one row each (the query layer's wide table, served from its read cache)."""
        def read():
            states = self.db.run_states(arrow=True)
            return self.db.wide(arrow=True), states

        table, states = self._call(read)
        self._seen = _fingerprints(states)
        return table

    def poll(self) -> tuple[pa.Table, list[str]]:
        """(rows of new or changed runs, ids of runs that disappeared): only those runs are re-read.

        A run counts as changed when its MLflow row changed (status, end time, lifecycle) or while it runs (its
        metrics move every epoch); new runs are those not seen before.
        """
        states = self._call(lambda: self.db.run_states(arrow=True))
        prints = _fingerprints(states)
        changed = [r for r, p in prints.items() if self._seen.get(r) != p or p[0] == RUNNING]
        removed = [r for r in self._seen if r not in prints]
        if changed:
            table = self._call(lambda: self.db.runs_table(run_ids=changed, arrow=True))
        else:
            table = pa.table({RUN_ID: pa.array([], pa.string())})
        self._seen = prints
        return table, removed

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

    def config_diff(self, run_ids: list[str], all_params: bool) -> pa.Table:
        return self._call(lambda: self.db.config_diff(run_ids, all=all_params, arrow=True))

    def lineage(self, dataset: str | None = None, run_id: str | None = None, metric: str = "f1") -> pa.Table:
        return self._call(lambda: self.db.lineage(run=run_id, dataset=dataset, metric=metric, arrow=True))

    def sql(self, query: str) -> pa.Table:
        return self._call(lambda: self.db.sql(query, arrow=True))

    def wide(self) -> pa.Table:
        return self._call(lambda: self.db.wide(arrow=True))


RUN_ID = Tag.RUN_ID.value
RUNNING = "RUNNING"


def _fingerprints(states: pa.Table) -> dict[str, tuple]:
    """run_id -> (mlflow_status, lifecycle, start_ms, end_ms), from `TrackingDB.run_states`."""
    cols = [states[c].to_pylist() for c in ("mlflow_status", "lifecycle", "start_ms", "end_ms")]
    return {rid: tuple(c[i] for c in cols) for i, rid in enumerate(states[RUN_ID].to_pylist())}
