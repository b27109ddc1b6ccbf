"""The `train` job around the loop: resumed runs (what -p may change, the lr schedule, the summary),
run folders (one run per folder, a lock, a fresh default folder each time) and bad counts."""

import json

import pytest
import torch
from click.testing import CliRunner

import dqltoolkit
from dqltoolkit.cli import main
from dqltoolkit.faults import RunLock
from dqltoolkit.runs import new_run_dir
from dqltoolkit.training import train

TINY = dict(T=3, hidden=16, critic_hidden=16, time_dim=8, batch_size=32, n_candidates=4, log_every=5)
CLI_TINY = [a for k, v in TINY.items() for a in ("-p", f"{k}={v}")]


def cli(*args):
    return CliRunner().invoke(main, ["train", "--env", "bandit2d-v0", "--no-progress", *args], catch_exceptions=False)


@pytest.fixture
def six_steps(tmp_path):
    """A finished 6-step run with lr_decay (its schedule ends at step 6)."""
    res = train("diffusion-ql", "bandit2d-v0", tmp_path / "six", steps=6, overrides={**TINY, "lr_decay": True}, device="cpu",
                progress=False, verbose=False, evaluate_at_end=False)
    return res.checkpoints[0]


def test_resume_applies_safe_overrides_and_refuses_network_changes(tmp_path, six_steps):
    res = cli("--resume", str(six_steps), "--steps", "2", "--out", str(tmp_path / "a"), "-p", "lr=0.002", "-p", "tau=0.01")
    assert res.exit_code == 0, res.output
    assert "-p lr=0.002 applied (the checkpoint had 0.001)" in res.output and "-p tau=0.01 applied" in res.output
    m = dqltoolkit.load(tmp_path / "a" / "model.zip")
    assert (m.config.lr, m.config.tau, m.config.hidden) == (0.002, 0.01, 16)
    for args, key in ((["-p", "hidden=32"], "hidden=32 (changes the networks; the checkpoint has 16)"),
                      (["--head", "gaussian"], "head='gaussian' (changes the networks"),
                      (["-p", "normalize_obs=true"], "normalize_obs=True (cannot change in a resumed run"),
                      (["-p", "steps=50"], "--steps N says how many more steps"),
                      (["--seeds", "0-1"], "continues the checkpoint's seeds [0]; drop --seed/--seeds"),
                      (["--agent", "bcq"], "--agent does not apply with --resume")):
        res = cli("--resume", str(six_steps), "--steps", "2", "--out", str(tmp_path / "b"), *args)
        assert res.exit_code != 0 and key in res.output, (args, res.output)
        assert not (tmp_path / "b" / "model.zip").exists()
    res = cli("--resume", str(six_steps), "--out", str(tmp_path / "c"))
    assert res.exit_code != 0 and "has done all 6 steps of its run; pass --steps N" in res.output


def test_resume_past_the_end_of_a_cosine_schedule_keeps_learning(tmp_path, six_steps):
    """The checkpoint's schedule ended at lr 0; a resumed run with --steps 4 gets a total of 10 steps and a
    learning rate above 0 (it used to train 4 steps at lr 0, leaving the weights unchanged)."""
    res = cli("--resume", str(six_steps), "--steps", "4", "--out", str(tmp_path / "more"))
    assert res.exit_code == 0, res.output
    assert "lr_decay: the run's total grows from 6 to 10 steps" in res.output
    before, after = dqltoolkit.load(six_steps), dqltoolkit.load(tmp_path / "more" / "model.zip")
    assert before.actor_opt.param_groups[0]["lr"] == 0.0
    assert after.num_timesteps == 10 and after.config.steps == 10
    moved = [not torch.equal(p, q) for p, q in zip(before.head.parameters(), after.head.parameters())]
    assert all(moved)


def test_resume_summary_reports_this_run(tmp_path, six_steps):
    res = cli("--resume", str(six_steps), "--steps", "3", "--out", str(tmp_path / "r"))
    assert res.exit_code == 0, res.output
    assert "trained 3 steps (steps 6 -> 9 of the run) of seeds [0] in" in res.output
    results = json.loads((tmp_path / "r" / "results.json").read_text())
    assert (results["steps"], results["first_step"], results["total_steps"]) == (3, 6, 9)


