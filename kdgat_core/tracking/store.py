"""The MLflow client for one tracking URI: safe first-time schema creation and retries on a locked SQLite file.

Many SLURM jobs start at once against one SQLite file on shared scratch (rollback journal, never WAL). MLflow creates
its tables without IF NOT EXISTS, so the first creation is serialised with an exclusive flock on a sidecar file, and
every MLflow call retries "database is locked" with exponential backoff and jitter.
"""

from __future__ import annotations

import fcntl
import logging
import os
import random
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from kdgat_core import mlflow_schema
from kdgat_core.config import (
    ARTIFACT_ROOT_DIR,
    EXPERIMENT_NAME,
    KdgatError,
    mask_secret,
    mask_uri,
    resolve_tracking_uri,
    sqlite_path,
)

if TYPE_CHECKING:  # mlflow is imported lazily: importing kdgat_core.tracking stays cheap
    from mlflow import MlflowClient

T = TypeVar("T")
log = logging.getLogger(__name__)

INIT_LOCK_SUFFIX = ".kdgat-init.lock"
# Bounded patience for a locked DB: long enough to outlast a burst of jobs, short enough to surface a real fault.
RETRY_TOTAL_SECONDS = 120.0
RETRY_FIRST_DELAY = 0.05
RETRY_MAX_DELAY = 5.0
# MLflow sessions already wait this long on a busy lock before failing (busy_timeout=20000 ms).
_LOCK_MESSAGES = ("database is locked", "database table is locked", "database schema has changed")


def is_lock_error(exc: BaseException | None) -> bool:
    """True for SQLite lock contention, whichever layer (sqlite3, SQLAlchemy, MLflow) wrapped it."""
    seen = 0
    while exc is not None and seen < 5:
        text = str(exc).lower()
        if any(m in text for m in _LOCK_MESSAGES):
            return True
        if type(exc).__name__ == "OperationalError" and "locked" in text:
            return True
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return False


def with_retry(
    fn: Callable[..., T], *args: Any, deadline_s: float = RETRY_TOTAL_SECONDS, what: str = "MLflow call", **kwargs: Any
) -> T:
    """Call fn, retrying lock errors with exponential backoff plus jitter until deadline_s has passed."""
    start = time.monotonic()
    delay = RETRY_FIRST_DELAY
    attempt = 0
    while True:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            if not is_lock_error(exc):
                raise
            attempt += 1
            waited = time.monotonic() - start
            if waited >= deadline_s:
                raise KdgatError(
                    f"The tracking database stayed locked for {waited:.0f} s ({what}, {attempt} attempts); "
                    "another process may hold it: check running jobs and retry."
                ) from exc
            # full jitter keeps simultaneous jobs from retrying in lockstep
            sleep = min(random.uniform(delay / 2, delay * 1.5), deadline_s - waited)
            log.debug("%s: database locked, retry %d in %.2f s", what, attempt, sleep)
            time.sleep(max(sleep, 0.0))
            delay = min(delay * 2, RETRY_MAX_DELAY)


@dataclass(frozen=True)
class Store:
    """One tracking URI, resolved: the client, the experiment id and where run artifacts go."""

    uri: str
    db_path: Path | None  # absolute SQLite file, None for a tracking server
    client: MlflowClient
    experiment_id: str

    @property
    def artifact_root(self) -> Path:
        """`experimentruns/` next to the SQLite file (the working directory for a tracking server)."""
        base = self.db_path.parent if self.db_path is not None else Path.cwd()
        return (base / ARTIFACT_ROOT_DIR).resolve()


def normalize_uri(tracking_uri: str | None) -> tuple[str, Path | None]:
    """Resolve flag/env/kdgat.toml/default, and make a sqlite path absolute so the store does not depend on cwd."""
    uri = tracking_uri or resolve_tracking_uri(None).value
    path = sqlite_path(uri, must_exist=False)
    if path is None:
        return mlflow_driver_uri(uri), None
    path = path.expanduser().resolve()
    return f"sqlite:///{path}", path


