"""Figures people would rather look at than read: the bandit scatter and learning curves."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _scatter_panel(ax, actions: np.ndarray, title: str, color: str, data: Optional[np.ndarray] = None) -> None:
    from .envs.bandit2d import MODE_CENTRES, MODE_MEANS, MODE_RADIUS

    if data is not None:
        ax.scatter(data[:, 0], data[:, 1], s=2, c="lightgrey", alpha=0.5, rasterized=True)
    ax.scatter(actions[:, 0], actions[:, 1], s=3, c=color, alpha=0.6, rasterized=True)
    for (x, y), r in zip(MODE_CENTRES, MODE_MEANS):
        ax.add_patch(_plt().Circle((x, y), MODE_RADIUS, fill=False, ls="--", lw=0.8, color="black"))
        ax.text(x, y + 0.24 if y > 0 else y - 0.3, f"r={r:g}", ha="center", fontsize=7)
    ax.set_xlim(-1.1, 1.1)
    ax.set_ylim(-1.1, 1.1)
    ax.set_aspect("equal")
    ax.set_title(title, fontsize=9)
    ax.tick_params(labelsize=7)


def plot_bandit(policy_actions: np.ndarray, dataset_actions: np.ndarray, path: Path, title: str = "policy samples") -> Path:
    """Two panels like the paper's figure: the dataset, and policy samples over the dataset."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(7, 3.6))
    n = min(len(dataset_actions), 2000)
    _scatter_panel(axes[0], dataset_actions[:n], f"dataset ({len(dataset_actions)} actions)", "tab:grey")
    _scatter_panel(axes[1], policy_actions, title, "tab:red", data=dataset_actions[:n])
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_bandit_grid(panels: Sequence[tuple[str, np.ndarray]], dataset_actions: np.ndarray, path: Path, ncols: int = 5) -> Path:
    """The ablation figure: the dataset panel then one panel per variant."""
    plt = _plt()
    n = len(panels) + 1
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.6 * ncols, 2.7 * nrows), squeeze=False)
    data = dataset_actions[: min(len(dataset_actions), 2000)]
    flat = axes.ravel()
    _scatter_panel(flat[0], data, "dataset", "tab:grey")
    for ax, (title, acts) in zip(flat[1:], panels):
        _scatter_panel(ax, acts, title, "tab:red", data=data)
    for ax in flat[n:]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def plot_learning_curves(csv_path: Path, path: Path, keys: Sequence[str] = ("train/actor_loss", "train/critic_loss", "train/bc_loss",
                                                                         "eval/normalized_score", "eval/mean_return")) -> Optional[Path]:
    """Loss and evaluation curves from the metrics CSV (one panel per key that is present; a task with a
    normalised score shows that instead of the raw return)."""
    import csv

    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    keys = [k for k in keys if rows and k in rows[0]]
    if "eval/normalized_score" in keys and "eval/mean_return" in keys:
        keys.remove("eval/mean_return")
    if not rows or not keys or "time/step" not in rows[0]:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, len(keys), figsize=(3.5 * len(keys), 3), squeeze=False)
    steps = [float(r["time/step"]) for r in rows]
    for ax, k in zip(axes[0], keys):
        pts = [(x, float(r[k])) for x, r in zip(steps, rows) if r.get(k) not in ("", None)]  # eval rows are sparse
        if pts:
            xs, ys = zip(*pts)
            ax.plot(xs, ys, marker="o" if k.startswith("eval/") else None, ms=3)
        ax.set_title(k, fontsize=9)
        ax.set_xlabel("gradient step", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
