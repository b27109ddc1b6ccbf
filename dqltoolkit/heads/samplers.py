"""Reverse-diffusion samplers, kept apart from the model and the schedule (as CleanDiffuser does).

A diffusion head trained with T steps can be sampled with K <= T steps by several solvers. The head owns
the network and the schedule (its cumulative alphas ``abar``) and picks the K network times (evenly
respaced indices into ``abar``); a sampler turns ``abar`` at those times into a *plan*, a dict of Python
floats per chain position ``j`` (position ``K - 1`` runs first, from x_T; position 0 last):

- ``t``: the network time index of each position; ``recip``, ``recipm1``: x0 = recip x - recipm1 eps;
- ``coef1``, ``coef2``, ``std``: the step ``x <- coef1 x0 + coef2 x + std z`` (z: the noise drawn for the
  step; none after the last one), with x0 the clipped data prediction;
- ``coef0`` (multistep solvers only): a term ``coef0 x0_previous`` on the x0 of the step before.

Why this form: DDPM's posterior step and DDIM's step (eta 0) are both ``coef1 x0 + coef2 x + std z``, which
is exactly what the chain kernels (the fused CPU operator, dqltoolkit/backends/fused_cpu.py, and the GPU autograd node,
heads/reverse_chain.py) compute, so a plan without ``coef0`` carries ``packed`` (the kernels' five numbers
per position) and runs there, with or without a graph. A multistep plan (DPM-Solver++ 2M) has no
``packed``: where gradients are needed (the Q term) the head runs it with :func:`run_plan`, eagerly, with
autograd through every step; without a graph (acting, the critic's targets) the kernels run it forward.

A new sampler is a new file: subclass :class:`Sampler`, build the plan in :meth:`Sampler.plan` (and
override :meth:`Sampler.run` if its loop is not this one), and register it in :data:`SAMPLERS` (or
through the entry-point group ``dqltoolkit.samplers``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional

import numpy as np
import torch
from torch import Tensor

from ..registry import Registry
from ..settings import setting

#: a plan: per chain position, the coefficients of a reverse step (see the module docstring)
Plan = Dict[str, Any]
#: (x [M, B, A], chain position j) -> the clipped x0 prediction at network time plan["t"][j]
X0Fn = Callable[[Tensor, int], Tensor]

SAMPLERS: Registry[Callable[[], "Sampler"]] = Registry("sampler", "dqltoolkit.samplers")


@dataclass
class SamplingSettings:
    """Which solver, and how many reverse steps, where a chain is sampled for acting and for the critic's
    next actions: keys every agent takes (routed like the core's), read for heads with a chain. (The Q
    term's chain is the objective's: ``q_sampler``, ``q_sample_steps`` of the ql objective.)"""

    sample_steps: int = setting(0, "reverse steps when acting, for heads with a chain (0: all; fewer: respaced, faster)", min=0, max=10_000)
    target_sample_steps: int = setting(0, "reverse steps for the critic's next actions (0: all; EDP uses fewer)", min=0, max=10_000)
    sampler: str = setting("", "solver when acting, for heads with a chain: ddpm, ddim, dpm-solver++ or a registered one "
                           "('': the head's default_sampler)")
    target_sampler: str = setting("", "solver for the critic's next actions ('': the head's default_sampler)")


class Sampler:
    """Builds a plan from the schedule and runs the reverse loop. Stateless: one instance serves every head."""

    #: short description for `dqltoolkit list` and docs
    doc = ""

    def plan(self, abar: np.ndarray, t_index: np.ndarray) -> Plan:
        """The plan for network times ``t_index`` (increasing) whose cumulative alphas are ``abar`` (float64)."""
        raise NotImplementedError

    def run(self, plan: Plan, noise: Tensor, x0_fn: X0Fn, grad_from: int = 0) -> Tensor:
        """The unclamped end of the chain; see :func:`run_plan`."""
        return run_plan(plan, noise, x0_fn, grad_from)


def x0_coefficients(abar: np.ndarray, t_index: np.ndarray) -> Plan:
    """The entries every plan shares: network times and the eps -> x0 conversion."""
    return {"t": [int(i) for i in t_index], "recip": np.sqrt(1.0 / abar).tolist(), "recipm1": np.sqrt(1.0 / abar - 1.0).tolist()}


def pack(plan: Plan) -> Plan:
    """Add the chain kernels' layout (five numbers per position) to a plan without ``coef0``."""
    plan["packed"] = [v for j in range(len(plan["t"]))
                      for v in (plan["recip"][j], plan["recipm1"][j], plan["coef1"][j], plan["coef2"][j], plan["std"][j])]
    return plan


