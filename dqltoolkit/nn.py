"""Member-batched network blocks.

Every network in the toolkit carries a leading *member* dimension: the twin critics are two members of
one network, and ``--seeds 0-4`` trains five independent agents as five members of the same networks.
A layer is then one batched matmul (``baddbmm``) whatever the number of members, which is what makes
twin critics and multi-seed training cheap. Inputs are ``[members, batch, features]``.
"""

from __future__ import annotations

import math
from typing import List, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import precision


def _mish_torch(x: Tensor) -> Tensor:
    e = torch.exp(x.clamp(max=20.0))
    n = e * (e + 2.0)
    return x * n / (n + 2.0)


def _mish_grad_torch(x: Tensor) -> Tensor:
    e = torch.exp(x.clamp(max=20.0))
    n = e * (e + 2.0)
    t = n / (n + 2.0)
    return t + x * (1.0 - t * t) * (e / (1.0 + e))


class _FastMish(torch.autograd.Function):
    """mish(x) = x * tanh(softplus(x)), one pass over memory each way on CPU.

    With e = exp(x): tanh(softplus(x)) = n / (n + 2) where n = e (e + 2), so one ``exp`` suffices. On the
    CPU the native kernel (dqltoolkit/csrc/mish.c) does forward and backward in one vectorised pass
    each, on torch's OpenMP threads; Mish is about a third of the reference implementation's step time,
    and ``F.mish`` is several times slower here. Same function to float rounding (the exponential is a
    polynomial accurate to ~2 ulp).
    """

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        lib = _native_for(x)
        if lib is None:
            return _mish_torch(x)
        y = torch.empty_like(x)
        lib.dql_mish_fwd(x.data_ptr(), y.data_ptr(), x.numel(), torch.get_num_threads())
        return y

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        grad = grad.contiguous()
        lib = _native_for(x)
        if lib is None:
            return grad * _mish_grad_torch(x)
        out = torch.empty_like(x)
        lib.dql_mish_bwd(x.data_ptr(), grad.data_ptr(), out.data_ptr(), x.numel(), torch.get_num_threads())
        return out


