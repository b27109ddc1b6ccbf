"""Reduced-precision products (AgentConfig.matmul_precision): what runs in bf16, what stays float32, and
that the process-global torch settings come back as they were."""

import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch

from dqltoolkit import Agent, precision
from dqltoolkit._native import fused_ops
from dqltoolkit.bench.throughput import HOPPER, hopper_table
from dqltoolkit.precision import Bf16Probe, PrecisionWarning, bf16_probe, cpu_has_bf16_matmuls, cpu_name, matmul_precision

from .conftest import random_table, tiny_config

# These tests hold on every x86-64 CPU: where the probe finds bf16 products (AMX), "medium" must show
# bf16 rounding; where it does not (AVX512-BF16 without AMX, or no bf16 at all), "medium" must leave every
# product bit-identical to float32 and say so once, naming the CPU.
needs_fused = pytest.mark.skipif(fused_ops() is None, reason="needs the fused operators (a C++ compiler and torch headers)")


@pytest.fixture(autouse=True)
def fresh_warning_memory(monkeypatch):
    """The float32 warning is said once per process; each test starts as a fresh process would."""
    monkeypatch.setattr(precision, "_warned", set())


def _medium_warnings(caught):
    return [str(w.message) for w in caught if issubclass(w.category, PrecisionWarning)]


# multi-seed cases run seeds in pairs only with two threads; the float32 warning is asserted where it matters
pytestmark = [pytest.mark.two_threads, pytest.mark.filterwarnings("ignore::dqltoolkit.precision.PrecisionWarning")]


def _settings():
    return torch.get_float32_matmul_precision(), torch.backends.mkldnn.matmul.fp32_precision


def test_unknown_precision_is_refused_with_the_choices(spaces):
    with pytest.raises(ValueError, match=r"matmul_precision='low'.*'highest', 'high', 'medium'"):
        Agent(tiny_config(matmul_precision="low"), *spaces, seeds=[0], device="cpu")


@pytest.mark.parametrize("precision", ["highest", "high", "medium"])
def test_training_and_acting_leave_torch_settings_as_they_were(spaces, precision):
    agent = Agent(tiny_config(matmul_precision=precision), *spaces, seeds=[0, 1], device="cpu")
    agent.set_dataset(random_table())
    before = _settings()
    for _ in range(3):
        agent.train_step()
    agent.predict(np.zeros((4, 3), np.float32))
    assert _settings() == before
    if fused_ops() is not None:
        assert fused_ops().set_wide_bf16(False) is False  # the operators' switch is off again


def test_probe_agrees_with_an_independent_product_in_bf16_mode():
    """The probe's answer is what a differently shaped product in oneDNN's bf16 mode shows here."""
    probe = bf16_probe()
    assert probe.cpu == cpu_name() and probe.reason
    g = torch.Generator().manual_seed(7)
    a, b = torch.randn(3, 320, 384, generator=g), torch.randn(3, 384, 288, generator=g)
    m = torch.backends.mkldnn.matmul
    saved = m.fp32_precision
    try:
        m.fp32_precision = "ieee"
        full, rounded = torch.bmm(a, b), torch.bmm(a.bfloat16().float(), b.bfloat16().float())
        m.fp32_precision = "bf16"
        reduced = torch.bmm(a, b)
    finally:
        m.fp32_precision = saved
    shows_bf16 = bool((reduced - rounded).abs().max() < 0.1 * (rounded - full).abs().max())
    assert probe.rounding == shows_bf16
    assert cpu_has_bf16_matmuls() == probe.available and (not probe.available or probe.rounding)
    if not shows_bf16:  # float32 arithmetic, only the summation order may differ
        assert (reduced - full).abs().max() < 1e-3 and "came out as float32" in probe.reason


