"""Build D4RL-style Minari datasets on this machine from SB3 SAC (or sb3-contrib TQC) on Gymnasium MuJoCo v5.

Levels (D4RL's recipe): random actions; medium, the policy frozen when its return first reaches
``medium_fraction`` of the expert reference (D4RL: about a third); medium-replay, the replay buffer up to then;
expert, the policy at the end of ``budget``; medium-expert, both. Training runs in chunks saved without pickle
(:mod:`.sb3_stages`), so a stopped build resumes, and a larger budget later continues it.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
from tqdm.auto import tqdm

from .._cache import cache_root, private_dir
from ..limits import MAX_BUILD_BUDGET, MAX_BUILD_TRANSITIONS, check_limit, check_memory
from .digest import table_sha256
from .minari_source import is_local, load_minari, minari_root
from .minari_writer import rollout_episodes, write_minari
from .sb3_stages import has_model, load_model, load_replay, save_model, save_replay

ENVS = {
    "hopper": ("Hopper-v5", -20.272305, 3234.3),
    "halfcheetah": ("HalfCheetah-v5", -280.178953, 12135.0),
    "walker2d": ("Walker2d-v5", 1.629008, 4592.3),
}
from .levels import LEVELS, build_time_estimate  # noqa: F401,E402  (re-exported)


@dataclass
class BuildConfig:
    env: str = "hopper"
    levels: Sequence[str] = LEVELS
    algo: str = "sac"  # sac | tqc
    budget: int = 300_000  # training env steps at most
    chunk: int = 10_000  # env steps between checkpoints and evaluations
    learning_starts: int = 5_000
    gradient_steps: int = 1  # per env step; fewer is cheaper
    medium_fraction: float = 1.0 / 3.0
    transitions: int = 100_000  # per collected level (D4RL: 1M)
    eval_episodes: int = 5
    seed: int = 0
    max_episode_steps: int = 1000
    data_format: str = "hdf5"
    namespace: str = "dqltoolkit"

    def dataset_id(self, level: str) -> str:
        return f"{self.namespace}/{self.env}/{level}-v0"


@dataclass
class Progress:
    steps: int = 0
    returns: List[List[float]] = field(default_factory=list)  # [env steps, mean eval return]
    medium_step: Optional[int] = None
    medium_return: Optional[float] = None
    done_training: bool = False
    medium_fallback: bool = False  # the budget ran out before the medium target: the last policy stood in
    built: Dict[str, Dict[str, float]] = field(default_factory=dict)
    seconds: float = 0.0


def build_dir(cfg: BuildConfig) -> Path:
    """The build's work folder in the cache (not created: :func:`build` makes it private)."""
    return cache_root() / "build" / f"{cfg.env}-{cfg.algo}-seed{cfg.seed}"


def _load_progress(d: Path) -> Progress:
    p = d / "progress.json"
    if not p.is_file():
        return Progress()
    try:
        return Progress(**json.loads(p.read_text()))
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{p}: not a progress file of this dqltoolkit ({exc}); delete {d} to start the build over") from None


TRAINED_LEVELS = ("medium", "medium-replay", "expert", "medium-expert")


def _extend_budget(cfg: BuildConfig, prog: Progress, target: float, say: Callable[[str], None]) -> None:
    """Reopen a finished training run when the budget grew and there is something to gain: a grown budget must not
    start over (the SAC run is most of the cost), nor leave stale datasets from the weaker policy behind."""
    if cfg.budget <= prog.steps or prog.steps == 0 or all(lv == "random" for lv in cfg.levels):
        return
    fallback = prog.medium_fallback or (prog.medium_return is not None and prog.medium_return < target)
    reopen_medium = prog.medium_step is not None and fallback
    reopen_expert = prog.done_training and _needs_expert(cfg)
    if not (reopen_medium or reopen_expert):
        return
    if reopen_medium:
        prog.medium_step, prog.medium_return, prog.medium_fallback = None, None, False
    prog.done_training = False
    stale = [lv for lv in prog.built if lv in TRAINED_LEVELS and (reopen_medium or "expert" in lv)]
    for lv in stale:
        del prog.built[lv]
    say(f"budget raised from {prog.steps} to {cfg.budget} env steps: training continues"
        + (f"; {', '.join(stale)} will be collected again" if stale else ""))


