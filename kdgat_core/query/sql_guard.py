"""Which user SQL `kdgat query` / `TrackingDB.sql` accepts: one read-only statement that touches no other file.

DuckDB's lockdown (enable_external_access=false, lock_configuration=true) already refuses read_csv, COPY TO, ATTACH and
extension loads, but `sqlite_scan('/any/file.db', ...)` still reads any SQLite file and `sqlite_query` runs raw SQL
inside SQLite (where `VACUUM INTO` writes a file). So statements are checked with DuckDB's own parser first: a single
SELECT (DESCRIBE, SHOW, SUMMARIZE, VALUES, WITH and PRAGMA table_info parse as SELECT), and table functions from an
allow-list only.
"""

from __future__ import annotations

import json

import duckdb

from kdgat_core.config import KdgatError

# Table functions that only read DuckDB's own in-memory state or generate values.
ALLOWED_TABLE_FUNCTIONS = frozenset(
    {
        "range",
        "generate_series",
        "unnest",
        "repeat",
        "pragma_table_info",
        "pragma_version",
        "pragma_show",
        "duckdb_columns",
        "duckdb_tables",
        "duckdb_views",
        "duckdb_functions",
        "duckdb_types",
        "duckdb_keywords",
        "duckdb_schemas",
        "duckdb_databases",
        "duckdb_constraints",
        "duckdb_indexes",
    }
)

# Table functions that reach another database (any file or DSN) or run raw SQL inside the attached store.
OTHER_DATABASE_FUNCTIONS = frozenset(
    f"{engine}_{verb}"
    for engine in ("sqlite", "postgres", "mysql")
    for verb in ("scan", "scan_pushdown", "query", "execute", "attach")
)

_REFUSED_KINDS = {
    "INSERT": "writes",
    "UPDATE": "writes",
    "DELETE": "writes",
    "CREATE": "creates objects",
    "DROP": "drops objects",
    "ALTER": "alters objects",
    "ATTACH": "attaches a file",
    "DETACH": "detaches a database",
    "COPY": "copies to or from files",
    "EXPORT": "exports files",
    "LOAD": "loads extensions (INSTALL/LOAD)",
    "SET": "changes settings",
    "VARIABLE_SET": "changes settings",
    "TRANSACTION": "controls transactions",
    "PRAGMA": "runs a pragma",
    "CALL": "calls a procedure",
    "EXPLAIN": "is an EXPLAIN",
    "VACUUM": "vacuums",
    "UPDATE_EXTENSIONS": "updates extensions",
    "COPY_DATABASE": "copies a database",
    "MULTI": "is several statements",
    "CREATE_FUNC": "creates a function",
}


def check_user_sql(sql: str) -> str:
    """Return the single statement's text if it is an allowed read-only query, else raise KdgatError saying why."""
    text = (sql or "").strip()
    if not text:
        raise KdgatError("Empty SQL; try: SELECT run_name, f1 FROM runs ORDER BY f1 DESC LIMIT 10.")
    try:
        statements = duckdb.extract_statements(text)
    except duckdb.Error as exc:
        raise KdgatError(f"SQL syntax error: {one_line(exc)}") from None
    if len(statements) != 1:
        raise KdgatError(f"Refused: {len(statements)} statements; kdgat query runs exactly one read-only SELECT.")
    stmt = statements[0]
    kind = stmt.type.name
    if kind != "SELECT":
        why = _REFUSED_KINDS.get(kind, f"is a {kind} statement")
        raise KdgatError(
            f"Refused: this statement {why}; kdgat query is read-only and accepts one SELECT "
            "(or WITH, VALUES, DESCRIBE, SHOW, SUMMARIZE)."
        )
    for name in table_functions(stmt.query):
        if name.lower() in OTHER_DATABASE_FUNCTIONS:
            raise KdgatError(
                f"Refused: table function {name}() reaches another database or runs SQL inside the tracking store; "
                "kdgat query reads the views runs, params, tags, metrics, metric_history, lineage."
            )
        if name.lower() not in ALLOWED_TABLE_FUNCTIONS:
            raise KdgatError(
                f"Refused: table function {name}() is not allowed in kdgat query (it can read files or "
                "other databases); query the views runs, params, tags, metrics, metric_history, lineage."
            )
    return stmt.query


def table_functions(sql: str) -> list[str]:
    """Names of the table functions a SELECT calls, anywhere in it (subqueries, CTEs, joins)."""
    return [n for kind, n in _nodes(sql) if kind == "TABLE_FUNCTION"]


def table_names(sql: str) -> set[str]:
    """Plain table names a SELECT mentions (views, CTE names, ml.* tables), lower-cased."""
    return {n.lower() for kind, n in _nodes(sql) if kind == "BASE_TABLE"}


def _nodes(sql: str) -> list[tuple[str, str]]:
    con = duckdb.connect()
    try:
        tree = json.loads(con.execute("SELECT json_serialize_sql(?)", [sql]).fetchone()[0])
    finally:
        con.close()
    if tree.get("error"):
        raise KdgatError(f"SQL syntax error: {tree.get('error_message', 'cannot parse')}")
    out: list[tuple[str, str]] = []

    def walk(node) -> None:
        if isinstance(node, dict):
            kind = node.get("type")
            if kind == "TABLE_FUNCTION" and isinstance(node.get("function"), dict):
                out.append((kind, str(node["function"].get("function_name", ""))))
            elif kind == "BASE_TABLE":
                out.append((kind, str(node.get("table_name", ""))))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(tree)
    return out


def one_line(exc: BaseException) -> str:
    """DuckDB's messages span lines (caret diagrams); the CLI prints one sentence."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip() and not set(ln.strip()) <= {"^", " "}]
    text = lines[0] if lines else type(exc).__name__
    for extra in lines[1:2]:
        if extra.upper().startswith("LINE"):
            text += f" ({extra})"
    return text
