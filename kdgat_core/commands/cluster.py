"""`kdgat efficiency | failures | resubmit | watch`: running experiments on the cluster.

Thin: the scheduler's facts come from kdgat_core.slurm (one cached sacct call), the join with runs and every number
from kdgat_core.query (the `jobs` view); this module passes the one to the other and prints the result.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from kdgat_core.commands.options import ForceOpt, FormatOpt, OutputOpt, TrackingUriOpt
from kdgat_core.commands.output import OutputFormat, emit, write_output
from kdgat_core.config import FailureCause, KdgatError, Stage

SinceOpt = Annotated[
    Optional[str], typer.Option("--since", help="Only jobs since a date (2026-12-01) or an age (3d, 12h, 90m).")
]
LOG_LINES = 5
JOB_ID = re.compile(r"\d{1,12}(_\d{1,6})?")  # 1234 or 1234_5: anything else names a run


def open_with_jobs(tracking_uri: str | None, since: str | None = None, refresh: bool = False) -> Any:
    """The read-only tracking DB with the `jobs` view attached (the scheduler's facts: one sacct call)."""
    from kdgat_core.query import open_db
    from kdgat_core.query.jobs import attach_jobs, since_for_sacct
    from kdgat_core.slurm.accounting import job_facts

    window = since_for_sacct(since)  # a bad --since is refused before anything is read
    db = open_db(tracking_uri)
    try:
        facts = job_facts(tracking_uri=tracking_uri, since=window, refresh=refresh)
    except KdgatError as exc:  # the scheduler does not answer: the runs alone still show their causes
        typer.echo(f"kdgat: {exc} Showing what the tracking DB alone says.", err=True)
        facts = []
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
    force: ForceOpt = False,
    tracking_uri: TrackingUriOpt = None,
) -> None:
    """What jobs used of what they asked for (sacct), with seff-style advice per stage and preset."""
    from kdgat_core.query.jobs import advise, efficiency_rows, toml_snippet

    _check_output(output, force, tracking_uri)

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
    force: ForceOpt = False,
    tracking_uri: TrackingUriOpt = None,
) -> None:
    """Failed and lost runs (and jobs that failed before opening a run) grouped by cause."""
    from kdgat_core.query.jobs import failures as find_failures
    from kdgat_core.query.jobs import group_failures

    _check_output(output, force, tracking_uri)

    with open_with_jobs(tracking_uri, since) as db:
        rows = find_failures(db, since=since)
    groups = group_failures(rows)
    if not groups:
        typer.echo("No failed runs" + (f" since {since}" if since else "") + ".", err=fmt is OutputFormat.table)
        return
    if fmt is not OutputFormat.table:
        flat = [
            {
                "cause": r["cause"],
                "group": g.cause,  # an exception groups by its class: "exception: ValueError"
                **{
                    k: r.get(k)
                    for k in ("job_id", "run_id", "run_name", "state", "run_status", "error_msg", "retried_by")
                },
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
                + (f"  -> resubmitted as job {r['retried_by']}" if r.get("retried_by") else "")
            )
        if g.count > 10:
            parts.append(f"  ... and {g.count - 10} more")
        tail = _log_tail(g.runs, tracking_uri, logs)
        if tail:
            parts.append(f"  last lines of {tail[0]}:")
            parts += [f"    {line}" for line in tail[1]]
        parts.append("")
    write_output("\n".join(parts), output)


def _check_output(output: Path | None, force: bool, tracking_uri: str | None) -> None:
    """A bad --output is refused before the scheduler is asked anything."""
    if output is not None:
        from kdgat_core.safe_io import check_output_path

        check_output_path(output, force=force, tracking_uri=tracking_uri)


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
    if runs:  # a run that does not exist is named before the scheduler is asked anything
        from kdgat_core.query import open_db

        with open_db(tracking_uri) as plain:
            runs = [ref if JOB_ID.fullmatch(ref) else plain.resolve_run(ref) for ref in runs]
    with open_with_jobs(tracking_uri, since, refresh=True) as db:
        rows = find_failures(db, since=since)
        targets: list[dict[str, Any]] = []
        if failed:
            matching = [
                r
                for r in rows
                if r.get("job_id")
                and (not cause or r["cause"] == cause)
                and (not dataset or r.get("dataset") == dataset)
                and (not wanted_stage or r.get("stage") == wanted_stage)
            ]
            targets = [r for r in matching if not r.get("retried_by")]  # each failure is retried once by --failed
            if not targets:
                done = len(matching) - len(targets)
                raise KdgatError(
                    "No failed jobs match"
                    + (f" that were not resubmitted already ({done} were; name them to retry again)" if done else "")
                    + "; see `kdgat failures`."
                )
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


# --- kdgat watch ---------------------------------------------------------------------------------------------------
WATCH_STATE = ".watch_state.json"  # next to the tracking DB's experimentruns/: the keys already alerted
WEBHOOK_TIMEOUT_S = 5.0


def watch_command(
    interval: Annotated[float, typer.Option("--interval", "-i", help="Seconds between checks.")] = 0.0,
    once: Annotated[bool, typer.Option("--once", help="Check once, alert what is new, and exit.")] = False,
    state: Annotated[
        Optional[Path], typer.Option("--state", help="Where the alerted events are remembered across restarts.")
    ] = None,
    tracking_uri: TrackingUriOpt = None,
) -> None:
    """Alert on job and run events (rules and sinks in kdgat.toml \\[watch]): a terminal line and the bell, tmux,
    a command, a webhook. Survives a locked tracking DB and a silent scheduler; never alerts twice for one event."""
    from kdgat_core.config import load_settings
    from kdgat_core.query.events import Rules
    from kdgat_core.slurm.render import artifact_root

    settings = load_settings()
    section = settings.section("watch")
    rules = Rules.from_settings(section)
    sinks = Sinks.from_settings(section)
    every = interval or float(section.get("interval", 10))
    path = state or artifact_root(tracking_uri, settings) / WATCH_STATE
    seen, first = _load_state(path)
    if first:
        typer.echo(f"kdgat watch: remembering what already happened; alerts start now ({path}).", err=True)
    warned: set[str] = set()
    while True:
        found = _check(tracking_uri, rules, warned)
        if found is not None:
            from kdgat_core.query.events import new_events

            fresh = new_events(found, seen)
            if not first:
                for event in fresh:
                    sinks.send(event)
            seen |= {e.key for e in fresh}
            if fresh or first:
                _save_state(path, seen)
            first = False
        if once:
            return
        time.sleep(max(every, 1.0))


def _check(tracking_uri: str | None, rules: Any, warned: set[str]) -> list[Any] | None:
    """The current events, or None when the tracking DB cannot be read this time (said once per kind of trouble)."""
    from kdgat_core.query import open_db
    from kdgat_core.query.events import events
    from kdgat_core.query.jobs import attach_jobs

    facts: list[dict[str, Any]] = []
    try:
        from kdgat_core.slurm.accounting import job_facts
        from kdgat_core.slurm.scheduler import SlurmScheduler

        if SlurmScheduler.available():
            facts = job_facts(tracking_uri=tracking_uri, refresh=True)
        warned.discard("scheduler")
    except Exception as exc:  # a silent scheduler: runs alone this time
        _warn_once(warned, "scheduler", f"the scheduler does not answer ({_first(exc)}); checking runs only")
    try:
        with open_db(tracking_uri, lock_retry_s=2.0) as db:
            attach_jobs(db, facts)
            found = events(db, rules)
        warned.discard("db")
        return found
    except Exception as exc:  # locked, briefly unreadable or not there yet: try again next time
        _warn_once(warned, "db", f"cannot read the tracking DB ({_first(exc)}); retrying")
        return None


def _first(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0].rstrip(".") if text else type(exc).__name__


def _warn_once(warned: set[str], what: str, text: str) -> None:
    if what not in warned:
        warned.add(what)
        typer.echo(f"kdgat watch: {text}", err=True)


def _load_state(path: Path) -> tuple[set[str], bool]:
    """(keys alerted before, True when there is no state yet)."""
    try:
        data = json.loads(path.read_text())
        return set(data.get("seen", [])), False
    except FileNotFoundError:
        return set(), True
    except (OSError, json.JSONDecodeError, AttributeError):
        return set(), True  # an unreadable state starts over quietly rather than alerting everything again


def _save_state(path: Path, seen: set[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps({"seen": sorted(seen), "updated": time.strftime("%Y-%m-%dT%H:%M:%S")}))
    tmp.replace(path)  # atomic: a watcher killed mid-write never loses what it had alerted


@dataclass
class Sinks:
    """Where an alert goes: kdgat.toml [watch] terminal (default true), tmux (default true inside tmux), command
    (run with the event as JSON on stdin and KDGAT_EVENT in its environment), webhook (a JSON POST)."""

    terminal: bool = True
    tmux: bool = True
    command: str | None = None
    webhook: str | None = None

    @classmethod
    def from_settings(cls, section: dict[str, Any]) -> Sinks:
        webhook = section.get("webhook")
        if webhook is not None and not str(webhook).startswith(("http://", "https://")):
            raise KdgatError(f"kdgat.toml [watch] webhook must be an http(s) URL, not {webhook!r}.")
        return cls(
            terminal=bool(section.get("terminal", True)),
            tmux=bool(section.get("tmux", True)),
            command=str(section["command"]) if section.get("command") else None,
            webhook=str(webhook) if webhook else None,
        )

    def send(self, event: Any) -> None:
        line = f"{time.strftime('%H:%M:%S')} {event.text}"
        if self.terminal:
            sys.stdout.write(line + ("\a" if sys.stdout.isatty() else "") + "\n")
            sys.stdout.flush()
        if self.tmux and os.environ.get("TMUX"):
            _quiet_run(["tmux", "display-message", f"kdgat: {event.text}"])
        payload = json.dumps(event.to_dict())
        if self.command:
            _quiet_run(["sh", "-c", self.command], stdin=payload, env={**os.environ, "KDGAT_EVENT": event.text})
        if self.webhook:
            import urllib.request

            request = urllib.request.Request(
                self.webhook, data=payload.encode(), headers={"Content-Type": "application/json"}, method="POST"
            )
            try:
                with urllib.request.urlopen(request, timeout=WEBHOOK_TIMEOUT_S) as response:
                    response.read()
            except OSError as exc:
                typer.echo(f"kdgat watch: webhook {self.webhook} failed ({_first(exc)}).", err=True)


def _quiet_run(argv: list[str], stdin: str | None = None, env: dict[str, str] | None = None) -> None:
    try:
        subprocess.run(argv, input=stdin, text=True, capture_output=True, timeout=30, env=env)
    except (OSError, subprocess.TimeoutExpired) as exc:
        typer.echo(f"kdgat watch: {argv[0]} failed ({_first(exc)}).", err=True)
