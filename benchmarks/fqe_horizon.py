"""Does FQE's ranking of a run's checkpoints settle with the fitting steps? Fits FQE to the chosen checkpoints
side by side (``dqltoolkit.fqe.estimate_many``: one member per checkpoint and seed, the same subset, starts and
batches as `dqltoolkit select` draws), records J every ``--every`` fitting steps and, where the run has online
evaluations at those checkpoints, Spearman's rank correlation of J with them at each of those steps. Prints JSON;
``--plot`` draws both against the fitting steps. docs/results.md (hopper-medium-replay, offline FQE) reports it:

    python benchmarks/fqe_horizon.py ~/dqltoolkit-campaign/results-hopper/trials/diffusion-ql_hopper-medium-replay-v2_seed0 \\
        --checkpoints 10000,190000 --steps 60000 > docs/results/fqe_horizon_seed0.json

The fit is `select`'s own (same code, same settings but the step count), up to the number of members fitted
together (a member's initial weights depend on it).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any, Dict, List

import torch
import yaml

from dqltoolkit.agent import Agent
from dqltoolkit.evaluation import evaluate_members
from dqltoolkit.fqe import FQEConfig, estimate_many
from dqltoolkit.report_records import curves_of_run
from dqltoolkit.stats import spearman
from dqltoolkit.tasks import get_task


def rank_correlations(trace: Dict[int, List[float]], online: Dict[int, List[float]], n_ckpt: int) -> Dict[int, Dict[int, float]]:
    """``{fitting step: {seed: Spearman of J with the online scores over the checkpoints}}``; ``trace`` lists the
    members checkpoint by checkpoint (each checkpoint's seeds together), as :func:`estimate_many` fits them."""
    seeds = list(online)
    out: Dict[int, Dict[int, float]] = {}
    for step, values in sorted(trace.items()):
        out[step] = {s: spearman([values[c * len(seeds) + m] for c in range(n_ckpt)], online[s]) for m, s in enumerate(seeds)}
    return out


def monte_carlo(run: Path, ckpts: List[int], seeds: List[int], episodes: int, task: str,
                online: Dict[int, List[float]]) -> Dict[str, Any]:
    """Each checkpoint's discounted return over ``episodes`` played from the run's own evaluation seeds (seed + 100 +
    i, so the undiscounted side of these episodes is the run's evaluation): the value FQE's J estimates, per seed."""
    mc: Dict[int, List[float]] = {s: [] for s in seeds}
    t = time.time()
    for c in ckpts:
        agent = Agent.load(run / f"model_step{c}.zip", device="cpu")
        gamma = float(agent.config.to_dict().get("gamma", 0.99))
        for s, r in zip(seeds, evaluate_members(agent, get_task(task).make_env, episodes=episodes, gamma=gamma)):
            mc[s].append(r["mean_return"])
    out: Dict[str, Any] = {"mc_episodes": episodes, "mc_gamma": gamma, "mc_wall_s": round(time.time() - t), "mc_value": mc}
    if online:
        out["mc_spearman"] = {s: spearman(mc[s], online[s]) for s in online}
    return out


def table_rows(result: Dict[str, Any], best_of_run: Dict[int, float], at: str) -> List[str]:
    """``| run, seed | at each fitting step: pick -> its evaluation (Spearman) | played out: the same | best of these |
    best of the run |``: whether a longer fit picks better, and whether the value FQE aims at would."""
    ckpts, online = result["checkpoints"], result["online"]
    def cell(values: List[float], scores: List[float]) -> str:
        c = max(range(len(ckpts)), key=lambda i: values[i])
        return f"{ckpts[c] // 1000}k → {scores[c]:.1f} ({spearman(values, scores):+.1f})"

    rows, n = [], len(online)
    for m, s in enumerate(online):
        cells = [cell([result["trace"][int(k)][c * n + m] for c in range(len(ckpts))], online[s]) for k in at.split(",")]
        cells.append(cell(result["mc_value"][s], online[s]) if "mc_value" in result else "—")
        rows.append(f"| {result['run']} seed {s} | " + " | ".join(cells) + f" | {max(online[s]):.1f} | {best_of_run[s]:.1f} |")
    return rows


def plot(result: Dict[str, Any], path: Path) -> None:
    """J of each checkpoint against the fitting steps (first seed), and the rank correlation per seed beside it."""
    from dqltoolkit.plots import pyplot, save_figure

    plt = pyplot()
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 3.8))
    steps = sorted(int(k) for k in result["trace"])
    seeds = list(result["online"]) or [None]
    for c, ckpt in enumerate(result["checkpoints"]):
        label = f"checkpoint {ckpt // 1000}k" + (f" (online {result['online'][seeds[0]][c]:.1f})" if seeds[0] is not None else "")
        (line,) = ax.plot(steps, [result["trace"][st][c * len(seeds)] for st in steps], "o-", ms=3, label=label)
        if "mc_value" in result:  # where J should end up: the checkpoint's discounted return, played out
            ax.axhline(result["mc_value"][seeds[0]][c], color=line.get_color(), ls=":", lw=1)
    ax.set(xlabel="FQE fitting step", ylabel="J (seed %s)" % seeds[0],
           title="FQE value of each checkpoint" + (" (dotted: played out)" if "mc_value" in result else ""))
    ax.legend(fontsize=7)
    for s in result["online"]:
        bx.plot(steps, [result["spearman"][st][s] for st in steps], "o-", ms=3, label=f"seed {s}")
    bx.axhline(0, color="grey", lw=0.8)
    bx.set(xlabel="FQE fitting step", ylabel="Spearman(J, online score)", ylim=(-1.05, 1.05),
           title="how FQE orders the checkpoints")
    bx.legend(fontsize=7)
    fig.suptitle(f"{result['run']}", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", type=Path, help="a run folder with kept checkpoints (model_step<N>.zip)")
    p.add_argument("--checkpoints", default="10000,190000", help="steps of the checkpoints to fit side by side")
    p.add_argument("--steps", type=int, default=60_000, help="FQE fitting steps")
    p.add_argument("--every", type=int, default=5_000, help="trace J every N fitting steps")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--plot", type=Path, default=None, help="draw J and the rank correlation against the fitting steps")
    p.add_argument("--mc-episodes", type=int, default=0,
                   help="also play each checkpoint N episodes (the run's evaluation seeds) for its discounted return: what J "
                        "should converge to, and how that orders the checkpoints")
    p.add_argument("--table", action="store_true", help="print markdown rows (one per seed) instead of the JSON: each "
                   "pick's evaluation and rank correlation, by J at the --table-at fitting steps and by the played-out value")
    p.add_argument("--table-at", default="20000,100000", help="fitting steps the --table rows show")
    p.add_argument("--from-json", type=Path, default=None,
                   help="no fit: take checkpoints and trace from an earlier output of this script, add the rest")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    doc = yaml.safe_load((a.run / "config.yaml").read_text())
    seeds = [int(x) for x in doc["seeds"]]
    if a.from_json is not None:
        earlier = json.loads(a.from_json.read_text())
        ckpts, wall = [int(c) for c in earlier["checkpoints"]], earlier.get("wall_s")
        trace = {int(k): [float(x) for x in v] for k, v in earlier["trace"].items()}
        fqe_steps, threads = max(trace), earlier.get("threads")
        kept = {k: earlier[k] for k in ("mc_episodes", "mc_gamma", "mc_wall_s") if k in earlier and a.mc_episodes == 0}
        if kept and "mc_value" in earlier:  # an earlier play-out is kept, not played again
            kept["mc_value"] = {int(k): v for k, v in earlier["mc_value"].items()}
    else:
        ckpts, fqe_steps, threads = [int(s) for s in a.checkpoints.split(",")], a.steps, a.threads
        table = get_task(str(doc["env"])).load_dataset()
        agents = [Agent.load(a.run / f"model_step{s}.zip", device="cpu") for s in ckpts]
        trace = {}
        t = time.time()
        estimate_many(agents, table, cfg=FQEConfig(steps=a.steps), trace=trace, trace_every=a.every)
        wall = round(time.time() - t)
    online: Dict[int, List[float]] = {}
    best_of_run: Dict[int, float] = {}
    if (a.run / "metrics.csv").is_file():
        for s, curve in curves_of_run(a.run, seeds).items():
            at = {int(st): float(v) for st, v in curve["evaluations"]}
            if all(c in at for c in ckpts):
                online[s] = [at[c] for c in ckpts]
                best_of_run[s] = max(at.values())
    result = {"run": a.run.name, "checkpoints": ckpts, "fqe_steps": fqe_steps, "threads": threads, "wall_s": wall,
              "trace": trace, "online": online,
              "spearman": rank_correlations(trace, online, len(ckpts)) if len(online) == len(seeds) else {}}
    if a.mc_episodes > 0:
        result.update(monte_carlo(a.run, ckpts, seeds, a.mc_episodes, str(doc["env"]), online))
    elif a.from_json is not None and kept:
        result.update(kept)
        if online and "mc_value" in kept:
            result["mc_spearman"] = {s: spearman(kept["mc_value"][s], online[s]) for s in online}
    if a.table:
        print("\n".join(table_rows(result, best_of_run, a.table_at)))
        return
    print(json.dumps(result))
    if a.plot is not None:
        plot(result, a.plot)


if __name__ == "__main__":
    main()
