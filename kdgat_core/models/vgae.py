"""The graph variational autoencoder: PyG's `VGAE` with a GAT-conv encoder and three decoders.

Inputs (a PyG `Batch` of window graphs): `x` float [N, F] continuous node features, `node_id` long [N] CAN-id
vocabulary index, `edge_index` long [2, E], `edge_attr` float [E, D] (D may be 0), `batch` long [N].
Outputs: `VGAEOutput` with z/mu/logstd [N, latent], reconstructed features [N, F] and id logits [N, num_ids].
"""

from __future__ import annotations

import functools
import operator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.data import Batch
from torch_geometric.nn import GATConv
from torch_geometric.nn.models import VGAE
from torch_geometric.utils import scatter

EPS = 1e-15


def window_negative_edges(edge_index: Tensor, batch: Tensor) -> Tensor:
    """One random non-edge per edge, inside the edge's own window, drawn for all windows at once.

    (PyG's batched_negative_sampling loops over the graphs in Python; this is the hot path of every VGAE step.)
    Pairs that hit an existing edge or a self-loop are dropped rather than redrawn."""
    n = batch.numel()
    counts = torch.bincount(batch)
    starts = torch.cumsum(counts, 0) - counts
    src = edge_index[0]
    g = batch[src]
    dst = starts[g] + (torch.rand(src.numel(), device=src.device) * counts[g]).long().clamp_max(counts[g] - 1)
    keys = src * n + dst
    keep = (src != dst) & ~torch.isin(keys, edge_index[0] * n + edge_index[1])
    return torch.stack([src[keep], dst[keep]])


