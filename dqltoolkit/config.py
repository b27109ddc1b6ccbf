"""Agent configuration: a composition (head, critic, objective), the core keys, the chosen parts' settings,
runtime options, and YAML recipes (rl-baselines3-zoo style: ``default`` plus one mapping per task; ``base:``
extends another recipe). A key is flat (``T=10``: every chosen part declaring it) or typed (``head.T=10``);
a key nothing chosen reads is an error naming the part that would read it."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional, Tuple

import yaml

from . import critics as _critics  # noqa: F401  (registers the built-in parts, whose settings configs read)
from . import heads as _heads  # noqa: F401
from . import objectives as _objectives  # noqa: F401
from .heads.samplers import SamplingSettings
from .registry import CRITICS, HEADS, OBJECTIVES, Registry, UnknownNameError, did_you_mean
from .settings import ConfigError, SettingError, SettingSpec, coerce, part_settings, setting, specs_of


@dataclass
class CoreSettings:
    """Keys every agent reads, whatever its parts."""

    lr: float = setting(3e-4, "actor learning rate (per dataset in the paper)", min=0)
    critic_lr: float = setting(3e-4, "critic learning rate", min=0)
    batch_size: int = setting(256, "transitions per gradient step", min=1, max=1 << 24)
    grad_norm: float = setting(1.0, "max gradient norm per network and seed; 0 disables clipping", min=0)
    lr_decay: bool = setting(False, "cosine decay of both learning rates to 0 over `steps`")
    policy_delay: int = setting(1, "actor (and target) updates every this many critic updates (TD3: 2)", min=1)
    ema_decay: float = setting(0.995, "decay of the EMA policy that supplies the critic's next actions", min=0)
    ema_start: int = setting(1000, "steps before the EMA starts averaging (it copies the actor before)", min=0)
    ema_every: int = setting(5, "actor updates between EMA updates", min=1)
    reference_quirks: bool = setting(False, "reproduce the reference code's EMA start (no copy before ema_start)")
    n_candidates: int = setting(50, "actions sampled per state when acting; one is chosen by the critic", min=1, max=10_000)
    reward_tune: str = setting("no", "reward transform of the dataset (no, normalize, iql_antmaze, cql_antmaze, ...)")
    normalize_obs: bool = setting(False, "standardise observations with the dataset's mean and std")
    steps: int = setting(1_000_000, "gradient steps of a run", min=0)
    log_every: int = setting(1000, "gradient steps between logged metrics (one host sync each)", min=1)
    eval_freq: int = setting(0, "gradient steps between evaluations; 0: only at the end", min=0)
    eval_episodes: int = setting(10, "episodes per evaluation", min=1, max=10_000)
    eval_acting: str = setting("deterministic", "how evaluations act: deterministic (SB3's convention) or stochastic (the paper's: "
                               "one candidate drawn with probability softmax(Q))", choices=("deterministic", "stochastic"))


@dataclass
class OnlineSettings:
    """Online fine-tuning (dqltoolkit/online.py reads them): every agent takes them; off unless ``online``."""

    online: bool = setting(False, "learn() collects from the agent's env, one env step per seed before each gradient step "
                           "(fine-tuning; see dqltoolkit/online.py)")
    online_offline_ratio: float = setting(0.5, "online: share of each batch drawn from the offline data (RLPD: 0.5; 0 drops it)",
                                          min=0, max=1)
    online_buffer_size: int = setting(1_000_000, "online: transitions kept per seed (the oldest are overwritten)", min=1, max=10_000_000)
    explore_noise: float = setting(0.0, "online: Gaussian noise added to acted actions, in half action ranges (deterministic heads)",
                                   min=0)


@dataclass
class RuntimeOptions:
    """How a step runs, not what it computes: results agree across these (to float tolerance)."""

    cuda_graphs: bool = setting(True, "GPU: capture each kind of training step once as a CUDA graph and replay it")
    matmul_precision: str = setting("highest", "highest (float32) | high | medium: TF32 on GPUs; medium: bf16 products on CPUs "
                                    "whose probe shows bf16 units", choices=("highest", "high", "medium"))


ROLES: Tuple[str, ...] = ("head", "critic", "objective")
_REGISTRIES: Dict[str, Registry] = {"head": HEADS, "critic": CRITICS, "objective": OBJECTIVES}
_DEFAULT_PARTS = {"head": "diffusion", "critic": "double-q", "objective": "ql"}
#: the keys every agent reads, by who declares them: the core, the samplers' (heads/samplers.py), online fine-tuning's
CORE_SPECS = {**specs_of(CoreSettings, "core"), **specs_of(SamplingSettings, "sampling"), **specs_of(OnlineSettings, "online")}
RUNTIME_SPECS = specs_of(RuntimeOptions, "runtime")


def part_specs(role: str, name: str) -> Dict[str, SettingSpec]:
    """The keys part ``name`` of ``role`` declares (its class's ``Settings``)."""
    return part_settings(_REGISTRIES[role].get(name), f"{role} {name!r}")


def _registered_specs() -> Iterator[Tuple[str, str, Dict[str, SettingSpec]]]:
    """``(role, name, keys)`` of every registered part; a broken plugin is skipped, so that it cannot hide the real error."""
    for role in ROLES:
        for name in _REGISTRIES[role].names():
            try:
                specs = part_specs(role, name)
            except Exception:  # noqa: BLE001
                continue
            yield role, name, specs


def _unknown_key(where: str, key: str, bare: str) -> str:
    known = sorted(set(ROLES).union(CORE_SPECS, RUNTIME_SPECS, *(specs for *_, specs in _registered_specs())))
    return f"{where}: unknown key {key!r}.{did_you_mean(bare, known)} See `dqltoolkit list keys`."


def _part_name(role: str) -> property:
    return property(lambda self: self._names[role], doc=f"The registered name of the {role}.")


class AgentConfig:
    """A composition and every value it reads, flat (``cfg.T``, ``cfg.lr``): ``AgentConfig(head="gaussian", eta=2.5)``;
    unknown or unused keys raise :class:`ConfigError`."""

    def __init__(self, head: str = _DEFAULT_PARTS["head"], critic: str = _DEFAULT_PARTS["critic"],
                 objective: str = _DEFAULT_PARTS["objective"], *, _source: str = "config", **values: Any) -> None:
        names = {"head": head, "critic": critic, "objective": objective}
        specs: Dict[str, Dict[str, SettingSpec]] = {}
        for role, name in names.items():
            if not isinstance(name, str):
                raise ConfigError(f"{_source}: {role}={name!r} must be a registered {role} name")
            try:
                specs[role] = part_specs(role, name)
            except UnknownNameError as exc:
                raise UnknownNameError(f"cannot build head {head!r} with critic {critic!r} and objective {objective!r}: {exc}") from None
        # (vars(): __setattr__ refuses every assignment)
        vars(self).update(_names=names, _specs=specs, _core={k: s.default for k, s in CORE_SPECS.items()},
                          _runtime={k: s.default for k, s in RUNTIME_SPECS.items()},
                          _parts={role: {k: s.default for k, s in specs[role].items()} for role in ROLES})
        for key, value in values.items():
            self._set(key, value, _source)
        # the learner reads keys every step: one lookup each (where two tables share a key, the first wins)
        tables = (*(self._parts[r] for r in reversed(ROLES)), self._runtime, self._core)
        flat = vars(self)["_flat"] = {k: v for table in tables for k, v in table.items()}
        # keys as plain instance attributes: reading cfg.lr in a step is a dict lookup, not a __getattr__ call
        # (a key that a method of the class also names keeps the method; __getattr__ below serves it)
        vars(self).update({k: v for k, v in flat.items() if not hasattr(type(self), k)})

    # --- routing ---------------------------------------------------------------------------------
    def _set(self, key: str, value: Any, source: str) -> None:
        try:
            if "." in key:  # typed by its owner: head.T, critic.gamma, objective.eta
                role, sub = key.split(".", 1)
                if role not in ROLES:
                    raise ConfigError(f"{source}: unknown key {key!r}: a typed key starts with one of {', '.join(ROLES)}")
                if sub not in self._specs[role]:
                    raise ConfigError(self._unused_message(source, sub, only_role=role))
                self._parts[role][sub] = coerce(self._specs[role][sub], value, source)
                return
            tables = [(self._core, CORE_SPECS), (self._runtime, RUNTIME_SPECS), *((self._parts[r], self._specs[r]) for r in ROLES)]
            readers = [(values, specs) for values, specs in tables if key in specs]
            if not readers:
                raise ConfigError(self._unused_message(source, key))
            for values, specs in readers:
                values[key] = coerce(specs[key], value, source)
        except SettingError as exc:
            raise ConfigError(str(exc)) from None

    def _unused_message(self, where: str, key: str, only_role: Optional[str] = None) -> str:
        owners = [f"{role} {name!r}" for role, name, specs in _registered_specs() if key in specs]
        parts = ", ".join(f"{r} {self._names[r]!r}" for r in ROLES if only_role in (None, r))
        if owners:
            return (f"{where}: key {key!r} is not read by this agent's parts ({parts}); it belongs to {', '.join(owners)}. "
                    f"See `dqltoolkit list keys`.")
        return _unknown_key(where, key, key)

    # --- access ----------------------------------------------------------------------------------
    head, critic, objective = (_part_name(role) for role in ROLES)  # the chosen parts' registered names

    def __getattr__(self, key: str) -> Any:
        if key.startswith("_"):
            raise AttributeError(key)
        if key not in self._flat:
            raise AttributeError(f"AgentConfig has no key {key!r} (its parts: {self._names})")
        return self._flat[key]

    def __setattr__(self, key: str, value: Any) -> None:
        raise AttributeError("AgentConfig is immutable: use config.replace(key=value)")

    def part_settings(self, role: str) -> Dict[str, Any]:
        """The values of ``role``'s declared settings: the keyword arguments its constructor receives."""
        return dict(self._parts[role])

    # --- copies and serialisation ------------------------------------------------------------------
    def replace(self, **changes: Any) -> "AgentConfig":
        """A copy with ``changes`` (flat or typed keys); a changed part keeps the values the new part also declares
        (the old part's other keys are listed in :attr:`dropped`)."""
        names = {role: changes.pop(role, self._names[role]) for role in ROLES}
        values: Dict[str, Any] = {**self._core, **self._runtime}
        dropped: List[str] = []
        for role in ROLES:
            if names[role] == self._names[role]:
                values.update({f"{role}.{k}": v for k, v in self._parts[role].items()})
                continue
            new = part_specs(role, names[role]) if names[role] in _REGISTRIES[role] else {}
            for k, v in self._parts[role].items():
                explicit = v != self._specs[role][k].default  # a value the old part only had by default is not carried
                if k in new and explicit:
                    values[f"{role}.{k}"] = v
                elif k not in new and explicit:
                    dropped.append(f"{role}.{k}")
        values.update(changes)
        cfg = AgentConfig(**names, _source="override", **values)
        object.__setattr__(cfg, "dropped", dropped)
        return cfg

    def fit(self, **values: Any) -> "AgentConfig":
        """A copy with each of ``values`` set where the core or a chosen part reads it, the others listed in :attr:`dropped`."""
        probe = self.replace(**{k: values[k] for k in ROLES if k in values})
        reads = set(probe._flat) | {f"{r}.{k}" for r in ROLES for k in probe._specs[r]}
        kept = {k: v for k, v in values.items() if k not in ROLES and k in reads}
        cfg = probe.replace(**kept)
        object.__setattr__(cfg, "dropped", sorted(k for k in values if k not in ROLES and k not in reads))
        return cfg

    def to_dict(self) -> Dict[str, Any]:
        """Flat ``{key: value}``, a part's key typed ``role.key`` where it would clash; round-trips through :meth:`from_dict`."""
        out: Dict[str, Any] = {**self._names, **self._core, **self._runtime}
        seen: Dict[str, Any] = {}
        for role in ROLES:
            for k, v in self._parts[role].items():
                if (k in out and k not in seen) or (k in seen and seen[k] != v):  # shadowing a core key, or another part's value
                    out[f"{role}.{k}"] = v
                else:
                    seen.setdefault(k, v)
                    out.setdefault(k, v)
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], source: str = "config", legacy: bool = False) -> "AgentConfig":
        """From :meth:`to_dict`'s form; ``legacy`` (every key of every part, flat): keys the parts do not read are dropped."""
        if not isinstance(d, Mapping):
            raise ConfigError(f"{source}: expected a mapping of key: value, got {type(d).__name__}")
        d = {str(k): v for k, v in d.items()}
        names = {r: d.pop(r, _DEFAULT_PARTS[r]) for r in ROLES}
        if legacy:
            probe = AgentConfig(**names, _source=source)
            reads = set(CORE_SPECS) | set(RUNTIME_SPECS) | {k for r in ROLES for k in probe._specs[r]}
            d = {k: v for k, v in d.items() if k.split(".", 1)[-1] in reads and not (k == "activation" and v == "")}
        return cls(**names, _source=source, **d)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AgentConfig) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"AgentConfig({', '.join(f'{k}={v!r}' for k, v in self.to_dict().items())})"


