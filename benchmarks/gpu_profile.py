"""Where a CUDA-graphed Diffusion-QL step spends its time: kernels by total GPU time, and the sum of kernel
time against the step's wall time (the difference is the device waiting between dependent kernels).

    python benchmarks/gpu_profile.py [--rows 20] [--approx] [--tf32]
"""

from __future__ import annotations

import argparse
import time


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=20)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--approx", action="store_true")
    p.add_argument("--tf32", action="store_true", help="allow TF32 tensor-core matmuls (-p matmul_precision=high)")
    a = p.parse_args()

    import torch
    from torch.profiler import ProfilerActivity, profile

    from dqltoolkit.bench.throughput import HOPPER, _agent, hopper_table

    dev = torch.device("cuda")
    agent = _agent(list(range(a.seeds)), dev, hopper_table(100_000, HOPPER["obs_dim"], HOPPER["action_dim"]),
                   matmul_precision="high" if a.tf32 else "highest", **({"q_grad": "approx"} if a.approx else {}))
    for _ in range(30):
        agent.train_step()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(a.steps):
        agent.train_step()
    torch.cuda.synchronize()
    wall = (time.perf_counter() - t0) / a.steps
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(a.steps):
            agent.train_step()
        torch.cuda.synchronize()
    events = [e for e in prof.key_averages() if e.device_time_total > 0]
    kernel_us = sum(e.device_time_total for e in events) / a.steps
    launches = sum(e.count for e in events) / a.steps
    print(f"wall {1e3 * wall:.3f} ms/step; kernel time {kernel_us / 1e3:.3f} ms/step in {launches:.0f} kernels/step "
          f"({kernel_us / max(launches, 1):.2f} us each); graphs {agent.backend.step_graphs.stats() if getattr(agent.backend, 'step_graphs', None) else None}")
    events.sort(key=lambda e: -e.device_time_total)
    print(f"{'kernel':<90} {'us/step':>8} {'calls/step':>10} {'us/call':>8}")
    for e in events[: a.rows]:
        print(f"{e.key[:90]:<90} {e.device_time_total / a.steps:8.1f} {e.count / a.steps:10.1f} {e.device_time_total / e.count:8.2f}")


if __name__ == "__main__":
    main()
