"""BCQ (Fujimoto et al. 2019) on a CVAE head: the CVAE models the behaviour policy, a perturbation
network xi(s, a) in [-phi, phi] * max_action nudges its samples towards higher Q1.

Actor loss = the CVAE's ELBO (its own gradients) - mean Q1(s, a + xi(s, a)) with a ~ CVAE, detached, so
the Q term trains only the perturbation network, as in BCQ. Acting samples ``n_candidates`` perturbed
actions and takes the highest-valued one, as BCQ does (valued by the critic's reduction, where BCQ
reads Q1). The critic target is the agent's: in the bcq recipe BCQ's own, the best of 10 perturbed
samples each scored by soft clipped double Q, 0.75 min + 0.25 max of the twins (``max_q_backup``,
``backup_order: reduce-first``, ``critic_reduce: minmax``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor, nn

from ..nn import EnsembleMLP
from ..registry import OBJECTIVES
from ..settings import setting
from .base import Objective, head_sample, q_of


class Perturbation(nn.Module):
    def __init__(self, obs_dim: int, action_dim: int, members: int, hidden: int, phi: float) -> None:
        super().__init__()
        self.phi = float(phi)
        self.net = EnsembleMLP(members, obs_dim + action_dim, action_dim, [hidden, hidden], "relu")

    def reset_parameters(self, generators: Sequence[torch.Generator]) -> None:
        self.net.reset_parameters(generators)

    def forward(self, obs: Tensor, actions: Tensor) -> Tensor:
        xi = self.phi * torch.tanh(self.net(torch.cat([obs, actions], dim=-1)))
        return (actions + xi).clamp(-1.0, 1.0)


@OBJECTIVES.register("bcq")
class BCQObjective(Objective):
    @dataclass
    class Settings(Objective.Settings):
        perturbation: float = setting(0.05, "max perturbation phi, in units of max_action", min=0)
        hidden: int = setting(750, "perturbation network width (shared with the head's `hidden` when given flat)", min=1, max=16384)

    name = "bcq"
    uses_critic = True
    needs_differentiable_samples = False
    greedy_acting = True  # BCQ's policy is the highest-valued of its perturbed samples

    def __init__(self, perturbation: float = 0.05, hidden: int = 750) -> None:
        self.phi = float(perturbation)
        self.hidden = int(hidden)

    def build(self, obs_dim, action_dim, members, config):
        return {"perturb": Perturbation(obs_dim, action_dim, members, self.hidden, self.phi)}

    def policy_sample(self, head, aux, obs, generators, noise=None, steps=None, *, sampler=None):
        return aux["perturb"](obs, head_sample(head, obs, generators, noise, steps, sampler).detach())

    def actor_loss(self, head, critic, obs, actions, generators, aux=None):
        elbo = head.behaviour_loss(obs, actions, generators)
        q1 = q_of(critic, obs, self.policy_sample(head, aux, obs, generators))[:, 0]
        q_term = -q1.mean(dim=1)
        return elbo + q_term, {"bc_loss": elbo, "ql_loss": q_term}
