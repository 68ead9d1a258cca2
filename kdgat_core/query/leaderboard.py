"""The leaderboard's three sources (tests check they agree): the wide table in memory, the read cache's parquet copy
of its leaderboard columns, else an indexed join inside the store. The last two never build Arrow from Python objects:
that would import pandas (0.4 s), too slow for `kdgat leaderboard` as a process.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kdgat_core.config import Tag, metric_direction
from kdgat_core.query.connection import pa, pc, sqlite_in_list, sqlite_literal
from kdgat_core.query.expressions import parse_metric
from kdgat_core.query.filters import RunFilter, _lit, _quote, bool_tag_sql, tag_equals

LEAD_MARGIN = 20  # runs ranked beyond the board's size whose `runs` rows a server is asked for (deleted ones drop out)
# The TrackingDB these functions serve (not imported: db imports this module; the layer contract forbids the cycle)
TrackingDB = Any


def board_from(
    db: TrackingDB,
    wide: pa.Table | None,
    board: tuple[Path, list[str]] | None,
    metric: str,
    top: int | None,
    flt: RunFilter,
    rows: bool = False,
) -> pa.Table | list[dict]:
    """Over the wide table (in memory) or the cache's parquet copy of its leaderboard columns."""
    if wide is not None:
        names, source = wide.column_names, "w"
    else:
        assert board is not None
        names, source = board[1], f"read_parquet({_lit(str(board[0]))})"
    col = db._metric_column(metric, names)
    if col is None:
        return [] if rows else empty_board(db, metric)
    direction = "ASC" if parse_metric(metric).direction == "asc" else "DESC"
    limit = f"LIMIT {int(top)}" if top else ""
    sql = (
        f"SELECT row_number() OVER () AS rank, * FROM (SELECT run_id, run_name, dataset, stage, model_size, "
        f"use_kd, status, {_quote(col)} AS {_quote(metric)}, start_time FROM {source} "
        f"WHERE {flt.where(db.include_deleted)} AND {_quote(col)} IS NOT NULL "
        f"ORDER BY isnan({_quote(col)}), {_quote(col)} {direction}, start_time DESC, run_id {limit})"
    )
    if wide is not None:
        table = db._calc(sql, w=wide)
        return table.to_pylist() if rows else table
    return db._cache_sql(sql, rows)  # kdgat's own connection: the one that may have asked the store if it is current


def empty_board(db: TrackingDB, metric: str) -> pa.Table:
    return db._calc(
        f"SELECT 0::BIGINT AS rank, ''::VARCHAR AS run_id, ''::VARCHAR AS run_name, ''::VARCHAR AS dataset, "
        f"''::VARCHAR AS stage, ''::VARCHAR AS model_size, ''::VARCHAR AS use_kd, ''::VARCHAR AS status, "
        f"0::DOUBLE AS {_quote(metric)}, NULL::TIMESTAMP AS start_time WHERE false"
    )  # no Arrow from Python


def board_native(
    db: TrackingDB, metric: str, top: int | None, flt: RunFilter, rows: bool = False
) -> pa.Table | list[dict]:
    """An indexed join inside the store: scan the most selective input once, look the rest up by primary key."""
    store = db._reader.store
    join = store.ordered_join
    pairs = flt.tag_pairs()
    direction = "ASC" if metric_direction(metric) == "asc" else "DESC"
    visible = (
        ""
        if db.include_deleted
        else (" AND r.lifecycle_stage <> 'deleted' AND coalesce(e.lifecycle_stage, 'active') <> 'deleted'")
    )
    is_nan = store.flag("m.is_nan")
    pick = (
        f"SELECT m.run_uuid AS run_id, {store.exact_real('m.value')} AS value, {is_nan} AS is_nan, r.name, "
        "r.start_time "
    )
    driver = "f0" if pairs else "m"  # the table SQLite scans; split by rowid into two halves run on two cores
    if pairs:
        (k0, v0), rest = pairs[0], pairs[1:]
        # unary + keeps SQLite from using the (key, run_uuid) index here: one sequential scan beats 100k lookups
        sql = pick + "FROM tags f0 "
        for i, (k, v) in enumerate(rest, 1):
            sql += (
                f"{join} tags f{i} ON f{i}.key = {sqlite_literal(k)} AND f{i}.run_uuid = f0.run_uuid "
                f"AND {tag_equals(f'f{i}.value', k, v)} "
            )
        sql += (
            f"{join} latest_metrics m ON m.key = {sqlite_literal(metric)} AND m.run_uuid = f0.run_uuid "
            f"{join} runs r ON r.run_uuid = f0.run_uuid LEFT JOIN experiments e ON e.experiment_id = r.experiment_id "
            f"WHERE {store.no_index('f0.key')} = {sqlite_literal(k0)} AND {tag_equals('f0.value', k0, v0)}{visible}"
        )
    else:
        sql = (
            pick + f"FROM latest_metrics m {join} runs r ON r.run_uuid = m.run_uuid "
            "LEFT JOIN experiments e ON e.experiment_id = r.experiment_id "
            f"WHERE {store.no_index('m.key')} = {sqlite_literal(metric)}{visible}"
        )
    order = f" ORDER BY {is_nan}, m.value {direction}, r.start_time DESC, m.run_uuid" + (
        f" LIMIT {int(top)}" if top else ""
    )
    if store.native_function == "postgres_query":
        found = [_best_joined_here(db, metric, pairs, direction, top, visible)]
        return _with_tags(db, found, direction, top, metric, rows)
    halves = [""]
    if store.has_rowid:
        top_rowid = int(
            db._reader.fetch_native_rows(f"SELECT max(rowid) AS m FROM {'tags' if pairs else 'latest_metrics'}")[0]["m"]
            or 0
        )
        halves = [f" AND {driver}.rowid <= {top_rowid // 2}", f" AND {driver}.rowid > {top_rowid // 2}"]
    found = db._reader.fetch_many([f"SELECT * FROM {store.native(sql + half + order)}" for half in halves], rows=True)
    return _with_tags(db, found, direction, top, metric, rows)


