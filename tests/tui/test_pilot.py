"""kdgat-tui driven through Textual's Pilot on a real MLflow-written tracking DB: each screen and each journey.

Numbers on screen are checked against `kdgat_core.query` (the same functions the CLI prints), never hard-coded.
"""

from __future__ import annotations

import csv
import subprocess
import sys

import pyarrow.compute as pc
import pytest

from kdgat_core.query import open_db
from kdgat_tui.app import KdgatApp
from kdgat_tui.screens.diff import DiffScreen
from kdgat_tui.screens.help import HelpScreen
from kdgat_tui.screens.jobs import JobsScreen
from kdgat_tui.screens.lineage import LineageScreen
from kdgat_tui.screens.run_detail import RunDetailScreen
from kdgat_tui.screens.runs import RunsScreen
from kdgat_tui.screens.sql_console import SqlConsole
from kdgat_tui.screens.submit import SubmitScreen
from kdgat_tui.widgets.arrow_table import ArrowTable
from tests.tui.conftest import ON_BOTH_STORES, runs_ready, wait_for
from tests.tui.screen_text import screen_text

pytestmark = pytest.mark.anyio

SIZE = (120, 36)


def visible_runs(uri: str):
    with open_db(uri) as db:
        return db.runs(arrow=True)


async def type_text(pilot, text: str) -> None:
    for ch in text:
        await pilot.press("space" if ch == " " else ch)


async def test_runs_screen_lists_every_visible_run_and_hides_deleted(sample_db):
    expected = visible_runs(sample_db)
    with open_db(sample_db, include_deleted=True) as db:
        everything = db.runs(arrow=True)
    deleted = set(everything["run_id"].to_pylist()) - set(expected["run_id"].to_pylist())
    assert deleted, "the sample DB has a deleted run"
    app = KdgatApp(tracking_uri=sample_db, refresh_s=0)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await runs_ready(pilot)
        assert set(screen.view.run_ids) == set(expected["run_id"].to_pylist())
        assert not deleted & set(screen.view.run_ids)
        text = screen_text(app)
        assert f"{expected.num_rows} of {expected.num_rows} runs" in text
        # newest first, as in `kdgat runs`
        newest = expected.sort_by([("start_time", "descending")])["run_name"][0].as_py()
        assert newest in text.splitlines()[2]


@ON_BOTH_STORES
async def test_filter_expression_keeps_exactly_the_matching_runs(sample_db):
    runs = visible_runs(sample_db)
    keep = pc.and_(
        pc.and_(pc.equal(runs["dataset"], "hcrl_sa"), pc.fill_null(pc.greater(runs["f1"], 0.9), False)),
        pc.fill_null(pc.not_equal(runs["status"], "failed"), True),
    )
    expected = set(runs.filter(keep)["run_id"].to_pylist())
    assert 0 < len(expected) < runs.num_rows
    app = KdgatApp(tracking_uri=sample_db, refresh_s=0)
    async with app.run_test(size=SIZE) as pilot:
        screen = await runs_ready(pilot)
        await pilot.press("slash")
        await type_text(pilot, "dataset=hcrl_sa f1>0.9 status!=failed")
        await pilot.press("enter")
        await pilot.pause()
        assert set(screen.view.run_ids) == expected
        assert f"{len(expected)} of {runs.num_rows} runs" in screen_text(app)
        # free text on names: only distilled students
        await pilot.press("slash", "ctrl+u")
        await type_text(pilot, "student_curriculum_kd")
        await pilot.press("enter")
        await pilot.pause()
        names = {runs.filter(pc.equal(runs["run_id"], r))["run_name"][0].as_py() for r in screen.view.run_ids}
        assert names and all(n.endswith("student_curriculum_kd") for n in names)


