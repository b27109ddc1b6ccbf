"""Agent configuration: one typed dataclass, recipes (agents/*.yaml) and ``-p key=value`` overrides.

A recipe is a YAML file in the rl-baselines3-zoo convention: a ``default`` mapping plus one mapping per
task id whose keys override the defaults for that task. Every key must be a field of
:class:`AgentConfig`; values are coerced to the field's type (so ``1e6`` written in YAML, which PyYAML
reads as a string, still becomes a float).
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple

import yaml

from .registry import UnknownNameError, did_you_mean


class ConfigError(ValueError):
    """A recipe or override that cannot be applied; the message names the source and the key."""


@dataclass
class AgentConfig:
    """Everything an agent needs besides its data. Field comments give the paper's defaults."""

    # composition
    head: str = "diffusion"
    critic: str = "double-q"
    objective: str = "ql"
    # diffusion head
    T: int = 5  # reverse steps (paper: 5 for D4RL, 50 for the bandit)
    beta_schedule: str = "vp"  # vp | linear | cosine
    hidden: int = 256  # actor width
    n_layers: int = 3  # actor hidden layers
    time_dim: int = 16  # width of the time embedding
    activation: str = ""  # actor activation (mish, relu, silu, tanh); "" keeps the head's own default
    squash: str = "tanh"  # gaussian head: keep samples in bounds by tanh (with its Jacobian) or clip
    # critic
    critic_hidden: int = 256
    critic_layers: int = 3
    n_critics: int = 10  # ensemble-q: Q-networks per seed (double-q has its two)
    critic_reduce: str = "min"  # min | minmax (critic_lambda min + (1 - critic_lambda) max: BCQ) | lcb (ensemble-q: mean - critic_lcb_k std)
    critic_lambda: float = 0.75
    critic_lcb_k: float = 1.0
    gamma: float = 0.99
    tau: float = 0.005
    max_q_backup: bool = False
    n_backup_samples: int = 10
    backup_order: str = "max-first"  # max_q_backup: max over samples per network, then reduce (Diffusion-QL) | reduce-first (BCQ)
    target_noise: float = 0.0  # TD3's target policy smoothing: std of noise on next actions (0: off)
    target_noise_clip: float = 0.5
    # objective
    eta: float = 1.0
    q_grad: str = "exact"  # exact | approx (EDP's one-step estimate; heads without a chain use their samples)
    q_grad_steps: int = 0  # exact: back-propagate the Q term through the last k reverse steps only (0: all, as in the paper)
    q_start: int = 0  # behaviour-cloning-only steps before the Q term starts (0: from the start, as in the paper; BEAR: 40k)
    eta_warmup: int = 0  # steps over which eta then ramps up from 0 (0: constant eta, as in the paper)
    policy_delay: int = 1  # actor (and target) updates every this many critic updates (TD3: 2)
    perturbation: float = 0.05  # bcq: max perturbation phi, in units of max_action
    mmd_kernel: str = "laplacian"  # mmd: laplacian | gaussian
    mmd_sigma: float = 20.0
    mmd_samples: int = 10
    mmd_threshold: float = 0.05  # mmd with eta > 0: Lagrange constraint MMD <= threshold
    mmd_q: str = "normalised"  # mmd with eta > 0: Diffusion-QL's normalised -Q term | min (BEAR's -min_j Q_j)
    # optimisation
    lr: float = 3e-4  # actor learning rate (per dataset in the paper)
    critic_lr: float = 3e-4
    batch_size: int = 256
    grad_norm: float = 1.0  # max gradient norm per network; 0 disables clipping
    lr_decay: bool = False  # cosine decay of the actor lr over the run
    ema_decay: float = 0.995
    ema_start: int = 1000
    ema_every: int = 5
    reference_quirks: bool = False  # reproduce the reference code's EMA start (no sync at ema_start)
    cuda_graphs: bool = True  # GPU: capture each kind of training step once as a CUDA graph and replay it
    matmul_precision: str = "highest"  # highest (float32) | high | medium: TF32 on GPUs; medium: bf16 products on AMX CPUs
    # acting
    n_candidates: int = 50  # actions sampled per state; one is drawn by softmax(Q)
    sample_steps: int = 0  # diffusion: reverse steps when acting (0: all T; fewer: respaced, faster, approximate)
    target_sample_steps: int = 0  # diffusion: reverse steps for the critic's next actions (0: all T; EDP uses fewer)
    # data
    reward_tune: str = "no"
    normalize_obs: bool = False
    # run
    steps: int = 1_000_000
    log_every: int = 1000
    eval_freq: int = 0  # gradient steps between evaluations; 0: only at the end
    eval_episodes: int = 10

    def replace(self, **changes: Any) -> "AgentConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], source: str = "config") -> "AgentConfig":
        return cls(**coerce_mapping(d, source))


