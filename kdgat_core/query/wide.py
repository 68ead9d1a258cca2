"""The wide table (one row per run: run fields, convention tags, final metrics, every param/metric/tag) and its cache.

The wide table is what `runs`, sweeps, dataset summaries and the TUI read. Building it from scratch pivots every
param, tag and latest metric (seconds at 100k runs), so a copy is kept under the cache directory with a watermark and
brought up to date incrementally:

* nothing changed (same file size/mtime/inode/SQLite change counter, same -wal) -> the cached table as is;
* otherwise re-read only the runs that changed. MLflow rows carry no updated_at, so a run counts as changed when its
  `runs` row differs (status, end time, lifecycle, name, experiment), when params/metrics rows with a rowid above the
  watermark belong to it (params are immutable, every metric write appends to `metrics`), or when one of its tag
  rows differs: MLflow updates tag values in place (same rowid), so every tag's (rowid, hash(key, value)) is compared
  with the cached ones. Tags are the only in-place-updated table, and this keeps the cache exact.

The cache never writes the tracking DB; it lives in Arrow IPC files next to nothing but itself.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import duckdb

from kdgat_core.config import CONVENTION_TAGS, STANDARD_METRICS, Tag, resolve_cache_dir
from kdgat_core.query.connection import ALIAS, Reader, exact_real, pa, pc, register_arrow, sqlite_in_list

CACHE_FORMAT = 4
# Convention tags whose names clash with run fields; they stay available as `tags.<name>` columns.
SHADOWED_TAGS = (Tag.RUN_ID.value, Tag.START_TIME.value, Tag.END_TIME.value)
TAG_COLUMNS: tuple[str, ...] = tuple(t.value for t in CONVENTION_TAGS if t.value not in SHADOWED_TAGS)
METRIC_COLUMNS: tuple[str, ...] = tuple(m.value for m in STANDARD_METRICS)
RUN_COLUMNS: tuple[str, ...] = (
    "run_id", "run_name", "experiment_id", "experiment", "mlflow_status", "lifecycle", "start_time", "end_time", "duration_s",
)
# The columns of the `runs` view, in order: run fields, convention tags, final standard metrics.
BASE_COLUMNS: tuple[str, ...] = RUN_COLUMNS + TAG_COLUMNS + METRIC_COLUMNS
PARAM_PREFIX, METRIC_PREFIX, TAG_PREFIX = "params.", "metrics.", "tags."
# Above this share of changed runs a full rebuild is cheaper than per-run reads through SQLite's indexes.
FULL_REBUILD_SHARE = 0.2
ID_CHUNK = 2000

# Column -> DuckDB type of the `runs` view (BASE_SCHEMA is the same as Arrow, built on first use: pyarrow is lazy)
BASE_TYPES: dict[str, str] = {
    **{c: "VARCHAR" for c in RUN_COLUMNS}, "start_time": "TIMESTAMP", "end_time": "TIMESTAMP", "duration_s": "DOUBLE",
    **{t: "VARCHAR" for t in TAG_COLUMNS}, **{m: "DOUBLE" for m in METRIC_COLUMNS},
}


def base_schema() -> pa.Schema:
    arrow = {"VARCHAR": pa.string(), "DOUBLE": pa.float64(), "TIMESTAMP": pa.timestamp("us")}
    return pa.schema([(c, arrow[t]) for c, t in BASE_TYPES.items()])


def __getattr__(name: str):
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

    runs: pa.Table      # run_id, run_name, experiment_id, experiment, mlflow_status, lifecycle, start_ms, end_ms
    params: pa.Table    # run_id, key, value
    tags: pa.Table      # tag_rowid, run_id, key, value
    latest: pa.Table    # run_id, key, value, is_nan (as MLflow stores them; see metric_values)


def read_long_all(reader: Reader) -> LongRows:
    """Every run, through the scanner (full table scans, no SQLite index helps here)."""
    p = f"{ALIAS}."
    return LongRows(
        runs=reader.fetch(_RUNS_SELECT.format(p=p)),
        params=reader.fetch(f"SELECT run_uuid AS run_id, key, value FROM {p}params"),
        tags=reader.fetch(f"SELECT rowid AS tag_rowid, run_uuid AS run_id, key, value FROM {p}tags"),
        latest=reader.fetch(f"SELECT run_uuid AS run_id, key, value, is_nan FROM {p}latest_metrics"),
    )


def read_long_for(reader: Reader, run_ids: list[str]) -> LongRows:
    """Only these runs, inside SQLite through MLflow's run_uuid indexes (milliseconds per run)."""
    parts: dict[str, list[pa.Table]] = {"runs": [], "params": [], "tags": [], "latest": []}
    for i in range(0, max(len(run_ids), 1), ID_CHUNK):
        ids = sqlite_in_list(run_ids[i:i + ID_CHUNK])
        parts["runs"].append(reader.fetch_sqlite(_RUNS_SELECT.format(p="") + f" WHERE r.run_uuid IN {ids}",
                                                 {"start_ms": pa.int64(), "end_ms": pa.int64()}))
        parts["params"].append(reader.fetch_sqlite(f"SELECT run_uuid AS run_id, key, value FROM params WHERE run_uuid IN {ids}"))
        parts["tags"].append(reader.fetch_sqlite(
            f"SELECT rowid AS tag_rowid, run_uuid AS run_id, key, value FROM tags WHERE run_uuid IN {ids}",
            {"tag_rowid": pa.int64()}))
        parts["latest"].append(reader.fetch_sqlite(
            f"SELECT run_uuid AS run_id, key, {exact_real('value')} AS value, is_nan FROM latest_metrics "
            f"WHERE run_uuid IN {ids}", {"value": pa.float64(), "is_nan": pa.int64()}))
    return LongRows(**{k: _concat(v) for k, v in parts.items()})


