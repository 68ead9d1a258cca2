"""What changed in an MLflow PostgreSQL store since the wide table's cache was written: exact, without rowids.

PostgreSQL has no rowid and no change counter, and its statistics lag (`pg_stat_user_tables` moved ~10 s after a
write). What is exact:

* a row's `xmin` is the transaction that wrote it (insert, or update in place: MLflow's set_tag, status, metrics).
  The state records the oldest transaction still open when it was read (the watermark W, 64 bits): every row
  written since has an xmin in [W, xmax of the reading statement's snapshot). That range is passed as a list of
  transaction ids (`xmin = ANY(...)`, hashed: ~30 ns a row and a plan PostgreSQL runs in parallel; a cast of xmin to
  text and a comparison cost ~3x as much, and serve when the range is too long to list);
* one statement per table (runs, tags, params, latest_metrics), all at once: the runs with rows written since W
  (the touched runs) are re-read. 100k runs: one scan of each table, ~8.4M rows in all, inside PostgreSQL;
* deleted rows leave no xmin. A run gone from `runs` (`mlflow gc`) is seen by the count of `runs` (the cached runs,
  plus the touched ones that are new, minus the count now: the runs gone; then their ids are read). Tags are also
  deleted while their run stays (delete_tag): the state keeps how many tag rows each run had when the cache read it,
  and the tags statement counts, in its one snapshot, all tag rows and the touched runs' ones (MLflow's run_uuid
  index). A run with no tag written since W can only have lost tags, so if the rows now minus the touched runs'
  equal the cached counts minus theirs, none did. Otherwise a second statement counts the untouched runs' tag rows
  per bucket of run ids (their first 3 hex digits: 4096 buckets, ~25 runs each at 100k runs) and the runs of the
  buckets that moved are re-read. params and latest_metrics lose rows only with their run (MLflow has no call that
  deletes one otherwise): as on SQLite, a hand-made DELETE of such a row is not seen;
* experiments (renamed, deleted) by name and lifecycle, as on SQLite.

A cached count is the number of rows the cache read for the run (after the watermark was taken), so a write racing
the reads is seen again next time. The `metrics` table (every logged point) is not needed: the wide table holds
final metrics, and every metric write also writes latest_metrics. A watermark that went backwards means: rebuild.
"""

from __future__ import annotations

from dataclasses import dataclass

from kdgat_core.query import arrays
from kdgat_core.query.changes import Changes, DBState, _empty
from kdgat_core.query.connection import Reader, pa, pc
from kdgat_core.query.sql_text import in_list, literal

WATCHED = ("tags", "params", "latest_metrics")  # the tables whose rows the wide table shows (besides runs)
COUNTED = ("tags",)  # rows MLflow deletes while their run stays: counted per run (block_runs' `block`: the index)
STATE_VERSION = 2  # 2: tag rows per run, 64-bit watermark (1: hashes of per-run counts of 3 tables, read in full)
BUCKET_CHARS = 3  # run ids are 32 hex digits: buckets of the first 3
# Transactions listed by id when at most this many began since the watermark (else the slower cast), SLACK more than
# the head statement saw: a later statement's snapshot must not reach past them (checked; such a statement is redone)
MAX_LISTED, SLACK = 200_000, 10_000
_XID_SPACE = 1 << 32
_EXPERIMENTS = (
    "(SELECT string_agg(experiment_id || chr(31) || coalesce(name, '') || chr(31) || coalesce(lifecycle_stage, ''), "
    "chr(30) ORDER BY experiment_id) FROM experiments)"
)


def _newer_cast(wm: int) -> str:
    """Native SQL: the row was written at or after transaction `wm` (a 64-bit xid), compared modulo 2^32 as
    PostgreSQL compares xids (xid has no ordering operator; the cast to text costs ~50 ns a row)."""
    return f"(CAST(CAST(xmin AS text) AS bigint) - {int(wm) % _XID_SPACE} + {_XID_SPACE}) % {_XID_SPACE} < {_XID_SPACE // 2}"


