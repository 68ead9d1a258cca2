"""The wide table (one row per run: run fields, convention tags, final metrics, every param/metric/tag) and its cache.

The wide table is what `runs`, sweeps, dataset summaries and the TUI read. Building it from scratch pivots every
param, tag and latest metric (seconds at 100k runs), so a copy is kept under the cache directory with a watermark and
brought up to date incrementally:

* nothing changed (same file size/mtime/inode/SQLite change counter, same -wal) -> the cached table as is;
* otherwise re-read only the runs that changed (`kdgat_core.query.changes` finds them exactly, although MLflow
  updates runs, experiments and tags in place) and merge them into the cached table.

The cache never writes the tracking DB; it lives in Arrow IPC files next to nothing but itself.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from kdgat_core.config import (
    BOOL_TAGS,
    CONVENTION_TAGS,
    FALSE_SPELLINGS,
    METRIC_PREFIX,
    PARAM_PREFIX,
    STANDARD_METRICS,
    TAG_PREFIX,
    TRUE_SPELLINGS,
    Tag,
    bool_tag,
    resolve_cache_dir,
)
from kdgat_core.query import arrays, changes_pg
from kdgat_core.query.changes import TAG_ROW_HASH, Changes, DBState, block_owners_from_tags, diff, read_state
from kdgat_core.query.connection import ALIAS, Reader, pa, pc
from kdgat_core.query.sql_text import MLFLOW_MAX_DOUBLE, exact_real, in_list  # noqa: F401
from kdgat_core.query.stores import SqliteStore, Store

CACHE_FORMAT = 7  # 7: boolean tags spelled as bool_tag spells them
# The board file's order (the filters of `kdgat leaderboard`, most selective first) and its row groups' size
BOARD_SORT = (Tag.DATASET.value, Tag.STAGE.value, Tag.MODEL_SIZE.value, Tag.USE_KD.value, Tag.STATUS.value)
BOARD_ROW_GROUP = 4096
# Convention tags whose names clash with run fields; they stay available as `tags.<name>` columns.
SHADOWED_TAGS = (Tag.RUN_ID.value, Tag.START_TIME.value, Tag.END_TIME.value)
TAG_COLUMNS: tuple[str, ...] = tuple(t.value for t in CONVENTION_TAGS if t.value not in SHADOWED_TAGS)
METRIC_COLUMNS: tuple[str, ...] = tuple(m.value for m in STANDARD_METRICS)
RUN_COLUMNS: tuple[str, ...] = (
    "run_id",
    "run_name",
    "experiment_id",
    "experiment",
    "mlflow_status",
    "lifecycle",
    "start_time",
    "end_time",
    "duration_s",
)
# The columns of the `runs` view, in order: run fields, convention tags, final standard metrics.
BASE_COLUMNS: tuple[str, ...] = RUN_COLUMNS + TAG_COLUMNS + METRIC_COLUMNS
# Above this share of changed runs a full rebuild is cheaper than per-run reads through SQLite's indexes.
FULL_REBUILD_SHARE = 0.2
ID_CHUNK = 2000
MAX_CHUNKS = 16  # chunks per column a merged wide table may have before it is copied into one

# Column -> DuckDB type of the `runs` view (BASE_SCHEMA is the same as Arrow, built on first use: pyarrow is lazy)
BASE_TYPES: dict[str, str] = {
    **{c: "VARCHAR" for c in RUN_COLUMNS},
    "start_time": "TIMESTAMP",
    "end_time": "TIMESTAMP",
    "duration_s": "DOUBLE",
    **{t: "VARCHAR" for t in TAG_COLUMNS},
    **{m: "DOUBLE" for m in METRIC_COLUMNS},
}


def base_schema() -> pa.Schema:
    arrow = {"VARCHAR": pa.string(), "DOUBLE": pa.float64(), "TIMESTAMP": pa.timestamp("us")}
    return pa.schema([(c, arrow[t]) for c, t in BASE_TYPES.items()])


def __getattr__(name: str) -> pa.Schema:
    if name == "BASE_SCHEMA":  # kept importable by name
        return base_schema()
    raise AttributeError(name)


# SQL run both by DuckDB over the scanner (full reads) and inside SQLite (reads of a few runs by id).
_RUNS_SELECT = (
    "SELECT r.run_uuid AS run_id, r.name AS run_name, CAST(r.experiment_id AS TEXT) AS experiment_id, "
    "e.name AS experiment, r.status AS mlflow_status, "
    "CASE WHEN r.lifecycle_stage = 'deleted' OR e.lifecycle_stage = 'deleted' THEN 'deleted' "
    "ELSE coalesce(r.lifecycle_stage, 'active') END AS lifecycle, r.start_time AS start_ms, r.end_time AS end_ms "
    "FROM {p}runs r LEFT JOIN {p}experiments e ON e.experiment_id = r.experiment_id"
)


@dataclass
class LongRows:
    """The four inputs of the pivot, in long form."""

    runs: pa.Table  # run_id, run_name, experiment_id, experiment, mlflow_status, lifecycle, start_ms, end_ms
    params: pa.Table  # run_id, key, value
    tags: pa.Table  # tag_rowid, run_id, key, value
    latest: pa.Table  # run_id, key, value, is_nan (as MLflow stores them; see metric_values)


def _lit(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _in(values: tuple[str, ...]) -> str:
    return "(" + ", ".join(_lit(v) for v in values) + ")"


# A boolean tag's value as bool_tag spells it ('True'/'False'), whatever the writer wrote ('true', '1'): the same SQL
# in SQLite and DuckDB, applied where tags are read (not in Arrow: a Python scalar there imports pandas)
TAG_VALUE = (
    f"CASE WHEN key IN {_in(BOOL_TAGS)} AND lower(value) IN {_in(TRUE_SPELLINGS)} THEN {_lit(bool_tag(True))} "
    f"WHEN key IN {_in(BOOL_TAGS)} AND lower(value) IN {_in(FALSE_SPELLINGS)} THEN {_lit(bool_tag(False))} "
    "ELSE value END"
)


def read_long_all(reader: Reader) -> LongRows:
    """Every run, through the scanner (full table scans, no SQLite index helps here)."""
    p = f"{ALIAS}."
    # tag rowids and row hashes only serve SQLite's change detection
    rowid = "rowid" if reader.store.has_rowid else "0::BIGINT"
    row_hash = TAG_ROW_HASH if reader.store.has_rowid else "0::UBIGINT"
    return LongRows(
        runs=reader.fetch(_RUNS_SELECT.format(p=p)),
        params=reader.fetch(f"SELECT run_uuid AS run_id, key, value FROM {p}params"),
        tags=reader.fetch(
            f"SELECT tag_rowid, run_id, key, {TAG_VALUE} AS value, h FROM ("
            f"SELECT tag_rowid, run_id, key, value, {row_hash} AS h FROM "
            f"(SELECT {rowid} AS tag_rowid, run_uuid AS run_id, key, value FROM {p}tags))"
        ),
        latest=reader.fetch(f"SELECT run_uuid AS run_id, key, value, is_nan FROM {p}latest_metrics"),
    )


def read_long_for(reader: Reader, run_ids: list[str]) -> LongRows:
    """Only these runs, inside the store through MLflow's run_uuid indexes (milliseconds per run)."""
    parts: dict[str, list[pa.Table]] = {"runs": [], "params": [], "tags": [], "latest": []}
    store = reader.store
    for i in range(0, max(len(run_ids), 1), ID_CHUNK):
        ids = in_list(run_ids[i : i + ID_CHUNK])
        parts["runs"].append(
            reader.fetch_sqlite(
                _RUNS_SELECT.format(p="") + f" WHERE r.run_uuid IN {ids}",
                {"start_ms": pa.int64(), "end_ms": pa.int64()},
            )
        )
        parts["params"].append(
            reader.fetch_sqlite(f"SELECT run_uuid AS run_id, key, value FROM params WHERE run_uuid IN {ids}")
        )
        parts["tags"].append(
            reader.fetch_sqlite(
                f"SELECT {store.row_number('tags')} AS tag_rowid, run_uuid AS run_id, key, {TAG_VALUE} AS value "
                "FROM tags "
                f"WHERE run_uuid IN {ids}",
                {"tag_rowid": pa.int64()},
            )
        )
        parts["latest"].append(
            reader.fetch_sqlite(
                f"SELECT run_uuid AS run_id, key, {store.exact_real('value')} AS value, {store.flag('is_nan')} AS is_nan "
                "FROM latest_metrics "
                f"WHERE run_uuid IN {ids}",
                {"value": pa.float64(), "is_nan": pa.int64()},
            )
        )
    return LongRows(**{k: _concat(v) for k, v in parts.items()})


