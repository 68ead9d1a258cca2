"""Runs started by scheduler jobs: what `kdgat jobs` and the TUI's jobs screen join with the queue.

`kdgat_core.slurm.job_table(runs=runs_of_jobs)` does the join; this module only reads the runs (DuckDB, read-only,
through the public views `tags` and `metrics`), so the scheduler side never imports the query layer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from kdgat_core.config import Metric, Tag, sqlite_path
from kdgat_core.query.db import TrackingDB, open_db
from kdgat_core.query.sql_text import in_list

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
