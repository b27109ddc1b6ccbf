"""Fitted Q evaluation (FQE, Le et al. 2019; as d3rlpy's ``FQE``): how good a policy is, estimated from the
dataset alone, so that checkpoints can be ranked without a simulator.

Its own small critic, because the agent's was trained for the agent's objective: FQE fits a fresh
``Q(s, a) <- r + gamma (1 - done) Q'(s', pi(s'))`` to the checkpoint acting deterministically, and reports
``J = mean Q(s0, pi(s0))`` over episode starts; ``pi`` runs once per transition of a fixed subset (the dear part).
"""

from __future__ import annotations

import copy
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np
import torch

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: writes stay atomic, concurrent rankers may redo a checkpoint
    fcntl = None  # type: ignore[assignment]

from .agent import Agent
from .nn import EnsembleMLP

#: part of every cache key: estimates made by an earlier fitting procedure are not mixed with this one's
FIT_VERSION = "members-batched-1"


@dataclass
class FQEConfig:
    steps: int = 2000
    batch_size: int = 256
    lr: float = 1e-4  # d3rlpy's FQE default
    hidden: int = 256
    tau: float = 0.005
    subset: int = 20_000  # transitions whose next actions are computed once
    starts: int = 1000  # episode starts J is averaged over
    seed: int = 0


def episode_starts(table: Mapping[str, np.ndarray]) -> np.ndarray:
    """Indices of transitions that begin an episode (the first, and each after a terminal or timeout)."""
    ends = np.asarray(table["terminals"], bool) | np.asarray(table.get("timeouts", np.zeros(len(table["terminals"]))), bool)
    return np.flatnonzero(np.concatenate([[True], ends[:-1]]))


@torch.no_grad()
def _policy_actions(agent, obs: np.ndarray, chunk: int = 2048) -> np.ndarray:
    """``(members, len(obs), action dim)``: every member acts on every observation in one pass."""
    out = []
    for i in range(0, len(obs), chunk):
        x = torch.as_tensor(obs[i : i + chunk], dtype=torch.float32, device=agent.device)
        out.append(agent.act(x.unsqueeze(0).expand(agent.members, -1, -1), deterministic=True).cpu().numpy())
    return np.concatenate(out, axis=1)


def estimate(agent, table: Mapping[str, np.ndarray], gamma: Optional[float] = None, cfg: FQEConfig = FQEConfig(),
             trace: Optional[Dict[int, List[float]]] = None, trace_every: int = 0) -> List[float]:
    """FQE's value estimate ``J`` of each member (seed) of ``agent`` acting deterministically on ``table``. ``trace``
    (with ``trace_every``): filled with ``{fitting step: J per member}`` along the fit, to see whether ``cfg.steps``
    were enough for the values, and the order they put checkpoints in, to settle."""
    return estimate_many([agent], table, gamma, cfg, trace, trace_every)[0]


