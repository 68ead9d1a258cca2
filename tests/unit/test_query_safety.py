"""Reading is read-only: refused SQL, missing or foreign files, and a DB locked by a writer."""

from __future__ import annotations

import hashlib
import sqlite3
import subprocess
import sys
import time

import pytest

from kdgat_core.config import KdgatError
from kdgat_core.query import open_db

pytestmark = pytest.mark.usefixtures("query_cache_dir")


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


REFUSED = [
    ("INSERT INTO ml.runs (run_uuid) VALUES ('x')", "writes"),
    ("UPDATE ml.tags SET value = 'x'", "writes"),
    ("DELETE FROM ml.tags", "writes"),
    ("DROP TABLE ml.runs", "drops"),
    ("CREATE TABLE notes AS SELECT 1 AS x", "creates"),
    ("CREATE VIEW v AS SELECT 1", "creates"),
    ("ATTACH '{other}' AS other", "attaches"),
    ("DETACH ml", "detaches"),
    ("COPY (SELECT * FROM runs) TO '{out}/leak.csv'", "copies"),
    ("EXPORT DATABASE '{out}/export'", "exports"),
    ("INSTALL httpfs", "loads extensions"),
    ("LOAD httpfs", "loads extensions"),
    ("SET enable_external_access = true", "changes settings"),
    ("PRAGMA enable_profiling", None),
    ("CHECKPOINT", None),
    ("CALL pragma_version()", "procedure"),
    ("SELECT 1; DROP TABLE ml.runs", "2 statements"),
    ("SELECT * FROM read_csv('/etc/passwd')", "read_csv"),
    ("SELECT * FROM read_text('/etc/passwd')", "read_text"),
    ("SELECT * FROM runs WHERE run_id IN (SELECT run_uuid FROM sqlite_scan('{other}', 'runs'))", "sqlite_scan"),
    ("SELECT * FROM sqlite_query('ml', 'VACUUM INTO ''{out}/copy.db''')", "sqlite_query"),
    ("WITH x AS (SELECT * FROM glob('/etc/*')) SELECT * FROM x", "glob"),
    ("SELECT * FROM query('DROP TABLE ml.runs')", "query"),
    # PRAGMA beyond the catalog ones, DuckDB's own catalog views, and the raw MLflow tables (views only: docs/query.md)
    ("PRAGMA database_list", "PRAGMA database_list"),
    ("PRAGMA storage_info('runs')", "PRAGMA storage_info"),
    ("SELECT * FROM pragma_database_list", "catalog views"),
    ("SELECT * FROM pg_settings", "catalog views"),
    ("SELECT count(*) FROM ml.latest_metrics", "raw MLflow tables"),
    ('SELECT * FROM runs WHERE run_id IN (SELECT run_uuid FROM "ML"."runs")', "raw MLflow tables"),
    ("SELECT * FROM ml.main.tags", "raw MLflow tables"),
    ("DESCRIBE ml.runs", "raw MLflow tables"),
    ("SUMMARIZE ml.metrics", "raw MLflow tables"),
    ("SHOW TABLES FROM ml", "raw MLflow tables"),
    # a PIVOT without IN list is checked word by word (DuckDB cannot hand it over as a tree)
    ("PIVOT runs ON stage USING count(*); DROP TABLE ml.runs", "2 statements"),
    ("PIVOT (FROM ml.runs) ON status USING count(*)", "raw MLflow tables"),
    ("PIVOT (SELECT * FROM sqlite_scan('{other}', 'runs')) ON status USING count(*)", "sqlite_scan"),
    ("PIVOT (SELECT * FROM sqlite_query('ml', 'VACUUM INTO ''{out}/copy.db''')) ON x USING count(*)", "sqlite_query"),
    ("PIVOT (FROM query('SELECT 1 AS x')) ON x USING count(*)", "query"),
    ("PIVOT (FROM pragma_database_list) ON name USING count(*)", "pragma_database_list"),
]


@pytest.mark.parametrize("sql,why", REFUSED, ids=[s[:40] for s, _ in REFUSED])
def test_refused_statements_leave_the_db_unchanged(db_copy, tmp_path, sql, why):
    path, _ = db_copy
    other = tmp_path / "other.db"
    other.write_bytes(path.read_bytes())
    out = tmp_path / "out"
    out.mkdir()
    before = _digest(path), _digest(other)
    with open_db(path) as db:
        with pytest.raises(KdgatError) as err:
            db.sql(sql.format(other=other, out=out))
        assert str(err.value).startswith("Refused"), str(err.value)
        if why:
            assert why in str(err.value)
        assert db.sql("SELECT count(*) AS n FROM runs").n[0] == 18  # still usable, nothing dropped
    assert (_digest(path), _digest(other)) == before
    assert list(out.iterdir()) == []


