"""Twin Q-networks (the paper's critic): the ensemble critic with N = 2 and the reductions twins allow."""

from __future__ import annotations

from dataclasses import dataclass

from ..capabilities import KERNELS
from ..registry import CRITICS
from .ensemble_q import EnsembleQCritic, QSettings


@CRITICS.register("double-q")
class DoubleQCritic(EnsembleQCritic):
    """min(Q1, Q2) for targets and acting (``critic_reduce=min``), or BCQ's soft clipped double Q,
    lambda min + (1 - lambda) max (``minmax``). Outputs ``[M, 2, B]``."""

    @dataclass
    class Settings(QSettings):
        pass

    capabilities = frozenset({KERNELS})
    label, reductions = "double-q", ("min", "minmax")

    def __init__(self, obs_dim: int, action_dim: int, members: int = 1, **settings) -> None:
        super().__init__(obs_dim, action_dim, members, n_critics=2, **settings)