def test_a_second_run_into_a_locked_folder_fails_at_once(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    with RunLock(out):
        res = cli("--steps", "2", "--out", str(out), *CLI_TINY)
        assert res.exit_code != 0 and f"{out} is in use by another dqltoolkit train" in res.output
        assert not (out / "config.yaml").exists()
    res = cli("--steps", "2", "--out", str(out), *CLI_TINY)  # released: the folder is usable again
    assert res.exit_code == 0, res.output


def test_a_reused_folder_reports_only_this_runs_files(tmp_path):
    out = tmp_path / "run"
    first = cli("--steps", "2", "--seeds", "0-1", "--out", str(out), *CLI_TINY)
    assert first.exit_code == 0 and (out / "model_seed1.zip").is_file() and (out / "bandit_seed1.png").is_file()
    (out / "notes.txt").write_text("mine")
    second = cli("--steps", "2", "--out", str(out), *CLI_TINY)
    assert second.exit_code == 0, second.output
    assert "held an earlier run: removed its" in second.output and "model_seed1.zip" in second.output
    assert not list(out.glob("*seed*")) and (out / "model.zip").is_file() and (out / "notes.txt").read_text() == "mine"
    reported = [line.split(" ", 1)[1] for line in second.output.splitlines() if line.startswith(("wrote ", "saved "))]
    assert reported and all((tmp_path / "run" / p.rsplit("/", 1)[1]).is_file() for p in reported)
    assert str(out / "bandit.png") in reported and str(out / "model.zip") in reported


def test_each_run_gets_its_own_default_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for _ in range(2):
        assert cli("--steps", "2", *CLI_TINY).exit_code == 0
    gaussian = [a for pair in zip(CLI_TINY[::2], CLI_TINY[1::2]) if not pair[1].startswith(("T=", "time_dim=")) for a in pair]
    assert cli("--steps", "2", "--head", "gaussian", *gaussian).exit_code == 0  # (a Gaussian head reads no T)
    runs = tmp_path / "runs"
    assert sorted(p.name for p in runs.iterdir()) == ["diffusion-ql-bandit2d-v0", "diffusion-ql-bandit2d-v0_2", "diffusion-ql-bandit2d-v0_3"]
    assert dqltoolkit.load(runs / "diffusion-ql-bandit2d-v0_3" / "model.zip").config.head == "gaussian"
    assert new_run_dir(runs / "diffusion-ql-bandit2d-v0").name == "diffusion-ql-bandit2d-v0_4"
    assert new_run_dir(runs / "other").name == "other"


@pytest.mark.parametrize("args,message", [
    (["--steps", "-5"], "--steps must be a positive number of gradient steps, got -5"),
    (["--steps", "0"], "--steps must be a positive number of gradient steps, got 0"),
    (["--steps", "3", "--save-every", "0"], "--save-every must be a positive number of gradient steps, got 0"),
])
def test_bad_counts_are_refused(tmp_path, args, message):
    res = cli(*args, "--out", str(tmp_path / "o"))
    assert res.exit_code != 0 and message in res.output
    with pytest.raises(ValueError, match="steps must be a positive number"):
        train("diffusion-ql", "bandit2d-v0", tmp_path / "p", steps=-1)


def test_logger_formats_write_event_files_that_read_back(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "tb"
    res = cli("--steps", "12", "--out", str(out), "--logger", "stdout,json,tensorboard", *CLI_TINY)
    assert res.exit_code == 0, res.output
    assert "| train/ " in res.output and "critic_loss " in res.output  # the stdout table
    events = sorted(out.glob("events.out.tfevents.*"))
    assert len(events) == 1 and f"wrote {events[0]}" in res.output
    acc = EventAccumulator(str(out))
    acc.Reload()
    scalars = acc.Scalars("train/critic_loss")
    assert [s.step for s in scalars] == [5, 10, 12]
    rows = [json.loads(line) for line in (out / "progress.json").read_text().splitlines()]
    assert [r["time/step"] for r in rows] == [5, 10, 12]
    assert [s.value for s in scalars] == pytest.approx([r["train/critic_loss"] for r in rows])
    bad = cli("--steps", "2", "--out", str(tmp_path / "x"), "--logger", "csv,mlflow")
    assert bad.exit_code != 0 and "--logger: unknown format(s) ['mlflow']" in bad.output


def test_threads_option_and_its_automatic_default(tmp_path, monkeypatch):
    import os

    from dqltoolkit import threads

    before = torch.get_num_threads()
    res = cli("--steps", "2", "--out", str(tmp_path / "t"), "--threads", "1", *CLI_TINY)
    assert res.exit_code == 0, res.output
    assert torch.get_num_threads() == before  # the command's setting does not leak into its caller
    res = cli("--steps", "2", "--out", str(tmp_path / "u"), "--threads", "0")
    assert res.exit_code != 0 and "--threads must be a positive integer or 'auto', got '0'" in res.output
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "usable_cores", lambda: 8)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 8)
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    samples = iter([])
    monkeypatch.setattr(threads, "_cpu_times", lambda: next(samples))
    monkeypatch.setattr(threads.time, "sleep", lambda s: None)
    samples = iter([(1000, 4000), (1000 + 650, 4000 + 1000)])  # 65% of 8 cores busy in the sample: five are someone else's
    assert threads.auto_threads() == (3, "8 cores, 65% of the machine busy")
    samples = iter([(0, 0), (1000, 1000)])
    assert threads.auto_threads()[0] == 1
    samples = iter([(0, 0), (10, 1000)])
    assert threads.auto_threads()[0] == 8
    samples = iter([None])  # no /proc/stat: the load average
    monkeypatch.setattr(os, "getloadavg", lambda: (5.2, 0.0, 0.0))
    assert threads.auto_threads() == (3, "8 cores, load average 5.2")
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert threads.auto_threads() == (8, "OMP_NUM_THREADS=2")  # (torch has read it already: its count stands)


