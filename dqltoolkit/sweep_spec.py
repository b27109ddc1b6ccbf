"""Sweep files: what ``dqltoolkit sweep`` reads, checked strictly before anything starts.

Why strict and up front: a sweep runs for hours on machines the user is not watching, so a misspelt
field or a key one agent does not read must fail in the first second, naming the file and the field, not
in trial 37 on a remote node. Every config key of ``params``, ``grid`` and ``space`` is checked against
every agent x task of the sweep with the same checks as ``train -p``.

A sweep is a grid of *trials*; each trial is one agent on one task with one set of values, and trains all
the sweep's seeds at once (the member dimension). Nothing here imports Ray (dqltoolkit/sweep.py does).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from itertools import product
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

import yaml

from .checkpoint import read_checkpoint
from .config import ConfigError, coerce_mapping, resolve_recipe
from .limits import MAX_TRIALS
from .registry import UnknownNameError
from .tasks import get_task
from .training import parse_seeds

MAX_SWEEP_BYTES = 1_000_000
SEARCHES = ("grid", "random", "optuna")
METRICS = ("normalized_score", "mean_return")
DISTRIBUTIONS = ("uniform", "loguniform", "randint", "choice")
FIELDS = {
    "name": "a label for the sweep (default: the file's stem)",
    "agents": "recipe names or recipe files (a list, or one name)",
    "tasks": "task ids (a list, or one id)",
    "seeds": "seeds every trial trains at once: '0-4', '1,3,5', an integer or a list [0]",
    "steps": "gradient steps per trial (default: each recipe's steps)",
    "eval_freq": "evaluate every N gradient steps (default: the recipe's eval_freq)",
    "eval_episodes": "episodes per evaluation (one-step tasks such as the bandit use the task's)",
    "params": "config keys set in every trial, as with train -p",
    "grid": "config key -> list of values: every combination is a trial",
    "space": "config key -> {uniform|loguniform|randint: [low, high]} or {choice: [values]}, sampled by search",
    "search": "grid, random (Tune's samplers) or optuna (Tune's OptunaSearch, TPE)",
    "num_samples": "random/optuna: points of the space to try (per grid point for random)",
    "search_seed": "seed of the random and Optuna samplers [0]",
    "metric": "normalized_score or mean_return (what ASHA and Optuna maximise; default normalized_score when every task has one)",
    "scheduler": "null, 'asha' or {type: asha, grace_period: steps, reduction_factor: 2}",
    "resources_per_trial": "{cpu: 1, gpu: 0}: Ray resources of one trial (cpu sets torch's threads, gpu the device)",
    "max_concurrent_trials": "at most this many trials at once (default: as the resources allow)",
    "max_failures": "times Ray retries a trial whose process or node died [0]",
    "max_trials": "the most trials the file may expand to [10000]: raise it on purpose for a larger sweep",
    "save_every": "each trial saves model_latest.zip every N gradient steps, and a resumed sweep continues an unfinished trial "
                  "from it (default: the smallest eval_freq in force)",
}
SCHEDULER_FIELDS = ("type", "grace_period", "reduction_factor")
RESOURCE_FIELDS = ("cpu", "gpu")


class SweepError(ValueError):
    """A sweep file that cannot run; the message names the file and the field."""


@dataclass
class Trial:
    """One agent on one task with one set of grid (and sampled) values; it trains every seed of the sweep."""

    agent: str
    task: str
    params: Dict[str, Any]
    name: str = ""

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
        """ASHA's grace period in steps (None without ASHA): the sweep file's, else the first step at which any
        trial reports (the smallest eval_freq in force). One number, as ASHA has one; load_sweep checks it too."""
        if self.scheduler is None:
            return None
        return self.scheduler["grace_period"] or min(self.eval_freqs.values())

    def checkpoint_every(self) -> int:
        """Steps between a trial's periodic saves: the file's ``save_every``, else the smallest eval_freq in force."""
        return self.save_every or min(self.eval_freqs.values())

    def grid_trials(self) -> List[Trial]:
        """Every agent x task x grid combination, in file order (the trials of ``search: grid``; for
        ``random`` the grid points each sample is combined with)."""
        keys = list(self.grid)
        out = []
        for agent, task, *values in product(self.agents, self.tasks, *(self.grid[k] for k in keys)):
            t = Trial(agent, task, dict(zip(keys, values)))
            t.name = trial_name(t, hashed=False)
            out.append(t)
        return distinct_names(self.path, out, "grid", "list each value of a grid key once")


def _where(path: Path, name: str) -> str:
    return f"{path}: field {name!r}"


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _int(path: Path, name: str, v: Any, minimum: int) -> int:
    if not _is_int(v):
        raise SweepError(f"{_where(path, name)}: expected an integer, got {type(v).__name__} {v!r}")
    if v < minimum:
        raise SweepError(f"{_where(path, name)}: must be at least {minimum}, got {v}")
    return v


def _number(path: Path, name: str, v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise SweepError(f"{_where(path, name)}: expected a finite number, got {type(v).__name__} {v!r}")
    return float(v)


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


def _typed(path: Path, name: str, key: str, value: Any) -> Any:
    """A value typed as ``train -p key=value`` types it (unknown keys refused)."""
    try:
        return coerce_mapping({key: value}, f"{path}: {name}.{key}")[key]
    except ConfigError as exc:
        raise SweepError(str(exc)) from None


def _grid(path: Path, raw: Any) -> Dict[str, List[Any]]:
    out = {}
    for key, values in _mapping(path, "grid", raw).items():
        if not isinstance(values, list) or not values:
            raise SweepError(f"{_where(path, 'grid')}: {key}: expected a non-empty list of values, got {values!r}")
        out[key] = [_typed(path, "grid", key, v) for v in values]
    return out


def _space(path: Path, raw: Any) -> Dict[str, Dict[str, Any]]:
    out = {}
    for key, dist in _mapping(path, "space", raw).items():
        where = f"{path}: field 'space': {key}"
        if not isinstance(dist, Mapping) or len(dist) != 1 or next(iter(dist)) not in DISTRIBUTIONS:
            raise SweepError(f"{where}: expected one of {{{', '.join(f'{d}: ...' for d in DISTRIBUTIONS)}}}, got {dist!r}")
        kind, args = next(iter(dist.items()))
        if kind == "choice":
            if not isinstance(args, list) or not args:
                raise SweepError(f"{where}: choice needs a non-empty list of values, got {args!r}")
            out[key] = {"choice": [_typed(path, "space", key, v) for v in args]}
            continue
        if not isinstance(args, list) or len(args) != 2:
            raise SweepError(f"{where}: {kind} needs [low, high], got {args!r}")
        lo, hi = (_number(path, f"space.{key}.{kind}", a) for a in args)
        if not lo < hi:
            raise SweepError(f"{where}: {kind} needs low < high, got [{args[0]}, {args[1]}]")
        if kind == "loguniform" and lo <= 0:
            raise SweepError(f"{where}: loguniform needs 0 < low, got {args[0]}")
        if kind == "randint":
            lo, hi = _int(path, f"space.{key}.randint", args[0], -2**31), _int(path, f"space.{key}.randint", args[1], -2**31)
        _typed(path, "space", key, lo)
        _typed(path, "space", key, hi)
        out[key] = {kind: [lo, hi]}
    return out


def _only(path: Path, name: str, raw: Mapping[str, Any], allowed: Tuple[str, ...]) -> None:
    unknown = sorted(set(raw) - set(allowed))
    if unknown:
        raise SweepError(f"{_where(path, name)}: unknown field(s) {unknown}; allowed: {', '.join(allowed)}")


def _scheduler(path: Path, raw: Any) -> Optional[Dict[str, Any]]:
    if raw is None:
        return None
    if isinstance(raw, str):
        raw = {"type": raw}
    if not isinstance(raw, Mapping):
        raise SweepError(f"{_where(path, 'scheduler')}: expected null, 'asha' or a mapping, got {raw!r}")
    _only(path, "scheduler", raw, SCHEDULER_FIELDS)
    if raw.get("type") != "asha":
        raise SweepError(f"{_where(path, 'scheduler.type')}: the one scheduler is 'asha', got {raw.get('type')!r}")
    out: Dict[str, Any] = {"type": "asha", "grace_period": None, "reduction_factor": 2.0}
    if raw.get("grace_period") is not None:
        out["grace_period"] = _int(path, "scheduler.grace_period", raw["grace_period"], 1)
    if "reduction_factor" in raw:
        out["reduction_factor"] = _number(path, "scheduler.reduction_factor", raw["reduction_factor"])
        if out["reduction_factor"] <= 1:
            raise SweepError(f"{_where(path, 'scheduler.reduction_factor')}: must be above 1, got {raw['reduction_factor']}")
    return out


def _resources(path: Path, raw: Any) -> tuple[float, float]:
    res = _mapping(path, "resources_per_trial", raw)
    _only(path, "resources_per_trial", res, RESOURCE_FIELDS)
    cpu = _number(path, "resources_per_trial.cpu", res.get("cpu", 1))
    gpu = _number(path, "resources_per_trial.gpu", res.get("gpu", 0))
    if cpu < 1 or cpu != int(cpu):
        raise SweepError(f"{_where(path, 'resources_per_trial.cpu')}: a whole number of CPUs, at least 1 (torch's threads), got {res.get('cpu')}")
    if gpu < 0 or (gpu > 1 and gpu != int(gpu)):
        raise SweepError(f"{_where(path, 'resources_per_trial.gpu')}: a fraction of one GPU or a whole number, got {res.get('gpu')}")
    return cpu, gpu


def load_sweep(path: Path | str) -> SweepSpec:
    """Read and check a sweep file: fields, types, each agent x task's recipe and every key and value the
    sweep sets. Raises :class:`SweepError` naming the file and the field."""
    path = Path(path)
    if not path.is_file() and path.suffix == "" and len(path.parts) == 1:  # a shipped sweep by name: bandit-eta
        from .config import catalogue_dir

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
    unknown = sorted(set(raw) - set(FIELDS))
    if unknown:
        raise SweepError(f"{path}: unknown field(s) {unknown}; allowed: {', '.join(FIELDS)}")
    for required in ("agents", "tasks"):
        if required not in raw:
            raise SweepError(f"{_where(path, required)}: required ({FIELDS[required]})")
    name = raw.get("name", path.stem)
    if not isinstance(name, str) or not name:
        raise SweepError(f"{_where(path, 'name')}: expected a non-empty string, got {name!r}")
    counts = ("steps", "eval_freq", "eval_episodes", "max_concurrent_trials", "save_every")
    opt = {k: (_int(path, k, raw[k], 1) if raw.get(k) is not None else None) for k in counts}
    params = {k: _typed(path, "params", k, v) for k, v in _mapping(path, "params", raw.get("params")).items()}
    for k in ("steps", "eval_freq", "eval_episodes"):
        if k in params:
            raise SweepError(f"{_where(path, 'params')}: {k}: set it with the sweep's own field {k!r}")
    grid, space = _grid(path, raw.get("grid")), _space(path, raw.get("space"))
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
    num_samples = _int(path, "num_samples", raw.get("num_samples", 1), 1)
    if search == "grid" and "num_samples" in raw and num_samples != 1:
        raise SweepError(f"{_where(path, 'num_samples')}: a grid runs each point once (repeat runs are seeds: use the 'seeds' field)")
    agents, tasks = _names(path, "agents", raw["agents"]), _names(path, "tasks", raw["tasks"])
    if search == "optuna" and (grid or len(agents) > 1 or len(tasks) > 1):
        raise SweepError(f"{_where(path, 'search')}: optuna tunes one agent on one task over a space (no grid): write one sweep per pair")
    cpu, gpu = _resources(path, raw.get("resources_per_trial"))
    seeds = _seeds(path, raw.get("seeds", [0]))
    _check_trial_count(path, agents, tasks, grid, num_samples if search != "grid" else 1, raw.get("max_trials"), len(seeds))
    spec = SweepSpec(path=path, name=name, agents=agents, tasks=tasks, seeds=seeds, steps=opt["steps"],
                     eval_freq=opt["eval_freq"], eval_episodes=opt["eval_episodes"], params=params, grid=grid, space=space, search=search,
                     num_samples=num_samples, search_seed=_int(path, "search_seed", raw.get("search_seed", 0), 0), metric="",
                     scheduler=_scheduler(path, raw.get("scheduler")), cpu=cpu, gpu=gpu, max_concurrent_trials=opt["max_concurrent_trials"],
                     max_failures=_int(path, "max_failures", raw.get("max_failures", 0), 0), save_every=opt["save_every"], raw=raw)
    _check_against_recipes(spec, raw.get("metric"))
    spec.grid_trials()  # (refuses a grid that repeats a point)
    return spec


def _check_trial_count(path: Path, agents: List[str], tasks: List[str], grid: Mapping[str, List[Any]], samples: int, max_trials: Any,
                       seeds: int = 1) -> None:
    """Refuse a sweep that expands past ``max_trials`` from its sizes alone, before any trial is built."""
    limit = MAX_TRIALS if max_trials is None else _int(path, "max_trials", max_trials, 1)
    count = len(agents) * len(tasks) * samples * math.prod(len(values) for values in grid.values())
    if count > limit:
        sizes = " x ".join([f"{len(agents)} agent(s)", f"{len(tasks)} task(s)"] + [f"{len(v)} {k}" for k, v in grid.items()]
                           + ([f"{samples} samples"] if samples > 1 else []))
        each = f" of {seeds} seeds each" if seeds > 1 else ""
        raise SweepError(f"{_where(path, 'grid')}: the sweep expands to {count:,} trials{each} ({sizes}), over the limit of {limit:,}: "
                         f"use search: random (or optuna) with a space and num_samples to try a chosen number of points, or set "
                         f"max_trials: {count} to run them all on purpose")


def _space_probes(space: Mapping[str, Mapping[str, Any]]) -> Dict[str, List[Any]]:
    """Values of each space dimension worth checking against the recipes: its bounds or its choices."""
    return {k: (d["choice"] if "choice" in d else [*next(iter(d.values()))]) for k, d in space.items()}


def _check_against_recipes(spec: SweepSpec, metric: Any) -> None:
    """Each agent's recipe for each task with the sweep's params and every grid value and space bound, as
    ``train -p`` would build it; the tasks' evaluation and scores; the metric, the budgets and ASHA's grace."""
    path = spec.path
    scored = True
    for task_id in spec.tasks:
        try:
            task = get_task(task_id)
        except UnknownNameError as exc:
            raise SweepError(f"{_where(path, 'tasks')}: {exc}") from None
        if task.eval_env is None:
            raise SweepError(f"{_where(path, 'tasks')}: {task_id} has no evaluation env, so a trial has nothing to report"
                             + (f" ({task.eval_note})" if task.eval_note else ""))
        scored = scored and task.normalized_score(0.0) is not None
    if metric is None:
        metric = "normalized_score" if scored else "mean_return"
    if metric not in METRICS:
        raise SweepError(f"{_where(path, 'metric')}: expected one of {', '.join(METRICS)}, got {metric!r}")
    if metric == "normalized_score" and not scored:
        raise SweepError(f"{_where(path, 'metric')}: normalized_score needs reference scores, and a task of {spec.tasks} has none: use mean_return")
    spec.metric = metric
    probes = {**{k: list(v) for k, v in spec.grid.items()}, **_space_probes(spec.space)}
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


def trial_name(trial: Trial, hashed: bool) -> str:
    """A folder name made from the trial's values, the same on every run of the sweep (``--resume`` finds
    a finished trial by it). Sampled values get a short hash of their exact values (two samples that print
    alike stay apart)."""
    stem = Path(trial.agent).stem if trial.agent.endswith((".yaml", ".yml")) else trial.agent
    parts = [stem, trial.task] + [f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in trial.params.items()]
    name = re.sub(r"[^A-Za-z0-9._=+,-]+", "-", "_".join(parts)).strip("-.")
    return _hashed(name, _canonical(trial.point())) if hashed or len(name) > 120 else name


def _canonical(doc: Any) -> str:
    return json.dumps(doc, sort_keys=True, default=str)  # (floats as repr: exact)


def _hashed(name: str, exact: str) -> str:
    return f"{name[:110]}_{hashlib.sha1(exact.encode()).hexdigest()[:8]}"


def complete_results(run_dir: Path, budget: int, seeds: List[int]) -> Optional[Dict[str, Any]]:
    """The run folder's results.json if it records this trial's whole run (its seeds, its budget of steps)
    or an early stop; None otherwise (no file, an unreadable or damaged one, another run's): ``--resume``
    then runs the trial again, so a damaged file costs one trial's time, never the resumed sweep."""
    try:
        doc = json.loads((run_dir / "results.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict):
        return None
    found = doc.get("seeds")
    if not isinstance(found, list) or not all(_is_int(s) for s in found) or found != [int(s) for s in seeds]:
        return None
    if not _is_int(doc.get("total_steps")):
        return None
    return doc if doc.get("stopped_early") is True or doc["total_steps"] == int(budget) else None


def unfinished_checkpoint(run_dir: Path, seeds: List[int]) -> Optional[Path]:
    """The trial's newest resumable checkpoint in its run folder (``model_interrupted.zip`` or the periodic
    ``model_latest.zip``, whichever holds more steps) when it trained these seeds; None when there is none
    or none that reads as this run's (a damaged file costs its steps, never the resumed sweep)."""
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
    """Give trials whose folder names coincide (values that print alike; recipe files ``a/x.yaml`` and ``b/x.yaml``)
    a short hash of their exact point each, so that two trials never share a run folder; refuse two trials of the
    very same point, naming the sweep file, ``field_name`` and ``remedy``."""
    groups: Dict[str, List[Trial]] = {}
    for t in trials:
        groups.setdefault(t.name, []).append(t)
    for name, group in groups.items():
        if len(group) < 2:
            continue
        seen: Dict[str, Trial] = {}
        for t in group:
            key = _canonical(t.point())
            if key in seen:
                raise SweepError(f"{_where(path, field_name)}: two trials are the same point ({t.agent} on {t.task} with {t.params}), "
                                 f"so they would train into one folder trials/{name}: {remedy}")
            seen[key] = t
        for key, t in seen.items():
            t.name = _hashed(name, key)
    names = [t.name for t in trials]
    if len(set(names)) != len(names):  # (a hashed name meeting a plain one: never seen, but never two trials in one folder)
        repeated = sorted({n for n in names if names.count(n) > 1})
        raise SweepError(f"{path}: trial folder names repeat: {repeated}")
    return trials


def same_spec(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    return _canonical(a) == _canonical(b)


def fixed_overrides(spec: SweepSpec) -> Dict[str, Any]:
    """What every trial passes as ``-p`` besides its own values: the sweep's params, eval settings."""
    evaluation = {"eval_freq": spec.eval_freq, "eval_episodes": spec.eval_episodes}
    return {**spec.params, **{k: v for k, v in evaluation.items() if v is not None}}
