"""What the Runs screen shows: the runs table held as Arrow, filtered, sorted, grouped and marked in memory.

The numbers come from `kdgat_core.query` (see `kdgat_tui.source`); this module only decides which rows and columns
are on screen, so sort and filter answer in milliseconds over 100k runs without touching the database.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from kdgat_core.config import STANDARD_METRICS, Metric, Tag, metric_direction
from kdgat_tui import run_filter
from kdgat_tui.run_filter import HAYSTACK

RUN_ID = Tag.RUN_ID.value
MARK = "✓"
# The identity columns, in display order; metrics go between status and start.
LEAD_COLUMNS = ("run_name", Tag.STATUS.value)
TRAIL_COLUMNS = ("start_time", "duration_s", Tag.DATASET.value, Tag.STAGE.value, Tag.MODEL_SIZE.value, Tag.USE_KD.value, RUN_ID)
HEADERS = {"run_name": "run", Tag.MODEL_SIZE.value: "size", Tag.USE_KD.value: "kd", "start_time": "start",
           "duration_s": "took", RUN_ID: "run id", Metric.PRECISION.value: "precision"}
STANDARD = {m.value for m in STANDARD_METRICS}
DEFAULT_METRICS = (Metric.F1.value, Metric.ACCURACY.value, Metric.AUC.value, Metric.VAL_LOSS.value)
# Columns a run's seed lives in: runs equal in everything else form one group in the "by config" view.
PARAM_PREFIX, METRIC_PREFIX = "params.", "metrics."
# Params that tell runs of one configuration apart without changing it (as kdgat_core.query's by-config leaderboard).
NOT_CONFIG_LEAVES = ("seed", Tag.TEACHER_RUN_ID.value)
GROUP_BY = (Tag.DATASET.value, Tag.STAGE.value, Tag.MODEL_SIZE.value, Tag.USE_KD.value)
# Quick filters cycle through these columns' values (keys 1-4 on the Runs screen).
QUICK_COLUMNS = (Tag.DATASET.value, Tag.STAGE.value, Tag.MODEL_SIZE.value, Tag.STATUS.value)


@dataclass
class View:
    """One screenful's worth of state: the formatted table and the run id of each row."""

    table: pa.Table
    run_ids: list[str]
    headers: list[str]
    widths: list[int]
    total: int                       # runs before filtering
    grouped: bool = False
    groups: list[list[str]] = field(default_factory=list)   # run ids behind each row in the grouped view


