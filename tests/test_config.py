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


def test_keys_are_read_by_the_parts_that_declare_them():
    cfg = AgentConfig(head="gaussian", objective="ql", hidden=64, squash="clip", eta=2.0)
    assert (cfg.hidden, cfg.squash, cfg.eta) == (64, "clip", 2.0)
    assert cfg.part_settings("head")["hidden"] == 64 and "eta" in cfg.part_settings("objective")
    with pytest.raises(ConfigError, match=r"key 'squash' is not read by this agent's parts \(head 'diffusion'.*it belongs to head 'gaussian'"):
        AgentConfig(squash="clip")
    with pytest.raises(ConfigError, match=r"key 'T' is not read .*it belongs to head 'diffusion'"):
        AgentConfig(head="deterministic", objective="td3bc", T=5)
    with pytest.raises(ConfigError, match="batch_size=0 is below its minimum 1"):
        AgentConfig(batch_size=0)
    with pytest.raises(ConfigError, match="activation='swish' is not one of 'mish', 'relu', 'tanh', 'silu'"):
        AgentConfig(activation="swish")
    with pytest.raises(ConfigError, match="tau=nan is not a finite number"):
        AgentConfig(tau=float("nan"))


def test_typed_keys_reach_one_part_and_round_trip():
    cfg = AgentConfig(head="cvae", objective="bcq", **{"head.hidden": 32, "objective.hidden": 8})
    assert cfg.part_settings("head")["hidden"] == 32 and cfg.part_settings("objective")["hidden"] == 8
    flat = cfg.to_dict()
    assert flat.get("head.hidden", flat.get("hidden")) == 32 and flat["objective.hidden"] == 8
    assert AgentConfig.from_dict(flat) == cfg
    both = AgentConfig(head="cvae", objective="bcq", hidden=16)  # flat: every part that reads it
    assert both.part_settings("head")["hidden"] == both.part_settings("objective")["hidden"] == 16
    with pytest.raises(ConfigError, match=r"key 'T' is not read by this agent's parts \(head 'cvae'\)"):
        AgentConfig(head="cvae", objective="bcq", **{"head.T": 3})


def test_changing_a_part_keeps_shared_keys_and_drops_the_old_parts_own():
    cfg, _ = load_recipe("diffusion-ql", "bandit2d-v0")
    swapped = cfg.replace(head="gaussian")
    assert swapped.hidden == cfg.hidden == 128 and "head.T" in swapped.dropped
    with pytest.raises(AttributeError):
        swapped.T  # noqa: B018
    assert AgentConfig().fit(T=3, squash="clip").dropped == ["squash"]


def test_a_recipe_extends_a_shipped_one_with_its_task_sections(tmp_path):
    from dqltoolkit.config import resolve_recipe

    p = tmp_path / "mine.yaml"
    p.write_text("base: diffusion-ql\ndefault:\n  eta: 2.0\nbandit2d-v0:\n  steps: 100\n")
    r = resolve_recipe(str(p), "bandit2d-v0")
    base = load_recipe("diffusion-ql", "bandit2d-v0")[0]
    assert (r.config.T, r.config.hidden, r.config.q_grad) == (base.T, base.hidden, base.q_grad) == (50, 128, "approx")
    assert (r.config.eta, r.config.steps) == (2.0, 100)  # the recipe's own sections come after the base's
    assert [s.split("/")[-1] for s in r.sections] == ["diffusion-ql.yaml [default]", "diffusion-ql.yaml [bandit2d-v0]",
                                                       "mine.yaml [default]", "mine.yaml [bandit2d-v0]"]
    p.write_text("base: mine.yaml\ndefault:\n  eta: 1.0\n")
    with pytest.raises(ConfigError, match="deeper than 8"):
        resolve_recipe(str(p))
    p.write_text("base: diffusion-ql\ndefault:\n  squash: clip\n")
    with pytest.raises(ConfigError, match=r"mine.yaml \[default\]: key 'squash' is not read"):
        resolve_recipe(str(p))


def test_every_key_has_a_description():
    from dqltoolkit.config import describe_keys

    specs = describe_keys()
    assert {"lr", "T", "critic_hidden", "eta", "matmul_precision"} <= {s.name for s in specs}
    assert all(s.help for s in specs), [f"{s.owner}.{s.name}" for s in specs if not s.help]
