import os

import gymnasium as gym
import numpy as np
import pytest

os.environ.setdefault("MPLBACKEND", "Agg")

import dqltoolkit  # noqa: E402
from dqltoolkit import Agent, AgentConfig  # noqa: E402

TINY = dict(T=3, hidden=16, critic_hidden=16, time_dim=8, batch_size=32, n_candidates=8, ema_start=0, log_every=10)


def tiny_config(**kw) -> AgentConfig:
    return AgentConfig(**{**TINY, **kw})


def random_table(n=200, obs_dim=3, act_dim=2, seed=0):
    from dqltoolkit.bench.throughput import hopper_table

    return hopper_table(n, obs_dim, act_dim, seed=seed, terminal_prob=0.1)


@pytest.fixture
def spaces():
    return gym.spaces.Box(-np.inf, np.inf, (3,), np.float32), gym.spaces.Box(-1, 1, (2,), np.float32)


@pytest.fixture
def tiny_agent(spaces):
    agent = Agent(tiny_config(), *spaces, seeds=[0], device="cpu")
    agent.set_dataset(random_table())
    return agent
