"""The samplers' rows of `dqltoolkit bench --rows samplers` (opt-in: about 10 more rows, slow at T = 50).

Why these rows: a sampler changes two costs, acting (``predict``: the reverse chain of every candidate) and,
through the critic's next actions, the training step. So the rows are ``predict`` for 1 and 10 observations
with a T = 50 head (Hopper sizes, 50 candidates) sampled by the 50-step DDPM chain, by DPM-Solver++ with 10
and 15 steps and by DDIM with 10, and the training step of the ``edp`` recipe (T 50, the action
approximation, DPM-Solver++ with 15 steps for the next actions) beside the same step with the 50-step DDPM
chain for the next actions. They are timed in the same round-robin as the other rows, so the reference
row's ratio applies to them too.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Tuple

import numpy as np

from ..config import load_recipe

#: (label, sampler, steps) of the acting rows: the 50-step chain first, as the yardstick
ACTING = (("ddpm, 50 steps", "ddpm", 0), ("dpm-solver++, 10 steps", "dpm-solver++", 10),
          ("dpm-solver++, 15 steps", "dpm-solver++", 15), ("ddim, 10 steps", "ddim", 10))


def training_rows(make_agent: Callable[..., Any], count_gflop: Callable[[Any], float], steps: int
                  ) -> Dict[str, Tuple[Callable[[], None], int, float, str]]:
    """``recipe edp`` (its default section at Hopper sizes) and the same step with DDPM's 50-step next actions."""
    edp = load_recipe("edp")[0]
    ddpm = edp.replace(target_sampler="ddpm", target_sample_steps=0)
    return {
        "recipe edp": (make_agent(edp).train_step, steps, count_gflop(edp),
                       "--agent edp (T 50, q_grad approx, dpm-solver++ 15-step next actions)"),
        "edp, ddpm 50-step targets": (make_agent(ddpm).train_step, steps, count_gflop(ddpm),
                                      "--agent edp -p target_sampler=ddpm -p target_sample_steps=0"),
    }


def acting_rows(make_agent: Callable[..., Any], obs_dim: int, calls: int) -> Dict[str, Tuple[Callable[[], None], int]]:
    """``predict`` rows for 1 and 10 observations, one agent per entry of :data:`ACTING` (the same seed, so the
    same T = 50 networks; one agent each because a backend may capture acting per batch shape)."""
    base = load_recipe("edp")[0]
    rows: Dict[str, Tuple[Callable[[], None], int]] = {}
    for label, sampler, k in ACTING:
        agent = make_agent(base.replace(sampler=sampler, sample_steps=k))
        for n_envs in (1, 10):
            obs = np.random.default_rng(0).standard_normal((n_envs, obs_dim)).astype(np.float32)
            rows[f"predict T 50, {label}, {n_envs} env(s) x {agent.config.n_candidates} candidates"] = (
                lambda o=obs, a=agent: a.predict(o), calls)
    return rows
