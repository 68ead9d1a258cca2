"""The Failures screen (F) over the sample DB's failed run, through Textual's Pilot; the Runs screen's efficiency
columns filtered like any column (`mem_eff<0.3`); resubmission hidden under --readonly."""

from __future__ import annotations

import pyarrow as pa
import pytest

from kdgat_tui.app import KdgatApp
from kdgat_tui.runs_model import RunsModel
from kdgat_tui.screens.failures import FailuresScreen
from tests.tui.conftest import runs_ready, wait_for
from tests.tui.screen_text import screen_text

pytestmark = pytest.mark.anyio


async def test_failures_groups_the_failed_run_by_its_cause(sample_db):
    app = KdgatApp(tracking_uri=sample_db, refresh_s=0)
    async with app.run_test(size=(160, 48)) as pilot:
        await runs_ready(pilot)
        await pilot.press("F")
        await wait_for(pilot, lambda: isinstance(app.screen, FailuresScreen) and app.screen.groups, what="failures")
        screen = app.screen
        failed = [r for r in screen.rows if "CUDA out of memory" in str(r.get("error_msg"))]
        assert len(failed) == 1 and failed[0]["group"] == "cuda_oom"  # the sample DB's failed run, by its error
        text = screen_text(app)
        assert "failures ·" in text and "cuda_oom 1" in text
        # resubmitting a run that never was a SLURM job says so instead of doing anything
        await pilot.press("R")
        await pilot.pause()
        assert isinstance(app.screen, FailuresScreen)


async def test_readonly_hides_resubmission(sample_db):
    app = KdgatApp(tracking_uri=sample_db, refresh_s=0, readonly=True)
    async with app.run_test(size=(160, 48)) as pilot:
        await runs_ready(pilot)
        app.open_failures()
        await wait_for(pilot, lambda: isinstance(app.screen, FailuresScreen), what="failures")
        await pilot.pause()
        assert "Resubmit" not in screen_text(app)
        assert not app.screen.check_action("resubmit_group", ())


def test_efficiency_columns_show_and_filter_like_any_column():
    base = pa.table(
        {
            "run_id": ["a", "b", "c"],
            "run_name": ["x/teacher_curriculum"] * 3,
            "status": ["complete", "failed", "complete"],
        }
    )
    model = RunsModel(base, metrics=[])
    assert model.set_job_facts({"a": {"mem_eff": 0.1, "cause": None}, "b": {"mem_eff": 1.02, "cause": "oom"}})
    assert not model.set_job_facts({"a": {"mem_eff": 0.1, "cause": None}, "b": {"mem_eff": 1.02, "cause": "oom"}})
    assert {"cause", "mem_eff"} <= set(model.visible_columns())
    model.filter_text = "mem_eff<0.3"
    assert model.view().run_ids == ["a"]
    model.filter_text = "cause=oom"
    assert model.view().run_ids == ["b"]


async def test_the_status_line_shows_what_kdgat_watch_would_alert(sample_db, tmp_path, monkeypatch):
    import shutil

    from kdgat_tui.screens import runs as runs_screen
    from tests.unit.conftest import run_python
    from tests.unit.test_watch import ADD_RUNS

    monkeypatch.setattr(runs_screen, "FACTS_EVERY_S", 0.0)
    db = tmp_path / "mlflow.db"
    shutil.copyfile(sample_db[len("sqlite:///") :] if sample_db.startswith("sqlite:") else sample_db, db)
    app = KdgatApp(tracking_uri=str(db), refresh_s=0)
    async with app.run_test(size=(200, 48)) as pilot:
        screen = await runs_ready(pilot)
        await wait_for(pilot, lambda: app.source._seen_events is not None, what="the events seen at start")
        assert screen.last_event == ""  # what happened before the screen opened is not news
        run_python(ADD_RUNS, str(db), "hcrl_sa/teacher_fusion:complete:0.97:0.1")
        await pilot.press("r")
        await wait_for(pilot, lambda: "hcrl_sa/teacher_fusion finished" in screen.last_event, timeout=60, what="event")
        assert "hcrl_sa/teacher_fusion finished" in screen_text(app)
