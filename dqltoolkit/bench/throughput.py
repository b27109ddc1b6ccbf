"""Gradient steps per second at Hopper sizes: the reference step, the toolkit's exact step, five seeds in one
process, the EDP-style approximate step, and the evaluation path.

All rows, and the matmul rate their GFLOP/s are compared with, are timed round-robin in one process so that
clock drift and load hit them alike (a rate measured apart once made rows read 3,600-7,000% of it); a busy
machine gets no percentages. By default the rounds fill a time budget (``seconds``), blocks sized from the
warm-up, so that a run takes about as long on a busy machine as on an idle one.
"""

from __future__ import annotations

import importlib.util
import os
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple
from unittest import mock

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from ..agent import Agent, resolve_device
from ..config import AgentConfig, load_recipe, recipe_names
from ..export import draw_inputs, export_policy, load_runner, read_metadata
from ..heads.schedules import SCHEDULES
from ..precision import cpu_has_bf16_matmuls
from .reference import ReferenceDiffusionQL
from .reference_td3bc import ReferenceTD3BC
from .samplers import acting_rows, training_rows

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


def _timed(fn: Callable[[], None], calls: int, device: torch.device) -> float:
    """Seconds per call over ``calls`` calls of ``fn``, the device synchronised before and after."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda _: None)
    sync(device)
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    sync(device)
    return (time.perf_counter() - t0) / calls


def matmul_call(device: torch.device, n: int = 256, batch: int = 256) -> Tuple[Callable[[], None], float]:
    """One float32 [batch, n] @ [n, n] product and its GFLOP: the calibration entry, timed among the rows."""
    a = torch.randn(batch, n, device=device)
    w = torch.randn(n, n, device=device)
    out = torch.empty(batch, n, device=device)
    return (lambda: torch.mm(a, w, out=out)), 2.0 * batch * n * n / 1e9


class CpuLoad:
    """CPU time other processes used during a benchmark, as a share of all cores (Linux /proc/stat; else None): on a
    shared machine the rows and the matmul slow down by different factors, so their ratio means little then."""

    def __init__(self) -> None:
        self._start = self._sample()

    @staticmethod
    def _busy_seconds() -> Optional[float]:
        try:
            with open("/proc/stat") as f:
                fields = f.readline().split()
        except OSError:
            return None
        if not fields or fields[0] != "cpu":
            return None
        ticks = [int(x) for x in fields[1:]]
        idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
        busy = sum(ticks[:8]) - idle  # guest time is already counted in user time
        return busy / os.sysconf("SC_CLK_TCK")

    def _sample(self) -> Tuple[Optional[float], float, float]:
        return self._busy_seconds(), time.process_time(), time.perf_counter()

    def stop(self) -> Optional[float]:
        """Others' share of all cores since construction (0 = an idle machine besides this process)."""
        (b0, p0, w0), (b1, p1, w1) = self._start, self._sample()
        if b0 is None or b1 is None or w1 - w0 <= 0:
            return None
        return max(0.0, ((b1 - b0) - (p1 - p0)) / ((os.cpu_count() or 1) * (w1 - w0)))


BUSY_SHARE = 0.15  # other processes' share of all cores above which the matmul rate is not trusted
BUSY_SPREAD = 1.5  # slowest / fastest matmul block above which the matmul rate is not trusted


def step_gflop(obs_dim: int, action_dim: int, batch_size: int, T: int, hidden: int, time_dim: int, n_layers: int, approx: bool = False,
               target_steps: int = 0) -> float:
    """Matrix FLOPs of one Diffusion-QL step (forward = 1, backward = 2 units; critic input-grad only in the Q term)."""
    def mlp(inp, out):
        return 2.0 * batch_size * (inp * hidden + (n_layers - 1) * hidden * hidden + hidden * out)

    actor = mlp(action_dim + time_dim + obs_dim, action_dim)
    critic2 = 2 * mlp(obs_dim + action_dim, 1)
    target = (target_steps or T) * actor + critic2  # next-action chain + target twins, no grad
    q_term = (0 if approx else 3 * T * actor) + 2 * critic2
    return (target + 3 * critic2 + 3 * actor + q_term) / 1e9  # + the critic update + the BC term


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
    s = HOPPER
    return AgentConfig(T=s["T"], hidden=s["hidden"], time_dim=s["time_dim"], n_layers=s["n_layers"], batch_size=s["batch_size"],
                       log_every=10**9, **overrides)


