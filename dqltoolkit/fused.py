"""Python entry points to the fused CPU operators of ``csrc/fused.cpp``.

Autograd wrappers: a reverse diffusion chain, or a member-batched Mish MLP after its first layer, as one
node each way, so that a few hundred eager ops and autograd nodes become one call (see the top of
fused.cpp for why that matters on a CPU). ``nn.EnsembleMLP`` uses the MLP's on CPU tensors; the fused CPU
backend (dqltoolkit/backends/fused_cpu.py) installs the chain's as the diffusion head's chain kernel and
holds the step operators (whole pieces of a Diffusion-QL step with a hand-written backward).
"""

from __future__ import annotations

from typing import List, Sequence

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