def _newer_listed(wm: int, upto: int) -> str:
    """Native SQL: the row's xmin is one of the transactions [wm, upto) (a hashed IN list: a third of the cast's
    cost, and a plan PostgreSQL runs in parallel)."""
    return f"xmin = ANY(CAST('{{{','.join(str(x % _XID_SPACE) for x in range(int(wm), int(upto)))}}}' AS xid[]))"


def _text_array(ids: list[str]) -> str:
    return f"CAST(ARRAY[{', '.join(literal(i) for i in ids)}] AS text[])"


_XMAX = "CAST(CAST(pg_snapshot_xmax(pg_current_snapshot()) AS text) AS bigint)"


def _count_sql(table: str, newer: str, extra: list[str]) -> str:
    """One statement (one snapshot): the rows of `table` (kind 0, with the snapshot's xmax), the rows written since
    the watermark per run (kind 2), and through the run_uuid index all rows of those runs and of `extra` (kind 1)."""
    ids = "ARRAY(SELECT DISTINCT r FROM t)" + (f" || {_text_array(extra)}" if extra else "")
    return (
        f"WITH t AS MATERIALIZED (SELECT CAST(run_uuid AS text) AS r FROM {table} WHERE {newer}) "
        f"SELECT CAST(NULL AS text) AS run_id, (SELECT count(*) FROM {table}) AS n, 0 AS kind, {_XMAX} AS xmax "
        "UNION ALL SELECT r, count(*), 2, NULL FROM t GROUP BY r "
        f"UNION ALL SELECT CAST(run_uuid AS text), count(*), 1, NULL FROM {table} "
        f"WHERE run_uuid = ANY({ids}) GROUP BY run_uuid"
    )


def _touched_sql(table: str, newer: str) -> str:
    """The runs of the rows of `table` written since the watermark (kind 2, one row each: a plain filtered scan,
    which PostgreSQL runs in parallel), and the snapshot's xmax (kind 0)."""
    return (
        f"SELECT CAST(run_uuid AS text) AS run_id, CAST(1 AS bigint) AS n, 2 AS kind, CAST(NULL AS bigint) AS xmax "
        f"FROM {table} WHERE {newer} UNION ALL SELECT NULL, 0, 0, {_XMAX}"
    )


def _bucket_sql(table: str, wm: int, extra: list[str]) -> str:
    """Rows per bucket of the runs with no row written since `wm` (and not in `extra`), and those runs (n = -1)."""
    more = f" UNION SELECT unnest({_text_array(extra)})" if extra else ""
    return (
        f"WITH x AS MATERIALIZED (SELECT DISTINCT CAST(run_uuid AS text) AS r FROM {table} "
        f"WHERE {_newer_cast(wm)}{more}) "
        f"SELECT left(run_uuid, {BUCKET_CHARS}) AS b, count(*) AS n FROM {table} "
        "WHERE run_uuid NOT IN (SELECT r FROM x) GROUP BY 1 UNION ALL SELECT r, -1 FROM x"
    )


@dataclass
class Head:
    """What the first statement read: the watermark (the oldest transaction still open, 64 bits), the snapshot's
    xmax (no row it sees was written by a later transaction), the snapshot, the experiments."""

    wm: int
    xmax: int
    snapshot: str
    experiments: dict[str, str]


def read_head(reader: Reader) -> Head:
    """The watermark first: whatever is read after it and written after it is seen again next time."""
    row = reader.fetch_native_rows(
        "SELECT CAST(CAST(pg_snapshot_xmin(pg_current_snapshot()) AS text) AS bigint) AS wm, "
        f"{_XMAX} AS xmax, CAST(pg_current_snapshot() AS text) AS snapshot, {_EXPERIMENTS} AS experiments"
    )[0]
    experiments = {}
    for item in (row["experiments"] or "").split("\x1e"):
        if item:
            exp_id, rest = item.split("\x1f", 1)
            experiments[exp_id] = rest
    return Head(int(row["wm"]), int(row["xmax"]), str(row["snapshot"]), experiments)


