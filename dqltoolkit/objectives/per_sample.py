"""Per-sample behaviour losses ``[M, B]`` for weighted objectives (AWR): the heads' own
``behaviour_loss_per_sample`` (dqltoolkit/heads/base.py), with a clear error for heads without one.

Why: a head's ``behaviour_loss`` returns the batch mean per seed ``[M]``, but advantage-weighted
regression weights each transition's own loss.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from ..heads.base import PolicyHead


def supports(head_cls: type) -> bool:
    """Whether heads of this class give a per-sample behaviour loss."""
    return getattr(head_cls, "behaviour_loss_per_sample", None) is not PolicyHead.behaviour_loss_per_sample


def per_sample_behaviour_loss(head: PolicyHead, obs: Tensor, actions: Tensor, generators: Sequence[torch.Generator]) -> Tensor:
    """The head's behaviour loss per transition, ``[M, B]``; its mean over B is ``head.behaviour_loss``."""
    if not supports(type(head)):
        raise TypeError(f"{type(head).__name__} offers no per-sample behaviour loss: define behaviour_loss_per_sample(obs, actions, "
                        f"generators) -> [M, B] on it")
    return head.behaviour_loss_per_sample(obs, actions, generators)
