"""kdgat's SLURM layer on a real single-node cluster: jobs run `kdgat run` on tiny synthetic data.

All scenarios are submitted at once by one module fixture (they run side by side on the node), then each test
waits for its own outcome: a three-stage chain, scancel of a running job, kill -9 of a job's training process,
a failing parent with children, an array over seeds.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from kdgat_core.config import MlflowStatus, RunStatus, Tag, load_settings, preset
from kdgat_core.slurm import submit, submit_pipeline
from kdgat_core.slurm.scheduler import SlurmScheduler

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

KDGAT = str(Path(sys.executable).parent / "kdgat")
TINY = ["data.max_messages=3000", "train.epochs=1"]
FOREVER = ["data.max_messages=3000", "train.epochs=100000", "train.patience=100000"]
WAIT_S = 300.0


@dataclass
class Campaign:
    root: Path
    db: Path
    jobs: dict[str, str] = field(default_factory=dict)  # scenario -> job id
    chain: list[str] = field(default_factory=list)
    children: list[str] = field(default_factory=list)
    preprocess: str = ""
    follower: subprocess.Popen | None = None


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


def scheduler_states() -> dict[str, str]:
    """job id (and raw id) -> state, from one squeue + one sacct call."""
    out = {}
    for job in SlurmScheduler(cache_seconds=0).jobs(refresh=True):
        out[job.job_id] = job.state
        out.setdefault(job.raw_id, job.state)
    return out


def wait_jobs(
    job_ids: list[str],
    done=lambda s: s in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL"),
    timeout: float = WAIT_S,
) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    while True:
        states = scheduler_states()
        if all(done(states.get(j, "")) for j in job_ids):
            return states
        if time.monotonic() > deadline:
            raise AssertionError(f"jobs did not settle in {timeout:.0f} s: {[(j, states.get(j)) for j in job_ids]}")
        time.sleep(0.5)


def read_runs(db: Path) -> dict[str, dict]:
    """run id -> {'status': MLflow status, 'tags': {...}, 'metrics': n}, read-only (retries a writer's lock)."""
    if not db.exists():
        return {}
    for attempt in range(50):
        try:
            con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
            try:
                runs = {
                    r: {"status": s, "tags": {}, "metrics": 0}
                    for r, s in con.execute("SELECT run_uuid, status FROM runs")
                }
                for run, key, value in con.execute("SELECT run_uuid, key, value FROM tags"):
                    if run in runs:
                        runs[run]["tags"][key] = value
                for run, n in con.execute("SELECT run_uuid, count(*) FROM metrics GROUP BY run_uuid"):
                    if run in runs:
                        runs[run]["metrics"] = n
                return runs
            finally:
                con.close()
        except sqlite3.OperationalError:
            time.sleep(0.2)
    raise AssertionError(f"{db} stayed locked")


def runs_of_job(db: Path, job_id: str) -> list[dict]:
    return [dict(r, run_id=k) for k, r in read_runs(db).items() if r["tags"].get(Tag.SLURM_JOB_ID.value) == job_id]


def wait_training(db: Path, job_id: str, timeout: float = WAIT_S) -> str:
    """The run id of a job once its run is open and has logged an epoch (so it is inside the training loop)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = runs_of_job(db, job_id)
        if runs and runs[0]["tags"].get(Tag.STATUS.value) == RunStatus.RUNNING.value and runs[0]["metrics"] > 0:
            return runs[0]["run_id"]
        state = scheduler_states().get(job_id, "")
        assert state in ("PENDING", "RUNNING", "CONFIGURING", ""), (
            f"job {job_id} ended {state} before training; see its log"
        )
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} never started training")


def _is_kdgat_run(pid: int) -> bool:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return any(a.endswith(b"kdgat") for a in argv) and b"run" in argv


@pytest.fixture(scope="module")
def campaign(slurm_cluster, tmp_path_factory) -> Campaign:
    from kdgat_core.data.synthetic import write_dataset

    root = tmp_path_factory.mktemp("slurm_project")
    write_dataset(root / "data", name="synthetic", seed=0)
    (root / "kdgat.toml").write_text(
        textwrap.dedent(f"""\
        [tracking]
        uri = "mlflow.db"
        [data]
        root = "{root / "data"}"
        cache_dir = "{root / "cache"}"
        [datasets.no_data]
        description = "registered, but no files: its jobs fail at start"
        [cluster.resources]
        partition = "debug"
        gpus = 0
        cpus = 1
        mem = "3G"
        time = "00:15:00"
    """)
    )
    db = root / "mlflow.db"
    # create the schema once, before jobs start together (the writer serialises it anyway; this saves their time)
    subprocess.run(
        [sys.executable, "-c", f"from kdgat_core.tracking import get_store; get_store('sqlite:///{db}')"],
        check=True,
        timeout=120,
        cwd=root,
    )
    old_cwd = os.getcwd()
    os.chdir(root)
    try:
        settings = load_settings(root)
        c = Campaign(root=root, db=db)

        def stage_cfg(name: str, dataset: str, overrides: list[str]):
            return preset(name, dataset=dataset).override(overrides)

        # long jobs first: they must be running (and get killed) while the rest queue behind them
        c.jobs["scancel"] = submit(stage_cfg("vgae,student,tiny", "synthetic", FOREVER), settings=settings).job_id
        c.jobs["kill9"] = submit(stage_cfg("vgae,student,tiny", "synthetic", FOREVER), settings=settings).job_id
        parent = submit(stage_cfg("gat,teacher,tiny", "no_data", TINY), settings=settings).job_id
        c.jobs["failing_parent"] = parent
        c.children = [
            s.job_id
            for s in submit_pipeline(
                "no_data",
                ["teacher"],
                variant="tiny",
                overrides=TINY,
                stages=["fusion", "evaluation"],
                after=[parent],
                settings=settings,
            )
        ]
        chain = submit_pipeline(
            "synthetic",
            ["teacher"],
            variant="tiny",
            overrides=TINY,
            stages=["autoencoder", "curriculum", "fusion"],
            settings=settings,
        )
        assert chain[0].run_name == "synthetic/preprocess"  # the graph cache is built once, first
        c.preprocess, c.chain = chain[0].job_id, [s.job_id for s in chain[1:]]
        c.jobs["array"] = submit(
            stage_cfg("vgae,student,tiny", "synthetic", TINY), array="0-2", settings=settings
        ).job_id
        # follow the chain's last job from before it starts until it ends
        c.follower = subprocess.Popen(
            [KDGAT, "logs", "-f", c.chain[-1]], cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        yield c
    finally:
        os.chdir(old_cwd)
        ids = [j for j in [*c.jobs.values(), c.preprocess, *c.chain, *c.children] if j]
        subprocess.run(["scancel", *ids], capture_output=True, timeout=30)
        if c.follower is not None and c.follower.poll() is None:
            c.follower.kill()


def test_scancel_of_a_running_job_ends_its_run_killed(campaign: Campaign):
    job = campaign.jobs["scancel"]
    run_id = wait_training(campaign.db, job)
    cli("cancel", "--yes", job, cwd=campaign.root)
    wait_jobs([job])
    deadline = time.monotonic() + 60
    while (run := read_runs(campaign.db)[run_id])[
        "status"
    ] == MlflowStatus.RUNNING.value and time.monotonic() < deadline:
        time.sleep(0.3)
    assert run["status"] == MlflowStatus.KILLED.value
    assert run["tags"][Tag.STATUS.value] == RunStatus.FAILED.value
    assert "SIGTERM" in run["tags"].get(Tag.ERROR_MSG.value, "")
    assert scheduler_states()[job] == "CANCELLED"


def test_kill_9_of_the_training_process_leaves_a_lost_run_that_reconcile_marks_failed(campaign: Campaign):
    job = campaign.jobs["kill9"]
    run_id = wait_training(campaign.db, job)
    listing = subprocess.run(["scontrol", "listpids", job], capture_output=True, text=True, timeout=30).stdout
    pids = [line.split()[0] for line in listing.splitlines()[1:] if line.split() and line.split()[0].isdigit()]
    training = [int(p) for p in pids if _is_kdgat_run(int(p))]
    assert training, f"no kdgat run process among the job's pids {pids}"
    os.kill(training[0], signal.SIGKILL)  # what the OOM killer or a node failure does: no chance to clean up
    states = wait_jobs([job])
    assert states[job] == "FAILED"
    assert read_runs(campaign.db)[run_id]["tags"][Tag.STATUS.value] == RunStatus.RUNNING.value  # nobody closed it

    jobs = json.loads(cli("jobs", "--format", "json", cwd=campaign.root).stdout)
    row = next(r for r in jobs if r["job"] == job)
    assert (row["run"], row["run_id"]) == (RunStatus.LOST.value, run_id)

    marked = json.loads(cli("reconcile", "--format", "json", cwd=campaign.root).stdout)
    assert (run_id, job) in [(r["run_id"], r["job"]) for r in marked]
    run = read_runs(campaign.db)[run_id]
    assert run["status"] == MlflowStatus.FAILED.value
    assert run["tags"][Tag.STATUS.value] == RunStatus.FAILED.value
    assert "lost" in run["tags"][Tag.ERROR_MSG.value] and job in run["tags"][Tag.ERROR_MSG.value]
    assert "No lost runs" in cli("reconcile", cwd=campaign.root).stdout  # idempotent


def test_children_of_a_failing_parent_end_cancelled_not_pending(campaign: Campaign):
    parent = campaign.jobs["failing_parent"]
    states = wait_jobs([parent, *campaign.children], timeout=WAIT_S)
    assert states[parent] == "FAILED"
    assert [states[c] for c in campaign.children] == ["CANCELLED", "CANCELLED"]
    err = cli("logs", "--err", parent, cwd=campaign.root).stdout
    assert "no_data" in err  # the job's own error sentence reached its log


def test_three_stage_chain_runs_in_order_and_its_runs_carry_their_job_ids(campaign: Campaign):
    states = wait_jobs([campaign.preprocess, *campaign.chain])
    failed = next((j for j in [campaign.preprocess, *campaign.chain] if states[j] != "COMPLETED"), None)
    assert failed is None, cli("logs", "--err", failed, cwd=campaign.root, check=False).stdout[-2000:]
    assert "graphs in" in cli("logs", "--err", campaign.preprocess, cwd=campaign.root).stdout  # kdgat graphs ran
    runs = [runs_of_job(campaign.db, j) for j in campaign.chain]
    assert [len(r) for r in runs] == [1, 1, 1]
    names = [r[0]["tags"]["mlflow.runName"] for r in runs]
    assert names == ["synthetic/teacher_autoencoder", "synthetic/teacher_curriculum", "synthetic/teacher_fusion"]
    assert all(r[0]["status"] == MlflowStatus.FINISHED.value for r in runs)
    # the chain really ran in order: each run started after its parent's run ended
    for parent, child in zip(runs, runs[1:]):
        assert parent[0]["tags"][Tag.END_TIME.value] < child[0]["tags"][Tag.START_TIME.value]
    # `kdgat jobs` joins each job with its run
    jobs = {r["job"]: r for r in json.loads(cli("jobs", "--format", "json", cwd=campaign.root).stdout)}
    for job, run in zip(campaign.chain, runs):
        assert (jobs[job]["state"], jobs[job]["run"], jobs[job]["run_id"]) == (
            "COMPLETED",
            "complete",
            run[0]["run_id"],
        )
    # `kdgat logs -f`, started while the last job was pending, printed it and stopped when it ended
    out, _ = campaign.follower.communicate(timeout=60)
    assert "synthetic/teacher_fusion" in out and campaign.follower.returncode == 0


def test_array_over_seeds_gives_one_run_per_seed(campaign: Campaign):
    array = campaign.jobs["array"]
    tasks = [f"{array}_{i}" for i in range(3)]
    states = wait_jobs(tasks)
    assert [states[t] for t in tasks] == ["COMPLETED"] * 3
    raw_ids = {
        job.raw_id: job.job_id for job in SlurmScheduler(cache_seconds=0).jobs(refresh=True) if job.job_id in tasks
    }
    runs = [r for r in read_runs(campaign.db).values() if r["tags"].get(Tag.SLURM_JOB_ID.value) in raw_ids]
    assert sorted(int(r["tags"][Tag.SEED.value]) for r in runs) == [0, 1, 2]
    for r in runs:  # each task's run has the seed of its own task index
        task = raw_ids[r["tags"][Tag.SLURM_JOB_ID.value]]
        assert task.endswith(f"_{r['tags'][Tag.SEED.value]}")
        assert r["tags"]["mlflow.runName"] == "synthetic/student_autoencoder"
    log = cli("logs", tasks[2], cwd=campaign.root).stdout
    assert f"job {[k for k, v in raw_ids.items() if v == tasks[2]][0]}" in log


def test_one_squeue_and_one_sacct_call_per_refresh(campaign: Campaign):
    sched = SlurmScheduler(cache_seconds=30)
    first = sched.jobs()
    for _ in range(5):
        assert sched.jobs() is first
    assert sched.calls == {"squeue": 1, "sacct": 1}
    sched.jobs(refresh=True)
    assert sched.calls == {"squeue": 2, "sacct": 2}
    assert {campaign.chain[0], campaign.jobs["failing_parent"]} <= {j.job_id for j in first}
