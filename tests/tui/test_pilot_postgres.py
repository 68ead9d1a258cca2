"""kdgat-tui on a PostgreSQL store: the sample runs moved there with `kdgat migrate` (same ids) paint the same Runs
screen as on SQLite, and a run's detail shows its history from PostgreSQL. The journeys of test_pilot.py marked
`ON_BOTH_STORES` (filter, sort, diff, lineage, run detail, curves, SQL console) run on both stores too."""

from __future__ import annotations

import pytest

from kdgat_core.query import open_db
from kdgat_tui.app import KdgatApp
from tests.tui.conftest import runs_ready, wait_for
from tests.tui.screen_text import screen_text

pytestmark = pytest.mark.anyio


async def test_runs_screen_on_postgres_equals_sqlite(sqlite_sample_db, pg_sample_db):
    with open_db(sqlite_sample_db) as db:
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


def test_a_server_uri_alone_says_what_to_set_without_its_password(capsys):
    from kdgat_tui.app import main

    with pytest.raises(SystemExit) as ended:
        main(["--tracking-uri", "https://jobs:s3cret@mlflow.lab.example:5000", "--refresh", "0"])
    assert ended.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("kdgat-tui: ") and len(err.strip().splitlines()) == 1, err
    assert "--read-uri" in err and "KDGAT_READ_URI" in err and "s3cret" not in err


async def test_the_read_uri_in_kdgat_toml_sends_the_dashboard_to_postgres(sqlite_sample_db, pg_sample_db, tmp_path):
    """Jobs write through a server (kdgat.toml's uri); the dashboard reads its database (read_uri), found in kdgat.toml
    in the working directory."""
    (tmp_path / "kdgat.toml").write_text(
        f'[tracking]\nuri = "https://mlflow.lab.example:5000"\nread_uri = "{pg_sample_db}"\n'
    )
    with open_db(sqlite_sample_db) as db:
        expected = db.runs(arrow=True)
    app = KdgatApp(refresh_s=0)
    async with app.run_test(size=(120, 36)) as pilot:
        screen = await runs_ready(pilot)
        assert set(screen.view.run_ids) == set(expected["run_id"].to_pylist())
