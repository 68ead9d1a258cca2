"""`kdgat tag | note | delete | restore`: annotations, written through MLflow's client (`kdgat_core.tracking.annotate`).

Each prints what it will change and asks first (`--yes` skips the question; without a terminal and without `--yes`
nothing is written). Runs are named as everywhere (id, unique prefix, run name); resolving them only reads.
"""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from kdgat_core.commands.options import TrackingUriOpt
from kdgat_core.config import KdgatError

RunsArg = Annotated[list[str], typer.Argument(help="Runs: id, unique id prefix, or run name (newest).")]
YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask; write at once.")]


def _resolve(refs: list[str], tracking_uri: str | None) -> list[str]:
    from kdgat_core.query import open_db

    # read-only, and closed before MLflow opens the file: one SQLite library per file at a time
    with open_db(tracking_uri, include_deleted=True, cache=False) as db:
        return [db.resolve_run(r) for r in refs]


def _annotate(refs: list[str], tracking_uri: str | None, yes: bool, **what: Any) -> None:
    from kdgat_core.tracking import annotate

    ids = _resolve(refs, tracking_uri)
    changes = annotate.plan(ids, tracking_uri=tracking_uri, **what)
    if not changes:
        typer.echo("Nothing to change: the runs already look like that.")
        return
    typer.echo(f"{len(changes)} change{'s' if len(changes) != 1 else ''}:")
    for c in changes:
        typer.echo(f"  {c.describe()}")
    if not yes:
        if not sys.stdin.isatty():
            raise KdgatError("Not a terminal to ask on; nothing written (add --yes to write without asking).")
        if not typer.confirm("Write these changes?", default=False):
            typer.echo("Nothing written.")
            return
    n = annotate.apply(changes, tracking_uri=tracking_uri)
    typer.echo(f"wrote {n} change{'s' if n != 1 else ''}.")


def tag_command(
    runs: RunsArg,
    tags: Annotated[list[str], typer.Option("--set", "-t", help="KEY=VALUE, repeatable.")],
    yes: YesOpt = False,
    tracking_uri: TrackingUriOpt = None,
) -> None:
    """Set tags on runs, e.g. kdgat tag RUN_A RUN_B --set verdict=baseline."""
    pairs = {}
    for t in tags:
        key, sep, value = t.partition("=")
        if not sep or not key.strip():
            raise KdgatError(f"--set '{t}' is not KEY=VALUE.")
        pairs[key.strip()] = value
    _annotate(runs, tracking_uri, yes, tags=pairs)


def note_command(
    runs: RunsArg,
    text: Annotated[str, typer.Option("--text", "-m", help="The note (MLflow's run description).")],
    yes: YesOpt = False,
    tracking_uri: TrackingUriOpt = None,
) -> None:
    """Write a note on runs (mlflow.note.content: MLflow's UI shows it as the description)."""
    _annotate(runs, tracking_uri, yes, note=text)


def delete_command(runs: RunsArg, yes: YesOpt = False, tracking_uri: TrackingUriOpt = None) -> None:
    """Delete runs (MLflow's soft delete: `kdgat restore` brings them back until `mlflow gc`)."""
    _annotate(runs, tracking_uri, yes, delete=True)


def restore_command(runs: RunsArg, yes: YesOpt = False, tracking_uri: TrackingUriOpt = None) -> None:
    """Restore deleted runs."""
    _annotate(runs, tracking_uri, yes, restore=True)