def metric_values(value, is_nan) -> pa.ChunkedArray:
    """MLflow stores NaN as 0 with is_nan=1 and +-inf as +-1.797e308: decode both."""
    value = pc.cast(value, pa.float64())
    big = 1.7976931348623157e308
    value = pc.if_else(pc.greater_equal(value, big), float("inf"), value)
    value = pc.if_else(pc.less_equal(value, -big), float("-inf"), value)
    return pc.if_else(pc.not_equal(pc.cast(is_nan, pa.int64()), 0), float("nan"), value)


def _concat(tables: list[pa.Table]) -> pa.Table:
    tables = [t for t in tables if t.num_rows] or tables[:1]
    return pa.concat_tables([t.cast(tables[0].schema) for t in tables]) if len(tables) > 1 else tables[0]


def _strings(arr) -> pa.ChunkedArray:
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
        "duration_s": pc.divide(pc.cast(pc.subtract(end_ms, start_ms), pa.float64()), 1000.0),
    }

    def spread(table: pa.Table, value_type: pa.DataType) -> dict[str, pa.Array]:
        """key -> column aligned with `run_ids` (null where the run has no such key)."""
        if table.num_rows == 0:
            return {}
        # position of each long row's run in the output; -1 for rows of runs missing from `runs` (orphans)
        pos = pc.fill_null(pc.index_in(_strings(table["run_id"]), value_set=run_ids), -1).to_numpy(zero_copy_only=False)
        keys = pc.dictionary_encode(_strings(table["key"]).combine_chunks())
        key_idx = keys.indices.to_numpy(zero_copy_only=False)
        names = keys.dictionary.to_pylist()
        if value_type == pa.float64():
            values = metric_values(table["value"], table["is_nan"]).combine_chunks()
        else:
            values = pc.cast(table["value"], value_type).combine_chunks()
        order = np.argsort(key_idx, kind="stable")
        bounds = np.searchsorted(key_idx[order], np.arange(len(names) + 1))
        out = {}
        for j, name in enumerate(names):
            rows = order[bounds[j]:bounds[j + 1]]
            rows = rows[pos[rows] >= 0]
            take = np.full(n, -1, dtype=np.int64)
            take[pos[rows]] = rows
            out[name] = values.take(pa.array(take, mask=take < 0))
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
    """Canonical column order and types, no all-null dynamic columns, rows newest first (MLflow's default order)."""
    dynamic = [c for c in table.column_names if c not in BASE_COLUMNS and table[c].null_count < table.num_rows]
    order = (sorted(c for c in dynamic if c.startswith(METRIC_PREFIX))
             + sorted(c for c in dynamic if c.startswith(PARAM_PREFIX))
             + sorted(c for c in dynamic if c.startswith(TAG_PREFIX)))
    arrays, fields = [], []
    for f in base_schema():
        arrays.append(pc.cast(table[f.name], f.type) if f.name in table.column_names else pa.nulls(table.num_rows, f.type))
        fields.append(f)
    for c in order:
        typ = pa.float64() if c.startswith(METRIC_PREFIX) else pa.string()
        arrays.append(pc.cast(table[c], typ))
        fields.append(pa.field(c, typ))
    out = pa.table(arrays, schema=pa.schema(fields))
    if out.num_rows:
        out = out.sort_by([("start_time", "descending"), ("run_id", "ascending")])
    return out.combine_chunks()