# --- -p overrides ---------------------------------------------------------------------------------

def _typed_anywhere(key: str, value: Any, where: str) -> Any:
    """``value`` typed as every declarer of ``key`` types it (as given where they disagree); an unknown key is refused."""
    if key in ROLES:
        return value
    bare = key.split(".", 1)[-1]
    found = [t[bare] for t in (CORE_SPECS, RUNTIME_SPECS, *(specs for *_, specs in _registered_specs())) if bare in t]
    if not found and bare not in ROLES:
        raise ConfigError(_unknown_key(where, key, bare))
    try:
        return coerce(found[0], value, where) if len({s.type for s in found}) == 1 else value
    except SettingError as exc:
        raise ConfigError(str(exc)) from None


def parse_overrides(pairs: Iterable[str], source: str = "-p") -> Dict[str, Any]:
    """``["eta=2.5", "head.T=10"]`` -> typed values; a key no registered part declares is refused."""
    out: Dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"{source} {pair!r}: expected key=value")
        k, v = (s.strip() for s in pair.split("=", 1))
        out[k] = _typed_anywhere(k, v, f"{source} {pair!r}")
    return out


def coerce_mapping(d: Mapping[str, Any], source: str) -> Dict[str, Any]:
    """Check a mapping's keys exist somewhere and type them where the type is unambiguous."""
    if not isinstance(d, Mapping):
        raise ConfigError(f"{source}: expected a mapping of key: value, got {type(d).__name__}")
    return {str(k): _typed_anywhere(str(k), v, source) for k, v in d.items()}


