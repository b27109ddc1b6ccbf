"""Actor objectives. Importing this package registers the built-in objectives."""

from .base import Objective
from .bc import BCObjective
from .ql import QLObjective, normalised_q_loss

__all__ = ["Objective", "BCObjective", "QLObjective", "normalised_q_loss"]