def metric_values(value: pa.ChunkedArray, is_nan: pa.ChunkedArray) -> pa.ChunkedArray:
    """MLflow stores NaN as 0 with is_nan=1 and +-inf as +-DBL_MAX: decode both (the SQL twin: sql_text.decoded_metric)."""
    import numpy as np

    value = pc.cast(value, pa.float64()).combine_chunks()
    is_nan = pc.cast(is_nan, pa.int64()).combine_chunks()
    v = arrays.values(value).copy()
    v[v >= MLFLOW_MAX_DOUBLE] = np.inf
    v[v <= -MLFLOW_MAX_DOUBLE] = -np.inf
    nan = arrays.valid(is_nan) & (arrays.values(is_nan) != 0)
    v[nan] = np.nan
    return pa.chunked_array([arrays.array(v, mask_valid=arrays.valid(value) | nan)])


def _concat(tables: list[pa.Table]) -> pa.Table:
    tables = [t for t in tables if t.num_rows] or tables[:1]
    return pa.concat_tables([t.cast(tables[0].schema) for t in tables]) if len(tables) > 1 else tables[0]


def _strings(arr: pa.ChunkedArray) -> pa.ChunkedArray:
    return pc.cast(arr, pa.string())


def pivot(long: LongRows) -> pa.Table:
    """Long rows -> one row per run with the canonical columns. The cached and the uncached path both end here."""
    import numpy as np

    runs = long.runs
    n = runs.num_rows
    run_ids = _strings(runs["run_id"]).combine_chunks()
    start_ms = pc.cast(runs["start_ms"], pa.int64())
    end_ms = pc.cast(runs["end_ms"], pa.int64())
    cols: dict[str, pa.Array | pa.ChunkedArray] = {
        "run_id": run_ids,
        "run_name": _strings(runs["run_name"]),
        "experiment_id": _strings(runs["experiment_id"]),
        "experiment": _strings(runs["experiment"]),
        "mlflow_status": _strings(runs["mlflow_status"]),
        "lifecycle": _strings(runs["lifecycle"]),
        "start_time": pc.cast(pc.cast(start_ms, pa.timestamp("ms")), pa.timestamp("us")),
        "end_time": pc.cast(pc.cast(end_ms, pa.timestamp("ms")), pa.timestamp("us")),
        "duration_s": arrays.array(
            (arrays.values(end_ms).astype(np.float64) - arrays.values(start_ms)) / 1000.0,
            mask_valid=arrays.valid(end_ms) & arrays.valid(start_ms),
        ),
    }

    def spread(table: pa.Table, value_type: pa.DataType) -> dict[str, pa.Array]:
        """key -> column aligned with `run_ids` (null where the run has no such key)."""
        if table.num_rows == 0:
            return {}
        # position of each long row's run in the output; -1 for rows of runs missing from `runs` (orphans)
        found = pc.index_in(_strings(table["run_id"]), value_set=run_ids).combine_chunks()
        pos = np.where(arrays.valid(found), arrays.values(found).astype(np.int64), -1)
        keys = pc.dictionary_encode(_strings(table["key"]).combine_chunks())
        key_idx = arrays.values(keys.indices)
        names = keys.dictionary.to_pylist()
        if value_type == pa.float64():
            values = metric_values(table["value"], table["is_nan"]).combine_chunks()
        else:
            values = pc.cast(table["value"], value_type).combine_chunks()
        # few keys: sorted as 16-bit, where numpy's stable sort is a radix sort (0.12 s vs 0.7 s for 6.2M params)
        order = np.argsort(key_idx.astype(np.int16) if len(names) < 2**15 else key_idx, kind="stable")
        bounds = np.searchsorted(key_idx[order], np.arange(len(names) + 1))
        out = {}
        for j, name in enumerate(names):
            rows = order[bounds[j] : bounds[j + 1]]
            rows = rows[pos[rows] >= 0]
            take = np.full(n, -1, dtype=np.int64)
            take[pos[rows]] = rows
            out[name] = values.take(arrays.array(np.maximum(take, 0), mask_valid=take >= 0))
        return out

    tags = spread(long.tags, pa.string())
    metrics = spread(long.latest, pa.float64())
    params = spread(long.params, pa.string())
    null_str, null_f = pa.nulls(n, pa.string()), pa.nulls(n, pa.float64())
    for t in TAG_COLUMNS:
        cols[t] = tags.pop(t, null_str)
    for m in METRIC_COLUMNS:
        cols[m] = metrics.pop(m, null_f)
    for k in sorted(metrics):
        cols[METRIC_PREFIX + k] = metrics[k]
    for k in sorted(params):
        cols[PARAM_PREFIX + k] = params[k]
    for k in sorted(tags):
        cols[TAG_PREFIX + k] = tags[k]
    return finish(pa.table(cols))


