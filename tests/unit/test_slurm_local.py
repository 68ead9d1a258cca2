"""The local executor (machines without SLURM) and the queue join: real bash jobs, no scheduler needed."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from kdgat_core.config import KdgatError, preset
from kdgat_core.slurm import cancel, job_logs, job_table, submit, submit_pipeline
from kdgat_core.slurm.local import expand_array
from kdgat_core.slurm.scheduler import normalize_state, short_elapsed

KDGAT = str(Path(sys.executable).parent / "kdgat")


@pytest.fixture()
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A project using the local executor; its 'kdgat' fails curriculum, sleeps in fusion, succeeds otherwise."""
    fake = tmp_path / "fake_kdgat"
    fake.write_text(
        textwrap.dedent("""\
        #!/bin/bash
        echo "ran $* job=$SLURM_JOB_ID task=${SLURM_ARRAY_TASK_ID:-}"
        case "$2" in
          curriculum) echo "curriculum broke" >&2; exit 3 ;;
          fusion) echo $$ > "$(dirname "$0")/fusion.pid"; sleep 30 ;;
        esac
    """)
    )
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
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path


def no_runs(uri: str, job_ids) -> list[dict]:
    return []


def wait_for(job_ids: set[str], want_ended: bool = True, timeout: float = 30.0) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while True:
        rows = {r.job: r for r in job_table(runs=no_runs, refresh=True)}
        if all(j in rows and (rows[j].state in ("COMPLETED", "FAILED", "CANCELLED")) == want_ended for j in job_ids):
            return rows
        if time.monotonic() > deadline:
            raise AssertionError(f"jobs {job_ids} not settled: {[(r.job, r.state) for r in rows.values()]}")
        time.sleep(0.1)


def test_chain_with_a_failing_parent_cancels_its_children(project: Path):
    subs = submit_pipeline("synthetic", ["teacher"], stages=["autoencoder", "curriculum", "fusion"])
    prep, ae, cur, fus = (s.job_id for s in subs)
    assert [s.after for s in subs] == [[], [prep], [ae], [cur]]
    rows = wait_for({prep, ae, cur, fus})
    assert rows[prep].state == rows[ae].state == "COMPLETED"
    assert "ran graphs synthetic --window 100" in job_logs(prep)[0].read_text()
    assert rows[cur].state == "FAILED" and rows[cur].exit_code == "3:0"
    assert rows[fus].state == "CANCELLED" and rows[fus].reason == "DependencyNeverSatisfied"
    out, err = job_logs(ae)
    assert out == project / "experimentruns" / "synthetic" / "teacher_autoencoder" / f"slurm-{ae}.out"
    assert f"ran run autoencoder --preset vgae,teacher --dataset synthetic job={ae}" in out.read_text()
    assert "curriculum broke" in job_logs(cur)[1].read_text()
    assert not (project / "fusion.pid").exists(), "the child of a failed job ran"


def test_cancel_stops_a_running_job_and_its_processes(project: Path):
    job = submit(preset("dqn,teacher", dataset="synthetic")).job_id
    pidfile = project / "fusion.pid"
    deadline = time.monotonic() + 20
    while not pidfile.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    pid = int(pidfile.read_text())
    cancel([job])
    rows = wait_for({job}, timeout=10)
    assert rows[job].state == "CANCELLED"
    time.sleep(0.3)
    assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split(")")[1][:3]


def test_array_over_seeds_runs_every_task_with_its_own_seed(project: Path):
    job = submit(preset("vgae,student", dataset="synthetic"), array="1,3,5").job_id
    tasks = {f"{job}_{i}" for i in (1, 3, 5)}
    rows = wait_for(tasks)
    assert all(rows[t].state == "COMPLETED" for t in tasks)
    for i in (1, 3, 5):
        text = job_logs(f"{job}_{i}")[0].read_text()
        assert f"train.seed={i} job={job}_{i} task={i}" in text


def test_queue_marks_a_run_lost_when_its_job_ended_but_the_run_says_running(project: Path):
    ok = submit(preset("vgae,teacher", dataset="synthetic")).job_id
    wait_for({ok})

    def runs(uri: str, job_ids) -> list[dict]:
        assert ok in job_ids
        assert uri == f"sqlite:///{project / 'mlflow.db'}"
        return [
            {
                "run_id": "abc123",
                "slurm_job_id": ok,
                "status": "running",
                "start_time": "2026-01-01T00:00:00",
                "metric_key": "val_f1",
                "metric_value": 0.91234,
                "metric_step": 4,
            }
        ]

    row = next(r for r in job_table(runs=runs) if r.job == ok)
    assert (row.run, row.run_id, row.metric) == ("lost", "abc123", "val_f1=0.9123 @4")

    def complete(uri: str, job_ids) -> list[dict]:
        return [{"run_id": "abc123", "slurm_job_id": ok, "status": "complete", "start_time": "2026-01-01T00:00:00"}]

    assert next(r for r in job_table(runs=complete) if r.job == ok).run == "complete"


def test_cli_jobs_logs_cancel_on_the_local_executor(project: Path):
    env = {**os.environ, "KDGAT_QUEUE_CACHE_SECONDS": "0"}
    sub = subprocess.run(
        [KDGAT, "submit", "autoencoder", "--dataset", "synthetic", "--preset", "teacher"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert sub.returncode == 0, sub.stderr
    assert sub.stdout.startswith("Submitted synthetic/teacher_autoencoder as job L")
    job = sub.stdout.split(" as job ")[1].split()[0]
    wait_for({job})
    jobs = subprocess.run([KDGAT, "jobs", "--format", "csv"], capture_output=True, text=True, timeout=60, env=env)
    assert jobs.returncode == 0, jobs.stderr
    assert f"{job},synthetic/teacher_autoencoder,COMPLETED" in jobs.stdout
    logs = subprocess.run([KDGAT, "logs", job], capture_output=True, text=True, timeout=60, env=env)
    assert "ran run autoencoder" in logs.stdout
    missing = subprocess.run([KDGAT, "logs", "L999"], capture_output=True, text=True, timeout=60, env=env)
    assert missing.returncode == 2 and "No job L999" in missing.stderr and "Traceback" not in missing.stderr
    bad = subprocess.run([KDGAT, "cancel", "--yes", "12;rm"], capture_output=True, text=True, timeout=60, env=env)
    assert bad.returncode == 2 and "Refusing" in bad.stderr


def test_depending_on_an_unknown_job_is_refused(project: Path):
    with pytest.raises(KdgatError, match="No local job L77"):
        submit(preset("vgae,teacher", dataset="synthetic"), after=["L77"])


def test_scheduler_text_parsing():
    assert normalize_state("CANCELLED by 0") == "CANCELLED"
    assert normalize_state("COMPLETED+") == "COMPLETED"
    assert [short_elapsed(t) for t in ("00:00:07", "00:01:05", "01:00:00", "1-02:03:04", "0:05")] == [
        "0:07",
        "1:05",
        "1:00:00",
        "1-02:03:04",
        "0:05",
    ]
    assert expand_array("0-3") == [0, 1, 2, 3]
    assert expand_array("1,3,5") == [1, 3, 5]
    assert expand_array("0-6:3%2") == [0, 3, 6]
