"""IQL's critic (Kostrikov et al. 2021): an expectile value network V(s) beside twin Q-networks.

Why: IQL never queries Q at an action outside the data. V(s) is fitted by expectile regression onto
the target critic's min_j Q'_j(s, a) at the dataset action, so with expectile tau > 0.5 it approaches
the best in-support value; Q's TD target is r + gamma (1 - d) V(s') from the online V, with no next
action at all (``compute_target`` ignores the policy it is offered). So the critic trains on the
dataset alone, whatever the policy is, and an actor (AWR, or IDQL's resampling) is extracted from it.

The Q-networks are the ensemble critic's (one member-batched network, ``n_critics`` per seed, target
copies, Polyak); V is one more member-batched MLP, trained by the same optimiser step (its loss is
added to Q's; their parameters are disjoint, so with ``grad_norm: 0`` this equals IQL's separate Adam
steps). One difference of order from the reference code: there V is updated first and Q's target reads
the updated V; here Q's target reads V before this step's update (as CORL's PyTorch IQL does).

``act_weights`` says what :meth:`action_values` gives acting, which draws one candidate with
probability softmax(values) (or takes the argmax for objectives with ``greedy_acting``):
- ``q``: the min target Q (Diffusion-QL's rule; argmax-Q with a greedy objective is IDQL's released
  evaluation rule);
- ``expectile``: log |tau - 1(Q < V)|, so that softmax draws a candidate with probability proportional
  to IDQL's implicit-policy weight for the expectile critic (IDQL, Hansen-Estruch et al. 2023).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

import torch
from torch import Tensor, nn

from ..nn import ACTIVATIONS, EnsembleMLP
from ..registry import CRITICS
from ..settings import setting
from .base import Critic, NextActions
from .ensemble_q import EnsembleQCritic, td_error_loss

ACT_WEIGHTS = ("q", "expectile")


def expectile_loss(diff: Tensor, expectile: float) -> Tensor:
    """IQL's asymmetric square, elementwise: |tau - 1(diff < 0)| diff^2 for ``diff`` = target - V."""
    return expectile_weights(diff, expectile) * diff.pow(2)


def expectile_weights(adv: Tensor, expectile: float) -> Tensor:
    """|tau - 1(adv < 0)|: tau where the advantage is >= 0, 1 - tau below. IDQL's weight of a candidate
    action under the implicit policy of an expectile critic (f(u) = |tau - 1(u < 0)| u^2 gives
    w = |f'(u)| / |u| = 2 |tau - 1(u < 0)|, the factor 2 cancelling in the normalisation)."""
    return torch.where(adv < 0, 1.0 - expectile, expectile).to(adv.dtype)


