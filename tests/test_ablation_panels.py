"""Extra ablation panels: a recipe with an ``ablation:`` block is a panel, without editing ablation.py."""

import csv

import pytest

from dqltoolkit.ablation import VARIANTS, declared_panels, grid_columns, run_ablation, select
from dqltoolkit.config import ConfigError, resolve_recipe

PAPER = ["BC-MLE", "BC-CVAE", "BC-MMD", "BC-Diffusion", "QL-MLE (TD3+BC)", "QL-CVAE (BCQ)", "QL-MMD (BEAR)", "Diffusion-QL"]
PLUGIN_RECIPE = """# a plugin's recipe: the shipped BC-MLE recipe under another panel title
base: gaussian-bc
default: {hidden: 16}
bandit2d-v0: {steps: 30}
ablation: {panel: "Plugin-MLE", head: plugin-mle, objective: bc}
"""


def test_the_default_selection_is_the_papers_eight():
    assert [v.name for v in select()] == PAPER == [v.name for v in VARIANTS]
    assert [v.recipe for v in select(["diffusion"], None)] == ["diffusion-bc", "diffusion-ql"]


def test_shipped_recipes_declare_their_panels_and_extra_adds_them():
    extra = {v.name: (v.recipe, v.head, v.objective) for v in declared_panels()}
    assert extra["Consistency-QL"] == ("consistency-ql", "consistency", "ql")
    assert extra["BC-Consistency"] == ("consistency-bc", "consistency", "bc")
    assert extra["IDQL"] == ("idql", "diffusion", "idql")
    # IDQL's policy is its resampling among candidates: its panel scores what it does, the others the head's samples
    kinds = {v.name: v.samples for v in select(extra=True)}
    assert kinds["IDQL"] == "acted" and {k for n, k in kinds.items() if n != "IDQL"} == {"policy"}
    names = [v.name for v in select(extra=True)]
    assert names[:8] == PAPER and set(names[8:]) == set(extra)
    assert [v.name for v in select(["consistency"], extra=True)] == ["BC-Consistency", "Consistency-QL"]
    assert [v.name for v in select(panels=["Consistency-QL", "Diffusion-QL"])] == ["Consistency-QL", "Diffusion-QL"]
    # the labels are computed over every panel
    from dqltoolkit import ablation

    assert {"consistency", "diffusion", "mle"} <= set(ablation.HEAD_CHOICES) and "idql" in ablation.OBJECTIVE_CHOICES
    with pytest.raises(ValueError, match=r"unknown ablation panel\(s\) \['Nope'\]; choose from \['BC-MLE'"):
        select(panels=["Nope"])
    with pytest.raises(ValueError, match=r"unknown ablation head\(s\) \['gauss'\]; choose from \[.*'consistency'.*'mle'"):
        select(["gauss"])


def test_a_recipe_in_a_plugin_folder_is_a_panel_and_the_block_is_no_setting(tmp_path):
    (tmp_path / "plugin-mle.yaml").write_text(PLUGIN_RECIPE)
    (tmp_path / "no-panel.yaml").write_text("base: gaussian-bc\n")
    panels = declared_panels([tmp_path])
    assert panels[-1].name == "Plugin-MLE" and panels[-1].recipe == str(tmp_path / "plugin-mle.yaml")
    assert [v.name for v in select(["plugin-mle"], recipe_dirs=[tmp_path])] == []  # not an extra unless asked for
    assert [v.name for v in select(["plugin-mle"], extra=True, recipe_dirs=[tmp_path])] == ["Plugin-MLE"]
    # the recipe readers take the block as no setting (nor as a task section)
    assert resolve_recipe(str(tmp_path / "plugin-mle.yaml"), "bandit2d-v0").config.steps == 30
    assert resolve_recipe("consistency-ql", "ablation").config.head == "consistency"


@pytest.mark.parametrize("block,message", [
    ("ablation: [1, 2]", r"\[ablation\]: expected a mapping"),
    ("ablation: {panel: X, head: mle}", r"\[ablation\] objective: expected a non-empty string"),
    ("ablation: {panel: X, head: mle, objective: bc, colour: red}", r"\[ablation\]: unknown key\(s\) \['colour'\]"),
    ("ablation: {panel: X, head: mle, objective: bc, samples: all}", r"\[ablation\] samples: expected one of \['policy', 'acted'\], got 'all'"),
    ("ablation: {panel: Diffusion-QL, head: mle, objective: bc}", r"panel 'Diffusion-QL' is declared by .*bad.yaml and by diffusion-ql"),
])
def test_a_bad_block_is_an_error_naming_the_file_and_field(tmp_path, block, message):
    (tmp_path / "bad.yaml").write_text(f"base: gaussian-bc\n{block}\n")
    with pytest.raises(ConfigError, match=message):
        declared_panels([tmp_path])


def test_a_plugin_recipe_named_like_another_panels_recipe_is_refused(tmp_path):
    """Two panels with one recipe file name would train into the same run folders at once."""
    (tmp_path / "diffusion-ql.yaml").write_text("base: diffusion-ql\nablation: {panel: My-QL, head: diffusion, objective: ql}\n")
    with pytest.raises(ConfigError, match=r"panel 'My-QL' \(.*diffusion-ql.yaml\) would train into the run folders of diffusion-ql "
                                          r"\('diffusion-ql_seed<N>'\): rename the recipe file"):
        declared_panels([tmp_path])


def test_the_figure_keeps_the_papers_layout_and_fills_rows_of_five():
    assert [grid_columns(n) for n in (2, 4, 8, 9, 11, 14)] == [3, 5, 5, 5, 5, 5]
    assert grid_columns(6) == 4


def test_a_run_of_extra_panels_writes_their_rows(tmp_path):
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "plugin-mle.yaml").write_text(PLUGIN_RECIPE)
    res = run_ablation("bandit2d-v0", tmp_path / "out", panels=["Plugin-MLE", "BC-Consistency"], steps=30, progress=False,
                       recipe_dirs=[tmp_path / "recipes"], overrides={"hidden": 16}, workers=1)
    with open(tmp_path / "out" / "ablation.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["variant"], r["head"], r["objective"]) for r in rows] == [("Plugin-MLE", "plugin-mle", "bc"),
                                                                          ("BC-Consistency", "consistency", "bc")]
    assert all(0.0 <= float(r["best_mode_share"]) <= 1.0 for r in rows)
    assert (tmp_path / "out" / "ablation.png").stat().st_size > 10_000
    assert (tmp_path / "out" / "plugin-mle_seed0").is_dir() and (tmp_path / "out" / "consistency-bc_seed0").is_dir()
    assert "| Plugin-MLE | plugin-mle | bc | 0 |" in res["markdown"]


@pytest.mark.slow
def test_the_idql_panel_scores_its_resampled_actions(tmp_path):
    """IDQL acting (the best of 64 behaviour candidates by min Q, its bandit section) puts >= 90% of 1,000
    actions on the best mode, though its diffusion model alone spreads over all four (about a quarter each)."""
    res = run_ablation("bandit2d-v0", tmp_path / "out", panels=["IDQL"], progress=False, workers=1)
    with open(tmp_path / "out" / "ablation.csv") as f:
        (row,) = list(csv.DictReader(f))
    assert float(row["best_mode_share"]) >= 0.9 and float(row["off_data_share"]) <= 0.05, row
    assert "| IDQL | diffusion | idql | 0 |" in res["markdown"]