def test_where_bf16_products_do_not_run_medium_keeps_float32_and_says_so_once(spaces, monkeypatch):
    """Forced on any CPU: the probe's "no" makes "medium" train bit-identically to "highest", and the
    reason (naming the CPU) is said once for any number of steps and agents."""
    no = Bf16Probe(False, False, "a probe product came out as float32", cpu_name())
    monkeypatch.setattr(precision, "bf16_probe", lambda: no)
    agents = {p: Agent(tiny_config(matmul_precision=p), *spaces, seeds=[0], device="cpu") for p in ("highest", "medium")}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for agent in agents.values():
            agent.set_dataset(random_table())
            for _ in range(3):
                agent.train_step()
        Agent(tiny_config(matmul_precision="medium"), *spaces, seeds=[1], device="cpu").predict(np.zeros((2, 3), np.float32))
    said = _medium_warnings(caught)
    assert said == [f"dqltoolkit: matmul_precision='medium' keeps float32 products on this CPU ({cpu_name()}): "
                    "a probe product came out as float32"]
    for x, y in zip(agents["highest"].head.parameters(), agents["medium"].head.parameters()):
        assert torch.equal(x, y)


@needs_fused
def test_wide_products_are_bf16_products_with_float32_accumulation_where_the_probe_finds_them():
    """One fused layer ``mish(h + b) @ W + c`` at 256 rows under "medium": where bf16 products run, it
    equals float32 arithmetic on bf16-rounded inputs and differs from the float32 product by bf16's input
    rounding; elsewhere it is the float32 product, bit for bit, and a warning names the CPU."""
    g = torch.Generator().manual_seed(0)
    h, b = torch.randn(1, 256, 256, generator=g), torch.randn(1, 1, 256, generator=g)
    w, c = torch.randn(1, 256, 256, generator=g) / 16, torch.randn(1, 1, 256, generator=g)
    ops = fused_ops()
    full = ops.mlp_fwd(h, b, [w], [c], False)[0]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with matmul_precision("medium", torch.device("cpu")):
            reduced = ops.mlp_fwd(h, b, [w], [c], False)[0]
    if not cpu_has_bf16_matmuls():
        assert torch.equal(reduced, full)
        assert len(_medium_warnings(caught)) == 1 and cpu_name() in _medium_warnings(caught)[0]
        return
    assert not _medium_warnings(caught)
    a = torch.nn.functional.mish(h + b)
    rounded = torch.baddbmm(c, a.bfloat16().float(), w.bfloat16().float())
    err_full = (reduced - full).abs().max().item()
    err_rounded = (reduced - rounded).abs().max().item()
    assert err_full > 1e-3  # bf16 input rounding is visible ...
    assert err_rounded < 0.05 * err_full  # ... and is all that differs (summation order aside)
    torch.testing.assert_close(reduced, full, rtol=0.0, atol=0.05)


@needs_fused
def test_narrow_products_stay_float32():
    """The output layer (3 wide) and the 50 candidate rows of one environment are narrow: bit-identical."""
    g = torch.Generator().manual_seed(1)
    h, b = torch.randn(1, 256, 256, generator=g), torch.randn(1, 1, 256, generator=g)
    w, c = torch.randn(1, 256, 3, generator=g), torch.randn(1, 1, 3, generator=g)
    ops = fused_ops()
    full = ops.mlp_fwd(h, b, [w], [c], False)[0]
    with matmul_precision("medium", torch.device("cpu")):
        reduced = ops.mlp_fwd(h, b, [w], [c], False)[0]
    assert torch.equal(reduced, full)


def _hopper_agent(precision):
    s = HOPPER
    obs = gym.spaces.Box(-np.inf, np.inf, (s["obs_dim"],), np.float32)
    act = gym.spaces.Box(-1.0, 1.0, (s["action_dim"],), np.float32)
    agent = Agent(tiny_config(T=s["T"], hidden=s["hidden"], critic_hidden=s["hidden"], time_dim=s["time_dim"], batch_size=s["batch_size"],
                              n_candidates=50, matmul_precision=precision), obs, act, seeds=[0], device="cpu")
    agent.set_dataset(hopper_table(2000, s["obs_dim"], s["action_dim"]))
    return agent


