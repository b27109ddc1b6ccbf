"""Evaluating every member of a multi-seed agent at once equals evaluating each seed's own agent."""

import gymnasium as gym
import numpy as np
import pytest

from dqltoolkit.agent import Agent
from dqltoolkit.config import AgentConfig
from dqltoolkit.evaluation import evaluate, evaluate_members


def _make_env():
    return gym.make("Pendulum-v1", max_episode_steps=30)


def test_member_evaluation_equals_single_seed_evaluation():
    env = _make_env()
    cfg = AgentConfig(T=3, hidden=16, critic_hidden=16, time_dim=8, n_candidates=4)
    multi = Agent(cfg, env.observation_space, env.action_space, seeds=[0, 1], device="cpu")
    per = evaluate_members(multi, _make_env, episodes=3, seeds=[10, 20])
    assert len(per) == 2 and all(r["episodes"] == 3 for r in per)
    for m, seed in enumerate([0, 1]):
        single = Agent(cfg, env.observation_space, env.action_space, seeds=[seed], device="cpu")
        ref = evaluate(single, _make_env, episodes=3, seed=[10, 20][m])
        assert per[m]["mean_return"] == pytest.approx(ref["mean_return"], rel=1e-5)
        assert per[m]["std_return"] == pytest.approx(ref["std_return"], rel=1e-4)
    assert per[0]["mean_return"] != per[1]["mean_return"]
    with pytest.raises(ValueError, match="1 seeds for an agent with 2 members"):
        evaluate_members(multi, _make_env, episodes=1, seeds=[3])
    # the discounted return of the same episodes (Pendulum pays <= 0 a step): smaller in size, labelled with its gamma
    disc = evaluate_members(multi, _make_env, episodes=3, seeds=[10, 20], gamma=0.5)
    assert all(r["gamma"] == 0.5 and 0 > r["mean_return"] > p["mean_return"] for r, p in zip(disc, per)), (disc, per)
    assert "gamma" not in per[0]
    with pytest.raises(ValueError, match="gamma must be in"):
        evaluate_members(multi, _make_env, episodes=1, seeds=[3, 4], gamma=0.0)


def test_periodic_evaluation_logs_every_seed():
    from types import SimpleNamespace

    from stable_baselines3.common.logger import Logger

    from dqltoolkit.bench.throughput import hopper_table
    from dqltoolkit.training import PeriodicEvaluation

    env = _make_env()
    cfg = AgentConfig(T=2, hidden=8, critic_hidden=8, time_dim=4, n_candidates=2, batch_size=8)
    agent = Agent(cfg, env.observation_space, env.action_space, seeds=[3, 4], device="cpu")
    agent.set_dataset(hopper_table(64, 3, 1))

    class Recorder(Logger):
        def __init__(self):
            super().__init__(None, [])
            self.seen = {}

        def record(self, key, value, exclude=None):
            self.seen[key] = value

    agent.set_logger(Recorder())
    task = SimpleNamespace(make_env=_make_env, normalized_score=lambda r: r / 10.0)
    cb = PeriodicEvaluation(task, freq=2, episodes=2)
    agent.learn(4, callback=cb)
    assert [e["step"] for e in cb.history] == [2, 4]
    last = cb.history[-1]
    assert len(last["normalized_score_per_seed"]) == 2
    assert last["normalized_score"] == pytest.approx(np.mean(last["normalized_score_per_seed"]))
    assert agent.logger.seen["time/step"] == 4
    assert agent.logger.seen["eval/normalized_score_seed4"] == pytest.approx(last["normalized_score_per_seed"][1])


def test_every_finished_episode_is_reported_once_for_the_progress_bar():
    from dqltoolkit.evaluation import _first_episode_returns

    done = []
    # CartPole pushed left every step falls after a number of steps that depends on the seed's start
    returns = _first_episode_returns(lambda: gym.make("CartPole-v1"), [0, 1, 2, 3], lambda o: np.zeros(len(o), np.int64), 500,
                                     on_done=done.append)
    assert sum(done) == 4 and len(done) >= 2  # each episode once, as it ends (not all at the same step)
    assert len(set(returns.tolist())) >= 2  # CartPole pays 1 a step: the returns are the episode lengths
    # discounted: each episode of length L is worth (1 - gamma^L) / (1 - gamma), what a value function estimates
    disc = _first_episode_returns(lambda: gym.make("CartPole-v1"), [0, 1, 2, 3], lambda o: np.zeros(len(o), np.int64), 500,
                                  gamma=0.9)
    np.testing.assert_allclose(disc, (1 - 0.9 ** returns) / (1 - 0.9), rtol=1e-12)


