"""Curves of one metric for many runs, or for groups of runs (mean and std per step): what `kdgat plot` draws with
matplotlib and the TUI's chart draws with plotext, from the same numbers.

Histories are read inside SQLite through MLflow's run_uuid index (a step logged twice keeps its newest point, as in
the `metric_history` view). x is the step, or the seconds since the run's first point of the metric. A KD student's
teacher can be drawn underneath (``teachers=True``). Colours are stable: a label always gets the same one.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from kdgat_core.config import KdgatError
from kdgat_core.query.connection import ALIAS, pa
from kdgat_core.query.sql_text import exact_real, in_list, literal
from kdgat_core.query.summaries import _DECODE

if TYPE_CHECKING:
    from kdgat_core.query.db import TrackingDB

# Colour-blind-safe (Okabe-Ito) order; matplotlib takes the hex, plotext the nearest names (kdgat_tui.widgets).
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")
TEACHER_COLOUR = "#999999"


def colour_index(label: str) -> int:
    """The palette slot of a label: the same label gets the same colour in every figure and every chart."""
    return zlib.crc32(label.encode()) % len(PALETTE)


@dataclass
class Curve:
    label: str
    x: list[float]
    y: list[float]  # the value (one run) or the mean over runs (a group)
    std: list[float] | None = None  # a group's sample std per x (None for one run)
    n: list[int] = field(default_factory=list)  # runs behind each point
    run_ids: list[str] = field(default_factory=list)
    teacher: bool = False

    @property
    def colour(self) -> str:
        return TEACHER_COLOUR if self.teacher else PALETTE[colour_index(self.label)]


def histories(db: TrackingDB, run_ids: Sequence[str], key: str, x: str = "step") -> pa.Table:
    """(run_id, x, value) of `key` for these runs, sorted by run and x. x: "step" or "time" (s since first point)."""
    if x not in ("step", "time"):
        raise KdgatError(f"x is 'step' or 'time', not '{x}'.")
    ids = list(dict.fromkeys(run_ids))
    if not ids:
        return pa.table({"run_id": pa.array([], pa.string()), "x": pa.array([], pa.float64()), "value": []})
    inner = (
        f"SELECT run_uuid AS run_id, step, {exact_real('value')} AS value, is_nan, timestamp FROM metrics "
        f"WHERE run_uuid IN {in_list(ids)} AND +key = {literal(key)}"
    )
    lit = "'" + inner.replace("'", "''") + "'"
    points = (
        f"SELECT run_id, CAST(step AS BIGINT) AS step, max(CAST(timestamp AS BIGINT)) AS ts, "
        f"max_by({_DECODE}, (CAST(timestamp AS BIGINT), CAST(value AS DOUBLE))) AS value "
        f"FROM sqlite_query('{ALIAS}', {lit}) GROUP BY run_id, step"
    )
    xcol = "CAST(step AS DOUBLE)" if x == "step" else "(ts - min(ts) OVER (PARTITION BY run_id)) / 1000.0"
    return db._reader.fetch(f"SELECT run_id, {xcol} AS x, value FROM ({points}) ORDER BY run_id, x")


def run_curves(db: TrackingDB, run_ids: Sequence[str], key: str, x: str = "step", teachers: bool = True) -> list[Curve]:
    """One curve per run (labelled name@id8), each KD student's teacher first (drawn underneath) when asked."""
    ids = [db.resolve_run(r) for r in run_ids]
    rows = {r["run_id"]: r for r in db.runs_table(run_ids=ids, include_deleted=True, arrow=True).to_pylist()}
    teacher_of = {r: rows[r].get("teacher_run_id") for r in ids if r in rows and rows[r].get("teacher_run_id")}
    if teachers and teacher_of:
        extra = [t for t in teacher_of.values() if t not in rows]
        if extra:
            found = db.runs_table(run_ids=extra, include_deleted=True, arrow=True).to_pylist()
            rows.update({r["run_id"]: r for r in found})
    wanted = ids + ([t for t in teacher_of.values() if t in rows and t not in ids] if teachers else [])
    hist = histories(db, wanted, key, x).to_pylist()
    by_run: dict[str, list[tuple[float, float]]] = {}
    for h in hist:
        by_run.setdefault(h["run_id"], []).append((h["x"], h["value"]))
    out = []
    if teachers:
        for student, teacher in teacher_of.items():
            if teacher in rows and teacher not in ids and teacher in by_run:
                label = f"teacher {_label(rows[teacher])} of {_label(rows[student])}"
                out.append(_single(label, teacher, by_run[teacher], teacher=True))
    for r in ids:
        if r in by_run:
            out.append(_single(_label(rows.get(r, {"run_id": r})), r, by_run[r]))
    if not out:
        db.check_metric(key)
        raise KdgatError(f"None of these runs logged a history of '{key}'.")
    return out


def group_curves(db: TrackingDB, groups: Sequence[tuple[str, Sequence[str]]], key: str, x: str = "step") -> list[Curve]:
    """One curve per group: the mean over its runs at each x, the sample std as a band, n per point."""
    all_ids = [r for _, ids in groups for r in ids]
    hist = histories(db, all_ids, key, x)
    owner = pa.table(
        {
            "run_id": pa.array(all_ids, pa.string()),
            "g": pa.array([i for i, (_, ids) in enumerate(groups) for _ in ids], pa.int64()),
        }
    )
    stats = db._calc(
        "SELECT o.g, h.x, avg(h.value) AS mean, stddev_samp(h.value) AS std, count(*) AS n "
        "FROM h JOIN o USING (run_id) WHERE NOT isnan(h.value) GROUP BY o.g, h.x ORDER BY o.g, h.x",
        h=hist,
        o=owner,
    ).to_pylist()
    out = []
    for i, (label, ids) in enumerate(groups):
        pts = [s for s in stats if s["g"] == i]
        if pts:
            out.append(
                Curve(
                    label,
                    [p["x"] for p in pts],
                    [p["mean"] for p in pts],
                    [p["std"] if p["std"] is not None else 0.0 for p in pts],
                    [p["n"] for p in pts],
                    list(ids),
                )
            )
    if not out:
        db.check_metric(key)
        raise KdgatError(f"No run of these groups logged a history of '{key}'.")
    return out


def ema(values: Sequence[float], weight: float) -> list[float]:
    """Exponential moving average (TensorBoard's smoothing, debiased): weight 0 is no smoothing, 0.99 very smooth."""
    if not 0 <= weight < 1:
        raise KdgatError(f"Smoothing is a weight in [0, 1), not {weight}.")
    out, last, norm = [], 0.0, 0.0
    for v in values:
        if v != v:
            out.append(v)
            continue
        last = last * weight + (1 - weight) * v
        norm = norm * weight + (1 - weight)
        out.append(last / norm)
    return out


def _label(row: dict) -> str:
    return f"{row.get('run_name') or '?'}@{row['run_id'][:8]}"


def _single(label: str, run_id: str, points: list[tuple[float, float]], teacher: bool = False) -> Curve:
    return Curve(label, [p[0] for p in points], [p[1] for p in points], None, [1] * len(points), [run_id], teacher)