def _runs_sql(newer: str) -> str:
    """The runs (kind 0: their count, with the snapshot's xmax) and those written since the watermark (kind 2)."""
    return (
        f"SELECT CAST(NULL AS text) AS run_id, (SELECT count(*) FROM runs) AS n, 0 AS kind, {_XMAX} AS xmax "
        f"UNION ALL SELECT CAST(run_uuid AS text), 1, 2, NULL FROM runs WHERE {newer}"
    )


def counts_of(tables: dict[str, pa.Table]) -> pa.Table:
    """(block, run_id, h = rows) per table of COUNTED and run, from the long rows a read brought into the cache."""
    import numpy as np

    parts = [_empty_counts()]
    for block, name in enumerate(COUNTED):
        ids = pc.cast(tables[name]["run_id"], pa.string()).combine_chunks()
        if len(ids) == 0:
            continue
        vc = pc.value_counts(ids)
        parts.append(
            pa.table(
                {
                    "block": arrays.array(np.full(len(vc), block, dtype=np.int64)),
                    "run_id": vc.field("values"),
                    "h": pc.cast(vc.field("counts"), pa.uint64()),
                }
            )
        )
    return pa.concat_tables(parts).combine_chunks()


def _runs_state(runs: pa.Table) -> pa.Table:
    return pa.table(
        {
            "run_id": pc.cast(runs["run_id"], pa.string()),
            "experiment_id": pc.cast(runs["experiment_id"], pa.int64()),
            "h": pa.nulls(runs.num_rows, pa.uint64()),
        }
    ).combine_chunks()


def _marks(wm: int) -> dict:
    return {"xmin": {"rowid": wm, "row": None}, "pg": {"rowid": STATE_VERSION, "row": None}}


def state_from(head: Head, runs: pa.Table, tables: dict[str, pa.Table]) -> DBState:
    """The state kept next to a cache whose rows (`runs`, and `tables` by name in COUNTED) were read after `head`."""
    return DBState(_runs_state(runs), counts_of(tables), {}, head.experiments, _marks(head.wm))


@dataclass
class PgChanges(Changes):
    """Changes, plus the counts (measured in the diff's snapshots) of runs nobody re-reads: those gone from `runs`
    whose rows are still there (orphans an interrupted gc left)."""

    kept_counts: pa.Table | None = None


@dataclass
class _Count:
    total: int  # rows now
    touched: set[str]  # runs with rows written since the watermark
    x_counts: dict[str, int]  # all rows now of the touched runs and the extra ones
    xmax: int  # the statement's snapshot: no row it saw has an xmin at or past this


