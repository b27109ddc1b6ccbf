"""Figures people would rather look at than read: the bandit scatter and learning curves. Each has a builder returning
the matplotlib Figure (tests check its axes, labels, legend and curves) and a ``plot_*`` function that saves it; each is
meant to be read without the code: labelled axes, a legend, and a panel with little to show says why.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .envs.bandit2d import MODE_CENTRES, MODE_MEANS, MODE_RADIUS

DATA_COLOUR, POLICY_COLOUR = "tab:grey", "tab:red"
MAX_DATA_POINTS = 2000  # a scatter of more points hides the policy's samples and bloats the file

# y-axis labels of the metrics the toolkit logs; the CSV column stays the panel title
METRIC_LABELS = {"train/actor_loss": "actor loss", "train/critic_loss": "critic loss (TD error)",
                 "train/bc_loss": "behaviour-cloning loss", "eval/mean_return": "mean episode return",
                 "eval/normalized_score": "normalised score (D4RL)"}
CURVE_KEYS = ("train/actor_loss", "train/critic_loss", "train/bc_loss", "eval/normalized_score", "eval/mean_return")


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path, dpi: int) -> Path:
    fig.savefig(path, dpi=dpi)
    pyplot().close(fig)
    return Path(path)


def _scatter_panel(ax, actions: np.ndarray, title: str, color: str, data: Optional[np.ndarray] = None, label: Optional[str] = None,
                   mark_best: bool = True) -> None:
    """One bandit panel: optional dataset actions in grey under ``actions``, the reward modes as dashed circles with their
    mean reward inside the action square, on a light box above the dots (a crowded mode keeps its label readable)."""
    if data is not None:
        ax.scatter(data[:, 0], data[:, 1], s=2, c="lightgrey", alpha=0.5, rasterized=True, label="dataset actions")
    ax.scatter(actions[:, 0], actions[:, 1], s=3, c=color, alpha=0.6, rasterized=True, label=label)
    best = int(np.argmax(MODE_MEANS))
    for m, ((x, y), r) in enumerate(zip(MODE_CENTRES, MODE_MEANS)):
        ax.add_patch(pyplot().Circle((x, y), MODE_RADIUS, fill=False, ls="--", lw=0.8, color="black"))
        inward = -1.0 if y > 0 else 1.0  # the label sits on the centre's side of its circle
        ax.text(x, y + inward * (MODE_RADIUS + 0.05), f"r={r:g}" + (" (best)" if m == best and mark_best else ""), ha="center",
                va="top" if y > 0 else "bottom", fontsize=7, zorder=5, bbox=dict(fc="white", ec="none", alpha=0.75, pad=0.6))
    ticks = [-1, -0.5, 0, 0.5, 1]
    ax.set(xlim=(-1.1, 1.1), ylim=(-1.1, 1.1), xticks=ticks, yticks=ticks, aspect="equal")
    ax.set_title(title, fontsize=9)
    ax.tick_params(labelsize=7)


def _bandit_legend_handles() -> list:
    from matplotlib.lines import Line2D

    return [Line2D([], [], ls="", marker="o", ms=4, color="lightgrey", label="dataset actions"),
            Line2D([], [], ls="", marker="o", ms=4, color=POLICY_COLOUR, label="policy samples"),
            Line2D([], [], ls="--", lw=0.8, color="black", label="reward mode (r = its mean reward)")]


def bandit_figure(policy_actions: np.ndarray, dataset_actions: np.ndarray, title: str = "policy samples"):
    """Two panels like the paper's figure: the dataset, and policy samples over the dataset; axes are the
    two action dimensions, and one legend below names the dots and the dashed mode circles."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(7.2, 4.2), sharey=True)
    n = min(len(dataset_actions), MAX_DATA_POINTS)
    shown = f"{n:,} of {len(dataset_actions):,}" if n < len(dataset_actions) else f"{n:,}"
    _scatter_panel(axes[0], dataset_actions[:n], f"dataset: {shown} actions", DATA_COLOUR, label="dataset actions")
    _scatter_panel(axes[1], policy_actions, title, POLICY_COLOUR, data=dataset_actions[:n], label="policy samples")
    for ax in axes:
        ax.set_xlabel("action[0]", fontsize=8)
    axes[0].set_ylabel("action[1]", fontsize=8)
    fig.legend(handles=_bandit_legend_handles(), loc="lower center", ncol=3, fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return fig


def plot_bandit(policy_actions: np.ndarray, dataset_actions: np.ndarray, path: Path, title: str = "policy samples") -> Path:
    """Save :func:`bandit_figure` to ``path``."""
    return save_figure(bandit_figure(policy_actions, dataset_actions, title), path, dpi=120)


def bandit_grid_figure(panels: Sequence[Tuple[str, np.ndarray]], dataset_actions: np.ndarray, ncols: int = 5):
    """The ablation figure: the dataset panel then one panel per variant, axes labelled on the outer
    panels, and one legend (in the grid's first empty cell, else below the grid)."""
    plt = pyplot()
    n = len(panels) + 1
    nrows = int(np.ceil(n / ncols))
    spare = nrows * ncols > n
    height = 2.8 * nrows + (0 if spare else 0.4)
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.6 * ncols, height), squeeze=False)
    data = dataset_actions[: min(len(dataset_actions), MAX_DATA_POINTS)]
    flat = axes.ravel()
    _scatter_panel(flat[0], data, "dataset", DATA_COLOUR, label="dataset actions", mark_best=False)
    for ax, (title, acts) in zip(flat[1:], panels):
        _scatter_panel(ax, acts, title, POLICY_COLOUR, data=data, label="policy samples", mark_best=False)
    for ax in flat[n:]:
        ax.axis("off")
    handles = _bandit_legend_handles()
    if spare:
        flat[n].legend(handles=handles, loc="center", fontsize=8, frameon=False, title=f"best mode: r={MODE_MEANS.max():g}",
                       title_fontsize=8)
    else:
        fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=8, frameon=False)
    for ax in axes[:, 0]:
        ax.set_ylabel("action[1]", fontsize=8)
    for ax in flat[max(0, n - ncols):n]:  # the lowest panel of each column (the last row may be partly empty)
        ax.set_xlabel("action[0]", fontsize=8)
    fig.tight_layout(rect=(0, 0 if spare else 0.4 / height, 1, 1))
    return fig