def estimate_many(agents: Sequence, table: Mapping[str, np.ndarray], gamma: Optional[float] = None,
                  cfg: FQEConfig = FQEConfig(), trace: Optional[Dict[int, List[float]]] = None,
                  trace_every: int = 0) -> List[List[float]]:
    """:func:`estimate` for several policies (say, checkpoints of one run) fitted side by side as members of one fit:
    the same subset, starts and batches for all, so their values differ by the policies alone. Returns J per member
    of each agent; ``trace`` holds the members of all agents in order. One fit of ``m`` members costs about ``m``
    single fits, so this is about comparing like with like, not about saving time; a checkpoint's value depends
    (a little) on what it was fitted beside, through the members' initial weights."""
    if not agents:
        raise ValueError("estimate_many: no policies to evaluate")
    gamma = float(agents[0].config.to_dict().get("gamma", 0.99) if gamma is None else gamma)
    rng = np.random.default_rng(cfg.seed)
    n = len(table["rewards"])
    idx = np.sort(rng.choice(n, size=min(cfg.subset, n), replace=False))
    starts = episode_starts(table)
    starts = np.sort(rng.choice(starts, size=min(cfg.starts, len(starts)), replace=False))
    obs, act, nobs = (np.asarray(table[k], np.float32) for k in ("observations", "actions", "next_observations"))
    rew, done = (np.asarray(table[k], np.float32)[idx] for k in ("rewards", "terminals"))
    mean, std = obs.mean(0), obs.std(0) + 1e-6
    space = agents[0].action_space
    scale = np.maximum(np.abs(np.asarray(space.low)), np.abs(np.asarray(space.high))).astype(np.float32)
    next_a = np.concatenate([_policy_actions(agent, nobs[idx]) for agent in agents])
    start_a = np.concatenate([_policy_actions(agent, obs[starts]) for agent in agents])
    values = _fit(obs[idx], act[idx], rew, done, next_a, nobs[idx], obs[starts], start_a, mean, std, scale, gamma, cfg,
                  trace, trace_every)
    out, at = [], 0
    for agent in agents:
        out.append(values[at : at + agent.members])
        at += agent.members
    return out


def _fit(s, a, r, d, a2, s2, s0, a0, mean, std, scale, gamma, cfg: FQEConfig, trace: Optional[Dict[int, List[float]]] = None,
         trace_every: int = 0) -> List[float]:
    """One Q-function per member, fitted side by side as member-batched layers (``a2``, ``a0``: ``[members, n, A]``),
    so the members' fits cost one small network's steps, not one each."""
    members = a2.shape[0]
    torch.manual_seed(cfg.seed)

    def inputs(o, x):  # normalised state and scaled action, [members, n, S + A]
        o = np.broadcast_to((o - mean) / std, (members, *o.shape))
        return torch.as_tensor(np.concatenate([o, np.broadcast_to(x / scale, (members, *x.shape[-2:]))], -1), dtype=torch.float32)

    x, x2, x0 = inputs(s, a), inputs(s2, a2), inputs(s0, a0)
    r_t, d_t = torch.as_tensor(r), torch.as_tensor(d)
    q = EnsembleMLP(members, x.shape[-1], 1, [cfg.hidden, cfg.hidden], activation="relu")
    target = copy.deepcopy(q).requires_grad_(False)
    opt = torch.optim.Adam(q.parameters(), lr=cfg.lr)
    gen = torch.Generator().manual_seed(cfg.seed)
    params, target_params = list(q.parameters()), list(target.parameters())
    for i in range(cfg.steps):
        if trace is not None and trace_every > 0 and i % trace_every == 0 and i:
            with torch.no_grad():
                trace[i] = [float(v) for v in q(x0).squeeze(-1).mean(1)]
        b = torch.randint(0, x.shape[1], (cfg.batch_size,), generator=gen)
        with torch.no_grad():
            y = r_t[b] + gamma * (1 - d_t[b]) * target(x2[:, b]).squeeze(-1)
        loss = ((q(x[:, b]).squeeze(-1) - y) ** 2).mean(1).sum()  # each member's own mean squared error
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            torch._foreach_lerp_(target_params, params, cfg.tau)
    with torch.no_grad():
        final = [float(v) for v in q(x0).squeeze(-1).mean(1)]
    if trace is not None:
        trace[cfg.steps] = final
    return final


#: a fit whose J still moves by more than this share over its last tenth has not settled: its ranking is not to be trusted
#: (docs/results.md: on hopper-medium-replay, 20,000 steps ordered checkpoints against their returns, 100,000 with them)
UNSETTLED = 0.10


def drift(trace: Mapping[int, List[float]]) -> List[float]:
    """Per member, how far J moved over the last tenth of the fit, relative to where it ended: a fit still on its way
    (value not yet propagated through the episode) shows tens of percent, a settled one a few."""
    steps = sorted(trace)
    last = steps[-1]
    prev = min(steps, key=lambda st: abs(st - 0.9 * last))
    return [abs(b - a) / max(abs(b), 1e-6) for a, b in zip(trace[prev], trace[last])]