_PICKLED = ("policy_last.zip", "replay_last.pkl", "policy_medium.zip", "policy_expert.zip")


def _forget_pickled_stages(d: Path, prog: Progress, say: Callable[[str], None]) -> Progress:
    """Remove stages an older version pickled with SB3's ``save`` (loading pickle runs code): the build starts over."""
    old = [name for name in _PICKLED if (d / name).exists()]
    if not old:
        return prog
    for name in old:
        (d / name).unlink()
    say(f"{d}: removed {', '.join(old)} (SB3 pickle files from an older dqltoolkit, which are never loaded); "
        "the build starts over")
    fresh = Progress()
    _save_progress(d, fresh)
    return fresh


def _save_progress(d: Path, prog: Progress) -> None:
    tmp = d / "progress.json.tmp"
    tmp.write_text(json.dumps(asdict(prog), indent=2))
    os.replace(tmp, d / "progress.json")


def _make_model(cfg: BuildConfig, env):
    if cfg.algo == "sac":
        from stable_baselines3 import SAC as algo
    elif cfg.algo == "tqc":
        from sb3_contrib import TQC as algo
    else:
        raise ValueError(f"dataset build: algo must be 'sac' or 'tqc', got {cfg.algo!r}")
    return algo("MlpPolicy", env, learning_starts=cfg.learning_starts, gradient_steps=cfg.gradient_steps, seed=cfg.seed, verbose=0, device="cpu")


def _eval_return(model, env_id: str, episodes: int, seed: int, deterministic: bool = True) -> float:
    import gymnasium as gym
    from stable_baselines3.common.evaluation import evaluate_policy
    from stable_baselines3.common.monitor import Monitor

    env = Monitor(gym.make(env_id))  # episode returns as the env gives them, not as later wrappers would
    env.reset(seed=seed)
    mean, _ = evaluate_policy(model, env, n_eval_episodes=episodes, deterministic=deterministic)
    env.close()
    return float(mean)


def replay_episodes(buffer) -> List[Dict[str, np.ndarray]]:
    """Complete episodes of an SB3 replay buffer (single env), in order."""
    n = buffer.buffer_size if buffer.full else buffer.pos
    obs, nobs = buffer.observations[:n, 0], buffer.next_observations[:n, 0]
    act, rew, done = buffer.actions[:n, 0], buffer.rewards[:n, 0], buffer.dones[:n, 0]
    timeouts = buffer.timeouts[:n, 0] if hasattr(buffer, "timeouts") else np.zeros(n)
    out, start = [], 0
    for i in np.flatnonzero(done > 0):
        sl = slice(start, i + 1)
        L = i + 1 - start
        term, trunc = np.zeros(L, bool), np.zeros(L, bool)
        (trunc if timeouts[i] else term)[-1] = True  # SB3's dones hold both; timeouts says which
        out.append({"observations": np.concatenate([obs[sl], nobs[i : i + 1]]), "actions": act[sl], "rewards": rew[sl],
                    "terminations": term, "truncations": trunc})
        start = i + 1
    return out


def _needs_expert(cfg: BuildConfig) -> bool:
    return any(lv in ("expert", "medium-expert") for lv in cfg.levels)


