"""The policy-class ablation: files, table columns, and the figure's story."""

import csv

import pytest

from dqltoolkit.ablation import COLUMNS, VARIANTS, run_ablation, select


def test_selection_by_head_and_objective():
    assert [v.recipe for v in select(["diffusion"], None)] == ["diffusion-bc", "diffusion-ql"]
    assert [v.recipe for v in select(None, ["ql"])] == ["ql-gaussian", "ql-cvae", "ql-mmd", "diffusion-ql"]
    assert len(select()) == 8 == len(VARIANTS)
    # the choices are every panel's labels: the paper's four and those of the shipped extra panels
    with pytest.raises(ValueError, match=r"unknown ablation head\(s\) \['gauss'\]; choose from \['consistency', 'cvae', 'diffusion', 'mle', 'mmd'\]"):
        select(["gauss"])


def test_ablation_bc_panels_show_the_figures_story(tmp_path):
    """Gaussian BC lands between the modes; diffusion BC reproduces all four (both default settings)."""
    res = run_ablation("bandit2d-v0", tmp_path, heads=["mle", "diffusion"], objectives=["bc"], seeds=[0], progress=False)
    with open(tmp_path / "ablation.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == COLUMNS and [r["variant"] for r in rows] == ["BC-MLE", "BC-Diffusion"]
    assert (tmp_path / "ablation.png").stat().st_size > 10_000
    mle, diff = ({k: float(v) if k not in ("variant", "head", "objective") else v for k, v in r.items()} for r in rows)
    assert mle["off_data_share"] >= 0.5
    for mode in ("top_left", "bottom_left", "top_right", "bottom_right"):
        assert 0.15 <= diff[f"share_{mode}"] <= 0.35
    assert diff["off_data_share"] <= 0.05
    assert "| BC-MLE | mle | bc | 0 |" in res["markdown"]


@pytest.mark.slow
def test_full_ablation_reproduces_the_figure(tmp_path):
    res = run_ablation("bandit2d-v0", tmp_path, seeds=[0], progress=False)
    rows = {r["variant"]: r for r in res["rows"]}
    dql = rows["Diffusion-QL"]
    assert dql["best_mode_share"] >= 0.9 and all(r["best_mode_share"] < 0.5 for name, r in rows.items() if name != "Diffusion-QL")
    # acting: Diffusion-QL earns the best mode's reward; BCQ, whose policy is the best of its candidates,
    # reaches it too (within the noise of 1,000 episodes) although its samples cover every mode
    assert dql["mean_reward"] >= 4.9 and dql["mean_reward"] >= max(r["mean_reward"] for r in rows.values()) - 0.05
    assert rows["BC-MLE"]["off_data_share"] >= 0.5


def test_modes_come_from_the_env_and_an_env_without_them_is_refused():
    import gymnasium as gym

    from dqltoolkit.ablation import Modes, columns

    modes = Modes.of(gym.make("bandit2d-v0"))
    assert modes.best == "bottom_right" and columns(modes) == COLUMNS
    import numpy as np

    sh = modes.shares(np.array([[0.8, -0.8], [0.85, -0.7], [0.0, 0.0], [-0.8, 0.8]], np.float32))
    assert sh["bottom_right"] == 0.5 and sh["off_data"] == 0.25 and sh["top_left"] == 0.25
    with pytest.raises(ValueError, match=r"must declare \['mode_names', 'mode_centres', 'mode_means', 'mode_radius'\]"):
        Modes.of(gym.make("Pendulum-v1"))
