"""IQL and IDQL as parts: the expectile critic, AWR, IDQL's resampling weights, and both on the bandit.

The tiny-network tests set every weight by hand, so each number below is worked out in the comments.
"""

import math

import gymnasium as gym
import numpy as np
import pytest
import torch

import dqltoolkit
from dqltoolkit import Agent, AgentConfig
from dqltoolkit.config import ConfigError, load_recipe
from dqltoolkit.critics.iql import IQLCritic, expectile_loss
from dqltoolkit.envs.bandit2d import BEST_MODE, MODE_NAMES, mode_of, mode_shares
from dqltoolkit.heads.deterministic import DeterministicHead
from dqltoolkit.heads.diffusion import DiffusionHead
from dqltoolkit.heads.gaussian import GaussianHead
from dqltoolkit.nn import member_generators
from dqltoolkit.objectives.awr import AWRObjective
from dqltoolkit.objectives.per_sample import per_sample_behaviour_loss
from dqltoolkit.training import sample_policy_actions

from .conftest import random_table

SMALL = dict(hidden=16, critic_hidden=16, batch_size=16, n_candidates=4, T=2, time_dim=8, log_every=5)
SPACES = (gym.spaces.Box(-np.inf, np.inf, (3,), np.float32), gym.spaces.Box(-1, 1, (2,), np.float32))


def _set(layer, weight, bias):
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(weight, dtype=torch.float32).view_as(layer.weight))
        layer.bias.copy_(torch.tensor(bias, dtype=torch.float32).view_as(layer.bias))


def tiny_critic(**kw) -> IQLCritic:
    """obs and action of width 1, one hidden ReLU unit per network:
    online  Q1(s, a) = 2 relu(s + a) + 1.5,   target Q1'(s, a) = 2 relu(s + a) + 0.5,
    online = target Q2(s, a) = relu(s - a + 1),   V(s) = 3 relu(s) - 1."""
    c = IQLCritic(1, 1, members=1, critic_hidden=1, critic_layers=1, critic_activation="relu", n_critics=2, **kw)
    _set(c.q.layers[0], [[[1.0], [1.0]], [[1.0], [-1.0]]], [0.0, 1.0])
    _set(c.q.layers[1], [2.0, 1.0], [0.5, 0.0])
    c.sync_target()
    with torch.no_grad():
        c.q.layers[1].bias[0] += 1.0  # online Q1 one above its target
    _set(c.v.layers[0], [1.0], [0.0])
    _set(c.v.layers[1], [3.0], [-1.0])
    return c


def col(*xs):
    return torch.tensor(xs, dtype=torch.float32).view(1, -1, 1)


BATCH = {"obs": col(0.5, -1.0, 2.0), "actions": col(0.5, 0.0, -1.0), "rewards": torch.tensor([[1.0, 0.0, 2.0]]),
         "next_obs": col(1.0, 0.0, -0.5), "terminals": torch.tensor([[0.0, 1.0, 0.0]])}


def never(_):
    raise AssertionError("the IQL critic must not ask for next actions")


def test_iql_target_and_losses_match_a_hand_computation():
    c = tiny_critic(expectile=0.7, gamma=0.9)
    # V(s') = 3 relu(s') - 1 = [2, -1, -1]; y = r + 0.9 (1 - d) V(s') = [1 + 1.8, 0, 2 - 0.9]
    y = c.compute_target(BATCH, never, [])
    torch.testing.assert_close(y, torch.tensor([[2.8, 0.0, 1.1]]))
    loss, info = c.compute_loss(BATCH, y)
    # online Q1 = 2 relu(s + a) + 1.5 = [3.5, 1.5, 3.5], Q2 = relu(s - a + 1) = [1, 0, 4]
    # Q loss = mean([0.7, 1.5, 2.4]^2) + mean([-1.8, 0, 2.9]^2) = 8.5 / 3 + 11.65 / 3
    q_loss = 8.5 / 3 + 11.65 / 3
    # V's target: min(Q1', Q2') = min([2.5, 0.5, 2.5], [1, 0, 4]) = [1, 0, 2.5]; V(s) = [0.5, -1, 5]
    # u = [0.5, 1, -2.5], weights [0.7, 0.7, 0.3]: mean(0.7 * 0.25, 0.7 * 1, 0.3 * 6.25) = 2.75 / 3
    v_loss = 2.75 / 3
    torch.testing.assert_close(info["q_loss"], torch.tensor([q_loss]))
    torch.testing.assert_close(info["value_loss"], torch.tensor([v_loss]))
    torch.testing.assert_close(loss, torch.tensor([q_loss + v_loss]))
    torch.testing.assert_close(info["v_mean"], torch.tensor([4.5 / 3]))
    # the loss reaches V's and Q's weights and nothing else is an online parameter
    grads = torch.autograd.grad(loss.sum(), c.online_parameters())
    assert len(grads) == 8 and all(torch.isfinite(g).all() for g in grads)
    assert c.v.layers[1].weight.grad is None and grads[-2].abs().sum() > 0  # V's output weight has a gradient
    # a one-step task regresses the reward
    assert torch.equal(tiny_critic(gamma=0.0).compute_target(BATCH, never, []), BATCH["rewards"])