async def test_a_bad_filter_is_explained_inline_and_the_table_stays(sample_db):
    app = KdgatApp(tracking_uri=sample_db, refresh_s=0)
    async with app.run_test(size=SIZE) as pilot:
        screen = await runs_ready(pilot)
        shown = len(screen.view.run_ids)
        await pilot.press("slash")
        screen.query_one("#filter").value = "nosuchcolumn>3"  # pasted: the table keeps its last good rows
        await pilot.pause()
        text = screen_text(app)
        assert "unknown column 'nosuchcolumn'" in text
        assert len(screen.view.run_ids) == shown
        await pilot.press("ctrl+u")
        await type_text(pilot, "f1>abc")
        await pilot.pause()
        assert "is not a number" in screen_text(app)
        await pilot.press("escape")
        await pilot.pause()
        assert "is not a number" not in screen_text(app)
        assert app.is_running


@ON_BOTH_STORES
async def test_sort_by_a_metric_puts_the_best_run_on_top_and_reverses(sample_db):
    runs = visible_runs(sample_db)
    f1 = [v for v in runs["f1"].to_pylist() if v is not None]
    app = KdgatApp(tracking_uri=sample_db, refresh_s=0)
    async with app.run_test(size=SIZE) as pilot:
        screen = await runs_ready(pilot)
        await pilot.press("s")
        await type_text(pilot, "f1")
        await pilot.press("enter")
        await pilot.pause()
        top = screen.view.run_ids[0]
        assert runs.filter(pc.equal(runs["run_id"], top))["f1"][0].as_py() == max(f1)
        await pilot.press("S")
        await pilot.pause()
        top = screen.view.run_ids[0]
        assert runs.filter(pc.equal(runs["run_id"], top))["f1"][0].as_py() == min(f1)


async def test_quick_filters_and_grouping_by_config(sample_db):
    runs = visible_runs(sample_db)
    app = KdgatApp(tracking_uri=sample_db, refresh_s=0)
    async with app.run_test(size=SIZE) as pilot:
        screen = await runs_ready(pilot)
        await pilot.press("1")  # first dataset alphabetically
        await pilot.pause()
        first = sorted(set(runs["dataset"].to_pylist()))[0]
        assert "dataset=" + first in screen_text(app)
        in_dataset = runs.filter(pc.equal(runs["dataset"], first))
        assert set(screen.view.run_ids) == set(in_dataset["run_id"].to_pylist())
        await pilot.press("g")
        await pilot.pause()
        assert screen.view.grouped
        counts = screen.view.table["n"].to_pylist()
        assert sum(counts) == in_dataset.num_rows
        # seeds 0 and 1 of one configuration form one group of two
        assert max(counts) >= 2
        assert "mean±std" in screen_text(app)


@ON_BOTH_STORES
async def test_journey_filter_mark_diff(sample_db):
    app = KdgatApp(tracking_uri=sample_db, refresh_s=0)
    async with app.run_test(size=SIZE) as pilot:
        screen = await runs_ready(pilot)
        await pilot.press("slash")
        await type_text(pilot, "name~teacher_curriculum$ dataset=hcrl_sa")
        await pilot.press("enter")
        await pilot.pause()
        first, second = screen.view.run_ids[:2]
        await pilot.press("space", "space", "d")
        await wait_for(pilot, lambda: isinstance(app.screen, DiffScreen), what="the diff screen")
        diff = app.screen
        await wait_for(
            pilot,
            lambda: "params that differ" in screen_text(app) and "loading" not in screen_text(app),
            what="the diff",
        )
        with open_db(sample_db) as db:
            expected = db.config_diff([first, second], arrow=True)
        shown = diff.query_one("#diff-params", ArrowTable).backend.data
        assert shown["key"].to_pylist() == expected["key"].to_pylist()
        assert expected.num_rows >= 1  # at least the seed or the learning rate differs
        await pilot.press("a")
        await wait_for(
            pilot,
            lambda: diff.query_one("#diff-params", ArrowTable).backend.data.num_rows > expected.num_rows,
            what="all params",
        )
        text = screen_text(app)
        assert ("f1 ↑" in text and "(+" in text) or "(-" in text  # metrics side by side with deltas


