"""The policy-class ablation: the paper's bandit figure as one job.

Eight variants, BC and QL, each with a Gaussian (MLE), CVAE, MMD-regularised and diffusion policy, are
trained on the same data by the same loop, one process per run so that both cores work, and their
1,000 policy samples are scored by mode. Each variant is just a recipe in ``agents/``.
"""

from __future__ import annotations

import csv
import math
import os
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np


@dataclass(frozen=True)
class Variant:
    name: str  # the paper's panel title
    recipe: str  # agents/<recipe>.yaml
    head: str  # policy class: mle, cvae, mmd, diffusion
    objective: str  # bc or ql


VARIANTS = (
    Variant("BC-MLE", "gaussian-bc", "mle", "bc"),
    Variant("BC-CVAE", "cvae-bc", "cvae", "bc"),
    Variant("BC-MMD", "mmd-bc", "mmd", "bc"),
    Variant("BC-Diffusion", "diffusion-bc", "diffusion", "bc"),
    Variant("QL-MLE (TD3+BC)", "ql-gaussian", "mle", "ql"),
    Variant("QL-CVAE (BCQ)", "ql-cvae", "cvae", "ql"),
    Variant("QL-MMD (BEAR)", "ql-mmd", "mmd", "ql"),
    Variant("Diffusion-QL", "diffusion-ql", "diffusion", "ql"),
)
HEAD_CHOICES = sorted({v.head for v in VARIANTS})
OBJECTIVE_CHOICES = sorted({v.objective for v in VARIANTS})
COLUMNS = ["variant", "head", "objective", "seed", "share_top_left", "share_bottom_left", "share_top_right", "share_bottom_right",
           "off_data_share", "best_mode_share", "mean_reward"]


def select(heads: Optional[Sequence[str]] = None, objectives: Optional[Sequence[str]] = None) -> List[Variant]:
    for given, known, what in ((heads, HEAD_CHOICES, "head"), (objectives, OBJECTIVE_CHOICES, "objective")):
        bad = [g for g in (given or []) if g not in known]
        if bad:
            raise ValueError(f"unknown ablation {what}(s) {bad}; choose from {known}")
    return [v for v in VARIANTS if (not heads or v.head in heads) and (not objectives or v.objective in objectives)]


@dataclass(frozen=True)
class Modes:
    """What the table scores samples against: the env's declared modes (``mode_names``,
    ``mode_centres``, ``mode_means``, ``mode_radius`` on the unwrapped env)."""

    names: tuple
    centres: np.ndarray
    means: np.ndarray
    radius: float

    @classmethod
    def of(cls, env) -> "Modes":
        e = env.unwrapped
        missing = [a for a in ("mode_names", "mode_centres", "mode_means", "mode_radius") if not hasattr(e, a)]
        if missing:
            raise ValueError(f"the ablation scores samples by mode: {type(e).__name__} must declare {missing} (see Bandit2DEnv)")
        return cls(tuple(e.mode_names), np.asarray(e.mode_centres, np.float32), np.asarray(e.mode_means, np.float32), float(e.mode_radius))

    def shares(self, actions: np.ndarray) -> Dict[str, float]:
        from .envs.bandit2d import mode_shares

        return mode_shares(actions, self.names, self.centres, self.radius)

    @property
    def best(self) -> str:
        return self.names[int(np.argmax(self.means))]


def _run_one(variant: Variant, env: str, seed: int, out: str, steps: Optional[int], overrides: Dict[str, object]) -> Dict[str, object]:
    """One training run in a worker process (one thread: the pool runs one process per core)."""
    import torch

    torch.set_num_threads(1)
    from .training import sample_policy_actions, train

    run_dir = Path(out) / f"{variant.recipe}_seed{seed}"
    res = train(variant.recipe, env, run_dir, steps=steps, seeds=[seed], device="cpu", overrides=overrides, progress=False, verbose=False,
                replace_unfinished=True,  # a rerun after Ctrl-C redoes its short runs
                overrides_where_read=True)  # -p T=3 reaches the diffusion variants, not the Gaussian ones
    ev = res.results["evaluation"][0]
    from .agent import Agent

    agent = Agent.load(res.checkpoints[0], device="cpu")
    from .tasks import get_task

    observation, _ = get_task(env).make_env().reset(seed=seed)  # a constant observation: any reset gives it
    samples = sample_policy_actions(agent, 1000, seed, observation=observation)
    return {"variant": variant, "seed": seed, "mean_reward": ev["mean_return"], "samples": samples, "seconds": res.results["train_seconds"]}


