"""`kdgat efficiency | failures | resubmit | watch`: running experiments on the cluster.

Thin: the scheduler's facts come from kdgat_core.slurm (one cached sacct call), the join with runs and every number
from kdgat_core.query (the `jobs` view); this module passes the one to the other and prints the result.
"""

from __future__ import annotations

import sys
from typing import Annotated, Any, Optional

import typer

from kdgat_core.commands.options import FormatOpt, OutputOpt, TrackingUriOpt
from kdgat_core.commands.output import OutputFormat, emit, write_output
from kdgat_core.config import FailureCause, KdgatError, Stage

SinceOpt = Annotated[
    Optional[str], typer.Option("--since", help="Only jobs since a date (2026-12-01) or an age (3d, 12h, 90m).")
]
LOG_LINES = 5


def open_with_jobs(tracking_uri: str | None, since: str | None = None, refresh: bool = False) -> Any:
    """The read-only tracking DB with the `jobs` view attached (the scheduler's facts: one sacct call)."""
    from kdgat_core.query import open_db
    from kdgat_core.query.jobs import attach_jobs, since_for_sacct
    from kdgat_core.slurm.accounting import job_facts
    from kdgat_core.slurm.scheduler import SlurmScheduler

    db = open_db(tracking_uri)
    facts = job_facts(tracking_uri=tracking_uri, since=since_for_sacct(since), refresh=refresh)
    if not facts and not SlurmScheduler.available():
        facts = []  # no SLURM here: runs alone still show their causes
    attach_jobs(db, facts)
    return db


def efficiency_command(
    since: SinceOpt = None,
    dataset: Annotated[Optional[str], typer.Option("--dataset", "-d", help="Only jobs of this dataset.")] = None,
    per_job: Annotated[bool, typer.Option("--jobs", help="One row per job instead of advice per stage.")] = False,
    toml: Annotated[
        bool, typer.Option("--toml", help="Print the suggestions as kdgat.toml [cluster.resources.<stage>] tables.")
    ] = False,
    fmt: FormatOpt = OutputFormat.table,
    output: OutputOpt = None,
    tracking_uri: TrackingUriOpt = None,
) -> None:
    """What jobs used of what they asked for (sacct), with seff-style advice per stage and preset."""
    from kdgat_core.query.jobs import advise, efficiency_rows, toml_snippet

    with open_with_jobs(tracking_uri, since) as db:
        rows = efficiency_rows(db, since=since, dataset=dataset)
    if not rows:
        typer.echo("No finished jobs with accounting data" + (f" since {since}" if since else "") + ".", err=True)
        return
    if per_job:
        emit(rows, fmt, output)
        return
    advice = advise(rows)
    if toml:
        write_output(toml_snippet(advice) or "# every request fits what its jobs used\n", output)
        return
    emit(advice, fmt, output, title="efficiency per stage and preset")


def failures_command(
    since: SinceOpt = None,
    logs: Annotated[int, typer.Option("--lines", help="Last lines of one log per group (0: none).")] = LOG_LINES,
    fmt: FormatOpt = OutputFormat.table,
    output: OutputOpt = None,
    tracking_uri: TrackingUriOpt = None,
) -> None:
    """Failed and lost runs (and jobs that failed before opening a run) grouped by cause."""
    from kdgat_core.query.jobs import failures as find_failures
    from kdgat_core.query.jobs import group_failures

    with open_with_jobs(tracking_uri, since) as db:
        rows = find_failures(db, since=since)
    groups = group_failures(rows)
    if not groups:
        typer.echo("No failed runs" + (f" since {since}" if since else "") + ".", err=fmt is OutputFormat.table)
        return
    if fmt is not OutputFormat.table:
        flat = [
            {
                "cause": g.cause,
                **{k: r.get(k) for k in ("job_id", "run_id", "run_name", "state", "run_status", "error_msg")},
                "cancelled_by": r.get("cancelled_by"),
            }
            for g in groups
            for r in g.runs
        ]
        emit(flat, fmt, output)
        return
    parts = []
    for g in groups:
        head = f"{g.cause}: {g.count} run{'s' * (g.count != 1)}" + (f" ({g.detail})" if g.detail else "")
        parts.append(head)
        for r in g.runs[:10]:
            ident = r.get("job_id") or r.get("raw_id") or ""
            parts.append(
                f"  job {ident or '-':<10} {(r.get('run_id') or '')[:8]:<8} {r.get('run_name') or ''}"
                + (f"  [{r['error_msg']}]" if r.get("error_msg") and g.cause != FailureCause.CANCELLED else "")
            )
        if g.count > 10:
            parts.append(f"  ... and {g.count - 10} more")
        tail = _log_tail(g.runs, tracking_uri, logs)
        if tail:
            parts.append(f"  last lines of {tail[0]}:")
            parts += [f"    {line}" for line in tail[1]]
        parts.append("")
    write_output("\n".join(parts), output)


def _log_tail(runs: list[dict[str, Any]], tracking_uri: str | None, lines: int) -> tuple[str, list[str]] | None:
    """The last lines of the first log of the group that exists (stderr, else stdout)."""
    if lines <= 0:
        return None
    from kdgat_core.slurm import job_logs

    for r in runs:
        job = r.get("job_id")
        if not job:
            continue
        try:
            paths = job_logs(str(job), tracking_uri)
        except KdgatError:
            continue
        for path in (paths[1], paths[0]):
            try:
                text = path.read_text(errors="replace")
            except OSError:
                continue
            kept = [line.rstrip() for line in text.splitlines() if line.strip()]
            if kept:
                return str(path), kept[-lines:]
    return None


