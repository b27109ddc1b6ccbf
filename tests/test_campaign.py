"""Long runs in chunks: a run killed at any moment goes on from its last periodic save in its own folder
(metrics.csv keeps the rows before it, the result equals the uninterrupted run's), and the campaign runner
(benchmarks/campaign.py) continues a killed trial from there, then writes the results record."""

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
TINY = {"T": 3, "hidden": 16, "critic_hidden": 16, "time_dim": 8, "batch_size": 32, "n_candidates": 4, "log_every": 50, "eval_freq": 100}
KILL_AT = """
import os, signal, sys, json
from dqltoolkit.training import train
out, kill_step = sys.argv[1], int(sys.argv[2])
def hook(entry):  # SIGKILL right after an evaluation: the periodic save of that step is not written yet
    if entry["step"] == kill_step:
        os.kill(os.getpid(), signal.SIGKILL)
train("diffusion-ql", "bandit2d-v0", out, steps=300, seeds=[0, 1], overrides=json.loads(sys.argv[3]), progress=False, verbose=False,
      save_every=100, on_evaluation=hook)
"""


def _env() -> dict:
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))


def _steps(run_dir: Path) -> list:
    with open(run_dir / "metrics.csv", newline="") as f:
        return [int(float(r["time/step"])) for r in csv.DictReader(f)]


