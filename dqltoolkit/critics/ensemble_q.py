"""An ensemble of N Q-networks as one member-batched network, with a pessimistic reduction.

Why: twin critics (min of two) are the paper's choice; ensembles with a lower-confidence bound
(mean - k std over N networks) are the usual way to trade pessimism against bias in offline RL, and
ablating that needs the rest of the agent unchanged. For ``M`` seeds the network has ``N M`` members
laid out seed-major, like the twins, so each layer of every critic of every seed is one batched matmul
and the fused CPU critic regression applies as it is. Outputs are ``[M, N, B]``.
"""

from __future__ import annotations

from torch import Tensor

from ..registry import CRITICS
from .double_q import DoubleQCritic


@CRITICS.register("ensemble-q")
class EnsembleQCritic(DoubleQCritic):
    """``n_critics`` Q-networks; ``critic_reduce``: ``min`` over them, ``minmax`` (lambda min + (1 - lambda)
    max, BEAR's and BCQ's rule) or ``lcb`` = mean - ``critic_lcb_k`` * std (population std over the
    ensemble). The reduction is what the TD target and acting use; actor objectives read individual
    members as they do the twins'."""

    label, reductions = "ensemble-q", ("min", "minmax", "lcb")

    def __init__(self, obs_dim: int, action_dim: int, members: int = 1, hidden: int = 256, n_layers: int = 3, activation: str = "mish",
                 n_critics: int = 10, critic_reduce: str = "min", critic_lambda: float = 0.75, critic_lcb_k: float = 1.0) -> None:
        if n_critics < 2:
            raise ValueError(f"ensemble-q: n_critics must be >= 2, got {n_critics}")
        self.n_q = int(n_critics)  # (before the parent builds the network, whose width it sets)
        super().__init__(obs_dim, action_dim, members, hidden, n_layers, activation, critic_reduce, critic_lambda)
        self.lcb_k = float(critic_lcb_k)

    def _reduce_more(self, q: Tensor) -> Tensor:
        return q.mean(dim=1) - self.lcb_k * q.std(dim=1, unbiased=False)
