"""Sweep files, what ``dqltoolkit sweep`` reads, checked strictly before anything starts: a sweep runs for hours
unwatched, so a misspelt field must fail in the first second, naming the file and the field. Nothing here imports Ray."""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from itertools import product
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

import yaml

from .checkpoint import read_checkpoint
from .config import ConfigError, catalogue_dir, coerce_mapping, resolve_recipe
from .limits import MAX_TRIALS
from .registry import UnknownNameError
from .tasks import get_task
from .training import parse_seeds

MAX_SWEEP_BYTES = 1_000_000
SEARCHES = ("grid", "random", "optuna")
METRICS = ("normalized_score", "mean_return")
DISTRIBUTIONS = ("uniform", "loguniform", "randint", "choice")
FIELDS = tuple("name agents tasks seeds steps eval_freq eval_episodes params grid space search num_samples search_seed metric "
               "scheduler resources_per_trial max_concurrent_trials max_failures max_trials save_every".split())
REQUIRED = {"agents": "recipe names or recipe files (a list, or one name)", "tasks": "task ids (a list, or one id)"}
INT_FIELDS = {"steps": (None, 1), "eval_freq": (None, 1), "eval_episodes": (None, 1), "max_concurrent_trials": (None, 1),
              "save_every": (None, 1), "max_trials": (None, 1), "num_samples": (1, 1), "search_seed": (0, 0),
              "max_failures": (0, 0)}  # (default, minimum); a None default leaves the field unset
ENTRY = "evaluation_json"  # what a trial reports besides its metric: the evaluation, as JSON that Tune's flattening leaves whole


class SweepError(ValueError):
    """A sweep file that cannot run; the message names the file and the field."""


@dataclass
class Trial:
    """One agent on one task with one set of grid (and sampled) values; it trains every seed of the sweep."""

    agent: str
    task: str
    params: Dict[str, Any]
    name: str = ""

    @classmethod
    def named(cls, agent: str, task: str, params: Dict[str, Any], hashed: bool) -> Trial:
        """A trial named by its values, the same on every run (``--resume`` finds it); ``hashed`` adds a hash of them."""
        t = cls(agent, task, params)
        stem = Path(agent).stem if agent.endswith((".yaml", ".yml")) else agent
        parts = [stem, task] + [f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items()]
        name = re.sub(r"[^A-Za-z0-9._=+,-]+", "-", "_".join(parts)).strip("-.")
        t.name = _hashed(name, canonical_json(t.point())) if hashed or len(name) > 120 else name
        return t

    def point(self) -> Dict[str, Any]:
        return {"agent": self.agent, "task": self.task, "params": dict(self.params)}


@dataclass
class SweepSpec:
    path: Path
    name: str
    agents: List[str]
    tasks: List[str]
    seeds: List[int]
    steps: Optional[int]
    eval_freq: Optional[int]
    eval_episodes: Optional[int]
    params: Dict[str, Any]
    grid: Dict[str, List[Any]]
    space: Dict[str, Dict[str, Any]]
    search: str
    num_samples: int
    search_seed: int
    metric: str
    scheduler: Optional[Dict[str, Any]]
    cpu: float
    gpu: float
    max_concurrent_trials: Optional[int]
    max_failures: int
    save_every: Optional[int] = None
    raw: Dict[str, Any] = field(default_factory=dict)
    budgets: Dict[str, int] = field(default_factory=dict)  # "agent|task" -> the steps a trial of it trains
    eval_freqs: Dict[str, int] = field(default_factory=dict)  # "agent|task" -> the eval_freq in force (the sweep's or the recipe's)

    def budget(self, agent: str, task: str) -> int:
        return self.budgets[f"{agent}|{task}"]

    def grace_period(self) -> Optional[int]:
        """ASHA's grace period in steps (None without ASHA): the file's, else the smallest eval_freq in force."""
        return None if self.scheduler is None else self.scheduler["grace_period"] or min(self.eval_freqs.values())

    def checkpoint_every(self) -> int:
        """Steps between a trial's periodic saves: the file's ``save_every``, else the smallest eval_freq in force."""
        return self.save_every or min(self.eval_freqs.values())

    def grid_trials(self) -> List[Trial]:
        """Every agent x task x grid combination, in file order (for ``random``, the points samples are added to)."""
        keys = list(self.grid)
        trials = [Trial.named(agent, task, dict(zip(keys, values)), hashed=False)
                  for agent, task, *values in product(self.agents, self.tasks, *self.grid.values())]
        return distinct_names(self.path, trials, "grid", "list each value of a grid key once")


