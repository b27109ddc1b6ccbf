"""A deterministic policy a = max_action * tanh(f(s)) with an MSE behaviour loss (TD3+BC's actor)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch
from torch import Tensor

from ..nn import ACTIVATIONS, EnsembleMLP
from ..registry import HEADS
from ..settings import setting
from .base import PolicyHead


@HEADS.register("deterministic")
class DeterministicHead(PolicyHead):
    @dataclass
    class Settings(PolicyHead.Settings):
        hidden: int = setting(256, "network width", min=1, max=16384)
        n_layers: int = setting(3, "hidden layers", min=1, max=64)
        activation: str = setting("mish", "activation", choices=tuple(ACTIVATIONS))

    differentiable_samples = True

    def __init__(self, obs_dim: int, action_dim: int, members: int = 1, max_action: float = 1.0, hidden: int = 256, n_layers: int = 3,
                 activation: str = "mish") -> None:
        super().__init__(obs_dim, action_dim, members, max_action)
        self.net = EnsembleMLP(members, obs_dim, action_dim, [hidden] * n_layers, activation)

    def reset_parameters(self, generators: Sequence[torch.Generator]) -> None:
        self.net.reset_parameters(generators)

    def forward(self, obs: Tensor) -> Tensor:
        return self.max_action * torch.tanh(self.net(obs))

    def behaviour_loss(self, obs: Tensor, actions: Tensor, generators: Sequence[torch.Generator]) -> Tensor:
        return (self(obs) - actions).pow(2).mean(dim=(1, 2))

    def behaviour_loss_per_sample(self, obs: Tensor, actions: Tensor, generators: Sequence[torch.Generator]) -> Tensor:
        return (self(obs) - actions).pow(2).mean(dim=-1)

    def sample(self, obs: Tensor, generators: Sequence[torch.Generator], noise: Tensor | None = None, steps: Optional[int] = None) -> Tensor:
        return self(obs)
