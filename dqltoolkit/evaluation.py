"""Vectorised evaluation: all episodes of a batch run as one Gymnasium vector env, one predict per step."""

from __future__ import annotations

from typing import Callable, Dict, List, Optional, Sequence

import gymnasium as gym
import numpy as np
import torch


def _first_episode_returns(make_env: Callable[[], gym.Env], seeds: Sequence[int], policy: Callable[[np.ndarray], np.ndarray],
                           max_steps: int, on_done: Optional[Callable[[int], None]] = None) -> np.ndarray:
    """Run one env per seed in a SyncVectorEnv until every env has ended its first episode; later
    steps of an env are masked, so each seed's return is deterministic given the policy.
    ``on_done(k)``: k more episodes have just ended (for a progress bar)."""
    venv = gym.vector.SyncVectorEnv([make_env for _ in seeds])
    try:
        obs, _ = venv.reset(seed=list(seeds))
        ret = np.zeros(len(seeds))
        alive = np.ones(len(seeds), dtype=bool)
        for _ in range(max_steps):
            obs, r, term, trunc, _ = venv.step(policy(obs))
            ret += np.where(alive, r, 0.0)
            ended = alive & (term | trunc)
            alive &= ~ended
            if on_done is not None and ended.any():
                on_done(int(ended.sum()))
            if not alive.any():
                break
    finally:
        venv.close()
    return ret


def evaluate(
    agent,
    make_env: Callable[[], gym.Env],
    episodes: int = 10,
    seed: int = 0,
    deterministic: bool = False,
    max_envs: int = 100,
    max_steps: int = 100_000,
    progress: bool = False,
) -> Dict[str, float]:
    """Mean/std return over ``episodes`` through ``agent.predict`` (any SB3-style model). Episodes run
    ``max_envs`` at a time, episode i seeded ``seed + i``. ``progress``: a bar of finished episodes
    (on a terminal only)."""
    from tqdm import tqdm

    returns: List[float] = []
    with tqdm(total=episodes, unit="episode", desc="evaluating", disable=None if progress else True, leave=False) as bar:
        while len(returns) < episodes:
            n = min(max_envs, episodes - len(returns))
            seeds = [seed + len(returns) + i for i in range(n)]
            returns.extend(_first_episode_returns(make_env, seeds, lambda o: agent.predict(o, deterministic=deterministic)[0], max_steps,
                                                  on_done=bar.update).tolist())
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
    low, high = agent.action_space.low, agent.action_space.high

    def policy(obs: np.ndarray) -> np.ndarray:
        x = torch.as_tensor(np.asarray(obs, dtype=np.float32), device=agent.device).view(M, episodes, -1)
        return np.clip(agent.act(x, deterministic).reshape(M * episodes, -1).cpu().numpy(), low, high)

    ret = _first_episode_returns(make_env, [seeds[m] + i for m in range(M) for i in range(episodes)], policy, max_steps)
    per = ret.reshape(M, episodes)
    return [{"mean_return": float(per[m].mean()), "std_return": float(per[m].std()), "episodes": episodes} for m in range(M)]
