"""Issue 26's figure: normalised score against steps through the offline-to-online switch, per algorithm.

Reads the campaign's offline trials (``OUT/trials/<trial>/metrics.csv``) and their fine-tunes
(``OUT/finetune/<trial>_from<k>k/metrics.csv``, written by ``benchmarks/campaign.py finetune``; with ``--per-seed``
``<trial>_seed<s>_from<k>k``, gathered back into their trial), and writes
``finetune.png`` and ``finetune_table.md`` into ``--out``. The x axis is steps from the switch: gradient
steps before it (offline), environment steps per seed after it (each followed by one gradient step). The
table gives, per algorithm, the score at the switch (the last offline evaluation), the lowest score in the
first ``--dip-window`` online steps (the drop after the switch that Cal-QL describes) and the last one.

    python benchmarks/finetune_figure.py ~/dqltoolkit-campaign/results-hopper --from-step 200000 --out docs/finetune
"""

from __future__ import annotations

import argparse
import csv
import re
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np


def seed_curves(metrics: Path) -> Dict[int, List[Tuple[int, float]]]:
    """Per seed, ``[(step, normalised score)]`` from a run's metrics.csv (``eval/normalized_score_seed<s>``,
    or ``eval/normalized_score`` for a one-seed run, or the returns where a task has no normalised score)."""
    with open(metrics, newline="") as f:
        rows = list(csv.DictReader(f))
    header = rows[0].keys() if rows else []
    key = "normalized_score" if any(h.startswith("eval/normalized_score") for h in header) else "mean_return"
    cols = {int(h.rsplit("seed", 1)[1]): h for h in header if h.startswith(f"eval/{key}_seed")} or {0: f"eval/{key}"}
    out: Dict[int, List[Tuple[int, float]]] = {}
    for s, col in cols.items():
        points = {int(float(r["time/step"])): float(r[col]) for r in rows if r.get(col) not in (None, "") and r.get("time/step")}
        out[s] = sorted(points.items())
    return out


def through_switch(offline: Path, online: Path, from_step: int) -> Dict[int, List[Tuple[int, float]]]:
    """Each seed's evaluations up to the switch (offline run) and after it (fine-tune), steps relative to it."""
    before, after = seed_curves(offline / "metrics.csv"), seed_curves(online / "metrics.csv")
    return {s: [(st - from_step, v) for st, v in before.get(s, []) if st <= from_step]
            + [(st - from_step, v) for st, v in after.get(s, []) if st > from_step] for s in after}


def by_trial(campaign: Path, from_step: int) -> Dict[str, Dict[int, List[Tuple[int, float]]]]:
    """Trial -> seed -> its curve through the switch, for every fine-tune from ``from_step``. A per-seed run
    (``<trial>_seed<k>``, from ``campaign.py --per-seed``) is one seed of its trial, so its curve goes in under
    seed k: the figure and the table show one line per algorithm whichever way its seeds were run."""
    out: Dict[str, Dict[int, List[Tuple[int, float]]]] = {}
    for run in sorted((campaign / "finetune").glob(f"*_from{from_step // 1000}k")):
        name = run.name.rsplit("_from", 1)[0]
        curves = through_switch(campaign / "trials" / name, run, from_step)
        one_seed = re.fullmatch(r"(.+)_seed(\d+)", name)
        if one_seed:
            if len(curves) != 1:
                raise SystemExit(f"{run}: a per-seed run ({name}) whose metrics.csv has {len(curves)} seeds' evaluations")
            name, seed = one_seed.group(1), int(one_seed.group(2))
            curves = {seed: next(iter(curves.values()))}
        for seed, points in curves.items():
            if seed in out.setdefault(name, {}):
                raise SystemExit(f"{run}: seed {seed} of {name} is also in another fine-tune from step {from_step}")
            out[name][seed] = points
    return out


def summary(curves: Dict[int, List[Tuple[int, float]]], dip_window: int) -> Dict[str, float]:
    """Mean over seeds of: the last offline evaluation, the lowest in the first ``dip_window`` online steps, the last."""
    at, dip, last = [], [], []
    for points in curves.values():
        off = [v for st, v in points if st <= 0]
        on = [v for st, v in points if st > 0]
        if not off or not on:
            continue
        at.append(off[-1])
        dip.append(min(v for st, v in points if 0 < st <= dip_window) if any(0 < st <= dip_window for st, _ in points) else on[0])
        last.append(on[-1])
    return {"seeds": len(at), "switch": float(np.mean(at)) if at else float("nan"), "dip": float(np.mean(dip)) if dip else float("nan"),
            "last": float(np.mean(last)) if last else float("nan")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("campaign", type=Path, help="the campaign folder of one sweep (OUT/<sweep name>)")
    p.add_argument("--from-step", type=int, default=200_000)
    p.add_argument("--dip-window", type=int, default=20_000, help="online steps in which the drop after the switch is looked for")
    p.add_argument("--out", type=Path, default=Path("docs/finetune"))
    a = p.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    a.out.mkdir(parents=True, exist_ok=True)
    trials = by_trial(a.campaign, a.from_step)
    if not trials:
        raise SystemExit(f"{a.campaign / 'finetune'}: no fine-tune from step {a.from_step} (run benchmarks/campaign.py finetune first)")
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    lines = ["| trial | seeds | at the switch | lowest in the first {:,} online steps | last | online steps |".format(a.dip_window),
             "|---|---:|---:|---:|---:|---:|"]
    for trial, curves in trials.items():
        steps = sorted({st for pts in curves.values() for st, _ in pts})
        mean = [np.mean([v for pts in curves.values() for st, v in pts if st == x]) for x in steps]
        lo = [min(v for pts in curves.values() for st, v in pts if st == x) for x in steps]
        hi = [max(v for pts in curves.values() for st, v in pts if st == x) for x in steps]
        (line,) = ax.plot(steps, mean, marker="o", ms=3, label=trial)
        ax.fill_between(steps, lo, hi, color=line.get_color(), alpha=0.15)
        s = summary(curves, a.dip_window)
        lines.append(f"| {trial} | {s['seeds']} | {s['switch']:.1f} | {s['dip']:.1f} | {s['last']:.1f} | {max(steps):,} |")
    ax.axvline(0, color="k", lw=0.8, ls="--")
    ax.set_xlabel("steps from the switch (offline: gradient steps; online: env steps per seed)")
    ax.set_ylabel("normalised score (mean over seeds, band: min-max)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(a.out / "finetune.png", dpi=110)
    (a.out / "finetune_table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote {a.out / 'finetune.png'} and {a.out / 'finetune_table.md'}")


if __name__ == "__main__":
    main()