def tag_signature(tags: pa.Table) -> pa.Table:
    """(tag_rowid, run_id, h): what an in-place tag update changes. Hashed by DuckDB, as the fresh side is.

    h covers the key too: a deleted newest tag row's rowid is reused by the next insert, possibly with another key."""
    con = duckdb.connect()
    try:
        register_arrow(con, "t", tags)
        return con.execute("SELECT CAST(tag_rowid AS BIGINT) AS tag_rowid, CAST(run_id AS VARCHAR) AS run_id, "
                           "hash(CAST(key AS VARCHAR), CAST(value AS VARCHAR)) AS h FROM t").to_arrow_table()
    finally:
        con.close()


def build_uncached(reader: Reader) -> pa.Table:
    """The wide table straight from the tracking DB (what the cache must always equal)."""
    return pivot(read_long_all(reader))


# ----------------------------------------------------------------------------------------------------------------------
# The cache
# ----------------------------------------------------------------------------------------------------------------------
def file_signature(path: Path) -> list:
    """Changes whenever SQLite commits: size, mtime, inode, the header's change counter; and the -wal file's state."""
    st = os.stat(path)
    with open(path, "rb") as fh:
        header = fh.read(100)
    sig: list = [st.st_size, st.st_mtime_ns, st.st_ino, header[24:28].hex(), header[92:96].hex()]
    wal = Path(str(path) + "-wal")
    if wal.exists():
        ws = os.stat(wal)
        sig += [ws.st_size, ws.st_mtime_ns]
    return sig


@dataclass
class RefreshStats:
    """What the last `WideCache.get()` did (benchmarks and tests read it)."""

    mode: str = ""               # "fresh" (cache as is), "incremental", "full", "uncached"
    changed_runs: int = 0
    removed_runs: int = 0
    seconds: float = 0.0
    details: dict = field(default_factory=dict)


