"""Submitting stage jobs and whole pipelines (a DAG chained with afterok dependencies).

Every submission is appended to `<experimentruns>/kdgat_jobs.jsonl` (job id, run name, script, log paths), so
`kdgat logs` finds a job's files after the scheduler has forgotten it. The script itself is kept next to the logs.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kdgat_core.config import (
    PIPELINE_ORDER,
    PREPROCESS_JOB,
    STAGE_ARCH,
    TEACHER_AUTO,
    KdgatError,
    ModelSize,
    PipelineConfig,
    Settings,
    Stage,
    load_settings,
    preset,
)
from kdgat_core.slurm.executor import scheduler_for
from kdgat_core.slurm.render import ClusterSettings, RenderedJob, artifact_root, prepare_job
from kdgat_core.slurm.resources import Resources, check
from kdgat_core.slurm.scheduler import Scheduler

JOBS_FILE = "kdgat_jobs.jsonl"
LOCAL_JOBS_DIR = ".local_jobs"


@dataclass
class Submission:
    """One job: what was rendered and, unless it was a dry run, the id the scheduler gave it."""

    job: RenderedJob
    job_id: str | None = None
    after: list[str] = field(default_factory=list)
    script_path: Path | None = None
    executor: str = ""

    @property
    def run_name(self) -> str:
        return self.job.run_name


def scheduler_from_settings(
    settings: Settings | None = None, tracking_uri: str | None = None, executor: str | None = None
) -> Scheduler:
    settings = settings or load_settings()
    cluster = ClusterSettings.from_settings(settings)
    return scheduler_for(executor or cluster.executor, artifact_root(tracking_uri, settings) / LOCAL_JOBS_DIR)


def record_submission(root: Path, entry: Mapping[str, Any]) -> None:
    """Append one line to the submissions log (flock: several shells may submit at once)."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / JOBS_FILE, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        fh.write(json.dumps(dict(entry)) + "\n")


def read_submissions(root: Path) -> dict[str, dict[str, Any]]:
    """Job id -> its submission record (the latest if an id repeats, e.g. after a cluster reset)."""
    out: dict[str, dict[str, Any]] = {}
    try:
        lines = (root / JOBS_FILE).read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by a full disk: skip it, keep the rest
        if isinstance(entry, dict) and entry.get("job_id"):
            out[str(entry["job_id"])] = entry
    return out


EXECUTORS = ("auto", "slurm", "local")


def check_submit_args(after: Sequence[str] = (), array: str | None = None, executor: str | None = None) -> None:
    """--after job ids, an --array spec whose ranges run upwards, a known --executor: checked even for a dry run."""
    for job_id in after:
        check("dependency_id", job_id, "--after job id")
    if executor is not None and executor not in EXECUTORS:
        raise KdgatError(f"Unknown executor '{executor}'; choose one of: {', '.join(EXECUTORS)}.")
    if array is not None:
        check("array", array, "--array")
        for part in array.split("%", 1)[0].split(","):
            lo, _, hi = part.split(":", 1)[0].partition("-")
            if hi and int(hi) < int(lo):
                raise KdgatError(f"--array range '{part}' runs backwards; write it as {hi}-{lo}.")


