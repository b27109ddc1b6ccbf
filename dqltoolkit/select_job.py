"""The ``select`` job: rank a run's kept checkpoints (``train --save-every N --keep-checkpoints K``) without the
simulator a user of offline RL lacks, by the BC-loss rule (dqltoolkit/selection.py) and fitted Q evaluation
(dqltoolkit/fqe.py), with each pick's regret where the run also has online evaluations at those steps.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import yaml

from .checkpoint import read_checkpoint
from .fqe import UNSETTLED, FQEConfig, estimates_by_checkpoint
from .plots import pyplot, save_figure
from .report_records import curves_of_run
from .selection import bc_pick, block_means, top_k_for
from .stats import spearman
from .tasks import get_task
from .training import kept_checkpoints

RULES = ("bc", "fqe")
RULE_COLOURS = {"bc": "tab:orange", "fqe": "tab:blue"}


class SelectError(ValueError):
    """A run folder that cannot be ranked; the message names the folder and what is missing."""


def checkpoints_of_run(run_dir: Path) -> Dict[int, Path]:
    """``{step: path}`` of a run's kept checkpoints (``model_step<N>.zip``) and its ``model_latest.zip``."""
    found = {int(p.stem[len("model_step"):]): p for p in kept_checkpoints(run_dir)}
    latest = Path(run_dir) / "model_latest.zip"
    if latest.is_file():
        step = int(read_checkpoint(latest)[0].get("num_timesteps", 0))
        found.setdefault(step, latest)
    return dict(sorted(found.items()))