def finish(table: pa.Table) -> pa.Table:
    """Canonical column order and types, no all-null dynamic columns, rows newest first (MLflow's default order),
    deleted runs after the others (hiding them is then a slice, not a copy of 100k rows)."""
    columns, fields = [], []
    for f in base_schema():
        columns.append(
            pc.cast(table[f.name], f.type) if f.name in table.column_names else pa.nulls(table.num_rows, f.type)
        )
        fields.append(f)
    for c in dynamic_columns(table):
        typ = pa.float64() if c.startswith(METRIC_PREFIX) else pa.string()
        columns.append(pc.cast(table[c], typ))
        fields.append(pa.field(c, typ))
    out = pa.table(columns, schema=pa.schema(fields))
    if out.num_rows:
        out = out.take(pc.sort_indices(_order_keys(out), sort_keys=ROW_ORDER))
    return out.combine_chunks()


ROW_ORDER = [("deleted", "ascending"), ("start_time", "descending"), ("run_id", "ascending")]


def dynamic_columns(table: pa.Table) -> list[str]:
    """The non-base columns some run has a value in, in canonical order: metrics, params, tags, each sorted."""
    dynamic = [c for c in table.column_names if c not in BASE_COLUMNS and table[c].null_count < table.num_rows]
    return (
        sorted(c for c in dynamic if c.startswith(METRIC_PREFIX))
        + sorted(c for c in dynamic if c.startswith(PARAM_PREFIX))
        + sorted(c for c in dynamic if c.startswith(TAG_PREFIX))
    )


