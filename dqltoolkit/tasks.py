"""Tasks: a dataset source + an evaluation env + score normalisation, read from the ``envs/`` catalogue."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any, Dict, Mapping, Optional

import gymnasium as gym
import numpy as np
import yaml

from . import envs as _envs  # noqa: F401  (registers bandit2d-v0)
from .config import catalogue_dir
from .data.d4rl_hdf5 import load_d4rl_hdf5
from .data.minari_source import dataset_eval_env, is_local, minari_to_table, open_minari
from .envs.bandit2d import make_bandit_dataset
from .registry import Registry, UnknownNameError, did_you_mean

#: dataset source name -> callable(**kwargs) returning a transition table
DATASET_SOURCES: Registry = Registry("dataset source")


@DATASET_SOURCES.register("bandit2d")
def _bandit_source(n: int = 10_000, seed: int = 0) -> Dict[str, np.ndarray]:
    return make_bandit_dataset(n=n, seed=seed)


@DATASET_SOURCES.register("minari")
def _minari_source(dataset_id: str, local_id: Optional[str] = None, download: bool = False, build: Optional[str] = None) -> Dict[str, np.ndarray]:
    """A Minari dataset: the official id if it is local, else the locally built copy, else download if asked."""
    ids = [dataset_id] + ([local_id] if local_id else [])
    return minari_to_table(open_minari(ids, download=download, build_hint=build))


@DATASET_SOURCES.register("d4rl_hdf5")
def _d4rl_source(path: str, download: bool = False) -> Dict[str, np.ndarray]:
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
    #: the catalogue id whose section of a recipe applies (``hopper-medium-v2`` for ``minari:mujoco/hopper/medium-v0``,
    #: ``d4rl:/x/hopper_medium-v2.hdf5`` and ``mujoco/hopper/medium-v0``); None for data the catalogue does not know
    recipe_section: Optional[str] = None
    #: why there is no evaluation env (a dataset that names none, or names one that is refused); "" otherwise
    eval_note: str = ""

    def load_dataset(self, download: bool = False) -> Dict[str, np.ndarray]:
        spec = {**self.dataset, **({"download": True} if download else {})}
        return DATASET_SOURCES.get(spec.pop("source"))(**spec)

    def make_env(self, **kwargs: Any) -> gym.Env:
        if self.eval_env is None:
            raise ValueError(f"task {self.id!r} has no evaluation env" + (f": {self.eval_note}" if self.eval_note else ""))
        return gym.make(self.eval_env, **{**self.eval_env_kwargs, **kwargs})

    def normalized_score(self, ret: float) -> Optional[float]:
        if self.ref_min is None or self.ref_max is None:
            return None
        return 100.0 * (ret - self.ref_min) / (self.ref_max - self.ref_min)


_TASK_KEYS = {f for f in Task.__dataclass_fields__ if f not in ("id", "eval_note")}


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
    """The task behind any name of its data: a catalogue id (``hopper-medium-v2``, ``mujoco/hopper/medium-v0``),
    ``minari:<id>`` or a known or local Minari id, ``d4rl:<path>`` or a ``.hdf5`` path. Data the catalogue knows gets
    its task's recipe section, evaluation env and scores, however it was named."""
    if task_id.startswith("minari:"):
        return _minari_task(task_id[len("minari:"):])
    if task_id.startswith("d4rl:"):
        return _d4rl_task(task_id[len("d4rl:"):])
    cat = _catalogue()
    if task_id in cat:
        return _catalogue_task(task_id)
    if task_id.endswith((".hdf5", ".h5")):
        return _d4rl_task(task_id)
    if "/" in task_id and (_catalogue_id_for_dataset(task_id) is not None or is_local(task_id)):
        return _minari_task(task_id)
    raise UnknownNameError(f"unknown env {task_id!r}.{did_you_mean(task_id, list(cat))} Known envs: {', '.join(sorted(cat))}; "
                           "also minari:<Minari dataset id> (or a local Minari id) and d4rl:<path to an hdf5 file>")


def _catalogue_task(tid: str) -> Task:
    spec = _catalogue()[tid]
    return Task(id=tid, **{**spec, "recipe_section": spec.get("recipe_section") or _section_of(tid)})