def mlflow_driver_uri(uri: str) -> str:
    """A bare postgresql:// (libpq's spelling, which kdgat's reader takes) with the driver MLflow has here:
    SQLAlchemy 2.x maps it to psycopg 3, which kdgat does not install; psycopg2 it does."""
    import re

    return re.sub(r"^(postgresql|postgres)://", "postgresql+psycopg2://", uri, count=1, flags=re.IGNORECASE)


_stores: dict[str, Store] = {}
_stores_lock = threading.Lock()


def get_store(tracking_uri: str | None = None, create: bool = True) -> Store | None:
    """The Store for a URI, creating the DB schema and the experiment once (under the init lock) when create is set.

    With create=False a missing SQLite file or experiment gives None and nothing is written.
    """
    uri, path = normalize_uri(tracking_uri)
    with _stores_lock:
        if uri in _stores:
            return _stores[uri]
        check_reachable(uri, path)
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # compute nodes have no network
        client = None
        if path is not None:
            state = _db_state(path)
            if state == FOREIGN:
                raise KdgatError(
                    f"{path} is a SQLite file but not an MLflow tracking database; "
                    "point --tracking-uri at an MLflow DB or at a new file."
                )
            if state == NEWER:
                raise KdgatError(schema_advice(path))
            if not create and state in (MISSING, BLANK, MLFLOW):
                # reading must not create (or migrate) anything; MLFLOW: no experiment of ours, and MLflow's client
                # would write its Default experiment into a store that has none
                return None
            if not create and state in (HALF, OLDER):
                # MLflow's client would create the missing tables or migrate: only `kdgat run` may do that
                raise KdgatError(schema_advice(path))
            if create and state != READY:
                path.parent.mkdir(parents=True, exist_ok=True)
                import mlflow.store.tracking.sqlalchemy_store  # noqa: F401 - seconds of import, not under the lock

                with _init_lock(path):
                    # checked again under the lock: processes that waited find it done and go on in parallel
                    state = _db_state(path)
                    if state in (HALF, NEWER):  # under the lock, half-created means a creation was interrupted
                        raise KdgatError(schema_advice(path))
                    if state != READY:
                        client = _new_client(uri)
                        experiment_id = _get_or_create_experiment(client, uri, create=True)
        if client is None:
            client = _new_client(uri)
            experiment_id = _get_or_create_experiment(client, uri, create=create)
        if experiment_id is None:
            return None
        store = Store(uri=uri, db_path=path, client=client, experiment_id=experiment_id)
        _stores[uri] = store
        return store


# An MLflow server that does not answer /health within this many seconds is reported, not retried for minutes
HEALTH_TIMEOUT_S = 5.0


def check_reachable(uri: str, path: Path | None) -> None:
    """Fail fast, in one sentence, on a tracking URI that cannot work: a folder where the SQLite file should be, or
    an http(s) server that does not answer /health (MLflow's client would retry for minutes)."""
    if path is not None:
        if path.exists() and not path.is_file():
            what = "a directory" if path.is_dir() else "not a regular file"
            raise KdgatError(
                f"Tracking database {path} is {what}; give a SQLite file path (e.g. {path / 'mlflow.db'})."
            )
        return
    if not uri.startswith(("http://", "https://")):
        return
    import urllib.error
    import urllib.request

    health = uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(health, timeout=HEALTH_TIMEOUT_S) as resp:
            resp.read(64)
    except urllib.error.HTTPError as exc:
        raise KdgatError(
            f"The MLflow server at {mask_uri(uri)} answered {exc.code} on /health; check the URI."
        ) from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise KdgatError(
            f"Cannot reach the MLflow server at {mask_uri(uri)} ({mask_secret(str(reason), uri)}); start it or check "
            "--tracking-uri."
        ) from None


def _new_client(uri: str) -> MlflowClient:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri=uri)
    # Touching the store builds the engine and (on an empty file) runs MLflow's migrations: do it now, with retries.
    try:
        with_retry(lambda: client._tracking_client.store, what="opening the tracking store")
    except MlflowException as exc:  # e.g. a DB written by an older MLflow: "run `mlflow db upgrade`"
        first = (str(exc).strip().splitlines() or ["unknown error"])[0]
        raise KdgatError(f"MLflow cannot open {mask_uri(uri)}: {mask_secret(first, uri)}") from None
    return client


