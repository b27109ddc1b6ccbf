"""Vectorised evaluation: all episodes of a batch run as one Gymnasium vector env, one predict per step."""

from __future__ import annotations

from typing import Callable, Dict, Optional

import gymnasium as gym
import numpy as np


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
