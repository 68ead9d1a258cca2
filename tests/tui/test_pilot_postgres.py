"""kdgat-tui on a PostgreSQL store: the sample runs moved there with `kdgat migrate` (same ids) paint the same Runs
screen as on SQLite, and a run's detail shows its history from PostgreSQL."""

from __future__ import annotations

import subprocess
import sys

import pytest

from kdgat_core.query import open_db
from kdgat_tui.app import KdgatApp
from tests.tui.conftest import runs_ready, wait_for
from tests.tui.screen_text import screen_text

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def pg_sample_db(sample_db, pg_server) -> str:
    uri = pg_server.new_store("tui_sample")
    # in a process of its own: this one reads the SQLite file through DuckDB
    res = subprocess.run(
        [sys.executable, "-m", "kdgat_core.cli", "migrate", "--no-verify", sample_db, uri],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr
    return uri


async def test_runs_screen_on_postgres_equals_sqlite(sample_db, pg_sample_db):
    with open_db(sample_db) as db:
        expected = db.runs(arrow=True)
    with open_db(pg_sample_db) as db:
        assert repr(db.runs(arrow=True).to_pylist()) == repr(expected.to_pylist())  # repr: NaN equals NaN
    app = KdgatApp(tracking_uri=pg_sample_db, refresh_s=0)
    async with app.run_test(size=(120, 36)) as pilot:
        screen = await runs_ready(pilot)
        assert set(screen.view.run_ids) == set(expected["run_id"].to_pylist())
        text = screen_text(app)
        assert f"{expected.num_rows} of {expected.num_rows} runs" in text
        assert ":mlflow@" not in text  # the title shows the store without its password
        await pilot.press("enter")  # the newest run's detail: final metrics and history read from PostgreSQL
        await wait_for(pilot, lambda: type(app.screen).__name__ == "RunDetailScreen", what="the run detail")
        newest = expected.sort_by([("start_time", "descending")])["run_name"][0].as_py()
        await wait_for(pilot, lambda: newest in screen_text(app), what="the run's name")
