"""The ensemble critic: N Q-networks with a min or lower-confidence-bound reduction, everything else of
the agent unchanged. Two networks with the min reduce to the twin critic exactly."""

import numpy as np
import pytest
import torch

import dqltoolkit
from dqltoolkit import Agent
from dqltoolkit.critics import EnsembleQCritic

from .conftest import random_table, tiny_config


@pytest.fixture
def eager(monkeypatch):
    """The eager path for every part (the fused CPU operators take the twins' min)."""
    monkeypatch.setenv("DQLTOOLKIT_FUSED", "0")  # agents built now choose the eager backend


def _run(cfg, spaces, steps=6, seeds=(0,)):
    agent = Agent(cfg, *spaces, seeds=list(seeds), device="cpu")
    agent.set_dataset(random_table())
    infos = [{k: v.clone() for k, v in agent.train_step().items()} for _ in range(steps)]
    return agent, infos


def test_two_networks_with_min_train_exactly_like_the_twin_critic(spaces, eager):
    twin, twin_infos = _run(tiny_config(), spaces)
    ens, ens_infos = _run(tiny_config(critic="ensemble-q", n_critics=2), spaces)
    assert isinstance(ens.critic, EnsembleQCritic) and ens.critic.n_q == 2
    for a, b in zip(twin_infos, ens_infos):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    for p, q in zip(list(twin.head.parameters()) + list(twin.critic.parameters()), list(ens.head.parameters()) + list(ens.critic.parameters())):
        assert torch.equal(p, q)


def test_reductions():
    q = torch.tensor([[[1.0, -2.0], [3.0, 0.0], [5.0, 4.0]]])  # [M 1, N 3, B 2]
    low = EnsembleQCritic(3, 2, n_critics=3)
    torch.testing.assert_close(low.reduce(q), torch.tensor([[1.0, -2.0]]))
    lcb = EnsembleQCritic(3, 2, n_critics=3, critic_reduce="lcb", critic_lcb_k=2.0)
    std = torch.tensor([np.std([1.0, 3.0, 5.0]), np.std([-2.0, 0.0, 4.0])], dtype=torch.float32)
    torch.testing.assert_close(lcb.reduce(q), (torch.tensor([3.0, 2.0 / 3.0]) - 2.0 * std).unsqueeze(0))


def _target_and_its_target_values(cfg, spaces, batch_size, samples=1):
    """An agent's TD target for one batch, and the target critic's values [M, n_q, B * samples] at the
    same next actions (the generators rewound, so the same noise is drawn again)."""
    agent = Agent(cfg, *spaces, device="cpu")
    agent.set_dataset(random_table())
    batch = agent.buffer.sample(batch_size, agent.train_generators)
    states = [g.get_state() for g in agent.train_generators]
    y = agent.learner.backend.td_target(agent.learner, batch)
    for g, s in zip(agent.train_generators, states):
        g.set_state(s)
    with torch.no_grad():
        rep = batch["next_obs"].repeat_interleave(samples, dim=1)
        q = agent.critic.target_values(rep, agent.learner.next_actions(rep))
    return agent, batch, y, q


def test_td_target_and_acting_use_the_reduction(spaces, eager):
    cfg = tiny_config(critic="ensemble-q", n_critics=5, critic_reduce="lcb", critic_lcb_k=0.5)
    agent, batch, y, q = _target_and_its_target_values(cfg, spaces, 32)
    assert q.shape == (1, 5, 32)
    expected = batch["rewards"] + (1 - batch["terminals"]) * agent.config.gamma * (q.mean(1) - 0.5 * q.std(1, unbiased=False))
    torch.testing.assert_close(y, expected)
    actions, _ = agent.predict(np.zeros((4, 3), dtype=np.float32), deterministic=True)
    assert actions.shape == (4, 2) and np.all(np.abs(actions) <= 1)


@pytest.mark.two_threads  # (the fused operators run seeds in pairs only then)
def test_ensemble_members_equal_separate_runs(spaces):
    """Five networks per seed, three seeds in one process: each seed equals its own single-seed run, on
    the fused CPU critic regression (which takes any number of networks per seed)."""
    cfg = tiny_config(critic="ensemble-q", n_critics=5)
    multi, multi_infos = _run(cfg, spaces, steps=4, seeds=(0, 1, 2))
    single, single_infos = _run(cfg, spaces, steps=4, seeds=(1,))
    for m, s in zip(multi_infos, single_infos):
        for k in ("critic_loss", "actor_loss", "bc_loss", "ql_loss"):
            torch.testing.assert_close(m[k][1], s[k][0], rtol=1e-4, atol=1e-5)
    for pm, ps in zip(multi.critic.q.parameters(), single.critic.q.parameters()):
        torch.testing.assert_close(pm[5:10], ps, rtol=1e-4, atol=1e-5)