def _best_joined_here(
    db: TrackingDB, metric: str, pairs: list[tuple[str, str]], direction: str, top: int | None, visible: str
) -> list[dict]:
    """A server's best runs, from one short statement inside it: the runs every tag filter keeps (intersected, each
    read through MLflow's (key, run_uuid) key) joined to their metric rows by that key and ranked by (is_nan, value);
    the leading ones are kept, with their `runs` rows (by key: name, start time for the tie-break, lifecycle).
    Deleted runs thinning the leaders below `top` (or no `top`): every input read and joined by DuckDB. One join of
    all four tables inside PostgreSQL probed the runs one by one (0.3-0.5 s at 100k runs, as slow as MLflow's own)."""
    store = db._reader.store
    # the runs every tag filter keeps, intersected inside PostgreSQL
    kept = " INTERSECT ".join(
        f"SELECT run_uuid FROM tags WHERE key = {sqlite_literal(k)} AND {tag_equals('value', k, v)}" for k, v in pairs
    )
    ranked = f"rank() OVER (ORDER BY {store.flag('m.is_nan')}, m.value {direction})"
    # every run ranked within the first `lead` by (is_nan, value), ties included, is strictly ahead of every other:
    # unless deleted runs thin them out below `top`, the board is among them whatever their start times
    size = int(top) if top else 0
    lead = size + LEAD_MARGIN if size else None
    if lead is not None:
        # inside PostgreSQL, one statement: the filtered runs' metric rows by MLflow's (key, run_uuid) key, ranked
        join = "JOIN f ON f.run_uuid = m.run_uuid " if pairs else ""
        leading = db._reader.fetch_native_rows(
            (f"WITH f AS MATERIALIZED ({kept}) " if pairs else "")
            + "SELECT x.run_id, x.value, x.is_nan, r.name, r.start_time, "
            f"(r.run_uuid IS NOT NULL{visible}) AS shown FROM (SELECT m.run_uuid AS run_id, m.value, "
            f"{store.flag('m.is_nan')} AS is_nan, {ranked} AS rk FROM latest_metrics m {join}"
            f"WHERE m.key = {sqlite_literal(metric)}) x LEFT JOIN runs r ON r.run_uuid = x.run_id "
            f"LEFT JOIN experiments e ON e.experiment_id = r.experiment_id WHERE x.rk <= {lead}"
        )
        found = [{k: v for k, v in b.items() if k != "shown"} for b in leading if b["shown"]]
        if len(found) >= size or len(leading) < lead:
            return found
    # every input read through the scanner and joined by DuckDB
    inputs = {"f0": kept} if pairs else {}
    inputs["m"] = (
        f"SELECT run_uuid, value, {store.flag('is_nan')} AS is_nan FROM latest_metrics "
        f"WHERE key = {sqlite_literal(metric)}"
    )
    runs = (
        "SELECT r.run_uuid, r.name, r.start_time FROM runs r LEFT JOIN experiments e "
        f"ON e.experiment_id = r.experiment_id WHERE true{visible}"
    )
    where = "m.run_uuid IN (SELECT run_uuid FROM f0)" if pairs else "true"
    with_inputs = "WITH " + ", ".join(f"{name} AS (SELECT * FROM {store.native(q)})" for name, q in inputs.items())
    return db._reader.fetch_rows(
        f"{with_inputs}, r AS (SELECT * FROM {store.native(runs)}) "
        "SELECT m.run_uuid AS run_id, m.value, m.is_nan, r.name, r.start_time FROM m JOIN r USING (run_uuid) "
        f"WHERE {where} ORDER BY m.is_nan, m.value {direction}, coalesce(r.start_time, 0) DESC, m.run_uuid"
        + (f" LIMIT {int(top)}" if top else "")
    )


