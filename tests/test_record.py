"""`dqltoolkit record`: a policy acting, rendered off-screen (rgb_array) into a GIF or an MP4 with the expected frames,
and `hub push --video` putting it in the model card."""

import importlib.util

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from dqltoolkit.cli import main


def test_a_bandit_recording_is_a_gif_with_one_picture_per_episode_start_and_end(tmp_path):
    out = tmp_path / "bandit.gif"
    res = CliRunner().invoke(main, ["record", "zoo:diffusion-ql-bandit2d-v0", "--episodes", "3", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert f"wrote {out}: 6 frames, 3 episode(s) of bandit2d-v0" in res.output and res.output.count("episode ") >= 3
    with Image.open(out) as im:
        assert im.n_frames == 6 and im.size == (128, 128)
        im.seek(1)  # after the first step: the action drawn as a red dot on the best mode (bottom right)
        rgb = np.asarray(im.convert("RGB")).astype(int)
    red = np.argwhere((rgb[..., 0] > 180) & (rgb[..., 1] < 80) & (rgb[..., 2] < 80))
    assert len(red) and red[:, 0].mean() > 64 and red[:, 1].mean() > 64, "the action lands in the bottom-right quadrant"


@pytest.mark.skipif(importlib.util.find_spec("moviepy") is None, reason="needs the video extra: pip install 'dqltoolkit[video]'")
def test_a_mujoco_recording_is_an_mp4_with_one_frame_per_step(tmp_path, monkeypatch):
    import imageio.v3 as iio

    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.setenv("MUJOCO_GL", "egl")  # (what `record` chooses without a display; restored after the test)
    out = tmp_path / "hopper.mp4"
    res = CliRunner().invoke(main, ["record", "zoo:td3bc-hopper-medium-v2", "--episodes", "2", "--max-steps", "12", "--out", str(out)])
    assert res.exit_code == 0, res.output
    frames = iio.imread(out)
    assert frames.shape == (2 * 13, 480, 480, 3)  # each episode: its first frame and one per step
    assert frames[-1].std() > 10, "a rendered scene, not a blank frame"


def test_a_recording_to_an_unknown_format_is_refused(tmp_path):
    res = CliRunner().invoke(main, ["record", "zoo:diffusion-ql-bandit2d-v0", "--out", str(tmp_path / "x.avi")])
    assert res.exit_code == 1 and "must end in .mp4 or .gif" in res.output


def test_hub_push_puts_the_recording_in_the_card(tmp_path):
    gif = tmp_path / "b.gif"
    assert CliRunner().invoke(main, ["record", "zoo:diffusion-ql-bandit2d-v0", "--episodes", "1", "--out", str(gif)]).exit_code == 0
    res = CliRunner().invoke(main, ["hub", "push", "zoo:diffusion-ql-bandit2d-v0", "--dry-run", "--video", str(gif)])
    assert res.exit_code == 0, res.output
    assert "![the policy acting: replay.gif](replay.gif)" in res.output and "replay.gif" in res.output.splitlines()[-1]
