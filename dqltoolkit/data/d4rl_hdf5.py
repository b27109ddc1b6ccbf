"""D4RL hdf5 files read with h5py, with the semantics of D4RL's ``qlearning_dataset``.

Row i becomes the transition (obs[i], action[i], reward[i], obs[i + 1], terminal[i]); rows whose
``timeouts`` flag is set are dropped (their next row starts a new episode, so obs[i + 1] is not their
successor), and so is the last row. Terminals are kept: the critic does not bootstrap through them.
Files without ``timeouts`` (old D4RL versions) mark an episode end every ``max_episode_steps`` steps, as
D4RL does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Union

import numpy as np

REQUIRED = ("observations", "actions", "rewards", "terminals")


class DatasetError(ValueError):
    """A dataset file that cannot be used; the message names the file, the key and what is wrong."""


def load_d4rl_hdf5(path: Union[str, Path], max_episode_steps: int = 1000) -> Dict[str, np.ndarray]:
    """Transition table (float32 ``observations, actions, rewards, next_observations, terminals``)."""
    import h5py

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"D4RL file {path} does not exist")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise DatasetError(f"{path} is not a readable hdf5 file: {exc}") from None
    with f:
        missing = [k for k in REQUIRED if k not in f]
        if missing:
            raise DatasetError(f"{path}: missing key(s) {missing}; a D4RL file needs {list(REQUIRED)} (and usually 'timeouts')")
        raw = {k: np.asarray(f[k][()]) for k in (*REQUIRED, "timeouts") if k in f}
    n = len(raw["observations"])
    for k, v in raw.items():
        if len(v) != n:
            raise DatasetError(f"{path}: key '{k}' has {len(v)} rows but 'observations' has {n}")
        if v.dtype.kind == "f" and not np.isfinite(v).all():
            bad = int(np.argwhere(~np.isfinite(v.reshape(n, -1)).all(axis=1))[0][0])
            raise DatasetError(f"{path}: key '{k}' contains NaN or Inf (first at row {bad})")
    if raw["observations"].ndim != 2 or raw["actions"].ndim != 2:
        raise DatasetError(f"{path}: 'observations' and 'actions' must be 2-D (rows, features); got {raw['observations'].shape} and {raw['actions'].shape}")
    if n < 2:
        raise DatasetError(f"{path}: needs at least 2 rows, has {n}")
    terminals = raw["terminals"].reshape(n).astype(bool)
    timeouts = (raw["timeouts"].reshape(n).astype(bool) if "timeouts" in raw
                else _timeouts_by_episode_length(terminals, max_episode_steps))
    keep = np.flatnonzero(~timeouts[: n - 1])
    obs = raw["observations"].astype(np.float32)
    return {"observations": obs[keep], "actions": raw["actions"].astype(np.float32)[keep],
            "rewards": raw["rewards"].reshape(n).astype(np.float32)[keep], "next_observations": obs[keep + 1],
            "terminals": terminals[keep].astype(np.float32)}


def _timeouts_by_episode_length(terminals: np.ndarray, max_episode_steps: int) -> np.ndarray:
    """D4RL's rule for files without timeouts: step ``max_episode_steps - 1`` of an episode is its last."""
    out = np.zeros(len(terminals), dtype=bool)
    step = 0
    for i, done in enumerate(terminals):
        final = step == max_episode_steps - 1
        out[i] = final and not done
        step = 0 if (done or final) else step + 1
    return out
