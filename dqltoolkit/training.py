"""The ``train`` job: a run folder, a recipe and a task -> trained agent, checkpoints, metrics, figures.

The learning loop itself (callbacks, logging, divergence, signals) is dqltoolkit/loop.py."""

from __future__ import annotations

import contextlib
import csv
import json
import shutil
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import numpy as np
import torch
import yaml
from stable_baselines3.common.callbacks import BaseCallback

from .agent import Agent
from .checkpoint import config_of, init_from_checkpoint, read_checkpoint, save_agent
from .config import resolve_recipe
from .envs.bandit2d import BEST_MODE, MODE_NAMES, mode_shares
from .evaluation import evaluate, evaluate_members
from .faults import BeforeTermination, RunLock, TrainingInterrupted, agent_nonfinite, signal_name
from .limits import MAX_SEEDS, check_limit
from .loop import DIVERGENCE_CHECK_EVERY, DIVERGENCE_LIMIT, TrainingDiverged, log_metrics, run_learning  # noqa: F401  (re-exported)
from .nn import member_generators
from .objectives.base import sampler_option
from .plots import plot_bandit, plot_learning_curves
from .runs import UNFINISHED, load_with_config, plan_resume, prepare_run_folder
from .sources import resolve_checkpoint
from .tasks import get_task, spaces_from_table, task_spaces  # noqa: F401  (re-exported)
from .wandb_logger import WandbOutputFormat, require_wandb


def bandit_report(agent, dataset_actions: np.ndarray, out: Path, n: int = 1000, seed: int = 0, suffix: str = "") -> Dict[str, Any]:
    """1,000 raw policy samples: mode shares and the paper-style scatter (``bandit{suffix}.png``)."""
    actions = sample_policy_actions(agent, n, seed)
    shares = mode_shares(actions)
    title = f"{agent.config.head}+{agent.config.objective}: {n} samples\n{shares[MODE_NAMES[BEST_MODE]]:.0%} on the best mode"
    plot_bandit(actions, dataset_actions, out / f"bandit{suffix}.png", title=title)
    np.save(out / f"policy_samples{suffix}.npy", actions)
    return {"mode_shares": shares, "best_mode_share": shares[MODE_NAMES[BEST_MODE]]}


@torch.no_grad()
def sample_policy_actions(agent, n: int = 1000, seed: int = 0, member: int = 0, observation: Optional[np.ndarray] = None) -> np.ndarray:
    """``n`` samples of the trained policy at one observation (default zeros), drawn as it acts, without selection by Q."""
    obs = torch.zeros(agent.members, n, agent.obs_dim, device=agent.device)
    if observation is not None:
        obs = obs + torch.as_tensor(np.asarray(observation, np.float32).reshape(1, 1, -1), device=agent.device)
    obs = (obs - agent.obs_mean) / agent.obs_std
    gens = member_generators([seed + m for m in range(agent.members)], agent.device)
    cfg = agent.config
    # the trained policy: BCQ perturbs the head's samples
    a = agent.objective.policy_sample(agent.head, agent.aux, obs, gens, steps=cfg.sample_steps or None, **sampler_option(cfg.sampler))
    a = a * agent.learner.action_scale + agent.learner.action_center
    return a[member].cpu().numpy()