def _where(path: Path, name: str) -> str:
    return f"{path}: field {name!r}"


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _number(path: Path, name: str, v: Any, minimum: Optional[int] = None, integer: bool = True) -> Any:
    """An integer of at least ``minimum``, or (not ``integer``) a finite number as a float."""
    if isinstance(v, bool) or not isinstance(v, int if integer else (int, float)) or not (integer or math.isfinite(v)):
        what = "an integer" if integer else "a finite number"
        raise SweepError(f"{_where(path, name)}: expected {what}, got {type(v).__name__} {v!r}")
    if minimum is not None and v < minimum:
        raise SweepError(f"{_where(path, name)}: must be at least {minimum}, got {v}")
    return v if integer else float(v)


def _names(path: Path, name: str, v: Any) -> List[str]:
    items = [v] if isinstance(v, str) else v
    if not isinstance(items, list) or not items or not all(isinstance(x, str) and x for x in items):
        raise SweepError(f"{_where(path, name)}: expected a name or a non-empty list of names, got {v!r}")
    if len(set(items)) != len(items):
        raise SweepError(f"{_where(path, name)}: names repeat: {items}")
    return list(items)


def _seeds(path: Path, v: Any) -> List[int]:
    if isinstance(v, bool) or not isinstance(v, (int, str, list)) or (isinstance(v, list) and not all(_is_int(s) for s in v)):
        raise SweepError(f"{_where(path, 'seeds')}: expected '0-4', '1,3,5', an integer or a list of integers, got {v!r}")
    try:
        return parse_seeds(v)
    except ValueError as exc:
        raise SweepError(f"{_where(path, 'seeds')}: {exc}") from None


def _mapping(path: Path, name: str, v: Any) -> Dict[str, Any]:
    if v is None:
        return {}
    if not isinstance(v, Mapping):
        raise SweepError(f"{_where(path, name)}: expected a mapping, got {type(v).__name__} {v!r}")
    return {str(k): x for k, x in v.items()}


def typed_value(path: Path, name: str, key: str, value: Any) -> Any:
    """A value typed as ``train -p key=value`` types it (unknown keys refused)."""
    try:
        return coerce_mapping({key: value}, f"{path}: {name}.{key}")[key]
    except ConfigError as exc:
        raise SweepError(str(exc)) from None


def _values(path: Path, name: str, key: str, values: Any, verb: str = "expected") -> List[Any]:
    """A non-empty list of values of ``key`` (a grid key's, a choice's), each typed."""
    if not isinstance(values, list) or not values:
        raise SweepError(f"{_where(path, name)}: {key}: {verb} a non-empty list of values, got {values!r}")
    return [typed_value(path, name, key, v) for v in values]


def _space(path: Path, raw: Any) -> Dict[str, Dict[str, Any]]:
    out = {}
    for key, dist in _mapping(path, "space", raw).items():
        where = f"{path}: field 'space': {key}"
        if not isinstance(dist, Mapping) or len(dist) != 1 or next(iter(dist)) not in DISTRIBUTIONS:
            raise SweepError(f"{where}: expected one of {{{', '.join(f'{d}: ...' for d in DISTRIBUTIONS)}}}, got {dist!r}")
        kind, args = next(iter(dist.items()))
        if kind == "choice":
            out[key] = {"choice": _values(path, "space", key, args, "choice needs")}
            continue
        if not isinstance(args, list) or len(args) != 2:
            raise SweepError(f"{where}: {kind} needs [low, high], got {args!r}")
        lo, hi = (_number(path, f"space.{key}.{kind}", a, integer=False) for a in args)
        if not lo < hi:
            raise SweepError(f"{where}: {kind} needs low < high, got [{args[0]}, {args[1]}]")
        if kind == "loguniform" and lo <= 0:
            raise SweepError(f"{where}: loguniform needs 0 < low, got {args[0]}")
        if kind == "randint":
            lo, hi = (_number(path, f"space.{key}.randint", a, -2**31) for a in args)
        typed_value(path, "space", key, lo)
        typed_value(path, "space", key, hi)
        out[key] = {kind: [lo, hi]}
    return out


