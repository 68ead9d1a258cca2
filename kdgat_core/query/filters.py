"""SQL text helpers and the run filter shared by `TrackingDB` and the leaderboard paths."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kdgat_core.config import Tag, bool_tag


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
        conds += [f"{_quote(k)} = {_lit(v)}" for k, v in self.tag_pairs()]
        return " AND ".join(conds) or "TRUE"
