"""The ``record`` job: watch a policy act. Episodes rendered with ``render_mode="rgb_array"`` (what ``RecordVideo``
records), written as one MP4 (moviepy: ``pip install 'dqltoolkit[video]'``) or GIF (Pillow, no extra).

Headless machines: MuJoCo renders off-screen through EGL (``MUJOCO_GL=egl``, set here when there is no display),
which needs the EGL and Mesa libraries (Debian: ``libegl1 libgl1-mesa-dri``; or ``MUJOCO_GL=osmesa``, ``libosmesa6``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, List, Optional

import numpy as np

FORMATS = (".mp4", ".gif")
MAX_FRAMES = 100_000  # about an hour at 30 fps: a larger recording is refused before it starts filling memory


class RecordError(ValueError):
    """A recording that cannot be made; the message says what is missing."""


def headless_gl() -> None:
    """Choose MuJoCo's off-screen renderer where no display exists (before MuJoCo is first imported)."""
    if not os.environ.get("DISPLAY") and not os.environ.get("MUJOCO_GL"):
        os.environ["MUJOCO_GL"] = "egl"


def record_frames(agent, make_env: Callable[..., object], episodes: int, seed: int = 0, deterministic: bool = True,
                  max_steps: Optional[int] = None, on_episode: Optional[Callable[[int, float], None]] = None) -> List[np.ndarray]:
    """Frames of ``episodes`` episodes (the first observation's frame, then one per step), acting as ``predict`` does."""
    env = make_env(render_mode="rgb_array")
    frames: List[np.ndarray] = []
    try:
        for ep in range(episodes):
            obs, _ = env.reset(seed=seed + ep)
            frames.append(np.asarray(env.render()))
            total, steps, done = 0.0, 0, False
            while not done and (max_steps is None or steps < max_steps):
                action, _ = agent.predict(obs, deterministic=deterministic)
                obs, reward, terminated, truncated, _ = env.step(action)
                frames.append(np.asarray(env.render()))
                total, steps, done = total + float(reward), steps + 1, terminated or truncated
                if len(frames) > MAX_FRAMES:
                    raise RecordError(f"recording: over {MAX_FRAMES} frames; record fewer --episodes or set --max-steps")
            if on_episode is not None:
                on_episode(ep, total)
    finally:
        env.close()
    return frames


def write_video(frames: List[np.ndarray], path: Path, fps: float) -> Path:
    """One MP4 (moviepy) or GIF (Pillow) from RGB frames of one size."""
    path = Path(path)
    if path.suffix not in FORMATS:
        raise RecordError(f"{path}: the file name must end in {' or '.join(FORMATS)}")
    if not frames:
        raise RecordError("recording: no frames")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    if path.suffix == ".gif":
        from PIL import Image

        images = [Image.fromarray(np.asarray(f, np.uint8)) for f in frames]
        images[0].save(tmp, save_all=True, append_images=images[1:], duration=max(1, int(1000 / fps)), loop=0)
    else:
        try:
            from moviepy import ImageSequenceClip
        except ImportError:
            raise RecordError("MP4 needs moviepy: pip install 'dqltoolkit[video]' (or write a .gif)") from None
        ImageSequenceClip([np.asarray(f, np.uint8) for f in frames], fps=fps).write_videofile(str(tmp), codec="libx264", audio=False,
                                                                                             logger=None)
    tmp.replace(path)
    return path


def env_fps(make_env: Callable[..., object]) -> float:
    """The env's own frame rate (``metadata["render_fps"]``), else 30."""
    env = make_env(render_mode="rgb_array")
    try:
        return float(getattr(env, "metadata", {}).get("render_fps") or 30)
    finally:
        env.close()
