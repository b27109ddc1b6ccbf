"""Critics. Importing this package registers every built-in critic (each module in it)."""

from ..registry import import_part_modules
from .base import Critic
from .double_q import DoubleQCritic
from .ensemble_q import EnsembleQCritic
from .iql import IQLCritic

__all__ = ["Critic", "DoubleQCritic", "EnsembleQCritic", "IQLCritic"]

import_part_modules(__name__, __path__)  # every module here: a new built-in part is a new file
