"""Per-sample behaviour losses ``[M, B]`` for weighted objectives (AWR), without changing the heads.

Why: a head's ``behaviour_loss`` returns the batch mean per seed ``[M]``, but advantage-weighted
regression weights each transition's own loss. The head interface has no per-sample loss yet, so this
module derives one from each shipped head's public methods, with the same random draws in the same
order as its ``behaviour_loss`` (so the mean over the batch equals it):
- gaussian: -log pi(a | s) from ``log_prob``;
- diffusion: the denoising error of one (t, eps) draw per sample, from ``predict_noise``;
- deterministic: the squared error to the dataset action.
A head that defines ``behaviour_loss_per_sample(obs, actions, generators) -> [M, B]`` itself is used
as it is (the interface this module stands in for); others are registered with :func:`register`.
"""

from __future__ import annotations

from typing import Callable, Dict, Sequence

import torch
from torch import Tensor

from ..heads.base import PolicyHead
from ..heads.deterministic import DeterministicHead
from ..heads.diffusion import DiffusionHead
from ..heads.gaussian import GaussianHead
from ..nn import member_randint, member_randn

#: (head, obs, actions, generators) -> per-sample loss [M, B]
PerSampleLoss = Callable[[PolicyHead, Tensor, Tensor, Sequence[torch.Generator]], Tensor]
_LOSSES: Dict[type, PerSampleLoss] = {}


def register(head_cls: type) -> Callable[[PerSampleLoss], PerSampleLoss]:
    """Declare the per-sample loss of ``head_cls`` (exact class: a subclass that changes its loss must
    declare its own, or define ``behaviour_loss_per_sample``)."""

    def add(fn: PerSampleLoss) -> PerSampleLoss:
        _LOSSES[head_cls] = fn
        return fn

    return add


def supports(head_cls: type) -> bool:
    """Whether :func:`per_sample_behaviour_loss` can compute the loss of heads of this class."""
    return hasattr(head_cls, "behaviour_loss_per_sample") or head_cls in _LOSSES


def per_sample_behaviour_loss(head: PolicyHead, obs: Tensor, actions: Tensor, generators: Sequence[torch.Generator]) -> Tensor:
    """The head's behaviour loss per transition, ``[M, B]``; its mean over B is ``head.behaviour_loss``."""
    own = getattr(head, "behaviour_loss_per_sample", None)
    if own is not None:
        return own(obs, actions, generators)
    fn = _LOSSES.get(type(head))
    if fn is None:
        raise TypeError(f"{type(head).__name__} offers no per-sample behaviour loss (define behaviour_loss_per_sample, or "
                        f"register one in dqltoolkit/objectives/per_sample.py); known heads: "
                        f"{', '.join(sorted(c.__name__ for c in _LOSSES))}")
    return fn(head, obs, actions, generators)


@register(GaussianHead)
def _gaussian(head: GaussianHead, obs: Tensor, actions: Tensor, generators: Sequence[torch.Generator]) -> Tensor:
    return -head.log_prob(obs, actions)


@register(DiffusionHead)
def _diffusion(head: DiffusionHead, obs: Tensor, actions: Tensor, generators: Sequence[torch.Generator]) -> Tensor:
    # the head's own draws, in its order: the step per sample, then the noise
    _, B, A = actions.shape
    t = member_randint(generators, head.T, (B,), actions.device)
    noise = member_randn(generators, (B, A), actions.device)
    x_t = head.sqrt_abar[t].unsqueeze(-1) * actions + head.sqrt_1m_abar[t].unsqueeze(-1) * noise
    return (head.predict_noise(x_t, t, obs) - noise).pow(2).mean(dim=-1)


@register(DeterministicHead)
def _deterministic(head: DeterministicHead, obs: Tensor, actions: Tensor, generators: Sequence[torch.Generator]) -> Tensor:
    return (head(obs) - actions).pow(2).mean(dim=-1)