def _row(variant: Variant, seed: int, samples: np.ndarray, mean_reward: float, modes: Modes) -> Dict[str, object]:
    sh = modes.shares(samples)
    row: Dict[str, object] = {"variant": variant.name, "head": variant.head, "objective": variant.objective, "seed": seed}
    for name in modes.names:
        row[f"share_{name}"] = sh[name]
    row["off_data_share"] = sh["off_data"]
    row["best_mode_share"] = sh[modes.best]
    row["mean_reward"] = mean_reward
    return row


def columns(modes: Modes) -> List[str]:
    return ["variant", "head", "objective", "seed", *[f"share_{n}" for n in modes.names], "off_data_share", "best_mode_share", "mean_reward"]


def markdown_table(rows: List[Dict[str, object]]) -> str:
    cols = list(rows[0]) if rows else COLUMNS
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        cells = [f"{r[c]:.3f}" if isinstance(r[c], float) else str(r[c]) for c in cols]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run_ablation(env: str = "bandit2d-v0", out: Path | str = "runs/ablation", heads: Optional[Sequence[str]] = None,
                 objectives: Optional[Sequence[str]] = None, seeds: Sequence[int] = (0,), steps: Optional[int] = None,
                 overrides: Optional[Dict[str, object]] = None, workers: Optional[int] = None, progress: bool = True,
                 on_done: Optional[Callable[[str], None]] = None) -> Dict[str, object]:
    """Train every selected variant for every seed; write ablation.csv and ablation.png into ``out``."""
    from .plots import plot_bandit_grid
    from .tasks import get_task

    task = get_task(env)
    probe = task.make_env()
    if probe.action_space.shape != (2,):
        raise ValueError(f"the ablation needs a 2-D action space; {env} has {probe.action_space.shape}")
    modes = Modes.of(probe)
    variants = select(heads, objectives)
    if not variants:
        raise ValueError("no variant matches the selected heads and objectives")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    jobs = [(v, s) for v in variants for s in seeds]
    workers = workers or min(len(jobs), os.cpu_count() or 1)
    results = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(jobs), unit="run", desc="ablation", dynamic_ncols=True)
    import multiprocessing as mp

    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
        pending = {pool.submit(_run_one, v, env, s, str(out), steps, dict(overrides or {})) for v, s in jobs}
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                r = fut.result()
                results.append(r)
                msg = f"{r['variant'].name} seed {r['seed']}: mean reward {r['mean_reward']:.2f} ({r['seconds']:.0f}s)"
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix_str(msg)
                if on_done:
                    on_done(msg)
    if bar is not None:
        bar.close()
    order = {(v.name, s): i for i, (v, s) in enumerate(jobs)}
    results.sort(key=lambda r: order[(r["variant"].name, r["seed"])])
    rows = [_row(r["variant"], r["seed"], r["samples"], float(r["mean_reward"]), modes) for r in results]
    with open(out / "ablation.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns(modes))
        w.writeheader()
        w.writerows(rows)
    first_seed = [r for r in results if r["seed"] == seeds[0]]
    dataset = task.load_dataset()["actions"]
    plot_bandit_grid([(f"{r['variant'].name}\nbest mode {modes.shares(r['samples'])[modes.best]:.0%}", r["samples"]) for r in first_seed],
                     dataset, out / "ablation.png", ncols=int(math.ceil((len(first_seed) + 1) / 2)) if len(first_seed) > 4 else len(first_seed) + 1)
    return {"rows": rows, "csv": out / "ablation.csv", "png": out / "ablation.png", "markdown": markdown_table(rows)}
