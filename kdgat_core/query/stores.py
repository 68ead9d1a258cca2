"""The two kinds of MLflow store kdgat reads, behind one small interface: a SQLite file, or a PostgreSQL database.

Everything specific to a store lives here: which URI it takes (and how its password is kept out of messages), how
DuckDB attaches it read-only, how raw SQL runs inside it (`sqlite_query` / `postgres_query`, where MLflow's indexes
apply), the few spellings its SQL dialect needs, and what tells the read cache that nothing changed. The query layer
(`connection.Reader`, `db.TrackingDB`, `wide`) is written once against `Store`.
"""

from __future__ import annotations

import os
import re
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import duckdb

from kdgat_core.config import (  # noqa: F401 - the URI helpers are re-exported for the query layer's callers
    ENV_READ_URI,
    ENV_TRACKING_URI,
    KdgatError,
    Resolved,
    is_postgres_uri,
    is_server_uri,
    libpq_dsn,
    mask_secret,
    mask_uri,
    read_uri_flag,
    resolve_read_uri,
    resolve_tracking_uri,
    set_read_uri_flag,
    sqlite_path,
)

ALIAS = "ml"
SQLITE_MAGIC = b"SQLite format 3\x00"
# SQLite waits this long for a writer's lock inside one query before DuckDB sees "database is locked".
BUSY_TIMEOUT_MS = 2000


def _sql_str(text: str) -> str:
    return text.replace("'", "''")


@dataclass(frozen=True)
class Store:
    """One tracking store: its URI (as given or resolved), why it is in force, and how to read it through DuckDB."""

    uri: str
    source: str  # why this URI is in force (for `kdgat doctor`)

    kind = "store"
    native_function = ""  # DuckDB's table function running raw SQL inside the store
    has_rowid = False  # rowids that grow with inserts (SQLite): the read cache's and the TUI's watermarks use them

    @property
    def path(self) -> Path | None:
        """The file behind the store, for stores that are files."""
        return None

    @property
    def display(self) -> str:
        """How messages name the store: a file path, or the URI without its password."""
        return mask_uri(self.uri)

    @property
    def cache_key(self) -> tuple[str, str]:
        """(a readable name, the identity hashed) of the read cache's folder for this store."""
        raise NotImplementedError

    def attach(self, con: duckdb.DuckDBPyConnection) -> None:
        """LOAD the scanner and ATTACH the store read-only as `ALIAS` (before the connection is locked down)."""
        raise NotImplementedError

    def native(self, sql: str) -> str:
        """A DuckDB table expression that runs `sql` inside the store (its indexes apply)."""
        return f"{self.native_function}('{ALIAS}', '{_sql_str(sql)}')"

    def tables_sql(self) -> str:
        """Native SQL listing the store's tables as column `name`."""
        raise NotImplementedError

    def exact_real(self, column: str) -> str:
        """Native SQL for a REAL column whose value comes back exactly."""
        return column

    def no_index(self, column: str) -> str:
        """Native SQL for a column the planner should not pick an index for (SQLite's unary +)."""
        return column

    def flag(self, column: str) -> str:
        """Native SQL for a boolean column as 0/1 (MLflow's is_nan)."""
        return column

    def row_number(self, table: str) -> str:
        """Native SQL for a row's insertion-ordered id, where the store has one; else a constant 0."""
        return "0"

    # an inner join whose order the planner keeps (SQLite's CROSS JOIN ... ON); PostgreSQL plans joins itself
    ordered_join = "JOIN"

    def is_locked_error(self, exc: BaseException) -> bool:
        """True for errors a retry can cure (a writer's lock)."""
        return False

    def describe_error(self, exc: BaseException) -> str:
        """DuckDB's message, first line, with any password in it masked."""
        text = str(exc).splitlines()[0] if str(exc).strip() else type(exc).__name__
        return mask_secret(text, self.uri)

    def signature(self) -> list | None:
        """Something that changes whenever the store is written, read without a connection; None when no such thing
        exists (the read cache then asks the store itself: `live_signature`)."""
        return None

    def live_signature(self, con: duckdb.DuckDBPyConnection) -> list | None:
        """`signature` asked of the store attached on `con` (as `ALIAS`): what a database server can tell."""
        return self.signature()


