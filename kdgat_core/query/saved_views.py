"""Saved views: a named filter, columns, sort and grouping in kdgat.toml, for `kdgat runs --view NAME` and the TUI's
view switcher (`v`).

    [views.kd-students]
    where = "model_size=student stage=evaluation"      # the filter language of --where and /
    columns = ["f1", "max(val_f1)", "val_loss"]        # metric expressions (the TUI shows the final metrics only)
    sort = "f1"                                        # a column or expression; best first unless descending = false
    group_by = ["use_kd"]                              # optional: groups with statistics of the first column
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kdgat_core.config import KdgatError, load_settings
from kdgat_core.query.connection import pa

if TYPE_CHECKING:
    from kdgat_core.query.db import TrackingDB

SECTION = "views"


@dataclass(frozen=True)
class SavedView:
    name: str
    where: str = ""
    columns: tuple[str, ...] = ()
    sort: str | None = None
    descending: bool | None = None  # None: best first (by the metric's direction), newest first for times
    group_by: tuple[str, ...] = ()


def load_views() -> dict[str, SavedView]:
    """The views of the kdgat.toml in force (none without one); a malformed view is one sentence."""
    settings = load_settings()
    out = {}
    for name, raw in settings.section(SECTION).items():
        if not isinstance(raw, dict):
            raise KdgatError(f"{settings.path}: [views.{name}] must be a table.")
        unknown = set(raw) - {"where", "columns", "sort", "descending", "group_by"}
        if unknown:
            raise KdgatError(
                f"{settings.path}: [views.{name}] has unknown keys {', '.join(sorted(unknown))}; "
                "use where, columns, sort, descending, group_by."
            )
        try:
            out[name] = SavedView(
                name,
                str(raw.get("where") or ""),
                tuple(str(c) for c in raw.get("columns") or ()),
                str(raw["sort"]) if raw.get("sort") else None,
                bool(raw["descending"]) if "descending" in raw else None,
                tuple(str(c) for c in raw.get("group_by") or ()),
            )
        except TypeError:
            raise KdgatError(f"{settings.path}: [views.{name}]: columns and group_by are lists of names.") from None
    return out


def get_view(name: str) -> SavedView:
    views = load_views()
    if name not in views:
        known = ", ".join(sorted(views)) or "none (add [views.<name>] to kdgat.toml)"
        raise KdgatError(f"No saved view '{name}'; saved views: {known}.")
    return views[name]


def apply_view(db: TrackingDB, view: SavedView | None, where: str | None = None, **filters: Any) -> pa.Table:
    """The runs (or groups) a view shows as an Arrow table: its filter ANDed with `where`, its columns, its sort."""
    from kdgat_core.query import frame
    from kdgat_core.query.db import RunFilter
    from kdgat_core.query.expressions import parse_metric
    from kdgat_core.query.groups import group_stats

    view = view or SavedView("")
    text = " ".join(f"({w})" for w in (view.where, where) if w)
    exprs = [parse_metric(c) for c in view.columns]
    table = frame.build(db, exprs, RunFilter(**filters), text or None)
    if view.group_by:
        metric = exprs[0] if exprs else parse_metric("f1")
        if not exprs:
            table = frame.build(db, [metric], RunFilter(**filters), text or None)
        keys = [frame.resolve_column(k, table.column_names) for k in view.group_by]
        out = group_stats(table, keys, [metric.text], metric.text, metric.direction == "desc")
        return out.drop_columns(["run_ids"])
    shown = ["run_id", "run_name", "status", "start_time", *[e.text for e in exprs]]
    if view.sort:
        try:
            key = parse_metric(view.sort)
            col, best_desc = key.text, key.direction == "desc"
            if col not in table.column_names:
                col = frame.resolve_column(view.sort, table.column_names)
        except KdgatError:
            col, best_desc = frame.resolve_column(view.sort, table.column_names), True
        desc = best_desc if view.descending is None else view.descending
        if col not in shown:
            shown.append(col)
        order = f'"{col}" {"DESC" if desc else "ASC"} NULLS LAST, start_time DESC, run_id'
    else:
        order = "start_time DESC, run_id"
    cols = ", ".join('"' + c.replace('"', '""') + '"' for c in dict.fromkeys(shown) if c in table.column_names)
    return db._calc(f"SELECT {cols} FROM w ORDER BY {order}", w=table)
