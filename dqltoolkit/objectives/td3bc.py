"""TD3+BC (Fujimoto & Gu 2021): a deterministic actor maximising lambda * Q1 - MSE to the data.

lambda = alpha / mean|Q1| (alpha = ``eta``, 2.5 in the paper), computed per batch and detached. Policy
delay and target policy smoothing are agent settings (``policy_delay: 2``, ``target_noise: 0.2``) that
the td3bc recipe turns on, so any head can use them.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..registry import OBJECTIVES
from ..settings import setting
from .base import Objective, q_of


@OBJECTIVES.register("td3bc")
class TD3BCObjective(Objective):
    @dataclass
    class Settings(Objective.Settings):
        eta: float = setting(2.5, "alpha: lambda = alpha / mean|Q1| (2.5 in the paper)", min=0)

    name = "td3bc"
    uses_critic = True
    needs_differentiable_samples = True

    def __init__(self, eta: float = 2.5) -> None:
        self.alpha = float(eta)

    def actor_loss(self, head, critic, obs, actions, generators, aux=None):
        bc = head.behaviour_loss(obs, actions, generators)
        q1 = q_of(critic, obs, head.sample(obs, generators))[:, 0]
        lmbda = self.alpha / q1.abs().mean(dim=1).detach().clamp(min=1e-6)
        q_term = -lmbda * q1.mean(dim=1)
        return bc + q_term, {"bc_loss": bc, "ql_loss": q_term}
