"""Fixtures for the TUI tests: a real MLflow-written tracking DB per session, an isolated read cache, helpers."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.tui.fixture_db import normalised_copy, write_sample_db


@pytest.fixture(scope="session")
def sqlite_sample_db(tmp_path_factory) -> str:
    """sqlite URI of the sample runs (2 datasets x 2 seeds x 4 stages x teacher/student/KD, a sweep, a failure)."""
    return f"sqlite:///{write_sample_db(tmp_path_factory.mktemp('tracking'))}"


@pytest.fixture(scope="session")
def pg_sample_db(sqlite_sample_db, pg_server) -> str:
    """The same runs in PostgreSQL, moved there by `kdgat migrate` (same ids): postgresql+psycopg2 URI."""
    uri = pg_server.new_store("tui_sample")
    # in a process of its own: this one reads the SQLite file through DuckDB
    res = subprocess.run(
        [sys.executable, "-m", "kdgat_core.cli", "migrate", "--no-verify", sqlite_sample_db, uri],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr
    return uri


@pytest.fixture(scope="session")
def sample_db(request) -> str:
    """URI of the sample runs: SQLite, or each backend in turn for a test marked `@ON_BOTH_STORES`."""
    backend = getattr(request, "param", "sqlite")
    return request.getfixturevalue("sqlite_sample_db" if backend == "sqlite" else "pg_sample_db")


# The same screens from a PostgreSQL store (the sample runs migrated, ids kept) as from the SQLite file.
ON_BOTH_STORES = pytest.mark.parametrize("sample_db", ["sqlite", "postgres"], indirect=True)


@pytest.fixture(scope="session")
def stable_db(sqlite_sample_db, tmp_path_factory) -> str:
    """The same runs with fixed ids and times, for snapshots."""
    return f"sqlite:///{normalised_copy(sqlite_sample_db[len('sqlite:///') :], tmp_path_factory.mktemp('stable'))}"


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    """Each test gets its own query cache and no user kdgat.toml or MLFLOW_TRACKING_URI."""
    monkeypatch.setenv("KDGAT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)


async def wait_for(pilot, predicate, timeout: float = 20.0, what: str = "condition") -> None:
    """Let workers finish: poll `predicate` while the app keeps processing messages."""
    import time

    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.05)


async def runs_ready(pilot):
    app = pilot.app
    await wait_for(
        pilot,
        lambda: getattr(app.screen, "view", None) is not None and not getattr(app.screen, "cached", False),
        what="the runs table",
    )
    await pilot.pause()
    return app.screen


@pytest.fixture
def anyio_backend():
    """Async tests run on asyncio (anyio's pytest plugin; Textual needs asyncio)."""
    return "asyncio"


# the real single-node SLURM cluster of the integration tests (started by them or by .ci/run)
from tests.integration.conftest import slurm_cluster  # noqa: E402,F401
