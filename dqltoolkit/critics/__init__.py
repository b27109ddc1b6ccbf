"""Critics. Importing this package registers the built-in critics."""

from .double_q import DoubleQCritic

__all__ = ["DoubleQCritic"]