def kernel_ready(plan: Plan) -> bool:
    """Whether the chain kernels can run this plan (a one-step-memory plan: ``x <- coef1 x0 + coef2 x + std z``)."""
    return "packed" in plan


def packed_multistep(plan: Plan) -> List[float]:
    """The fused CPU operator's layout of a multistep plan: six numbers per position (recip, recipm1, coef1,
    coef2, std, coef0); made once per plan."""
    if "_packed6" not in plan:
        c0 = plan.get("coef0") or [0.0] * len(plan["t"])
        plan["_packed6"] = [v for j in range(len(plan["t"])) for v in
                            (plan["recip"][j], plan["recipm1"][j], plan["coef1"][j], plan["coef2"][j], plan["std"][j], c0[j])]
    return plan["_packed6"]


def kernels_run(sampler: "Sampler") -> bool:
    """Whether the chain kernels compute this sampler's loop: they implement :func:`run_plan`, so a sampler
    that overrides :meth:`Sampler.run` always runs its own."""
    return type(sampler).run is Sampler.run


def run_plan(plan: Plan, noise: Tensor, x0_fn: X0Fn, grad_from: int = 0) -> Tensor:
    """The reverse loop of any plan: from ``noise[:, 0]`` (x_T), step k runs position j = K - 1 - k and adds
    ``std[j] * noise[:, k + 1]`` after every step but the last (``noise`` ``[M, K, B, A]``). Steps before
    ``grad_from`` run without a graph (``grad_steps``: back-propagate through the last steps only)."""
    K = len(plan["t"])
    c1, c2, std, c0 = plan["coef1"], plan["coef2"], plan["std"], plan.get("coef0")
    x = noise[:, 0]
    prev: Optional[Tensor] = None
    for k, j in enumerate(reversed(range(K))):
        with torch.set_grad_enabled(torch.is_grad_enabled() and k >= grad_from):
            x0 = x0_fn(x, j)
            x_next = c1[j] * x0 + c2[j] * x
            if c0 is not None and c0[j] != 0.0:
                x_next = x_next + c0[j] * prev
            if j > 0 and std[j] != 0.0:
                x_next = x_next + std[j] * noise[:, k + 1]
            x, prev = x_next, x0
    return x


@SAMPLERS.register("ddpm")
class DDPM(Sampler):
    """Ancestral sampling with the posterior variance (Ho et al. 2020); K < T: respaced (Nichol & Dhariwal 2021)."""

    doc = "DDPM posterior sampler (the paper's); fewer steps: respaced"

    def plan(self, abar: np.ndarray, t_index: np.ndarray) -> Plan:
        abar_prev = np.concatenate([[1.0], abar[:-1]])
        betas = 1.0 - abar / abar_prev
        post_var = betas * (1.0 - abar_prev) / (1.0 - abar)
        c = x0_coefficients(abar, t_index)
        c["coef1"] = (betas * np.sqrt(abar_prev) / (1.0 - abar)).tolist()
        c["coef2"] = ((1.0 - abar_prev) * np.sqrt(1.0 - betas) / (1.0 - abar)).tolist()
        c["std"] = np.exp(0.5 * np.log(np.clip(post_var, 1e-20, None))).tolist()
        return pack(c)


