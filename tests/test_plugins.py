"""Parts that plug in (issue 15): each one registered by name, trained through ``Agent.from_task`` and the
command line on the default CPU path, and shown to run with its own code.

- a subclass of the diffusion head overriding ``sample`` (the Q term, the critic's next actions, acting),
- a subclass of the ``ql`` objective overriding its loss (the reported number is the override's),
- a new critic with its own TD target and loss (an IQL-style expectile value critic),
- a head that brings its own setting (typed, bounds-checked, refused elsewhere naming its owner),
- the same three example parts found through the entry points of a package pip-installed in the test.

The example parts live in docs/examples/dql_plugin_example (the package docs/extending.md shows).
"""

from __future__ import annotations

import copy
import csv
import importlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner

import dqltoolkit
from dqltoolkit import Agent
from dqltoolkit.cli import main
from dqltoolkit.config import ConfigError
from dqltoolkit.heads.diffusion import DiffusionHead
from dqltoolkit.nn import member_generators
from dqltoolkit.objectives.ql import QLObjective
from dqltoolkit.registry import CRITICS, HEADS, OBJECTIVES

ROOT = Path(dqltoolkit.__file__).resolve().parents[1]
EXAMPLE = ROOT / "docs" / "examples" / "dql_plugin_example"
BANDIT = "bandit2d-v0"
TINY = dict(T=3, hidden=16, critic_hidden=16, batch_size=32, n_candidates=4)
TINY_ARGS = [a for k, v in TINY.items() for a in ("-p", f"{k}={v}")]
ALL_KERNELS = ["chain", "td-target", "critic", "actor"]


def _import_example(module: str):
    sys.path.insert(0, str(EXAMPLE))
    try:
        return importlib.import_module(f"dql_plugin_example.{module}")
    finally:
        sys.path.remove(str(EXAMPLE))


TemperedDiffusionHead = _import_example("tempered_head").TemperedDiffusionHead
_critic_module = _import_example("expectile_critic")
ExpectileValueCritic, expectile_loss = _critic_module.ExpectileValueCritic, _critic_module.expectile_loss
BoostedQLObjective = _import_example("boosted_ql").BoostedQLObjective

#: every sample() call of the test heads below: (id of the head, whether autograd was recording)
SAMPLE_CALLS: List[Tuple[int, bool]] = []


class ShiftedDiffusionHead(DiffusionHead):
    """The diffusion head with its samples moved by ``shift`` (then clipped), recording each call."""

    shift = 0.25

    def sample(self, obs, generators, noise=None, grad_steps=0, steps=None):
        SAMPLE_CALLS.append((id(self), torch.is_grad_enabled()))
        out = super().sample(obs, generators, noise=noise, grad_steps=grad_steps, steps=steps)
        return out if self.shift == 0 else (out + self.shift).clamp(-self.max_action, self.max_action)


class CountingDiffusionHead(ShiftedDiffusionHead):
    """Records calls and changes nothing: the control that separates the override's effect from the backend's."""

    shift = 0.0


class RedeclaredDiffusionHead(DiffusionHead):
    """A subclass that keeps the parent's math and says so, so the kernels may run it."""

    capabilities = DiffusionHead.capabilities


PARTS = [
    (HEADS, "shifted-diffusion-test", ShiftedDiffusionHead),
    (HEADS, "counting-diffusion-test", CountingDiffusionHead),
    (HEADS, "redeclared-diffusion-test", RedeclaredDiffusionHead),
    (HEADS, "tempered-diffusion", TemperedDiffusionHead),
    (CRITICS, "expectile", ExpectileValueCritic),
    (OBJECTIVES, "ql-bc-boost", BoostedQLObjective),
]


@pytest.fixture(autouse=True)
def registered():
    """Register the parts by name for each test, and take them out again (other tests list the registries)."""
    for registry, name, cls in PARTS:
        registry.register(name, cls)
    SAMPLE_CALLS.clear()
    yield
    for registry, name, _ in PARTS:
        registry._entries.pop(name, None)  # the registries have no public unregister


