"""A state-conditioned diagonal Gaussian policy trained by maximum likelihood (the paper's "MLE" policy).

Unimodal by construction: fitted to a multimodal behaviour policy, its mass sits between the modes,
which is the failure the paper's bandit figure shows. Samples are reparameterised (so the ``ql``
objective can push them through Q) and kept inside the action bounds, by a tanh squash (default, with
the change-of-variables term in the likelihood) or by clipping.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import torch
from torch import Tensor

from ..nn import ACTIVATIONS, EnsembleMLP, member_randn
from ..registry import HEADS
from ..settings import setting
from .base import PolicyHead

_LOG_2PI = math.log(2 * math.pi)


@HEADS.register("gaussian")
class GaussianHead(PolicyHead):
    @dataclass
    class Settings(PolicyHead.Settings):
        hidden: int = setting(256, "network width", min=1, max=16384)
        n_layers: int = setting(3, "hidden layers", min=1, max=64)
        activation: str = setting("mish", "activation", choices=tuple(ACTIVATIONS))
        squash: str = setting("tanh", "keep samples in bounds by tanh (with its Jacobian) or clip", choices=("tanh", "clip"))
        log_std_min: float = setting(-20.0, "lower clamp of the log standard deviation")
        log_std_max: float = setting(2.0, "upper clamp of the log standard deviation")

    differentiable_samples = True
    noise_row_dim = 0  # draw_noise: [M, rows, A]

    def __init__(self, obs_dim: int, action_dim: int, members: int = 1, max_action: float = 1.0, hidden: int = 256, n_layers: int = 3,
                 activation: str = "mish", squash: str = "tanh", log_std_min: float = -20.0, log_std_max: float = 2.0) -> None:
        super().__init__(obs_dim, action_dim, members, max_action)
        if squash not in ("tanh", "clip"):
            raise ValueError(f"gaussian head: squash must be 'tanh' or 'clip', got {squash!r}")
        self.squash, self.log_std_min, self.log_std_max = squash, float(log_std_min), float(log_std_max)
        self.net = EnsembleMLP(members, obs_dim, 2 * action_dim, [hidden] * n_layers, activation)

    def reset_parameters(self, generators: Sequence[torch.Generator]) -> None:
        self.net.reset_parameters(generators)

    def distribution(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and log-std of the pre-squash Gaussian, ``[M, B, A]`` each."""
        mu, log_std = self.net(obs).chunk(2, dim=-1)
        return mu, log_std.clamp(self.log_std_min, self.log_std_max)

    def log_prob(self, obs: Tensor, actions: Tensor) -> Tensor:
        mu, log_std = self.distribution(obs)
        if self.squash == "tanh":
            y = (actions / self.max_action).clamp(-1 + 1e-4, 1 - 1e-4)
            u = torch.atanh(y)
            # change of variables: a = max_action * tanh(u)
            log_det = torch.log(self.max_action * (1 - y.pow(2)))
        else:
            u, log_det = actions, torch.zeros_like(actions)
        z = (u - mu) * torch.exp(-log_std)
        return (-0.5 * z.pow(2) - log_std - 0.5 * _LOG_2PI - log_det).sum(-1)

    def behaviour_loss_per_sample(self, obs: Tensor, actions: Tensor, generators: Sequence[torch.Generator]) -> Tensor:
        """Negative log-likelihood of each dataset action, ``[M, B]`` (its batch mean is the behaviour loss)."""
        return -self.log_prob(obs, actions)

    def draw_noise(self, rows: int, generators: Sequence[torch.Generator], device: torch.device, steps: Optional[int] = None) -> Tensor:
        return member_randn(generators, (rows, self.action_dim), device)

    def sample(self, obs: Tensor, generators: Sequence[torch.Generator], noise: Tensor | None = None, steps: Optional[int] = None) -> Tensor:
        mu, log_std = self.distribution(obs)
        if noise is None:
            noise = member_randn(generators, mu.shape[1:], obs.device)
        u = mu + torch.exp(log_std) * noise
        if self.squash == "tanh":
            return self.max_action * torch.tanh(u)
        return u.clamp(-self.max_action, self.max_action)
