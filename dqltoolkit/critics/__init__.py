"""Critics. Importing this package registers the built-in critics."""

from .base import Critic
from .double_q import DoubleQCritic
from .ensemble_q import EnsembleQCritic
from .iql import IQLCritic  # noqa: F401  (registers 'iql')

__all__ = ["Critic", "DoubleQCritic", "EnsembleQCritic"]