class PeriodicEvaluation(BaseCallback):
    """SB3 callback: every ``freq`` steps evaluate every seed in one vector env, log eval/mean_return and
    eval/normalized_score (means; ``eval/<key>_seed{s}`` per seed), then call ``on_result(entry)``."""

    def __init__(self, task, freq: int, episodes: int, on_result: Optional[Callable[[Dict[str, Any]], None]] = None) -> None:
        super().__init__()
        self.task, self.freq, self.episodes, self.on_result = task, int(freq), int(episodes), on_result
        self.history: List[Dict[str, Any]] = []

    def _on_step(self) -> bool:
        if self.num_timesteps % self.freq:
            return True
        model = self.model
        per = evaluate_members(model, self.task.make_env, episodes=self.episodes, seeds=[s + 100 for s in model.seeds],
                               deterministic=model.config.eval_acting == "deterministic")
        for r in per:
            score = self.task.normalized_score(r["mean_return"])
            if score is not None:
                r["normalized_score"] = score
        entry: Dict[str, Any] = {"step": self.num_timesteps}
        for key in ("mean_return", "normalized_score"):
            if key in per[0]:
                entry[key] = float(np.mean([r[key] for r in per]))
                self.logger.record(f"eval/{key}", entry[key])
                if len(per) > 1:
                    entry[f"{key}_per_seed"] = [r[key] for r in per]
                    for s, r in zip(model.seeds, per):
                        self.logger.record(f"eval/{key}_seed{s}", r[key])
        self.history.append(entry)
        # as SB3's EvalCallback does: dump now, so the row carries the step the evaluation belongs to
        self.logger.record("time/step", self.num_timesteps)
        self.logger.dump(self.num_timesteps)
        if self.on_result is not None:
            self.on_result(entry)
        return True


class PeriodicCheckpoint(BaseCallback):
    """Every ``every`` steps save the agent (resumable exactly) to ``path`` atomically; non-finite weights raise
    :class:`TrainingDiverged` instead of replacing the last good file."""

    def __init__(self, path: Path, every: int, keep: int = 0) -> None:
        super().__init__()
        self.path, self.every, self.keep = Path(path), int(every), int(keep)
        self.saved_step: Optional[int] = None

    def save_now(self) -> None:
        step = self.model.num_timesteps
        if self.saved_step == step:
            return
        bad = agent_nonfinite(self.model)
        if bad is not None:
            raise TrainingDiverged(f"training diverged by step {step}: {bad} holds NaN/Inf (found before saving {self.path.name})")
        save_agent(self.model, self.path, extra=UNFINISHED_MARK)
        self.saved_step = step
        if self.keep:  # the last `keep` saves as model_step<N>.zip, for offline selection (dqltoolkit select)
            kept = self.path.with_name(f"model_step{step}.zip")
            shutil.copyfile(self.path, kept.with_name(kept.name + ".tmp"))
            kept.with_name(kept.name + ".tmp").replace(kept)
            for old in kept_checkpoints(self.path.parent)[:-self.keep]:
                old.unlink()

    def _on_step(self) -> bool:
        if self.num_timesteps % self.every == 0:
            self.save_now()
        return True


def kept_checkpoints(run_dir: Path) -> List[Path]:
    """A run folder's ``model_step<N>.zip`` files (``--keep-checkpoints``), by step."""
    found = [(p.stem[len("model_step"):], p) for p in Path(run_dir).glob("model_step*.zip")]
    return [p for _, p in sorted((int(digits), p) for digits, p in found if digits.isdigit())]


@dataclass
class TrainResult:
    out: Path
    checkpoints: List[Path]
    results: Dict[str, Any] = field(default_factory=dict)
    written: List[Path] = field(default_factory=list)  # every file this run wrote, checkpoints included


def parse_seeds(spec: str | int | Sequence[int]) -> List[int]:
    """``"0-4"`` -> [0..4], ``"1,3,5"`` -> [1, 3, 5], ``3`` -> [3]."""
    if isinstance(spec, int):
        return [spec]
    if not isinstance(spec, str):
        return [int(s) for s in spec]
    seeds: List[int] = []
    for part in spec.split(","):
        part = part.strip()
        if "-" in part[1:]:
            a, b = part[:part.index("-", 1)], part[part.index("-", 1) + 1:]
            check_limit("seeds", len(seeds) + max(0, int(b) - int(a) + 1), MAX_SEEDS, f"{spec!r}: networks per process",
                        "train fewer seeds per run")  # (before the list is built)
            seeds.extend(range(int(a), int(b) + 1))
        elif part:
            seeds.append(int(part))
    check_limit("seeds", len(seeds), MAX_SEEDS, f"{spec!r}: networks per process", "train fewer seeds per run")
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds {spec!r}: expected distinct integers like '0-4' or '1,3,5'")
    return seeds


LOGGERS = ("stdout", "csv", "log", "json", "tensorboard", "wandb")  # SB3's output formats and W&B's; csv is metrics.csv, always written


