"""The figures as a reader meets them: labelled axes, a legend, every logged point visible, files written.

Checked through the matplotlib objects the builders return (what is drawn, not how it looks)."""

import csv
import json

import matplotlib
import numpy as np
import pytest
from click.testing import CliRunner

matplotlib.use("Agg")

from dqltoolkit.cli import main  # noqa: E402
from dqltoolkit.envs.bandit2d import MODE_CENTRES, MODE_MEANS  # noqa: E402
from dqltoolkit.plots import (  # noqa: E402
    bandit_figure,
    bandit_grid_figure,
    learning_curves_figure,
    plot_bandit,
    plot_bandit_grid,
    plot_learning_curves,
)

TINY_ARGS = ["-p", "T=3", "-p", "hidden=16", "-p", "critic_hidden=16", "-p", "batch_size=32", "-p", "n_candidates=4"]


def _actions(n, seed=0):
    rng = np.random.default_rng(seed)
    return np.clip(MODE_CENTRES[rng.integers(0, 4, n)] + 0.05 * rng.standard_normal((n, 2)), -1, 1).astype(np.float32)


def _write_csv(path, header, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def _legend_texts(fig):
    legends = list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    return [t.get_text() for lg in legends for t in lg.get_texts()]


def test_bandit_figure_has_axis_labels_a_legend_and_mode_labels_inside_the_frame():
    data, policy = _actions(5000), _actions(700, seed=1)
    fig = bandit_figure(policy, data, title="diffusion+ql: 700 samples")
    left, right = fig.axes[:2]
    assert [ax.get_xlabel() for ax in (left, right)] == ["action[0]", "action[0]"] and left.get_ylabel() == "action[1]"
    assert _legend_texts(fig) == ["dataset actions", "policy samples", "reward mode (r = its mean reward)"]
    assert left.get_title() == "dataset: 2,000 of 5,000 actions" and right.get_title() == "diffusion+ql: 700 samples"
    # the policy panel draws the dataset (grey, under) and all policy samples (red, over)
    assert [len(c.get_offsets()) for c in right.collections] == [2000, 700]
    for ax in (left, right):
        labels = {t.get_text(): t.get_position() for t in ax.texts}
        assert set(labels) == {f"r={r:g}" for r in MODE_MEANS if r != MODE_MEANS.max()} | {f"r={MODE_MEANS.max():g} (best)"}
        lo, hi = ax.get_ylim()
        for x, y in labels.values():  # inside the square of actions, away from the frame they used to overlap
            assert -1.0 < y < 1.0 and lo < y < hi and -1.0 < x < 1.0
        assert list(ax.get_xticks()) == [-1, -0.5, 0, 0.5, 1]


def test_plot_bandit_writes_a_png(tmp_path):
    path = plot_bandit(_actions(100), _actions(300), tmp_path / "bandit.png")
    assert path == tmp_path / "bandit.png" and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000


def test_ablation_grid_labels_outer_axes_and_puts_the_legend_in_a_spare_cell(tmp_path):
    panels = [(f"variant {i}\nbest mode 5%", _actions(50, seed=i)) for i in range(8)]
    fig = bandit_grid_figure(panels, _actions(400), ncols=5)
    axes = np.array(fig.axes).reshape(2, 5)
    assert [ax.get_ylabel() for ax in axes[:, 0]] == ["action[1]", "action[1]"]
    assert [ax.get_xlabel() for ax in axes[1, :4]] == ["action[0]"] * 4 and axes[0, 4].get_xlabel() == "action[0]"  # above the spare cell
    assert axes[1, 4].get_legend() is not None and _legend_texts(fig) == ["dataset actions", "policy samples",
                                                                          "reward mode (r = its mean reward)"]
    assert [ax.get_title() for ax in axes.ravel()[1:9]] == [t for t, _ in panels]
    full = bandit_grid_figure(panels[:2], _actions(400), ncols=3)  # no spare cell: the legend goes below the grid
    assert len(full.legends) == 1
    assert plot_bandit_grid(panels, _actions(400), tmp_path / "ablation.png").stat().st_size > 10_000


def test_a_run_shorter_than_the_logging_interval_shows_its_one_point(tmp_path):
    """Before: losses logged once (at the last step) were drawn as a line of one point, i.e. nothing."""
    path = _write_csv(tmp_path / "metrics.csv", ["time/step", "train/actor_loss", "train/critic_loss", "train/bc_loss", "eval/mean_return"],
                      [[100, "", "", "", 1.5], [200, "", "", "", 1.6], [300, -8.8, 1.65, 1.15, ""], [300, "", "", "", 1.7]])
    fig = learning_curves_figure(path)
    axes = fig.axes
    assert [ax.get_title() for ax in axes] == ["train/actor_loss", "train/critic_loss", "train/bc_loss", "eval/mean_return"]
    assert [ax.get_ylabel() for ax in axes] == ["actor loss", "critic loss (TD error)", "behaviour-cloning loss", "mean episode return"]
    assert all(ax.get_xlabel() == "gradient step" and ax.get_xlim()[0] == 0 and ax.get_xlim()[1] >= 300 for ax in axes)
    for ax in axes[:3]:
        (line,) = ax.lines
        assert list(line.get_xdata()) == [300.0] and line.get_marker() == "o"  # a visible dot
        assert any("-p log_every=N" in t.get_text() for t in ax.texts)
    xs, ys = axes[3].lines[0].get_data()
    assert list(xs) == [100.0, 200.0, 300.0] and list(ys) == [1.5, 1.6, 1.7]
    assert fig._suptitle.get_text() == "metrics.csv: losses logged once; evaluated every 100 steps"


def test_evaluation_panel_shows_every_seed_and_the_mean(tmp_path):
    header = ["time/step", "train/critic_loss", "eval/normalized_score", "eval/normalized_score_seed0", "eval/normalized_score_seed1",
              "eval/mean_return"]
    rows = [[s, 1.0 / s, "", "", "", ""] for s in (10, 20, 30, 40)] + [[20, "", 5.0, 4.0, 6.0, 100.0], [40, "", 7.0, 6.5, 7.5, 120.0]]
    fig = learning_curves_figure(_write_csv(tmp_path / "m.csv", header, rows))
    loss, score = fig.axes
    assert score.get_title() == "eval/normalized_score" and score.get_ylabel() == "normalised score (D4RL)"
    assert [list(line.get_ydata()) for line in score.lines] == [[5.0, 7.0], [4.0, 6.5], [6.0, 7.5]]
    assert [t.get_text() for t in score.get_legend().get_texts()] == ["mean over seeds", "seed 0", "seed 1"]
    assert list(loss.lines[0].get_xdata()) == [10.0, 20.0, 30.0, 40.0]
    assert fig._suptitle.get_text() == "m.csv: losses logged every 10 steps (mean over seeds 0, 1); evaluated every 20 steps"


def test_a_csv_without_metrics_draws_nothing(tmp_path):
    path = _write_csv(tmp_path / "m.csv", ["time/step", "time/steps_per_s"], [[1, 3.0]])
    assert learning_curves_figure(path) is None and plot_learning_curves(path, tmp_path / "c.png") is None
    assert not (tmp_path / "c.png").exists()


def test_a_short_training_run_writes_both_figures_with_its_evaluations(tmp_path):
    """The CLI path end to end: a 6-step run with --eval-freq 2 on the bandit; the learning curves show
    the three evaluations, and the bandit figure is written beside them."""
    out = tmp_path / "run"
    res = CliRunner().invoke(main, ["train", "--env", "bandit2d-v0", "--steps", "6", "--eval-freq", "2", "--out", str(out), "--no-progress",
                                    *TINY_ARGS], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert (out / "bandit.png").stat().st_size > 10_000 and (out / "learning_curves.png").stat().st_size > 10_000
    fig = learning_curves_figure(out / "metrics.csv")
    by_title = {ax.get_title(): ax for ax in fig.axes}
    assert list(by_title["eval/mean_return"].lines[0].get_xdata()) == [2.0, 4.0, 6.0]
    assert all(ax.get_ylabel() for ax in fig.axes)
    assert json.loads((out / "results.json").read_text())["evaluation"][0]["acting"] == "deterministic"


@pytest.mark.parametrize("steps", [1, 2])
def test_learning_curves_of_one_and_two_logged_points_are_visible(tmp_path, steps):
    path = _write_csv(tmp_path / "m.csv", ["time/step", "train/actor_loss"], [[s + 1, float(s)] for s in range(steps)])
    (line,) = learning_curves_figure(path).axes[0].lines
    assert len(line.get_xdata()) == steps and line.get_marker() == "o"
