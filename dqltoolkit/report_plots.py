"""The report's two figures, the performance profile and the learning curves with their confidence bands: as in
dqltoolkit/plots.py, a builder returns the Figure (tests read it) and a ``plot_*`` function saves it. The numbers come
from dqltoolkit/report.py; nothing here computes a statistic.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Mapping, NamedTuple, Sequence

import numpy as np

from .plots import pyplot, save_figure
from .stats import Estimate

SCORE_LABELS = {"normalized_score": "normalised score", "return": "episode return"}
BAND_NOTE = "shaded: 95% stratified bootstrap interval over seeds"


class Curve(NamedTuple):
    """One algorithm's learning curve on one task. ``seeds`` is in the legend because a curve of one seed and a
    curve of five look alike on the page, and only the second is a finding."""

    steps: np.ndarray
    estimate: Estimate
    periodic: bool  # False: the end-of-run evaluation only
    seeds: int


def _colours(names: Sequence[str]) -> Dict[str, str]:
    return {n: f"C{i % 10}" for i, n in enumerate(names)}


def performance_profile_figure(taus: np.ndarray, profiles: Mapping[str, Estimate], metric: str = "normalized_score",
                               tasks: Sequence[str] = ()):
    """Fraction of runs (seeds, pooled over ``tasks``) whose final score is above tau, one line per
    algorithm with its interval as a band: a curve above another everywhere is better at every bar."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.6, 3.8))
    colours = _colours(list(profiles))
    for alg, est in profiles.items():
        ax.step(taus, est.point, where="post", color=colours[alg], lw=1.6, label=alg)  # a fraction of runs: a step function
        ax.fill_between(taus, est.lower, est.upper, step="post", color=colours[alg], alpha=0.2, lw=0)
    ax.set_xlabel(f"{SCORE_LABELS.get(metric, metric)} threshold τ (final score)", fontsize=9)
    ax.set_ylabel("fraction of runs with score > τ", fontsize=9)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlim(float(taus[0]), float(taus[-1]))
    ax.grid(alpha=0.3)
    ax.tick_params(labelsize=8)
    ax.legend(fontsize=7, frameon=False, loc="best")
    where = f" over {', '.join(tasks)}" if tasks else ""
    ax.set_title(f"Performance profile{where}\n{BAND_NOTE}", fontsize=9)
    fig.tight_layout()
    return fig


def plot_performance_profile(taus: np.ndarray, profiles: Mapping[str, Estimate], path: Path, metric: str = "normalized_score",
                             tasks: Sequence[str] = ()) -> Path:
    """Save :func:`performance_profile_figure` to ``path``."""
    return save_figure(performance_profile_figure(taus, profiles, metric, tasks), path, dpi=110)


def report_curves_figure(curves: Mapping[str, Mapping[str, Curve]], metrics: Mapping[str, str]):
    """One panel per task: each algorithm's mean score over seeds at each evaluation, with its band. An
    algorithm without periodic evaluations shows its end-of-run evaluation as one marked point."""
    plt = pyplot()
    tasks = list(curves)
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.6 * len(tasks), 3.8), squeeze=False)
    colours = _colours(list(dict.fromkeys(a for t in tasks for a in curves[t])))  # (report.py gives them in order)
    for ax, task in zip(axes[0], tasks):
        for alg, (steps, est, periodic, seeds) in curves[task].items():
            marker = "o" if len(steps) <= 30 else None
            label = f"{alg} ({seeds} seed{'s' if seeds != 1 else ''}{'' if periodic else ', end of run only'})"
            ax.plot(steps, est.point, color=colours[alg], marker=marker, ms=3.5, lw=1.6, label=label)
            ax.fill_between(steps, est.lower, est.upper, color=colours[alg], alpha=0.2, lw=0)
        ax.set_title(task, fontsize=9)
        ax.set_xlabel("gradient step", fontsize=9)
        ax.set_ylabel(f"{SCORE_LABELS.get(metrics[task], metrics[task])} (mean over seeds)", fontsize=9)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=8)
        ax.legend(fontsize=7, frameon=False, loc="best")
    fig.suptitle(f"Learning curves; {BAND_NOTE}", fontsize=9)
    fig.tight_layout()
    return fig


def plot_report_curves(curves: Mapping[str, Mapping[str, Curve]], metrics: Mapping[str, str], path: Path) -> Path:
    """Save :func:`report_curves_figure` to ``path``."""
    return save_figure(report_curves_figure(curves, metrics), path, dpi=110)
