"""The objective interface: head + critic + batch -> actor loss per member."""

from __future__ import annotations

from typing import Dict, Sequence, Tuple

import torch
from torch import Tensor

from ..heads.base import PolicyHead


class Objective:
    """Turns a head, a critic and a batch into the actor loss ``[M]`` plus diagnostics ``{name: [M]}``.

    ``uses_critic`` tells the agent whether to train a critic at all (pure BC skips it);
    ``needs_differentiable_samples`` is checked against the head when the agent is built.
    """

    name = "objective"
    uses_critic = True
    needs_differentiable_samples = False

    def actor_loss(
        self, head: PolicyHead, critic, obs: Tensor, actions: Tensor, generators: Sequence[torch.Generator]
    ) -> Tuple[Tensor, Dict[str, Tensor]]:
        raise NotImplementedError
