"""Twin Q-networks as one member-batched network.

For ``M`` agents (seeds) the network has ``2M`` members laid out seed-major, so each layer of both
critics of all seeds is a single batched matmul. Outputs are ``[M, 2, B]``.
"""

from __future__ import annotations

import copy
from typing import Sequence

import torch
from torch import Tensor, nn

from ..nn import EnsembleMLP, foreach_pieces
from ..registry import CRITICS


@CRITICS.register("double-q")
class DoubleQCritic(nn.Module):
    n_q = 2

    label, reductions = "double-q", ("min", "minmax")

    def __init__(self, obs_dim: int, action_dim: int, members: int = 1, hidden: int = 256, n_layers: int = 3, activation: str = "mish",
                 critic_reduce: str = "min", critic_lambda: float = 0.75) -> None:
        super().__init__()
        if critic_reduce not in self.reductions:
            raise ValueError(f"{self.label}: critic_reduce must be one of {self.reductions}, got {critic_reduce!r}")
        if not 0.0 <= critic_lambda <= 1.0:
            raise ValueError(f"critic_lambda must lie in [0, 1], got {critic_lambda}")
        self.reduction, self.lam = critic_reduce, float(critic_lambda)
        self.members = members
        self.q = EnsembleMLP(members * self.n_q, obs_dim + action_dim, 1, [hidden] * n_layers, activation)
        self.target = copy.deepcopy(self.q)
        self.target.requires_grad_(False)

    def reset_parameters(self, generators: Sequence[torch.Generator]) -> None:
        self.q.reset_parameters(generators)
        self.sync_target()

    @torch.no_grad()
    def sync_target(self) -> None:
        for t, p in zip(self.target.parameters(), self.q.parameters()):
            t.copy_(p)

    def online_parameters(self) -> list[nn.Parameter]:
        return list(self.q.parameters())

    def _run(self, net: EnsembleMLP, obs: Tensor, actions: Tensor, detach_params: bool = False) -> Tensor:
        M, B, _ = obs.shape
        x = torch.cat([obs, actions], dim=-1)
        x = x.unsqueeze(1).expand(M, self.n_q, B, x.shape[-1]).reshape(M * self.n_q, B, -1)
        return net(x, detach_params).view(M, self.n_q, B)

    def forward(self, obs: Tensor, actions: Tensor) -> Tensor:
        """Q-values of the online twins, ``[M, 2, B]``."""
        return self._run(self.q, obs, actions)

    def regression_grads(self, obs: Tensor, actions: Tensor, y: Tensor, max_norm: float = 0.0):
        """``(loss [M], per-seed gradient norms [M], gradients of the online parameters)`` of the TD
        regression onto ``y`` ``[M, B]`` (loss: the sum over twins of the mean squared error; gradients
        clipped per seed to ``max_norm`` when > 0) from one fused CPU operator, or None where it does not
        apply (then the caller differentiates :meth:`forward` itself)."""
        from .. import fused
        from ..nn import mish

        if self.q.act is not mish or len(self.q.layers) < 2:
            return None
        ops = fused.applicable(obs, actions, y)
        return None if ops is None else fused.critic_regression(ops, self.q, obs, actions, y, max_norm)

    def policy_values(self, obs: Tensor, actions: Tensor) -> Tensor:
        """Online twin Q-values for a policy's actions, differentiable w.r.t. the actions only.

        Actor losses use this: their backward then skips the critic's weight gradients, which the
        actor's optimiser would never use (the reference code computes and discards them).
        """
        return self._run(self.q, obs, actions, detach_params=True)

    def target_values(self, obs: Tensor, actions: Tensor) -> Tensor:
        """Q-values of the target twins, ``[M, 2, B]`` (no graph)."""
        with torch.no_grad():
            return self._run(self.target, obs, actions)

    def reduce(self, q: Tensor) -> Tensor:
        """``[M, n_q, ...]`` -> the value the TD target and acting use, ``[M, ...]``: min(Q1, Q2) as in the paper,
        or BCQ's soft clipped double Q, lambda min + (1 - lambda) max (``minmax``)."""
        if self.reduction == "min":
            return q.min(dim=1).values
        if self.reduction == "minmax":
            return self.lam * q.min(dim=1).values + (1.0 - self.lam) * q.max(dim=1).values
        return self._reduce_more(q)

    def _reduce_more(self, q: Tensor) -> Tensor:  # reductions only subclasses offer
        raise ValueError(f"unknown reduction {self.reduction!r}")

    @torch.no_grad()
    def polyak(self, tau: float) -> None:
        torch._foreach_lerp_(foreach_pieces(list(self.target.parameters())), foreach_pieces(list(self.q.parameters())), tau)
