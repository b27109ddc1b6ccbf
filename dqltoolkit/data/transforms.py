"""Reward transforms named by the recipes' ``reward_tune`` (as the Diffusion-QL reference applies them)."""

from __future__ import annotations

from typing import Callable, Dict

import numpy as np

from ..registry import Registry

REWARD_TRANSFORMS: Registry[Callable] = Registry("reward transform")


@REWARD_TRANSFORMS.register("no")
def _no(r: np.ndarray, terminals: np.ndarray) -> np.ndarray:
    return r


@REWARD_TRANSFORMS.register("normalize")
def _normalize(r: np.ndarray, terminals: np.ndarray) -> np.ndarray:
    """Standardise to zero mean, unit std (Adroit in the paper)."""
    return (r - r.mean()) / max(float(r.std()), 1e-8)


@REWARD_TRANSFORMS.register("iql_antmaze")
def _iql_antmaze(r, terminals):
    return r - 1.0


@REWARD_TRANSFORMS.register("cql_antmaze")
def _cql_antmaze(r, terminals):
    return (r - 0.5) * 4.0


@REWARD_TRANSFORMS.register("antmaze")
def _antmaze(r, terminals):
    return (r - 0.25) * 2.0


@REWARD_TRANSFORMS.register("iql_locomotion")
def _iql_locomotion(r, terminals):
    """Scale by 1000 / (max - min episode return), episodes split at terminals as the reference does."""
    ends = np.flatnonzero(terminals > 0)
    bounds = np.concatenate([[0], ends + 1])
    returns = [r[a:b].sum() for a, b in zip(bounds[:-1], bounds[1:]) if b > a] or [r.sum()]
    span = max(float(np.max(returns) - np.min(returns)), 1e-8)
    return r * (1000.0 / span)


def apply_reward_transform(name: str, table: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    out = dict(table)
    out["rewards"] = REWARD_TRANSFORMS.get(name)(np.asarray(table["rewards"], dtype=np.float32), np.asarray(table["terminals"])).astype(np.float32)
    return out