@needs_fused
def test_medium_agent_trains_close_to_float32_and_acts_identically_for_one_env():
    full, reduced = _hopper_agent("highest"), _hopper_agent("medium")
    for _ in range(3):
        a, b = full.train_step(), reduced.train_step()
    for key in ("critic_loss", "bc_loss"):
        torch.testing.assert_close(b[key], a[key], rtol=2e-2, atol=1e-3)
    # bf16 products ran where the probe found them, else the float32 products did, bit for bit
    assert torch.equal(full.head.net.layers[1].weight, reduced.head.net.layers[1].weight) == (not cpu_has_bf16_matmuls())
    # acting for one env is 50 rows: every product narrow, so the same weights give the same actions
    for dst, src in zip(reduced.head.parameters(), full.head.parameters()):
        dst.data.copy_(src.data)
    for dst, src in zip(reduced.critic.parameters(), full.critic.parameters()):
        dst.data.copy_(src.data)
    for dst, src in zip(reduced.act_generators, full.act_generators):
        dst.set_state(src.get_state())
    obs = np.random.default_rng(0).standard_normal(HOPPER["obs_dim"]).astype(np.float32)
    np.testing.assert_array_equal(reduced.predict(obs, deterministic=True)[0], full.predict(obs, deterministic=True)[0])


def _flag_state():
    out = {}
    for name, get in [("legacy", torch.get_float32_matmul_precision), ("cuda", lambda: torch.backends.cuda.matmul.fp32_precision),
                      ("mkldnn", lambda: torch.backends.mkldnn.matmul.fp32_precision), ("cublas_tf32", torch._C._get_cublas_allow_tf32)]:
        try:
            out[name] = get()
        except RuntimeError:  # torch refuses while its legacy and per-backend switches disagree
            out[name] = "refused"
    return out


@pytest.mark.parametrize("user_setting", ["default", "legacy high", "per-backend tf32", "per-backend ieee"])
def test_cuda_scope_turns_tf32_on_consistently_and_restores_the_users_flags(user_setting):
    """The flags are process state that exists without a GPU, so the CUDA branch is checked here too."""
    cuda, mkldnn = torch.backends.cuda.matmul, torch.backends.mkldnn.matmul
    saved = (torch.get_float32_matmul_precision(), cuda.fp32_precision, mkldnn.fp32_precision)
    try:
        if user_setting == "legacy high":
            torch.set_float32_matmul_precision("high")
        elif user_setting.startswith("per-backend"):
            cuda.fp32_precision = user_setting.split()[1]
        before = _flag_state()
        with matmul_precision("high", torch.device("cuda")):
            assert torch._C._get_cublas_allow_tf32() is True  # what cuBLAS reads: TF32 on, and no refusal
        after = _flag_state()
        assert after["cuda"] == before["cuda"] and after["mkldnn"] == before["mkldnn"]
        if before["legacy"] != "refused":
            assert after == before
    finally:
        torch.set_float32_matmul_precision(saved[0])
        cuda.fp32_precision, mkldnn.fp32_precision = saved[1], saved[2]


@needs_fused
def test_layer_products_equal_torch_in_float32_and_follow_the_rule_under_medium():
    """The eager layers' products (their torch.bmm / torch.baddbmm go to them under "medium")."""
    ops = fused_ops()
    g = torch.Generator().manual_seed(3)
    c = torch.randn(1, 1, 256, generator=g, requires_grad=True)
    a = torch.randn(1, 256, 256, generator=g, requires_grad=True)
    wide = torch.randn(1, 256, 256, generator=g, requires_grad=True)
    narrow = torch.randn(1, 256, 3, generator=g, requires_grad=True)

    def run(fn, w):
        out = fn(w)
        grads = torch.autograd.grad(out, [t for t in (c, a, w)], torch.ones_like(out), allow_unused=True)
        return out.detach(), grads

    ref = run(lambda w: torch.baddbmm(c[..., : w.shape[-1]], a, w), wide)
    ours = run(lambda w: ops.layer_addmm(c[..., : w.shape[-1]], a, w), wide)
    for x, y in zip([ref[0], *ref[1]], [ours[0], *ours[1]]):
        assert torch.equal(x, y)  # float32 outside a "medium" block: torch's own arithmetic
    assert torch.equal(ops.layer_mm(a, wide), torch.bmm(a, wide))
    with matmul_precision("medium", torch.device("cpu")):
        bf16 = run(lambda w: ops.layer_addmm(c[..., : w.shape[-1]], a, w), wide)
        narrow_out = run(lambda w: ops.layer_addmm(c[..., : w.shape[-1]], a, w), narrow)
    if not cpu_has_bf16_matmuls():  # no bf16 products here: "medium" is float32, torch's own arithmetic
        for x, y in zip([ref[0], *ref[1]], [bf16[0], *bf16[1]]):
            assert torch.equal(x, y)
        return
    assert (bf16[0] - ref[0]).abs().max() > 1e-3 and (bf16[1][2] - ref[1][2]).abs().max() > 1e-3  # forward and weight gradient
    assert (bf16[0] - ref[0]).abs().mean() < 0.05  # values of std 16: bf16 input rounding, not a different product
    narrow_ref = run(lambda w: torch.baddbmm(c[..., :3], a, w), narrow)
    for x, y in zip([narrow_ref[0], *narrow_ref[1]], [narrow_out[0], *narrow_out[1]]):
        assert torch.equal(x, y)


