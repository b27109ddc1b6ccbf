"""BEAR-style support matching (Kumar et al. 2019): the policy head is kept near a behaviour CVAE by MMD.

The objective owns the behaviour model (a CVAE trained on its ELBO) and a Lagrange multiplier alpha.
Per state, ``mmd_samples`` policy samples are compared with as many CVAE samples (detached) under a
Laplacian or Gaussian kernel. With ``eta`` = 0 this is behaviour cloning by MMD ("BC-MMD"); with
``eta`` > 0 it adds a -Q term and alpha is trained by dual ascent on alpha * (MMD - ``mmd_threshold``),
log alpha clamped to [-5, 10]. The -Q term (``mmd_q``) is Diffusion-QL's normalised one (``normalised``,
the paper's "QL-MMD" panel) or BEAR's own, -mean min_j Q_j(s, pi(s)) over the critic's networks (``min``).
``q_start`` > 0 is BEAR's warm-up: the Q term joins after that many steps (support matching alone before).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Hashable, Sequence

import torch
from torch import Tensor, nn

from ..heads.cvae import CVAEHead
from ..nn import member_rand
from ..registry import OBJECTIVES
from ..settings import setting
from .base import Objective, q_of
from .ql import normalised_q_loss


def mmd(x: Tensor, y: Tensor, kernel: str = "laplacian", sigma: float = 20.0) -> Tensor:
    """MMD between sample sets ``x`` and ``y`` ``[..., N, A]`` -> ``[...]`` (BEAR's estimator, sqrt of MMD^2)."""

    def k(a, b):
        diff = a.unsqueeze(-2) - b.unsqueeze(-3)
        if kernel == "laplacian":
            return torch.exp(-diff.abs().sum(-1) / (2.0 * sigma)).mean(dim=(-1, -2))
        return torch.exp(-diff.pow(2).sum(-1) / (2.0 * sigma)).mean(dim=(-1, -2))

    return (k(x, x) + k(y, y) - 2.0 * k(x, y) + 1e-6).sqrt()


class LogAlpha(nn.Module):
    """One Lagrange multiplier per member, ``[M, 1]`` (member-first, like every other parameter)."""

    def __init__(self, members: int) -> None:
        super().__init__()
        self.log_alpha = nn.Parameter(torch.zeros(members, 1))

    def reset_parameters(self, generators: Sequence[torch.Generator]) -> None:
        with torch.no_grad():
            self.log_alpha.zero_()

    def forward(self) -> Tensor:
        return self.log_alpha.clamp(-5.0, 10.0).exp().squeeze(-1)


@OBJECTIVES.register("mmd")
class MMDObjective(Objective):
    @dataclass
    class Settings(Objective.Settings):
        eta: float = setting(0.0, "weight of the -Q term (0: behaviour cloning by MMD)", min=0)
        mmd_kernel: str = setting("laplacian", "kernel", choices=("laplacian", "gaussian"))
        mmd_sigma: float = setting(20.0, "kernel bandwidth", min=0)
        mmd_samples: int = setting(10, "policy and behaviour samples per state", min=1, max=10_000)
        mmd_threshold: float = setting(0.05, "Lagrange constraint MMD <= threshold (eta > 0)")
        mmd_q: str = setting("normalised", "the -Q term: Diffusion-QL's normalised one | min (BEAR's -min_j Q_j)",
                             choices=("normalised", "min"))
        q_start: int = setting(0, "support matching alone for this many steps before the Q term (BEAR: 40k)", min=0)
        hidden: int = setting(256, "behaviour CVAE width (shared with the head's `hidden` when given flat)", min=1, max=16384)

    name = "mmd"
    needs_differentiable_samples = True
    greedy_acting = True  # BEAR's policy: the highest-valued of its sampled actions

    def __init__(self, eta: float = 0.0, mmd_kernel: str = "laplacian", mmd_sigma: float = 20.0, mmd_samples: int = 10,
                 mmd_threshold: float = 0.05, mmd_q: str = "normalised", q_start: int = 0, hidden: int = 256) -> None:
        if mmd_kernel not in ("laplacian", "gaussian"):
            raise ValueError(f"mmd objective: mmd_kernel must be 'laplacian' or 'gaussian', got {mmd_kernel!r}")
        if mmd_q not in ("normalised", "min"):
            raise ValueError(f"mmd objective: mmd_q must be 'normalised' or 'min', got {mmd_q!r}")
        self.q_term, self.q_start = mmd_q, int(q_start)
        self.step = 0  # set by the agent before each actor update
        self.eta, self.kernel, self.sigma = float(eta), mmd_kernel, float(mmd_sigma)
        self.n, self.threshold = int(mmd_samples), float(mmd_threshold)
        self.uses_critic = self.eta > 0
        self.hidden = int(hidden)

    def schedule_key(self, step: int) -> Hashable:
        return step >= self.q_start  # the Q term is on or off

    def build(self, obs_dim, action_dim, members, config):
        modules = {"behaviour": CVAEHead(obs_dim, action_dim, members, hidden=self.hidden)}
        if self.eta > 0:
            modules["alpha"] = LogAlpha(members)
        return modules

    def actor_loss(self, head, critic, obs, actions, generators, aux=None):
        M, B, _ = obs.shape
        elbo = aux["behaviour"].behaviour_loss(obs, actions, generators)
        rep = obs.repeat_interleave(self.n, dim=1)
        pi = head.sample(rep, generators)
        with torch.no_grad():
            beta = aux["behaviour"].sample(rep, generators)
        dist = mmd(pi.view(M, B, self.n, -1), beta.view(M, B, self.n, -1), self.kernel, self.sigma).mean(dim=1)
        info = {"bc_loss": elbo, "mmd": dist}
        if self.eta <= 0:
            return elbo + dist, info
        alpha = aux["alpha"]()
        if self.step < self.q_start:  # warm-up: no critic read at all, the multiplier already adapting
            ql = torch.zeros_like(dist)
        elif self.q_term == "min":  # BEAR: the conservative value of the policy's action, unnormalised
            ql = -self._policy_q(critic, obs, pi).min(dim=1).values.mean(dim=1)
        else:
            ql = normalised_q_loss(self._policy_q(critic, obs, pi), member_rand(generators, (), obs.device))
        alpha_loss = -aux["alpha"]().mul(dist.detach() - self.threshold)
        info.update(ql_loss=ql, alpha=alpha.detach())
        return elbo + alpha.detach() * dist + self.eta * ql + alpha_loss, info

    def _policy_q(self, critic, obs: Tensor, pi: Tensor) -> Tensor:
        """Q-values ``[M, n_q, B]`` of the first of each state's policy samples."""
        M, B, _ = obs.shape
        return q_of(critic, obs, pi.view(M, B, self.n, -1)[:, :, 0])
