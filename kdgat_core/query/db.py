"""`TrackingDB`: the read-only query API over an MLflow SQLite store (notebooks, the `kdgat` CLI and the TUI share it).

Every method returns a pandas DataFrame, or a pyarrow Table with ``arrow=True``. The examples run as doctests
against a fixture database (tests/unit/test_doctests.py) where ``db = open_db(<fixture>)``.

Which path answers which question (see docs/query.md):

* one run's rows (history, compare, diff, resolve_run): SQL executed inside SQLite with MLflow's run_uuid indexes;
* leaderboard: the cached wide table when it is current, else an indexed join inside SQLite (no full pivot);
* everything over all runs (runs, sweep, dataset_summary, lineage, the ``runs`` view): the wide table, kept current
  by `kdgat_core.query.wide.WideCache`.
"""

from __future__ import annotations

import difflib
import os
import re
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, overload

import duckdb

from kdgat_core import mlflow_schema
from kdgat_core.config import (
    PIPELINE_ORDER,
    RETRY_OF_TAG,
    KdgatError,
    Metric,
    RunStatus,
    metric_direction,
)
from kdgat_core.query import leaderboard as boards
from kdgat_core.query.connection import (
    ALIAS,
    Reader,
    ResolvedDB,
    pa,
    pc,
    register_arrow,
    resolve_db,
    result_rows,
)
from kdgat_core.query.expressions import parse_metric
from kdgat_core.query.filters import RunFilter, _lit, _quote, bool_tag_sql, tag_equals  # noqa: F401 - re-exported
from kdgat_core.query.sql_guard import check_user_sql, one_line, summarized_query, table_names
from kdgat_core.query.sql_text import decoded_metric, in_list, literal, quote_ident
from kdgat_core.query.summaries import SummaryCache, summary_placeholder_sql
from kdgat_core.query.summarize import summary_sql
from kdgat_core.query.wide import (
    BASE_COLUMNS,
    BASE_TYPES,
    METRIC_COLUMNS,
    METRIC_PREFIX,
    PARAM_PREFIX,
    RefreshStats,
    WideCache,
    build_uncached,
    deleted_mask,
    pivot,
    read_long_for,
    visible_rows,
)

VIEWS = ("runs", "params", "tags", "metrics", "metric_history", "metric_summary", "lineage", "runs_wide")
# Views backed by the wide table: a query naming one of them brings the table up to date first.
_WIDE_VIEWS = {"runs", "lineage", "runs_wide"}
_HEX_ID = re.compile(r"^[0-9a-f]{1,32}$")
__all__ = ["VIEWS", "RunFilter", "TrackingDB", "open_db"]

if TYPE_CHECKING:
    import pandas as pd

    from kdgat_core.query.importance import Importance
    from kdgat_core.query.stats import Comparison


# PostgreSQL's oldest open transaction id as a 32-bit xid (what a row's xmin holds)
_PG_WATERMARK = "CAST(CAST(pg_snapshot_xmin(pg_current_snapshot()) AS text) AS bigint) % 4294967296"
# What run_states and run_states_since read per run (both through the alias r of MLflow's runs table)
_RUN_STATE_COLUMNS = (
    "r.run_uuid AS run_id, r.status AS mlflow_status, r.lifecycle_stage AS lifecycle, "
    "r.start_time AS start_ms, r.end_time AS end_ms"
)