def _agent(seeds, device, table, config=None, **overrides):
    """An agent at Hopper sizes: the benchmark's Diffusion-QL settings, or ``config`` (a recipe's) as is."""
    import gymnasium as gym

    cfg = hopper_config(**overrides) if config is None else config.replace(log_every=10**9, **overrides)
    obs_space = gym.spaces.Box(-np.inf, np.inf, (HOPPER["obs_dim"],), np.float32)
    act_space = gym.spaces.Box(-1.0, 1.0, (HOPPER["action_dim"],), np.float32)
    agent = Agent(cfg, obs_space, act_space, seeds=seeds, device=device)
    agent.set_dataset(table)
    return agent


def _export_rows(agent, obs_dim: int, calls: int, say) -> Dict[str, Tuple[Callable[[], None], int]]:
    """``onnxruntime, N env(s)`` rows for 1 and 10 observations; none (with a note) without the export extra."""
    missing = [m for m in ("onnx", "onnxruntime", "onnxscript") if importlib.util.find_spec(m) is None]
    if missing:  # pragma: no cover - the export extra is missing
        say(f"export rows skipped: no {', '.join(missing)} (pip install 'dqltoolkit[export]')")
        return {}
    path = Path(tempfile.mkdtemp(prefix="dqltoolkit-bench-")) / "policy.onnx"
    say("exporting the evaluation policy to ONNX")
    export_policy(agent, path, "onnx")
    meta, run = read_metadata(path), load_runner(path, threads=torch.get_num_threads())
    rng = np.random.default_rng(0)
    rows = {}
    for n_envs in (1, 10):
        obs = rng.standard_normal((n_envs, obs_dim)).astype(np.float32)
        rows[f"onnxruntime, {n_envs} env(s) x {meta['candidates']} candidates"] = (lambda o=obs: run(draw_inputs(meta, o, rng)), calls)
    return rows


def counted_step_gflop(config, table, steps: int = 4) -> float:
    """Matrix GFLOP per training step of an agent with ``config``, counted by FlopCounterMode over ``steps`` eager CPU
    steps (a formula per recipe would drift from the code; fused operators are opaque to the counter)."""
    with mock.patch.dict(os.environ, {"DQLTOOLKIT_FUSED": "0"}):  # the agent is built on the eager backend: torch ops only
        agent = _agent([0], torch.device("cpu"), table, config=config)
        with FlopCounterMode(display=False) as counter:
            for _ in range(steps):
                agent.train_step()
    return counter.get_total_flops() / steps / 1e9


def _recipe_rows(dev: torch.device, table, steps: int, reduced: Optional[Tuple[str, str]] = None
                 ) -> Dict[str, Tuple[Callable[[], None], int, float, str]]:
    """One row per shipped recipe at Hopper's sizes; with ``reduced`` (``(precision, label)``) one more at that precision."""
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
    """Median seconds per call of each ``fn`` (``{name: (fn, calls per block)}``), timed round-robin: the clock drifts
    5-15% over a minute of load on shared machines, and taking block r of every row in turn compares them alike."""
    return {name: statistics.median(v) for name, v in time_blocks(fns, device, repeats, warmup, say).items()}


def time_blocks(fns: Dict[str, Tuple[Callable[[], None], int]], device: torch.device, repeats: int, warmup: int,
                say: Callable[[str], None] = lambda _: None, budget_s: Optional[float] = None) -> Dict[str, List[float]]:
    """Seconds per call of every block of each ``fn``, timed round-robin (see :func:`time_interleaved`). ``budget_s``:
    size the blocks from the warm-up's cost (2 calls at least) so that all rounds take about that long, in equal shares."""
    cost: Dict[str, float] = {}
    for name, (fn, _) in fns.items():
        say(f"warming up {name}")
        times = [_timed(fn, 1, device) for _ in range(max(warmup, 2) if budget_s is not None else warmup)]
        cost[name] = statistics.median(times[1:] or times) if times else 0.0
    calls = {name: c for name, (_, c) in fns.items()}
    if budget_s is not None:
        calls = calls_for_budget(cost, budget_s, repeats)
    per: Dict[str, List[float]] = {name: [] for name in fns}
    for r in range(repeats):
        say(f"timing round {r + 1}/{repeats}")
        for name, (fn, _) in fns.items():
            per[name].append(_timed(fn, calls[name], device))
    return per


