"""Shared test helpers. A test that needs a missing component skips locally, but fails under CI=true."""

from __future__ import annotations

import os

import pytest

# the shared tiny pipeline DB fixture (`tiny_pipeline_db`), trained through `kdgat run`; a PostgreSQL server (`pg_server`)
pytest_plugins = ["tests.pipeline_db", "tests.pg"]

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(condition: bool, reason: str) -> None:
    """Skip (locally) or fail (under CI=true) when a component the test needs is missing."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"required component missing under CI: {reason}")
    pytest.skip(reason)
