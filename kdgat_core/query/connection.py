"""Opening an MLflow store (a SQLite file or a PostgreSQL database; see `stores`) read-only through DuckDB, locked
down, with retries on a locked DB.

Everything that touches the tracking file goes through `Reader.fetch`, so every read gets the same retry policy.
Never open the same file through Python's sqlite3 (or MLflow) in a process that reads it here: the two bundled SQLite
copies do not see each other's locks.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import duckdb

from kdgat_core import mlflow_schema
from kdgat_core.config import KdgatError
from kdgat_core.query.sql_text import in_list, literal
from kdgat_core.query.stores import ALIAS, SqliteStore, Store, _sql_str, extension_path, resolve_store  # noqa: F401

# The tables kdgat reads; a store without them is not an MLflow tracking store.
MLFLOW_TABLES = ("experiments", "runs", "tags", "params", "metrics", "latest_metrics", "alembic_version")
DEFAULT_LOCK_RETRY_S = 30.0
T = TypeVar("T")


class LazyModule:
    """A module imported on first attribute use. `kdgat leaderboard` never needs pyarrow (0.2 s of its 0.3 s imports):
    DuckDB hands it plain Python rows."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        import importlib

        return getattr(importlib.import_module(self._name), attr)


if TYPE_CHECKING:  # the type checker sees the modules; at run time they load on first attribute use
    import pyarrow as pa
    import pyarrow.compute as pc
else:
    pa = LazyModule("pyarrow")
    pc = LazyModule("pyarrow.compute")


def scanner_extension_path() -> Path:
    """The sqlite scanner shipped inside the `duckdb-extension-sqlite-scanner` wheel (loaded offline, no ~/.duckdb)."""
    return extension_path("sqlite")


# The resolved store (kept under its old name: `resolve_db` and `ResolvedDB` are what callers import)
ResolvedDB = Store


def resolve_db(uri_or_path: str | os.PathLike | None = None, read_uri: str | None = None) -> Store:
    """Resolve like the CLI does, then insist on a readable store (an existing SQLite file, or a PostgreSQL URI)."""
    return resolve_store(uri_or_path, read_uri)


