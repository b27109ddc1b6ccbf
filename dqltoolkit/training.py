"""The training loop (SB3 callbacks, logger, progress bar, divergence check) and the ``train`` job."""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np
import torch
import yaml


class TrainingDiverged(RuntimeError):
    """A loss became NaN/Inf or exploded; raised at the next log step with the step and the metric."""


DIVERGENCE_LIMIT = 1e8


def _convert_callback(callback):
    from stable_baselines3.common.callbacks import BaseCallback, CallbackList, ConvertCallback

    if callback is None:
        return None
    if isinstance(callback, list):
        return CallbackList([_convert_callback(c) for c in callback])
    if not isinstance(callback, BaseCallback):
        return ConvertCallback(callback)
    return callback


def log_metrics(agent, step: int) -> Dict[str, float]:
    """Pull the accumulated diagnostics (one host sync), log their member means, check for divergence."""
    metrics = agent.pop_metrics()
    out = {}
    for k, v in metrics.items():
        v = np.asarray(v)
        if not np.all(np.isfinite(v)) or (k.endswith("loss") and np.any(np.abs(v) > DIVERGENCE_LIMIT)):
            raise TrainingDiverged(f"training diverged at step {step}: {k} = {v.tolist()} (members {agent.seeds})")
        out[f"train/{k}"] = float(v.mean())
        agent.logger.record(f"train/{k}", float(v.mean()))
    agent.logger.record("time/step", step)
    return out


def run_learning(agent, total_steps: int, callback=None, log_interval: Optional[int] = None, progress_bar: bool = False) -> None:
    """``total_steps`` gradient steps with SB3-style callbacks; losses are synced only every ``log_every``."""
    log_every = int(log_interval or agent.config.log_every)
    cb = _convert_callback(callback)
    if cb is not None:
        cb.init_callback(agent)
        cb.on_training_start(locals(), globals())
    bar = None
    if progress_bar:
        from tqdm.auto import tqdm

        bar = tqdm(total=total_steps, unit="step", dynamic_ncols=True, mininterval=0.5)
    t0, last = time.perf_counter(), 0
    try:
        for i in range(total_steps):
            agent.train_step()
            if bar is not None and (i + 1) % 50 == 0:
                bar.update(50)
            step = agent.num_timesteps
            if step % log_every == 0 or i == total_steps - 1:
                m = log_metrics(agent, step)
                elapsed = time.perf_counter() - t0
                agent.logger.record("time/steps_per_s", (i + 1 - last) / max(elapsed, 1e-9))
                t0, last = time.perf_counter(), i + 1
                agent.logger.dump(step)
                if bar is not None:
                    bar.set_postfix({k.split("/")[1]: f"{v:.3g}" for k, v in m.items() if k.endswith("loss")}, refresh=False)
            if cb is not None:
                cb.update_locals(locals())
                if cb.on_step() is False:
                    break
    finally:
        if bar is not None:
            bar.update(total_steps - bar.n if bar.n < total_steps else 0)
            bar.close()
        if cb is not None:
            cb.on_training_end()


def bandit_report(agent, dataset_actions: np.ndarray, out: Path, n: int = 1000, seed: int = 0, suffix: str = "") -> Dict[str, Any]:
    """1,000 raw policy samples: mode shares and the paper-style scatter (``bandit{suffix}.png``)."""
    from .envs.bandit2d import BEST_MODE, MODE_NAMES, mode_shares
    from .plots import plot_bandit

    actions = sample_policy_actions(agent, n, seed)
    shares = mode_shares(actions)
    title = f"{agent.config.head}+{agent.config.objective}: {n} samples\n{shares[MODE_NAMES[BEST_MODE]]:.0%} on the best mode"
    plot_bandit(actions, dataset_actions, out / f"bandit{suffix}.png", title=title)
    np.save(out / f"policy_samples{suffix}.npy", actions)
    return {"mode_shares": shares, "best_mode_share": shares[MODE_NAMES[BEST_MODE]]}


@torch.no_grad()
def sample_policy_actions(agent, n: int = 1000, seed: int = 0, member: int = 0, observation: Optional[np.ndarray] = None) -> np.ndarray:
    """``n`` samples of the trained policy (no candidate selection by Q) at one observation (default zeros)."""
    from .nn import member_generators

    obs = torch.zeros(agent.members, n, agent.obs_dim, device=agent.device)
    if observation is not None:
        obs = obs + torch.as_tensor(np.asarray(observation, np.float32).reshape(1, 1, -1), device=agent.device)
    obs = (obs - agent.obs_mean) / agent.obs_std
    gens = member_generators([seed + m for m in range(agent.members)], agent.device)
    a = agent.objective.policy_sample(agent.head, agent.aux, obs, gens)  # the trained policy: BCQ perturbs the head's samples
    a = a * agent._action_scale + agent._action_center
    return a[member].cpu().numpy()


