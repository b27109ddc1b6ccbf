"""Minari datasets as transition tables.

Minari stores L + 1 observations per episode of L steps, so next_obs is the shift within an episode and
no transition crosses an episode boundary. ``terminals`` are Minari's terminations (no bootstrap);
truncations are kept apart as ``timeouts`` and do not stop bootstrapping. Float64 becomes float32.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np

from .. import envs as _envs  # noqa: F401  (registers bandit2d-v0)
from .d4rl_hdf5 import DatasetError
from .levels import build_time_estimate


def minari_root(write: bool = False) -> str:
    """The local Minari folder (``MINARI_DATASETS_PATH``, else ``~/.minari/datasets``), created if missing; one that
    cannot be created (or, with ``write``, written) is a DatasetError naming it, not Minari's bare OSError."""
    path = os.environ.get("MINARI_DATASETS_PATH", os.path.join(os.path.expanduser("~"), ".minari", "datasets"))
    problem = "cannot be created"
    try:
        os.makedirs(path, exist_ok=True)
        if write:
            problem = "is not writable"
            fd, probe = tempfile.mkstemp(prefix=".dqltoolkit-write-probe-", dir=path)
            os.close(fd)
            os.unlink(probe)
    except OSError as exc:
        raise DatasetError(f"the Minari folder {path!r} (MINARI_DATASETS_PATH) {problem}: {exc.strerror or exc}; "
                           "set MINARI_DATASETS_PATH to a folder you can write") from None
    return path


def is_local(dataset_id: str) -> bool:
    return os.path.exists(os.path.join(minari_root(), dataset_id, "data"))


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
    hint = f", or build it here with `{build_hint}` ({build_time_estimate(build_hint)})" if build_hint else ""
    raise DatasetError(f"Minari dataset {' / '.join(repr(d) for d in dataset_ids)} is not in the local Minari folder "
                       f"{minari_root()} (MINARI_DATASETS_PATH). Pass --download to fetch it (needs a network){hint}.")


def minari_to_table(dataset) -> Dict[str, np.ndarray]:
    eps = []
    for ep in dataset.iterate_episodes():
        o = np.asarray(ep.observations)
        if isinstance(ep.observations, dict) or o.ndim != 2:
            raise DatasetError(f"Minari dataset {dataset.spec.dataset_id!r}: only flat Box observations are supported")
        L = len(ep.actions)
        if len(o) != L + 1:
            raise DatasetError(f"Minari dataset {dataset.spec.dataset_id!r}, episode {ep.id}: {len(o)} observations for {L} steps (expected L + 1)")
        eps.append({"observations": o[:-1], "actions": np.asarray(ep.actions).reshape(L, -1), "rewards": np.asarray(ep.rewards).reshape(L),
                    "next_observations": o[1:], "terminals": np.asarray(ep.terminations).reshape(L),
                    "timeouts": np.asarray(ep.truncations).reshape(L)})
    if not eps:
        raise DatasetError(f"Minari dataset {dataset.spec.dataset_id!r} has no episodes")
    return {k: np.concatenate([e[k] for e in eps]).astype(np.float32) for k in eps[0]}


def load_minari(dataset_id: str, download: bool = False) -> Dict[str, np.ndarray]:
    """Transition table of a Minari dataset (downloads only with ``download=True``)."""
    return minari_to_table(open_minari([dataset_id], download=download))


def dataset_eval_env(dataset_id: str) -> Tuple[Optional[str], Dict[str, Any], Optional[float], Optional[float], str]:
    """``(env id or None, env kwargs, ref_min, ref_max, note)`` from a local dataset's own metadata.

    The metadata is untrusted and gymnasium imports code it names (``module:Env-v0``, entry points, wrappers),
    so only an env id already registered with the same entry point is taken, with numeric kwargs; else ``note`` says why.
    """
    import minari

    meta = minari.load_dataset(dataset_id).storage.metadata
    ref_min, ref_max = _finite(meta.get("ref_min_score")), _finite(meta.get("ref_max_score"))
    field = "eval_env_spec" if meta.get("eval_env_spec") else "env_spec"
    raw = meta.get(field)
    where = f"Minari dataset {dataset_id!r} metadata field {field!r}"
    if not raw:
        return None, {}, ref_min, ref_max, f"Minari dataset {dataset_id!r} names no env in its metadata (eval_env_spec, env_spec)"
    try:
        spec = json.loads(raw) if isinstance(raw, str) else raw
    except ValueError as exc:
        return None, {}, ref_min, ref_max, f"{where} is not valid JSON ({exc})"
    env_id = spec.get("id") if isinstance(spec, dict) else None
    if not isinstance(env_id, str) or not env_id:
        return None, {}, ref_min, ref_max, f"{where} has no env id"
    refused = _refuse_env(env_id, spec, where)
    if refused:
        return None, {}, ref_min, ref_max, refused
    kwargs = dict(spec.get("kwargs") or {})
    steps = spec.get("max_episode_steps")
    if isinstance(steps, int) and not isinstance(steps, bool) and steps > 0:
        kwargs["max_episode_steps"] = steps
    return env_id, kwargs, ref_min, ref_max, ""


def _refuse_env(env_id: str, spec: Dict[str, Any], where: str) -> str:
    """Why the env a dataset names must not be made from its metadata ("" when it may)."""
    import gymnasium as gym

    if ":" in env_id:
        return (f"{where} names env id {env_id!r}: an id with ':' makes gymnasium import the module before the ':', "
                "so it is refused (register the env in your own code and pass its plain id)")
    registered = gym.registry.get(env_id)
    if registered is None:
        return f"{where} names env {env_id!r}, which is not registered with gymnasium here (install and import its package first)"
    theirs, ours = spec.get("entry_point"), registered.entry_point
    ours_text = ours if isinstance(ours, str) else f"{getattr(ours, '__module__', '?')}:{getattr(ours, '__qualname__', '?')}"
    if theirs is not None and theirs != ours_text:
        return f"{where} gives env {env_id!r} the entry point {theirs!r}, but gymnasium registers {ours_text!r}: refused"
    if spec.get("additional_wrappers"):
        return f"{where} wraps env {env_id!r} in additional_wrappers, which are not applied from a dataset's metadata"
    kwargs = spec.get("kwargs") or {}
    if not isinstance(kwargs, dict):
        return f"{where}: 'kwargs' is not a mapping"
    odd = sorted(k for k, v in kwargs.items() if not (v is None or isinstance(v, (bool, int, float))))
    if odd:
        return f"{where} passes env {env_id!r} non-numeric keyword argument(s) {odd}, which are not taken from a dataset's metadata"
    return ""


def _finite(value: Any) -> Optional[float]:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) else None
