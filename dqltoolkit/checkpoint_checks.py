"""Checks that make a checkpoint safe to build from, run before anything is allocated or stepped.

Why: every value in a checkpoint comes from whoever wrote the file: a width taken on trust allocates gigabytes, a
zip member may inflate a thousandfold, a wrongly shaped optimiser moment makes the fused Adam kernel write out of
bounds. So reads are bounded, the document is checked against explicit limits, and the safetensors header against
the agent the config describes, built on the ``meta`` device, before the data is inflated; then the values.
"""

from __future__ import annotations

import json
import math
import struct
import zipfile
import zlib
from pathlib import Path
from typing import Any, Dict, List, Mapping, Tuple

import gymnasium as gym
import numpy as np
import torch

from .config import CORE_SPECS, AgentConfig, ConfigError
from .learner import Learner
from .online import ONLINE_FIELDS
from .registry import CRITICS, HEADS, OBJECTIVES, UnknownNameError

DOC_NAME = "dqltoolkit.json"
TENSORS_NAME = "tensors.safetensors"

MAX_DOC_BYTES = 4 << 20  # dqltoolkit.json: settings and two spaces; a real one is a few KB
MAX_HEADER_BYTES = 16 << 20  # the safetensors header (JSON: one line per tensor)
MAX_TENSOR_BYTES = 8 << 30  # tensors.safetensors, absolute cap
INFLATION_LIMIT = 64  # ... and at most this multiple of the zip's own size (weights barely compress)
MIN_TENSOR_CAP = 64 << 20  # ... but never less than this (a small zip of mostly-zero tensors is fine)
MAX_SEEDS = 1024  # members of one checkpoint
MAX_SPACE_DIM = 1 << 16  # observation / action dimensions
MAX_RNG_BYTES = 1 << 16  # one generator's state (CPU: 5056 bytes, CUDA: 16)
MAX_TIMESTEPS = 1 << 53
# Integer settings that size loops and schedules, (smallest, largest) accepted from a checkpoint. The sizes of
# what the agent allocates (widths, layers, T, batch, candidates, ...) are the settings' own declared maxima,
# checked when the config is parsed; widths are also checked against the tensors.
CONFIG_LIMITS: Dict[str, Tuple[int, int]] = {
    "policy_delay": (1, 1_000_000), "ema_every": (1, 1 << 40),
    "log_every": (1, 1 << 40), "steps": (0, 1 << 53), "eval_freq": (0, 1 << 53),
    "ema_start": (0, 1 << 53), "q_start": (0, 1 << 53), "eta_warmup": (0, 1 << 53),
}
_READ_CHUNK = 1 << 20
_METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflate"}
_ST_DTYPES: Dict[str, Tuple[torch.dtype, int]] = {
    "F64": (torch.float64, 8), "F32": (torch.float32, 4), "F16": (torch.float16, 2), "BF16": (torch.bfloat16, 2),
    "I64": (torch.int64, 8), "I32": (torch.int32, 4), "I16": (torch.int16, 2), "I8": (torch.int8, 1),
    "U8": (torch.uint8, 1), "BOOL": (torch.bool, 1),
}
_ST_NAME = {dt: name for name, (dt, _) in _ST_DTYPES.items()}
_MOMENTS = ("exp_avg", "exp_avg_sq")


class CheckpointError(ValueError):
    """A file that is not a readable dqltoolkit checkpoint; the message names the file and the problem."""


Header = Dict[str, Tuple[str, Tuple[int, ...]]]  # tensor name -> (safetensors dtype, shape)


def _mib(n: int) -> str:
    return f"{n} bytes ({n / (1 << 20):.0f} MiB)" if n >= 1 << 20 else f"{n} bytes"


# --- the zip -------------------------------------------------------------------------------------------

