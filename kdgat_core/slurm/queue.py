"""The job queue joined with the tracking DB: what `kdgat jobs` prints and the TUI's jobs screen shows.

Reader side (`job_table`): the scheduler's view (one squeue + one sacct call per refresh, cached) joined on the runs'
`slurm_job_id` tag, with runs read through kdgat_core.query (DuckDB, read-only). A run still tagged `running` whose
job has ended is `lost` (an OOM kill or node failure sends SIGKILL: the job never closed its run).
Writer side (`reconcile`): marks lost runs failed through MLflow's client, in a process that does not read the DB
with DuckDB (two SQLite copies in one process do not see each other's locks).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kdgat_core.config import (
    HOST_TAG,
    PID_TAG,
    KdgatError,
    Metric,
    MlflowStatus,
    RunStatus,
    Settings,
    Tag,
    load_settings,
    sqlite_path,
)
from kdgat_core.slurm.local import LOCAL_PREFIX, LocalScheduler, run_process_gone
from kdgat_core.slurm.render import ClusterSettings, absolute_tracking_uri, artifact_root
from kdgat_core.slurm.resources import check
from kdgat_core.slurm.scheduler import Job, SlurmScheduler, scheduler_for
from kdgat_core.slurm.submit import LOCAL_JOBS_DIR, read_submissions

JOB_COLUMNS = ("job", "name", "state", "run", "elapsed", "node", "reason", "run_id", "metric")


@dataclass
class JobRow:
    """One line of `kdgat jobs`: the scheduler's job and, when it has started one, its run."""

    job: str
    name: str
    state: str  # the scheduler's state
    run: str  # the run's status tag (running/complete/failed), `lost`, or "" before the run exists
    elapsed: str
    node: str
    reason: str
    run_id: str
    metric: str  # the run's most recent metric, e.g. "val_f1=0.9312 @3"
    raw_id: str = ""
    executor: str = ""
    exit_code: str = ""

    def to_dict(self) -> dict[str, str]:
        return {c: getattr(self, c) for c in JOB_COLUMNS}


def schedulers(settings: Settings | None = None, tracking_uri: str | None = None) -> list[Any]:
    """Every scheduler this project's jobs may live on: SLURM where sbatch exists, plus local jobs if any."""
    settings = settings or load_settings()
    cluster = ClusterSettings.from_settings(settings)
    local_dir = artifact_root(tracking_uri, settings) / LOCAL_JOBS_DIR
    out: list[Any] = []
    if cluster.executor == "slurm" or (cluster.executor == "auto" and SlurmScheduler.available()):
        out.append(scheduler_for("slurm"))
    if cluster.executor == "local" or local_dir.is_dir() or not out:
        out.append(LocalScheduler(local_dir))
    return out


def scheduler_of(job_id: str, settings: Settings | None = None, tracking_uri: str | None = None) -> Any:
    """The scheduler that owns a job id: `L<n>` ids are the local executor's, digits are SLURM's."""
    check("dependency_id", job_id, "job id")
    settings = settings or load_settings()
    if job_id.startswith(LOCAL_PREFIX):
        return LocalScheduler(artifact_root(tracking_uri, settings) / LOCAL_JOBS_DIR)
    if not SlurmScheduler.available():
        raise KdgatError(f"Job {job_id} is a SLURM job, but sbatch/squeue are not installed here.")
    return scheduler_for("slurm")


def scheduler_jobs(
    settings: Settings | None = None, tracking_uri: str | None = None, refresh: bool = False
) -> list[Job]:
    jobs: list[Job] = []
    for sched in schedulers(settings, tracking_uri):
        jobs.extend(sched.jobs(refresh=refresh))
    return jobs


def is_lost(run_status: str | None, job: Job | None) -> bool:
    """A run still tagged running whose job the scheduler says has ended."""
    return run_status == RunStatus.RUNNING.value and job is not None and job.ended


# --- reader side ---------------------------------------------------------------------------------------------------
RunsReader = Callable[[str, Sequence[str]], list[dict[str, Any]]]


_open_dbs: dict[str, Any] = {}


def _tracking_db(tracking_uri: str) -> Any:
    """One read-only TrackingDB per URI and process: `jobs --watch` and the TUI do not reopen it every refresh."""
    if tracking_uri not in _open_dbs:
        try:
            from kdgat_core.query import open_db
        except ImportError:
            raise KdgatError("kdgat_core.query cannot read the tracking DB here.") from None
        _open_dbs[tracking_uri] = open_db(tracking_uri)
    return _open_dbs[tracking_uri]


