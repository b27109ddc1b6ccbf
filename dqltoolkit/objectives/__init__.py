"""Actor objectives. Importing this package registers the built-in objectives."""

from . import awr, bc_critic  # noqa: F401,E402,I001  (registers 'awr' and 'bc-with-critic')
from .base import Objective
from .bc import BCObjective
from .bcq import BCQObjective
from .mmd import MMDObjective, mmd
from .ql import QLObjective, normalised_q_loss
from .td3bc import TD3BCObjective

__all__ = ["Objective", "BCObjective", "BCQObjective", "MMDObjective", "QLObjective", "TD3BCObjective", "mmd", "normalised_q_loss"]