def _with_tags(
    db: TrackingDB, found: list[list[dict]], direction: str, top: int | None, metric: str, rows: bool
) -> pa.Table | list[dict]:
    """The board from the best runs of each part: merged in order, with their convention tags read by run id."""
    store = db._reader.store
    sign = 1.0 if direction == "ASC" else -1.0
    best = sorted(
        (b for part in found for b in part),
        key=lambda b: (int(b["is_nan"]), sign * float(b["value"]), -int(b["start_time"] or 0), b["run_id"]),
    )
    if top:
        best = best[: int(top)]
    if not best:
        return [] if rows else empty_board(db, metric)
    values = ", ".join(
        f"({i}, {_lit(b['run_id'])}, {_lit(b['value'])}, {_lit(b['is_nan'])}, {_lit(b['name'])}, "
        f"{_lit(b['start_time'])})"
        for i, b in enumerate(best, 1)
    )
    ids = sqlite_in_list([b["run_id"] for b in best])
    keys = sqlite_in_list(
        [Tag.DATASET.value, Tag.STAGE.value, Tag.MODEL_SIZE.value, Tag.USE_KD.value, Tag.STATUS.value]
    )
    tag = lambda k: f"max(t.value) FILTER (WHERE t.key = '{k}')"  # noqa: E731
    value = (
        "CASE WHEN b.is_nan <> '0' THEN 'NaN'::DOUBLE WHEN CAST(b.v AS DOUBLE) >= 1.7976931348623157e308 "
        "THEN 'inf'::DOUBLE WHEN CAST(b.v AS DOUBLE) <= -1.7976931348623157e308 THEN '-inf'::DOUBLE "
        "ELSE CAST(b.v AS DOUBLE) END"
    )
    tags_sql = f"SELECT run_uuid, key, value FROM tags WHERE run_uuid IN {ids} AND key IN {keys}"
    fetch = db._reader.fetch_rows if rows else db._reader.fetch
    return fetch(
        f"""WITH b(rank, run_id, v, is_nan, run_name, start_ms) AS (VALUES {values}),
                 t AS (SELECT * FROM {store.native(tags_sql)})
            SELECT CAST(b.rank AS BIGINT) AS rank, b.run_id, b.run_name, {tag(Tag.DATASET)} AS dataset,
                   {tag(Tag.STAGE)} AS stage, {tag(Tag.MODEL_SIZE)} AS model_size, {bool_tag_sql(tag(Tag.USE_KD))} AS use_kd,
                   {tag(Tag.STATUS)} AS status, {value} AS {_quote(metric)},
                   epoch_ms(CAST(b.start_ms AS BIGINT)) AS start_time
            FROM b LEFT JOIN t ON t.run_uuid = b.run_id
            GROUP BY b.rank, b.run_id, b.run_name, b.v, b.is_nan, b.start_ms ORDER BY b.rank"""
    )


def board_by_config(db: TrackingDB, metric: str, top: int | None, flt: RunFilter, where: str | None = None) -> pa.Table:
    """Runs that differ only in seed, one row each: the statistics of `kdgat_core.query.groups` (ranked by mean)."""
    from kdgat_core.query import frame
    from kdgat_core.query.groups import CONFIG_TAGS, config_keys, group_stats

    expr = parse_metric(metric)
    table = frame.build(db, [expr], flt, where)
    m = expr.text
    stats = group_stats(table, config_keys(table.column_names), [m], m, expr.direction == "desc")
    stats = stats.filter(pc.greater(stats[m + "_n"], 0))
    if top:
        stats = stats.slice(0, int(top))
    cols = {
        "run_name": stats["run_name"],
        **{k: stats[k] if k in stats.column_names else pa.nulls(stats.num_rows, pa.string()) for k in CONFIG_TAGS},
        "n": stats[m + "_n"],
        **{f"{m}_{s}": stats[f"{m}_{s}"] for s in ("mean", "std", "min", "max", "median", "ci_low", "ci_high")},
        "seeds": stats["seeds"],
        "newest_run_id": pc.list_element(stats["run_ids"], 0),
    }
    return pa.table({"rank": pa.array(range(1, stats.num_rows + 1), pa.int64()), **cols})