# --- recipes -------------------------------------------------------------------------------------

def catalogue_dir(kind: str) -> Path:
    """Folder of a shipped catalogue (``agents``, ``envs``, ``zoo``): inside the wheel or the source tree."""
    packaged = Path(str(resources.files("dqltoolkit"))) / "_catalogue" / kind
    source_tree = Path(__file__).resolve().parent.parent / kind
    for folder in (packaged, source_tree):
        if folder.is_dir():
            return folder
    raise FileNotFoundError(f"dqltoolkit catalogue {kind!r} not found (looked in {packaged} and {source_tree})")


def recipe_names() -> list[str]:
    return sorted(p.stem for p in catalogue_dir("agents").glob("*.yaml"))


def recipe_path(agent: str) -> Path:
    """A recipe name from ``agents/`` or a path to a YAML file."""
    p = Path(agent)
    if p.suffix in (".yaml", ".yml") or p.exists():
        if p.is_dir():
            raise ConfigError(f"recipe {agent} is a directory, not a YAML file")
        if not p.is_file():
            raise ConfigError(f"recipe file {agent} does not exist")
        return p
    cand = catalogue_dir("agents") / f"{agent}.yaml"
    if not cand.is_file():
        names = recipe_names()
        raise UnknownNameError(f"unknown agent {agent!r}.{did_you_mean(agent, names)} Known agents: {', '.join(names)}")
    return cand


