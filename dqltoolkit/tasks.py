"""Tasks: a dataset source + an evaluation env + score normalisation, read from the ``envs/`` catalogue."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Dict, Mapping, Optional

import gymnasium as gym
import numpy as np
import yaml

from .config import catalogue_dir
from .registry import Registry, UnknownNameError, did_you_mean

#: dataset source name -> callable(**kwargs) returning a transition table
DATASET_SOURCES: Registry = Registry("dataset source")


@DATASET_SOURCES.register("bandit2d")
def _bandit_source(n: int = 10_000, seed: int = 0) -> Dict[str, np.ndarray]:
    from .envs.bandit2d import make_bandit_dataset

    return make_bandit_dataset(n=n, seed=seed)


@DATASET_SOURCES.register("minari")
def _minari_source(dataset_id: str, local_id: Optional[str] = None, download: bool = False, build: Optional[str] = None) -> Dict[str, np.ndarray]:
    """A Minari dataset: the official id if it is local, else the locally built copy, else download if asked."""
    from .data.minari_source import minari_to_table, open_minari

    ids = [dataset_id] + ([local_id] if local_id else [])
    return minari_to_table(open_minari(ids, download=download, build_hint=build))


@DATASET_SOURCES.register("d4rl_hdf5")
def _d4rl_source(path: str, download: bool = False) -> Dict[str, np.ndarray]:
    from .data.d4rl_hdf5 import load_d4rl_hdf5

    return load_d4rl_hdf5(os.path.expanduser(path))


@dataclass
class Task:
    id: str
    dataset: Dict[str, Any]
    eval_env: Optional[str] = None
    eval_env_kwargs: Dict[str, Any] = field(default_factory=dict)
    ref_min: Optional[float] = None
    ref_max: Optional[float] = None
    one_step: bool = False
    eval_episodes: int = 10
    description: str = ""
    buildable: bool = True

    def load_dataset(self, download: bool = False) -> Dict[str, np.ndarray]:
        spec = dict(self.dataset)
        source = spec.pop("source")
        if download:
            spec["download"] = True
        return DATASET_SOURCES.get(source)(**spec)

    def make_env(self, **kwargs: Any) -> gym.Env:
        import dqltoolkit.envs  # noqa: F401  (registers bandit2d-v0)

        if self.eval_env is None:
            raise ValueError(f"task {self.id!r} has no evaluation env")
        return gym.make(self.eval_env, **{**self.eval_env_kwargs, **kwargs})

    def normalized_score(self, ret: float) -> Optional[float]:
        if self.ref_min is None or self.ref_max is None:
            return None
        return 100.0 * (ret - self.ref_min) / (self.ref_max - self.ref_min)


_TASK_KEYS = {f for f in Task.__dataclass_fields__ if f != "id"}


@lru_cache(maxsize=1)
def _catalogue() -> Dict[str, Dict[str, Any]]:
    out: Dict[str, Dict[str, Any]] = {}
    for path in sorted(catalogue_dir("envs").glob("*.yaml")):
        doc = yaml.safe_load(path.read_text()) or {}
        for tid, spec in doc.items():
            unknown = set(spec) - _TASK_KEYS
            if unknown:
                raise ValueError(f"{path} [{tid}]: unknown key(s) {sorted(unknown)}; allowed: {sorted(_TASK_KEYS)}")
            if "dataset" not in spec or "source" not in spec["dataset"]:
                raise ValueError(f"{path} [{tid}]: needs dataset.source")
            out[tid] = spec
    return out


def task_ids() -> list[str]:
    return sorted(_catalogue())


def get_task(task_id: str) -> Task:
    """A catalogue task, or an ad-hoc one: ``minari:<dataset id>`` or ``d4rl:<path to hdf5>``."""
    if task_id.startswith("minari:"):
        return _minari_task(task_id[len("minari:"):])
    if task_id.startswith("d4rl:"):
        return _d4rl_task(task_id[len("d4rl:"):])
    cat = _catalogue()
    if task_id not in cat:
        raise UnknownNameError(f"unknown env {task_id!r}.{did_you_mean(task_id, list(cat))} Known envs: {', '.join(sorted(cat))}")
    return Task(id=task_id, **cat[task_id])


def _catalogue_task_with(key: str, value: str) -> Optional[Task]:
    for tid, spec in _catalogue().items():
        if spec.get("dataset", {}).get(key) == value or spec.get("dataset", {}).get("local_id") == value:
            return Task(id=tid, **spec)
    return None


def _minari_task(dataset_id: str) -> Task:
    """Evaluation env and reference scores from the catalogue if it knows the id, else from the dataset."""
    known = _catalogue_task_with("dataset_id", dataset_id)
    dataset = {"source": "minari", "dataset_id": dataset_id}
    if known is not None:
        return Task(id=f"minari:{dataset_id}", dataset=dataset, eval_env=known.eval_env, eval_env_kwargs=known.eval_env_kwargs,
                    ref_min=known.ref_min, ref_max=known.ref_max, eval_episodes=known.eval_episodes)
    eval_env, ref_min, ref_max = None, None, None
    from .data.minari_source import is_local

    if is_local(dataset_id):
        import minari

        ds = minari.load_dataset(dataset_id)
        spec = ds.spec.eval_env_spec or ds.spec.env_spec
        eval_env = spec.id if spec is not None else None
        meta = ds.storage.metadata
        ref_min, ref_max = meta.get("ref_min_score"), meta.get("ref_max_score")
    return Task(id=f"minari:{dataset_id}", dataset=dataset, eval_env=eval_env, ref_min=ref_min, ref_max=ref_max)


def _d4rl_task(path: str) -> Task:
    """The file's stem names its task when it is a D4RL name (hopper-medium-v2.hdf5): env and scores from there."""
    from pathlib import Path

    stem = Path(path).stem
    dataset = {"source": "d4rl_hdf5", "path": path}
    cat = _catalogue()
    if stem in cat:
        known = Task(id=stem, **cat[stem])
        return Task(id=f"d4rl:{path}", dataset=dataset, eval_env=known.eval_env, eval_env_kwargs=known.eval_env_kwargs,
                    ref_min=known.ref_min, ref_max=known.ref_max, eval_episodes=known.eval_episodes)
    return Task(id=f"d4rl:{path}", dataset=dataset)


def spaces_from_table(table: Mapping[str, np.ndarray]):
    """Spaces for a dataset without an evaluation env: unbounded observations, actions in [-1, 1] when the
    data lie there (D4RL's convention), else the data's own range."""
    import gymnasium as gym

    obs, act = np.asarray(table["observations"]), np.asarray(table["actions"])
    obs_space = gym.spaces.Box(-np.inf, np.inf, (obs.shape[1],), np.float32)
    if np.abs(act).max() <= 1.0:
        act_space = gym.spaces.Box(-1.0, 1.0, (act.shape[1],), np.float32)
    else:
        act_space = gym.spaces.Box(act.min(0).astype(np.float32), act.max(0).astype(np.float32))
    return obs_space, act_space


def task_spaces(task, table: Mapping[str, np.ndarray]):
    """``(env or None, (observation space, action space))`` for a task: its evaluation env's spaces, or the
    data's own for a task without one."""
    if task.eval_env is not None:
        env = task.make_env()
        return env, (env.observation_space, env.action_space)
    return None, spaces_from_table(table)
