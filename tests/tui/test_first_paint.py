"""The Runs screen's first paint formats one page of rows and the rest right after (RunsModel.view(first=...)):
what the first frame shows must be what the whole view shows, so nothing on screen moves when the rest arrives.
A cached copy found current by the read that follows is kept as painted; one behind the DB is replaced."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pyarrow as pa
import pytest

from kdgat_core.query import open_db
from kdgat_tui.app import KdgatApp
from kdgat_tui.runs_model import RunsModel
from kdgat_tui.screens import runs as runs_screen
from tests.tui.conftest import runs_ready, wait_for
from tests.tui.screen_text import screen_text

pytestmark = pytest.mark.anyio

NAN, INF = float("nan"), float("inf")


def awkward_runs(n: int = 240) -> pa.Table:
    """Values whose text has every length and form: negatives, -0.0, NaN, inf, huge, missing; durations of seconds,
    minutes and hours; names of many lengths. The longest values sit far down the default (newest-first) order."""
    f1 = [0.5, -0.00001, NAN, INF, -INF, 1e12, None, 123.456789, -98765.4321, 0.0, -0.0, 0.9999]
    loss = [0.25, None, 3.5, 0.125]
    took = [5, 59.9, 60, 3599.5, 3600, 360000, None, -5, 0, 42]
    return pa.table(
        {
            "run_id": [f"run{i:04d}" for i in range(n)],
            "run_name": [f"hcrl_sa/teacher_{'x' * (i % 23)}" for i in range(n)],
            "status": ["complete" if i % 5 else "failed" for i in range(n)],
            "f1": [f1[i % len(f1)] for i in range(n)],
            "val_loss": pa.array([loss[i % len(loss)] for i in range(n)], pa.float32()),
            "duration_s": [took[(i * 7) % len(took)] for i in range(n)],
            "start_time": pa.array([1_700_000_000_000_000 + i * 60_000_000 for i in range(n)], pa.timestamp("us")),
            "dataset": [("hcrl_sa", "set_01", None)[i % 3] for i in range(n)],
        }
    )


@pytest.mark.parametrize("sort_key", ["start_time", "f1", "val_loss", "duration_s", "run_name"])
@pytest.mark.parametrize("descending", [True, False])
def test_a_first_page_looks_exactly_like_the_top_of_the_whole_view(sort_key, descending):
    first = 20
    page = RunsModel(awkward_runs(), metrics=["f1", "val_loss"])
    whole = RunsModel(awkward_runs(), metrics=["f1", "val_loss"])
    for model in (page, whole):
        model.sort_key, model.sort_desc = sort_key, descending
    shown, expected = page.view(first=first), whole.view()
    assert not shown.complete and expected.complete
    assert shown.widths == expected.widths  # no column moves when the rest is formatted
    assert shown.headers == expected.headers and shown.total == expected.total
    assert shown.run_ids == expected.run_ids  # the status line's count, the cursor's run, marks: all rows known
    assert shown.table.num_rows == expected.table.num_rows  # the scrollbar is the whole table's
    assert shown.table.slice(0, first).equals(expected.table.slice(0, first))
    assert page.view().table.equals(expected.table)  # and the next view is the whole one


def test_a_view_that_fits_in_the_first_page_is_complete_at_once():
    model = RunsModel(awkward_runs(12))
    assert model.view(first=20).complete


async def test_the_first_frame_shows_what_the_whole_table_shows(sample_db, monkeypatch):
    """A terminal of a few rows, a first page just taller than it: the first frame is the final screen."""
    monkeypatch.setattr(runs_screen, "FIRST_PAGE", 8)
    held: list = []  # the rest of the rows waits here until the first page has been looked at
    complete = runs_screen.RunsScreen._complete_view
    monkeypatch.setattr(runs_screen.RunsScreen, "_complete_view", lambda screen, shown: held.append((screen, shown)))
    app = KdgatApp(tracking_uri=sample_db, refresh_s=0)
    async with app.run_test(size=(120, 10)) as pilot:
        await wait_for(pilot, lambda: bool(held), what="the first page")
        await pilot.pause()
        screen = app.screen
        assert not screen.view.complete and len(screen.view.run_ids) > 8  # more runs than the first page
        first_frame = screen_text(app).splitlines()
        complete(*held[0])
        screen = await runs_ready(pilot)
        assert screen.view.complete
        final = screen_text(app).splitlines()
    assert f"{len(screen.view.run_ids)} of {screen.view.total} runs" in first_frame[0]
    assert first_frame[1:] == final[1:]  # below the status line (its clock ticks): the same screen


def visible_runs(uri: str) -> int:
    with open_db(uri, cache=False) as db:  # counted without bringing the read cache up to date
        return db.runs(arrow=True).num_rows


async def _launch_until_current(uri: str) -> tuple[object, object, str, object]:
    """(table painted first, the screen's table once current, its text, the view): one launch of the app."""
    app = KdgatApp(tracking_uri=uri, refresh_s=0)
    async with app.run_test(size=(120, 20)) as pilot:
        await wait_for(pilot, lambda: getattr(app.screen, "model", None) is not None, what="first paint")
        painted = app.screen.model.base
        screen = await runs_ready(pilot)
        return painted, screen.model.base, screen_text(app), screen.view


async def test_a_cached_copy_found_current_is_kept_as_painted(sample_db):
    first, _, _, view = await _launch_until_current(sample_db)  # builds the read cache
    painted, held, text, second_view = await _launch_until_current(sample_db)
    assert held is painted  # nothing re-read into a new table, nothing formatted twice
    assert "cached copy" not in text
    assert second_view.run_ids == view.run_ids and second_view.total == view.total


async def test_a_cached_copy_behind_the_database_is_replaced_by_its_rows(sample_db, tmp_path):
    db = tmp_path / "behind.db"
    shutil.copyfile(sample_db[len("sqlite:///") :], db)
    uri = f"sqlite:///{db}"
    await _launch_until_current(uri)  # builds the read cache
    before = visible_runs(uri)
    subprocess.run(  # a writer adds runs through MLflow's client while the TUI is closed
        [sys.executable, "-m", "kdgat_core.tracking.sample", "--tracking-uri", uri]
        + ["--datasets", "hcrl_ch", "--seeds", "1", "--epochs", "2"],
        check=True,
        capture_output=True,
    )
    after = visible_runs(uri)
    assert after > before
    painted, held, text, view = await _launch_until_current(uri)
    assert painted.num_rows == before and held is not painted  # painted from the old copy, then replaced
    assert view.total == after and f"{after} of {after} runs" in text
