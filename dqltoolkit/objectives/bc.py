"""Pure behaviour cloning: the head's own loss (denoising, NLL, ELBO or MSE)."""

from __future__ import annotations

from ..registry import OBJECTIVES
from .base import Objective


@OBJECTIVES.register("bc")
class BCObjective(Objective):
    name = "bc"
    uses_critic = False

    def actor_loss(self, head, critic, obs, actions, generators, aux=None):
        bc = head.behaviour_loss(obs, actions, generators)
        return bc, {"bc_loss": bc}
