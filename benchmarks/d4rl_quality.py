"""Quality benchmark on a locally built D4RL-style dataset: final normalised scores of diffusion-ql,
td3bc and diffusion-bc trained for the same number of gradient steps, several seeds each (trained in one
process through the member dimension), next to the behaviour policy's score.

    python benchmarks/d4rl_quality.py --task hopper-medium-v2 --steps 20000 --eval-freq 2000 --seeds 0-2 --out runs/quality

Needs the dataset: `dqltoolkit dataset build hopper --levels medium` (or the official Minari copy).
Prints a markdown table and writes it, with every run's results, to OUT/quality.md and OUT/quality.json;
with ``--eval-freq``, every seed is also evaluated during training and OUT/quality.png shows the
normalised score against gradient steps (mean and range over seeds) with the behaviour policy's score.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--task", default="hopper-medium-v2")
    p.add_argument("--agents", default="diffusion-ql,td3bc,diffusion-bc")
    p.add_argument("--steps", type=int, default=5000)
    p.add_argument("--seeds", default="0-2")
    p.add_argument("--episodes", type=int, default=10)
    p.add_argument("--eval-freq", type=int, default=0, help="evaluate every seed every N steps (0: only at the end)")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default="runs/quality")
    p.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE",
                   help="config override for every agent, as in `dqltoolkit train -p` (repeatable)")
    a = p.parse_args()

    import dqltoolkit
    from dqltoolkit.config import parse_overrides
    from dqltoolkit.tasks import get_task
    from dqltoolkit.training import parse_seeds

    overrides = parse_overrides(a.param)

    task = get_task(a.task)
    table = task.load_dataset()
    ends = np.flatnonzero(np.maximum(table["terminals"], table.get("timeouts", np.zeros_like(table["terminals"]))) > 0)
    starts = np.concatenate([[0], ends[:-1] + 1])
    behaviour = float(np.mean([table["rewards"][s : e + 1].sum() for s, e in zip(starts, ends)])) if len(ends) else float("nan")
    rows, runs = [], {}
    for agent in [x.strip() for x in a.agents.split(",") if x.strip()]:
        t0 = time.perf_counter()
        res = dqltoolkit.train(agent, a.task, Path(a.out) / agent, steps=a.steps, seeds=parse_seeds(a.seeds), device=a.device,
                               overrides={**overrides, "eval_episodes": a.episodes, "eval_freq": a.eval_freq}, progress=True, verbose=False)
        wall = time.perf_counter() - t0
        scores = [e["normalized_score"] for e in res.results["evaluation"]]
        runs[agent] = {"wall_s": wall, **res.results}
        rows.append((agent, float(np.mean(scores)), float(np.std(scores)), scores, res.results["steps_per_s"], wall))
    lines = [f"{a.task}, {a.steps} gradient steps, seeds {a.seeds}, {a.episodes} evaluation episodes each"
             + (f", {' '.join(a.param)}" if a.param else ""),
             f"behaviour policy (dataset episodes): return {behaviour:.1f}, normalised {task.normalized_score(behaviour):.1f}", "",
             "| agent | normalised score (mean +- std over seeds) | per seed | train steps/s (all seeds) | wall time |", "|---|---:|---|---:|---:|"]
    for agent, m, s, per, sps, wall in rows:
        lines.append(f"| {agent} | {m:.1f} +- {s:.1f} | {', '.join(f'{x:.1f}' for x in per)} | {sps:.1f} | {wall:.0f} s |")
    text = "\n".join(lines)
    print(text)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "quality.md").write_text(text + "\n")
    (out / "quality.json").write_text(json.dumps({"behaviour_return": behaviour, "runs": runs}, indent=2, default=str))
    if any(r.get("evaluations") for r in runs.values()):
        plot_curves(runs, task.normalized_score(behaviour), f"{a.task}: {a.steps} gradient steps, seeds {a.seeds}", out / "quality.png")
        print(f"figure: {out / 'quality.png'}")


def plot_curves(runs: dict, behaviour_score: float, title: str, path: Path) -> None:
    """Normalised score against gradient steps per agent from the periodic evaluations: mean over seeds,
    shaded from the worst to the best seed, and the behaviour policy's score as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for agent, run in runs.items():
        hist = run.get("evaluations") or []
        steps = [h["step"] for h in hist]
        per = np.array([h.get("normalized_score_per_seed", [h["normalized_score"]]) for h in hist])
        if not len(per):
            continue
        line, = ax.plot(steps, per.mean(1), marker="o", ms=3, label=agent)
        ax.fill_between(steps, per.min(1), per.max(1), color=line.get_color(), alpha=0.2)
    ax.axhline(behaviour_score, color="k", ls="--", lw=1, label="behaviour policy (data)")
    ax.set_xlabel("gradient step")
    ax.set_ylabel("D4RL normalised score")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
