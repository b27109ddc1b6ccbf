"""Offline data: the on-device transition buffer and its loaders."""

from .buffer import TransitionBuffer, validate_table

__all__ = ["TransitionBuffer", "validate_table"]
