"""Tasks: a dataset source + an evaluation env + score normalisation, read from the ``envs/`` catalogue."""

from __future__ import annotations

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

    def load_dataset(self) -> Dict[str, np.ndarray]:
        spec = dict(self.dataset)
        source = spec.pop("source")
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
    cat = _catalogue()
    if task_id not in cat:
        raise UnknownNameError(f"unknown env {task_id!r}.{did_you_mean(task_id, list(cat))} Known envs: {', '.join(sorted(cat))}")
    return Task(id=task_id, **cat[task_id])
