"""Dataset loaders: D4RL hdf5 and Minari, element for element, and the errors users meet."""

import h5py
import numpy as np
import pytest

import dqltoolkit
from dqltoolkit.data import DatasetError, apply_reward_transform, load_d4rl_hdf5, load_minari
from dqltoolkit.data.minari_writer import rollout_episodes, write_minari


def _write_h5(path, **arrays):
    with h5py.File(path, "w") as f:
        for k, v in arrays.items():
            f[k] = v


@pytest.fixture
def d4rl_file(tmp_path):
    n = 8
    obs = np.arange(n * 2, dtype=np.float64).reshape(n, 2)
    path = tmp_path / "hopper-medium-v2.hdf5"
    _write_h5(path, observations=obs, actions=np.arange(n, dtype=np.float32)[:, None] / 10, rewards=np.arange(n, dtype=np.float32),
              terminals=np.array([0, 0, 1, 0, 0, 0, 0, 0], bool), timeouts=np.array([0, 0, 0, 0, 1, 0, 0, 0], bool))
    return path


def test_d4rl_qlearning_semantics(d4rl_file):
    t = load_d4rl_hdf5(d4rl_file)
    # rows 0..6 are candidates (the last row has no successor); row 4 ends in a timeout and is dropped
    kept = [0, 1, 2, 3, 5, 6]
    np.testing.assert_array_equal(t["rewards"], np.array(kept, np.float32))
    np.testing.assert_array_equal(t["observations"], np.arange(16, dtype=np.float32).reshape(8, 2)[kept])
    np.testing.assert_array_equal(t["next_observations"], np.arange(16, dtype=np.float32).reshape(8, 2)[[k + 1 for k in kept]])
    np.testing.assert_array_equal(t["terminals"], np.array([0, 0, 1, 0, 0, 0], np.float32))
    assert all(v.dtype == np.float32 for v in t.values())


def test_d4rl_without_timeouts_uses_episode_length(tmp_path):
    path = tmp_path / "old.hdf5"
    n = 7
    _write_h5(path, observations=np.zeros((n, 1)), actions=np.zeros((n, 1)), rewards=np.arange(n, dtype=np.float32), terminals=np.zeros(n, bool))
    t = load_d4rl_hdf5(path, max_episode_steps=3)
    # steps 2 and 5 end episodes by length: dropped; row 6 is last: dropped
    np.testing.assert_array_equal(t["rewards"], [0, 1, 3, 4])


@pytest.mark.parametrize("change,message", [
    (dict(drop="rewards"), r"bad.hdf5: missing key\(s\) \['rewards'\]"),
    (dict(rewards=np.zeros(5, np.float32)), r"bad.hdf5: key 'rewards' has 5 rows but 'observations' has 8"),
    (dict(actions=np.array([[0.0]] * 3 + [[np.nan]] + [[0.0]] * 4)), r"bad.hdf5: key 'actions' contains NaN or Inf \(first at row 3\)"),
])
def test_d4rl_errors_name_the_file_and_key(tmp_path, change, message):
    arrays = dict(observations=np.zeros((8, 2)), actions=np.zeros((8, 1)), rewards=np.zeros(8, np.float32), terminals=np.zeros(8, bool))
    arrays.pop(change.pop("drop", None), None)
    arrays.update(change)
    path = tmp_path / "bad.hdf5"
    _write_h5(path, **arrays)
    with pytest.raises(DatasetError, match=message):
        load_d4rl_hdf5(path)
    (tmp_path / "junk.hdf5").write_text("not hdf5")
    with pytest.raises(DatasetError, match="junk.hdf5 is not a readable hdf5 file"):
        load_d4rl_hdf5(tmp_path / "junk.hdf5")


