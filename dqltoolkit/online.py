"""Online fine-tuning: after offline training, the agent collects from its env while it learns, in the same
learning loop (dqltoolkit/loop.py), because only where batches come from changes.

Each gradient step is preceded by one env step per seed (member ``m`` acts in env ``m`` of the agent's VecEnv);
the transitions go into a per-seed online buffer, and ``online_offline_ratio`` of each batch's rows come from the
offline data (RLPD's symmetric sampling: 0.5, the default; 0 drops them once the online buffer has a transition).
Exploration is the policy's own stochastic acting; a deterministic head (TD3+BC) gets Gaussian noise of
``explore_noise`` (in units of the action range's half-width; TD3's 0.1 in td3bc.yaml).
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from .data.transforms import apply_reward_transform
from .nn import member_randint

POINTWISE_REWARDS = ("no", "iql_antmaze", "cql_antmaze", "antmaze")  # transforms that need no dataset statistics


#: the online buffer's tensors, as a checkpoint holds them (``online.<field>``, oldest transition first)
ONLINE_FIELDS = ("obs", "actions", "rewards", "next_obs", "terminals")


class OnlineBuffer:
    """Per-seed ring buffers ``[members, capacity, ...]`` on the training device, in the learner's units (actions in
    [-1, 1], observations normalised, rewards transformed). Kept between ``learn`` calls and in training checkpoints,
    so a resumed fine-tune continues with the experience it had collected (its envs start new episodes)."""

    def __init__(self, members: int, capacity: int, obs_dim: int, action_dim: int, device: torch.device) -> None:
        def zeros(*shape: int) -> Tensor:
            return torch.zeros(members, capacity, *shape, device=device)

        self.capacity, self.size, self.pos, self.added = int(capacity), 0, 0, 0
        self.obs, self.next_obs, self.actions = zeros(obs_dim), zeros(obs_dim), zeros(action_dim)
        self.rewards, self.terminals = zeros(), zeros()

    def fits(self, members: int, capacity: int, obs_dim: int, action_dim: int) -> bool:
        return (self.obs.shape[0], self.capacity, self.obs.shape[2], self.actions.shape[2]) == (members, capacity, obs_dim, action_dim)

    def chronological(self) -> Dict[str, Tensor]:
        """What the buffer holds, oldest first: ``{field: [members, size, ...]}`` (for checkpoints)."""
        order = torch.arange(self.pos, self.pos + self.size, device=self.obs.device) % self.capacity if self.size == self.capacity \
            else torch.arange(self.size, device=self.obs.device)
        return {f: getattr(self, f).index_select(1, order) for f in ONLINE_FIELDS}

    @classmethod
    def from_chronological(cls, tensors: Dict[str, Tensor], capacity: int, added: int, device: torch.device) -> "OnlineBuffer":
        """A buffer of ``capacity`` holding the newest of ``tensors`` (:meth:`chronological`'s layout)."""
        members, n, obs_dim = tensors["obs"].shape
        buf = cls(members, capacity, obs_dim, tensors["actions"].shape[2], device)
        keep = min(n, buf.capacity)
        for f in ONLINE_FIELDS:
            getattr(buf, f)[:, :keep] = tensors[f][:, n - keep:].to(device)
        buf.size, buf.pos, buf.added = keep, keep % buf.capacity, max(int(added), keep)
        return buf

    def add(self, obs: Tensor, actions: Tensor, rewards: Tensor, next_obs: Tensor, terminals: Tensor) -> None:
        """One transition per seed (``[members, ...]``)."""
        for f, value in zip(ONLINE_FIELDS, (obs, actions, rewards, next_obs, terminals)):
            getattr(self, f)[:, self.pos] = value
        self.pos = (self.pos + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)
        self.added += 1

    def sample(self, batch_size: int, generators: Sequence[torch.Generator]) -> Dict[str, Tensor]:
        idx = member_randint(generators, self.size, (batch_size,), self.obs.device)

        def take(t: Tensor) -> Tensor:
            return t.gather(1, idx.view(*idx.shape, *([1] * (t.dim() - 2))).expand(-1, -1, *t.shape[2:]))

        return {f: take(getattr(self, f)) for f in ONLINE_FIELDS}


class MixedBuffer:
    """Batches of ``ratio`` offline rows and the rest online rows (all offline until the first transition)."""

    def __init__(self, offline, online: OnlineBuffer, ratio: float) -> None:
        self.offline, self.online, self.ratio = offline, online, float(ratio)

    def __len__(self) -> int:
        return (len(self.offline) if self.offline is not None else 0) + self.online.size

    def sample(self, batch_size: int, generators: Sequence[torch.Generator]) -> Dict[str, Tensor]:
        if self.online.size == 0:
            return self.offline.sample(batch_size, generators)
        k = int(round(batch_size * self.ratio)) if self.offline is not None else 0
        if k == 0:
            return self.online.sample(batch_size, generators)
        a, b = self.offline.sample(k, generators), self.online.sample(batch_size - k, generators)
        return {key: torch.cat([a[key], b[key]], dim=1) for key in a}


class Collector:
    """The hook that runs before each gradient step: one env step per seed, stored, and the buffer mixed in."""

    def __init__(self, agent) -> None:
        cfg = agent.config
        env = agent.get_env()
        if env is None:
            raise RuntimeError("online learning needs an env: model.set_env(env) (one env per seed: a VecEnv of n_envs = seeds)")
        if env.num_envs != agent.members:
            raise ValueError(f"online learning: the env has {env.num_envs} env(s) and the agent {agent.members} seed(s); each seed acts in "
                             "its own env (make_vec_env(..., n_envs=seeds))")
        if cfg.reward_tune not in POINTWISE_REWARDS:
            raise ValueError(f"online learning: reward_tune={cfg.reward_tune!r} depends on the dataset's statistics; online fine-tuning "
                             f"supports {', '.join(POINTWISE_REWARDS)}")
        self.agent, self.env, self.L = agent, env, agent.learner
        shape = (agent.members, cfg.online_buffer_size, agent.obs_dim, agent.action_dim)
        self.online = kept = self.L.online_buffer  # (from an earlier learn call, or restored from a checkpoint)
        if kept is None:
            self.online = OnlineBuffer(*shape, agent.device)
        elif not kept.fits(*shape):
            self.online = OnlineBuffer.from_chronological(kept.chronological(), shape[1], kept.added, agent.device)
        self.L.online_buffer = self.online
        self.offline = self.L.buffer
        self.L.buffer = MixedBuffer(self.offline, self.online, cfg.online_offline_ratio)
        self.L.backend.reset()
        self.obs = np.asarray(env.reset(), np.float32)
        self.rng = np.random.default_rng(agent.seeds[0] + 7919)
        self.returns, self.finished = np.zeros(agent.members), []
        self.env_steps = self.online.added * agent.members  # (a resumed fine-tune counts on)

    def close(self) -> None:
        """Give the learner its offline buffer back (the online data stay with this collector)."""
        self.L.buffer = self.offline
        self.L.backend.reset()

    def _units(self, obs: np.ndarray) -> Tensor:
        x = torch.as_tensor(obs, dtype=torch.float32, device=self.agent.device)
        return (x - self.L.obs_mean) / self.L.obs_std if self.agent.config.normalize_obs else x

    @torch.no_grad()
    def step(self) -> None:
        agent, L, cfg = self.agent, self.L, self.agent.config
        x = torch.as_tensor(self.obs, device=agent.device).unsqueeze(1)  # [M, 1, obs]: member m acts in env m
        action = agent.act(x, deterministic=False)[:, 0].cpu().numpy()
        if cfg.explore_noise > 0:
            half = (agent.action_space.high - agent.action_space.low) / 2
            action = action + self.rng.normal(0.0, cfg.explore_noise, action.shape) * half
        action = np.clip(action, agent.action_space.low, agent.action_space.high).astype(np.float32)
        next_obs, rewards, dones, infos = self.env.step(action)
        real_next = np.array(next_obs, np.float32, copy=True)
        terminal = np.zeros(agent.members, np.float32)
        self.returns += np.asarray(rewards, float)
        for i, done in enumerate(dones):
            if done:
                real_next[i] = infos[i].get("terminal_observation", real_next[i])
                terminal[i] = 0.0 if infos[i].get("TimeLimit.truncated", False) else 1.0
                self.finished.append(float(self.returns[i]))
                self.returns[i] = 0.0
        r = apply_reward_transform(cfg.reward_tune, {"rewards": np.asarray(rewards, np.float32), "terminals": terminal})["rewards"]
        a = (torch.as_tensor(action, device=agent.device) - L.action_center) / L.action_scale
        self.online.add(self._units(self.obs), a.clamp(-1, 1), torch.as_tensor(r, dtype=torch.float32, device=agent.device),
                        self._units(real_next), torch.as_tensor(terminal, device=agent.device))
        self.obs = np.asarray(next_obs, np.float32)
        self.env_steps += agent.members

    def pop_episode_returns(self) -> Optional[float]:
        """Mean return of the episodes finished since the last call (None if none): ``rollout/ep_rew_mean``."""
        if not self.finished:
            return None
        out, self.finished = float(np.mean(self.finished)), []
        return out
