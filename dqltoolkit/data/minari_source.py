"""Minari datasets as transition tables.

Minari stores L + 1 observations per episode of L steps, so next_obs is the shift within an episode and
no transition crosses an episode boundary. ``terminals`` are Minari's terminations (no bootstrap);
truncations are kept apart as ``timeouts`` and do not stop bootstrapping. Float64 becomes float32.
"""

from __future__ import annotations

import os
from typing import Dict, Optional, Sequence

import numpy as np

from .d4rl_hdf5 import DatasetError


def minari_root() -> str:
    from minari.storage.datasets_root_dir import get_dataset_path

    try:
        return str(get_dataset_path(""))
    except Exception:  # older layouts
        return os.environ.get("MINARI_DATASETS_PATH", os.path.expanduser("~/.minari/datasets"))


def is_local(dataset_id: str) -> bool:
    from minari.storage.datasets_root_dir import get_dataset_path

    return os.path.exists(os.path.join(get_dataset_path(dataset_id), "data"))


def open_minari(dataset_ids: Sequence[str], download: bool = False, build_hint: Optional[str] = None):
    """The first of ``dataset_ids`` that is local; else download the first (only when asked)."""
    import minari

    for did in dataset_ids:
        if is_local(did):
            return minari.load_dataset(did)
    if download:
        try:
            return minari.load_dataset(dataset_ids[0], download=True)
        except Exception as exc:
            raise DatasetError(f"could not download Minari dataset {dataset_ids[0]!r}: {exc}") from None
    hint = f", or build it here with `{build_hint}`" if build_hint else ""
    raise DatasetError(
        f"Minari dataset {' / '.join(repr(d) for d in dataset_ids)} is not in the local Minari folder "
        f"{minari_root()} (MINARI_DATASETS_PATH). Pass --download to fetch it (needs a network){hint}."
    )


def minari_to_table(dataset) -> Dict[str, np.ndarray]:
    obs, act, rew, nobs, term, trunc = [], [], [], [], [], []
    for ep in dataset.iterate_episodes():
        o = np.asarray(ep.observations)
        if isinstance(ep.observations, dict) or o.ndim != 2:
            raise DatasetError(f"Minari dataset {dataset.spec.dataset_id!r}: only flat Box observations are supported")
        L = len(ep.actions)
        if len(o) != L + 1:
            raise DatasetError(f"Minari dataset {dataset.spec.dataset_id!r}, episode {ep.id}: {len(o)} observations for {L} steps (expected L + 1)")
        obs.append(o[:-1])
        nobs.append(o[1:])
        act.append(np.asarray(ep.actions).reshape(L, -1))
        rew.append(np.asarray(ep.rewards).reshape(L))
        term.append(np.asarray(ep.terminations).reshape(L))
        trunc.append(np.asarray(ep.truncations).reshape(L))
    if not obs:
        raise DatasetError(f"Minari dataset {dataset.spec.dataset_id!r} has no episodes")
    return {
        "observations": np.concatenate(obs).astype(np.float32),
        "actions": np.concatenate(act).astype(np.float32),
        "rewards": np.concatenate(rew).astype(np.float32),
        "next_observations": np.concatenate(nobs).astype(np.float32),
        "terminals": np.concatenate(term).astype(np.float32),
        "timeouts": np.concatenate(trunc).astype(np.float32),
    }


def load_minari(dataset_id: str, download: bool = False) -> Dict[str, np.ndarray]:
    """Transition table of a Minari dataset (downloads only with ``download=True``)."""
    return minari_to_table(open_minari([dataset_id], download=download))