def _train(cfg: BuildConfig, d: Path, prog: Progress, say: Callable[[str], None], bar) -> None:
    """Train (or resume) the behaviour policy up to the budget, saving a stage per chunk; ``bar``: a tqdm bar."""
    import gymnasium as gym

    env_id, _, ref_max = ENVS[cfg.env]
    env = gym.make(env_id, max_episode_steps=cfg.max_episode_steps)
    ckpt, rb = d / "policy_last", d / "replay_last.npz"
    if has_model(ckpt) and prog.steps > 0:
        model = load_model(ckpt, cfg.algo, lambda: _make_model(cfg, env))
        if rb.is_file():
            load_replay(model.replay_buffer, rb)
        say(f"resuming behaviour-policy training at {prog.steps} env steps")
    else:
        model = _make_model(cfg, env)
    target = cfg.medium_fraction * ref_max
    t0 = time.perf_counter()
    while prog.steps < cfg.budget and not (prog.medium_step is not None and not _needs_expert(cfg)):
        n = min(cfg.chunk, cfg.budget - prog.steps)
        model.learn(n, reset_num_timesteps=False, progress_bar=False)
        prog.steps += n
        ret = _eval_return(model, env_id, cfg.eval_episodes, cfg.seed + 1000 + prog.steps)
        prog.returns.append([prog.steps, ret])
        bar.update(n)
        bar.set_postfix_str(f"return {ret:.0f} (medium target {target:.0f})")
        if prog.medium_step is None and ret >= target:
            prog.medium_step, prog.medium_return = prog.steps, ret
            _save_medium(model, d, cfg.algo)
            say(f"medium policy at {prog.steps} env steps: return {ret:.0f}")
        save_model(model, ckpt, cfg.algo)
        save_replay(model.replay_buffer, rb)
        prog.seconds += time.perf_counter() - t0
        t0 = time.perf_counter()
        _save_progress(d, prog)
    if prog.medium_step is None:  # the budget ran out first: the last policy stands in for medium
        prog.medium_step, prog.medium_return = prog.steps, prog.returns[-1][1] if prog.returns else float("nan")
        prog.medium_fallback = True
        _save_medium(model, d, cfg.algo)
        say(f"budget reached before the medium target ({target:.0f}); using the final policy (return {prog.medium_return:.0f}) as medium")
    if prog.steps >= cfg.budget:
        save_model(model, d / "policy_expert", cfg.algo)
        prog.done_training = True
    _save_progress(d, prog)


def _save_medium(model, d: Path, algo: str) -> None:
    """The medium policy, and the replay buffer up to it as episodes (medium-replay)."""
    save_model(model, d / "policy_medium", algo)
    eps = replay_episodes(model.replay_buffer)
    np.savez_compressed(d / "replay_medium.npz", **{f"{k}_{i}": v for i, e in enumerate(eps) for k, v in e.items()}, n=len(eps))


def _policy_episodes(cfg: BuildConfig, policy_stem: Path, seed: int) -> List[Dict[str, np.ndarray]]:
    import gymnasium as gym

    env_id = ENVS[cfg.env][0]
    env = gym.make(env_id)
    model = load_model(policy_stem, cfg.algo, lambda: _make_model(cfg, env))
    return rollout_episodes(env_id, lambda o: model.predict(o, deterministic=False)[0], cfg.transitions, seed=seed,
                            max_episode_steps=cfg.max_episode_steps, progress=cfg.transitions >= 100_000)


def check_build_sizes(cfg: BuildConfig) -> None:
    """Refuse sizes that cannot be built (or would take days) before any training."""
    for name, value in (("--transitions", cfg.transitions), ("--budget", cfg.budget), ("--chunk", cfg.chunk)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"dataset build: {name} must be a positive whole number, got {value!r}")
    check_limit("--transitions", cfg.transitions, MAX_BUILD_TRANSITIONS, "per level; D4RL's levels hold 1M")
    check_limit("--budget", cfg.budget, MAX_BUILD_BUDGET, "behaviour-policy env steps; about 2 hours per million on 2 CPU cores")
    per_transition = 8 * (2 * 17 + 6 + 3) * 3  # float64 episodes, observations twice (the widest built env), 3 copies while writing
    check_memory(f"dataset build: --transitions {cfg.transitions}", cfg.transitions * per_transition, "cpu", "collect fewer transitions")