def test_evaluation_acts_deterministically_by_default_and_says_so():
    """SB3's evaluate_policy acts deterministically by default; so do evaluate and evaluate_members, and
    their results name the mode (the two modes score differently)."""
    env = _make_env()
    agent = Agent(AgentConfig(T=2, hidden=8, critic_hidden=8, time_dim=4, n_candidates=4), env.observation_space, env.action_space,
                  seeds=[0], device="cpu")
    seen = []
    real = agent.predict

    def spy(obs, state=None, episode_start=None, deterministic=False):
        seen.append(deterministic)
        return real(obs, state, episode_start, deterministic)

    agent.predict = spy
    assert evaluate(agent, _make_env, episodes=2)["acting"] == "deterministic" and set(seen) == {True}
    seen.clear()
    assert evaluate(agent, _make_env, episodes=2, deterministic=False)["acting"] == "stochastic" and set(seen) == {False}
    assert [r["acting"] for r in evaluate_members(agent, _make_env, episodes=2)] == ["deterministic"]

    from stable_baselines3.common.evaluation import evaluate_policy

    seen.clear()
    evaluate_policy(agent, _make_env(), n_eval_episodes=1, warn=False)  # SB3's defaults
    assert set(seen) == {True}


@pytest.mark.parametrize("episodes", [0, -3, 2.5])
def test_evaluation_refuses_fewer_than_one_episode(episodes):
    env = _make_env()
    agent = Agent(AgentConfig(T=2, hidden=8, critic_hidden=8, time_dim=4, n_candidates=2), env.observation_space, env.action_space,
                  seeds=[0], device="cpu")
    with pytest.raises(ValueError, match=f"episodes must be a whole number >= 1, got {episodes!r}"):
        evaluate(agent, _make_env, episodes=episodes)
    with pytest.raises(ValueError, match="episodes must be a whole number >= 1"):
        evaluate_members(agent, _make_env, episodes=episodes)


def _bandit_checkpoint(tmp_path):
    from click.testing import CliRunner

    from dqltoolkit.cli import main

    tiny = ["-p", "T=3", "-p", "hidden=16", "-p", "critic_hidden=16", "-p", "batch_size=32", "-p", "n_candidates=4"]
    res = CliRunner().invoke(main, ["train", "--env", "bandit2d-v0", "--steps", "4", "--out", str(tmp_path / "r"), "--no-progress", *tiny],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return tmp_path / "r" / "model.zip"


def test_cli_evaluate_default_matches_sb3_and_the_other_mode_is_one_flag_away(tmp_path, monkeypatch):
    import json

    from click.testing import CliRunner

    from dqltoolkit.cli import main

    ckpt = _bandit_checkpoint(tmp_path)
    seen = []
    real = Agent.predict

    def spy(self, obs, state=None, episode_start=None, deterministic=False):
        seen.append(deterministic)
        return real(self, obs, state, episode_start, deterministic)

    monkeypatch.setattr(Agent, "predict", spy)
    runner = CliRunner()
    res = runner.invoke(main, ["evaluate", str(ckpt), "--episodes", "30"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "over 30 episodes (deterministic acting)" in res.output and set(seen) == {True}
    seen.clear()
    res = runner.invoke(main, ["evaluate", str(ckpt), "--episodes", "30", "--stochastic", "--json"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    r = json.loads(res.output.strip().splitlines()[-1])
    assert r["acting"] == "stochastic" and r["episodes"] == 30 and set(seen) == {False}
    res = runner.invoke(main, ["evaluate", str(ckpt), "--episodes", "5", "--deterministic", "--json"], catch_exceptions=False)
    assert json.loads(res.output.strip().splitlines()[-1])["acting"] == "deterministic"


@pytest.mark.parametrize("episodes", ["0", "-2"])
def test_cli_evaluate_refuses_fewer_than_one_episode(tmp_path, episodes):
    """Before: --episodes 0 ran the task's default (1,000 bandit episodes) and -2 crashed deep inside."""
    from click.testing import CliRunner

    from dqltoolkit.cli import main

    for cmd in (["evaluate", str(tmp_path / "any.zip")], ["zoo", "evaluate", "diffusion-ql-bandit2d-v0"]):
        res = CliRunner().invoke(main, [*cmd, "--episodes", episodes])
        assert res.exit_code == 2
        assert f"Invalid value for '--episodes': {episodes} episodes: give at least 1 (leave --episodes out for the task's default)" \
            in res.output
