"""kdgat_core.data: raw CAN captures -> canonical parquet -> window graphs; synthetic traffic for tests and the demo.

`load_graphs`, `DatasetGraphs` and `GraphSet` import torch, so they load on first use: `kdgat datasets` and ingest
(canonical, catalog, ingest, synthetic) stay torch-free.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kdgat_core.data.graph_cache import load_graphs
    from kdgat_core.data.graphset import DatasetGraphs, GraphSet

__all__ = ["DatasetGraphs", "GraphSet", "load_graphs"]


def __getattr__(name: str) -> Any:
    if name == "load_graphs":
        from kdgat_core.data.graph_cache import load_graphs

        return load_graphs
    if name in ("DatasetGraphs", "GraphSet"):
        from kdgat_core.data import graphset

        return getattr(graphset, name)
    raise AttributeError(f"module 'kdgat_core.data' has no attribute {name!r}")