def diff(reader: Reader, old: DBState) -> Changes:
    """Compare the store now with `old`: the runs to re-read and drop, and the state to store (its counts are
    completed by `after_reread` once the changed runs are read)."""
    import time

    t0 = time.perf_counter()
    head = read_head(reader)
    new = DBState(old.runs, old.block_runs, {}, head.experiments, _marks(head.wm))
    marks = old.watermarks
    if int((marks.get("pg") or {}).get("rowid") or 0) != STATE_VERSION or "xmin" not in marks:
        return Changes(new, rebuild="the cached state is not this version's PostgreSQL one")
    old_wm = int(marks["xmin"]["rowid"])
    if head.wm < old_wm:
        return Changes(new, rebuild="the transaction watermark went backwards (another server?)")
    details: dict = {}
    # runs, tags, params, latest_metrics: one statement each, at once
    runs, *watched = _read_counts(reader, ["runs", *WATCHED], head, old_wm, [])
    details["read counts s"] = round(time.perf_counter() - t0, 4)
    changed = set(runs.touched)
    removed: set[str] = set()
    known = pc.sum(pc.is_in(arrays.strings(sorted(changed)), value_set=old.runs["run_id"])).as_py() or 0
    if old.runs.num_rows + len(changed) - known != runs.total:  # runs gone (mlflow gc): which ones
        old_ids = set(old.runs["run_id"].to_pylist())
        now_ids = {r["run_id"] for r in reader.fetch_native_rows("SELECT CAST(run_uuid AS text) AS run_id FROM runs")}
        removed = old_ids - now_ids
        changed |= now_ids - old_ids  # added since the count: read them too
    extra = sorted(removed)
    if extra:  # the counted tables again, with the removed runs' rows counted in the same snapshot
        again = dict(zip(COUNTED, _read_counts(reader, list(COUNTED), head, old_wm, extra)))
        watched = [again.get(name, res) for name, res in zip(WATCHED, watched)]
    kept = [_empty_counts()]
    suspect = []
    for name, res in zip(WATCHED, watched):
        changed |= res.touched
        if name not in COUNTED:
            continue
        block = COUNTED.index(name)
        mine = _block(old.block_runs, block)
        in_x = pc.is_in(mine["run_id"], value_set=arrays.strings(sorted(res.touched | set(extra))))
        old_total = int(pc.sum(mine["h"]).as_py() or 0)
        old_x = int(pc.sum(mine.filter(in_x)["h"]).as_py() or 0)
        if res.total - sum(res.x_counts.values()) != old_total - old_x:
            suspect.append(name)
        gone = {r: res.x_counts[r] for r in extra if res.x_counts.get(r)}
        if gone:  # orphans of a removed run: counted now, as nobody re-reads them
            kept.append(_counts_table(block, gone))
    if suspect:  # rows deleted from runs not touched: which buckets of run ids lost them
        details["tables with deletions"] = suspect
        changed |= _bucket_diff(reader, old, suspect, old_wm, extra)
    exp_changed = {
        e for e in set(old.experiments) | set(head.experiments) if old.experiments.get(e) != head.experiments.get(e)
    }
    if exp_changed:
        ids = arrays.strings(sorted(exp_changed))
        in_exp = pc.is_in(pc.cast(old.runs["experiment_id"], pa.string()), value_set=ids)
        changed.update(old.runs["run_id"].filter(in_exp).to_pylist())
    details["runs touched"] = len(changed)
    details["compare s"] = round(time.perf_counter() - t0 - details["read counts s"], 4)
    return PgChanges(new, changed - removed, removed, "", details, pa.concat_tables(kept))


def _block(counts: pa.Table, block: int) -> pa.Table:
    return counts.filter(arrays.array(arrays.values(counts["block"]) == block))


def _read_counts(reader: Reader, tables: list[str], head: Head, old_wm: int, extra: list[str]) -> list[_Count]:
    """Per table at once: the touched runs (`runs` also counted; COUNTED tables with their counts, _count_sql).
    Rows written since `old_wm` are found by listing the transactions up to `head`'s xmax + SLACK; a statement whose
    snapshot reached past them (over SLACK transactions began meanwhile) is read again with the cast."""
    upto = head.xmax + SLACK
    listed = upto - old_wm <= MAX_LISTED

    def sql(table: str, newer: str) -> str:
        if table == "runs":
            return _runs_sql(newer)
        return _count_sql(table, newer, extra) if table in COUNTED else _touched_sql(table, newer)

    newer = _newer_listed(old_wm, upto) if listed else _newer_cast(old_wm)
    results = reader.fetch_many([f"SELECT * FROM {reader.store.native(sql(t, newer))}" for t in tables])
    out = []
    for name, table in zip(tables, results):
        res = _count_result(table)
        if listed and res.xmax > upto:
            res = _count_result(reader.fetch_native(sql(name, _newer_cast(old_wm))))
        out.append(res)
    return out