def fused_is_default() -> bool:
    from dqltoolkit._native import fused_ops

    return os.environ.get("DQLTOOLKIT_FUSED", "1") != "0" and fused_ops() is not None


def expected_backend(accelerated: List[str]) -> str:
    """What ``backend.describe()`` says on this machine's default CPU path for parts whose kernels are ``accelerated``."""
    if not fused_is_default():
        return "eager"
    return f"fused-cpu ({', '.join(accelerated) if accelerated else 'nothing applies: eager'})"


def make(**overrides) -> Agent:
    return Agent.from_task("diffusion-ql", BANDIT, device="cpu", **{**TINY, **overrides})


def cli(args: List[str]):
    return CliRunner().invoke(main, args, catch_exceptions=False)


def cli_train(out: Path, *args: str, steps: int = 6):
    res = cli(["train", "--env", BANDIT, "--steps", str(steps), "--out", str(out), "--no-progress", *TINY_ARGS, *args])
    assert res.exit_code == 0, res.output
    return res


def metrics(out: Path) -> List[Dict[str, float]]:
    return [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(open(out / "metrics.csv"))]


def weights(agent: Agent) -> Dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in agent.head.state_dict().items()}


def max_diff(a: Dict[str, torch.Tensor], b: Dict[str, torch.Tensor]) -> float:
    return max(float((a[k] - b[k]).abs().max()) for k in a)


# --- a subclass of the diffusion head that overrides sample -------------------------------------------

def test_head_subclass_sample_runs_in_the_q_term_the_td_target_and_acting():
    over = dict(q_grad="exact", gamma=0.99)  # exact: the Q term samples the chain; gamma > 0: the target draws next actions
    plain, shifted, control = make(**over), make(head="shifted-diffusion-test", **over), make(head="counting-diffusion-test", **over)
    assert plain.backend.describe() == expected_backend(ALL_KERNELS)
    # the overriding subclass declares nothing: its sampling, the TD target and the actor run eagerly; the critic keeps its kernel
    assert shifted.backend.describe() == control.backend.describe() == expected_backend(["critic"])
    steps = 12
    for _ in range(steps):
        shifted.train_step()
    online = [grad for who, grad in SAMPLE_CALLS if who == id(shifted.head)]
    target = [grad for who, grad in SAMPLE_CALLS if who == id(shifted.ema_head)]
    assert online == [True] * steps  # the Q term, through the chain with gradients, once per step
    assert target == [False] * steps  # the critic's next actions from the EMA head, once per step
    assert len(SAMPLE_CALLS) == 2 * steps
    SAMPLE_CALLS.clear()
    actions, _ = shifted.predict(np.zeros((5, 2), np.float32))
    assert SAMPLE_CALLS == [(id(shifted.head), False)] and actions.shape == (5, 2)

    for agent in (plain, control):
        for _ in range(steps):
            agent.train_step()
    # the control (same math, eager) follows the plain run to float rounding; the shift changes what is learnt
    assert max_diff(weights(control), weights(plain)) < 1e-4
    assert max_diff(weights(shifted), weights(plain)) > 1e-3


def test_head_subclass_sample_runs_through_the_cli(tmp_path):
    SAMPLE_CALLS.clear()
    cli_train(tmp_path / "shifted", "--head", "shifted-diffusion-test", "-p", "q_grad=exact", "-p", "gamma=0.99")
    with_grad = sum(grad for _, grad in SAMPLE_CALLS)
    assert with_grad == 6  # one Q term per step
    assert len(SAMPLE_CALLS) - with_grad >= 6 + 1  # next actions each step, then the evaluation's acting
    cli_train(tmp_path / "plain", "-p", "q_grad=exact", "-p", "gamma=0.99")
    results = {n: json.loads((tmp_path / n / "results.json").read_text()) for n in ("shifted", "plain")}
    assert results["shifted"]["backend"] == expected_backend(["critic"])
    assert results["plain"]["backend"] == expected_backend(ALL_KERNELS)
    shifted, plain = dqltoolkit.load(tmp_path / "shifted" / "model.zip"), dqltoolkit.load(tmp_path / "plain" / "model.zip")
    assert type(shifted.head) is ShiftedDiffusionHead and type(plain.head) is DiffusionHead
    assert max_diff(weights(shifted), weights(plain)) > 1e-3


