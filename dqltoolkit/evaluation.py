"""Vectorised evaluation: all episodes of a batch run as one Gymnasium vector env, one predict per step.

Acting is deterministic by default, as in SB3's ``evaluate_policy``: the same model then gets the same
score from ``dqltoolkit evaluate``, the end of ``dqltoolkit train`` and SB3. Every result says which
acting mode produced it (``"acting"``), because the two modes score differently.
"""

from __future__ import annotations

from typing import Callable, Dict, List, Optional, Sequence

import gymnasium as gym
import numpy as np
import torch
from tqdm import tqdm

from .limits import MAX_EVAL_ENVS, check_limit


def _first_episode_returns(make_env: Callable[[], gym.Env], seeds: Sequence[int], policy: Callable[[np.ndarray], np.ndarray],
                           max_steps: int, on_done: Optional[Callable[[int], None]] = None, gamma: float = 1.0) -> np.ndarray:
    """Run one env per seed in a SyncVectorEnv until every env has ended its first episode; later
    steps of an env are masked, so each seed's return is deterministic given the policy.
    ``on_done(k)``: k more episodes have just ended (for a progress bar). ``gamma`` < 1: each reward weighted
    ``gamma ** t``, the discounted return a value function (the critic, FQE) estimates from the episode's start."""
    venv = gym.vector.SyncVectorEnv([make_env for _ in seeds])
    try:
        obs, _ = venv.reset(seed=list(seeds))
        ret = np.zeros(len(seeds))
        alive = np.ones(len(seeds), dtype=bool)
        for t in range(max_steps):
            obs, r, term, trunc, _ = venv.step(policy(obs))
            ret += np.where(alive, r, 0.0) * gamma**t  # (1.0 ** t is exactly 1: returns unchanged)
            ended = alive & (term | trunc)
            alive &= ~ended
            if on_done is not None and ended.any():
                on_done(int(ended.sum()))
            if not alive.any():
                break
    finally:
        venv.close()
    return ret


DEFAULT_DETERMINISTIC = True  # SB3's evaluate_policy default


def acting_mode(deterministic: bool) -> str:
    """The word results and messages use for an acting mode."""
    return "deterministic" if deterministic else "stochastic"


def check_episodes(episodes: int) -> int:
    """``episodes`` as an int >= 1; why: 0 episodes has no mean, and a silent default would hide the typo."""
    if isinstance(episodes, bool) or int(episodes) != episodes or episodes < 1:
        raise ValueError(f"episodes must be a whole number >= 1, got {episodes!r}")
    return check_limit("episodes", int(episodes), MAX_EVAL_ENVS, "every episode is an env of one vector env, all at once",
                       "evaluate in several runs with other --seed values")


def describe(result: Dict[str, object], label: str) -> str:
    """One line for a person: ``label: mean return m +- s over n episodes (deterministic acting)``."""
    line = f"{label}: mean return {result['mean_return']:.3f} +- {result['std_return']:.3f} over {result['episodes']} episodes"
    if result.get("normalized_score") is not None:
        line += f", normalised score {result['normalized_score']:.1f}"
    if "acting" in result:
        line += f" ({result['acting']} acting)"
    return line


def evaluate(agent, make_env: Callable[[], gym.Env], episodes: int = 10, seed: int = 0,
             deterministic: bool = DEFAULT_DETERMINISTIC, max_envs: int = 100, max_steps: int = 100_000,
             progress: bool = False) -> Dict[str, object]:
    """Mean/std return over ``episodes`` through ``agent.predict`` (any SB3-style model), ``max_envs`` at a time, episode
    i seeded ``seed + i``; ``progress``: a bar (on a terminal only). The result records the acting mode (``"acting"``)."""
    episodes = check_episodes(episodes)
    returns: List[float] = []
    with tqdm(total=episodes, unit="episode", desc="evaluating", disable=None if progress else True, leave=False) as bar:
        while len(returns) < episodes:
            n = min(max_envs, episodes - len(returns))
            seeds = [seed + len(returns) + i for i in range(n)]
            returns.extend(_first_episode_returns(make_env, seeds, lambda o: agent.predict(o, deterministic=deterministic)[0], max_steps,
                                                  on_done=bar.update).tolist())
    arr = np.asarray(returns)
    return {"mean_return": float(arr.mean()), "std_return": float(arr.std()), "episodes": int(len(arr)),
            "acting": acting_mode(deterministic)}


def evaluate_members(agent, make_env: Callable[[], gym.Env], episodes: int = 10, seeds: Optional[List[int]] = None,
                     deterministic: bool = DEFAULT_DETERMINISTIC, max_steps: int = 100_000, gamma: float = 1.0) -> List[Dict[str, object]]:
    """Evaluate every member (seed) at once, ``members x episodes`` envs in one SyncVectorEnv and one batched ``act``
    per step (:func:`evaluate` through ``predict`` evaluates member 0 only); member m's episodes are seeded ``seeds[m] + i``.
    ``gamma`` < 1: ``mean_return`` is the discounted return (the Monte-Carlo value of the episodes' starts, to check a
    value estimate such as FQE's against), and the result says so (``"gamma"``)."""
    episodes = check_episodes(episodes)
    M = agent.members
    check_limit("episodes x seeds", episodes * M, MAX_EVAL_ENVS, "envs of one vector env, all at once", "evaluate fewer episodes")
    seeds = list(seeds) if seeds is not None else [s + 100 for s in agent.seeds]
    if len(seeds) != M:
        raise ValueError(f"evaluate_members: {len(seeds)} seeds for an agent with {M} members")
    low, high = agent.action_space.low, agent.action_space.high

    def policy(obs: np.ndarray) -> np.ndarray:
        x = torch.as_tensor(np.asarray(obs, dtype=np.float32), device=agent.device).view(M, episodes, -1)
        return np.clip(agent.act(x, deterministic).reshape(M * episodes, -1).cpu().numpy(), low, high)

    if not 0.0 < gamma <= 1.0:
        raise ValueError(f"evaluate_members: gamma must be in (0, 1], got {gamma!r}")
    ret = _first_episode_returns(make_env, [seeds[m] + i for m in range(M) for i in range(episodes)], policy, max_steps, gamma=gamma)
    per = ret.reshape(M, episodes)
    return [{"mean_return": float(per[m].mean()), "std_return": float(per[m].std()), "episodes": episodes,
             "acting": acting_mode(deterministic), **({"gamma": gamma} if gamma != 1.0 else {})} for m in range(M)]
