"""The selection rules a results table names (dqltoolkit/selection.py), on synthetic curves whose answer is
known, and the results record they are computed from (dqltoolkit/report_records.py, `dqltoolkit report runs.json`)."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from dqltoolkit.cli import main
from dqltoolkit.report_records import RecordError, read_records, write_records
from dqltoolkit.selection import OFFICIAL_TOP_K, bc_pick, best_score, block_means, final_score, official_bc_pick, regret, select, top_k_for

# evaluations every 10k steps; BC loss logged every 1k steps
EVALS = [(10_000, 20.0), (20_000, 55.0), (30_000, 80.0), (40_000, 62.0), (50_000, 60.0), (60_000, 58.0)]
# block means by evaluation: 1.0, 0.5, 0.3, 0.2, 0.4, 0.45 -> ranks: eval 3 (0.2), eval 2 (0.3), eval 4 (0.4), ...
BLOCK = [1.0, 0.5, 0.3, 0.2, 0.4, 0.45]
BC = [(k * 1000, BLOCK[(k - 1) // 10] + (0.01 if k % 2 else -0.01)) for k in range(1, 61)]


def test_block_means_average_the_logged_loss_between_evaluations():
    assert np.allclose(block_means(BC, [s for s, _ in EVALS]), BLOCK)
    # a block with nothing logged is NaN, not a borrowed value
    assert np.isnan(block_means([(5_000, 1.0)], [10_000, 20_000])[1])


def test_final_best_and_the_bc_rule_on_a_known_curve():
    assert final_score(EVALS) == pytest.approx((62.0 + 60.0 + 58.0) / 3)
    assert final_score(EVALS, last=1) == 58.0
    assert best_score(EVALS) == 80.0
    assert bc_pick(EVALS, BC, top_k=0) == 3  # the lowest block mean (0.2): step 40k
    assert bc_pick(EVALS, BC, top_k=1) == 2  # the second lowest (0.3): step 30k
    assert bc_pick(EVALS, BC, top_k=2) == 4
    assert bc_pick(EVALS, BC, top_k=99) == 0  # clipped to the last rank (the highest loss)
    picked = select(EVALS, BC, top_k=1)
    assert picked == {"final": pytest.approx(60.0), "best": 80.0, "bc": 80.0, "bc_step": 30_000}
    assert regret(EVALS, picked["bc_step"]) == 0.0 and regret(EVALS, 40_000) == 18.0


def test_the_official_line_picks_the_rank_of_an_index_not_the_index_of_a_rank():
    # argsort(BLOCK) = [3, 2, 4, 5, 1, 0]; "argsort == top_k" with top_k = 2 is true at position 1: evaluation 1
    assert official_bc_pick(BLOCK, 2) == 1 and bc_pick(EVALS, BC, 2) == 4
    assert EVALS[official_bc_pick(BLOCK, 2)][1] == 55.0 != EVALS[bc_pick(EVALS, BC, 2)][1]


def test_the_official_top_k_table_and_bad_curves():
    assert top_k_for("hopper-medium-v2") == 2 == OFFICIAL_TOP_K["hopper-medium-replay-v2"]
    assert top_k_for("bandit2d-v0") == 1
    with pytest.raises(ValueError, match="steps must increase"):
        final_score([(10, 1.0), (10, 2.0)])
    with pytest.raises(ValueError, match="no logged value falls in any evaluation's block"):
        bc_pick(EVALS, [(70_000, 1.0)], 0)


def _record(agent, seed, scores, bc, task="hopper-medium-v2"):
    return {"agent": agent, "task": task, "seed": seed, "dataset_transitions": 1000, "dataset_sha256": "ab" * 32,
            "command": f"dqltoolkit train --agent {agent}", "cpu": "test CPU",
            "evaluations": [[10_000 * (i + 1), v] for i, v in enumerate(scores)],
            "bc_loss": [[10_000 * (i + 1), v] for i, v in enumerate(bc)]}


def test_report_reads_a_record_file_with_every_rule(tmp_path):
    recs = [_record("alpha", s, [10 + s, 50 + s, 40 + s, 30 + s], [0.9, 0.1, 0.5, 0.7]) for s in range(3)]
    recs += [_record("beta", s, [20 + s, 20 + s, 20 + s, 90 + s], [0.1, 0.2, 0.3, 0.4]) for s in range(3)]
    path = write_records(recs, tmp_path / "runs.json")
    assert [r["agent"] for r in read_records(path)] == ["alpha"] * 3 + ["beta"] * 3
    res = CliRunner().invoke(main, ["report", str(path), "--reps", "200"])
    assert res.exit_code == 0, res.output
    md = (tmp_path / "report" / "report.md").read_text()
    assert "the mean of the last three evaluations (final)" in md and "offline: mean" in md
    rows = {}
    for line in md.splitlines():  # the per-task table comes first (the aggregate table repeats the names)
        if line.startswith(("| alpha", "| beta")):
            rows.setdefault(line.split("|")[1].strip(), [c.strip() for c in line.split("|")[2:-1]])
    # alpha: final = mean(50, 40, 30) + s = 41 (mean over seeds), best = 51, offline (top_k 2 on hopper-medium): 3rd lowest
    # BC loss, 0.7 -> the 4th evaluation, 31
    assert rows["alpha"][0] == "3" and rows["alpha"][1].startswith("41.00") and rows["alpha"][3].startswith("51.00")
    assert rows["alpha"][5].startswith("31.00")
    # beta: its loss falls all along; rank 2 is the third evaluation (21), its best is the last (91)
    assert rows["beta"][3].startswith("91.00") and rows["beta"][5].startswith("21.00")
    assert (tmp_path / "report" / "learning_curves.png").stat().st_size > 10_000


@pytest.mark.parametrize("damage, expected", [
    (lambda r: r.pop("dataset_sha256"), "missing key(s) ['dataset_sha256']"),
    (lambda r: r.update(seed="0"), "field 'seed' must be an integer"),
    (lambda r: r.update(evaluations=[[20, 1.0], [10, 2.0]]), "field 'evaluations'[1]: steps must increase"),
    (lambda r: r.update(bc_loss=[[10, float("nan")]]), "field 'bc_loss'[0]"),
    (lambda r: r.update(evaluations=[]), "field 'evaluations' is empty"),
])
def test_a_bad_record_names_the_file_the_record_and_the_field(tmp_path, damage, expected):
    rec = _record("alpha", 0, [1.0, 2.0], [0.5, 0.4])
    damage(rec)
    path = tmp_path / "runs.json"
    path.write_text(json.dumps([rec]))
    with pytest.raises(RecordError) as info:
        read_records(path)
    assert str(path) in str(info.value) and "record 0" in str(info.value) and expected in str(info.value)
    res = CliRunner().invoke(main, ["report", str(path)])
    assert res.exit_code == 1 and expected in res.output


def _table_rows(md, names):
    rows = {}
    for line in md.splitlines():  # the first table naming an algorithm: the per-task one
        if line.startswith(tuple(f"| {n} " for n in names)):
            rows.setdefault(line.split("|")[1].strip(), [c.strip() for c in line.split("|")[2:-1]])
    return rows


def test_records_are_compared_at_equal_budgets_with_at_step(tmp_path):
    """Runs that stopped at different steps (a campaign in chunks): --at-step common cuts every run of a task at
    the last step all of them evaluated, so final and offline compare equal budgets; --at-step N at N."""
    recs = [_record("alpha", s, [10, 20, 30, 40, 50, 60], [0.9, 0.8, 0.7, 0.6, 0.5, 0.4]) for s in range(2)]
    recs += [_record("beta", s, [5, 15, 25, 35], [0.9, 0.8, 0.7, 0.6]) for s in range(2)]
    path = write_records(recs, tmp_path / "runs.json")
    res = CliRunner().invoke(main, ["report", str(path), "--reps", "50", "--at-step", "common", "--out", str(tmp_path / "common")])
    assert res.exit_code == 0, res.output
    md = (tmp_path / "common" / "report.md").read_text()
    assert "**Equal budgets**" in md and "hopper-medium-v2: every run cut at step 40,000" in md
    rows = _table_rows(md, ["alpha", "beta"])
    assert rows["alpha"][1].startswith("30.00") and rows["beta"][1].startswith("25.00")  # final: the last three up to 40k
    # the curves as numbers: both algorithms at every step, up to the cut
    assert "| alpha | 10.00 | 20.00 | 30.00 | 40.00 |" in md and "| beta | 5.000 | 15.00 | 25.00 | 35.00 |" in md

    res = CliRunner().invoke(main, ["report", str(path), "--reps", "50", "--at-step", "50000", "--out", str(tmp_path / "n")])
    assert res.exit_code == 0, res.output
    md = (tmp_path / "n" / "report.md").read_text()
    assert "beta seed 0: no evaluation at step 50,000 (last 40,000): left out" in md
    assert _table_rows(md, ["alpha", "beta"]).keys() == {"alpha"}
    assert _table_rows(md, ["alpha"])["alpha"][1].startswith("40.00")

    res = CliRunner().invoke(main, ["report", str(path), "--at-step", "soon"])
    assert res.exit_code == 1 and "--at-step: expected a step >= 1 or 'common', got 'soon'" in res.output
    run_dir = tmp_path / "somerun"
    run_dir.mkdir()
    res = CliRunner().invoke(main, ["report", str(run_dir), "--at-step", "common"])
    assert res.exit_code == 1 and "--at-step cuts results records (runs.json) only" in res.output


def test_the_fqe_column_picks_the_evaluation_at_the_highest_fqe_value(tmp_path):
    """Records ranked by `dqltoolkit select` carry each checkpoint's FQE value (``fqe``); the table's offline FQE
    column is the evaluation at the seed's highest value, cut with the records at --at-step."""
    recs = [_record("alpha", s, [10 + s, 50 + s, 40 + s, 30 + s], [0.9, 0.1, 0.5, 0.7]) for s in range(3)]
    for r in recs[:2]:  # FQE values highest at 30k: the evaluation 40 + s; seed 2 not ranked yet
        r["fqe"] = [[10_000, 1.0], [20_000, 2.0], [30_000, 3.0], [40_000, 2.5]]
    recs.append(_record("beta", 0, [20, 20, 20, 90], [0.1, 0.2, 0.3, 0.4]))  # no FQE: no FQE cell of its own
    path = write_records(recs, tmp_path / "runs.json")
    assert read_records(path)[0]["fqe"][2] == [30_000, 3.0]
    res = CliRunner().invoke(main, ["report", str(path), "--reps", "50", "--out", str(tmp_path / "all")])
    assert res.exit_code == 0, res.output
    md = (tmp_path / "all" / "report.md").read_text()
    assert "offline FQE: mean [95% CI]" in md and "fitted Q evaluation values most (offline FQE)" in md
    rows = _table_rows(md, ["alpha", "beta"])
    assert rows["alpha"][7].startswith("40.50") and rows["beta"][7] == "—"
    # the FQE mean covers 2 of alpha's 3 seeds, and says so; the columns every seed has carry no such mark
    assert rows["alpha"][7].endswith("(2 of 3 seeds)") and rows["alpha"][8].endswith("(2 of 3 seeds)")
    assert "seeds)" not in rows["alpha"][1] and "seeds)" not in rows["alpha"][5]
    # how FQE orders the checkpoints: ranks (1, 2, 4, 3) against the evaluations' (1, 4, 3, 2), 1 - 6 * 6 / 60 = 0.4
    assert "### hopper-medium-v2: how FQE orders the checkpoints" in md
    order = md.split("how FQE orders the checkpoints")[1].split("##")[0]
    assert "| alpha | 2 | 4/4 | seed 0: +0.40, seed 1: +0.40 | +0.40 |" in order and "| beta |" not in order  # beta: not ranked
    # cut at 20k, before the FQE favourite: the pick is the 20k checkpoint (50 + s)
    res = CliRunner().invoke(main, ["report", str(path), "--reps", "50", "--at-step", "20000", "--out", str(tmp_path / "cut")])
    assert res.exit_code == 0, res.output
    assert _table_rows((tmp_path / "cut" / "report.md").read_text(), ["alpha"])["alpha"][7].startswith("50.50")
    bad = json.loads(path.read_text())
    bad[0]["fqe"] = [[10_000, float("inf")]]
    path.write_text(json.dumps(bad))
    with pytest.raises(RecordError, match="field 'fqe'\\[0\\]"):
        read_records(path)


