"""The fused CPU operators as a backend: whole pieces of a Diffusion-QL step in one C++ call each.

Why: on a CPU a step of a few hundred small eager ops spends much of its time in per-op overhead
(dispatch, autograd bookkeeping, allocation); the operators in ``csrc/fused.cpp`` compute the TD target
(reverse chain of the EMA policy plus target critic), the critic's regression gradients and the actor's
Diffusion-QL gradients with hand-written backward passes, drawing the same random numbers in the same
order as the eager path, so results agree with it to float rounding (tests/test_fused.py).

Each piece is used only where the parts' exact classes declare the ``kernels`` capability and their
structure is what the operator implements (Mish networks, a two-layer time MLP); everything else runs
the eager kernel of dqltoolkit/learner.py. The decision is made once, here, when the learner is built.

This file is the operators' whole Python side, in three parts: autograd wrappers (a reverse chain, a Mish
MLP after its first layer, one node each way), the step operators (whole pieces of a step, forward and
hand-written backward in one call) and the backend that installs and calls them. Its contract: each
computes what the eager path computes over the parts' methods, to float rounding (tests/test_fused.py);
the C++ (csrc/fused.cpp, csrc/mish.c) is built and loaded by dqltoolkit/_native.py.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

import torch
from torch import Tensor

from .._native import fused_ops
from ..capabilities import KERNELS, declared, overrides
from ..heads.samplers import fused_plan, kernel_ready, packed_multistep
from ..learner import EagerBackend, Grads, Learner
from ..nn import EnsembleMLP, member_rand, member_randint, member_randn, mish
from ..objectives.base import Objective

# --- autograd wrappers: a reverse chain, or a Mish MLP after its first layer, as one node each way ---


def applicable(*tensors: Tensor) -> Any:
    """The fused operators if they can run on these tensors (CPU, float32, library built), else None."""
    for t in tensors:
        if t.is_cuda or t.dtype != torch.float32 or t.device.type != "cpu":
            return None
    return fused_ops()


class _ReverseChain(torch.autograd.Function):
    @staticmethod
    def forward(ctx, ops, coef, tidx, lim, noise, sp, tp, w1a, *params):  # type: ignore[override]
        L = len(params) // 2
        x, saved = ops.chain_fwd(noise, sp, tp, w1a, params[:L], params[L:], coef, tidx, lim, True)
        ctx.meta = (ops, coef, tidx, lim, L)
        ctx.tensors = (tp, w1a, params, saved)
        return x

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        ops, coef, tidx, lim, L = ctx.meta
        tp, w1a, params, saved = ctx.tensors
        del ctx.tensors  # the step buffers are freed as soon as the gradients exist
        grads = ops.chain_bwd(grad, tp, w1a, params[:L], params[L:], saved, coef, tidx, lim)
        return (None, None, None, None, None, *grads)


def reverse_chain(ops, noise: Tensor, state_part: Tensor, time_part: Tensor, w_action: Tensor, weights: Sequence[Tensor],
                  biases: Sequence[Tensor], coef: List[float], tidx: List[int], lim: float) -> Tensor:
    """The clamped end of the reverse chain (see ``chain_fwd`` in fused.cpp for the argument layout);
    differentiable w.r.t. everything but the noise when grad mode is on."""
    params = [*weights, *biases]
    if torch.is_grad_enabled() and any(t.requires_grad for t in (state_part, time_part, w_action, *params)):
        return _ReverseChain.apply(ops, coef, tidx, lim, noise, state_part, time_part, w_action, *params)
    return ops.chain_fwd(noise, state_part, time_part, w_action, weights, biases, coef, tidx, lim, False)[0]


def multistep_chain(ops, noise: Tensor, state_part: Tensor, time_part: Tensor, w_action: Tensor, weights: Sequence[Tensor],
                    biases: Sequence[Tensor], coef: List[float], tidx: List[int], lim: float) -> Tensor:
    """The clamped end of a multistep plan's chain (six numbers per position: ``chain_fwd_multistep`` in
    fused.cpp), forward only: acting and the critic's targets need no graph; training samples of a
    multistep solver run the head's eager loop."""
    if torch.is_grad_enabled() and any(t.requires_grad for t in (state_part, time_part, w_action, *weights, *biases)):
        raise RuntimeError("multistep_chain has no backward: run the head's eager loop where gradients are needed")
    return ops.chain_fwd_multistep(noise, state_part, time_part, w_action, weights, biases, coef, tidx, lim)