def deleted_mask(table: pa.Table) -> pa.ChunkedArray:
    """True for deleted runs (no Python scalar: pyarrow would import pandas for one)."""
    return pc.is_in(table["lifecycle"], value_set=arrays.strings(["deleted"]))


def visible_rows(table: pa.Table) -> pa.Table:
    """The runs that are not deleted: a zero-copy slice, since `finish` and `merge` put deleted runs last."""
    if table.num_rows == 0:
        return table
    return table.slice(0, table.num_rows - (pc.sum(deleted_mask(table)).as_py() or 0))


def _order_keys(table: pa.Table) -> pa.Table:
    return pa.table({"deleted": deleted_mask(table), "start_time": table["start_time"], "run_id": table["run_id"]})


def build_uncached(reader: Reader) -> pa.Table:
    """The wide table straight from the tracking DB (what the cache must always equal)."""
    return pivot(read_long_all(reader))


def merge(wide: pa.Table, delta: pa.Table, drop: set[str]) -> pa.Table:
    """`wide` without the runs in `drop`, plus `delta` (re-read runs), equal to what `finish` would make of the union;
    without re-sorting or re-casting 100k rows when the re-read runs are the newest (the usual case: new runs)."""
    import numpy as np

    keep = wide
    if drop:
        gone = pc.is_in(wide["run_id"], value_set=arrays.strings(sorted(drop)))
        if pc.any(gone).as_py():  # new runs are not in the table yet: no copy of 100k rows for them
            keep = wide.filter(pc.invert(gone))
    if delta.num_rows:
        both = pa.concat_tables([delta, keep], promote_options="default")  # a column one side lacks: nulls there
        order = pc.sort_indices(_order_keys(both), sort_keys=ROW_ORDER)
        order = arrays.values(order)
        if not np.array_equal(order, np.arange(len(order))):
            both = both.take(arrays.array(order.astype(np.int64)))
        keep = both
    # the canonical column order; dynamic columns nobody has any more go, as in `finish`
    out = keep.select(list(BASE_COLUMNS) + dynamic_columns(keep))
    # new runs add a chunk in front: copying 100k rows into one (0.1-0.7 s at 100k runs, most of it first touches of
    # the memory-mapped cache file) waits until many refreshes have added theirs
    if out.num_columns and out.column(0).num_chunks > MAX_CHUNKS:
        out = out.combine_chunks()
    return out