class QueryTimeout(KdgatError):
    """A user query ran past its time limit and was stopped."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        super().__init__(
            f"The query ran longer than {seconds:g} s and was stopped; narrow it (WHERE, LIMIT) or raise --timeout."
        )


def is_locked_error(exc: BaseException) -> bool:
    return SqliteStore.is_locked_error(SqliteStore("", ""), exc)


class Reader:
    """One in-memory DuckDB connection with the tracking store attached read-only, and a locked configuration."""

    def __init__(
        self, db: Store, lock_retry_s: float = DEFAULT_LOCK_RETRY_S, con: duckdb.DuckDBPyConnection | None = None
    ):
        """`con`: a connection on which `db` is already attached (TrackingDB's own, taken over), else a new one."""
        self.db = db
        self.store = db
        self.lock_retry_s = lock_retry_s
        # in-memory default database: a user's CREATE (refused anyway) could never persist anywhere.
        # allow_unsigned_extensions: skips re-verifying the 35 MB scanner's signature on every open (0.2-0.5 s -> 1 ms);
        # the file is the pinned wheel's, and once external access is off no other extension loads (test_query_safety).
        self._closed = False
        if db.path is not None:  # a file's -wal/-shm are tidied when its last reader closes
            _OPEN_READERS[db.path] = _OPEN_READERS.get(db.path, 0) + 1
        if con is None:
            con = duckdb.connect(":memory:", config={"allow_unsigned_extensions": "true"})
            try:
                db.attach(con)
            except BaseException:
                con.close()
                raise
        else:
            con.execute("RESET threads")  # the one thread of kdgat's cache connection: the Reader's scans use all
        # never resolve unknown table names to Python variables of the caller
        con.execute("SET python_enable_replacements = false")
        try:  # a slow server query must not draw over the CLI's output
            con.execute("SET enable_progress_bar = false")
        except duckdb.InvalidInputException:
            pass  # inside Jupyter without ipywidgets DuckDB refuses to touch the setting; it draws no bar there
        con.execute("SET enable_external_access = false")
        con.execute("SET autoinstall_known_extensions = false")
        con.execute("SET autoload_known_extensions = false")
        self.con = con
        self._check_mlflow_schema()

    def lock(self) -> None:
        """Freeze the settings (after the views exist): user SQL cannot turn file access back on."""
        self.con.execute("SET lock_configuration = true")

    def _check_mlflow_schema(self) -> None:
        try:
            names = {r["name"] for r in self.fetch_native_rows(self.store.tables_sql())}
        except duckdb.Error as exc:
            if self.store.kind != "sqlite":
                raise KdgatError(
                    f"{self.db.display} cannot be read as an MLflow store: {self.store.describe_error(exc)}."
                ) from None
            why = str(exc).splitlines()[0].rsplit(": ", 1)[-1].rstrip(".")  # SQLite's reason, not DuckDB's query
            raise KdgatError(f"{self.db.path} cannot be read as SQLite ({why}); it is truncated or corrupt.") from None
        missing = [t for t in MLFLOW_TABLES if t not in names]
        if missing and not names & {"alembic_version", "experiments"}:
            what = "a SQLite file" if self.store.kind == "sqlite" else "a PostgreSQL database"
            raise KdgatError(
                f"{self.db.display} is {what} but not an MLflow tracking database (no "
                f"{', '.join(missing)} table{'s' if len(missing) > 1 else ''})."
            )
        revision = None
        if "alembic_version" in names:
            rows = self.fetch_sqlite_rows("SELECT version_num FROM alembic_version LIMIT 1")
            revision = rows[0]["version_num"] if rows else None
        self.schema_revision = revision
        self.schema_state = mlflow_schema.classify(names, revision)
        # an older revision is still readable (its tables are all there); the rest is one sentence with a remedy
        if self.schema_state not in (mlflow_schema.CURRENT, mlflow_schema.OLDER):
            raise KdgatError(mlflow_schema.advice(self.schema_state, self.db.display, revision, names))

    # -- reads --------------------------------------------------------------------------------------------------------
    def fetch(self, sql: str, params: list | None = None) -> pa.Table:
        """Run one DuckDB query and return Arrow, retrying with backoff while a writer holds the SQLite lock."""
        return self.retry(lambda: self.con.execute(sql, params or []).to_arrow_table())

    def fetch_stoppable(self, sql: str, timeout_s: float | None = None) -> pa.Table:
        """`fetch` in a worker thread, so that Ctrl-C (KeyboardInterrupt, re-raised) and `timeout_s` stop DuckDB's
        query (`con.interrupt()`) instead of waiting for it: DuckDB checks no Python signal while it runs.
        Raises QueryTimeout when the query ran longer than `timeout_s` (None or 0: no limit)."""
        import threading

        done: dict[str, Any] = {}  # "table" or "error", handed over from the worker thread

        def work() -> None:
            try:
                done["table"] = self.fetch(sql)
            except BaseException as exc:  # handed to the caller's thread
                done["error"] = exc

        worker = threading.Thread(target=work, name="kdgat-sql", daemon=True)
        worker.start()
        try:
            worker.join(timeout_s or None)
        except KeyboardInterrupt:
            self.con.interrupt()
            worker.join(5.0)
            raise
        if worker.is_alive():
            self.con.interrupt()
            worker.join()
            if "table" not in done:
                raise QueryTimeout(timeout_s or 0.0)
        if "error" in done:
            raise done["error"]
        return done["table"]

    def fetch_many(self, queries: list[str], rows: bool = False) -> list:
        """Independent queries at once, one DuckDB cursor (own SQLite connection) and thread each: each is a whole
        query of its own, so none waits on another's lock while holding its own (no reader-writer deadlock).
        Arrow tables, or lists of dicts with `rows=True` (no pyarrow import)."""
        if len(queries) < 2:
            return [self.fetch_rows(q) if rows else self.fetch(q) for q in queries]
        from concurrent.futures import ThreadPoolExecutor

        def one(sql: str) -> Any:
            cur = self.con.cursor()
            try:
                return self.retry(lambda: result_rows(cur.execute(sql)) if rows else cur.execute(sql).to_arrow_table())
            finally:
                cur.close()

        # a database server does the work itself: every query at once (SQLite's run in this process's cores)
        workers = (
            len(queries) if self.store.native_function == "postgres_query" else min(len(queries), os.cpu_count() or 2)
        )
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return list(pool.map(one, queries))

    def fetch_rows(self, sql: str, params: list | None = None) -> list[dict]:
        """Like `fetch`, as a list of dicts (no pyarrow import)."""
        return self.retry(lambda: result_rows(self.con.execute(sql, params or [])))

    def retry(self, action: Callable[[], T]) -> T:
        """`action()`, retried with backoff while a writer holds the SQLite lock (it must be safe to repeat)."""
        deadline = time.monotonic() + self.lock_retry_s
        delay = 0.05
        while True:
            try:
                return action()
            except duckdb.Error as exc:
                if not self.store.is_locked_error(exc):
                    raise
                if time.monotonic() >= deadline:
                    raise KdgatError(
                        f"The tracking database {self.db.display} is locked by a writer; retried for "
                        f"{self.lock_retry_s:g} s. Try again, or read a copy made with `kdgat backup`."
                    ) from None
                time.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 1.0)

    def fetch_native(self, native_sql: str, types: dict[str, pa.DataType] | None = None) -> pa.Table:
        """Run `native_sql` inside the store (its indexes apply; the scanners' filters do not reach them).

        sqlite_query returns every column as text; `types` casts named columns back. Select REAL columns through
        `store.exact_real()`: SQLite's default text form keeps 15 digits and would change the values.
        """
        table = self.fetch(f"SELECT * FROM {self.store.native(native_sql)}")
        for name, typ in (types or {}).items():
            i = table.schema.get_field_index(name)
            table = table.set_column(i, name, table[name].cast(typ))
        return table

    def fetch_native_rows(self, native_sql: str) -> list[dict]:
        """`fetch_native` as a list of dicts (text values from SQLite; no pyarrow import)."""
        return self.fetch_rows(f"SELECT * FROM {self.store.native(native_sql)}")

    # the names the SQLite-only code used
    fetch_sqlite = fetch_native
    fetch_sqlite_rows = fetch_native_rows

    def close(self) -> None:
        try:
            self.con.close()
        except duckdb.Error:
            pass
        if not self._closed:
            self._closed = True
            if self.db.path is not None:
                _release(self.db.path)


