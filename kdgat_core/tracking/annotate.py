"""Annotations, the one write a dashboard is asked for: tag runs, write a note, delete (soft) and restore runs.

Through MLflow's client only (never DuckDB), so `mlflow ui` and `mlflow.search_runs` see the same: the note is MLflow's
own `mlflow.note.content` tag (MLflow's UI shows it as the run's description); delete and restore are MLflow's
lifecycle changes (a deleted run stays in the file until `mlflow gc`). `plan` says what would change and changes
nothing; `apply` writes exactly that plan, with the store's lock retries. The reader side never imports this module;
the TUI runs `kdgat annotate` in a subprocess, so mlflow is never imported into it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from kdgat_core.config import KdgatError
from kdgat_core.tracking.lookup import _existing_store, _get_run
from kdgat_core.tracking.store import with_retry

NOTE_TAG = "mlflow.note.content"
ACTIONS = ("tag", "note", "delete", "restore")


@dataclass(frozen=True)
class Change:
    run_id: str
    run_name: str
    action: str  # tag | note | delete | restore
    key: str = ""
    old: str | None = None
    new: str | None = None

    def describe(self) -> str:
        who = f"{self.run_name or '?'} ({self.run_id[:8]})"
        if self.action == "tag":
            was = "unset" if self.old is None else repr(self.old)
            return f"{who}: tag {self.key} = {self.new!r} (was {was})"
        if self.action == "note":
            return f"{who}: note {self.new!r}" + (f" (replaces {self.old!r})" if self.old else "")
        return f"{who}: {self.action}"


def plan(
    run_ids: Sequence[str],
    tags: Mapping[str, str] | None = None,
    note: str | None = None,
    delete: bool = False,
    restore: bool = False,
    tracking_uri: str | None = None,
) -> list[Change]:
    """The changes an annotation would make to these runs (already equal values are left out); writes nothing."""
    if delete and restore:
        raise KdgatError("Delete or restore, not both.")
    if not run_ids:
        raise KdgatError("No run to annotate.")
    for key in tags or {}:
        if not key or key.startswith("mlflow."):
            raise KdgatError(f"Tag key '{key}' is reserved or empty; MLflow's own tags (mlflow.*) are not set here.")
    store = _existing_store(tracking_uri)
    changes: list[Change] = []
    for run_id in dict.fromkeys(run_ids):
        run = _get_run(store, run_id)
        name = run.info.run_name or ""
        have = dict(run.data.tags)
        for key, value in (tags or {}).items():
            if have.get(key) != value:
                changes.append(Change(run_id, name, "tag", key, have.get(key), value))
        if note is not None and have.get(NOTE_TAG) != note:
            changes.append(Change(run_id, name, "note", NOTE_TAG, have.get(NOTE_TAG), note))
        stage = run.info.lifecycle_stage
        if delete and stage != "deleted":
            changes.append(Change(run_id, name, "delete"))
        if restore and stage == "deleted":
            changes.append(Change(run_id, name, "restore"))
    return changes


def apply(changes: Sequence[Change], tracking_uri: str | None = None) -> int:
    """Write a plan through MLflow's client; returns how many changes were written."""
    store = _existing_store(tracking_uri)
    client = store.client
    for c in changes:
        if c.action in ("tag", "note"):
            with_retry(client.set_tag, c.run_id, c.key, c.new, what="set_tag")
        elif c.action == "delete":
            with_retry(client.delete_run, c.run_id, what="delete_run")
        elif c.action == "restore":
            with_retry(client.restore_run, c.run_id, what="restore_run")
    return len(changes)