def test_expectile_loss_is_asymmetric():
    u = torch.tensor([2.0, -2.0, 0.0])
    torch.testing.assert_close(expectile_loss(u, 0.9), torch.tensor([0.9 * 4, 0.1 * 4, 0.0]))
    torch.testing.assert_close(expectile_loss(u, 0.5), 0.5 * u.pow(2))


def test_awr_weights_and_loss_match_a_hand_computation():
    c = tiny_critic(expectile=0.7)
    head = GaussianHead(1, 1, members=1, hidden=1, n_layers=1, activation="relu", squash="clip")
    with torch.no_grad():
        for p in head.parameters():
            p.zero_()  # mu = 0, log std = 0 at every state
    awr = AWRObjective(beta=2.0, weight_clip=3.0)
    w, adv = awr.advantage_weights(c, BATCH["obs"], BATCH["actions"])
    # advantages min(Q1', Q2') - V = [1 - 0.5, 0 + 1, 2.5 - 5]; weights exp(2 adv) = [e, e^2 -> clipped to 3, e^-5]
    torch.testing.assert_close(adv, torch.tensor([[0.5, 1.0, -2.5]]))
    hand_w = [math.e, 3.0, math.exp(-5.0)]
    torch.testing.assert_close(w, torch.tensor([hand_w]))
    # per-sample NLL of N(0, 1) at a = [0.5, 0, -1]: a^2 / 2 + log(2 pi) / 2
    nll = [a * a / 2 + 0.5 * math.log(2 * math.pi) for a in (0.5, 0.0, -1.0)]
    loss, parts = awr.actor_loss(head, c, BATCH["obs"], BATCH["actions"], member_generators([0]))
    torch.testing.assert_close(loss, torch.tensor([sum(wi * li for wi, li in zip(hand_w, nll)) / 3]))
    torch.testing.assert_close(parts["bc_loss"], torch.tensor([sum(nll) / 3]))
    torch.testing.assert_close(parts["awr_weight"], torch.tensor([sum(hand_w) / 3]))
    # IQL acts by the Gaussian's mean (clipped to the box), whatever noise acting passes
    torch.testing.assert_close(awr.policy_sample(head, None, BATCH["obs"], [], noise=torch.ones(1, 3, 1)), torch.zeros(1, 3, 1))


def test_idql_resampling_weights_match_a_hand_computation():
    c = tiny_critic(expectile=0.7, act_weights="expectile")
    obs, cand = col(0.5, 0.5, 0.5), col(0.5, 2.0, -0.4)
    # Q1' = 2 relu(0.5 + a) + 0.5 = [2.5, 5.5, 0.7], Q2' = relu(1.5 - a) = [1, 0, 1.9]; min = [1, 0, 0.7]
    # V(0.5) = 0.5: advantages [0.5, -0.5, 0.2] -> weights |0.7 - 1(adv < 0)| = [0.7, 0.3, 0.7]
    logits = c.action_values(obs, cand)
    torch.testing.assert_close(logits.exp(), torch.tensor([[0.7, 0.3, 0.7]]))
    # acting draws candidate i with probability softmax(values)_i = w_i / sum(w)
    torch.testing.assert_close(torch.softmax(logits, dim=-1), torch.tensor([[0.7, 0.3, 0.7]]) / 1.7)
    # act_weights=q ranks by the min target Q itself
    torch.testing.assert_close(tiny_critic(act_weights="q").action_values(obs, cand), torch.tensor([[1.0, 0.0, 0.7]]))


@pytest.mark.parametrize("head", [
    GaussianHead(3, 2, members=2, hidden=8), GaussianHead(3, 2, members=2, hidden=8, squash="clip"),
    DiffusionHead(3, 2, members=2, T=4, hidden=8, time_dim=4), DeterministicHead(3, 2, members=2, hidden=8)])
