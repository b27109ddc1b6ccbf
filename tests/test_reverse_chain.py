"""The GPU path's one-node reverse chain (heads/reverse_chain.py) equals autograd through the eager loop.

It is device-agnostic torch code, so it is checked here on the CPU, in float64, with many clamps active.
"""

import pytest
import torch

from dqltoolkit.heads.diffusion import DiffusionHead
from dqltoolkit.heads.reverse_chain import reverse_chain
from dqltoolkit.nn import member_generators


@pytest.mark.parametrize("members,steps", [(1, None), (3, None), (2, 2), (1, 4)])
def test_one_node_chain_matches_autograd_through_the_loop(members, steps, monkeypatch):
    head = DiffusionHead(11, 3, members=members, T=5, n_layers=3, hidden=32).double()
    head.reset_parameters(member_generators(list(range(members))))
    gen = torch.Generator().manual_seed(members)
    obs = torch.randn(members, 40, 11, generator=gen, dtype=torch.float64)
    c = head.chain(steps or 0)
    noise = 1.5 * torch.randn(members, len(c["t"]), 40, 3, generator=gen, dtype=torch.float64)
    weight = torch.randn(members, 40, 3, generator=gen, dtype=torch.float64)

    loop = head.sample(obs, None, noise=noise, steps=steps)
    assert 0.2 < (loop.abs() >= 1).double().mean() < 0.8  # the clamps' gradient masks matter
    g_loop = torch.autograd.grad((loop * weight).sum(), list(head.parameters()))

    layers = head.net.layers
    node = reverse_chain(noise, head._state_proj(obs), head._time_proj(), layers[0].weight[:, :3], [m.weight for m in layers[1:]],
                         [m.bias for m in layers[1:]], c, 1.0)
    g_node = torch.autograd.grad((node * weight).sum(), list(head.parameters()))

    torch.testing.assert_close(node, loop, rtol=1e-12, atol=1e-12)
    for (name, _), a, b in zip(head.named_parameters(), g_node, g_loop):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12, msg=lambda m: f"{name}: {m}")


def test_one_node_chain_without_grad_gives_the_same_actions():
    head = DiffusionHead(4, 2, members=2, T=5, hidden=16)
    head.reset_parameters(member_generators([0, 1]))
    obs = torch.randn(2, 8, 4)
    c = head.chain(0)
    noise = torch.randn(2, 5, 8, 2)
    layers = head.net.layers
    args = (noise, head._state_proj(obs), head._time_proj(), layers[0].weight[:, :2], [m.weight for m in layers[1:]], [m.bias for m in layers[1:]],
            c, 1.0)
    with_grad = reverse_chain(*args)
    with torch.no_grad():
        without = reverse_chain(*args)
    assert with_grad.requires_grad and not without.requires_grad
    torch.testing.assert_close(without, with_grad.detach())
