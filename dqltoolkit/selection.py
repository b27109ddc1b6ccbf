"""Which number a run contributes to a results table: the selection rules, each named, because how a run's
curve becomes one number changes a table more than many algorithmic choices (the paper reports Diffusion-QL's
best evaluation and its baselines' final ones; a fair table applies every rule to every algorithm):

- ``final``: the mean of the last ``last`` evaluations (three smooth the noise of 10-episode evaluations);
- ``best``: the highest evaluation (online selection; optimistic, labelled best* wherever it is shown);
- ``bc``: offline selection: the evaluation after the block (steps since the previous evaluation) with the
  ``top_k``-th lowest mean BC loss (0 = the lowest); the official code's ``ms=offline`` rule as meant: its
  ``np.argsort(bc_loss) == top_k`` picks the *index* that is the rank of evaluation ``top_k``
  (:func:`official_bc_pick` reproduces it, for comparison only).
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import numpy as np

#: the official code's ``top_k`` per dataset (its hyper-parameter table); other tasks use :data:`DEFAULT_TOP_K`
OFFICIAL_TOP_K: Dict[str, int] = {
    "halfcheetah-medium-v2": 1, "hopper-medium-v2": 2, "walker2d-medium-v2": 1,
    "halfcheetah-medium-replay-v2": 0, "hopper-medium-replay-v2": 2, "walker2d-medium-replay-v2": 1,
    "halfcheetah-medium-expert-v2": 0, "hopper-medium-expert-v2": 2, "walker2d-medium-expert-v2": 1,
}
DEFAULT_TOP_K = 1  # the official command line's default

Curve = Sequence[Tuple[int, float]]  # [(step, value)], steps increasing


def _checked(curve: Curve, what: str) -> Tuple[np.ndarray, np.ndarray]:
    if len(curve) == 0:
        raise ValueError(f"{what}: no points")
    steps = np.asarray([int(s) for s, _ in curve])
    values = np.asarray([float(v) for _, v in curve])
    if np.any(np.diff(steps) <= 0):
        raise ValueError(f"{what}: steps must increase, got {steps.tolist()}")
    return steps, values


def final_score(evaluations: Curve, last: int = 3) -> float:
    """Mean of the last ``last`` evaluations (all of them when there are fewer)."""
    _, values = _checked(evaluations, "evaluations")
    return float(values[-last:].mean())


def best_score(evaluations: Curve) -> float:
    """The highest evaluation: online model selection (it chooses with the returns it then reports)."""
    _, values = _checked(evaluations, "evaluations")
    return float(values.max())


def block_means(bc_loss: Curve, eval_steps: Sequence[int]) -> np.ndarray:
    """Mean BC loss over each evaluation's block: logged values at steps in (previous evaluation, this one].
    NaN for a block with no logged value."""
    steps, values = _checked(bc_loss, "bc_loss")
    out, prev = [], -1
    for e in eval_steps:
        inside = (steps > prev) & (steps <= e)
        out.append(values[inside].mean() if inside.any() else np.nan)
        prev = e
    return np.asarray(out, float)


def bc_pick(evaluations: Curve, bc_loss: Curve, top_k: int) -> int:
    """Index of the evaluation the BC-loss rule picks: the ``top_k``-th lowest block mean (clipped to the
    number of evaluations with a block), ties to the earlier evaluation."""
    steps, _ = _checked(evaluations, "evaluations")
    means = block_means(bc_loss, steps.tolist())
    ok = np.flatnonzero(np.isfinite(means))
    if len(ok) == 0:
        raise ValueError("bc_loss: no logged value falls in any evaluation's block")
    order = ok[np.argsort(means[ok], kind="stable")]
    return int(order[min(int(top_k), len(order) - 1)])


def official_bc_pick(bc_block_means: Sequence[float], top_k: int) -> int:
    """What the official code's line picks (kept to show the bug, never used for a table): the index ``i``
    with ``argsort(bc_loss)[i] == top_k``, i.e. the rank of evaluation ``top_k``."""
    bc = np.asarray(bc_block_means, float)
    k = min(len(bc) - 1, int(top_k))
    return int(np.flatnonzero(np.argsort(bc) == k)[0])


def top_k_for(task: str) -> int:
    """The official ``top_k`` of a task by its D4RL name (the recipe section a run's task resolves to)."""
    return OFFICIAL_TOP_K.get(task, DEFAULT_TOP_K)


def select(evaluations: Curve, bc_loss: Optional[Curve], top_k: int, last: int = 3) -> Dict[str, Optional[float]]:
    """Every rule's score for one run: ``{"final", "best", "bc", "bc_step"}`` (``bc``/``bc_step`` None without a BC loss)."""
    out: Dict[str, Optional[float]] = {"final": final_score(evaluations, last), "best": best_score(evaluations), "bc": None, "bc_step": None}
    if bc_loss:
        i = bc_pick(evaluations, bc_loss, top_k)
        out["bc"], out["bc_step"] = float(evaluations[i][1]), int(evaluations[i][0])
    return out


def regret(evaluations: Curve, picked_step: int) -> float:
    """How far a pick is from the best evaluation (score points)."""
    steps, values = _checked(evaluations, "evaluations")
    return float(values.max() - values[list(steps).index(int(picked_step))])
