"""Training steps replayed as CUDA graphs.

Why: at Hopper sizes a Diffusion-QL step is several hundred small kernels (the 5-step chain forward and
backward, twin critics, Adam, EMA, Polyak), each of which takes longer for Python to launch than for an
H100 to run, so an eagerly launched step leaves the GPU mostly idle. Captured once into a CUDA graph and
replayed, the whole step is issued with one call and runs back to back on the device.

Which kernels a step runs depends on Python-side decisions (does the actor update this step; does the
EMA copy, average or rest; the objective's current eta), so every combination ("variant") is captured
the first time it occurs and replayed afterwards; Diffusion-QL has three. Graphs read and update the
agent's own parameters, optimiser state and random generators in place, so graph steps and eager steps
can be mixed freely: anything that is not captured (more than ``MAX_VARIANTS`` variants, an explicit
batch, a failed capture) runs eagerly on the same state.
"""

from __future__ import annotations

import warnings
from typing import Callable, Dict, Hashable, List, Optional, Tuple

import torch
from torch import Tensor

StepBody = Callable[[], Dict[str, Tensor]]


class StepGraphs:
    """One captured CUDA graph per step variant of one agent.

    ``generators`` are the per-member CUDA generators the step draws from: they are registered with each
    graph so that every replay draws fresh numbers, the same ones an eager step would draw.
    """

    MAX_VARIANTS = 8
    WARMUP_STEPS = 3  # eager steps before the first capture: optimiser state, cuBLAS handles, autograd streams

    def __init__(self, generators: List[torch.Generator], device: torch.device) -> None:
        self.generators = list(generators)
        self.device = device
        self.graphs: Dict[Hashable, Tuple[torch.cuda.CUDAGraph, Dict[str, Tensor]]] = {}
        self.eager_steps = 0
        self.replays = 0
        self.disabled: Optional[str] = None  # why capture was given up, if it was

    def run(self, key: Hashable, body: StepBody) -> Dict[str, Tensor]:
        """Run one step of variant ``key``: replay its graph, capture it, or run ``body`` eagerly.

        The returned tensors of a replayed graph are the graph's static outputs: the next replay of the
        same variant overwrites them (clone what you keep).
        """
        entry = self.graphs.get(key)
        if entry is not None:
            entry[0].replay()
            self.replays += 1
            return entry[1]
        if self.disabled is not None or len(self.graphs) >= self.MAX_VARIANTS or self.eager_steps < self.WARMUP_STEPS:
            return self._eager(body)
        try:
            out = self._capture(key, body)
        except Exception as exc:  # noqa: BLE001 - any capture failure leaves eager training intact
            self.disabled = f"{type(exc).__name__}: {exc}"
            warnings.warn(f"dqltoolkit: CUDA graph capture failed, training continues without graphs ({self.disabled})", RuntimeWarning,
                          stacklevel=3)
            torch.cuda.synchronize(self.device)
            return self._eager(body)
        return out

    def _eager(self, body: StepBody) -> Dict[str, Tensor]:
        if self.eager_steps >= self.WARMUP_STEPS or self.disabled is not None:
            self.eager_steps += 1
            return body()
        # warm-up runs on a side stream, as capture requires: lazily created state (Adam's moments, cuBLAS
        # workspaces, autograd's stream bookkeeping) must exist before the first capture
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            out = body()
        torch.cuda.current_stream(self.device).wait_stream(side)
        self.eager_steps += 1
        return out

    def _capture(self, key: Hashable, body: StepBody) -> Dict[str, Tensor]:
        graph = torch.cuda.CUDAGraph()
        for g in self.generators:
            graph.register_generator_state(g)
        torch.cuda.synchronize(self.device)
        with torch.cuda.graph(graph):
            out = body()
        self.graphs[key] = (graph, out)
        graph.replay()  # capture records the kernels without running them: this replay is the step itself
        self.replays += 1
        return out

    def reset(self) -> None:
        """Forget every captured graph (they hold raw addresses: call this before replacing any tensor a
        step reads, such as the dataset); the next steps capture afresh."""
        if self.graphs:
            torch.cuda.synchronize(self.device)
        self.graphs.clear()

    def stats(self) -> Dict[str, object]:
        return {"variants": len(self.graphs), "replays": self.replays, "eager_steps": self.eager_steps, "disabled": self.disabled}


class InputGraphs:
    """CUDA graphs of a function of one tensor, one graph per key (input shape and options).

    For acting: picking actions runs a 5-step chain over 50 candidates per state, a few hundred small
    kernels whose launches, not their work, set the latency of ``predict``. The first call for a key runs
    eagerly (warm-up), the second captures; later calls copy the input into the graph's static input,
    replay, and return a copy of the static output.
    """

    MAX_KEYS = 8

    def __init__(self, generators: List[torch.Generator], device: torch.device) -> None:
        self.generators = list(generators)
        self.device = device
        self.graphs: Dict[Hashable, Tuple[torch.cuda.CUDAGraph, Tensor, Tensor]] = {}
        self.calls: Dict[Hashable, int] = {}
        self.disabled: Optional[str] = None

    def run(self, key: Hashable, x: Tensor, fn: Callable[[Tensor], Tensor]) -> Tensor:
        entry = self.graphs.get(key)
        if entry is not None:
            graph, static_in, static_out = entry
            static_in.copy_(x)
            graph.replay()
            return static_out.clone()
        seen = self.calls.get(key, 0)
        self.calls[key] = seen + 1
        if self.disabled is not None or seen == 0 or len(self.graphs) >= self.MAX_KEYS:
            return fn(x)
        try:
            static_in = x.clone()
            graph = torch.cuda.CUDAGraph()
            for g in self.generators:
                graph.register_generator_state(g)
            torch.cuda.synchronize(self.device)
            with torch.cuda.graph(graph):
                static_out = fn(static_in)
        except Exception as exc:  # noqa: BLE001 - acting continues eagerly
            self.disabled = f"{type(exc).__name__}: {exc}"
            warnings.warn(f"dqltoolkit: CUDA graph capture of acting failed, acting continues without graphs ({self.disabled})",
                          RuntimeWarning, stacklevel=3)
            torch.cuda.synchronize(self.device)
            return fn(x)
        self.graphs[key] = (graph, static_in, static_out)
        graph.replay()
        return static_out.clone()

    def reset(self) -> None:
        """Forget every captured graph (call before replacing a tensor the function reads)."""
        if self.graphs:
            torch.cuda.synchronize(self.device)
        self.graphs.clear()
        self.calls.clear()
