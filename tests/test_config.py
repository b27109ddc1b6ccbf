import pytest

from dqltoolkit.config import AgentConfig, ConfigError, load_recipe, parse_overrides
from dqltoolkit.registry import UnknownNameError


def test_recipe_defaults_and_task_overrides():
    base, path = load_recipe("diffusion-ql")
    assert path.name == "diffusion-ql.yaml"
    assert (base.T, base.eta, base.lr, base.batch_size, base.ema_decay, base.tau) == (5, 1.0, 3e-4, 256, 0.995, 0.005)
    hop, _ = load_recipe("diffusion-ql", "hopper-medium-replay-v2")
    assert hop.grad_norm == 4.0
    pen, _ = load_recipe("diffusion-ql", "pen-human-v1")
    assert (pen.lr, pen.eta, pen.grad_norm, pen.reward_tune) == (3e-5, 0.15, 7.0, "normalize")
    am, _ = load_recipe("diffusion-ql", "antmaze-medium-play-v0")
    assert am.max_q_backup and am.lr == 1e-3 and am.reward_tune == "cql_antmaze"


def test_overrides_are_typed():
    o = parse_overrides(["eta=2.5", "T=10", "max_q_backup=true", "steps=1e6", "beta_schedule=cosine"])
    assert o == {"eta": 2.5, "T": 10, "max_q_backup": True, "steps": 1_000_000, "beta_schedule": "cosine"}
    assert isinstance(o["T"], int) and isinstance(o["eta"], float)


@pytest.mark.parametrize(
    "pair,message",
    [
        ("eta=abc", "eta='abc' is not a valid float"),
        ("T=2.5", "T='2.5' is not a valid int"),
        ("max_q_backup=maybe", "is not a valid bool"),
        ("etaa=1", "unknown key 'etaa'. Did you mean 'eta'"),
        ("eta", "expected key=value"),
    ],
)
def test_bad_overrides_are_named(pair, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_overrides([pair])


def test_recipe_with_unknown_key_names_file_and_key(tmp_path):
    p = tmp_path / "mine.yaml"
    p.write_text("default:\n  head: diffusion\n  lerning_rate: 1.0\n")
    with pytest.raises(ConfigError, match=r"mine.yaml \[default\]: unknown key 'lerning_rate'"):
        load_recipe(str(p))
    p.write_text("default:\n  eta: 1e6\n")  # PyYAML reads 1e6 as a string; the recipe's type wins
    assert load_recipe(str(p))[0].eta == 1e6
    p.write_text("head: diffusion\n")
    with pytest.raises(ConfigError, match="needs a top-level 'default'"):
        load_recipe(str(p))


def test_unknown_agent_suggests():
    with pytest.raises(UnknownNameError, match="unknown agent 'diffusion-q'. Did you mean 'diffusion-ql'"):
        load_recipe("diffusion-q")


def test_every_shipped_recipe_loads():
    from dqltoolkit.config import recipe_names

    assert {"diffusion-ql", "diffusion-bc"} <= set(recipe_names())
    for name in recipe_names():
        assert isinstance(load_recipe(name)[0], AgentConfig)
