"""Does FQE's ranking of two checkpoints settle with the fitting steps? Fits FQE to a run's checkpoints side by
side (one member each, the same subset, starts and batches as `dqltoolkit select` draws) and prints J every
``--every`` fitting steps as JSON. docs/results.md (hopper-medium-replay, offline FQE) reports its output:

    python benchmarks/fqe_horizon.py ~/dqltoolkit-campaign/results-hopper/trials/diffusion-ql_hopper-medium-replay-v2_seed0 \
        --checkpoints 10000,190000 --steps 60000 > docs/results/fqe_horizon_seed0.json

It calls the fit's own pieces (dqltoolkit/fqe.py) so that the traced fit is the one `select` runs, up to the
number of members fitted together.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import yaml

import dqltoolkit.fqe as F
from dqltoolkit.agent import Agent
from dqltoolkit.tasks import get_task


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", type=Path, help="a run folder with kept checkpoints (model_step<N>.zip)")
    p.add_argument("--checkpoints", default="10000,190000", help="steps of the checkpoints to fit side by side")
    p.add_argument("--steps", type=int, default=60_000, help="FQE fitting steps")
    p.add_argument("--every", type=int, default=5_000, help="trace J every N fitting steps")
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    steps = [int(s) for s in a.checkpoints.split(",")]
    task = str(yaml.safe_load((a.run / "config.yaml").read_text())["env"])
    table = get_task(task).load_dataset()
    cfg = F.FQEConfig(steps=a.steps)
    rng = np.random.default_rng(cfg.seed)  # the subset and starts F.estimate draws
    n = len(table["rewards"])
    idx = np.sort(rng.choice(n, size=min(cfg.subset, n), replace=False))
    starts = F.episode_starts(table)
    starts = np.sort(rng.choice(starts, size=min(cfg.starts, len(starts)), replace=False))
    obs, act, nobs = (np.asarray(table[k], np.float32) for k in ("observations", "actions", "next_observations"))
    rew, done = (np.asarray(table[k], np.float32)[idx] for k in ("rewards", "terminals"))
    mean, std = obs.mean(0), obs.std(0) + 1e-6
    agents = [Agent.load(a.run / f"model_step{s}.zip", device="cpu") for s in steps]
    space = agents[0].action_space
    scale = np.maximum(np.abs(np.asarray(space.low)), np.abs(np.asarray(space.high))).astype(np.float32)
    next_a = np.concatenate([F._policy_actions(ag, nobs[idx]) for ag in agents])
    start_a = np.concatenate([F._policy_actions(ag, obs[starts]) for ag in agents])
    gamma = float(agents[0].config.to_dict().get("gamma", 0.99))
    trace: dict = {}
    t = time.time()
    F._fit(obs[idx], act[idx], rew, done, next_a, nobs[idx], obs[starts], start_a, mean, std, scale, gamma, cfg, trace, a.every)
    print(json.dumps({"checkpoints": steps, "wall_s": round(time.time() - t), "trace": trace}))


if __name__ == "__main__":
    main()
