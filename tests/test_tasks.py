"""Naming data: every name of a catalogue dataset gets its task's recipe section; a Minari dataset the
catalogue does not know takes its evaluation env from its metadata, never code of the metadata's choosing;
the dataset commands take the same names as `train --env`; an unusable Minari folder is one clear error."""

import json
import sys
import warnings

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from dqltoolkit.cli import main
from dqltoolkit.config import load_recipe
from dqltoolkit.data import DatasetError
from dqltoolkit.data.minari_writer import rollout_episodes, write_minari
from dqltoolkit.registry import UnknownNameError
from dqltoolkit.tasks import TaskWarning, get_task


@pytest.fixture
def minari_home(tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    return tmp_path / "minari"


def _episodes(n=30):
    rng = np.random.default_rng(0)
    return rollout_episodes("Hopper-v5", lambda o: rng.uniform(-1, 1, 3).astype(np.float32), n_steps=n, seed=0, max_episode_steps=15)


def _d4rl_file(path, n=50):
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        f["observations"] = rng.standard_normal((n, 11)).astype(np.float32)
        f["actions"] = rng.uniform(-1, 1, (n, 3)).astype(np.float32)
        f["rewards"] = rng.standard_normal(n).astype(np.float32)
        f["terminals"] = np.zeros(n, bool)
        f["timeouts"] = (np.arange(n) % 25 == 24)
    return path


@pytest.mark.parametrize("name, section", [
    ("hopper-medium-v2", "hopper-medium-v2"),
    ("mujoco/hopper/medium-v0", "hopper-medium-v2"),
    ("minari:mujoco/hopper/medium-v0", "hopper-medium-v2"),
    ("minari:dqltoolkit/hopper/medium-v0", "hopper-medium-v2"),
    ("dqltoolkit/hopper/medium-v0", "hopper-medium-v2"),
    ("d4rl:/data/hopper-medium-v2.hdf5", "hopper-medium-v2"),
    ("d4rl:/data/hopper_medium-v2.hdf5", "hopper-medium-v2"),  # D4RL's own download name
    ("/data/hopper_medium-v2.hdf5", "hopper-medium-v2"),
    ("minari:mujoco/walker2d/medium-replay-v0", "walker2d-medium-replay-v2"),
    ("minari:D4RL/antmaze/umaze-v1", "antmaze-umaze-v0"),
    ("bandit2d-v0", "bandit2d-v0"),
])
def test_every_name_of_a_catalogue_dataset_gets_its_recipe_section(minari_home, name, section):
    task = get_task(name)
    assert task.recipe_section == section
    assert task.eval_env == get_task(section).eval_env and task.ref_max == get_task(section).ref_max


def test_the_recipe_section_carries_the_papers_per_dataset_settings():
    config, _ = load_recipe("diffusion-ql", get_task("minari:mujoco/hopper/medium-v0").recipe_section)
    assert config.grad_norm == 9.0
    config, _ = load_recipe("diffusion-ql", get_task("minari:D4RL/antmaze/umaze-v1").recipe_section)
    assert (config.eta, config.grad_norm, config.reward_tune) == (0.5, 2.0, "cql_antmaze")


def test_training_from_a_d4rl_file_or_a_minari_id_uses_the_tasks_settings(minari_home, tmp_path):
    from dqltoolkit.agent import Agent

    write_minari("dqltoolkit/hopper/medium-v0", _episodes(), "Hopper-v5", ref_min=-20.272305, ref_max=3234.3)
    for name in ("minari:mujoco/hopper/medium-v0", f"d4rl:{_d4rl_file(tmp_path / 'hopper_medium-v2.hdf5')}"):
        assert Agent.from_task("diffusion-ql", name, device="cpu", hidden=16, critic_hidden=16).config.grad_norm == 9.0
    own = Agent.from_task("diffusion-ql", f"d4rl:{_d4rl_file(tmp_path / 'mine.hdf5')}", device="cpu", hidden=16, critic_hidden=16)
    assert own.config.grad_norm == 1.0 and get_task(f"d4rl:{tmp_path / 'mine.hdf5'}").recipe_section is None


def test_a_local_minari_dataset_the_catalogue_does_not_know_evaluates_on_its_own_env(minari_home):
    write_minari("someone/hopper/own-v0", _episodes(), "Hopper-v5", ref_min=-20.0, ref_max=3000.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", TaskWarning)
        task = get_task("minari:someone/hopper/own-v0")
    assert (task.eval_env, task.ref_min, task.ref_max, task.recipe_section) == ("Hopper-v5", -20.0, 3000.0, None)
    env = task.make_env()
    assert env.observation_space.shape == (11,) and env.spec.max_episode_steps == 1000
    env.close()
    assert len(task.load_dataset()["observations"]) >= 30
    assert get_task("someone/hopper/own-v0").eval_env == "Hopper-v5"  # the bare id works where the dataset is local


EVIL = """
import pathlib
pathlib.Path({marker!r}).write_text("imported")
"""


@pytest.mark.parametrize("edit, why", [
    (lambda s: {**s, "id": "evil_dqltest_mod:Evil-v0"}, "an id with ':' makes gymnasium import the module"),
    (lambda s: {**s, "entry_point": "evil_dqltest_mod:Evil"}, "gives env 'Hopper-v5' the entry point 'evil_dqltest_mod:Evil'"),
    (lambda s: {**s, "id": "Evil-v0", "entry_point": "evil_dqltest_mod:Evil"}, "names env 'Evil-v0', which is not registered"),
    (lambda s: {**s, "additional_wrappers": [{"name": "W", "entry_point": "evil_dqltest_mod:W", "kwargs": {}}]}, "additional_wrappers"),
    (lambda s: {**s, "kwargs": {"xml_file": "/tmp/evil.xml"}}, "non-numeric keyword argument(s) ['xml_file']"),
])
def test_metadata_cannot_make_gymnasium_import_code(minari_home, tmp_path, monkeypatch, edit, why):
    """The evaluation env named by a dataset's metadata is taken only as a registered id with its
    registered entry point; else evaluation is skipped with a warning saying why, and training goes on."""
    marker = tmp_path / "imported.txt"
    (tmp_path / "evil_dqltest_mod.py").write_text(EVIL.format(marker=str(marker)))
    monkeypatch.syspath_prepend(str(tmp_path))
    write_minari("someone/hopper/evil-v0", _episodes(), "Hopper-v5")
    meta_path = minari_home / "someone" / "hopper" / "evil-v0" / "data" / "metadata.json"
    meta = json.loads(meta_path.read_text())
    for field in ("env_spec", "eval_env_spec"):
        meta[field] = json.dumps(edit(json.loads(meta[field])))
    meta_path.write_text(json.dumps(meta))

    with pytest.warns(TaskWarning, match="evaluation is skipped") as caught:
        task = get_task("minari:someone/hopper/evil-v0")
    assert why in str(caught[0].message) and "someone/hopper/evil-v0" in str(caught[0].message)
    assert task.eval_env is None and why in task.eval_note
    with pytest.raises(ValueError) as e:
        task.make_env()
    assert "has no evaluation env: " in str(e.value) and why in str(e.value)
    from dqltoolkit.agent import Agent

    with pytest.warns(TaskWarning, match="evaluation is skipped"):
        model = Agent.from_task("diffusion-ql", "minari:someone/hopper/evil-v0", device="cpu", hidden=16, critic_hidden=16)
    assert model.observation_space.shape == (11,)  # the data's own spaces: training works without the env
    assert not marker.exists() and "evil_dqltest_mod" not in sys.modules


def test_dataset_commands_take_the_names_train_takes(minari_home):
    runner = CliRunner()
    r = runner.invoke(main, ["dataset", "info", "mujoco/hopper/random-v0"])
    assert r.exit_code == 1 and "recipe section: hopper-random-v2" in r.output
    assert "`dqltoolkit dataset build hopper --levels random` (seconds: random actions, no training)" in r.output
    r = runner.invoke(main, ["dataset", "info", "minari:mujoco/hopper/medium-v0"])
    assert "`dqltoolkit dataset build hopper --levels medium` (tens of minutes of SAC training" in r.output
    episodes = _episodes()
    write_minari("dqltoolkit/hopper/random-v0", episodes, "Hopper-v5", ref_min=-20.272305, ref_max=3234.3)
    for name in ("mujoco/hopper/random-v0", "minari:mujoco/hopper/random-v0", "hopper-random-v2", "dqltoolkit/hopper/random-v0"):
        r = runner.invoke(main, ["dataset", "info", name])
        assert r.exit_code == 0 and "dataset_id: dqltoolkit/hopper/random-v0" in r.output and "ref_max_score: 3234.3" in r.output, name
    r = runner.invoke(main, ["dataset", "list"])
    steps = sum(len(e["actions"]) for e in episodes)
    assert f"dqltoolkit/hopper/random-v0: {len(episodes)} episodes, {steps} steps (tasks hopper-random-v2, mujoco/hopper/random-v0)" in r.output
    r = runner.invoke(main, ["dataset", "list", "hopper-random-v2", "minari:mujoco/hopper/medium-v0"])
    assert r.output.splitlines()[0] == "hopper-random-v2: Minari dataset dqltoolkit/hopper/random-v0 (local) [recipe section hopper-random-v2]"
    assert "minari:mujoco/hopper/medium-v0: missing (mujoco/hopper/medium-v0 / dqltoolkit/hopper/medium-v0); get it with " \
           "`dqltoolkit dataset build hopper --levels medium`" in r.output


def test_dataset_build_takes_a_dataset_name(minari_home, tmp_path, monkeypatch):
    import dqltoolkit.data.builder as builder

    seen = []
    monkeypatch.setattr(builder, "build", lambda cfg, say, overwrite: seen.append((cfg.env, list(cfg.levels))) or {})
    monkeypatch.setenv("DQLTOOLKIT_CACHE", str(tmp_path / "cache"))
    runner = CliRunner()
    for name in ("hopper-medium-v2", "mujoco/hopper/medium-v0", "minari:dqltoolkit/hopper/medium-v0"):
        assert runner.invoke(main, ["dataset", "build", name]).exit_code == 0
    assert runner.invoke(main, ["dataset", "build", "walker2d", "--levels", "random,expert"]).exit_code == 0
    assert seen == [("hopper", ["medium"])] * 3 + [("walker2d", ["random", "expert"])]
    r = runner.invoke(main, ["dataset", "build", "mujoco/hopper/random-v0", "--levels", "medium"])
    assert r.exit_code == 1 and "'mujoco/hopper/random-v0' is the random level; --levels medium disagrees" in r.output
    r = runner.invoke(main, ["dataset", "build", "pen-human-v1"])
    assert r.exit_code == 1 and "cannot be built here (its data only comes from Minari's servers: --download)" in r.output
    r = runner.invoke(main, ["dataset", "build", "hoper"])
    assert r.exit_code == 1 and "'hoper' is neither an env (hopper, halfcheetah, walker2d) nor a dataset name" in r.output


def test_unknown_bare_names_are_refused_with_the_forms_that_work(minari_home):
    with pytest.raises(UnknownNameError, match=r"unknown env 'mujoco/hoper/medium-v0'\. Did you mean 'mujoco/hopper/medium-v0'.*minari:<Minari dataset id>"):
        get_task("mujoco/hoper/medium-v0")


def test_an_unusable_minari_folder_is_one_error_naming_it(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(blocker / "minari"))
    monkeypatch.setenv("DQLTOOLKIT_CACHE", str(tmp_path / "cache"))
    expected = f"the Minari folder '{blocker / 'minari'}' (MINARI_DATASETS_PATH) cannot be created"
    with pytest.raises(DatasetError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        get_task("hopper-medium-v2").load_dataset()
    with pytest.raises(DatasetError, match="cannot be created"):
        write_minari("x/y/z-v0", _episodes(), "Hopper-v5")
    for args in (["dataset", "list"], ["dataset", "info", "hopper-random-v2"], ["dataset", "build", "hopper", "--levels", "random"],
                 ["train", "--env", "minari:someone/x-v0", "--out", str(tmp_path / "run")]):
        r = CliRunner().invoke(main, args)
        assert r.exit_code == 1 and expected in r.output and "Traceback" not in r.output, args


def test_a_failed_write_names_the_dataset_and_leaves_nothing_behind(minari_home, monkeypatch):
    import errno

    import minari

    def full_disk(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(minari, "create_dataset_from_buffers", full_disk)
    with pytest.raises(DatasetError, match=r"could not write Minari dataset 'x/hopper/full-v0' to .*x/hopper/full-v0: No space left on device"):
        write_minari("x/hopper/full-v0", _episodes(), "Hopper-v5")
    assert not (minari_home / "x" / "hopper" / "full-v0").exists()


def test_dataset_info_describes_a_d4rl_file_by_any_of_its_names(tmp_path):
    path = _d4rl_file(tmp_path / "hopper_medium-v2.hdf5")
    for name in (f"d4rl:{path}", str(path)):
        r = CliRunner().invoke(main, ["dataset", "info", name])
        assert r.exit_code == 0 and "recipe section: hopper-medium-v2" in r.output and "evaluation env: Hopper-v5" in r.output
        assert "observations: (50, 11) float32" in r.output and "timeouts: (50,) bool" in r.output
    r = CliRunner().invoke(main, ["dataset", "info", f"d4rl:{tmp_path / 'gone.hdf5'}"])
    assert r.exit_code == 1 and f"D4RL file {tmp_path / 'gone.hdf5'} does not exist" in r.output
