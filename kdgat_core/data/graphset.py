"""GraphSet: many window graphs in flat tensors (CSR offsets per graph), batched by vectorised slicing.

A batch is a `torch_geometric.data.Batch` built directly from slices of the flat tensors: no per-graph Data objects,
no Python-level collate in the training loop.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

from kdgat_core.data.windows import EDGE_FEATURES, NODE_FEATURES, WindowGraphs

if TYPE_CHECKING:
    from torch_geometric.data import Batch

# Which graphs: positions as a tensor, an array or a list.
Indices = torch.Tensor | np.ndarray | Sequence[int]

_TENSOR_FIELDS = (
    "x",
    "node_id",
    "node_ptr",
    "edge_index",
    "edge_attr",
    "edge_ptr",
    "y",
    "attack_frac",
    "start",
    "recording_index",
)


@dataclass
class GraphSet:
    x: torch.Tensor  # float [N, F]
    node_id: torch.Tensor  # long [N] vocabulary index
    node_ptr: torch.Tensor  # long [G + 1]
    edge_index: torch.Tensor  # long [2, E], node indices global to this set
    edge_attr: torch.Tensor  # float [E, Fe]
    edge_ptr: torch.Tensor  # long [G + 1]
    y: torch.Tensor  # long [G]
    attack_frac: torch.Tensor  # float [G]
    start: torch.Tensor  # long [G] first message of the window in its time-sorted recording
    recording_index: torch.Tensor  # long [G] index into recordings
    recordings: list[str] = field(default_factory=list)  # "<split>/<recording>"
    # recording -> [lo, hi) of its messages that calibrate its baselines (windows.calibration_range); absent for
    # graph sets from older caches: then the first CALIBRATION_FRACTION of the recording's windows
    calibration: dict[str, list[int]] = field(default_factory=dict)

    # --- construction / persistence ---------------------------------------------------------------------------------
    @classmethod
    def from_windows(
        cls, g: WindowGraphs, recordings: list[str], calibration: dict[str, list[int]] | None = None
    ) -> GraphSet:
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
            calibration=dict(calibration or {}),
        )

    def state(self) -> dict:
        return {
            **{k: getattr(self, k) for k in _TENSOR_FIELDS},
            "recordings": list(self.recordings),
            "calibration": {k: list(v) for k, v in self.calibration.items()},
        }

    @classmethod
    def from_state(cls, state: dict) -> GraphSet:
        return cls(
            **{k: state[k] for k in _TENSOR_FIELDS},
            recordings=list(state["recordings"]),
            calibration={k: [int(a) for a in v] for k, v in state.get("calibration", {}).items()},
        )

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

    def subset(self, indices: Indices) -> GraphSet:
        """A new GraphSet with only the given graphs (in the given order)."""
        idx = _as_index(indices)
        node_ptr, edge_ptr = self.node_ptr.numpy(), self.edge_ptr.numpy()
        nodes, ncount, _ = _ranges(node_ptr, idx)
        edges, ecount, eseg = _ranges(edge_ptr, idx)
        new_ptr = np.zeros(idx.size + 1, np.int64)
        np.cumsum(ncount, out=new_ptr[1:])
        eptr = np.zeros(idx.size + 1, np.int64)
        np.cumsum(ecount, out=eptr[1:])
        shift = (new_ptr[:-1] - node_ptr[idx])[eseg]
        t = torch.from_numpy
        return GraphSet(
            x=t(self.x.numpy()[nodes]),
            node_id=t(self.node_id.numpy()[nodes]),
            node_ptr=t(new_ptr),
            edge_index=t(self.edge_index.numpy()[:, edges] + shift),
            edge_attr=t(self.edge_attr.numpy()[edges]),
            edge_ptr=t(eptr),
            y=self.y[t(idx)],
            attack_frac=self.attack_frac[t(idx)],
            start=self.start[t(idx)],
            recording_index=self.recording_index[t(idx)],
            recordings=list(self.recordings),
            calibration=dict(self.calibration),
        )

    def batch(self, indices: Indices) -> Batch:
        """One Batch of the given graphs: x, node_id, edge_index, edge_attr, batch, ptr, y, attack_frac, num_graphs.

        Index arithmetic runs in numpy on zero-copy views: single-threaded, so it does not fight the model's
        torch threads for a small machine's cores.
        """
        from torch_geometric.data import Batch

        idx = _as_index(indices)
        B = idx.size
        node_ptr, edge_ptr = self.node_ptr.numpy(), self.edge_ptr.numpy()
        if B and idx[-1] - idx[0] == B - 1 and (np.diff(idx) == 1).all():
            a, b = int(idx[0]), int(idx[-1]) + 1  # consecutive graphs: plain slices
            n0, n1 = int(node_ptr[a]), int(node_ptr[b])
            e0, e1 = int(edge_ptr[a]), int(edge_ptr[b])
            ptr = node_ptr[a : b + 1] - n0
            x, node_id = self.x[n0:n1], self.node_id[n0:n1]
            edge_index = self.edge_index[:, e0:e1] - n0
            edge_attr = self.edge_attr[e0:e1]
            batch_vec = np.repeat(np.arange(B), np.diff(ptr))
        else:
            nodes, ncount, batch_vec = _ranges(node_ptr, idx)
            edges, _, eseg = _ranges(edge_ptr, idx)
            ptr = np.zeros(B + 1, np.int64)
            np.cumsum(ncount, out=ptr[1:])
            x = torch.from_numpy(self.x.numpy()[nodes])
            node_id = torch.from_numpy(self.node_id.numpy()[nodes])
            edge_index = torch.from_numpy(self.edge_index.numpy()[:, edges] + (ptr[:-1] - node_ptr[idx])[eseg])
            edge_attr = torch.from_numpy(self.edge_attr.numpy()[edges])
        t_idx = torch.from_numpy(idx)
        out = Batch(
            x=x,
            node_id=node_id,
            edge_index=edge_index,
            edge_attr=edge_attr,
            batch=torch.from_numpy(batch_vec),
            ptr=torch.from_numpy(ptr),
            y=self.y[t_idx],
            attack_frac=self.attack_frac[t_idx],
        )
        out._num_graphs = B
        return out

    def batches(
        self,
        batch_size: int = 64,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
        indices: Indices | None = None,
    ) -> Iterator[Batch]:
        """Batches over all graphs (or `indices`), in order or shuffled with `generator`; the last may be smaller."""
        order = np.arange(len(self)) if indices is None else _as_index(indices)
        if shuffle:
            order = order[torch.randperm(order.size, generator=generator).numpy()]
        step = max(1, int(batch_size))
        for i in range(0, order.size, step):
            yield self.batch(order[i : i + step])


def _as_index(indices: Indices) -> np.ndarray:
    if isinstance(indices, torch.Tensor):
        return indices.detach().cpu().numpy().astype(np.int64, copy=False).ravel()
    return np.asarray(indices, dtype=np.int64).ravel()


def _ranges(ptr: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Concatenated element indices ptr[i]..ptr[i+1] for every i in idx, the length of each range, and for every
    element the position in idx it came from."""
    begin = ptr[idx]
    count = ptr[idx + 1] - begin
    seg = np.repeat(np.arange(idx.size), count)
    offsets = np.cumsum(count) - count
    return begin[seg] + np.arange(seg.size) - offsets[seg], count, seg