def runs_from_query(tracking_uri: str, job_ids: Sequence[str], db: Any = None) -> list[dict[str, Any]]:
    """Runs tagged with one of these job ids: run_id, slurm_job_id, status, start_time and the newest metric (f1 among
    metrics logged together, as a finished run's final metrics are),
    read through kdgat_core.query (DuckDB, read-only) and its public views `tags` and `metrics`."""
    from kdgat_core.config import sqlite_path

    if not job_ids:
        return []
    if db is None:
        path = sqlite_path(tracking_uri, must_exist=False)
        if path is not None and not path.is_file():
            return []  # nothing tracked yet: the queue alone is still worth showing
        db = _tracking_db(tracking_uri)
    if hasattr(db, "job_runs"):  # the query layer's own indexed lookup, when it has one
        table = db.job_runs(list(job_ids))
    else:
        ids = ", ".join("'" + j.replace("'", "''") + "'" for j in job_ids)  # ids were validated: digits, L, _
        job_tag, status_tag, start_tag = Tag.SLURM_JOB_ID.value, Tag.STATUS.value, Tag.START_TIME.value
        table = db.sql(f"""
            WITH j AS (SELECT run_id, value AS slurm_job_id FROM tags WHERE key = '{job_tag}' AND value IN ({ids})),
                 t AS (SELECT run_id, max(CASE WHEN key = '{status_tag}' THEN value END) AS status,
                              max(CASE WHEN key = '{start_tag}' THEN value END) AS start_time
                       FROM tags WHERE run_id IN (SELECT run_id FROM j) GROUP BY run_id),
                 m AS (SELECT run_id, key, value, step,
                              row_number() OVER (PARTITION BY run_id ORDER BY timestamp DESC,
                                  key = '{Metric.F1}' DESC, key = '{Metric.VAL_F1}' DESC, step DESC, key) AS rn
                       FROM metrics WHERE run_id IN (SELECT run_id FROM j))
            SELECT j.run_id, j.slurm_job_id, t.status, t.start_time,
                   m.key AS metric_key, m.value AS metric_value, m.step AS metric_step
            FROM j LEFT JOIN t ON t.run_id = j.run_id LEFT JOIN m ON m.run_id = j.run_id AND m.rn = 1""")
    return table.to_dict("records") if hasattr(table, "to_dict") else list(table)


def _metric_text(run: dict[str, Any]) -> str:
    key, value = run.get("metric_key"), run.get("metric_value")
    if not key or value is None or value != value:
        return ""
    step = run.get("metric_step")
    at = f" @{int(step)}" if step is not None and step == step and int(step) > 0 else ""
    return f"{key}={float(value):.4g}{at}"


def job_table(
    tracking_uri: str | None = None,
    settings: Settings | None = None,
    refresh: bool = False,
    runs: RunsReader | None = None,
    include_ended: bool = True,
    db: Any = None,
) -> list[JobRow]:
    """The joined queue, newest job first. What the TUI's jobs screen calls (read-only, no mlflow import);
    pass `db` (an open kdgat_core.query TrackingDB) to reuse the caller's connection."""
    settings = settings or load_settings()
    uri = absolute_tracking_uri(tracking_uri, settings)
    jobs = scheduler_jobs(settings, tracking_uri, refresh)
    if not include_ended:
        jobs = [j for j in jobs if not j.ended]
    by_job: dict[str, dict[str, Any]] = {}
    try:
        ids = sorted({j.raw_id for j in jobs} | {j.job_id for j in jobs})
        reader = runs or (lambda u, i: runs_from_query(u, i, db=db))
        for run in reader(uri, ids):
            job_id = str(run.get("slurm_job_id") or "")
            previous = by_job.get(job_id)
            # a requeued job may start several runs: show the newest
            if previous is None or str(run.get("start_time") or "") >= str(previous.get("start_time") or ""):
                by_job[job_id] = run
    except KdgatError:
        by_job = {}  # no tracking DB (yet): the queue alone is still worth showing
    rows: list[JobRow] = []
    for job in jobs:
        run = by_job.get(job.raw_id) or by_job.get(job.job_id) or {}
        status = run.get("status") or ""
        rows.append(
            JobRow(
                job=job.job_id,
                name=job.name,
                state=job.state,
                run=RunStatus.LOST.value if is_lost(status, job) else status,
                elapsed=job.elapsed,
                node=job.node,
                reason=job.reason,
                run_id=str(run.get("run_id") or ""),
                metric=_metric_text(run),
                raw_id=job.raw_id,
                executor=job.source,
                exit_code=job.exit_code,
            )
        )
    return rows


