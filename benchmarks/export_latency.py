"""Act latency of an ONNX export in onnxruntime against ``predict``, for 1 and 10 observations.

At the benchmark's Hopper sizes (dqltoolkit/bench/throughput.py: 11-d observations, 3-d actions, a 256-wide
denoiser with T = 5, 50 candidates scored by the twin critics), the same agent both ways; onnxruntime gets as
many intra-op threads as torch (run with OMP_NUM_THREADS=1 on a shared machine). The onnxruntime timing
includes drawing its noise with numpy, as a deployment does.

    OMP_NUM_THREADS=1 python benchmarks/export_latency.py [--repeats 200] [--json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from dqltoolkit.bench.throughput import HOPPER, _agent, hopper_table
from dqltoolkit.export import act_latency, check_export, export_policy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--candidates", type=int, default=None, help="n_candidates (default: the recipe's 50)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    overrides = {} if args.candidates is None else {"n_candidates": args.candidates}
    agent = _agent([0], torch.device("cpu"), hopper_table(10_000, HOPPER["obs_dim"], HOPPER["action_dim"]), **overrides)
    with tempfile.TemporaryDirectory() as tmp:
        path = export_policy(agent, Path(tmp) / "policy.onnx", "onnx")
        check = check_export(agent, path)
        rows = act_latency(agent, path, batch_sizes=(1, 10), repeats=args.repeats)
    if args.json:
        for r in rows:
            print(json.dumps({**r, "threads": torch.get_num_threads()}))
        return
    print(f"parity check: max |diff| {check['max_diff']:.1e}, mismatches {len(check['mismatches'])}; "
          f"{torch.get_num_threads()} thread(s), backend {agent.backend.describe()}")
    print("| acting | ms/call | calls/s |\n|---|---:|---:|")
    for r in rows:
        print(f"| {r['name']} | {r['ms_per_call']:.3f} | {r['calls_per_s']:.0f} |")


if __name__ == "__main__":
    main()