MAX_RECIPE_BYTES = 1 << 20
MAX_BASE_DEPTH = 8
#: top-level recipe blocks that hold no settings, for the jobs that read them (``ablation``: dqltoolkit/ablation.py)
NON_SETTING_BLOCKS = ("ablation",)


def read_recipe_yaml(path: Path) -> Any:
    """A recipe file's YAML document (``{}`` when empty), size-capped and safe-loaded: recipes come from strangers."""
    size = path.stat().st_size
    if size > MAX_RECIPE_BYTES:
        raise ConfigError(f"{path}: {size} bytes is over the recipe limit of {MAX_RECIPE_BYTES}")
    try:
        return yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None


def _recipe_layers(agent: str, task: Optional[str], depth: int = 0) -> List[Tuple[str, Dict[str, Any]]]:
    """``[(label, mapping), ...]`` in the order they apply: a base recipe's sections, then this recipe's."""
    if depth > MAX_BASE_DEPTH:
        raise ConfigError(f"recipe {agent}: 'base' chain is deeper than {MAX_BASE_DEPTH} (a cycle?)")
    path = recipe_path(agent)
    doc = read_recipe_yaml(path)
    if not isinstance(doc, dict) or ("default" not in doc and "base" not in doc):
        raise ConfigError(f"{path}: a recipe needs a top-level 'default' mapping (and optional per-task mappings), "
                          f"or 'base: <recipe>' to extend a shipped one")
    for key, sub in doc.items():
        if key != "base" and sub is not None and not isinstance(sub, dict):
            raise ConfigError(f"{path} [{key}]: expected a mapping of key: value, got {type(sub).__name__}")
    layers: List[Tuple[str, Dict[str, Any]]] = []
    base = doc.get("base")
    if base is not None:
        if not isinstance(base, str):
            raise ConfigError(f"{path}: 'base' must name a recipe (e.g. base: diffusion-ql), got {base!r}")
        if not Path(base).is_absolute() and (path.parent / base).is_file():
            base = str(path.parent / base)
        layers += _recipe_layers(base, task, depth + 1)
    layers.append((f"{path} [default]", dict(doc.get("default") or {})))
    if task is not None and task in doc and task not in NON_SETTING_BLOCKS:
        layers.append((f"{path} [{task}]", dict(doc[task] or {})))
    for key, sub in doc.items():  # every section is checked, not only the one in use
        if key not in ("base", "default", *NON_SETTING_BLOCKS):
            coerce_mapping(sub or {}, f"{path} [{key}]")
    return layers