def test_lockdown_holds_even_without_the_parser_check(db_copy, tmp_path):
    """Defence in depth: DuckDB itself refuses file access and setting changes on the connection."""
    path, _ = db_copy
    before = _digest(path)
    with open_db(path) as db:
        for sql in (
            "SELECT * FROM read_csv('/etc/passwd')",
            f"COPY (SELECT 1) TO '{tmp_path}/x.csv'",
            "SET enable_external_access = true",
            "INSERT INTO ml.tags VALUES ('k', 'v', 'r')",
            f"ATTACH '{tmp_path}/new.db' AS n",
        ):
            with pytest.raises(Exception):
                db.con.execute(sql)
        with pytest.raises(KdgatError, match="SQL error"):
            db.sql("SELECT * FROM '/etc/passwd'")  # replacement scan of a file path
    assert _digest(path) == before
    assert not (tmp_path / "x.csv").exists() and not (tmp_path / "new.db").exists()


def test_no_other_extension_loads_despite_unsigned_extensions(db_copy, tmp_path):
    """The reader allows unsigned extensions (so the scanner's signature is not re-checked on every open); after the
    lockdown no other extension file can be loaded or installed, through the SQL path or on the connection itself."""
    import duckdb

    from kdgat_core.query.connection import scanner_extension_path

    path, _ = db_copy
    renamed = tmp_path / "ext" / "other_scanner.duckdb_extension"  # a real, loadable extension file, not yet loaded
    renamed.parent.mkdir()
    renamed.write_bytes(scanner_extension_path().read_bytes())
    unsigned = tmp_path / "ext" / "unsigned.duckdb_extension"  # no signature at all
    unsigned.write_bytes(b"\0" * 4096)
    # control: on an unlocked connection with unsigned extensions allowed, DuckDB does try to load such a file
    probe = duckdb.connect(":memory:", config={"allow_unsigned_extensions": "true"})
    with pytest.raises(duckdb.Error, match="not a DuckDB extension"):
        probe.execute(f"LOAD '{unsigned}'")
    probe.close()
    before = _digest(path)
    with open_db(path) as db:
        attempts = [
            f"LOAD '{renamed}'",
            f"LOAD '{unsigned}'",
            "LOAD httpfs",
            "INSTALL httpfs",
            f"INSTALL '{renamed}'",
            f"FORCE INSTALL '{unsigned}'",
        ]
        for sql in attempts:
            with pytest.raises(KdgatError, match="Refused"):
                db.sql(sql)
            with pytest.raises(duckdb.PermissionException):
                db.con.execute(sql)  # the parser check aside, DuckDB itself refuses
        for sql in (
            "SET allow_unsigned_extensions = false",
            "SET enable_external_access = true",
            "RESET enable_external_access",
        ):
            with pytest.raises(duckdb.Error, match="configuration has been locked"):
                db.con.execute(sql)
        assert db.sql("SELECT count(*) AS n FROM runs").n[0] == 18  # still usable
    assert _digest(path) == before
    assert sorted(p.name for p in renamed.parent.iterdir()) == [
        "other_scanner.duckdb_extension",
        "unsigned.duckdb_extension",
    ]


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT run_name, f1 FROM runs ORDER BY f1 DESC LIMIT 3",
        "WITH best AS (SELECT * FROM runs WHERE f1 > 0.9) SELECT count(*) FROM best",
        "DESCRIBE runs",
        "SHOW TABLES",
        "SUMMARIZE params",
        "PRAGMA table_info('runs')",
        "VALUES (1, 2)",
        "SELECT * FROM range(3)",
        "PRAGMA version",
        "PRAGMA show_tables",
        "SELECT count(*) FROM duckdb_tables",
        "UNPIVOT (SELECT run_id, f1, auc FROM runs) ON f1, auc INTO NAME metric VALUE value",
        "WITH pragma_database_list AS (SELECT 1 AS x) SELECT * FROM pragma_database_list",
    ],
)
def test_read_only_statements_are_allowed(fixture_db, sql):
    with open_db(fixture_db[0]) as db:
        assert len(db.sql(sql, arrow=True).column_names) >= 1


def test_pivot_is_one_statement(fixture_db):
    """A PIVOT without an IN list (DuckDB expands it into CREATE TYPE + SELECT) runs as the one statement it is."""
    with open_db(fixture_db[0]) as db:
        for _ in range(2):  # again: the in-memory ENUM of the first does not get in the way
            got = db.sql("PIVOT runs ON stage USING count(*) GROUP BY dataset ORDER BY dataset", arrow=True)
            assert got.column_names == ["dataset", "autoencoder", "curriculum", "evaluation", "fusion"]
            assert got.to_pylist()[0] == {
                "dataset": "hcrl_ch",
                "autoencoder": 1,
                "curriculum": 2,
                "evaluation": 0,
                "fusion": 0,
            }
        expected = db.sql("SELECT stage, count(*) AS n FROM runs WHERE dataset = 'hcrl_sa' GROUP BY stage", arrow=True)
        row = db.sql(
            "SELECT * FROM (PIVOT runs ON stage USING count(*) GROUP BY dataset) WHERE dataset = 'hcrl_sa'", arrow=True
        )
        got = {k: v for k, v in row.to_pylist()[0].items() if k != "dataset"}
        assert got == {r["stage"]: r["n"] for r in expected.to_pylist()}


