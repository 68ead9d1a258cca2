"""The analysis frame: the visible runs (wide rows) with one column per metric expression, filtered.

Groups, paired tests, importance, plots and the expression leaderboard all start here, so a metric expression or a
filter means the same thing in every one of them. A column is named by the expression's canonical text
(``f1``, ``max(val_f1)``, ``val_loss@10``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from kdgat_core.config import KdgatError
from kdgat_core.query import arrays
from kdgat_core.query.connection import pa, pc
from kdgat_core.query.expressions import MetricExpr, parse_metric
from kdgat_core.query.wide import BASE_COLUMNS, METRIC_COLUMNS, METRIC_PREFIX, PARAM_PREFIX, TAG_PREFIX


class _Filter(Protocol):
    def where(self, include_deleted: bool = False) -> str: ...


# `db` is a TrackingDB: typed Any, since db.py imports this module (no import cycle, not even for type checking)
def metric_values(db: Any, expr: MetricExpr, run_ids: pa.Array) -> pa.Array:
    """The values of `expr` for `run_ids` (an Arrow string array), aligned with it; null where a run has none."""
    if expr.agg == "final":
        wide = db.wide(arrow=True, include_deleted=True, refresh=False)
        col = final_column(expr.key, wide.column_names)
        if col is None:
            return pa.nulls(len(run_ids), pa.float64())
        source_ids, source_values = wide["run_id"], wide[col]
    elif expr.agg == "at":
        from kdgat_core.query.summaries import values_at_step

        found = values_at_step(db._reader, expr.key, expr.step or 0)
        source_ids, source_values = found["run_id"], pc.cast(found["value"], pa.float64())
    else:
        summary = db.metric_summary_table()
        rows = summary.filter(pc.equal(summary["key"], expr.key))
        column = {"last": "last", "min": "min", "max": "max", "argmin": "argmin_step", "argmax": "argmax_step"}
        source_ids, source_values = rows["run_id"], pc.cast(rows[column[expr.agg]], pa.float64())
    pos = pc.index_in(run_ids, value_set=pc.cast(source_ids, pa.string()).combine_chunks())
    values = pc.cast(source_values, pa.float64())
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    return pc.take(values, pos)


def final_column(key: str, names: Sequence[str]) -> str | None:
    """The wide-table column of a final metric (`f1` or `metrics.<key>`), or None."""
    col = key if key in METRIC_COLUMNS else METRIC_PREFIX + key
    return col if col in set(names) else None


def known_metric(db: Any, expr: MetricExpr) -> None:
    """Raise one sentence naming close matches when no run logged the metric inside `expr`."""
    db.check_metric(expr.key)


def resolve_column(name: str, names: Sequence[str]) -> str:
    """A group or filter key -> its wide-table column: a run field or convention tag, `params.<key>`, a unique
    param leaf (`lr` for `train.lr`), `tags.<key>`, `metrics.<key>`."""
    have = list(names)
    if name in have:
        return name
    for prefix in (PARAM_PREFIX, TAG_PREFIX, METRIC_PREFIX):
        if prefix + name in have:
            return prefix + name
    leaf = [c for c in have if c.startswith(PARAM_PREFIX) and c.endswith("." + name)]
    if len(leaf) == 1:
        return leaf[0]
    if len(leaf) > 1:
        raise KdgatError(f"Key '{name}' is ambiguous: {', '.join(sorted(leaf))}; give the dotted key.")
    import difflib

    keys = [c for c in have if c in BASE_COLUMNS or c.startswith((PARAM_PREFIX, TAG_PREFIX))]
    close = difflib.get_close_matches(name, keys, n=4, cutoff=0.5)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise KdgatError(f"Unknown key '{name}': no run has such a tag or param.{hint}")


def build(
    db: Any,
    metrics: Sequence[str | MetricExpr] = (),
    filters: _Filter | None = None,
    where: str | None = None,
) -> pa.Table:
    """Visible runs passing `filters` and the `where` filter language, with one float column per metric expression."""
    wide = db.wide(arrow=True)
    exprs = [parse_metric(m) for m in metrics]
    if filters is not None:  # first: the metrics are then looked up for the runs that pass, not for every run
        where_sql = filters.where(include_deleted=True)
        if where_sql != "TRUE":
            wide = _rows_where(db, wide, where_sql)
    wide = _attach(db, wide, exprs)
    if where:
        from kdgat_core.query.filter_language import column_types, compile_filter

        flt = compile_filter(where)
        extra = [e for e in flt.metrics if e.text not in {x.text for x in exprs}]
        wide = _attach(db, wide, extra)
        wide = _rows_where(db, wide, flt.sql(column_types(wide.schema)))
        wide = wide.drop_columns([e.text for e in extra if e.text in wide.column_names])
    return wide


def _rows_where(db: Any, table: pa.Table, where_sql: str) -> pa.Table:
    """The rows of `table` that pass `where_sql`, in order. DuckDB reads only the columns the condition names and
    returns row numbers; Arrow takes the rows (SELECT * would copy all ~100 wide columns through DuckDB)."""
    row = "__kdgat_row"
    ones = pc.fill_null(pa.nulls(table.num_rows, pa.int64()), 1)  # 0..n-1 without a Python loop (12 ms at 100k)
    numbered = table.append_column(row, pc.subtract(pc.cumulative_sum(ones), 1))
    keep = db._calc(f"SELECT {row} FROM w WHERE {where_sql} ORDER BY {row}", w=numbered)
    return table.take(keep[row])


def _attach(db: Any, table: pa.Table, exprs: Sequence[MetricExpr]) -> pa.Table:
    ids = table["run_id"].combine_chunks() if table.num_rows else arrays.strings([])
    for expr in exprs:
        if expr.text in table.column_names and expr.agg == "final" and expr.text in METRIC_COLUMNS:
            continue
        values = metric_values(db, expr, ids)
        if pc.all(pc.is_null(values)).as_py() is not False:
            known_metric(db, expr)
        if expr.text in table.column_names:
            table = table.drop_columns([expr.text])
        table = table.append_column(pa.field(expr.text, pa.float64()), values)
    return table