def test_a_run_killed_mid_way_resumes_in_its_folder_from_its_last_save(tmp_path):
    script = tmp_path / "kill_at.py"
    script.write_text(KILL_AT)
    ref, cut = tmp_path / "ref", tmp_path / "cut"
    assert subprocess.run([sys.executable, str(script), str(ref), "0", json.dumps(TINY)], env=_env()).returncode == 0
    killed = subprocess.run([sys.executable, str(script), str(cut), "200", json.dumps(TINY)], env=_env())
    assert killed.returncode == -signal.SIGKILL
    assert not (cut / "results.json").exists() and (cut / "model_latest.zip").is_file()
    assert 200 in _steps(cut)  # rows past the save (step 100) were written before the kill
    # a SIGTERM'd chunk leaves model_interrupted.zip beside an older model_latest.zip: resuming from it in place is allowed
    (cut / "model_interrupted.zip").write_bytes((cut / "model_latest.zip").read_bytes())
    res = subprocess.run([sys.executable, "-m", "dqltoolkit.cli", "train", "--env", "bandit2d-v0", "--resume", str(cut / "model_interrupted.zip"),
                          "--out", str(cut), "--save-every", "100", "--no-progress", "--threads", "1"], env=_env(), capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "steps 100 -> 300" in res.stderr and "rows up to step 100 kept" in res.stderr
    assert _steps(cut) == _steps(ref)  # one file, as if the run had never stopped: nothing twice, nothing missing
    config = yaml.safe_load((cut / "config.yaml").read_text())
    assert config["agent"] == "diffusion-ql" and config["resumed_at_step"] == 100  # the run keeps its name for reports
    a, b = (json.loads((d / "results.json").read_text()) for d in (ref, cut))
    assert [e["step"] for e in b["evaluations"]] == [100, 200, 300]
    assert b["evaluations"] == a["evaluations"] and b["first_step"] == 100 and b["total_steps"] == 300
    with open(cut / "metrics.csv", newline="") as f:
        assert any(r.get("train/bc_loss_seed1") for r in csv.DictReader(f)), "each seed's BC loss is logged for offline selection"


def _campaign(args, **kw):
    return subprocess.Popen([sys.executable, str(ROOT / "benchmarks" / "campaign.py"), *args], env=_env(), **kw)


@pytest.mark.slow  # (about 35 s: two runner starts and a collect; the in-place resume above is the default suite's check)
def test_the_campaign_runner_continues_a_killed_trial_from_its_save(tmp_path):
    sweep = tmp_path / "tiny-campaign.yaml"
    sweep.write_text(yaml.safe_dump({"name": "tiny", "agents": ["diffusion-ql"], "tasks": ["bandit2d-v0"], "seeds": "0-1", "steps": 3000,
                                     "eval_freq": 500, "save_every": 500, "params": {k: v for k, v in TINY.items() if k != "eval_freq"}}))
    out = tmp_path / "campaign"
    trial = out / "tiny" / "trials" / "diffusion-ql_bandit2d-v0"
    proc = _campaign(["run", str(sweep), "--out", str(out), "--threads", "1"], start_new_session=True,
                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 120
        while not (trial / "model_latest.zip").exists():  # SIGKILL the runner and its trial once a save exists
            assert time.time() < deadline and proc.poll() is None, proc.communicate()[0]
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert not (trial / "results.json").exists(), "the trial finished before the kill: give it more steps"
    status = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "campaign.py"), "status", str(sweep), "--out", str(out)],
                            env=_env(), capture_output=True, text=True)
    assert "resume" in status.stdout, status.stdout + status.stderr
    again = _campaign(["run", str(sweep), "--out", str(out), "--threads", "1"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    text = again.communicate(timeout=300)[0]
    assert again.returncode == 0, text
    book = json.loads((trial / "campaign.json").read_text())
    chunk = book["chunks"][-1]
    assert chunk["from_step"] >= 500 and chunk["to_step"] == 3000 and chunk["exit"] == 0, book  # not from step 0
    assert re.fullmatch(r"[0-9a-f]{7,}(\+changes)?|dqltoolkit .+", chunk["code"]), chunk  # the code each chunk ran
    assert book["command"].startswith("dqltoolkit train --agent diffusion-ql --env bandit2d-v0 --seeds 0-1 --steps 3000")
    results = json.loads((trial / "results.json").read_text())
    assert [e["step"] for e in results["evaluations"]] == list(range(500, 3001, 500))
    # kept checkpoints from before the kill survive the resume (for `dqltoolkit select`)
    assert [p.name for p in sorted(trial.glob("model_step*.zip"), key=lambda p: int(p.stem[10:]))] == \
        [f"model_step{s}.zip" for s in range(500, 3001, 500)]
    # offline ranking of the kept checkpoints (FQE), carried into the records for the table's offline FQE column
    sel = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "campaign.py"), "select", str(sweep), "--out", str(out), "--threads", "1",
                          "--fqe-steps", "200"],
                         env=_env(), capture_output=True, text=True, timeout=600)
    assert sel.returncode == 0, sel.stdout + sel.stderr
    cached = json.loads((trial / "fqe_cache.json").read_text())
    assert len(cached) == 12 and sum(k.endswith("|drift") for k in cached) == 6  # per kept checkpoint: J, and how far it still moved
    records = tmp_path / "runs.json"
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "campaign.py"), "collect", str(sweep), "--out", str(out),
                          "--records", str(records)], env=_env(), capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    recs = json.loads(records.read_text())
    assert [r["seed"] for r in recs] == [0, 1]
    assert (tmp_path / "selection_diffusion-ql_bandit2d-v0.png").stat().st_size > 10_000  # the offline picks' figure
    for r in recs:
        assert {"agent", "task", "seed", "dataset_transitions", "dataset_sha256", "command", "cpu", "evaluations", "bc_loss"} <= set(r)
        assert r["dataset_transitions"] == 10_000 and len(r["dataset_sha256"]) == 64 and r["metric"] == "return"
        assert [s for s, _ in r["evaluations"]] == list(range(500, 3001, 500)) and len(r["bc_loss"]) == 60
        assert chunk["code"] in r["code"].split(" + ")
        assert [s for s, _ in r["fqe"]] == list(range(500, 3001, 500))
    # a record from another machine's folder (not here) stays; this folder's own seeds are replaced, not doubled
    records.write_text(json.dumps(recs + [dict(recs[0], agent="td3bc", task="hopper-medium-v2")]))
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "campaign.py"), "collect", str(sweep), "--out", str(out),
                          "--records", str(records)], env=_env(), capture_output=True, text=True)
    assert res.returncode == 0 and "1 kept from the file for runs not here (td3bc hopper-medium-v2)" in res.stdout, res.stdout + res.stderr
    assert [(r["agent"], r["seed"]) for r in json.loads(records.read_text())] == [("diffusion-ql", 0), ("diffusion-ql", 1), ("td3bc", 0)]  # sorted by task
    report = subprocess.run([sys.executable, "-m", "dqltoolkit.cli", "report", str(records), "--reps", "100"], env=_env(),
                            capture_output=True, text=True)
    assert report.returncode == 0 and "offline: mean" in report.stdout and "offline FQE: mean" in report.stdout, report.stdout + report.stderr
    # select again: the same protocol ranks nothing again; a changed one (a spread of checkpoints, fitted together for
    # longer) ranks the run again and selection.json says how it was made
    made = (trial / "selection.json").stat().st_mtime_ns
    same = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "campaign.py"), "select", str(sweep), "--out", str(out),
                           "--threads", "1", "--fqe-steps", "200"], env=_env(), capture_output=True, text=True, timeout=600)
    assert same.returncode == 0 and "ranking" not in same.stdout and (trial / "selection.json").stat().st_mtime_ns == made
    again = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "campaign.py"), "select", str(sweep), "--out", str(out),
                            "--threads", "1", "--fqe-steps", "300", "--fqe-checkpoints", "500,3000", "--fqe-together"],
                           env=_env(), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout + again.stderr
    doc = json.loads((trial / "selection.json").read_text())
    assert sorted(doc["checkpoints"]) == ["3000", "500"] and doc["fqe_settings"]["steps"] == 300 and doc["fqe_settings"]["together"]
    assert [r["step"] for r in doc["seeds"][0]["rows"]] == [500, 3000]
    assert len(json.loads((trial / "fqe_cache.json").read_text())) == 14  # the six single fits, one fit of two together (+ drifts)

    # online fine-tuning from the offline trial's checkpoint at step 3000 (issue 26's hopper figure, in chunks)
    ft = _campaign(["finetune", str(sweep), "--out", str(out), "--threads", "1", "--from-step", "3000", "--timesteps", "200",
                    "--eval-freq", "100"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    text = ft.communicate(timeout=300)[0]
    assert ft.returncode == 0, text
    run = out / "tiny" / "finetune" / "diffusion-ql_bandit2d-v0_from3k"
    results = json.loads((run / "results.json").read_text())
    assert [e["step"] for e in results["evaluations"]] == [3100, 3200]
    with open(run / "metrics.csv", newline="") as f:
        env_steps = [int(float(r["time/env_steps"])) for r in csv.DictReader(f) if r.get("time/env_steps")]
    assert env_steps and env_steps[-1] == 400  # 200 env steps per seed, two seeds
    book = json.loads((run / "campaign.json").read_text())
    assert book["command"].startswith("dqltoolkit finetune ") and book["chunks"][-1]["to_step"] == 3200
    fig = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "finetune_figure.py"), str(out / "tiny"), "--from-step", "3000",
                          "--dip-window", "100", "--out", str(tmp_path / "ftfig")], env=_env(), capture_output=True, text=True)
    assert fig.returncode == 0, fig.stdout + fig.stderr
    table = (tmp_path / "ftfig" / "finetune_table.md").read_text().splitlines()
    assert table[2].startswith("| diffusion-ql_bandit2d-v0 | 2 | ") and table[2].endswith("| 200 |")
    assert (tmp_path / "ftfig" / "finetune.png").stat().st_size > 10_000


