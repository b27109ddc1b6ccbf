"""Wall time of a sweep on the embedded Ray against the same trials trained one after another.

    python benchmarks/sweep_vs_sequential.py [SWEEP.yaml] [--out runs/sweep-bench] [--mode sweep|sequential|both]
        [--num-cpus N] [--threads N]

``sweep``: ``dqltoolkit sweep SWEEP --out OUT/sweep --num-cpus N`` (trials side by side, one thread each).
``sequential``: for each trial of the sweep, ``dqltoolkit train`` with the same agent, task, seeds, steps and
values into OUT/sequential/<trial>, one after another, ``--threads N``. Each command is timed from its
process start to its exit (Ray's start and every Python start included). Prints one JSON line per mode.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _cli(*args: str) -> list:
    return [sys.executable, "-m", "dqltoolkit.cli", *args]


def _run(cmd: list) -> float:
    t0 = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{res.stdout}\n{res.stderr}")
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("sweep", nargs="?", default=str(ROOT / "sweeps" / "bandit-eta.yaml"))
    ap.add_argument("--out", default="runs/sweep-bench")
    ap.add_argument("--mode", choices=("sweep", "sequential", "both"), default="both")
    ap.add_argument("--num-cpus", type=int, default=os.cpu_count())
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    from dqltoolkit.sweep import planned_trials
    from dqltoolkit.sweep_spec import fixed_overrides, load_sweep

    spec = load_sweep(args.sweep)
    trials = planned_trials(spec)
    out = Path(args.out)
    if args.mode in ("sweep", "both"):
        shutil.rmtree(out / "sweep", ignore_errors=True)
        wall = _run(_cli("sweep", args.sweep, "--out", str(out / "sweep"), "--num-cpus", str(args.num_cpus)))
        doc = json.loads((out / "sweep" / "sweep.json").read_text())
        print(json.dumps({"mode": "sweep", "trials": len(trials), "seeds": spec.seeds, "num_cpus": args.num_cpus, "wall_s": round(wall, 1),
                          "statuses": sorted(e["status"] for e in doc["trials"].values())}))
    if args.mode in ("sequential", "both"):
        shutil.rmtree(out / "sequential", ignore_errors=True)
        total = 0.0
        for t in trials:
            params = {**fixed_overrides(spec), **t.params}
            cmd = _cli("train", "--agent", t.agent, "--env", t.task, "--seeds", ",".join(map(str, spec.seeds)),
                       "--steps", str(spec.budget(t.agent, t.task)), "--out", str(out / "sequential" / t.name), "--no-progress",
                       "--logger", "csv", "--threads", str(args.threads), *[x for k, v in params.items() for x in ("-p", f"{k}={v}")])
            total += _run(cmd)
        print(json.dumps({"mode": "sequential", "trials": len(trials), "seeds": spec.seeds, "threads": args.threads, "wall_s": round(total, 1)}))


if __name__ == "__main__":
    main()