@ON_BOTH_STORES
async def test_journey_lineage_to_student_to_teacher(sample_db):
    with open_db(sample_db) as db:
        edges = db.lineage(dataset="hcrl_sa", arrow=True)
    assert edges.num_rows
    app = KdgatApp(tracking_uri=sample_db, refresh_s=0)
    async with app.run_test(size=SIZE) as pilot:
        await runs_ready(pilot)
        await pilot.press("1")  # dataset quick filter: hcrl_sa
        await pilot.press("l")
        await wait_for(pilot, lambda: isinstance(app.screen, LineageScreen), what="lineage")
        await wait_for(pilot, lambda: "teacher → student links" in screen_text(app), what="the tree")
        text = screen_text(app)
        assert f"{edges.num_rows} teacher → student links" in text
        assert "Δ" in text
        tree = app.screen.query_one("Tree")
        student = tree.cursor_node
        assert student is not None and student.data in edges["student_run_id"].to_pylist()
        await pilot.press("enter")
        await wait_for(
            pilot, lambda: isinstance(app.screen, RunDetailScreen) and app.screen.row is not None, what="run detail"
        )
        assert app.screen.run_id == student.data
        teacher = app.screen.row["teacher_run_id"]
        assert teacher
        await pilot.press("t")
        await wait_for(
            pilot,
            lambda: (
                isinstance(app.screen, RunDetailScreen) and app.screen.run_id == teacher and app.screen.row is not None
            ),
            what="the teacher's detail",
        )


@ON_BOTH_STORES
async def test_run_detail_tabs_params_search_scenarios_and_curves(sample_db):
    runs = visible_runs(sample_db)
    evaluation = runs.filter(pc.and_(pc.equal(runs["stage"], "evaluation"), pc.equal(runs["use_kd"], "True")))
    run_id = evaluation["run_id"][0].as_py()
    app = KdgatApp(tracking_uri=sample_db, refresh_s=0)
    async with app.run_test(size=SIZE) as pilot:
        await runs_ready(pilot)
        app.open_run(run_id)
        await wait_for(
            pilot, lambda: isinstance(app.screen, RunDetailScreen) and app.screen.row is not None, what="detail"
        )
        screen = app.screen
        await pilot.pause()
        assert f"{evaluation['f1'][0].as_py():.4f}" in screen_text(app)
        await pilot.press("slash")
        await type_text(pilot, "temperature")
        await pilot.pause()
        params = screen.query_one("#param-table", ArrowTable).backend.data
        assert params["param"].to_pylist() == ["kd.temperature"]
        await pilot.press("escape")
        screen.action_tab("scenarios")
        await pilot.pause()
        scen = screen.query_one("#scenario-table", ArrowTable).backend.data
        assert scen.num_rows == (4 if evaluation["dataset"][0].as_py() == "hcrl_sa" else 6)
        assert "test_02_unknown_vehicle_known_attack" in scen["scenario"].to_pylist()


@ON_BOTH_STORES
async def test_run_detail_draws_a_students_curve_over_its_teachers(sample_db):
    runs = visible_runs(sample_db)
    student = runs.filter(pc.and_(pc.equal(runs["stage"], "curriculum"), pc.equal(runs["use_kd"], "True")))
    app = KdgatApp(tracking_uri=sample_db, refresh_s=0)
    async with app.run_test(size=SIZE) as pilot:
        await runs_ready(pilot)
        app.open_run(student["run_id"][0].as_py())
        await wait_for(
            pilot, lambda: isinstance(app.screen, RunDetailScreen) and app.screen.row is not None, what="detail"
        )
        await pilot.press("4")
        curves = app.screen.query_one("#curve-f1")
        await wait_for(pilot, lambda: len(curves.series) == 2, what="the F1 curves")
        labels = [s[0] for s in curves.series]
        assert labels == ["val_f1", "teacher val_f1"]
        assert len(curves.series[0][1]) > 1
        await pilot.pause()
        assert "teacher val_f1" in screen_text(app)