def output_formats(names: Sequence[str], out: Optional[Path], config: Optional[Mapping[str, Any]] = None,
                   say: Callable[[str], None] = lambda m: None, tags: Sequence[str] = ()) -> List[Any]:
    """SB3 logger formats for ``--logger`` names (``out`` None: only check them and their optional packages)."""
    from stable_baselines3.common.logger import HumanOutputFormat, make_output_format

    unknown = [n for n in names if n not in LOGGERS]
    if unknown:
        raise ValueError(f"--logger: unknown format(s) {unknown}; choose from {', '.join(LOGGERS)}")
    if "tensorboard" in names:
        try:
            import tensorboard  # noqa: F401
        except ImportError:
            raise ValueError("--logger tensorboard needs the tensorboard package: pip install 'dqltoolkit[tensorboard]'") from None
    if "wandb" in names:
        require_wandb()
    if out is None:
        return []
    formats: List[Any] = []
    try:
        for name in dict.fromkeys(names):
            if name == "stdout":
                formats.append(HumanOutputFormat(sys.stdout))
            elif name == "wandb":
                formats.append(WandbOutputFormat(out, config or {}, tags=tags, say=say,
                                                 job_type="resume" if config and "resume" in config else "train"))
            elif name != "csv":
                formats.append(make_output_format(name, str(out)))
    except BaseException:
        for f in formats:  # a run started before the failing format is marked failed, not left open
            if hasattr(f, "finish"):
                f.finish(None, exit_code=1)
        raise
    return formats


#: in the document of every save made before a run's end (periodic, interrupted, diverged): a run interrupted after
#: its last gradient step (during the final evaluation, say) resumes to finish it, where a finished run's does not
UNFINISHED_MARK = {"run_unfinished": True}


def _check_count(name: str, value: Optional[int]) -> None:
    if value is not None and (isinstance(value, bool) or int(value) < 1):
        raise ValueError(f"{name} must be a positive number of gradient steps, got {value}")


def _failure_message(model, out: Path, good: Optional[Path], good_step: Optional[int], name: str) -> tuple[Optional[Path], str]:
    """Save ``model`` as ``out/name`` if its tensors are finite; say which file holds the last good state."""
    bad = agent_nonfinite(model)
    if bad is None:
        path = save_agent(model, out / name, extra=UNFINISHED_MARK)
        return path, f"what was trained (step {model.num_timesteps}) is in {path}"
    if good is not None:
        return None, f"its weights hold NaN/Inf ({bad}), so nothing was saved; the last finite checkpoint is {good} (step {good_step})"
    return None, f"its weights hold NaN/Inf ({bad}), so nothing was saved, and this run kept no finite checkpoint (--save-every N keeps one)"


