"""Recipes compose heads and objectives; each one builds, trains a few steps, acts and round-trips."""

import gymnasium as gym
import numpy as np
import pytest
import torch

import dqltoolkit
from dqltoolkit import Agent, AgentConfig
from dqltoolkit.config import load_recipe, recipe_names
from dqltoolkit.nn import member_generators
from dqltoolkit.objectives import mmd

from .conftest import random_table

SMALL = dict(hidden=16, critic_hidden=16, batch_size=16, n_candidates=4, T=2, time_dim=8, log_every=5, mmd_samples=3)
SPACES = (gym.spaces.Box(-np.inf, np.inf, (3,), np.float32), gym.spaces.Box(-1, 1, (2,), np.float32))


@pytest.mark.parametrize("recipe", recipe_names())
def test_every_recipe_trains_acts_and_round_trips(recipe, tmp_path):
    cfg, _ = load_recipe(recipe)
    agent = Agent(cfg.fit(**SMALL), *SPACES, device="cpu")
    agent.set_dataset(random_table())
    for _ in range(6):
        agent.train_step()
    metrics = agent.pop_metrics()
    assert "actor_loss" in metrics and all(np.all(np.isfinite(v)) for v in metrics.values())
    a, _ = agent.predict(np.zeros((5, 3), np.float32))
    assert a.shape == (5, 2) and np.all(np.abs(a) <= 1)
    path = agent.save(tmp_path / f"{recipe}.zip")
    loaded = dqltoolkit.load(path, device="cpu")
    obs = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
    agent.set_random_seed(1)
    loaded.set_random_seed(1)
    np.testing.assert_array_equal(agent.predict(obs)[0], loaded.predict(obs)[0])


def test_policy_class_ablation_recipes_share_the_ql_objective():
    for recipe in ("diffusion-ql", "ql-gaussian"):
        assert load_recipe(recipe, "bandit2d-v0")[0].objective == "ql"
    assert load_recipe("ql-cvae")[0].objective == "bcq" and load_recipe("ql-mmd")[0].objective == "mmd"


@pytest.mark.parametrize("head,objective,message", [
    ("gausian", "ql", "cannot build head 'gausian' with critic 'double-q' and objective 'ql': unknown head 'gausian'. Did you mean 'gaussian'"),
    ("gaussian", "qll", "cannot build head 'gaussian' with critic 'double-q' and objective 'qll': unknown objective 'qll'. Did you mean 'ql'"),
])
def test_unknown_parts_fail_at_construction_naming_both(head, objective, message):
    with pytest.raises(KeyError) as e:
        Agent(AgentConfig(head=head, objective=objective).fit(**SMALL), *SPACES)
    assert message in str(e.value)


def test_approx_q_grad_on_a_head_without_a_chain_equals_exact():
    def run(q_grad):
        agent = Agent(AgentConfig(head="gaussian", objective="ql", q_grad=q_grad).fit(**SMALL), *SPACES, device="cpu")
        agent.set_dataset(random_table())
        return [agent.train_step()["actor_loss"].item() for _ in range(3)]

    assert run("approx") == run("exact")


def test_mmd_is_zero_for_identical_sets_and_grows_with_distance():
    x = torch.rand(2, 10, 2)
    assert mmd(x, x).max() < 1e-2
    near, far = mmd(x, x + 0.1), mmd(x, x + 1.0)
    assert torch.all(far > near) and torch.all(near > mmd(x, x))


def test_td3bc_delays_the_actor_and_smooths_targets():
    cfg, _ = load_recipe("td3bc")
    agent = Agent(cfg.fit(**SMALL), *SPACES, device="cpu")
    agent.set_dataset(random_table())
    w0 = agent.head.net.layers[0].weight.detach().clone()
    agent.train_step()  # step 0: actor updates
    w1 = agent.head.net.layers[0].weight.detach().clone()
    agent.train_step()  # step 1: critic only
    w2 = agent.head.net.layers[0].weight.detach().clone()
    assert not torch.equal(w0, w1) and torch.equal(w1, w2)
    nobs = torch.zeros(1, 500, 3)
    plain = agent.objective.policy_sample(agent.ema_head, agent.ema_aux, nobs, agent.train_generators)
    agent.train_generators[0].manual_seed(3)
    ys = agent.critic.compute_target({"rewards": torch.zeros(1, 500), "terminals": torch.zeros(1, 500), "next_obs": nobs},
                                     agent.learner.next_actions, agent.train_generators)
    # the target's next actions are the EMA policy's plus TD3's clipped noise: replay the draws
    agent.train_generators[0].manual_seed(3)
    na = agent.learner.next_actions(nobs)
    from dqltoolkit.nn import member_randn
    noise = member_randn(agent.train_generators, na.shape[1:], na.device) * 0.2
    smoothed = (na + noise.clamp(-0.5, 0.5)).clamp(-1.0, 1.0)
    torch.testing.assert_close(ys, 0.99 * agent.critic.reduce(agent.critic.target_values(nobs, smoothed)))
    diff = (smoothed - plain).abs()
    assert diff.max() <= 0.5 + 1e-6 and diff.mean() > 0.05


