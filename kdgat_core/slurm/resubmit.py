"""Resubmitting failed jobs: the same stage, preset, dataset and overrides (from kdgat's submission record), the same
template, resources adjusted by the cause (more memory after an out-of-memory kill, more time after a time limit),
an array only for its failed task indices. The retry's run carries the id of the run it retries (tag retry_of).

The caller says which jobs failed and why (kdgat_core.query's failures, over the scheduler's facts): this module
never reads the tracking DB.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kdgat_core.config import (
    ENV_RETRY_OF,
    PREPROCESS_JOB,
    STAGE_ARCH,
    FailureCause,
    KdgatError,
    PipelineConfig,
    Settings,
    Stage,
    load_settings,
    preset,
    retry_of_value,
)
from kdgat_core.slurm.capacity import mem_mb, minutes
from kdgat_core.slurm.render import RenderedJob, artifact_root, prepare_job
from kdgat_core.slurm.resources import Resources
from kdgat_core.slurm.submit import Submission, read_submissions, submit

MEMORY_FACTOR = 2.0  # after an out-of-memory kill: twice the request (or 1.5 x the peak, if higher)
PEAK_FACTOR = 1.5
TIME_FACTOR = 2.0  # after a time limit: twice the limit


@dataclass
class FailedJob:
    """What the caller knows of one failed job or array task."""

    job_id: str  # 1234 or 1234_5
    cause: str = FailureCause.FAILED.value
    run_id: str | None = None  # the run it started, if any
    max_rss_mb: float | None = None


@dataclass
class Retry:
    """One resubmission: a failed job (or the failed tasks of an array) rendered again with adjusted resources."""

    base_job: str
    failed: list[FailedJob]
    job: RenderedJob
    preprocess: bool
    variant: str | None
    exports: dict[str, str]
    changed: list[tuple[str, str]] = field(default_factory=list)  # (old #SBATCH line, new one)
    record: dict[str, Any] = field(default_factory=dict)

    @property
    def array(self) -> str | None:
        return self.job.array


def _config(record: Mapping[str, Any]) -> tuple[PipelineConfig, bool]:
    stage = str(record.get("stage") or "")
    preprocess = stage == PREPROCESS_JOB
    base_stage = Stage.AUTOENCODER if preprocess else Stage.parse(stage, "stage")
    cfg = preset(f"{STAGE_ARCH[base_stage]},{record['model_size']}", dataset=str(record["dataset"]))
    cfg.override(record.get("overrides") or [])
    if record.get("kd"):
        cfg.kd.enabled = True
        cfg.kd.teacher_run_id = str(record.get("teacher") or "auto")
    return cfg, preprocess


def _mem_text(mb: float) -> str:
    return f"{math.ceil(mb / 1024)}G" if mb >= 1024 else f"{math.ceil(mb / 256) * 256}M"


def _time_text(total_minutes: float) -> str:
    m = math.ceil(total_minutes)
    days, rem = divmod(m, 24 * 60)
    return (f"{days}-" if days else "") + f"{rem // 60:02d}:{rem % 60:02d}:00"


def adjusted(resources: Resources, failed: Sequence[FailedJob]) -> Resources:
    """More memory after an out-of-memory kill, more time after a time limit; otherwise the same request."""
    out = dataclasses.replace(resources, extra=list(resources.extra))
    causes = {f.cause for f in failed}
    if FailureCause.OOM.value in causes:
        peak = max((f.max_rss_mb or 0.0) for f in failed)
        out.mem = _mem_text(max(mem_mb(resources.mem) * MEMORY_FACTOR, peak * PEAK_FACTOR))
    if FailureCause.TIMEOUT.value in causes:
        out.time = _time_text((minutes(resources.time) or 60) * TIME_FACTOR)
    return out


def sbatch_lines(script: str) -> list[str]:
    return [line.strip() for line in script.splitlines() if line.startswith("#SBATCH")]


def _changed(old: list[str], new: list[str]) -> list[tuple[str, str]]:
    def key(line: str) -> str:
        return line.split("=", 1)[0]

    old_by, new_by = {key(x): x for x in old}, {key(x): x for x in new}
    out = []
    for k in dict.fromkeys([*old_by, *new_by]):
        if old_by.get(k) != new_by.get(k):
            out.append((old_by.get(k, ""), new_by.get(k, "")))
    return out


def plan_retries(
    failed: Sequence[FailedJob],
    resources: Mapping[str, Any] | None = None,
    settings: Settings | None = None,
    tracking_uri: str | None = None,
) -> list[Retry]:
    """One Retry per failed job (an array's failed tasks together), rendered but not submitted.

    `resources` (the -R pairs) override the adjusted request."""
    settings = settings or load_settings()
    records = read_submissions(artifact_root(tracking_uri, settings))
    by_base: dict[str, list[FailedJob]] = {}
    for f in failed:
        by_base.setdefault(f.job_id.split("_", 1)[0], []).append(f)
    out = []
    for base, items in by_base.items():
        record = records.get(base)
        if record is None:
            raise KdgatError(
                f"Job {base} has no kdgat submission record (it was not submitted with kdgat here): "
                "submit it again with `kdgat submit`."
            )
        cfg, preprocess = _config(record)
        fields = {f.name for f in dataclasses.fields(Resources)}
        recorded = {k: v for k, v in (record.get("resources") or {}).items() if k in fields}
        if recorded:
            base_res = Resources(**recorded)
        else:  # a record from before kdgat kept resources: what it would have asked for
            base_res = prepare_job(
                cfg, None, settings, tracking_uri=tracking_uri, preprocess=preprocess, variant=record.get("variant")
            ).resources
        res = adjusted(base_res, items)
        for key, value in (resources or {}).items():
            if key not in fields:
                raise KdgatError(f"Unknown resource '{key}'; known: {', '.join(sorted(fields))}.")
            setattr(res, key, value)
        array = None
        if record.get("array"):
            tasks = sorted({f.job_id.partition("_")[2] for f in items if "_" in f.job_id}, key=int)
            if not tasks:
                raise KdgatError(f"Job {base} is an array: name its failed tasks (e.g. {base}_0) or use --failed.")
            array = ",".join(tasks)
        retried = {(f.job_id.partition("_")[2] if array else ""): (f.run_id or f"job {f.job_id}") for f in items}
        exports = {ENV_RETRY_OF: retry_of_value(retried)}
        job = prepare_job(
            cfg,
            res,
            settings,
            array=array,
            tracking_uri=tracking_uri,
            preprocess=preprocess,
            variant=record.get("variant"),
            exports=exports,
        )
        old_script = ""
        try:
            old_script = Path(str(record.get("script") or "")).read_text()
        except OSError:
            pass
        changed = _changed(sbatch_lines(old_script), sbatch_lines(job.script)) if old_script else []
        out.append(
            Retry(
                base_job=base,
                failed=items,
                job=job,
                preprocess=preprocess,
                variant=record.get("variant"),
                exports=exports,
                changed=changed,
                record=dict(record),
            )
        )
    return out


def submit_retries(
    retries: Sequence[Retry], settings: Settings | None = None, tracking_uri: str | None = None
) -> list[Submission]:
    """sbatch each planned retry; its submission record names the job it retries."""
    settings = settings or load_settings()
    subs = []
    for retry in retries:
        subs.append(
            submit(
                retry.job.cfg,
                array=retry.array,
                resources=retry.job.resources,
                settings=settings,
                tracking_uri=tracking_uri,
                preprocess=retry.preprocess,
                variant=retry.variant,
                exports=retry.exports,
                extra_record={"retry_of": [f.job_id for f in retry.failed]},
            )
        )
    return subs
