import pytest
import torch

from dqltoolkit.critics.double_q import DoubleQCritic
from dqltoolkit.heads.diffusion import DiffusionHead
from dqltoolkit.nn import member_generators
from dqltoolkit.objectives import QLObjective, normalised_q_loss


def test_normalised_q_loss_by_hand():
    q = torch.tensor([[[1.0, 2.0, 3.0], [-1.0, 4.0, 0.0]]])  # [M=1, 2, B=3]
    # coin > 0.5: -mean(Q1) / mean|Q2| = -2 / (5/3)
    assert normalised_q_loss(q, torch.tensor([0.7])).item() == pytest.approx(-1.2)
    # otherwise: -mean(Q2) / mean|Q1| = -1 / 2
    assert normalised_q_loss(q, torch.tensor([0.2])).item() == pytest.approx(-0.5)


def test_denominator_is_detached():
    q = torch.tensor([[[1.0, 2.0], [3.0, 5.0]]], requires_grad=True)
    normalised_q_loss(q, torch.tensor([0.9])).backward()
    # d/dQ1 of -mean(Q1)/4 = -1/(2*4); Q2 gets no gradient
    torch.testing.assert_close(q.grad, torch.tensor([[[-0.125, -0.125], [0.0, 0.0]]]))


def test_ql_loss_on_a_tiny_network_matches_hand_computation():
    head = DiffusionHead(2, 1, members=1, T=2, hidden=4, n_layers=1, time_dim=4)
    critic = DoubleQCritic(2, 1, members=1, critic_hidden=3, critic_layers=1)
    gens = member_generators([0])
    head.reset_parameters(gens)
    critic.reset_parameters(gens)
    obs, act = torch.randn(1, 5, 2), torch.rand(1, 5, 1) * 2 - 1
    state = gens[0].get_state()
    loss, parts = QLObjective(eta=2.5).actor_loss(head, critic, obs, act, gens)
    # replay the same draws by hand: bc loss, chain sample, critic, coin
    gens[0].set_state(state)
    bc = head.behaviour_loss(obs, act, gens)
    a0 = head.sample(obs, gens)
    coin = torch.rand((), generator=gens[0]).item()
    x = torch.cat([obs[0], a0[0]], -1)
    qs = []
    for k in range(2):
        l1, l2 = critic.q.layers
        h = x @ l1.weight[k] + l1.bias[k, 0]
        h = h * torch.tanh(torch.nn.functional.softplus(h))
        qs.append((h @ l2.weight[k] + l2.bias[k, 0]).squeeze(-1))
    q1, q2 = qs
    ql = -q1.mean() / q2.abs().mean() if coin > 0.5 else -q2.mean() / q1.abs().mean()
    assert parts["ql_loss"].item() == pytest.approx(ql.item(), rel=1e-5)
    assert loss.item() == pytest.approx(bc.item() + 2.5 * ql.item(), rel=1e-5)


def test_eta_warmup_ramps_linearly():
    obj = QLObjective(eta=2.0, eta_warmup=100)
    obj.step = 25
    assert obj.current_eta() == pytest.approx(0.5)
    obj.step = 1000
    assert obj.current_eta() == 2.0
    assert QLObjective(eta=2.0).current_eta() == 2.0


@pytest.mark.parametrize("q_grad", ["exact", "approx"])
def test_two_pass_actor_gradients_equal_one_backward(q_grad, monkeypatch):
    """QL's split gradients (BC term first, the CUDA backend's) equal autograd of the joint loss."""
    from dqltoolkit.backends.cuda import split_actor_grads

    head = DiffusionHead(5, 2, members=2, T=4, hidden=16, n_layers=2, time_dim=8)
    critic = DoubleQCritic(5, 2, members=2, critic_hidden=16, critic_layers=2)
    head.reset_parameters(member_generators([0, 1]))
    critic.reset_parameters(member_generators([0, 1]))
    obj = QLObjective(eta=2.5, q_grad=q_grad)
    obs, actions = torch.randn(2, 32, 5), torch.rand(2, 32, 2) * 2 - 1
    params = list(head.parameters())

    loss, parts = obj.actor_loss(head, critic, obs, actions, member_generators([7, 8]))
    joint = torch.autograd.grad(loss.sum(), params)
    loss2, parts2, split = split_actor_grads(obj, head, critic, obs, actions, member_generators([7, 8]), params)

    torch.testing.assert_close(loss2, loss)
    torch.testing.assert_close(parts2["ql_loss"], parts["ql_loss"])
    assert all(p.grad is None for p in critic.parameters())  # the Q term never computes critic weight gradients
    for (name, _), a, b in zip(head.named_parameters(), split, joint):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=lambda m: f"{name}: {m}")
