"""N Q-networks per seed as one member-batched network, with a pessimistic reduction.

Why: twin critics (min of two) are the paper's choice; ensembles with a lower-confidence bound
(mean - k std over N networks) are the usual way to trade pessimism against bias in offline RL. For
``M`` seeds the network has ``N M`` members laid out seed-major, so each layer of every critic of every
seed is one batched matmul. The twins are the N = 2 preset (critics/double_q.py).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

import torch
from torch import Tensor, nn

from ..capabilities import KERNELS
from ..nn import EnsembleMLP, foreach_pieces, member_randn
from ..registry import CRITICS
from ..settings import setting
from .base import Critic, NextActions


def td_error_loss(q: Tensor, target: Tensor) -> Tensor:
    """The critic loss: the sum over the networks ``q`` ``[M, n_q, B]`` of the mean squared error to ``target``
    ``[M, B]``, per seed ``[M]`` (the fused operators compute the same, tests/test_fused.py)."""
    return (q - target.unsqueeze(1)).pow(2).mean(dim=2).sum(dim=1)


@dataclass
class QSettings(Critic.Settings):
    """What every Q-network critic reads: its networks, its reduction and its TD target."""

    critic_hidden: int = setting(256, "Q-network width", min=1, max=16384)
    critic_layers: int = setting(3, "Q-network hidden layers", min=1, max=64)
    critic_reduce: str = setting("min", "reduction for targets and acting: min | minmax (lambda min + (1 - lambda) max: BCQ) "
                                 "| lcb (ensemble-q: mean - k std)")
    critic_lambda: float = setting(0.75, "minmax: weight of the min", min=0)
    max_q_backup: bool = setting(False, "TD target from the best of n_backup_samples next actions")
    n_backup_samples: int = setting(10, "next actions sampled per state for max_q_backup", min=1, max=10_000)
    backup_order: str = setting("max-first", "max_q_backup: max over samples per network, then reduce (Diffusion-QL) "
                                "| reduce-first (BCQ)", choices=("max-first", "reduce-first"))
    target_noise: float = setting(0.0, "TD3's target policy smoothing: std of noise on next actions (0: off)", min=0)
    target_noise_clip: float = setting(0.5, "clip of the smoothing noise", min=0)


@CRITICS.register("ensemble-q")
class EnsembleQCritic(Critic):
    """``n_critics`` Q-networks per seed. ``critic_reduce``: ``min`` over them, ``minmax`` or ``lcb`` =
    mean - ``critic_lcb_k`` * std (population std over the ensemble). The reduction is what the TD target
    and acting use; actor objectives read individual networks."""

    @dataclass
    class Settings(QSettings):
        n_critics: int = setting(10, "Q-networks per seed", min=2, max=1000)
        critic_lcb_k: float = setting(1.0, "lcb: k in mean - k std", min=0)

    capabilities = frozenset({KERNELS})
    label, reductions = "ensemble-q", ("min", "minmax", "lcb")

    def __init__(self, obs_dim: int, action_dim: int, members: int = 1, critic_hidden: int = 256, critic_layers: int = 3,
                 activation: str = "mish", n_critics: int = 10, critic_reduce: str = "min", critic_lambda: float = 0.75,
                 critic_lcb_k: float = 1.0, gamma: float = 0.99, tau: float = 0.005, max_q_backup: bool = False,
                 n_backup_samples: int = 10, backup_order: str = "max-first", target_noise: float = 0.0,
                 target_noise_clip: float = 0.5) -> None:
        super().__init__(obs_dim, action_dim, members, gamma, tau)
        if n_critics < 2:
            raise ValueError(f"{self.label}: n_critics must be >= 2, got {n_critics}")
        if critic_reduce not in self.reductions:
            raise ValueError(f"{self.label}: critic_reduce must be one of {self.reductions}, got {critic_reduce!r}")
        if not 0.0 <= critic_lambda <= 1.0:
            raise ValueError(f"critic_lambda must lie in [0, 1], got {critic_lambda}")
        if backup_order not in ("max-first", "reduce-first"):
            raise ValueError(f"backup_order must be 'max-first' or 'reduce-first', got {backup_order!r}")
        self.n_q = int(n_critics)
        self.reduction, self.lam, self.lcb_k = critic_reduce, float(critic_lambda), float(critic_lcb_k)
        self.max_q_backup, self.n_backup_samples, self.backup_order = bool(max_q_backup), int(n_backup_samples), backup_order
        self.target_noise, self.target_noise_clip = float(target_noise), float(target_noise_clip)
        self.q = EnsembleMLP(members * self.n_q, obs_dim + action_dim, 1, [critic_hidden] * critic_layers, activation)
        self.target = copy.deepcopy(self.q)
        self.target.requires_grad_(False)

    # --- networks --------------------------------------------------------------------------------
    def reset_parameters(self, generators: Sequence[torch.Generator]) -> None:
        self.q.reset_parameters(generators)
        self.sync_target()

    @torch.no_grad()
    def sync_target(self) -> None:
        for t, p in zip(self.target.parameters(), self.q.parameters()):
            t.copy_(p)

    def online_parameters(self) -> List[nn.Parameter]:
        return list(self.q.parameters())

    def _run(self, net: EnsembleMLP, obs: Tensor, actions: Tensor, detach_params: bool = False) -> Tensor:
        M, B, _ = obs.shape
        x = torch.cat([obs, actions], dim=-1)
        x = x.unsqueeze(1).expand(M, self.n_q, B, x.shape[-1]).reshape(M * self.n_q, B, -1)
        return net(x, detach_params).view(M, self.n_q, B)

    def forward(self, obs: Tensor, actions: Tensor) -> Tensor:
        return self._run(self.q, obs, actions)

    def policy_values(self, obs: Tensor, actions: Tensor) -> Tensor:
        """Online values for a policy's actions, differentiable w.r.t. the actions only: the actor's
        backward then skips the critic's weight gradients, which its optimiser would never use."""
        return self._run(self.q, obs, actions, detach_params=True)

    def target_values(self, obs: Tensor, actions: Tensor) -> Tensor:
        with torch.no_grad():
            return self._run(self.target, obs, actions)

    def reduce(self, q: Tensor) -> Tensor:
        if self.reduction == "min":
            return q.min(dim=1).values
        if self.reduction == "minmax":
            return self.lam * q.min(dim=1).values + (1.0 - self.lam) * q.max(dim=1).values
        return q.mean(dim=1) - self.lcb_k * q.std(dim=1, unbiased=False)

    @torch.no_grad()
    def polyak(self) -> None:
        torch._foreach_lerp_(foreach_pieces(list(self.target.parameters())), foreach_pieces(list(self.q.parameters())), self.tau)

    # --- the TD target and the loss ------------------------------------------------------------------
    def backup_rows(self, next_obs: Tensor) -> Tensor:
        """The next observations the target evaluates: each repeated ``n_backup_samples`` times for a max-Q backup."""
        n = self.n_backup_samples if self.max_q_backup else 1
        return next_obs.repeat_interleave(n, dim=1) if n > 1 else next_obs

    def compute_target(self, batch: Dict[str, Tensor], next_actions: NextActions, generators: Sequence[torch.Generator]) -> Tensor:
        """y = r + gamma (1 - done) reduce_j Q'_j(s', a'), a' from the target policy (with TD3's smoothing
        noise if set); a max-Q backup takes the best of ``n_backup_samples`` next actions."""
        if self.gamma == 0:
            return batch["rewards"]  # one-step task (the bandit): the critic regresses the reward
        with torch.no_grad():
            rows = self.backup_rows(batch["next_obs"])
            a = next_actions(rows)
            if self.target_noise > 0:
                noise = member_randn(generators, a.shape[1:], a.device) * self.target_noise
                a = (a + noise.clamp(-self.target_noise_clip, self.target_noise_clip)).clamp(-1.0, 1.0)
            return self.backup(batch, self.target_values(rows, a))

    def backup(self, batch: Dict[str, Tensor], q: Tensor) -> Tensor:
        """The TD target from the target values ``q`` ``[M, n_q, B * n]`` at the backup rows."""
        r, d = batch["rewards"], batch["terminals"]
        M, B = r.shape
        n = q.shape[2] // B
        if n > 1:
            q = q.view(M, q.shape[1], B, n)
            if self.backup_order == "reduce-first":  # BCQ: each sample's reduced value, then the best sample
                return r + (1.0 - d) * self.gamma * self.reduce(q).max(-1).values
            q = q.max(-1).values  # Diffusion-QL: each network's best sample, then the reduction
        return r + (1.0 - d) * self.gamma * self.reduce(q)

    def compute_loss(self, batch: Dict[str, Tensor], target: Tensor) -> Tuple[Tensor, Dict[str, Tensor]]:
        """Sum over the networks of the mean squared TD error, per seed."""
        return td_error_loss(self(batch["obs"], batch["actions"]), target), {}
