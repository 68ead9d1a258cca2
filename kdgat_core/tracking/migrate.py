"""`kdgat migrate SRC DEST`: move an MLflow SQLite store into an empty PostgreSQL database, every id kept.

MLflow has no way to move a store between backends. Both stores have MLflow's schema at the same alembic version (the
destination made by `mlflow db upgrade`), so every table is copied column for column (with COPY): experiments, runs, params,
tags, metrics, latest_metrics, inputs, datasets and whatever else holds rows, in foreign-key order, in ONE
transaction (an interrupted migration leaves the destination empty). SQLite's 0/1 become PostgreSQL booleans where
the column is boolean, and each serial column's sequence continues after the highest copied id.

Afterwards it verifies: the row count of every table, and `MlflowClient.search_runs` on both stores returns the same
runs with the same values (all of them, or a fixed sample of a big store). The source is opened read-only
(`mode=ro`); Python's sqlite3 and MLflow share one SQLite library, and nothing here uses DuckDB on it.
"""

from __future__ import annotations

import io
import math
import os
import random
import re
import sqlite3
import tempfile
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kdgat_core.config import KdgatError, is_postgres_uri, libpq_dsn, mask_secret, mask_uri, sqlite_path

BATCH = 5000
COPY_BATCH = 50_000  # rows per COPY call (COPY loads ~10x faster than INSERT ... VALUES here)
# A bigger table is loaded without its indexes and keys, which are rebuilt afterwards (PostgreSQL's "Populating a
# Database"): inserting 20M metric points into three btrees bigger than shared_buffers ran at ~3k rows/s here.
BULK_ROWS = 100_000
_COPY_SPECIAL = re.compile(r"[\\\t\n\r]")  # what COPY's text format escapes
VERIFY_ALL_UP_TO = 5000  # runs; above this a fixed random sample of VERIFY_SAMPLE runs is compared
VERIFY_SAMPLE = 1000
# Tables `mlflow db upgrade` itself fills (MLflow 3.17: the default workspace)
SEEDED_TABLES = frozenset({"workspaces"})


@dataclass
class MigrationReport:
    source: str
    dest: str  # masked
    schema_version: str
    tables: dict[str, int] = field(default_factory=dict)  # rows copied per table
    seconds: float = 0.0
    verified_runs: int = 0
    verify_seconds: float = 0.0


def _mask(uri: str) -> str:
    return mask_uri(uri)


def _pg_connect(uri: str) -> Any:
    if not is_postgres_uri(uri):
        raise KdgatError(f"DEST '{_mask(uri)}' is not a PostgreSQL URI (postgresql://user@host/db).")
    try:
        import psycopg2
    except ImportError:
        raise KdgatError("psycopg2 is missing; pip install psycopg2-binary.") from None
    try:
        return psycopg2.connect(libpq_dsn(uri))
    except psycopg2.Error as exc:
        reason = mask_secret(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__, uri)
        raise KdgatError(f"Cannot connect to {_mask(uri)}: {reason}") from None


def _sqlite_open(src: str) -> tuple[sqlite3.Connection, Path]:
    path = sqlite_path(src, must_exist=False)
    if path is None:
        raise KdgatError(f"SRC '{_mask(src)}' is not a SQLite store (sqlite:///path/mlflow.db or a path).")
    path = path.expanduser().absolute()
    if not path.is_file():
        raise KdgatError(f"SRC {path} does not exist.")
    con = sqlite3.connect(f"file:{urllib.parse.quote(str(path))}?mode=ro", uri=True, timeout=30)
    try:
        con.execute("SELECT version_num FROM alembic_version").fetchone()
    except sqlite3.DatabaseError as exc:
        con.close()
        raise KdgatError(f"SRC {path} is not an MLflow tracking database ({exc}).") from None
    return con, path


def _fk_order(cur: Any, tables: list[str]) -> list[str]:
    """Tables ordered so that every table comes after the tables its foreign keys point to."""
    cur.execute(
        """SELECT c.conrelid::regclass::text, c.confrelid::regclass::text FROM pg_constraint c
           JOIN pg_namespace n ON n.oid = c.connamespace WHERE c.contype = 'f' AND n.nspname = current_schema()"""
    )
    deps: dict[str, set[str]] = {t: set() for t in tables}
    for child, parent in cur.fetchall():
        child, parent = child.strip('"'), parent.strip('"')
        if child in deps and parent in deps and child != parent:
            deps[child].add(parent)
    out: list[str] = []
    while deps:
        ready = sorted(t for t, d in deps.items() if not d - set(out))
        if not ready:  # a cycle (none in MLflow's schema): the rest in name order, checked at commit
            ready = sorted(deps)
        for t in ready:
            out.append(t)
            del deps[t]
    return out