def calls_for_budget(cost: Dict[str, float], budget_s: float, repeats: int, min_calls: int = 3) -> Dict[str, int]:
    """Calls per block for each entry (``cost``: seconds per call): equal shares of ``budget_s``, ``min_calls`` at least."""
    share = budget_s / max(1, repeats * len(cost))
    return {name: max(min_calls, int(round(share / c)) if c > 0 else min_calls) for name, c in cost.items()}


def _recipe_acting_rows(dev: torch.device, table, obs_dim: int, calls: int) -> Dict[str, Tuple[Callable[[], None], int]]:
    """``predict`` for one observation with every shipped recipe: acting is as much part of a recipe's price as training."""
    obs = np.random.default_rng(0).standard_normal((1, obs_dim)).astype(np.float32)
    rows: Dict[str, Tuple[Callable[[], None], int]] = {}
    for name in recipe_names():
        agent = _agent([0], dev, table, config=load_recipe(name)[0])
        rows[f"predict, recipe {name}, 1 env x {agent.config.n_candidates} candidates"] = (lambda a=agent: a.predict(obs), calls)
    return rows


DEFAULT_ROWS = ("reference", "exact", "exact_x5", "approx", "eval", "reduced")
DEFAULT_SECONDS = 90.0  # timed rounds; with set-up and warm-up a default CPU run takes about two minutes
MATMUL = "matmul (calibration)"