def _get_or_create_experiment(client: MlflowClient, uri: str, create: bool) -> str | None:
    exp = with_retry(client.get_experiment_by_name, EXPERIMENT_NAME, what="looking up the experiment")
    if exp is None:
        if not create:
            return None
        path = sqlite_path(uri, must_exist=False)
        location = None
        if path is not None:
            # absolute, so MLflow's own artifact copies do not land wherever the job happened to start
            location = (path.parent / "mlruns").resolve().as_uri()
        return with_retry(
            client.create_experiment, EXPERIMENT_NAME, artifact_location=location, what="creating the experiment"
        )
    if exp.lifecycle_stage == "deleted":
        raise KdgatError(
            f"Experiment '{EXPERIMENT_NAME}' is deleted in {mask_uri(uri)}; restore it with "
            f"`mlflow experiments restore --experiment-id {exp.experiment_id}` before writing runs."
        )
    return exp.experiment_id


def schema_advice(db_path: Path) -> str:
    """The sentence for a DB whose schema is half-created, older or newer than MLflow here writes."""
    con = sqlite3.connect(f"{db_path.as_uri()}?mode=ro", uri=True, timeout=20)
    try:
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        row = con.execute("SELECT version_num FROM alembic_version").fetchone() if "alembic_version" in tables else None
    finally:
        con.close()
    revision = row[0] if row else None
    return mlflow_schema.advice(mlflow_schema.classify(tables, revision), db_path, revision, tables)


class _init_lock:
    """Exclusive flock on `<db>.kdgat-init.lock`: one process at a time creates the schema and the experiment."""

    def __init__(self, db_path: Path):
        self.path = db_path.with_name(db_path.name + INIT_LOCK_SUFFIX)
        self.fd: int | None = None

    def __enter__(self) -> _init_lock:
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            fcntl.flock(fd, fcntl.LOCK_EX)
            # the holder before us removed the file on its way out: our lock is on a dead inode, take a fresh one
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                self.fd = fd
                return self
            os.close(fd)

    def __exit__(self, *exc: object) -> None:
        assert self.fd is not None
        # removed while still held, so no lock file stays beside the DB; waiters notice and retry (see __enter__)
        try:
            os.unlink(self.path)
        except OSError:
            pass
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
        self.fd = None


MISSING, BLANK, MLFLOW, READY, FOREIGN = "missing", "blank", "mlflow", "ready", "foreign"
# schema states that need the user (see kdgat_core.mlflow_schema): interrupted creation, older or newer MLflow
HALF, OLDER, NEWER = mlflow_schema.HALF, mlflow_schema.OLDER, mlflow_schema.NEWER


def _db_state(db_path: Path) -> str:
    """What the file is, read-only: missing, blank (no tables), mlflow (schema, no experiment of ours), ready, foreign.

    READY means migrated with our experiment present, which is created only after the migrations completed.
    """
    if not db_path.is_file():
        return MISSING
    if db_path.stat().st_size == 0:
        return BLANK

    def probe() -> str:
        con = sqlite3.connect(f"{db_path.as_uri()}?mode=ro", uri=True, timeout=20)
        try:
            tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if not tables:
                return BLANK
            if not tables & {"alembic_version", "experiments"}:
                return FOREIGN
            row = (
                con.execute("SELECT version_num FROM alembic_version").fetchone()
                if "alembic_version" in tables
                else None
            )
            schema = mlflow_schema.classify(tables, row[0] if row else None)
            if schema in (HALF, OLDER, NEWER):
                return schema
            row = con.execute("SELECT 1 FROM experiments WHERE name = ?", (EXPERIMENT_NAME,)).fetchone()
            return READY if row is not None else MLFLOW
        finally:
            con.close()

    try:
        return with_retry(probe, what="checking the tracking database")
    except sqlite3.DatabaseError:
        return FOREIGN  # "file is not a database"
