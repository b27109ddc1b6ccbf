"""A consistency-model policy (Consistency-AC: Ding & Jin 2023), trained directly by consistency training.

Why: a diffusion policy needs T network passes per action (and back-propagates through all of them in
the ``ql`` objective's Q term); a consistency model maps noise to an action in one pass, or two for a
better sample, so acting and the Q term cost one or two denoiser passes.

The model (Song et al. 2023, "Consistency Models", sections 3 and 5 and appendix C):

- noise levels are Karras et al.'s (2022) sigmas ``sigma_i = (s_min^(1/rho) + i/(N-1) (s_max^(1/rho) -
  s_min^(1/rho)))^rho``, i = 0 .. N-1, on [``sigma_min``, ``sigma_max``];
- the consistency function is f(x, sigma, s) = c_skip(sigma) x + c_out(sigma) F(c_in(sigma) x, sigma, s),
  with c_skip = sd^2 / ((sigma - s_min)^2 + sd^2), c_out = sd (sigma - s_min) / sqrt(sd^2 + sigma^2) and
  c_in = 1 / sqrt(sigma^2 + sd^2) (sd = ``sigma_data``; c_in is EDM's input scaling, which Ding & Jin's
  code leaves out: without it the network sees inputs of size ``sigma_max``). At sigma_min, c_skip = 1 and
  c_out = 0, so f is the identity there (the boundary condition), whatever F is. The output is clipped to
  the action bound, as Ding & Jin and the diffusion head do.
- consistency training, no distillation: for a dataset action a, one z ~ N(0, I) and a level n,
  L = lambda(n) d(f(a + sigma_{n+1} z, sigma_{n+1}), sg f(a + sigma_n z, sigma_n)).

Choices, with their sources:

- **Target network: the stop-gradient of the online network**, as improved consistency training (iCT, Song
  & Dhariwal 2023, section 3.2) recommends: they show the EMA teacher of the original paper biases
  consistency training (the loss's minimiser is not the consistency function unless the teacher is the
  student) and that decay 0 trains better. It also keeps the head stateless beyond its parameters: the
  checkpoint, the learner's EMA copy and the export see one network, nothing to keep in step. (The
  learner's own EMA of the policy, ``ema_decay``, is the usual acting/target policy and is unrelated.)
- **Distance** ``cm_loss``: iCT's ``pseudo-huber`` (default), sqrt(|x - y|^2 + c^2) - c with c = 0.00054
  sqrt(action_dim), or ``l2``, the mean squared difference over action dimensions (Ding & Jin's code).
- **Weighting** ``cm_weighting``: iCT's ``ict`` (default), lambda = 1 / (sigma_{n+1} - sigma_n), or ``uniform``
  (Song et al. 2023; Ding & Jin on medium and medium-replay locomotion).
- **Noise levels** ``cm_noise``: iCT's ``lognormal`` (default), p(n) proportional to erf((ln sigma_{n+1} -
  P_mean) / (sqrt 2 P_std)) - erf((ln sigma_n - P_mean) / (sqrt 2 P_std)) with P_mean -1.1, P_std 2.0, or
  ``uniform`` over n (Song et al. 2023, Ding & Jin). N is fixed (iCT doubles it on a curriculum; a fixed N
  keeps the head's math independent of the step count, which the head is never told).
- Why iCT's three by default: on the bandit, behaviour cloning for 10k steps left 17-19% of the samples
  off the four modes with them and 70-86% with Ding & Jin's l2 / uniform / uniform (N 20 and 40).

Sampling with K steps (Song et al. 2023, algorithm 1): a = f(sigma_max z_0, sigma_max); then for each of
the K - 1 intermediate levels sigma_k, a = f(a + sqrt(sigma_k^2 - sigma_min^2) z_k, sigma_k). With K = 2
the one intermediate level is ``sigma_mid`` (iCT's two-step sampler uses 0.821 for data in [-1, 1]); more
steps space the levels evenly in sigma^(1/rho) from ``sigma_mid`` towards sigma_min. Every step keeps the
graph, so ``ql`` maximises Q through the sampler (``differentiable_samples``). ``steps`` is passed in by the
caller (acting's ``sample_steps``, the TD target's ``target_sample_steps``); None or 0 means the head's
``cm_steps``.

No backend kernel computes this head (it declares no ``capabilities``): every backend runs it eagerly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional, Sequence

import torch
from torch import Tensor

from ..nn import ACTIVATIONS, EnsembleMLP, member_rand, member_randn, sinusoidal_embedding
from ..registry import HEADS
from ..settings import setting
from .base import PolicyHead

#: iCT's log-normal proposal over noise levels (Song & Dhariwal 2023, section 3.5)
P_MEAN, P_STD = -1.1, 2.0
#: the largest discretisation and number of sampling steps a head accepts (they size tables and loops)
MAX_N = 10_000


def karras_sigmas(sigma_min: float, sigma_max: float, n: int, rho: float) -> List[float]:
    """The N noise levels of Karras et al. (2022), ascending from ``sigma_min`` to ``sigma_max``."""
    lo, hi = sigma_min ** (1.0 / rho), sigma_max ** (1.0 / rho)
    return [(lo + i / (n - 1) * (hi - lo)) ** rho for i in range(n)]


@HEADS.register("consistency")
class ConsistencyHead(PolicyHead):
    """Consistency policy: one or a few network passes from noise to an action (see the module docstring)."""

    @dataclass
    class Settings(PolicyHead.Settings):
        N: int = setting(40, "consistency training's discretisation: noise levels on [sigma_min, sigma_max]", min=2, max=MAX_N)
        cm_steps: int = setting(2, "sampling steps when the caller names none (1: one network pass; 2: Consistency-AC's)",
                                min=1, max=MAX_N)
        sigma_min: float = setting(0.002, "smallest noise level (f is the identity there)", min=1e-6)
        sigma_max: float = setting(80.0, "largest noise level (where one-step sampling starts)", min=1e-6)
        sigma_data: float = setting(0.5, "the data's scale in the skip/out parametrisation", min=1e-6)
        sigma_mid: float = setting(0.821, "noise level of a two-step sampler's second step (iCT's)", min=1e-6)
        rho: float = setting(7.0, "Karras schedule exponent", min=1e-3)
        cm_loss: str = setting("pseudo-huber", "distance between online and target outputs: l2 (Ding & Jin) or pseudo-huber (iCT)",
                               choices=("l2", "pseudo-huber"))
        cm_weighting: str = setting("ict", "loss weight per level: uniform, or ict (1 / (sigma_{n+1} - sigma_n))",
                                    choices=("uniform", "ict"))
        cm_noise: str = setting("lognormal", "how training draws the level n: lognormal (iCT), or uniform",
                                choices=("uniform", "lognormal"))
        hidden: int = setting(256, "network width", min=1, max=16384)
        n_layers: int = setting(3, "network hidden layers", min=1, max=64)
        time_dim: int = setting(16, "width of the noise-level embedding", min=2, max=16_384)
        activation: str = setting("mish", "network activation", choices=tuple(ACTIVATIONS))

    differentiable_samples = True
    noise_row_dim = 1  # draw_noise: [M, K, rows, A]

    def __init__(self, obs_dim: int, action_dim: int, members: int = 1, max_action: float = 1.0, N: int = 40, cm_steps: int = 2,
                 sigma_min: float = 0.002, sigma_max: float = 80.0, sigma_data: float = 0.5, sigma_mid: float = 0.821,
                 rho: float = 7.0, cm_loss: str = "pseudo-huber", cm_weighting: str = "ict", cm_noise: str = "lognormal",
                 hidden: int = 256, n_layers: int = 3, time_dim: int = 16, activation: str = "mish") -> None:
        super().__init__(obs_dim, action_dim, members, max_action)
        if not 2 <= N <= MAX_N:
            raise ValueError(f"consistency head: N={N} must lie in [2, {MAX_N}]")
        if not 1 <= cm_steps <= MAX_N:
            raise ValueError(f"consistency head: cm_steps={cm_steps} must lie in [1, {MAX_N}]")
        if not 0 < sigma_min < sigma_mid < sigma_max:
            raise ValueError(f"consistency head: need 0 < sigma_min < sigma_mid < sigma_max, got sigma_min={sigma_min}, "
                             f"sigma_mid={sigma_mid}, sigma_max={sigma_max}")
        for name, value, known in (("cm_loss", cm_loss, ("l2", "pseudo-huber")), ("cm_weighting", cm_weighting, ("uniform", "ict")),
                                   ("cm_noise", cm_noise, ("uniform", "lognormal"))):
            if value not in known:
                raise ValueError(f"consistency head: {name}={value!r} is not one of {list(known)}")
        self.N, self.cm_steps, self.time_dim = int(N), int(cm_steps), int(time_dim)
        self.sigma_min, self.sigma_max, self.sigma_data = float(sigma_min), float(sigma_max), float(sigma_data)
        self.sigma_mid, self.rho = float(sigma_mid), float(rho)
        self.cm_loss, self.cm_weighting, self.cm_noise = cm_loss, cm_weighting, cm_noise
        self.huber_c = 0.00054 * math.sqrt(action_dim)
        self.sigmas = karras_sigmas(self.sigma_min, self.sigma_max, self.N, self.rho)
        # tables over the N - 1 training pairs (n, n + 1), as constants (not saved: a function of the settings)
        s = torch.tensor(self.sigmas, dtype=torch.float64)
        weights = 1.0 / (s[1:] - s[:-1]) if cm_weighting == "ict" else torch.ones(self.N - 1, dtype=torch.float64)
        if cm_noise == "lognormal":
            cdf = torch.special.erf((s.log() - P_MEAN) / (math.sqrt(2.0) * P_STD))
            p = cdf[1:] - cdf[:-1]
        else:
            p = torch.ones(self.N - 1, dtype=torch.float64)
        cum = torch.cumsum(p / p.sum(), 0)
        self.register_buffer("sigma_table", s.float(), persistent=False)
        self.register_buffer("weight_table", weights.float(), persistent=False)
        self.register_buffer("level_cdf", cum[:-1].float(), persistent=False)  # searchsorted(u) -> n in [0, N - 2]
        self.time_mlp = EnsembleMLP(members, time_dim, time_dim, [2 * time_dim], activation)
        self.net = EnsembleMLP(members, action_dim + time_dim + obs_dim, action_dim, [hidden] * n_layers, activation)

    def reset_parameters(self, generators: Sequence[torch.Generator]) -> None:
        self.time_mlp.reset_parameters(generators)
        self.net.reset_parameters(generators)

    # --- the consistency function ----------------------------------------------------------------
    def _position(self, sigma: Tensor) -> Tensor:
        """The level's place on the Karras grid, 0 at sigma_min and N - 1 at sigma_max (fractional between):
        what the time embedding sees, on the diffusion head's scale of step indices."""
        lo, hi = self.sigma_min ** (1.0 / self.rho), self.sigma_max ** (1.0 / self.rho)
        return (self.N - 1) * (sigma.pow(1.0 / self.rho) - lo) / (hi - lo)

    def consistency(self, x: Tensor, sigma: Tensor, obs: Tensor) -> Tensor:
        """f(x, sigma, s) for ``x`` ``[M, B, A]``, ``sigma`` ``[M, B]`` (or broadcastable, e.g. ``[M, 1]``) and
        ``obs`` ``[M, B, obs_dim]``: ``c_skip x + c_out F(c_in x, sigma, s)``, clipped to the action bound."""
        M, B, _ = x.shape
        sigma = sigma.expand(M, B)
        sd2 = self.sigma_data ** 2
        shifted = sigma - self.sigma_min
        c_skip = (sd2 / (shifted.pow(2) + sd2)).unsqueeze(-1)
        c_out = (self.sigma_data * shifted / (sd2 + sigma.pow(2)).sqrt()).unsqueeze(-1)
        c_in = (sd2 + sigma.pow(2)).rsqrt().unsqueeze(-1)
        temb = self.time_mlp(sinusoidal_embedding(self._position(sigma), self.time_dim))
        out = self.net(torch.cat([c_in * x, temb, obs], dim=-1))
        return (c_skip * x + c_out * out).clamp(-self.max_action, self.max_action)

    # --- consistency training --------------------------------------------------------------------
    def _levels(self, rows: int, generators: Sequence[torch.Generator], device: torch.device) -> Tensor:
        """Training levels n in [0, N - 2] ``[M, rows]``, from one uniform draw each (inverse CDF)."""
        u = member_rand(generators, (rows,), device)
        return torch.searchsorted(self.level_cdf, u.contiguous(), right=True)

    def behaviour_loss_per_sample(self, obs: Tensor, actions: Tensor, generators: Sequence[torch.Generator]) -> Tensor:
        """lambda(n) d(f(a + sigma_{n+1} z, sigma_{n+1}), sg f(a + sigma_n z, sigma_n)) per transition ``[M, B]``:
        the level n, then the noise z, drawn from each member's generator."""
        return self._consistency_loss(obs, actions, generators)[0]

    def behaviour_loss_and_estimate(self, obs: Tensor, actions: Tensor, generators: Sequence[torch.Generator]) -> tuple[Tensor, Tensor]:
        """The loss and, from the same forward pass, the online output f(a + sigma_{n+1} z, sigma_{n+1}): the
        ``ql`` objective's ``q_grad=approx`` maximises Q at it (EDP's action approximation, Kang et al. 2023,
        carried over to a consistency model: an action the policy would give for a noised dataset action,
        at no extra network pass). ``q_grad=exact`` (Consistency-AC) samples from noise instead."""
        loss, online = self._consistency_loss(obs, actions, generators)
        return loss.mean(dim=1), online

    def _consistency_loss(self, obs: Tensor, actions: Tensor, generators: Sequence[torch.Generator]) -> tuple[Tensor, Tensor]:
        M, B, A = actions.shape
        n = self._levels(B, generators, actions.device)
        z = member_randn(generators, (B, A), actions.device)
        s_lo, s_hi = self.sigma_table[n], self.sigma_table[n + 1]
        online = self.consistency(actions + s_hi.unsqueeze(-1) * z, s_hi, obs)
        with torch.no_grad():  # the target: the same network, without a graph (iCT)
            target = self.consistency(actions + s_lo.unsqueeze(-1) * z, s_lo, obs)
        diff = online - target
        if self.cm_loss == "l2":
            dist = diff.pow(2).mean(dim=-1)
        else:
            dist = (diff.pow(2).sum(dim=-1) + self.huber_c ** 2).sqrt() - self.huber_c
        return self.weight_table[n] * dist, online

    # --- sampling -----------------------------------------------------------------------------------
    def step_sigmas(self, steps: Optional[int] = None) -> List[float]:
        """The levels a ``steps``-step sampler evaluates f at: sigma_max, then ``sigma_mid`` and further levels
        evenly spaced in sigma^(1/rho) towards sigma_min (None or 0: ``cm_steps``)."""
        k = int(steps) if steps else self.cm_steps
        if not 1 <= k <= MAX_N:
            raise ValueError(f"consistency head: {k} sampling steps; choose 1 to {MAX_N}")
        lo, mid = self.sigma_min ** (1.0 / self.rho), self.sigma_mid ** (1.0 / self.rho)
        return [self.sigma_max] + [(mid + j / (k - 1) * (lo - mid)) ** self.rho for j in range(k - 1)]

    def draw_noise(self, rows: int, generators: Sequence[torch.Generator], device: torch.device,
                   steps: Optional[int] = None) -> Tensor:
        return member_randn(generators, (len(self.step_sigmas(steps)), rows, self.action_dim), device)

    def sample(self, obs: Tensor, generators: Sequence[torch.Generator], noise: Optional[Tensor] = None,
               steps: Optional[int] = None, *, grad_steps: int = 0) -> Tensor:
        """Actions ``[M, B, A]``. ``noise`` ``[M, K, B, A]`` for K steps: index 0 scaled by sigma_max is the
        start, index k the noise added before the k-th further step. ``grad_steps`` > 0 keeps the graph
        through the last ``grad_steps`` passes only (the ``ql`` objective's ``q_grad_steps``; 0: all)."""
        sig = self.step_sigmas(steps)
        K = len(sig)
        M, B, _ = obs.shape
        if noise is None:
            noise = member_randn(generators, (K, B, self.action_dim), obs.device)
        no_grad_until = K - grad_steps if 0 < grad_steps < K and torch.is_grad_enabled() else 0
        x = noise[:, 0] * self.sigma_max
        a = x
        for k, s in enumerate(sig):
            with torch.set_grad_enabled(torch.is_grad_enabled() and k >= no_grad_until):
                if k > 0:
                    x = a + math.sqrt(s * s - self.sigma_min ** 2) * noise[:, k]
                a = self.consistency(x, obs.new_full((M, 1), s), obs)
        return a