def submit(
    cfg: PipelineConfig,
    after: Sequence[str] | None = None,
    array: str | None = None,
    dry_run: bool = False,
    resources: Mapping[str, Any] | Resources | None = None,
    settings: Settings | None = None,
    tracking_uri: str | None = None,
    executor: str | None = None,
    scheduler: Scheduler | None = None,
    preprocess: bool = False,
    variant: str | None = None,
    extra_record: Mapping[str, Any] | None = None,
    exports: Mapping[str, str] | None = None,
) -> Submission:
    """Render the stage's script and hand it to the scheduler (sbatch --parsable, or the local executor).

    preprocess=True submits the data-preparation job (`kdgat graphs` with cfg.data) instead of cfg.stage."""
    check_submit_args(after or (), array, executor)
    settings = settings or load_settings()
    if cfg.kd.enabled and not cfg.kd.teacher_run_id:
        cfg.kd.teacher_run_id = TEACHER_AUTO
    job = prepare_job(
        cfg,
        resources,
        settings,
        array=array,
        tracking_uri=tracking_uri,
        preprocess=preprocess,
        variant=variant,
        exports=exports,
    )
    after = [str(a) for a in (after or [])]
    if dry_run:
        return Submission(job=job, after=after)
    sched = scheduler or scheduler_from_settings(settings, tracking_uri, executor)
    try:
        job.folder.mkdir(parents=True, exist_ok=True)  # SLURM does not create the log folder: the job would fail unseen
    except OSError as exc:
        raise KdgatError(f"Cannot create the job's folder {job.folder}: {exc.strerror or exc}.") from None
    draft = job.folder / f"sbatch-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.sh"
    draft.write_text(job.script)
    check_request = getattr(sched, "check_request", None)
    if check_request is not None:  # a request no node can ever run would wait in the queue for good
        try:
            check_request(job.resources, draft)
        except KdgatError:
            draft.unlink(missing_ok=True)
            raise
    job_id = sched.submit(
        draft, after=after, array=job.array, job_name=job.run_name, output=job.output, error=job.error
    )
    script_path = job.folder / f"slurm-{job_id}.sh"
    if sched.kind == "slurm":
        draft.replace(script_path)  # sbatch keeps its own copy: the draft can take the job's name
    else:
        script_path = draft  # the local runner reads the script when it starts
    record_submission(
        artifact_root(tracking_uri, settings),
        {
            "job_id": job_id,
            "executor": sched.kind,
            "run_name": job.run_name,
            "dataset": cfg.dataset,
            "stage": PREPROCESS_JOB if preprocess else cfg.stage,
            "model_size": cfg.model_size,
            "kd": cfg.kd.enabled,
            "array": job.array,
            "after": after,
            "variant": variant,
            "template": job.template,
            "resources": {k: v for k, v in job.resources.to_dict().items() if k != "gres_request"},
            "overrides": cfg.diff_overrides(),
            "teacher": cfg.kd.teacher_run_id if cfg.kd.enabled else None,
            **dict(extra_record or {}),
            "script": str(script_path),
            "output": job.output,
            "error": job.error,
            "submitted": time.strftime("%Y-%m-%dT%H:%M:%S"),
        },
    )
    return Submission(job=job, job_id=job_id, after=after, script_path=script_path, executor=sched.kind)


# --- pipelines ---------------------------------------------------------------------------------------------------------
@dataclass
class PlannedJob:
    """A node of the pipeline DAG: its configuration and the nodes it waits for (by run name)."""

    cfg: PipelineConfig
    after: list[str]
    preprocess: bool = False  # the data-preparation head of the DAG rather than a stage
    variant: str | None = None

    @property
    def key(self) -> str:
        return f"{self.cfg.dataset}/{PREPROCESS_JOB}" if self.preprocess else self.cfg.run_name


