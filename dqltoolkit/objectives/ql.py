"""Diffusion-QL's objective, usable with any head: L = L_bc + eta * L_q.

L_q is the reference code's normalised term: with probability 1/2, ``-mean(Q1(s, a0)) / mean|Q2(s, a0)|``
(denominator detached), otherwise with Q1 and Q2 swapped, where a0 is sampled from the head with
gradients (an ensemble critic: a uniformly drawn network, normalised by the next one). Each member flips
its own coin, so multi-seed runs equal separate runs.
"""

from __future__ import annotations

from typing import Dict, Sequence, Tuple

import torch
from torch import Tensor

from ..nn import member_rand, member_randint, member_randn
from ..registry import OBJECTIVES
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
    name = "ql"
    uses_critic = True
    needs_differentiable_samples = True

    def __init__(self, eta: float = 1.0, q_grad: str = "exact", eta_warmup: int = 0, q_start: int = 0, q_grad_steps: int = 0, **_: object) -> None:
        if q_grad not in ("exact", "approx"):
            raise ValueError(f"ql objective: q_grad must be 'exact' or 'approx', got {q_grad!r}")
        self.eta, self.q_grad, self.eta_warmup, self.q_start = float(eta), q_grad, int(eta_warmup), int(q_start)
        self.q_grad_steps = int(q_grad_steps)
        self.step = 0  # set by the agent before each actor update

    def current_eta(self) -> float:
        """0 for the first ``q_start`` steps (behaviour cloning only), then eta ramped linearly from 0 over
        ``eta_warmup`` steps. Both 0 (the paper): a constant eta from the first step."""
        if self.step < self.q_start:
            return 0.0
        if self.eta_warmup <= 0:
            return self.eta
        return self.eta * min(1.0, (self.step - self.q_start) / self.eta_warmup)

    def graph_key(self) -> float:
        return self.current_eta()

    def _bc_and_actions(self, head, obs, actions, generators, after_bc=None) -> Tuple[Tensor, Tensor]:
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
        return bc, head.sample(obs, generators, grad_steps=self.q_grad_steps) if self.q_grad_steps else head.sample(obs, generators)

    def _q_loss(self, critic, obs: Tensor, new_actions: Tensor, generators) -> Tensor:
        q = q_of(critic, obs, new_actions)
        return normalised_q_loss(q, member_rand(generators, (), obs.device))

    def actor_loss(self, head, critic, obs, actions, generators, aux=None) -> Tuple[Tensor, Dict[str, Tensor]]:
        bc, new_actions = self._bc_and_actions(head, obs, actions, generators)
        ql = self._q_loss(critic, obs, new_actions, generators)
        return bc + self.current_eta() * ql, {"bc_loss": bc, "ql_loss": ql}

    def actor_loss_and_grads(self, head, critic, obs, actions, generators, params, aux=None):
        """:meth:`actor_loss` and its gradients w.r.t. ``params``, in two backward passes: the BC term's
        right after its forward, before the critic is read, then the Q term's.

        Why: on a GPU the critic's update runs on a second stream and the actor waits for it only where
        its loss reads the critic; back-propagating the BC term before that point moves its backward
        off the step's critical path. Same random numbers in the same order as :meth:`actor_loss`; the
        gradients differ from one joint backward by float rounding only."""
        g_bc: list = []

        def bc_backward(bc: Tensor, shared: bool) -> None:
            g_bc.extend(torch.autograd.grad(bc.sum(), params, retain_graph=shared, allow_unused=True))

        bc, new_actions = self._bc_and_actions(head, obs, actions, generators, after_bc=bc_backward)
        ql = self._q_loss(critic, obs, new_actions, generators)
        eta = self.current_eta()
        g_q = torch.autograd.grad((eta * ql).sum(), params, allow_unused=True)
        grads = [a if b is None else (b if a is None else a + b) for a, b in zip(g_bc, g_q)]
        grads = [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]
        return bc + eta * ql, {"bc_loss": bc, "ql_loss": ql}, grads

    def actor_grads(self, head, critic, obs, actions, generators, aux=None, head_params=None, critic_params=None, max_norm=0.0):
        """``(actor loss, parts, per-seed gradient norms, gradients)`` from one fused CPU operator, the
        gradients w.r.t. ``head_params`` (default ``head.parameters()``) clipped per seed to ``max_norm``
        when > 0, for a Mish diffusion head with a twin or ensemble Mish critic (``critic_params``: its online
        parameters); None where that does not apply (the agent then differentiates :meth:`actor_loss`).
        Draws the same random numbers in the same order as the eager path."""
        from .. import fused
        from ..critics.double_q import DoubleQCritic
        from ..heads.diffusion import DiffusionHead
        from ..nn import mish

        if not isinstance(head, DiffusionHead) or not isinstance(critic, DoubleQCritic) or aux or self.q_grad_steps:
            return None
        if any(n.act is not mish for n in (head.net, head.time_mlp, critic.q)) or len(head.net.layers) < 2:
            return None
        if len(head.time_mlp.layers) != 2 or critic.q.layers[0].weight.shape[0] != critic.n_q * head.members:
            return None  # the operator expects a one-hidden-layer time MLP and n_q critics per seed
        ops = fused.applicable(obs, actions)
        if ops is None:
            return None
        M, B, A = actions.shape
        t = member_randint(generators, head.T, (B,), obs.device)
        bc_noise = member_randn(generators, (B, A), obs.device)
        approx = self.q_grad == "approx"
        chain_noise = None if approx else member_randn(generators, (len(head.chain(head.sample_steps)["t"]), B, A), obs.device)
        coin = member_rand(generators, (), obs.device)
        eta = self.current_eta()
        head_params = list(head.parameters()) if head_params is None else head_params
        critic_params = list(critic.q.parameters()) if critic_params is None else critic_params
        bc, ql, norm, grads = fused.ql_actor(ops, head, head_params, critic_params, obs, actions, t, bc_noise, chain_noise, coin, eta, approx,
                                             max_norm)
        return bc + eta * ql, {"bc_loss": bc, "ql_loss": ql}, norm, grads
