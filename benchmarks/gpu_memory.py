"""Peak device memory of a Diffusion-QL run on a 1M-transition Hopper-sized dataset held on the device.

    python benchmarks/gpu_memory.py --device cuda --seeds 1 --steps 200

Prints the dataset's bytes, the peak allocated and reserved memory (CUDA) or the peak RSS (CPU), and the
steps/s of the run (CUDA graphs on, as in training).
"""

from __future__ import annotations

import argparse
import resource
import time


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--seeds", type=int, default=1, help="members trained in one process")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--transitions", type=int, default=1_000_000)
    a = p.parse_args()

    import torch

    from dqltoolkit.bench.throughput import HOPPER, _agent, hopper_table

    dev = torch.device(a.device)
    table = hopper_table(a.transitions, HOPPER["obs_dim"], HOPPER["action_dim"])
    data_bytes = sum(v.nbytes for v in table.values())
    agent = _agent(list(range(a.seeds)), dev, table)
    del table
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    for _ in range(20):
        agent.train_step()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    t0 = time.perf_counter()
    for _ in range(a.steps):
        agent.train_step()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    rate = a.steps / (time.perf_counter() - t0)
    line = f"{a.transitions} transitions ({data_bytes / 2**20:.0f} MiB on the device), {a.seeds} seed(s), {rate:.0f} steps/s: "
    if dev.type == "cuda":
        alloc, reserved = torch.cuda.max_memory_allocated(dev), torch.cuda.max_memory_reserved(dev)
        line += f"peak allocated {alloc / 2**20:.0f} MiB, peak reserved {reserved / 2**20:.0f} MiB"
        sg = getattr(agent.backend, "step_graphs", None)
        graphs = sg.stats() if sg is not None else None
        line += f"; graphs {graphs}"
    else:
        line += f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB"
    print(line)


if __name__ == "__main__":
    main()