def test_a_subclass_that_redeclares_capabilities_keeps_the_kernels():
    assert make(head="redeclared-diffusion-test").backend.describe() == expected_backend(ALL_KERNELS)


# --- a subclass of the ql objective that overrides its loss ---------------------------------------------

def test_ql_subclass_reports_and_trains_its_own_loss():
    boosted, plain = make(objective="ql-bc-boost", bc_boost=0.5), make()
    assert isinstance(boosted.objective, BoostedQLObjective) and boosted.objective.bc_boost == 0.5
    assert boosted.backend.describe() == expected_backend(["chain", "td-target", "critic"])  # the actor runs the override eagerly
    assert plain.backend.describe() == expected_backend(ALL_KERNELS)
    eta = boosted.config.eta
    assert eta == plain.config.eta == 10.0  # the bandit recipe's
    for step in range(10):
        b, p = boosted.train_step(), plain.train_step()
        torch.testing.assert_close(b["actor_loss"], 1.5 * b["bc_loss"] + eta * b["ql_loss"], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(b["bc_boost_loss"], 0.5 * b["bc_loss"])
        torch.testing.assert_close(p["actor_loss"], p["bc_loss"] + eta * p["ql_loss"], rtol=1e-5, atol=1e-5)
        if step == 0:  # the same weights and draws: the parent's loss and the override's differ by exactly the added term
            torch.testing.assert_close(b["bc_loss"], p["bc_loss"], rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(b["actor_loss"] - p["actor_loss"], 0.5 * p["bc_loss"], rtol=1e-4, atol=1e-4)
    assert max_diff(weights(boosted), weights(plain)) > 1e-3


def test_ql_subclass_loss_equals_the_parent_loss_plus_its_term():
    agent = make(objective="ql-bc-boost", bc_boost=2.0)
    batch = agent.buffer.sample(32, member_generators([7]))
    parent, override = [], []
    for fn, out in ((QLObjective.actor_loss, parent), (BoostedQLObjective.actor_loss, override)):
        out.extend(fn(agent.objective, agent.head, agent.critic, batch["obs"], batch["actions"], member_generators([3])))
    torch.testing.assert_close(override[0], parent[0] + 2.0 * parent[1]["bc_loss"])


class _WeightedCombine(QLObjective):
    """Overrides only ``combine``, the one place L_bc and L_q meet (the backends' faster forms call it too)."""

    def combine(self, bc, ql):
        return 0.5 * bc + self.current_eta() * ql, {"bc_loss": bc, "ql_loss": ql}


def test_ql_subclass_overriding_combine_gets_its_combination_on_the_default_path():
    OBJECTIVES.register("ql-half-bc", _WeightedCombine)
    try:
        agent = make(objective="ql-half-bc")
        assert agent.backend.describe() == expected_backend(["chain", "td-target", "critic"])  # its actor runs eagerly, as written
        for _ in range(5):
            info = agent.train_step()
            torch.testing.assert_close(info["actor_loss"], 0.5 * info["bc_loss"] + agent.config.eta * info["ql_loss"], rtol=1e-5, atol=1e-5)
    finally:
        OBJECTIVES.unregister("ql-half-bc")


def test_ql_subclass_through_the_cli(tmp_path):
    cli_train(tmp_path / "r", "-p", "objective=ql-bc-boost", "-p", "bc_boost=0.5", steps=10)
    cfg = yaml.safe_load((tmp_path / "r" / "config.yaml").read_text())
    assert cfg["config"]["objective"] == "ql-bc-boost" and cfg["config"]["bc_boost"] == 0.5
    rows = metrics(tmp_path / "r")
    assert rows, "no metrics logged"
    for row in rows:  # the logged means obey the override's formula (they are linear in the parts)
        expected = 1.5 * row["train/bc_loss"] + 10.0 * row["train/ql_loss"]
        assert row["train/actor_loss"] == pytest.approx(expected, rel=1e-4, abs=1e-4)
        assert row["train/bc_boost_loss"] == pytest.approx(0.5 * row["train/bc_loss"], rel=1e-5)


# --- a new critic with its own TD target and loss --------------------------------------------------------

def _set_constant(net, values: List[float]) -> None:
    """Make an EnsembleMLP output ``values[i]`` for member i, whatever its input."""
    with torch.no_grad():
        for layer in net.layers:
            layer.weight.zero_()
            layer.bias.zero_()
        net.layers[-1].bias.copy_(torch.tensor(values).view(-1, 1, 1))


def _tiny_batch() -> Dict[str, torch.Tensor]:
    return {"obs": torch.tensor([[[0.3], [-0.2]]]), "actions": torch.tensor([[[0.5], [-1.0]]]),
            "rewards": torch.tensor([[1.0, 2.0]]), "terminals": torch.tensor([[0.0, 1.0]]), "next_obs": torch.tensor([[[0.1], [0.7]]])}


def _never(_next_obs):
    raise AssertionError("the expectile critic drew next actions")


@pytest.mark.parametrize("v, y, q_loss, v_loss", [
    # V = 2: y = r + 0.9 (1 - d) V = (2.8, 2.0); Q = (2, 3): ((2-2.8)^2 + 0)/2 + ((3-2.8)^2 + 1)/2 = 0.84;
    # min target Q = min(4, 3) = 3, u = 3 - 2 = 1 > 0: weight 0.7, loss 0.7
    (2.0, [2.8, 2.0], 0.84, 0.7),
    # V = 3.5: y = (4.15, 2.0); (2.15^2)/2 + (1.15^2 + 1)/2 = 3.4725; u = -0.5 < 0: weight 0.3, loss 0.3 * 0.25
    (3.5, [4.15, 2.0], 3.4725, 0.075),
])
def test_expectile_critic_target_and_loss_by_hand(v, y, q_loss, v_loss):
    critic = ExpectileValueCritic(1, 1, members=1, gamma=0.9, critic_hidden=2, critic_layers=1, expectile=0.7)
    _set_constant(critic.q, [2.0, 3.0])
    _set_constant(critic.q_target, [4.0, 3.0])
    _set_constant(critic.v, [v])
    batch = _tiny_batch()
    target = critic.compute_target(batch, _never, member_generators([0]))
    torch.testing.assert_close(target, torch.tensor([y]))
    loss, info = critic.compute_loss(batch, target)
    torch.testing.assert_close(info["q_loss"], torch.tensor([q_loss]))
    torch.testing.assert_close(info["v_loss"], torch.tensor([v_loss]))
    torch.testing.assert_close(loss, torch.tensor([q_loss + v_loss]))


def _mlp64(net, x: np.ndarray, member: int) -> np.ndarray:
    """An EnsembleMLP member by hand, in float64: mish(x) = x tanh(log(1 + e^x))."""
    for i, layer in enumerate(net.layers):
        x = x @ layer.weight[member].detach().double().numpy() + layer.bias[member, 0].detach().double().numpy()
        if i < len(net.layers) - 1:
            x = x * np.tanh(np.log1p(np.exp(x)))
    return x[:, 0]


def test_expectile_critic_loss_is_the_expectile_formula_on_random_weights():
    critic = ExpectileValueCritic(2, 1, members=1, gamma=0.9, critic_hidden=3, critic_layers=1, expectile=0.8)
    critic.reset_parameters(member_generators([5]))
    with torch.no_grad():  # let the target twins differ from the online ones
        for p in critic.q_target.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=torch.Generator().manual_seed(1)))
    g = torch.Generator().manual_seed(2)
    batch = {"obs": torch.randn(1, 6, 2, generator=g), "actions": torch.rand(1, 6, 1, generator=g) * 2 - 1,
             "rewards": torch.randn(1, 6, generator=g), "terminals": (torch.rand(1, 6, generator=g) < 0.3).float(),
             "next_obs": torch.randn(1, 6, 2, generator=g)}
    obs, sa, nxt = (batch["obs"][0].double().numpy(), torch.cat([batch["obs"], batch["actions"]], -1)[0].double().numpy(),
                    batch["next_obs"][0].double().numpy())
    r, d = batch["rewards"][0].double().numpy(), batch["terminals"][0].double().numpy()
    y = r + 0.9 * (1 - d) * _mlp64(critic.v, nxt, 0)
    q = [_mlp64(critic.q, sa, j) for j in (0, 1)]
    u = np.minimum(_mlp64(critic.q_target, sa, 0), _mlp64(critic.q_target, sa, 1)) - _mlp64(critic.v, obs, 0)
    weight = np.where(u < 0, 0.2, 0.8)
    target = critic.compute_target(batch, _never, member_generators([0]))
    np.testing.assert_allclose(target[0].numpy(), y, rtol=1e-5, atol=1e-6)
    loss, info = critic.compute_loss(batch, target)
    np.testing.assert_allclose(info["q_loss"].item(), sum(((qj - y) ** 2).mean() for qj in q), rtol=1e-5)
    np.testing.assert_allclose(info["v_loss"].item(), (weight * u**2).mean(), rtol=1e-5)
    assert {w for w in weight} == {0.2, 0.8}, "the batch should exercise both sides of the expectile"


