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
    rng = np.random.default_rng(seed)
    return {
        "observations": rng.standard_normal((n, obs_dim)).astype(np.float32),
        "actions": rng.uniform(-1, 1, (n, act_dim)).astype(np.float32),
        "rewards": rng.standard_normal(n).astype(np.float32),
        "next_observations": rng.standard_normal((n, obs_dim)).astype(np.float32),
        "terminals": (rng.uniform(size=n) < 0.1).astype(np.float32),
    }


@pytest.fixture
def spaces():
    return gym.spaces.Box(-np.inf, np.inf, (3,), np.float32), gym.spaces.Box(-1, 1, (2,), np.float32)


@pytest.fixture
def tiny_agent(spaces):
    agent = Agent(tiny_config(), *spaces, seeds=[0], device="cpu")
    agent.set_dataset(random_table())
    return agent
