"""Behaviour cloning while a critic learns beside it: the actor's loss is the head's own, the critic only
chooses among the policy's candidates when acting (IDQL: a diffusion behaviour model plus IQL's critic).

Why: ``bc`` declares ``uses_critic = False``, so the learner builds no critic for it; IDQL needs the
critic trained while the actor is pure behaviour cloning. This objective is ``bc`` with a critic. With a
critic that needs the policy's next actions (``double-q``), those come from the cloned policy (a SARSA-like
backup); the ``iql`` critic never asks for them. ``greedy``: acting takes the best candidate by the
critic's ``action_values`` instead of drawing one with probability softmax(values).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..registry import OBJECTIVES
from ..settings import setting
from .base import Objective
from .bc import BCObjective


@OBJECTIVES.register("bc-with-critic")
class BCWithCriticObjective(BCObjective):
    @dataclass
    class Settings(Objective.Settings):
        greedy: bool = setting(False, "acting takes the candidate with the highest critic value (IDQL's released "
                               "evaluation) instead of drawing one by softmax of the values")

    name = "bc-with-critic"
    uses_critic = True
    needs_differentiable_samples = False

    def __init__(self, greedy: bool = False) -> None:
        self.greedy_acting = bool(greedy)