def _only(where: str, raw: Mapping[str, Any], allowed: Tuple[str, ...]) -> None:
    unknown = sorted(set(raw) - set(allowed))
    if unknown:
        raise SweepError(f"{where}: unknown field(s) {unknown}; allowed: {', '.join(allowed)}")


def _scheduler(path: Path, raw: Any) -> Optional[Dict[str, Any]]:
    if raw is None:
        return None
    raw = {"type": raw} if isinstance(raw, str) else raw
    if not isinstance(raw, Mapping):
        raise SweepError(f"{_where(path, 'scheduler')}: expected null, 'asha' or a mapping, got {raw!r}")
    _only(_where(path, "scheduler"), raw, ("type", "grace_period", "reduction_factor"))
    if raw.get("type") != "asha":
        raise SweepError(f"{_where(path, 'scheduler.type')}: the one scheduler is 'asha', got {raw.get('type')!r}")
    grace = None if raw.get("grace_period") is None else _number(path, "scheduler.grace_period", raw["grace_period"], 1)
    factor = _number(path, "scheduler.reduction_factor", raw.get("reduction_factor", 2.0), integer=False)
    if factor <= 1:
        raise SweepError(f"{_where(path, 'scheduler.reduction_factor')}: must be above 1, got {raw['reduction_factor']}")
    return {"type": "asha", "grace_period": grace, "reduction_factor": factor}


def _resources(path: Path, raw: Any) -> tuple[float, float]:
    res = _mapping(path, "resources_per_trial", raw)
    _only(_where(path, "resources_per_trial"), res, ("cpu", "gpu"))
    cpu, gpu = (_number(path, f"resources_per_trial.{k}", res.get(k, d), integer=False) for k, d in (("cpu", 1), ("gpu", 0)))
    if cpu < 1 or cpu != int(cpu):
        raise SweepError(f"{_where(path, 'resources_per_trial.cpu')}: a whole number of CPUs, at least 1 (torch's threads), got {res.get('cpu')}")
    if gpu < 0 or (gpu > 1 and gpu != int(gpu)):
        raise SweepError(f"{_where(path, 'resources_per_trial.gpu')}: a fraction of one GPU or a whole number, got {res.get('gpu')}")
    return cpu, gpu


