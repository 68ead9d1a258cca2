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

from kdgat_core.query.connection import ResolvedDB, resolve_db
from kdgat_core.query.wide import WideCache, file_signature


@dataclass
class CachedWide:
    table: pa.Table        # visible runs (deleted ones dropped), as `TrackingDB.wide(arrow=True)` returns them
    written_at: float      # when the cache was written (epoch seconds)
    fresh: bool            # True when the tracking file has not changed since


class _PathOnly:
    """WideCache reads nothing but the file's path until it must refresh; it never refreshes here."""

    def __init__(self, db: ResolvedDB) -> None:
        self.db = db


def cached_wide(uri_or_path: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None,
                include_deleted: bool = False) -> CachedWide | None:
    """The last wide table `TrackingDB.wide()` cached for this DB, or None when there is none; no DuckDB connection."""
    cache = WideCache(_PathOnly(resolve_db(uri_or_path)), Path(cache_dir) if cache_dir is not None else None)
    loaded = cache._load()
    if loaded is None:
        return None
    table, _sig, meta = loaded
    if not include_deleted and "lifecycle" in table.column_names:
        table = table.filter(pc.not_equal(table["lifecycle"], "deleted"))
    fresh = meta.get("file_sig") == file_signature(cache.reader.db.path)
    return CachedWide(table=table, written_at=float(meta.get("written_at") or 0.0), fresh=fresh)
