"""Metric summaries: per run and metric key, the last value, min, max, the steps of min and max, and the step count.

What `max(val_f1)`, `argmin(val_loss)` and the `metric_summary` view read. Computed from MLflow's `metrics` table
(every logged point; a step logged twice keeps its newest point, as the `metric_history` view) and kept in the read
cache next to the wide table, brought up to date incrementally:

* the tracking file has not changed since the summary was written (same signature as the wide cache): as is;
* MLflow only appends to `metrics`, so the rows above the rowid watermark name the runs that logged something new:
  only those runs' points are read again (through MLflow's run_uuid index) and their rows replaced;
* the row at the old watermark is gone or different (``mlflow gc`` deleted rows, rowids may be reused), or more than
  a fifth of the runs changed: a full rebuild, one scan of `metrics` (about 5M points at 100k runs x 50 epochs:
  seconds, once).
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from kdgat_core.query.connection import ALIAS, Reader, pa, pc
from kdgat_core.query.sql_text import exact_real, in_list, literal

SUMMARY_COLUMNS = ("run_id", "key", "last", "min", "max", "argmin_step", "argmax_step", "n_steps", "last_step")
SUMMARY_FORMAT = 1
FULL_REBUILD_SHARE = 0.2
_ID_CHUNK = 2000
# MLflow's encoding of NaN (is_nan) and +-inf (+-max double), decoded as the views do
_DECODE = (
    "CASE WHEN CAST(is_nan AS BIGINT) <> 0 THEN 'NaN'::DOUBLE WHEN CAST(value AS DOUBLE) >= 1.7976931348623157e308 "
    "THEN 'inf'::DOUBLE WHEN CAST(value AS DOUBLE) <= -1.7976931348623157e308 THEN '-inf'::DOUBLE "
    "ELSE CAST(value AS DOUBLE) END"
)


def summary_sql(points: str) -> str:
    """DuckDB SQL: the summary rows of a relation of raw points (run_id, key, step, value, is_nan, timestamp).

    Min and max skip NaN; of several steps with the best value the earliest is its step."""
    finite = "FILTER (WHERE NOT isnan(value))"
    return f"""
        WITH p AS (
            SELECT run_id, key, CAST(step AS BIGINT) AS step,
                   max_by({_DECODE}, (CAST(timestamp AS BIGINT), CAST(value AS DOUBLE))) AS value
            FROM ({points}) GROUP BY ALL)
        SELECT run_id, key, arg_max(value, step) AS last, min(value) {finite} AS min, max(value) {finite} AS max,
               arg_min(step, (value, step)) {finite} AS argmin_step,
               arg_min(step, (-value, step)) {finite} AS argmax_step,
               count(*) AS n_steps, max(step) AS last_step
        FROM p GROUP BY run_id, key ORDER BY run_id, key"""


def read_all(reader: Reader) -> pa.Table:
    """Every run's summary, through the scanner (one scan of MLflow's `metrics`)."""
    points = f"SELECT run_uuid AS run_id, key, step, value, is_nan, timestamp FROM {ALIAS}.metrics"
    return _typed(reader.fetch(summary_sql(points)))


def read_for(reader: Reader, run_ids: list[str]) -> pa.Table:
    """Only these runs' summaries, inside SQLite through MLflow's run_uuid index."""
    parts = []
    for i in range(0, len(run_ids), _ID_CHUNK):
        inner = (
            f"SELECT run_uuid AS run_id, key, step, {exact_real('value')} AS value, is_nan, timestamp FROM metrics "
            f"WHERE run_uuid IN {in_list(run_ids[i : i + _ID_CHUNK])}"
        )
        parts.append(_typed(reader.fetch(summary_sql(f"SELECT * FROM sqlite_query('{ALIAS}', {_lit(inner)})"))))
    return pa.concat_tables(parts) if parts else empty()


def values_at_step(reader: Reader, key: str, step: int) -> pa.Table:
    """(run_id, value) of every run's point of `key` at `step`, through MLflow's (key, ...) primary-key index."""
    inner = (
        f"SELECT run_uuid AS run_id, key, step, {exact_real('value')} AS value, is_nan, timestamp FROM metrics "
        f"WHERE key = {literal(key)} AND step = {int(step)}"
    )
    return reader.fetch(
        f"SELECT run_id, max_by({_DECODE}, (CAST(timestamp AS BIGINT), CAST(value AS DOUBLE))) AS value "
        f"FROM sqlite_query('{ALIAS}', {_lit(inner)}) GROUP BY run_id"
    )


def empty() -> pa.Table:
    return pa.schema(_schema()).empty_table()


def _schema() -> list:
    i64, f64 = pa.int64(), pa.float64()
    return [
        ("run_id", pa.string()),
        ("key", pa.string()),
        ("last", f64),
        ("min", f64),
        ("max", f64),
        ("argmin_step", i64),
        ("argmax_step", i64),
        ("n_steps", i64),
        ("last_step", i64),
    ]


def _typed(table: pa.Table) -> pa.Table:
    schema = pa.schema(_schema())
    return pa.table([pc.cast(table[f.name], f.type) for f in schema], schema=schema)


def _lit(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


@dataclass
class SummaryStats:
    """What the last `SummaryCache.get()` did (tests and benchmarks read it)."""

    mode: str = ""  # fresh | incremental | full
    changed_runs: int = 0
    seconds: float = 0.0
    details: dict = field(default_factory=dict)


class SummaryCache:
    """The summary table in `<wide cache dir>/summary.arrow`, with the `metrics` rowid watermark it was read at."""

    def __init__(self, reader: Callable[[], Reader], db_path: Path | None, directory: Path | None):
        self._reader = reader
        self.path = db_path
        self.dir = directory
        self.stats = SummaryStats()
        self._table: pa.Table | None = None
        self._sig: list | None = None

    def get(self) -> pa.Table:
        from kdgat_core.query.wide import file_signature

        t0 = time.perf_counter()
        if self.path is None:  # a database server: no file signature or rowid watermark to cache against
            table = read_all(self._reader()).combine_chunks()
            self.stats = SummaryStats("full", len(pc.unique(table["run_id"])) if table.num_rows else 0)
            return table
        sig = file_signature(self.path)  # before reading: a write racing the read shows up next time
        if self._table is not None and self._sig == sig:
            self.stats = SummaryStats("fresh", seconds=time.perf_counter() - t0)
            return self._table
        cached, meta = self._load()
        if cached is not None and meta.get("file_sig") == sig:
            self._table, self._sig = cached, sig
            self.stats = SummaryStats("fresh", seconds=time.perf_counter() - t0)
            return cached
        reader = self._reader()
        mark = _watermark(reader)
        table, mode, changed = None, "full", 0
        if cached is not None and meta.get("watermark") and _row_at(reader, meta["watermark"][0]) == meta["watermark"]:
            old = int(meta["watermark"][0])
            ids = [
                r["run_id"]
                for r in reader.fetch_sqlite_rows(
                    f"SELECT DISTINCT run_uuid AS run_id FROM metrics WHERE rowid > {old} AND rowid <= {mark[0]}"
                )
            ]
            runs = len(pc.unique(cached["run_id"])) if cached.num_rows else 0
            if len(ids) <= FULL_REBUILD_SHARE * max(runs, 1) or len(ids) < 50:
                mode, changed = "incremental", len(ids)
                table = cached
                if ids:
                    keep = pc.invert(pc.is_in(cached["run_id"], value_set=pa.array(ids, pa.string())))
                    table = pa.concat_tables([cached.filter(keep), read_for(reader, ids)]).combine_chunks()
        if table is None:
            table = read_all(reader).combine_chunks()
            changed = len(pc.unique(table["run_id"])) if table.num_rows else 0
        self._save(table, {"watermark": mark, "file_sig": sig})
        self._table, self._sig = table, sig
        self.stats = SummaryStats(mode, changed, time.perf_counter() - t0)
        return table

    def _load(self) -> tuple[pa.Table | None, dict]:
        if self.dir is None:
            return None, {}
        try:
            with pa.memory_map(str(self.dir / "summary.arrow"), "r") as src:
                table = pa.ipc.open_file(src).read_all()
            meta = json.loads((table.schema.metadata or {}).get(b"kdgat", b"{}"))
        except (OSError, ValueError, pa.ArrowException):
            return None, {}
        if meta.get("format") != SUMMARY_FORMAT or meta.get("db_path") != str(self.path):
            return None, {}
        return table.replace_schema_metadata(None), meta

    def _save(self, table: pa.Table, meta: dict) -> None:
        if self.dir is None:
            return
        meta = dict(meta, format=SUMMARY_FORMAT, db_path=str(self.path), written_at=time.time())
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            target = self.dir / "summary.arrow"
            tmp = target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}")
            out = table.replace_schema_metadata({"kdgat": json.dumps(meta)})
            with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, out.schema) as writer:
                writer.write_table(out)
            os.replace(tmp, target)  # readers see the old or the new file, never half of one
        except OSError:
            pass  # a cache that cannot be written only costs time next run


def _watermark(reader: Reader) -> list:
    row = reader.fetch_sqlite_rows("SELECT max(rowid) AS m FROM metrics")[0]
    return _row_at(reader, int(row["m"] or 0))


def _row_at(reader: Reader, rowid: int) -> list:
    """The identity of the `metrics` row at `rowid` (rowid first): changes when the row was deleted or reused."""
    rows = reader.fetch_sqlite_rows(
        f"SELECT rowid AS r, run_uuid, key, step, timestamp, {exact_real('value')} AS v FROM metrics "
        f"WHERE rowid = {int(rowid)}"
    )
    if not rows:
        return [int(rowid)]
    r = rows[0]
    return [int(rowid), r["run_uuid"], r["key"], str(r["step"]), str(r["timestamp"]), r["v"]]


def summary_placeholder_sql() -> str:
    """A typed, empty relation with the summary's columns (SQL only: registering Arrow would import pandas)."""
    types = {"run_id": "VARCHAR", "key": "VARCHAR", "last": "DOUBLE", "min": "DOUBLE", "max": "DOUBLE"}
    cols = ", ".join(f"CAST(NULL AS {types.get(c, 'BIGINT')}) AS {c}" for c in SUMMARY_COLUMNS)
    return f"SELECT {cols} WHERE false"
