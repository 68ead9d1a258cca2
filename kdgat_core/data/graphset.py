"""GraphSet: many window graphs in flat tensors (CSR offsets per graph), batched by vectorised slicing.

A batch is a `torch_geometric.data.Batch` built directly from slices of the flat tensors: no per-graph Data objects,
no Python-level collate in the training loop.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
import torch

from kdgat_core.data.windows import EDGE_FEATURES, NODE_FEATURES, WindowGraphs

_TENSOR_FIELDS = ("x", "node_id", "node_ptr", "edge_index", "edge_attr", "edge_ptr", "y", "attack_frac", "start",
                  "recording_index")


@dataclass
class GraphSet:
    x: torch.Tensor               # float [N, F]
    node_id: torch.Tensor         # long [N] vocabulary index
    node_ptr: torch.Tensor        # long [G + 1]
    edge_index: torch.Tensor      # long [2, E], node indices global to this set
    edge_attr: torch.Tensor       # float [E, Fe]
    edge_ptr: torch.Tensor        # long [G + 1]
    y: torch.Tensor               # long [G]
    attack_frac: torch.Tensor     # float [G]
    start: torch.Tensor           # long [G] first message of the window in its time-sorted recording
    recording_index: torch.Tensor  # long [G] index into recordings
    recordings: list[str] = field(default_factory=list)   # "<split>/<recording>"

    # --- construction / persistence ---------------------------------------------------------------------------------
    @classmethod
    def from_windows(cls, g: WindowGraphs, recordings: list[str]) -> "GraphSet":
        return cls(
            x=torch.from_numpy(np.ascontiguousarray(g.x, np.float32)),
            node_id=torch.from_numpy(g.node_id.astype(np.int64, copy=False)),
            node_ptr=torch.from_numpy(g.node_ptr.astype(np.int64, copy=False)),
            edge_index=torch.from_numpy(np.ascontiguousarray(g.edge_index, np.int64)),
            edge_attr=torch.from_numpy(np.ascontiguousarray(g.edge_attr, np.float32)),
            edge_ptr=torch.from_numpy(g.edge_ptr.astype(np.int64, copy=False)),
            y=torch.from_numpy(g.y.astype(np.int64, copy=False)),
            attack_frac=torch.from_numpy(g.attack_frac.astype(np.float32, copy=False)),
            start=torch.from_numpy(g.start.astype(np.int64, copy=False)),
            recording_index=torch.from_numpy(g.recording.astype(np.int64, copy=False)),
            recordings=list(recordings),
        )

    def state(self) -> dict:
        return {**{k: getattr(self, k) for k in _TENSOR_FIELDS}, "recordings": list(self.recordings)}

    @classmethod
    def from_state(cls, state: dict) -> "GraphSet":
        return cls(**{k: state[k] for k in _TENSOR_FIELDS}, recordings=list(state["recordings"]))

    # --- what the training loop reads -------------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.y.shape[0])

    @property
    def num_nodes(self) -> int:
        return int(self.x.shape[0])

    @property
    def num_edges(self) -> int:
        return int(self.edge_attr.shape[0])

    @property
    def node_feature_dim(self) -> int:
        return len(NODE_FEATURES)

    @property
    def edge_feature_dim(self) -> int:
        return len(EDGE_FEATURES)

    @property
    def recording(self) -> list[str]:
        """The recording ("<split>/<name>") of every graph."""
        names = self.recordings
        return [names[i] for i in self.recording_index.tolist()]

    def subset(self, indices) -> "GraphSet":
        """A new GraphSet with only the given graphs (in the given order)."""
        idx = torch.as_tensor(indices, dtype=torch.long)
        nodes, ncount, _ = _ranges(self.node_ptr, idx)
        edges, ecount, eseg = _ranges(self.edge_ptr, idx)
        new_ptr = torch.zeros(idx.numel() + 1, dtype=torch.long)
        torch.cumsum(ncount, 0, out=new_ptr[1:])
        shift = (new_ptr[:-1] - self.node_ptr[idx])[eseg]
        eptr = torch.zeros(idx.numel() + 1, dtype=torch.long)
        torch.cumsum(ecount, 0, out=eptr[1:])
        return GraphSet(
            x=self.x[nodes], node_id=self.node_id[nodes], node_ptr=new_ptr,
            edge_index=self.edge_index[:, edges] + shift, edge_attr=self.edge_attr[edges], edge_ptr=eptr,
            y=self.y[idx], attack_frac=self.attack_frac[idx], start=self.start[idx],
            recording_index=self.recording_index[idx], recordings=list(self.recordings),
        )

    def batch(self, indices) -> "torch_geometric.data.Batch":  # noqa: F821
        """One Batch of the given graphs: x, node_id, edge_index, edge_attr, batch, ptr, y, attack_frac, num_graphs."""
        from torch_geometric.data import Batch

        idx = torch.as_tensor(indices, dtype=torch.long)
        B = idx.numel()
        if B and int(idx[-1] - idx[0]) == B - 1 and bool((idx[1:] - idx[:-1] == 1).all()):
            a, b = int(idx[0]), int(idx[-1]) + 1   # consecutive graphs: plain slices
            n0, n1 = int(self.node_ptr[a]), int(self.node_ptr[b])
            e0, e1 = int(self.edge_ptr[a]), int(self.edge_ptr[b])
            ptr = self.node_ptr[a:b + 1] - n0
            x, node_id = self.x[n0:n1], self.node_id[n0:n1]
            edge_index = self.edge_index[:, e0:e1] - n0
            edge_attr = self.edge_attr[e0:e1]
            batch_vec = _segment_ids(ptr[1:] - ptr[:-1], n1 - n0)
        else:
            nodes, ncount, batch_vec = _ranges(self.node_ptr, idx)
            edges, _, eseg = _ranges(self.edge_ptr, idx)
            ptr = torch.zeros(B + 1, dtype=torch.long)
            torch.cumsum(ncount, 0, out=ptr[1:])
            x, node_id = self.x[nodes], self.node_id[nodes]
            edge_index = self.edge_index[:, edges] + (ptr[:-1] - self.node_ptr[idx])[eseg]
            edge_attr = self.edge_attr[edges]
        out = Batch(x=x, node_id=node_id, edge_index=edge_index, edge_attr=edge_attr, batch=batch_vec, ptr=ptr,
                    y=self.y[idx], attack_frac=self.attack_frac[idx])
        out._num_graphs = B
        return out

    def batches(self, batch_size: int = 64, shuffle: bool = False, generator: torch.Generator | None = None,
                indices=None) -> Iterator["torch_geometric.data.Batch"]:  # noqa: F821
        """Batches over all graphs (or `indices`), in order or shuffled with `generator`; the last may be smaller."""
        order = torch.arange(len(self)) if indices is None else torch.as_tensor(indices, dtype=torch.long)
        if shuffle:
            order = order[torch.randperm(order.numel(), generator=generator)]
        for chunk in order.split(max(1, int(batch_size))):
            yield self.batch(chunk)


def _segment_ids(count: torch.Tensor, total: int) -> torch.Tensor:
    """[0]*count[0] + [1]*count[1] + ... (repeat_interleave's result; a cumsum is several times faster on CPU)."""
    marks = torch.zeros(total + 1, dtype=torch.long)
    ends = torch.cumsum(count, 0)
    marks.index_add_(0, ends, torch.ones_like(ends))
    return torch.cumsum(marks[:-1], 0)


def _ranges(ptr: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Concatenated element indices ptr[i]..ptr[i+1] for every i in idx, the length of each range, and the position
    in idx that each element came from."""
    begin = ptr[idx]
    count = ptr[idx + 1] - begin
    total = int(count.sum())
    seg = _segment_ids(count, total)
    offsets = torch.cumsum(count, 0) - count
    return begin[seg] + torch.arange(total) - offsets[seg], count, seg


@dataclass
class DatasetGraphs:
    """Everything a stage trains and evaluates on, for one dataset and window setting."""

    dataset: str
    train: GraphSet
    val: GraphSet
    test: dict[str, GraphSet]
    vocab: np.ndarray             # sorted raw CAN ids of the training split; vocabulary index = position + 1
    window: int
    stride: int
    build_seconds: dict[str, float] = field(default_factory=dict)   # per part; 0 when read from the cache
    duplicates: dict[str, str] = field(default_factory=dict)        # recording skipped -> the identical one kept

    @property
    def num_ids(self) -> int:
        """Vocabulary size including the out-of-vocabulary index 0 (an embedding table's num_embeddings)."""
        return int(self.vocab.size) + 1

    @property
    def node_feature_dim(self) -> int:
        return len(NODE_FEATURES)

    @property
    def edge_feature_dim(self) -> int:
        return len(EDGE_FEATURES)

    @property
    def node_features(self) -> tuple[str, ...]:
        return NODE_FEATURES

    @property
    def edge_features(self) -> tuple[str, ...]:
        return EDGE_FEATURES
