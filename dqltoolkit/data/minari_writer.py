"""Write episodes as a Minari dataset without Minari's DataCollector (which needs jax).

Episodes are dicts of arrays: ``observations`` [L + 1, obs], ``actions`` [L, act], ``rewards``, ``terminations``,
``truncations`` [L]. A failed create's folder (left behind by Minari 0.5) is removed so a retry starts clean.
Provenance is the toolkit's version (code, author) and the building env (evaluation env); a contact has no honest
default, so only Minari's warning about a missing ``author_email`` is silenced.
"""

from __future__ import annotations

import os
import shutil
import warnings
from typing import Dict, List, Optional, Sequence

import numpy as np
from tqdm.auto import tqdm

from .._version import __version__
from .d4rl_hdf5 import DatasetError
from .minari_source import minari_root


def write_minari(dataset_id: str, episodes: Sequence[Dict[str, np.ndarray]], env_id: str, ref_min: Optional[float] = None,
                 ref_max: Optional[float] = None, algorithm_name: str = "dqltoolkit", description: str = "",
                 data_format: str = "hdf5", overwrite: bool = False, author: Optional[str] = None,
                 author_email: Optional[str] = None):
    import minari
    from minari.data_collector.episode_buffer import EpisodeBuffer
    from minari.storage.datasets_root_dir import get_dataset_path

    minari_root(write=True)  # a clear error naming the folder, before any work
    path = get_dataset_path(dataset_id)
    if os.path.exists(path):
        if not overwrite:
            raise FileExistsError(f"Minari dataset {dataset_id!r} already exists at {path}; pass overwrite=True to replace it")
        shutil.rmtree(path)
    buffers: List[EpisodeBuffer] = []
    for i, ep in enumerate(episodes):
        L = len(ep["actions"])
        if len(ep["observations"]) != L + 1:
            raise ValueError(f"episode {i}: {len(ep['observations'])} observations for {L} actions (expected L + 1)")
        buffers.append(EpisodeBuffer(
            id=i, seed=ep.get("seed"), observations=np.asarray(ep["observations"]), actions=np.asarray(ep["actions"]),
            rewards=np.asarray(ep["rewards"], dtype=np.float64), terminations=np.asarray(ep["terminations"], dtype=bool),
            truncations=np.asarray(ep["truncations"], dtype=bool), infos={},
        ))
    try:
        with warnings.catch_warnings():
            if author_email is None:
                warnings.filterwarnings("ignore", message="`author_email` is set to None", category=UserWarning)
            return minari.create_dataset_from_buffers(
                dataset_id, buffers, env=env_id, eval_env=env_id, algorithm_name=algorithm_name,
                author=author or f"dqltoolkit {__version__}", author_email=author_email,
                code_permalink=f"dqltoolkit=={__version__} ({algorithm_name})", ref_min_score=ref_min, ref_max_score=ref_max,
                description=description or f"{len(buffers)} episodes of {env_id}, written by dqltoolkit", data_format=data_format,
            )
    except OSError as exc:  # a full disk, a folder made read-only meanwhile: name the dataset's folder
        shutil.rmtree(path, ignore_errors=True)
        raise DatasetError(f"could not write Minari dataset {dataset_id!r} to {path}: {exc.strerror or exc}") from None
    except BaseException:
        shutil.rmtree(path, ignore_errors=True)
        raise


def rollout_episodes(env_id: str, policy, n_steps: int, seed: int = 0, max_episode_steps: Optional[int] = None,
                     progress: bool = False) -> List[Dict[str, np.ndarray]]:
    """Run ``policy(obs) -> action`` for at least ``n_steps`` environment steps, whole episodes only
    (``progress``: a bar of the steps collected; a million takes minutes)."""
    import gymnasium as gym

    env = gym.make(env_id, **({"max_episode_steps": max_episode_steps} if max_episode_steps else {}))
    episodes, total, ep_i = [], 0, 0
    bar = None
    if progress:
        bar = tqdm(total=n_steps, unit="transition", desc=f"collecting {env_id}", dynamic_ncols=True, mininterval=1.0)
    while total < n_steps:
        obs, _ = env.reset(seed=seed + ep_i)
        O, A, R, TE, TR = [obs], [], [], [], []  # noqa: E741  (observations, actions, rewards, ends)
        while True:
            a = policy(obs)
            obs, r, te, tr, _ = env.step(a)
            O.append(obs), A.append(a), R.append(r), TE.append(te), TR.append(tr)
            if te or tr:
                break
        episodes.append({"observations": np.array(O), "actions": np.array(A), "rewards": np.array(R), "terminations": np.array(TE),
                         "truncations": np.array(TR), "seed": seed + ep_i})
        total += len(A)
        ep_i += 1
        if bar is not None:
            bar.update(min(len(A), n_steps - bar.n))
    env.close()
    if bar is not None:
        bar.close()
    return episodes
