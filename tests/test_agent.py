import gymnasium as gym
import numpy as np
import pytest
import torch

import dqltoolkit
from dqltoolkit import Agent

from .conftest import random_table, tiny_config


def test_predict_single_and_batch_follow_sb3(tiny_agent):
    tiny_agent.learn(5)
    a, state = tiny_agent.predict(np.zeros(3, np.float32))
    assert a.shape == (2,) and a.dtype == np.float32 and state is None
    b, _ = tiny_agent.predict(np.zeros((4, 3), np.float32), state=None, episode_start=np.ones(4, bool), deterministic=True)
    assert b.shape == (4, 2)
    assert np.all(b >= -1) and np.all(b <= 1)


def test_predict_rejects_wrong_observation_shape(tiny_agent):
    with pytest.raises(ValueError, match=r"observation has shape \(4,\); expected \(3,\)"):
        tiny_agent.predict(np.zeros(4, np.float32))
    with pytest.raises(ValueError, match=r"\(n_envs, 3\)"):
        tiny_agent.predict(np.zeros((2, 5), np.float32))


def test_actions_are_mapped_to_box_bounds():
    import gymnasium as gym

    obs_space = gym.spaces.Box(-np.inf, np.inf, (3,), np.float32)
    act_space = gym.spaces.Box(np.array([0.0, 10.0], np.float32), np.array([2.0, 20.0], np.float32))
    agent = Agent(tiny_config(), obs_space, act_space, device="cpu")
    t = random_table()
    t["actions"] = np.stack([np.full(200, 1.5), np.full(200, 12.0)], 1).astype(np.float32)
    agent.set_dataset(t)
    torch.testing.assert_close(agent.buffer.actions[0], torch.tensor([0.5, -0.6]))
    a, _ = agent.predict(np.zeros((50, 3), np.float32))
    assert np.all(a[:, 0] >= 0) and np.all(a[:, 0] <= 2) and np.all(a[:, 1] >= 10) and np.all(a[:, 1] <= 20)