def spaces_from_table(table: Mapping[str, np.ndarray]):
    """Spaces for a dataset without an evaluation env: unbounded observations, actions in [-1, 1] when the
    data lie there (D4RL's convention), else the data's own range."""
    import gymnasium as gym

    obs, act = np.asarray(table["observations"]), np.asarray(table["actions"])
    obs_space = gym.spaces.Box(-np.inf, np.inf, (obs.shape[1],), np.float32)
    if np.abs(act).max() <= 1.0:
        act_space = gym.spaces.Box(-1.0, 1.0, (act.shape[1],), np.float32)
    else:
        act_space = gym.spaces.Box(act.min(0).astype(np.float32), act.max(0).astype(np.float32))
    return obs_space, act_space


def _periodic_evaluation_base():
    from stable_baselines3.common.callbacks import BaseCallback

    return BaseCallback


class PeriodicEvaluation(_periodic_evaluation_base()):
    """Every ``freq`` gradient steps: evaluate every member (seed) in one vector env and log
    eval/mean_return and eval/normalized_score (means over seeds; with several seeds also per seed,
    ``eval/normalized_score_seed{s}``). An SB3 callback, so it sits in the loop with the user's callbacks."""

    def __init__(self, task, freq: int, episodes: int) -> None:
        super().__init__()
        self.task, self.freq, self.episodes = task, int(freq), int(episodes)
        self.history: List[Dict[str, Any]] = []

    def _on_step(self) -> bool:
        if self.num_timesteps % self.freq:
            return True
        from .evaluation import evaluate_members

        model = self.model
        per = evaluate_members(model, self.task.make_env, episodes=self.episodes, seeds=[s + 100 for s in model.seeds])
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
        return True


@dataclass
class TrainResult:
    out: Path
    checkpoints: List[Path]
    results: Dict[str, Any] = field(default_factory=dict)


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
            a, b = part.split("-", 1) if not part.startswith("-") else ("-" + part[1:].split("-", 1)[0], part[1:].split("-", 1)[1])
            seeds.extend(range(int(a), int(b) + 1))
        elif part:
            seeds.append(int(part))
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds {spec!r}: expected distinct integers like '0-4' or '1,3,5'")
    return seeds


def task_spaces(task, table: Mapping[str, np.ndarray]):
    """``(env or None, (observation space, action space))`` for a task: its evaluation env's spaces, or the
    data's own for a task without one."""
    if task.eval_env is not None:
        env = task.make_env()
        return env, (env.observation_space, env.action_space)
    return None, spaces_from_table(table)


def agent_for_task(agent: str, env: str, seeds: Sequence[int] = (0,), device: str = "auto", download: bool = False, **overrides: Any):
    """An agent from a recipe for a task, its dataset on the device and its evaluation env set: ready for
    ``learn``, ``predict``, SB3's ``evaluate_policy(model, model.get_env())`` and callbacks. ``overrides``
    are recipe keys (``eta=2.0``), checked and typed like ``-p``. What ``dqltoolkit train`` does, without
    the run folder, for code that drives the agent itself."""
    from .agent import Agent
    from .config import coerce_mapping, load_recipe
    from .tasks import get_task

    task = get_task(env)
    config, _ = load_recipe(agent, task.recipe_section or task.id)
    if overrides:
        config = config.replace(**coerce_mapping(overrides, "agent_for_task overrides"))
    table = task.load_dataset(download=download)
    probe_env, (obs_space, act_space) = task_spaces(task, table)
    model = Agent(config, obs_space, act_space, seeds=seeds, device=device, env=probe_env, task=task.id)
    model.set_dataset(table)
    return model


