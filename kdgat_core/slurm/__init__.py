"""kdgat_core.slurm: render sbatch scripts from slurm_templates/, submit stages and pipelines, follow the queue.

Real sbatch/squeue/sacct/scancel behind one small interface, or the local executor where SLURM is absent.
Importing this package never imports torch, torch_geometric, mlflow or the query layer (the TUI calls `job_table`).
"""

from kdgat_core.slurm.accounting import JobUsage, job_usage
from kdgat_core.slurm.queue import JobRow, RunsReader, cancel, ended_jobs, job_logs, job_table
from kdgat_core.slurm.render import ClusterSettings, RenderedJob, prepare_job, render_sbatch
from kdgat_core.slurm.resources import Resources, resolve_resources
from kdgat_core.slurm.scheduler import Job
from kdgat_core.slurm.submit import PlannedJob, Submission, plan_pipeline, submit, submit_pipeline

# the queue as the TUI reads it (same function `kdgat jobs` prints)
queue = job_table

__all__ = [
    "ClusterSettings",
    "Job",
    "JobRow",
    "JobUsage",
    "PlannedJob",
    "RenderedJob",
    "Resources",
    "RunsReader",
    "Submission",
    "cancel",
    "ended_jobs",
    "job_logs",
    "job_table",
    "job_usage",
    "plan_pipeline",
    "prepare_job",
    "queue",
    "render_sbatch",
    "resolve_resources",
    "submit",
    "submit_pipeline",
]
