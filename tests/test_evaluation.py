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