def train(agent: Optional[str], env: str, out: Path | str, steps: Optional[int] = None, seeds: Optional[Sequence[int]] = None,
          device: str = "auto", overrides: Optional[Mapping[str, Any]] = None, progress: bool = True,
          evaluate_at_end: bool = True, verbose: bool = True, download: bool = False, resume: Optional[Path | str] = None,
          init: Optional[Path | str] = None, save_every: Optional[int] = None, keep_checkpoints: Optional[int] = None,
          say: Optional[Callable[[str], None]] = None, loggers: Optional[Sequence[str]] = None, replace_unfinished: bool = False,
          overrides_where_read: bool = False, on_evaluation: Optional[Callable[[Dict[str, Any]], None]] = None) -> TrainResult:
    """The `dqltoolkit train` job: recipe + task -> trained agent, checkpoints, metrics, figures.

    ``resume``: continue a checkpoint exactly for ``steps`` more (default: up to its run's ``steps``); ``overrides``
    may then change only :data:`dqltoolkit.runs.RESUME_SAFE_KEYS`. ``init``: a new run from a checkpoint's networks
    and observation statistics (both accept ``zoo:<id>``). ``out`` is locked; SIGINT/SIGTERM stop between two steps,
    save ``model_interrupted.zip`` and raise :class:`~dqltoolkit.faults.TrainingInterrupted`; ``save_every``
    (``keep_checkpoints``) writes ``model_latest.zip`` (``model_step<N>.zip``); NaN/Inf weights are never saved.
    ``loggers``: :data:`LOGGERS` besides ``metrics.csv`` (default ``stdout`` when ``verbose`` and not ``progress``).
    ``replace_unfinished``: empty a folder holding an interrupted run; ``overrides_where_read``: apply each override
    only where the parts read it (:meth:`AgentConfig.fit`); ``on_evaluation(entry)``: each periodic evaluation.
    """
    output_formats(loggers or [], None)  # (checks the names before anything runs)
    _check_count("steps", steps)
    _check_count("save_every", save_every)
    if init is not None and resume is not None:
        raise ValueError("init starts a new run from a checkpoint's weights and resume continues one: give only one of them")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    trackers: List[Any] = []  # run trackers (the W&B run) that _train_locked started: finished here, however it ends
    # (SIGTERM outside the learn loop, e.g. during the final evaluation, finishes them before the process ends)
    guard = BeforeTermination(lambda signum: _finish_trackers(trackers, _Terminated(signum))) if "wandb" in (loggers or []) else None
    with RunLock(out), guard or contextlib.nullcontext():
        try:
            result = _train_locked(agent=agent, env=env, out=out, steps=steps, seeds=seeds, device=device, overrides=dict(overrides or {}),
                                   progress=progress, evaluate_at_end=evaluate_at_end, verbose=verbose, download=download, resume=resume,
                                   init=init, save_every=save_every, keep_last=keep_checkpoints or 0, say=say or (lambda m: None), loggers=loggers,
                                   replace_unfinished=replace_unfinished, where_read=overrides_where_read, trackers=trackers,
                                   on_evaluation=on_evaluation)
        except BaseException as exc:
            _finish_trackers(trackers, exc)
            raise
        _finish_trackers(trackers, None, result.results)
        return result


class _Terminated(BaseException):
    """A stop signal outside the learn loop (its handler ends the process once the trackers are finished)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _finish_trackers(trackers: Sequence[Any], exc: Optional[BaseException], results: Optional[Mapping[str, Any]] = None) -> None:
    """Finish every tracker: with the results, stopped by a signal (exit code 128 + N) or failed (1); a tracker
    that fails to finish must not hide the run's own error."""
    if exc is None:
        # a SIGTERM while a tracker flushes would end the process mid-finish (the guard's own finish is then a
        # no-op): hold it until the trackers are done, then it arrives as usual
        hold = threading.current_thread() is threading.main_thread() and bool(trackers)
        if hold:
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
        try:
            for t in trackers:
                t.finish(results, exit_code=0)
        finally:
            if hold:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
        return
    if isinstance(exc, TrainingInterrupted):
        code = 128 + exc.signum
        notes = {"stopped_by": signal_name(exc.signum), "stopped_at_step": exc.step, **({"checkpoint": str(exc.checkpoint)} if exc.checkpoint else {})}
    elif isinstance(exc, _Terminated):
        code, notes = 128 + exc.signum, {"stopped_by": signal_name(exc.signum), "stopped_during": "the end of the run (after the learn loop)"}
    elif isinstance(exc, KeyboardInterrupt):
        code, notes = 130, {"stopped_by": "KeyboardInterrupt"}
    else:
        code, notes = 1, {"error": f"{type(exc).__name__}: {exc}"[:2000]}
        if getattr(exc, "checkpoint", None) is not None:
            notes["checkpoint"] = str(exc.checkpoint)
    for t in trackers:
        try:
            t.finish(None, exit_code=code, **notes)
        except Exception:  # noqa: BLE001 (the run's own error is what the caller must see)
            pass


