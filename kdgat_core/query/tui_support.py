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

from kdgat_core.query.connection import resolve_db
from kdgat_core.query.wide import WideCache, visible_rows


@dataclass
class CachedWide:
    table: pa.Table  # visible runs (deleted ones dropped), as `TrackingDB.wide(arrow=True)` returns them
    written_at: float  # when the cache was written (epoch seconds)
    fresh: bool  # True when the tracking file has not changed since (a database server: False, checked on refresh)
    gen: str | None = None  # the cache files' generation: `TrackingDB.last_refresh.details["gen"]` when served as is


def cached_wide(
    uri_or_path: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    include_deleted: bool = False,
) -> CachedWide | None:
    """The last wide table `TrackingDB.wide()` cached for this DB, or None when there is none; no DuckDB connection."""
    store = resolve_db(uri_or_path)
    cache = WideCache(None, store, Path(cache_dir) if cache_dir is not None else None)
    loaded = cache.load()
    if loaded is None:
        return None
    table = loaded.table
    if not include_deleted and "lifecycle" in table.column_names:
        table = visible_rows(table)
    return CachedWide(
        table=table, written_at=loaded.written_at, fresh=cache.is_current(loaded), gen=loaded.meta.get("gen")
    )