def test_bcq_perturbation_is_bounded_and_trained_by_q():
    cfg, _ = load_recipe("bcq")
    agent = Agent(cfg.fit(**SMALL), *SPACES, device="cpu")
    obs = torch.randn(1, 64, 3)
    base = agent.head.sample(obs, member_generators([5]))
    pert = agent.aux["perturb"](obs, base)
    assert (pert - base).abs().max() <= 0.05 + 1e-6
    agent.set_dataset(random_table())
    before = agent.aux["perturb"].net.layers[0].weight.detach().clone()
    agent.learn(3)
    assert not torch.equal(before, agent.aux["perturb"].net.layers[0].weight)


def test_bear_lagrange_multiplier_rises_while_mmd_exceeds_threshold():
    cfg, _ = load_recipe("bear")
    agent = Agent(cfg.fit(**SMALL).replace(mmd_threshold=-1.0), *SPACES, device="cpu")  # never satisfied
    agent.set_dataset(random_table())
    agent.learn(20)
    assert agent.aux["alpha"]().item() > 1.0


def test_bear_uses_its_own_q_term_target_and_acting():
    cfg, _ = load_recipe("bear")
    assert (cfg.mmd_q, cfg.max_q_backup, cfg.backup_order, cfg.critic_reduce, cfg.critic_lambda, cfg.q_start) == \
        ("min", True, "reduce-first", "minmax", 0.75, 40000)
    assert (load_recipe("ql-mmd")[0].mmd_q, load_recipe("ql-mmd")[0].q_start) == ("normalised", 0)  # the paper's QL-MMD panel
    agent = Agent(cfg.fit(**SMALL).replace(q_start=0), *SPACES, device="cpu")
    agent.set_dataset(random_table())
    assert agent.objective.greedy_acting
    batch = agent.buffer.sample(16, agent.train_generators)
    states = [g.get_state() for g in agent.train_generators]
    _, info = agent.objective.actor_loss(agent.head, agent.critic, batch["obs"], batch["actions"], agent.train_generators, aux=agent.aux)
    for g, st in zip(agent.train_generators, states):
        g.set_state(st)
    # replay the objective's draws: the behaviour ELBO, the policy's samples, the CVAE's samples
    agent.aux["behaviour"].behaviour_loss(batch["obs"], batch["actions"], agent.train_generators)
    pi = agent.head.sample(batch["obs"].repeat_interleave(3, dim=1), agent.train_generators)
    with torch.no_grad():
        q = agent.critic(batch["obs"], pi.view(1, 16, 3, -1)[:, :, 0])
    torch.testing.assert_close(info["ql_loss"], -q.min(dim=1).values.mean(dim=1))
    with pytest.raises(ValueError, match="mmd_q='max' is not one of 'normalised', 'min'"):
        Agent(cfg.fit(**SMALL).replace(mmd_q="max"), *SPACES)


def test_bear_warms_up_on_support_matching_alone():
    cfg, _ = load_recipe("bear")
    agent = Agent(cfg.fit(**SMALL).replace(q_start=4), *SPACES, device="cpu")
    agent.set_dataset(random_table())
    ql = [float(agent.train_step()["ql_loss"][0]) for _ in range(7)]
    assert ql[:4] == [0.0] * 4 and all(v != 0.0 for v in ql[4:])  # steps 0-3 without the critic, then the Q term
    assert agent.objective.schedule_key(agent.num_timesteps) is True


@pytest.mark.parametrize("recipe", ["diffusion-bc", "diffusion-ql", "gaussian-bc", "cvae-bc", "mmd-bc", "td3bc", "bcq", "bear"])
def test_behaviour_loss_falls_under_every_objective(recipe):
    """A toy problem (actions a smooth function of the state): each objective's behaviour term falls."""
    cfg, _ = load_recipe(recipe)
    cfg = cfg.fit(hidden=32, critic_hidden=32, batch_size=64, n_candidates=4, T=3, time_dim=8, mmd_samples=4, lr=3e-3, grad_norm=0.0)
    rng = np.random.default_rng(0)
    obs = rng.standard_normal((512, 3)).astype(np.float32)
    table = random_table(512)
    table["observations"] = obs
    table["actions"] = np.tanh(obs[:, :2]).astype(np.float32)
    table["rewards"] = np.ones(512, np.float32)  # flat: the Q term carries no direction, the behaviour term must fall
    agent = Agent(cfg.replace(gamma=0.0), *SPACES, device="cpu")
    agent.set_dataset(table)

    def mean_bc(n):
        vals = []
        for _ in range(n):
            vals.append(agent.train_step()["bc_loss"].item())
        return float(np.mean(vals))

    first = mean_bc(10)
    for _ in range(150):
        agent.train_step()
    last = mean_bc(10)
    assert last < first, (recipe, first, last)