def plot_bandit_grid(panels: Sequence[Tuple[str, np.ndarray]], dataset_actions: np.ndarray, path: Path, ncols: int = 5) -> Path:
    """Save :func:`bandit_grid_figure` to ``path``."""
    return save_figure(bandit_grid_figure(panels, dataset_actions, ncols), path, dpi=110)


def _series(rows: List[Dict[str, str]], key: str) -> Tuple[List[float], List[float]]:
    """(steps, values) of the rows where ``key`` has a value (evaluation rows are sparse)."""
    pts = [(float(r["time/step"]), float(r[key])) for r in rows if r.get(key) not in ("", None) and r.get("time/step") not in ("", None)]
    return [p[0] for p in pts], [p[1] for p in pts]


def _every(steps: Sequence[float], what: str) -> str:
    """How often ``steps`` were logged: ``what`` every (the typical gap) steps, or once."""
    every = int(np.median(np.diff(sorted(set(steps))))) if len(set(steps)) > 1 else None
    return f"{what} every {every:,} steps" if every else f"{what} once"


def learning_curves_figure(csv_path: Path, keys: Sequence[str] = CURVE_KEYS):
    """Loss and evaluation curves from an SB3-format metrics CSV (None when it holds no metric): one panel per key present
    (the normalised score instead of the raw return), each seed of a multi-seed run beside the mean, markers on sparse
    curves (a single point says how to log more often), a shared step range and a title saying how often each was logged."""
    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    if not rows or "time/step" not in rows[0]:
        return None
    keys = [k for k in keys if k in rows[0] and _series(rows, k)[0]]
    if "eval/normalized_score" in keys and "eval/mean_return" in keys:
        keys.remove("eval/mean_return")
    if not keys:
        return None
    plt = pyplot()
    fig, axes = plt.subplots(1, len(keys), figsize=(3.6 * len(keys), 3.4), squeeze=False)
    last_step = max(float(r["time/step"]) for r in rows if r.get("time/step") not in ("", None))
    loss_steps: List[float] = []
    eval_steps: List[float] = []
    seeds: List[str] = []
    for ax, k in zip(axes[0], keys):
        xs, ys = _series(rows, k)
        is_eval = k.startswith("eval/")
        (eval_steps if is_eval else loss_steps).extend(xs)
        marker = "o" if is_eval or len(xs) <= 30 else None
        per_seed = sorted((c for c in rows[0] if re.fullmatch(re.escape(k) + r"_seed-?\d+", c)), key=lambda c: int(c.rsplit("seed", 1)[1]))
        ax.plot(xs, ys, marker=marker, ms=4, color="tab:blue", lw=1.6, label="mean over seeds" if per_seed else None)
        for c in per_seed:
            sx, sy = _series(rows, c)
            ax.plot(sx, sy, marker=".", ms=3, lw=0.8, alpha=0.6, label=f"seed {c.rsplit('seed', 1)[1]}")
        if per_seed:
            seeds = [c.rsplit("seed", 1)[1] for c in per_seed]
            ax.legend(fontsize=7, frameon=False)
        if len(xs) == 1:
            ax.annotate(f"{ys[0]:.3g}", (xs[0], ys[0]), textcoords="offset points", xytext=(-6, 6), ha="right", fontsize=7)
            what = "evaluated" if is_eval else "logged"
            ax.text(0.03, 0.04, f"one point: {what} at step {int(xs[0])} only\n"
                    + ("(--eval-freq N evaluates more often)" if is_eval else "(-p log_every=N logs more often)"),
                    transform=ax.transAxes, fontsize=7, color="dimgrey")
        ax.set_title(k, fontsize=9)
        ax.set_xlabel("gradient step", fontsize=8)
        ax.set_ylabel(METRIC_LABELS.get(k, k.split("/", 1)[-1].replace("_", " ")), fontsize=8)
        ax.set_xlim(0, last_step * 1.04)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    seeds_note = f" (mean over seeds {', '.join(seeds)})" if seeds else ""
    notes = [_every(loss_steps, "losses logged") + seeds_note] if loss_steps else []
    notes.append(_every(eval_steps, "evaluated") if eval_steps else "no evaluation during training (--eval-freq N adds one)")
    fig.suptitle(f"{Path(csv_path).name}: " + "; ".join(notes), fontsize=9)
    fig.tight_layout()
    return fig


def plot_learning_curves(csv_path: Path, path: Path, keys: Sequence[str] = CURVE_KEYS) -> Optional[Path]:
    """Save :func:`learning_curves_figure` to ``path``; None (nothing written) when the CSV holds no metric."""
    fig = learning_curves_figure(csv_path, keys)
    return None if fig is None else save_figure(fig, path, dpi=110)