def test_expectile_setting_is_checked():
    with pytest.raises(ValueError, match="expectile=1.5 must lie strictly between 0 and 1"):
        ExpectileValueCritic(2, 2, expectile=1.5)
    with pytest.raises(ConfigError, match="expectile=-0.1 is below its minimum 0"):
        make(critic="expectile", expectile=-0.1)


def _expectile_of(x: torch.Tensor, tau: float) -> float:
    """The tau-expectile of a sample: the fixed point of the weighted mean."""
    v = x.mean()
    for _ in range(200):
        w = torch.where(x < v, 1 - tau, tau)
        v = (w * x).sum() / w.sum()
    return float(v)


def test_expectile_critic_trains_on_the_bandit():
    fitted = {}
    for tau in (0.5, 0.9):
        agent = make(critic="expectile", expectile=tau, gamma=0.99, critic_lr=3e-3, tau=0.05)
        assert type(agent.critic) is ExpectileValueCritic and agent.critic.expectile == tau
        assert agent.backend.describe() == expected_backend(["chain"])  # a critic without kernels: its update runs eagerly
        drawn = []
        agent.learner.next_actions = lambda next_obs, drawn=drawn: drawn.append(1)  # the learner's offer, which this critic ignores
        v_start = copy.deepcopy(agent.critic)
        losses = []
        for _ in range(8):
            for _step in range(50):
                agent.train_step()
            losses.append(agent.pop_metrics())
        assert drawn == []
        assert losses[-1]["q_loss"][0] < 0.1 * losses[0]["q_loss"][0]  # the twins fit the rewards (16.6 -> 0.57 measured)
        torch.testing.assert_close(torch.tensor(losses[-1]["critic_loss"]), torch.tensor(losses[-1]["q_loss"] + losses[-1]["v_loss"]))
        # V's loss against the final target twins: from the initial V, the trained V, and the best constant
        b = agent.buffer.sample(4000, member_generators([11]))
        with torch.no_grad():
            min_q = agent.critic.reduce(agent.critic.target_values(b["obs"], b["actions"]))
            best = _expectile_of(min_q[0], tau)
            before = float(expectile_loss(min_q - v_start.value(b["obs"]), tau))
            after = float(expectile_loss(min_q - agent.critic.value(b["obs"]), tau))
            optimum = float(expectile_loss(min_q - best, tau))
            fitted[tau] = float(agent.critic.value(b["obs"][:, :1]))
        assert after < 0.5 * before and after < 1.1 * optimum, (before, after, optimum)
        actions, _ = agent.predict(np.zeros((3, 2), np.float32))
        assert actions.shape == (3, 2) and np.all(np.abs(actions) <= 1)
    assert fitted[0.9] > fitted[0.5] + 1.0  # a higher expectile of the same rewards (measured 4.4 against 2.5)


