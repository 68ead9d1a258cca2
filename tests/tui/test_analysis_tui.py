"""The TUI's analysis pieces through Textual's Pilot on a real MLflow-written DB: saved views (v), picked group
columns (G), the chart (c) from the same curves as `kdgat plot`, and groups equal to `db.groups`."""

from __future__ import annotations

import pytest

from kdgat_core.query import open_db
from kdgat_core.query.curves import group_curves
from kdgat_tui.app import KdgatApp
from kdgat_tui.screens.chart import Chart, ChartScreen
from tests.tui.conftest import runs_ready, wait_for
from tests.tui.screen_text import screen_text

pytestmark = pytest.mark.anyio

VIEWS = """
[views.kd-students]
where = "(dataset=hcrl_sa | dataset=set_01) model_size=student stage in (curriculum, fusion)"
columns = ["f1", "val_loss"]
sort = "val_loss"

[views.by-kd]
where = "stage=evaluation"
columns = ["f1"]
group_by = ["model_size", "use_kd"]
"""


async def _pick(pilot, name: str) -> None:
    await pilot.press("v")
    await pilot.pause()
    for ch in name:
        await pilot.press(ch)
    await pilot.press("enter")
    await pilot.pause()


async def test_saved_views_switch_filter_columns_sort_and_grouping(sample_db, tmp_path, monkeypatch):
    (tmp_path / "kdgat.toml").write_text(VIEWS)
    monkeypatch.chdir(tmp_path)
    with open_db(sample_db) as db:
        want = db.frame(
            ["f1", "val_loss"],
            where="(dataset=hcrl_sa | dataset=set_01) model_size=student stage in (curriculum, fusion)",
            arrow=True,
        )
        groups = db.groups(["model_size", "use_kd"], "f1", stage="evaluation", arrow=True).to_pylist()
    app = KdgatApp(tracking_uri=sample_db, refresh_s=0)
    async with app.run_test(size=(120, 36)) as pilot:
        screen = await runs_ready(pilot)
        await _pick(pilot, "kd-students")
        assert set(screen.view.run_ids) == set(want["run_id"].to_pylist()) and want.num_rows
        assert screen.model.metrics == ["f1", "val_loss"] and screen.model.sort_key == "val_loss"
        losses = [screen.model.value_of(r, "val_loss") for r in screen.view.run_ids]
        assert losses == sorted(losses)  # a loss sorts best (lowest) first
        await _pick(pilot, "by-kd")
        assert screen.view.grouped and screen.model.group_by == ["model_size", "use_kd"]
        table = {(g["model_size"], g["use_kd"]): g for g in screen.model.group_table().to_pylist()}
        want_groups = {(g["model_size"], g["use_kd"]): g for g in groups}
        assert set(table) == set(want_groups) and len(table) == 3
        for key, g in want_groups.items():
            assert table[key]["f1_n"] == g["f1_n"] and table[key]["f1_mean"] == pytest.approx(g["f1_mean"])
            assert table[key]["f1_std"] == pytest.approx(g["f1_std"])
        assert "model_size=student use_kd=True" in screen_text(app)


async def test_chart_of_groups_draws_what_kdgat_plot_draws(sample_db):
    app = KdgatApp(tracking_uri=sample_db, refresh_s=0)
    async with app.run_test(size=(120, 36)) as pilot:
        screen = await runs_ready(pilot)
        screen.model.filter_text = "stage=curriculum"
        screen.model.grouped = True
        screen.render_view(None)
        await pilot.pause()
        await pilot.press("c")
        await wait_for(
            pilot, lambda: isinstance(app.screen, ChartScreen) and app.screen.query_one(Chart).lines, what="the chart"
        )
        chart = app.screen
        lines = chart.query_one(Chart).lines
        with open_db(sample_db) as db:
            same = group_curves(db, chart.groups, chart.metric)
        assert [(c.label, c.x, c.n) for c in lines] == [(c.label, c.x, c.n) for c in same]
        assert [c.y for c in lines] == [pytest.approx(c.y) for c in same]
        assert "groups (mean ± std)" in screen_text(app)
        await pilot.press("l", "s", "x")
        await wait_for(pilot, lambda: "x: time" in screen_text(app), what="time axis")
        assert "log y" in screen_text(app) and "EMA 0.6" in screen_text(app)


async def test_annotate_asks_first_writes_through_mlflow_and_the_refresh_shows_it(sample_db, tmp_path, monkeypatch):
    import shutil

    db = tmp_path / "mlflow.db"
    shutil.copyfile(sample_db[len("sqlite:///") :], db)
    monkeypatch.setenv("KDGAT_CACHE_DIR", str(tmp_path / "cache"))
    app = KdgatApp(tracking_uri=f"sqlite:///{db}", refresh_s=0)
    async with app.run_test(size=(120, 36)) as pilot:
        screen = await runs_ready(pilot)
        run_id = screen.current_run_id()
        await pilot.press("A")
        await pilot.pause()
        for ch in "tag":
            await pilot.press(ch)
        await pilot.press("enter")
        await pilot.pause()
        for ch in "verdict=good":
            await pilot.press(ch)
        await pilot.press("enter")
        await wait_for(pilot, lambda: "tag verdict = 'good' (was None)" in screen_text(app), what="the confirmation")
        assert screen.model.value_of(run_id, "tags.verdict") is None  # nothing written before the answer
        await pilot.press("y")
        # the write is a subprocess that imports mlflow (8 s idle, more on a loaded machine)
        await wait_for(pilot, lambda: screen.model.value_of(run_id, "tags.verdict") == "good", 120, "the refresh")


async def test_readonly_removes_annotations(sample_db):
    app = KdgatApp(tracking_uri=sample_db, refresh_s=0, readonly=True)
    async with app.run_test(size=(120, 36)) as pilot:
        screen = await runs_ready(pilot)
        assert screen.check_action("annotate", ()) is False
        await pilot.press("A")
        await pilot.pause()
        assert app.screen is screen