class BoundedReader:
    """Reads the one zip member called ``name`` (stored or deflated, unencrypted, declaring at most ``limit`` bytes) in
    chunks, never more than ``limit`` bytes in all, turning zip and zlib failures into a CheckpointError naming it."""

    def __init__(self, z: zipfile.ZipFile, name: str, path: Path, limit: int, limit_text: str) -> None:
        infos = [i for i in z.infolist() if i.filename == name]
        if len(infos) > 1:
            raise CheckpointError(f"{path}: the zip holds {len(infos)} members called {name}; a checkpoint has one")
        self.info = info = infos[0]
        if info.flag_bits & 0x1:
            raise CheckpointError(f"{path}: {name} is encrypted; checkpoints are not")
        if info.compress_type not in _METHODS:
            raise CheckpointError(f"{path}: {name} uses zip compression method {info.compress_type}; "
                                  f"only {' and '.join(_METHODS.values())} are supported")
        if info.file_size > limit:
            raise CheckpointError(f"{path}: {name} inflates to {_mib(info.file_size)}, "
                                  f"more than the limit of {_mib(limit)} ({limit_text})")
        self.path, self.name, self.limit, self.limit_text = path, name, limit, limit_text
        self.done = 0
        self._f = self._guard(lambda: z.open(info))

    def _guard(self, fn):
        try:
            return fn()
        except CheckpointError:
            raise
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError, RuntimeError, ValueError) as exc:
            raise CheckpointError(f"{self.path}: {self.name} is damaged ({type(exc).__name__}: {exc})") from None

    def read(self, n: int) -> bytes:
        """Exactly ``n`` bytes (fewer is damage), never past the limit."""
        if self.done + n > self.limit:
            raise CheckpointError(f"{self.path}: {self.name} holds more than the limit of {_mib(self.limit)} ({self.limit_text})")
        parts: List[bytes] = []
        left = n
        while left > 0:
            want = min(left, _READ_CHUNK)
            chunk = self._guard(lambda: self._f.read(want))  # noqa: B023 (called at once)
            if not chunk:
                raise CheckpointError(f"{self.path}: {self.name} ends after {self.done} bytes, expected more (truncated)")
            parts.append(chunk)
            left -= len(chunk)
            self.done += len(chunk)
        return b"".join(parts)

    def finish(self) -> None:
        """Read to the end (which checks the CRC); anything beyond what was consumed is an error."""
        extra = self._guard(lambda: self._f.read(1))
        if extra:
            raise CheckpointError(f"{self.path}: {self.name} has data after its last tensor")
        self._guard(self._f.close)

    def read_all(self) -> bytes:
        """Everything to the end, never past the limit."""
        data = bytearray()
        for chunk in iter(lambda: self._guard(lambda: self._f.read(_READ_CHUNK)), b""):
            data += chunk
            if len(data) > self.limit:
                raise CheckpointError(f"{self.path}: {self.name} holds more than the limit of {_mib(self.limit)} ({self.limit_text})")
        self._guard(self._f.close)
        return bytes(data)


def parse_json(raw: bytes, path: Path, what: str) -> Any:
    """JSON from a checkpoint: damage, odd encodings and pathological nesting become a CheckpointError."""
    try:
        return json.loads(raw.decode("utf-8"))
    except RecursionError:
        raise CheckpointError(f"{path}: {what} is nested too deeply to be a checkpoint's") from None
    except (UnicodeDecodeError, ValueError) as exc:  # (json.JSONDecodeError is a ValueError; so is a 5000-digit int)
        raise CheckpointError(f"{path}: {what} is not valid JSON ({exc})") from None


# --- the document --------------------------------------------------------------------------------------

