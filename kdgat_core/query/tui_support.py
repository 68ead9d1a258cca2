"""What kdgat-tui needs from the query layer beyond `TrackingDB`: the cached wide table without opening DuckDB.

Opening a `TrackingDB` costs about a second (loading the sqlite scanner, creating the views), which would use up
most of the TUI's 1.5 s budget for a painted Runs screen. The wide table's read cache is an Arrow IPC file, so the
TUI paints from it at once (marked as a cached copy) and brings it up to date through `TrackingDB.wide()` in a worker.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from kdgat_core.query.connection import resolve_db
from kdgat_core.query.wide import WideCache


@dataclass
class CachedWide:
    table: pa.Table        # visible runs (deleted ones dropped), as `TrackingDB.wide(arrow=True)` returns them
    written_at: float      # when the cache was written (epoch seconds)
    fresh: bool            # True when the tracking file has not changed since


def cached_wide(uri_or_path: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None,
                include_deleted: bool = False) -> CachedWide | None:
    """The last wide table `TrackingDB.wide()` cached for this DB, or None when there is none; no DuckDB connection."""
    path = resolve_db(uri_or_path).path
    cache = WideCache(None, path, Path(cache_dir) if cache_dir is not None else None)
    loaded = cache.load()
    if loaded is None:
        return None
    table = loaded.table
    if not include_deleted and "lifecycle" in table.column_names:
        table = table.filter(pc.not_equal(table["lifecycle"], "deleted"))
    return CachedWide(table=table, written_at=loaded.written_at, fresh=cache.is_current(loaded))



def run_states_after(db, after_rowid: int, watch: list[str]) -> pa.Table:
    """`TrackingDB.run_states` columns (plus `rowid`) for runs inserted after `after_rowid` and for the `watch`ed
    runs, read inside SQLite through the rowid and primary-key indexes: a refresh reads the few rows that can have
    changed instead of converting all 100k. MLflow updates a run's row in place (status, end time), so rows past the
    watermark are the new runs, and the watched ones are those last seen running. Deleted runs are left out."""
    from kdgat_core.query.connection import sqlite_in_list

    where = f"r.rowid > {int(after_rowid)}"
    if watch:
        where = f"({where} OR r.run_uuid IN {sqlite_in_list(watch)})"
    return db._reader.fetch_sqlite(
        "SELECT r.run_uuid AS run_id, r.status AS mlflow_status, r.lifecycle_stage AS lifecycle, "
        "r.start_time AS start_ms, r.end_time AS end_ms, r.rowid AS rowid FROM runs r "
        f"LEFT JOIN experiments e ON e.experiment_id = r.experiment_id WHERE {where} AND {db._visible_sql()}",
        {"start_ms": pa.int64(), "end_ms": pa.int64(), "rowid": pa.int64()})


def runs_rowid_watermark(db) -> int:
    """The highest rowid of MLflow's `runs` table (new runs get higher ones)."""
    row = db._reader.fetch_sqlite("SELECT max(rowid) AS m FROM runs").to_pylist()[0]
    return int(row["m"] or 0)
