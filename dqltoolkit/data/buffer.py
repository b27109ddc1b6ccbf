"""The transition table on the training device, sampled by index (no DataLoader, no host sync)."""

from __future__ import annotations

from typing import Dict, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from ..nn import member_randint

FIELDS = ("observations", "actions", "rewards", "next_observations", "terminals")


def validate_table(table: Mapping[str, np.ndarray], source: str = "dataset") -> Dict[str, np.ndarray]:
    """Check fields, lengths and finiteness; return float32 arrays. Errors name the source and field."""
    missing = [k for k in FIELDS if k not in table]
    if missing:
        raise ValueError(f"{source}: missing field(s) {missing}; a transition table needs {list(FIELDS)}")
    out = {k: np.asarray(table[k], dtype=np.float32) for k in FIELDS}
    n = len(out["observations"])
    for k, v in out.items():
        if len(v) != n:
            raise ValueError(f"{source}: field {k!r} has {len(v)} rows, 'observations' has {n}")
        if not np.isfinite(v).all():
            raise ValueError(f"{source}: field {k!r} contains NaN or Inf values")
    for k in ("rewards", "terminals"):
        out[k] = out[k].reshape(n)
    if n == 0:
        raise ValueError(f"{source}: the dataset holds no transitions")
    return out


class TransitionBuffer:
    """Float32 tensors on one device; :meth:`sample` draws ``[members, batch]`` indices per member."""

    def __init__(self, table: Mapping[str, np.ndarray], device: torch.device | str = "cpu") -> None:
        t = validate_table(table)
        self.device = torch.device(device)
        self.obs = torch.as_tensor(t["observations"], device=self.device)
        self.actions = torch.as_tensor(t["actions"], device=self.device)
        self.rewards = torch.as_tensor(t["rewards"], device=self.device)
        self.next_obs = torch.as_tensor(t["next_observations"], device=self.device)
        self.terminals = torch.as_tensor(t["terminals"], device=self.device)

    def __len__(self) -> int:
        return self.obs.shape[0]

    @property
    def obs_dim(self) -> int:
        return self.obs.shape[1]

    @property
    def action_dim(self) -> int:
        return self.actions.shape[1]

    def sample(self, batch_size: int, generators: Sequence[torch.Generator]) -> Dict[str, Tensor]:
        idx = member_randint(generators, len(self), (batch_size,), self.device)
        flat, shape = idx.view(-1), tuple(idx.shape)

        def take(t: Tensor) -> Tensor:  # index_select: the same rows as t[idx], without advanced indexing's set-up
            return t.index_select(0, flat).view(*shape, *t.shape[1:])

        return {"obs": take(self.obs), "actions": take(self.actions), "rewards": take(self.rewards), "next_obs": take(self.next_obs),
                "terminals": take(self.terminals)}