def _int(value: Any, lo: int, hi: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and lo <= value <= hi


def space_of(doc: Mapping[str, Any], key: str, path: Path) -> gym.spaces.Box:
    """The Box space ``doc[key]`` describes, checked."""
    where = f"{path}: {DOC_NAME} field {key!r}"
    d = doc[key]
    if not isinstance(d, dict) or d.get("type") != "Box":
        raise CheckpointError(f"{where} must describe a Box space, got {str(d)[:80]!r}")
    shape = d.get("shape")
    if not isinstance(shape, list) or len(shape) != 1 or not _int(shape[0], 1, MAX_SPACE_DIM):
        raise CheckpointError(f"{where}: 'shape' must be [n] with 1 <= n <= {MAX_SPACE_DIM} (the limit), got {str(shape)[:80]}")
    if d.get("dtype") not in ("float16", "float32", "float64"):
        raise CheckpointError(f"{where}: 'dtype' must be float16, float32 or float64, got {str(d.get('dtype'))[:40]!r}")
    bounds = []
    for b in ("low", "high"):
        v = d.get(b)
        if not isinstance(v, list) or len(v) != shape[0] or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
            raise CheckpointError(f"{where}: {b!r} must be a list of {shape[0]} numbers")
        bounds.append(np.asarray(v, dtype=np.float64))
    if np.isnan(bounds[0]).any() or np.isnan(bounds[1]).any() or (bounds[0] > bounds[1]).any():
        raise CheckpointError(f"{where}: 'low' and 'high' must be numbers with low <= high")
    dtype = np.dtype(d["dtype"])
    return gym.spaces.Box(bounds[0].astype(dtype), bounds[1].astype(dtype), shape=(shape[0],), dtype=dtype)


def check_document(doc: Any, path: Path, format_name: str, format_version: int) -> None:
    """Every field ``load_agent`` uses: present, of the right type, within limits; the config coerced."""
    if not isinstance(doc, dict) or doc.get("format") != format_name:
        found = doc.get("format") if isinstance(doc, dict) else None
        raise CheckpointError(f"{path} is not a dqltoolkit checkpoint ({DOC_NAME} has format {str(found)[:40]!r}, expected {format_name!r})")
    version = doc.get("format_version", 0)
    if not _int(version, 0, 1 << 31):
        raise CheckpointError(f"{path}: {DOC_NAME} field 'format_version' must be a whole number, got {str(version)[:40]!r}")
    if version > format_version:
        raise CheckpointError(f"{path} was written by a newer dqltoolkit (format {version} > {format_version}); upgrade dqltoolkit")
    for key in ("config", "observation_space", "action_space", "seeds"):
        if key not in doc:
            raise CheckpointError(f"{path}: {DOC_NAME} lacks the field {key!r}")
    seeds = doc["seeds"]
    if not isinstance(seeds, list) or not seeds:
        raise CheckpointError(f"{path}: {DOC_NAME} field 'seeds' must be a non-empty list of seeds")
    if len(seeds) > MAX_SEEDS:
        raise CheckpointError(f"{path}: {DOC_NAME} field 'seeds' lists {len(seeds)} seeds, more than the limit of {MAX_SEEDS}")
    if not all(_int(s, -(1 << 62), 1 << 62) for s in seeds):
        raise CheckpointError(f"{path}: {DOC_NAME} field 'seeds' must hold whole numbers below 2**62 in size")
    if not _int(doc.get("num_timesteps", 0), 0, MAX_TIMESTEPS):
        raise CheckpointError(f"{path}: {DOC_NAME} field 'num_timesteps' must be a whole number from 0 to {MAX_TIMESTEPS} (the limit)")
    if not isinstance(doc.get("has_optimizer", False), bool):
        raise CheckpointError(f"{path}: {DOC_NAME} field 'has_optimizer' must be true or false")
    if doc.get("task") is not None and not isinstance(doc["task"], str):
        raise CheckpointError(f"{path}: {DOC_NAME} field 'task' must be a string")
    if not isinstance(doc.get("extra", {}), dict):
        raise CheckpointError(f"{path}: {DOC_NAME} field 'extra' must be a mapping")
    for key in ("observation_space", "action_space"):
        space_of(doc, key, path)
    check_config(doc["config"], path, legacy=is_legacy(doc))


def is_legacy(doc: Mapping[str, Any]) -> bool:
    """Format 1 wrote every key of every part flat (see config.AgentConfig.from_dict)."""
    return int(doc.get("format_version", 1)) < 2


def _check_parts(names: Mapping[str, Any], path: Path) -> None:
    """Each part the settings name (head, critic, objective; absent: the default) is one this installation has."""
    for role, registry, default in (("head", HEADS, "diffusion"), ("critic", CRITICS, "double-q"), ("objective", OBJECTIVES, "ql")):
        name = names.get(role, default)
        if not isinstance(name, str) or name not in registry:
            raise CheckpointError(f"{path}: {DOC_NAME} field 'config.{role}' names an unknown {role} {str(name)[:60]!r}; "
                                  f"known {role}s: {', '.join(registry.names())}")


def check_config(raw: Any, path: Path, legacy: bool = False):
    """The settings as an :class:`AgentConfig` within :data:`CONFIG_LIMITS` (``legacy``: format 1, unread keys dropped)."""
    where = f"{path}: {DOC_NAME} field 'config'"
    if not isinstance(raw, dict):
        raise CheckpointError(f"{where} must be a mapping of settings, got {type(raw).__name__}")
    _check_parts(raw, path)
    try:
        config = AgentConfig.from_dict(raw, source=f"{path} config", legacy=legacy)
    except ConfigError as exc:
        raise CheckpointError(str(exc)) from None
    except (UnknownNameError, TypeError, ValueError) as exc:  # an unknown name, a value the config's own checks refuse
        raise CheckpointError(f"{where}: {exc}") from None
    values = config.to_dict()
    for key, (lo, hi) in CONFIG_LIMITS.items():
        if key in values and not lo <= values[key] <= hi:
            raise CheckpointError(f"{where}: {key}={values[key]} is outside the limits [{lo}, {hi}] a checkpoint may set")
    for key, value in values.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise CheckpointError(f"{where}: {key}={value} is not a finite number")
    return config


# --- the tensors: header first, then data ------------------------------------------------------------------

def read_header(reader: BoundedReader, path: Path) -> Tuple[bytes, Header, int]:
    """The safetensors header (names, dtypes, shapes), validated; returns its raw bytes and the data length."""
    where = f"{path}: {TENSORS_NAME}"
    prefix = reader.read(8)
    (n,) = struct.unpack("<Q", prefix)
    if n > MAX_HEADER_BYTES or n > reader.limit:
        raise CheckpointError(f"{where} declares a header of {n} bytes, more than the limit of {_mib(MAX_HEADER_BYTES)}")
    raw = reader.read(n)
    parsed = parse_json(raw, path, f"{TENSORS_NAME}'s header")
    if not isinstance(parsed, dict):
        raise CheckpointError(f"{where}: the header is not a mapping of tensors")
    header: Header = {}
    spans = []
    for key, spec in parsed.items():
        if key == "__metadata__":
            continue
        if not isinstance(spec, dict) or spec.get("dtype") not in _ST_DTYPES:
            raise CheckpointError(f"{where}: tensor {key!r} has no known dtype (one of {sorted(_ST_DTYPES)})")
        shape, offsets = spec.get("shape"), spec.get("data_offsets")
        if not isinstance(shape, list) or len(shape) > 8 or not all(_int(s, 0, 1 << 40) for s in shape):
            raise CheckpointError(f"{where}: tensor {key!r} has a malformed shape {str(shape)[:80]}")
        if not isinstance(offsets, list) or len(offsets) != 2 or not all(_int(o, 0, 1 << 62) for o in offsets):
            raise CheckpointError(f"{where}: tensor {key!r} has malformed data offsets {str(offsets)[:80]}")
        if offsets[1] - offsets[0] != math.prod(shape) * _ST_DTYPES[spec["dtype"]][1]:
            raise CheckpointError(f"{where}: tensor {key!r}'s data offsets {offsets} do not fit its shape {shape}")
        header[key] = (spec["dtype"], tuple(shape))
        spans.append((offsets[0], offsets[1], key))
    spans.sort()
    end = 0
    for begin, stop, key in spans:
        if begin != end:
            raise CheckpointError(f"{where}: tensor {key!r} starts at byte {begin}, expected {end} (overlapping or gapped data)")
        end = stop
    if 8 + n + end > reader.limit:
        raise CheckpointError(f"{where}: its header declares {_mib(8 + n + end)}, more than the limit of {_mib(reader.limit)} ({reader.limit_text})")
    return prefix + raw, header, end


def _fail_key(path: Path, key: str, problem: str) -> CheckpointError:
    return CheckpointError(f"{path}: tensor {key!r} in {TENSORS_NAME} {problem}")


def expected_layout(doc: Mapping[str, Any], path: Path) -> Tuple[Dict[str, Tuple[str, Tuple[int, ...]]], Dict[str, List[Tuple[str, Tuple[int, ...]]]]]:
    """What the document's agent holds (network tensors by key, each optimiser's parameters), built on the ``meta`` device."""
    config = check_config(doc["config"], path, legacy=is_legacy(doc))
    _check_parts({role: getattr(config, role) for role in ("head", "critic", "objective")}, path)
    try:
        obs_space, act_space = space_of(doc, "observation_space", path), space_of(doc, "action_space", path)
        with torch.device("meta"):
            agent = Learner(config, int(obs_space.shape[0]), int(act_space.shape[0]), doc["seeds"], torch.device("meta"))
    except UnknownNameError as exc:
        raise CheckpointError(f"{path}: {DOC_NAME} field 'config': {exc}") from None
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"{path}: {DOC_NAME} field 'config' describes no buildable agent: {exc}") from None
    except Exception as exc:  # noqa: BLE001 (the checks must not be skipped: a checkpoint we cannot check is not loaded)
        raise CheckpointError(f"{path}: could not check its tensors against the agent its config describes "
                              f"({type(exc).__name__}: {exc})") from None
    spec = lambda t: (_ST_NAME.get(t.dtype, str(t.dtype)), tuple(t.shape))
    nets = {prefix + k: spec(v) for prefix, module in agent_modules(agent) for k, v in module.state_dict().items()}
    return nets, {name: [spec(p) for g in opt.param_groups for p in g["params"]] for name, opt in agent_optimizers(agent).items()}


