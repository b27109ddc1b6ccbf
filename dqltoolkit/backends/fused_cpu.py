"""The fused CPU operators as a backend: whole pieces of a Diffusion-QL step in one C++ call each.

Why: on a CPU a step of a few hundred small eager ops spends much of its time in per-op overhead
(dispatch, autograd bookkeeping, allocation); the operators in ``csrc/fused.cpp`` compute the TD target
(reverse chain of the EMA policy plus target critic), the critic's regression gradients and the actor's
Diffusion-QL gradients with hand-written backward passes, drawing the same random numbers in the same
order as the eager path, so results agree with it to float rounding (tests/test_fused.py).

Each piece is used only where the parts' exact classes declare the ``kernels`` capability and their
structure is what the operator implements (Mish networks, a two-layer time MLP); everything else runs
the eager kernel of dqltoolkit/learner.py. The decision is made once, here, when the learner is built.
"""

from __future__ import annotations

from typing import Any, Dict, List

from torch import Tensor

from .. import fused
from ..capabilities import KERNELS, declared, overrides
from ..heads.samplers import fused_plan, head_plan, kernel_ready, packed_multistep
from ..learner import EagerBackend, Grads, Learner
from ..nn import member_rand, member_randint, member_randn, mish
from ..objectives.base import Objective


def _mish_mlp(net: Any, min_layers: int = 2) -> bool:
    return getattr(net, "act", None) is mish and len(getattr(net, "layers", ())) >= min_layers


def _diffusion_ok(head: Any) -> bool:
    """The denoiser the operators implement: Mish layers after the first, a one-hidden-layer Mish time MLP."""
    return KERNELS in declared(head) and _mish_mlp(head.net) and _mish_mlp(head.time_mlp) and len(head.time_mlp.layers) == 2


def _critic_ok(critic: Any) -> bool:
    return critic is not None and KERNELS in declared(critic) and _mish_mlp(critic.q)


def fused_chain(ops: Any):
    """The head's reverse-chain kernel as the fused operator (an autograd node each way); a multistep
    sampler's plan (heads/samplers.py), which the head passes only without a graph, as the forward operator."""

    def kernel(noise: Tensor, sp: Tensor, tp: Tensor, w_action: Tensor, weights: List[Tensor], biases: List[Tensor],
               c: Dict[str, Any], lim: float) -> Tensor:
        if not kernel_ready(c):
            return fused.multistep_chain(ops, noise, sp, tp, w_action, weights, biases, packed_multistep(c), c["t"], lim)
        return fused.reverse_chain(ops, noise, sp, tp, w_action, weights, biases, c["packed"], c["t"], lim)

    return kernel


class FusedCPUBackend(EagerBackend):
    name = "fused-cpu"

    def __init__(self, learner: Learner, ops: Any) -> None:
        self.ops = ops
        head, critic, objective = learner.head, learner.critic, learner.objective
        self.chain = KERNELS in declared(head) and _mish_mlp(head.net)
        if self.chain:  # the head samples through the operator; a head that does not declare it keeps its own loop
            learner.head.chain_kernel = learner.ema_head.chain_kernel = fused_chain(ops)
        cfg = learner.config
        # the step operators compute one-step plans (ddpm, ddim: heads/samplers.py); with a multistep solver the
        # step's piece runs eagerly, its chain through the forward operator where no graph is needed
        self.target = (_diffusion_ok(head) and _critic_ok(critic) and critic.target_noise == 0
                       and not overrides(objective, Objective, "policy_sample")
                       and fused_plan(head, cfg.target_sample_steps, cfg.target_sampler) is not None)
        self.critic = _critic_ok(critic)
        self.actor = (_diffusion_ok(head) and _critic_ok(critic) and KERNELS in declared(objective)
                      and objective.q_grad_steps == 0 and not len(learner.aux)
                      and (objective.q_grad == "approx" or fused_plan(head, objective.q_sample_steps, objective.q_sampler) is not None))

    def describe(self) -> str:
        on = [name for name, flag in (("chain", self.chain), ("td-target", self.target), ("critic", self.critic),
                                      ("actor", self.actor)) if flag]
        return f"{self.name} ({', '.join(on) if on else 'nothing applies: eager'})"

    def td_target(self, learner: Learner, batch: Dict[str, Tensor]) -> Tensor:
        critic = learner.critic
        if not self.target or critic.gamma == 0:
            return super().td_target(learner, batch)
        import torch

        with torch.no_grad():
            rows = critic.backup_rows(batch["next_obs"])
            steps = learner.config.target_sample_steps or None
            noise = learner.ema_head.draw_noise(rows.shape[1], learner.train_generators, rows.device, steps)
            q = fused.target_q(self.ops, learner.ema_head, critic.target, rows, noise, steps or 0, learner.config.target_sampler or None)
            return critic.backup(batch, q)

    def critic_grads(self, learner: Learner, batch: Dict[str, Tensor], target: Tensor) -> Grads:
        if not self.critic:
            return super().critic_grads(learner, batch, target)
        loss, norm, grads = fused.critic_regression(self.ops, learner.critic.q, batch["obs"], batch["actions"], target,
                                                    learner.config.grad_norm)
        return loss, {}, grads, norm

    def actor_grads(self, learner: Learner, batch: Dict[str, Tensor], critic: Any) -> Grads:
        if not self.actor:
            return super().actor_grads(learner, batch, critic)
        head, objective, gens = learner.head, learner.objective, learner.train_generators
        obs, actions = batch["obs"], batch["actions"]
        M, B, A = actions.shape
        # the eager path's draws, in its order: BC step and noise, the chain's noise, the critic coin
        t = member_randint(gens, head.T, (B,), obs.device)
        bc_noise = member_randn(gens, (B, A), obs.device)
        approx = objective.q_grad == "approx"
        # the Q term's chain (q_sample_steps 0: the full chain); approx runs none, whatever solver is configured
        plan = None if approx else head_plan(head, objective.q_sample_steps, objective.q_sampler)
        chain_noise = None if plan is None else member_randn(gens, (len(plan["t"]), B, A), obs.device)
        coin = member_rand(gens, (), obs.device)
        eta = objective.current_eta()
        bc, ql, norm, grads = fused.ql_actor(self.ops, head, learner.actor_params, learner.critic_params, obs, actions, t, bc_noise,
                                             chain_noise, coin, eta, approx, learner.config.grad_norm, plan=plan)
        return bc + eta * ql, {"bc_loss": bc, "ql_loss": ql}, grads, norm
