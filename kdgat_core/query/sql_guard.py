"""Which user SQL `kdgat query` / `TrackingDB.sql` accepts: one read-only statement over kdgat's views.

DuckDB's lockdown (enable_external_access=false, lock_configuration=true) already refuses read_csv, COPY TO, ATTACH and
extension loads, but `sqlite_scan('/any/file.db', ...)` still reads any SQLite file and `sqlite_query` runs raw SQL
inside SQLite (where `VACUUM INTO` writes a file). So statements are checked with DuckDB's own parser first: a single
SELECT (DESCRIBE, SHOW, SUMMARIZE, VALUES, WITH, FROM-first and PIVOT/UNPIVOT parse as SELECT), table functions and
DuckDB's catalog views from an allow-list only, PRAGMA only for the read-only catalog ones (table_info, show, version),
and nothing under `ml.`: the raw MLflow tables are attached there for the views, but they show deleted runs, NaN as 0
and inf as 1.797e308, so user SQL sees the views only (which hide deleted runs and show NaN and inf).
"""

from __future__ import annotations

import json
import re

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

# PRAGMA statements that only describe the catalog (DuckDB rewrites them into SELECTs over the functions above).
ALLOWED_PRAGMAS = frozenset({"table_info", "show", "version", "show_tables", "show_tables_expanded"})
# DuckDB's own catalog views that user SQL may name (the others list files, settings or logs).
ALLOWED_CATALOG_VIEWS = ALLOWED_TABLE_FUNCTIONS
RAW_SCHEMA = "ml"  # connection.ALIAS: where the tracking file is attached (not imported: no cycle)

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
    """Return the SQL to run if it is one allowed read-only statement, else raise KdgatError saying why."""
    text = (sql or "").strip()
    if not text:
        raise KdgatError("Empty SQL; try: SELECT run_name, f1 FROM runs ORDER BY f1 DESC LIMIT 10.")
    try:
        statements = duckdb.extract_statements(text)
        tokens = _tokens(text)
    except duckdb.Error as exc:
        raise KdgatError(f"SQL syntax error: {one_line(exc)}") from None
    count = _statement_count(tokens)
    if count != 1:
        raise KdgatError(f"Refused: {count} statements; kdgat query runs exactly one read-only SELECT.")
    if len(statements) > 1 and all(s.query == "" for s in statements) and statements[-1].type.name == "SELECT":
        # a PIVOT without an IN list: DuckDB expands the one statement into CREATE TYPE (an in-memory ENUM of the
        # pivot values) + SELECT, neither of which its JSON serializer takes; check the words instead, strictly
        _check_words(tokens)
        return text
    if len(statements) != 1:
        raise KdgatError(f"Refused: {len(statements)} statements; kdgat query runs exactly one read-only SELECT.")
    stmt = statements[0]
    kind = stmt.type.name
    if kind != "SELECT":
        why = _REFUSED_KINDS.get(kind, f"is a {kind} statement")
        raise KdgatError(
            f"Refused: this statement {why}; kdgat query is read-only and accepts one SELECT "
            "(or WITH, VALUES, DESCRIBE, SHOW, SUMMARIZE, PIVOT)."
        )
    first = tokens[0][1].lower() if tokens else ""
    if first == "pragma":
        name = tokens[1][1].lower() if len(tokens) > 1 else ""
        if name not in ALLOWED_PRAGMAS:
            raise KdgatError(
                f"Refused: PRAGMA {name} is not allowed; kdgat query accepts only the catalog pragmas "
                f"{', '.join(sorted(ALLOWED_PRAGMAS))} (DESCRIBE and SHOW TABLES say the same)."
            )
    nodes = _nodes(stmt.query)
    ctes = {n.lower() for kind, n, _ in nodes if kind == "CTE"}
    for kind, name, qualifier in nodes:
        if kind == "TABLE_FUNCTION" and name.lower() not in ALLOWED_TABLE_FUNCTIONS:
            raise _refuse_function(name)
        if kind in ("BASE_TABLE", "SHOW_REF") and RAW_SCHEMA in qualifier:
            raise _refuse_raw()
        if kind == "BASE_TABLE" and name.lower() not in ctes and _is_refused_catalog_view(name, qualifier):
            raise KdgatError(
                f"Refused: {name} is one of DuckDB's own catalog views (files, settings, logs), not kdgat's data; "
                f"query the views {_VIEW_LIST}."
            )
    return stmt.query


