"""Reward transforms named by the recipes' ``reward_tune`` (as the Diffusion-QL reference applies them)."""

from __future__ import annotations

from typing import Callable, Dict

import numpy as np

from ..registry import Registry

REWARD_TRANSFORMS: Registry[Callable] = Registry("reward transform")
# the pointwise transforms; "normalize" standardises to zero mean, unit std (Adroit in the paper)
REWARD_TRANSFORMS.register("no", lambda r, terminals: r)
REWARD_TRANSFORMS.register("normalize", lambda r, terminals: (r - r.mean()) / max(float(r.std()), 1e-8))
REWARD_TRANSFORMS.register("iql_antmaze", lambda r, terminals: r - 1.0)
REWARD_TRANSFORMS.register("cql_antmaze", lambda r, terminals: (r - 0.5) * 4.0)
REWARD_TRANSFORMS.register("antmaze", lambda r, terminals: (r - 0.25) * 2.0)


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
