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
