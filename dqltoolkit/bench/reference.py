"""A plain Diffusion-QL training step, structured the way the paper's public code is.

This is the yardstick for ``dqltoolkit bench`` and for the equality tests: two separate critic MLPs, the
denoiser re-embedding state and time at every step of the chain, per-step tensor look-ups of the
schedule, ``nn.Mish``, an EMA loop over parameters, a Polyak loop over parameters, weight gradients for
the critic computed during the actor's backward (then zeroed), and ``.item()`` on every loss every step.
The math is the same as the toolkit's: with the same weights, batch and noise it gives the same losses.

One deliberate difference from the original: random numbers are drawn from one ``torch.Generator`` in
the toolkit's order (batch indices, next-action chain noise as one block, BC step and noise, policy chain
noise, coin), so that a test can feed both implementations the same numbers.
"""

from __future__ import annotations

import copy
import math
from typing import Dict

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


@torch.no_grad()
def copy_member_into_linears(linears, ens, k: int) -> None:
    """Member ``k`` of a member-batched MLP ``ens`` (weights ``[M, in, out]``) into plain ``nn.Linear``s
    (weights ``[out, in]``), layer by layer: how the reference steps take a toolkit agent's weights."""
    for lin, layer in zip(linears, ens.layers):
        lin.weight.copy_(layer.weight[k].t())
        lin.bias.copy_(layer.bias[k, 0])


