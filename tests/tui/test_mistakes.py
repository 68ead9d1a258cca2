"""Mistakes a new user makes in kdgat-tui, each ending in something the user can read: a SQL example that typing
replaces, a file that is not a tracking DB (one sentence on stderr, exit 2), a bad filter term that keeps the rows."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from kdgat_core.query import open_db
from kdgat_tui.app import KdgatApp, main
from kdgat_tui.screens.runs import RunsScreen
from kdgat_tui.screens.sql_console import DEFAULT_QUERY, SqlConsole
from tests.conftest import require
from tests.tui.conftest import runs_ready, wait_for
from tests.tui.screen_text import screen_text
from tests.tui.test_pilot import type_text

pytestmark = pytest.mark.anyio

KDGAT_TUI = Path(sys.executable).parent / "kdgat-tui"
SIZE = (120, 36)


def _db_path(uri: str) -> Path:
    return Path(uri[len("sqlite:///") :])


async def test_typing_replaces_the_example_query(sample_db):
    with open_db(sample_db) as db:
        total = db.runs(arrow=True).num_rows
    app = KdgatApp(tracking_uri=sample_db, refresh_s=0)
    async with app.run_test(size=SIZE) as pilot:
        await runs_ready(pilot)
        await pilot.press("x")
        await wait_for(pilot, lambda: isinstance(app.screen, SqlConsole), what="the console")
        console = app.screen
        editor = console.query_one("TextArea")
        assert editor.text == DEFAULT_QUERY
        await type_text(pilot, "SELECT count(*) AS n FROM runs")
        assert editor.text == "SELECT count(*) AS n FROM runs"
        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: console.result is not None, what="the result")
        assert console.result.to_pylist() == [{"n": total}]
        assert console.history == ["SELECT count(*) AS n FROM runs"]
        # ctrl+a selects the whole query: the next one replaces it too
        await pilot.press("ctrl+a")
        await type_text(pilot, "SELECT 1 AS one")
        assert editor.text == "SELECT 1 AS one"
        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: console.result.column_names == ["one"], what="the second result")
        assert console.history == ["SELECT count(*) AS n FROM runs", "SELECT 1 AS one"]
        assert not any(DEFAULT_QUERY.split()[1] in q for q in console.history), "the example leaked into history"


def _not_mlflow(folder: Path) -> Path:
    path = folder / "notes.db"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE notes (x TEXT)")
    con.commit()
    con.close()
    return path


def _truncated(folder: Path, source: Path) -> Path:
    path = folder / "truncated.db"
    path.write_bytes(source.read_bytes()[: source.stat().st_size // 2])
    return path


def _text(folder: Path) -> Path:
    path = folder / "runs.csv"
    path.write_text("run_id,f1\nabc,0.9\n")
    return path


BAD_FILES = {
    "directory": (lambda folder, db: folder, "is a directory"),
    "text file": (lambda folder, db: _text(folder), "is not a SQLite database"),
    "not MLflow": (lambda folder, db: _not_mlflow(folder), "not an MLflow tracking database"),
    "truncated": (lambda folder, db: _truncated(folder, db), "truncated or corrupt"),
}


@pytest.mark.parametrize("kind", list(BAD_FILES))
def test_a_file_that_is_no_tracking_db_is_one_sentence_and_exit_2(sample_db, tmp_path, capsys, kind):
    make, says = BAD_FILES[kind]
    folder = tmp_path / "bad"
    folder.mkdir()
    path = make(folder, _db_path(sample_db))
    with pytest.raises(SystemExit) as ended:
        main(["--tracking-uri", str(path), "--refresh", "0"])
    assert ended.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("kdgat-tui: ") and says in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def _corrupt_tags_page(path: Path) -> None:
    """Overwrite the first page of MLflow's tags table: the schema reads, the runs do not."""
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    root = con.execute("SELECT rootpage FROM sqlite_master WHERE name = 'tags'").fetchone()[0]
    page = con.execute("PRAGMA page_size").fetchone()[0]
    con.close()
    with open(path, "r+b") as fh:
        fh.seek((root - 1) * page)
        fh.write(b"\xff" * page)


async def test_a_db_corrupt_past_its_schema_ends_the_app_with_the_reason(sample_db, tmp_path):
    path = tmp_path / "corrupt.db"
    shutil.copyfile(_db_path(sample_db), path)
    _corrupt_tags_page(path)
    app = KdgatApp(tracking_uri=str(path), refresh_s=0)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: not app.is_running or app.error_reason is not None, what="the app to end")
    assert app.return_code == 2
    assert app.error_reason == f"cannot read the runs in {path}: database disk image is malformed."