def test_expectile_critic_through_the_cli(tmp_path):
    out = tmp_path / "iql"
    cli_train(out, "-p", "critic=expectile", "-p", "expectile=0.8", "-p", "critic_lr=3e-3", "-p", "log_every=50", steps=100)
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["config"]["critic"] == "expectile" and cfg["config"]["expectile"] == 0.8
    assert cfg["backend"] == expected_backend(["chain"])
    rows = metrics(out)
    assert [int(r["time/step"]) for r in rows] == [50, 100]
    assert rows[-1]["train/q_loss"] < 0.6 * rows[0]["train/q_loss"]  # measured 12.3 -> 4.4
    for r in rows:
        assert r["train/critic_loss"] == pytest.approx(r["train/q_loss"] + r["train/v_loss"], rel=1e-4)
    model = dqltoolkit.load(out / "model.zip")
    assert type(model.critic) is ExpectileValueCritic and model.critic.expectile == 0.8 and model.num_timesteps == 100


# --- a head with its own setting -------------------------------------------------------------------------

def test_head_setting_from_task_typed_and_checked():
    agent = make(head="tempered-diffusion", noise_scale="0.5")  # typed by its declaration
    assert agent.config.noise_scale == 0.5 and agent.head.noise_scale == 0.5 and agent.ema_head.noise_scale == 0.5
    assert make(head="tempered-diffusion", **{"head.noise_scale": 0.25}).head.noise_scale == 0.25
    assert make(head="tempered-diffusion").head.noise_scale == 1.0  # its default
    with pytest.raises(ConfigError, match=r"noise_scale='cold' is not a valid float"):
        make(head="tempered-diffusion", noise_scale="cold")
    with pytest.raises(ConfigError, match=r"noise_scale=-1.0 is below its minimum 0"):
        make(head="tempered-diffusion", noise_scale=-1)
    with pytest.raises(ConfigError, match=r"key 'noise_scale' is not read by this agent's parts \(head 'diffusion'.*"
                                          r"it belongs to head 'tempered-diffusion'"):
        make(noise_scale=0.5)


