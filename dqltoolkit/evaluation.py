"""Vectorised evaluation: all episodes of a batch run as one Gymnasium vector env, one predict per step."""

from __future__ import annotations

from typing import Callable, Dict, List, Optional

import gymnasium as gym
import numpy as np
import torch


def evaluate(
    agent,
    make_env: Callable[[], gym.Env],
    episodes: int = 10,
    seed: int = 0,
    deterministic: bool = False,
    max_envs: int = 100,
    max_steps: int = 100_000,
) -> Dict[str, float]:
    """Mean/std return over ``episodes``. Episodes run ``max_envs`` at a time in a SyncVectorEnv; each
    env's first episode is counted and the rest of its steps are masked, so seeds are deterministic."""
    returns = []
    done_so_far = 0
    while done_so_far < episodes:
        n = min(max_envs, episodes - done_so_far)
        venv = gym.vector.SyncVectorEnv([make_env for _ in range(n)])
        try:
            obs, _ = venv.reset(seed=[seed + done_so_far + i for i in range(n)])
            ret = np.zeros(n)
            alive = np.ones(n, dtype=bool)
            for _ in range(max_steps):
                actions, _ = agent.predict(obs, deterministic=deterministic)
                obs, r, term, trunc, _ = venv.step(actions)
                ret += np.where(alive, r, 0.0)
                alive &= ~(term | trunc)
                if not alive.any():
                    break
        finally:
            venv.close()
        returns.extend(ret.tolist())
        done_so_far += n
    arr = np.asarray(returns)
    return {"mean_return": float(arr.mean()), "std_return": float(arr.std()), "episodes": int(len(arr))}


def evaluate_members(
    agent,
    make_env: Callable[[], gym.Env],
    episodes: int = 10,
    seeds: Optional[List[int]] = None,
    deterministic: bool = False,
    max_steps: int = 100_000,
) -> List[Dict[str, float]]:
    """Evaluate every member (seed) of a multi-seed agent at once: ``members x episodes`` envs in one
    SyncVectorEnv and one batched ``act`` per step, where :func:`evaluate` through ``predict`` would
    evaluate member 0 only. Member m's episodes are seeded ``seeds[m] + i``. Returns one dict per member.
    """
    M = agent.members
    seeds = list(seeds) if seeds is not None else [s + 100 for s in agent.seeds]
    if len(seeds) != M:
        raise ValueError(f"evaluate_members: {len(seeds)} seeds for an agent with {M} members")
    venv = gym.vector.SyncVectorEnv([make_env for _ in range(M * episodes)])
    try:
        obs, _ = venv.reset(seed=[seeds[m] + i for m in range(M) for i in range(episodes)])
        ret = np.zeros(M * episodes)
        alive = np.ones(M * episodes, dtype=bool)
        low, high = venv.single_action_space.low, venv.single_action_space.high
        for _ in range(max_steps):
            x = torch.as_tensor(np.asarray(obs, dtype=np.float32), device=agent.device).view(M, episodes, -1)
            actions = agent.act(x, deterministic).reshape(M * episodes, -1).cpu().numpy()
            obs, r, term, trunc, _ = venv.step(np.clip(actions, low, high))
            ret += np.where(alive, r, 0.0)
            alive &= ~(term | trunc)
            if not alive.any():
                break
    finally:
        venv.close()
    per = ret.reshape(M, episodes)
    return [{"mean_return": float(per[m].mean()), "std_return": float(per[m].std()), "episodes": episodes} for m in range(M)]
