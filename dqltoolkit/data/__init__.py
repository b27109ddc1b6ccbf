"""Offline data: loaders and reward transforms (the on-device table is the learner's, dqltoolkit/learner.py)."""

from .d4rl_hdf5 import DatasetError, load_d4rl_hdf5
from .minari_source import load_minari, minari_to_table
from .transforms import REWARD_TRANSFORMS, apply_reward_transform

__all__ = ["DatasetError", "load_d4rl_hdf5", "load_minari", "minari_to_table",
           "REWARD_TRANSFORMS", "apply_reward_transform"]