# ----------------------------------------------------------------------------------------------------------------------
# The cache
# ----------------------------------------------------------------------------------------------------------------------
def file_signature(path: Path) -> list:
    """Changes whenever SQLite commits: size, mtime, inode, the header's change counter; and the -wal file's state."""
    return SqliteStore(uri="", source="", file=Path(path)).signature()


@dataclass
class RefreshStats:
    """What the last `WideCache.get()` did (benchmarks and tests read it)."""

    mode: str = ""  # "fresh" (cache as is), "incremental", "full", "uncached"
    changed_runs: int = 0
    removed_runs: int = 0
    seconds: float = 0.0
    details: dict = field(default_factory=dict)


@dataclass
class CachedTable:
    """The cached wide table and what was known when it was written."""

    table: pa.Table
    state: DBState
    meta: dict

    @property
    def written_at(self) -> float:
        return float(self.meta.get("written_at") or 0.0)


_STATE_FILES = ("runs_state.arrow", "block_runs.arrow")
# Cache writes in flight, per cache directory: the caller has its table while the files are written (0.2 s at 100k
# runs). Anything in this process that reads the files first waits; the interpreter waits for them at exit.
_WRITES: dict[Path, threading.Thread] = {}
_WRITES_LOCK = threading.Lock()


def _wait_for_write(directory: Path) -> None:
    with _WRITES_LOCK:
        pending = _WRITES.get(directory)
    if pending is not None:
        pending.join()


