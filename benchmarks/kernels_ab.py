"""Do the hand-written chain kernels earn their keep on this device? Issue 28's measurement, one process.

Times a Diffusion-QL step of Hopper's shape (1 seed, batch 256, 3x256 Mish, T=5) on the backend chosen for
the device, then the same with the head's chain kernel removed (the sampler's torch loop instead: on a
GPU, autograd through the loop in place of heads/reverse_chain.py's one-node chain; on a CPU, the fused
step operators are unaffected, so expect no change there), then, unless ``--no-compile``, the eager
backend with ``torch.compile`` around the learner's step body (``reduce-overhead`` on a GPU: inductor with
CUDA graphs). Where the loop, or the compiled step, comes within 10% of the kernel, the kernel can go.

    python benchmarks/kernels_ab.py --device cuda --steps 300        # a GPU session (benchmarks/gpu_session.sh, stage kernels)
    python benchmarks/kernels_ab.py --device cpu --steps 5 --no-compile   # a smoke run anywhere
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch


def _learner(device: torch.device, backend: bool):
    from dqltoolkit.backends import select_backend
    from dqltoolkit.config import load_recipe
    from dqltoolkit.learner import Learner

    cfg, _ = load_recipe("diffusion-ql")
    if not backend:
        cfg = cfg.replace(cuda_graphs=False)
    learner = Learner(cfg, 11, 3, [0], device, backend=select_backend if backend else None)
    rng = np.random.default_rng(0)
    n = 100_000
    learner.set_dataset({"observations": rng.normal(size=(n, 11)).astype(np.float32),
                         "actions": rng.uniform(-1, 1, (n, 3)).astype(np.float32), "rewards": rng.normal(size=n).astype(np.float32),
                         "next_observations": rng.normal(size=(n, 11)).astype(np.float32), "terminals": np.zeros(n, np.float32),
                         "timeouts": np.zeros(n, np.float32)})
    return learner


def _rate(learner, device: torch.device, steps: int, warmup: int) -> float:
    for _ in range(warmup):
        learner.train_step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(steps):
        learner.train_step()
    learner.pop_metrics()  # (one sync)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps / (time.perf_counter() - t)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--warmup", type=int, default=30)
    p.add_argument("--no-compile", action="store_true")
    p.add_argument("--out", default=None, help="also write the rows as JSON here")
    a = p.parse_args()
    device = torch.device(a.device)
    rows = {}
    with_kernel = _learner(device, backend=True)
    rows["backend"] = {"describe": with_kernel.backend.describe(), "steps_per_s": _rate(with_kernel, device, a.steps, a.warmup)}
    without = _learner(device, backend=True)
    without.head.chain_kernel = without.ema_head.chain_kernel = None  # the sampler's torch loop
    without.backend.reset()
    rows["backend, no chain kernel"] = {"describe": without.backend.describe() + " minus the chain kernel",
                                        "steps_per_s": _rate(without, device, a.steps, a.warmup)}
    if not a.no_compile:
        compiled = _learner(device, backend=False)
        t0 = time.perf_counter()
        compiled.step_body = torch.compile(compiled.step_body, mode="reduce-overhead" if device.type == "cuda" else "default")
        try:
            rate = _rate(compiled, device, a.steps, a.warmup)
            rows["eager + torch.compile"] = {"describe": "eager backend, torch.compile(step_body)", "steps_per_s": rate,
                                             "compile_and_warmup_s": time.perf_counter() - t0}
        except Exception as exc:  # a compile that fails is a result too
            rows["eager + torch.compile"] = {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
    name = torch.cuda.get_device_name() if device.type == "cuda" else next(
        (line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "CPU") \
        if os.path.exists("/proc/cpuinfo") else "CPU"
    base = rows["backend"]["steps_per_s"]
    print(f"{name}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    for k, r in rows.items():
        print(f"  {k:28s} " + (f"{r['steps_per_s']:8.1f} steps/s  {r['steps_per_s'] / base:5.2f}x  ({r['describe']})"
                               if "steps_per_s" in r else r["error"]))
    if a.out:
        with open(a.out, "w") as f:
            json.dump({"device": name, "torch": torch.__version__, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