def _model_for_run(agent, task, steps, seeds, device, overrides, download, resume, init, say, where_read=False):
    """The agent a run trains, its resume plan (or None), the files to keep, the recipe file, its sections, the dataset."""
    keep: List[Path] = []
    plan, recipe_file, sections = None, None, []
    if resume is not None:
        resume = resolve_checkpoint(resume)
        keep.append(Path(resume))
        doc, _ = read_checkpoint(resume)
        plan = plan_resume(doc, str(resume), overrides, steps)
        if not doc.get("has_optimizer"):
            say(f"{resume} holds no optimiser state (a policy-only file, as zoo entries are): the optimisers start fresh; "
                "the networks, target networks, EMA and step count carry over")
        if seeds is not None and [int(s) for s in seeds] != [int(s) for s in doc["seeds"]]:
            raise ValueError(f"--resume {resume} continues the checkpoint's seeds {doc['seeds']}; drop --seed/--seeds")
    else:
        if init is not None:
            recipe_file = resolve_checkpoint(init)
            keep.append(Path(recipe_file))
            config = config_of(read_checkpoint(recipe_file)[0], recipe_file)
            sections = [f"{recipe_file} (the checkpoint's config)"]
        else:
            recipe = resolve_recipe(agent, getattr(task, "recipe_section", None) or task.id)
            config, recipe_file, sections = recipe.config, recipe.path, recipe.sections
        if overrides:
            config = config.fit(**overrides) if where_read else config.replace(**overrides)
            if getattr(config, "dropped", None):
                say(f"the new parts do not read {', '.join(config.dropped)}: dropped")
        if steps is not None:
            config = config.replace(steps=int(steps))
    table = task.load_dataset(download=download)
    probe_env, (obs_space, act_space) = task_spaces(task, table)
    if plan is not None:
        model = load_with_config(Path(resume), plan.config, device)
        model.task = task.id
        for note in plan.notes:
            say(note)
    else:
        model = Agent(config, obs_space, act_space, seeds=list(seeds) if seeds is not None else [0], device=device, task=task.id)
        if init is not None:
            init_from_checkpoint(model, recipe_file)
    if probe_env is not None:
        model.set_env(probe_env)
    if model.config.online:  # one env per seed: each member collects its own experience
        if task.eval_env is None:
            raise ValueError(f"online fine-tuning needs an env, and task {task.id!r} has none" + (f": {task.eval_note}" if task.eval_note else ""))
        from stable_baselines3.common.monitor import Monitor
        from stable_baselines3.common.vec_env import DummyVecEnv

        model.set_env(DummyVecEnv([lambda: Monitor(task.make_env())] * model.members))
    return model, plan, keep, recipe_file, sections, table


