"""Gradient steps per second at Hopper sizes: the reference step, the toolkit's exact step, five seeds
in one process, the EDP-style approximate step, and the evaluation path.

Every row runs in the same process on the same machine, so the ratios are measured, not quoted. Each
row also reports achieved GFLOP/s from a count of the step's matrix work, next to the machine's measured
matmul rate, so the distance to the hardware limit is visible.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass
from typing import Callable, Dict, List, Optional

import numpy as np
import torch

HOPPER = dict(obs_dim=11, action_dim=3, batch_size=256, T=5, hidden=256, time_dim=16, n_layers=3)


@dataclass
class Row:
    name: str
    steps_per_s: float
    ms_per_step: float
    gflop_per_step: float
    gflop_per_s: float
    note: str = ""
    vs_reference: Optional[float] = None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_it(fn: Callable[[], None], device: torch.device, steps: int, repeats: int, warmup: int) -> float:
    """Median seconds per call of ``fn`` over ``repeats`` blocks of ``steps`` calls, after ``warmup``."""
    for _ in range(warmup):
        fn()
    _sync(device)
    per = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(steps):
            fn()
        _sync(device)
        per.append((time.perf_counter() - t0) / steps)
    return statistics.median(per)


def matmul_gflops(device: torch.device, n: int = 256, batch: int = 256, seconds: float = 0.5) -> float:
    """Measured float32 rate of the step's typical matmul: [batch, n] @ [n, n] (all cores)."""
    a = torch.randn(batch, n, device=device)
    w = torch.randn(n, n, device=device)
    out = torch.empty(batch, n, device=device)
    reps = 200 if device.type == "cpu" else 5000
    for _ in range(10):
        torch.mm(a, w, out=out)
    best = 0.0
    t_end = time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(reps):
            torch.mm(a, w, out=out)
        _sync(device)
        best = max(best, 2.0 * batch * n * n * reps / (time.perf_counter() - t0) / 1e9)
    return best


def step_gflop(obs_dim: int, action_dim: int, batch_size: int, T: int, hidden: int, time_dim: int, n_layers: int, approx: bool = False,
               target_steps: int = 0) -> float:
    """Matrix FLOPs of one Diffusion-QL step (forward = 1, backward = 2 units; critic input-grad only in the Q term)."""
    def mlp(inp, out):
        return 2.0 * batch_size * (inp * hidden + (n_layers - 1) * hidden * hidden + hidden * out)

    actor = mlp(action_dim + time_dim + obs_dim, action_dim)
    critic2 = 2 * mlp(obs_dim + action_dim, 1)
    target = (target_steps or T) * actor + critic2  # next-action chain + target twins, no grad
    critic_update = 3 * critic2
    bc = 3 * actor
    q_term = (0 if approx else 3 * T * actor) + 2 * critic2
    return (target + critic_update + bc + q_term) / 1e9


def hopper_table(n: int, obs_dim: int, action_dim: int, seed: int = 0, terminal_prob: float = 0.01) -> Dict[str, np.ndarray]:
    """A random transition table of the given sizes (throughput does not depend on the values)."""
    rng = np.random.default_rng(seed)
    return {
        "observations": rng.standard_normal((n, obs_dim)).astype(np.float32),
        "actions": rng.uniform(-1, 1, (n, action_dim)).astype(np.float32),
        "rewards": rng.standard_normal(n).astype(np.float32),
        "next_observations": rng.standard_normal((n, obs_dim)).astype(np.float32),
        "terminals": (rng.uniform(size=n) < terminal_prob).astype(np.float32),
    }


def _agent(seeds, device, table, **overrides):
    import gymnasium as gym

    from ..agent import Agent
    from ..config import AgentConfig

    s = HOPPER
    cfg = AgentConfig(T=s["T"], hidden=s["hidden"], time_dim=s["time_dim"], n_layers=s["n_layers"], batch_size=s["batch_size"], log_every=10**9, **overrides)
    obs_space = gym.spaces.Box(-np.inf, np.inf, (s["obs_dim"],), np.float32)
    act_space = gym.spaces.Box(-1.0, 1.0, (s["action_dim"],), np.float32)
    agent = Agent(cfg, obs_space, act_space, seeds=seeds, device=device)
    agent.set_dataset(table)
    return agent