def test_summarize_works_on_metrics_with_nan_and_inf(fixture_db):
    """The fixture's student evaluation logged val_loss=inf and auc=NaN: DuckDB's SUMMARIZE raised out-of-range."""
    with open_db(fixture_db[0]) as db:
        rows = {r["column_name"]: r for r in db.sql("SUMMARIZE runs", arrow=True).to_pylist()}
        assert rows["val_loss"]["max"] == "inf" and rows["val_loss"]["std"] == "nan"
        assert rows["auc"]["std"] == "nan"
        assert rows["f1"]["count"] == 18 and float(rows["f1"]["min"]) == 0.78
        # where every value is finite, the answer is DuckDB's own SUMMARIZE, column for column
        source = "SELECT run_name, start_time, f1, accuracy, seed FROM runs WHERE f1 IS NOT NULL"
        ours = db.sql(f"SUMMARIZE {source}", arrow=True)
        native = db.con.execute(f"SUMMARIZE {source}").to_arrow_table()
        assert ours.schema == native.schema
        assert ours.to_pylist() == native.to_pylist()


def test_syntax_error_is_one_clear_sentence(fixture_db):
    with open_db(fixture_db[0]) as db:
        with pytest.raises(KdgatError, match="SQL syntax error") as err:
            db.sql("SELEC * FROM runs")
        assert "\n" not in str(err.value)
        with pytest.raises(KdgatError, match="SQL error: .*nope") as err:
            db.sql("SELECT nope FROM runs")
        assert "\n" not in str(err.value)


@pytest.mark.parametrize("form", ["path", "uri", "env"])
def test_missing_db_is_an_error_and_no_file_is_created(tmp_path, monkeypatch, form):
    missing = tmp_path / "sub" / "mlflow.db"
    missing.parent.mkdir()
    if form == "env":
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{missing}")
        arg = None
    else:
        arg = str(missing) if form == "path" else f"sqlite:///{missing}"
    with pytest.raises(KdgatError, match="does not exist"):
        open_db(arg)
    assert list(missing.parent.iterdir()) == []


def test_not_a_sqlite_file(tmp_path):
    text = tmp_path / "notes.db"
    text.write_text("hello, not a database\n")
    with pytest.raises(KdgatError, match="is not a SQLite database"):
        open_db(text)
    empty = tmp_path / "empty.db"
    empty.write_bytes(b"")
    with pytest.raises(KdgatError, match="is empty"):
        open_db(empty)
    assert empty.read_bytes() == b""


def test_sqlite_without_mlflow_tables(tmp_path):
    other = tmp_path / "other.db"
    con = sqlite3.connect(other)
    con.execute("CREATE TABLE runs (x)")
    con.commit()
    con.close()  # closed before DuckDB opens it: never both in one process at once
    before = _digest(other)
    with pytest.raises(KdgatError, match="not an MLflow tracking database.*experiments"):
        open_db(other)
    assert _digest(other) == before


def test_non_sqlite_uri_is_refused():
    with pytest.raises(KdgatError, match="not a SQLite store"):
        open_db("http://localhost:5000")


HOLD_LOCK = r"""
import sqlite3, sys, time
con = sqlite3.connect(sys.argv[1], isolation_level=None)
con.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
con.execute("ROLLBACK")
"""


def _hold_lock(path, seconds):
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(path), str(seconds)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_locked_db_ends_in_a_clear_error(db_copy):
    path, _ = db_copy
    with open_db(path, cache=False, lock_retry_s=1) as db:
        proc = _hold_lock(path, 8)
        try:
            t0 = time.monotonic()
            with pytest.raises(KdgatError, match="locked by a writer; retried for 1 s"):
                db.sql("SELECT count(*) FROM tags")  # the tags view reads the file (runs come from the cache)
            assert time.monotonic() - t0 < 7
        finally:
            proc.kill()
            proc.wait()


def test_lock_released_during_retries_succeeds(db_copy):
    path, _ = db_copy
    with open_db(path, cache=False, lock_retry_s=20) as db:
        proc = _hold_lock(path, 3)
        try:
            assert db.sql("SELECT count(DISTINCT run_id) AS n FROM tags").n[0] == 18
        finally:
            proc.wait()
