"""Noise schedules for the diffusion head, as numpy float64 arrays of betas (t = 1..T)."""

from __future__ import annotations

import numpy as np

from ..registry import Registry

SCHEDULES: Registry = Registry("beta schedule")


@SCHEDULES.register("vp")
def vp_beta_schedule(T: int, b_min: float = 0.1, b_max: float = 10.0) -> np.ndarray:
    """Diffusion-QL's discretised VP-SDE: abar_T = exp(-(b_min + b_max) / 2) for any T."""
    t = np.arange(1, T + 1, dtype=np.float64)
    alpha = np.exp(-b_min / T - 0.5 * (b_max - b_min) * (2 * t - 1) / T**2)
    return 1.0 - alpha


@SCHEDULES.register("linear")
def linear_beta_schedule(T: int, beta_start: float = 1e-4, beta_end: float = 2e-2) -> np.ndarray:
    """DDPM's linear betas. At small T this leaves most of the signal (abar_5 = 0.95)."""
    return np.linspace(beta_start, beta_end, T, dtype=np.float64)


@SCHEDULES.register("cosine")
def cosine_beta_schedule(T: int, s: float = 0.008) -> np.ndarray:
    """Nichol & Dhariwal's cosine schedule, betas clipped to 0.999."""
    x = np.linspace(0, T, T + 1, dtype=np.float64)
    abar = np.cos(((x / T) + s) / (1 + s) * np.pi * 0.5) ** 2
    abar = abar / abar[0]
    return np.clip(1 - abar[1:] / abar[:-1], 0, 0.999)