def test_eager_recipes_train_close_to_float32_under_medium():
    """A Gaussian-head recipe has no fused operator: its layers route their products under "medium"."""
    from dqltoolkit.bench.throughput import _agent
    from dqltoolkit.config import load_recipe

    cfg, _ = load_recipe("bear")  # Gaussian actor, twin critic, behaviour CVAE: all eager
    table = hopper_table(2000, HOPPER["obs_dim"], HOPPER["action_dim"])
    full, reduced = _agent([0], torch.device("cpu"), table, config=cfg), _agent([0], torch.device("cpu"), table, config=cfg,
                                                                              matmul_precision="medium")
    for _ in range(3):
        a, b = full.train_step(), reduced.train_step()
    assert not torch.overrides._is_torch_function_mode_enabled()  # the routing ends with the step
    torch.testing.assert_close(b["critic_loss"], a["critic_loss"], rtol=2e-2, atol=1e-3)
    torch.testing.assert_close(b["bc_loss"], a["bc_loss"], rtol=2e-2, atol=1e-3)
    bf16_ran = cpu_has_bf16_matmuls() and fused_ops() is not None
    assert torch.equal(full.head.net.layers[1].weight, reduced.head.net.layers[1].weight) == (not bf16_ran)


class _CountingOps:
    """Stand-in operators: torch's products plus one, counted, and the wide-bf16 switch's state."""

    def __init__(self):
        self.calls, self.wide = [], False

    def set_wide_bf16(self, on):
        before, self.wide = self.wide, on
        return before

    def layer_mm(self, a, b):
        self.calls.append("mm")
        return torch.bmm(a, b) + 1

    def layer_addmm(self, c, a, b):
        self.calls.append("addmm")
        return torch.baddbmm(c, a, b) + 1


def test_the_medium_scope_hands_the_layers_plain_products_to_the_library(monkeypatch):
    """On any CPU: inside a "medium" block where bf16 products run, the layers' plain torch.bmm/baddbmm calls reach the
    library's layer products (nn.py never asks which), other calls stay torch's, and nothing is routed after the block."""
    from dqltoolkit.heads.diffusion import DiffusionHead
    from dqltoolkit.nn import EnsembleMLP, member_generators

    ops = _CountingOps()
    monkeypatch.setattr(precision, "bf16_probe", lambda: Bf16Probe(True, True, "stand-in", "test CPU"))
    monkeypatch.setattr(precision, "fused_ops", lambda: ops)
    net = EnsembleMLP(2, 5, 3, [8, 8])
    x = torch.randn(2, 4, 5)
    ref = net(x)
    scope = matmul_precision("medium", torch.device("cpu"))
    with scope:
        assert ops.wide
        routed = net(x)
        kept = torch.baddbmm(torch.zeros(2, 4, 3), x, torch.randn(2, 5, 3), beta=0.5)  # a call with options: torch's own
    assert ops.calls == ["mm", "addmm", "addmm"] and not ops.wide and kept.shape == (2, 4, 3)  # one product per layer
    assert not torch.allclose(routed, ref)  # the stand-in's products (plus one) made the output
    net(x)
    assert len(ops.calls) == 3  # after the block: torch's products again
    head = DiffusionHead(3, 2, members=1, hidden=8, time_dim=4, T=3)
    head.reset_parameters(member_generators([0]))
    obs, actions = torch.randn(1, 6, 3), torch.rand(1, 6, 2) * 2 - 1
    with scope:
        loss = head.behaviour_loss(obs, actions, member_generators([1]))
        loss.sum().backward()
    assert {"mm", "addmm"} <= set(ops.calls[3:])  # the denoiser's pieces (time, state, action parts) too