# --- logs and cancel -------------------------------------------------------------------------------------------------
def job_logs(job_id: str, tracking_uri: str | None = None, settings: Settings | None = None) -> tuple[Path, Path]:
    """stdout and stderr files of a job: from kdgat's submission record, else from the scheduler."""
    settings = settings or load_settings()
    base, _, task = job_id.partition("_")
    record = read_submissions(artifact_root(tracking_uri, settings)).get(base)
    if record is not None:
        out, err = record["output"], record["error"]
        if record.get("executor") == "local":
            from kdgat_core.slurm.local import _fill

            index = task or None
            return Path(_fill(out, base, index)), Path(_fill(err, base, index))
        return Path(_fill_slurm(out, job_id)), Path(_fill_slurm(err, job_id))
    sched = scheduler_of(job_id, settings, tracking_uri)
    paths = sched.log_paths(job_id)
    if paths is None:
        raise KdgatError(f"No job {job_id} in kdgat's submission records or the scheduler's memory.")
    return Path(paths[0]), Path(paths[1])


def _fill_slurm(pattern: str, job_id: str) -> str:
    base, _, task = job_id.partition("_")
    if "%A" in pattern and not task:
        raise KdgatError(f"Job {job_id} is an array: name one task, e.g. {job_id}_0.")
    return pattern.replace("%A", base).replace("%a", task).replace("%j", job_id)


def cancel(job_ids: Sequence[str], tracking_uri: str | None = None, settings: Settings | None = None) -> None:
    """scancel (or the local executor's cancel) for each job id; a running job's run ends KILLED (SIGTERM)."""
    settings = settings or load_settings()
    groups: dict[str, tuple[Any, list[str]]] = {}
    for job_id in job_ids:
        sched = scheduler_of(job_id, settings, tracking_uri)
        groups.setdefault(sched.kind, (sched, []))[1].append(job_id)
    for sched, ids in groups.values():
        sched.cancel(ids)


# --- writer side: lost runs --------------------------------------------------------------------------------------------
@dataclass
class LostRun:
    run_id: str
    run_name: str
    job_id: str
    job_state: str


def _check_store_file(uri: str) -> None:
    """A SQLite store that reconcile can look at: a missing, empty or non-file path is a sentence, not 'no lost runs'."""
    path = sqlite_path(uri, must_exist=False)
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
    tracking_uri: str | None = None, settings: Settings | None = None, warnings: list[str] | None = None
) -> list[LostRun]:
    """Runs tagged running whose job has ended, or whose process (pid and host tags) is gone from this host, read
    through MLflow's client (this is the writer's process). A scheduler that cannot be asked is noted in `warnings`;
    the process check still runs."""
    from kdgat_core.tracking import get_store, with_retry

    settings = settings or load_settings()
    uri = absolute_tracking_uri(tracking_uri, settings)
    _check_store_file(uri)
    store = get_store(uri, create=False)
    if store is None:
        return []
    jobs = {}
    try:
        found = scheduler_jobs(settings, tracking_uri, refresh=True)
    except KdgatError as exc:
        found = []
        if warnings is not None:
            warnings.append(f"{str(exc).rstrip('.')}; only runs whose process is gone from this host were checked.")
    for job in found:
        jobs[job.raw_id] = job
        jobs.setdefault(job.job_id, job)
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
        job = jobs.get(job_id or "")
        if job_id and is_lost(RunStatus.RUNNING.value, job):
            lost.append(LostRun(run.info.run_id, run.info.run_name or "", job_id, job.state))
        elif run_process_gone(tags.get(PID_TAG), tags.get(HOST_TAG), run.info.start_time):
            where = f"pid {tags.get(PID_TAG)} on {tags.get(HOST_TAG)}"
            lost.append(LostRun(run.info.run_id, run.info.run_name or "", job_id or "", f"process gone ({where})"))
    return lost


def reconcile(
    tracking_uri: str | None = None,
    settings: Settings | None = None,
    dry_run: bool = False,
    warnings: list[str] | None = None,
) -> list[LostRun]:
    """Mark every lost run failed (status tag, end_time, error_msg; MLflow status FAILED). Returns them."""
    lost = find_lost_runs(tracking_uri, settings, warnings)
    if dry_run or not lost:
        return lost
    from mlflow.entities import RunTag

    from kdgat_core.tracking import get_store, with_retry
    from kdgat_core.tracking.run import utc_now_iso

    store = get_store(absolute_tracking_uri(tracking_uri, settings), create=False)
    assert store is not None
    for run in lost:
        message = (
            f"job {run.job_id} ended {run.job_state} without closing its run (lost; marked by kdgat reconcile)"
            if run.job_id and not run.job_state.startswith("process gone")
            else f"its {run.job_state.removeprefix('process gone ')} ended without closing the run "
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
