"""Advantage-weighted regression (AWR; IQL's policy extraction): behaviour cloning, each transition
weighted by exp(beta (Q(s, a) - V(s))), clipped at ``weight_clip``.

Why: with a critic trained on dataset actions only (IQL), the policy is extracted without ever
evaluating Q at the policy's own actions: it imitates the data, more so where the data did better than
V. Q is the critic's min over its target networks and V its online state value (as IQL), both without
gradients; the weights multiply the head's own per-sample behaviour loss (negative log-likelihood for
the gaussian head, the denoising error for the diffusion head; see objectives/per_sample.py).

IQL evaluates its Gaussian policy by its mean: ``act_mode: mode`` makes the trained policy (acting, and
the samples ``sample_policy_actions`` reports) the head's mode where the head exposes its distribution
(gaussian), and its samples otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import torch
from torch import Tensor, nn

from ..heads.base import PolicyHead
from ..registry import CRITICS, HEADS, OBJECTIVES
from ..settings import ConfigError, setting
from .base import Objective, head_sample
from .per_sample import per_sample_behaviour_loss, supports


def awr_weights(q: Tensor, v: Tensor, beta: float, weight_clip: float) -> Tensor:
    """exp(beta (q - v)), clipped above at ``weight_clip``; any shape."""
    return torch.exp(beta * (q - v)).clamp(max=weight_clip)


def head_mode(head: PolicyHead, obs: Tensor) -> Optional[Tensor]:
    """The head's most likely action ``[M, B, A]`` where it exposes a Gaussian (``distribution``), else None.
    A tanh-squashed Gaussian's mode is taken as tanh of the mean (IQL's deterministic action)."""
    dist = getattr(head, "distribution", None)
    if dist is None:
        return None
    mu = dist(obs)[0]
    if getattr(head, "squash", "clip") == "tanh":
        return head.max_action * torch.tanh(mu)
    return mu.clamp(-head.max_action, head.max_action)


@OBJECTIVES.register("awr")
class AWRObjective(Objective):
    @dataclass
    class Settings(Objective.Settings):
        beta: float = setting(3.0, "inverse temperature of the advantage weights (IQL locomotion 3, antmaze 10)", min=0)
        weight_clip: float = setting(100.0, "upper clip of exp(beta * advantage) (IQL: 100)", min=0)
        act_mode: str = setting("mode", "the trained policy: the head's mode where it has one (IQL's evaluation) | sample",
                                choices=("mode", "sample"))

    name = "awr"
    uses_critic = True
    needs_differentiable_samples = False

    def __init__(self, beta: float = 3.0, weight_clip: float = 100.0, act_mode: str = "mode") -> None:
        if act_mode not in ("mode", "sample"):
            raise ValueError(f"awr objective: act_mode must be 'mode' or 'sample', got {act_mode!r}")
        self.beta, self.weight_clip, self.act_mode = float(beta), float(weight_clip), act_mode

    def build(self, obs_dim, action_dim, members, config) -> Dict[str, nn.Module]:
        """No networks; checks that the critic has a state value and the head a per-sample loss."""
        critic_cls, head_cls = CRITICS.get(config.critic), HEADS.get(config.head)
        if not callable(getattr(critic_cls, "state_values", None)):
            raise ConfigError(f"objective 'awr' weights by Q(s, a) - V(s) and needs a critic with state values "
                              f"(`state_values`, e.g. critic 'iql'); critic {config.critic!r} has none")
        if not supports(head_cls):
            raise ConfigError(f"objective 'awr' weights each transition's behaviour loss, and head {config.head!r} "
                              f"offers no per-sample loss (see dqltoolkit/objectives/per_sample.py)")
        return {}

    def policy_sample(self, head, aux, obs, generators, noise=None, steps=None, *, sampler=None):
        if self.act_mode == "mode":
            mode = head_mode(head, obs)
            if mode is not None:
                return mode
        return head_sample(head, obs, generators, noise, steps, sampler)

    def advantage_weights(self, critic, obs: Tensor, actions: Tensor) -> Tuple[Tensor, Tensor]:
        """The weights ``[M, B]`` and the advantages min_j Q'_j(s, a) - V(s) they come from, no graph."""
        with torch.no_grad():
            adv = critic.reduce(critic.target_values(obs, actions)) - critic.state_values(obs)
            return awr_weights(adv, 0.0, self.beta, self.weight_clip), adv

    def actor_loss(self, head, critic, obs, actions, generators, aux=None) -> Tuple[Tensor, Dict[str, Tensor]]:
        w, adv = self.advantage_weights(critic, obs, actions)
        per_sample = per_sample_behaviour_loss(head, obs, actions, generators)
        loss = (w * per_sample).mean(dim=1)
        return loss, {"bc_loss": per_sample.detach().mean(dim=1), "awr_weight": w.mean(dim=1), "advantage": adv.mean(dim=1)}
