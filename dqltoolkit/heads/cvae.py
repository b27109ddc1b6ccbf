"""BCQ's conditional VAE as a policy head (the paper's "CVAE" policy).

Encoder q(z | s, a) and decoder p(a | s, z); the behaviour loss is the ELBO as BCQ writes it
(reconstruction MSE + 0.5 KL). Sampling decodes z ~ N(0, I) clipped to +-0.5, which keeps samples
near the bulk of the data but, with a small latent, still smears mass between modes. Samples are
differentiable through the decoder.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch
from torch import Tensor

from ..nn import ACTIVATIONS, EnsembleMLP, member_randn
from ..registry import HEADS
from ..settings import setting
from .base import PolicyHead


@HEADS.register("cvae")
class CVAEHead(PolicyHead):
    @dataclass
    class Settings(PolicyHead.Settings):
        hidden: int = setting(750, "encoder and decoder width", min=1, max=16384)
        latent_dim: int = setting(0, "latent size (0: twice the action size)", min=0, max=4096)
        activation: str = setting("relu", "activation", choices=tuple(ACTIVATIONS))
        latent_clip: float = setting(0.5, "latent samples are clipped to +-latent_clip when sampling", min=0)

    differentiable_samples = True
    noise_row_dim = 0  # draw_noise: [M, rows, latent]

    def __init__(self, obs_dim: int, action_dim: int, members: int = 1, max_action: float = 1.0, hidden: int = 750, latent_dim: int = 0,
                 activation: str = "relu", latent_clip: float = 0.5) -> None:
        super().__init__(obs_dim, action_dim, members, max_action)
        self.latent_dim = int(latent_dim) or 2 * action_dim
        self.latent_clip = float(latent_clip)
        self.encoder = EnsembleMLP(members, obs_dim + action_dim, 2 * self.latent_dim, [hidden, hidden], activation)
        self.decoder = EnsembleMLP(members, obs_dim + self.latent_dim, action_dim, [hidden, hidden], activation)

    def reset_parameters(self, generators: Sequence[torch.Generator]) -> None:
        self.encoder.reset_parameters(generators)
        self.decoder.reset_parameters(generators)

    def decode(self, obs: Tensor, z: Tensor) -> Tensor:
        return self.max_action * torch.tanh(self.decoder(torch.cat([obs, z], dim=-1)))

    def behaviour_loss(self, obs: Tensor, actions: Tensor, generators: Sequence[torch.Generator]) -> Tensor:
        mean, log_std = self.encoder(torch.cat([obs, actions], dim=-1)).chunk(2, dim=-1)
        log_std = log_std.clamp(-4.0, 15.0)
        std = torch.exp(log_std)
        z = mean + std * member_randn(generators, mean.shape[1:], obs.device)
        recon = (self.decode(obs, z) - actions).pow(2).mean(dim=(1, 2))
        kl = -0.5 * (1 + 2 * log_std - mean.pow(2) - std.pow(2)).mean(dim=(1, 2))
        return recon + 0.5 * kl

    def draw_noise(self, rows: int, generators: Sequence[torch.Generator], device: torch.device, steps: Optional[int] = None) -> Tensor:
        return member_randn(generators, (rows, self.latent_dim), device)

    def sample(self, obs: Tensor, generators: Sequence[torch.Generator], noise: Tensor | None = None, steps: Optional[int] = None) -> Tensor:
        if noise is None:
            noise = member_randn(generators, (obs.shape[1], self.latent_dim), obs.device)
        return self.decode(obs, noise.clamp(-self.latent_clip, self.latent_clip))
