"""The checkpoint format: a zip of ``dqltoolkit.json`` (what to build) and ``tensors.safetensors``.

Loading never unpickles anything, so a checkpoint from the zoo or a stranger cannot run code (an SB3 zip holds
cloudpickled objects). Writes are atomic (a temp file, then ``os.replace``); checkpoints hold optimiser, EMA,
target-network and RNG state, so a resumed run continues exactly.
"""

from __future__ import annotations

import errno
import io
import json
import os
import platform
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Dict, Optional, Union

import gymnasium as gym
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from . import checkpoint_checks as checks
from ._version import __version__
from .checkpoint_checks import DOC_NAME, MAX_DOC_BYTES, TENSORS_NAME, CheckpointError, agent_modules, agent_optimizers
from .online import ONLINE_FIELDS, OnlineBuffer

FORMAT = "dqltoolkit-agent"
FORMAT_VERSION = 2  # 2: settings belong to parts (config keys a part does not read are no longer written)

__all__ = ["CheckpointError", "CheckpointWriteError", "config_of", "init_from_checkpoint", "read_checkpoint", "restore_agent", "save_agent"]


class CheckpointWriteError(OSError, CheckpointError):
    """A checkpoint that could not be written (a full disk, no permission); also an ``OSError`` with its errno."""


def box_to_json(space: gym.spaces.Box) -> Dict[str, Any]:
    return {"type": "Box", "low": space.low.tolist(), "high": space.high.tolist(), "shape": list(space.shape), "dtype": str(space.dtype)}


def _member_slice(t: torch.Tensor, members: int, m: Optional[int]) -> torch.Tensor:
    if m is None:
        return t
    k = t.shape[0] // members
    return t[m * k : (m + 1) * k]


def _online_kept(agent, include_optimizer: bool) -> Optional[OnlineBuffer]:
    """The fine-tune experience a checkpoint keeps: a training checkpoint's, when there is any."""
    online = agent.learner.online_buffer
    return online if include_optimizer and online is not None and online.size else None


