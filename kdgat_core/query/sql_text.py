"""SQL text, written once: identifiers, literals, and MLflow's encoding of metric values.

Values reach SQL as literals only where there is no bind parameter to use: inside `sqlite_query(...)` (SQLite runs
that text itself), in VALUES lists built from earlier results, and in `LOAD`/`ATTACH` statements.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

# MLflow stores +-inf as +-DBL_MAX and NaN as 0 with is_nan = 1 (SQL has no NaN or inf).
MLFLOW_MAX_DOUBLE = 1.7976931348623157e308


def quote_ident(name: str) -> str:
    """A quoted identifier: any column name (`metrics.test_01/f1`, `params.train.lr`) is safe in SQL."""
    return '"' + name.replace('"', '""') + '"'


def literal(value: Any) -> str:
    """A single-quoted string literal (DuckDB and SQLite alike); None is NULL."""
    return "NULL" if value is None else "'" + str(value).replace("'", "''") + "'"


def in_list(values: Collection[Any]) -> str:
    """`(a, b, ...)` of literals for `x IN ...`; `(NULL)` (matches nothing) when there are none."""
    return "(" + ",".join(literal(v) for v in values) + ")" if values else "(NULL)"


def exact_real(column: str) -> str:
    """SQLite text for a REAL that parses back to the same double (20 digits; measured: 0 of 200k values differ)."""
    return f"printf('%!.20e', {column})"


def decoded_metric(value: str, is_nan: str, text: bool = False) -> str:
    """DuckDB SQL for a metric value as it was logged (NaN, inf and -inf restored from MLflow's encoding).

    `text`: the two columns come out of `sqlite_query`, which returns every column as text.
    The Arrow twin of this rule is `kdgat_core.query.wide.metric_values`.
    """
    v = f"CAST({value} AS DOUBLE)" if text else value
    nan = f"{is_nan} <> '0'" if text else f"{is_nan} <> 0"
    return (
        f"CASE WHEN {nan} THEN 'NaN'::DOUBLE WHEN {v} >= {MLFLOW_MAX_DOUBLE!r} THEN 'inf'::DOUBLE "
        f"WHEN {v} <= -{MLFLOW_MAX_DOUBLE!r} THEN '-inf'::DOUBLE ELSE {v} END"
    )
