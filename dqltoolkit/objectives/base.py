"""The objective interface: head + critic + batch -> actor loss per member.

An objective may own extra networks (BCQ's perturbation model, BEAR's behaviour CVAE and Lagrange
multiplier). It declares them in :meth:`build`; the learner gives them the member dimension, trains them
with the actor's optimiser, keeps EMA copies of them next to the head's, and saves them in checkpoints.
The policy that acts and that supplies the critic's next actions is :meth:`policy_sample`: the head's
samples unless the objective changes them (BCQ perturbs them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Dict, FrozenSet, Hashable, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from ..heads.base import PolicyHead


class Objective:
    """Turns a head, a critic and a batch into the actor loss ``[M]`` plus diagnostics ``{name: [M]}``.

    ``uses_critic`` tells the learner whether to train a critic at all (pure BC skips it);
    ``needs_differentiable_samples`` is checked against the head when the agent is built. ``Settings``
    declares the keys the constructor takes; ``capabilities`` which kernels compute this exact class's
    loss (see dqltoolkit/capabilities.py). ``step`` is the learner's step count at the current update.
    """

    @dataclass
    class Settings:
        pass

    name = "objective"
    uses_critic = True
    needs_differentiable_samples = False
    capabilities: ClassVar[FrozenSet[str]] = frozenset()
    # acting picks among candidates by softmax(Q) (Diffusion-QL), or always the best one (True: BCQ)
    greedy_acting = False
    step: int = 0

    def __init__(self, **settings: object) -> None:
        pass

    def schedule_key(self, step: int) -> Hashable:
        """The values of this objective's step schedules at ``step`` (eta during a ramp, whether a term is on):
        updates at steps with equal keys compute the same function of the batch. Default: no schedule."""
        return None

    def build(self, obs_dim: int, action_dim: int, members: int, config) -> Dict[str, nn.Module]:
        """Extra trainable networks, each with ``reset_parameters(generators)``. Default: none."""
        return {}

    def policy_sample(self, head: PolicyHead, aux: Optional[nn.ModuleDict], obs: Tensor, generators: Sequence[torch.Generator],
                      noise: Optional[Tensor] = None, steps: Optional[int] = None, *, sampler: Optional[str] = None) -> Tensor:
        """Actions of the trained policy for ``obs`` ``[M, B, obs_dim]`` (``noise``, ``steps``, ``sampler``: see
        ``PolicyHead.sample``). Callers pass ``sampler`` only when one is configured (objectives and heads
        written before it existed need not take it)."""
        return head_sample(head, obs, generators, noise, steps, sampler)

    def actor_loss(
        self, head: PolicyHead, critic, obs: Tensor, actions: Tensor, generators: Sequence[torch.Generator], aux: Optional[nn.ModuleDict] = None
    ) -> Tuple[Tensor, Dict[str, Tensor]]:
        raise NotImplementedError


def q_of(critic, obs: Tensor, actions: Tensor) -> Tensor:
    """Online Q-values ``[M, n_q, B]`` of a policy's actions for an actor loss (the critic's ``policy_values``)."""
    return critic.policy_values(obs, actions)


def head_sample(head: PolicyHead, obs: Tensor, generators: Sequence[torch.Generator], noise: Optional[Tensor] = None,
                steps: Optional[int] = None, sampler: Optional[str] = None) -> Tensor:
    """``head.sample`` with ``sampler=`` only when one is given, so a head whose ``sample`` predates the keyword works."""
    if sampler:
        return head.sample(obs, generators, noise=noise, steps=steps, sampler=sampler)
    return head.sample(obs, generators, noise=noise, steps=steps)


def sampler_option(sampler: Optional[str]) -> dict:
    """``{"sampler": name}`` when a sampler is configured, else nothing: what callers of ``policy_sample`` pass."""
    return {"sampler": sampler} if sampler else {}