def build(cfg: BuildConfig, say: Callable[[str], None] = print, progress: bool = True, overwrite: bool = False) -> Dict[str, Dict[str, float]]:
    """Run (or resume) the build; returns ``{level: {"dataset_id", "episodes", "transitions", "requested_transitions",
    "mean_return", "normalized_score", "sha256"}}``. A level built with another ``transitions`` is collected again."""
    if cfg.env not in ENVS:
        raise ValueError(f"dataset build: unknown env {cfg.env!r}; choose from {sorted(ENVS)}")
    check_build_sizes(cfg)
    bad = [lv for lv in cfg.levels if lv not in LEVELS]
    if bad:
        raise ValueError(f"dataset build: unknown level(s) {bad}; choose from {list(LEVELS)}")
    env_id, ref_min, ref_max = ENVS[cfg.env]
    minari_root(write=True)  # an unwritable Minari folder fails now, not after an hour of SAC
    d = build_dir(cfg)
    private_dir("build", d.name)
    prog = _forget_pickled_stages(d, _load_progress(d), say)
    _extend_budget(cfg, prog, cfg.medium_fraction * ref_max, say)
    needs_training = any(lv != "random" for lv in cfg.levels)
    trained_enough = prog.done_training or (prog.medium_step is not None and not _needs_expert(cfg))
    if needs_training and not trained_enough:
        with tqdm(total=cfg.budget, initial=prog.steps, unit="env step", desc=f"{cfg.algo} on {env_id}", dynamic_ncols=True,
                  disable=not progress) as bar:
            _train(cfg, d, prog, say, bar)
    cache: Dict[str, List[Dict[str, np.ndarray]]] = {}

    def episodes(level: str):
        if level not in cache:
            if level == "random":
                rng = np.random.default_rng(cfg.seed)
                cache[level] = rollout_episodes(env_id, lambda o: rng.uniform(-1.0, 1.0, ENV_ACTION_DIMS[cfg.env]).astype(np.float32),
                                                cfg.transitions, seed=cfg.seed + 10_000, max_episode_steps=cfg.max_episode_steps)
            elif level in ("medium", "expert"):
                cache[level] = _policy_episodes(cfg, d / f"policy_{level}", cfg.seed + (20_000 if level == "medium" else 30_000))
            elif level == "medium-replay":
                z = np.load(d / "replay_medium.npz", allow_pickle=False)
                keys = ("observations", "actions", "rewards", "terminations", "truncations")
                cache[level] = [{k: z[f"{k}_{i}"] for k in keys} for i in range(int(z["n"]))]
            else:
                cache[level] = episodes("medium") + episodes("expert")
        return cache[level]

    for level in cfg.levels:
        did = cfg.dataset_id(level)
        if is_local(did) and not overwrite and level in prog.built:
            asked = prog.built[level].get("requested_transitions")
            if level == "medium-replay" or asked == cfg.transitions:  # (the replay buffer's size is the training's, not asked for)
                say(f"{did}: already built ({prog.built[level]['transitions']} transitions), skipping")
                continue
            say(f"{did}: built with --transitions {asked}, now {cfg.transitions}: collected again")
        eps = episodes(level)
        rets = [float(np.sum(e["rewards"])) for e in eps]
        desc = f"{level} data for {env_id}, built by dqltoolkit ({cfg.algo}, budget {cfg.budget}, seed {cfg.seed})"
        write_minari(did, eps, env_id, ref_min=ref_min, ref_max=ref_max, algorithm_name=f"dqltoolkit-{cfg.algo}", description=desc,
                     data_format=cfg.data_format, overwrite=True)
        prog.built[level] = {"dataset_id": did, "episodes": len(eps), "transitions": int(sum(len(e["actions"]) for e in eps)),
                             "requested_transitions": cfg.transitions if level != "medium-replay" else None,
                             "mean_return": float(np.mean(rets)), "normalized_score": 100 * (float(np.mean(rets)) - ref_min) / (ref_max - ref_min),
                             "sha256": table_sha256(load_minari(did))}
        _save_progress(d, prog)
        say(f"{did}: {len(eps)} episodes, {prog.built[level]['transitions']} transitions, behaviour return {np.mean(rets):.1f} "
            f"(normalised {prog.built[level]['normalized_score']:.1f})")
    return {lv: prog.built[lv] for lv in cfg.levels}


ENV_ACTION_DIMS = {"hopper": 3, "halfcheetah": 6, "walker2d": 6}
