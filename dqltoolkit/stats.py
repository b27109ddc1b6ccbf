"""Aggregate scores over seeds and tasks as the field reports them (Agarwal et al., 2021, "Deep RL at the Edge of the
Statistical Precipice"; rliable's definitions), in numpy only: ``rliable`` pulls ``arch``, ``scipy`` and ``absl`` for a
few lines of arithmetic and draws one bootstrap resample at a time, where these draw and evaluate all of them as one
array. Scores are given per task, a 1-D array of run (seed) scores each: tasks may have different numbers of runs (a sweep
with a crashed trial), where rliable needs a full matrix.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, List, Sequence

import numpy as np

#: a statistic maps per-task arrays shaped ``(..., n_runs_of_task)`` to an array shaped ``(...)`` or ``(..., k)``
Statistic = Callable[[Sequence[np.ndarray]], np.ndarray]

DEFAULT_REPS = 2000
CONFIDENCE = 0.95  # of the intervals: the 2.5th to 97.5th percentiles of the resampled statistic


def _tasks(scores: Sequence[np.ndarray]) -> List[np.ndarray]:
    out = [np.asarray(s, dtype=np.float64) for s in scores]
    if not out or any(s.shape[-1] == 0 for s in out):
        raise ValueError("scores: every task needs at least one run")
    return out


def trimmed_mean(x: np.ndarray, proportion: float = 0.25) -> np.ndarray:
    """Mean of ``x`` along its last axis after cutting ``floor(proportion * n)`` values from each end (scipy's ``trim_mean``)."""
    x = np.sort(np.asarray(x, dtype=np.float64), axis=-1)
    n = x.shape[-1]
    cut = int(proportion * n)
    if 2 * cut >= n:
        raise ValueError(f"trimmed_mean: cutting {cut} of {n} values from each end leaves none")
    return x[..., cut:n - cut].mean(axis=-1)


def iqm(scores: Sequence[np.ndarray]) -> np.ndarray:
    """Interquartile mean of all runs of all tasks pooled (25% trimmed: 5 runs keep the middle 3, 8 the middle 4)."""
    return trimmed_mean(np.concatenate(_tasks(scores), axis=-1), 0.25)


def aggregate_mean(scores: Sequence[np.ndarray]) -> np.ndarray:
    """Mean over tasks of each task's mean over runs (each task weighs the same, whatever its run count)."""
    return np.mean([s.mean(axis=-1) for s in _tasks(scores)], axis=0)


def aggregate_median(scores: Sequence[np.ndarray]) -> np.ndarray:
    """Median over tasks of each task's mean over runs."""
    return np.median([s.mean(axis=-1) for s in _tasks(scores)], axis=0)


def optimality_gap(scores: Sequence[np.ndarray], gamma: float = 100.0) -> np.ndarray:
    """``gamma`` less the mean over all runs of ``min(score, gamma)``: lower is better, 0 when every run reaches ``gamma``."""
    pooled = np.concatenate(_tasks(scores), axis=-1)
    return gamma - np.minimum(pooled, gamma).mean(axis=-1)


def score_distribution(scores: Sequence[np.ndarray], taus: np.ndarray) -> np.ndarray:
    """Fraction of all runs (pooled over tasks) with a score strictly above each ``tau``: shape ``(..., len(taus))``."""
    pooled = np.concatenate(_tasks(scores), axis=-1)
    return (pooled[..., :, None] > np.asarray(taus, dtype=np.float64)).mean(axis=-2)


def bootstrap_indices(sizes: Sequence[int], reps: int = DEFAULT_REPS, seed: int = 0) -> List[np.ndarray]:
    """Per task of ``sizes[t]`` runs, ``(reps, sizes[t])`` run indices drawn with replacement from one generator (``seed``)."""
    if reps < 1:
        raise ValueError(f"reps must be at least 1, got {reps}")
    rng = np.random.default_rng(seed)
    return [rng.integers(0, n, size=(reps, n)) for n in sizes]


@dataclass(frozen=True)
class Estimate:
    """A point estimate and its bootstrap confidence interval (arrays of the statistic's shape)."""

    point: np.ndarray
    lower: np.ndarray
    upper: np.ndarray

    def __iter__(self):
        return iter((self.point, self.lower, self.upper))


def stratified_bootstrap(scores: Sequence[np.ndarray], statistic: Statistic, reps: int = DEFAULT_REPS, seed: int = 0) -> Estimate:
    """``statistic`` of per-task 1-D run scores with its stratified bootstrap percentile interval. The statistic is called
    on the data and on all ``reps`` resamples stacked (each task's array ``(reps, n_runs)``): it must reduce the last axis."""
    tasks = _tasks(scores)
    if any(s.ndim != 1 for s in tasks):
        raise ValueError("stratified_bootstrap: give each task's run scores as a 1-D array")
    point = np.asarray(statistic([s[None, :] for s in tasks]))[0]
    indices = bootstrap_indices([len(s) for s in tasks], reps, seed)
    samples = np.asarray(statistic([s[idx] for s, idx in zip(tasks, indices)]))
    tail = 100.0 * (1.0 - CONFIDENCE) / 2.0
    lower, upper = np.percentile(samples, [tail, 100.0 - tail], axis=0)  # the percentile interval, resamples on axis 0
    return Estimate(point, lower, upper)


def ranks(x: Sequence[float]) -> np.ndarray:
    """1-based ranks of ``x``, ties given the mean of the ranks they span (scipy's ``rankdata``, method 'average')."""
    x = np.asarray(x, dtype=np.float64)
    order = np.argsort(x, kind="stable")
    out = np.empty(len(x))
    out[order] = np.arange(1, len(x) + 1)
    _, group, size = np.unique(x, return_inverse=True, return_counts=True)
    return (np.bincount(group, weights=out) / size)[group]


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation of paired values: how well ``x`` (an offline estimate of each checkpoint) orders
    them as ``y`` (their online scores) does, the measure off-policy evaluation benchmarks report beside regret
    (Fu et al., 2021). NaN when either side is constant or fewer than two pairs are given."""
    if len(x) != len(y):
        raise ValueError(f"spearman: {len(x)} values against {len(y)}")
    if len(x) < 2:
        return float("nan")
    a, b = ranks(x), ranks(y)
    a, b = a - a.mean(), b - b.mean()
    den = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / den) if den > 0 else float("nan")