_FIELDS = {f.name: f for f in dataclasses.fields(AgentConfig)}
_TYPES = typing.get_type_hints(AgentConfig)


def _base_type(tp: Any) -> Any:
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    return args[0] if typing.get_origin(tp) in (typing.Union, getattr(__import__("types"), "UnionType", None)) and args else tp


def coerce_value(key: str, value: Any, source: str) -> Any:
    """Coerce ``value`` to the type of field ``key``; raise :class:`ConfigError` naming ``source``."""
    if key not in _FIELDS:
        raise ConfigError(f"{source}: unknown key {key!r}.{did_you_mean(key, list(_FIELDS))} See `dqltoolkit list keys`.")
    tp = _base_type(_TYPES[key])
    try:
        if tp is bool:
            if isinstance(value, bool):
                return value
            s = str(value).strip().lower()
            if s in ("1", "true", "yes", "on"):
                return True
            if s in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if tp is int:
            if isinstance(value, bool):
                raise ValueError
            f = float(value)
            if not f.is_integer():
                raise ValueError
            return int(f)
        if tp is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if tp is str:
            return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{source}: {key}={value!r} is not a valid {tp.__name__}") from None
    return value


def coerce_mapping(d: Mapping[str, Any], source: str) -> Dict[str, Any]:
    if not isinstance(d, Mapping):
        raise ConfigError(f"{source}: expected a mapping of key: value, got {type(d).__name__}")
    return {k: coerce_value(str(k), v, f"{source}") for k, v in d.items()}


def parse_overrides(pairs: typing.Iterable[str], source: str = "-p") -> Dict[str, Any]:
    """Parse ``["eta=2.5", "T=10"]`` into typed values."""
    out: Dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"{source} {pair!r}: expected key=value")
        k, v = pair.split("=", 1)
        k = k.strip()
        out[k] = coerce_value(k, v.strip(), f"{source} {pair!r}")
    return out


# --- recipes -------------------------------------------------------------------------------------

def catalogue_dir(kind: str) -> Path:
    """Folder of a shipped catalogue (``agents``, ``envs``, ``zoo``): inside the wheel or the source tree."""
    from importlib import resources

    packaged = Path(str(resources.files("dqltoolkit"))) / "_catalogue" / kind
    if packaged.is_dir():
        return packaged
    source_tree = Path(__file__).resolve().parent.parent / kind
    if source_tree.is_dir():
        return source_tree
    raise FileNotFoundError(f"dqltoolkit catalogue {kind!r} not found (looked in {packaged} and {source_tree})")


def recipe_names() -> list[str]:
    return sorted(p.stem for p in catalogue_dir("agents").glob("*.yaml"))


def recipe_path(agent: str) -> Path:
    """A recipe name from ``agents/`` or a path to a YAML file."""
    p = Path(agent)
    if p.suffix in (".yaml", ".yml") or p.exists():
        if not p.is_file():
            raise ConfigError(f"recipe file {agent} does not exist")
        return p
    cand = catalogue_dir("agents") / f"{agent}.yaml"
    if not cand.is_file():
        names = recipe_names()
        raise UnknownNameError(f"unknown agent {agent!r}.{did_you_mean(agent, names)} Known agents: {', '.join(names)}")
    return cand


def load_recipe(agent: str, task: Optional[str] = None) -> Tuple[AgentConfig, Path]:
    """Resolve a recipe for a task: defaults, then the task's overrides. Returns (config, recipe file)."""
    path = recipe_path(agent)
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(doc, dict) or "default" not in doc:
        raise ConfigError(f"{path}: a recipe needs a top-level 'default' mapping (and optional per-task mappings)")
    values = coerce_mapping(doc["default"] or {}, f"{path} [default]")
    for key, sub in doc.items():  # validate every section, not only the one in use
        if key != "default":
            coerce_mapping(sub or {}, f"{path} [{key}]")
    if task is not None and task in doc:
        values.update(coerce_mapping(doc[task] or {}, f"{path} [{task}]"))
    return AgentConfig(**values), path


def config_keys() -> Dict[str, Tuple[str, Any]]:
    """key -> (type name, default), for `dqltoolkit list keys`."""
    return {k: (_base_type(_TYPES[k]).__name__, f.default) for k, f in _FIELDS.items()}
