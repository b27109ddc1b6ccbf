"""Diffusion-QL's policy: a conditional DDPM over actions with an MLP denoiser.

The denoiser's first layer takes ``[a_t, time_embedding(t), s]``. We keep its weight as one matrix (so
weights map one to one onto the reference implementation) but apply it in three parts: the state part
is computed once per reverse chain, the time part once per step for the whole batch, and only the
action part is a fresh matmul each step. That removes the repeated work of re-embedding ``s`` and ``t``
at every step of the chain that the reference code does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from ..capabilities import KERNELS
from ..nn import ACTIVATIONS, EnsembleMLP, member_randint, member_randn, sinusoidal_embedding
from ..registry import HEADS
from ..settings import setting
from .base import PolicyHead
from .samplers import SAMPLERS, Plan, check_sampler, get_sampler, kernel_ready, kernels_run
from .schedules import SCHEDULES

#: a reverse-chain kernel: (noise, state part, time part, action weights, weights, biases, chain, bound) -> actions
ChainKernel = Callable[..., Tensor]


@HEADS.register("diffusion")
class DiffusionHead(PolicyHead):
    """Conditional diffusion policy (eps-prediction, clipped x0), sampled by any registered sampler
    (heads/samplers.py: ddpm, the paper's posterior-variance sampler, by default; ddim; dpm-solver++).

    ``chain_kernel``: an implementation of :meth:`sample`'s reverse loop with the same math, installed by
    the backend the agent runs on (the fused CPU operator, the GPU autograd node) for this exact class
    only (it declares ``capabilities``). It runs the plan of any sampler that keeps ``Sampler.run``'s loop:
    one-step plans (ddpm, ddim) with or without a graph, multistep plans (dpm-solver++) without one; in
    every other case (no kernel, a graph through a multistep plan, a sampler with its own loop) the
    sampler's loop runs eagerly (heads/samplers.py).
    """

    @dataclass
    class Settings(PolicyHead.Settings):
        T: int = setting(5, "diffusion steps (paper: 5 for D4RL, 50 for the bandit)", min=1, max=10_000)
        beta_schedule: str = setting("vp", "noise schedule: vp, linear, cosine (or a registered one)")
        hidden: int = setting(256, "denoiser width", min=1, max=16384)
        n_layers: int = setting(3, "denoiser hidden layers", min=1, max=64)
        time_dim: int = setting(16, "width of the time embedding", min=2, max=16_384)
        activation: str = setting("mish", "denoiser activation", choices=tuple(ACTIVATIONS))
        default_sampler: str = setting("ddpm", "the head's sampler wherever sampler, target_sampler or q_sampler is unset: "
                                       "ddpm, ddim, dpm-solver++ (or a registered one)")

    differentiable_samples = True
    capabilities = frozenset({KERNELS})
    noise_row_dim = 1  # draw_noise: [M, K, rows, A]
    chain_kernel: Optional[ChainKernel] = None

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        members: int = 1,
        max_action: float = 1.0,
        T: int = 5,
        beta_schedule: str = "vp",
        hidden: int = 256,
        n_layers: int = 3,
        time_dim: int = 16,
        activation: str = "mish",
        default_sampler: str = "ddpm",
    ) -> None:
        super().__init__(obs_dim, action_dim, members, max_action)
        if T < 1:
            raise ValueError(f"diffusion head: T must be >= 1, got {T}")
        check_sampler(default_sampler, "diffusion head: default_sampler")
        self.default_sampler = default_sampler
        self.T, self.time_dim = int(T), int(time_dim)
        self.time_mlp = EnsembleMLP(members, time_dim, time_dim, [2 * time_dim], activation)
        self.net = EnsembleMLP(members, action_dim + time_dim + obs_dim, action_dim, [hidden] * n_layers, activation)
        self._set_schedule(SCHEDULES.get(beta_schedule)(self.T))

    def _set_schedule(self, betas: np.ndarray) -> None:
        abar = np.cumprod(1.0 - betas)
        self.betas = betas
        self.alphas_cumprod = abar
        self._chains: dict = {}
        self.register_buffer("sqrt_abar", torch.tensor(np.sqrt(abar), dtype=torch.float32), persistent=False)
        # the time embedding of every step is a constant: computed once, not at every chain
        self.register_buffer("time_embedding", sinusoidal_embedding(torch.arange(self.T), self.time_dim), persistent=False)
        self.register_buffer("sqrt_1m_abar", torch.tensor(np.sqrt(1.0 - abar), dtype=torch.float32), persistent=False)

    def chain(self, steps: int = 0, sampler: Optional[str] = None) -> Plan:
        """The plan of the reverse chain over ``steps`` of the T steps (0 or T: all of them) for ``sampler``
        (None: :attr:`default_sampler`); see heads/samplers.py for its entries.

        Fewer steps keep k evenly spaced network times (Nichol & Dhariwal 2021's respacing) and feed the
        network the original time indices; the sampler derives its coefficients from abar at those times.
        Faster and approximate; callers choose it per call (acting, the critic's next actions, the Q term),
        whatever the sampler, so the noise of a k-step chain has the same shape for every sampler.
        """
        name = sampler or self.default_sampler
        k = self.T if steps <= 0 or steps >= self.T else int(steps)
        key = (name, SAMPLERS.generation, k)  # (a name registered again later gets its own plans)
        if key not in self._chains:
            idx = np.unique(np.round(np.linspace(0, self.T - 1, k)).astype(int))
            self._chains[key] = get_sampler(name).plan(self.alphas_cumprod[idx], idx)
        return self._chains[key]

    def reset_parameters(self, generators: Sequence[torch.Generator]) -> None:
        self.time_mlp.reset_parameters(generators)
        self.net.reset_parameters(generators)

    # --- denoiser pieces -------------------------------------------------------------------------
    def _time_proj(self) -> Tensor:
        """First-layer contribution of each step's time embedding: ``[M, T, hidden]``."""
        temb = self.time_mlp(self.time_embedding.expand(self.members, -1, -1))
        w_t = self.net.layers[0].weight[:, self.action_dim : self.action_dim + self.time_dim]
        return torch.bmm(temb, w_t)

    def _state_proj(self, obs: Tensor) -> Tensor:
        first = self.net.layers[0]
        return torch.baddbmm(first.bias, obs, first.weight[:, self.action_dim + self.time_dim :])

    def _eps(self, x: Tensor, state_part: Tensor, time_part: Tensor) -> Tensor:
        """The denoiser from its first layer's pieces: x @ W_a + state part (with the bias), then the
        time part, which is ``[M, 1, hidden]`` in the chain (one step for the whole batch) or
        ``[M, B, hidden]`` for per-sample steps, enters as the activation's bias."""
        h = torch.baddbmm(state_part, x, self.net.layers[0].weight[:, : self.action_dim])
        return self.net.forward_from_preactivation(h, time_part)

    def predict_noise(self, x: Tensor, t: Tensor, obs: Tensor) -> Tensor:
        """eps_theta(x_t, t, s) for per-sample steps ``t`` ``[M, B]`` (0-based)."""
        tp = self._time_proj()
        tsel = torch.gather(tp, 1, t.unsqueeze(-1).expand(-1, -1, tp.shape[-1]))
        return self._eps(x, self._state_proj(obs), tsel)

    # --- losses and sampling ---------------------------------------------------------------------
    def behaviour_loss(
        self,
        obs: Tensor,
        actions: Tensor,
        generators: Sequence[torch.Generator],
        t: Tensor | None = None,
        noise: Tensor | None = None,
    ) -> Tensor:
        """DDPM denoising loss per member: mean over batch and action dims of (eps_theta - eps)^2."""
        return self._denoise(obs, actions, generators, t, noise)[0].mean(dim=(1, 2))

    def behaviour_loss_per_sample(self, obs: Tensor, actions: Tensor, generators: Sequence[torch.Generator]) -> Tensor:
        """The denoising error of each transition's (t, eps) draw, ``[M, B]``."""
        return self._denoise(obs, actions, generators)[0].mean(dim=-1)

    def _denoise(self, obs, actions, generators, t=None, noise=None):
        M, B, _ = actions.shape
        if t is None:
            t = member_randint(generators, self.T, (B,), actions.device)
        if noise is None:
            noise = member_randn(generators, (B, self.action_dim), actions.device)
        a = self.sqrt_abar[t].unsqueeze(-1)
        s = self.sqrt_1m_abar[t].unsqueeze(-1)
        x_t = a * actions + s * noise
        eps = self.predict_noise(x_t, t, obs)
        return (eps - noise).pow(2), x_t, eps, a, s

    def behaviour_loss_and_estimate(self, obs: Tensor, actions: Tensor, generators: Sequence[torch.Generator]) -> tuple[Tensor, Tensor]:
        """The denoising loss and EDP's action approximation from the same forward pass.

        EDP (Kang et al. 2023) replaces the full reverse chain in the Q term by the one-step estimate of
        a^0 from the noised dataset action: a0_hat = (a_t - sqrt(1 - abar_t) eps_theta) / sqrt(abar_t),
        clipped to the action bounds. It costs no extra denoiser pass, since the BC loss already computed
        eps_theta(a_t, t, s); the gradient of Q reaches the denoiser through eps_theta.
        """
        sq, x_t, eps, a, s = self._denoise(obs, actions, generators)
        loss = sq.mean(dim=(1, 2))
        estimate = ((x_t - s * eps) / a).clamp(-self.max_action, self.max_action)
        return loss, estimate

    def draw_noise(self, rows: int, generators: Sequence[torch.Generator], device: torch.device,
                   steps: Optional[int] = None) -> Tensor:
        return member_randn(generators, (len(self.chain(steps or 0)["t"]), rows, self.action_dim), device)

    def sample(
        self,
        obs: Tensor,
        generators: Sequence[torch.Generator],
        noise: Tensor | None = None,
        steps: int | None = None,
        *,
        grad_steps: int = 0,
        sampler: Optional[str] = None,
    ) -> Tensor:
        """Run the reverse chain from x_T ~ N(0, I); differentiable through every step, or through the
        last ``grad_steps`` only (0: all). ``steps``: reverse steps (None or 0: all T; fewer: respaced);
        ``sampler``: a registered sampler's name (None: :attr:`default_sampler`).

        ``noise`` ``[M, K, B, action_dim]`` for a K-step chain: index 0 is x_T, index k >= 1 the noise
        added after the k-th reverse step (none is added after the last step; deterministic samplers add none).
        """
        c = self.chain(steps or 0, sampler)
        K = len(c["t"])
        M, B, _ = obs.shape
        if noise is None:
            noise = member_randn(generators, (K, B, self.action_dim), obs.device)
        tp = self._time_proj()
        sp = self._state_proj(obs)
        lim = self.max_action
        # grad_steps < K: the first reverse steps run without a graph (the reference code's "last_few")
        no_grad_until = K - grad_steps if 0 < grad_steps < K and torch.is_grad_enabled() else 0
        layers = self.net.layers
        solver = get_sampler(sampler or self.default_sampler)
        # the kernels run Sampler.run's loop: one-step plans with or without a graph, multistep ones without
        if (self.chain_kernel is not None and no_grad_until == 0 and kernels_run(solver)
                and (kernel_ready(c) or not torch.is_grad_enabled())):
            return self.chain_kernel(noise, sp, tp, layers[0].weight[:, : self.action_dim], [m.weight for m in layers[1:]],
                                     [m.bias for m in layers[1:]], c, float(lim))

        def x0(x: Tensor, j: int) -> Tensor:
            i = c["t"][j]
            eps = self._eps(x, sp, tp[:, i : i + 1].contiguous())
            return (c["recip"][j] * x - c["recipm1"][j] * eps).clamp(-lim, lim)

        return solver.run(c, noise, x0, no_grad_until).clamp(-lim, lim)

