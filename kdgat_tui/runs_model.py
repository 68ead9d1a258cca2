"""What the Runs screen shows: the runs table held as Arrow, filtered, sorted, grouped and marked in memory.

The numbers come from `kdgat_core.query` (see `kdgat_tui.source`); this module only decides which rows and columns
are on screen, so sort and filter answer in milliseconds over 100k runs without touching the database.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from kdgat_core.config import METRIC_PREFIX, PARAM_PREFIX, STANDARD_METRICS, Metric, RunStatus, Tag, metric_direction
from kdgat_tui import run_filter
from kdgat_tui.run_filter import HAYSTACK

RUN_ID = Tag.RUN_ID.value
MARK = "✓"
# The identity columns, in display order; metrics go between status and start.
LEAD_COLUMNS = ("run_name", Tag.STATUS.value)
TRAIL_COLUMNS = (
    "start_time",
    "duration_s",
    Tag.DATASET.value,
    Tag.STAGE.value,
    Tag.MODEL_SIZE.value,
    Tag.USE_KD.value,
    RUN_ID,
)
HEADERS = {
    "run_name": "run",
    Tag.MODEL_SIZE.value: "size",
    Tag.USE_KD.value: "kd",
    "start_time": "start",
    "duration_s": "took",
    RUN_ID: "run id",
    Metric.PRECISION.value: "precision",
}
STANDARD = {m.value for m in STANDARD_METRICS}
DEFAULT_METRICS = (Metric.F1.value, Metric.ACCURACY.value, Metric.AUC.value, Metric.VAL_LOSS.value)
# Columns a run's seed lives in: runs equal in everything else form one group in the "by config" view.
GROUP_BY = (Tag.DATASET.value, Tag.STAGE.value, Tag.MODEL_SIZE.value, Tag.USE_KD.value)
# The scheduler's facts about a run's job (kdgat_core.query's `jobs` view), shown after the metrics once known.
JOB_FACT_COLUMNS = ("cause", "mem_eff", "cpu_eff", "time_eff")
# Quick filters cycle through these columns' values (keys 1-4 on the Runs screen).
QUICK_COLUMNS = (Tag.DATASET.value, Tag.STAGE.value, Tag.MODEL_SIZE.value, Tag.STATUS.value)


@dataclass
class View:
    """One screenful's worth of state: the formatted table and the run id of each row."""

    table: pa.Table
    ids: pa.Array  # run id of each row (Arrow: 100k ids stay out of Python until asked for)
    headers: list[str]
    widths: list[int]
    total: int  # runs before filtering
    grouped: bool = False
    groups: list[list[str]] = field(default_factory=list)  # run ids behind each row in the grouped view
    complete: bool = True  # False: only the first rows are formatted (`RunsModel.view(first=...)`), the rest blank
    _ids: list[str] | None = None

    @property
    def run_ids(self) -> list[str]:
        if self._ids is None:
            self._ids = self.ids.to_pylist()
        return self._ids

    def row_of(self, run_id: str) -> int | None:
        i = pc.index(self.ids, pa.scalar(run_id, pa.string())).as_py()
        return None if i < 0 else i


# Rows whose run is deleted stay in the held table (no copy of 100k rows) and are masked out of every view.
LIFECYCLE, DELETED = "lifecycle", "deleted"
# A run still tagged running whose SLURM job has ended is shown (and filtered) as `lost`, like `kdgat jobs`.
STATUS, JOB_ID = Tag.STATUS.value, Tag.SLURM_JOB_ID.value
RUNNING_STATUS, LOST_STATUS = RunStatus.RUNNING.value, RunStatus.LOST.value
# Fold the held table's chunks together after this many refreshes (each refresh appends one chunk).
MAX_CHUNKS = 32