def _pg_columns(cur: Any, table: str) -> dict[str, str]:
    cur.execute(
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = current_schema() AND table_name = %s ORDER BY ordinal_position",
        (table,),
    )
    return dict(cur.fetchall())


def _convert(value: Any, pg_type: str) -> Any:
    if value is None:
        return None
    if pg_type == "boolean":
        return bool(value) if not isinstance(value, str) else value.strip().lower() in ("1", "true", "t")
    if pg_type in ("double precision", "real") and isinstance(value, float) and math.isnan(value):
        return float("nan")
    return value


def migrate(
    src: str,
    dest: str,
    progress: Callable[[str], None] = lambda message: None,
    verify: bool = True,
) -> MigrationReport:
    """Copy the SQLite store `src` into the empty PostgreSQL database `dest` (see the module docstring)."""
    from psycopg2.extras import execute_values

    t0 = time.perf_counter()
    scon, spath = _sqlite_open(src)
    pg = _pg_connect(dest)
    try:
        cur = pg.cursor()
        src_version = scon.execute("SELECT version_num FROM alembic_version").fetchone()[0]
        try:
            cur.execute("SELECT version_num FROM alembic_version")
            row = cur.fetchone()
        except Exception:
            pg.rollback()
            row = None
        if row is None:
            raise KdgatError(
                f"DEST {_mask(dest)} has no MLflow schema; create it first with "
                f"`mlflow db upgrade <DEST>` (MLflow {_mlflow_version()}, the same version as the source's)."
            )
        if row[0] != src_version:
            raise KdgatError(
                f"Schema versions differ: SRC is at alembic {src_version}, DEST at {row[0]}; run "
                "`mlflow db upgrade` on the older one with the same MLflow first."
            )
        src_tables = {
            r[0]
            for r in scon.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
        }
        cur.execute(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'"
        )
        dest_tables = {r[0] for r in cur.fetchall()}
        tables = sorted((src_tables & dest_tables) - {"alembic_version"})
        only_src = sorted(
            t
            for t in src_tables - dest_tables
            if scon.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] and t != "alembic_version"
        )
        if only_src:
            raise KdgatError(f"DEST has no table {', '.join(only_src)}, which holds rows in SRC; nothing was copied.")
        # empty: no rows but those MLflow itself seeds (the default workspace, rows SRC holds too, replaced by SRC's)
        # and the Default experiment it creates on first use
        busy, seeded = [], []
        for t in tables:
            cur.execute(f'SELECT count(*) FROM "{t}"')
            n = cur.fetchone()[0]
            if not n:
                continue
            if (t == "experiments" and n == 1 and _only_default_experiment(cur)) or (
                t in SEEDED_TABLES and _seeded_rows(scon, cur, t)
            ):
                seeded.append(t)
            else:
                busy.append(f"{t} ({n})")
        if busy:
            raise KdgatError(
                f"DEST {_mask(dest)} is not empty ({', '.join(busy[:5])}); migrate into a new database made with "
                "`mlflow db upgrade`."
            )
        order = _fk_order(cur, tables)
        for t in reversed(order):  # children first
            if t in seeded:
                cur.execute(f'DELETE FROM "{t}"')
        report = MigrationReport(source=str(spath), dest=_mask(dest), schema_version=src_version)
        for table in order:
            pg_cols = _pg_columns(cur, table)
            src_cols = [r[1] for r in scon.execute(f'PRAGMA table_info("{table}")')]
            cols = [c for c in src_cols if c in pg_cols]
            total = scon.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0]
            if not total:
                report.tables[table] = 0
                continue
            types = [pg_cols[c] for c in cols]
            names = ", ".join(f'"{c}"' for c in cols)
            sql = f'INSERT INTO "{table}" ({names}) VALUES %s'
            copy = "bytea" not in types  # binary columns keep psycopg2's adaptation
            rebuild = _drop_for_load(cur, table) if total > BULK_ROWS else []
            done, last_shown = 0, time.perf_counter()
            reader = scon.execute(f'SELECT {names} FROM "{table}"')
            while True:
                rows = reader.fetchmany(COPY_BATCH if copy else BATCH)
                if not rows:
                    break
                if copy:
                    _copy_rows(cur, table, names, types, rows)
                else:
                    execute_values(
                        cur, sql, [tuple(_convert(v, t) for v, t in zip(r, types)) for r in rows], page_size=BATCH
                    )
                done += len(rows)
                if time.perf_counter() - last_shown > 2:
                    progress(f"{table}: {done:,} of {total:,} rows")
                    last_shown = time.perf_counter()
            if rebuild:
                progress(f"{table}: {done:,} rows; rebuilding its {len(rebuild)} indexes and keys")
                for statement in rebuild:
                    cur.execute(statement)
            report.tables[table] = done
            progress(f"{table}: {done:,} rows")
        _advance_sequences(cur, order)
        pg.commit()
        report.seconds = time.perf_counter() - t0
        progress(f"committed {sum(report.tables.values()):,} rows in {report.seconds:.1f} s; verifying")
        _verify_counts(scon, cur, report)
    except KdgatError:
        pg.rollback()
        raise
    except Exception as exc:
        import psycopg2

        pg.rollback()
        if not isinstance(exc, psycopg2.Error | sqlite3.Error):
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise KdgatError(
            f"Migration failed and was rolled back (DEST is unchanged): {mask_secret(first, dest)}"
        ) from None
    except BaseException:
        pg.rollback()
        raise
    finally:
        scon.close()
        pg.close()
    if verify:
        t1 = time.perf_counter()
        report.verified_runs = verify_search_runs(spath, dest, progress)
        report.verify_seconds = time.perf_counter() - t1
    return report


