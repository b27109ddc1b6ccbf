"""The objective interface: head + critic + batch -> actor loss per member.

An objective may own extra networks (BCQ's perturbation model, BEAR's behaviour CVAE and Lagrange
multiplier). It declares them in :meth:`build`; the agent gives them the member dimension, trains them
with the actor's optimiser, keeps EMA copies of them next to the head's, and saves them in checkpoints.
The policy that acts and that supplies the critic's next actions is :meth:`policy_sample`: the head's
samples unless the objective changes them (BCQ perturbs them).
"""

from __future__ import annotations

from typing import Dict, Hashable, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from ..heads.base import PolicyHead


class Objective:
    """Turns a head, a critic and a batch into the actor loss ``[M]`` plus diagnostics ``{name: [M]}``.

    ``uses_critic`` tells the agent whether to train a critic at all (pure BC skips it);
    ``needs_differentiable_samples`` is checked against the head when the agent is built.
    """

    name = "objective"
    uses_critic = True
    needs_differentiable_samples = False
    # acting picks among candidates by softmax(Q) (Diffusion-QL), or always the best one (True: BCQ)
    greedy_acting = False

    def graph_key(self) -> Hashable:
        """Everything outside tensors that changes this objective's kernels from step to step (for QL, its
        current eta). A CUDA-graphed step is captured once per distinct key. Default: nothing."""
        return None

    def build(self, obs_dim: int, action_dim: int, members: int, config) -> Dict[str, nn.Module]:
        """Extra trainable networks, each with ``reset_parameters(generators)``. Default: none."""
        return {}

    def policy_sample(self, head: PolicyHead, aux: Optional[nn.ModuleDict], obs: Tensor, generators: Sequence[torch.Generator]) -> Tensor:
        """Actions of the trained policy for ``obs`` ``[M, B, obs_dim]``."""
        return head.sample(obs, generators)

    def actor_loss(
        self, head: PolicyHead, critic, obs: Tensor, actions: Tensor, generators: Sequence[torch.Generator], aux: Optional[nn.ModuleDict] = None
    ) -> Tuple[Tensor, Dict[str, Tensor]]:
        raise NotImplementedError


def q_of(critic, obs: Tensor, actions: Tensor) -> Tensor:
    """Online Q-values ``[M, N, B]`` (N = 2 for twins) of a policy's actions, for actor losses: differentiable w.r.t.
    the actions only where the critic offers that (``policy_values``), else its plain forward."""
    values = getattr(critic, "policy_values", None)
    return values(obs, actions) if values is not None else critic(obs, actions)
