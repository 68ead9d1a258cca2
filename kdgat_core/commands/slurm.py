"""`kdgat submit | jobs | logs | cancel | reconcile`: SLURM jobs (or the local executor) tied to their MLflow runs.

Thin: parses arguments and prints what kdgat_core.slurm returns, joined with the runs kdgat_core.query reads.
mlflow is imported only by `reconcile` (kdgat_core.tracking).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from kdgat_core.commands.options import MAX_ROWS, ForceOpt, FormatOpt, OutputOpt, TrackingUriOpt
from kdgat_core.commands.output import OutputFormat, emit
from kdgat_core.config import (
    PRESET_VARIANTS,
    STAGE_ARCH,
    TEACHER_AUTO,
    KdgatError,
    ModelSize,
    PipelineConfig,
    Stage,
    preset,
)

if TYPE_CHECKING:  # kdgat_core.slurm loads when a job command runs
    from kdgat_core.slurm import Submission

PIPELINE = "pipeline"
SUGGESTED = "suggested"

OverrideOpt = Annotated[
    list[str], typer.Option("--override", "-O", help="Config override key=value (repeatable), as for `kdgat run`.")
]
ResourcesOpt = Annotated[
    list[str],
    typer.Option(
        "--resources",
        "-R",
        help="Scheduler request key=value[,key=value]: time, mem, cpus, gpus, gres, partition, account, qos, constraint; "
        "`suggested`: what earlier jobs of the stage and preset used (kdgat efficiency).",
    ),
]
ExecutorOpt = Annotated[
    Optional[str],
    typer.Option(
        "--executor", help="slurm or local (default: [cluster] executor in kdgat.toml, else sbatch where it exists)."
    ),
]


def _stage_config(stage: Stage, preset_name: str | None, dataset: str) -> PipelineConfig:
    """The PipelineConfig for one stage from --preset (`<arch>,<size>[,variant]`, or just `<size>[,variant]`)."""
    parts = [p.strip() for p in (preset_name or ModelSize.TEACHER.value).split(",") if p.strip()]
    if parts and parts[0] in ModelSize.values():
        parts.insert(0, STAGE_ARCH[stage].value)
    cfg = preset(",".join(parts), dataset=dataset)
    if cfg.stage != stage.value:
        raise KdgatError(
            f"Preset '{preset_name}' is for the {cfg.stage} stage, not {stage}; "
            f"use --preset {STAGE_ARCH[stage]},<size> (or just the size)."
        )
    return cfg


def _dag_rows(subs: list[Submission]) -> list[dict[str, object]]:
    names = {s.run_name: s.job_id for s in subs}
    rows = []
    for i, s in enumerate(subs, 1):
        after = ", ".join(f"{a} ({names[a]})" if names.get(a) else a for a in s.after) if s.after else ""
        rows.append(
            {
                "#": i,
                "job": s.job_id or "(dry run)",
                "run": s.run_name,
                "after": after,
                "time": s.job.resources.time,
                "mem": s.job.resources.mem,
                "cpus": s.job.resources.cpus,
                "gres": s.job.resources.gres_request or "",
                "partition": s.job.resources.partition or "",
            }
        )
    return rows


def submit_command(
    target: Annotated[
        str, typer.Argument(help=f"A stage ({', '.join(Stage.values())}) or `pipeline` for the whole DAG.")
    ],
    dataset: Annotated[str, typer.Option("--dataset", "-d", help="Dataset name (see `kdgat datasets`).")],
    preset_name: Annotated[
        Optional[str],
        typer.Option(
            "--preset",
            "-p",
            help="<arch>,<size>[,variant] e.g. gat,student or gat,student,tiny (a stage); for a pipeline only the variant, e.g. tiny.",
        ),
    ] = None,
    kd: Annotated[
        bool, typer.Option("--kd", help="Knowledge distillation: a student learns from a teacher run.")
    ] = False,
    teacher: Annotated[
        Optional[str],
        typer.Option(
            "--teacher",
            help=f"The teacher's run id; `{TEACHER_AUTO}` (default) finds the newest complete teacher run when the job starts.",
        ),
    ] = None,
    after: Annotated[
        list[str], typer.Option("--after", help="Start after this job id completed successfully (repeatable).")
    ] = [],
    array: Annotated[
        Optional[str],
        typer.Option("--array", help="Seeds as a SLURM array, e.g. 0-3 or 1,2,3: each task's seed is its index."),
    ] = None,
    sizes: Annotated[str, typer.Option("--sizes", help="Pipeline: model sizes, e.g. teacher,student.")] = "teacher",
    stages: Annotated[
        Optional[str], typer.Option("--stages", help="Pipeline: only these stages, e.g. autoencoder,curriculum.")
    ] = None,
    preprocess: Annotated[
        bool,
        typer.Option(
            "--preprocess/--no-preprocess",
            help="Pipeline: first build the graph cache in one CPU job ([cluster.resources.preprocess]).",
        ),
    ] = True,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", "-n", help="Print the script(s) (and the DAG) without submitting.")
    ] = False,
    override: OverrideOpt = [],
    resources: ResourcesOpt = [],
    executor: ExecutorOpt = None,
    tracking_uri: TrackingUriOpt = None,
) -> None:
    """Render a stage's sbatch script from slurm_templates/ and submit it (`sbatch --parsable`), or a whole pipeline."""
    from kdgat_core.slurm import submit, submit_pipeline
    from kdgat_core.slurm.resources import parse_pairs

    suggested = SUGGESTED in resources
    res = parse_pairs([r for r in resources if r != SUGGESTED])
    if target == PIPELINE:
        if suggested:
            raise KdgatError(
                f"-R {SUGGESTED} applies to one stage; store suggestions per stage with `kdgat efficiency --toml`."
            )
        if teacher not in (None, TEACHER_AUTO):
            raise KdgatError(
                "A pipeline's students find their teacher when they start; --teacher applies to one stage."
            )
        if array:
            raise KdgatError(
                "--array applies to one stage; submit seeds of a stage with `kdgat submit <stage> --array`."
            )
        variant = preset_name
        if variant and "," in variant:
            raise KdgatError(
                "For a pipeline --preset takes only a variant (e.g. tiny): each stage has its own architecture."
            )
        subs = submit_pipeline(
            dataset,
            sizes.split(","),
            kd=kd,
            variant=variant,
            overrides=override,
            dry_run=dry_run,
            resources=res,
            tracking_uri=tracking_uri,
            executor=executor,
            after=after,
            stages=stages.split(",") if stages else None,
            preprocess=preprocess,
        )
        if dry_run:
            for s in subs:
                typer.echo(f"# ==== {s.run_name}  (after: {', '.join(s.after) or 'nothing'}) ====")
                typer.echo(s.job.script)
        emit(_dag_rows(subs), OutputFormat.table, title=f"pipeline {dataset}" + (" (dry run)" if dry_run else ""))
        return
    stage = Stage.parse(target, "stage")
    cfg = _stage_config(stage, preset_name, dataset)
    cfg.override(override)
    if kd or teacher:
        if cfg.model_size != ModelSize.STUDENT.value:
            raise KdgatError("--kd trains a student from a teacher: use a student preset (e.g. --preset student).")
        cfg.kd.enabled = True
        cfg.kd.teacher_run_id = teacher or TEACHER_AUTO
    parts = [p.strip() for p in (preset_name or "").split(",") if p.strip()]
    variant = parts[-1] if parts and parts[-1] in PRESET_VARIANTS else None
    if suggested:  # what earlier jobs of this stage and preset used (kdgat efficiency), under explicit -R pairs
        from kdgat_core.commands.cluster import suggested_resources_for

        res = {**suggested_resources_for(cfg.stage, cfg.model_size, variant, tracking_uri), **res}
    sub = submit(
        cfg,
        after=after,
        array=array,
        dry_run=dry_run,
        resources=res,
        tracking_uri=tracking_uri,
        executor=executor,
        variant=variant,
    )
    if dry_run:
        sys.stdout.write(sub.job.script)
        return
    typer.echo(
        f"Submitted {sub.run_name} as job {sub.job_id}"
        + (f" after {', '.join(sub.after)}" if sub.after else "")
        + f" ({sub.executor}); script {sub.script_path}"
    )