def train(
    agent: str,
    env: str,
    out: Path | str,
    steps: Optional[int] = None,
    seeds: Sequence[int] = (0,),
    device: str = "auto",
    overrides: Optional[Mapping[str, Any]] = None,
    progress: bool = True,
    evaluate_at_end: bool = True,
    verbose: bool = True,
    download: bool = False,
    resume: Optional[Path | str] = None,
    init: Optional[Path | str] = None,
) -> TrainResult:
    """The `dqltoolkit train` job: recipe + task -> trained agent, checkpoints, metrics, figures.

    ``resume``: continue from a checkpoint instead (its recipe, seeds, weights, optimiser, EMA, RNG
    and observation statistics), for ``steps`` more gradient steps or up to the recipe's ``steps``.
    ``init``: start a new run (fine-tuning) from a checkpoint's networks and observation statistics,
    with its recipe plus ``overrides``: fresh optimisers, step count and schedule. Both accept ``zoo:<id>``.
    """
    from stable_baselines3.common.logger import CSVOutputFormat, HumanOutputFormat, Logger

    from .agent import Agent
    from .checkpoint import save_agent
    from .config import load_recipe
    from .evaluation import evaluate
    from .tasks import get_task

    if init is not None and resume is not None:
        raise ValueError("init starts a new run from a checkpoint's weights and resume continues one: give only one of them")
    task = get_task(env)
    if init is not None:
        from .checkpoint import read_checkpoint
        from .config import AgentConfig
        from .zoo import resolve_checkpoint

        recipe_file = resolve_checkpoint(init)
        config = AgentConfig.from_dict(read_checkpoint(recipe_file)[0]["config"], source=f"{recipe_file} config")
    else:
        config, recipe_file = load_recipe(agent, task.recipe_section or task.id)
    if overrides:
        config = config.replace(**overrides)
    if steps is not None:
        config = config.replace(steps=int(steps))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    table = task.load_dataset(download=download)  # first: a missing dataset fails before anything is built
    probe_env, (obs_space, act_space) = task_spaces(task, table)
    if resume is not None:
        model = Agent.load(resume, device=device)
        config, seeds = model.config, model.seeds
        model.task = task.id
    else:
        model = Agent(config, obs_space, act_space, seeds=seeds, device=device, task=task.id)
        if init is not None:
            from .checkpoint import init_from_checkpoint

            init_from_checkpoint(model, recipe_file)
    if probe_env is not None:
        model.set_env(probe_env)
    model.set_dataset(table, refit_obs_stats=resume is None and init is None)
    if resume is not None:
        config = config.replace(steps=int(steps) if steps is not None else max(config.steps - model.num_timesteps, 0))
    resolved = {"agent": agent, "recipe_file": str(recipe_file), **({"init": str(init)} if init is not None else {}),
                "env": task.id, "seeds": list(seeds), "device": str(model.device), "config": config.to_dict()}
    (out / "config.yaml").write_text(yaml.safe_dump(resolved, sort_keys=False))
    formats = [CSVOutputFormat(str(out / "metrics.csv"))]
    if verbose and not progress:
        import sys

        formats.append(HumanOutputFormat(sys.stdout))
    model.set_logger(Logger(str(out), formats))
    callback = None
    if config.eval_freq > 0 and task.eval_env is not None:
        callback = PeriodicEvaluation(task, config.eval_freq, config.eval_episodes if not task.one_step else task.eval_episodes)
    t0 = time.perf_counter()
    try:
        model.learn(config.steps, progress_bar=progress, callback=callback)
    except (KeyboardInterrupt, TrainingDiverged):
        # nothing lost on failure: keep what was trained, under a name that says so
        save_agent(model, out / "model_interrupted.zip")
        raise
    finally:
        model.logger.close()
    train_s = time.perf_counter() - t0
    results: Dict[str, Any] = {"train_seconds": train_s, "steps": model.num_timesteps, "steps_per_s": model.num_timesteps / max(train_s, 1e-9)}
    ckpts: List[Path] = []
    if model.members == 1:
        ckpts.append(save_agent(model, out / "model.zip"))
    else:
        for m, s in enumerate(model.seeds):
            ckpts.append(save_agent(model, out / f"model_seed{s}.zip", member=m))
    if evaluate_at_end and task.eval_env is not None:
        from .agent import Agent as _A

        per_seed = []
        for m, path in enumerate(ckpts):
            single = model if model.members == 1 else _A.load(path, device=device)
            single.set_random_seed(100 + model.seeds[m])
            r = evaluate(single, task.make_env, episodes=task.eval_episodes if task.one_step else config.eval_episodes, seed=model.seeds[m] + 100)
            score = task.normalized_score(r["mean_return"])
            if score is not None:
                r["normalized_score"] = score
            if task.id.startswith("bandit2d"):
                r.update(bandit_report(single, table["actions"], out, seed=model.seeds[m], suffix="" if model.members == 1 else f"_seed{model.seeds[m]}"))
            per_seed.append({"seed": model.seeds[m], **r})
        results["evaluation"] = per_seed
        rets = np.array([p["mean_return"] for p in per_seed])
        results["mean_return"] = float(rets.mean())
        results["std_return_over_seeds"] = float(rets.std())
    if callback is not None and callback.history:
        results["evaluations"] = callback.history
    from .plots import plot_learning_curves

    plot_learning_curves(out / "metrics.csv", out / "learning_curves.png")
    (out / "results.json").write_text(json.dumps(results, indent=2))
    return TrainResult(out=out, checkpoints=ckpts, results=results)
