"""The reverse diffusion chain of a Mish denoiser as one autograd node built from torch ops (GPU path).

Why: on a GPU a training step is bound by how many kernels it runs, not by arithmetic (a 256-wide layer
at batch 256 takes a few microseconds whatever it computes). Autograd's backward through the chain
runs one small kernel per elementwise op and two matmuls plus two accumulations per layer and step;
this node's backward runs, per step, one masked multiply for the clamp, one matmul and one Mish
derivative per layer, and then each layer's weight and bias gradients as one matmul and one sum over
all the chain's steps at once. That is about a third of autograd's kernels for the chain, which is the
largest part of a Diffusion-QL step. The CPU has its own fused operator (``dqltoolkit/backends/fused_cpu.py``).

Layout (as in :meth:`DiffusionHead.sample`): ``noise`` ``[M, K, B, A]`` (index 0 is x_T), ``state_part``
``[M, B, H]`` (state columns of the first layer plus its bias), ``time_part`` ``[M, T, H]`` (time
columns, per network time), ``w_action`` ``[M, A, H]`` (action columns), then the remaining layers'
weights ``[M, in, out]`` and biases ``[M, 1, out]``.
"""

from __future__ import annotations

from typing import Dict, List, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

_mish_backward = torch.ops.aten.mish_backward
_clamp_backward = torch.ops.aten.hardtanh_backward  # grad where lo < x < hi: clamp's own, up to the boundary itself


def _forward(noise: Tensor, state_part: Tensor, time_part: Tensor, w_action: Tensor, weights: Sequence[Tensor], biases: Sequence[Tensor],
             c: Dict[str, list], lim: float, keep: bool):
    K = noise.shape[1]
    order = [c["t"][K - 1 - k] for k in range(K)]  # network time of chain step k (k = 0 starts from x_T)
    time_rows = torch.stack([time_part[:, i] for i in order], dim=1)  # [M, K, H]
    pre = state_part.unsqueeze(1) + time_rows.unsqueeze(2)  # first layer's input-independent part, every step
    # the noise added after each step but the last, scaled by its std: one launch for the whole chain
    added = torch._foreach_mul([noise[:, k + 1] for k in range(K - 1)], [c["std"][K - 1 - k] for k in range(K - 1)]) if K > 1 else []
    saved: Dict[str, List] = {"x": [], "z": [], "a": [], "x0": []}
    c0 = c.get("coef0")  # a multistep plan (heads/samplers.py): forward only (reverse_chain refuses it with a graph)
    prev = None
    x = noise[:, 0]
    for k in range(K):
        j = K - 1 - k
        z = torch.baddbmm(pre[:, k], x, w_action)
        a = F.mish(z)
        zs, acts = [z], [a]
        for w, b in zip(weights[:-1], biases[:-1]):
            z = torch.baddbmm(b, a, w)
            a = F.mish(z)
            zs.append(z)
            acts.append(a)
        # x0 = recip x - recipm1 eps with eps = a W + b, as one matmul: recip (x - recipm1 / recip b) - recipm1 a W
        recip, recipm1 = c["recip"][j], c["recipm1"][j]
        x0_raw = torch.baddbmm(torch.add(x, biases[-1], alpha=-recipm1 / recip), a, weights[-1], beta=recip, alpha=-recipm1)
        x0 = x0_raw.clamp(-lim, lim)
        if j > 0:
            x_next = torch.add(added[k], x, alpha=c["coef2"][j]).add_(x0, alpha=c["coef1"][j])
        else:
            x_next = torch.add(x0 * c["coef1"][j], x, alpha=c["coef2"][j])
        if c0 is not None and c0[j] != 0.0:
            x_next = x_next.add_(prev, alpha=c0[j])
        prev = x0
        if keep:
            saved["x"].append(x)
            saved["z"].append(zs)
            saved["a"].append(acts)
            saved["x0"].append(x0_raw)
        x = x_next
    return x, order, saved