def test_settings_that_do_not_apply_fail(spaces):
    with pytest.raises(ValueError, match="key 'n_critics' is not read by this agent's parts.*it belongs to critic 'ensemble-q'"):
        Agent(tiny_config(n_critics=5), *spaces)
    with pytest.raises(ValueError, match="n_critics=1 is below its minimum 2"):
        Agent(tiny_config(critic="ensemble-q", n_critics=1), *spaces)
    with pytest.raises(ValueError, match="ensemble-q: critic_reduce must be one of \\('min', 'minmax', 'lcb'\\), got 'mean'"):
        Agent(tiny_config(critic="ensemble-q", critic_reduce="mean"), *spaces)


def test_diffusion_ql_with_an_lcb_ensemble_still_picks_the_best_mode(tmp_path):
    from dqltoolkit.envs.bandit2d import mode_shares
    from dqltoolkit.training import sample_policy_actions

    n = torch.get_num_threads()
    torch.set_num_threads(1)  # the suite runs two workers on two cores
    try:
        res = dqltoolkit.train("diffusion-ql", "bandit2d-v0", tmp_path, seeds=[0], device="cpu", progress=False, verbose=False,
                               overrides={"critic": "ensemble-q", "n_critics": 3, "critic_reduce": "lcb"})
    finally:
        torch.set_num_threads(n)
    model = dqltoolkit.load(res.checkpoints[0], device="cpu")
    assert model.critic.n_q == 3 and model.config.critic_reduce == "lcb"  # the checkpoint rebuilds the ensemble
    shares = mode_shares(sample_policy_actions(model, 1000, seed=123))
    assert shares["bottom_right"] >= 0.9 and shares["off_data"] <= 0.05, shares
    assert res.results["evaluation"][0]["mean_return"] >= 4.5


def test_soft_clipped_double_q_reduction():
    from dqltoolkit.critics import DoubleQCritic

    q = torch.tensor([[[1.0, -2.0], [3.0, 0.0]]])  # [M 1, twins, B 2]
    soft = DoubleQCritic(3, 2, critic_reduce="minmax", critic_lambda=0.75)
    torch.testing.assert_close(soft.reduce(q), torch.tensor([[0.75 * 1 + 0.25 * 3, 0.75 * -2 + 0.25 * 0]]))
    with pytest.raises(ValueError, match="double-q: critic_reduce must be one of \\('min', 'minmax'\\), got 'lcb'"):
        DoubleQCritic(3, 2, critic_reduce="lcb")


@pytest.mark.parametrize("order", ["max-first", "reduce-first"])
def test_max_q_backup_orders(spaces, order):
    """Diffusion-QL's backup takes each network's best sample, then the reduction; BCQ's reduces each
    sample (soft clipped double Q), then takes the best sample. The bcq recipe uses BCQ's."""
    from dqltoolkit.config import load_recipe

    assert load_recipe("bcq")[0].backup_order == "reduce-first" and load_recipe("bcq")[0].critic_reduce == "minmax"
    cfg = tiny_config(max_q_backup=True, n_backup_samples=4, backup_order=order, critic_reduce="minmax", critic_lambda=0.75)
    agent, batch, y, q = _target_and_its_target_values(cfg, spaces, 8, samples=4)
    q = q.view(1, 2, 8, 4)  # [M, twins, B, samples]
    soft = lambda v: 0.75 * v.min(dim=1).values + 0.25 * v.max(dim=1).values  # noqa: E731
    best = soft(q).max(-1).values if order == "reduce-first" else soft(q.max(-1).values)
    torch.testing.assert_close(y, batch["rewards"] + (1 - batch["terminals"]) * agent.config.gamma * best)
    with pytest.raises(ValueError, match="backup_order='sideways' is not one of 'max-first', 'reduce-first'"):
        Agent(tiny_config(backup_order="sideways"), *spaces)


def test_bcq_acts_by_its_best_candidate_even_when_sampling(spaces):
    from dqltoolkit.config import load_recipe

    cfg = load_recipe("bcq")[0].replace(hidden=16, critic_hidden=16, batch_size=16)
    agent = Agent(cfg, *spaces, device="cpu")
    agent.set_dataset(random_table())
    agent.learn(3)
    obs = np.random.default_rng(0).standard_normal((6, 3)).astype(np.float32)
    agent.set_random_seed(5)
    sampled = agent.predict(obs, deterministic=False)[0]
    # replay: the same candidates, and the best of them by the critic's reduction (no softmax draw)
    agent.set_random_seed(5)
    n = agent.config.n_candidates
    rep = torch.as_tensor(obs)[None].repeat_interleave(n, dim=1)
    with torch.no_grad():
        cand = agent.objective.policy_sample(agent.head, agent.aux, rep, agent.act_generators)
        k = agent.critic.action_values(rep, cand).view(1, 6, n).argmax(-1)
    best = cand.view(1, 6, n, -1)[0, torch.arange(6), k[0]].numpy()
    np.testing.assert_allclose(sampled, best, rtol=1e-6, atol=1e-6)
    diffusion = Agent(tiny_config(), *spaces, device="cpu")
    assert not diffusion.objective.greedy_acting and agent.objective.greedy_acting