class WideCache:
    """The wide table, kept in `<cache dir>/query/<db name>-<hash of its absolute path>/` and refreshed exactly."""

    def __init__(self, reader: Callable[[], Reader], db_path: Path, cache_dir: Path | None = None):
        self._reader = reader  # called only when rows must be read: a current cache needs no SQLite connection
        self.path = db_path
        base = Path(cache_dir) if cache_dir is not None else resolve_cache_dir()
        key = hashlib.sha1(str(db_path).encode()).hexdigest()[:16]
        self.dir = base / "query" / f"{db_path.stem}-{key}"
        self.stats = RefreshStats()

    @property
    def reader(self) -> Reader:
        return self._reader()

    # -- files --------------------------------------------------------------------------------------------------------
    def _load(self) -> tuple[pa.Table, pa.Table, dict] | None:
        try:
            wide, wmeta = _read_ipc(self.dir / "wide.arrow")
            sig, smeta = _read_ipc(self.dir / "tagsig.arrow")
        except (OSError, pa.ArrowException, ValueError, KeyError):
            return None
        if (wmeta.get("gen") != smeta.get("gen") or wmeta.get("format") != CACHE_FORMAT
                or wmeta.get("duckdb") != duckdb.__version__ or wmeta.get("db_path") != str(self.path)):
            return None
        return wide, sig, wmeta

    def _save(self, wide: pa.Table, sig: pa.Table, meta: dict) -> None:
        import pyarrow.parquet as pq

        meta = dict(meta, gen=uuid.uuid4().hex, format=CACHE_FORMAT, duckdb=duckdb.__version__,
                    db_path=str(self.path), written_at=time.time())
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            # the leaderboard's columns as parquet, which DuckDB reads without any Arrow built in Python
            board_cols = [c for c in wide.column_names if c in BASE_COLUMNS or c.startswith(METRIC_PREFIX)]
            board = self.dir / f"board-{meta['gen']}.parquet"
            tmp = board.with_name(f".{board.name}.{os.getpid()}")
            pq.write_table(wide.select(board_cols), tmp, compression="none")
            os.replace(tmp, board)
            # tag signature before wide: a reader that sees a new wide.arrow with an old tagsig gets a gen mismatch
            _write_ipc(self.dir / "tagsig.arrow", sig, meta)
            _write_ipc(self.dir / "wide.arrow", wide, meta)
            # what fresh_board checks, as JSON: the leaderboard path then never imports pyarrow
            _write_json(self.dir / "board.json", dict(meta, board=board.name, columns=board_cols))
            for old in self.dir.glob("board-*.parquet"):
                if old != board:
                    old.unlink(missing_ok=True)
        except OSError:
            pass  # a cache that cannot be written only costs time next run

    def fresh_board(self) -> tuple[Path, list[str]] | None:
        """(parquet file, its columns) of the leaderboard columns if the cache is current; reads no DB rows."""
        try:
            sig = file_signature(self.path)
            meta = json.loads((self.dir / "board.json").read_text())
        except (OSError, ValueError):
            return None
        if (not isinstance(meta, dict) or meta.get("file_sig") != sig or meta.get("format") != CACHE_FORMAT
                or meta.get("duckdb") != duckdb.__version__ or meta.get("db_path") != str(self.path)):
            return None
        board = self.dir / str(meta.get("board"))
        return (board, list(meta.get("columns") or [])) if board.is_file() else None

    # -- reading the tracking DB --------------------------------------------------------------------------------------
    def _watermarks(self) -> dict:
        row = self.reader.fetch_sqlite(
            "SELECT (SELECT max(rowid) FROM params) AS params, (SELECT max(rowid) FROM metrics) AS metrics, "
            "(SELECT max(rowid) FROM latest_metrics) AS latest, (SELECT max(rowid) FROM tags) AS tags"
        ).to_pylist()[0]
        return {k: int(v or 0) for k, v in row.items()}

    def get(self) -> pa.Table:
        t0 = time.perf_counter()
        sig = file_signature(self.path)  # before any read: a write during our reads shows up next time
        cached = self._load()
        if cached is not None and cached[2].get("file_sig") == sig:
            self.stats = RefreshStats("fresh", seconds=time.perf_counter() - t0)
            return cached[0]
        wm = self._watermarks()
        if cached is None:
            wide, tsig = self._full()
            mode, changed, removed, details = "full", wide.num_rows, 0, {}
        else:
            wide, tsig, changed, removed, details = self._incremental(*cached, wm)
            mode = details.pop("mode")
        self._save(wide, tsig, {"file_sig": sig, "watermarks": wm})
        self.stats = RefreshStats(mode, changed, removed, time.perf_counter() - t0, details)
        return wide

    def _full(self) -> tuple[pa.Table, pa.Table]:
        long = read_long_all(self.reader)
        return pivot(long), _sorted_sig(_plain_sig(tag_signature(long.tags)))

    def _incremental(self, wide: pa.Table, old_sig: pa.Table, meta: dict, wm: dict):
        import numpy as np

        clock = _Clock()
        old_wm = meta.get("watermarks") or {}
        fresh_runs = self.reader.fetch(_RUNS_SELECT.format(p=f"{ALIAS}."))
        clock.lap("read runs")
        # the one full scan of an incremental refresh: tag values are updated in place, so every row is compared
        fresh_sig = self.reader.fetch(f"SELECT rowid AS tag_rowid, hash(key, value) AS h FROM {ALIAS}.tags")
        clock.lap("read tag signature")
        since: list[pa.Table] = []
        for table, key in (("params", "params"), ("metrics", "metrics"), ("latest_metrics", "latest")):
            since.append(self.reader.fetch_sqlite(_rows_above(table, int(old_wm.get(key, 0)), "run_id")))
        clock.lap("read rows above watermarks")

        # tag rows added, removed or updated in place (sorted rowids: numpy instead of a 1.4M-row join)
        fr, fh = fresh_sig["tag_rowid"].to_numpy(), fresh_sig["h"].to_numpy()
        if len(fr) > 1 and not bool(np.all(fr[1:] > fr[:-1])):  # the scan is in rowid order; be sure
            order = np.argsort(fr, kind="stable")
            fr, fh = fr[order], fh[order]
        orow, oh = old_sig["tag_rowid"].to_numpy(), old_sig["h"].to_numpy()
        changed: set[str] = set()
        old_runs = old_sig["run_id"]
        if len(orow) and len(fr) >= len(orow) and np.array_equal(fr[:len(orow)], orow):
            # the common case (tags only appended or updated): compare position by position
            old_idx = np.nonzero(oh != fh[:len(orow)])[0]
            if len(old_idx):
                changed.update(old_runs.take(pa.array(old_idx)).to_pylist())
            new_rowids = np.concatenate([fr[old_idx], fr[len(orow):]])
        elif len(orow):
            pos = np.minimum(np.searchsorted(orow, fr), len(orow) - 1)
            same_row = orow[pos] == fr
            differs = ~same_row | (oh[pos] != fh)
            back = np.minimum(np.searchsorted(fr, orow), max(len(fr) - 1, 0))
            gone = ~(fr[back] == orow) if len(fr) else np.ones(len(orow), bool)
            old_idx = np.concatenate([pos[differs & same_row], np.nonzero(gone)[0]])
            if len(old_idx):
                changed.update(old_runs.take(pa.array(old_idx)).to_pylist())  # previous owners
            new_rowids = fr[differs]
        else:
            new_rowids = fr
        old_max = int(orow.max()) if len(orow) else 0
        inside = [int(x) for x in new_rowids if x <= old_max]
        if len(new_rowids) > len(inside):  # appended rows: one range read
            changed.update(self.reader.fetch_sqlite(_rows_above("tags", old_max, "run_uuid"))["run_uuid"].to_pylist())
        for i in range(0, len(inside), ID_CHUNK):  # rows changed in place: their current owners
            chunk = ",".join(str(x) for x in inside[i:i + ID_CHUNK])
            changed.update(self.reader.fetch_sqlite(
                f"SELECT DISTINCT run_uuid FROM tags WHERE rowid IN ({chunk})")["run_uuid"].to_pylist())
        clock.lap("compare tag signature")

        calc = duckdb.connect()
        try:
            calc.execute("SET python_enable_replacements = false")
            for name, tbl in (("fresh_runs", fresh_runs), ("cached", wide.select(list(RUN_COLUMNS))),
                              ("since", pa.concat_tables(since))):
                register_arrow(calc, name, tbl)
            removed = [r[0] for r in calc.execute(
                "SELECT run_id FROM cached WHERE run_id NOT IN (SELECT run_id FROM fresh_runs)").fetchall()]
            changed.update(r[0] for r in calc.execute(
                """SELECT f.run_id FROM fresh_runs f LEFT JOIN cached c ON c.run_id = f.run_id
                   WHERE c.run_id IS NULL OR f.run_name IS DISTINCT FROM c.run_name
                      OR f.experiment_id IS DISTINCT FROM c.experiment_id OR f.experiment IS DISTINCT FROM c.experiment
                      OR f.mlflow_status IS DISTINCT FROM c.mlflow_status OR f.lifecycle IS DISTINCT FROM c.lifecycle
                      OR epoch_ms(CAST(f.start_ms AS BIGINT)) IS DISTINCT FROM c.start_time
                      OR epoch_ms(CAST(f.end_ms AS BIGINT)) IS DISTINCT FROM c.end_time
                   UNION SELECT run_id FROM since""").fetchall())
            if changed:
                register_arrow(calc, "changed", pa.table({"run_id": pa.array(sorted(changed), pa.string())}))
                changed = {r[0] for r in calc.execute(
                    "SELECT run_id FROM changed WHERE run_id IN (SELECT run_id FROM fresh_runs)").fetchall()}
        finally:
            calc.close()
        clock.lap("compare runs")
        details = {"tag_rows_changed": int(len(new_rowids)), "timings": clock.laps}
        if not changed and not removed:
            return wide, old_sig, 0, 0, dict(details, mode="incremental")
        if len(changed) > FULL_REBUILD_SHARE * max(fresh_runs.num_rows, 1):
            new_wide, new_sig = self._full()
            return new_wide, new_sig, len(changed), len(removed), dict(details, mode="full")
        long = read_long_for(self.reader, sorted(changed))
        clock.lap("read changed runs")
        delta = pivot(long)
        drop = pa.array(sorted(changed | set(removed)), pa.string())
        keep = wide.filter(pc.invert(pc.is_in(wide["run_id"], value_set=drop)))
        merged = finish(pa.concat_tables([keep, delta], promote_options="default"))
        new_sig = _merge_sig(old_sig, drop, tag_signature(long.tags))
        clock.lap("merge")
        return merged, new_sig, len(changed), len(removed), dict(details, mode="incremental")