def jobs_command(
    active: Annotated[bool, typer.Option("--active", "-a", help="Only pending and running jobs.")] = False,
    limit: Annotated[
        int, typer.Option("--limit", help="At most this many jobs, newest first (0 = all).", min=0, max=MAX_ROWS)
    ] = 50,
    watch: Annotated[
        float, typer.Option("--watch", "-w", help="Refresh every N seconds until Ctrl-C (0 = once).")
    ] = 0.0,
    fmt: FormatOpt = OutputFormat.table,
    output: OutputOpt = None,
    force: ForceOpt = False,
    tracking_uri: TrackingUriOpt = None,
) -> None:
    """The queue and recent history (one squeue + one sacct call) joined with the runs; lost runs flagged."""
    from kdgat_core.query.jobs import runs_of_jobs
    from kdgat_core.slurm import job_table

    while True:
        rows = [r.to_dict() for r in job_table(tracking_uri, include_ended=not active, runs=runs_of_jobs)]
        if limit:
            rows = rows[:limit]
        if watch and sys.stdout.isatty():
            typer.echo("\x1b[2J\x1b[H", nl=False)
        if rows:
            emit(rows, fmt, output)
        else:
            typer.echo("No jobs." if fmt is OutputFormat.table else "", err=fmt is OutputFormat.table)
        if not watch:
            return
        time.sleep(max(watch, 1.0))