def _seeded_rows(scon: sqlite3.Connection, cur: Any, table: str) -> bool:
    """True when every row DEST holds in `table` is also in SRC (rows `mlflow db upgrade` writes, such as the default
    workspace): those are replaced by SRC's. Compared as text, over the columns both have."""
    pg_cols = _pg_columns(cur, table)
    cols = [r[1] for r in scon.execute(f'PRAGMA table_info("{table}")') if r[1] in pg_cols]
    if not cols:
        return False
    names = ", ".join(f'"{c}"' for c in cols)
    cur.execute(f'SELECT {names} FROM "{table}" LIMIT 1001')
    dest_rows = cur.fetchall()
    if len(dest_rows) > 1000:
        return False
    src_rows = {tuple(str(v) for v in r) for r in scon.execute(f'SELECT {names} FROM "{table}"')}
    return all(tuple(str(v) for v in r) in src_rows for r in dest_rows)


def _only_default_experiment(cur: Any) -> bool:
    cur.execute("SELECT count(*) FROM experiments WHERE experiment_id = 0 AND name = 'Default'")
    return cur.fetchone()[0] == 1


def _advance_sequences(cur: Any, tables: list[str]) -> None:
    """Serial columns continue after the highest copied id (MLflow creates experiments by their sequence)."""
    for table in tables:
        cur.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() "
            "AND table_name = %s AND (column_default LIKE 'nextval(%%' OR is_identity = 'YES')",
            (table,),
        )
        for (col,) in cur.fetchall():
            cur.execute(
                f"""SELECT setval(pg_get_serial_sequence(%s, %s), coalesce(max("{col}"), 0) + 1, false)
                    FROM "{table}" """,
                (f'"{table}"', col),
            )


def _drop_for_load(cur: Any, table: str) -> list[str]:
    """Drop `table`'s indexes, primary and unique keys and foreign keys, unless another table's foreign key points at
    it; return the statements that recreate them (keys, then indexes, then foreign keys, which check every row once).
    Inside the migration's transaction: a failure restores them with everything else. Without the rights to drop
    them (not the tables' owner), nothing is dropped and the load goes through the indexes."""
    cur.execute("SAVEPOINT kdgat_bulk")
    try:
        cur.execute(
            "SELECT count(*) FROM pg_constraint WHERE contype = 'f' AND confrelid = %s::regclass "
            "AND conrelid <> confrelid",
            (f'"{table}"',),
        )
        if cur.fetchone()[0]:
            cur.execute("RELEASE SAVEPOINT kdgat_bulk")
            return []
        cur.execute(
            "SELECT conname, contype, pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conrelid = %s::regclass AND contype IN ('p', 'u', 'f') ORDER BY contype DESC, conname",
            (f'"{table}"',),
        )
        constraints = cur.fetchall()  # u, p, f: keys before the foreign keys when recreating
        cur.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema() AND tablename = %s "
            "ORDER BY indexname",
            (table,),
        )
        keys = {name for name, _, _ in constraints}
        indexes = [(name, definition) for name, definition in cur.fetchall() if name not in keys]
        for name, _, _ in sorted(constraints, key=lambda c: c[1] != "f"):  # foreign keys first
            cur.execute(f'ALTER TABLE "{table}" DROP CONSTRAINT "{name}"')
        for name, _ in indexes:
            cur.execute(f'DROP INDEX "{name}"')
    except Exception as exc:
        import psycopg2

        if not isinstance(exc, psycopg2.Error):
            raise
        cur.execute("ROLLBACK TO SAVEPOINT kdgat_bulk")
        return []
    cur.execute("RELEASE SAVEPOINT kdgat_bulk")
    cur.execute("SET maintenance_work_mem = '256MB'")  # index builds sort in memory
    return (
        [f'ALTER TABLE "{table}" ADD CONSTRAINT "{n}" {d}' for n, t, d in constraints if t != "f"]
        + [d for _, d in indexes]
        + [f'ALTER TABLE "{table}" ADD CONSTRAINT "{n}" {d}' for n, t, d in constraints if t == "f"]
    )