@ON_BOTH_STORES
async def test_sql_console_errors_inline_results_history_and_export(sample_db, tmp_path):
    app = KdgatApp(tracking_uri=sample_db, refresh_s=0)
    async with app.run_test(size=SIZE) as pilot:
        await runs_ready(pilot)
        await pilot.press("x")
        await wait_for(pilot, lambda: isinstance(app.screen, SqlConsole), what="the console")
        console = app.screen
        editor = console.query_one("TextArea")
        editor.text = "SELEC nonsense FROM nowhere"
        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: "error" in screen_text(app).lower(), what="the inline error")
        assert app.is_running and isinstance(app.screen, SqlConsole)
        editor.text = "DELETE FROM runs"
        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: console.history and console.history[-1] == "DELETE FROM runs", what="refusal")
        assert not console.query_one("#sql-error").has_class("hidden")
        editor.text = "SELECT run_id, run_name, f1 FROM runs WHERE dataset = 'set_01' ORDER BY f1 DESC NULLS LAST"
        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: console.result is not None, what="results")
        with open_db(sample_db) as db:
            expected = db.runs(dataset="set_01", arrow=True).num_rows
        assert console.result.num_rows == expected
        assert f"{expected:,} rows" in screen_text(app)
        target = tmp_path / "out" / "set01.csv"
        console._export(str(target))
        with open(target) as fh:
            rows = list(csv.DictReader(fh))
        assert len(rows) == expected and rows[0]["run_id"]
        console._export(str(target))  # never overwrites
        await pilot.pause()
        assert "already exists" in screen_text(app)
        assert len(console.history) >= 3


async def test_palette_offers_the_current_screens_actions(sample_db):
    from kdgat_tui.commands import ScreenCommands

    app = KdgatApp(tracking_uri=sample_db, refresh_s=0)
    async with app.run_test(size=SIZE) as pilot:
        screen = await runs_ready(pilot)
        titles = [c[0] for c in ScreenCommands(screen)._commands()]
        assert {"Filter", "Diff", "Lineage", "Submit", "Jobs"} <= set(titles)
        await pilot.press("ctrl+p")
        await pilot.pause(0.3)
        await type_text(pilot, "lineage")
        await pilot.pause(0.5)
        assert "Lineage" in screen_text(app)
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, LineageScreen), what="lineage from the palette")


async def test_help_lists_every_key_of_every_screen(sample_db):
    app = KdgatApp(tracking_uri=sample_db, refresh_s=0)
    async with app.run_test(size=(120, 200)) as pilot:
        await runs_ready(pilot)
        await pilot.press("question_mark")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen), what="help")
        await pilot.pause()
        text = screen_text(app)
        for cls in (RunsScreen, RunDetailScreen, DiffScreen, LineageScreen, SqlConsole, JobsScreen, SubmitScreen):
            for binding in cls.BINDINGS:
                assert binding.description in text, f"{cls.__name__}: {binding.description}"
        assert "ctrl-d" in text and "Cancel job" in text


async def test_readonly_hides_and_refuses_every_mutation(sample_db):
    from kdgat_tui.commands import ScreenCommands

    app = KdgatApp(tracking_uri=sample_db, refresh_s=0, readonly=True)
    async with app.run_test(size=(160, 48)) as pilot:
        screen = await runs_ready(pilot)
        assert "Submit" not in screen_text(app)
        assert "Submit" not in [c[0] for c in ScreenCommands(screen)._commands()]
        await pilot.press("n")
        await pilot.pause()
        assert isinstance(app.screen, RunsScreen)
        app.open_submit(run_id=screen.view.run_ids[0])
        await pilot.pause()
        assert isinstance(app.screen, RunsScreen)
        await pilot.press("j")
        await wait_for(pilot, lambda: isinstance(app.screen, JobsScreen), what="jobs")
        jobs = app.screen
        assert "Cancel" not in screen_text(app)
        assert "Cancel job" not in [c[0] for c in ScreenCommands(jobs)._commands()]
        await pilot.press("escape", "question_mark")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen), what="help")
        await pilot.pause()
        text = screen_text(app)
        assert "Cancel job" not in text and "Submit" not in text and "read-only" in text