@CRITICS.register("iql")
class IQLCritic(EnsembleQCritic):
    """Twin (``n_critics``) Q-networks plus V(s). Outputs ``[M, n_q, B]`` for Q, ``[M, B]`` for V."""

    @dataclass
    class Settings(Critic.Settings):
        critic_hidden: int = setting(256, "width of the Q- and V-networks", min=1, max=16384)
        critic_layers: int = setting(2, "hidden layers of the Q- and V-networks (IQL: 2)", min=1, max=64)
        critic_activation: str = setting("relu", "activation of the Q- and V-networks (IQL: relu)", choices=tuple(ACTIVATIONS))
        n_critics: int = setting(2, "Q-networks per seed (min over them for V's target and for acting)", min=2, max=1000)
        expectile: float = setting(0.7, "expectile tau of V's regression, in (0, 1) (IQL locomotion 0.7, antmaze 0.9)", min=0)
        act_weights: str = setting("q", "what acting ranks candidates by: q (min target Q) | expectile (IDQL's "
                                   "implicit-policy weights |tau - 1(Q < V)|, as log-weights)", choices=ACT_WEIGHTS)

    capabilities = frozenset()  # not the kernels' math: runs eagerly on every backend
    label, reductions = "iql", ("min",)

    def __init__(self, obs_dim: int, action_dim: int, members: int = 1, critic_hidden: int = 256, critic_layers: int = 2,
                 critic_activation: str = "relu", n_critics: int = 2, expectile: float = 0.7, act_weights: str = "q",
                 gamma: float = 0.99, tau: float = 0.005) -> None:
        if not 0.0 < expectile < 1.0:
            raise ValueError(f"iql critic: expectile must lie strictly between 0 and 1, got {expectile}")
        if act_weights not in ACT_WEIGHTS:
            raise ValueError(f"iql critic: act_weights must be one of {ACT_WEIGHTS}, got {act_weights!r}")
        if critic_activation not in ACTIVATIONS:
            raise ValueError(f"iql critic: critic_activation must be one of {tuple(ACTIVATIONS)}, got {critic_activation!r}")
        super().__init__(obs_dim, action_dim, members, critic_hidden=critic_hidden, critic_layers=critic_layers,
                         activation=critic_activation, n_critics=n_critics, critic_reduce="min", gamma=gamma, tau=tau)
        self.expectile, self.act_weights = float(expectile), act_weights
        self.v = EnsembleMLP(members, obs_dim, 1, [critic_hidden] * critic_layers, critic_activation)

    # --- networks --------------------------------------------------------------------------------
    def reset_parameters(self, generators: Sequence[torch.Generator]) -> None:
        super().reset_parameters(generators)  # Q first (and its target copy), then V, from each seed's generator
        self.v.reset_parameters(generators)

    def online_parameters(self) -> List[nn.Parameter]:
        return list(self.q.parameters()) + list(self.v.parameters())

    def state_values(self, obs: Tensor) -> Tensor:
        """The online V(s), ``[M, B]`` (with a graph when grad is enabled)."""
        return self.v(obs).squeeze(-1)

    # --- the TD target and the loss ------------------------------------------------------------------
    def compute_target(self, batch: Dict[str, Tensor], next_actions: NextActions, generators: Sequence[torch.Generator]) -> Tensor:
        """y = r + gamma (1 - done) V(s'); ``next_actions`` is never called (no policy in the backup)."""
        if self.gamma == 0:
            return batch["rewards"]
        with torch.no_grad():
            return batch["rewards"] + (1.0 - batch["terminals"]) * self.gamma * self.state_values(batch["next_obs"])

    def value_target(self, obs: Tensor, actions: Tensor) -> Tensor:
        """V's regression target min_j Q'_j(s, a) from the target networks, ``[M, B]``, no graph."""
        return self.reduce(self.target_values(obs, actions))

    def compute_loss(self, batch: Dict[str, Tensor], target: Tensor) -> Tuple[Tensor, Dict[str, Tensor]]:
        """Q: sum over the networks of the mean squared TD error; V: mean expectile loss against the min
        target Q at the dataset action. Both per seed; the loss is their sum."""
        obs, actions = batch["obs"], batch["actions"]
        q_loss = td_error_loss(self(obs, actions), target)
        v = self.state_values(obs)
        v_loss = expectile_loss(self.value_target(obs, actions) - v, self.expectile).mean(dim=1)
        return q_loss + v_loss, {"q_loss": q_loss.detach(), "value_loss": v_loss.detach(), "v_mean": v.detach().mean(dim=1)}

    # --- acting ------------------------------------------------------------------------------------
    @torch.no_grad()
    def action_values(self, obs: Tensor, actions: Tensor) -> Tensor:
        """``q``: min target Q ``[M, B]``; ``expectile``: log |tau - 1(Q < V)|, so that acting's softmax over
        candidates draws with IDQL's weights (normalised over the candidates of each state)."""
        q = self.value_target(obs, actions)
        if self.act_weights == "q":
            return q
        return expectile_weights(q - self.state_values(obs), self.expectile).log()
