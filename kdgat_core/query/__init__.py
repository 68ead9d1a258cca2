"""kdgat_core.query: read-only analytics over an MLflow SQLite tracking store (DuckDB + its sqlite scanner).

    from kdgat_core.query import open_db
    db = open_db("sqlite:///mlflow.db")
    db.leaderboard("f1", top=10, dataset="hcrl_sa")

Never imports torch, torch_geometric or mlflow. See docs/query.md for the views and their columns.
"""

from kdgat_core.query.db import VIEWS, RunFilter, TrackingDB, open_db

__all__ = ["VIEWS", "RunFilter", "TrackingDB", "open_db"]
