"""The policy-head interface that objectives and the agent rely on."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn


class PolicyHead(nn.Module):
    """A state-conditioned action distribution with its own behaviour-cloning loss.

    All tensors carry a leading member dimension: ``obs`` is ``[M, B, obs_dim]``, actions
    ``[M, B, action_dim]`` in ``[-max_action, max_action]``, losses ``[M]`` (one per member, summed by
    the agent, so members never share gradients).

    ``differentiable_samples`` says whether :meth:`sample` keeps the graph back to the parameters,
    which objectives that maximise Q through the samples (``ql``) require.
    """

    differentiable_samples: bool = True

    def __init__(self, obs_dim: int, action_dim: int, members: int = 1, max_action: float = 1.0) -> None:
        super().__init__()
        self.obs_dim, self.action_dim, self.members, self.max_action = obs_dim, action_dim, members, max_action

    def reset_parameters(self, generators: Sequence[torch.Generator]) -> None:
        raise NotImplementedError

    def behaviour_loss(self, obs: Tensor, actions: Tensor, generators: Sequence[torch.Generator]) -> Tensor:
        raise NotImplementedError

    def sample(self, obs: Tensor, generators: Sequence[torch.Generator]) -> Tensor:
        raise NotImplementedError
