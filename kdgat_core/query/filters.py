"""SQL text helpers and the run filter shared by `TrackingDB` and the leaderboard paths."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kdgat_core.config import BOOL_TAGS, FALSE_SPELLINGS, TRUE_SPELLINGS, Tag, bool_tag, parse_bool_tag


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _lit(value: Any) -> str:
    return "NULL" if value is None else "'" + str(value).replace("'", "''") + "'"


@dataclass(frozen=True)
class RunFilter:
    """The filters shared by `runs`, `leaderboard`, `sweep` and the CLI: each one is a convention tag's value."""

    dataset: str | None = None
    stage: str | None = None
    model_size: str | None = None
    kd: bool | None = None
    status: str | None = None

    def tag_pairs(self) -> list[tuple[str, str]]:
        pairs = [
            (Tag.DATASET.value, self.dataset),
            (Tag.STAGE.value, self.stage),
            (Tag.MODEL_SIZE.value, self.model_size),
            (Tag.USE_KD.value, None if self.kd is None else bool_tag(self.kd)),
            (Tag.STATUS.value, self.status),
        ]
        return [(k, str(v)) for k, v in pairs if v is not None]

    def where(self, include_deleted: bool = False) -> str:
        """A DuckDB WHERE clause over the wide table."""
        conds = [] if include_deleted else ["lifecycle <> 'deleted'"]
        conds += [tag_equals(_quote(k), k, v) for k, v in self.tag_pairs()]
        return " AND ".join(conds) or "TRUE"


def tag_equals(expr: str, key: str, value: str) -> str:
    """SQL (DuckDB and SQLite alike) for a tag's value equal to `value`; boolean tags in any spelling (True/true/1)."""
    if key in BOOL_TAGS and parse_bool_tag(value) is not None:
        spellings = TRUE_SPELLINGS if parse_bool_tag(value) else FALSE_SPELLINGS
        return f"lower({expr}) IN ({', '.join(_lit(v) for v in spellings)})"
    return f"{expr} = {_lit(value)}"


def bool_tag_sql(expr: str) -> str:
    """A boolean tag's value as bool_tag spells it, in SQL (what the wide table holds, for rows read around it)."""
    t = ", ".join(_lit(v) for v in TRUE_SPELLINGS)
    f = ", ".join(_lit(v) for v in FALSE_SPELLINGS)
    return (
        f"CASE WHEN lower({expr}) IN ({t}) THEN {_lit(bool_tag(True))} "
        f"WHEN lower({expr}) IN ({f}) THEN {_lit(bool_tag(False))} ELSE {expr} END"
    )