def logs_command(
    job: Annotated[str, typer.Argument(help="Job id (an array task as 123_4).")],
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new lines until the job ends.")] = False,
    stderr_only: Annotated[bool, typer.Option("--err", help="Only the job's stderr.")] = False,
    tracking_uri: TrackingUriOpt = None,
) -> None:
    """Print a job's stdout and stderr (`slurm-<id>.out/.err` in its run folder)."""
    from kdgat_core.slurm import job_logs

    out, err = job_logs(job, tracking_uri)
    files = [err] if stderr_only else [out, err]
    if not any(f.exists() for f in files) and not follow:
        raise KdgatError(f"Job {job} has written no log yet ({out}); it may still be pending.")
    if not follow:
        for f in files:
            if f.exists() and f.stat().st_size:
                if len(files) > 1:
                    typer.echo(f"==> {f} <==")
                sys.stdout.write(f.read_text(errors="replace"))
        return
    _follow(job, files, tracking_uri)


def cancel_command(
    jobs: Annotated[list[str], typer.Argument(help="Job ids to cancel.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    tracking_uri: TrackingUriOpt = None,
) -> None:
    """Cancel jobs (scancel); a running job's run ends KILLED. Asks first on a terminal."""
    from kdgat_core.slurm import cancel

    if (
        not yes
        and sys.stdin.isatty()
        and not typer.confirm(f"Cancel job{'s' if len(jobs) > 1 else ''} {', '.join(jobs)}?", default=False)
    ):
        typer.echo("Nothing cancelled.")
        raise typer.Exit(1)
    cancel(jobs, tracking_uri)
    typer.echo(f"Cancelled {', '.join(jobs)}.")


def reconcile_command(
    dry_run: Annotated[bool, typer.Option("--dry-run", "-n", help="Only list the lost runs.")] = False,
    tracking_uri: TrackingUriOpt = None,
    fmt: FormatOpt = OutputFormat.table,
    output: OutputOpt = None,
    force: ForceOpt = False,
) -> None:
    """Mark lost runs (tagged running, but their job has ended or their process is gone) as failed, through MLflow."""
    from kdgat_core.slurm import ended_jobs
    from kdgat_core.slurm.local import run_process_gone
    from kdgat_core.tracking import check_store_file, reconcile

    check_store_file(tracking_uri)  # a wrong --tracking-uri is refused before the scheduler is asked (up to 30 s)
    notes: list[str] = []
    try:
        ended = ended_jobs(tracking_uri)
    except KdgatError as exc:  # the scheduler cannot be asked: the process check still runs
        ended = {}
        notes.append(f"{str(exc).rstrip('.')}; only runs whose process is gone from this host were checked.")
    lost = reconcile(ended, tracking_uri, dry_run=dry_run, process_gone=run_process_gone)
    for note in notes:
        typer.echo(f"kdgat: {note}", err=True)
    if not lost and fmt is OutputFormat.table:
        typer.echo("No lost runs.")
        return
    emit(
        [{"run_id": r.run_id, "run": r.run_name, "job": r.job_id, "job_state": r.job_state} for r in lost],
        fmt,
        output,
        title="lost runs" + ("" if dry_run else ", now marked failed"),
    )


def _follow(job: str, files: list[Path], tracking_uri: str | None) -> None:
    """tail -f for the job's files; stops a moment after the scheduler says the job ended."""
    from kdgat_core.slurm.queue import scheduler_of

    sched = scheduler_of(job, tracking_uri=tracking_uri)
    offsets = {f: 0 for f in files}
    ended_at = None
    while True:
        for f in files:
            try:
                with open(f, "rb") as fh:
                    fh.seek(offsets[f])
                    chunk = fh.read()
            except FileNotFoundError:
                continue
            if chunk:
                offsets[f] += len(chunk)
                sys.stdout.write(chunk.decode(errors="replace"))
                sys.stdout.flush()
        if ended_at is not None and time.monotonic() - ended_at > 1.0:
            return
        if ended_at is None:
            state = next((j.state for j in sched.jobs() if job in (j.job_id, j.raw_id)), None)
            if state is None or state in _ended():  # unknown: already forgotten by the scheduler
                ended_at = time.monotonic()
        time.sleep(0.5)


def _ended() -> frozenset[str]:
    from kdgat_core.slurm.scheduler import ENDED_STATES

    return ENDED_STATES
