"""dqltoolkit: offline RL with diffusion policies (Diffusion-QL), exact, fast and SB3-compatible.

>>> import dqltoolkit
>>> model = dqltoolkit.load("runs/bandit/model.zip")
>>> action, _ = model.predict(obs)
>>> pretrained = dqltoolkit.load("zoo:diffusion-ql-bandit2d-v0")
"""

from __future__ import annotations

from . import (
    envs,  # noqa: F401,E402  (registers bandit2d-v0 with Gymnasium)
    zoo,  # noqa: E402
)
from ._version import __version__  # noqa: E402
from .agent import Agent  # noqa: E402
from .config import AgentConfig, load_recipe  # noqa: E402
from .training import train  # noqa: E402


def load(path, env=None, device: str = "auto") -> Agent:
    """Load a checkpoint written by ``Agent.save`` / ``dqltoolkit train``, or ``"zoo:<id>"`` (nothing is unpickled)."""
    return Agent.load(path, env=env, device=device)


__all__ = ["Agent", "AgentConfig", "load", "load_recipe", "train", "zoo", "__version__"]
