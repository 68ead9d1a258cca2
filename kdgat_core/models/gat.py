"""The window classifier: PyG `GAT(..., jk='cat')` over [id embedding | node features], graph pooling, an MLP head.

Input: a PyG `Batch` (`x` [N, F], `node_id` [N], `edge_index` [2, E], `edge_attr` [E, D], `batch` [N]).
Output: logits [G, num_classes] (class 1 = attack window).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch_geometric.data import Batch
from torch_geometric.nn import global_add_pool, global_max_pool, global_mean_pool
from torch_geometric.nn.models import GAT, MLP

POOLINGS = ("mean", "max", "add", "mean_max")


def mask_window_ids(batch: Batch, prob: float, training: bool) -> Tensor:
    """Training-time augmentation: with probability `prob` a whole window's ids become the out-of-vocabulary index 0,
    so the model also learns to judge a window from timing and payload alone (as it must for an unknown vehicle)."""
    if not training or prob <= 0:
        return batch.node_id
    masked = torch.rand(batch.num_graphs, device=batch.node_id.device) < prob
    return torch.where(masked[batch.batch], torch.zeros_like(batch.node_id), batch.node_id)


class CANGraphGAT(nn.Module):
    """GAT with jumping knowledge; `hidden` is the width per head, so a layer is hidden * heads wide.
    `id_mask`: probability that a training window is seen with all its CAN ids hidden (see mask_window_ids)."""

    def __init__(
        self,
        num_ids: int,
        node_feature_dim: int,
        edge_feature_dim: int,
        hidden: int,
        layers: int,
        heads: int,
        embedding_dim: int = 16,
        dropout: float = 0.0,
        jk: str = "cat",
        pooling: str = "mean_max",
        num_classes: int = 2,
        id_mask: float = 0.0,
    ):
        super().__init__()
        self.id_mask = id_mask
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        self.embedding = nn.Embedding(num_ids, embedding_dim)
        width = hidden * heads
        self.uses_edge_attr = edge_feature_dim > 0
        self.gnn = GAT(
            embedding_dim + node_feature_dim,
            width,
            layers,
            dropout=dropout,
            act="elu",
            jk=jk,
            heads=heads,
            edge_dim=edge_feature_dim or None,
        )
        self.pooling = pooling
        pooled = width * (2 if pooling == "mean_max" else 1)
        self.head = MLP([pooled, max(width // 2, 8), num_classes], dropout=dropout, norm=None)

    def graph_embedding(self, batch: Batch) -> Tensor:
        """Pooled window embeddings [G, pooled]."""
        h = torch.cat([self.embedding(mask_window_ids(batch, self.id_mask, self.training)), batch.x], dim=-1)
        ea = batch.edge_attr if self.uses_edge_attr else None
        h = self.gnn(h, batch.edge_index, edge_attr=ea)
        g = batch.num_graphs
        if self.pooling == "mean_max":
            return torch.cat([global_mean_pool(h, batch.batch, g), global_max_pool(h, batch.batch, g)], dim=-1)
        pool = {"mean": global_mean_pool, "max": global_max_pool, "add": global_add_pool}[self.pooling]
        return pool(h, batch.batch, g)

    def forward(self, batch: Batch) -> Tensor:
        return self.head(self.graph_embedding(batch))