def _section_of(tid: str) -> str:
    """The recipe section of a catalogue task: its D4RL name, also for one listed under its Minari id."""
    if "/" not in tid:
        return tid
    dataset = _catalogue()[tid]["dataset"]
    for other, spec in _catalogue().items():
        same_data = spec["dataset"].get("source") == dataset.get("source") and spec["dataset"].get("dataset_id") == dataset.get("dataset_id")
        if "/" not in other and same_data and dataset.get("dataset_id") is not None:
            return other
    return tid


def _catalogue_id_for_dataset(dataset_id: str) -> Optional[str]:
    """The catalogue task (D4RL name first) whose data is the Minari dataset ``dataset_id`` (official or local copy)."""
    return min(tasks_using_dataset(dataset_id), key=lambda t: ("/" in t, t), default=None)


def tasks_using_dataset(dataset_id: str) -> list[str]:
    """Catalogue tasks whose data is the Minari dataset ``dataset_id`` (as the official id or the local copy)."""
    return sorted(tid for tid, spec in _catalogue().items() if dataset_id in (spec["dataset"].get("dataset_id"), spec["dataset"].get("local_id")))


def _catalogue_id_for_file(path: str) -> Optional[str]:
    """The catalogue task a D4RL file is named after (``hopper-medium-v2.hdf5`` or D4RL's ``hopper_medium-v2.hdf5``)."""
    stem = Path(path).stem
    return next((name for name in (stem, stem.replace("_", "-")) if name in _catalogue() and "/" not in name), None)


def _minari_task(dataset_id: str) -> Task:
    """Evaluation env, scores and recipe section from the catalogue if it knows the id, else from the dataset's metadata."""
    tid = _catalogue_id_for_dataset(dataset_id)
    if tid is not None:
        known = _catalogue_task(tid)
        dataset = dict(known.dataset) if known.dataset.get("dataset_id") == dataset_id else \
            {"source": "minari", "dataset_id": dataset_id, **({"build": known.dataset["build"]} if "build" in known.dataset else {})}
        return replace(known, id=f"minari:{dataset_id}", dataset=dataset)
    dataset = {"source": "minari", "dataset_id": dataset_id}
    task = Task(id=f"minari:{dataset_id}", dataset=dataset, eval_note=f"Minari dataset {dataset_id!r} is not in the local Minari folder")
    if is_local(dataset_id):
        task.eval_env, task.eval_env_kwargs, task.ref_min, task.ref_max, task.eval_note = dataset_eval_env(dataset_id)
        if task.eval_env is None:
            warnings.warn(f"minari:{dataset_id}: evaluation is skipped: {task.eval_note}", TaskWarning, stacklevel=3)
    return task


class TaskWarning(UserWarning):
    """A task that can train but not be evaluated (its dataset names no usable evaluation env)."""


def _d4rl_task(path: str) -> Task:
    """A D4RL file's task: env, scores and recipe section from the catalogue task it is named after, if any."""
    dataset = {"source": "d4rl_hdf5", "path": path}
    tid = _catalogue_id_for_file(path)
    if tid is not None:
        known = _catalogue_task(tid)
        return Task(id=f"d4rl:{path}", dataset=dataset, eval_env=known.eval_env, eval_env_kwargs=known.eval_env_kwargs,
                    ref_min=known.ref_min, ref_max=known.ref_max, eval_episodes=known.eval_episodes, recipe_section=known.recipe_section)
    return Task(id=f"d4rl:{path}", dataset=dataset, eval_note=f"{path} is not named after a catalogue task (e.g. hopper-medium-v2.hdf5)")


def spaces_from_table(table: Mapping[str, np.ndarray]):
    """Spaces for a dataset without an env: unbounded observations; actions in [-1, 1] if the data lie there, else theirs."""
    obs, act = np.asarray(table["observations"]), np.asarray(table["actions"])
    obs_space = gym.spaces.Box(-np.inf, np.inf, (obs.shape[1],), np.float32)
    act_space = (gym.spaces.Box(-1.0, 1.0, (act.shape[1],), np.float32) if np.abs(act).max() <= 1.0
                 else gym.spaces.Box(act.min(0).astype(np.float32), act.max(0).astype(np.float32)))
    return obs_space, act_space


def task_spaces(task, table: Mapping[str, np.ndarray]):
    """``(env or None, (observation space, action space))`` for a task: its env's spaces, or the data's own without one."""
    if task.eval_env is not None:
        env = task.make_env()
        return env, (env.observation_space, env.action_space)
    return None, spaces_from_table(table)
