"""The agent as Stable-Baselines3 users meet it: a thin facade over a :class:`~dqltoolkit.learner.Learner` and an
:class:`~dqltoolkit.acting.ActingPolicy` with SB3's surface (``learn``, ``predict``, ``save``, ``load``, ``get_env``,
``logger``, ``num_timesteps``), so that ``evaluate_policy``, ``EvalCallback`` and ``CheckpointCallback`` work on it unchanged.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Union

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor

from . import checkpoint_checks as checks
from .acting import ActingPolicy
from .backends import select_backend
from .checkpoint import config_of, read_checkpoint, restore_agent, save_agent
from .config import AgentConfig, coerce_mapping, resolve_recipe
from .learner import Learner
from .limits import check_agent
from .loop import ensure_dataset, run_learning
from .online import Collector
from .sources import resolve_checkpoint
from .tasks import get_task, task_spaces


def resolve_device(device: Union[str, torch.device] = "auto") -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device {device!r} is not a device torch knows (cpu, cuda, cuda:1, auto): {exc}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available on this machine")
    return dev


def _check_box(space: Any, what: str) -> None:
    if not isinstance(space, gym.spaces.Box) or len(space.shape) != 1:
        raise ValueError(f"dqltoolkit agents need a 1-D Box {what} space, got {space}")


#: Learner attributes the agent exposes as its own (read and write), for checkpoints, tools and tests
_LEARNER_FIELDS = ("head", "critic", "objective", "aux", "ema_head", "ema_aux", "actor_opt", "critic_opt", "actor_params",
                   "critic_params", "train_generators", "act_generators", "obs_mean", "obs_std", "buffer", "num_timesteps",
                   "backend")


def _learner_field(name: str) -> property:
    """One of the learner's attributes as the agent's own (read and write): SB3 users reach ``model.num_timesteps``."""
    return property(lambda self: getattr(self.learner, name), lambda self, value: setattr(self.learner, name, value),
                    doc=f"The learner's ``{name}``.")


class Agent:
    """Offline RL agent. Build from a config and spaces (or :meth:`from_task`), give it data with
    :meth:`set_dataset`, then :meth:`learn`; or :meth:`load` a checkpoint."""

    def __init__(self, config: AgentConfig, observation_space: gym.spaces.Box, action_space: gym.spaces.Box,
                 seeds: Sequence[int] = (0,), device: Union[str, torch.device] = "auto", env: Optional[gym.Env] = None,
                 task: Optional[str] = None) -> None:
        _check_box(action_space, "action")
        _check_box(observation_space, "observation")
        if not np.all(np.isfinite(action_space.low)) or not np.all(np.isfinite(action_space.high)):
            raise ValueError("dqltoolkit agents need finite action bounds")
        if not isinstance(config, AgentConfig):
            raise TypeError(f"config must be an AgentConfig, got {type(config).__name__}")
        seeds = [int(s) for s in seeds]
        if not seeds:
            raise ValueError("seeds: give at least one seed")
        self.config = config
        self.observation_space, self.action_space = observation_space, action_space
        self.seeds, self.members, self.device, self.task = seeds, len(seeds), resolve_device(device), task
        self.obs_dim, self.action_dim = int(observation_space.shape[0]), int(action_space.shape[0])
        check_agent(config.to_dict(), self.obs_dim, self.action_dim, self.members, self.device)  # (before anything is allocated)
        learner = Learner(config, self.obs_dim, self.action_dim, seeds, self.device, backend=select_backend)
        low = torch.as_tensor(action_space.low, dtype=torch.float32, device=self.device)
        high = torch.as_tensor(action_space.high, dtype=torch.float32, device=self.device)
        learner.action_center, learner.action_scale = (high + low) / 2, (high - low) / 2
        self.learner = learner
        self.policy = ActingPolicy(learner)
        self._env = self._logger = None
        if env is not None:
            self.set_env(env)

    # --- data and training ---------------------------------------------------------------------------
    def set_dataset(self, table: Mapping[str, np.ndarray], refit_obs_stats: bool = True):
        """Put a transition table on the training device (see :meth:`Learner.set_dataset`)."""
        return self.learner.set_dataset(table, refit_obs_stats)

    def train_step(self, batch: Optional[Dict[str, Tensor]] = None) -> Dict[str, Tensor]:
        """One gradient step for every member (see :meth:`Learner.train_step`)."""
        return self.learner.train_step(batch)

    def pop_metrics(self) -> Dict[str, np.ndarray]:
        return self.learner.pop_metrics()

    def learn(self, total_timesteps: int, callback=None, log_interval: Optional[int] = None, progress_bar: bool = False,
              reset_num_timesteps: bool = False, tb_log_name: Optional[str] = None) -> "Agent":
        """Run ``total_timesteps`` gradient steps on the dataset (offline: a timestep is a gradient step).

        Without a dataset, a loaded agent whose checkpoint names its task loads that task's dataset (its own
        observation statistics kept). ``tb_log_name`` is SB3's and names nothing here. With the recipe key ``online``,
        each gradient step is preceded by one env step per seed, whose transitions join the data (dqltoolkit/online.py)."""
        if int(total_timesteps) < 0:
            raise ValueError(f"learn: total_timesteps must be >= 0, got {total_timesteps}")
        ensure_dataset(self)
        if reset_num_timesteps:
            self.num_timesteps = 0
        collector = Collector(self) if self.config.online else None
        try:
            run_learning(self, int(total_timesteps), callback=callback, log_interval=log_interval, progress_bar=progress_bar,
                         collector=collector)
        finally:
            if collector is not None:
                collector.close()
        return self

    # --- acting -------------------------------------------------------------------------------------
    def act(self, obs: Tensor, deterministic: bool = False, head: Optional[Any] = None) -> Tensor:
        """Actions for raw observations ``[M, B, obs_dim]`` -> ``[M, B, action_dim]`` in Box units (see dqltoolkit/acting.py)."""
        return self.policy.act(obs, deterministic, head)

    def predict(self, observation: Union[np.ndarray, Dict[str, np.ndarray]], state: Optional[Tuple[np.ndarray, ...]] = None,
                episode_start: Optional[np.ndarray] = None,
                deterministic: bool = False) -> Tuple[np.ndarray, Optional[Tuple[np.ndarray, ...]]]:
        """SB3's predict: one observation -> one action, a batch -> a batch; returns ``(actions, state)``.
        ``deterministic=True``: the same observation always gets the same action (dqltoolkit/acting.py)."""
        actions, _ = self.policy.predict(observation, self.observation_space, self.action_space, deterministic)
        return actions, state

    def set_random_seed(self, seed: int) -> None:
        """Reseed the action-sampling generators (member m gets ``seed + m``)."""
        for m, g in enumerate(self.act_generators):
            g.manual_seed(int(seed) + m)

    # --- SB3 compatibility -------------------------------------------------------------------------
    def get_env(self):
        return self._env

    def set_env(self, env) -> None:
        """As SB3 models do: a plain env is wrapped in ``Monitor`` (unless it is already) and a ``DummyVecEnv``,
        so ``evaluate_policy(model, model.get_env())`` reports the env's own episode returns."""
        from stable_baselines3.common.env_util import is_wrapped
        from stable_baselines3.common.monitor import Monitor
        from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv

        if env is not None and not isinstance(env, VecEnv):
            env = env if is_wrapped(env, Monitor) else Monitor(env)
            env = DummyVecEnv([lambda e=env: e])
        self._env = env

    def get_vec_normalize_env(self):
        return None

    @property
    def logger(self):
        if self._logger is None:
            from stable_baselines3.common.logger import configure

            self._logger = configure(None, [])  # silent, like an SB3 model with verbose=0
        return self._logger

    def set_logger(self, logger) -> None:
        self._logger = logger

    def save(self, path: Union[str, Path], include_optimizer: bool = True) -> Path:
        return save_agent(self, path, include_optimizer=include_optimizer)

    @classmethod
    def from_task(cls, agent: str, env: str, seeds: Sequence[int] = (0,), device: Union[str, torch.device] = "auto", download: bool = False,
                  **overrides: Any) -> "Agent":
        """``Agent.from_task("diffusion-ql", "hopper-medium-v2", eta=2.0)``: a recipe for a task with its dataset loaded
        and its env set, ready for ``learn``, ``predict`` and SB3's tools; ``overrides`` are recipe keys, checked like ``-p``."""
        task = get_task(env)
        config = resolve_recipe(agent, getattr(task, "recipe_section", None) or task.id).config
        if overrides:
            config = config.replace(**coerce_mapping(overrides, "from_task overrides"))
        table = task.load_dataset(download=download)
        probe_env, (obs_space, act_space) = task_spaces(task, table)
        model = cls(config, obs_space, act_space, seeds=seeds, device=device, env=probe_env, task=task.id)
        model.set_dataset(table)
        return model

    @classmethod
    def load(cls, path: Union[str, Path], env: Optional[gym.Env] = None, device: Union[str, torch.device] = "auto",
             custom_objects: Optional[Dict[str, Any]] = None, print_system_info: bool = False,
             allow_nonfinite: bool = False) -> "Agent":
        """Load a checkpoint (a path, ``zoo:<id>``, ``hf:ORG/NAME``); nothing is unpickled. ``custom_objects``
        and ``print_system_info`` are SB3's; the first must be empty (nothing here is a pickled object).
        ``allow_nonfinite`` loads a checkpoint with NaN/Inf weights (to inspect a diverged run)."""
        if custom_objects:
            raise ValueError("Agent.load: custom_objects replaces pickled objects in SB3 zips; dqltoolkit checkpoints hold none")
        agent = load_agent(path, device=device, allow_nonfinite=allow_nonfinite, agent_class=cls)
        if print_system_info:
            print(f"dqltoolkit checkpoint {path}: task {agent.task}, seeds {agent.seeds}, backend {agent.backend.describe()}")
        if env is not None:
            agent.set_env(env)
        return agent

    def __repr__(self) -> str:
        c = self.config
        return (f"Agent(head={c.head!r}, critic={c.critic if self.critic is not None else None!r}, objective={c.objective!r}, "
                f"members={self.members}, steps={self.num_timesteps}, backend={self.backend.describe()!r})")


def load_agent(path: Union[str, Path], device: Union[str, torch.device] = "auto", allow_nonfinite: bool = False,
               agent_class: type = Agent) -> Agent:
    """Build the agent a checkpoint (a path, ``zoo:<id>``, ``hf:ORG/NAME``) describes, everything checked first
    (:func:`dqltoolkit.checkpoint.read_checkpoint`), and load its tensors; NaN/Inf weights need ``allow_nonfinite``."""
    path = resolve_checkpoint(path)
    doc, tensors = read_checkpoint(path, allow_nonfinite=allow_nonfinite)
    agent = agent_class(config_of(doc, path), checks.space_of(doc, "observation_space", path), checks.space_of(doc, "action_space", path),
                        seeds=doc["seeds"], device=device, task=doc.get("task"))
    return restore_agent(agent, path, doc, tensors)


for _name in _LEARNER_FIELDS:
    setattr(Agent, _name, _learner_field(_name))
