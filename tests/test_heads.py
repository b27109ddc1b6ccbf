"""Every policy head: sample shapes and bounds, gradients through samples, and a behaviour loss that falls."""

import pytest
import torch

from dqltoolkit.nn import member_generators
from dqltoolkit.registry import HEADS

HEAD_KW = {"diffusion": dict(T=3, hidden=32, time_dim=8), "gaussian": dict(hidden=32), "deterministic": dict(hidden=32), "cvae": dict(hidden=32)}


def make(name, members=1, **kw):
    head = HEADS.get(name)(3, 2, members=members, **{**HEAD_KW[name], **kw})
    head.reset_parameters(member_generators(list(range(members))))
    return head


@pytest.mark.parametrize("name", sorted(HEAD_KW))
def test_sample_shape_bounds_and_gradients(name):
    head = make(name, members=2)
    obs = torch.randn(2, 50, 3) * 3
    a = head.sample(obs, member_generators([0, 1]))
    assert a.shape == (2, 50, 2) and a.dtype == torch.float32
    assert a.abs().max() <= 1.0
    assert head.differentiable_samples
    a.sum().backward()
    touched = [n for n, p in head.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0]
    assert touched, f"{name}: no parameter receives a gradient through its samples"


@pytest.mark.parametrize("name", sorted(HEAD_KW))
def test_behaviour_loss_falls_on_a_toy_problem(name):
    torch.manual_seed(0)
    head = make(name)
    gens = member_generators([0])
    obs = torch.randn(1, 256, 3)
    actions = torch.tanh(obs[..., :2] * 0.8 + 0.1 * torch.randn(1, 256, 2))
    opt = torch.optim.Adam(head.parameters(), lr=3e-3)
    first = head.behaviour_loss(obs, actions, gens).item()
    for _ in range(150):
        loss = head.behaviour_loss(obs, actions, gens).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    last = sum(head.behaviour_loss(obs, actions, gens).item() for _ in range(5)) / 5
    assert last < first - 0.1 * abs(first), (first, last)


def test_gaussian_likelihood_matches_torch_distributions():
    head = make("gaussian", squash="clip")
    obs, actions = torch.randn(1, 20, 3), torch.rand(1, 20, 2) * 1.6 - 0.8
    mu, log_std = head.distribution(obs)
    expected = torch.distributions.Normal(mu, log_std.exp()).log_prob(actions).sum(-1)
    torch.testing.assert_close(head.log_prob(obs, actions), expected)
    tanh_head = make("gaussian", squash="tanh")
    mu, log_std = tanh_head.distribution(obs)
    base = torch.distributions.Normal(mu, log_std.exp())
    squashed = torch.distributions.TransformedDistribution(base, [torch.distributions.TanhTransform()])
    torch.testing.assert_close(tanh_head.log_prob(obs, actions), squashed.log_prob(actions).sum(-1), rtol=1e-4, atol=1e-4)


def test_cvae_latent_is_clipped_when_sampling():
    head = make("cvae")
    obs = torch.zeros(1, 4, 3)
    big = torch.full((1, 4, head.latent_dim), 7.0)
    torch.testing.assert_close(head.sample(obs, None, noise=big), head.decode(obs, torch.full_like(big, 0.5)))
    assert head.latent_dim == 4


def test_deterministic_head_ignores_noise():
    head = make("deterministic")
    obs = torch.randn(1, 8, 3)
    torch.testing.assert_close(head.sample(obs, member_generators([0])), head.sample(obs, member_generators([1])))