def agent_state(agent, member: Optional[int] = None, include_optimizer: bool = True) -> Dict[str, torch.Tensor]:
    """All tensors of an agent, optionally of one member only (for per-seed checkpoints)."""
    M = agent.members
    out = {prefix + k: _member_slice(v, M, member) for prefix, module in agent_modules(agent) for k, v in module.state_dict().items()}
    if include_optimizer:
        for name, opt in agent_optimizers(agent).items():
            for i, st in opt.state_dict()["state"].items():
                for k, v in st.items():
                    v = torch.as_tensor(v)
                    out[f"optim.{name}.{i}.{k}"] = _member_slice(v, M, member) if v.dim() > 0 else v
    for j, m in enumerate(range(M) if member is None else [member]):
        out[f"rng.train.{j}"] = agent.train_generators[m].get_state()
        out[f"rng.act.{j}"] = agent.act_generators[m].get_state()
    out.update(obs_mean=agent.obs_mean, obs_std=agent.obs_std)
    online = _online_kept(agent, include_optimizer)
    if online is not None:
        for field, t in online.chronological().items():
            out[f"online.{field}"] = _member_slice(t, M, member)
    return {k: v.detach().to("cpu").contiguous() for k, v in out.items()}


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` all or nothing (temp file, fsync, ``os.replace``); OSErrors become CheckpointWriteErrors."""
    tmp: Optional[str] = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes the file private (0600); a saved model is an ordinary file
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, OSError) and not isinstance(exc, CheckpointWriteError):
            code = errno.errorcode.get(exc.errno, "") if exc.errno else ""
            kept = "the previous file there is unchanged" if path.exists() else "nothing was written"
            raise CheckpointWriteError(exc.errno, f"could not write {path}: {exc.strerror or exc}"
                                                  f"{f' ({code})' if code else ''}; {kept}") from exc
        raise


def save_agent(agent, path: Union[str, Path], member: Optional[int] = None, include_optimizer: bool = True, extra: Optional[Dict[str, Any]] = None) -> Path:
    """Write an agent (or one member of a multi-seed agent) to ``path`` (``.zip`` is added if missing)."""
    path = Path(path)
    if path.suffix != ".zip":
        path = path.with_suffix(path.suffix + ".zip")
    seeds = agent.seeds if member is None else [agent.seeds[member]]
    online = _online_kept(agent, include_optimizer)
    doc = {"format": FORMAT, "format_version": FORMAT_VERSION, "config": agent.config.to_dict(),
           "observation_space": box_to_json(agent.observation_space), "action_space": box_to_json(agent.action_space),
           "seeds": seeds, "num_timesteps": agent.num_timesteps, "task": agent.task, "has_optimizer": include_optimizer,
           **({"online_added": int(online.added)} if online is not None else {}),
           "versions": {"dqltoolkit": __version__, "torch": torch.__version__, "gymnasium": gym.__version__,
                        "python": platform.python_version()},
           "extra": extra or {}}
    tensors = st_save(agent_state(agent, member, include_optimizer))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr(DOC_NAME, json.dumps(doc, indent=2, default=float))
        z.writestr(TENSORS_NAME, tensors)
    atomic_write_bytes(path, buf.getvalue())
    return path


def read_checkpoint(path: Union[str, Path], allow_nonfinite: bool = False) -> tuple[Dict[str, Any], Dict[str, torch.Tensor]]:
    """A checkpoint's document and tensors, read without building an agent and checked throughout (``checkpoint_checks``)."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path} is a directory, not a checkpoint file (a run folder holds model.zip)")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        file_size = path.stat().st_size
        with zipfile.ZipFile(path) as z:
            names = set(z.namelist())
            if DOC_NAME not in names:
                raise CheckpointError(f"{path} is not a dqltoolkit checkpoint: the zip has no {DOC_NAME} (found {sorted(names)[:5]})")
            reader = checks.BoundedReader(z, DOC_NAME, path, MAX_DOC_BYTES, f"{DOC_NAME} holds settings and spaces only")
            doc = checks.parse_json(reader.read_all(), path, DOC_NAME)
            checks.check_document(doc, path, FORMAT, FORMAT_VERSION)
            if TENSORS_NAME not in names:
                raise CheckpointError(f"{path}: the zip has no {TENSORS_NAME}")
            limit = min(checks.MAX_TENSOR_BYTES, max(checks.MIN_TENSOR_CAP, checks.INFLATION_LIMIT * file_size))
            limit_text = (f"{checks.INFLATION_LIMIT} x the file's {file_size} bytes, at least {checks.MIN_TENSOR_CAP >> 20} MiB "
                          f"and at most {checks.MAX_TENSOR_BYTES >> 30} GiB")
            reader = checks.BoundedReader(z, TENSORS_NAME, path, limit, limit_text)
            head, header, data_len = checks.read_header(reader, path)
            if reader.info.file_size != len(head) + data_len:
                raise CheckpointError(f"{path}: {TENSORS_NAME} has {reader.info.file_size} bytes, "
                                      f"its header declares {len(head) + data_len}")
            checks.check_header(header, doc, path)
            raw = head + reader.read(data_len)
            reader.finish()
    except zipfile.BadZipFile as exc:
        raise CheckpointError(f"{path} is not a readable dqltoolkit checkpoint (truncated or not a zip file: {exc})") from None
    except (zipfile.LargeZipFile, EOFError, OSError, ValueError, NotImplementedError, RuntimeError) as exc:
        if isinstance(exc, (FileNotFoundError, CheckpointError)):
            raise
        raise CheckpointError(f"{path} could not be read as a checkpoint (damaged, truncated or unreadable: {type(exc).__name__}: {exc})") from None
    try:
        tensors = st_load(raw)
    except Exception as exc:
        raise CheckpointError(f"{path}: {TENSORS_NAME} is damaged: {exc}") from None
    checks.check_values(tensors, path, allow_nonfinite)
    return doc, tensors


def config_of(doc: Dict[str, Any], path: Union[str, Path]):
    """The configuration a checkpoint's document holds (format 1: every key flat), within the checkpoint limits."""
    return checks.check_config(doc["config"], Path(str(path)), legacy=checks.is_legacy(doc))


def _load_networks(agent, tensors: Dict[str, torch.Tensor], widen=lambda t: t) -> None:
    """The networks (each tensor through ``widen``) and the observation statistics: what resuming and fine-tuning share."""
    for prefix, module in agent_modules(agent):
        module.load_state_dict({k[len(prefix):]: widen(v) for k, v in tensors.items() if k.startswith(prefix)}, strict=True)
    agent.obs_mean, agent.obs_std = tensors["obs_mean"].to(agent.device), tensors["obs_std"].to(agent.device)


def restore_agent(agent, path: Union[str, Path], doc: Dict[str, Any], tensors: Dict[str, torch.Tensor]):
    """Load a checkpoint's tensors strictly into the agent its document describes (``Agent.load``), then its step count."""
    dev = agent.device
    try:
        _load_networks(agent, tensors)
        if doc.get("has_optimizer"):
            for name, opt in agent_optimizers(agent).items():
                state: Dict[int, Dict[str, torch.Tensor]] = {}
                for k, v in tensors.items():
                    if k.startswith(f"optim.{name}."):
                        _, _, i, key = k.split(".", 3)
                        state.setdefault(int(i), {})[key] = v.to(dev) if key != "step" else v
                opt.load_state_dict({**opt.state_dict(), "state": state})
        for m in range(agent.members):
            for kind, gens in (("train", agent.train_generators), ("act", agent.act_generators)):
                checks.check_generator_state(tensors[f"rng.{kind}.{m}"], gens[m], f"rng.{kind}.{m}", path)
                gens[m].set_state(tensors[f"rng.{kind}.{m}"])
        if "online.obs" in tensors:
            held = {f: tensors[f"online.{f}"] for f in ONLINE_FIELDS}  # (sized to what it holds: a fine-tune widens it)
            agent.learner.online_buffer = OnlineBuffer.from_chronological(held, held["obs"].shape[1], int(doc.get("online_added", 0)), dev)
    except CheckpointError:
        raise
    except (RuntimeError, KeyError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{path}: tensors do not match the agent it describes: {exc}") from None
    agent.num_timesteps = int(doc.get("num_timesteps", 0))
    agent.learner.follow_lr_schedule()  # the lr schedule is a function of the step count
    return agent


def init_from_checkpoint(agent, path: Union[str, Path]) -> Dict[str, Any]:
    """Copy a checkpoint's networks and observation statistics into ``agent``, nothing else: fine-tuning starts a new
    run from pretrained weights. One seed initialises every member, else the seed counts must match. Returns the doc."""
    doc, tensors = read_checkpoint(path)
    for key, space in (("observation_space", agent.observation_space), ("action_space", agent.action_space)):
        theirs = checks.space_of(doc, key, path)
        if theirs.shape != space.shape:
            raise CheckpointError(f"{path}: its {key.replace('_', ' ')} has shape {theirs.shape}, the agent being trained has {space.shape}")
    members = len(doc.get("seeds", [])) or 1
    if members not in (1, agent.members):
        raise CheckpointError(f"{path} holds {members} seeds; initialise from one of its per-seed checkpoints or train {members} seeds")

    def widen(t: torch.Tensor) -> torch.Tensor:  # member-major layout: repeat the one member's block
        return torch.cat([t] * agent.members) if members == 1 and agent.members > 1 and t.dim() > 0 else t

    try:
        _load_networks(agent, tensors, widen)
    except RuntimeError as exc:
        ours, theirs = agent.config.to_dict(), config_of(doc, path).to_dict()
        differ = {k: (theirs[k], ours[k]) for k in ours if theirs.get(k) != ours[k]}
        raise CheckpointError(f"{path}: its networks do not fit the agent being trained; settings that differ (checkpoint, now): "
                              f"{differ}. Details: {str(exc).splitlines()[0]}") from None
    return doc