class WideCache:
    """The wide table, kept in `<cache dir>/query/<db name>-<hash of its absolute path>/` and refreshed exactly."""

    def __init__(self, reader: Callable[[], Reader] | None, store: Store | Path, cache_dir: Path | None = None):
        self._reader = reader  # called only when rows must be read: a current cache needs no SQLite connection
        if not isinstance(store, Store):
            store = SqliteStore(uri="", source="", file=Path(store))
        self.store = store
        name, identity = store.cache_key
        self.path = identity  # what the metadata records as the DB it was read from
        base = Path(cache_dir) if cache_dir is not None else resolve_cache_dir()
        key = hashlib.sha1(identity.encode()).hexdigest()[:16]
        self.dir = base / "query" / f"{name}-{key}"
        self.stats = RefreshStats()

    @property
    def reader(self) -> Reader:
        if self._reader is None:
            raise RuntimeError("this WideCache only reads its files")
        return self._reader()

    # -- files --------------------------------------------------------------------------------------------------------
    def load(self) -> CachedTable | None:
        """The cached table as last written (current or not), or None when there is no usable cache."""
        _wait_for_write(self.dir)
        try:
            wide, meta = _read_ipc(self.dir / "wide.arrow")
            runs, rmeta = _read_ipc(self.dir / _STATE_FILES[0])
            owners, ometa = _read_ipc(self.dir / _STATE_FILES[1])
            if not (meta.get("gen") == rmeta.get("gen") == ometa.get("gen")):
                return None
            if (
                meta.get("format") != CACHE_FORMAT
                or meta.get("duckdb") != duckdb.__version__
                or meta.get("db_path") != str(self.path)
            ):
                return None
            state = DBState.from_parts(runs, owners, meta["state"])
        except (OSError, pa.ArrowException, ValueError, KeyError, TypeError):
            return None
        return CachedTable(wide, state, meta)

    def flush(self) -> None:
        """Wait until a cache write started by `get` is on disk."""
        _wait_for_write(self.dir)

    def is_current(self, cached: CachedTable) -> bool:
        """True when the tracking file has not been written since `cached` was (a database server: unknown here)."""
        sig = self.store.signature()
        return sig is not None and cached.meta.get("file_sig") == sig

    def _save_in_background(self, wide: pa.Table, state: DBState, file_sig: list | None) -> None:
        _wait_for_write(self.dir)  # one writer per directory at a time
        thread = threading.Thread(target=self._save, args=(wide, state, file_sig), name="kdgat-cache-write")
        with _WRITES_LOCK:
            _WRITES[self.dir] = thread
        thread.start()

    def _save(self, wide: pa.Table, state: DBState, file_sig: list | None) -> None:
        import pyarrow.parquet as pq

        meta = {
            "gen": uuid.uuid4().hex,
            "format": CACHE_FORMAT,
            "duckdb": duckdb.__version__,
            "db_path": str(self.path),
            "written_at": time.time(),
            "file_sig": file_sig,
        }
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            # the leaderboard's columns as parquet, which DuckDB reads without any Arrow built in Python; sorted by
            # the columns leaderboards filter on, in row groups with min/max statistics of those columns only, so a
            # filtered leaderboard reads the few row groups it needs (100k runs: 1-2 of 25). Plain encoding, no
            # other statistics: a third of the write time, and read as fast.
            board_cols = [c for c in wide.column_names if c in BASE_COLUMNS or c.startswith(METRIC_PREFIX)]
            keys = [c for c in BOARD_SORT if c in board_cols]
            board = self.dir / f"board-{meta['gen']}.parquet"
            tmp = board.with_name(f".{board.name}.{os.getpid()}")
            pq.write_table(
                wide.select(board_cols).sort_by([(c, "ascending") for c in keys]),
                tmp,
                compression="none",
                use_dictionary=False,
                write_statistics=keys,
                row_group_size=BOARD_ROW_GROUP,
            )
            os.replace(tmp, board)
            # state files before wide: a reader that sees a new wide.arrow with old state files gets a gen mismatch
            _write_ipc(self.dir / _STATE_FILES[0], state.runs, meta)
            _write_ipc(self.dir / _STATE_FILES[1], state.block_runs, meta)
            _write_ipc(self.dir / "wide.arrow", wide, dict(meta, state=state.meta()))
            # what fresh_board checks, as JSON: the leaderboard path then never imports pyarrow
            _write_json(self.dir / "board.json", dict(meta, board=board.name, columns=board_cols))
            for old in self.dir.glob("board-*.parquet"):
                if old != board:
                    old.unlink(missing_ok=True)
            for old_name in ("tagsig.arrow",):  # format 4's file
                (self.dir / old_name).unlink(missing_ok=True)
        except OSError:
            pass  # a cache that cannot be written only costs time next run

    def fresh_board(self, ask: Callable[[], list | None] | None = None) -> tuple[Path, list[str]] | None:
        """(parquet file, its columns) of the leaderboard columns if the cache is current; reads no DB rows. A file
        is checked by its signature; a database server only when `ask` is given: it asks the store for its live
        signature (one round trip: the snapshot), and is called only when a board exists."""
        _wait_for_write(self.dir)
        try:
            meta = json.loads((self.dir / "board.json").read_text())
            sig = self.store.signature()
        except (OSError, ValueError):
            return None
        if (
            not isinstance(meta, dict)
            or meta.get("format") != CACHE_FORMAT
            or meta.get("duckdb") != duckdb.__version__
            or meta.get("db_path") != str(self.path)
        ):
            return None
        board = self.dir / str(meta.get("board"))
        if not board.is_file():
            return None
        if sig is None:
            if ask is None:
                return None
            sig = ask()
        return (board, list(meta.get("columns") or [])) if meta.get("file_sig") == sig else None

    # -- reading the tracking DB --------------------------------------------------------------------------------------
    def get(self) -> pa.Table:
        t0 = time.perf_counter()
        clock = _Clock()
        sig = self._signature()  # before any read: a write during our reads shows up next time
        clock.lap("signature")
        cached = self.load()
        if cached is not None and cached.meta.get("file_sig") == sig:
            # the generation tells a caller holding an earlier copy of these files (kdgat-tui) that nothing changed
            self.stats = RefreshStats(
                "fresh", seconds=time.perf_counter() - t0, details={"gen": cached.meta.get("gen")}
            )
            return cached.table
        clock.lap("load cache")
        changes = self._diff(cached.state) if cached is not None else None
        clock.lap("find changes")
        details: dict = dict(changes.details) if changes else {}
        if (
            changes is None
            or changes.rebuild
            or (len(changes.changed) > FULL_REBUILD_SHARE * max(changes.state.runs.num_rows, 1))
        ):
            if changes is not None:
                details["rebuild"] = changes.rebuild or f"{len(changes.changed)} runs changed"
            wide, state = self._full()
            clock.lap("full read")
            mode, changed, removed = "full", wide.num_rows, 0
        else:
            assert cached is not None  # changes come from comparing with a cached state
            wide, state = cached.table, changes.state
            if changes.changed or changes.removed:
                long = read_long_for(self.reader, sorted(changes.changed)) if changes.changed else None
                clock.lap("read changed runs")
                if long is not None:
                    wide = merge(wide, pivot(long), changes.changed | changes.removed)
                else:
                    wide = merge(wide, wide.slice(0, 0), changes.removed)
                clock.lap("merge")
                if self.store.kind != "sqlite":
                    state = changes_pg.after_reread(changes, long.runs if long else None, _counted(long))
            mode, changed, removed = "incremental", len(changes.changed), len(changes.removed)
        self._save_in_background(wide, state, sig)
        details["timings"] = clock.laps
        self.stats = RefreshStats(mode, changed, removed, time.perf_counter() - t0, details)
        return wide

    def _signature(self) -> list | None:
        sig = self.store.signature()
        if sig is not None:
            return sig
        reader = self.reader
        return reader.retry(lambda: self.store.live_signature(reader.con))

    def _diff(self, state: DBState) -> Changes:
        if self.store.kind == "sqlite":
            return diff(self.reader, state)
        return changes_pg.diff(self.reader, state)

    def _full(self) -> tuple[pa.Table, DBState]:
        if self.store.kind != "sqlite":
            head = changes_pg.read_head(self.reader)  # first, as below
            long = read_long_all(self.reader)
            return pivot(long), changes_pg.state_from(head, long.runs, _counted(long))
        state, _ = read_state(self.reader)  # first: a write racing the long reads is then seen next time
        long = read_long_all(self.reader)
        state.block_runs = block_owners_from_tags(long.tags)
        return pivot(long), state


def _counted(long: LongRows | None) -> dict[str, pa.Table]:
    """The long rows changes_pg counts per run, by table name."""
    if long is None:
        return {}
    return {"tags": long.tags, "params": long.params, "latest_metrics": long.latest}


class _Clock:
    """Named laps, reported in RefreshStats.details['timings'] (benchmarks print them)."""

    def __init__(self) -> None:
        self.t = time.perf_counter()
        self.laps: dict[str, float] = {}

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = round(now - self.t, 4)
        self.t = now


def _read_ipc(path: Path) -> tuple[pa.Table, dict]:
    with pa.memory_map(str(path), "r") as src:
        reader = pa.ipc.open_file(src)
        table = reader.read_all()
    meta = json.loads((table.schema.metadata or {}).get(b"kdgat", b"{}"))
    return table.replace_schema_metadata(None), meta


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def _write_ipc(path: Path, table: pa.Table, meta: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}")
    table = table.replace_schema_metadata({"kdgat": json.dumps(meta)})
    with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    os.replace(tmp, path)  # atomic: readers see the old or the new file, never half of one