@dataclass
class DatasetGraphs:
    """Everything a stage trains and evaluates on, for one dataset and window setting."""

    dataset: str
    train: GraphSet
    val: GraphSet
    test: dict[str, GraphSet]
    vocab: np.ndarray  # sorted raw CAN ids of the training split; vocabulary index = position + 1
    window: int
    stride: int
    build_seconds: dict[str, float] = field(default_factory=dict)  # per part; 0 when read from the cache
    duplicates: dict[str, str] = field(default_factory=dict)  # recording skipped -> the identical one kept
    # dataset quirks, said rather than hidden (docs/data.md, "Dataset quirks")
    missing_splits: list[str] = field(default_factory=list)  # registered test splits with no recording on disk
    shared: dict[str, str] = field(default_factory=dict)  # test recording dropped -> the identical training one
    empty: list[str] = field(default_factory=list)  # recordings with no message at all
    calibration_rule: dict[str, str] = field(default_factory=dict)  # recording -> rule, when not the first part
    calibration_attack_share: dict[str, float] = field(default_factory=dict)  # labelled attack share of calibration
    # synthetic subtle attacks in the validation tails (kdgat_core.data.injection): only the attack windows
    val_injected: GraphSet | None = None
    val_injected_family: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # 1 + FAMILIES index

    def notes(self) -> list[str]:
        """One sentence per quirk of this dataset (empty when there is none)."""
        out = []
        if self.missing_splits:
            out.append(f"test scenarios with no recording on disk: {', '.join(self.missing_splits)}")
        for test, train in self.shared.items():
            out.append(f"{test} equals training recording {train}: left out of its test scenario")
        if self.empty:
            out.append(f"recordings with no message: {', '.join(self.empty)}")
        for rec, rule in self.calibration_rule.items():
            out.append(f"{rec}: labelled attacks in its calibration part, calibrated by rule '{rule}'")
        for rec, share in self.calibration_attack_share.items():
            if rec not in self.calibration_rule:
                out.append(
                    f"{rec}: {100 * share:.2f}% of its calibration part is labelled attack (test labels steer nothing)"
                )
        return out

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