class GATEncoder(nn.Module):
    """[id embedding | continuous features] -> GATConv layers -> (mu, logstd), each [N, latent_dim]."""

    def __init__(
        self,
        num_ids: int,
        node_feature_dim: int,
        edge_feature_dim: int,
        hidden_dims: list[int],
        latent_dim: int,
        heads: int,
        embedding_dim: int,
        dropout: float,
    ):
        super().__init__()
        self.embedding = nn.Embedding(num_ids, embedding_dim)
        edge_dim = edge_feature_dim or None
        self.convs = nn.ModuleList()
        self.norms = nn.ModuleList()
        in_dim = embedding_dim + node_feature_dim
        for width in hidden_dims:
            per_head = max(1, width // heads)  # a hidden width is the concatenation of all heads
            self.convs.append(GATConv(in_dim, per_head, heads=heads, concat=True, edge_dim=edge_dim, dropout=dropout))
            in_dim = per_head * heads
            self.norms.append(nn.LayerNorm(in_dim))
        self.conv_mu = GATConv(in_dim, latent_dim, heads=1, edge_dim=edge_dim)
        self.conv_logstd = GATConv(in_dim, latent_dim, heads=1, edge_dim=edge_dim)
        self.dropout = dropout
        self.uses_edge_attr = edge_dim is not None

    def forward(
        self, x: Tensor, node_id: Tensor, edge_index: Tensor, edge_attr: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        ea = edge_attr if self.uses_edge_attr else None
        h = torch.cat([self.embedding(node_id), x], dim=-1)
        for conv, norm in zip(self.convs, self.norms):
            h = F.elu(norm(conv(h, edge_index, ea)))
            h = F.dropout(h, p=self.dropout, training=self.training)
        return self.conv_mu(h, edge_index, ea), self.conv_logstd(h, edge_index, ea)


@dataclass
class VGAEOutput:
    z: Tensor
    mu: Tensor
    logstd: Tensor
    x_hat: Tensor
    id_logits: Tensor


class CANGraphVGAE(nn.Module):
    """VGAE over CAN window graphs; reconstructs node features, node CAN ids and edges (inner product)."""

    def __init__(
        self,
        num_ids: int,
        node_feature_dim: int,
        edge_feature_dim: int,
        hidden_dims: list[int],
        latent_dim: int,
        heads: int = 1,
        embedding_dim: int = 16,
        dropout: float = 0.0,
        feature_weight: float = 1.0,
        id_weight: float = 1.0,
        edge_weight: float = 1.0,
        kl_weight: float = 0.01,
    ):
        super().__init__()
        encoder = GATEncoder(
            num_ids, node_feature_dim, edge_feature_dim, hidden_dims, latent_dim, heads, embedding_dim, dropout
        )
        self.vgae = VGAE(encoder)  # default decoder: InnerProductDecoder over edges
        dec_hidden = max(latent_dim * 2, 8)
        self.feature_decoder = nn.Sequential(
            nn.Linear(latent_dim, dec_hidden), nn.ELU(), nn.Linear(dec_hidden, node_feature_dim)
        )
        self.id_decoder = nn.Linear(latent_dim, num_ids)
        self.latent_dim = latent_dim
        self.weights = {"feature": feature_weight, "id": id_weight, "edge": edge_weight, "kl": kl_weight}

    def forward(self, batch: Batch) -> VGAEOutput:
        z = self.vgae.encode(batch.x, batch.node_id, batch.edge_index, getattr(batch, "edge_attr", None))
        mu, logstd = self.vgae.__mu__, self.vgae.__logstd__
        return VGAEOutput(z, mu, logstd, self.feature_decoder(z), self.id_decoder(z))

    def loss_terms(self, batch: Batch, out: VGAEOutput) -> dict[str, Tensor]:
        """Mean reconstruction terms over the batch and the KL term (per node)."""
        terms = {
            "feature": F.mse_loss(out.x_hat, batch.x),
            "id": F.cross_entropy(out.id_logits, batch.node_id),
            "kl": self.vgae.kl_loss(out.mu, out.logstd),
        }
        if batch.edge_index.numel():
            # negatives drawn inside each window: pairs across windows would be trivially "no edge"
            neg = window_negative_edges(batch.edge_index, batch.batch)
            terms["edge"] = self.vgae.recon_loss(out.z, batch.edge_index, neg)
        else:
            terms["edge"] = out.z.new_zeros(())
        return terms

    def loss(self, batch: Batch, out: VGAEOutput | None = None) -> Tensor:
        out = out if out is not None else self(batch)
        terms = self.loss_terms(batch, out)
        return functools.reduce(operator.add, [self.weights[k] * v for k, v in terms.items()])

    def window_errors(self, batch: Batch, out: VGAEOutput | None = None) -> Tensor:
        """Per-window reconstruction errors [G, 3]: feature MSE, id cross-entropy, edge (positive pairs) error."""
        out = out if out is not None else self(batch)
        g = batch.num_graphs
        node_feat = ((out.x_hat - batch.x) ** 2).mean(dim=-1)
        node_id = F.cross_entropy(out.id_logits, batch.node_id, reduction="none")
        feat = scatter(node_feat, batch.batch, dim=0, dim_size=g, reduce="mean")
        ids = scatter(node_id, batch.batch, dim=0, dim_size=g, reduce="mean")
        if batch.edge_index.numel():
            src, dst = batch.edge_index
            edge_err = -torch.log(torch.sigmoid((out.z[src] * out.z[dst]).sum(-1)) + EPS)
            edges = scatter(edge_err, batch.batch[src], dim=0, dim_size=g, reduce="mean")
        else:
            edges = feat.new_zeros(g)
        return torch.stack([feat, ids, edges], dim=-1)

    def window_score(self, batch: Batch, out: VGAEOutput | None = None) -> Tensor:
        """Per-window anomaly score [G]: the weighted reconstruction error (higher = more anomalous)."""
        err = self.window_errors(batch, out)
        w = err.new_tensor([self.weights["feature"], self.weights["id"], self.weights["edge"]])
        return (err * w).sum(-1)

    def latent_stats(self, batch: Batch, out: VGAEOutput) -> Tensor:
        """Per-window latent statistics [G, 2]: mean |mu| and mean logstd (fusion state features)."""
        g = batch.num_graphs
        mu_norm = scatter(out.mu.abs().mean(-1), batch.batch, dim=0, dim_size=g, reduce="mean")
        logstd = scatter(out.logstd.mean(-1), batch.batch, dim=0, dim_size=g, reduce="mean")
        return torch.stack([mu_norm, logstd], dim=-1)