class _MLPTail(torch.autograd.Function):
    @staticmethod
    def forward(ctx, ops, h1, bias1, *params):  # type: ignore[override]
        L = len(params) // 2
        out, saved = ops.mlp_fwd(h1, bias1, params[:L], params[L:], True)
        ctx.meta = (ops, L)
        ctx.tensors = (bias1, params, saved)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        ops, L = ctx.meta
        bias1, params, saved = ctx.tensors
        del ctx.tensors
        need = ctx.needs_input_grad
        grads = ops.mlp_bwd(grad, bias1, params[:L], params[L:], saved, any(need[3:]))
        # the operator returns undefined tensors for weights it skipped; autograd wants None there
        return (None, grads[0] if need[1] else None, grads[1] if need[2] else None,
                *(g if n else None for g, n in zip(grads[2:], need[3:])))


def mlp_tail(ops, h1: Tensor, bias1: Tensor, weights: Sequence[Tensor], biases: Sequence[Tensor]) -> Tensor:
    """``mish(h1 + bias1)`` through the remaining Mish layers and the output layer, as one operator."""
    params = [*weights, *biases]
    if torch.is_grad_enabled() and any(t.requires_grad for t in (h1, bias1, *params)):
        return _MLPTail.apply(ops, h1, bias1, *params)
    return ops.mlp_fwd(h1, bias1, weights, biases, False)[0]


# --- what the backend installs, and where it applies ---


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
            return multistep_chain(ops, noise, sp, tp, w_action, weights, biases, packed_multistep(c), c["t"], lim)
        return reverse_chain(ops, noise, sp, tp, w_action, weights, biases, c["packed"], c["t"], lim)

    return kernel


def fused_mlp(ops: Any):
    """``EnsembleMLP.tail`` as the fused operator (one autograd node each way), for a Mish network on CPU
    float32 tensors; anything else (a swapped activation, another device or dtype) runs the torch layers."""

    def kernel(net: EnsembleMLP, h: Tensor, bias: Tensor, detach_params: bool) -> Tensor:
        if net.act is not mish or applicable(h, bias) is None:
            return net.tail(h, bias, detach_params)
        rest = list(net.layers)[1:]
        ws, bs = [m.weight for m in rest], [m.bias for m in rest]
        if detach_params:
            ws, bs = [w.detach() for w in ws], [b.detach() for b in bs]
        return mlp_tail(ops, h, bias, ws, bs)

    return kernel


def install_mlp_kernels(ops: Any, modules: Any) -> int:
    """The fused MLP kernel on every plain Mish network inside ``modules`` (its math is nn.EnsembleMLP's,
    whichever part holds it); how many got it."""
    nets = [net for module in modules if module is not None for net in module.modules()
            if type(net) is EnsembleMLP and _mish_mlp(net)]
    for net in nets:
        net.kernel = fused_mlp(ops)
    return len(nets)


# --- the step operators: whole pieces of a step, forward and hand-written backward in one call each ---


def critic_regression(ops: Any, net, obs: Tensor, actions: Tensor, y: Tensor, max_norm: float = 0.0):
    """Per-member loss ``sum_twins mean_b (Q(s, a) - y)^2``, per-seed gradient norms and the gradients for
    every parameter of the member-batched twin network ``net`` (in ``net.parameters()`` order, clipped
    per seed to ``max_norm`` when it is > 0), in one operator and without an autograd graph."""
    layers = list(net.layers)
    first, rest = layers[0], layers[1:]
    out = ops.critic_grads(obs, actions, y, first.weight, first.bias, [m.weight for m in rest], [m.bias for m in rest], float(max_norm))
    n = len(rest)
    grads = [out[2], out[3]]
    for i in range(n):
        grads += [out[4 + i], out[4 + n + i]]
    return out[0], out[1], grads