class RunsModel:
    def __init__(self, base: pa.Table, metrics: list[str] | None = None) -> None:
        self.filter_text = ""
        self.filter_problem: str | None = None  # the bad term of filter_text, left out of the filter
        self.quick: dict[str, str] = {}
        self.sort_key: str | None = "start_time"
        self.sort_desc = True
        self.grouped = False
        self.group_by: list[str] = []  # columns picked for grouping; empty: by configuration
        self.marks: set[str] = set()
        self.metrics = list(metrics or DEFAULT_METRICS)
        self.lost: set[str] = set()  # run ids the scheduler says have ended while tagged running
        self.replace_all(base)

    def replace_all(self, table: pa.Table) -> None:
        self.base = table.drop_columns([HAYSTACK]) if HAYSTACK in table.column_names else table
        self.available_metrics = [c for c in table.column_names if _is_metric(table, c)]
        self.metrics = [m for m in self.metrics if m in self.available_metrics]
        self._shown: dict[str, pa.ChunkedArray] = {}  # formatted display column, aligned with base rows
        self._width: dict[str, int] = {}
        self._live: pa.ChunkedArray | None = None
        if self.marks:
            self.marks &= set(self.base[RUN_ID].to_pylist())
        self._show_lost()

    # ---- data ----------------------------------------------------------------------------------------------------
    def upsert(self, changed: pa.Table) -> int:
        """Replace the rows of runs in `changed` and add new ones; returns how many runs are new.

        Only the changed rows are formatted; the held rows are copied only when a known run changed."""
        if changed.num_rows == 0:
            return 0
        changed = _conform(changed, self.base.schema)
        if HAYSTACK in self.base.column_names:
            changed = _with_haystack(changed)
        known = pc.is_in(self.base[RUN_ID], value_set=changed[RUN_ID])
        replaced = pc.sum(known).as_py() or 0
        if replaced:
            keep = pc.invert(known)
            self.base = self.base.filter(keep)
            self._shown = {c: arr.filter(keep) for c, arr in self._shown.items()}
        self.base = pa.concat_tables([self.base, changed])
        for column in list(self._shown):
            part = _display(changed, column)
            width = _max_len(part)
            if width > self._width[column]:
                self._shown.pop(column)  # a wider value: the whole column is aligned again on next view
                continue
            if self._right_aligned(column):
                part = pc.utf8_lpad(part, self._width[column], " ")
            chunks = part.chunks if isinstance(part, pa.ChunkedArray) else [part]
            self._shown[column] = pa.chunked_array([*self._shown[column].chunks, *chunks], pa.string())
        if self.base[RUN_ID].num_chunks > MAX_CHUNKS:
            self.base = self.base.combine_chunks()
            self._shown = {c: arr.combine_chunks() for c, arr in self._shown.items()}
        self._live = None
        self._show_lost()
        return changed.num_rows - replaced

    def running_jobs(self) -> dict[str, str]:
        """run id -> SLURM job id of the runs tagged running (or shown lost): the ones the scheduler is asked about."""
        cols = self.base.column_names
        if STATUS not in cols or JOB_ID not in cols:
            return {}
        status = pc.cast(self.base[STATUS], pa.string())
        open_ = pc.is_in(status, value_set=pa.array([RUNNING_STATUS, LOST_STATUS]))
        keep = pc.and_(pc.fill_null(open_, False), pc.is_valid(self.base[JOB_ID]))
        if LIFECYCLE in cols:
            keep = pc.and_(keep, pc.fill_null(pc.not_equal(self.base[LIFECYCLE], DELETED), True))
        if not pc.any(keep).as_py():
            return {}
        ids = self.base[RUN_ID].filter(keep).to_pylist()
        jobs = pc.cast(self.base[JOB_ID].filter(keep), pa.string()).to_pylist()
        return {r: j for r, j in zip(ids, jobs) if j}

    def set_lost(self, run_ids: set[str]) -> bool:
        """Show these runs as `lost` (the others back as running); True when a row changed."""
        if run_ids == self.lost:
            return False
        self.lost = set(run_ids)
        return self._show_lost()

    def _show_lost(self) -> bool:
        """Rewrite the held status column: running -> lost for lost runs, lost -> running for the rest.

        A run's status tag is never `lost` itself, so the rewrite can always be undone from the column alone."""
        if STATUS not in self.base.column_names:
            return False
        column = self.base[STATUS]
        status = pc.cast(column, pa.string())
        shown_lost = pc.fill_null(pc.equal(status, LOST_STATUS), False)
        if not self.lost and not pc.any(shown_lost).as_py():
            return False
        is_lost = pc.is_in(self.base[RUN_ID], value_set=pa.array(sorted(self.lost), pa.string()))
        open_ = pc.fill_null(pc.or_(pc.equal(status, RUNNING_STATUS), shown_lost), False)
        new = pc.if_else(pc.and_(is_lost, open_), LOST_STATUS, pc.if_else(shown_lost, RUNNING_STATUS, status))
        if pc.all(pc.fill_null(pc.equal(new, status), True)).as_py():
            return False
        i = self.base.column_names.index(STATUS)
        self.base = self.base.set_column(i, STATUS, pc.cast(new, column.type))
        if HAYSTACK in self.base.column_names:
            self.base = self.base.drop_columns([HAYSTACK])  # rebuilt on the next free-text filter
        self._shown.pop(STATUS, None)
        return True

    def remove(self, run_ids: list[str]) -> None:
        if run_ids:
            keep = pc.invert(pc.is_in(self.base[RUN_ID], value_set=pa.array(run_ids, pa.string())))
            self.base = self.base.filter(keep)
            self._shown = {c: arr.filter(keep) for c, arr in self._shown.items()}
            self._live = None

    def value_of(self, run_id: str, column: str):
        if column not in self.base.column_names:
            return None
        i = pc.index(self.base[RUN_ID], pa.scalar(run_id, pa.string())).as_py()
        return None if i < 0 else self.base[column][i].as_py()

    @property
    def columns(self) -> list[str]:
        return [c for c in self.base.column_names if c != HAYSTACK]

    @property
    def total(self) -> int:
        return len(self._live_indices()) if LIFECYCLE in self.base.column_names else self.base.num_rows

    def quick_values(self, column: str) -> list[str]:
        if column not in self.base.column_names:
            return []
        return sorted(v for v in pc.unique(pc.cast(self.base[column], pa.string())).to_pylist() if v)

    # ---- view ----------------------------------------------------------------------------------------------------
    def visible_columns(self) -> list[str]:
        have = set(self.base.column_names)
        return [c for c in (*LEAD_COLUMNS, *self.metrics, *JOB_FACT_COLUMNS, *TRAIL_COLUMNS) if c in have]

    def set_job_facts(self, facts: dict[str, dict]) -> bool:
        """Show the scheduler's facts (run id -> {cause, mem_eff, ...}) as columns, filterable (`mem_eff<0.3`).
        True when a shown value changed; the columns appear once one run has a fact."""
        if not facts and not any(c in self.base.column_names for c in JOB_FACT_COLUMNS):
            return False
        ids = self.base[RUN_ID].to_pylist()
        changed = False
        for column in JOB_FACT_COLUMNS:
            kind = pa.string() if column == "cause" else pa.float64()
            values = pa.array([facts.get(r, {}).get(column) for r in ids], kind)
            if column in self.base.column_names:
                i = self.base.column_names.index(column)
                if self.base[column].combine_chunks().equals(values):
                    continue
                self.base = self.base.set_column(i, column, values)
            else:
                self.base = self.base.append_column(column, values)
            self._shown.pop(column, None)
            changed = True
        if changed and HAYSTACK in self.base.column_names:
            self.base = self.base.drop_columns([HAYSTACK])  # rebuilt on the next free-text filter
        return changed

    def _live_indices(self) -> pa.Array:
        if self._live is None:
            if LIFECYCLE in self.base.column_names:
                alive = pc.fill_null(pc.not_equal(self.base[LIFECYCLE], DELETED), True)
                self._live = pc.indices_nonzero(alive)
            else:
                self._live = pa.array(range(self.base.num_rows), pa.uint64())
        return self._live

    def selected_indices(self) -> pa.Array:
        """Row numbers of the held table that the filter and quick filters keep, in the chosen order."""
        if self.filter_text and HAYSTACK not in self.base.column_names:
            # built on the first filter, not at start: the first paint does not wait for it
            self.base = _with_haystack(self.base)
        table = self.base
        keep, self.filter_problem = run_filter.lenient_mask(table, self.filter_text)
        for column, value in self.quick.items():
            if column in table.column_names:
                m = pc.equal(pc.cast(table[column], pa.string()), value)
                keep = m if keep is None else pc.and_(keep, m)
        if LIFECYCLE in table.column_names:
            alive = pc.fill_null(pc.not_equal(table[LIFECYCLE], DELETED), True)
            keep = alive if keep is None else pc.and_(keep, alive)
        idx = pc.indices_nonzero(pc.fill_null(keep, False)) if keep is not None else self._live_indices()
        if self.sort_key and self.sort_key in table.column_names:
            order = "descending" if self.sort_desc else "ascending"
            keys = pc.take(table[self.sort_key], idx)
            idx = pc.take(idx, pc.sort_indices(keys, sort_keys=[("", order, "at_end")]))
        return idx

    def selected_rows(self) -> pa.Table:
        return self.base.take(self.selected_indices())

    def _right_aligned(self, column: str) -> bool:
        return column in RIGHT_ALIGNED or column in self.available_metrics

    def _aligned(self, rows: pa.Table, column: str, width: int):
        """`rows[column]` as displayed in a column `width` cells wide: text, right-aligned where numbers are."""
        part = _display(rows, column)
        if self._right_aligned(column):
            part = pc.utf8_lpad(part, width, " ")
        if not pa.types.is_string(part.type):
            part = pc.cast(part, pa.string())
        return part

    def shown_column(self, column: str) -> pa.ChunkedArray:
        """The column as displayed, aligned: formatted once per held row, not once per sort or filter."""
        if column not in self._shown:
            width = self._width[column] = _max_len(_display(self.base, column))
            part = self._aligned(self.base, column, width)
            self._shown[column] = part if isinstance(part, pa.ChunkedArray) else pa.chunked_array([part])
        return self._shown[column]

    def view(self, first: int | None = None) -> View:
        """The rows to show, formatted. With `first`, a view for the first paint of a new table: only its first
        `first` rows are formatted now and the rest are blank (`complete` False) until the next `view()`; the row
        count, run ids, column widths and the first rows are those of the whole view, so the screen looks the same
        (formatting 100k rows of every column takes ~0.3 s, a screenful ~1 ms)."""
        if self.grouped:
            return self._grouped_view(self.selected_rows())
        idx = self.selected_indices()
        cols = self.visible_columns()
        ids = pc.take(self.base[RUN_ID], idx)
        marks = pa.array(sorted(self.marks), pa.string())
        arrays = [pc.if_else(pc.is_in(ids, value_set=marks), MARK, "")]
        widths = [1]
        partial = first is not None and first < len(idx) and any(c not in self._shown for c in cols)
        head = self.base.select(cols).take(idx[:first]) if partial else None
        for c in cols:
            if head is None:
                arrays.append(pc.take(self.shown_column(c), idx))
                width = self._width[c]
            else:  # the first rows formatted (or taken when already formatted), the rest blank
                if c in self._shown:
                    width = self._width[c]
                    shown = pc.take(self._shown[c], idx[:first])
                else:
                    width = _display_width(self.base, c)
                    shown = self._aligned(head, c, width)
                chunks = shown.chunks if isinstance(shown, pa.ChunkedArray) else [shown]
                arrays.append(pa.chunked_array([*chunks, pa.nulls(len(idx) - first, pa.string())], pa.string()))
            widths.append(max(width, len(HEADERS.get(c, c))))
        names = [" "] + [HEADERS.get(c, c) for c in cols]
        table = pa.Table.from_arrays(arrays, names=names)
        ids = ids.combine_chunks() if isinstance(ids, pa.ChunkedArray) else ids
        return View(table, ids, names, widths, self.total, complete=not partial)

    def group_keys(self, rows: pa.Table) -> list[str]:
        """The columns groups are formed by: those picked (`group_by`), else a configuration (differs only in seed)."""
        from kdgat_core.query.groups import config_keys  # DuckDB loads on the first read, not at startup

        if self.group_by:
            return [c for c in self.group_by if c in rows.column_names]
        return config_keys(rows.column_names)

    def group_table(self) -> pa.Table:
        """The statistics behind the grouped view (kdgat_core.query.groups: the CLI and notebooks compute the same)."""
        from kdgat_core.query.groups import group_stats

        rows = self.selected_rows()
        metrics = list(self.metrics)
        desc = metric_direction(self.sort_key) == "desc" if self.sort_key in metrics else True
        return group_stats(
            rows, self.group_keys(rows), metrics, self.sort_key if self.sort_key in metrics else None, desc
        )

    def _grouped_view(self, rows: pa.Table) -> View:
        keys_all = self.group_keys(rows)
        if rows.num_rows == 0:
            empty = pa.table({"config": pa.array([], pa.string()), "n": pa.array([], pa.int64())})
            return View(empty, pa.array([], pa.string()), ["config", "n"], [6, 1], self.total, grouped=True)
        metrics = list(self.metrics)
        grouped = self.group_table()
        keys = [c for c in GROUP_BY if c in keys_all]
        params = [c for c in keys_all if c not in keys]
        if self.group_by:
            names_col = pa.array(
                [
                    " ".join(f"{k.removeprefix(PARAM_PREFIX)}={'' if v is None else v}" for k, v in r.items())
                    for r in grouped.select(keys_all).to_pylist()
                ],
                pa.string(),
            )
            names = ["group", "n"]
        else:
            names_col = _group_names(grouped, keys, params)
            names = ["config (differs only in seed)", "n"]
        arrays = [names_col, grouped["runs"]]
        for m in metrics:
            mean, std = grouped[f"{m}_mean"], pc.fill_null(grouped[f"{m}_std"], 0.0)
            text = pc.binary_join_element_wise(fixed4(mean, pad=False), fixed4(std, pad=False), "±")
            arrays.append(pc.fill_null(text, ""))
            names.append(f"{HEADERS.get(m, m)} mean±std")
        table = pa.Table.from_arrays(arrays, names=names)
        groups = grouped["run_ids"].to_pylist()
        return View(
            table,
            pa.array([g[0] for g in groups], pa.string()),
            names,
            column_widths(table),
            self.total,
            grouped=True,
            groups=groups,
        )

    # ---- state changes ---------------------------------------------------------------------------------------------
    def sort_by(self, column: str) -> None:
        """Sort by a column; choosing the same column again flips the direction. Metrics start best-first."""
        if column == self.sort_key:
            self.sort_desc = not self.sort_desc
        else:
            self.sort_key = column
            self.sort_desc = (
                metric_direction(column) == "desc" if column in self.available_metrics else column == "start_time"
            )

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
    parts = [
        pc.fill_null(pc.cast(table[c], pa.string()), "")
        for c in (
            "run_name",
            RUN_ID,
            *GROUP_BY,
            Tag.STATUS.value,
            Tag.TEACHER_RUN_ID.value,
            Tag.SLURM_JOB_ID.value,
            Tag.MODEL_ARCH.value,
        )
        if c in table.column_names
    ]
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
        return _fmt_duration(col, pad=False)
    if pa.types.is_floating(typ):
        return fixed4(col, pad=False)
    if pa.types.is_timestamp(typ):
        # cast + slice: ten times faster than pc.strftime over 100k timestamps
        return pc.utf8_slice_codeunits(pc.cast(col, pa.string()), 0, 16)
    return col