_VIEW_LIST = "runs, params, tags, metrics, metric_history, lineage, runs_wide"


def _refuse_function(name: str) -> KdgatError:
    return KdgatError(
        f"Refused: table function {name}() is not allowed in kdgat query (it can read files or "
        f"other databases); query the views {_VIEW_LIST}."
    )


def _refuse_raw() -> KdgatError:
    return KdgatError(
        f"Refused: the raw MLflow tables ({RAW_SCHEMA}.*) are not readable in kdgat query; query the views "
        f"{_VIEW_LIST} (they hide deleted runs and show NaN and inf, which the raw tables store as 0 and 1.8e308)."
    )


def _is_refused_catalog_view(name: str, qualifier: set[str]) -> bool:
    low = name.lower()
    if "pg_catalog" in qualifier:
        return True
    return low in _catalog_views() and low not in ALLOWED_CATALOG_VIEWS and not (qualifier - {"system", "main"})


def _catalog_views() -> frozenset[str]:
    """DuckDB's built-in views in its system catalog (pragma_database_list, pg_settings, ...), lower-cased."""
    global _CATALOG_VIEWS
    if _CATALOG_VIEWS is None:
        con = duckdb.connect()
        try:
            rows = con.execute(
                "SELECT lower(view_name) FROM duckdb_views() WHERE internal AND schema_name IN ('main', 'pg_catalog')"
            ).fetchall()
        finally:
            con.close()
        _CATALOG_VIEWS = frozenset(r[0] for r in rows)
    return _CATALOG_VIEWS


_CATALOG_VIEWS: frozenset[str] | None = None
_KNOWN_FUNCTIONS: dict[str, str] | None = None


def _known_functions() -> dict[str, str]:
    """Every function of a bare DuckDB (no extension loaded), lower-cased name -> its type (scalar, table, ...)."""
    global _KNOWN_FUNCTIONS
    if _KNOWN_FUNCTIONS is None:
        con = duckdb.connect()
        try:
            rows = con.execute("SELECT lower(function_name), function_type FROM duckdb_functions()").fetchall()
        finally:
            con.close()
        known: dict[str, str] = {}
        for name, kind in rows:
            # a name that is both a scalar and a table function counts as a table function
            known[name] = "table" if kind in ("table", "table_macro") or known.get(name) == "table" else kind
        _KNOWN_FUNCTIONS = known
    return _KNOWN_FUNCTIONS


def _tokens(text: str) -> list[tuple[str, str]]:
    """(type, word) of each SQL token; a word is the token without the whitespace and comments DuckDB leaves on it."""
    raw = duckdb.tokenize(text)
    out = []
    for i, (start, kind) in enumerate(raw):
        end = raw[i + 1][0] if i + 1 < len(raw) else len(text)
        piece = text[start:end]
        if kind.name in ("string_const", "comment"):
            out.append((kind.name, piece.strip()))
            continue
        quoted = _QUOTED.match(piece)
        if quoted:
            word = quoted.group(1).replace('""', '"')
        elif kind.name == "operator":
            word = piece.strip()[:1] if piece.strip().startswith(";") else piece.split()[0] if piece.split() else ""
        else:
            word = found.group(0) if (found := _WORD.match(piece)) else piece.strip()
        out.append((kind.name, word))
    return out


_QUOTED = re.compile(r'^"((?:[^"]|"")*)"')
_WORD = re.compile(r"^[^\s(),;.:\[\]{}*+\-/<>=!~%|&^'\"]+")


