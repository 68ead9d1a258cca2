"""SVG snapshots of the main screens at 80x24 and 160x48 (pytest-textual-snapshot), on fixed run ids and times.

Update after an intended change of the layout: pytest tests/tui/test_snapshots.py --snapshot-update, then look at
the SVGs (they are the README's screenshots too).
"""

from __future__ import annotations

import time

import pytest

from kdgat_tui.app import KdgatApp
from kdgat_tui.screens.runs import RunsScreen
from kdgat_tui.screens.sql_console import SqlConsole
from tests.tui.conftest import runs_ready, wait_for
from tests.tui.screen_text import screen_text

SIZES = {"80x24": (80, 24), "160x48": (160, 48)}
FIXED_NOW = 1_767_312_000.0  # 2026-01-02 00:00 UTC


@pytest.fixture(autouse=True)
def fixed_clock(monkeypatch):
    monkeypatch.setattr(RunsScreen, "clock", staticmethod(lambda: FIXED_NOW))
    monkeypatch.setattr(SqlConsole, "clock", staticmethod(lambda: 0.0))
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()


def app_for(stable_db: str) -> KdgatApp:
    return KdgatApp(tracking_uri=stable_db, refresh_s=0)


async def _ready(pilot):
    await runs_ready(pilot)
    await pilot.pause()


def _then(*steps):
    """run_before: wait for the runs, then each step (keys, or a callable on the pilot that returns an awaitable)."""

    async def run(pilot):
        await _ready(pilot)
        for step in steps:
            if isinstance(step, str):
                await pilot.press(*step.split())
                await pilot.pause(0.2)
            else:
                await step(pilot)
        for area in pilot.app.screen.query("TextArea, Input"):
            area.cursor_blink = False
        await pilot.pause()

    return run


def _until(text: str):
    async def wait(pilot):
        await wait_for(pilot, lambda: text in screen_text(pilot.app), what=text)

    return wait


@pytest.mark.parametrize("size", SIZES)
def test_runs_screen(snap_compare, stable_db, size):
    assert snap_compare(app_for(stable_db), terminal_size=SIZES[size], run_before=_then())


@pytest.mark.parametrize("size", SIZES)
def test_runs_filtered_sorted_and_marked(snap_compare, stable_db, size):
    async def sort_f1(pilot):
        pilot.app.screen.model.sort_by("f1")
        pilot.app.screen.render_view(None)

    assert snap_compare(
        app_for(stable_db),
        terminal_size=SIZES[size],
        run_before=_then(sort_f1, "slash", _type("dataset=hcrl_sa status!=failed"), "enter", "space space"),
    )


@pytest.mark.parametrize("size", SIZES)
def test_runs_grouped_by_config(snap_compare, stable_db, size):
    assert snap_compare(app_for(stable_db), terminal_size=SIZES[size], run_before=_then("g"))


@pytest.mark.parametrize("size", SIZES)
def test_run_detail_curves(snap_compare, stable_db, size):
    async def open_student(pilot):
        screen = pilot.app.screen
        model = screen.model
        rid = next(
            r
            for r, n in zip(model.base["run_id"].to_pylist(), model.base["run_name"].to_pylist())
            if n == "hcrl_sa/student_curriculum_kd"
        )
        pilot.app.open_run(rid)
        await wait_for(pilot, lambda: getattr(pilot.app.screen, "row", None) is not None, what="detail")
        await pilot.press("4")
        await wait_for(pilot, lambda: "teacher val_f1" in screen_text(pilot.app), what="curves")

    assert snap_compare(app_for(stable_db), terminal_size=SIZES[size], run_before=_then(open_student))


@pytest.mark.parametrize("size", SIZES)
def test_run_detail_overview(snap_compare, stable_db, size):
    assert snap_compare(
        app_for(stable_db), terminal_size=SIZES[size], run_before=_then("down enter", _until("val_loss ↓"))
    )


@pytest.mark.parametrize("size", SIZES)
def test_diff(snap_compare, stable_db, size):
    assert snap_compare(
        app_for(stable_db),
        terminal_size=SIZES[size],
        run_before=_then(
            "slash",
            _type("name~teacher_curriculum$"),
            "enter",
            "space space d",
            _until("params that differ"),
            _until("f1 ↑"),
        ),
    )


@pytest.mark.parametrize("size", SIZES)
def test_lineage(snap_compare, stable_db, size):
    assert snap_compare(
        app_for(stable_db), terminal_size=SIZES[size], run_before=_then("1 l", _until("teacher → student links"))
    )


@pytest.mark.parametrize("size", SIZES)
def test_sql_console(snap_compare, stable_db, size):
    assert snap_compare(
        app_for(stable_db),
        terminal_size=SIZES[size],
        run_before=_then("x", _until("views"), "ctrl+r", _until("rows ×"), "ctrl+o"),
    )


@pytest.mark.parametrize("size", SIZES)
def test_help(snap_compare, stable_db, size):
    assert snap_compare(app_for(stable_db), terminal_size=SIZES[size], run_before=_then("question_mark"))


def _type(text: str):
    async def typing(pilot):
        for ch in text:
            await pilot.press("space" if ch == " " else ch)

    return typing


@pytest.mark.parametrize("size", SIZES)
def test_chart_of_marked_runs_with_a_teacher(snap_compare, stable_db, size):
    steps = ("slash", _type("stage=curriculum kd=yes"), "enter", "space space", "c", _until("val_loss ·"))
    assert snap_compare(app_for(stable_db), terminal_size=SIZES[size], run_before=_then(*steps))


@pytest.mark.parametrize("size", SIZES)
def test_chart_of_groups_with_bands(snap_compare, stable_db, size):
    steps = ("slash", _type("stage=curriculum"), "enter", "g", "c", _until("groups (mean"), "l")
    assert snap_compare(app_for(stable_db), terminal_size=SIZES[size], run_before=_then(*steps))
