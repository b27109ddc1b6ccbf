"""Gymnasium environments shipped with dqltoolkit; importing this module registers them.

Gymnasium 1.x has no entry-point plugins, so registration happens on import. ``gymnasium.make(
"dqltoolkit.envs:bandit2d-v0")`` imports this module first and works without ``import dqltoolkit``. The
entry point is a string so that Minari can store the env spec.
"""

import gymnasium as gym

from .bandit2d import Bandit2DEnv, make_bandit_dataset, mode_of, mode_shares

if "bandit2d-v0" not in gym.registry:
    # no TimeLimit: every episode terminates after its one step, and a TimeLimit of 1 would also flag it truncated
    gym.register(id="bandit2d-v0", entry_point="dqltoolkit.envs.bandit2d:Bandit2DEnv")

__all__ = ["Bandit2DEnv", "make_bandit_dataset", "mode_of", "mode_shares"]