def test_the_aggregate_says_how_many_tasks_an_offline_rule_covers(tmp_path):
    """FQE ranked on one of two tasks: its pooled row covers 1 task of 2 (and that task's runs), while the rows
    every task has say 2 of 2; a pooled FQE row labelled as covering both tasks would read as a cross-task result."""
    recs = [_record("alpha", s, [10 + s, 50 + s, 40 + s, 30 + s], [0.9, 0.1, 0.5, 0.7]) for s in range(2)]
    recs += [_record("alpha", s, [15 + s, 25 + s, 35 + s, 45 + s], [0.9, 0.7, 0.5, 0.1], task="hopper-medium-replay-v2")
             for s in range(2)]
    for r in recs[:2]:
        r["fqe"] = [[10_000, 1.0], [20_000, 2.0], [30_000, 3.0], [40_000, 2.5]]
    path = write_records(recs, tmp_path / "runs.json")
    res = CliRunner().invoke(main, ["report", str(path), "--reps", "50", "--out", str(tmp_path / "r")])
    assert res.exit_code == 0, res.output
    md = (tmp_path / "r" / "report.md").read_text()
    assert "| alpha | 2 of 2 | 4 | final |" in md and "| alpha | 2 of 2 | 4 | offline |" in md
    assert "| alpha | 1 of 2 | 2 | offline FQE |" in md