def run_benchmark(device: str = "auto", steps: int = 30, repeats: int = 5, warmup: int = 10, dataset_size: int = 100_000,
                  rows: Optional[List[str]] = None, progress: Optional[Callable[[str], None]] = None) -> Dict[str, object]:
    """Time every row; returns ``{"device", "matmul_gflops", "rows": [Row...]}``."""
    from ..agent import resolve_device
    from ..heads.schedules import SCHEDULES
    from .reference import ReferenceDiffusionQL

    dev = resolve_device(device)
    wanted = set(rows or ["reference", "exact", "exact_x5", "approx", "eval"])
    say = progress or (lambda _: None)
    s = HOPPER
    table = hopper_table(dataset_size, s["obs_dim"], s["action_dim"])
    flop = step_gflop(**s)
    out: List[Row] = []
    say("measuring matmul rate")
    peak = matmul_gflops(dev)

    def row(name, sec, gflop, note=""):
        out.append(Row(name, 1.0 / sec, 1e3 * sec, gflop, gflop / sec, note))
        say(f"{name}: {1.0 / sec:.1f} steps/s")

    if "reference" in wanted:
        say("timing reference")
        data = {
            "obs": torch.as_tensor(table["observations"], device=dev), "actions": torch.as_tensor(table["actions"], device=dev),
            "rewards": torch.as_tensor(table["rewards"], device=dev), "next_obs": torch.as_tensor(table["next_observations"], device=dev),
            "terminals": torch.as_tensor(table["terminals"], device=dev),
        }
        ref = ReferenceDiffusionQL(s["obs_dim"], s["action_dim"], SCHEDULES.get("vp")(s["T"]), data, hidden=s["hidden"], t_dim=s["time_dim"], device=dev)
        row("reference", time_it(ref.train_step, dev, steps, repeats, warmup), flop, "paper-structured step, same math")
    if "exact" in wanted:
        say("timing exact")
        agent = _agent([0], dev, table)
        row("exact", time_it(agent.train_step, dev, steps, repeats, warmup), flop, "dqltoolkit diffusion-ql step")
    if "exact_x5" in wanted:
        say("timing exact x5 seeds")
        agent = _agent([0, 1, 2, 3, 4], dev, table)
        sec = time_it(agent.train_step, dev, max(steps // 5, 4), repeats, max(warmup // 5, 2))
        row("exact x5 seeds (aggregate)", sec / 5, flop, "5 members in one process; steps/s summed over seeds")
        row("exact x5 seeds (per seed)", sec, flop * 5, "each seed's own steps/s")
    if "approx" in wanted:
        say("timing approx")
        agent = _agent([0], dev, table, q_grad="approx")
        row("approx (EDP action approx.)", time_it(agent.train_step, dev, steps, repeats, warmup), step_gflop(**s, approx=True), "-p q_grad=approx")
    if "approx" in wanted:
        say("timing approx + 2-step target sampler")
        agent = _agent([0], dev, table, q_grad="approx", target_sample_steps=2)
        row("approx + 2-step targets", time_it(agent.train_step, dev, steps, repeats, warmup), step_gflop(**s, approx=True, target_steps=2),
            "-p q_grad=approx -p target_sample_steps=2")
    ref_rate = next((r.steps_per_s for r in out if r.name == "reference"), None)
    if ref_rate:
        for r in out:
            r.vs_reference = r.steps_per_s / ref_rate
    eval_rows = []
    if "eval" in wanted:
        say("timing evaluation")
        agent = _agent([0], dev, table)
        for n_envs in (1, 10):
            obs = np.random.default_rng(0).standard_normal((n_envs, s["obs_dim"])).astype(np.float32)
            sec = time_it(lambda: agent.predict(obs), dev, max(steps, 20), repeats, 5)
            eval_rows.append({"name": f"predict, {n_envs} env(s) x {agent.config.n_candidates} candidates", "ms_per_call": 1e3 * sec, "calls_per_s": 1.0 / sec})
    return {"device": str(dev), "torch": torch.__version__, "threads": torch.get_num_threads(), "matmul_gflops": peak, "rows": out, "eval": eval_rows}


def format_table(result: Dict[str, object]) -> str:
    peak = result["matmul_gflops"]
    lines = [
        f"device {result['device']}, torch {result['torch']}, {result['threads']} threads; measured matmul ([256,256]@[256,256] fp32): {peak:.0f} GFLOP/s",
        f"Hopper sizes: obs {HOPPER['obs_dim']}, action {HOPPER['action_dim']}, batch {HOPPER['batch_size']}, T {HOPPER['T']}, width {HOPPER['hidden']}",
        "",
        "| row | steps/s | ms/step | vs reference | GFLOP/step | GFLOP/s | % of matmul rate | note |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in result["rows"]:
        vs = f"{r.vs_reference:.2f}x" if r.vs_reference else "-"
        lines.append(f"| {r.name} | {r.steps_per_s:.1f} | {r.ms_per_step:.1f} | {vs} | {r.gflop_per_step:.2f} | {r.gflop_per_s:.0f} | {100 * r.gflop_per_s / peak:.0f}% | {r.note} |")
    if result["eval"]:
        lines += ["", "| evaluation path | ms/call | calls/s |", "|---|---:|---:|"]
        for e in result["eval"]:
            lines.append(f"| {e['name']} | {e['ms_per_call']:.2f} | {e['calls_per_s']:.0f} |")
    return "\n".join(lines)


def to_json_rows(result: Dict[str, object]) -> List[Dict[str, object]]:
    rows = [{**asdict(r), "device": result["device"], "matmul_gflops": result["matmul_gflops"]} for r in result["rows"]]
    rows += [{"name": e["name"], "steps_per_s": None, **e, "device": result["device"]} for e in result["eval"]]
    return rows
