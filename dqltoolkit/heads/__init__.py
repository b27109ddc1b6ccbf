"""Policy heads. Importing this package registers the built-in heads."""

from . import consistency  # noqa: F401  (registers 'consistency')
from .base import PolicyHead
from .cvae import CVAEHead
from .deterministic import DeterministicHead
from .diffusion import DiffusionHead
from .gaussian import GaussianHead

__all__ = ["PolicyHead", "CVAEHead", "DeterministicHead", "DiffusionHead", "GaussianHead"]