def _count_result(table: pa.Table) -> _Count:
    kind, run, n, xmax = (table[c].to_pylist() for c in ("kind", "run_id", "n", "xmax"))
    return _Count(
        total=sum(int(c) for k, c in zip(kind, n) if k == 0),
        touched={r for k, r in zip(kind, run) if k == 2},
        x_counts={r: int(c) for k, r, c in zip(kind, run, n) if k == 1},
        xmax=max(int(x) for k, x in zip(kind, xmax) if k == 0),
    )


def _bucket_diff(reader: Reader, old: DBState, tables: list[str], wm: int, extra: list[str]) -> set[str]:
    """Runs to re-read for `tables`: those touched now, and every run of a bucket whose untouched rows moved."""
    import numpy as np

    queries = [f"SELECT * FROM {reader.store.native(_bucket_sql(t, wm, extra))}" for t in tables]
    changed: set[str] = set()
    moved: set[str] = set()
    for name, table in zip(tables, reader.fetch_many(queries)):
        rows = list(zip(table["b"].to_pylist(), table["n"].to_pylist()))
        touched = {b for b, n in rows if int(n) < 0}
        changed |= touched
        seen = {b: int(n) for b, n in rows if int(n) >= 0}
        mine = _block(old.block_runs, COUNTED.index(name))
        mine = mine.filter(pc.invert(pc.is_in(mine["run_id"], value_set=arrays.strings(sorted(touched)))))
        buckets = pc.utf8_slice_codeunits(mine["run_id"], 0, BUCKET_CHARS)
        expected: dict[str, int] = {}
        if mine.num_rows:
            enc = pc.dictionary_encode(buckets).combine_chunks()
            sums = np.bincount(arrays.values(enc.indices), weights=arrays.values(mine["h"]).astype(np.float64))
            expected = {b: int(s) for b, s in zip(enc.dictionary.to_pylist(), sums)}
        moved |= {b for b in set(expected) | set(seen) if expected.get(b, 0) != seen.get(b, 0)}
        if moved:
            changed.update(
                mine.filter(pc.is_in(buckets, value_set=arrays.strings(sorted(moved))))["run_id"].to_pylist()
            )
    if moved:  # runs of those buckets the cache did not know (none should exist): read them too
        keys = in_list(sorted(moved))
        union = " UNION ".join(
            f"SELECT CAST(run_uuid AS text) AS run_id FROM {t} WHERE left(run_uuid, {BUCKET_CHARS}) IN {keys}"
            for t in tables
        )
        changed.update(r["run_id"] for r in reader.fetch_native_rows(union))
    return changed


def after_reread(changes: Changes, long_runs: pa.Table | None, tables: dict[str, pa.Table]) -> DBState:
    """The state to store once the changed runs were read again (`long_runs`, and their rows in `tables` by name in
    COUNTED): their counts are what was read; removed runs' are dropped, or what the diff measured for orphans."""
    state = changes.state
    dropped = arrays.strings(sorted(changes.changed | changes.removed))
    counts = state.block_runs.filter(pc.invert(pc.is_in(state.block_runs["run_id"], value_set=dropped)))
    runs = state.runs.filter(pc.invert(pc.is_in(state.runs["run_id"], value_set=dropped)))
    parts, run_parts = [counts], [runs]
    if long_runs is not None:
        parts.append(counts_of(tables))
        run_parts.append(_runs_state(long_runs))
    if isinstance(changes, PgChanges) and changes.kept_counts is not None:
        parts.append(changes.kept_counts)
    return DBState(
        pa.concat_tables(run_parts).combine_chunks(),
        pa.concat_tables(parts).combine_chunks(),
        {},
        state.experiments,
        state.watermarks,
    )


def _counts_table(block: int, counts: dict[str, int]) -> pa.Table:
    import numpy as np

    return pa.table(
        {
            "block": arrays.array(np.full(len(counts), block, dtype=np.int64)),
            "run_id": arrays.strings(list(counts)),
            "h": arrays.array(np.array(list(counts.values()), dtype=np.uint64)),
        }
    )


def _empty_counts() -> pa.Table:
    return _empty(block=pa.int64(), run_id=pa.string(), h=pa.uint64())