def estimates_by_checkpoint(paths: Mapping[int, str], table: Mapping[str, np.ndarray], cfg: FQEConfig = FQEConfig(),
                            device: str = "cpu", cache: Optional[Path] = None, together: bool = False,
                            drifts: Optional[Dict[int, List[float]]] = None) -> Dict[int, List[float]]:
    """``{step: [J per seed]}`` for checkpoints ``{step: path}`` of one run. ``cache``: a JSON file written after each
    fit, so a long ranking resumes after a kill; an entry counts only for the same files (name, size, mtime), FQE
    settings and :data:`FIT_VERSION`. ``together``: all checkpoints in one fit (:func:`estimate_many`: the same
    batches for all, so they differ by the policies alone), cached as one entry: a kill loses the whole fit.
    ``drifts``: filled with :func:`drift` per checkpoint and seed (absent for estimates cached before it was kept)."""
    keys = {}
    for step, path in sorted(paths.items()):
        st = Path(path).stat()
        keys[step] = f"{Path(path).name}|{st.st_size}|{st.st_mtime_ns}"
    settings = f"{sorted(asdict(cfg).items())}|{FIT_VERSION}"
    every = max(1, cfg.steps // 10)
    done = _read_cache(cache)
    drifts = {} if drifts is None else drifts

    def fit(key: str, agents: List[Agent]) -> None:
        nonlocal done
        trace: Dict[int, List[float]] = {}
        done[key] = [j for values in estimate_many(agents, table, cfg=cfg, trace=trace, trace_every=every) for j in values]
        done[key + "|drift"] = drift(trace)
        if cache is not None:
            _add_to_cache(Path(cache), key + "|drift", done[key + "|drift"])
            done = _add_to_cache(Path(cache), key, done[key])

    if together:
        key = "together:" + ",".join(keys.values()) + "|" + settings
        if key not in done:
            done = {**done, **_read_cache(cache)}
        if key not in done:
            fit(key, [Agent.load(paths[step], device=device) for step in keys])
        per = len(done[key]) // len(keys)
        for i, step in enumerate(keys):
            if key + "|drift" in done:
                drifts[step] = done[key + "|drift"][i * per : (i + 1) * per]
        return {step: done[key][i * per : (i + 1) * per] for i, step in enumerate(keys)}
    out = {}
    for step, path in sorted(paths.items()):
        key = f"{keys[step]}|{settings}"
        if key not in done and cache is not None:
            done.update(_read_cache(cache))  # another process ranking this run may have done it meanwhile
        if key not in done:
            fit(key, [Agent.load(path, device=device)])
        out[step] = done[key]
        if key + "|drift" in done:
            drifts[step] = done[key + "|drift"]
    return out


def _read_cache(cache: Optional[Path]) -> Dict[str, List[float]]:
    if cache is None or not Path(cache).is_file():
        return {}
    try:
        loaded = json.loads(Path(cache).read_text())
        return {str(k): [float(x) for x in v] for k, v in loaded.items()} if isinstance(loaded, dict) else {}
    except (OSError, ValueError, TypeError, AttributeError):
        return {}  # a damaged cache is recomputed, never trusted


def _add_to_cache(cache: Path, key: str, value: List[float]) -> Dict[str, List[float]]:
    """Write one estimate into the cache, keeping every entry other processes wrote since it was read (two
    ``select`` runs over one folder share their work instead of overwriting it): read, add and replace under
    an exclusive lock, atomically. Returns the cache as written."""
    lock = cache.with_name(cache.name + ".lock")
    with open(lock, "a") as held:
        if fcntl is not None:
            fcntl.flock(held, fcntl.LOCK_EX)  # released when the file closes
        done = {**_read_cache(cache), key: value}
        tmp = cache.with_name(f"{cache.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(done))
        tmp.replace(cache)
    return done