@dataclass
class Recipe:
    """A resolved recipe: the configuration, the file it came from and the sections that applied."""

    config: AgentConfig
    path: Path
    sections: List[str]


def resolve_recipe(agent: str, task: Optional[str] = None) -> Recipe:
    """Defaults, then the task's section (a base recipe's first), each checked against the parts."""
    layers = _recipe_layers(agent, task)
    merged: Dict[str, Any] = dict(_DEFAULT_PARTS)
    for _, values in layers:
        merged.update(values)
    names = {role: merged.pop(role) for role in ROLES}
    # build once per layer so that an error names the file and section that brought the key
    for label, values in layers:
        AgentConfig(**names, _source=label, **{k: v for k, v in values.items() if k not in ROLES})
    path = recipe_path(agent)
    return Recipe(AgentConfig(**names, _source=str(path), **merged), path, [label for label, _ in layers])


def load_recipe(agent: str, task: Optional[str] = None) -> Tuple[AgentConfig, Path]:
    """Resolve a recipe for a task: defaults, then the task's overrides. Returns (config, recipe file)."""
    r = resolve_recipe(agent, task)
    return r.config, r.path


def describe_keys() -> List[SettingSpec]:
    """Every key of the core, the runtime options and every registered part, with who reads it."""
    return [*CORE_SPECS.values(), *RUNTIME_SPECS.values(), *(s for *_, specs in _registered_specs() for s in specs.values())]
