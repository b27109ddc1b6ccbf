"""Gradient steps per second at Hopper sizes: the reference step, the toolkit's exact step, five seeds
in one process, the EDP-style approximate step, and the evaluation path.

Every row runs in the same process on the same machine, timed round-robin so that clock drift hits
all rows alike, and the ratios are measured, not quoted. Each
row also reports achieved GFLOP/s from a count of the step's matrix work, next to the machine's measured
matmul rate, so the distance to the hardware limit is visible.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass
from typing import Callable, Dict, List, Optional, Tuple

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


def matmul_gflops(device: torch.device, n: int = 256, batch: int = 256, seconds: float = 0.5) -> float:
    """Measured float32 rate of the step's typical matmul: [batch, n] @ [n, n] (all cores)."""
    a = torch.randn(batch, n, device=device)
    w = torch.randn(n, n, device=device)
    out = torch.empty(batch, n, device=device)
    reps = 200 if device.type == "cpu" else max(20, 5000 * 256**3 // (batch * n * n))
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


def hopper_config(**overrides):
    """The benchmark's Diffusion-QL settings at Hopper sizes (PAPER.md widths, T 5, batch 256)."""
    from ..config import AgentConfig

    s = HOPPER
    return AgentConfig(T=s["T"], hidden=s["hidden"], time_dim=s["time_dim"], n_layers=s["n_layers"], batch_size=s["batch_size"],
                       log_every=10**9, **overrides)


def _agent(seeds, device, table, config=None, **overrides):
    """An agent at Hopper sizes: the benchmark's Diffusion-QL settings, or ``config`` (a recipe's) as is."""
    import gymnasium as gym

    from ..agent import Agent

    s = HOPPER
    cfg = hopper_config(**overrides) if config is None else config.replace(log_every=10**9, **overrides)
    obs_space = gym.spaces.Box(-np.inf, np.inf, (s["obs_dim"],), np.float32)
    act_space = gym.spaces.Box(-1.0, 1.0, (s["action_dim"],), np.float32)
    agent = Agent(cfg, obs_space, act_space, seeds=seeds, device=device)
    agent.set_dataset(table)
    return agent


def counted_step_gflop(config, table, steps: int = 4) -> float:
    """Matrix GFLOP per training step of an agent with ``config``, counted by torch's FlopCounterMode over
    ``steps`` eager CPU steps (enough to include the actor update of ``policy_delay=2`` recipes).

    Why counted rather than written down: the recipes differ in heads, objectives and sample counts, and
    a formula per recipe would drift from the code. The count runs on the eager path because the fused
    operators are opaque to the counter; both paths do the same matrix work, and FLOPs do not depend on
    the device.
    """
    from torch.utils.flop_counter import FlopCounterMode

    import os

    from .. import fused

    applicable, before = fused.applicable, os.environ.get("DQLTOOLKIT_FUSED")
    fused.applicable = lambda *tensors: None
    os.environ["DQLTOOLKIT_FUSED"] = "0"  # the agent is built on the eager backend
    try:
        agent = _agent([0], torch.device("cpu"), table, config=config)
        with FlopCounterMode(display=False) as counter:
            for _ in range(steps):
                agent.train_step()
    finally:
        fused.applicable = applicable
        if before is None:
            os.environ.pop("DQLTOOLKIT_FUSED", None)
        else:
            os.environ["DQLTOOLKIT_FUSED"] = before
    return counter.get_total_flops() / steps / 1e9


def _recipe_rows(dev: torch.device, table, steps: int, reduced: Optional[Tuple[str, str]] = None
                 ) -> Dict[str, Tuple[Callable[[], None], int, float, str]]:
    """One row per shipped recipe (agents/*.yaml, default section), at Hopper's observation and action
    sizes; with ``reduced`` (``(precision, label)``) a second row per recipe at that matmul precision."""
    from ..config import load_recipe, recipe_names

    plan = {}
    for name in recipe_names():
        cfg = load_recipe(name)[0].fit(q_start=0)  # the steady-state step: past any warm-up without the Q term (bear's)
        detail = f"batch {cfg.batch_size}" + (f", T {cfg.T}" if cfg.head == "diffusion" else "")
        gflop = counted_step_gflop(cfg, table)
        plan[f"recipe {name}"] = (_agent([0], dev, table, config=cfg).train_step, steps, gflop,
                                  f"--agent {name} ({cfg.head} head, {cfg.objective} objective, {detail})")
        if reduced is not None:
            plan[f"recipe {name}, {reduced[1]}"] = (_agent([0], dev, table, config=cfg, matmul_precision=reduced[0]).train_step, steps, gflop,
                                                    f"--agent {name} -p matmul_precision={reduced[0]}")
        if name == "td3bc":  # the one baseline with a plain reference step in this package
            from .reference_td3bc import ReferenceTD3BC

            ref = ReferenceTD3BC(HOPPER["obs_dim"], HOPPER["action_dim"], _table_tensors(table, dev), discount=cfg.gamma, tau=cfg.tau,
                                 policy_noise=cfg.target_noise, noise_clip=cfg.target_noise_clip, policy_freq=cfg.policy_delay, alpha=cfg.eta,
                                 lr=cfg.lr, batch_size=cfg.batch_size, hidden=cfg.hidden, device=dev)
            plan["reference td3bc"] = (ref.train_step, steps, gflop, "Fujimoto & Gu's TD3_BC.py structure, same math")
    return plan


def _table_tensors(table, dev: torch.device) -> Dict[str, torch.Tensor]:
    names = {"obs": "observations", "actions": "actions", "rewards": "rewards", "next_obs": "next_observations", "terminals": "terminals"}
    return {k: torch.as_tensor(table[v], device=dev) for k, v in names.items()}


def time_interleaved(fns: Dict[str, Tuple[Callable[[], None], int]], device: torch.device, repeats: int, warmup: int,
                     say: Callable[[str], None] = lambda _: None) -> Dict[str, float]:
    """Median seconds per call of each ``fn`` (``{name: (fn, calls per block)}``), timed round-robin.

    Why round-robin: on shared or thermally limited machines the clock drifts by 5-15% over a minute of
    sustained load, so rows timed one after another are compared under different conditions. Taking
    block r of every row in turn puts each row's blocks in the same stretches of time.
    """
    for name, (fn, _) in fns.items():
        say(f"warming up {name}")
        for _ in range(warmup):
            fn()
    per: Dict[str, List[float]] = {name: [] for name in fns}
    for r in range(repeats):
        say(f"timing round {r + 1}/{repeats}")
        for name, (fn, calls) in fns.items():
            _sync(device)
            t0 = time.perf_counter()
            for _ in range(calls):
                fn()
            _sync(device)
            per[name].append((time.perf_counter() - t0) / calls)
    return {name: statistics.median(v) for name, v in per.items()}


def run_benchmark(device: str = "auto", steps: Optional[int] = None, repeats: int = 5, warmup: int = 10, dataset_size: int = 100_000,
                  rows: Optional[List[str]] = None, progress: Optional[Callable[[str], None]] = None) -> Dict[str, object]:
    """Time every row (round-robin, see :func:`time_interleaved`); returns ``{"device", "matmul_gflops", "rows": [Row...]}``."""
    from ..agent import resolve_device
    from ..heads.schedules import SCHEDULES
    from ..precision import cpu_has_bf16_matmuls
    from .reference import ReferenceDiffusionQL

    dev = resolve_device(device)
    steps = steps or (300 if dev.type == "cuda" else 30)  # a GPU step is ~1 ms: longer blocks time it as well
    warmup = max(warmup, 30) if dev.type == "cuda" else warmup  # past the first CUDA graph captures
    wanted = set(rows or ["reference", "exact", "exact_x5", "approx", "eval", "reduced"])
    say = progress or (lambda _: None)
    s = HOPPER
    table = hopper_table(dataset_size, s["obs_dim"], s["action_dim"])
    flop = step_gflop(**s)
    say("measuring matmul rate")
    # the ceiling: on a CPU a step-sized matmul already runs at the machine's rate; a GPU only reaches its
    # own with large ones (a 256-wide matmul there is latency-bound, as is the whole step)
    mm = 256 if dev.type == "cpu" else 4096
    peak = matmul_gflops(dev, n=mm, batch=mm)
    # name -> (step function, calls per timed block, GFLOP per call, note); built first, timed together
    plan: Dict[str, Tuple[Callable[[], None], int, float, str]] = {}
    if "reference" in wanted:
        data = _table_tensors(table, dev)
        ref = ReferenceDiffusionQL(s["obs_dim"], s["action_dim"], SCHEDULES.get("vp")(s["T"]), data, hidden=s["hidden"], t_dim=s["time_dim"], device=dev)
        plan["reference"] = (ref.train_step, steps, flop, "paper-structured step, same math")
    gpu = dev.type == "cuda"
    if "exact" in wanted:
        plan["exact"] = (_agent([0], dev, table).train_step, steps, flop, "dqltoolkit diffusion-ql step" + (", CUDA graphs" if gpu else ""))
        if gpu:  # what the graphs buy: the same step launched kernel by kernel
            plan["exact, no CUDA graphs"] = (_agent([0], dev, table, cuda_graphs=False).train_step, steps, flop, "-p cuda_graphs=false")
    # reduced-precision products (the agent's matmul_precision option): TF32 on a GPU, bf16 on a CPU that has the units
    reduced = "reduced" in wanted and (gpu or (dev.type == "cpu" and cpu_has_bf16_matmuls()))
    low = "high" if gpu else "medium"
    low_name = "TF32 matmuls" if gpu else "bf16 products"
    if "exact_x5" in wanted:
        # on a GPU the five members cost about one step's launches: as many steps per block as one seed
        plan["exact x5 seeds"] = (_agent([0, 1, 2, 3, 4], dev, table).train_step, steps if gpu else max(steps // 5, 4), flop * 5, "")
    if "approx" in wanted:
        plan["approx (EDP action approx.)"] = (_agent([0], dev, table, q_grad="approx").train_step, steps, step_gflop(**s, approx=True),
                                               "-p q_grad=approx")
        plan["approx + 2-step targets"] = (_agent([0], dev, table, q_grad="approx", target_sample_steps=2).train_step, steps,
                                           step_gflop(**s, approx=True, target_steps=2), "-p q_grad=approx -p target_sample_steps=2")
    if "ensemble" in wanted:  # ten Q-networks instead of the twins, lower confidence bound: what an ensemble costs
        ens = hopper_config(critic="ensemble-q", n_critics=10, critic_reduce="lcb")
        plan["exact, ensemble-q x10"] = (_agent([0], dev, table, config=ens).train_step, steps, counted_step_gflop(ens, table),
                                         "-p critic=ensemble-q -p n_critics=10 -p critic_reduce=lcb")
    if reduced and "exact" in wanted:
        plan[f"exact, {low_name}"] = (_agent([0], dev, table, matmul_precision=low).train_step, steps, flop, f"-p matmul_precision={low}")
    if reduced and "exact_x5" in wanted:
        plan[f"exact x5 seeds, {low_name}"] = (_agent([0, 1, 2, 3, 4], dev, table, matmul_precision=low).train_step,
                                                steps if gpu else max(steps // 5, 4), flop * 5, f"-p matmul_precision={low}")
    if "recipes" in wanted:
        say("counting each recipe's FLOPs")
        plan.update(_recipe_rows(dev, table, steps, (low, low_name) if reduced else None))
    eval_plan: Dict[str, Tuple[Callable[[], None], int]] = {}
    if "eval" in wanted:
        actor = _agent([0], dev, table)
        actors = [("", actor)] + ([(f", {low_name}", _agent([0], dev, table, matmul_precision=low))] if reduced else [])
        for suffix, agent in actors:
            for n_envs in (1, 10):
                obs = np.random.default_rng(0).standard_normal((n_envs, s["obs_dim"])).astype(np.float32)
                eval_plan[f"predict, {n_envs} env(s) x {agent.config.n_candidates} candidates{suffix}"] = (lambda o=obs, a=agent: a.predict(o),
                                                                                                          max(steps, 20))
    sec = time_interleaved({**{k: (v[0], v[1]) for k, v in plan.items()}, **eval_plan}, dev, repeats, warmup, say)
    out: List[Row] = []
    for name, (_, _, gflop, note) in plan.items():
        t = sec[name]
        if name == "exact x5 seeds":
            out.append(Row("exact x5 seeds (aggregate)", 5.0 / t, 1e3 * t / 5, gflop / 5, gflop / t, "5 members in one process; steps/s summed over seeds"))
            out.append(Row("exact x5 seeds (per seed)", 1.0 / t, 1e3 * t, gflop, gflop / t, "each seed's own steps/s"))
        elif name.startswith("exact x5 seeds, "):
            out.append(Row(f"{name} (aggregate)", 5.0 / t, 1e3 * t / 5, gflop / 5, gflop / t, note))
        else:
            out.append(Row(name, 1.0 / t, 1e3 * t, gflop, gflop / t, note))
    ref_rate = next((r.steps_per_s for r in out if r.name == "reference"), None)
    if ref_rate:
        for r in out:
            r.vs_reference = r.steps_per_s / ref_rate
    td3bc_ref = next((r.steps_per_s for r in out if r.name == "reference td3bc"), None)
    for r in out:  # the baseline's own yardstick, next to the Diffusion-QL one in the vs-reference column
        if td3bc_ref and r.name.startswith("recipe td3bc"):
            r.note += f"; {r.steps_per_s / td3bc_ref:.2f}x the TD3+BC reference"
    eval_rows = [{"name": name, "ms_per_call": 1e3 * sec[name], "calls_per_s": 1.0 / sec[name]} for name in eval_plan]
    return {"device": str(dev), "torch": torch.__version__, "threads": torch.get_num_threads(), "matmul_gflops": peak, "matmul_size": mm, "rows": out,
            "eval": eval_rows}


def format_table(result: Dict[str, object]) -> str:
    peak = result["matmul_gflops"]
    n = result.get("matmul_size", 256)
    lines = [
        f"device {result['device']}, torch {result['torch']}, {result['threads']} threads; measured matmul ([{n},{n}]@[{n},{n}] fp32): {peak:.0f} GFLOP/s",
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
