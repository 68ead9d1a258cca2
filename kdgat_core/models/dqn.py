"""The fusion Q-network: state features of one window -> one Q-value per fusion weight alpha.

Input: float [B, state_dim]; output: float [B, num_actions] (expected reward of each alpha).
"""

from __future__ import annotations

from torch import Tensor, nn


class QNetwork(nn.Module):
    def __init__(self, state_dim: int, hidden: int, layers: int, num_actions: int):
        super().__init__()
        dims = [state_dim] + [hidden] * layers
        blocks: list[nn.Module] = []
        for a, b in zip(dims[:-1], dims[1:]):
            blocks += [nn.Linear(a, b), nn.ReLU()]
        blocks.append(nn.Linear(dims[-1], num_actions))
        self.net = nn.Sequential(*blocks)

    def forward(self, state: Tensor) -> Tensor:
        return self.net(state)
