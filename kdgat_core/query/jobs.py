"""Jobs and runs, the query side: the runs scheduler jobs started (what `kdgat jobs` and the TUI's jobs screen join
with the queue), and the `jobs` view over the scheduler's facts per job (what kdgat_core.slurm.accounting read from
sacct), with each failure's cause, efficiency advice, and failures grouped by cause.

`kdgat_core.slurm.job_table(runs=runs_of_jobs)` does the queue join; the caller (CLI or TUI) hands the facts in for
the view: this module never calls the scheduler, so the scheduler side never imports the query layer.

    db.attach_jobs(facts)          # facts: list of dicts, JobUsage.facts() of kdgat_core.slurm.accounting
    db.sql("SELECT job_id, mem_eff, cause FROM jobs JOIN runs USING (run_id) WHERE mem_eff < 0.3")
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kdgat_core.config import FailureCause, Metric, RunStatus, Tag, sqlite_path
from kdgat_core.query.db import TrackingDB, open_db
from kdgat_core.query.sql_text import in_list, literal

_open_dbs: dict[str, TrackingDB] = {}


def _tracking_db(tracking_uri: str) -> TrackingDB:
    """One read-only TrackingDB per URI and process: `jobs --watch` and the TUI do not reopen it every refresh."""
    if tracking_uri not in _open_dbs:
        _open_dbs[tracking_uri] = open_db(tracking_uri)
    return _open_dbs[tracking_uri]


def job_runs(db: TrackingDB, job_ids: Sequence[str]) -> list[dict[str, Any]]:
    """Runs tagged with one of these job ids: run_id, slurm_job_id, status, start_time and the newest metric
    (f1 among metrics logged together, as a finished run's final metrics are)."""
    if not job_ids:
        return []
    job_tag, status_tag, start_tag = Tag.SLURM_JOB_ID.value, Tag.STATUS.value, Tag.START_TIME.value
    table = db.sql(
        f"""
        WITH j AS (SELECT run_id, value AS slurm_job_id FROM tags WHERE key = '{job_tag}' AND value IN {in_list(job_ids)}),
             t AS (SELECT run_id, max(CASE WHEN key = '{status_tag}' THEN value END) AS status,
                          max(CASE WHEN key = '{start_tag}' THEN value END) AS start_time
                   FROM tags WHERE run_id IN (SELECT run_id FROM j) GROUP BY run_id),
             m AS (SELECT run_id, key, value, step,
                          row_number() OVER (PARTITION BY run_id ORDER BY timestamp DESC,
                              key = '{Metric.F1}' DESC, key = '{Metric.VAL_F1}' DESC, step DESC, key) AS rn
                   FROM metrics WHERE run_id IN (SELECT run_id FROM j))
        SELECT j.run_id, j.slurm_job_id, t.status, t.start_time,
               m.key AS metric_key, m.value AS metric_value, m.step AS metric_step
        FROM j LEFT JOIN t ON t.run_id = j.run_id LEFT JOIN m ON m.run_id = j.run_id AND m.rn = 1""",
        arrow=True,
    )
    rows: list[dict[str, Any]] = table.to_pylist()
    return rows


def runs_of_jobs(tracking_uri: str, job_ids: Sequence[str]) -> list[dict[str, Any]]:
    """`job_runs` for a tracking URI (a `kdgat_core.slurm.RunsReader`): no runs while nothing has been tracked."""
    if not job_ids:
        return []
    path = sqlite_path(tracking_uri, must_exist=False)
    if path is not None and not path.is_file():
        return []  # nothing tracked yet: the queue alone is still worth showing
    return job_runs(_tracking_db(tracking_uri), job_ids)


# --- the jobs view ----------------------------------------------------------------------------------------------

# The facts the slurm layer provides per job, with their DuckDB types (the view's first columns, in this order).
FACT_TYPES: dict[str, str] = {
    "job_id": "VARCHAR",
    "raw_id": "VARCHAR",
    "name": "VARCHAR",
    "state": "VARCHAR",
    "exit_code": "VARCHAR",
    "partition": "VARCHAR",
    "node": "VARCHAR",
    "submit_time": "VARCHAR",
    "start_time": "VARCHAR",
    "end_time": "VARCHAR",
    "elapsed_s": "BIGINT",
    "time_limit_s": "BIGINT",
    "cpus": "BIGINT",
    "cpu_time_s": "DOUBLE",
    "req_mem_mb": "DOUBLE",
    "max_rss_mb": "DOUBLE",
    "gpus": "BIGINT",
    "gpu_util": "DOUBLE",
    "cancelled_by": "VARCHAR",
    "job_cause": "VARCHAR",
    "time_eff": "DOUBLE",
    "cpu_eff": "DOUBLE",
    "mem_eff": "DOUBLE",
    "gpu_eff": "DOUBLE",
    # from kdgat's submission record, when kdgat submitted the job
    "dataset": "VARCHAR",
    "stage": "VARCHAR",
    "model_size": "VARCHAR",
    "variant": "VARCHAR",
    "run_name": "VARCHAR",
    "retried_by": "VARCHAR",  # the job kdgat resubmitted this one as (kdgat resubmit), if any
}
# What the view adds from the run the job started (none before it opened one)
RUN_COLUMNS = ("run_id", "run_status", "error_msg", "cause")
JOB_VIEW_COLUMNS = (*FACT_TYPES, *RUN_COLUMNS)
_ENDED = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED", "BOOT_FAIL")
_LOSS_NAN = "EXISTS (SELECT 1 FROM metrics m WHERE m.run_id = {run} AND m.key LIKE '%loss%' AND isnan(m.value))"
_EXCEPTION = r"^[A-Za-z_][A-Za-z0-9_.]*(Error|Exception|Interrupt|Exit)\b"


def cause_sql(job_cause: str, error_msg: str, run_id: str, run_failed: str) -> str:
    """The one definition of a failure's cause: the scheduler's (OOM, time limit, node failure, cancelled,
    preempted) first, then the run's own (CUDA out of memory, NaN loss, a Python exception); NULL when nothing
    failed. Arguments are SQL expressions."""
    c = FailureCause
    return f"""CASE
        WHEN {job_cause} IN ('{c.OOM}', '{c.TIMEOUT}', '{c.NODE_FAIL}', '{c.PREEMPTED}', '{c.CANCELLED}')
            THEN {job_cause}
        WHEN NOT coalesce({run_failed}, FALSE) AND coalesce({job_cause}, '') = '' THEN NULL
        WHEN {error_msg} ILIKE '%CUDA out of memory%' OR {error_msg} ILIKE '%OutOfMemoryError%' THEN '{c.CUDA_OOM}'
        WHEN {run_id} IS NOT NULL AND {_LOSS_NAN.format(run=run_id)} THEN '{c.NAN_LOSS}'
        WHEN {error_msg} ILIKE '%loss is nan%' OR {error_msg} ILIKE '%nan loss%' THEN '{c.NAN_LOSS}'
        WHEN {error_msg} ILIKE 'killed by SIG%' THEN '{c.CANCELLED}'
        WHEN regexp_matches(coalesce({error_msg}, ''), '{_EXCEPTION}') THEN '{c.EXCEPTION}'
        ELSE '{c.FAILED}' END"""


def _facts_table(facts: Sequence[Mapping[str, Any]]) -> Any:
    import pyarrow as pa

    types = {"VARCHAR": pa.string(), "BIGINT": pa.int64(), "DOUBLE": pa.float64()}
    schema = pa.schema([(c, types[t]) for c, t in FACT_TYPES.items()])
    rows = [{c: _clean(row.get(c), t) for c, t in FACT_TYPES.items()} for row in facts]
    return pa.Table.from_pylist(rows, schema=schema)


def _clean(value: Any, kind: str) -> Any:
    if value is None or value == "":
        return None if kind != "VARCHAR" else ("" if value == "" else None)
    if kind == "BIGINT":
        return int(value)
    if kind == "DOUBLE":
        return float(value)
    return str(value)


def attach_jobs(db: TrackingDB, facts: Sequence[Mapping[str, Any]]) -> None:
    """Create (or replace) the `jobs` view from the scheduler's facts; each job joined with the newest run it started."""
    from kdgat_core.query.connection import register_arrow

    db.wide(arrow=True)
    db._sync_views()  # the view reads `runs`: bring it up to date first
    con = db.con
    register_arrow(con, "_kdgat_job_facts", _facts_table(facts))
    run_failed = (
        f"r.status = '{RunStatus.FAILED}' OR (r.status = '{RunStatus.RUNNING}' AND f.state IN {_ENDED}) "
        "OR f.job_cause <> ''"
    )
    con.execute(f"""CREATE OR REPLACE VIEW jobs AS
        WITH newest AS (SELECT {Tag.SLURM_JOB_ID} AS job, arg_max(run_id, start_time) AS run_id FROM runs
                        WHERE {Tag.SLURM_JOB_ID} IS NOT NULL GROUP BY {Tag.SLURM_JOB_ID})
        SELECT f.* EXCLUDE (dataset, stage, model_size, run_name),
               coalesce(r.dataset, f.dataset) AS dataset, coalesce(r.stage, f.stage) AS stage,
               coalesce(r.model_size, f.model_size) AS model_size,
               coalesce(r.run_name, f.run_name, f.name) AS run_name,
               r.run_id,
               CASE WHEN r.status = '{RunStatus.RUNNING}' AND f.state IN {_ENDED} THEN '{RunStatus.LOST}'
                    ELSE r.status END AS run_status,
               r.error_msg,
               {cause_sql("f.job_cause", "r.error_msg", "r.run_id", run_failed)} AS cause
        FROM _kdgat_job_facts f LEFT JOIN newest n ON n.job = f.raw_id LEFT JOIN runs r ON r.run_id = n.run_id""")
    setattr(db, "_jobs_attached", True)  # noqa: B010 - failures() and events() attach an empty view otherwise


# --- failures -----------------------------------------------------------------------------------------------------------
def failures(db: TrackingDB, since: str | None = None) -> list[dict[str, Any]]:
    """Failed and lost runs, and failed jobs that never opened a run, each with its cause (newest first).

    Needs attach_jobs first for the scheduler's causes; runs alone are classified from their error_msg."""
    if not getattr(db, "_jobs_attached", False):
        attach_jobs(db, [])
    since_cond = f"AND coalesce(end_time, start_time) >= {_since_sql(since)}" if since else ""
    run_failed = f"r.status = '{RunStatus.FAILED}'"
    sql = f"""
        WITH j AS (SELECT * FROM jobs),
        from_jobs AS (
            SELECT job_id, raw_id, run_id, run_name, dataset, stage, model_size, variant, state, exit_code,
                   run_status, error_msg, cause, cancelled_by, req_mem_mb, max_rss_mb, elapsed_s, time_limit_s,
                   retried_by,
                   try_cast(nullif(end_time, '') AS TIMESTAMP) AS end_time,
                   try_cast(nullif(start_time, '') AS TIMESTAMP) AS start_time
            FROM j WHERE (cause IS NOT NULL OR run_status = '{RunStatus.LOST}')
              AND (run_id IS NOT NULL OR stage IS NOT NULL)),  -- kdgat's jobs of this project, not every job
        from_runs AS (
            SELECT NULL AS job_id, r.{Tag.SLURM_JOB_ID} AS raw_id, r.run_id, r.run_name, r.dataset, r.stage,
                   r.model_size, NULL AS variant, NULL AS state, NULL AS exit_code, r.status AS run_status,
                   r.error_msg, {cause_sql("NULL", "r.error_msg", "r.run_id", run_failed)} AS cause,
                   NULL AS cancelled_by, NULL AS req_mem_mb, NULL AS max_rss_mb, NULL AS elapsed_s,
                   NULL AS time_limit_s, NULL AS retried_by, r.end_time, r.start_time
            FROM runs r WHERE r.status = '{RunStatus.FAILED}'
              AND r.run_id NOT IN (SELECT run_id FROM j WHERE run_id IS NOT NULL))
        SELECT * EXCLUDE (cause), coalesce(cause, '{FailureCause.FAILED}') AS cause FROM (
            SELECT * FROM from_jobs UNION ALL BY NAME SELECT * FROM from_runs)
        WHERE TRUE {since_cond}
        ORDER BY coalesce(end_time, start_time) DESC NULLS LAST"""
    return db._reader.fetch_rows(sql)


def run_job_facts(db: TrackingDB) -> dict[str, dict[str, Any]]:
    """run id -> cause and efficiency of the job that ran it (needs attach_jobs)."""
    rows = db._reader.fetch_rows("SELECT run_id, cause, mem_eff, cpu_eff, time_eff FROM jobs WHERE run_id IS NOT NULL")
    return {r.pop("run_id"): r for r in rows}


def job_row(db: TrackingDB, ref: str) -> dict[str, Any] | None:
    """One row of the `jobs` view by job id (1234, 1234_5), raw id or run id prefix."""
    rows = db._reader.fetch_rows(
        "SELECT job_id, raw_id, run_id, coalesce(cause, '') AS cause, max_rss_mb FROM jobs "
        "WHERE job_id = ? OR raw_id = ? OR starts_with(coalesce(run_id, ''), ?) ORDER BY job_id LIMIT 1",
        [ref, ref, ref],
    )
    return rows[0] if rows else None


def _since_sql(since: str) -> str:
    """`2026-12-01`, `3d`, `12h` or `90m` as a DuckDB timestamp expression."""
    import re

    text = since.strip()
    m = re.fullmatch(r"(\d+)\s*([dhm])", text)
    if m:
        unit = {"d": "day", "h": "hour", "m": "minute"}[m.group(2)]
        return f"(now()::TIMESTAMP - INTERVAL {int(m.group(1))} {unit})"
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}([ T]\d{2}:\d{2}(:\d{2})?)?", text):
        return f"TIMESTAMP '{text.replace('T', ' ')}'"
    from kdgat_core.config import KdgatError

    raise KdgatError(f"--since '{since}' is not a date (2026-12-01) or an age such as 3d, 12h or 90m.")