def test_head_setting_changes_sampling():
    obs = torch.zeros(1, 6, 2)
    heads = {}
    for scale in (0.0, 1.0):
        heads[scale] = TemperedDiffusionHead(2, 2, T=3, hidden=16, noise_scale=scale)
        heads[scale].reset_parameters(member_generators([0]))
    plain = DiffusionHead(2, 2, T=3, hidden=16)
    plain.reset_parameters(member_generators([0]))
    cold = heads[0.0].sample(obs, member_generators([1]))
    assert torch.equal(cold, cold[:, :1].expand_as(cold))  # no noise: one action per observation
    warm = heads[1.0].sample(obs, member_generators([1]))
    assert float(warm.detach().std(dim=1).min()) > 0.05
    torch.testing.assert_close(warm, plain.sample(obs, member_generators([1])))  # 1: the plain head, draw for draw
    # the override keeps the head's signature: a sampler choice reaches the chain (ddim adds no noise after x_T)
    ddim = heads[1.0].sample(obs, member_generators([1]), None, 2, grad_steps=0, sampler="ddim")
    torch.testing.assert_close(ddim, plain.sample(obs, member_generators([1]), None, 2, sampler="ddim"))
    assert make(head="tempered-diffusion", sampler="ddim").config.sampler == "ddim"  # built, not refused


