"""The critic interface: values, targets, their reduction, the Polyak update, the TD target and the loss.

A critic owns everything about learning values, so a new kind of critic (an expectile value critic, a
distributional one) is new files only: the learner asks it for its TD target, given a way to draw the
target policy's next actions that it may use or ignore, and for its loss on that target, and it steps
the optimiser over :meth:`online_parameters`. Acting and actor objectives read values through
:meth:`action_values` and :meth:`policy_values`.

Tensors carry the member (seed) dimension first: ``obs`` ``[M, B, obs_dim]``, values ``[M, n_q, B]``
for critics with ``n_q`` networks per seed, targets and losses ``[M, B]`` and ``[M]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, ClassVar, Dict, FrozenSet, List, Sequence, Tuple

import torch
from torch import Tensor, nn

from ..settings import setting

#: next_actions(next_obs [M, R, obs_dim]) -> actions [M, R, action_dim] of the target policy
NextActions = Callable[[Tensor], Tensor]


class Critic(nn.Module):
    """Base class of critics. Subclasses implement the abstract methods; ``Settings`` declares their keys."""

    @dataclass
    class Settings:
        gamma: float = setting(0.99, "discount", min=0)
        tau: float = setting(0.005, "Polyak rate of the target networks", min=0)

    capabilities: ClassVar[FrozenSet[str]] = frozenset()
    n_q: int = 1

    def __init__(self, obs_dim: int, action_dim: int, members: int = 1, gamma: float = 0.99, tau: float = 0.005) -> None:
        super().__init__()
        self.obs_dim, self.action_dim, self.members = obs_dim, action_dim, members
        self.gamma, self.tau = float(gamma), float(tau)

    # --- what subclasses provide -----------------------------------------------------------------
    def reset_parameters(self, generators: Sequence[torch.Generator]) -> None:
        raise NotImplementedError

    def online_parameters(self) -> List[nn.Parameter]:
        """What the critic's optimiser steps (target copies excluded)."""
        raise NotImplementedError

    def forward(self, obs: Tensor, actions: Tensor) -> Tensor:
        """Online values ``[M, n_q, B]``."""
        raise NotImplementedError

    def target_values(self, obs: Tensor, actions: Tensor) -> Tensor:
        """Target-network values ``[M, n_q, B]``, no graph."""
        raise NotImplementedError

    def reduce(self, q: Tensor) -> Tensor:
        """``[M, n_q, ...]`` -> the one value per seed that targets and acting use, ``[M, ...]``."""
        return q.min(dim=1).values

    def compute_target(self, batch: Dict[str, Tensor], next_actions: NextActions, generators: Sequence[torch.Generator]) -> Tensor:
        """The TD target ``[M, B]`` for ``batch`` (keys ``obs``, ``actions``, ``rewards``, ``next_obs``,
        ``terminals``), no graph."""
        raise NotImplementedError

    def compute_loss(self, batch: Dict[str, Tensor], target: Tensor) -> Tuple[Tensor, Dict[str, Tensor]]:
        """The loss per seed ``[M]`` of regressing onto ``target``, and diagnostics ``{name: [M]}``."""
        raise NotImplementedError

    @torch.no_grad()
    def polyak(self) -> None:
        """Move the target networks towards the online ones by ``tau``."""
        raise NotImplementedError

    # --- derived ---------------------------------------------------------------------------------
    def policy_values(self, obs: Tensor, actions: Tensor) -> Tensor:
        """Online values ``[M, n_q, B]`` of a policy's actions for an actor loss: differentiable w.r.t. the
        actions (a critic may skip its own weight gradients here). Default: :meth:`forward`."""
        return self(obs, actions)

    @torch.no_grad()
    def action_values(self, obs: Tensor, actions: Tensor) -> Tensor:
        """The value ``[M, B]`` by which acting ranks candidate actions: the reduced target values."""
        return self.reduce(self.target_values(obs, actions))
