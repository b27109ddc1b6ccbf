"""torch.compile (inductor, CPU C++) on the readable step against the hand-written fused CPU operators.

#28 asks: where compiling the eager step comes within 10% of the fused operators on the same CPU in one
run, the hand-written kernels go. This times, in one process and one after another (same CPU, same
threads), a Diffusion-QL step of Hopper's shape (obs 11, actions 3, batch 256, 3x256 Mish, T=5):

- eager:    the eager backend (the algorithm as written, torch ops);
- compiled: the eager backend with ``torch.compile`` wrapped around the learner's step body once, at one
            point, as LeanRL wraps CleanRL's update (graph breaks where dynamo cannot follow: the
            per-seed generators' draws, autograd.grad);
- fused:    the fused-cpu backend (csrc/fused.cpp).

Usage: python benchmarks/compile_vs_fused.py [--steps 200] [--threads 2] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import numpy as np
import torch


def _learner(fused: bool, seeds):
    os.environ["DQLTOOLKIT_FUSED"] = "1" if fused else "0"
    from dqltoolkit.backends import select_backend
    from dqltoolkit.config import load_recipe
    from dqltoolkit.learner import Learner

    cfg, _ = load_recipe("diffusion-ql")
    L = Learner(cfg, 11, 3, seeds, torch.device("cpu"), backend=select_backend)
    rng = np.random.default_rng(0)
    n = 100_000
    L.set_dataset({"observations": rng.normal(size=(n, 11)).astype(np.float32), "actions": rng.uniform(-1, 1, (n, 3)).astype(np.float32),
                   "rewards": rng.normal(size=n).astype(np.float32), "next_observations": rng.normal(size=(n, 11)).astype(np.float32),
                   "terminals": np.zeros(n, np.float32), "timeouts": np.zeros(n, np.float32)})
    return L


def _rate(L, steps: int, warmup: int) -> float:
    for _ in range(warmup):
        L.train_step()
    t = time.perf_counter()
    for _ in range(steps):
        L.train_step()
    L.pop_metrics()  # (the one sync)
    return steps / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=30)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--mode", default="default", help="torch.compile mode (default, max-autotune-no-cudagraphs)")
    ap.add_argument("--out")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    seeds = [int(s) for s in a.seeds.split(",")]
    out = {"cpu": platform.processor() or "", "torch": torch.__version__, "threads": a.threads, "seeds": seeds, "steps": a.steps}
    try:
        out["cpu"] = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    out["eager"] = _rate(_learner(False, seeds), a.steps, a.warmup)
    L = _learner(False, seeds)
    t0 = time.perf_counter()
    L.step_body = torch.compile(L.step_body, mode=a.mode)  # the one wrap point
    try:
        for _ in range(3):
            L.train_step()
        out["compile_s"] = time.perf_counter() - t0
        out["compiled"] = _rate(L, a.steps, a.warmup)
    except Exception as exc:  # report, do not hide: a compile that fails is a result too
        out["compiled_error"] = f"{type(exc).__name__}: {str(exc)[:400]}"
    out["fused"] = _rate(_learner(True, seeds), a.steps, a.warmup)
    if "compiled" in out:
        out["compiled_vs_fused"] = out["compiled"] / out["fused"]
    print(json.dumps(out, indent=2))
    if a.out:
        with open(a.out, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    sys.exit(main())