def test_save_load_round_trip(tiny_agent, tmp_path):
    tiny_agent.learn(12)
    path = tiny_agent.save(tmp_path / "model.zip")
    loaded = dqltoolkit.load(path)
    obs = np.random.default_rng(1).standard_normal((6, 3)).astype(np.float32)
    tiny_agent.set_random_seed(5)
    loaded.set_random_seed(5)
    np.testing.assert_array_equal(tiny_agent.predict(obs)[0], loaded.predict(obs)[0])
    assert loaded.num_timesteps == 12 and loaded.config == tiny_agent.config
    for p, q in zip(tiny_agent.head.parameters(), loaded.head.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


@pytest.mark.parametrize("kw", [{}, {"lr_decay": True, "steps": 12}])
def test_resumed_training_continues_exactly(tmp_path, kw):
    import gymnasium as gym

    spaces = (gym.spaces.Box(-np.inf, np.inf, (3,), np.float32), gym.spaces.Box(-1, 1, (2,), np.float32))
    a = Agent(tiny_config(**kw), *spaces, device="cpu")
    a.set_dataset(random_table())
    a.learn(6)
    a.save(tmp_path / "mid.zip")
    b = Agent.load(tmp_path / "mid.zip", device="cpu")
    assert b.actor_opt.param_groups[0]["lr"] == a.actor_opt.param_groups[0]["lr"]
    assert b.critic_opt.param_groups[0]["lr"] == a.critic_opt.param_groups[0]["lr"]
    if kw:
        assert 0 < a.actor_opt.param_groups[0]["lr"] < a.config.lr  # halfway down the cosine
    a.learn(6)
    b.set_dataset(random_table())
    b.learn(6)
    for p, q in zip(a.head.parameters(), b.head.parameters()):
        torch.testing.assert_close(p, q)
    for p, q in zip(a.critic.parameters(), b.critic.parameters()):
        torch.testing.assert_close(p, q)


def test_evaluate_policy_and_callbacks_work(tmp_path):
    import gymnasium as gym
    from stable_baselines3.common.callbacks import CheckpointCallback, EvalCallback
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.evaluation import evaluate_policy

    from dqltoolkit.envs import make_bandit_dataset

    env = gym.make("bandit2d-v0")
    agent = Agent(tiny_config(), env.observation_space, env.action_space, device="cpu", env=env)
    agent.set_dataset(make_bandit_dataset(500))
    eval_env = make_vec_env("bandit2d-v0", n_envs=2)
    cbs = [EvalCallback(eval_env, n_eval_episodes=4, eval_freq=5, log_path=str(tmp_path), best_model_save_path=str(tmp_path)),
           CheckpointCallback(save_freq=10, save_path=str(tmp_path / "ckpt"))]
    agent.learn(10, callback=cbs)
    mean, std = evaluate_policy(agent, eval_env, n_eval_episodes=6)
    assert np.isfinite(mean) and std >= 0
    assert (tmp_path / "evaluations.npz").exists() and (tmp_path / "best_model.zip").exists()
    saved = sorted((tmp_path / "ckpt").glob("*.zip"))
    assert saved and dqltoolkit.load(saved[-1]).num_timesteps == 10


def test_objective_needing_gradients_rejects_head_without_them(spaces):
    from dqltoolkit.heads.base import PolicyHead
    from dqltoolkit.registry import HEADS

    class NoGrad(PolicyHead):
        differentiable_samples = False

    HEADS.register("nograd-test", NoGrad, overwrite=True)
    with pytest.raises(ValueError, match="objective 'ql' needs differentiable samples, but head 'nograd-test'"):
        Agent(tiny_config(head="nograd-test"), *spaces)


def test_unknown_head_names_the_head(spaces):
    with pytest.raises(KeyError, match="unknown head 'gausian'"):
        Agent(tiny_config(head="gausian"), *spaces)


def test_divergence_is_detected(tiny_agent):
    from dqltoolkit.training import TrainingDiverged

    tiny_agent.learn(3)
    with torch.no_grad():
        tiny_agent.critic.q.layers[-1].bias.fill_(float("nan"))
    with pytest.raises(TrainingDiverged, match="critic_loss"):
        tiny_agent.learn(10)


@pytest.mark.two_threads  # (the fused operators run seeds in pairs only then)
def test_members_equal_separate_runs(spaces):
    """Three seeds in one process: each member equals a single-seed run (losses and parameters)."""
    multi = Agent(tiny_config(), *spaces, seeds=[0, 1, 2], device="cpu")
    multi.set_dataset(random_table())
    single = Agent(tiny_config(), *spaces, seeds=[1], device="cpu")
    single.set_dataset(random_table())
    for _ in range(5):
        im = multi.train_step()
        is_ = single.train_step()
        for k in ("critic_loss", "actor_loss", "bc_loss"):
            torch.testing.assert_close(im[k][1], is_[k][0], rtol=1e-4, atol=1e-5)
    for pm, ps in zip(multi.head.parameters(), single.head.parameters()):
        torch.testing.assert_close(pm[1:2], ps, rtol=1e-4, atol=1e-5)
    for pm, ps in zip(multi.critic.q.parameters(), single.critic.q.parameters()):
        torch.testing.assert_close(pm[2:4], ps, rtol=1e-4, atol=1e-5)


def test_ema_tracks_actor_before_start_unless_reference_quirks(spaces):
    def run(quirks):
        agent = Agent(tiny_config(ema_start=100, reference_quirks=quirks), *spaces, device="cpu")
        init = [p.detach().clone() for p in agent.head.parameters()]
        agent.set_dataset(random_table())
        agent.learn(11)  # the last step (index 10) ends with an EMA update, after the actor update
        return agent, init

    sound, init = run(False)
    assert all(torch.equal(p, q) for p, q in zip(sound.head.parameters(), sound.ema_head.parameters()))
    assert not all(torch.equal(p, q) for p, q in zip(init, sound.ema_head.parameters()))
    quirky, init = run(True)
    assert all(torch.equal(p, q) for p, q in zip(init, quirky.ema_head.parameters()))


def test_fewer_step_samplers_apply_where_configured(spaces):
    agent = Agent(tiny_config(T=6, sample_steps=2, target_sample_steps=3), *spaces, device="cpu")
    assert not hasattr(agent.head, "sample_steps")  # the number of steps is passed in, never written into the head
    seen = []
    real = type(agent.head).chain

    def spy(self, steps=0, sampler=None):
        seen.append((self is agent.ema_head, steps))
        return real(self, steps, sampler)

    type(agent.head).chain = spy
    try:
        agent.set_dataset(random_table())
        agent.train_step()
        agent.predict(np.zeros(3, np.float32))
    finally:
        type(agent.head).chain = real
    assert (True, 3) in seen  # critic target: the EMA head's 3-step chain
    assert (False, 0) in seen  # the Q term: the online head's full chain
    assert (False, 2) in seen  # acting: 2 steps


def test_candidate_selection_is_softmax_of_min_q_and_deterministic_is_its_weighted_medoid(spaces):
    """predict scores n_candidates samples by the target critic's min(Q1, Q2) and draws one with
    probability softmax(Q); deterministic acting takes the candidate with the least softmax(Q)-weighted
    distance to the others, the same for the same observation."""
    agent = Agent(tiny_config(n_candidates=4), *spaces, device="cpu")
    cands = torch.tensor([[-0.5, 0.0], [0.0, 0.5], [0.5, 0.0], [0.0, -0.5]])
    q_of = torch.tensor([0.0, 1.0, 2.0, 0.5])

    def fixed_candidates(head, aux, obs, gens, **_):
        M, BN, _ = obs.shape
        return cands.repeat(BN // 4, 1).unsqueeze(0)

    def fake_q(obs, actions):
        idx = (actions[0].unsqueeze(1) - cands).abs().sum(-1).argmin(-1)
        q = q_of[idx]
        return torch.stack([q, q + 1.0]).unsqueeze(0)  # min over the twins is q

    agent.objective.policy_sample = fixed_candidates
    agent.critic.target_values = fake_q
    obs = np.zeros((4000, 3), np.float32)
    det, _ = agent.predict(obs, deterministic=True)
    w = torch.softmax(q_of, 0)
    spread = (torch.cdist(cands, cands) * w).sum(-1)  # by hand: [0.79, 0.59, 0.32, 0.63] -> the third candidate
    np.testing.assert_array_equal(det, np.tile(cands[spread.argmin()].numpy(), (4000, 1)))
    np.testing.assert_array_equal(agent.predict(obs[:3], deterministic=True)[0], det[:3])  # any batch, the same action
    drawn, _ = agent.predict(obs)
    chosen = np.abs(drawn[:, None, :] - cands.numpy()[None]).sum(-1).argmin(-1)
    freq = np.bincount(chosen, minlength=4) / len(chosen)
    np.testing.assert_allclose(freq, torch.softmax(q_of, 0).numpy(), atol=0.03)


def test_max_q_backup_takes_the_max_over_samples_then_the_min_over_twins(spaces):
    agent = Agent(tiny_config(max_q_backup=True, n_backup_samples=3, gamma=0.5), *spaces, device="cpu")
    agent.set_dataset(random_table())
    batch = agent.buffer.sample(5, agent.train_generators)
    state = agent.train_generators[0].get_state()
    y = agent.learner.backend.td_target(agent.learner, batch)
    agent.train_generators[0].set_state(state)
    rep = batch["next_obs"].repeat_interleave(3, dim=1)
    na = agent.ema_head.sample(rep, agent.train_generators)
    q = agent.critic.target_values(rep, na)[0]  # [2, 15]
    per_state = q.view(2, 5, 3).max(-1).values.min(0).values
    expected = batch["rewards"][0] + 0.5 * (1 - batch["terminals"][0]) * per_state
    torch.testing.assert_close(y[0], expected)


def test_cosine_lr_decay_reaches_zero_at_the_last_step(spaces):
    agent = Agent(tiny_config(lr_decay=True, steps=10), *spaces, device="cpu")
    agent.set_dataset(random_table())
    lrs = []
    for _ in range(10):
        agent.train_step()
        lrs.append(agent.actor_opt.param_groups[0]["lr"])
    assert lrs[0] < agent.config.lr and lrs == sorted(lrs, reverse=True) and lrs[-1] == pytest.approx(0.0, abs=1e-12)


def test_from_task_gives_an_agent_ready_for_sb3_tools():
    from stable_baselines3.common.evaluation import evaluate_policy

    from dqltoolkit.config import ConfigError

    model = Agent.from_task("diffusion-ql", "bandit2d-v0", device="cpu", T=3, hidden=16, critic_hidden=16, batch_size=32, n_candidates=4, eta="2.5")
    # the recipe's bandit section applies (gamma 0, approx Q-gradient), overrides are typed like -p
    assert model.config.eta == 2.5 and model.config.gamma == 0.0 and model.config.q_grad == "approx" and model.task == "bandit2d-v0"
    assert model.buffer is not None and model.get_env() is not None
    model.learn(5)
    mean, _ = evaluate_policy(model, model.get_env(), n_eval_episodes=10)
    assert np.isfinite(mean) and model.num_timesteps == 5
    with pytest.raises(ConfigError, match="unknown key 'etaa'. Did you mean 'eta'"):
        Agent.from_task("diffusion-ql", "bandit2d-v0", etaa=1.0)


def test_load_then_learn_continues_on_the_checkpoints_task(tmp_path):
    """Agent.load + learn: the checkpoint knows its task, so its dataset is loaded (statistics kept)."""
    agent = Agent.from_task("diffusion-ql", "bandit2d-v0", device="cpu", T=3, hidden=16, critic_hidden=16, batch_size=32,
                            n_candidates=4, log_every=5)
    agent.learn(5)
    path = agent.save(tmp_path / "m.zip")
    loaded = Agent.load(path, device="cpu")
    assert loaded.buffer is None and loaded.task == "bandit2d-v0"
    loaded.learn(3)
    assert loaded.num_timesteps == 8 and loaded.buffer is not None
    bare = Agent(tiny_config(), gym.spaces.Box(-np.inf, np.inf, (3,), np.float32), gym.spaces.Box(-1, 1, (2,), np.float32), device="cpu")
    with pytest.raises(RuntimeError, match=r"no dataset: call agent.set_dataset\(table\) first, or build the agent with Agent.from_task"):
        bare.learn(1)


def test_unknown_keywords_are_refused_like_a_typo_should_be(tmp_path, tiny_agent):
    path = tiny_agent.save(tmp_path / "m.zip")
    with pytest.raises(TypeError, match="devcie"):
        Agent.load(path, devcie="cpu")
    with pytest.raises(TypeError, match="tb_log_nam"):
        tiny_agent.learn(1, tb_log_nam="x")
    tiny_agent.learn(1, tb_log_name="run", reset_num_timesteps=False)  # SB3's own keywords are accepted
    with pytest.raises(ValueError, match="custom_objects"):
        Agent.load(path, custom_objects={"lr_schedule": 0.1})
    with pytest.raises(ValueError, match="total_timesteps must be >= 0"):
        tiny_agent.learn(-1)


def test_predict_refuses_non_finite_observations_and_takes_empty_batches(tiny_agent):
    with pytest.raises(ValueError, match=r"observation rows \[1\] contain NaN or Inf"):
        tiny_agent.predict(np.array([[0, 0, 0], [np.nan, 0, 0]], np.float32))
    with pytest.raises(ValueError, match="the observation contain NaN or Inf"):
        tiny_agent.predict(np.array([np.inf, 0, 0], np.float32))
    a, _ = tiny_agent.predict(np.zeros((0, 3), np.float32))
    assert a.shape == (0, 2)


def test_deterministic_acting_is_the_same_action_for_the_same_observation_in_any_batch(tiny_agent):
    obs = np.random.default_rng(0).standard_normal((7, 3)).astype(np.float32)
    batch, _ = tiny_agent.predict(obs, deterministic=True)
    alone = np.stack([tiny_agent.predict(o, deterministic=True)[0] for o in obs])
    np.testing.assert_allclose(batch, alone, rtol=1e-5, atol=1e-6)
    shuffled, _ = tiny_agent.predict(obs[::-1].copy(), deterministic=True)
    np.testing.assert_allclose(shuffled[::-1], batch, rtol=1e-5, atol=1e-6)
    stochastic = np.stack([tiny_agent.predict(obs)[0] for _ in range(2)])
    assert not np.allclose(stochastic[0], stochastic[1])  # stochastic acting still draws afresh


def test_large_batches_are_acted_on_in_bounded_chunks(tiny_agent, monkeypatch):
    from dqltoolkit import acting

    monkeypatch.setattr(acting, "CANDIDATE_ROWS_PER_CHUNK", 64)  # 8 candidates: 8 states per chunk
    seen = []
    real = acting.ActingPolicy._act_once
    monkeypatch.setattr(acting.ActingPolicy, "_act_once", lambda self, obs, d, h: seen.append(obs.shape[1]) or real(self, obs, d, h))
    obs = np.random.default_rng(1).standard_normal((50, 3)).astype(np.float32)
    det, _ = tiny_agent.predict(obs, deterministic=True)
    assert det.shape == (50, 2) and max(seen) == 8 and sum(seen) == 50
    monkeypatch.setattr(acting, "CANDIDATE_ROWS_PER_CHUNK", 10**6)
    np.testing.assert_allclose(tiny_agent.predict(obs, deterministic=True)[0], det, rtol=1e-5, atol=1e-6)  # chunking changes nothing