@dataclass(frozen=True)
class SqliteStore(Store):
    """An MLflow SQLite file, through DuckDB's sqlite scanner."""

    file: Path = Path()

    kind = "sqlite"
    native_function = "sqlite_query"
    has_rowid = True

    @property
    def path(self) -> Path:
        return self.file

    @property
    def display(self) -> str:
        return str(self.file)

    @property
    def cache_key(self) -> tuple[str, str]:
        return self.file.stem, str(self.file)

    def attach(self, con: duckdb.DuckDBPyConnection) -> None:
        con.execute(f"LOAD '{_sql_str(str(extension_path('sqlite')))}'")
        con.execute(
            f"ATTACH '{_sql_str(str(self.file))}' AS {ALIAS} (TYPE sqlite, READ_ONLY, busy_timeout {BUSY_TIMEOUT_MS})"
        )
        # one SQLite connection per query: with 1 + threads connections a waiting writer can deadlock with us
        con.execute("SET sqlite_disable_multithreaded_scans = true")

    def tables_sql(self) -> str:
        return "SELECT name FROM sqlite_master WHERE type = 'table'"

    def exact_real(self, column: str) -> str:
        # SQLite's default text form keeps 15 digits; 20 parse back to the same double (0 of 200k values differ)
        return f"printf('%!.20e', {column})"

    def no_index(self, column: str) -> str:
        return f"+{column}"

    def row_number(self, table: str) -> str:
        return "rowid"

    ordered_join = "CROSS JOIN"

    def is_locked_error(self, exc: BaseException) -> bool:
        text = str(exc).lower()
        return "database is locked" in text or "sqlite_busy" in text or "database table is locked" in text

    def signature(self) -> list:
        """Changes whenever SQLite commits: size, mtime, inode, the header's change counter; and the -wal file's."""
        st = os.stat(self.file)
        with open(self.file, "rb") as fh:
            header = fh.read(100)
        sig: list = [st.st_size, st.st_mtime_ns, st.st_ino, header[24:28].hex(), header[92:96].hex()]
        wal = Path(str(self.file) + "-wal")
        ws = os.stat(wal) if wal.exists() else None
        # an empty -wal holds no commits: readers create and remove one (connection.remove_idle_wal_files)
        if ws is not None and ws.st_size > 0:
            sig += [ws.st_size, ws.st_mtime_ns]
        return sig


@dataclass(frozen=True)
class PostgresStore(Store):
    """An MLflow PostgreSQL database, through DuckDB's postgres scanner (libpq: PGPASSFILE, ~/.pgpass, PG* apply)."""

    kind = "postgres"
    native_function = "postgres_query"

    @property
    def dsn(self) -> str:
        """What libpq takes: the URI without SQLAlchemy's +driver part."""
        return libpq_dsn(self.uri)

    @property
    def cache_key(self) -> tuple[str, str]:
        parts = urllib.parse.urlsplit(self.dsn)
        name = (parts.path.strip("/") or "postgres").replace("/", "_")
        # the identity without the password: changing a password keeps the cache
        return f"pg-{name}", mask_uri(self.dsn)

    def attach(self, con: duckdb.DuckDBPyConnection) -> None:
        con.execute(f"LOAD '{_sql_str(str(extension_path('postgres')))}'")
        try:
            con.execute(f"ATTACH '{_sql_str(_without_jit(self.dsn))}' AS {ALIAS} (TYPE postgres, READ_ONLY)")
        except duckdb.Error as exc:
            raise KdgatError(
                f"Cannot connect to the PostgreSQL tracking store {self.display} (URI from {self.source}): "
                f"{_pg_reason(self.describe_error(exc))}"
            ) from None

    def live_signature(self, con: duckdb.DuckDBPyConnection) -> list:
        """The server's current snapshot as text (one round trip): unchanged means no transaction committed since,
        cluster-wide."""
        row = con.execute(f"SELECT * FROM {self.native('SELECT CAST(pg_current_snapshot() AS text) AS s')}").fetchone()
        assert row is not None
        return [self.kind, str(row[0])]

    def tables_sql(self) -> str:
        return (
            "SELECT table_name AS name FROM information_schema.tables "
            "WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'"
        )

    def flag(self, column: str) -> str:
        return f"CAST({column} AS INTEGER)"

    def is_locked_error(self, exc: BaseException) -> bool:
        # a server restarting or a standby replaying WAL: worth a retry, like a SQLite lock
        text = str(exc).lower()
        return "the database system is starting up" in text or "canceling statement due to conflict" in text