def test_head_setting_through_the_cli_and_a_recipe(tmp_path):
    cli_train(tmp_path / "p", "--head", "tempered-diffusion", "-p", "noise_scale=0.5")
    assert yaml.safe_load((tmp_path / "p" / "config.yaml").read_text())["config"]["noise_scale"] == 0.5
    assert dqltoolkit.load(tmp_path / "p" / "model.zip").head.noise_scale == 0.5  # the checkpoint rebuilds it with its setting

    recipe = tmp_path / "tempered.yaml"
    recipe.write_text("base: diffusion-ql\ndefault:\n  head: tempered-diffusion\n  noise_scale: 0.25\n")
    cli_train(tmp_path / "r", "--agent", str(recipe))
    cfg = yaml.safe_load((tmp_path / "r" / "config.yaml").read_text())["config"]
    assert cfg["head"] == "tempered-diffusion" and cfg["noise_scale"] == 0.25

    def refused(args, message):
        res = cli(["train", "--env", BANDIT, "--steps", "1", "--out", str(tmp_path / "x"), *args])
        assert res.exit_code != 0 and message in res.output, res.output

    refused(["-p", "noise_scale=0.5"], "key 'noise_scale' is not read by this agent's parts (head 'diffusion', critic 'double-q', "
            "objective 'ql'); it belongs to head 'tempered-diffusion'")
    refused(["--head", "gaussian", "-p", "noise_scale=0.5"], "it belongs to head 'tempered-diffusion'")
    refused(["--head", "tempered-diffusion", "-p", "critic.noise_scale=0.5"], "it belongs to head 'tempered-diffusion'")
    refused(["--head", "tempered-diffusion", "-p", "noise_scale=-2"], "noise_scale=-2.0 is below its minimum 0")
    refused(["--head", "tempered-diffusion", "-p", "noise_scale=warm"], "noise_scale='warm' is not a valid float")
    recipe.write_text("base: diffusion-ql\ndefault:\n  head: tempered-diffusion\n  noise_scale: -1\n")
    refused(["--agent", str(recipe)], f"{recipe} [default]: noise_scale=-1.0 is below its minimum 0")


# --- the same parts through the entry points of an installed package --------------------------------------

ENTRY_POINT_SCRIPT = """
import json, sys
assert "dql_plugin_example" not in sys.modules
from dqltoolkit.cli import main
main(sys.argv[1:], standalone_mode=False)
from dqltoolkit.registry import CRITICS, HEADS, OBJECTIVES
found = {role: reg.get(name).__module__ for role, reg, name in
         (("head", HEADS, "tempered-diffusion"), ("critic", CRITICS, "expectile"), ("objective", OBJECTIVES, "ql-bc-boost"))}
found["package"] = sys.modules["dql_plugin_example"].__file__
print("FOUND " + json.dumps(found))
"""


def test_parts_found_through_the_entry_points_of_an_installed_package(tmp_path):
    source, site = tmp_path / "src", tmp_path / "site"
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index", "--quiet",
                          "--target", str(site), str(source)], capture_output=True, text=True, timeout=120)
    assert pip.returncode == 0, pip.stdout + pip.stderr
    (tmp_path / "run_cli.py").write_text(ENTRY_POINT_SCRIPT)
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)]), "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    args = ["train", "--env", BANDIT, "--steps", "4", "--out", str(out), "--no-progress", *TINY_ARGS, "--head", "tempered-diffusion",
            "-p", "noise_scale=0.5", "-p", "critic=expectile", "-p", "expectile=0.8", "-p", "objective=ql-bc-boost", "-p", "bc_boost=0.5"]
    proc = subprocess.run([sys.executable, str(tmp_path / "run_cli.py"), *args], capture_output=True, text=True, cwd=tmp_path, env=env,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    found = json.loads(proc.stdout.split("FOUND ", 1)[1])
    assert found == {"head": "dql_plugin_example.tempered_head", "critic": "dql_plugin_example.expectile_critic",
                     "objective": "dql_plugin_example.boosted_ql", "package": str(site / "dql_plugin_example" / "__init__.py")}
    cfg = yaml.safe_load((out / "config.yaml").read_text())["config"]
    assert (cfg["head"], cfg["critic"], cfg["objective"]) == ("tempered-diffusion", "expectile", "ql-bc-boost")
    assert (cfg["noise_scale"], cfg["expectile"], cfg["bc_boost"]) == (0.5, 0.8, 0.5)
    rows = metrics(out)
    assert {"train/v_loss", "train/q_loss", "train/bc_boost_loss"} <= set(rows[-1])
    assert json.loads((out / "results.json").read_text())["backend"] == expected_backend([])