async def test_a_locked_database_shows_stale_and_recovers(sample_db, tmp_path):
    import shutil

    db = tmp_path / "locked.db"
    shutil.copyfile(sample_db[len("sqlite:///") :], db)
    app = KdgatApp(tracking_uri=str(db), refresh_s=0)
    async with app.run_test(size=SIZE) as pilot:
        screen = await runs_ready(pilot)
        shown = list(screen.view.run_ids)
        # another process holds SQLite's exclusive lock, as a writer committing a big batch would
        holder = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import sqlite3,sys,time; c=sqlite3.connect(sys.argv[1]); "
                "c.execute('BEGIN EXCLUSIVE'); print('locked', flush=True); time.sleep(8)",
                str(db),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert holder.stdout.readline().strip() == "locked"
            await pilot.press("r")
            await wait_for(pilot, lambda: "STALE since" in screen_text(app), timeout=30, what="the stale marker")
            assert screen.view.run_ids == shown  # the last good data stays on screen
        finally:
            holder.wait(timeout=30)
        await pilot.press("r")
        await wait_for(pilot, lambda: "STALE" not in screen_text(app), timeout=30, what="recovery")
        assert app.is_running


@pytest.mark.slow
async def test_live_refresh_brings_new_runs_and_keeps_cursor_marks_and_filter(sample_db, tmp_path):
    import shutil

    db = tmp_path / "live.db"
    shutil.copyfile(sample_db[len("sqlite:///") :], db)
    before = visible_runs(str(db)).num_rows
    app = KdgatApp(tracking_uri=str(db), refresh_s=0.5)
    async with app.run_test(size=SIZE) as pilot:
        screen = await runs_ready(pilot)
        await pilot.press("slash")
        await type_text(pilot, "status!=failed")
        await pilot.press("enter", "down", "down")
        await pilot.press("space")
        await pilot.pause()
        marked = next(iter(screen.model.marks))
        cursor_run = screen.current_run_id()
        # a writer adds runs through MLflow's client, in its own process
        subprocess.run(
            [
                sys.executable,
                "-m",
                "kdgat_core.tracking.sample",
                "--tracking-uri",
                f"sqlite:///{db}",
                "--datasets",
                "hcrl_ch",
                "--seeds",
                "1",
                "--epochs",
                "2",
            ],
            check=True,
            capture_output=True,
        )
        after = visible_runs(str(db)).num_rows
        assert after > before
        await wait_for(pilot, lambda: screen.view.total == after, timeout=120, what="the new runs")
        assert screen.model.marks == {marked}
        assert screen.model.filter_text == "status!=failed"
        assert screen.current_run_id() == cursor_run
        assert any(n.startswith("hcrl_ch/") for n in screen.model.base["run_name"].to_pylist())


async def test_second_launch_paints_from_the_cached_copy_then_brings_it_up_to_date(sample_db):
    from kdgat_core.query.tui_support import cached_wide

    assert cached_wide(sample_db) is None  # this test's own, empty cache directory
    first = KdgatApp(tracking_uri=sample_db, refresh_s=0)
    async with first.run_test(size=SIZE) as pilot:
        screen = await runs_ready(pilot)
        expected = set(screen.view.run_ids)
    cached = cached_wide(sample_db)
    assert cached is not None and cached.fresh
    painted_from_cache = []
    second = KdgatApp(tracking_uri=sample_db, refresh_s=0)
    async with second.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: getattr(second.screen, "view", None) is not None, what="first paint")
        painted_from_cache.append(second.screen.cached)
        screen = await runs_ready(pilot)
        assert set(screen.view.run_ids) == expected  # deleted runs masked in the cached copy too
        assert "cached copy" not in screen_text(second)
    assert painted_from_cache == [True]


