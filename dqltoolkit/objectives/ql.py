"""Diffusion-QL's objective, usable with any head: L = L_bc + eta * L_q.

L_q is the reference code's normalised term: with probability 1/2, ``-mean(Q1(s, a0)) / mean|Q2(s, a0)|``
(denominator detached), otherwise with Q1 and Q2 swapped, where a0 is sampled from the head with
gradients (an ensemble critic: a uniformly drawn network, normalised by the next one). Each member flips
its own coin, so multi-seed runs equal separate runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Hashable, Tuple

import torch
from torch import Tensor

from ..capabilities import KERNELS
from ..heads.samplers import check_sampler
from ..nn import member_rand
from ..registry import OBJECTIVES
from ..settings import setting
from .base import Objective, q_of


def normalised_q_loss(q: Tensor, coin: Tensor) -> Tensor:
    """``q`` ``[M, N, B]`` Q-values of policy samples, ``coin`` ``[M]`` in [0, 1) -> loss ``[M]``.

    Twins (N = 2): Q1 normalised by mean|Q2| when coin > 0.5, else Q2 by mean|Q1|, as the reference code.
    An ensemble generalises the same rule: network i = floor((1 - coin) N) is maximised, normalised by
    network i + 1 (mod N); for N = 2 that is exactly the twins' rule."""
    mean = q.mean(dim=2)
    scale = q.abs().mean(dim=2).detach()
    n = q.shape[1]
    if n == 2:
        use_q1 = coin > 0.5
        return torch.where(use_q1, -mean[:, 0] / scale[:, 1], -mean[:, 1] / scale[:, 0])
    i = ((1.0 - coin) * n).floor().long().clamp_(0, n - 1).view(-1, 1)
    return -mean.gather(1, i).squeeze(1) / scale.gather(1, (i + 1) % n).squeeze(1)


@OBJECTIVES.register("ql")
class QLObjective(Objective):
    @dataclass
    class Settings(Objective.Settings):
        eta: float = setting(1.0, "weight of the normalised -Q term", min=0)
        q_grad: str = setting("exact", "exact (through the reverse chain) | approx (EDP's one-step estimate; heads without "
                              "a chain use their samples)", choices=("exact", "approx"))
        q_grad_steps: int = setting(0, "exact: back-propagate through the last k reverse steps only (0: all, the paper)", min=0, max=10_000)
        q_sampler: str = setting("", "exact: the solver of the sampled actions ('': the head's default_sampler)")
        q_sample_steps: int = setting(0, "exact: reverse steps of the sampled actions (0: all T; fewer: respaced)", min=0, max=10_000)
        q_start: int = setting(0, "behaviour-cloning-only steps before the Q term starts (0: the paper)", min=0)
        eta_warmup: int = setting(0, "steps over which eta then ramps up from 0 (0: constant, the paper)", min=0)

    name = "ql"
    uses_critic = True
    needs_differentiable_samples = True
    capabilities = frozenset({KERNELS})

    def __init__(self, eta: float = 1.0, q_grad: str = "exact", eta_warmup: int = 0, q_start: int = 0, q_grad_steps: int = 0,
                 q_sampler: str = "", q_sample_steps: int = 0) -> None:
        if q_grad not in ("exact", "approx"):
            raise ValueError(f"ql objective: q_grad must be 'exact' or 'approx', got {q_grad!r}")
        if q_sampler:
            check_sampler(q_sampler, "ql objective: q_sampler")
        self.eta, self.q_grad, self.eta_warmup, self.q_start = float(eta), q_grad, int(eta_warmup), int(q_start)
        self.q_grad_steps, self.q_sampler, self.q_sample_steps = int(q_grad_steps), q_sampler, int(q_sample_steps)
        self.step = 0  # set by the learner before each actor update

    def current_eta(self) -> float:
        """0 for the first ``q_start`` steps (behaviour cloning only), then eta ramped linearly from 0 over
        ``eta_warmup`` steps. Both 0 (the paper): a constant eta from the first step."""
        if self.step < self.q_start:
            return 0.0
        if self.eta_warmup <= 0:
            return self.eta
        return self.eta * min(1.0, (self.step - self.q_start) / self.eta_warmup)

    def schedule_key(self, step: int) -> Hashable:
        saved, self.step = self.step, step
        try:
            return self.current_eta()
        finally:
            self.step = saved

    def bc_and_actions(self, head, obs, actions, generators, after_bc=None) -> Tuple[Tensor, Tensor]:
        """The BC loss and the actions whose Q the term maximises. ``after_bc(bc, shared)`` runs in between,
        before the chain is sampled; ``shared``: the actions come out of bc's own graph (EDP's estimate)."""
        if self.q_grad == "approx" and hasattr(head, "behaviour_loss_and_estimate"):
            # heads without a reverse chain (gaussian, cvae, deterministic) have nothing to approximate:
            # their reparameterised samples are already one step, so they take the exact branch
            bc, new_actions = head.behaviour_loss_and_estimate(obs, actions, generators)
            if after_bc is not None:
                after_bc(bc, True)
            return bc, new_actions
        bc = head.behaviour_loss(obs, actions, generators)
        if after_bc is not None:
            after_bc(bc, False)
        return bc, head.sample(obs, generators, **self.sample_options())

    def sample_options(self) -> Dict[str, object]:
        """The keywords of the Q term's ``head.sample``: only those set, so heads whose ``sample`` predates them work."""
        kw: Dict[str, object] = {}
        if self.q_grad_steps:
            kw["grad_steps"] = self.q_grad_steps
        if self.q_sample_steps:
            kw["steps"] = self.q_sample_steps
        if self.q_sampler:
            kw["sampler"] = self.q_sampler
        return kw

    def q_loss(self, critic, obs: Tensor, new_actions: Tensor, generators) -> Tensor:
        q = q_of(critic, obs, new_actions)
        return normalised_q_loss(q, member_rand(generators, (), obs.device))

    def actor_loss(self, head, critic, obs, actions, generators, aux=None) -> Tuple[Tensor, Dict[str, Tensor]]:
        bc, new_actions = self.bc_and_actions(head, obs, actions, generators)
        return self.combine(bc, self.q_loss(critic, obs, new_actions, generators))

    def combine(self, bc: Tensor, ql: Tensor) -> Tuple[Tensor, Dict[str, Tensor]]:
        """L = L_bc + eta L_q and its parts: the one place the two terms meet (the backends' faster forms,
        which compute the terms another way, combine them here too)."""
        return bc + self.current_eta() * ql, {"bc_loss": bc, "ql_loss": ql}