class _FastMishBias(torch.autograd.Function):
    """mish(h + b) for h ``[M, B, N]`` and a bias b ``[M, 1, N]``, without materialising h + b.

    ``baddbmm`` copies the broadcast bias into its output before the matmul; a plain ``bmm`` followed by
    this fused kernel skips that copy and the separate activation pass.
    """

    @staticmethod
    def forward(ctx, h: Tensor, b: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(h, b)
        lib = _native_for(h)
        y = torch.empty_like(h)
        M, B, N = h.shape
        lib.dql_mish_bias_fwd(h.data_ptr(), b.data_ptr(), y.data_ptr(), M, B, N, torch.get_num_threads())
        return y

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        h, b = ctx.saved_tensors
        grad = grad.contiguous()
        lib = _native_for(h)
        out = torch.empty_like(h)
        M, B, N = h.shape
        lib.dql_mish_bias_bwd(h.data_ptr(), b.data_ptr(), grad.data_ptr(), out.data_ptr(), M, B, N, torch.get_num_threads())
        return out, (out.sum(dim=1, keepdim=True) if ctx.needs_input_grad[1] else None)


def mish_bias(h: Tensor, b: Tensor) -> Tensor:
    """mish(h + b), fused on the CPU where the native kernel applies."""
    if h.device.type == "cpu" and b.is_contiguous() and b.dtype == torch.float32 and _native_for(h) is not None:
        return _FastMishBias.apply(h, b)
    return mish(h + b)


def _native_for(x: Tensor):
    if x.device.type != "cpu" or x.dtype != torch.float32 or not x.is_contiguous():
        return None
    from ._native import native_lib

    return native_lib()


def mish(x: Tensor) -> Tensor:
    """Mish activation: the native CPU kernel where it applies, ``F.mish`` (one fused kernel) on GPU."""
    if x.device.type != "cpu":
        return F.mish(x)
    return _FastMish.apply(x)


ACTIVATIONS = {"mish": mish, "relu": F.relu, "tanh": torch.tanh, "silu": F.silu}


def member_generators(seeds: Sequence[int], device: torch.device | str = "cpu") -> List[torch.Generator]:
    """One torch generator per member, so that member m draws exactly what a single run with seed m draws."""
    gens = []
    for s in seeds:
        g = torch.Generator(device=device)
        g.manual_seed(int(s))
        gens.append(g)
    return gens


def layer_bmm(a: Tensor, b: Tensor) -> Tensor:
    """``torch.bmm`` for a layer's product; inside a CPU ``matmul_precision="medium"`` block, the fused
    library's product, whose forward and backward keep narrow products in float32 (dqltoolkit/precision.py)."""
    ops = precision.layer_ops()
    return torch.bmm(a, b) if ops is None else ops.layer_mm(a, b)


def layer_baddbmm(c: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """``torch.baddbmm(c, a, b)`` for a layer's product, with the same routing as :func:`layer_bmm`."""
    ops = precision.layer_ops()
    return torch.baddbmm(c, a, b) if ops is None else ops.layer_addmm(c, a, b)


class EnsembleLinear(nn.Module):
    """``members`` independent linear layers applied as one batched matmul.

    ``weight`` is ``[members, in, out]`` (already transposed for ``baddbmm``), ``bias`` ``[members, 1, out]``.
    Initialisation is PyTorch's ``nn.Linear`` default (uniform in +-1/sqrt(fan_in)), drawn member by
    member from that member's generator.
    """

    def __init__(self, members: int, in_features: int, out_features: int) -> None:
        super().__init__()
        self.members, self.in_features, self.out_features = members, in_features, out_features
        self.weight = nn.Parameter(torch.empty(members, in_features, out_features))
        self.bias = nn.Parameter(torch.empty(members, 1, out_features))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self, generators: Sequence[torch.Generator] | None = None) -> None:
        bound = 1.0 / math.sqrt(self.in_features)
        if generators is None:
            self.weight.uniform_(-bound, bound)
            self.bias.uniform_(-bound, bound)
            return
        per = self.members // len(generators)
        for m, g in enumerate(generators):
            for k in range(per):
                i = m * per + k
                # nn.Linear draws weight [out, in] then bias: keep that order and layout
                w = torch.empty(self.out_features, self.in_features, device=self.weight.device)
                w.uniform_(-bound, bound, generator=g)
                self.weight[i].copy_(w.t())
                self.bias[i, 0].uniform_(-bound, bound, generator=g)

    def forward(self, x: Tensor) -> Tensor:
        return layer_baddbmm(self.bias, x, self.weight)

    def extra_repr(self) -> str:
        return f"members={self.members}, in={self.in_features}, out={self.out_features}"


class EnsembleMLP(nn.Module):
    """Linear -> act -> ... -> Linear, member-batched. Input ``[M, B, in]`` -> ``[M, B, out]``."""

    def __init__(self, members: int, in_dim: int, out_dim: int, hidden: Sequence[int], activation: str = "mish") -> None:
        super().__init__()
        dims = [in_dim, *hidden, out_dim]
        self.layers = nn.ModuleList(EnsembleLinear(members, a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.act = ACTIVATIONS[activation]

    def reset_parameters(self, generators: Sequence[torch.Generator]) -> None:
        for layer in self.layers:
            layer.reset_parameters(generators)

    def _activate(self, x: Tensor, layer: "EnsembleLinear") -> Tensor:
        """act(x @ W + b); for Mish the bias add is fused into the activation kernel."""
        if self.act is mish:
            return mish_bias(layer_bmm(x, layer.weight), layer.bias)
        return self.act(layer(x))

    def forward_from_activation(self, a: Tensor) -> Tensor:
        """Continue after the first layer's activation ``a`` (lets callers compute the first layer in parts)."""
        layers = list(self.layers)
        for layer in layers[1:-1]:
            a = self._activate(a, layer)
        return layers[-1](a)

    def forward_from_preactivation(self, h: Tensor, bias: Tensor, detach_params: bool = False) -> Tensor:
        """Continue from the first layer's pre-activation: ``act(h + bias)``, then the other layers.

        ``bias`` is ``[M, 1, hidden]`` or ``[M, B, hidden]``. On the CPU a Mish network runs as one fused
        operator each way (dqltoolkit/fused.py); elsewhere layer by layer. ``detach_params``: use the
        weights as constants (gradients still reach the input), see :meth:`forward`.
        """
        from . import fused

        rest = list(self.layers)[1:]  # (slicing a ModuleList builds a new module each call)
        if self.act is mish and rest:
            ops = fused.applicable(h, bias)
            if ops is not None:
                ws, bs = [m.weight for m in rest], [m.bias for m in rest]
                if detach_params:
                    ws, bs = [w.detach() for w in ws], [b.detach() for b in bs]
                return fused.mlp_tail(ops, h, bias, ws, bs)
        if detach_params:
            a = self.act(h + bias)
            for layer in rest[:-1]:
                a = self.act(layer_baddbmm(layer.bias.detach(), a, layer.weight.detach()))
            return layer_baddbmm(rest[-1].bias.detach(), a, rest[-1].weight.detach()) if rest else a
        if self.act is mish and rest and bias.shape[1] == 1 and bias.is_contiguous():
            return self.forward_from_activation(mish_bias(h, bias))
        return self.forward_from_activation(self.act(h + bias))

    def forward(self, x: Tensor, detach_params: bool = False) -> Tensor:
        """``detach_params=True`` treats the weights as constants: the gradient reaches ``x`` only. The
        actor's Q term uses it, so that its backward never computes the critic's weight gradients."""
        first = self.layers[0]
        w, b = (first.weight.detach(), first.bias.detach()) if detach_params else (first.weight, first.bias)
        if len(self.layers) == 1:
            return layer_baddbmm(b, x, w)
        return self.forward_from_preactivation(layer_bmm(x, w), b, detach_params)


def sinusoidal_embedding(t: Tensor, dim: int) -> Tensor:
    """The transformer/DDPM sinusoidal embedding used by Diffusion-QL (frequencies 1 .. 1e-4)."""
    half = dim // 2
    scale = math.log(10000) / max(half - 1, 1)
    freqs = torch.exp(torch.arange(half, device=t.device, dtype=torch.float32) * -scale)
    x = t.to(torch.float32)[..., None] * freqs
    return torch.cat([x.sin(), x.cos()], dim=-1)


def foreach_pieces(tensors: Sequence[Tensor], size: int = 16384) -> List[Tensor]:
    """On a GPU, flat views of ``tensors`` cut into pieces of at most ``size`` elements; elsewhere the
    tensors themselves. For ``torch._foreach_*`` ops, which update the tensors through the pieces.

    Why: a foreach kernel hands each tensor (up to 65,536 elements) to a single thread block, so a list
    of a few 256x256 weights keeps a handful of a GPU's multiprocessors busy for tens of microseconds;
    cut into pieces, the same op spreads over the whole GPU. (Contiguous tensors only.)
    """
    if not tensors or tensors[0].device.type != "cuda":
        return list(tensors)
    return [piece for t in tensors for piece in t.view(-1).split(size)]


def clip_grad_norm_members(params: Sequence[nn.Parameter], max_norm: float, members: int) -> Tensor:
    """Per-member gradient-norm clipping without a host sync; returns the norms ``[members]``.

    Each member (seed) is clipped on its own, as a separate run would be; twin sub-members of one seed
    share that seed's norm, like ``clip_grad_norm_`` over both critics in the reference code.
    """
    grads = [p.grad for p in params if p.grad is not None]
    if members == 1:
        # torch.nn.utils.clip_grad_norm_'s own arithmetic: per-tensor norms in one foreach op, then their norm
        norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(foreach_pieces(grads)))).reshape(1)
    else:
        sq = torch.stack([g.reshape(members, -1).pow(2).sum(1) for g in grads]).sum(0)
        norm = sq.sqrt()
    if max_norm and max_norm > 0:
        scale = (max_norm / (norm + 1e-6)).clamp(max=1.0)
        if members == 1:
            torch._foreach_mul_(foreach_pieces(grads), scale[0])
        else:
            for g in grads:
                g.view(members, -1).mul_(scale[:, None])
    return norm


def member_randn(generators: Sequence[torch.Generator], shape: Sequence[int], device: torch.device | str) -> Tensor:
    """Standard normals ``[members, *shape]``, member m drawn from generator m (reproducible per seed)."""
    if len(generators) == 1:
        return torch.randn(tuple(shape), generator=generators[0], device=device).unsqueeze(0)
    return torch.stack([torch.randn(tuple(shape), generator=g, device=device) for g in generators])


def member_rand(generators: Sequence[torch.Generator], shape: Sequence[int], device: torch.device | str) -> Tensor:
    """Uniform [0, 1) ``[members, *shape]``, per-member generators."""
    if len(generators) == 1:
        return torch.rand(tuple(shape), generator=generators[0], device=device).unsqueeze(0)
    return torch.stack([torch.rand(tuple(shape), generator=g, device=device) for g in generators])


def member_randint(generators: Sequence[torch.Generator], high: int, shape: Sequence[int], device: torch.device | str) -> Tensor:
    """Integers in [0, high) ``[members, *shape]``, per-member generators."""
    if len(generators) == 1:
        return torch.randint(high, tuple(shape), generator=generators[0], device=device).unsqueeze(0)
    return torch.stack([torch.randint(high, tuple(shape), generator=g, device=device) for g in generators])