# Readers open per file in this process: the -wal/-shm a reader leaves are removed only when the last one closes
_OPEN_READERS: dict[Path, int] = {}
# SQLite's lock bytes (os_unix.c): a write lock on the SHARED range is an EXCLUSIVE lock on the database
_PENDING_BYTE, _SHARED_SIZE = 0x40000000, 510


def _release(path: Path) -> None:
    left = _OPEN_READERS.get(path, 1) - 1
    if left > 0:
        _OPEN_READERS[path] = left
        return
    _OPEN_READERS.pop(path, None)
    remove_idle_wal_files(path)


def remove_idle_wal_files(path: Path) -> bool:
    """Remove an empty `-wal` and its `-shm` that a read-only connection leaves beside a WAL-mode database (SQLite
    removes them when a writer closes; a reader may not). Done as SQLite does it: only while holding an EXCLUSIVE
    lock on the database, which no other open connection allows (in WAL mode each holds a SHARED lock for its
    lifetime) and which keeps new ones out until the files are gone. A WAL with data in it is never touched."""
    import fcntl

    wal, shm = Path(f"{path}-wal"), Path(f"{path}-shm")
    try:
        if not wal.exists() or wal.stat().st_size != 0:
            return False
        fd = os.open(path, os.O_RDWR)
    except OSError:
        return False
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, _SHARED_SIZE, _PENDING_BYTE + 2, os.SEEK_SET)
    except OSError:
        os.close(fd)
        return False  # another connection is open: it (or the last writer) cleans up
    try:
        if wal.stat().st_size != 0:
            return False
        wal.unlink(missing_ok=True)
        shm.unlink(missing_ok=True)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)  # closing the descriptor drops the lock


def result_rows(result: duckdb.DuckDBPyConnection) -> list[dict]:
    """A DuckDB result as a list of dicts, column order kept (fetchall: no numpy or pyarrow needed)."""
    names = [d[0] for d in result.description]
    return [dict(zip(names, row)) for row in result.fetchall()]


def register_arrow(con: duckdb.DuckDBPyConnection, name: str, table: pa.Table) -> None:
    """Expose an Arrow table as a view. `con.register` would import pandas (0.4 s) to check the object's type."""
    con.from_arrow(table).create_view(name, replace=True)


# the names callers used before kdgat_core.query.sql_text
sqlite_literal = literal
sqlite_in_list = in_list


def exact_real(column: str) -> str:
    """SQLite text for a REAL that parses back to the same double (20 digits; measured: 0 of 200k values differ)."""
    return SqliteStore.exact_real(SqliteStore("", ""), column)