def test_a_resumed_run_gets_its_own_default_folder(tmp_path, monkeypatch, six_steps):
    monkeypatch.chdir(tmp_path)
    res = cli("--resume", str(six_steps), "--steps", "2")
    assert res.exit_code == 0, res.output
    assert dqltoolkit.load(tmp_path / "runs" / "six-resumed-bandit2d-v0" / "model.zip").num_timesteps == 8
    assert six_steps.is_file() and dqltoolkit.load(six_steps).num_timesteps == 6  # the source is never touched


def test_a_run_saved_after_its_last_step_but_not_finished_resumes_to_its_end(tmp_path):
    """A SIGTERM during the final evaluation leaves model_interrupted.zip at the run's last step and no results.json
    (seen in the results campaign): resuming it must finish the run (0 more steps, the end-of-run evaluation, the
    model and results.json), not refuse it as a finished run."""
    run = tmp_path / "run"
    train("diffusion-ql", "bandit2d-v0", run, steps=6, overrides=TINY, device="cpu", progress=False, verbose=False,
          evaluate_at_end=False, save_every=6)
    latest = run / "model_latest.zip"  # saved after step 6, before the end of the run
    (run / "results.json").unlink()
    res = cli("--resume", str(latest), "--out", str(run))
    assert res.exit_code == 0, res.output
    assert "steps 6 -> 6" in res.output
    results = json.loads((run / "results.json").read_text())
    assert results["steps"] == 0 and results["total_steps"] == 6 and "evaluation" in results
    assert dqltoolkit.load(run / "model.zip").num_timesteps == 6
    # a save from before the mark existed is known by its name in a folder without results.json
    from dqltoolkit.checkpoint import save_agent

    save_agent(dqltoolkit.load(latest), run / "model_interrupted.zip")
    (run / "results.json").unlink()
    res = cli("--resume", str(run / "model_interrupted.zip"), "--out", str(run))
    assert res.exit_code == 0 and (run / "results.json").is_file(), res.output
    res = cli("--resume", str(run / "model.zip"), "--out", str(tmp_path / "again"))  # the finished run's model: refused
    assert res.exit_code != 0 and "has done all 6 steps of its run; pass --steps N" in res.output
