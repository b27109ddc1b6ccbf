"""Diffusion-QL's objective with a heavier behaviour-cloning term: L = (1 + bc_boost) L_bc + eta L_q.

Why: an objective is a loss over the head's and the critic's public methods, so a variant is a subclass
that overrides :meth:`actor_loss` and declares its one new setting. It does not re-declare
``capabilities``: the fused actor kernel computes the parent's loss, not this one, so the actor update
runs eagerly (the critic keeps its own kernels).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Tuple

from torch import Tensor

from dqltoolkit.objectives.ql import QLObjective
from dqltoolkit.settings import setting


class BoostedQLObjective(QLObjective):
    name = "ql-bc-boost"

    @dataclass
    class Settings(QLObjective.Settings):
        bc_boost: float = setting(1.0, "extra weight of the behaviour-cloning loss (0: the ql objective)", min=0)

    def __init__(self, bc_boost: float = 1.0, **settings: Any) -> None:
        super().__init__(**settings)
        self.bc_boost = float(bc_boost)

    def actor_loss(self, head, critic, obs, actions, generators, aux=None) -> Tuple[Tensor, Dict[str, Tensor]]:
        loss, parts = super().actor_loss(head, critic, obs, actions, generators, aux)
        extra = self.bc_boost * parts["bc_loss"]
        return loss + extra, {**parts, "bc_boost_loss": extra}