class TrackingDB:
    """A read-only view of one MLflow tracking store (SQLite or PostgreSQL). Use `open_db()`; close it when done.

    >>> db.runs(dataset="hcrl_sa", stage="evaluation", model_size="teacher")[["run_name", "status", "f1"]]
                         run_name    status    f1
    0  hcrl_sa/teacher_evaluation  complete  0.90
    1  hcrl_sa/teacher_evaluation  complete  0.94
    2  hcrl_sa/teacher_evaluation  complete  0.95
    3  hcrl_sa/teacher_evaluation  complete  0.93
    """

    def __init__(
        self,
        resolved: ResolvedDB,
        *,
        include_deleted: bool = False,
        cache: bool = True,
        cache_dir: str | os.PathLike | None = None,
        lock_retry_s: float | None = None,
    ):
        self.path: Path | None = resolved.path  # the SQLite file; None for a database server
        self.store = resolved
        self.uri = resolved.uri
        self.uri_source = resolved.source
        self.include_deleted = include_deleted
        self._resolved = resolved
        self._reader_kwargs = {} if lock_retry_s is None else {"lock_retry_s": lock_retry_s}
        self._reader_obj: Reader | None = None
        # kdgat's own connection for the read cache's files (see `_own_con`), and whether the store is attached on it
        self._own: duckdb.DuckDBPyConnection | None = None
        self._own_attached = False
        self._own_lock = threading.Lock()
        self._cache = (
            WideCache(lambda: self._reader, resolved, Path(cache_dir) if cache_dir is not None else None)
            if cache
            else None
        )
        self._wide: pa.Table | None = None
        self._summary = SummaryCache(lambda: self._reader, resolved.path, self._cache.dir if self._cache else None)
        self._views_current = False
        self._views_created = False
        self.last_refresh = RefreshStats()
        self.last_board_source = ""  # what answered the last leaderboard: "wide" (in memory), "cache" or "store"
        if self._cache is None or self._cache.fresh_board(self._live_signature) is None:
            self._reader  # noqa: B018 - validate the store (MLflow tables) now; a current cache proves it already

    @property
    def _reader(self) -> Reader:
        """The DuckDB connection with the file attached and the settings locked, opened on first need (~20 ms)."""
        if self._reader_obj is None:
            with self._own_lock:  # a connection that already has the store attached is taken over, not made again
                handed = self._own if self._own_attached else None
                if handed is not None:
                    self._own, self._own_attached = None, False
            reader = Reader(self._resolved, con=handed, **self._reader_kwargs)
            reader.lock()  # views are created later, on first SQL use: CREATE VIEW needs no setting
            self._reader_obj = reader
            self._views_created = self._views_current = False
        return self._reader_obj

    def _own_con(self, attach: bool = False) -> duckdb.DuckDBPyConnection:
        """kdgat's own DuckDB connection for the read cache's files (the board parquet), one thread, never given user
        SQL (hence not locked down: it reads files). With `attach` the store is attached on it too, for the cache's
        freshness question when no Reader is open: a current cache then answers a database server's leaderboard with
        one connection, one snapshot query and no schema check; the Reader takes that connection over if it opens.
        Callers hold `_own_lock`."""
        if self._own is None:
            self._own = duckdb.connect(":memory:", config={"allow_unsigned_extensions": "true", "threads": 1})
        if attach and not self._own_attached:
            self._resolved.attach(self._own)
            self._own_attached = True
        return self._own

    def _live_signature(self) -> list | None:
        """The store's own answer to "changed since?" (a database server's snapshot), for the read cache: asked on the
        Reader if it is open, else on kdgat's own connection with the store attached."""
        reader = self._reader_obj
        if reader is not None:
            return reader.retry(lambda: self.store.live_signature(reader.con))
        with self._own_lock:
            return self.store.live_signature(self._own_con(attach=True))

    def _cache_sql(self, sql: str, rows: bool) -> pa.Table | list[dict]:
        """kdgat's SQL over the read cache's files (`read_parquet`), on `_own_con`."""
        with self._own_lock:
            result = self._own_con().execute(sql)
            return result_rows(result) if rows else result.to_arrow_table()

    # -- plumbing -----------------------------------------------------------------------------------------------------
    @property
    def con(self) -> duckdb.DuckDBPyConnection:
        """The locked DuckDB connection with kdgat's views (created here on first use: ~20 ms the leaderboard skips)."""
        reader = self._reader
        if not self._views_created:
            reader.retry(self._create_views)  # binding a view reads SQLite's schema: a writer's lock can stall it
            self._views_created = True
        return reader.con

    def close(self) -> None:
        """Close the DuckDB connection; wait for a read-cache write still in flight (the table was returned first)."""
        if self._cache is not None:
            self._cache.flush()
        if self._reader_obj is not None:
            self._reader_obj.close()
            self._reader_obj = None
        with self._own_lock:
            if self._own is not None:
                self._own.close()
                self._own, self._own_attached = None, False

    def __enter__(self) -> TrackingDB:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"TrackingDB({self.store.display!r})"

    # A method with an `arrow` flag returns a pyarrow Table when it is true, else a pandas DataFrame: the overloads
    # below say so to mypy (pyarrow has no type information, so its Table is Any to mypy).
    @overload
    @staticmethod
    def _out(table: pa.Table, arrow: Literal[True]) -> pa.Table: ...
    @overload
    @staticmethod
    def _out(table: pa.Table, arrow: Literal[False]) -> pd.DataFrame: ...
    @overload
    @staticmethod
    def _out(table: pa.Table, arrow: bool) -> pa.Table | pd.DataFrame: ...
    @staticmethod
    def _out(table: pa.Table, arrow: bool) -> pa.Table | pd.DataFrame:
        return table if arrow else table.to_pandas()

    def _calc(self, sql: str, **tables: pa.Table) -> pa.Table:
        """Run DuckDB SQL over Arrow tables (not over the tracking file)."""
        con = duckdb.connect()
        try:
            con.execute("SET python_enable_replacements = false")
            for name, tbl in tables.items():
                register_arrow(con, name, tbl)
            return con.execute(sql).to_arrow_table()
        finally:
            con.close()

    def _visible_sql(self, alias: str = "r", exp: str = "e") -> str:
        if self.include_deleted:
            return "TRUE"
        return f"{alias}.lifecycle_stage <> 'deleted' AND coalesce({exp}.lifecycle_stage, 'active') <> 'deleted'"

    def _create_views(self) -> None:
        con = self._reader.con
        # a typed, empty stand-in until the wide table is read (SQL only: registering Arrow imports pandas)
        empty = ", ".join(f"CAST(NULL AS {t}) AS {quote_ident(c)}" for c, t in BASE_TYPES.items())
        con.execute(f"CREATE OR REPLACE VIEW _kdgat_wide AS SELECT {empty} WHERE false")
        self._create_wide_views()
        visible = (
            f"SELECT r.run_uuid FROM {ALIAS}.runs r LEFT JOIN {ALIAS}.experiments e "
            f"ON e.experiment_id = r.experiment_id WHERE {self._visible_sql()}"
        )
        value = (
            "CASE WHEN CAST(m.is_nan AS INTEGER) <> 0 THEN 'NaN'::DOUBLE WHEN m.value >= 1.7976931348623157e308 THEN 'inf'::DOUBLE "
            "WHEN m.value <= -1.7976931348623157e308 THEN '-inf'::DOUBLE ELSE m.value END"
        )
        con.execute(f"CREATE OR REPLACE VIEW _kdgat_visible AS {visible}")
        self._create_summary_view()
        con.execute(
            f"CREATE OR REPLACE VIEW params AS SELECT p.run_uuid AS run_id, p.key, p.value FROM {ALIAS}.params p "
            "WHERE p.run_uuid IN (SELECT run_uuid FROM _kdgat_visible)"
        )
        con.execute(
            f"CREATE OR REPLACE VIEW tags AS SELECT t.run_uuid AS run_id, t.key, t.value FROM {ALIAS}.tags t "
            "WHERE t.run_uuid IN (SELECT run_uuid FROM _kdgat_visible)"
        )
        con.execute(
            f"CREATE OR REPLACE VIEW metrics AS SELECT m.run_uuid AS run_id, m.key, {value} AS value, m.step, "
            f"epoch_ms(m.timestamp) AS timestamp FROM {ALIAS}.latest_metrics m "
            "WHERE m.run_uuid IN (SELECT run_uuid FROM _kdgat_visible)"
        )
        # a step logged twice keeps its newest point (then the larger value), as MLflow's latest_metrics does
        con.execute(
            f"CREATE OR REPLACE VIEW metric_history AS SELECT m.run_uuid AS run_id, m.key, m.step, "
            f"max_by({value}, (m.timestamp, m.value)) AS value, epoch_ms(max(m.timestamp)) AS timestamp "
            f"FROM {ALIAS}.metrics m WHERE m.run_uuid IN (SELECT run_uuid FROM _kdgat_visible) "
            "GROUP BY m.run_uuid, m.key, m.step"
        )

    def _create_summary_view(self, table: pa.Table | None = None) -> None:
        """`metric_summary`: an empty typed stand-in until a query names it, then the summary cache's table."""
        con = self._reader.con
        if table is None:
            con.execute(f"CREATE OR REPLACE VIEW _kdgat_summary AS {summary_placeholder_sql()}")
        else:
            register_arrow(con, "_kdgat_summary", table)
        con.execute(
            "CREATE OR REPLACE VIEW metric_summary AS SELECT * FROM _kdgat_summary "
            "WHERE run_id IN (SELECT run_uuid FROM _kdgat_visible)"
        )

    def _sync_summary_view(self) -> None:
        self.con  # noqa: B018 - the views exist from here on
        self._create_summary_view(self.metric_summary_table())

    def metric_summary_table(self) -> pa.Table:
        """Every run's metric summaries (deleted runs too), from the read cache (see `kdgat_core.query.summaries`)."""
        return self._summary.get()

    @overload
    def metric_summary(self, run: str | None = ..., key: str | None = ..., *, arrow: Literal[True]) -> pa.Table: ...
    @overload
    def metric_summary(
        self, run: str | None = ..., key: str | None = ..., arrow: Literal[False] = ...
    ) -> pd.DataFrame: ...
    def metric_summary(
        self, run: str | None = None, key: str | None = None, arrow: bool = False
    ) -> pa.Table | pd.DataFrame:
        """Per run and metric: last, min, max, argmin_step, argmax_step, n_steps, last_step (from the history).

        >>> s = db.metric_summary("hcrl_sa/teacher_curriculum", "val_loss")
        >>> s[["key", "last", "min", "max", "argmin_step", "argmax_step", "n_steps"]]
                key  last  min  max  argmin_step  argmax_step  n_steps
        0  val_loss   0.2  0.2  0.6            3            1        3
        """
        table = self.metric_summary_table()
        if run is not None:
            table = table.filter(pc.equal(table["run_id"], self.resolve_run(run)))
        elif not self.include_deleted:
            visible = self.wide(arrow=True)["run_id"]
            table = table.filter(pc.is_in(table["run_id"], value_set=visible.combine_chunks()))
        if key is not None:
            table = table.filter(pc.equal(table["key"], key))
            if table.num_rows == 0:
                self.check_metric(key)
        return self._out(table, arrow)

    @overload
    def frame(
        self, metrics: Sequence[str] = ..., where: str | None = ..., *, arrow: Literal[True], **filters: Any
    ) -> pa.Table: ...
    @overload
    def frame(
        self, metrics: Sequence[str] = ..., where: str | None = ..., arrow: Literal[False] = ..., **filters: Any
    ) -> pd.DataFrame: ...
    def frame(
        self, metrics: Sequence[str] = (), where: str | None = None, arrow: bool = False, **filters: Any
    ) -> pa.Table | pd.DataFrame:
        """Visible runs (wide rows) passing the filters, with a column per metric expression (``max(val_f1)``...)."""
        from kdgat_core.query import frame

        return self._out(frame.build(self, metrics, RunFilter(**filters), where), arrow)

    @overload
    def groups(
        self, by: Sequence[str], metric: str = ..., where: str | None = ..., *, arrow: Literal[True], **filters: Any
    ) -> pa.Table: ...
    @overload
    def groups(
        self, by: Sequence[str], metric: str = ..., where: str | None = ..., arrow: Literal[False] = ..., **filters: Any
    ) -> pd.DataFrame: ...
    def groups(
        self,
        by: Sequence[str],
        metric: str = Metric.F1.value,
        where: str | None = None,
        arrow: bool = False,
        **filters: Any,
    ) -> pa.Table | pd.DataFrame:
        """Runs grouped by params and tags: n, mean, std, median, min, max and a 95% CI of a metric expression.

        >>> g = db.groups(["model_size"], "f1", dataset="hcrl_sa", stage="evaluation")
        >>> g[["model_size", "runs", "f1_n", "f1_mean", "f1_ci_low"]].round(3)
          model_size  runs  f1_n  f1_mean  f1_ci_low
        0    teacher     4     4    0.930      0.896
        1    student     2     2    0.898      0.675
        """
        from kdgat_core.query import frame
        from kdgat_core.query.groups import group_stats

        expr = parse_metric(metric)
        table = frame.build(self, [expr], RunFilter(**filters), where)
        keys = [frame.resolve_column(k, table.column_names) for k in by]
        out = group_stats(table, keys, [expr.text], order_by=expr.text, descending=expr.direction == "desc")
        return self._out(out, arrow)

    def ab(
        self,
        by: str,
        metric: str = Metric.F1.value,
        pair_on: Sequence[str] = (),
        a: str | None = None,
        b: str | None = None,
        where: str | None = None,
        **filters: Any,
    ) -> Comparison:
        """Compare a metric expression between the two values of a tag or param (`kdgat ab`): a `stats.Comparison`.

        >>> c = db.ab("model_size", "f1", dataset="hcrl_sa", stage="evaluation")
        >>> c.sentence.split(" (")[0], round(c.p_value, 2), c.test
        ('model_size=teacher: +0.0325 f1 against model_size=student', 0.27, 'Mann-Whitney U')
        """
        from kdgat_core.query import frame
        from kdgat_core.query.stats import compare_sides

        expr = parse_metric(metric)
        table = frame.build(self, [expr], RunFilter(**filters), where)
        col = frame.resolve_column(by, table.column_names)
        keys = [frame.resolve_column(k, table.column_names) for k in pair_on]
        label = col.removeprefix(PARAM_PREFIX)
        table = table.rename_columns([label if c == col else c for c in table.column_names])
        return compare_sides(table, label, expr.text, keys, a, b, lower_is_better=expr.direction == "asc")

    def importance(self, metric: str = Metric.F1.value, where: str | None = None, **filters: Any) -> Importance:
        """Per varying param: Spearman's rho and random-forest permutation importance (`query.importance`)."""
        from kdgat_core.query import frame
        from kdgat_core.query.importance import importance

        expr = parse_metric(metric)
        return importance(frame.build(self, [expr], RunFilter(**filters), where), expr.text)

    def lineage_stats(
        self, metric: str = Metric.F1.value, dataset: str | None = None, run: str | None = None
    ) -> Comparison:
        """Paired statistics of KD students against their teachers (each edge of `lineage` is a pair)."""
        from kdgat_core.query import frame
        from kdgat_core.query.stats import paired

        expr = parse_metric(metric)
        edges = self.lineage(run=run, dataset=dataset, metric=Metric.F1.value, arrow=True)
        edges = edges.filter(pc.is_valid(edges["teacher_name"]))
        teacher = frame.metric_values(self, expr, edges["teacher_run_id"].combine_chunks()).to_pylist()
        student = frame.metric_values(self, expr, edges["student_run_id"].combine_chunks()).to_pylist()
        return paired(teacher, student, expr.text, "teachers", "KD students", lower_is_better=expr.direction == "asc")

    def _create_wide_views(self) -> None:
        where = "" if self.include_deleted else " WHERE lifecycle <> 'deleted'"
        cols = ", ".join(quote_ident(c) for c in BASE_COLUMNS)
        con = self._reader.con
        con.execute(f"CREATE OR REPLACE VIEW runs AS SELECT {cols} FROM _kdgat_wide{where}")
        con.execute(f"CREATE OR REPLACE VIEW runs_wide AS SELECT * FROM _kdgat_wide{where}")
        con.execute(
            "CREATE OR REPLACE VIEW lineage AS SELECT s.run_id AS student_run_id, s.run_name AS student_name, "
            "s.dataset, s.stage AS student_stage, s.model_size AS student_size, s.use_kd, "
            "s.teacher_run_id, t.run_name AS teacher_name, t.stage AS teacher_stage, t.model_size AS teacher_size "
            "FROM runs s LEFT JOIN runs t ON t.run_id = s.teacher_run_id WHERE coalesce(s.teacher_run_id, '') <> ''"
        )

    # -- the wide table -----------------------------------------------------------------------------------------------
    @overload
    def wide(self, arrow: Literal[True], include_deleted: bool | None = ..., refresh: bool = ...) -> pa.Table: ...
    @overload
    def wide(
        self, arrow: Literal[False] = ..., include_deleted: bool | None = ..., refresh: bool = ...
    ) -> pd.DataFrame: ...
    def wide(
        self, arrow: bool = False, include_deleted: bool | None = None, refresh: bool = True
    ) -> pa.Table | pd.DataFrame:
        """All runs x (run fields, convention tags, final standard metrics, ``metrics.*``, ``params.*``, ``tags.*``).

        Served from the read cache and brought up to date exactly (see `kdgat_core.query.wide`).

        >>> w = db.wide(arrow=True)
        >>> w.num_rows, "params.train.lr" in w.column_names
        (18, True)
        """
        if self._wide is None or refresh:
            if self._cache is not None:
                self._wide = self._cache.get()
                self.last_refresh = self._cache.stats
            else:
                import time

                t0 = time.perf_counter()
                self._wide = build_uncached(self._reader)
                self.last_refresh = RefreshStats("uncached", self._wide.num_rows, 0, time.perf_counter() - t0)
            self._views_current = False  # registered for SQL on first need (no DuckDB connection needed here)
        table = self._wide
        show_deleted = self.include_deleted if include_deleted is None else include_deleted
        if not show_deleted:
            table = visible_rows(table)
        return self._out(table, arrow)

    def _sync_views(self) -> None:
        """Point the SQL views at the wide table read last."""
        if self._wide is not None and not self._views_current:
            register_arrow(self.con, "_kdgat_wide", self._wide)
            self._create_wide_views()
            self._views_current = True

    def _wide_current(self) -> pa.Table:
        if self._wide is None:
            self.wide(arrow=True)
        return self._wide

    # -- runs ---------------------------------------------------------------------------------------------------------
    @overload
    def runs(
        self,
        dataset: str | None = ...,
        stage: str | None = ...,
        model_size: str | None = ...,
        kd: bool | None = ...,
        status: str | None = ...,
        include_deleted: bool | None = ...,
        *,
        arrow: Literal[True],
    ) -> pa.Table: ...
    @overload
    def runs(
        self,
        dataset: str | None = ...,
        stage: str | None = ...,
        model_size: str | None = ...,
        kd: bool | None = ...,
        status: str | None = ...,
        include_deleted: bool | None = ...,
        arrow: Literal[False] = ...,
    ) -> pd.DataFrame: ...
    def runs(
        self,
        dataset: str | None = None,
        stage: str | None = None,
        model_size: str | None = None,
        kd: bool | None = None,
        status: str | None = None,
        include_deleted: bool | None = None,
        arrow: bool = False,
    ) -> pa.Table | pd.DataFrame:
        """One row per run (the columns of the ``runs`` view), newest first, filtered by convention tags.

        >>> db.runs(status="failed")[["run_name", "status", "error_msg"]]
                             run_name  status                   error_msg
        0  hcrl_ch/student_curriculum  failed  CUDA out of memory (fixture)
        """
        flt = RunFilter(dataset, stage, model_size, kd, status)
        show_deleted = self.include_deleted if include_deleted is None else include_deleted
        cols = ", ".join(quote_ident(c) for c in BASE_COLUMNS)
        out = self._calc(
            f"SELECT {cols} FROM w WHERE {flt.where(show_deleted)} ORDER BY start_time DESC, run_id",
            w=self._wide_current(),
        )
        return self._out(out, arrow)

    @overload
    def runs_table(
        self, run_ids: Sequence[str] | None = ..., include_deleted: bool | None = ..., *, arrow: Literal[True]
    ) -> pa.Table: ...
    @overload
    def runs_table(
        self, run_ids: Sequence[str] | None = ..., include_deleted: bool | None = ..., arrow: Literal[False] = ...
    ) -> pd.DataFrame: ...
    def runs_table(
        self, run_ids: Sequence[str] | None = None, include_deleted: bool | None = None, arrow: bool = False
    ) -> pa.Table | pd.DataFrame:
        """Wide rows (all columns) of all runs, or of the given run ids only (read through SQLite's indexes)."""
        if run_ids is None:
            return self._out(self.wide(arrow=True, include_deleted=include_deleted), arrow)
        table = self._runs_by_id(list(run_ids)) if run_ids else self.wide(arrow=True).slice(0, 0)
        show_deleted = self.include_deleted if include_deleted is None else include_deleted
        if not show_deleted:
            table = table.filter(pc.invert(deleted_mask(table)))  # rows in the caller's order: no slice here
        return self._out(table, arrow)

    @overload
    def run_states(self, arrow: Literal[True]) -> pa.Table: ...
    @overload
    def run_states(self, arrow: Literal[False] = ...) -> pd.DataFrame: ...
    def run_states(self, arrow: bool = False) -> pa.Table | pd.DataFrame:
        """A cheap per-run fingerprint (run_id, mlflow_status, lifecycle, start_ms, end_ms): one read of `runs`.

        It does not see tag or metric changes; `wide()` does (exactly, and incrementally).
        """
        table = self._reader.fetch(
            f"SELECT {_RUN_STATE_COLUMNS} FROM {ALIAS}.runs r LEFT JOIN {ALIAS}.experiments e "
            f"ON e.experiment_id = r.experiment_id WHERE {self._visible_sql()}"
        )
        return self._out(table, arrow)

    def runs_watermark(self) -> int:
        """The highest rowid of MLflow's `runs` table (new runs get higher ones); one primary-key lookup.
        On PostgreSQL: the oldest transaction still open (rows written after it have an xmin at or above it)."""
        if not self._reader.store.has_rowid:
            return int(self._reader.fetch_native_rows(f"SELECT {_PG_WATERMARK} AS m")[0]["m"] or 0)
        row = self._reader.fetch_native_rows("SELECT max(rowid) AS m FROM runs")[0]
        return int(row["m"] or 0)

    def run_states_since(self, after_rowid: int, watch: Sequence[str] = ()) -> pa.Table:
        """`run_states` columns (plus `rowid`) for runs inserted after `after_rowid` and for the `watch`ed runs, read
        inside SQLite through the rowid and primary-key indexes: a poll reads the few rows that can have changed
        instead of converting all 100k. MLflow updates a run's row in place (status, end time), so rows past the
        watermark are the new runs, and the watched ones are those last seen running. Deleted runs are left out."""
        rowid, where = "r.rowid", f"r.rowid > {int(after_rowid)}"
        if not self._reader.store.has_rowid:
            # PostgreSQL: rows inserted or updated by transactions from the watermark on (a wrapped-around xid is
            # missed until the TUI's periodic full read); the new watermark is the snapshot's oldest open transaction
            rowid, where = _PG_WATERMARK, f"CAST(CAST(r.xmin AS text) AS bigint) >= {int(after_rowid)}"
        if watch:
            where = f"({where} OR r.run_uuid IN {in_list(list(watch))})"
        return self._reader.fetch_native(
            f"SELECT {_RUN_STATE_COLUMNS}, {rowid} AS rowid FROM runs r "
            f"LEFT JOIN experiments e ON e.experiment_id = r.experiment_id WHERE {where} AND {self._visible_sql()}",
            {"start_ms": pa.int64(), "end_ms": pa.int64(), "rowid": pa.int64()},
        )

    # -- resolving a run ----------------------------------------------------------------------------------------------
    def resolve_run(self, ref: str) -> str:
        """A full run id, a unique prefix of one, or a run name (the newest run of that name) -> the full run id.

        >>> db.resolve_run("hcrl_sa/student_curriculum_kd") == db.runs(stage="curriculum", kd=True, dataset="hcrl_sa").run_id[0]
        True
        """
        ref = (ref or "").strip()
        if not ref:
            raise KdgatError("Empty run reference; give a run id, a unique prefix of one, or a run name.")
        cols = (
            "SELECT r.run_uuid AS run_id, r.name AS run_name, r.start_time, r.lifecycle_stage AS run_stage, "
            "coalesce(e.lifecycle_stage, 'active') AS exp_stage FROM runs r "
            "LEFT JOIN experiments e ON e.experiment_id = r.experiment_id"
        )
        candidates: list[dict] = []
        low = ref.lower()
        if _HEX_ID.match(low):
            candidates = self._reader.fetch_sqlite(
                f"{cols} WHERE r.run_uuid >= {literal(low)} AND r.run_uuid < {literal(low + '~')} "
                "ORDER BY r.start_time DESC LIMIT 50"
            ).to_pylist()
            exact = [c for c in candidates if c["run_id"] == low]
            candidates = exact or candidates
        if not candidates:
            candidates = self._reader.fetch_sqlite(
                f"{cols} WHERE r.name = {literal(ref)} ORDER BY r.start_time DESC, r.run_uuid"
            ).to_pylist()
            by_name = True
        else:
            by_name = False
        if not self.include_deleted:
            live = [c for c in candidates if c["run_stage"] != "deleted" and c["exp_stage"] != "deleted"]
            if candidates and not live:
                raise KdgatError(
                    f"Run '{ref}' is deleted; restore it in MLflow, or open the DB with include_deleted=True."
                )
            candidates = live
        if not candidates:
            names = [
                r["name"]
                for r in self._reader.fetch_sqlite("SELECT DISTINCT name FROM runs WHERE name IS NOT NULL").to_pylist()
            ]
            close = difflib.get_close_matches(ref, names, n=5, cutoff=0.6)
            hint = f" Close run names: {', '.join(close)}." if close else " See `kdgat runs` for run ids and names."
            raise KdgatError(f"No run matches '{ref}' (not a run id, id prefix or run name).{hint}")
        if by_name or len(candidates) == 1:
            return candidates[0]["run_id"]  # a name means its newest run
        shown = ", ".join(f"{c['run_id'][:12]} ({c['run_name']})" for c in candidates[:5])
        more = f" and {len(candidates) - 5} more" if len(candidates) > 5 else ""
        raise KdgatError(f"Run id prefix '{ref}' is ambiguous: {shown}{more}; give more characters.")

    def _runs_by_id(self, run_ids: Sequence[str]) -> pa.Table:
        """Wide rows of a few runs, read through SQLite's indexes (no full scan), in the given order."""
        wide = pivot(read_long_for(self._reader, list(dict.fromkeys(run_ids))))
        order = {r: i for i, r in enumerate(run_ids)}
        idx = sorted(range(wide.num_rows), key=lambda i: order[wide["run_id"][i].as_py()])
        return wide.take(pa.array(idx, pa.int64()))  # typed: an empty list (no such run) is not a null array

    # -- leaderboard --------------------------------------------------------------------------------------------------
    @overload
    def leaderboard(
        self,
        metric: str = ...,
        top: int = ...,
        dataset: str | None = ...,
        stage: str | None = ...,
        model_size: str | None = ...,
        kd: bool | None = ...,
        status: str | None = ...,
        by_config: bool = ...,
        arrow: bool = ...,
        *,
        rows: Literal[True],
        where: str | None = ...,
    ) -> list[dict[str, Any]]: ...
    @overload
    def leaderboard(
        self,
        metric: str = ...,
        top: int = ...,
        dataset: str | None = ...,
        stage: str | None = ...,
        model_size: str | None = ...,
        kd: bool | None = ...,
        status: str | None = ...,
        by_config: bool = ...,
        *,
        arrow: Literal[True],
        rows: Literal[False] = ...,
        where: str | None = ...,
    ) -> pa.Table: ...
    @overload
    def leaderboard(
        self,
        metric: str = ...,
        top: int = ...,
        dataset: str | None = ...,
        stage: str | None = ...,
        model_size: str | None = ...,
        kd: bool | None = ...,
        status: str | None = ...,
        by_config: bool = ...,
        arrow: Literal[False] = ...,
        rows: Literal[False] = ...,
        where: str | None = ...,
    ) -> pd.DataFrame: ...
    def leaderboard(
        self,
        metric: str = Metric.F1.value,
        top: int = 10,
        dataset: str | None = None,
        stage: str | None = None,
        model_size: str | None = None,
        kd: bool | None = None,
        status: str | None = None,
        by_config: bool = False,
        arrow: bool = False,
        rows: bool = False,
        where: str | None = None,
    ) -> pa.Table | pd.DataFrame | list[dict[str, Any]]:
        """The best runs by a final metric (lower-is-better metrics such as val_loss sort ascending).

        With ``by_config=True`` runs that differ only in their seed form one row: mean, std and n.
        ``rows=True`` returns a list of dicts and imports neither pandas nor pyarrow (what `kdgat leaderboard` prints).

        >>> db.leaderboard("f1", top=3, dataset="hcrl_sa", stage="evaluation")[["rank", "run_name", "f1"]]
           rank                    run_name    f1
        0     1  hcrl_sa/teacher_evaluation  0.95
        1     2  hcrl_sa/teacher_evaluation  0.94
        2     3  hcrl_sa/teacher_evaluation  0.93
        >>> db.leaderboard("f1", dataset="hcrl_sa", stage="evaluation", by_config=True)[["run_name", "n", "f1_mean"]]
                                run_name  n  f1_mean
        0     hcrl_sa/teacher_evaluation  3    0.940
        1  hcrl_sa/student_evaluation_kd  1    0.915
        2     hcrl_sa/teacher_evaluation  1    0.900
        3     hcrl_sa/student_evaluation  1    0.880
        """
        if top is not None and top < 1:
            raise KdgatError("--top must be at least 1.")
        flt = RunFilter(dataset, stage, model_size, kd, status)
        expr = parse_metric(metric)
        if by_config:
            table = boards.board_by_config(self, expr.text, top, flt, where)
            return table.to_pylist() if rows else self._out(table, arrow)
        if expr.from_history or where:  # max(val_f1), val_f1@20, a --where filter: over the analysis frame
            from kdgat_core.query import frame

            table = boards.board_from(self, frame.build(self, [expr], flt, where), None, expr.text, top, flt, rows)
            return table if rows else self._out(table, arrow)
        metric = expr.text
        # Three sources, one answer (tests check they agree): the wide table already in memory, the cache's
        # leaderboard columns when the file has not changed (a parquet file DuckDB reads without touching the DB),
        # else an indexed join inside SQLite. The last two never build Arrow from Python objects: that would import
        # pandas (0.4 s), too slow for `kdgat leaderboard` as a process.
        if self._wide is not None:
            table, self.last_board_source = boards.board_from(self, self._wide, None, metric, top, flt, rows), "wide"
        else:
            board = self._cache.fresh_board(self._live_signature) if self._cache is not None else None
            if board is not None:
                table, self.last_board_source = boards.board_from(self, None, board, metric, top, flt, rows), "cache"
            else:
                table, self.last_board_source = boards.board_native(self, metric, top, flt, rows), "store"
        if (len(table) if isinstance(table, list) else table.num_rows) == 0:
            self.check_metric(metric)
        return table if rows else self._out(table, arrow)

    def _metric_column(self, metric: str, names: Iterable[str]) -> str | None:
        names = set(names)
        col = metric if metric in METRIC_COLUMNS else METRIC_PREFIX + metric
        if col not in names and parse_metric(metric).from_history and metric in names:
            return metric  # an expression's column in the analysis frame
        return col if col in names else None

    def check_metric(self, metric: str) -> None:
        """Raise a clear error naming close matches if no run has logged `metric`."""
        if self._reader.fetch_sqlite_rows(f"SELECT 1 AS x FROM latest_metrics WHERE key = {literal(metric)} LIMIT 1"):
            return
        keys = [r["key"] for r in self._reader.fetch_sqlite_rows("SELECT DISTINCT key FROM latest_metrics")]
        close = difflib.get_close_matches(metric, keys, n=5, cutoff=0.5)
        hint = (
            f" Did you mean: {', '.join(close)}?"
            if close
            else (
                f" Logged metrics include: {', '.join(sorted(keys)[:12])}."
                if keys
                else " No run has logged any metric yet."
            )
        )
        raise KdgatError(f"Unknown metric '{metric}': no run has logged it.{hint}")

    # -- comparing runs -----------------------------------------------------------------------------------------------
    @overload
    def compare(self, run_a: str, run_b: str, *more: str, arrow: Literal[True]) -> pa.Table: ...
    @overload
    def compare(self, run_a: str, run_b: str, *more: str, arrow: Literal[False] = ...) -> pd.DataFrame: ...
    def compare(self, run_a: str, run_b: str, *more: str, arrow: bool = False) -> pa.Table | pd.DataFrame:
        """Final metrics of two or more runs side by side (`kdgat_core.query.compare`): two runs give ``delta`` = b - a
        and ``better``; more give ``delta_b``, ``delta_c``... against a and ``best``.

        >>> c = db.compare("hcrl_sa/teacher_curriculum", "hcrl_sa/student_curriculum_kd")
        >>> c[c.metric.isin(["f1", "mcc"])][["metric", "a", "b", "delta", "better"]]
          metric     a     b  delta better
        2     f1  0.91  0.89  -0.02      a
        6    mcc  0.88  0.85  -0.03      a
        """
        from kdgat_core.query.compare import compare_rows

        ids = [self.resolve_run(r) for r in (run_a, run_b, *more)]
        by_id = {r["run_id"]: r for r in self._runs_by_id(ids).to_pylist()}
        return self._out(compare_rows([by_id[i] for i in ids]), arrow)

    @overload
    def config_diff(self, runs: Sequence[str], all: bool = ..., *, arrow: Literal[True]) -> pa.Table: ...
    @overload
    def config_diff(self, runs: Sequence[str], all: bool = ..., arrow: Literal[False] = ...) -> pd.DataFrame: ...
    def config_diff(self, runs: Sequence[str], all: bool = False, arrow: bool = False) -> pa.Table | pd.DataFrame:
        """The params that differ between runs (``all=True``: every param). One column per run, labelled name@id.

        >>> d = db.config_diff(["hcrl_sa/teacher_curriculum", "hcrl_sa/student_curriculum"])
        >>> d[d.key.str.startswith("gat.")].iloc[:, 0].tolist()
        ['gat.heads', 'gat.hidden', 'gat.layers']
        """
        if len(runs) < 2:
            raise KdgatError("config_diff needs at least two runs.")
        ids = [self.resolve_run(r) for r in runs]
        rows = self._runs_by_id(ids).to_pylist()
        keys = sorted({k for r in rows for k, v in r.items() if k.startswith(PARAM_PREFIX) and v is not None})
        labels = _unique_labels([f"{r['run_name']}@{r['run_id'][:8]}" for r in rows])
        out: dict[str, list] = {"key": []}
        for label in labels:
            out[label] = []
        for k in keys:
            values = [r.get(k) for r in rows]
            if not all and len(set(values)) == 1:
                continue
            out["key"].append(k[len(PARAM_PREFIX) :])
            for label, v in zip(labels, values):
                out[label].append(v)
        return self._out(pa.table({c: pa.array(v, pa.string()) for c, v in out.items()}), arrow)

    # -- sweeps and summaries -----------------------------------------------------------------------------------------
    @overload
    def sweep(
        self,
        param: str,
        metric: str = ...,
        dataset: str | None = ...,
        stage: str | None = ...,
        model_size: str | None = ...,
        kd: bool | None = ...,
        status: str | None = ...,
        *,
        arrow: Literal[True],
    ) -> pa.Table: ...
    @overload
    def sweep(
        self,
        param: str,
        metric: str = ...,
        dataset: str | None = ...,
        stage: str | None = ...,
        model_size: str | None = ...,
        kd: bool | None = ...,
        status: str | None = ...,
        arrow: Literal[False] = ...,
    ) -> pd.DataFrame: ...
    def sweep(
        self,
        param: str,
        metric: str = Metric.F1.value,
        dataset: str | None = None,
        stage: str | None = None,
        model_size: str | None = None,
        kd: bool | None = None,
        status: str | None = None,
        arrow: bool = False,
    ) -> pa.Table | pd.DataFrame:
        """Per value of a param: count, mean, std, min and max of a final metric. Dotted keys; a unique leaf works too.

        >>> db.sweep("lr", "f1", dataset="hcrl_sa", stage="evaluation", model_size="teacher")
          train.lr  count  mean   std   min   max
        0   0.0005      1  0.90   NaN  0.90  0.90
        1    0.001      3  0.94  0.01  0.93  0.95
        """
        wide = self._wide_current()
        pcol = self.param_column(param, wide.column_names)
        mcol = self._metric_column(metric, wide.column_names)
        if mcol is None:
            self.check_metric(metric)
            raise KdgatError(f"No run in view has a final '{metric}'.")
        flt = RunFilter(dataset, stage, model_size, kd, status)
        p, m = quote_ident(pcol), quote_ident(mcol)
        label = pcol[len(PARAM_PREFIX) :]
        table = self._calc(
            f"""SELECT {p} AS {quote_ident(label)}, count({m}) AS count, avg({m}) AS mean, stddev_samp({m}) AS std,
                       min({m}) AS min, max({m}) AS max
                FROM w WHERE {flt.where(self.include_deleted)} AND {p} IS NOT NULL AND {m} IS NOT NULL AND NOT isnan({m})
                GROUP BY {p} ORDER BY TRY_CAST({p} AS DOUBLE) NULLS LAST, {p}""",
            w=wide,
        )
        return self._out(table, arrow)

    def param_column(self, param: str, names: Iterable[str] | None = None) -> str:
        """The wide-table column of a param: exact dotted key, else a unique key ending in `.param`."""
        names = list(names if names is not None else self._wide_current().column_names)
        keys = [n[len(PARAM_PREFIX) :] for n in names if n.startswith(PARAM_PREFIX)]
        key = param[len(PARAM_PREFIX) :] if param.startswith(PARAM_PREFIX) else param
        if key in keys:
            return PARAM_PREFIX + key
        leaf = [k for k in keys if k.endswith("." + key)]
        if len(leaf) == 1:
            return PARAM_PREFIX + leaf[0]
        if len(leaf) > 1:
            raise KdgatError(f"Param '{param}' is ambiguous: {', '.join(sorted(leaf))}; give the dotted key.")
        close = difflib.get_close_matches(key, keys, n=5, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else " See `kdgat diff RUN_A RUN_B --all` for param keys."
        raise KdgatError(f"Unknown param '{param}': no run has logged it.{hint}")

    @overload
    def dataset_summary(self, dataset: str, metric: str = ..., *, arrow: Literal[True]) -> pa.Table: ...
    @overload
    def dataset_summary(self, dataset: str, metric: str = ..., arrow: Literal[False] = ...) -> pd.DataFrame: ...
    def dataset_summary(
        self, dataset: str, metric: str = Metric.F1.value, arrow: bool = False
    ) -> pa.Table | pd.DataFrame:
        """Runs of one dataset by stage, model size and KD: counts per status and the best run of each group.

        >>> db.dataset_summary("hcrl_ch")[["stage", "model_size", "use_kd", "runs", "complete", "failed", "best_run"]]
                 stage model_size use_kd  runs  complete  failed                     best_run
        0  autoencoder    teacher  False     1         1       0  hcrl_ch/teacher_autoencoder
        1   curriculum    teacher  False     1         1       0   hcrl_ch/teacher_curriculum
        2   curriculum    student  False     1         0       1                          NaN
        """
        wide = self._wide_current()
        mcol = self._metric_column(metric, wide.column_names)
        if mcol is None:
            self.check_metric(metric)  # a typo is a sentence, not a blank column (as in the leaderboard)
        direction = "ASC" if metric_direction(metric) == "asc" else "DESC"
        flt = RunFilter(dataset=dataset)
        best = (
            (
                f"first(run_name ORDER BY isnan({quote_ident(mcol)}), {quote_ident(mcol)} {direction}, start_time DESC) "
                f"FILTER (WHERE {quote_ident(mcol)} IS NOT NULL)"
            )
            if mcol
            else "NULL::VARCHAR"
        )
        best_v = (
            (
                f"first({quote_ident(mcol)} ORDER BY isnan({quote_ident(mcol)}), {quote_ident(mcol)} {direction}, start_time DESC) "
                f"FILTER (WHERE {quote_ident(mcol)} IS NOT NULL)"
            )
            if mcol
            else "NULL::DOUBLE"
        )
        order = " ".join(f"WHEN '{s}' THEN {i}" for i, s in enumerate(PIPELINE_ORDER))
        statuses = ", ".join(
            f"count(*) FILTER (WHERE status = '{s.value}') AS {s.value}"
            for s in (RunStatus.COMPLETE, RunStatus.FAILED, RunStatus.RUNNING)
        )
        table = self._calc(
            f"""SELECT stage, model_size, use_kd, count(*) AS runs, {statuses},
                       {best} AS best_run, {best_v} AS {quote_ident("best_" + metric)}
                FROM w WHERE {flt.where(self.include_deleted)}
                GROUP BY stage, model_size, use_kd
                ORDER BY CASE stage {order} ELSE 9 END, stage, model_size DESC, use_kd""",
            w=wide,
        )
        if table.num_rows == 0:
            known = sorted({d for d in self._wide_current()["dataset"].to_pylist() if d})
            raise KdgatError(f"No runs for dataset '{dataset}'; datasets with runs: {', '.join(known) or 'none'}.")
        return self._out(table, arrow)

    @overload
    def lineage(
        self,
        run: str | None = ...,
        dataset: str | None = ...,
        metric: str = ...,
        *,
        arrow: Literal[True],
        retries: bool = ...,
    ) -> pa.Table: ...
    @overload
    def lineage(
        self,
        run: str | None = ...,
        dataset: str | None = ...,
        metric: str = ...,
        arrow: Literal[False] = ...,
        retries: bool = ...,
    ) -> pd.DataFrame: ...
    def lineage(
        self,
        run: str | None = None,
        dataset: str | None = None,
        metric: str = Metric.F1.value,
        arrow: bool = False,
        retries: bool = False,
    ) -> pa.Table | pd.DataFrame:
        """Teacher -> student edges (from the students' ``teacher_run_id`` tag) with each student's delta to its teacher.

        Each row also says whether the student is itself a retry (``retry_of``, from `kdgat resubmit`) and both runs'
        status. With ``retries=True`` the retry edges follow (``link = 'retry'``): the teacher columns then hold the
        retried run, the student columns its retry, ``attempt`` its place in the chain (see `retries`).

        >>> db.lineage(dataset="hcrl_sa")[["teacher_name", "student_name", "teacher_f1", "student_f1", "delta_f1"]].head(2)
                         teacher_name                   student_name  teacher_f1  student_f1  delta_f1
        0  hcrl_sa/teacher_autoencoder  hcrl_sa/student_autoencoder_kd        0.81        0.79     -0.02
        1   hcrl_sa/teacher_curriculum   hcrl_sa/student_curriculum_kd        0.91        0.89     -0.02
        """
        wide = self._wide_current()
        mcol = self._metric_column(metric, wide.column_names)
        if mcol is None:
            self.check_metric(metric)
        sval, tval = (f"s.{quote_ident(mcol)}", f"t.{quote_ident(mcol)}") if mcol else ("NULL::DOUBLE", "NULL::DOUBLE")
        conds = ["coalesce(s.teacher_run_id, '') <> ''"]
        if not self.include_deleted:
            conds.append("s.lifecycle <> 'deleted'")
        if dataset:
            conds.append(f"s.dataset = {literal(dataset)}")
        rid = self.resolve_run(run) if run else None
        if rid:
            conds.append(f"(s.run_id = {literal(rid)} OR s.teacher_run_id = {literal(rid)})")
        order = " ".join(f"WHEN '{s}' THEN {i}" for i, s in enumerate(PIPELINE_ORDER))
        teacher_visible = "" if self.include_deleted else " AND t.lifecycle <> 'deleted'"
        tags = self._retry_tags()
        table = self._calc(
            f"""SELECT s.teacher_run_id, t.run_name AS teacher_name, s.run_id AS student_run_id,
                       s.run_name AS student_name, s.dataset, s.stage, {tval} AS {quote_ident("teacher_" + metric)},
                       {sval} AS {quote_ident("student_" + metric)}, {sval} - {tval} AS {quote_ident("delta_" + metric)},
                       'kd' AS link, rt.retry_of, NULL::BIGINT AS attempt, t.status AS teacher_status,
                       s.status AS student_status
                FROM w s LEFT JOIN w t ON t.run_id = s.teacher_run_id{teacher_visible}
                     LEFT JOIN rt ON rt.run_id = s.run_id
                WHERE {" AND ".join(conds)}
                ORDER BY s.dataset, CASE s.stage {order} ELSE 9 END, teacher_name, t.start_time DESC,
                         s.start_time DESC, s.run_id""",
            w=wide,
            rt=tags,
        )
        if retries:
            chains = self._retry_chains(wide, tags, mcol, metric, rid, dataset)
            as_edges = self._calc(
                f"""SELECT retry_of AS teacher_run_id, retried_name AS teacher_name, run_id AS student_run_id,
                           run_name AS student_name, dataset, stage,
                           {quote_ident("retried_" + metric)} AS {quote_ident("teacher_" + metric)},
                           {quote_ident(metric)} AS {quote_ident("student_" + metric)},
                           {quote_ident(metric)} - {quote_ident("retried_" + metric)} AS {quote_ident("delta_" + metric)},
                           'retry' AS link, retry_of, attempt, retried_status AS teacher_status,
                           status AS student_status
                    FROM c""",
                c=chains,
            )
            table = pa.concat_tables([table, as_edges.cast(table.schema)])
        if rid and table.num_rows == 0:
            also = " and no retries" if retries else ""
            raise KdgatError(f"Run '{run}' has no teacher and no students (no teacher_run_id tag links it){also}.")
        return self._out(table, arrow)

    @overload
    def retries(
        self, run: str | None = ..., dataset: str | None = ..., metric: str = ..., *, arrow: Literal[True]
    ) -> pa.Table: ...
    @overload
    def retries(
        self, run: str | None = ..., dataset: str | None = ..., metric: str = ..., arrow: Literal[False] = ...
    ) -> pd.DataFrame: ...
    def retries(
        self, run: str | None = None, dataset: str | None = None, metric: str = Metric.F1.value, arrow: bool = False
    ) -> pa.Table | pd.DataFrame:
        """Retries (`kdgat resubmit` tags the new run ``retry_of`` = the run it retries), one row per retry, chains in
        order: ``chain_root`` is the first failed run (or ``job <id>`` when that job never opened a run), ``attempt``
        1 its first retry, 2 the retry of that retry, ... With `run`, only the chain it belongs to.

        >>> db.retries().columns.tolist()[:6]  # the fixture has no retries: an empty frame with these columns
        ['chain_root', 'attempt', 'retry_of', 'retried_name', 'retried_status', 'run_id']
        """
        wide = self._wide_current()
        mcol = self._metric_column(metric, wide.column_names)
        if mcol is None:
            self.check_metric(metric)
        rid = self.resolve_run(run) if run else None
        return self._out(self._retry_chains(wide, self._retry_tags(), mcol, metric, rid, dataset), arrow)

    def _retry_tags(self) -> pa.Table:
        """run_id -> retry_of, read inside the store (MLflow's tags key index)."""
        rows = self._reader.fetch_native_rows(
            f"SELECT run_uuid AS run_id, value AS retry_of FROM tags "
            f"WHERE key = {literal(RETRY_OF_TAG)} AND coalesce(value, '') <> ''"
        )
        return pa.table(
            {
                "run_id": pa.array([r["run_id"] for r in rows], pa.string()),
                "retry_of": pa.array([r["retry_of"] for r in rows], pa.string()),
            }
        )

    def _retry_chains(
        self,
        wide: pa.Table,
        tags: pa.Table,
        mcol: str | None,
        metric: str,
        rid: str | None,
        dataset: str | None,
    ) -> pa.Table:
        cval, pval = (f"c.{quote_ident(mcol)}", f"p.{quote_ident(mcol)}") if mcol else ("NULL::DOUBLE", "NULL::DOUBLE")
        visible = "" if self.include_deleted else " AND c.lifecycle <> 'deleted'"
        parent_visible = "" if self.include_deleted else " AND p.lifecycle <> 'deleted'"
        conds = ["TRUE"]
        if dataset:
            conds.append(f"coalesce(c.dataset, p.dataset) = {literal(dataset)}")
        if rid:
            conds.append(f"ch.root IN (SELECT root FROM ch WHERE child = {literal(rid)} OR root = {literal(rid)})")
        return self._calc(
            f"""WITH RECURSIVE e AS (SELECT rt.run_id AS child, rt.retry_of AS parent
                                     FROM rt JOIN w c ON c.run_id = rt.run_id{visible}),
                ch(root, child, attempt) AS (
                    SELECT parent, child, 1 FROM e WHERE parent NOT IN (SELECT child FROM e)
                    UNION ALL
                    SELECT ch.root, e.child, ch.attempt + 1 FROM ch JOIN e ON e.parent = ch.child
                    WHERE ch.attempt < 1000)  -- a tag loop (never written by kdgat) cannot recurse for ever
                SELECT ch.root AS chain_root, ch.attempt::BIGINT AS attempt, e.parent AS retry_of,
                       p.run_name AS retried_name, p.status AS retried_status, c.run_id, c.run_name, c.status,
                       coalesce(c.dataset, p.dataset) AS dataset, coalesce(c.stage, p.stage) AS stage, c.model_size,
                       c.start_time, {pval} AS {quote_ident("retried_" + metric)}, {cval} AS {quote_ident(metric)}
                FROM ch JOIN e ON e.child = ch.child JOIN w c ON c.run_id = e.child
                     LEFT JOIN w p ON p.run_id = e.parent{parent_visible}
                WHERE {" AND ".join(conds)}
                ORDER BY coalesce(c.dataset, p.dataset), min(c.start_time) OVER (PARTITION BY ch.root), ch.root,
                         ch.attempt, c.start_time, c.run_id""",
            w=wide,
            rt=tags,
        )

    # -- one run ------------------------------------------------------------------------------------------------------
    @overload
    def history(self, run: str, metric: str, arrow: Literal[True]) -> pa.Table: ...
    @overload
    def history(self, run: str, metric: str, arrow: Literal[False] = ...) -> pd.DataFrame: ...
    def history(self, run: str, metric: str, arrow: bool = False) -> pa.Table | pd.DataFrame:
        """One run's per-step values of a metric (a step logged twice keeps its newest point). Uses MLflow's index.

        >>> db.history("hcrl_sa/teacher_curriculum", "val_loss")[["step", "value"]]
           step  value
        0     1    0.6
        1     2    0.4
        2     3    0.2
        """
        rid = self.resolve_run(run)
        store = self._reader.store
        # +key: keep SQLite on the run_uuid index (the key index alone scans every run's points)
        inner = (
            f"SELECT step, {store.exact_real('value')} AS value, {store.flag('is_nan')} AS is_nan, timestamp "
            f"FROM metrics WHERE run_uuid = {literal(rid)} AND {store.no_index('key')} = {literal(metric)}"
        )
        value = decoded_metric("value", "is_nan", text=True)
        table = self._reader.fetch(
            f"SELECT CAST(step AS BIGINT) AS step, max_by({value}, (CAST(timestamp AS BIGINT), CAST(value AS DOUBLE))) "
            f"AS value, epoch_ms(max(CAST(timestamp AS BIGINT))) AS timestamp "
            f"FROM {store.native(inner)} GROUP BY 1 ORDER BY 1"
        )
        if table.num_rows == 0:
            keys = [
                r["key"]
                for r in self._reader.fetch_sqlite(
                    f"SELECT key FROM latest_metrics WHERE run_uuid = {literal(rid)} ORDER BY key"
                ).to_pylist()
            ]
            close = difflib.get_close_matches(metric, keys, n=5, cutoff=0.5)
            hint = (
                f" Did you mean: {', '.join(close)}?"
                if close
                else (f" It has: {', '.join(keys[:15])}." if keys else " It has no metrics.")
            )
            raise KdgatError(f"Run {rid[:12]} has no metric '{metric}'.{hint}")
        return self._out(table, arrow)

    # -- SQL ----------------------------------------------------------------------------------------------------------
    @overload
    def sql(self, query: str, arrow: Literal[True], timeout_s: float | None = ...) -> pa.Table: ...
    @overload
    def sql(self, query: str, arrow: Literal[False] = ..., timeout_s: float | None = ...) -> pd.DataFrame: ...
    def sql(self, query: str, arrow: bool = False, timeout_s: float | None = None) -> pa.Table | pd.DataFrame:
        """Run one read-only SELECT against the views (runs, params, tags, metrics, metric_history, lineage, runs_wide).

        A query running longer than `timeout_s` seconds (None: no limit) is stopped with a KdgatError; Ctrl-C stops
        it too (KeyboardInterrupt, raised once DuckDB has let go).

        >>> db.sql("SELECT stage, count(*) AS n FROM runs WHERE dataset = 'hcrl_ch' GROUP BY stage ORDER BY stage")
                 stage  n
        0  autoencoder  1
        1   curriculum  2
        """
        statement = check_user_sql(query)
        self.con  # noqa: B018 - the views exist from here on
        if table_names(statement) & _WIDE_VIEWS:
            self.wide(arrow=True)
            self._sync_views()
        if "metric_summary" in table_names(statement):
            self._sync_summary_view()
        try:
            source = summarized_query(statement) if statement.lstrip()[:9].upper() == "SUMMARIZE" else None
            if source is not None:
                # DuckDB's own SUMMARIZE fails on any NaN or inf ("STDDEV_SAMP is out of range"): ours says nan
                columns = [(r["column_name"], r["column_type"]) for r in self._reader.fetch_rows(f"DESCRIBE {source}")]
                statement = summary_sql(columns, source)
            table = self._reader.fetch_stoppable(statement, timeout_s)
        except duckdb.Error as exc:
            raise KdgatError(f"SQL error: {one_line(exc)}") from None
        return self._out(table, arrow)

    # -- doctor -------------------------------------------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        """What `kdgat doctor` prints: the store (file, or server and role), MLflow's schema version and row counts."""
        counts = self._reader.fetch_sqlite(
            "SELECT (SELECT version_num FROM alembic_version LIMIT 1) AS schema_version, "
            "(SELECT count(*) FROM experiments) AS experiments, "
            "(SELECT count(*) FROM experiments WHERE lifecycle_stage = 'deleted') AS deleted_experiments, "
            "(SELECT count(*) FROM runs) AS runs, "
            "(SELECT count(*) FROM runs WHERE lifecycle_stage = 'deleted') AS deleted_runs, "
            "(SELECT count(*) FROM latest_metrics) AS final_metrics, (SELECT count(*) FROM metrics) AS metric_points, "
            "(SELECT count(*) FROM params) AS params, (SELECT count(*) FROM tags) AS tags, "
            "(SELECT max(start_time) FROM runs) AS newest_start_ms"
        ).to_pylist()[0]
        counts = {k: (v if k == "schema_version" or v is None else int(v)) for k, v in counts.items()}
        store = self._reader.store
        out: dict[str, Any] = {"backend": store.kind, "uri": store.display}
        if self.path is not None:
            journal = "wal" if _header_journal(self.path) == "wal" else "rollback journal"
            out.update(
                path=str(self.path), exists=self.path.exists(), size_bytes=self.path.stat().st_size, journal=journal
            )
        else:
            server = self._reader.fetch_native_rows(
                "SELECT current_setting('server_version') AS version, current_user AS role, "
                "current_setting('default_transaction_read_only') AS role_read_only, "
                "pg_is_in_recovery() AS standby"
            )[0]
            out.update(
                path=None,
                server_version=f"PostgreSQL {server['version']}",
                role=server["role"],
                # kdgat's own connection is always read-only (READ_ONLY attach); this is what the role itself allows
                read_only="yes (a hot standby: the server refuses every write)"
                if server["standby"]
                else "yes (role default_transaction_read_only)"
                if server["role_read_only"] == "on"
                else "kdgat's connection only (the role can write; see docs/deploy.md)",
                standby=bool(server["standby"]),
            )
        out["cache_dir"] = str(self._cache.dir) if self._cache else None
        reader = self._reader
        out["schema_state"] = reader.schema_state
        out["schema_advice"] = (
            mlflow_schema.advice(reader.schema_state, store.display, reader.schema_revision)
            if reader.schema_state != mlflow_schema.CURRENT
            else ""
        )
        return {**out, **counts}


def _header_journal(path: Path) -> str:
    """'wal' when the file's header says WAL mode (bytes 18-19 are 2), which the -wal file no longer shows: readers
    remove it when idle."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(20)
    except OSError:
        return ""
    return "wal" if len(head) == 20 and head[18] == 2 and head[19] == 2 else "rollback journal"


def _unique_labels(labels: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
        out.append(label if seen[label] == 1 else f"{label}#{seen[label]}")
    return out


def open_db(
    uri_or_path: str | os.PathLike | None = None,
    *,
    include_deleted: bool = False,
    cache: bool = True,
    cache_dir: str | os.PathLike | None = None,
    lock_retry_s: float | None = None,
    read_uri: str | None = None,
) -> TrackingDB:
    """Open an MLflow tracking store read-only: a SQLite file or a PostgreSQL database.

    `uri_or_path` is a ``sqlite:///`` URI, a path or a ``postgresql://`` URI (``postgresql+psycopg2://`` too; the
    password from the URI, ``PGPASSFILE``/``~/.pgpass`` or ``PGPASSWORD``). None resolves like the CLI: the read URI
    (``read_uri``, ``KDGAT_READ_URI``, kdgat.toml ``[tracking] read_uri``), else the tracking URI
    (``MLFLOW_TRACKING_URI``, kdgat.toml, ``sqlite:///mlflow.db``). A missing file is an error (no empty DB is created). ``cache=False`` skips the read cache
    of the wide table (every call rebuilds it); ``cache_dir`` defaults to ``config.resolve_cache_dir()``.

    >>> open_db("/nonexistent/mlflow.db")
    Traceback (most recent call last):
    ...
    kdgat_core.config.KdgatError: Tracking database /nonexistent/mlflow.db does not exist (URI from the --tracking-uri flag); check --tracking-uri, MLFLOW_TRACKING_URI or kdgat.toml.
    """
    return TrackingDB(
        resolve_db(uri_or_path, read_uri),
        include_deleted=include_deleted,
        cache=cache,
        cache_dir=cache_dir,
        lock_retry_s=lock_retry_s,
    )
