"""Policy heads. Importing this package registers the built-in heads."""

from .base import PolicyHead
from .diffusion import DiffusionHead

__all__ = ["PolicyHead", "DiffusionHead"]
