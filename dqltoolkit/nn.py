"""Member-batched network blocks.

Every network in the toolkit carries a leading *member* dimension: the twin critics are two members of
one network, and ``--seeds 0-4`` trains five independent agents as five members of the same networks.
A layer is then one batched matmul (``baddbmm``) whatever the number of members, which is what makes
twin critics and multi-seed training cheap. Inputs are ``[members, batch, features]``.
"""

from __future__ import annotations

import math
from typing import Callable, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def mish(x: Tensor) -> Tensor:
    """Mish, x tanh(softplus(x)) (Diffusion-QL's activation), as torch computes it."""
    return F.mish(x)


ACTIVATIONS = {"mish": mish, "relu": F.relu, "tanh": torch.tanh, "silu": F.silu}


def member_generators(seeds: Sequence[int], device: torch.device | str = "cpu") -> List[torch.Generator]:
    """One torch generator per member, so that member m draws exactly what a single run with seed m draws."""
    gens = []
    for s in seeds:
        g = torch.Generator(device=device)
        g.manual_seed(int(s))
        gens.append(g)
    return gens


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
        return torch.baddbmm(self.bias, x, self.weight)

    def extra_repr(self) -> str:
        return f"members={self.members}, in={self.in_features}, out={self.out_features}"


class EnsembleMLP(nn.Module):
    """Linear -> act -> ... -> Linear, member-batched. Input ``[M, B, in]`` -> ``[M, B, out]``.

    ``kernel``: how a backend computes the layers after the first (``kernel(net, h, bias, detach_params)``,
    the same function as :meth:`tail`), installed once by the backend chosen for an agent
    (dqltoolkit/backends/); None here, where everything is torch.
    """

    kernel: Optional[Callable[["EnsembleMLP", Tensor, Tensor, bool], Tensor]] = None

    def __init__(self, members: int, in_dim: int, out_dim: int, hidden: Sequence[int], activation: str = "mish") -> None:
        super().__init__()
        dims = [in_dim, *hidden, out_dim]
        self.layers = nn.ModuleList(EnsembleLinear(members, a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.act = ACTIVATIONS[activation]

    def reset_parameters(self, generators: Sequence[torch.Generator]) -> None:
        for layer in self.layers:
            layer.reset_parameters(generators)

    def tail(self, h: Tensor, bias: Tensor, detach_params: bool = False) -> Tensor:
        """``act(h + bias)`` (the first layer's pre-activation ``h`` and bias ``[M, 1 or B, hidden]``), then
        the other layers; ``detach_params``: their weights as constants, see :meth:`forward`."""
        a = self.act(h + bias)
        rest = list(self.layers)[1:]
        for i, layer in enumerate(rest):
            w, b = (layer.weight.detach(), layer.bias.detach()) if detach_params else (layer.weight, layer.bias)
            a = torch.baddbmm(b, a, w)
            if i < len(rest) - 1:
                a = self.act(a)
        return a

    def forward_from_preactivation(self, h: Tensor, bias: Tensor, detach_params: bool = False) -> Tensor:
        """:meth:`tail`, by the backend's kernel where one is installed (callers compute the first layer in parts)."""
        if self.kernel is not None:
            return self.kernel(self, h, bias, detach_params)
        return self.tail(h, bias, detach_params)

    def forward(self, x: Tensor, detach_params: bool = False) -> Tensor:
        """``detach_params=True`` treats the weights as constants: the gradient reaches ``x`` only. The
        actor's Q term uses it, so that its backward never computes the critic's weight gradients."""
        first = self.layers[0]
        w, b = (first.weight.detach(), first.bias.detach()) if detach_params else (first.weight, first.bias)
        if len(self.layers) == 1:
            return torch.baddbmm(b, x, w)
        return self.forward_from_preactivation(torch.bmm(x, w), b, detach_params)


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