class _Clock:
    """Named laps, reported in RefreshStats.details['timings'] (benchmarks print them)."""

    def __init__(self):
        self.t = time.perf_counter()
        self.laps: dict[str, float] = {}

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = round(now - self.t, 4)
        self.t = now


def _rows_above(table: str, rowid: int, alias: str) -> str:
    """Distinct run ids of rows appended after `rowid`. The subquery keeps SQLite on the rowid range: a bare
    DISTINCT makes it scan the whole run_uuid index instead (0.65 s vs 1 ms on 2M metric rows)."""
    return (f"SELECT DISTINCT run_uuid AS {alias} FROM (SELECT run_uuid FROM {table} "
            f"WHERE rowid > {int(rowid)} LIMIT -1)")


def _merge_sig(old_sig: pa.Table, drop: pa.Array, new_rows: pa.Table) -> pa.Table:
    """The old signature minus the re-read runs, plus their rows as just read; without decoding 1.4M run ids."""
    import numpy as np

    runs = old_sig["run_id"].combine_chunks()
    if pa.types.is_dictionary(runs.type):
        dropped = pc.is_in(runs.dictionary, value_set=drop).to_numpy(zero_copy_only=False)
        mask = ~dropped[runs.indices.to_numpy(zero_copy_only=False)]
        keep = old_sig.filter(pa.array(mask))
    else:
        keep = old_sig.filter(pc.invert(pc.is_in(runs, value_set=drop)))
    added = _sorted_sig(_plain_sig(new_rows)) if new_rows.num_rows else None
    if added is None:
        return keep.combine_chunks()
    merged = pa.concat_tables([keep, added.cast(keep.schema) if not pa.types.is_dictionary(keep.schema.field("run_id").type)
                               else added]).unify_dictionaries().combine_chunks()
    rowids = merged["tag_rowid"].to_numpy()
    if len(rowids) > 1 and not bool(np.all(rowids[1:] > rowids[:-1])):
        merged = merged.take(pa.array(np.argsort(rowids, kind="stable")))
    return merged


def _plain(col) -> pa.ChunkedArray:
    return pc.cast(col, pa.string()) if pa.types.is_dictionary(col.type) else col


def _plain_sig(sig: pa.Table) -> pa.Table:
    return pa.table({"tag_rowid": pc.cast(sig["tag_rowid"], pa.int64()), "run_id": _plain(sig["run_id"]),
                     "h": pc.cast(sig["h"], pa.uint64())})


def _sorted_sig(sig: pa.Table) -> pa.Table:
    """Sorted by rowid, run ids dictionary-encoded (1.4M rows of 32-char ids would be most of the file)."""
    sig = sig.sort_by("tag_rowid").combine_chunks()
    return sig.set_column(1, "run_id", pc.dictionary_encode(sig["run_id"]).combine_chunks())


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