def resubmit_command(
    runs: Annotated[
        Optional[list[str]], typer.Argument(help="Run ids (or prefixes) or job ids (1234, 1234_5) to resubmit.")
    ] = None,
    failed: Annotated[bool, typer.Option("--failed", help="Every failed or lost run (with the filters).")] = False,
    since: SinceOpt = None,
    cause: Annotated[
        Optional[str],
        typer.Option("--cause", help=f"With --failed: only this cause ({', '.join(FailureCause.values())})."),
    ] = None,
    dataset: Annotated[Optional[str], typer.Option("--dataset", "-d", help="With --failed: only this dataset.")] = None,
    stage: Annotated[Optional[str], typer.Option("--stage", "-s", help="With --failed: only this stage.")] = None,
    resources: Annotated[
        list[str], typer.Option("--resources", "-R", help="Override the adjusted request, e.g. mem=16G,time=4:00:00.")
    ] = [],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", "-n", help="Print each script and the #SBATCH lines that change.")
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    tracking_uri: TrackingUriOpt = None,
) -> None:
    """Resubmit failed runs: same stage, preset, dataset, overrides and template; more memory after an out-of-memory
    kill, more time after a time limit; an array only for its failed tasks. The new run is tagged retry_of."""
    from kdgat_core.query.jobs import failures as find_failures
    from kdgat_core.slurm.resources import parse_pairs
    from kdgat_core.slurm.resubmit import FailedJob, plan_retries, submit_retries

    if bool(runs) == failed:
        raise KdgatError("Name the runs to resubmit, or give --failed (with --since, --cause, --dataset, --stage).")
    if cause:
        FailureCause.parse(cause, "cause")
    wanted_stage = Stage.parse(stage, "stage").value if stage else None
    with open_with_jobs(tracking_uri, since, refresh=True) as db:
        rows = find_failures(db, since=since)
        targets: list[dict[str, Any]] = []
        if failed:
            targets = [
                r
                for r in rows
                if r.get("job_id")
                and (not cause or r["cause"] == cause)
                and (not dataset or r.get("dataset") == dataset)
                and (not wanted_stage or r.get("stage") == wanted_stage)
            ]
            if not targets:
                raise KdgatError("No failed jobs match; see `kdgat failures`.")
        else:
            for ref in runs or []:
                targets.append(_target(db, rows, ref))
    failed_jobs = [
        FailedJob(
            job_id=str(t["job_id"]), cause=str(t["cause"]), run_id=t.get("run_id"), max_rss_mb=t.get("max_rss_mb")
        )
        for t in targets
    ]
    retries = plan_retries(failed_jobs, parse_pairs(resources), tracking_uri=tracking_uri)
    for retry in retries:
        ids = ", ".join(f.job_id for f in retry.failed)
        why = ", ".join(sorted({f.cause for f in retry.failed}))
        typer.echo(
            f"# ==== {retry.job.run_name}: retry of job {ids} ({why})"
            + (f", array {retry.array}" if retry.array else "")
        )
        for old, new in retry.changed:
            if old:
                typer.echo(f"-  {old}")
            if new:
                typer.echo(f"+  {new}")
        if not retry.changed:
            typer.echo("   (#SBATCH lines unchanged)")
        if dry_run:
            typer.echo(retry.job.script)
    if dry_run:
        return
    if not yes and sys.stdin.isatty() and not typer.confirm(f"Resubmit {len(retries)} job(s)?", default=False):
        typer.echo("Nothing resubmitted.")
        raise typer.Exit(1)
    for sub, retry in zip(submit_retries(retries, tracking_uri=tracking_uri), retries):
        typer.echo(
            f"Resubmitted {sub.run_name} as job {sub.job_id}"
            + (f" (array {sub.job.array})" if sub.job.array else "")
            + f", retrying {', '.join(f.job_id for f in retry.failed)}"
        )


def _target(db: Any, rows: list[dict[str, Any]], ref: str) -> dict[str, Any]:
    """A failure row for a run id (prefix) or a job id."""
    for r in rows:
        if ref in (r.get("job_id"), r.get("raw_id")) or (r.get("run_id") and str(r["run_id"]).startswith(ref)):
            if not r.get("job_id"):
                raise KdgatError(
                    f"Run {ref} was not a SLURM job kdgat knows; rerun it with `kdgat run` or `kdgat submit`."
                )
            return r
    from kdgat_core.query.jobs import job_row

    job = job_row(db, ref)  # a run or job that did not fail: resubmit it as it was (same resources)
    if job is None:
        raise KdgatError(f"No job or run '{ref}' among the scheduler's recent jobs; see `kdgat jobs`.")
    return job


def suggested_resources_for(
    stage: str, model_size: str, variant: str | None, tracking_uri: str | None
) -> dict[str, str]:
    """`kdgat submit -R suggested`: the efficiency advice for this stage and preset as resource pairs."""
    from kdgat_core.query.jobs import advise, efficiency_rows, suggested_resources

    with open_with_jobs(tracking_uri) as db:
        rows = efficiency_rows(db)
    pairs = suggested_resources(advise(rows), stage, model_size, variant)
    if not pairs:
        what = f"{stage} {model_size}" + (f" ({variant})" if variant else "")
        typer.echo(f"kdgat: no suggestion for {what} yet (see `kdgat efficiency`): its usual request.", err=True)
    else:
        typer.echo(f"kdgat: suggested resources {','.join(f'{k}={v}' for k, v in pairs.items())}", err=True)
    return pairs