def check_header(header: Header, doc: Mapping[str, Any], path: Path) -> None:
    """Names, dtypes and shapes against the agent the document describes; nothing is built for real yet."""
    seeds = len(doc["seeds"])
    obs_dim = doc["observation_space"]["shape"][0]
    for kind in ("train", "act"):
        found = sorted(k for k in header if k.startswith(f"rng.{kind}."))
        wanted = [f"rng.{kind}.{j}" for j in range(seeds)]
        if found != sorted(wanted):
            raise CheckpointError(f"{path}: {DOC_NAME} field 'seeds' lists {seeds} seeds, but {TENSORS_NAME} holds "
                                  f"{len(found)} rng.{kind}.* states ({', '.join(found[:4]) or 'none'}{'...' if len(found) > 4 else ''})")
        for key in wanted:
            dtype, shape = header[key]
            if dtype != "U8" or len(shape) != 1 or not 1 <= shape[0] <= MAX_RNG_BYTES:
                raise _fail_key(path, key, f"is {dtype} {list(shape)}; a generator state is a 1-D U8 tensor of at most {MAX_RNG_BYTES} bytes")
    for key in ("obs_mean", "obs_std"):
        if header.get(key) != ("F32", (obs_dim,)):
            raise _fail_key(path, key, f"is {header.get(key, 'missing')}; expected F32 of shape ({obs_dim},) (the observation space)")
    _check_online(header, doc, path, seeds, obs_dim)
    nets, optims = expected_layout(doc, path)
    for key, want in nets.items():
        if key not in header:
            raise _fail_key(path, key, "is missing; the agent its config describes has it")
        if header[key] != want:
            raise _fail_key(path, key, f"is {header[key][0]} of shape {list(header[key][1])}, but the agent {DOC_NAME} field 'config' "
                                       f"describes has {want[0]} of shape {list(want[1])}")
    has_opt = doc.get("has_optimizer", False)
    for key, (dtype, shape) in header.items():
        if key in nets or key.startswith(("rng.", "online.")) or key in ("obs_mean", "obs_std"):
            continue
        parts = key.split(".")
        if not (has_opt and len(parts) == 4 and parts[0] == "optim" and parts[1] in optims):
            raise _fail_key(path, key, "is not part of the agent its config describes" + ("" if has_opt else " (has_optimizer is false)"))
        params = optims[parts[1]]
        if not parts[2].isdigit() or int(parts[2]) >= len(params):
            raise _fail_key(path, key, f"names parameter {parts[2]} of the {parts[1]} optimiser, which has {len(params)}")
        want_dtype, want_shape = params[int(parts[2])]
        if parts[3] in _MOMENTS:
            if (dtype, shape) != (want_dtype, want_shape):
                raise _fail_key(path, key, f"is {dtype} of shape {list(shape)}, but its parameter is {want_dtype} of shape {list(want_shape)}")
        elif parts[3] == "step":
            if (dtype, shape) != ("F32", ()):
                raise _fail_key(path, key, f"is {dtype} of shape {list(shape)}; an Adam step count is an F32 scalar")
        else:
            raise _fail_key(path, key, "is not Adam state (exp_avg, exp_avg_sq or step)")
    if has_opt:
        for name, params in optims.items():
            for i in range(len(params)):
                have = [k for k in ("step", *_MOMENTS) if f"optim.{name}.{i}.{k}" in header]
                if have and len(have) != 3:
                    missing = sorted({"step", *_MOMENTS} - set(have))
                    raise _fail_key(path, f"optim.{name}.{i}.{missing[0]}", "is missing; the parameter's other Adam state is there")


