"""Lost runs: tagged `running`, but their job has ended (an OOM kill or a node failure sends SIGKILL, so the job never
closed its run) or their process is gone from this host. `reconcile` marks them failed through MLflow's client.

The scheduler's view comes in as data (`kdgat_core.slurm.ended_jobs()`) and the process check as a function
(`kdgat_core.slurm.local.run_process_gone`), so tracking never imports the scheduler.
Run it in a process that does not read the DB with DuckDB (two SQLite copies in one process do not see each other's
locks): `kdgat reconcile` is such a process.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from kdgat_core.config import HOST_TAG, PID_TAG, KdgatError, MlflowStatus, RunStatus, Tag
from kdgat_core.tracking.run import utc_now_iso
from kdgat_core.tracking.store import get_store, normalize_uri, with_retry

# (pid tag, host tag, run start in ms) -> True when that process is known to be gone
ProcessGone = Callable[[object, object, object], bool]
PROCESS_GONE = "process gone"


@dataclass
class LostRun:
    run_id: str
    run_name: str
    job_id: str
    job_state: str  # the job's final state, or "process gone (pid N on HOST)"


def check_store_file(tracking_uri: str | None) -> None:
    """A SQLite store that reconcile can look at: a missing, empty or non-file path is a sentence, not 'no lost runs'."""
    _, path = normalize_uri(tracking_uri)
    if path is None:
        return
    if not path.exists():
        raise KdgatError(
            f"Tracking database {path} does not exist; check --tracking-uri, MLFLOW_TRACKING_URI or kdgat.toml."
        )
    if not path.is_file():
        raise KdgatError(f"Tracking database {path} is {'a directory' if path.is_dir() else 'not a regular file'}.")
    if path.stat().st_size == 0:
        raise KdgatError(f"Tracking database {path} is empty (0 bytes), so it is not an MLflow tracking database.")


def find_lost_runs(
    ended_jobs: Mapping[str, str], tracking_uri: str | None = None, process_gone: ProcessGone | None = None
) -> list[LostRun]:
    """Runs tagged running whose job is in `ended_jobs` (job id -> final state), or whose process (pid and host tags)
    `process_gone` says has ended; read through MLflow's client."""
    check_store_file(tracking_uri)
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
        tags = run.data.tags
        job_id = tags.get(Tag.SLURM_JOB_ID.value)
        if job_id and job_id in ended_jobs:
            lost.append(LostRun(run.info.run_id, run.info.run_name or "", job_id, ended_jobs[job_id]))
        elif process_gone is not None and process_gone(tags.get(PID_TAG), tags.get(HOST_TAG), run.info.start_time):
            where = f"pid {tags.get(PID_TAG)} on {tags.get(HOST_TAG)}"
            lost.append(LostRun(run.info.run_id, run.info.run_name or "", job_id or "", f"{PROCESS_GONE} ({where})"))
    return lost


def reconcile(
    ended_jobs: Mapping[str, str],
    tracking_uri: str | None = None,
    dry_run: bool = False,
    process_gone: ProcessGone | None = None,
) -> list[LostRun]:
    """Mark every lost run failed (status tag, end_time, error_msg; MLflow status FAILED). Returns them."""
    lost = find_lost_runs(ended_jobs, tracking_uri, process_gone)
    if dry_run or not lost:
        return lost
    from mlflow.entities import RunTag

    store = get_store(tracking_uri, create=False)
    assert store is not None  # find_lost_runs found runs in it
    for run in lost:
        message = (
            f"job {run.job_id} ended {run.job_state} without closing its run (lost; marked by kdgat reconcile)"
            if run.job_id and not run.job_state.startswith(PROCESS_GONE)
            else f"its {run.job_state.removeprefix(PROCESS_GONE + ' ')} ended without closing the run "
            "(lost; marked by kdgat reconcile)"
        )
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
