"""The dataset builder's SB3 models and replay buffers on disk without pickle (SB3's own files are pickles,
which run whatever code they name): ``<stem>.safetensors`` + ``<stem>.json`` per model, ``.npz`` per buffer,
loaded into a fresh model (``make``); a file that does not fit is a :class:`StageError` naming file and field.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Dict, Tuple

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

FORMAT = "dqltoolkit-sb3-stage/1"


class StageError(ValueError):
    """A builder stage that cannot be loaded; the message names the file and what is wrong."""


def _flatten(obj: Any, tensors: Dict[str, Any], where: str) -> Any:
    """JSON skeleton of nested dicts/lists/scalars with tensors moved into ``tensors`` (keys keep their types)."""
    if isinstance(obj, torch.Tensor):
        key = f"t{len(tensors)}"
        tensors[key] = obj.detach().cpu().contiguous()
        return {"tensor": key}
    if isinstance(obj, dict):
        return {"dict": [[k, _flatten(v, tensors, f"{where}.{k}")] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        return {"list" if isinstance(obj, list) else "tuple": [_flatten(v, tensors, f"{where}[{i}]") for i, v in enumerate(obj)]}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return {"value": obj}
    raise TypeError(f"{where}: cannot store a {type(obj).__name__} without pickle")


def _unflatten(node: Any, tensors: Dict[str, Any], where: str) -> Any:
    if not isinstance(node, dict) or len(node) != 1:
        raise StageError(f"{where}: malformed entry")
    (kind, body), = node.items()
    if kind == "tensor":
        if body not in tensors:
            raise StageError(f"{where}: tensor {body!r} is missing")
        return tensors[body]
    if kind == "dict":
        if not isinstance(body, list) or not all(isinstance(kv, list) and len(kv) == 2 and isinstance(kv[0], (str, int)) for kv in body):
            raise StageError(f"{where}: malformed mapping")
        return {k: _unflatten(v, tensors, f"{where}.{k}") for k, v in body}
    if kind in ("list", "tuple"):
        if not isinstance(body, list):
            raise StageError(f"{where}: malformed list")
        items = [_unflatten(v, tensors, f"{where}[{i}]") for i, v in enumerate(body)]
        return items if kind == "list" else tuple(items)
    if kind == "value" and (body is None or isinstance(body, (bool, int, float, str))):
        return body
    raise StageError(f"{where}: unknown entry {kind!r}")


def _atomic(path: Path, write: Callable[[Path], None]) -> None:
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    write(tmp)
    os.replace(tmp, path)


def stage_files(stem: Path) -> Tuple[Path, Path]:
    return stem.with_suffix(".json"), stem.with_suffix(".safetensors")


def save_model(model, stem: Path, algo: str) -> None:
    """``<stem>.safetensors`` + ``<stem>.json``: what ``load_model`` needs to continue or act."""
    from stable_baselines3.common.save_util import recursive_getattr

    state_names, variable_names = model._get_torch_save_params()
    tensors: Dict[str, Any] = {}
    state = {name: _flatten(recursive_getattr(model, name).state_dict(), tensors, name) for name in state_names}
    variables = {name: _flatten(recursive_getattr(model, name), tensors, name) for name in variable_names}
    doc = {"format": FORMAT, "algo": algo, "num_timesteps": int(model.num_timesteps), "n_updates": int(model._n_updates),
           "episode_num": int(model._episode_num), "state": state, "variables": variables}
    meta, weights = stage_files(stem)
    _atomic(weights, lambda p: save_file(tensors, str(p)))
    _atomic(meta, lambda p: p.write_text(json.dumps(doc)))  # last: a stage exists once its JSON does


def has_model(stem: Path) -> bool:
    return all(p.is_file() for p in stage_files(stem))


def load_model(stem: Path, algo: str, make: Callable[[], Any]):
    """A fresh model from ``make()`` with the stage's state loaded into it (strictly: every tensor must fit)."""
    from stable_baselines3.common.save_util import recursive_getattr

    meta, weights = stage_files(stem)
    try:
        doc = json.loads(meta.read_text())
    except (OSError, ValueError) as exc:
        raise StageError(f"{meta}: not a readable stage ({exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise StageError(f"{meta}: field 'format' is {doc.get('format') if isinstance(doc, dict) else None!r}, expected {FORMAT!r}")
    if doc.get("algo") != algo:
        raise StageError(f"{meta}: field 'algo' is {doc.get('algo')!r}, but this build uses {algo!r}")
    try:
        tensors = load_file(str(weights))
    except (OSError, SafetensorError, ValueError) as exc:
        raise StageError(f"{weights}: not a readable safetensors file ({exc})") from None
    model = make()
    state_names, variable_names = model._get_torch_save_params()
    for field, names in (("state", state_names), ("variables", variable_names)):
        got = doc.get(field)
        if not isinstance(got, dict) or set(got) != set(names):
            raise StageError(f"{meta}: field {field!r} holds {sorted(got) if isinstance(got, dict) else got!r}, expected {sorted(names)}")
    try:
        for name in state_names:
            target = recursive_getattr(model, name)
            value = _unflatten(doc["state"][name], tensors, f"{meta} state.{name}")
            if isinstance(target, torch.optim.Optimizer):
                _check_optimizer(target, value, f"{meta} state.{name}")
                target.load_state_dict(value)
            else:
                target.load_state_dict(value, strict=True)
        for name in variable_names:
            target = recursive_getattr(model, name)
            value = _unflatten(doc["variables"][name], tensors, f"{meta} variables.{name}")
            if not isinstance(value, torch.Tensor) or value.shape != target.shape:
                raise StageError(f"{meta}: variables.{name} does not fit the model's {tuple(target.shape)}")
            with torch.no_grad():
                target.copy_(value)
    except RuntimeError as exc:  # load_state_dict's missing/unexpected keys and size mismatches
        raise StageError(f"{meta}: {str(exc).splitlines()[0]}") from None
    for field in ("num_timesteps", "n_updates", "episode_num"):
        if not isinstance(doc.get(field), int) or doc[field] < 0:
            raise StageError(f"{meta}: field {field!r} must be a non-negative integer, got {doc.get(field)!r}")
    model.num_timesteps, model._n_updates, model._episode_num = doc["num_timesteps"], doc["n_updates"], doc["episode_num"]
    return model


def _check_optimizer(opt, state: Any, where: str) -> None:
    """An optimiser's moments must have their parameters' shapes (else a resumed step fails, or worse)."""
    if not isinstance(state, dict) or not isinstance(state.get("state"), dict) or not isinstance(state.get("param_groups"), list):
        raise StageError(f"{where}: not an optimiser state")
    params = [p for group in opt.param_groups for p in group["params"]]
    for idx, moments in state["state"].items():
        if not isinstance(idx, int) or not 0 <= idx < len(params) or not isinstance(moments, dict):
            raise StageError(f"{where}: state for parameter {idx!r}, the optimiser has {len(params)}")
        for key, t in moments.items():
            if isinstance(t, torch.Tensor) and t.dim() > 0 and t.shape != params[idx].shape:
                raise StageError(f"{where}: {key} of parameter {idx} has shape {tuple(t.shape)}, the parameter {tuple(params[idx].shape)}")


_BUFFER_FIELDS = ("observations", "next_observations", "actions", "rewards", "dones", "timeouts")


def save_replay(buffer, path: Path) -> None:
    """The filled part of an SB3 replay buffer (single env) as arrays, with its position."""
    n = buffer.buffer_size if buffer.full else buffer.pos
    arrays = {k: getattr(buffer, k)[:n] for k in _BUFFER_FIELDS}
    _atomic(path, lambda p: np.savez(open(p, "wb"), pos=np.int64(buffer.pos), full=np.bool_(buffer.full), **arrays))


def load_replay(buffer, path: Path) -> None:
    """Fill ``buffer`` from :func:`save_replay`'s file (same sizes required)."""
    try:
        z = np.load(path, allow_pickle=False)
        data = {k: z[k] for k in ("pos", "full", *_BUFFER_FIELDS)}
    except (OSError, ValueError, KeyError) as exc:
        raise StageError(f"{path}: not a readable replay buffer ({exc})") from None
    pos, full = int(data["pos"]), bool(data["full"])
    n = buffer.buffer_size if full else pos
    if not 0 <= pos <= buffer.buffer_size:
        raise StageError(f"{path}: field 'pos' is {pos}, the buffer holds {buffer.buffer_size}")
    for k in _BUFFER_FIELDS:
        target = getattr(buffer, k)
        if data[k].shape != (n, *target.shape[1:]):
            raise StageError(f"{path}: field {k!r} has shape {data[k].shape}, expected {(n, *target.shape[1:])}")
        target[:n] = data[k]
    buffer.pos, buffer.full = pos, full