def _statement_count(tokens: list[tuple[str, str]]) -> int:
    count, pending = 0, False
    for kind, word in tokens:
        if kind == "operator" and word == ";":
            count += pending
            pending = False
        elif kind != "comment":
            pending = True
    return count + pending


def _check_words(tokens: list[tuple[str, str]]) -> None:
    """The check for statements the parser cannot hand over as a tree (a PIVOT that collects its values first):
    no word names a refused table function, catalog view or the raw tables, and every called name is a known
    function of a bare DuckDB (extension functions such as sqlite_scan are not)."""
    known = _known_functions()
    for i, (kind, word) in enumerate(tokens):
        if kind not in ("identifier", "keyword"):
            continue
        low = word.lower()
        after = tokens[i + 1][1] if i + 1 < len(tokens) else ""
        if low == RAW_SCHEMA and after == ".":
            raise _refuse_raw()
        if known.get(low) == "table" and low not in ALLOWED_TABLE_FUNCTIONS:
            raise _refuse_function(word)
        if low in _catalog_views() and low not in ALLOWED_CATALOG_VIEWS:
            raise _refuse_function(word)
        if kind == "identifier" and after == "(" and low not in known:
            raise _refuse_function(word)


def table_functions(sql: str) -> list[str]:
    """Names of the table functions a SELECT calls, anywhere in it (subqueries, CTEs, joins)."""
    return [n for kind, n, _ in _nodes(sql) if kind == "TABLE_FUNCTION"]


def table_names(sql: str) -> set[str]:
    """Plain table names a statement mentions (views, CTE names), lower-cased; for a statement the parser cannot
    hand over as a tree (a dynamic PIVOT), every identifier in it."""
    try:
        return {n.lower() for kind, n, _ in _nodes(sql) if kind == "BASE_TABLE"}
    except KdgatError:
        return {w.lower() for kind, w in _tokens(sql) if kind == "identifier"}


def summarized_query(sql: str) -> str | None:
    """The query a top-level `SUMMARIZE <table or query>` summarizes, as SQL; None for any other statement."""
    tree = _tree(sql)
    node = tree["statements"][0]["node"]
    ref = node.get("from_table") or {}
    if node.get("type") != "SELECT_NODE" or ref.get("type") != "SHOW_REF" or ref.get("show_type") != "SUMMARY":
        return None
    if node.get("where_clause") or node.get("modifiers") or ref.get("query") is None:
        return None
    inner = {"error": False, "statements": [{"node": ref["query"], "named_param_map": []}]}
    con = duckdb.connect()
    try:
        row = con.execute("SELECT json_deserialize_sql(?::JSON)", [json.dumps(inner)]).fetchone()
        assert row is not None  # a scalar SELECT returns one row
        return str(row[0])
    finally:
        con.close()


def _tree(sql: str) -> dict:
    con = duckdb.connect()
    try:
        row = con.execute("SELECT json_serialize_sql(?)", [sql]).fetchone()
        assert row is not None  # a scalar SELECT returns one row
        tree = json.loads(row[0])
    finally:
        con.close()
    if tree.get("error"):
        raise KdgatError(f"SQL syntax error: {tree.get('error_message', 'cannot parse')}")
    return tree


def _nodes(sql: str) -> list[tuple[str, str, set[str]]]:
    """(kind, name, {catalog, schema} lower-cased) of the table functions, tables, SHOW targets and CTEs in `sql`."""
    tree = _tree(sql)
    out: list[tuple[str, str, set[str]]] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            kind = node.get("type")
            qualifier = {str(node.get(k) or "").lower() for k in ("catalog_name", "schema_name")} - {""}
            if kind == "TABLE_FUNCTION" and isinstance(node.get("function"), dict):
                out.append((kind, str(node["function"].get("function_name", "")), qualifier))
            elif kind in ("BASE_TABLE", "SHOW_REF"):
                out.append((kind, str(node.get("table_name", "")), qualifier))
            cte_map = node.get("cte_map")
            if isinstance(cte_map, dict):
                out.extend(("CTE", str(e.get("key", "")), set()) for e in cte_map.get("map", []))
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
