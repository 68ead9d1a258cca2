"""Lost runs: tagged `running`, but the scheduler says their job has ended (an OOM kill or a node failure sends
SIGKILL, so the job never closed its run). `reconcile` marks them failed through MLflow's client.

The scheduler's view comes in as data (`kdgat_core.slurm.ended_jobs()`), so tracking never imports the scheduler.
Run it in a process that does not read the DB with DuckDB (two SQLite copies in one process do not see each other's
locks): `kdgat reconcile` is such a process.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

from kdgat_core.config import MlflowStatus, RunStatus, Tag
from kdgat_core.tracking.run import utc_now_iso
from kdgat_core.tracking.store import get_store, with_retry


@dataclass
class LostRun:
    run_id: str
    run_name: str
    job_id: str
    job_state: str


def find_lost_runs(ended_jobs: Mapping[str, str], tracking_uri: str | None = None) -> list[LostRun]:
    """Runs tagged running whose job is in `ended_jobs` (job id -> final state), read through MLflow's client."""
    store = get_store(tracking_uri, create=False)
    if store is None:
        return []
    runs = with_retry(
        store.client.search_runs,
        [store.experiment_id],
        filter_string=f"tags.{Tag.STATUS} = '{RunStatus.RUNNING}'",
        max_results=50_000,
        what="search_runs",
    )
    lost = []
    for run in runs:
        job_id = run.data.tags.get(Tag.SLURM_JOB_ID.value)
        if job_id and job_id in ended_jobs:
            lost.append(LostRun(run.info.run_id, run.info.run_name or "", job_id, ended_jobs[job_id]))
    return lost


def reconcile(ended_jobs: Mapping[str, str], tracking_uri: str | None = None, dry_run: bool = False) -> list[LostRun]:
    """Mark every lost run failed (status tag, end_time, error_msg; MLflow status FAILED). Returns them."""
    lost = find_lost_runs(ended_jobs, tracking_uri)
    if dry_run or not lost:
        return lost
    from mlflow.entities import RunTag

    store = get_store(tracking_uri, create=False)
    assert store is not None  # find_lost_runs found runs in it
    for run in lost:
        message = f"job {run.job_id} ended {run.job_state} without closing its run (lost; marked by kdgat reconcile)"
        tags = [
            RunTag(Tag.STATUS.value, RunStatus.FAILED.value),
            RunTag(Tag.END_TIME.value, utc_now_iso()),
            RunTag(Tag.ERROR_MSG.value, message),
        ]
        with_retry(store.client.log_batch, run.run_id, tags=tags, what="log_batch")
        with_retry(
            store.client.set_terminated,
            run.run_id,
            status=MlflowStatus.FAILED.value,
            end_time=int(time.time() * 1000),
            what="set_terminated",
        )
    return lost
