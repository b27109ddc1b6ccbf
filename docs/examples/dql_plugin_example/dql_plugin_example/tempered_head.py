"""A diffusion head that samples at a temperature: its noise (x_T and the noise of every reverse step)
is scaled by ``noise_scale``.

Why: a colder chain (``noise_scale`` < 1) concentrates the samples on the modes the denoiser has
learnt, a common knob for diffusion policies at evaluation time; 1 is the plain head, draw for draw.
The head brings its own setting, so ``-p noise_scale=0.5`` works where this head is chosen and is
refused, naming this head, where it is not.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

import torch
from torch import Tensor

from dqltoolkit.heads.diffusion import DiffusionHead
from dqltoolkit.settings import setting


class TemperedDiffusionHead(DiffusionHead):
    """The diffusion head with its sampling noise scaled. It overrides :meth:`sample` and does not
    re-declare ``capabilities``, so every backend runs its sampling eagerly, with the override."""

    @dataclass
    class Settings(DiffusionHead.Settings):
        noise_scale: float = setting(1.0, "scale of the sampling noise (1: the plain head; 0: a deterministic chain)", min=0)

    def __init__(self, *args: Any, noise_scale: float = 1.0, **settings: Any) -> None:
        super().__init__(*args, **settings)
        self.noise_scale = float(noise_scale)

    def sample(self, obs: Tensor, generators: Sequence[torch.Generator], noise: Optional[Tensor] = None,
               steps: Optional[int] = None, *, grad_steps: int = 0, sampler: Optional[str] = None) -> Tensor:
        if noise is None:  # the draws the plain head would make, in the same order
            noise = self.draw_noise(obs.shape[1], generators, obs.device, steps)
        return super().sample(obs, generators, noise=noise * self.noise_scale, steps=steps, grad_steps=grad_steps, sampler=sampler)
