"""Actor objectives. Importing this package registers every built-in objective (each module in it)."""

from ..registry import import_part_modules
from .base import Objective
from .bc import BCObjective
from .bcq import BCQObjective
from .mmd import MMDObjective, mmd
from .ql import QLObjective, normalised_q_loss
from .td3bc import TD3BCObjective

__all__ = ["Objective", "BCObjective", "BCQObjective", "MMDObjective", "QLObjective", "TD3BCObjective", "mmd", "normalised_q_loss"]

import_part_modules(__name__, __path__)  # every module here: a new built-in part is a new file
