"""Offline data: the on-device transition buffer and its loaders."""

from .buffer import TransitionBuffer, validate_table
from .d4rl_hdf5 import DatasetError, load_d4rl_hdf5
from .minari_source import load_minari, minari_to_table
from .transforms import REWARD_TRANSFORMS, apply_reward_transform

__all__ = ["TransitionBuffer", "validate_table", "DatasetError", "load_d4rl_hdf5", "load_minari", "minari_to_table",
           "REWARD_TRANSFORMS", "apply_reward_transform"]
