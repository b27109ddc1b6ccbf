"""Python entry points to the fused CPU operators of ``csrc/fused.cpp``.

Two levels. Autograd wrappers run a reverse diffusion chain, or a member-batched Mish MLP after its
first layer, as one node each way; heads and critics use them whatever the objective. Step operators
compute whole pieces of a Diffusion-QL step with a hand-written backward (the TD target, the critic's
regression, the actor's loss and gradients); the agent calls them where they apply. Either way a few
hundred eager ops and autograd nodes become one call (see the top of fused.cpp for why that matters on
a CPU). The step operators are used by the fused CPU backend (dqltoolkit/backends/fused_cpu.py), chosen
once per agent; the autograd wrappers also serve ``nn.EnsembleMLP`` on CPU tensors.
"""

from __future__ import annotations

from typing import List, Optional, Sequence

import torch
from torch import Tensor

from ._native import fused_ops


def applicable(*tensors: Tensor):
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


def critic_regression(ops, net, obs: Tensor, actions: Tensor, y: Tensor, max_norm: float = 0.0):
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


def ql_actor(ops, head, head_params: Sequence[Tensor], critic_params: Sequence[Tensor], obs: Tensor, actions: Tensor, t: Tensor,
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


def target_q(ops, head, critic_net, next_obs: Tensor, noise: Tensor, steps: int = 0, sampler: Optional[str] = None) -> Tensor:
    """Values ``[M, k, B]`` of the target critic ``critic_net`` at (s', a'), a' from the diffusion
    ``head``'s chain (``steps`` reverse steps, 0: all; ``sampler``'s plan, which must be one-step, None: the
    head's default) started from ``noise``; one operator, no graph."""
    c = head.chain(steps) if not sampler else head.chain(steps, sampler)  # (a chain(steps) that predates samplers works)
    return ops.target_q(next_obs, noise, head.time_embedding, list(head.parameters()), list(critic_net.parameters()), c["packed"], c["t"],
                        float(head.max_action))