def run_benchmark(device: str = "auto", steps: Optional[int] = None, repeats: int = 5, warmup: int = 10, dataset_size: int = 100_000,
                  rows: Optional[List[str]] = None, progress: Optional[Callable[[str], None]] = None,
                  seconds: Optional[float] = None) -> Dict[str, object]:
    """Time every row and the matmul (see :func:`time_blocks`): ``{"device", "matmul_gflops", "busy", "rows", "eval", ...}``.
    ``steps``: calls per block (else the rounds fill ``seconds``, :data:`DEFAULT_SECONDS`); ``busy``: why the matmul
    rate was not measured (``matmul_gflops`` None), or None."""
    if steps is not None and steps < 1:
        raise ValueError(f"steps per timed block must be >= 1, got {steps}")
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    if seconds is not None and not seconds > 0:
        raise ValueError(f"seconds must be > 0, got {seconds}")
    if seconds is not None and steps is not None:
        raise ValueError("give either steps (calls per timed block) or seconds (a time budget that sizes the blocks), not both")
    dev = resolve_device(device)
    gpu = dev.type == "cuda"
    budget = None if steps is not None else float(seconds or DEFAULT_SECONDS)
    steps = steps or (300 if gpu else 30)  # (budget mode sizes blocks itself; this only sizes set-up)
    warmup = max(warmup, 30) if gpu else warmup  # past the first CUDA graph captures
    x5_steps = steps if gpu else max(steps // 5, 4)  # on a GPU five members cost about one step's launches
    eval_calls = max(steps, 20)
    wanted = set(rows or DEFAULT_ROWS)
    say = progress or (lambda _: None)
    load = CpuLoad()
    s = HOPPER
    table = hopper_table(dataset_size, s["obs_dim"], s["action_dim"])
    flop = step_gflop(**s)
    # the ceiling: on a CPU a step-sized matmul already runs at the machine's rate; a GPU only reaches its
    # own with large ones (a 256-wide matmul there is latency-bound, as is the whole step)
    mm, mm_calls = (256, 200) if dev.type == "cpu" else (4096, 20)
    mm_fn, mm_flop = matmul_call(dev, n=mm, batch=mm)
    # name -> (step function, calls per timed block, GFLOP per call, note); built first, timed together
    plan: Dict[str, Tuple[Callable[[], None], int, float, str]] = {}
    if "reference" in wanted:
        data = _table_tensors(table, dev)
        ref = ReferenceDiffusionQL(s["obs_dim"], s["action_dim"], SCHEDULES.get("vp")(s["T"]), data, hidden=s["hidden"], t_dim=s["time_dim"], device=dev)
        plan["reference"] = (ref.train_step, steps, flop, "paper-structured step, same math")
    if "exact" in wanted:
        plan["exact"] = (_agent([0], dev, table).train_step, steps, flop, "dqltoolkit diffusion-ql step" + (", CUDA graphs" if gpu else ""))
        if gpu:  # what the graphs buy: the same step launched kernel by kernel
            plan["exact, no CUDA graphs"] = (_agent([0], dev, table, cuda_graphs=False).train_step, steps, flop, "-p cuda_graphs=false")
    # reduced-precision products (the agent's matmul_precision option): TF32 on a GPU, bf16 on a CPU that has the units
    reduced = "reduced" in wanted and (gpu or (dev.type == "cpu" and cpu_has_bf16_matmuls()))
    low, low_name = ("high", "TF32 matmuls") if gpu else ("medium", "bf16 products")
    if "exact_x5" in wanted:
        plan["exact x5 seeds"] = (_agent([0, 1, 2, 3, 4], dev, table).train_step, x5_steps, flop * 5, "")
    if "approx" in wanted:
        plan["approx (EDP action approx.)"] = (_agent([0], dev, table, q_grad="approx").train_step, steps, step_gflop(**s, approx=True),
                                               "-p q_grad=approx")
        plan["approx + 2-step targets"] = (_agent([0], dev, table, q_grad="approx", target_sample_steps=2).train_step, steps,
                                           step_gflop(**s, approx=True, target_steps=2), "-p q_grad=approx -p target_sample_steps=2")
    if "ensemble" in wanted:  # ten Q-networks instead of the twins, lower confidence bound: what an ensemble costs
        ens = hopper_config(critic="ensemble-q", n_critics=10, critic_reduce="lcb")
        plan["exact, ensemble-q x10"] = (_agent([0], dev, table, config=ens).train_step, steps, counted_step_gflop(ens, table),
                                         "-p critic=ensemble-q -p n_critics=10 -p critic_reduce=lcb")
    if "samplers" in wanted:  # edp's step, and the same step with the 50-step chain for the next actions (bench/samplers.py)
        plan.update(training_rows(lambda cfg: _agent([0], dev, table, config=cfg), lambda cfg: counted_step_gflop(cfg, table), steps))
    if reduced and "exact" in wanted:
        plan[f"exact, {low_name}"] = (_agent([0], dev, table, matmul_precision=low).train_step, steps, flop, f"-p matmul_precision={low}")
    if reduced and "exact_x5" in wanted:
        plan[f"exact x5 seeds, {low_name}"] = (_agent([0, 1, 2, 3, 4], dev, table, matmul_precision=low).train_step, x5_steps, flop * 5,
                                                f"-p matmul_precision={low}")
    if "recipes" in wanted:
        say("counting each recipe's FLOPs")
        plan.update(_recipe_rows(dev, table, steps, (low, low_name) if reduced else None))
    eval_plan: Dict[str, Tuple[Callable[[], None], int]] = {}
    if "eval" in wanted:
        actors = [("", _agent([0], dev, table))] + ([(f", {low_name}", _agent([0], dev, table, matmul_precision=low))] if reduced else [])
        for suffix, agent in actors:
            for n_envs in (1, 10):
                obs = np.random.default_rng(0).standard_normal((n_envs, s["obs_dim"])).astype(np.float32)
                eval_plan[f"predict, {n_envs} env(s) x {agent.config.n_candidates} candidates{suffix}"] = (lambda o=obs, a=agent: a.predict(o),
                                                                                                          eval_calls)
    if "recipes" in wanted:  # each recipe's acting latency (its own candidates, steps and sampler) for one observation
        eval_plan.update(_recipe_acting_rows(dev, table, s["obs_dim"], eval_calls))
    if "samplers" in wanted:  # predict with a T = 50 head: the 50-step chain beside DPM-Solver++ and DDIM
        eval_plan.update(acting_rows(lambda cfg: _agent([0], dev, table, config=cfg), s["obs_dim"], eval_calls))
    if "export" in wanted:  # the same policy exported to ONNX, run by onnxruntime with numpy-drawn noise (dqltoolkit export)
        eval_plan.update(_export_rows(_agent([0], dev, table), s["obs_dim"], eval_calls, say))
    blocks = time_blocks({**{k: (v[0], v[1]) for k, v in plan.items()}, **eval_plan, MATMUL: (mm_fn, mm_calls)}, dev, repeats, warmup, say,
                         budget_s=budget)
    sec = {name: statistics.median(v) for name, v in blocks.items()}
    spread = max(blocks[MATMUL]) / min(blocks[MATMUL])
    others = load.stop()
    busy = None
    if others is not None and others > BUSY_SHARE:
        busy = f"other processes used {others:.0%} of the {os.cpu_count()} cores during the run"
    elif spread > BUSY_SPREAD:
        busy = f"the matmul's timed blocks differ {spread:.1f}x"
    peak = mm_flop / sec[MATMUL] if busy is None else None
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
    rates = {r.name: r.steps_per_s for r in out}
    ref_rate, td3bc_ref = rates.get("reference"), rates.get("reference td3bc")
    for r in out:
        if ref_rate:
            r.vs_reference = r.steps_per_s / ref_rate
        if td3bc_ref and r.name.startswith("recipe td3bc"):  # the baseline's own yardstick, beside the vs-reference column
            r.note += f"; {r.steps_per_s / td3bc_ref:.2f}x the TD3+BC reference"
    eval_rows = [{"name": name, "ms_per_call": 1e3 * sec[name], "calls_per_s": 1.0 / sec[name]} for name in eval_plan]
    return {"device": str(dev), "torch": torch.__version__, "threads": torch.get_num_threads(), "matmul_gflops": peak, "matmul_size": mm,
            "matmul_spread": spread, "other_load": others, "busy": busy, "rows": out, "eval": eval_rows}


def format_table(result: Dict[str, object]) -> str:
    """The markdown report; without a trusted matmul rate (``busy``) the percentage column reads "-" and the header says why."""
    peak = result["matmul_gflops"]
    n = result.get("matmul_size", 256)
    load = result.get("other_load")
    load_txt = f"; other processes used {load:.0%} of the CPU during the run" if load is not None else ""
    if peak is not None:
        rate = f"matmul ([{n},{n}]@[{n},{n}] fp32, timed among the rows): {peak:.0f} GFLOP/s"
    else:
        rate = f"matmul rate not measured: the machine was too busy ({result.get('busy')}); steps/s are lower than on an idle machine"
    lines = [
        f"device {result['device']}, torch {result['torch']}, {result['threads']} threads{load_txt}",
        rate,
        f"Hopper sizes: obs {HOPPER['obs_dim']}, action {HOPPER['action_dim']}, batch {HOPPER['batch_size']}, T {HOPPER['T']}, width {HOPPER['hidden']}",
        "",
        "| row | steps/s | ms/step | vs reference | GFLOP/step | GFLOP/s | % of matmul rate | note |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in result["rows"]:
        vs = f"{r.vs_reference:.2f}x" if r.vs_reference else "-"
        pct = f"{100 * r.gflop_per_s / peak:.0f}%" if peak else "-"
        lines.append(f"| {r.name} | {r.steps_per_s:.1f} | {r.ms_per_step:.1f} | {vs} | {r.gflop_per_step:.2f} | {r.gflop_per_s:.0f} | {pct} "
                     f"| {r.note} |")
    if result["eval"]:
        lines += ["", "| evaluation path | ms/call | calls/s |", "|---|---:|---:|"]
        for e in result["eval"]:
            lines.append(f"| {e['name']} | {e['ms_per_call']:.2f} | {e['calls_per_s']:.0f} |")
    return "\n".join(lines)


def to_json_rows(result: Dict[str, object]) -> List[Dict[str, object]]:
    common = {"device": result["device"], "matmul_gflops": result["matmul_gflops"], "busy": result.get("busy")}
    rows = [{**asdict(r), **common} for r in result["rows"]]
    rows += [{"name": e["name"], "steps_per_s": None, **e, **common} for e in result["eval"]]
    return rows