def ql_actor(ops: Any, head, head_params: Sequence[Tensor], critic_params: Sequence[Tensor], obs: Tensor, actions: Tensor, t: Tensor,
             bc_noise: Tensor, chain_noise: Optional[Tensor], coin: Tensor, eta: float, approx: bool, max_norm: float = 0.0,
             plan: Optional[dict] = None):
    """Diffusion-QL's actor step for a diffusion ``head`` (its parameters in ``head.parameters()`` order)
    and a twin critic network's parameters (constants), in one operator: ``(L_bc [M], L_q [M], per-seed
    gradient norms [M], gradients of L_bc + eta L_q w.r.t. head_params)``, the gradients clipped per seed
    to ``max_norm`` when it is > 0. The random numbers are the caller's, drawn in the eager path's order.
    (The operator records no graph, so the parameters need not be detached.) ``plan``: the Q term's chain
    (a one-step plan of ``head.chain``; None: the head's full default chain, the paper's)."""
    # with approx the operator runs no chain and reads no coefficients: any one-step plan fills the slot
    c = plan if plan is not None else head.chain(0, "ddpm" if approx else None)
    out = ops.ql_actor_grads(obs, actions, t, bc_noise, chain_noise if chain_noise is not None else bc_noise, coin,
                             head.time_embedding, head.sqrt_abar, head.sqrt_1m_abar, head_params, critic_params, c["packed"], c["t"],
                             float(head.max_action), float(eta), bool(approx), float(max_norm))
    return out[0], out[1], out[2], list(out[3:])


def target_q(ops: Any, head, critic_net, next_obs: Tensor, noise: Tensor, steps: int = 0, sampler: Optional[str] = None) -> Tensor:
    """Values ``[M, k, B]`` of the target critic ``critic_net`` at (s', a'), a' from the diffusion
    ``head``'s chain (``steps`` reverse steps, 0: all; ``sampler``'s plan, which must be one-step, None: the
    head's default) started from ``noise``; one operator, no graph."""
    c = head.chain(steps, sampler)
    return ops.target_q(next_obs, noise, head.time_embedding, list(head.parameters()), list(critic_net.parameters()), c["packed"], c["t"],
                        float(head.max_action))


class FusedCPUBackend(EagerBackend):
    name = "fused-cpu"

    def __init__(self, learner: Learner, ops: Any) -> None:
        self.ops = ops
        head, critic, objective = learner.head, learner.critic, learner.objective
        self.chain = KERNELS in declared(head) and _mish_mlp(head.net)
        if self.chain:  # the head samples through the operator; a head that does not declare it keeps its own loop
            learner.head.chain_kernel = learner.ema_head.chain_kernel = fused_chain(ops)
        install_mlp_kernels(ops, learner.state_modules().values())  # (not in describe(): not a piece of the step)
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
        with torch.no_grad():
            rows = critic.backup_rows(batch["next_obs"])
            steps = learner.config.target_sample_steps or None
            noise = learner.ema_head.draw_noise(rows.shape[1], learner.train_generators, rows.device, steps)
            q = target_q(self.ops, learner.ema_head, critic.target, rows, noise, steps or 0, learner.config.target_sampler or None)
            return critic.backup(batch, q)

    def critic_grads(self, learner: Learner, batch: Dict[str, Tensor], target: Tensor) -> Grads:
        if not self.critic:
            return super().critic_grads(learner, batch, target)
        loss, norm, grads = critic_regression(self.ops, learner.critic.q, batch["obs"], batch["actions"], target,
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
        plan = None if approx else head.chain(objective.q_sample_steps, objective.q_sampler)
        chain_noise = None if plan is None else member_randn(gens, (len(plan["t"]), B, A), obs.device)
        coin = member_rand(gens, (), obs.device)
        eta = objective.current_eta()
        bc, ql, norm, grads = ql_actor(self.ops, head, learner.actor_params, learner.critic_params, obs, actions, t, bc_noise,
                                             chain_noise, coin, eta, approx, learner.config.grad_norm, plan=plan)
        return (*objective.combine(bc, ql), grads, norm)