@pytest.fixture
def minari_home(tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    return tmp_path / "minari"


def _tiny_hopper_episodes():
    rng = np.random.default_rng(0)
    return rollout_episodes("Hopper-v5", lambda o: rng.uniform(-1, 1, 3).astype(np.float32), n_steps=60, seed=0, max_episode_steps=25)


@pytest.mark.parametrize("fmt", ["hdf5", pytest.param("arrow", marks=pytest.mark.skipif(not __import__("importlib").util.find_spec("pyarrow"), reason="pyarrow not installed"))])
def test_minari_shift_terminals_and_truncations(minari_home, fmt):
    import warnings

    import minari

    episodes = _tiny_hopper_episodes()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        write_minari(f"test/hopper/tiny-{fmt}-v0", episodes, "Hopper-v5", ref_min=-20.272305, ref_max=3234.3, data_format=fmt)
    assert [str(w.message) for w in caught if "minari" in w.filename] == []  # provenance given, nothing left to warn about
    meta = minari.load_dataset(f"test/hopper/tiny-{fmt}-v0").storage.metadata
    assert meta["author"] == {f"dqltoolkit {dqltoolkit.__version__}"} and meta["code_permalink"].startswith("dqltoolkit==")
    assert '"id": "Hopper-v5"' in meta["eval_env_spec"] and meta["description"] == f"{len(episodes)} episodes of Hopper-v5, written by dqltoolkit"
    t = load_minari(f"test/hopper/tiny-{fmt}-v0")
    n = sum(len(e["actions"]) for e in episodes)
    assert t["observations"].shape == (n, 11) and t["actions"].shape == (n, 3) and all(v.dtype == np.float32 for v in t.values())
    start = 0
    for e in episodes:
        L = len(e["actions"])
        np.testing.assert_allclose(t["observations"][start:start + L], e["observations"][:-1].astype(np.float32))
        np.testing.assert_allclose(t["next_observations"][start:start + L], e["observations"][1:].astype(np.float32))
        np.testing.assert_array_equal(t["terminals"][start:start + L], e["terminations"].astype(np.float32))
        np.testing.assert_array_equal(t["timeouts"][start:start + L], e["truncations"].astype(np.float32))
        np.testing.assert_allclose(t["rewards"][start:start + L], e["rewards"].astype(np.float32))
        start += L
    assert t["timeouts"].sum() >= 1 and np.maximum(t["terminals"], t["timeouts"]).sum() == len(episodes)  # each episode ends once


def test_missing_minari_dataset_says_where_and_how_to_build(minari_home):
    from dqltoolkit.tasks import get_task

    with pytest.raises(DatasetError) as e:
        get_task("hopper-medium-v2").load_dataset()
    msg = str(e.value)
    assert "'mujoco/hopper/medium-v0' / 'dqltoolkit/hopper/medium-v0'" in msg and str(minari_home) in msg
    assert "--download" in msg and "dqltoolkit dataset build hopper --levels medium" in msg


def test_locally_built_copy_serves_the_catalogue_task(minari_home):
    from dqltoolkit.tasks import get_task

    write_minari("dqltoolkit/hopper/medium-v0", _tiny_hopper_episodes(), "Hopper-v5", ref_min=-20.272305, ref_max=3234.3)
    task = get_task("hopper-medium-v2")
    t = task.load_dataset()
    assert t["observations"].shape[1] == 11 and task.eval_env == "Hopper-v5"
    assert task.normalized_score(3234.3) == pytest.approx(100.0) and task.normalized_score(-20.272305) == pytest.approx(0.0)


def test_reward_transforms():
    table = {"rewards": np.array([1.0, 2.0, 3.0, 4.0], np.float32), "terminals": np.array([0, 1, 0, 1], np.float32)}
    np.testing.assert_allclose(apply_reward_transform("cql_antmaze", table)["rewards"], [2.0, 6.0, 10.0, 14.0])
    np.testing.assert_allclose(apply_reward_transform("iql_antmaze", table)["rewards"], [0.0, 1.0, 2.0, 3.0])
    z = apply_reward_transform("normalize", table)["rewards"]
    assert abs(z.mean()) < 1e-6 and z.std() == pytest.approx(1.0, rel=1e-5)
    # episode returns 3 and 7: scale 1000 / 4
    np.testing.assert_allclose(apply_reward_transform("iql_locomotion", table)["rewards"], [250.0, 500.0, 750.0, 1000.0])
    with pytest.raises(KeyError, match="unknown reward transform 'cql'"):
        apply_reward_transform("cql", table)
