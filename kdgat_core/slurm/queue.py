"""The job queue joined with its runs: what `kdgat jobs` prints and the TUI's jobs screen shows.

`job_table` joins the scheduler's view (one squeue + one sacct call per refresh, cached) with the runs a reader
passes in (the caller's: `kdgat_core.query.jobs.runs_of_jobs` reads them with DuckDB), on the runs' `slurm_job_id`
tag. A run still tagged `running` whose job has ended is `lost` (an OOM kill or node failure sends SIGKILL: the job
never closed its run); `ended_jobs` is what `kdgat_core.tracking.reconcile` needs to mark such runs failed.
This module reads neither the tracking DB nor MLflow itself.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kdgat_core.config import KdgatError, RunStatus, Settings, load_settings
from kdgat_core.slurm.local import LOCAL_PREFIX, LocalScheduler
from kdgat_core.slurm.render import ClusterSettings, absolute_tracking_uri, artifact_root
from kdgat_core.slurm.resources import check
from kdgat_core.slurm.scheduler import Job, SlurmScheduler, reason_words, shared_slurm
from kdgat_core.slurm.submit import LOCAL_JOBS_DIR, read_submissions

JOB_COLUMNS = ("job", "name", "state", "run", "elapsed", "node", "reason", "why", "run_id", "metric")


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
    why: str = ""  # the reason in words, e.g. 'waiting for CPUs, memory or GPUs to free up'

    def to_dict(self) -> dict[str, str]:
        return {c: getattr(self, c) for c in JOB_COLUMNS}


def schedulers(settings: Settings | None = None, tracking_uri: str | None = None) -> list[Any]:
    """Every scheduler this project's jobs may live on: SLURM where sbatch exists, plus local jobs if any."""
    settings = settings or load_settings()
    cluster = ClusterSettings.from_settings(settings)
    local_dir = artifact_root(tracking_uri, settings) / LOCAL_JOBS_DIR
    out: list[Any] = []
    if cluster.executor == "slurm" or (cluster.executor == "auto" and SlurmScheduler.available()):
        out.append(shared_slurm())
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
    return shared_slurm()


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


# --- the join ------------------------------------------------------------------------------------------------------
# (tracking URI, job ids) -> the runs tagged with those job ids, as dicts with run_id, slurm_job_id, status,
# start_time, metric_key, metric_value and metric_step (kdgat_core.query.jobs.runs_of_jobs is the real one)
RunsReader = Callable[[str, Sequence[str]], list[dict[str, Any]]]


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
) -> list[JobRow]:
    """The queue joined with the runs `runs` reads (none when it is None), newest job first; no mlflow import."""
    settings = settings or load_settings()
    uri = absolute_tracking_uri(tracking_uri, settings)
    jobs = scheduler_jobs(settings, tracking_uri, refresh)
    if not include_ended:
        jobs = [j for j in jobs if not j.ended]
    by_job: dict[str, dict[str, Any]] = {}
    try:
        ids = sorted({j.raw_id for j in jobs} | {j.job_id for j in jobs})
        for run in runs(uri, ids) if runs is not None else []:
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
                why=reason_words(job.reason),
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


# --- for reconcile -----------------------------------------------------------------------------------------------
def ended_jobs(
    tracking_uri: str | None = None, settings: Settings | None = None, refresh: bool = True
) -> dict[str, str]:
    """Job id -> final state of every job the schedulers say has ended (an array task under both of its ids)."""
    ended: dict[str, str] = {}
    for job in scheduler_jobs(settings, tracking_uri, refresh=refresh):
        if job.ended:
            ended[job.raw_id] = job.state
            ended.setdefault(job.job_id, job.state)
    return ended