def fixed4(values, pad: bool = True) -> pa.ChunkedArray:
    """Floats as text with four decimals (`0.9520`), so a column of metrics lines up; NaN and huge values as-is.

    Integer arithmetic and string slicing, vectorised: about 30 ms for 100k values (pc.strftime-like printf is not
    in Arrow)."""
    x = pc.cast(values, pa.float64())
    finite = pc.and_(pc.is_finite(x), pc.less(pc.abs(x), 1e9))
    scaled = pc.cast(pc.round(pc.multiply(pc.abs(pc.if_else(finite, x, 0.0)), 10_000)), pa.int64())
    digits = pc.utf8_lpad(pc.cast(scaled, pa.string()), 5, "0")
    text = pc.binary_join_element_wise(
        pc.utf8_slice_codeunits(digits, 0, -4), pc.utf8_slice_codeunits(digits, -4, 1 << 30), "."
    )
    text = pc.if_else(pc.less(x, 0), pc.binary_join_element_wise("-", text, ""), text)
    text = pc.if_else(finite, text, pc.cast(x, pa.string()))
    if not pad:
        return text
    width = pc.max(pc.utf8_length(text)).as_py() or 0
    return pc.utf8_lpad(text, width, " ")


def _fmt_duration(seconds, pad: bool = True) -> pa.ChunkedArray:
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
    if not pad:
        return out
    return pc.utf8_lpad(out, pc.max(pc.utf8_length(out)).as_py() or 0, " ")