MAX_ONLINE = int(CORE_SPECS["online_buffer_size"].max)  # transitions per seed: the largest buffer a run may have


def _check_online(header: Header, doc: Mapping[str, Any], path: Path, seeds: int, obs_dim: int) -> None:
    """A fine-tune's experience: all five tables or none, in a training checkpoint, shaped by the spaces, n <= MAX_ONLINE."""
    keys = sorted(k for k in header if k.startswith("online."))
    if not keys:
        return
    if keys != sorted(f"online.{f}" for f in ONLINE_FIELDS) or not doc.get("has_optimizer", False):
        raise CheckpointError(f"{path}: {TENSORS_NAME} holds {', '.join(keys[:6])}; online experience is the five tables "
                              f"{', '.join('online.' + f for f in ONLINE_FIELDS)}, in a training checkpoint (has_optimizer true)")
    action_dim = doc["action_space"]["shape"][0]
    n = header["online.obs"][1][1] if len(header["online.obs"][1]) == 3 else -1
    for f, tail in (("obs", (obs_dim,)), ("next_obs", (obs_dim,)), ("actions", (action_dim,)), ("rewards", ()), ("terminals", ())):
        key = f"online.{f}"
        dtype, shape = header[key]
        if dtype != "F32" or tuple(shape) != (seeds, n, *tail) or not 1 <= n <= MAX_ONLINE:
            raise _fail_key(path, key, f"is {dtype} of shape {list(shape)}; expected F32 [seeds={seeds}, n, {', '.join(map(str, tail)) or '-'}] "
                                       f"with one n for all five tables, 1 <= n <= {MAX_ONLINE:,}")
    added = doc.get("online_added", n)
    if not _int(added, n, MAX_TIMESTEPS):
        raise CheckpointError(f"{path}: {DOC_NAME} field 'online_added' is {str(added)[:40]}; expected an integer >= {n} (the transitions held)")


