"""The policy-head interface that objectives, the learner and the acting policy rely on."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, FrozenSet, Optional, Sequence

import torch
from torch import Tensor, nn


class PolicyHead(nn.Module):
    """A state-conditioned action distribution with its own behaviour-cloning loss.

    All tensors carry a leading member dimension: ``obs`` is ``[M, B, obs_dim]``, actions
    ``[M, B, action_dim]`` in ``[-max_action, max_action]``, losses ``[M]`` (one per member, summed by
    the learner, so members never share gradients).

    ``differentiable_samples`` says whether :meth:`sample` keeps the graph back to the parameters,
    which objectives that maximise Q through the samples (``ql``) require. ``Settings`` declares the
    keys the constructor takes (see dqltoolkit/settings.py); ``capabilities`` which of the toolkit's
    kernels compute this exact class's math (dqltoolkit/capabilities.py; not inherited).
    """

    @dataclass
    class Settings:
        pass

    differentiable_samples: bool = True
    capabilities: ClassVar[FrozenSet[str]] = frozenset()
    #: the axis of :meth:`draw_noise`'s tensor that runs over rows (after the member axis); None: no noise
    noise_row_dim: ClassVar[Optional[int]] = None

    def __init__(self, obs_dim: int, action_dim: int, members: int = 1, max_action: float = 1.0) -> None:
        super().__init__()
        self.obs_dim, self.action_dim, self.members, self.max_action = obs_dim, action_dim, members, max_action

    def reset_parameters(self, generators: Sequence[torch.Generator]) -> None:
        raise NotImplementedError

    def behaviour_loss(self, obs: Tensor, actions: Tensor, generators: Sequence[torch.Generator]) -> Tensor:
        """The behaviour-cloning loss per member ``[M]``: the batch mean of :meth:`behaviour_loss_per_sample`."""
        return self.behaviour_loss_per_sample(obs, actions, generators).mean(dim=1)

    def behaviour_loss_per_sample(self, obs: Tensor, actions: Tensor, generators: Sequence[torch.Generator]) -> Tensor:
        """The loss of each transition ``[M, B]`` (same random draws as :meth:`behaviour_loss`): what weighted
        objectives (AWR) weight. A head defines this, or :meth:`behaviour_loss` alone if it has no per-sample form."""
        raise NotImplementedError(f"{type(self).__name__} offers no per-sample behaviour loss")

    def sample(self, obs: Tensor, generators: Sequence[torch.Generator], noise: Optional[Tensor] = None,
               steps: Optional[int] = None, *, sampler: Optional[str] = None) -> Tensor:
        """Actions ``[M, B, action_dim]`` for ``obs``. ``noise``: the randomness to use instead of drawing it
        (shaped like :meth:`draw_noise`'s); ``steps``: sampling steps for heads that have several (None: the
        head's full chain), which callers pass in and the head never stores; ``sampler``: the name of a
        registered solver (heads/samplers.py) for heads that run a reverse chain (None: the head's default).

        Callers pass ``sampler`` only when one is configured, so heads written before it existed, whose
        ``sample`` does not take it, keep working wherever no sampler is asked for."""
        raise NotImplementedError

    def draw_noise(self, rows: int, generators: Sequence[torch.Generator], device: torch.device,
                   steps: Optional[int] = None) -> Optional[Tensor]:
        """The noise :meth:`sample` would draw for ``rows`` rows (None: the head samples without noise).
        Acting uses it to act reproducibly: the same candidates' noise for every observation."""
        return None
