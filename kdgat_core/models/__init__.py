"""kdgat_core.models: nn.Modules only (no I/O, no MLflow): the VGAE, the GAT classifier, the fusion Q-network."""

from __future__ import annotations

from torch import nn

from kdgat_core.models.dqn import QNetwork
from kdgat_core.models.gat import CANGraphGAT
from kdgat_core.models.vgae import CANGraphVGAE, VGAEOutput


def count_parameters(module: nn.Module) -> int:
    """Number of parameters (frozen ones included: a frozen teacher still has its size)."""
    return sum(p.numel() for p in module.parameters())


__all__ = ["CANGraphGAT", "CANGraphVGAE", "QNetwork", "VGAEOutput", "count_parameters"]
