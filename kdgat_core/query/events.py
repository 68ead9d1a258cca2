"""Events worth an alert (`kdgat watch`, the TUI's status line): a job ended or failed, a run became lost, a metric
crossed a threshold, a loss became NaN, a stage finished. Each has a stable key, so a watcher that remembers the keys
it has seen never alerts twice for one event.

Reads the `jobs` view (attach_jobs first, with whatever facts the scheduler gave) and the runs and metrics views.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from kdgat_core.config import KdgatError, RunStatus, Tag
from kdgat_core.query.sql_text import literal

if TYPE_CHECKING:
    from kdgat_core.query.db import TrackingDB

JOB_ENDED, JOB_FAILED, RUN_LOST, METRIC, NAN_LOSS, STAGE_FINISHED = (
    "job_ended",
    "job_failed",
    "run_lost",
    "metric",
    "nan_loss",
    "stage_finished",
)
EVENT_KINDS = (JOB_ENDED, JOB_FAILED, RUN_LOST, METRIC, NAN_LOSS, STAGE_FINISHED)
DEFAULT_KINDS = (JOB_FAILED, RUN_LOST, METRIC, NAN_LOSS, STAGE_FINISHED)


@dataclass
class MetricRule:
    """Alert when a run's latest `metric` goes above or below `threshold`."""

    metric: str
    above: float | None = None
    below: float | None = None

    @property
    def key(self) -> str:
        return f"{self.metric}{'>' + str(self.above) if self.above is not None else '<' + str(self.below)}"


@dataclass
class Rules:
    kinds: tuple[str, ...] = DEFAULT_KINDS
    metrics: list[MetricRule] = field(default_factory=list)

    @classmethod
    def from_settings(cls, section: dict[str, Any]) -> Rules:
        """The `[watch]` table of kdgat.toml: `events = [...]` and `[[watch.metric]]` rules."""
        kinds = section.get("events", list(DEFAULT_KINDS))
        if not isinstance(kinds, list) or any(k not in EVENT_KINDS for k in kinds):
            raise KdgatError(f"kdgat.toml [watch] events must be a list of: {', '.join(EVENT_KINDS)}.")
        rules = []
        for item in section.get("metric", []) or []:
            if not isinstance(item, dict) or "name" not in item or ("above" in item) == ("below" in item):
                raise KdgatError(
                    'kdgat.toml [[watch.metric]] needs name = "<metric>" and one of above = <x> or below = <x>.'
                )
            try:
                above = float(item["above"]) if "above" in item else None
                below = float(item["below"]) if "below" in item else None
            except (TypeError, ValueError):
                raise KdgatError(
                    f"kdgat.toml [[watch.metric]] {item['name']}: the threshold must be a number."
                ) from None
            rules.append(MetricRule(str(item["name"]), above, below))
        return cls(kinds=tuple(kinds), metrics=rules)


@dataclass
class Event:
    key: str  # stable: the same event always has the same key
    kind: str
    text: str  # one line for a human
    run_id: str | None = None
    job_id: str | None = None
    run_name: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def events(db: TrackingDB, rules: Rules | None = None) -> list[Event]:
    """Every event the store and the scheduler's facts show now (the caller drops the keys it has seen)."""
    rules = rules or Rules()
    db.wide(arrow=True)
    db._sync_views()  # the runs view reads the wide table: bring it up to date first
    read = db._reader.fetch_rows
    out: list[Event] = []
    kinds = set(rules.kinds)
    if kinds & {JOB_ENDED, JOB_FAILED, RUN_LOST}:
        for r in read(
            "SELECT job_id, run_id, run_name, state, cause, run_status, cancelled_by FROM jobs "
            "WHERE (stage IS NOT NULL OR run_id IS NOT NULL) AND state IN "
            "('COMPLETED','FAILED','CANCELLED','TIMEOUT','OUT_OF_MEMORY','NODE_FAIL','PREEMPTED','BOOT_FAIL')"
        ):
            name = r["run_name"] or ""
            if r["run_status"] == RunStatus.LOST and RUN_LOST in kinds:
                out.append(
                    Event(
                        f"{RUN_LOST}:{r['run_id']}",
                        RUN_LOST,
                        f"run {str(r['run_id'])[:8]} {name} is lost: job {r['job_id']} ended {r['state']}",
                        r["run_id"],
                        r["job_id"],
                        name,
                    )
                )
            if r["state"] == "COMPLETED":
                if JOB_ENDED in kinds:
                    out.append(
                        Event(
                            f"{JOB_ENDED}:{r['job_id']}",
                            JOB_ENDED,
                            f"job {r['job_id']} {name} completed",
                            r["run_id"],
                            r["job_id"],
                            name,
                        )
                    )
            elif JOB_FAILED in kinds:
                why = r["cause"] or r["state"].lower()
                by = f" by {r['cancelled_by']}" if r.get("cancelled_by") else ""
                out.append(
                    Event(
                        f"{JOB_FAILED}:{r['job_id']}",
                        JOB_FAILED,
                        f"job {r['job_id']} {name} failed: {why}{by}",
                        r["run_id"],
                        r["job_id"],
                        name,
                    )
                )
    if STAGE_FINISHED in kinds:
        for r in read(
            f"SELECT run_id, run_name, {Tag.SLURM_JOB_ID} AS job FROM runs WHERE {Tag.STATUS} = '{RunStatus.COMPLETE}'"
        ):
            out.append(
                Event(
                    f"{STAGE_FINISHED}:{r['run_id']}",
                    STAGE_FINISHED,
                    f"{r['run_name']} finished",
                    r["run_id"],
                    r["job"],
                    r["run_name"],
                )
            )
    if NAN_LOSS in kinds:
        for r in read(
            "SELECT DISTINCT m.run_id, r.run_name, string_agg(m.key, ', ') AS keys FROM metrics m "
            "JOIN runs r ON r.run_id = m.run_id WHERE m.key LIKE '%loss%' AND isnan(m.value) GROUP BY m.run_id, r.run_name"
        ):
            out.append(
                Event(
                    f"{NAN_LOSS}:{r['run_id']}",
                    NAN_LOSS,
                    f"{r['run_name']} ({str(r['run_id'])[:8]}): {r['keys']} is NaN",
                    r["run_id"],
                    None,
                    r["run_name"],
                )
            )
    if METRIC in kinds:
        for rule in rules.metrics:
            cond = f"m.value > {rule.above}" if rule.above is not None else f"m.value < {rule.below}"
            for r in read(
                f"SELECT m.run_id, r.run_name, m.value FROM metrics m JOIN runs r ON r.run_id = m.run_id "
                f"WHERE m.key = {literal(rule.metric)} AND NOT isnan(m.value) AND {cond}"
            ):
                out.append(
                    Event(
                        f"{METRIC}:{rule.key}:{r['run_id']}",
                        METRIC,
                        f"{r['run_name']} ({str(r['run_id'])[:8]}): {rule.metric}={r['value']:.4g} "
                        f"crossed {rule.above if rule.above is not None else rule.below}",
                        r["run_id"],
                        None,
                        r["run_name"],
                    )
                )
    return out


def new_events(found: Sequence[Event], seen: set[str]) -> list[Event]:
    """The events not alerted yet, each once, in the order found."""
    out, keys = [], set(seen)
    for event in found:
        if event.key not in keys:
            keys.add(event.key)
            out.append(event)
    return out
