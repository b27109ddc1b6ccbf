"""The README's bandit command over many seeds, scored the way SB3 users score a model.

Trains Diffusion-QL on bandit2d-v0 for seeds 0..N-1 in one process (the member dimension: each seed
equals a separate run), then runs SB3's ``evaluate_policy`` with its defaults (deterministic acting)
and with stochastic acting on every seed's checkpoint, and prints one row per seed.

    python benchmarks/bandit_seeds.py --seeds 0-9 --episodes 1000 --out runs/bandit_seeds
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main() -> None:
    import gymnasium as gym
    import numpy as np
    from stable_baselines3.common.evaluation import evaluate_policy
    from stable_baselines3.common.monitor import Monitor

    import dqltoolkit
    from dqltoolkit.envs.bandit2d import BEST_MODE, MODE_NAMES, mode_shares
    from dqltoolkit.training import parse_seeds, sample_policy_actions

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", default="0-9")
    p.add_argument("--episodes", type=int, default=1000)
    p.add_argument("--out", default="runs/bandit_seeds")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--eval-only", action="store_true", help="evaluate the checkpoints an earlier run left in --out")
    args = p.parse_args()
    seeds = parse_seeds(args.seeds)
    t0 = time.perf_counter()
    if args.eval_only:
        checkpoints = [Path(args.out, f"model_seed{s}.zip") if len(seeds) > 1 else Path(args.out, "model.zip") for s in seeds]
    else:
        checkpoints = dqltoolkit.train("diffusion-ql", "bandit2d-v0", args.out, seeds=seeds, steps=args.steps, device="cpu", progress=False,
                                       verbose=False, evaluate_at_end=False).checkpoints
    train_s = time.perf_counter() - t0
    rows = []
    print(f"trained {len(seeds)} seeds in {train_s:.0f} s; evaluate_policy over {args.episodes} episodes each")
    print("| seed | best-mode share of raw samples | evaluate_policy (SB3 defaults: deterministic) | stochastic |")
    print("|---:|---:|---:|---:|")
    for seed, path in zip(seeds, checkpoints):
        model = dqltoolkit.load(path, device="cpu")
        shares = mode_shares(sample_policy_actions(model, 1000, seed=123))
        env = Monitor(gym.make("bandit2d-v0"))
        det, _ = evaluate_policy(model, env, n_eval_episodes=args.episodes)
        sto, _ = evaluate_policy(model, env, n_eval_episodes=args.episodes, deterministic=False)
        rows.append({"seed": seed, "best_mode_share": shares[MODE_NAMES[BEST_MODE]], "deterministic": float(det), "stochastic": float(sto)})
        print(f"| {seed} | {shares[MODE_NAMES[BEST_MODE]]:.1%} | {det:.3f} | {sto:.3f} |", flush=True)
    det = np.array([r["deterministic"] for r in rows])
    print(f"deterministic: min {det.min():.3f}, mean {det.mean():.3f}")
    Path(args.out, "seeds.json").write_text(json.dumps({"train_seconds": train_s, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