def _group_names(grouped: pa.Table, keys: list[str], params: list[str]) -> pa.Array:
    """A readable name per group: the run name's parts, plus the params that tell same-named groups apart."""

    def col(name):
        return grouped[name].to_pylist() if name in keys else [""] * grouped.num_rows

    ds, stage, size, kd = (
        col(Tag.DATASET.value),
        col(Tag.STAGE.value),
        col(Tag.MODEL_SIZE.value),
        col(Tag.USE_KD.value),
    )
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


RIGHT_ALIGNED = {"duration_s", "mem_eff", "cpu_eff", "time_eff"}


def _display_width(rows: pa.Table, column: str) -> int:
    """`_max_len(_display(rows, column))` without formatting every row: numbers are formatted only for the values
    that can be the longest (the text grows with the value within each form), so the first paint of 100k runs knows
    its column widths in ~1 ms a column."""
    col = rows[column]
    if column == "duration_s":
        x = pc.floor(pc.cast(pc.fill_null(col, -1), pa.float64()))
        candidates = [x.filter(pc.invert(pc.is_finite(x)))]  # NaN: formatted as the whole column would be
        for lo, hi in ((None, 60), (60, 3600), (3600, None)):  # `42s`, `12m05s`, `3h12m`
            inside = pc.is_finite(x)
            if lo is not None:
                inside = pc.and_(inside, pc.greater_equal(x, lo))
            if hi is not None:
                inside = pc.and_(inside, pc.less(x, hi))
            candidates.append(pa.array([pc.max(x.filter(inside)).as_py()], pa.float64()))
        return _max_len(_display(pa.table({column: pa.chunked_array(candidates, pa.float64())}), column))
    if pa.types.is_floating(col.type):
        x = pc.cast(col, pa.float64())
        plain = pc.fill_null(pc.and_(pc.is_finite(x), pc.less(pc.abs(x), 1e9)), False)
        # `0.9520`: longer the further from zero on either side; NaN, inf and huge values as Arrow prints them
        special = pc.and_(pc.invert(plain), pc.is_valid(x))
        low_high = pc.min_max(x.filter(plain))
        candidates = [x.filter(special), pa.array([low_high["min"].as_py(), low_high["max"].as_py()], pa.float64())]
        return _max_len(_display(pa.table({column: pa.chunked_array(candidates, pa.float64())}), column))
    return _max_len(_display(rows, column))  # text is its own width; timestamps are cheap to format


def _max_len(arr) -> int:
    if len(arr) == 0:
        return 0
    text = arr if pa.types.is_string(arr.type) else pc.cast(arr, pa.string())
    return int(pc.max(pc.utf8_length(pc.fill_null(text, ""))).as_py() or 0)


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