def _without_jit(dsn: str) -> str:
    """The DSN with `options=-c jit=off` for kdgat's sessions, unless options are set already (in it or PGOPTIONS).
    Default settings JIT-compile any plan over 100k cost units: kdgat's scans of params (6.2M rows at 100k runs) spent
    75-360 ms compiling, more than the scan itself saved."""
    if os.environ.get("PGOPTIONS") or "options=" in dsn:
        return dsn
    if "://" not in dsn:
        return f"{dsn} options='-c jit=off'"
    parts = urllib.parse.urlsplit(dsn)
    query = (parts.query + "&" if parts.query else "") + "options=-c%20jit%3Doff"
    return urllib.parse.urlunsplit(parts._replace(query=query))


def _pg_reason(text: str) -> str:
    """libpq's reason, without DuckDB's prefix and the repeated connection string."""
    text = re.sub(r'^.*?Unable to connect to Postgres at "[^"]*":\s*', "", text)
    text = re.sub(r"^IO Error:\s*", "", text).strip()
    return (text.rstrip(".") + ".") if text else "connection failed."


def extension_path(name: str) -> Path:
    """A scanner shipped inside its `duckdb-extension-<name>-scanner` wheel (loaded offline, no ~/.duckdb)."""
    import importlib

    package = f"duckdb_extension_{name}_scanner"
    try:
        wheel = importlib.import_module(package)
    except ImportError:
        raise KdgatError(
            f"The {package.replace('_', '-')} package is missing; reinstall kdgat (pip install -e .)."
        ) from None
    root = Path(str(wheel.__file__)).resolve().parent / "extensions"
    wanted = root / f"v{duckdb.__version__}" / f"{name}_scanner.duckdb_extension"
    if wanted.is_file():
        return wanted
    found = sorted(root.glob(f"*/{name}_scanner.duckdb_extension"))
    raise KdgatError(
        f"The {name} scanner for DuckDB {duckdb.__version__} is not installed (found: "
        f"{', '.join(p.parent.name for p in found) or 'none'}); install "
        f"{package.replace('_', '-')}=={duckdb.__version__}."
    )


def resolve_reader_uri(given: str | None = None, read_uri: str | None = None) -> Resolved:
    """The URI a reader opens, and why: --read-uri; else an explicit URI or path (unless it names an MLflow server);
    else KDGAT_READ_URI or kdgat.toml's read_uri; else the tracking URI, resolved like the CLI."""
    flagged = resolve_read_uri(read_uri) if read_uri or read_uri_flag() else None
    if flagged is not None:
        return flagged
    if given and not is_server_uri(given):
        return resolve_tracking_uri(given)
    return resolve_read_uri() or resolve_tracking_uri(given)


def resolve_store(uri_or_path: str | os.PathLike | None = None, read_uri: str | None = None) -> Store:
    """The store a reader opens (see `resolve_reader_uri`). A SQLite file must exist (none is created); a server URI
    is refused in one sentence that says what to set."""
    resolved = resolve_reader_uri(None if uri_or_path is None else str(uri_or_path), read_uri)
    uri = resolved.value
    if is_postgres_uri(uri):
        return PostgresStore(uri=uri, source=resolved.source)
    if is_server_uri(uri):
        raise KdgatError(
            f"Tracking URI '{mask_uri(uri)}' (from {resolved.source}) is an MLflow server, which kdgat cannot read "
            f"directly; set the database it writes to as the read URI ([tracking] read_uri in kdgat.toml, "
            f"{ENV_READ_URI} or --read-uri), e.g. postgresql://reader@host/mlflow."
        )
    path = sqlite_path(uri, must_exist=False)
    if path is None:
        raise KdgatError(
            f"Tracking URI '{mask_uri(uri)}' (from {resolved.source}) is not a store kdgat reads; use "
            "sqlite:///path/mlflow.db or postgresql://user@host/db."
        )
    path = path.expanduser().absolute()
    if not path.exists():
        raise KdgatError(
            f"Tracking database {path} does not exist (URI from {resolved.source}); check --tracking-uri, "
            f"{ENV_TRACKING_URI} or kdgat.toml."
        )
    if path.is_dir():
        raise KdgatError(f"Tracking database {path} is a directory, not an MLflow SQLite file; check --tracking-uri.")
    if not path.is_file():
        raise KdgatError(f"Tracking database {path} is not a file.")
    try:
        with open(path, "rb") as fh:
            head = fh.read(len(SQLITE_MAGIC))
    except OSError as exc:
        raise KdgatError(f"Cannot read tracking database {path}: {exc.strerror or exc}.") from None
    if head != SQLITE_MAGIC:
        what = "is empty" if not head else "is not a SQLite database"
        raise KdgatError(f"{path} {what}, so it is not an MLflow tracking database.")
    return SqliteStore(uri=uri, source=resolved.source, file=path)