_RUNNING_RUNS = """
import sys
from kdgat_core.tracking import get_store
store = get_store(sys.argv[1], create=False)
for name, job in zip(("lost_one", "still_running", "no_job"), (sys.argv[2], sys.argv[3], "")):
    tags = {"status": "running", "dataset": "synthetic", "stage": "autoencoder", "model_size": "teacher"}
    if job:
        tags["slurm_job_id"] = job
    store.client.create_run(store.experiment_id, run_name=name, tags=tags)
"""


@pytest.mark.slow
async def test_a_running_run_whose_job_ended_is_shown_lost(sample_db, tmp_path):
    """The local executor's real jobs: one ended, one still running; only the ended one's run is `lost`."""
    import shutil
    import textwrap
    import time

    from kdgat_core.config import preset
    from kdgat_core.slurm import cancel, job_table, submit

    shutil.copyfile(sample_db[len("sqlite:///") :], tmp_path / "mlflow.db")
    fake = tmp_path / "fake_kdgat"
    fake.write_text('#!/bin/bash\ncase "$2" in curriculum) sleep 120 ;; esac\n')
    fake.chmod(0o755)
    (tmp_path / "kdgat.toml").write_text(
        textwrap.dedent(f"""\
        [tracking]
        uri = "mlflow.db"
        [cluster]
        executor = "local"
        kdgat = "{fake}"
    """)
    )
    ended = submit(preset("vgae,teacher", dataset="synthetic")).job_id
    running = submit(preset("gat,teacher", dataset="synthetic")).job_id
    try:
        deadline = time.monotonic() + 30
        while True:
            states = {r.job: r.state for r in job_table(runs=lambda uri, ids: [], refresh=True)}
            if states.get(ended) == "COMPLETED" and states.get(running) == "RUNNING":
                break
            assert time.monotonic() < deadline, f"local jobs did not settle: {states}"
            time.sleep(0.1)
        db = tmp_path / "mlflow.db"
        subprocess.run(
            [sys.executable, "-c", _RUNNING_RUNS, f"sqlite:///{db}", ended, running], check=True, capture_output=True
        )
        app = KdgatApp(tracking_uri=str(db), refresh_s=0)
        async with app.run_test(size=SIZE) as pilot:
            screen = await runs_ready(pilot)
            await wait_for(pilot, lambda: screen.model.lost, what="the lost run")

            def status_of(name: str) -> str:
                i = screen.model.base["run_name"].to_pylist().index(name)
                return screen.model.base["status"][i].as_py()

            assert [status_of(n) for n in ("lost_one", "still_running", "no_job")] == ["lost", "running", "running"]
            assert "1 lost" in screen_text(app)
            await pilot.press("slash")
            await type_text(pilot, "status=lost")
            await pilot.press("enter")
            await pilot.pause()
            assert screen.view.run_ids == [
                screen.model.base["run_id"][screen.model.base["run_name"].to_pylist().index("lost_one")].as_py()
            ]
            table = screen.query_one(ArrowTable)
            status_col = screen.view.headers.index("status")
            cell = table._render_cell(0, status_col, table.rich_style, 10)[0][0]
            assert cell.text.strip() == "lost" and cell.style.bold  # drawn apart from running runs
            await pilot.press("0")  # clear, then the status quick filter reaches `lost`
            for _ in range(len(screen.model.quick_values("status"))):
                await pilot.press("4")
                await pilot.pause()
                if screen.model.quick.get("status") == "lost":
                    break
            assert screen.model.quick.get("status") == "lost" and len(screen.view.run_ids) == 1
    finally:
        cancel([running])
