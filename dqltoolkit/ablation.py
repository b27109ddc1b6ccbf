"""The policy-class ablation, the paper's bandit figure as one job: BC and QL with a Gaussian, CVAE, MMD and
diffusion policy (each a recipe in ``agents/``), one process per run, their 1,000 policy samples scored by mode.
A recipe with a top-level ``ablation: {panel: ..., head: ..., objective: ...}`` block (shipped or in a
``--recipe-dir``) is an extra panel, joining with ``--extra`` or by name (``--panels``).
"""

from __future__ import annotations

import csv
import math
import multiprocessing as mp
import os
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from .agent import Agent
from .config import ConfigError, catalogue_dir, read_recipe_yaml
from .envs.bandit2d import mode_shares
from .plots import plot_bandit_grid
from .tasks import get_task
from .training import sample_policy_actions, train


@dataclass(frozen=True)
class Variant:
    name: str  # the panel's title (the paper's, for the eight)
    recipe: str  # a recipe name in agents/, or the path of a recipe file
    head: str  # policy class label: mle, cvae, mmd, diffusion (extra panels bring their own)
    objective: str  # objective label: bc or ql (extra panels bring their own)
    #: what the panel scores: "policy" (the head's samples, no candidate selection: the paper's figure) or "acted"
    #: (``predict(deterministic=False)``: for policies that *are* a selection among candidates, e.g. IDQL's resampling)
    samples: str = "policy"

    @property
    def slug(self) -> str:
        """The recipe's name without folder or suffix: what the run folders are named after."""
        return Path(self.recipe).stem if self.recipe.endswith((".yaml", ".yml")) else self.recipe


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
#: the keys of a recipe's ``ablation:`` block, all required, and the optional ones with their choices
PANEL_KEYS = ("panel", "head", "objective")
OPTIONAL_PANEL_KEYS = {"samples": ("policy", "acted")}
COLUMNS = ["variant", "head", "objective", "seed", "share_top_left", "share_bottom_left", "share_top_right", "share_bottom_right",
           "off_data_share", "best_mode_share", "mean_reward"]


def _panel_of(path: Path, recipe: str) -> Optional[Variant]:
    """The panel a recipe file declares, or None. A malformed block is an error naming the file and field."""
    doc = read_recipe_yaml(path)
    block = doc.get("ablation") if isinstance(doc, dict) else None
    if block is None:
        return None
    if not isinstance(block, dict):
        raise ConfigError(f"{path} [ablation]: expected a mapping {{panel: ..., head: ..., objective: ...}}, got {type(block).__name__}")
    unknown = sorted(set(block) - set(PANEL_KEYS) - set(OPTIONAL_PANEL_KEYS))
    if unknown:
        raise ConfigError(f"{path} [ablation]: unknown key(s) {unknown}; an ablation block has {list(PANEL_KEYS)} "
                          f"and optionally {list(OPTIONAL_PANEL_KEYS)}")
    for key, choices in OPTIONAL_PANEL_KEYS.items():
        if key in block and block[key] not in choices:
            raise ConfigError(f"{path} [ablation] {key}: expected one of {list(choices)}, got {block[key]!r}")
    for key in PANEL_KEYS:
        value = block.get(key)
        if not isinstance(value, str) or not value.strip() or len(value) > 80:
            raise ConfigError(f"{path} [ablation] {key}: expected a non-empty string of at most 80 characters, got {value!r}")
    return Variant(block["panel"].strip(), recipe, block["head"].strip(), block["objective"].strip(), block.get("samples", "policy"))


def declared_panels(recipe_dirs: Iterable[Path | str] = ()) -> List[Variant]:
    """Extra panels: the recipes with an ``ablation:`` block, shipped (by name) then in ``recipe_dirs`` (by path), in
    file-name order; two panels with one title (or run folder) are an error naming both recipes."""
    shipped = catalogue_dir("agents")
    found: List[Variant] = []
    for folder in [shipped, *map(Path, recipe_dirs)]:
        if not folder.is_dir():
            raise ConfigError(f"recipe folder {folder} does not exist or is not a folder")
        panels = (_panel_of(path, path.stem if folder == shipped else str(path)) for path in sorted(folder.glob("*.yaml")))
        found.extend(p for p in panels if p is not None)
    seen = {v.name: v.recipe for v in VARIANTS}
    folders = {v.slug: v.recipe for v in VARIANTS}  # runs are stored in <slug>_seed<N>: one folder per panel
    for v in found:
        if v.name in seen:
            raise ConfigError(f"ablation panel {v.name!r} is declared by {v.recipe} and by {seen[v.name]}: panel titles must differ")
        if v.slug in folders:
            raise ConfigError(f"ablation panel {v.name!r} ({v.recipe}) would train into the run folders of {folders[v.slug]} "
                              f"('{v.slug}_seed<N>'): rename the recipe file")
        seen[v.name] = folders[v.slug] = v.recipe
    return found


def all_panels(recipe_dirs: Iterable[Path | str] = ()) -> List[Variant]:
    """The paper's eight, then the declared extra panels."""
    return [*VARIANTS, *declared_panels(recipe_dirs)]