@SAMPLERS.register("ddim")
class DDIM(Sampler):
    """DDIM with eta = 0 (Song et al. 2021): deterministic; eps is re-derived from the clipped x0, so
    x_prev = sqrt(abar_prev) x0 + sqrt(1 - abar_prev) (x - sqrt(abar) x0) / sqrt(1 - abar)."""

    doc = "DDIM, eta 0 (deterministic; uses only x_T of the noise)"

    def plan(self, abar: np.ndarray, t_index: np.ndarray) -> Plan:
        abar_prev = np.concatenate([[1.0], abar[:-1]])
        c = x0_coefficients(abar, t_index)
        ratio = np.sqrt((1.0 - abar_prev) / (1.0 - abar))
        c["coef1"] = (np.sqrt(abar_prev) - ratio * np.sqrt(abar)).tolist()
        c["coef2"] = ratio.tolist()
        c["std"] = [0.0] * len(abar)
        return pack(c)


@SAMPLERS.register("dpm-solver++")
class DPMSolverPP(Sampler):
    """DPM-Solver++(2M) (Lu et al. 2022): multistep, second order, data prediction (the clipped x0).

    With the VP schedule's discrete abar, alpha = sqrt(abar), sigma = sqrt(1 - abar), lambda = log(alpha / sigma).
    A step from s to t, h = lambda_t - lambda_s: x_t = (sigma_t / sigma_s) x_s + alpha_t (1 - e^-h) D, with
    D = x0_s (first order: the first step, which has no history) or D = (1 + 1/(2r)) x0_s - 1/(2r) x0_prev,
    r = h_prev / h (second order). The last step goes to abar = 1 (sigma 0, lambda infinite), where the
    update is x = x0 of the last network time: first order, as the reference solver's final step with
    ``lower_order_final``. K network evaluations for K steps, like DDPM.
    """

    doc = "DPM-Solver++(2M): multistep, 2nd order, deterministic; chain kernels without a gradient, eager with one"

    def plan(self, abar: np.ndarray, t_index: np.ndarray) -> Plan:
        K = len(abar)
        alpha, sigma = np.sqrt(abar), np.sqrt(1.0 - abar)
        lam = np.log(alpha) - np.log(sigma)
        c = x0_coefficients(abar, t_index)
        coef1, coef2, coef0 = [0.0] * K, [0.0] * K, [0.0] * K
        coef1[0] = 1.0  # the last step: to abar = 1, x = x0
        h_prev = None
        for j in range(K - 1, 0, -1):  # from position j (time s) to position j - 1 (time t)
            h = lam[j - 1] - lam[j]
            phi = alpha[j - 1] * -np.expm1(-h)
            coef2[j] = sigma[j - 1] / sigma[j]
            if h_prev is None:
                coef1[j] = phi
            else:
                r = h_prev / h
                coef1[j] = phi * (1.0 + 0.5 / r)
                coef0[j] = -phi * 0.5 / r
            h_prev = h
        c.update(coef1=[float(v) for v in coef1], coef2=[float(v) for v in coef2], coef0=[float(v) for v in coef0], std=[0.0] * K)
        return c  # coef0: the chain kernels cannot run it


_INSTANCES: Dict[Any, Sampler] = {}


def get_sampler(name: str) -> Sampler:
    """The registered sampler ``name`` (an instance, made once per registered factory); unknown names list the registered ones."""
    key = (name, SAMPLERS.generation)  # (a name registered again gets a new instance)
    if key not in _INSTANCES:
        factory = SAMPLERS.get(name)  # (the first lookup may discover plugins: a new generation)
        key = (name, SAMPLERS.generation)
        _INSTANCES[key] = factory()
    return _INSTANCES[key]


def fused_plan(head: Any, steps: int = 0, sampler: Optional[str] = None) -> Optional[Plan]:
    """The plan of ``head``'s chain if the step operators (the TD target's and the actor's, which also need
    a backward) can compute it: a one-step plan of a sampler that keeps :meth:`Sampler.run`; else None."""
    plan = head.chain(steps, sampler)
    return plan if kernel_ready(plan) and kernels_run(get_sampler(sampler or head.default_sampler)) else None


def check_sampler(name: str, where: str) -> None:
    """Refuse a name no sampler is registered under, naming ``where`` it came from and the registered ones."""
    if not isinstance(name, str) or name not in SAMPLERS:
        raise ValueError(f"{where}: unknown sampler {str(name)[:60]!r}; registered samplers: {', '.join(SAMPLERS.names())}")