def carried_metrics(out: Path, resume: Path, step: int) -> Optional[tuple]:
    """``(header, rows)`` of ``out/metrics.csv`` up to ``step`` when a run resumes in its own folder, else None:
    a run continued in chunks keeps one curve, as one uninterrupted run's (later rows are done again)."""
    file = out / "metrics.csv"
    if not file.is_file() or resume.resolve().parent != out.resolve():
        return None
    with open(file, newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if not header or "time/step" not in header:
            return None
        col = header.index("time/step")
        rows = []
        for row in reader:
            try:
                if len(row) == len(header) and float(row[col]) <= step:
                    rows.append(row)
            except ValueError:
                continue
    return header, rows


def _earlier_agent(out: Path) -> Optional[str]:
    """The agent the run folder's config.yaml names (a run resumed in its own folder keeps it)."""
    try:
        agent = yaml.safe_load((out / "config.yaml").read_text()).get("agent")
    except (OSError, yaml.YAMLError, AttributeError):  # (AttributeError: a document that is not a mapping)
        return None
    return agent if isinstance(agent, str) else None


def evaluations_from_rows(header: List[str], rows: List[List[str]], seeds: Sequence[int]) -> List[Dict[str, Any]]:
    """The periodic evaluations among kept ``metrics.csv`` rows, as :class:`PeriodicEvaluation` records them."""
    out = []
    col = {name: i for i, name in enumerate(header)}
    for row in rows:
        entry: Dict[str, Any] = {}
        for key in ("mean_return", "normalized_score"):
            i = col.get(f"eval/{key}")
            if i is None or row[i] == "":
                continue
            entry[key] = float(row[i])
            per = [row[col[c]] for c in (f"eval/{key}_seed{s}" for s in seeds) if c in col]
            if len(seeds) > 1 and len(per) == len(seeds) and all(per):
                entry[f"{key}_per_seed"] = [float(x) for x in per]
        if entry:
            out.append({"step": int(float(row[col["time/step"]])), **entry})
    return out


def _evaluate_run(model, task, table, ckpts: List[Path], out: Path, device: str, written: List[Path]) -> Dict[str, Any]:
    """The end-of-run evaluation of every seed's checkpoint (and the bandit's report); appends its files to ``written``."""
    per_seed = []
    for m, path in enumerate(ckpts):
        single = model if model.members == 1 else Agent.load(path, device=device)
        single.set_random_seed(100 + model.seeds[m])
        episodes = task.eval_episodes if task.one_step else model.config.eval_episodes
        r = evaluate(single, task.make_env, episodes=episodes, seed=model.seeds[m] + 100, deterministic=model.config.eval_acting == "deterministic")
        score = task.normalized_score(r["mean_return"])
        if score is not None:
            r["normalized_score"] = score
        if task.id.startswith("bandit2d"):
            suffix = "" if model.members == 1 else f"_seed{model.seeds[m]}"
            r.update(bandit_report(single, table["actions"], out, seed=model.seeds[m], suffix=suffix))
            written.extend([out / f"bandit{suffix}.png", out / f"policy_samples{suffix}.npy"])
        per_seed.append({"seed": model.seeds[m], **r})
    rets = np.array([p["mean_return"] for p in per_seed])
    return {"evaluation": per_seed, "mean_return": float(rets.mean()), "std_return_over_seeds": float(rets.std())}


def _train_locked(*, agent, env, out: Path, steps, seeds, device, overrides, progress, evaluate_at_end, verbose, download, resume, init,
                  save_every, say, loggers, replace_unfinished, where_read=False, keep_last: int = 0, trackers: Optional[List[Any]] = None,
                  on_evaluation=None) -> TrainResult:
    """:func:`train` with the lock held; run trackers it starts go into ``trackers`` for :func:`train` to finish."""
    from stable_baselines3.common.logger import CSVOutputFormat, Logger

    task = get_task(env)
    model, plan, keep, recipe_file, sections, table = _model_for_run(agent, task, steps, seeds, device, overrides, download, resume, init, say,
                                                                     where_read)
    config = model.config
    first, more = (plan.done, plan.more) if plan is not None else (0, config.steps)
    carried = carried_metrics(out, Path(resume), first) if resume is not None else None
    earlier = _earlier_agent(out) if carried is not None else None  # (an in-place resume keeps the run's name)
    if carried is not None:  # ... its kept checkpoints up to the step it continues from, and its other resumable file
        # (model_latest.zip beside the model_interrupted.zip it resumes: overwritten at the next save, never refused)
        keep = keep + [p for p in kept_checkpoints(out) if int(p.stem[len("model_step"):]) <= first]
        keep += [out / name for name in UNFINISHED if (out / name).is_file()]
    prepare_run_folder(out, keep=keep, say=say, replace_unfinished=replace_unfinished)
    model.set_dataset(table, refit_obs_stats=resume is None and init is None)
    say(f"{'resuming' if resume is not None else 'training'} {len(model.seeds)} seed(s) {model.seeds} on {task.id}: steps {first} -> "
        f"{first + more} -> {out}")
    if sections:
        say(f"recipe sections applied: {', '.join(sections)}")
    say(f"backend: {model.backend.describe()}")
    if task.eval_env is None and getattr(task, "eval_note", ""):
        say(f"no evaluation: {task.eval_note}")
    written: List[Path] = []
    source = ({"resume": str(resume), "resumed_at_step": first, **({"agent": earlier} if earlier else {})} if resume is not None else
              {"agent": agent, "recipe_file": str(recipe_file), "recipe_sections": sections})
    resolved = {**source, **({"init": str(init)} if init is not None else {}), **({"applied_on_resume": plan.applied} if plan else {}),
                "env": task.id, "seeds": list(model.seeds), "device": str(model.device), "backend": model.backend.describe(),
                "steps_this_run": more, "config": config.to_dict()}
    (out / "config.yaml").write_text(yaml.safe_dump(resolved, sort_keys=False))
    written.append(out / "config.yaml")
    formats = [CSVOutputFormat(str(out / "metrics.csv"))]
    if carried is not None:  # SB3's CSV writer, seeded with the kept rows, appends and widens the header as new keys come
        csv.writer(formats[0].file, lineterminator="\n").writerows([carried[0], *carried[1]])
        formats[0].file.flush()
        formats[0].keys = list(carried[0])
        say(f"{out / 'metrics.csv'}: the {len(carried[1])} rows up to step {first} kept (the run continues in its own folder)")
    written.append(out / "metrics.csv")
    wanted = list(loggers) if loggers is not None else (["stdout"] if verbose and not progress else [])
    tags = [task.id] + ([agent] if isinstance(agent, str) and ":" not in agent and "/" not in agent else [])
    formats.extend(output_formats(wanted, out, config=resolved, say=say, tags=tags))
    if trackers is not None:
        trackers.extend(f for f in formats if hasattr(f, "finish"))
    model.set_logger(Logger(str(out), formats))
    callbacks: List[Any] = []
    evaluation = None
    if config.eval_freq > 0 and task.eval_env is not None:
        evaluation = PeriodicEvaluation(task, config.eval_freq, config.eval_episodes if not task.one_step else task.eval_episodes,
                                        on_result=on_evaluation)
        if carried is not None:
            evaluation.history = evaluations_from_rows(*carried, model.seeds)
        callbacks.append(evaluation)
    latest = PeriodicCheckpoint(out / "model_latest.zip", save_every, keep_last) if save_every else None
    if latest is not None:
        callbacks.append(latest)  # last: it saves the state after the step's evaluation, as the uninterrupted run has it
    good = (keep[0], first) if resume is not None else (None, None)  # the last finite checkpoint of this run
    t0 = time.perf_counter()
    try:
        model.learn(more, progress_bar=progress, callback=callbacks or None)
        if latest is not None:
            latest.save_now()
    except (KeyboardInterrupt, TrainingDiverged) as exc:
        if latest is not None and latest.saved_step is not None:
            good = (latest.path, latest.saved_step)
        if isinstance(exc, TrainingDiverged):
            path, where = _failure_message(model, out, *good, name="model_diverged.zip")
            err = TrainingDiverged(f"{exc}; {where}")
            err.checkpoint = path if path is not None else good[0]
            raise err from None
        signum = exc.signum if isinstance(exc, TrainingInterrupted) else 2
        path, where = _failure_message(model, out, *good, name="model_interrupted.zip")
        stop = TrainingInterrupted(signum, model.num_timesteps)
        stop.checkpoint, stop.exact, stop.message = path, isinstance(exc, TrainingInterrupted), where
        raise stop from None
    finally:
        model.logger.close()
    train_s = time.perf_counter() - t0
    written.extend(p for p in sorted(out.glob("events.out.tfevents.*")) + [out / "log.txt", out / "progress.json"] if p.is_file())
    done = model.num_timesteps - first
    results: Dict[str, Any] = {"train_seconds": train_s, "steps": done, "first_step": first, "total_steps": model.num_timesteps,
                               "seeds": list(model.seeds), "steps_per_s": done / max(train_s, 1e-9), "backend": model.backend.describe()}
    if latest is not None:
        written.append(latest.path)
    ckpts = ([save_agent(model, out / "model.zip")] if model.members == 1 else
             [save_agent(model, out / f"model_seed{s}.zip", member=m) for m, s in enumerate(model.seeds)])
    written.extend(ckpts)
    if evaluate_at_end and task.eval_env is not None:
        results.update(_evaluate_run(model, task, table, ckpts, out, device, written))
    if evaluation is not None and evaluation.history:
        results["evaluations"] = evaluation.history
    figure = plot_learning_curves(out / "metrics.csv", out / "learning_curves.png")
    if figure is not None:
        written.append(Path(figure))
    (out / "results.json").write_text(json.dumps(results, indent=2))
    written.append(out / "results.json")
    return TrainResult(out=out, checkpoints=ckpts, results=results, written=written)