class RunsModel:
    def __init__(self, base: pa.Table, metrics: list[str] | None = None) -> None:
        self.base = _with_haystack(base)
        self.available_metrics = [c for c in base.column_names if _is_metric(base, c)]
        self.metrics = [m for m in (metrics or DEFAULT_METRICS) if m in self.available_metrics]
        self.filter_text = ""
        self.quick: dict[str, str] = {}
        self.sort_key: str | None = "start_time"
        self.sort_desc = True
        self.grouped = False
        self.marks: set[str] = set()

    def replace_all(self, table: pa.Table) -> None:
        self.base = _with_haystack(table)
        self.available_metrics = [c for c in table.column_names if _is_metric(table, c)]
        self.metrics = [m for m in self.metrics if m in self.available_metrics]
        self.marks &= set(self.base[RUN_ID].to_pylist())

    # ---- data ----------------------------------------------------------------------------------------------------
    def upsert(self, changed: pa.Table) -> int:
        """Replace the rows of runs in `changed` and add new ones; returns how many runs are new."""
        if changed.num_rows == 0:
            return 0
        changed = _with_haystack(_conform(changed, self.base.schema))
        ids = changed[RUN_ID]
        known = pc.is_in(self.base[RUN_ID], value_set=ids)
        new = changed.num_rows - pc.sum(pc.is_in(ids, value_set=self.base[RUN_ID])).as_py()
        self.base = pa.concat_tables([self.base.filter(pc.invert(known)), changed]).combine_chunks()
        return int(new)

    def remove(self, run_ids: list[str]) -> None:
        if run_ids:
            self.base = self.base.filter(pc.invert(pc.is_in(self.base[RUN_ID], value_set=pa.array(run_ids))))

    def value_of(self, run_id: str, column: str):
        if column not in self.base.column_names:
            return None
        hit = self.base.filter(pc.equal(self.base[RUN_ID], run_id))
        return hit[column][0].as_py() if hit.num_rows else None

    @property
    def columns(self) -> list[str]:
        return [c for c in self.base.column_names if c != HAYSTACK]

    def quick_values(self, column: str) -> list[str]:
        if column not in self.base.column_names:
            return []
        return sorted(v for v in pc.unique(pc.cast(self.base[column], pa.string())).to_pylist() if v)

    # ---- view ----------------------------------------------------------------------------------------------------
    def visible_columns(self) -> list[str]:
        have = set(self.base.column_names)
        return [c for c in (*LEAD_COLUMNS, *self.metrics, *TRAIL_COLUMNS) if c in have]

    def selected_rows(self) -> pa.Table:
        """The base rows the filter and quick filters keep (sorted)."""
        table = self.base
        keep = run_filter.mask(table, self.filter_text)
        for column, value in self.quick.items():
            if column in table.column_names:
                m = pc.equal(pc.cast(table[column], pa.string()), value)
                keep = m if keep is None else pc.and_(keep, m)
        if keep is not None:
            table = table.filter(pc.fill_null(keep, False))
        if self.sort_key and self.sort_key in table.column_names:
            order = "descending" if self.sort_desc else "ascending"
            idx = pc.sort_indices(table, sort_keys=[(self.sort_key, order, "at_end")])
            table = table.take(idx)
        return table

    def view(self) -> View:
        rows = self.selected_rows()
        if self.grouped:
            return self._grouped_view(rows)
        cols = self.visible_columns()
        ids = rows[RUN_ID]
        marked = pc.is_in(ids, value_set=pa.array(sorted(self.marks), pa.string()))
        mark_col = pc.if_else(marked, MARK, "")
        arrays = [mark_col] + [_display(rows, c) for c in cols]
        names = [" "] + [HEADERS.get(c, c) for c in cols]
        table = pa.Table.from_arrays(arrays, names=names)
        return View(table, ids.to_pylist(), names, column_widths(table), self.base.num_rows)

    def _grouped_view(self, rows: pa.Table) -> View:
        keys = [c for c in GROUP_BY if c in rows.column_names]
        params = [c for c in rows.column_names
                  if c.startswith(PARAM_PREFIX) and c.rsplit(".", 1)[-1] not in NOT_CONFIG_LEAVES]
        keys_all = keys + params
        if rows.num_rows == 0:
            empty = pa.table({"config": pa.array([], pa.string()), "n": pa.array([], pa.int64())})
            return View(empty, [], ["config", "n"], [6, 1], self.base.num_rows, grouped=True)
        metrics = list(self.metrics)
        aggs = [(RUN_ID, "list"), (RUN_ID, "count")]
        for m in metrics:
            aggs += [(m, "mean"), (m, "stddev")]
        # every key must be hashable text for group_by; missing params become "" so such runs still group
        key_table = pa.table({k: pc.fill_null(pc.cast(rows[k], pa.string()), "") for k in keys_all})
        work = key_table
        for m in metrics:
            work = work.append_column(m, pc.cast(rows[m], pa.float64()))
        work = work.append_column(RUN_ID, rows[RUN_ID])
        grouped = work.group_by(keys_all, use_threads=False).aggregate(aggs)
        if self.sort_key in metrics:
            order = "descending" if self.sort_desc else "ascending"
            grouped = grouped.take(pc.sort_indices(grouped, [(f"{self.sort_key}_mean", order, "at_end")]))
        else:
            grouped = grouped.take(pc.sort_indices(grouped, [(k, "ascending") for k in keys]))
        names_col = _group_names(grouped, keys, params)
        arrays = [names_col, grouped[f"{RUN_ID}_count"]]
        names = ["config (differs only in seed)", "n"]
        for m in metrics:
            mean, std = grouped[f"{m}_mean"], pc.fill_null(grouped[f"{m}_stddev"], 0.0)
            text = pc.binary_join_element_wise(fixed4(mean, pad=False), fixed4(std, pad=False), "±")
            arrays.append(pc.fill_null(text, ""))
            names.append(f"{HEADERS.get(m, m)} mean±std")
        table = pa.Table.from_arrays(arrays, names=names)
        groups = grouped[f"{RUN_ID}_list"].to_pylist()
        return View(table, [g[0] for g in groups], names, column_widths(table), self.base.num_rows, grouped=True,
                    groups=groups)

    # ---- state changes ---------------------------------------------------------------------------------------------
    def sort_by(self, column: str) -> None:
        """Sort by a column; choosing the same column again flips the direction. Metrics start best-first."""
        if column == self.sort_key:
            self.sort_desc = not self.sort_desc
        else:
            self.sort_key = column
            self.sort_desc = (metric_direction(column) == "desc" if column in self.available_metrics
                              else column == "start_time")

    def toggle_mark(self, run_id: str) -> None:
        self.marks.symmetric_difference_update({run_id})


def column_of_header(header: str, model: RunsModel) -> str | None:
    """The base column behind a displayed header (headers are shortened for 80 columns)."""
    for col in model.visible_columns():
        if HEADERS.get(col, col) == header:
            return col
    return None


def _is_metric(table: pa.Table, column: str) -> bool:
    typ = table.schema.field(column).type
    return pa.types.is_floating(typ) and (column in STANDARD or column.startswith(METRIC_PREFIX))


