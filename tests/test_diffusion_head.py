import numpy as np
import torch

from dqltoolkit.heads.diffusion import DiffusionHead
from dqltoolkit.nn import member_generators, sinusoidal_embedding


def make_head(T=5, members=1, **kw):
    h = DiffusionHead(obs_dim=3, action_dim=2, members=members, T=T, hidden=16, time_dim=8, **kw)
    h.reset_parameters(member_generators(list(range(members))))
    return h


def test_sample_shapes_bounds_and_dtype():
    h = make_head()
    a = h.sample(torch.randn(1, 64, 3), member_generators([0]))
    assert a.shape == (1, 64, 2) and a.dtype == torch.float32
    assert a.abs().max() <= 1.0


def test_gradients_reach_every_parameter_through_the_chain():
    h = make_head(T=4)
    a = h.sample(torch.randn(1, 32, 3), member_generators([0]))
    a.sum().backward()
    for name, p in h.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def _reference_eps(h, x, t, s):
    """The paper's denoiser written plainly: concat [x, t_emb, s] -> MLP (member 0)."""
    from dqltoolkit.nn import mish

    tl = h.time_mlp.layers
    emb = sinusoidal_embedding(t, h.time_dim)
    temb = mish(emb @ tl[0].weight[0] + tl[0].bias[0, 0]) @ tl[1].weight[0] + tl[1].bias[0, 0]
    z = torch.cat([x, temb, s], dim=-1)
    layers = h.net.layers
    for i, layer in enumerate(layers):
        z = z @ layer.weight[0] + layer.bias[0, 0]
        if i < len(layers) - 1:
            z = mish(z)
    return z


def test_split_first_layer_equals_concatenated_input():
    h = make_head(T=5)
    x, s = torch.randn(1, 10, 2), torch.randn(1, 10, 3)
    t = torch.randint(0, 5, (1, 10))
    torch.testing.assert_close(h.predict_noise(x, t, s)[0], _reference_eps(h, x[0], t[0], s[0]))


def test_sampler_follows_posterior_formulas():
    T = 4
    h = make_head(T=T)
    s = torch.randn(1, 6, 3)
    noise = torch.randn(1, T, 6, 2)
    got = h.sample(s, member_generators([0]), noise=noise)[0]
    betas = h.betas
    abar = np.cumprod(1 - betas)
    abar_prev = np.concatenate([[1.0], abar[:-1]])
    x = noise[0, 0]
    for k, i in enumerate(reversed(range(T))):
        eps = _reference_eps(h, x, torch.full((6,), i), s[0])
        x0 = (np.sqrt(1 / abar[i]) * x - np.sqrt(1 / abar[i] - 1) * eps).clamp(-1, 1)
        mean = betas[i] * np.sqrt(abar_prev[i]) / (1 - abar[i]) * x0 + (1 - abar_prev[i]) * np.sqrt(1 - betas[i]) / (1 - abar[i]) * x
        var = betas[i] * (1 - abar_prev[i]) / (1 - abar[i])
        x = mean + (float(np.sqrt(max(var, 1e-20))) * noise[0, k + 1] if i > 0 else 0.0)
    torch.testing.assert_close(got, x.clamp(-1, 1).float(), atol=1e-5, rtol=1e-5)


def test_behaviour_loss_is_the_denoising_mse():
    h = make_head(T=5)
    s, a = torch.randn(1, 20, 3), torch.rand(1, 20, 2) * 2 - 1
    t = torch.randint(0, 5, (1, 20))
    eps = torch.randn(1, 20, 2)
    loss = h.behaviour_loss(s, a, member_generators([0]), t=t, noise=eps)
    abar = torch.tensor(np.cumprod(1 - h.betas), dtype=torch.float32)
    xt = abar[t[0]].sqrt()[:, None] * a[0] + (1 - abar[t[0]]).sqrt()[:, None] * eps[0]
    expected = ((_reference_eps(h, xt, t[0], s[0]) - eps[0]) ** 2).mean()
    torch.testing.assert_close(loss[0], expected)


def test_members_are_independent():
    h2 = make_head(members=2)
    h1 = DiffusionHead(3, 2, members=1, T=5, hidden=16, time_dim=8)
    h1.reset_parameters(member_generators([1]))
    s = torch.randn(1, 8, 3)
    noise = torch.randn(1, 5, 8, 2)
    both = h2.sample(s.expand(2, -1, -1), None, noise=noise.expand(2, -1, -1, -1))
    torch.testing.assert_close(both[1], h1.sample(s, None, noise=noise)[0])


def test_full_respaced_chain_equals_the_chain():
    h = make_head(T=6)
    full, same = h.chain(0), h.chain(6)
    assert full is same and full["t"] == list(range(6))
    s = torch.randn(1, 5, 3)
    noise = torch.randn(1, 6, 5, 2)
    torch.testing.assert_close(h.sample(s, None, noise=noise), h.sample(s, None, noise=noise, steps=6))


def test_respaced_chain_keeps_the_endpoints_and_the_total_noise():
    h = make_head(T=50)
    c = h.chain(10)
    assert len(c["t"]) == 10 and c["t"][0] == 0 and c["t"][-1] == 49
    # the sub-chain's cumulative alphas are the full chain's at the kept steps
    abar_sub = np.cumprod(1 - (1 - np.array([1 / r**2 for r in c["recip"]]) / np.concatenate([[1.0], [1 / r**2 for r in c["recip"]][:-1]])))
    np.testing.assert_allclose(abar_sub, h.alphas_cumprod[c["t"]], rtol=1e-9)
    a = h.sample(torch.randn(1, 7, 3), member_generators([0]), steps=10)
    assert a.shape == (1, 7, 2) and a.abs().max() <= 1