class _ReverseChain(torch.autograd.Function):
    @staticmethod
    def forward(ctx, c, lim, noise, state_part, time_part, w_action, *params):  # type: ignore[override]
        L = len(params) // 2
        x, order, saved = _forward(noise, state_part, time_part, w_action, params[:L], params[L:], c, lim, keep=True)
        ctx.meta = (c, lim, order, time_part.shape[1])
        ctx.tensors = (w_action, params, saved, x)
        return x.clamp(-lim, lim)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        c, lim, order, T = ctx.meta
        w_action, params, saved, x_end = ctx.tensors
        del ctx.tensors
        L = len(params) // 2
        weights = params[:L]
        K = len(order)
        M, B, _ = x_end.shape
        g = _clamp_backward(grad.contiguous(), x_end, -lim, lim)
        g_out: List[Tensor] = [None] * K  # type: ignore[list-item]  # d/d eps at each step
        g_z: List[List[Tensor]] = [None] * K  # type: ignore[list-item]  # d/d pre-activations at each step
        for k in reversed(range(K)):
            j = K - 1 - k
            u = _clamp_backward(g, saved["x0"][k], -lim, lim)  # d/d x0 before the clamp, over coef1
            g_eps = u * (-c["recipm1"][j] * c["coef1"][j])
            g_out[k] = g_eps
            ga = torch.bmm(g_eps, weights[-1].transpose(1, 2))
            zs = saved["z"][k]
            gz = [None] * len(zs)
            for layer in reversed(range(len(zs))):
                gz[layer] = _mish_backward(ga, zs[layer])
                if layer > 0:
                    ga = torch.bmm(gz[layer], weights[layer - 1].transpose(1, 2))
            g_z[k] = gz
            if k > 0:  # the chain's start x_T is noise: no gradient needed there
                g = torch.bmm(gz[0], w_action.transpose(1, 2)).add_(g, alpha=c["coef2"][j]).add_(u, alpha=c["recip"][j] * c["coef1"][j])

        def rows(tensors: List[Tensor]) -> Tensor:  # K steps stacked along the batch: [M, K * B, width]
            return torch.stack(tensors, dim=1).view(M, K * B, -1)

        grads_w, grads_b = [], []
        n_hidden = len(saved["z"][0])
        for layer in range(1, n_hidden + 1):  # hidden layers after the first, then the output layer
            g_rows = rows([g_z[k][layer] for k in range(K)]) if layer < n_hidden else rows(g_out)
            a_rows = rows([saved["a"][k][layer - 1] for k in range(K)])
            grads_w.append(torch.bmm(a_rows.transpose(1, 2), g_rows))
            grads_b.append(g_rows.sum(dim=1, keepdim=True))
        g_first = torch.stack([g_z[k][0] for k in range(K)], dim=1)  # [M, K, B, H]
        g_w_action = torch.bmm(rows(saved["x"]).transpose(1, 2), g_first.view(M, K * B, -1))
        g_state = g_first.sum(dim=1)
        per_step = g_first.sum(dim=2)  # [M, K, H]
        if order == list(reversed(range(T))):
            g_time = per_step.flip(1)
        else:
            g_time = per_step.new_zeros(M, T, per_step.shape[-1])
            for k, i in enumerate(order):
                g_time[:, i] += per_step[:, k]
        return (None, None, None, g_state, g_time, g_w_action, *grads_w, *grads_b)


def reverse_chain(noise: Tensor, state_part: Tensor, time_part: Tensor, w_action: Tensor, weights: Sequence[Tensor], biases: Sequence[Tensor],
                  c: Dict[str, list], lim: float) -> Tensor:
    """The clamped end of the reverse chain with the coefficients ``c`` of :meth:`DiffusionHead.chain`;
    differentiable (one node) w.r.t. everything but the noise when grad mode is on. A multistep plan
    (``coef0``, heads/samplers.py) runs forward only: the head runs its eager loop where gradients are needed."""
    params = [*weights, *biases]
    if torch.is_grad_enabled() and any(t.requires_grad for t in (state_part, time_part, w_action, *params)):
        if c.get("coef0") is not None:
            raise RuntimeError("reverse_chain: a multistep plan has no backward here; the head runs its eager loop with a graph")
        return _ReverseChain.apply(c, lim, noise, state_part, time_part, w_action, *params)
    with torch.no_grad():
        return _forward(noise, state_part, time_part, w_action, weights, biases, c, lim, keep=False)[0].clamp(-lim, lim)