def plan_pipeline(
    dataset: str,
    sizes: Iterable[str] = (ModelSize.TEACHER.value,),
    kd: bool = False,
    variant: str | None = None,
    overrides: Sequence[str] = (),
    stages: Sequence[str] | None = None,
    preprocess: bool = True,
) -> list[PlannedJob]:
    """The DAG in submission order: [preprocess ->] per size autoencoder -> curriculum -> fusion -> evaluation; with
    kd, each student stage also waits for the teacher's same stage (its teacher is found at run time: --teacher auto).
    The preprocessing head builds the graph cache once; it is left out when the autoencoder is not submitted."""
    wanted_sizes = [ModelSize.parse(s.strip(), "model size") for s in sizes if s.strip()]
    if not wanted_sizes:
        raise KdgatError("Give at least one model size (--sizes teacher,student).")
    if kd and ModelSize.STUDENT not in wanted_sizes:
        raise KdgatError("--kd distils students: include student in --sizes.")
    # teachers first: distilled students wait for them
    wanted_sizes = sorted(dict.fromkeys(wanted_sizes), key=lambda s: 0 if s is ModelSize.TEACHER else 1)
    chosen = [Stage.parse(s, "stage") for s in stages] if stages else list(PIPELINE_ORDER)
    plan: list[PlannedJob] = []
    head: PlannedJob | None = None
    if preprocess and Stage.AUTOENCODER in chosen:
        first = preset(
            f"{STAGE_ARCH[Stage.AUTOENCODER]},{wanted_sizes[0]}" + (f",{variant}" if variant else ""), dataset=dataset
        )
        head = PlannedJob(cfg=first.override(overrides), after=[], preprocess=True, variant=variant)
        plan.append(head)
    by_key: dict[tuple[ModelSize, Stage], PlannedJob] = {}
    for size in wanted_sizes:
        distilled = kd and size is ModelSize.STUDENT
        previous: PlannedJob | None = head
        for stage in PIPELINE_ORDER:
            if stage not in chosen:
                continue
            name = f"{STAGE_ARCH[stage]},{size}" + (f",{variant}" if variant else "")
            cfg = preset(name, dataset=dataset)
            cfg.override(overrides)
            if distilled:
                cfg.kd.enabled = True
                cfg.kd.teacher_run_id = TEACHER_AUTO
            after = [previous.key] if previous is not None else []
            teacher = by_key.get((ModelSize.TEACHER, stage))
            if distilled and teacher is not None:  # its `--teacher auto` must find this pipeline's teacher run
                after.append(teacher.key)
            node = PlannedJob(cfg=cfg, after=after, variant=variant)
            plan.append(node)
            by_key[(size, stage)] = node
            previous = node
    return plan


def submit_pipeline(
    dataset: str,
    sizes: Iterable[str] = (ModelSize.TEACHER.value,),
    kd: bool = False,
    variant: str | None = None,
    overrides: Sequence[str] = (),
    dry_run: bool = False,
    resources: Mapping[str, Any] | None = None,
    settings: Settings | None = None,
    tracking_uri: str | None = None,
    executor: str | None = None,
    after: Sequence[str] = (),
    stages: Sequence[str] | None = None,
    preprocess: bool = True,
) -> list[Submission]:
    """Submit the DAG in order, each job with --dependency=afterok on its parents' job ids."""
    check_submit_args(after, None, executor)
    settings = settings or load_settings()
    plan = plan_pipeline(dataset, sizes, kd, variant, overrides, stages, preprocess)
    # render everything first: a bad value stops the whole pipeline before any job is queued
    sched = None if dry_run else scheduler_from_settings(settings, tracking_uri, executor)
    check_request = getattr(sched, "check_request", None)
    for node in plan:
        job = prepare_job(
            node.cfg, resources, settings, tracking_uri=tracking_uri, preprocess=node.preprocess, variant=node.variant
        )
        if check_request is not None:  # a job no node can run would hold up the whole DAG: refuse before any sbatch
            check_request(job.resources, None)
    ids: dict[str, str] = {}
    out: list[Submission] = []
    try:
        for node in plan:
            parents = [ids[k] for k in node.after if k in ids] + [str(a) for a in after]
            sub = submit(
                node.cfg,
                after=parents,
                dry_run=dry_run,
                resources=resources,
                settings=settings,
                tracking_uri=tracking_uri,
                scheduler=sched,
                preprocess=node.preprocess,
                variant=node.variant,
            )
            sub.after = node.after if dry_run else parents
            if sub.job_id:
                ids[node.key] = sub.job_id
            out.append(sub)
    except KdgatError as exc:
        if sched is not None and ids:
            sched.cancel(list(ids.values()))  # half a pipeline would wait on nothing: take it back
            raise KdgatError(
                f"{exc} The jobs already queued for this pipeline ({', '.join(ids.values())}) were cancelled."
            ) from None
        raise
    return out