def test_per_sample_losses_average_to_the_heads_own_loss(head):
    head.reset_parameters(member_generators([1, 2]))
    g = torch.Generator().manual_seed(0)
    obs, actions = torch.randn(2, 32, 3, generator=g), torch.rand(2, 32, 2, generator=g) * 1.8 - 0.9
    per = per_sample_behaviour_loss(head, obs, actions, member_generators([5, 6]))
    assert per.shape == (2, 32)
    torch.testing.assert_close(per.mean(dim=1), head.behaviour_loss(obs, actions, member_generators([5, 6])))


def test_awr_refuses_a_critic_without_v_and_a_head_without_per_sample_losses():
    with pytest.raises(ConfigError, match="objective 'awr' .* needs a critic with state values .* critic 'double-q' has none"):
        Agent(AgentConfig(head="gaussian", critic="double-q", objective="awr").fit(**SMALL), *SPACES, device="cpu")
    with pytest.raises(ConfigError, match="head 'cvae' offers no per-sample loss"):
        Agent(AgentConfig(head="cvae", critic="iql", objective="awr").fit(**SMALL), *SPACES, device="cpu")
    with pytest.raises(ValueError, match="expectile must lie strictly between 0 and 1, got 1.0"):
        IQLCritic(3, 2, expectile=1.0)
    with pytest.raises(ConfigError, match="act_weights='best' is not one of 'q', 'expectile'"):
        AgentConfig(head="diffusion", critic="iql", objective="bc-with-critic", act_weights="best")


def test_bc_with_critic_trains_the_critic_and_leaves_the_actor_pure_bc():
    cfg = AgentConfig(head="diffusion", critic="iql", objective="bc-with-critic").fit(**SMALL)
    agent = Agent(cfg, *SPACES, seeds=[0], device="cpu")
    agent.set_dataset(random_table())
    v0 = [p.clone() for p in agent.critic.v.parameters()]
    info = agent.train_step()
    assert {"critic_loss", "q_loss", "value_loss", "bc_loss", "actor_loss"} <= set(info)
    torch.testing.assert_close(info["actor_loss"], info["bc_loss"])  # the actor's loss is the BC loss alone
    assert any(not torch.equal(a, b) for a, b in zip(v0, agent.critic.v.parameters()))  # V trained
    assert agent.objective.greedy_acting is False
    assert Agent(cfg.replace(greedy=True), *SPACES, device="cpu").objective.greedy_acting is True


@pytest.fixture
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _expectile(values: np.ndarray, weights: np.ndarray, tau: float) -> float:
    lo, hi = float(values.min()), float(values.max())
    for _ in range(60):  # tau E[(X - m)+] = (1 - tau) E[(m - X)+] by bisection
        m = (lo + hi) / 2
        up = tau * np.sum(weights * np.clip(values - m, 0, None))
        down = (1 - tau) * np.sum(weights * np.clip(m - values, 0, None))
        lo, hi = (m, hi) if up > down else (lo, m)
    return (lo + hi) / 2


def test_iql_on_the_bandit_acts_on_the_best_mode(tmp_path, one_thread):
    res = dqltoolkit.train("iql", "bandit2d-v0", tmp_path, seeds=[0], device="cpu", progress=False, verbose=False)
    model = dqltoolkit.load(res.checkpoints[0], device="cpu")
    shares = mode_shares(sample_policy_actions(model, 1000, seed=123))  # the policy's mean (IQL's evaluation)
    assert shares["bottom_right"] >= 0.9, shares
    ev = res.results["evaluation"][0]
    assert ev["mean_return"] >= 4.5, ev
    # V(s) is the 0.7-expectile of Q over the data's actions: of the four modes' mean rewards, equally often
    with torch.no_grad():
        v = model.critic.state_values(torch.zeros(1, 1, 2)).item()
    assert abs(v - _expectile(np.array([3.0, 0.0, 1.5, 5.0]), np.full(4, 0.25), 0.7)) < 0.25, v