def select_run(run_dir: Path | str, rules: Sequence[str] = RULES, fqe: FQEConfig = FQEConfig(), top_k: Optional[int] = None,
               device: str = "cpu", checkpoints: Optional[Sequence[int]] = None, together: bool = False) -> Dict[str, Any]:
    """Rank the run's checkpoints per seed by each rule; writes ``RUN/selection.json`` and returns it. ``checkpoints``:
    rank these steps only (a long FQE fit costs minutes a checkpoint, so a user spends it on a spread of them);
    ``together``: fit FQE to them side by side (:func:`dqltoolkit.fqe.estimate_many`). selection.json records both."""
    run_dir = Path(run_dir)
    bad = [r for r in rules if r not in RULES]
    if bad:
        raise SelectError(f"unknown rule(s) {bad}; choose from {', '.join(RULES)}")
    try:
        doc = yaml.safe_load((run_dir / "config.yaml").read_text())
        seeds, task = [int(s) for s in doc["seeds"]], str(doc["env"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SelectError(f"{run_dir / 'config.yaml'}: not a run's config ({exc})") from None
    ckpts = checkpoints_of_run(run_dir)
    if checkpoints is not None:
        wanted = sorted({int(c) for c in checkpoints})
        missing = [c for c in wanted if c not in ckpts]
        if missing:
            raise SelectError(f"{run_dir}: no checkpoint at step(s) {missing}; it has {sorted(ckpts)}")
        ckpts = {s: ckpts[s] for s in wanted}
    if len(ckpts) < 2:
        raise SelectError(f"{run_dir}: {len(ckpts)} checkpoint(s) to choose from; train with --save-every N --keep-checkpoints K")
    steps = list(ckpts)
    curves = curves_of_run(run_dir, seeds) if (run_dir / "metrics.csv").is_file() else {s: {"evaluations": [], "bc_loss": []} for s in seeds}
    j: Dict[int, List[float]] = {}
    drifts: Dict[int, List[float]] = {}
    if "fqe" in rules:
        table = get_task(task).load_dataset()
        j = estimates_by_checkpoint({s: str(p) for s, p in ckpts.items()}, table, fqe, device, cache=run_dir / "fqe_cache.json",
                                    together=together, drifts=drifts)
    k = top_k_for(task) if top_k is None else int(top_k)
    out: Dict[str, Any] = {"run": str(run_dir), "task": task, "checkpoints": {str(s): str(p.name) for s, p in ckpts.items()},
                           "top_k": k, "seeds": []}
    if "fqe" in rules:  # the protocol a reader needs to trust the FQE picks: how long, how many, fitted how
        out["fqe_settings"] = {**asdict(fqe), "together": bool(together)}
    for m, seed in enumerate(seeds):
        online = dict((int(st), v) for st, v in curves[seed]["evaluations"])
        rows = [{"step": st, "online": online.get(st)} for st in steps]
        picks: Dict[str, int] = {}
        if "bc" in rules and curves[seed]["bc_loss"]:
            means = block_means(curves[seed]["bc_loss"], steps)
            for row, v in zip(rows, means):
                row["bc_loss"] = None if math.isnan(v) else float(v)
            picks["bc"] = steps[bc_pick([(st, 0.0) for st in steps], curves[seed]["bc_loss"], k)]
        if "fqe" in rules:
            for row in rows:
                row["fqe"] = j[row["step"]][m]
                if row["step"] in drifts:
                    row["fqe_drift"] = drifts[row["step"]][m]
            picks["fqe"] = max(rows, key=lambda r: r["fqe"])["step"]
        entry: Dict[str, Any] = {"seed": seed, "rows": rows, "picks": picks}
        unsettled = [r["step"] for r in rows if r.get("fqe_drift", 0.0) > UNSETTLED]
        if unsettled:  # J still on its way: the order it gives is the fit's progress as much as the policies'
            entry["fqe_unsettled"] = unsettled
        if all(r["online"] is not None for r in rows):
            best = max(r["online"] for r in rows)
            entry["best_online"] = best
            entry["regret"] = {rule: best - online[st] for rule, st in picks.items()}
            entry["rank_correlation"] = _rank_correlations(rows)
        out["seeds"].append(entry)
    tmp = run_dir / "selection.json.tmp"
    tmp.write_text(json.dumps(out, indent=1))
    tmp.replace(run_dir / "selection.json")
    save_figure(selection_figure(out), run_dir / "selection.png", dpi=110)
    return out


def _rank_correlations(rows: List[Dict[str, Any]]) -> Dict[str, Optional[float]]:
    """Per rule, Spearman's correlation of what it ranks by with the online scores over all checkpoints (the BC
    loss negated: lower ranks higher). A pick's regret judges one checkpoint; this judges the whole order, which
    tells a lucky pick from a rule that reads the run. None where undefined (a constant side)."""
    online = [r["online"] for r in rows]
    out: Dict[str, Optional[float]] = {}
    for rule, key, sign in (("bc", "bc_loss", -1.0), ("fqe", "fqe", 1.0)):
        if all(r.get(key) is not None for r in rows):
            rho = spearman([sign * r[key] for r in rows], online)
            out[rule] = None if math.isnan(rho) else rho
    return out


def selection_figure(result: Dict[str, Any]):
    """One panel per seed: the online evaluation of each kept checkpoint (what a simulator would say), FQE's value of
    it on a second axis, and each rule's pick as a vertical line, so whether a rule ranks the checkpoints as the
    returns do is seen at a glance rather than read from the table."""
    plt = pyplot()
    seeds = result["seeds"]
    fig, axes = plt.subplots(1, len(seeds), figsize=(4.4 * len(seeds), 3.6), squeeze=False)
    for ax, e in zip(axes[0], seeds):
        steps = [r["step"] for r in e["rows"]]
        online = [np.nan if r["online"] is None else r["online"] for r in e["rows"]]
        handles = []
        if not np.all(np.isnan(online)):
            handles += ax.plot(steps, online, "o-", color="black", label="online evaluation")
        else:
            ax.text(0.5, 0.5, "no online evaluations\nat these steps", ha="center", va="center", transform=ax.transAxes)
        ax.set_xlabel("checkpoint (gradient step)")
        ax.set_ylabel("online evaluation")
        if any("fqe" in r for r in e["rows"]):
            twin = ax.twinx()
            handles += twin.plot(steps, [r.get("fqe", np.nan) for r in e["rows"]], "s--", color=RULE_COLOURS["fqe"], label="FQE value")
            twin.set_ylabel("FQE value J", color=RULE_COLOURS["fqe"])
        for rule, step in e["picks"].items():
            handles.append(ax.axvline(step, color=RULE_COLOURS.get(rule, "tab:grey"), ls=":", lw=2, label=f"{rule} pick"))
        regret = e.get("regret")
        ax.set_title(f"seed {e['seed']}" + (": regret " + ", ".join(f"{k} {v:.2f}" for k, v in regret.items()) if regret else ""),
                     fontsize=9)
        ax.legend(handles=handles, fontsize=7, loc="best")
    fig.suptitle(f"{result['task']}: offline picks among {len(result['checkpoints'])} checkpoints", fontsize=10)
    fig.tight_layout()
    return fig


def selection_table(result: Dict[str, Any]) -> List[str]:
    """Markdown lines: per seed, each checkpoint's BC loss, FQE value and online score, and each rule's pick."""
    lines = []
    for e in result["seeds"]:
        lines += [f"seed {e['seed']}:", "", "| step | BC loss (block mean) | FQE value | online score |", "|---:|---:|---:|---:|"]
        for r in e["rows"]:
            cells = [f"{r['bc_loss']:.4f}" if r.get("bc_loss") is not None else "—", f"{r['fqe']:.3f}" if "fqe" in r else "—",
                     f"{r['online']:.2f}" if r["online"] is not None else "—"]
            marks = [rule for rule, st in e["picks"].items() if st == r["step"]]
            lines.append(f"| {r['step']}{' (' + ', '.join(marks) + ')' if marks else ''} | " + " | ".join(cells) + " |")
        regret = e.get("regret")
        lines += ["", "picks: " + ", ".join(f"{rule} -> step {st}" + (f" (regret {regret[rule]:.2f})" if regret else "")
                                            for rule, st in e["picks"].items())]
        if e.get("fqe_unsettled"):
            worst = max(r.get("fqe_drift", 0.0) for r in e["rows"])
            lines.append(f"FQE has not settled for {len(e['fqe_unsettled'])} of {len(e['rows'])} checkpoints (J moved by up to "
                         f"{100 * worst:.0f}% over the last tenth of the fit; more than {100 * UNSETTLED:.0f}% is unsettled): "
                         f"its order is not to be trusted; raise --fqe-steps")
        rho = {k: v for k, v in e.get("rank_correlation", {}).items() if v is not None}
        if rho:
            lines.append("rank correlation with the online scores (Spearman): " + ", ".join(f"{k} {v:+.2f}" for k, v in rho.items()))
        lines.append("")
    return lines