class SinusoidalPosEmb(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        half = self.dim // 2
        emb = math.log(10000) / (half - 1)
        emb = torch.exp(torch.arange(half, device=x.device) * -emb)
        emb = x[:, None].float() * emb[None, :]
        return torch.cat((emb.sin(), emb.cos()), dim=-1)


class RefDenoiser(nn.Module):
    def __init__(self, state_dim: int, action_dim: int, hidden: int = 256, t_dim: int = 16) -> None:
        super().__init__()
        self.time_mlp = nn.Sequential(SinusoidalPosEmb(t_dim), nn.Linear(t_dim, t_dim * 2), nn.Mish(), nn.Linear(t_dim * 2, t_dim))
        self.mid_layer = nn.Sequential(
            nn.Linear(state_dim + action_dim + t_dim, hidden), nn.Mish(),
            nn.Linear(hidden, hidden), nn.Mish(),
            nn.Linear(hidden, hidden), nn.Mish(),
        )
        self.final_layer = nn.Linear(hidden, action_dim)

    def forward(self, x, time, state):
        t = self.time_mlp(time)
        return self.final_layer(self.mid_layer(torch.cat([x, t, state], dim=1)))


def _extract(a: torch.Tensor, t: torch.Tensor, shape) -> torch.Tensor:
    out = a.gather(-1, t)
    return out.reshape(t.shape[0], *((1,) * (len(shape) - 1)))


class RefDiffusion(nn.Module):
    def __init__(self, state_dim: int, action_dim: int, betas: np.ndarray, max_action: float = 1.0, hidden: int = 256, t_dim: int = 16) -> None:
        super().__init__()
        self.action_dim, self.max_action, self.T = action_dim, max_action, len(betas)
        self.model = RefDenoiser(state_dim, action_dim, hidden, t_dim)
        betas = torch.tensor(betas, dtype=torch.float32)
        alphas = 1.0 - betas
        abar = torch.cumprod(alphas, 0)
        abar_prev = torch.cat([torch.ones(1), abar[:-1]])
        self.register_buffer("betas", betas)
        self.register_buffer("sqrt_alphas_cumprod", abar.sqrt())
        self.register_buffer("sqrt_one_minus_alphas_cumprod", (1 - abar).sqrt())
        self.register_buffer("sqrt_recip_alphas_cumprod", (1.0 / abar).sqrt())
        self.register_buffer("sqrt_recipm1_alphas_cumprod", (1.0 / abar - 1).sqrt())
        post_var = betas * (1.0 - abar_prev) / (1.0 - abar)
        self.register_buffer("posterior_log_variance_clipped", torch.log(torch.clamp(post_var, min=1e-20)))
        self.register_buffer("posterior_mean_coef1", betas * abar_prev.sqrt() / (1.0 - abar))
        self.register_buffer("posterior_mean_coef2", (1.0 - abar_prev) * alphas.sqrt() / (1.0 - abar))

    def p_sample(self, x, t, s, noise):
        eps = self.model(x, t, s)
        x_recon = _extract(self.sqrt_recip_alphas_cumprod, t, x.shape) * x - _extract(self.sqrt_recipm1_alphas_cumprod, t, x.shape) * eps
        x_recon = x_recon.clamp(-self.max_action, self.max_action)
        mean = _extract(self.posterior_mean_coef1, t, x.shape) * x_recon + _extract(self.posterior_mean_coef2, t, x.shape) * x
        log_var = _extract(self.posterior_log_variance_clipped, t, x.shape)
        nonzero_mask = (1 - (t == 0).float()).reshape(x.shape[0], 1)
        return mean + nonzero_mask * (0.5 * log_var).exp() * noise

    def sample(self, state, gen):
        B = state.shape[0]
        noise = torch.randn((self.T, B, self.action_dim), generator=gen, device=state.device)
        x = noise[0]
        for k, i in enumerate(reversed(range(self.T))):
            t = torch.full((B,), i, device=state.device, dtype=torch.long)
            step_noise = noise[k + 1] if i > 0 else torch.zeros_like(x)
            x = self.p_sample(x, t, state, step_noise)
        return x.clamp(-self.max_action, self.max_action)

    def loss(self, x_start, state, gen):
        B = x_start.shape[0]
        t = torch.randint(0, self.T, (B,), generator=gen, device=x_start.device)
        noise = torch.randn((B, self.action_dim), generator=gen, device=x_start.device)
        x_noisy = _extract(self.sqrt_alphas_cumprod, t, x_start.shape) * x_start + _extract(self.sqrt_one_minus_alphas_cumprod, t, x_start.shape) * noise
        return F.mse_loss(self.model(x_noisy, t, state), noise)


class RefCritic(nn.Module):
    def __init__(self, state_dim: int, action_dim: int, hidden: int = 256) -> None:
        super().__init__()

        def q():
            return nn.Sequential(nn.Linear(state_dim + action_dim, hidden), nn.Mish(), nn.Linear(hidden, hidden), nn.Mish(),
                                 nn.Linear(hidden, hidden), nn.Mish(), nn.Linear(hidden, 1))

        self.q1_model, self.q2_model = q(), q()

    def forward(self, state, action):
        x = torch.cat([state, action], dim=-1)
        return self.q1_model(x), self.q2_model(x)


class ReferenceDiffusionQL:
    """The reference training step (``train_step``) on a dataset held as tensors."""

    def __init__(self, state_dim, action_dim, betas, data: Dict[str, torch.Tensor], seed: int = 0, eta: float = 1.0, lr: float = 3e-4,
                 gamma: float = 0.99, tau: float = 0.005, grad_norm: float = 1.0, ema_decay: float = 0.995, ema_start: int = 1000,
                 ema_every: int = 5, batch_size: int = 256, hidden: int = 256, t_dim: int = 16, device="cpu") -> None:
        torch.manual_seed(seed)
        self.actor = RefDiffusion(state_dim, action_dim, betas, hidden=hidden, t_dim=t_dim).to(device)
        self.ema_model = copy.deepcopy(self.actor)
        self.critic = RefCritic(state_dim, action_dim, hidden).to(device)
        self.critic_target = copy.deepcopy(self.critic)
        self.actor_optimizer = torch.optim.Adam(self.actor.parameters(), lr=lr)
        self.critic_optimizer = torch.optim.Adam(self.critic.parameters(), lr=3e-4)
        self.data, self.eta, self.gamma, self.tau, self.grad_norm = data, eta, gamma, tau, grad_norm
        self.ema_decay, self.ema_start, self.ema_every, self.batch_size = ema_decay, ema_start, ema_every, batch_size
        self.gen = torch.Generator(device=device)
        self.gen.manual_seed(seed)
        self.step = 0
        self.log: Dict[str, list] = {"bc_loss": [], "ql_loss": [], "actor_loss": [], "critic_loss": []}

    def step_ema(self) -> None:
        if self.step < self.ema_start:
            return
        for cur, ema in zip(self.actor.parameters(), self.ema_model.parameters()):
            ema.data = ema.data * self.ema_decay + (1 - self.ema_decay) * cur.data

    def train_step(self) -> Dict[str, float]:
        n = self.data["obs"].shape[0]
        idx = torch.randint(n, (self.batch_size,), generator=self.gen, device=self.data["obs"].device)
        state, action = self.data["obs"][idx], self.data["actions"][idx]
        reward, next_state = self.data["rewards"][idx].unsqueeze(1), self.data["next_obs"][idx]
        not_done = 1.0 - self.data["terminals"][idx].unsqueeze(1)
        # critic
        current_q1, current_q2 = self.critic(state, action)
        next_action = self.ema_model.sample(next_state, self.gen)
        target_q1, target_q2 = self.critic_target(next_state, next_action)
        target_q = (reward + not_done * self.gamma * torch.min(target_q1, target_q2)).detach()
        critic_loss = F.mse_loss(current_q1, target_q) + F.mse_loss(current_q2, target_q)
        self.critic_optimizer.zero_grad()
        critic_loss.backward()
        if self.grad_norm > 0:
            nn.utils.clip_grad_norm_(self.critic.parameters(), max_norm=self.grad_norm, norm_type=2)
        self.critic_optimizer.step()
        # actor
        bc_loss = self.actor.loss(action, state, self.gen)
        new_action = self.actor.sample(state, self.gen)
        q1_new, q2_new = self.critic(state, new_action)
        if torch.rand((), generator=self.gen, device=state.device) > 0.5:
            q_loss = -q1_new.mean() / q2_new.abs().mean().detach()
        else:
            q_loss = -q2_new.mean() / q1_new.abs().mean().detach()
        actor_loss = bc_loss + self.eta * q_loss
        self.actor_optimizer.zero_grad()
        actor_loss.backward()
        if self.grad_norm > 0:
            nn.utils.clip_grad_norm_(self.actor.parameters(), max_norm=self.grad_norm, norm_type=2)
        self.actor_optimizer.step()
        if self.step % self.ema_every == 0:
            self.step_ema()
        for param, target in zip(self.critic.parameters(), self.critic_target.parameters()):
            target.data.copy_(self.tau * param.data + (1 - self.tau) * target.data)
        self.step += 1
        out = {"bc_loss": bc_loss.item(), "ql_loss": q_loss.item(), "actor_loss": actor_loss.item(), "critic_loss": critic_loss.item()}
        for k, v in out.items():
            self.log[k].append(v)
        return out

    @torch.no_grad()
    def load_from_agent(self, agent, member: int = 0) -> "ReferenceDiffusionQL":
        """Copy a toolkit agent's weights (member ``member``) into these modules, for equality tests."""

        copy_mlp = copy_member_into_linears

        def linears(seq):
            return [m for m in seq.modules() if isinstance(m, nn.Linear)]

        for ref, head in ((self.actor, agent.head), (self.ema_model, agent.ema_head)):
            copy_mlp(linears(ref.model.time_mlp), head.time_mlp, member)
            copy_mlp(linears(ref.model.mid_layer) + [ref.model.final_layer], head.net, member)
        for ref, net in ((self.critic, agent.critic.q), (self.critic_target, agent.critic.target)):
            copy_mlp(linears(ref.q1_model), net, 2 * member)
            copy_mlp(linears(ref.q2_model), net, 2 * member + 1)
        self.gen.set_state(agent.train_generators[member].get_state())
        return self
