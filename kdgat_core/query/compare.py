"""Final metrics of N runs side by side: `kdgat compare`, `db.compare` and the TUI's diff screen use this one table.

Two runs: metric | a | b | delta (b - a) | better (a, b or =). More runs: metric | a | b | c ... | delta_b | delta_c
... (each against a) | best (the letter of the best run). Lower-is-better metrics (losses, fpr) count lower as better.
The schema metadata names the runs: ``kdgat.a`` = "name (id8)", and ``kdgat.runs`` = JSON [[run_id, run_name], ...].
"""

from __future__ import annotations

import json
import string

from kdgat_core.config import metric_direction
from kdgat_core.query.connection import pa
from kdgat_core.query.wide import METRIC_COLUMNS, METRIC_PREFIX


def letters(n: int) -> list[str]:
    """a, b, ..., z, r27, r28 ...: the column name of each run."""
    return [string.ascii_lowercase[i] if i < 26 else f"r{i + 1}" for i in range(n)]


def compare_rows(rows: list[dict]) -> pa.Table:
    """`rows`: wide rows of the runs, in order (at least two; one row may stand for a run named twice)."""
    names = letters(len(rows))
    keys = list(METRIC_COLUMNS) + sorted(
        {k for r in rows for k, v in r.items() if k.startswith(METRIC_PREFIX) and v is not None}
    )
    two = len(rows) == 2
    out: dict[str, list] = {"metric": [], **{n: [] for n in names}}
    deltas = ["delta"] if two else [f"delta_{n}" for n in names[1:]]
    out.update({d: [] for d in deltas})
    out["better" if two else "best"] = []
    for k in keys:
        values = [r.get(k) for r in rows]
        if all(v is None for v in values):
            continue
        name = k[len(METRIC_PREFIX) :] if k.startswith(METRIC_PREFIX) else k
        lower = metric_direction(name) == "asc"
        out["metric"].append(name)
        for n, v in zip(names, values):
            out[n].append(v)
        base = values[0]
        for d, v in zip(deltas, values[1:]):
            out[d].append(None if base is None or v is None else v - base)
        if two:
            delta = out["delta"][-1]
            better = None
            if delta is not None and delta == delta:
                better = "=" if delta == 0 else ("b" if (delta < 0) == lower else "a")
            out["better"].append(better)
        else:
            known = [(v, n) for n, v in zip(names, values) if v is not None and v == v]
            best = (min if lower else max)(known, key=lambda t: t[0])[1] if known else None
            out["best"].append(best)
    schema = pa.schema(
        [("metric", pa.string())]
        + [(n, pa.float64()) for n in names]
        + [(d, pa.float64()) for d in deltas]
        + [("better" if two else "best", pa.string())]
    )
    table = pa.table(out, schema=schema)
    meta = {f"kdgat.{n}": f"{r['run_name']} ({r['run_id'][:8]})" for n, r in zip(names, rows)}
    meta["kdgat.runs"] = json.dumps([[r["run_id"], r["run_name"]] for r in rows])
    return table.replace_schema_metadata(meta)