def _with_haystack(table: pa.Table) -> pa.Table:
    if HAYSTACK in table.column_names:
        table = table.drop_columns([HAYSTACK])
    parts = [pc.fill_null(pc.cast(table[c], pa.string()), "")
             for c in ("run_name", RUN_ID, *GROUP_BY, Tag.STATUS.value, Tag.TEACHER_RUN_ID.value,
                       Tag.SLURM_JOB_ID.value, Tag.MODEL_ARCH.value) if c in table.column_names]
    if not parts:
        return table.append_column(HAYSTACK, pa.array([""] * table.num_rows))
    hay = pc.utf8_lower(pc.binary_join_element_wise(*parts, " ")) if len(parts) > 1 else pc.utf8_lower(parts[0])
    return table.append_column(HAYSTACK, hay)


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """Give new rows the same columns and types as the held table (a new metric seen only in new runs is dropped)."""
    arrays = []
    for f in schema:
        if f.name == HAYSTACK:
            continue
        if f.name in table.column_names:
            arrays.append(pc.cast(table[f.name], f.type))
        else:
            arrays.append(pa.nulls(table.num_rows, f.type))
    return pa.Table.from_arrays(arrays, schema=pa.schema([f for f in schema if f.name != HAYSTACK]))


def _display(rows: pa.Table, column: str):
    col = rows[column]
    typ = col.type
    if column == "duration_s":
        return _fmt_duration(col)
    if pa.types.is_floating(typ):
        return fixed4(col)
    if pa.types.is_timestamp(typ):
        return pc.strftime(col, format="%Y-%m-%d %H:%M")
    return col


def fixed4(values, pad: bool = True) -> pa.ChunkedArray:
    """Floats as right-aligned text with four decimals (`0.9520`), so a column of metrics lines up; NaN stays 'nan'."""
    x = pc.cast(values, pa.float64())
    finite = pc.and_(pc.is_finite(x), pc.less(pc.abs(x), 1e9))
    scaled = pc.cast(pc.round(pc.multiply(pc.abs(pc.if_else(finite, x, 0.0)), 10_000)), pa.int64())
    whole = pc.cast(pc.divide(scaled, 10_000), pa.string())
    frac = pc.utf8_lpad(pc.cast(pc.subtract(scaled, pc.multiply(pc.divide(scaled, 10_000), 10_000)), pa.string()), 4, "0")
    sign = pc.if_else(pc.less(x, 0), "-", "")
    text = pc.binary_join_element_wise(sign, whole, ".", frac, "")
    text = pc.if_else(finite, text, pc.cast(x, pa.string()))
    if not pad:
        return text
    width = pc.max(pc.utf8_length(text)).as_py() or 0
    return pc.utf8_lpad(text, width, " ")


def _fmt_duration(seconds) -> pa.ChunkedArray:
    """Seconds as `42s`, `12m05s` or `3h12m`, vectorised."""
    s = pc.cast(pc.floor(pc.cast(pc.fill_null(seconds, -1), pa.float64())), pa.int64())
    h = pc.divide(s, 3600)
    m = pc.divide(pc.subtract(s, pc.multiply(h, 3600)), 60)
    sec = pc.subtract(s, pc.multiply(pc.divide(s, 60), 60))

    def two(x):
        return pc.utf8_lpad(pc.cast(x, pa.string()), 2, "0")

    hours = pc.binary_join_element_wise(pc.cast(h, pa.string()), "h", two(m), "m", "")
    minutes = pc.binary_join_element_wise(pc.cast(pc.divide(s, 60), pa.string()), "m", two(sec), "s", "")
    secs = pc.binary_join_element_wise(pc.cast(s, pa.string()), "s", "")
    out = pc.if_else(pc.greater_equal(s, 3600), hours, pc.if_else(pc.greater_equal(s, 60), minutes, secs))
    out = pc.if_else(pc.less(s, 0), pa.scalar(None, pa.string()), out)
    return pc.utf8_lpad(out, pc.max(pc.utf8_length(out)).as_py() or 0, " ")


def _group_names(grouped: pa.Table, keys: list[str], params: list[str]) -> pa.Array:
    """A readable name per group: the run name's parts, plus the params that tell same-named groups apart."""
    def col(name):
        return grouped[name].to_pylist() if name in keys else [""] * grouped.num_rows

    ds, stage, size, kd = (col(Tag.DATASET.value), col(Tag.STAGE.value), col(Tag.MODEL_SIZE.value),
                           col(Tag.USE_KD.value))
    names = [f"{d}/{z}_{s}{'_kd' if str(k).lower() == 'true' else ''}" for d, s, z, k in zip(ds, stage, size, kd)]
    by_name: dict[str, list[int]] = {}
    for i, name in enumerate(names):
        by_name.setdefault(name, []).append(i)
    values = {p: grouped[p].to_pylist() for p in params}
    out = list(names)
    for name, rows in by_name.items():
        if len(rows) < 2:
            continue
        differing = [p for p in params if len({values[p][i] for i in rows}) > 1]
        for i in rows:
            out[i] = name + " " + " ".join(f"{p.rsplit('.', 1)[-1]}={values[p][i] or '-'}" for p in differing[:3])
    return pa.array(out, pa.string())


def column_widths(table: pa.Table) -> list[int]:
    out = []
    for name, col in zip(table.column_names, table.columns):
        if table.num_rows == 0:
            out.append(len(name))
            continue
        as_text = pc.cast(col, pa.string()) if not pa.types.is_string(col.type) else col
        longest = pc.max(pc.utf8_length(pc.fill_null(as_text, ""))).as_py() or 0
        out.append(max(len(name), int(longest)))
    return out
