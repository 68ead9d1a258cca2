"""Submit from the TUI against the real local SLURM cluster: the next stage prefilled from a teacher run, the
rendered sbatch script shown in full, nothing queued before the confirmation, then the job in Jobs; cancel there
after a confirmation."""

from __future__ import annotations

import shutil

import pyarrow.compute as pc
import pytest

from kdgat_core.query import open_db
from kdgat_tui.app import KdgatApp
from kdgat_tui.screens.jobs import JobsScreen
from kdgat_tui.screens.submit import SubmitScreen
from kdgat_tui.widgets.dialogs import Confirm
from tests.tui.conftest import runs_ready, wait_for
from tests.tui.screen_text import screen_text

pytestmark = [pytest.mark.anyio, pytest.mark.slurm, pytest.mark.slow]


def queued_ids() -> set[str]:
    from kdgat_core.slurm.scheduler import SlurmScheduler

    return {j.job_id for j in SlurmScheduler(cache_seconds=0).jobs(refresh=True)}


async def test_submit_a_distilled_student_from_a_teacher_then_cancel_it(
    slurm_cluster, sample_db, tmp_path, monkeypatch
):
    monkeypatch.setenv("KDGAT_QUEUE_CACHE_SECONDS", "0")
    # the published request (16 CPUs, 128G, a GPU) fits no node of the test cluster: kdgat would refuse it
    (tmp_path / "kdgat.toml").write_text('[cluster.resources]\ncpus = 1\nmem = "1G"\ngpus = 0\n')
    monkeypatch.chdir(tmp_path)
    db = tmp_path / "mlflow.db"
    shutil.copyfile(sample_db[len("sqlite:///") :], db)
    with open_db(str(db)) as tdb:
        runs = tdb.runs(arrow=True)
    teacher = runs.filter(pc.and_(pc.equal(runs["stage"], "curriculum"), pc.equal(runs["model_size"], "teacher")))
    teacher_id = teacher["run_id"][0].as_py()
    before = queued_ids()
    app = KdgatApp(tracking_uri=str(db), refresh_s=1)
    async with app.run_test(size=(120, 40)) as pilot:
        await runs_ready(pilot)
        app.open_submit(run_id=teacher_id)
        await wait_for(
            pilot,
            lambda: isinstance(app.screen, SubmitScreen) and app.screen.plan is not None,
            timeout=60,
            what="the rendered script",
        )
        submit = app.screen
        assert submit.plan.title.startswith("train a distilled student curriculum from this teacher")
        script = submit.plan.scripts[0]
        assert script.startswith("#!/bin/bash") and "#SBATCH" in script
        assert " run curriculum " in script and f"--teacher {teacher_id}" in script and "--kd" in script
        shown = str(submit.query_one("#script").render())
        assert script.strip().splitlines()[-1] in shown  # the whole script, down to its last line
        assert queued_ids() == before  # the preview queued nothing
        await pilot.press("s")
        await wait_for(pilot, lambda: isinstance(app.screen, Confirm), what="the confirmation")
        assert "hcrl_sa/student_curriculum_kd" in screen_text(app) or "student_curriculum_kd" in screen_text(app)
        await pilot.press("y")
        await wait_for(pilot, lambda: isinstance(app.screen, JobsScreen), timeout=60, what="the jobs screen")
        new = queued_ids() - before
        assert len(new) == 1
        job_id = new.pop()
        jobs = app.screen
        await wait_for(pilot, lambda: any(r.job == job_id for r in jobs.rows), timeout=60, what="the job in Jobs")
        row = next(r for r in jobs.rows if r.job == job_id)
        assert row.name == "hcrl_sa/student_curriculum_kd"
        if row.state in ("PENDING", "RUNNING", "CONFIGURING"):
            index = [r.job for r in jobs.rows].index(job_id)
            jobs.query_one("ArrowTable").move_cursor(row=index)
            await pilot.press("ctrl+d")
            await wait_for(pilot, lambda: isinstance(app.screen, Confirm), what="the cancel confirmation")
            assert f"scancel {job_id}" in screen_text(app)
            await pilot.press("y")
            await wait_for(
                pilot,
                lambda: (
                    next((r.state for r in jobs.rows if r.job == job_id), "")
                    not in ("PENDING", "RUNNING", "CONFIGURING")
                ),
                timeout=60,
                what="the job to end",
            )