def test_the_installed_command_prints_the_whole_reason(sample_db, tmp_path):
    """Through the real entry point, in a terminal 80 columns wide: the sentence is not cut at the 80th column."""
    require(KDGAT_TUI.is_file(), f"{KDGAT_TUI} is not installed (pip install -e .)")
    deep = tmp_path / "a-folder-with-a-long-name-so-that-the-reason-is-longer-than-eighty-columns"
    deep.mkdir()
    for path, says in (
        (_truncated(deep, _db_path(sample_db)), "; it is truncated or corrupt."),
        (deep, "is a directory, not an MLflow SQLite file; check --tracking-uri."),
    ):
        proc = subprocess.run(
            [str(KDGAT_TUI), "--tracking-uri", str(path)],
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "COLUMNS": "80", "LINES": "24"},
        )
        assert proc.returncode == 2
        line = proc.stderr.strip()
        assert len(line.splitlines()) == 1 and len(line) > 80 and line.endswith(says), proc.stderr
        assert str(path) in line


async def test_a_bad_filter_term_keeps_the_rows_and_says_why_in_the_status_line(sample_db):
    app = KdgatApp(tracking_uri=sample_db, refresh_s=0)
    async with app.run_test(size=SIZE) as pilot:
        screen = await runs_ready(pilot)
        total = len(screen.view.run_ids)
        await pilot.press("slash")
        # typed key by key: "stag=" on the way is free text matching nothing; "stag=f..." names no column
        await type_text(pilot, "stag=fusion")
        await pilot.pause()
        assert len(screen.view.run_ids) == total
        status = screen.query_one("#status-line").render().plain
        assert f"{total} of {total} runs" in status
        assert "'stag=fusion' ignored: unknown column 'stag'" in status
        # the good terms still apply
        await pilot.press("ctrl+u")
        await type_text(pilot, "dataset=hcrl_sa f1>abc")
        await pilot.pause()
        with open_db(sample_db) as db:
            hcrl_sa = db.runs(dataset="hcrl_sa", arrow=True).num_rows
        assert 0 < len(screen.view.run_ids) == hcrl_sa < total
        assert "'f1>abc' ignored: 'abc' is not a number" in screen_text(app)


def _header_words(app) -> list[str]:
    return screen_text(app).splitlines()[1].split()


@pytest.mark.parametrize("size", [(80, 24), (97, 30), (160, 48)])
async def test_no_column_header_is_cut_at_the_right_edge(sample_db, size):
    """At 80x24 the vertical scrollbar covered `val_loss` down to `val_lo`: every header shown is a whole one."""
    app = KdgatApp(tracking_uri=sample_db, refresh_s=0)
    async with app.run_test(size=size) as pilot:
        screen = await runs_ready(pilot)
        await pilot.pause()
        headers = {w for h in screen.view.headers for w in h.split()}
        shown = _header_words(app)
        assert len(shown) >= 4 and set(shown) <= headers, shown
        # and after the terminal changes size
        await pilot.resize_terminal(size[0] + 7, size[1])
        await pilot.pause(0.3)
        assert set(_header_words(app)) <= headers, _header_words(app)


def test_fit_widths_pushes_a_cut_column_past_the_edge():
    from kdgat_tui.widgets.arrow_table import fit_widths

    headers = [" ", "run", "status", "f1", "accuracy", "auc", "val_loss", "run id"]
    widths = [1, 30, 8, 6, 8, 6, 8, 32]
    # 78 cells (80 minus the scrollbar): val_loss would show as `val_lo`; auc takes the 7 spare cells instead
    assert fit_widths(widths, 78, headers) == [1, 30, 8, 6, 8, 13, 8, 32]
    assert fit_widths(widths, 80, headers) == widths  # `val_loss` fits (only its right padding is cut)
    # an id column only needs its header to fit: its prefix still names the run
    assert fit_widths(widths, 90, headers, frozenset({"run id"})) == widths
    assert fit_widths(widths, 90, headers) == [1, 30, 8, 6, 8, 6, 17, 32]


async def test_a_read_that_fails_is_one_line_on_the_screens_title_and_the_app_goes_on(sample_db):
    """A worker that raises is not caught in the worker: the screen's one error path puts the reason on its title."""
    gone = "0123456789ab" + "0" * 20
    app = KdgatApp(tracking_uri=sample_db, refresh_s=0)
    async with app.run_test(size=SIZE) as pilot:
        await runs_ready(pilot)
        app.open_run(gone)
        await wait_for(pilot, lambda: "no longer" in screen_text(app), what="the run detail's reason")
        title = app.screen.query_one("#run-title").render().plain
        assert title == "run 0123456789ab: Run 0123456789ab is no longer in the tracking DB."
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, RunsScreen), what="the runs screen")
        rid = app.screen.view.ids[0].as_py()
        app.open_diff([rid, gone])
        await wait_for(pilot, lambda: "diff: " in screen_text(app), what="the diff's reason")
        title = app.screen.query_one("#diff-title").render().plain
        assert title.startswith("diff: ") and "loading" not in title, title
        assert app.is_running and app.return_code is None
