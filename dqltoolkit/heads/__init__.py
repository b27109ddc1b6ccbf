"""Policy heads. Importing this package registers every built-in head (each module in it)."""

from ..registry import import_part_modules
from .base import PolicyHead
from .cvae import CVAEHead
from .deterministic import DeterministicHead
from .diffusion import DiffusionHead
from .gaussian import GaussianHead

__all__ = ["PolicyHead", "CVAEHead", "DeterministicHead", "DiffusionHead", "GaussianHead"]

import_part_modules(__name__, __path__)  # every module here: a new built-in part is a new file
