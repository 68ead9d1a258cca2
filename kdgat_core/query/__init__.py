"""kdgat_core.query: read-only analytics over an MLflow SQLite tracking store (DuckDB + its sqlite scanner).

    from kdgat_core.query import open_db
    db = open_db("sqlite:///mlflow.db")
    db.leaderboard("f1", top=10, dataset="hcrl_sa")

Never imports torch, torch_geometric or mlflow. See docs/query.md for the views and their columns.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kdgat_core.query.db import VIEWS, RunFilter, TrackingDB, open_db

__all__ = ["VIEWS", "RunFilter", "TrackingDB", "open_db"]


def __getattr__(name: str) -> Any:
    """The names above load `kdgat_core.query.db` (every view, ~0.05 s) on first use, not with any submodule: the
    TUI's first paint needs only the filter language and the read cache."""
    if name in __all__:
        from kdgat_core.query import db

        value = globals()[name] = getattr(db, name)
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