def test_idql_on_the_bandit(tmp_path, one_thread):
    res = dqltoolkit.train("idql", "bandit2d-v0", tmp_path, seeds=[0], device="cpu", progress=False, verbose=False,
                           evaluate_at_end=False)
    model = dqltoolkit.load(res.checkpoints[0], device="cpu")
    raw = mode_shares(sample_policy_actions(model, 1000, seed=123))  # the behaviour model: all four modes
    for name in MODE_NAMES:
        assert 0.15 <= raw[name] <= 0.35, raw
    assert raw["off_data"] <= 0.05, raw
    obs = np.zeros((1000, 2), np.float32)
    greedy = model.predict(obs)[0]  # the recipe: the best of 64 candidates by min Q
    shares = mode_shares(greedy)
    assert shares["bottom_right"] >= 0.9 and shares["off_data"] <= 0.02, shares
    # the same networks acting by the paper's weights |tau - 1(Q < V)|: the share on the best mode is what
    # the weights of 64 candidates predict (computed here from other draws of the behaviour model)
    model.critic.act_weights, model.objective.greedy_acting = "expectile", False
    drawn = mode_shares(model.predict(np.zeros((1500, 2), np.float32))[0])["bottom_right"]
    cand = torch.as_tensor(sample_policy_actions(model, 64 * 100, seed=7)).view(1, -1, 2)
    with torch.no_grad():
        w = model.critic.action_values(torch.zeros(1, cand.shape[1], 2), cand).exp().view(100, 64).numpy()
    best = (mode_of(cand[0].numpy()) == BEST_MODE).reshape(100, 64)
    predicted = float(np.mean((w * best).sum(1) / w.sum(1)))
    assert abs(drawn - predicted) < 0.05, (drawn, predicted)
    assert 0.3 < drawn < 0.6, drawn  # far from greedy: tau 0.7 keeps most of the behaviour policy's spread


def test_recipes_name_the_papers_settings():
    iql = load_recipe("iql", "hopper-medium-v2")[0]
    assert (iql.head, iql.critic, iql.objective) == ("gaussian", "iql", "awr")
    assert (iql.lr, iql.critic_lr, iql.batch_size, iql.expectile, iql.beta, iql.weight_clip, iql.tau, iql.gamma) == \
        (3e-4, 3e-4, 256, 0.7, 3.0, 100.0, 0.005, 0.99)
    assert (iql.reward_tune, iql.normalize_obs, iql.n_candidates) == ("iql_locomotion", False, 1)
    idql = load_recipe("idql", "hopper-medium-v2")[0]
    assert (idql.head, idql.critic, idql.objective, idql.act_weights, idql.greedy, idql.n_candidates, idql.T) == \
        ("diffusion", "iql", "bc-with-critic", "expectile", False, 64, 5)
    assert load_recipe("idql", "antmaze-umaze-v0")[0].expectile == 0.9


@pytest.mark.parametrize("recipe", ["iql", "idql"])
def test_a_member_of_a_multi_seed_run_equals_the_single_seed_run(recipe):
    cfg = load_recipe(recipe)[0].fit(**SMALL)
    runs = []
    for seeds in ([3], [3, 4]):
        agent = Agent(cfg, *SPACES, seeds=seeds, device="cpu")
        agent.set_dataset(random_table())
        losses = [agent.train_step() for _ in range(4)]
        runs.append((agent, losses))
    (one, l1), (two, l2) = runs
    for a, b in zip(l1, l2):
        for k in ("critic_loss", "value_loss", "actor_loss"):
            torch.testing.assert_close(a[k][0], b[k][0], rtol=1e-5, atol=1e-6)
    obs = torch.randn(1, 5, 3)
    torch.testing.assert_close(one.critic.state_values(obs)[0], two.critic.state_values(obs.expand(2, -1, -1))[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("head,critic,objective", [
    ("diffusion", "iql", "awr"),  # AWR-weighted denoising (IDQL's "exp_adv" actor)
    ("diffusion", "iql", "ql"),  # Diffusion-QL's actor on IQL's critic
    ("deterministic", "iql", "awr"),
    ("gaussian", "double-q", "bc-with-critic"),  # a critic that reads the cloned policy's next actions
])
def test_the_new_parts_compose_with_the_shipped_ones(head, critic, objective):
    agent = Agent(AgentConfig(head=head, critic=critic, objective=objective).fit(**SMALL), *SPACES, seeds=[0, 1], device="cpu")
    agent.set_dataset(random_table())
    for _ in range(3):
        info = agent.train_step()
    assert all(torch.isfinite(v).all() for v in info.values()), info
    a, _ = agent.predict(np.zeros((4, 3), np.float32))
    assert a.shape == (4, 2) and np.all(np.abs(a) <= 1)
