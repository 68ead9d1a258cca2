"""A throwaway PostgreSQL server for the tests (scripts/pg_cluster.sh), and MLflow stores in it.

    def test_something(pg_server):
        uri = pg_server.new_store("mine")        # a fresh database with MLflow's schema (postgresql+psycopg2://...)
        pg_server.checksums("mine")             # {table: md5 of its rows}, to prove a reader changed nothing

The server starts once per session on 127.0.0.1 and a free port, from Debian's postgresql packages, and is stopped by
the pid the script recorded. MLflow's schema is created once (`mlflow db upgrade`, ~10 s) in a template database;
each store is a copy of it (`CREATE DATABASE ... TEMPLATE`, well under a second). Without the server binaries a test
skips locally and fails under CI=true (tests/conftest.py `require`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "pg_cluster.sh"
ROLE, PASSWORD = "mlflow", "mlflow"
TEMPLATE = "mlflow_template"


def pg_bin() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"))
    return found[-1].parent if found else None


class PgServer:
    def __init__(self, state: Path):
        self.state = state
        out = subprocess.run(["bash", str(SCRIPT), "start", str(state)], capture_output=True, text=True, timeout=120)
        if out.returncode != 0:
            raise RuntimeError(f"pg_cluster.sh start failed: {out.stderr[-2000:]}")
        self.port = int((state / "port").read_text())
        self._lock = threading.Lock()
        self._template = False

    def uri(self, database: str, user: str = ROLE, password: str | None = PASSWORD, driver: bool = True) -> str:
        """MLflow's spelling (`postgresql+psycopg2://`) or, with driver=False, libpq's."""
        scheme = "postgresql+psycopg2" if driver else "postgresql"
        auth = user if password is None else f"{user}:{password}"
        return f"{scheme}://{auth}@127.0.0.1:{self.port}/{database}"

    def admin(self, database: str = "postgres"):
        import psycopg2

        con = psycopg2.connect(host="127.0.0.1", port=self.port, user="postgres", dbname=database)
        con.autocommit = True
        return con

    def execute(self, *statements: str, database: str = "postgres") -> list:
        con = self.admin(database)
        try:
            with con.cursor() as cur:
                rows: list = []
                for sql in statements:
                    cur.execute(sql)
                    rows = cur.fetchall() if cur.description else []
                return rows
        finally:
            con.close()

    def _ensure_template(self) -> None:
        if self._template:
            return
        self.execute(f"CREATE DATABASE {TEMPLATE} OWNER {ROLE}")
        mlflow = Path(sys.executable).parent / "mlflow"
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
        out = subprocess.run(
            [str(mlflow), "db", "upgrade", self.uri(TEMPLATE)], capture_output=True, text=True, timeout=300, env=env
        )
        if out.returncode != 0:
            raise RuntimeError(f"mlflow db upgrade failed: {out.stderr[-2000:]}")
        self._template = True

    def new_database(self, name: str, schema: bool = True) -> str:
        """A new, empty database `name` owned by the mlflow role (with MLflow's schema unless schema=False)."""
        with self._lock:
            if schema:
                self._ensure_template()
            template = f" TEMPLATE {TEMPLATE}" if schema else ""
            self.execute(
                f"DROP DATABASE IF EXISTS {name} WITH (FORCE)", f"CREATE DATABASE {name} OWNER {ROLE}{template}"
            )
        return self.uri(name)

    new_store = new_database

    def copy_database(self, source: str, name: str) -> str:
        """A copy of database `source` (CREATE DATABASE ... TEMPLATE: well under a second) as `name`."""
        with self._lock:
            self.execute(
                f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{source}' "
                "AND pid <> pg_backend_pid()",
                f"DROP DATABASE IF EXISTS {name} WITH (FORCE)",
                f"CREATE DATABASE {name} OWNER {ROLE} TEMPLATE {source}",
            )
        return self.uri(name)

    def checksums(self, database: str) -> dict[str, str]:
        """md5 of every row of every table in the public schema, per table (order-independent)."""
        tables = [
            r[0]
            for r in self.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1", database=database
            )
        ]
        out = {}
        for t in tables:
            rows = self.execute(
                f"SELECT count(*), coalesce(md5(string_agg(md5(x::text), '' ORDER BY md5(x::text))), '') FROM \"{t}\" x",
                database=database,
            )
            out[t] = f"{rows[0][0]}:{rows[0][1]}"
        return out

    def stop(self) -> None:
        subprocess.run(["bash", str(SCRIPT), "stop", str(self.state)], capture_output=True, timeout=60)

    def start_replica(self, state: Path) -> PgReplica:
        """A hot-standby streaming replica of this server (pg_basebackup -R), started in `state`; stop() it."""
        return PgReplica(state, self)

    def wal_position(self) -> str:
        """The primary's current WAL position: a replica that replayed up to it has every commit made before."""
        return str(self.execute("SELECT pg_current_wal_lsn()")[0][0])


class PgReplica(PgServer):
    """A streaming hot standby of `primary`: read-only, same roles, databases and password as the primary."""

    def __init__(self, state: Path, primary: PgServer):
        self.state, self.primary = state, primary
        out = subprocess.run(
            ["bash", str(SCRIPT), "replica", str(state), str(primary.state)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        if out.returncode != 0:
            raise RuntimeError(f"pg_cluster.sh replica failed: {out.stderr[-2000:]}")
        self.port = int((state / "port").read_text())
        self._lock = threading.Lock()
        self._template = True  # databases are the primary's: new_database here would be refused

    def wait_replayed(self, timeout_s: float = 60) -> float:
        """Wait until the replica has replayed everything the primary committed so far; the seconds it took."""
        target = self.primary.wal_position()
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout_s:
            if self.execute(f"SELECT pg_wal_lsn_diff(pg_last_wal_replay_lsn(), '{target}') >= 0")[0][0]:
                return time.monotonic() - t0
            time.sleep(0.05)
        raise TimeoutError(f"the replica did not replay up to {target} within {timeout_s} s")


@pytest.fixture(scope="session")
def pg_server() -> PgServer:
    """The session's PostgreSQL server (skips locally, fails under CI=true, when PostgreSQL is not installed)."""
    from tests.conftest import require

    require(pg_bin() is not None, "PostgreSQL server binaries are not installed (apt-get install postgresql)")
    require(shutil.which("runuser") is not None or os.geteuid() != 0, "runuser is missing (needed as root)")
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        require(False, "psycopg2 is not installed (pip install psycopg2-binary)")
    import tempfile

    # not under pytest's tmp dir: that is private to root, and the server runs as the postgres user
    state = Path(tempfile.mkdtemp(prefix="kdgat-pg-"))
    server = PgServer(state)
    yield server
    server.stop()
    shutil.rmtree(state, ignore_errors=True)
