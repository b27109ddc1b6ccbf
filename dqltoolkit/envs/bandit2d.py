"""The paper's 2-D bandit: one-step episodes, four reward modes at the corners of [-1, 1]^2."""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import gymnasium as gym
import numpy as np

MODE_NAMES = ("top_left", "bottom_left", "top_right", "bottom_right")
MODE_CENTRES = np.array([[-0.8, 0.8], [-0.8, -0.8], [0.8, 0.8], [0.8, -0.8]], dtype=np.float32)
MODE_MEANS = np.array([3.0, 0.0, 1.5, 5.0], dtype=np.float32)
MODE_RADIUS = 0.2
REWARD_STD = 0.5
BEST_MODE = int(np.argmax(MODE_MEANS))
RENDER_SIZE = 128  # pixels per side of the rendered action plane


def mode_of(actions: np.ndarray, radius: float = MODE_RADIUS, centres: np.ndarray = MODE_CENTRES) -> np.ndarray:
    """Index of the mode whose centre lies within ``radius`` of each action, or -1."""
    centres = np.asarray(centres, dtype=np.float32)
    a = np.asarray(actions, dtype=np.float32).reshape(-1, centres.shape[1])
    d = np.linalg.norm(a[:, None, :] - centres[None], axis=-1)
    idx = d.argmin(1)
    return np.where(d[np.arange(len(a)), idx] <= radius, idx, -1)


def mode_shares(actions: np.ndarray, names=MODE_NAMES, centres: np.ndarray = MODE_CENTRES, radius: float = MODE_RADIUS) -> Dict[str, float]:
    """Share of actions on each mode plus ``off_data`` (on no mode)."""
    m = mode_of(actions, radius, centres)
    out = {name: float(np.mean(m == i)) for i, name in enumerate(names)}
    out["off_data"] = float(np.mean(m == -1))
    return out


class Bandit2DEnv(gym.Env):
    """One-step 2-D bandit with a constant zero observation of width 2: reward is the mean of the mode within 0.2
    of the action (0 elsewhere) plus seeded N(0, 0.5) noise; ``info["mode"]`` names the mode hit, or ``None``.
    ``render_mode="rgb_array"`` (asked for by SB3's ``make_vec_env`` and video recorders) draws the action plane."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 4}
    # the modes, declared for tools that score policies by mode (dqltoolkit ablate)
    mode_names, mode_centres, mode_means, mode_radius = MODE_NAMES, MODE_CENTRES, MODE_MEANS, MODE_RADIUS

    def __init__(self, noise_std: float = REWARD_STD, render_mode: Optional[str] = None) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"bandit2d: render_mode must be None or one of {self.metadata['render_modes']}, got {render_mode!r}")
        self.render_mode = render_mode
        self._last_action: Optional[np.ndarray] = None
        self.observation_space = gym.spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
        self.noise_std = float(noise_std)
        self._obs = np.zeros(2, dtype=np.float32)

    def reset(self, *, seed: Optional[int] = None, options: Optional[dict] = None) -> Tuple[np.ndarray, Dict[str, Any]]:
        super().reset(seed=seed)
        self._last_action = None
        return self._obs.copy(), {}

    def step(self, action: np.ndarray):
        a = np.asarray(action, dtype=np.float32)
        if a.shape != (2,):
            raise ValueError(f"bandit2d: action must have shape (2,), got {a.shape}")
        m = int(mode_of(a)[0])
        mean = float(MODE_MEANS[m]) if m >= 0 else 0.0
        reward = mean + self.noise_std * float(self.np_random.normal())
        info = {"mode": MODE_NAMES[m] if m >= 0 else None}
        self._last_action = a.copy()
        return self._obs.copy(), reward, True, False, info

    def render(self) -> Optional[np.ndarray]:
        """The action plane as a [RENDER_SIZE, RENDER_SIZE, 3] uint8 image (x right, y up), or None."""
        if self.render_mode != "rgb_array":
            return None
        centres = (np.arange(RENDER_SIZE, dtype=np.float32) + 0.5) / RENDER_SIZE * 2.0 - 1.0
        x, y = np.meshgrid(centres, centres[::-1])  # row 0 is the top of the plane (y = +1)
        image = np.full((RENDER_SIZE, RENDER_SIZE, 3), 235, dtype=np.uint8)
        image[(np.abs(x) < 1.5 / RENDER_SIZE) | (np.abs(y) < 1.5 / RENDER_SIZE)] = 200  # the axes
        shade = MODE_MEANS / MODE_MEANS.max()
        for (cx, cy), s in zip(MODE_CENTRES, shade):
            disc = (x - cx) ** 2 + (y - cy) ** 2 <= MODE_RADIUS**2
            image[disc] = np.array([200, 230, 200]) * (1 - s) + np.array([20, 110, 40]) * s
        if self._last_action is not None:
            ax, ay = np.clip(self._last_action, -1.0, 1.0)
            image[(x - ax) ** 2 + (y - ay) ** 2 <= (3 * 2.0 / RENDER_SIZE) ** 2] = (220, 30, 30)  # a 3-pixel dot
        return image


def make_bandit_dataset(n: int = 10_000, seed: int = 0, std: float = 0.05) -> Dict[str, np.ndarray]:
    """The paper's dataset: n actions, a quarter from each mode's Gaussian (clipped), rewards per sample."""
    rng = np.random.default_rng(seed)
    mode = np.repeat(np.arange(4), int(np.ceil(n / 4)))[:n]
    rng.shuffle(mode)
    actions = np.clip(MODE_CENTRES[mode] + std * rng.standard_normal((n, 2)), -1.0, 1.0).astype(np.float32)
    rewards = (MODE_MEANS[mode] + REWARD_STD * rng.standard_normal(n)).astype(np.float32)
    obs = np.zeros((n, 2), dtype=np.float32)
    return {"observations": obs, "actions": actions, "rewards": rewards, "next_observations": obs.copy(),
            "terminals": np.ones(n, dtype=np.float32)}
