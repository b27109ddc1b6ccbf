"""An IQL-style critic (Kostrikov et al. 2022): twin Q-networks and a state-value network V.

Why it is a critic of its own: its TD target needs no action from the policy. V is fitted by expectile
regression to the target twins' minimum at the dataset's actions, and Q to r + gamma (1 - done) V(s'),
so the critic never evaluates an action outside the data. The learner offers a way to draw next
actions (``next_actions``); this critic ignores it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

import torch
from torch import Tensor, nn

from dqltoolkit.critics.base import Critic, NextActions
from dqltoolkit.nn import EnsembleMLP
from dqltoolkit.settings import setting


def expectile_loss(u: Tensor, expectile: float) -> Tensor:
    """Mean over the last axis of |expectile - 1(u < 0)| u^2: an asymmetric square that, minimised over
    a constant, gives the ``expectile`` of u's distribution (0.5: the mean; towards 1: the maximum)."""
    weight = torch.where(u < 0, 1.0 - expectile, expectile)
    return (weight * u.pow(2)).mean(dim=-1)


class ExpectileValueCritic(Critic):
    """Q1, Q2 ``[M, 2, B]`` and V ``[M, B]``; acting and the actor's Q term read the twins."""

    @dataclass
    class Settings(Critic.Settings):
        critic_hidden: int = setting(256, "width of the Q- and V-networks", min=1)
        critic_layers: int = setting(2, "hidden layers of the Q- and V-networks", min=1)
        expectile: float = setting(0.7, "expectile of min Q that V fits, in (0, 1); 0.5 fits the mean", min=0)

    n_q = 2

    def __init__(self, obs_dim: int, action_dim: int, members: int = 1, gamma: float = 0.99, tau: float = 0.005,
                 critic_hidden: int = 256, critic_layers: int = 2, expectile: float = 0.7) -> None:
        super().__init__(obs_dim, action_dim, members, gamma, tau)
        if not 0.0 < expectile < 1.0:
            raise ValueError(f"critic 'expectile': expectile={expectile!r} must lie strictly between 0 and 1")
        self.expectile = float(expectile)
        hidden = [critic_hidden] * critic_layers
        self.q = EnsembleMLP(members * self.n_q, obs_dim + action_dim, 1, hidden)  # seed-major: [m0q1, m0q2, m1q1, ...]
        self.q_target = copy.deepcopy(self.q).requires_grad_(False)
        self.v = EnsembleMLP(members, obs_dim, 1, hidden)

    # --- networks ----------------------------------------------------------------------------------
    def reset_parameters(self, generators: Sequence[torch.Generator]) -> None:
        self.q.reset_parameters(generators)
        self.v.reset_parameters(generators)
        with torch.no_grad():
            for t, p in zip(self.q_target.parameters(), self.q.parameters()):
                t.copy_(p)

    def online_parameters(self) -> List[nn.Parameter]:
        return list(self.q.parameters()) + list(self.v.parameters())

    def _twins(self, net: EnsembleMLP, obs: Tensor, actions: Tensor) -> Tensor:
        M, B, _ = obs.shape
        x = torch.cat([obs, actions], dim=-1).repeat_interleave(self.n_q, dim=0)  # each seed's rows for both twins
        return net(x).view(M, self.n_q, B)

    def forward(self, obs: Tensor, actions: Tensor) -> Tensor:
        return self._twins(self.q, obs, actions)

    def target_values(self, obs: Tensor, actions: Tensor) -> Tensor:
        with torch.no_grad():
            return self._twins(self.q_target, obs, actions)

    def value(self, obs: Tensor) -> Tensor:
        """V(s) ``[M, B]``."""
        return self.v(obs).squeeze(-1)

    @torch.no_grad()
    def polyak(self) -> None:
        for t, p in zip(self.q_target.parameters(), self.q.parameters()):
            t.lerp_(p, self.tau)

    # --- the TD target and the loss ------------------------------------------------------------------
    def compute_target(self, batch: Dict[str, Tensor], next_actions: NextActions, generators: Sequence[torch.Generator]) -> Tensor:
        """y = r + gamma (1 - done) V(s'): no next action is drawn (``next_actions`` is never called)."""
        with torch.no_grad():
            return batch["rewards"] + self.gamma * (1.0 - batch["terminals"]) * self.value(batch["next_obs"])

    def compute_loss(self, batch: Dict[str, Tensor], target: Tensor) -> Tuple[Tensor, Dict[str, Tensor]]:
        """Twin regression onto ``target`` plus V's expectile regression onto min_j Q'_j(s, a), per seed."""
        obs, actions = batch["obs"], batch["actions"]
        q_loss = (self(obs, actions) - target.unsqueeze(1)).pow(2).mean(dim=2).sum(dim=1)
        u = self.reduce(self.target_values(obs, actions)) - self.value(obs)
        v_loss = expectile_loss(u, self.expectile)
        return q_loss + v_loss, {"q_loss": q_loss.detach(), "v_loss": v_loss.detach()}
