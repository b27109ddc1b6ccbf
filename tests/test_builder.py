"""The dataset builder on a tiny budget: every level becomes a Minari dataset, and a stopped build resumes."""

import numpy as np
import pytest
from click.testing import CliRunner

import dqltoolkit.data.builder as builder_mod
from dqltoolkit.cli import main
from dqltoolkit.data import load_minari
from dqltoolkit.data.builder import BuildConfig, build

TINY = dict(env="hopper", budget=400, chunk=200, learning_starts=100, transitions=80, eval_episodes=1, max_episode_steps=40)


@pytest.fixture(autouse=True)
def homes(tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    monkeypatch.setenv("DQLTOOLKIT_CACHE", str(tmp_path / "cache"))


def test_tiny_build_writes_every_level_with_reference_scores():
    lines = []
    res = build(BuildConfig(**TINY), say=lines.append, progress=False)
    assert set(res) == {"random", "medium", "medium-replay", "expert", "medium-expert"}
    for level, r in res.items():
        t = load_minari(f"dqltoolkit/hopper/{level}-v0")
        assert len(t["observations"]) == r["transitions"] > 0 and t["observations"].shape[1] == 11
    assert res["random"]["transitions"] >= 80
    assert res["medium-expert"]["transitions"] == res["medium"]["transitions"] + res["expert"]["transitions"]
    # medium-replay holds the complete episodes of the replay buffer up to the medium snapshot (400 steps here)
    assert 300 <= res["medium-replay"]["transitions"] <= 400
    import minari

    meta = minari.load_dataset("dqltoolkit/hopper/medium-v0").storage.metadata
    assert meta["ref_min_score"] == pytest.approx(-20.272305) and meta["ref_max_score"] == pytest.approx(3234.3)
    assert any("budget reached before the medium target" in m for m in lines)


def test_interrupted_build_resumes_from_its_last_chunk(monkeypatch):
    calls = {"n": 0}
    real = builder_mod._eval_return

    def flaky(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(builder_mod, "_eval_return", flaky)
    with pytest.raises(KeyboardInterrupt):
        build(BuildConfig(**TINY, levels=["medium"]), say=lambda m: None, progress=False)
    monkeypatch.setattr(builder_mod, "_eval_return", real)
    lines = []
    build(BuildConfig(**TINY, levels=["medium"]), say=lines.append, progress=False)
    assert any("resuming behaviour-policy training at 200 env steps" in m for m in lines)


def test_dataset_cli_lists_and_describes():
    build(BuildConfig(**{**TINY, "levels": ["random"]}), say=lambda m: None, progress=False)
    r = CliRunner().invoke(main, ["dataset", "list"])
    assert "dqltoolkit/hopper/random-v0:" in r.output
    r = CliRunner().invoke(main, ["dataset", "info", "dqltoolkit/hopper/random-v0"])
    assert "ref_max_score: 3234.3" in r.output
    r = CliRunner().invoke(main, ["dataset", "build", "hopper", "--levels", "randm"])
    assert r.exit_code != 0 and "unknown level(s) ['randm']" in r.output


def test_a_larger_budget_continues_a_build_that_missed_the_medium_target():
    cfg = dict(TINY, levels=["random", "medium"])
    build(BuildConfig(**cfg), say=lambda m: None, progress=False)
    lines = []
    res = build(BuildConfig(**{**cfg, "budget": 600}), say=lines.append, progress=False)
    assert "budget raised from 400 to 600 env steps: training continues; medium will be collected again" in lines
    assert any("resuming behaviour-policy training at 400 env steps" in m for m in lines)
    assert any("dqltoolkit/hopper/random-v0: already built" in m for m in lines)
    prog = builder_mod._load_progress(builder_mod.build_dir(BuildConfig(**cfg)))
    assert prog.steps == 600 and prog.medium_step == 600 and prog.medium_fallback
    assert [s for s, _ in prog.returns] == [200, 400, 600]
    assert res["medium"]["transitions"] >= 80
    # the same budget again changes nothing
    lines = []
    build(BuildConfig(**{**cfg, "budget": 600}), say=lines.append, progress=False)
    assert not any("budget raised" in m for m in lines) and not any("resuming" in m for m in lines)


def _sac(seed=0):
    import gymnasium as gym
    from stable_baselines3 import SAC

    return SAC("MlpPolicy", gym.make("Hopper-v5", max_episode_steps=20), learning_starts=20, seed=seed, verbose=0, device="cpu",
               policy_kwargs={"net_arch": [32, 32]})


def test_a_stage_round_trips_without_pickle(tmp_path):
    """Weights, optimiser moments, the entropy coefficient, counters and the replay buffer come back exactly
    into a fresh model, from files that hold only tensors, JSON and plain arrays."""
    import json

    import torch

    from dqltoolkit.data.sb3_stages import load_model, load_replay, save_model, save_replay

    model = _sac()
    model.learn(60)
    save_model(model, tmp_path / "stage", "sac")
    save_replay(model.replay_buffer, tmp_path / "replay.npz")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["replay.npz", "stage.json", "stage.safetensors"]
    assert json.loads((tmp_path / "stage.json").read_text())["num_timesteps"] == 60
    np.load(tmp_path / "replay.npz", allow_pickle=False)  # plain arrays
    back = load_model(tmp_path / "stage", "sac", lambda: _sac(seed=1))
    load_replay(back.replay_buffer, tmp_path / "replay.npz")
    for name in ("policy", "actor.optimizer", "critic.optimizer", "ent_coef_optimizer"):
        a, b = (getattr(m, name.split(".")[0]) for m in (model, back))
        a, b = (a.optimizer, b.optimizer) if "." in name else (a, b)
        sa, sb = a.state_dict(), b.state_dict()
        if name == "policy":
            assert all(torch.equal(sa[k], sb[k]) for k in sa) and sa.keys() == sb.keys()
        else:
            assert sa["param_groups"] == sb["param_groups"]
            for k, moments in sa["state"].items():
                assert all(torch.equal(torch.as_tensor(v), torch.as_tensor(sb["state"][k][n])) for n, v in moments.items())
    assert torch.equal(model.log_ent_coef, back.log_ent_coef) and back.num_timesteps == 60 and back._n_updates == model._n_updates
    n = model.replay_buffer.pos
    assert back.replay_buffer.pos == n and np.array_equal(back.replay_buffer.observations[:n], model.replay_buffer.observations[:n])
    back.learn(30, reset_num_timesteps=False)  # and it trains on
    assert back.num_timesteps == 90


def test_a_stage_that_does_not_fit_is_refused_naming_the_file_and_field(tmp_path):
    import json

    from safetensors.torch import load_file, save_file

    from dqltoolkit.data.sb3_stages import StageError, load_model, save_model

    save_model(_sac(), tmp_path / "stage", "sac")
    with pytest.raises(StageError, match=r"stage\.json: field 'algo' is 'sac', but this build uses 'tqc'"):
        load_model(tmp_path / "stage", "tqc", _sac)
    meta = tmp_path / "stage.json"
    doc = json.loads(meta.read_text())
    meta.write_text(json.dumps({**doc, "num_timesteps": -5}))
    with pytest.raises(StageError, match=r"stage\.json: field 'num_timesteps' must be a non-negative integer, got -5"):
        load_model(tmp_path / "stage", "sac", _sac)
    meta.write_text(json.dumps(doc))
    tensors = load_file(str(tmp_path / "stage.safetensors"))
    first = doc["state"]["policy"]["dict"][0][1]["tensor"]
    save_file({**tensors, first: tensors[first][:, :3].contiguous()}, str(tmp_path / "stage.safetensors"))
    with pytest.raises(StageError, match=r"stage\.json: Error\(s\) in loading state_dict"):
        load_model(tmp_path / "stage", "sac", _sac)
    (tmp_path / "stage.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(StageError, match=r"stage\.safetensors: not a readable safetensors file"):
        load_model(tmp_path / "stage", "sac", _sac)


PICKLE_PAYLOAD = b"cos\nsystem\n(S'touch %s'\ntR."


def test_pickled_stages_of_older_versions_are_never_loaded(tmp_path):
    """An older build folder (SB3 zip + pickled replay buffer) is not resumed from: loading pickle runs
    code. The files go, the build starts over and says so."""
    d = builder_mod.build_dir(BuildConfig(**TINY))
    d.mkdir(parents=True)
    marker = tmp_path / "pickle-ran"
    (d / "replay_last.pkl").write_bytes(PICKLE_PAYLOAD % str(marker).encode())
    (d / "policy_last.zip").write_bytes(b"PK not really")
    (d / "progress.json").write_text('{"steps": 200, "returns": [[200, 1.0]]}')
    lines = []
    build(BuildConfig(**TINY, levels=["medium"]), say=lines.append, progress=False)
    assert f"{d}: removed policy_last.zip, replay_last.pkl (SB3 pickle files from an older dqltoolkit, which are never loaded); " \
           "the build starts over" in lines
    assert not any("resuming" in m for m in lines) and not marker.exists()
    assert (d.stat().st_mode & 0o777) == 0o700 and not list(d.glob("*.zip")) and not list(d.glob("*.pkl"))
    assert {"policy_last.json", "policy_last.safetensors", "replay_last.npz", "policy_medium.json"} <= {p.name for p in d.iterdir()}