def load_sweep(path: Path | str) -> SweepSpec:
    """Read and check a sweep file, recipes included; a :class:`SweepError` names the file and the field."""
    path = Path(path)
    if not path.is_file() and path.suffix == "" and len(path.parts) == 1:  # a shipped sweep by name: bandit-eta
        shipped = catalogue_dir("sweeps") / f"{path}.yaml"
        path = shipped if shipped.is_file() else path
    if not path.is_file():
        raise SweepError(f"sweep file {path} does not exist")
    if path.stat().st_size > MAX_SWEEP_BYTES:
        raise SweepError(f"{path}: {path.stat().st_size} bytes is over the sweep file limit of {MAX_SWEEP_BYTES}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise SweepError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, Mapping):
        raise SweepError(f"{path}: a sweep file is a mapping of fields ({', '.join(FIELDS)}), got {type(raw).__name__}")
    raw = {str(k): v for k, v in raw.items()}
    _only(str(path), raw, FIELDS)
    for required, what in REQUIRED.items():
        if required not in raw:
            raise SweepError(f"{_where(path, required)}: required ({what})")
    name = raw.get("name", path.stem)
    if not isinstance(name, str) or not name:
        raise SweepError(f"{_where(path, 'name')}: expected a non-empty string, got {name!r}")
    ints = {k: None if d is None and raw.get(k) is None else _number(path, k, raw.get(k, d), low)
            for k, (d, low) in INT_FIELDS.items()}
    params = {k: typed_value(path, "params", k, v) for k, v in _mapping(path, "params", raw.get("params")).items()}
    for k in ("steps", "eval_freq", "eval_episodes"):
        if k in params:
            raise SweepError(f"{_where(path, 'params')}: {k}: set it with the sweep's own field {k!r}")
    grid = {k: _values(path, "grid", k, v) for k, v in _mapping(path, "grid", raw.get("grid")).items()}
    space = _space(path, raw.get("space"))
    both = sorted((set(grid) & set(space)) | (set(params) & (set(grid) | set(space))))
    if both:
        raise SweepError(f"{path}: key(s) {both} are set in more than one of params, grid and space")
    search = raw.get("search", "random" if space else "grid")
    if search not in SEARCHES:
        raise SweepError(f"{_where(path, 'search')}: expected one of {', '.join(SEARCHES)}, got {search!r}")
    if search == "grid" and space:
        raise SweepError(f"{_where(path, 'space')}: search: grid takes no space; use search: random or optuna, or list the values under grid")
    if search != "grid" and not space:
        raise SweepError(f"{_where(path, 'space')}: search: {search} samples a space; give one (or use search: grid)")
    if search == "grid" and "num_samples" in raw and ints["num_samples"] != 1:
        raise SweepError(f"{_where(path, 'num_samples')}: a grid runs each point once (repeat runs are seeds: use the 'seeds' field)")
    agents, tasks = _names(path, "agents", raw["agents"]), _names(path, "tasks", raw["tasks"])
    if search == "optuna" and (grid or len(agents) > 1 or len(tasks) > 1):
        raise SweepError(f"{_where(path, 'search')}: optuna tunes one agent on one task over a space (no grid): write one sweep per pair")
    cpu, gpu = _resources(path, raw.get("resources_per_trial"))
    seeds = _seeds(path, raw.get("seeds", [0]))
    limit, samples = ints.pop("max_trials") or MAX_TRIALS, ints["num_samples"] if search != "grid" else 1
    count = len(agents) * len(tasks) * samples * math.prod(len(v) for v in grid.values())  # (before any trial is built)
    if count > limit:
        sizes = " x ".join([f"{len(agents)} agent(s)", f"{len(tasks)} task(s)"] + [f"{len(v)} {k}" for k, v in grid.items()]
                           + ([f"{samples} samples"] if samples > 1 else []))
        each = f" of {len(seeds)} seeds each" if len(seeds) > 1 else ""
        raise SweepError(f"{_where(path, 'grid')}: the sweep expands to {count:,} trials{each} ({sizes}), over the limit of {limit:,}: "
                         f"use search: random (or optuna) with a space and num_samples to try a chosen number of points, or set "
                         f"max_trials: {count} to run them all on purpose")
    spec = SweepSpec(path=path, name=name, agents=agents, tasks=tasks, seeds=seeds, params=params, grid=grid, search=search,
                     space=space, metric="", scheduler=_scheduler(path, raw.get("scheduler")), cpu=cpu, gpu=gpu, raw=raw, **ints)
    _check_against_recipes(spec, raw.get("metric"))
    spec.grid_trials()  # (refuses a grid that repeats a point)
    return spec


def _check_against_recipes(spec: SweepSpec, metric: Any) -> None:
    """Each agent x task's recipe as ``train -p`` builds it with every value the sweep sets; metric, budgets, grace."""
    path, scored = spec.path, True
    for task_id in spec.tasks:
        try:
            task = get_task(task_id)
        except UnknownNameError as exc:
            raise SweepError(f"{_where(path, 'tasks')}: {exc}") from None
        if task.eval_env is None:
            raise SweepError(f"{_where(path, 'tasks')}: {task_id} has no evaluation env, so a trial has nothing to report"
                             + (f" ({task.eval_note})" if task.eval_note else ""))
        scored = scored and task.normalized_score(0.0) is not None
    metric = ("normalized_score" if scored else "mean_return") if metric is None else metric
    if metric not in METRICS:
        raise SweepError(f"{_where(path, 'metric')}: expected one of {', '.join(METRICS)}, got {metric!r}")
    if metric == "normalized_score" and not scored:
        raise SweepError(f"{_where(path, 'metric')}: normalized_score needs reference scores, and a task of {spec.tasks} has none: use mean_return")
    spec.metric = metric
    probes = {**spec.grid, **{k: next(iter(d.values())) for k, d in spec.space.items()}}  # (a space's bounds or choices)
    for agent in spec.agents:
        for task_id in spec.tasks:
            section = getattr(get_task(task_id), "recipe_section", None) or task_id
            try:
                config = resolve_recipe(agent, section).config
            except (ConfigError, UnknownNameError, FileNotFoundError) as exc:
                raise SweepError(f"{_where(path, 'agents')}: {agent}: {exc}") from None
            try:
                config = config.replace(**spec.params)
            except (ConfigError, UnknownNameError) as exc:
                raise SweepError(f"{_where(path, 'params')}: for agent {agent} on {task_id}: {exc}") from None
            for key, values in probes.items():
                kind = "grid" if key in spec.grid else "space"
                for v in values:
                    try:
                        config.replace(**{key: v})
                    except (ConfigError, UnknownNameError) as exc:
                        raise SweepError(f"{_where(path, kind)}: {key}={v!r} for agent {agent} on {task_id}: {exc}") from None
            steps = spec.steps or int(config.steps)
            spec.budgets[f"{agent}|{task_id}"] = steps
            freq = spec.eval_freq or int(config.eval_freq)
            if freq <= 0 or freq > steps:
                raise SweepError(f"{_where(path, 'eval_freq')}: agent {agent} on {task_id} evaluates every {freq} steps in a run of {steps}: "
                                 f"a trial would report nothing before its end (set eval_freq <= steps)")
            spec.eval_freqs[f"{agent}|{task_id}"] = freq
    grace = spec.grace_period()
    for pair, steps in spec.budgets.items():
        if grace is not None and grace >= steps:
            agent, task_id = pair.split("|", 1)
            given = "" if spec.scheduler["grace_period"] else " (the smallest eval_freq in force, as none is given)"
            raise SweepError(f"{_where(path, 'scheduler.grace_period')}: {grace} steps{given} is not below the run's {steps} "
                             f"(agent {agent} on {task_id}): ASHA could never stop a trial early")


def canonical_json(doc: Any) -> str:
    return json.dumps(doc, sort_keys=True, default=str)  # (floats as repr: exact)


def _hashed(name: str, exact: str) -> str:
    return f"{name[:110]}_{hashlib.sha1(exact.encode()).hexdigest()[:8]}"


def read_results(run_dir: Path) -> Optional[Dict[str, Any]]:
    """The run folder's results.json; None when it is missing, unreadable or not a mapping."""
    try:
        doc = json.loads((Path(run_dir) / "results.json").read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def complete_results(run_dir: Path, budget: int, seeds: List[int]) -> Optional[Dict[str, Any]]:
    """The run's results.json if it records this trial's whole run or an early stop, else None (``--resume`` reruns it)."""
    doc = read_results(run_dir) or {}
    found, steps = doc.get("seeds"), doc.get("total_steps")
    same_seeds = isinstance(found, list) and all(_is_int(s) for s in found) and found == [int(s) for s in seeds]
    return doc if same_seeds and _is_int(steps) and (doc.get("stopped_early") is True or steps == int(budget)) else None


def unfinished_checkpoint(run_dir: Path, seeds: List[int]) -> Optional[Path]:
    """The newer of the run's model_interrupted.zip and model_latest.zip of these seeds; None if none reads as such."""
    found: List[Tuple[int, Path]] = []
    for path in (run_dir / "model_interrupted.zip", run_dir / "model_latest.zip"):
        try:
            doc = read_checkpoint(path)[0] if path.is_file() else None
        except (OSError, ValueError):
            continue
        if doc is not None and [int(s) for s in doc.get("seeds", [])] == [int(s) for s in seeds] and int(doc.get("num_timesteps", 0)) > 0:
            found.append((int(doc["num_timesteps"]), path))
    return max(found, key=lambda f: f[0])[1] if found else None


def distinct_names(path: Path, trials: List[Trial], field_name: str, remedy: str) -> List[Trial]:
    """Hash the names of trials whose folder names coincide; refuse two of one point, naming ``field_name`` and ``remedy``."""
    counts, seen = Counter(t.name for t in trials), set()
    for t in trials:
        if counts[t.name] > 1:
            key = canonical_json(t.point())
            if key in seen:
                raise SweepError(f"{_where(path, field_name)}: two trials are the same point ({t.agent} on {t.task} with {t.params}), "
                                 f"so they would train into one folder trials/{t.name}: {remedy}")
            seen.add(key)
            t.name = _hashed(t.name, key)
    repeated = sorted(n for n, c in Counter(t.name for t in trials).items() if c > 1)
    if repeated:  # (a hashed name meeting a plain one: never seen, but never two trials in one folder)
        raise SweepError(f"{path}: trial folder names repeat: {repeated}")
    return trials


def fixed_overrides(spec: SweepSpec) -> Dict[str, Any]:
    """What every trial passes as ``-p`` besides its own values: the sweep's params, eval settings."""
    evaluation = {"eval_freq": spec.eval_freq, "eval_episodes": spec.eval_episodes}
    return {**spec.params, **{k: v for k, v in evaluation.items() if v is not None}}