def since_for_sacct(since: str | None) -> str | None:
    """The same --since for sacct -S (a date, or now-3days)."""
    import re

    if not since:
        return None
    _since_sql(since)  # validates
    m = re.fullmatch(r"(\d+)\s*([dhm])", since.strip())
    if m:
        unit = {"d": "days", "h": "hours", "m": "minutes"}[m.group(2)]
        return f"now-{int(m.group(1))}{unit}"
    return since.strip().replace(" ", "T")


@dataclass
class FailureGroup:
    cause: str
    count: int
    runs: list[dict[str, Any]]

    @property
    def detail(self) -> str:
        """The most common message of the group (an exception's class and message, or who cancelled)."""
        if self.cause == FailureCause.CANCELLED:
            who = sorted({r["cancelled_by"] for r in self.runs if r.get("cancelled_by")})
            return f"by {', '.join(who)}" if who else ""
        msgs = [r["error_msg"] for r in self.runs if r.get("error_msg")]
        return max(set(msgs), key=msgs.count) if msgs else ""


def group_failures(rows: Sequence[Mapping[str, Any]]) -> list[FailureGroup]:
    """Rows of `failures` grouped by cause, the largest group first; an exception groups by its class too."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        key = row["cause"]
        if key == FailureCause.EXCEPTION and row.get("error_msg"):
            key = f"{key}: {str(row['error_msg']).split(':', 1)[0]}"
        groups.setdefault(key, []).append(dict(row))
    out = [FailureGroup(cause=k, count=len(v), runs=v) for k, v in groups.items()]
    return sorted(out, key=lambda g: (-g.count, g.cause))


# --- efficiency -----------------------------------------------------------------------------------------------------
MEM_HEADROOM = 1.25  # suggested memory: the peak plus a quarter
TIME_HEADROOM = 1.5  # suggested time: the longest run plus half


def efficiency_rows(db: TrackingDB, since: str | None = None, dataset: str | None = None) -> list[dict[str, Any]]:
    """Per job of the `jobs` view: stage, size, variant, state and the efficiency figures (needs attach_jobs)."""
    conds = ["stage IS NOT NULL"]
    if dataset:
        conds.append(f"dataset = {literal(dataset)}")
    if since:
        conds.append(f"try_cast(nullif(submit_time, '') AS TIMESTAMP) >= {_since_sql(since)}")
    return db._reader.fetch_rows(
        f"SELECT job_id, dataset, stage, model_size, coalesce(variant, '') AS variant, state, cause, elapsed_s, "
        f"time_limit_s, cpus, cpu_time_s, req_mem_mb, max_rss_mb, gpus, gpu_util, time_eff, cpu_eff, mem_eff "
        f"FROM jobs WHERE {' AND '.join(conds)} ORDER BY stage, model_size, variant"
    )


def _gb(mb: float) -> str:
    return f"{mb / 1024:.1f}G" if mb >= 1024 else f"{mb:.0f}M"


def _mem_request(mb: float) -> str:
    """A request a little above `mb`: whole gigabytes from 1G up, else 256M steps."""
    if mb >= 1024:
        return f"{math.ceil(mb / 1024)}G"
    return f"{max(256, math.ceil(mb / 256) * 256)}M"


def _span(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{math.ceil(seconds / 60)} min"


def _time_request(seconds: float) -> str:
    minutes = max(5, math.ceil(seconds / 60 / 5) * 5)
    return f"{minutes // 60:02d}:{minutes % 60:02d}:00"


def advise(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """seff-style advice per (stage, model_size, variant) from completed jobs; failures by OOM or time limit raise
    the suggestion instead of lowering it."""
    groups: dict[tuple[str, str, str], list[Mapping[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["stage"], row["model_size"] or "", row["variant"] or ""), []).append(row)
    out = []
    for (stage, size, variant), items in sorted(groups.items()):
        done = [r for r in items if r["state"] == "COMPLETED"]
        ooms = [r for r in items if r.get("cause") == FailureCause.OOM]
        timeouts = [r for r in items if r.get("cause") == FailureCause.TIMEOUT]
        basis = done or items
        asked_mem = max((r["req_mem_mb"] or 0) for r in basis)
        peak = max((r["max_rss_mb"] or 0) for r in basis)
        limit = max((r["time_limit_s"] or 0) for r in basis)
        longest = max((r["elapsed_s"] or 0) for r in basis)
        cpus = max((r["cpus"] or 0) for r in basis)
        busy = max(((r["cpu_time_s"] or 0) / r["elapsed_s"]) for r in basis if r["elapsed_s"]) if basis else 0.0
        suggest: dict[str, str] = {}
        notes = []
        if ooms:
            want = max(r["req_mem_mb"] or 0 for r in ooms) * 2
            suggest["mem"] = _mem_request(max(want, peak * MEM_HEADROOM))
            notes.append(f"{len(ooms)} ran out of memory: mem={suggest['mem']}")
        elif done and peak and asked_mem and peak * MEM_HEADROOM < asked_mem * 0.8:
            suggest["mem"] = _mem_request(peak * MEM_HEADROOM)
            notes.append(
                f"asked {_gb(asked_mem)}, peak {_gb(peak)} over {len(done)} run{'s' * (len(done) != 1)}: "
                f"--mem {suggest['mem']} would do"
            )
        if timeouts:
            hit = max((r["time_limit_s"] or 0) for r in timeouts)
            suggest["time"] = _time_request(max(hit * 2, longest * TIME_HEADROOM))
            notes.append(f"{len(timeouts)} hit the time limit: time={suggest['time']}")
        elif done and limit and longest * TIME_HEADROOM < limit * 0.5:
            suggest["time"] = _time_request(longest * TIME_HEADROOM)
            notes.append(f"longest {_span(longest)} of {_span(limit)}: --time {suggest['time']}")
        if done and cpus > 1 and busy < cpus * 0.5:
            suggest["cpus"] = str(max(1, math.ceil(busy * 1.25)))
            notes.append(f"{cpus} CPUs, {busy:.1f} busy on average: --cpus-per-task {suggest['cpus']}")
        gpus = max((r["gpus"] or 0) for r in basis)
        utils = [r["gpu_util"] for r in basis if r.get("gpu_util") is not None]
        if gpus and utils and max(utils) < 0.05:
            suggest["gpus"] = "0"
            notes.append(f"{gpus} GPU{'s' * (gpus > 1)} at {max(utils):.0%} at most: run it on CPUs")

        out.append(
            {
                "stage": stage,
                "model_size": size,
                "variant": variant,
                "jobs": len(items),
                "completed": len(done),
                "mem_asked": _gb(asked_mem) if asked_mem else "",
                "mem_peak": _gb(peak) if peak else "",
                "mem_eff": _mean(basis, "mem_eff"),
                "cpu_eff": _mean(basis, "cpu_eff"),
                "time_eff": _mean(basis, "time_eff"),
                "suggested": ",".join(f"{k}={v}" for k, v in suggest.items()),
                "advice": "; ".join(notes) or "requests fit what the jobs used",
            }
        )
    return out


def _mean(rows: Sequence[Mapping[str, Any]], key: str) -> float | None:
    vals = [r[key] for r in rows if r.get(key) is not None]
    return sum(vals) / len(vals) if vals else None


def suggested_resources(
    advice: Sequence[Mapping[str, Any]], stage: str, model_size: str, variant: str | None = None
) -> dict[str, str]:
    """The suggestion for one stage and preset as `--resources` pairs ({} when there is none)."""
    for row in advice:
        if (row["stage"], row["model_size"], row["variant"] or "") == (stage, model_size, variant or ""):
            return dict(p.split("=", 1) for p in row["suggested"].split(",") if p)
    return {}


def toml_snippet(advice: Sequence[Mapping[str, Any]]) -> str:
    """kdgat.toml tables that store the suggestions per stage and size ([cluster.resources.<stage>.<size>])."""
    lines = []
    for row in advice:
        if not row["suggested"] or row["variant"]:
            continue  # a variant's defaults are kdgat's own; the tables hold the full-size request
        lines.append(f"[cluster.resources.{row['stage']}.{row['model_size']}]")
        for pair in row["suggested"].split(","):
            key, value = pair.split("=", 1)
            lines.append(f"{key} = {value}" if key in ("cpus", "gpus") else f'{key} = "{value}"')
        lines.append("")
    return "\n".join(lines)


__all__ = [
    "FACT_TYPES",
    "JOB_VIEW_COLUMNS",
    "FailureGroup",
    "advise",
    "attach_jobs",
    "cause_sql",
    "efficiency_rows",
    "failures",
    "group_failures",
    "job_row",
    "job_runs",
    "run_job_facts",
    "runs_of_jobs",
    "since_for_sacct",
    "suggested_resources",
    "toml_snippet",
]