def check_values(tensors: Mapping[str, torch.Tensor], path: Path, allow_nonfinite: bool = False) -> None:
    """Finite weights, statistics and optimiser state; positive obs_std; non-negative second moments and steps."""
    for key, t in tensors.items():
        if not t.is_floating_point():
            continue
        if not allow_nonfinite and not bool(torch.isfinite(t).all()):
            bad = int((~torch.isfinite(t)).sum())
            raise _fail_key(path, key, f"holds {bad} non-finite value(s) (NaN or Inf); refusing to load it "
                                       "(load_agent(..., allow_nonfinite=True) loads it anyway)")
        if key.endswith((".exp_avg_sq", ".step")) and bool((t < 0).any()):
            raise _fail_key(path, key, "holds negative values; Adam's second moments and step counts are never negative")
    if bool((tensors["obs_std"] <= 0).any()):
        raise _fail_key(path, "obs_std", "holds values <= 0; observation scales must be positive")


def check_generator_state(state: torch.Tensor, generator: torch.Generator, key: str, path: Path) -> None:
    """A saved generator state fits the generator it is loaded into (its size depends on the device type)."""
    want = generator.get_state().numel()
    if state.numel() != want:
        raise _fail_key(path, key, f"holds {state.numel()} bytes; a {generator.device.type} generator's state has {want} "
                                   "(saved on another kind of device?)")


def agent_modules(agent):
    """(prefix, module) of every network an agent holds: the learner's one declared list, on save and load."""
    return tuple((prefix, m) for prefix, m in getattr(agent, "learner", agent).state_modules().items() if m is not None)


def agent_optimizers(agent) -> Dict[str, torch.optim.Optimizer]:
    """The optimisers whose state a checkpoint holds, by the name in its tensor keys: the learner's declared ones."""
    return getattr(agent, "learner", agent).optimisers()
