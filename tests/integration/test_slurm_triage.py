"""Running experiments on the real local cluster: a job killed for its memory is triaged as out of memory and
resubmitted with more, and completes; a job that hits its time limit is resubmitted with more time; an array with one
failed task resubmits only that index; sacct's efficiency figures match what a job measured of itself; a request no
node can run is refused; a pending job's reason is shown in words.

All jobs are submitted at once by one module fixture and run side by side; the time-limit job needs its minute.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from kdgat_core.config import RETRY_OF_TAG, FailureCause, Tag, load_settings, preset
from kdgat_core.slurm import submit
from kdgat_core.slurm.accounting import job_usage

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

KDGAT = str(Path(sys.executable).parent / "kdgat")
TINY = ["data.max_messages=3000", "train.epochs=1"]
FOREVER = ["data.max_messages=3000", "train.epochs=100000", "train.patience=100000"]
ENDED = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED")
WAIT_S = 300.0
# a job that measures itself: ~300 MB held, ~3 s of CPU, then prints what it used (the accounting must agree)
LOAD_JOB = """#!/bin/bash
#SBATCH --job-name=known-load --mem=1G --cpus-per-task=1 --time=5 --output={out}
python3 - <<'PY'
import resource, time
block = bytearray(300 * 1024 * 1024)
for i in range(0, len(block), 4096):
    block[i] = 1
t0 = time.process_time()
while time.process_time() - t0 < 3.0:
    pass
