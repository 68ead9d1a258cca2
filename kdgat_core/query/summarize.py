"""`SUMMARIZE` for user SQL: DuckDB's summary columns, but a column holding NaN or inf gets std 'nan' instead of
DuckDB's "STDDEV_SAMP is out of range!" error, which every metric view with a diverged run (val_loss = inf) hit.

The output matches DuckDB's own SUMMARIZE (same columns, types and aggregates) for columns of finite values.
"""

from __future__ import annotations

from kdgat_core.query.sql_text import literal, quote_ident

_NUMERIC = (
    "TINYINT",
    "SMALLINT",
    "INTEGER",
    "BIGINT",
    "HUGEINT",
    "UTINYINT",
    "USMALLINT",
    "UINTEGER",
    "UBIGINT",
    "UHUGEINT",
    "FLOAT",
    "DOUBLE",
    "DECIMAL",
)
_FLOATING = ("FLOAT", "DOUBLE")
_TEMPORAL = ("DATE", "TIME", "TIMESTAMP")


def _is(type_name: str, kinds: tuple[str, ...]) -> bool:
    base = type_name.upper().split("(")[0].strip()
    return base in kinds or (kinds is _TEMPORAL and base.startswith(_TEMPORAL))


def summary_sql(columns: list[tuple[str, str]], source_sql: str) -> str:
    """SQL summarizing `source_sql`, whose (name, DuckDB type) columns are `columns`, one row per column."""
    parts: dict[str, list[str]] = {
        k: []
        for k in (
            "column_name",
            "column_type",
            "min",
            "max",
            "approx_unique",
            "avg",
            "std",
            "q25",
            "q50",
            "q75",
            "count",
            "null_percentage",
        )
    }
    for i, (name, typ) in enumerate(columns):
        c = f"_c{i}"  # positional aliases: the source may repeat a column name
        numeric, temporal = _is(typ, _NUMERIC), _is(typ, _TEMPORAL)
        parts["column_name"].append(literal(name))
        parts["column_type"].append(literal(typ))
        parts["min"].append(f"min({c})::VARCHAR")
        parts["max"].append(f"max({c})::VARCHAR")
        parts["approx_unique"].append(f"approx_count_distinct({c})::BIGINT")
        parts["avg"].append(f"avg({c})::VARCHAR" if numeric or temporal else "NULL::VARCHAR")
        if _is(typ, _FLOATING):
            # the sample std of values that include NaN or inf is NaN (numpy says so); DuckDB raises instead
            parts["std"].append(
                f"CASE WHEN bool_and(isfinite({c})) IS FALSE THEN 'nan' "
                f"ELSE (stddev_samp({c}) FILTER (WHERE isfinite({c})))::VARCHAR END"
            )
        else:
            parts["std"].append(f"stddev_samp({c})::VARCHAR" if numeric else "NULL::VARCHAR")
        for q, frac in (("q25", "0.25"), ("q50", "0.5"), ("q75", "0.75")):
            parts[q].append(f"approx_quantile({c}, {frac}::FLOAT)::VARCHAR" if numeric or temporal else "NULL::VARCHAR")
        parts["count"].append("count_star()")
        parts["null_percentage"].append(
            f"CAST(CASE WHEN count_star() > 0 THEN (1.0 - count({c})::DOUBLE / count_star()::DOUBLE) * 100.0 END "
            "AS DECIMAL(9,2))"
        )
    select = ", ".join(f"unnest([{', '.join(v)}]) AS {quote_ident(k)}" for k, v in parts.items())
    aliases = ", ".join(f"_c{i}" for i in range(len(columns)))
    return f"SELECT {select} FROM ({source_sql}) AS summarize_tbl({aliases})"