def __getattr__(name: str) -> Any:
    """``HEAD_CHOICES`` and ``OBJECTIVE_CHOICES``: the labels over every panel, read from the catalogue when asked."""
    if name in ("HEAD_CHOICES", "OBJECTIVE_CHOICES"):
        return sorted({getattr(v, name.split("_")[0].lower()) for v in all_panels()})
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def select(heads: Optional[Sequence[str]] = None, objectives: Optional[Sequence[str]] = None, panels: Optional[Sequence[str]] = None,
           extra: bool = False, recipe_dirs: Iterable[Path | str] = ()) -> List[Variant]:
    """The paper's eight (``extra``: and every declared panel; ``panels``: exactly those titles), filtered by labels."""
    every = all_panels(recipe_dirs)
    for given, what in ((heads, "head"), (objectives, "objective")):
        known = sorted({getattr(v, what) for v in every})
        bad = [g for g in (given or []) if g not in known]
        if bad:
            raise ValueError(f"unknown ablation {what}(s) {bad}; choose from {known}")
    if panels:
        by_name = {v.name: v for v in every}
        bad = [p for p in panels if p not in by_name]
        if bad:
            raise ValueError(f"unknown ablation panel(s) {bad}; choose from {list(by_name)}")
        chosen = [by_name[p] for p in dict.fromkeys(panels)]
    else:
        chosen = every if extra else list(VARIANTS)
    return [v for v in chosen if (not heads or v.head in heads) and (not objectives or v.objective in objectives)]


def grid_columns(panels: int) -> int:
    """Figure columns for ``panels`` panels plus the dataset's: the paper's eight keep 2 x 5; more fill rows of five."""
    return panels + 1 if panels <= 4 else int(math.ceil((panels + 1) / 2)) if panels <= 9 else 5


@dataclass(frozen=True)
class Modes:
    """The env's declared modes (``mode_names``, ``mode_centres``, ``mode_means``, ``mode_radius``) samples are scored by."""

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
        return mode_shares(actions, self.names, self.centres, self.radius)

    @property
    def best(self) -> str:
        return self.names[int(np.argmax(self.means))]


def _run_one(variant: Variant, env: str, seed: int, out: str, steps: Optional[int], overrides: Dict[str, object]) -> Dict[str, object]:
    """One training run in a worker process (one thread: the pool runs one process per core)."""
    torch.set_num_threads(1)
    run_dir = Path(out) / f"{variant.slug}_seed{seed}"
    res = train(variant.recipe, env, run_dir, steps=steps, seeds=[seed], device="cpu", overrides=overrides, progress=False, verbose=False,
                replace_unfinished=True,  # a rerun after Ctrl-C redoes its short runs
                overrides_where_read=True)  # -p T=3 reaches the diffusion variants, not the Gaussian ones
    ev = res.results["evaluation"][0]
    agent = Agent.load(res.checkpoints[0], device="cpu")
    observation, _ = get_task(env).make_env().reset(seed=seed)  # a constant observation: any reset gives it
    if variant.samples == "acted":  # the policy is the selection among candidates: score what it does
        agent.set_random_seed(seed)
        samples = agent.predict(np.repeat(np.asarray(observation, np.float32)[None], 1000, axis=0), deterministic=False)[0]
    else:
        samples = sample_policy_actions(agent, 1000, seed, observation=observation)
    return {"variant": variant, "seed": seed, "mean_reward": ev["mean_return"], "samples": samples, "seconds": res.results["train_seconds"]}


def _row(variant: Variant, seed: int, samples: np.ndarray, mean_reward: float, modes: Modes) -> Dict[str, object]:
    sh = modes.shares(samples)
    return {"variant": variant.name, "head": variant.head, "objective": variant.objective, "seed": seed,
            **{f"share_{name}": sh[name] for name in modes.names}, "off_data_share": sh["off_data"], "best_mode_share": sh[modes.best],
            "mean_reward": mean_reward}


def columns(modes: Modes) -> List[str]:
    return ["variant", "head", "objective", "seed", *[f"share_{n}" for n in modes.names], "off_data_share", "best_mode_share", "mean_reward"]


def markdown_table(rows: List[Dict[str, object]]) -> str:
    cols = list(rows[0]) if rows else COLUMNS
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(f"{r[c]:.3f}" if isinstance(r[c], float) else str(r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def run_ablation(env: str = "bandit2d-v0", out: Path | str = "runs/ablation", heads: Optional[Sequence[str]] = None,
                 objectives: Optional[Sequence[str]] = None, seeds: Sequence[int] = (0,), steps: Optional[int] = None,
                 overrides: Optional[Dict[str, object]] = None, workers: Optional[int] = None, progress: bool = True,
                 on_done: Optional[Callable[[str], None]] = None, panels: Optional[Sequence[str]] = None, extra: bool = False,
                 recipe_dirs: Iterable[Path | str] = ()) -> Dict[str, object]:
    """Train every selected variant (see :func:`select`) for every seed; write ablation.csv and ablation.png into ``out``."""
    task = get_task(env)
    probe = task.make_env()
    if probe.action_space.shape != (2,):
        raise ValueError(f"the ablation needs a 2-D action space; {env} has {probe.action_space.shape}")
    modes = Modes.of(probe)
    variants = select(heads, objectives, panels=panels, extra=extra, recipe_dirs=list(recipe_dirs))
    if not variants:
        raise ValueError("no variant matches the selected heads and objectives")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    jobs = [(v, s) for v in variants for s in seeds]
    workers = workers or min(len(jobs), os.cpu_count() or 1)
    results = []
    with (tqdm(total=len(jobs), unit="run", desc="ablation", dynamic_ncols=True, disable=not progress) as bar,
          ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool):
        pending = {pool.submit(_run_one, v, env, s, str(out), steps, dict(overrides or {})) for v, s in jobs}
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                r = fut.result()
                results.append(r)
                msg = f"{r['variant'].name} seed {r['seed']}: mean reward {r['mean_reward']:.2f} ({r['seconds']:.0f}s)"
                bar.update(1)
                bar.set_postfix_str(msg)
                if on_done:
                    on_done(msg)
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
                     dataset, out / "ablation.png", ncols=grid_columns(len(first_seed)))
    return {"rows": rows, "csv": out / "ablation.csv", "png": out / "ablation.png", "markdown": markdown_table(rows)}