def _copy_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def _copy_plain(value: Any) -> str:
    """A value in COPY's text format (NULL as \\N); what execute_values stores for it: floats by repr (exact; PostgreSQL
    reads 'nan', 'inf', '-inf'), ints and text as they are."""
    if value is None:
        return "\\N"
    if type(value) is str:
        return _copy_escape(value) if _COPY_SPECIAL.search(value) else value
    if isinstance(value, bytes):
        return "\\\\x" + value.hex()
    return str(value)


def _copy_boolean(value: Any) -> str:
    value = _convert(value, "boolean")
    return "\\N" if value is None else ("t" if value else "f")


def _copy_rows(cur: Any, table: str, names: str, types: list[str], rows: list[tuple]) -> None:
    """Load rows with COPY FROM STDIN (text format), converting as `_convert` does."""
    convs = [_copy_boolean if t == "boolean" else _copy_plain for t in types]
    text = "\n".join(["\t".join([f(v) for f, v in zip(convs, r)]) for r in rows])
    cur.copy_expert(f'COPY "{table}" ({names}) FROM STDIN', io.StringIO(text + "\n"))


def _verify_counts(scon: sqlite3.Connection, cur: Any, report: MigrationReport) -> None:
    for table in report.tables:
        want = scon.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0]
        cur.execute(f'SELECT count(*) FROM "{table}"')
        got = cur.fetchone()[0]
        if want != got:
            raise KdgatError(f"Verification failed: {table} has {want} rows in SRC but {got} in DEST.")


def verify_search_runs(src_path: Path, dest: str, progress: Callable[[str], None] = lambda m: None) -> int:
    """`MlflowClient.search_runs` on both stores returns the same runs with the same values; returns runs compared.
    Every run up to VERIFY_ALL_UP_TO runs, else a fixed random sample of VERIFY_SAMPLE."""
    from mlflow import MlflowClient
    from mlflow.entities import ViewType

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    dest_uri = "postgresql+psycopg2://" + libpq_dsn(dest)[len("postgresql://") :]
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="kdgat-migrate-") as tmp:
        os.chdir(tmp)  # MLflow makes a folder named after a file: URI's directory in the working directory
        try:
            src_client = MlflowClient(f"sqlite:///file:{urllib.parse.quote(str(src_path))}?mode=ro&uri=true")
            dest_client = MlflowClient(dest_uri)
            experiments = [
                e.experiment_id for e in src_client.search_experiments(view_type=ViewType.ALL, max_results=50000)
            ]
            scon = sqlite3.connect(f"file:{urllib.parse.quote(str(src_path))}?mode=ro", uri=True)
            try:
                ids = [r[0] for r in scon.execute("SELECT run_uuid FROM runs ORDER BY run_uuid")]
            finally:
                scon.close()
            if len(ids) > VERIFY_ALL_UP_TO:
                ids = sorted(random.Random(0).sample(ids, VERIFY_SAMPLE))
            for i in range(0, len(ids), 100):
                chunk = ids[i : i + 100]
                flt = "attributes.run_id IN (" + ", ".join(f"'{r}'" for r in chunk) + ")"
                a = _runs_dict(src_client.search_runs(experiments, flt, ViewType.ALL, max_results=1000))
                b = _runs_dict(dest_client.search_runs(experiments, flt, ViewType.ALL, max_results=1000))
                if a != b:
                    diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
                    raise KdgatError(f"Verification failed: search_runs differs for run(s) {', '.join(diff[:5])}.")
                if i and i % 1000 == 0:
                    progress(f"search_runs: {i:,} of {len(ids):,} runs agree")
        finally:
            os.chdir(cwd)
    return len(ids)


def _runs_dict(runs: Any) -> dict[str, dict]:
    def clean(value: Any) -> Any:
        return "NaN" if isinstance(value, float) and math.isnan(value) else value

    return {
        r.info.run_id: {
            "info": {k: clean(v) for k, v in dict(r.info).items()},
            "params": dict(r.data.params),
            "tags": dict(r.data.tags),
            "metrics": {k: clean(v) for k, v in r.data.metrics.items()},
            "inputs": sorted(str(d.dataset) for d in (r.inputs.dataset_inputs if r.inputs else [])),
        }
        for r in runs
    }


def _mlflow_version() -> str:
    try:
        from importlib.metadata import version

        return version("mlflow")
    except Exception:
        return "?"
