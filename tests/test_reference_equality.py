"""The toolkit's fast step computes the same thing as the paper-structured reference step.

Same weights, same batch, same noise (both draw from one generator in the same order): the losses of
the first steps agree, and so do the parameters after them. This is what lets the benchmark claim a
speed-up at equal math.
"""

import gymnasium as gym
import numpy as np
import pytest
import torch

from dqltoolkit import Agent, AgentConfig
from dqltoolkit.bench.reference import ReferenceDiffusionQL
from dqltoolkit.bench.throughput import hopper_table


def _pair(steps_cfg=None, **kw):
    cfg = AgentConfig(T=5, hidden=32, critic_hidden=32, time_dim=16, batch_size=64, ema_start=0, grad_norm=1.0, log_every=10**9, **kw)
    table = hopper_table(500, 11, 3, seed=1)
    agent = Agent(cfg, gym.spaces.Box(-np.inf, np.inf, (11,), np.float32), gym.spaces.Box(-1, 1, (3,), np.float32), seeds=[0], device="cpu")
    agent.set_dataset(table)
    b = agent.buffer
    data = {"obs": b.obs, "actions": b.actions, "rewards": b.rewards, "next_obs": b.next_obs, "terminals": b.terminals}
    ref = ReferenceDiffusionQL(11, 3, agent.head.betas, data, eta=cfg.eta, grad_norm=cfg.grad_norm, ema_start=cfg.ema_start,
                               batch_size=cfg.batch_size, hidden=cfg.hidden, t_dim=cfg.time_dim)
    ref.load_from_agent(agent)
    return agent, ref


def test_same_losses_for_same_weights_batch_and_noise():
    agent, ref = _pair()
    for step in range(6):
        mine = {k: v.item() for k, v in agent.train_step().items()}
        theirs = ref.train_step()
        for k in ("critic_loss", "bc_loss", "ql_loss", "actor_loss"):
            assert mine[k] == pytest.approx(theirs[k], rel=2e-4, abs=1e-5), (step, k)


def test_same_parameters_after_a_few_steps():
    agent, ref = _pair()
    for _ in range(6):
        agent.train_step()
        ref.train_step()
    w_mine = agent.head.net.layers[1].weight[0].t()
    w_ref = ref.actor.model.mid_layer[2].weight
    torch.testing.assert_close(w_mine, w_ref, rtol=1e-4, atol=1e-5)
    q2_mine = agent.critic.q.layers[-1].weight[1].t()
    torch.testing.assert_close(q2_mine, ref.critic.q2_model[-1].weight, rtol=1e-4, atol=1e-5)
    ema_mine = agent.ema_head.net.layers[0].bias[0, 0]
    torch.testing.assert_close(ema_mine, ref.ema_model.model.mid_layer[0].bias, rtol=1e-4, atol=1e-5)
