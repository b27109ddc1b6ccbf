import os

import gymnasium as gym
import numpy as np
import pytest

os.environ.setdefault("MPLBACKEND", "Agg")

from dqltoolkit import Agent, AgentConfig  # noqa: E402

TINY = dict(T=3, hidden=16, critic_hidden=16, time_dim=8, batch_size=32, n_candidates=8, ema_start=0, log_every=10)


def tiny_config(**kw) -> AgentConfig:
    """Tiny sizes for whichever parts ``kw`` names (keys those parts do not read are left out), then ``kw``."""
    parts = {k: kw.pop(k) for k in ("head", "critic", "objective") if k in kw}
    return AgentConfig(**parts).fit(**TINY).replace(**kw)


def random_table(n=200, obs_dim=3, act_dim=2, seed=0):
    from dqltoolkit.bench.throughput import hopper_table

    return hopper_table(n, obs_dim, act_dim, seed=seed, terminal_prob=0.1)


@pytest.fixture(autouse=True)
def one_thread_per_worker(request):
    """Under pytest-xdist (`make test`: two workers on two cores) every test gets one intra-op thread, so
    the workers never put three threads on two cores: a two-thread test beside a one-thread learning
    run was measured 30x slower (the dataset builder's tests: 180 s instead of 6 s). Tests that need two
    threads (the fused operators' paired-seed path) ask for them with ``@pytest.mark.two_threads``."""
    import torch

    if "PYTEST_XDIST_WORKER" not in os.environ:
        yield
        return
    n = torch.get_num_threads()
    torch.set_num_threads(2 if request.node.get_closest_marker("two_threads") else 1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def spaces():
    return gym.spaces.Box(-np.inf, np.inf, (3,), np.float32), gym.spaces.Box(-1, 1, (2,), np.float32)


@pytest.fixture
def tiny_agent(spaces):
    agent = Agent(tiny_config(), *spaces, seeds=[0], device="cpu")
    agent.set_dataset(random_table())
    return agent
