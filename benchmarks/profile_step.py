"""Where a CPU training step's time goes: matrix products, elementwise work, the operators' own code, and
what no op accounts for (Python, dispatch, the framework). Issue 25's "know the floor".

Profiles ``--steps`` Diffusion-QL steps of Hopper's shape (batch 256, 3x256 Mish, T=5, one seed) with
torch.profiler on the backend chosen for the CPU (``DQLTOOLKIT_FUSED=0`` for the eager one), after a
warm-up, and prints a markdown table: each category's share of the wall time, and the top ops by self time.

    python benchmarks/profile_step.py --steps 50 --threads 2
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile

MATMUL = ("mm", "bmm", "addmm", "baddbmm", "matmul", "linear", "_mkldnn", "dot", "layer_mm", "layer_addmm")


def category(name: str) -> str:
    base = name.split("::")[-1]
    if any(base == m or base.startswith(m + "_") or base.endswith("_" + m) for m in MATMUL):
        return "matrix products"
    if name.startswith("dqltoolkit::"):
        return "fused operators (their own code)"
    if name.startswith("aten::") or name.startswith("Optimizer"):
        return "elementwise and other tensor ops"
    return "other recorded"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--top", type=int, default=15)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    from dqltoolkit.backends import select_backend
    from dqltoolkit.config import load_recipe
    from dqltoolkit.learner import Learner

    cfg, _ = load_recipe("diffusion-ql")
    learner = Learner(cfg, 11, 3, [0], torch.device("cpu"), backend=select_backend)
    rng = np.random.default_rng(0)
    n = 100_000
    learner.set_dataset({"observations": rng.normal(size=(n, 11)).astype(np.float32), "actions": rng.uniform(-1, 1, (n, 3)).astype(np.float32),
                         "rewards": rng.normal(size=n).astype(np.float32), "next_observations": rng.normal(size=(n, 11)).astype(np.float32),
                         "terminals": np.zeros(n, np.float32), "timeouts": np.zeros(n, np.float32)})
    for _ in range(a.warmup):
        learner.train_step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        for _ in range(a.steps):
            learner.train_step()
        learner.pop_metrics()
        wall_us = (time.perf_counter() - t0) * 1e6
    events = prof.key_averages()
    sums: dict = {}
    for e in events:
        sums[category(e.key)] = sums.get(category(e.key), 0.0) + e.self_cpu_time_total
    # ops are recorded on the calling thread (intra-op threads are inside the op's time): self times add up to
    # at most the wall clock, and what they leave is Python, dispatch and the profiler's own cost
    recorded = sum(sums.values())
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "CPU")
    print(f"{cpu}, {a.threads} threads, backend {learner.backend.describe()}: {wall_us / a.steps / 1000:.2f} ms a step "
          f"({a.steps} steps under the profiler)\n")
    print("| category | self time per step (ms) | share of the step's wall time |")
    print("|---|---:|---:|")
    for k, v in sorted(sums.items(), key=lambda kv: -kv[1]):
        print(f"| {k} | {v / a.steps / 1000:.2f} | {100 * v / wall_us:.0f}% |")
    print(f"| not in any op (Python, dispatch, the profiler) | {(wall_us - recorded) / a.steps / 1000:.2f} | "
          f"{100 * (wall_us - recorded) / wall_us:.0f}% |\n")
    print("| op | calls per step | self ms per step | category |")
    print("|---|---:|---:|---|")
    for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[: a.top]:
        print(f"| `{e.key}` | {e.count / a.steps:.1f} | {e.self_cpu_time_total / a.steps / 1000:.3f} | {category(e.key)} |")


if __name__ == "__main__":
    main()
