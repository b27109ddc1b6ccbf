"""The GPU backend: the chain kernel, CUDA streams and CUDA graphs around the eager step.

Why: on a GPU a step is bound by kernel launches, not arithmetic. Three things cut them, none of which
changes what a step computes:
- the reverse chain of a head that declares the ``kernels`` capability runs as one autograd node of few
  kernels each way (dqltoolkit/heads/reverse_chain.py);
- the critic's update runs on a second stream while the actor samples its actions, and the actor waits
  for it where its loss first reads the critic (:class:`CriticAfter`); for the shipped ``ql`` objective
  the BC term's backward runs before that point;
- with ``cuda_graphs`` (a runtime option), every kind of step is captured once and replayed
  (dqltoolkit/cuda_graphs.py), and so is acting per batch shape.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import Tensor

from ..capabilities import KERNELS, declared
from ..cuda_graphs import InputGraphs, StepGraphs
from ..heads.reverse_chain import reverse_chain
from ..learner import EagerBackend, Grads, Learner
from ..nn import mish


class CriticAfter:
    """The critic as the actor's loss sees it while the critic's own update may still be running on
    another CUDA stream: the first use makes the actor's stream wait for that update, so the actor reads
    the updated critic as in the eager order (critic step, then actor step)."""

    def __init__(self, critic: Any, stream: "torch.cuda.Stream") -> None:
        self._critic, self._stream = critic, stream

    def _ready(self) -> Any:
        torch.cuda.current_stream(self._stream.device).wait_stream(self._stream)
        return self._critic

    def policy_values(self, obs: Tensor, actions: Tensor) -> Tensor:
        return self._ready().policy_values(obs, actions)

    def __call__(self, *args: Any, **kwargs: Any) -> Tensor:
        return self._ready()(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ready(), name)


def split_actor_grads(objective: Any, head: Any, critic: Any, obs: Tensor, actions: Tensor, generators: Any,
                      params: List[Tensor]) -> Tuple[Tensor, Dict[str, Tensor], List[Tensor]]:
    """The shipped ``ql`` objective's loss and gradients w.r.t. ``params`` in two backward passes: the BC
    term's right after its forward, before the critic is read, then the Q term's. Same random numbers in
    the same order as ``actor_loss``; the gradients differ from one joint backward by float rounding only.

    Why: the actor waits for the critic's update (on its own stream) only where its loss reads the critic;
    the BC term's backward then runs off the step's critical path."""
    g_bc: list = []

    def bc_backward(bc: Tensor, shared: bool) -> None:
        g_bc.extend(torch.autograd.grad(bc.sum(), params, retain_graph=shared, allow_unused=True))

    bc, new_actions = objective.bc_and_actions(head, obs, actions, generators, after_bc=bc_backward)
    ql = objective.q_loss(critic, obs, new_actions, generators)
    g_q = torch.autograd.grad(objective.combine(bc.detach(), ql)[0].sum(), params, allow_unused=True)  # eta L_q's
    grads = [a if b is None else (b if a is None else a + b) for a, b in zip(g_bc, g_q)]
    grads = [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]
    return (*objective.combine(bc, ql), grads)


def _chain_kernel(noise, sp, tp, w_action, weights, biases, c, lim):
    return reverse_chain(noise, sp, tp, w_action, weights, biases, c, lim)


class CudaBackend(EagerBackend):
    name = "cuda"

    def __init__(self, learner: Learner) -> None:
        head, dev = learner.head, learner.device
        self.chain = KERNELS in declared(head) and getattr(head.net, "act", None) is mish and len(head.net.layers) > 1
        if self.chain:
            learner.head.chain_kernel = learner.ema_head.chain_kernel = _chain_kernel
        self.split_backward = KERNELS in declared(learner.objective) and not len(learner.aux)
        self.stream = torch.cuda.Stream(dev) if learner.critic is not None else None
        graphs = bool(learner.config.cuda_graphs)
        self.captures_steps = graphs
        self.step_graphs = StepGraphs(learner.train_generators, dev) if graphs else None
        self.act_graphs = InputGraphs(learner.act_generators, dev) if graphs else None
        self._learner = learner

    def describe(self) -> str:
        on = [n for n, f in (("chain", self.chain), ("streams", self.stream is not None), ("graphs", self.step_graphs is not None)) if f]
        return f"{self.name} ({', '.join(on) if on else 'eager'})"

    def run_step(self, learner: Learner, batch: Optional[Dict[str, Tensor]], actor: bool,
                 ema: Optional[str]) -> Tuple[Dict[str, Tensor], Dict[str, Tensor]]:
        body = lambda: learner.step_body(batch, actor, ema)  # noqa: E731
        if batch is None and self.step_graphs is not None:
            key = (actor, ema, learner.objective.schedule_key(learner.num_timesteps))
            return self.step_graphs.run(key, body)
        return body()

    def updates(self, learner: Learner, critic_update, actor_update) -> Tuple[Dict[str, Tensor], Dict[str, Tensor]]:
        """The eager order with the critic's update on a side stream, overlapped with the actor's work up to
        where the actor reads the critic (:class:`CriticAfter` waits there); the main stream waits for the
        side stream before the EMA and target updates that follow."""
        if self.stream is None or critic_update is None or actor_update is None:
            return super().updates(learner, critic_update, actor_update)
        main = torch.cuda.current_stream(learner.device)
        self.stream.wait_stream(main)
        with torch.cuda.stream(self.stream):
            critic_info = critic_update()
        actor_info = actor_update(CriticAfter(learner.critic, self.stream))
        main.wait_stream(self.stream)
        return critic_info, actor_info

    def actor_grads(self, learner: Learner, batch: Dict[str, Tensor], critic: Any) -> Grads:
        if not (self.split_backward and isinstance(critic, CriticAfter)):
            return super().actor_grads(learner, batch, critic)
        loss, parts, grads = split_actor_grads(learner.objective, learner.head, critic, batch["obs"], batch["actions"],
                                               learner.train_generators, learner.actor_params)
        return loss, parts, grads, None

    def act(self, key: Any, obs: Tensor, fn: Any) -> Tensor:
        if self.act_graphs is None or not obs.is_cuda:
            return fn(obs)
        return self.act_graphs.run(key, obs, fn)

    def reset(self) -> None:
        if self.step_graphs is not None:
            self.step_graphs.reset()
            self.act_graphs.reset()
