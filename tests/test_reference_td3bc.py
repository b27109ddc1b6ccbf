"""The td3bc recipe computes what a plain TD3+BC step (Fujimoto & Gu's structure) computes.

Same weights, batch and smoothing noise: the same losses step by step (the actor's on its delayed steps)
and the same parameters after them, for the actor, its target and both critics. This is what lets
``dqltoolkit bench --rows recipes`` quote the td3bc row's speed against the reference at equal math.
"""

import gymnasium as gym
import numpy as np
import pytest
import torch

from dqltoolkit import Agent
from dqltoolkit.bench.reference_td3bc import ReferenceTD3BC
from dqltoolkit.bench.throughput import hopper_table
from dqltoolkit.config import load_recipe


def _pair():
    cfg, _ = load_recipe("td3bc")
    cfg = cfg.replace(hidden=32, critic_hidden=32, batch_size=64, log_every=10**9)
    agent = Agent(cfg, gym.spaces.Box(-np.inf, np.inf, (11,), np.float32), gym.spaces.Box(-1, 1, (3,), np.float32), seeds=[0], device="cpu")
    agent.set_dataset(hopper_table(500, 11, 3, seed=1))
    b = agent.buffer
    data = {"obs": b.obs, "actions": b.actions, "rewards": b.rewards, "next_obs": b.next_obs, "terminals": b.terminals}
    ref = ReferenceTD3BC(11, 3, data, discount=cfg.gamma, tau=cfg.tau, policy_noise=cfg.target_noise, noise_clip=cfg.target_noise_clip,
                         policy_freq=cfg.policy_delay, alpha=cfg.eta, lr=cfg.lr, batch_size=cfg.batch_size, hidden=cfg.hidden)
    assert cfg.critic_layers == 2 and cfg.n_layers == 2 and cfg.activation == "relu" and cfg.ema_decay == 1 - cfg.tau
    return agent, ref.load_from_agent(agent)


def test_td3bc_recipe_equals_the_plain_step():
    agent, ref = _pair()
    for step in range(7):
        mine = agent.train_step()
        theirs = ref.train_step()
        assert mine["critic_loss"].item() == pytest.approx(theirs["critic_loss"].item(), rel=2e-4, abs=1e-5), step
        if "actor_loss" in theirs:
            assert step % 2 == 0
            assert mine["actor_loss"].item() == pytest.approx(theirs["actor_loss"].item(), rel=2e-4, abs=1e-5), step
    torch.testing.assert_close(agent.head.net.layers[1].weight[0].t(), ref.actor.l2.weight, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(agent.ema_head.net.layers[2].bias[0, 0], ref.actor_target.l3.bias, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(agent.critic.q.layers[0].weight[1].t(), ref.critic.l4.weight, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(agent.critic.target.layers[2].weight[0].t(), ref.critic_target.l3.weight, rtol=1e-4, atol=1e-5)