def _campaign_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("campaign_under_test", ROOT / "benchmarks" / "campaign.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # (dataclasses look their module up there)
    spec.loader.exec_module(mod)
    return mod


def test_run_finishes_started_trials_before_starting_new_ones_and_status_names_records_from_elsewhere(tmp_path, monkeypatch, capsys):
    """A session that ends mid-trial: the next `run` resumes that trial before any trial earlier in the file that has
    not started (on a new machine, trials whose records came from a lost folder show as new and would go first)."""
    from dqltoolkit.sweep_spec import load_sweep

    mod = _campaign_module()
    sweep = tmp_path / "order.yaml"
    sweep.write_text(yaml.safe_dump({"name": "order", "agents": ["diffusion-ql", "td3bc"], "tasks": ["bandit2d-v0"], "seeds": "0-1",
                                     "steps": 1000, "eval_freq": 500, "save_every": 500}))
    spec = load_sweep(sweep)
    names = [t.name for t in spec.grid_trials()]
    assert names == ["diffusion-ql_bandit2d-v0", "td3bc_bandit2d-v0"]
    states = {names[0]: ("new", None), names[1]: ("resume", tmp_path / "model_latest.zip")}
    monkeypatch.setattr(mod, "unit_state", lambda spec, unit: states[unit.name])
    ran = []

    def chunk(name, state, cmd, run_dir, book, threads, stop, budget, seeds):
        ran.append((name, state, cmd[cmd.index("--resume") + 1] if "--resume" in cmd else None))
        return 0

    monkeypatch.setattr(mod, "_chunk", chunk)
    monkeypatch.setattr(mod, "code_version", lambda: "test")
    monkeypatch.setattr(mod.signal, "signal", lambda *args: None)  # the runner's SIGTERM/SIGINT handlers stay out of pytest
    assert mod.run(spec, tmp_path / "out", minutes=5, threads=1, only=None) == 0
    assert ran == [("td3bc_bandit2d-v0", "resume", str(tmp_path / "model_latest.zip")), ("diffusion-ql_bandit2d-v0", "new", None)]
    ran.clear()
    assert mod.run(spec, tmp_path / "out", minutes=5, threads=1, only="diffusion-ql") == 0
    assert [r[0] for r in ran] == ["diffusion-ql_bandit2d-v0"]

    records = tmp_path / "runs.json"
    rec = {"agent": "diffusion-ql", "task": "bandit2d-v0", "seed": 0, "dataset_transitions": 10, "dataset_sha256": "0" * 64,
           "command": "dqltoolkit train", "cpu": "x", "evaluations": [[500, 1.0]], "bc_loss": [[500, 0.1]]}
    records.write_text(json.dumps([rec, dict(rec, seed=1)]))
    monkeypatch.setattr(mod, "_steps_in", lambda run_dir: 500)
    mod.status(spec, tmp_path / "out", records)
    lines = capsys.readouterr().out.splitlines()
    assert "new" in lines[0] and f"(2 records in {records} from a folder not here)" in lines[0], lines
    assert "resume" in lines[1] and "500 / 1000" in lines[1] and "records" not in lines[1], lines
    records.write_text("[{")
    mod.status(spec, tmp_path / "out", records)
    out = capsys.readouterr().out
    assert out.startswith(f"(records not read: {records}: not readable JSON") and "from a folder not here" not in out, out


def test_per_seed_runs_have_their_own_folders_and_commands_and_collect_merges_them(tmp_path, monkeypatch, capsys):
    """--per-seed: each seed is a run of its own (short enough for one session on a machine that may be replaced);
    collect reads its folders beside trial folders, one record per seed, and refuses records of other data."""
    from dqltoolkit.sweep_spec import load_sweep
    from dqltoolkit.training import train

    mod = _campaign_module()
    sweep = tmp_path / "seeds.yaml"
    sweep.write_text(yaml.safe_dump({"name": "seeds", "agents": ["diffusion-ql"], "tasks": ["bandit2d-v0"], "seeds": "0-1",
                                     "steps": 200, "eval_freq": 100, "save_every": 100,
                                     "params": {k: v for k, v in TINY.items() if k != "eval_freq"}}))
    spec, out = load_sweep(sweep), tmp_path / "out"
    assert [u.name for u in mod.units(spec, out, per_seed=True)] == ["diffusion-ql_bandit2d-v0_seed0", "diffusion-ql_bandit2d-v0_seed1"]
    assert [u.seeds for u in mod.units(spec, out, per_seed=False)] == [[0, 1]]
    ran = []

    def chunk(name, state, cmd, run_dir, book, threads, stop, budget, seeds):
        ran.append((name, seeds, cmd[cmd.index("--seeds") + 1], cmd[cmd.index("--out") + 1], book["command"]))
        return 0

    monkeypatch.setattr(mod, "_chunk", chunk)
    monkeypatch.setattr(mod, "code_version", lambda: "test")
    monkeypatch.setattr(mod.signal, "signal", lambda *args: None)
    assert mod.run(spec, out, minutes=5, threads=1, only="diffusion-ql_bandit2d-v0_seed1", per_seed=True) == 0
    seed1 = out / "trials" / "diffusion-ql_bandit2d-v0_seed1"
    assert [r[:4] for r in ran] == [("diffusion-ql_bandit2d-v0_seed1", [1], "1", str(seed1))]
    assert ran[0][4].startswith("dqltoolkit train --agent diffusion-ql --env bandit2d-v0 --seeds 1 --steps 200")

    # both seeds in the trial folder, seed 1 again in its own folder and further: one record a seed, the further run's
    for seeds, steps, folder in (([0, 1], 200, out / "trials" / "diffusion-ql_bandit2d-v0"), ([1], 300, seed1)):
        train("diffusion-ql", "bandit2d-v0", folder, steps=steps, seeds=seeds, overrides=TINY, progress=False, verbose=False)
        (folder / "campaign.json").write_text(json.dumps({"command": f"dqltoolkit train --seeds {','.join(map(str, seeds))} ", "chunks": []}))
    records = tmp_path / "runs.json"
    mod.collect(spec, out, records)
    said = capsys.readouterr().out
    assert "diffusion-ql bandit2d-v0 seed 1: two folders hold it; keeping the one whose command is `dqltoolkit train --seeds 1 ` " \
           "(300 steps)" in said, said
    recs = json.loads(records.read_text())
    assert [(r["seed"], [s for s, _ in r["evaluations"]]) for r in recs] == [(0, [100, 200]), (1, [100, 200, 300])]
    assert "--seeds 0,1 " in recs[0]["command"] and "--seeds 1 " in recs[1]["command"] and len({r["dataset_sha256"] for r in recs}) == 1
    # a rerun still under way here (for its checkpoints) does not replace a record that got further
    further = dict(recs[1], evaluations=recs[1]["evaluations"] + [[400, 1.0]], command="the finished run")
    records.write_text(json.dumps([recs[0], further]))
    mod.collect(spec, out, records)
    assert f"diffusion-ql bandit2d-v0 seed 1: the record in {records} got further (400 steps) than the run here (300); keeping the " \
           "record" in capsys.readouterr().out
    assert [r["command"] for r in json.loads(records.read_text())] == [recs[0]["command"], "the finished run"]
    records.write_text(json.dumps(recs))

    # records of this task trained on other data (a rebuild that came out different) are not mixed into the table
    records.write_text(json.dumps([dict(recs[0], agent="td3bc", dataset_sha256="f" * 64)]))
    with pytest.raises(SystemExit, match=r"bandit2d-v0's data here .* is not the data of records kept in .*ffffffffffffffff\.\.\."):
        mod.collect(spec, out, records)
    assert json.loads(records.read_text())[0]["agent"] == "td3bc"  # nothing written
    ran.clear()  # nor does a new run start training on it (hours that collect would refuse)
    with pytest.raises(SystemExit, match=r"^run: bandit2d-v0's data here"):
        mod.run(spec, tmp_path / "elsewhere", minutes=5, threads=1, only=None, per_seed=True, records=records)
    assert ran == []
    records.write_text(json.dumps([dict(recs[0], agent="td3bc")]))  # the same data: it runs
    assert mod.run(spec, tmp_path / "elsewhere", minutes=5, threads=1, only=None, per_seed=True, records=records) == 0
    assert [r[0] for r in ran] == ["diffusion-ql_bandit2d-v0_seed0", "diffusion-ql_bandit2d-v0_seed1"]


def _metrics(path: Path, points, seeds=None):
    """A metrics.csv with evaluations at ``points`` [(step, score)]: one column per seed, or the one-seed layout."""
    path.mkdir(parents=True, exist_ok=True)
    cols = [f"eval/normalized_score_seed{s}" for s in seeds] if seeds else ["eval/normalized_score"]
    with open(path / "metrics.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["time/step", *cols])
        for step, score in points:
            w.writerow([step, *[score + i for i in range(len(cols))]])


def test_finetune_figure_gathers_per_seed_runs_into_their_trial(tmp_path):
    """Per-seed fine-tunes (<trial>_seed<k>_from<n>k) are seeds of one trial in the table, beside a trial run whole."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("finetune_figure_under_test", ROOT / "benchmarks" / "finetune_figure.py")
    fig = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fig)
    camp = tmp_path / "camp"
    for k, base in ((0, 10.0), (2, 30.0)):
        _metrics(camp / "trials" / f"dql_hop_seed{k}", [(1000, base), (2000, base + 1), (3000, base + 2)])
        _metrics(camp / "finetune" / f"dql_hop_seed{k}_from2k", [(2500, base - 4), (3000, base + 5)])
    _metrics(camp / "trials" / "td3bc_hop", [(1000, 1.0), (2000, 2.0)], seeds=[0, 1])
    _metrics(camp / "finetune" / "td3bc_hop_from2k", [(2500, 4.0)], seeds=[0, 1])
    assert fig.by_trial(camp, 3000) == {}, "nothing was fine-tuned from step 3000"
    trials = fig.by_trial(camp, 2000)
    assert sorted(trials) == ["dql_hop", "td3bc_hop"]
    assert trials["dql_hop"] == {0: [(-1000, 10.0), (0, 11.0), (500, 6.0), (1000, 15.0)],
                                 2: [(-1000, 30.0), (0, 31.0), (500, 26.0), (1000, 35.0)]}
    assert trials["td3bc_hop"] == {0: [(-1000, 1.0), (0, 2.0), (500, 4.0)], 1: [(-1000, 2.0), (0, 3.0), (500, 5.0)]}
    s = fig.summary(trials["dql_hop"], dip_window=500)
    assert s == {"seeds": 2, "switch": 21.0, "dip": 16.0, "last": 25.0}
    _metrics(camp / "finetune" / "dql_hop_seed2_from2k_copy", [(2500, 0.0)])  # (not a fine-tune from 2k: ignored)
    _metrics(camp / "trials" / "dql_hop", [(1000, 0.0)], seeds=[2])
    _metrics(camp / "finetune" / "dql_hop_from2k", [(2500, 0.0)], seeds=[2])
    with pytest.raises(SystemExit, match="seed 2 of dql_hop is also in another fine-tune"):
        fig.by_trial(camp, 2000)