time.sleep(1.5)
print("cpu_s", time.process_time(), "rss_kb", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
PY
"""


def make_project(root: Path) -> Path:
    from kdgat_core.data.synthetic import write_dataset

    root.mkdir(parents=True, exist_ok=True)
    write_dataset(root / "data", name="synthetic", seed=0)
    (root / "kdgat.toml").write_text(
        textwrap.dedent(f"""\
        [tracking]
        uri = "mlflow.db"
        [data]
        root = "{root / "data"}"
        cache_dir = "{root / "cache"}"
        [cluster.resources]
        partition = "debug"
    """)
    )
    return root


def start_stores(*roots: Path) -> subprocess.Popen[bytes]:
    """The MLflow schema of each project, created before its jobs start together: one interpreter (MLflow imports
    once), in the background while the datasets are written."""
    code = "import sys\nfrom kdgat_core.tracking import get_store\nfor r in sys.argv[1:]: get_store(f'sqlite:///{r}/mlflow.db')"
    return subprocess.Popen([sys.executable, "-c", code, *map(str, roots)])


def cli(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [KDGAT, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "KDGAT_QUEUE_CACHE_SECONDS": "0"},
    )
    if check:
        assert proc.returncode == 0, f"kdgat {' '.join(args)} failed: {proc.stderr}"
    return proc


def usage_of(job: str, timeout: float = 30.0):
    """sacct's record of a job (it arrives a moment after sbatch returns)."""
    deadline = time.monotonic() + timeout
    while True:
        found = next((u for u in job_usage(refresh=True) if u.job_id == job), None)
        if found is not None:
            return found
        assert time.monotonic() < deadline, f"sacct never listed job {job}"
        time.sleep(0.5)


def states(job_ids: list[str]) -> dict[str, str]:
    return {u.job_id: u.state for u in job_usage(refresh=True) if u.job_id in job_ids}


def wait_ended(job_ids: list[str], timeout: float = WAIT_S) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    while True:
        now = states(job_ids)
        if all(now.get(j) in ENDED for j in job_ids):
            time.sleep(1.0)  # sacct's steps (MaxRSS) arrive a moment after the job's own line
            return states(job_ids)
        assert time.monotonic() < deadline, f"jobs did not end in {timeout:.0f} s: {now}"
        time.sleep(0.5)


def retry_tags(db: Path) -> dict[str, str]:
    """slurm_job_id -> retry_of of every run that has one (read-only)."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        rows = con.execute(
            "SELECT j.value, r.value FROM tags j JOIN tags r ON r.run_uuid = j.run_uuid WHERE j.key = ? AND r.key = ?",
            (Tag.SLURM_JOB_ID.value, RETRY_OF_TAG),
        ).fetchall()
    finally:
        con.close()
    return dict(rows)


def cancel_when_running(job: str, timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        queue = subprocess.run(["squeue", "-h", "-t", "all", "-o", "%i %T"], capture_output=True, text=True).stdout
        if f"{job} RUNNING" in queue:
            subprocess.run(["scancel", job], timeout=30)
            return
        time.sleep(0.5)


def submitted_job(out: str) -> str:
    line = next(line for line in out.splitlines() if line.startswith("Resubmitted"))
    return line.split(" as job ", 1)[1].split()[0].rstrip(",")


async def resubmit_in_tui(project: Path, job: str, monkeypatch) -> str:
    """Failures screen (F), cursor on the job's row, R, the confirmation shows the #SBATCH lines that change, y:
    the id of the job the TUI submitted."""
    from kdgat_tui.app import KdgatApp
    from kdgat_tui.screens.failures import FailuresScreen
    from kdgat_tui.widgets.arrow_table import ArrowTable
    from kdgat_tui.widgets.dialogs import Confirm
    from tests.tui.conftest import runs_ready, wait_for
    from tests.tui.screen_text import screen_text

    monkeypatch.chdir(project)  # the TUI reads kdgat.toml (the templates, the cluster's resources) from here
    app = KdgatApp(tracking_uri=str(project / "mlflow.db"), refresh_s=0)
    async with app.run_test(size=(180, 50)) as pilot:
        await runs_ready(pilot)
        await pilot.press("F")
        await wait_for(pilot, lambda: isinstance(app.screen, FailuresScreen) and app.screen.groups, what="failures")
        screen = app.screen
        row = next(i for i, r in enumerate(screen.rows) if r.get("job_id") == job)
        screen.query_one(ArrowTable).move_cursor(row=row)
        await pilot.press("R")
        await wait_for(pilot, lambda: isinstance(app.screen, Confirm), timeout=60, what="the confirmation")
        text = screen_text(app)
        assert "- #SBATCH --mem=400M" in text and "+ #SBATCH --mem=1024M" in text, text
        await pilot.press("y")

        def retried_by() -> str | None:
            rows = screen.rows if isinstance(app.screen, FailuresScreen) else []
            return next((r.get("retried_by") for r in rows if r.get("job_id") == job and r.get("retried_by")), None)

        await wait_for(pilot, lambda: retried_by() is not None, timeout=60, what="the resubmitted job")
        return str(retried_by())


@pytest.fixture(scope="module")
def jobs(slurm_cluster, tmp_path_factory):
    main, arrays = tmp_path_factory.mktemp("triage"), tmp_path_factory.mktemp("triage_array")
    stores = start_stores(main, arrays)
    make_project(main)
    make_project(arrays)
    assert stores.wait(timeout=300) == 0, "the MLflow stores were not created"
    first = cli("watch", "--once", cwd=main)  # the watcher's memory starts before any job of the module ends
    assert "alerts start now" in first.stderr
    old = os.getcwd()
    ids: dict[str, str] = {}
    try:
        os.chdir(main)
        settings = load_settings(main)
        cfg = preset("vgae,student,tiny", dataset="synthetic")
        # the tiny preset's own request (3G, 1 CPU, no GPU) fits the node; these two lower it on purpose
        ids["timeout"] = submit(
            preset("vgae,student,tiny", dataset="synthetic").override(FOREVER),
            resources={"time": "1"},
            settings=settings,
            variant="tiny",
        ).job_id
        ids["oom"] = submit(cfg.override(TINY), resources={"mem": "400M"}, settings=settings, variant="tiny").job_id
        load = main / "load.sh"
        load.write_text(LOAD_JOB.format(out=main / "load-%j.out"))
        ids["load"] = subprocess.run(
            ["sbatch", "--parsable", str(load)], capture_output=True, text=True, check=True, timeout=30
        ).stdout.strip()
        os.chdir(arrays)
        ids["array"] = submit(
            preset("vgae,student,tiny", dataset="synthetic").override(TINY),
            array="0-1",
            settings=load_settings(arrays),
            variant="tiny",
        ).job_id
        # one task fails: cancelled once it runs (a task cancelled while pending leaves no accounting record)
        canceller = threading.Thread(target=cancel_when_running, args=(f"{ids['array']}_1",), daemon=True)
        canceller.start()
        yield {"main": main, "arrays": arrays, **ids}
    finally:
        os.chdir(old)
        live = [j for j in ids.values() if j]
        subprocess.run(["scancel", *live], capture_output=True, timeout=30)


def test_a_job_over_its_memory_is_triaged_alerted_resubmitted_with_more_and_completes(jobs, monkeypatch):
    main, job = jobs["main"], jobs["oom"]
    assert wait_ended([job])[job] in ("FAILED", "OUT_OF_MEMORY")
    failures = json.loads(cli("failures", "--format", "json", cwd=main).stdout)
    row = next(r for r in failures if r["job_id"] == job)
    assert row["cause"] == FailureCause.OOM
    table = cli("failures", cwd=main).stdout  # the terminal view groups it under its cause, with its log's last lines
    oom_group = table.split("oom: ", 1)[1].split("\n\n", 1)[0]
    assert f"job {job} " in oom_group and f"last lines of {main}" in oom_group and f"slurm-{job}." in oom_group
    sql = f"SELECT cause, req_mem_mb FROM jobs WHERE job_id = '{job}'"
    assert json.loads(cli("query", sql, "--format", "json", cwd=main).stdout) == [{"cause": "oom", "req_mem_mb": 400.0}]

    dry = cli("resubmit", job, "--dry-run", cwd=main).stdout
    assert "-  #SBATCH --mem=400M" in dry and "+  #SBATCH --mem=1024M" in dry
    assert "export KDGAT_RETRY_OF=" in dry
    alert = cli("watch", "--once", cwd=main).stdout  # kdgat watch tells of it once, with its cause
    assert f"job {job} " in alert and "failed: oom" in alert, alert
    assert f"job {job} " not in cli("watch", "--once", cwd=main).stdout

    retry = asyncio.run(resubmit_in_tui(main, job, monkeypatch))  # the TUI's R, confirmed, does what the CLI does
    assert wait_ended([retry])[retry] == "COMPLETED", cli("logs", "--err", retry, cwd=main, check=False).stdout[-1500:]
    usage = usage_of(retry)
    assert usage.req_mem_mb == 1024 and usage.max_rss_mb and usage.max_rss_mb > 400  # it needed more than it had
    assert retry_tags(main / "mlflow.db")[retry] in (row["run_id"], f"job {job}")


def test_a_job_at_its_time_limit_is_triaged_and_resubmitted_with_more_time(jobs):
    main, job = jobs["main"], jobs["timeout"]
    assert wait_ended([job], timeout=WAIT_S)[job] == "TIMEOUT"
    failures = json.loads(cli("failures", "--format", "json", cwd=main).stdout)
    assert next(r for r in failures if r["job_id"] == job)["cause"] == FailureCause.TIMEOUT
    out = cli("resubmit", "--failed", "--cause", "timeout", "--yes", cwd=main).stdout
    assert "-  #SBATCH --time=1" in out and "+  #SBATCH --time=00:02:00" in out
    retry = submitted_job(out)
    assert usage_of(retry).time_limit_s == 120
    failures = json.loads(cli("failures", "--format", "json", cwd=main).stdout)
    assert next(r for r in failures if r["job_id"] == job)["retried_by"] == retry
    again = cli("resubmit", "--failed", "--cause", "timeout", "--yes", cwd=main, check=False)
    assert again.returncode == 2 and "not resubmitted already (1 were" in again.stderr  # --failed retries once
    subprocess.run(["scancel", retry], check=True, timeout=30)  # it would train forever: its limit is what counts


def test_an_array_with_one_failed_task_resubmits_only_that_index(jobs):
    arrays, base = jobs["arrays"], jobs["array"]
    tasks = [f"{base}_{i}" for i in range(2)]
    ended = wait_ended(tasks)
    assert [ended[t] for t in tasks] == ["COMPLETED", "CANCELLED"]
    dry = cli("resubmit", "--failed", "--dry-run", cwd=arrays).stdout
    assert f"retry of job {base}_1 (cancelled), array 1" in dry and "+  #SBATCH --array=1" in dry
    out = cli("resubmit", "--failed", "--yes", cwd=arrays).stdout
    retry = submitted_job(out)
    assert f"(array 1), retrying {base}_1" in out
    done = wait_ended([f"{retry}_1"])
    assert done == {f"{retry}_1": "COMPLETED"}  # index 1 only, and it completed
    retried = retry_tags(arrays / "mlflow.db")
    assert len(retried) == 1  # the one new run names the task it retries (its run, if the task had opened one)
    (value,) = retried.values()
    assert value == f"job {base}_1" or len(value) == 32


def test_efficiency_figures_match_what_the_job_measured_of_itself(jobs):
    main, job = jobs["main"], jobs["load"]
    assert wait_ended([job])[job] == "COMPLETED"
    said = (main / f"load-{job}.out").read_text().split()
    cpu_s, rss_mb = float(said[1]), int(said[3]) / 1024
    usage = usage_of(job)
    assert usage.cpu_time_s == pytest.approx(cpu_s, rel=0.3)
    assert usage.max_rss_mb == pytest.approx(rss_mb, rel=0.2)  # the batch step: bash plus python
    assert usage.mem_eff == pytest.approx(usage.max_rss_mb / 1024)
    assert usage.cpu_eff == pytest.approx(usage.cpu_time_s / usage.elapsed_s)  # one CPU asked for
    assert usage.time_eff == pytest.approx(usage.elapsed_s / 300)
    per_job = json.loads(cli("efficiency", "--jobs", "--format", "json", cwd=main).stdout)
    assert {r["job_id"] for r in per_job} >= {jobs["oom"]}  # kdgat's own jobs, with their stage and preset
    assert job not in {r["job_id"] for r in per_job}  # a job kdgat did not submit has no stage to advise on
    # the tiny autoencoder ran out of memory at 400M once: the suggestion asks for more, and submit applies it
    advice = json.loads(cli("efficiency", "--format", "json", cwd=main).stdout)
    row = next(r for r in advice if (r["stage"], r["model_size"], r["variant"]) == ("autoencoder", "student", "tiny"))
    assert "ran out of memory" in row["advice"] and "mem=1024M" in row["suggested"]
    args = ["submit", "autoencoder", "--preset", "vgae,student,tiny", "--dataset", "synthetic"]
    dry = cli(*args, "-R", "suggested", "--dry-run", cwd=main)
    assert "suggested resources mem=1024M" in dry.stderr and "#SBATCH --mem=1024M" in dry.stdout


def test_a_request_no_node_can_run_is_refused_and_a_pending_reason_is_in_words(jobs):
    main = jobs["main"]
    before = {u.job_id for u in job_usage(refresh=True)}
    proc = cli("submit", "autoencoder", "--preset", "vgae,teacher", "--dataset", "synthetic", cwd=main, check=False)
    assert proc.returncode == 2
    assert proc.stderr.startswith("kdgat: No node of partition debug can ever run this job: it asks for 16 CPUs")
    assert len(proc.stderr.strip().splitlines()) == 1
    assert {u.job_id for u in job_usage(refresh=True)} == before  # nothing was queued
    # submitted behind kdgat's back, such a job waits for good: `kdgat jobs` says so in words
    stuck = subprocess.run(
        ["sbatch", "--parsable", "-c", "64", "--wrap", "true", "-o", "/dev/null"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout.strip()
    try:
        deadline = time.monotonic() + 30
        while True:
            rows = {r["job"]: r for r in json.loads(cli("jobs", "--format", "json", cwd=main).stdout)}
            if rows.get(stuck, {}).get("reason") not in (None, "", "None"):
                break
            assert time.monotonic() < deadline, rows.get(stuck)
            time.sleep(1)
        assert rows[stuck]["state"] == "PENDING"
        assert rows[stuck]["why"].startswith("will never start")
    finally:
        subprocess.run(["scancel", stuck], timeout=30)
