"""Reduced-precision matrix products as a named option (``AgentConfig.matmul_precision``).

The values are torch's own (:func:`torch.set_float32_matmul_precision`): ``"highest"`` (the default)
keeps float32 products; ``"high"`` and ``"medium"`` allow TF32 tensor cores on CUDA GPUs (the inputs'
mantissas cut to 10 bits); ``"medium"`` on a CPU where bf16 products really run (a probe decides, :func:`bf16_probe`: AMX CPUs
yes; AVX512-BF16 without AMX, e.g. AMD EPYC, no: oneDNN keeps float32 there) runs the wide
products (every side >= 64, >= 6M multiply-adds) as bfloat16 products with float32 accumulation (the
inputs' mantissas cut to 7 bits), while the others stay in float32, where bf16 would be slower (see
``csrc/fused.cpp``). That holds for the fused operators and for the layers of the eager path (heads and
objectives without a fused operator), whose plain ``torch.bmm``/``torch.baddbmm`` calls the scope hands to the same
rule (:class:`LayerProducts`, a torch function mode): the layers never learn that they run in bf16.

Why a scope rather than setting torch's switch once: the switch is process-global, and an agent that
flipped it for good would change the numerics of everything else in the user's process (their own
models, other agents). The agent enters :func:`matmul_precision` around its own training steps and
acting only, and leaves the setting as it found it.
"""

from __future__ import annotations

import platform
import time
import warnings
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, ContextManager, Iterator, Optional

import torch
from torch.overrides import TorchFunctionMode

from ._native import fused_ops

PRECISIONS = ("highest", "high", "medium")


def check_precision(value: str) -> str:
    """``value`` if it is one of :data:`PRECISIONS`, else a ValueError listing them."""
    if value not in PRECISIONS:
        raise ValueError(f"matmul_precision={value!r}: expected one of {', '.join(PRECISIONS)} (torch.set_float32_matmul_precision's values)")
    return value


class PrecisionWarning(UserWarning):
    """``matmul_precision`` asks for reduced-precision products this machine cannot run (float32 is kept)."""


@dataclass(frozen=True)
class Bf16Probe:
    """What one probe product in oneDNN's bf16 mode showed on this CPU (see :func:`bf16_probe`)."""

    available: bool  # bf16 products run here, and are not slower than float32
    rounding: bool  # the probe product showed bf16 input rounding (else oneDNN ran it in float32)
    reason: str  # one line for users: what was measured
    cpu: str


def cpu_name() -> str:
    """The CPU's model name, for messages ("AMD EPYC", "Intel(R) Xeon(R) Platinum 8480+")."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


@contextmanager
def _mkldnn_matmul(value: str) -> Iterator[None]:
    m = torch.backends.mkldnn.matmul
    before = m.fp32_precision
    m.fp32_precision = value
    try:
        yield
    finally:
        m.fp32_precision = before


def _seconds(fn, calls: int = 8, repeats: int = 5) -> float:
    fn()  # warm-up: oneDNN builds its kernel on the first call
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - t0) / calls)
    return best


@lru_cache(maxsize=1)
def bf16_probe() -> Bf16Probe:
    """Run one wide product (256 x 256 x 256) in oneDNN's bf16 mode, once per process, and look at it.

    Why a probe and not a flag: oneDNN treats the bf16 mode as a permission, not an order. On CPUs with
    AVX512-BF16 but no AMX (AMD EPYC Zen 4, for one) torch reports bf16 support, yet oneDNN runs float32
    products in float32; only the result tells. The product counts as bf16 when it equals float32
    arithmetic on bf16-rounded inputs (within a tenth of the rounding's effect); then it must also not be
    slower than the float32 product (min of 5 timings of 8 calls, 10% slack for noise), else "medium"
    would only lose accuracy.
    """
    cpu = cpu_name()
    mkldnn = torch.backends.mkldnn
    if not (mkldnn.is_available() and hasattr(getattr(mkldnn, "matmul", None), "fp32_precision")):
        return Bf16Probe(False, False, f"torch {torch.__version__} has no oneDNN bf16 matmul mode", cpu)
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(1, 256, 256, generator=g), torch.randn(1, 256, 256, generator=g)
    try:
        with _mkldnn_matmul("ieee"):
            full = torch.bmm(a, b)
            rounded = torch.bmm(a.bfloat16().float(), b.bfloat16().float())
        with _mkldnn_matmul("bf16"):
            reduced = torch.bmm(a, b)
    except (RuntimeError, ValueError) as exc:
        return Bf16Probe(False, False, f"a product in oneDNN's bf16 mode failed ({exc})", cpu)
    effect = (rounded - full).abs().max().item()  # what bf16 input rounding does to this product
    off_full, off_rounded = (reduced - full).abs().max().item(), (reduced - rounded).abs().max().item()
    if not off_rounded < 0.1 * effect:
        what = "came out as float32" if off_full < 0.1 * effect else "matched neither float32 nor bf16 arithmetic"
        return Bf16Probe(False, False, f"a 256x256x256 product in oneDNN's bf16 mode {what} (max difference {off_full:.2g} from "
                                       f"float32, {off_rounded:.2g} from bf16-rounded inputs): oneDNN keeps float32 products in "
                                       "float32 on this CPU (it runs them in bf16 on CPUs with AMX)", cpu)
    x, y = torch.randn(2, 512, 512, generator=g), torch.randn(2, 512, 512, generator=g)
    with _mkldnn_matmul("ieee"):
        t32 = _seconds(lambda: torch.bmm(x, y))
    with _mkldnn_matmul("bf16"):
        t16 = _seconds(lambda: torch.bmm(x, y))
    if t16 > 1.1 * t32:
        return Bf16Probe(False, True, f"bf16 products run but are slower than float32 here ({t16 * 1e3:.2f} ms vs {t32 * 1e3:.2f} ms "
                                      "for 2x512x512x512)", cpu)
    return Bf16Probe(True, True, f"bf16 products run {t32 / t16:.1f}x as fast as float32 (2x512x512x512)", cpu)


def cpu_has_bf16_matmuls() -> bool:
    """Whether bf16 products really run here and pay off (the probe's answer; else "medium" keeps float32)."""
    return bf16_probe().available


_warned: set = set()


def _warn_float32_once(why: str) -> None:
    """Say once per process why "medium" keeps float32 on this CPU (a user asked for it explicitly)."""
    if why in _warned:
        return
    _warned.add(why)
    warnings.warn(f"dqltoolkit: matmul_precision='medium' keeps float32 products on this CPU ({cpu_name()}): {why}",
                  PrecisionWarning, stacklevel=5)


_FLOAT32 = nullcontext()  # reusable: the default precision enters nothing of ours on every step


def matmul_precision(precision: str, device: torch.device) -> ContextManager[None]:
    """A reusable scope: products inside it run at ``precision`` on ``device``; the previous settings come
    back after. Made once per agent (the learner keeps it), entered around every step and acting call."""
    return _FLOAT32 if precision == "highest" else _ReducedPrecision(precision, device)


class _ReducedPrecision:
    """The scope of a reduced precision (re-entrant: each entry keeps what it found, and restores it)."""

    def __init__(self, precision: str, device: torch.device) -> None:
        self.precision, self.device = precision, device
        self._exits: list = []

    def __enter__(self) -> None:
        scope = _reduced_precision(self.precision, self.device)
        scope.__enter__()
        self._exits.append(scope)

    def __exit__(self, *exc: Any) -> Optional[bool]:
        return self._exits.pop().__exit__(*exc)


@contextmanager
def _reduced_precision(precision: str, device: torch.device) -> Iterator[None]:
    if device.type == "cuda":
        with _cuda_tf32():
            yield
        return
    ops = None
    if precision == "medium" and device.type == "cpu":
        probe = bf16_probe()
        if not probe.available:
            _warn_float32_once(probe.reason)
        else:
            ops = fused_ops()
            if ops is None:
                _warn_float32_once("bf16 products need the fused CPU operators, which could not be built here")
    if ops is None:  # "high" on a CPU (no TF32 units), bf16 products that do not run, or no fused library: float32
        yield
        return
    before = ops.set_wide_bf16(True)
    try:
        with LayerProducts(ops):
            yield
    finally:
        ops.set_wide_bf16(before)


class LayerProducts(TorchFunctionMode):
    """While active, ``torch.bmm(a, b)`` and ``torch.baddbmm(c, a, b)`` (the eager layers' products, dqltoolkit/nn.py)
    run as ``ops.layer_mm``/``ops.layer_addmm``, which apply the wide/narrow rule to forward and backward products.
    Calls with other arguments (``beta``, ``alpha``, ``out``) and every other function run as torch's own."""

    def __init__(self, ops: Any) -> None:
        super().__init__()
        self.ops = ops

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if not kwargs and func is torch.bmm and len(args) == 2:
            return self.ops.layer_mm(*args)
        if not kwargs and func is torch.baddbmm and len(args) == 3:
            return self.ops.layer_addmm(*args)
        return func(*args, **(kwargs or {}))


@contextmanager
def _cuda_tf32() -> Iterator[None]:
    """TF32 for cuBLAS through torch's process-wide switch, which keeps its two APIs consistent.

    torch (2.9+) has a legacy switch (``set_float32_matmul_precision``) and per-backend ones
    (``torch.backends.cuda.matmul.fp32_precision``) and refuses to answer "is TF32 on?" while they
    disagree; setting only the per-backend one would leave them disagreeing inside the block. On the
    way out both come back: the legacy value where it could be read, then the per-backend values.
    """
    backends = [b for b in (torch.backends.cuda.matmul, torch.backends.mkldnn.matmul) if hasattr(b, "fp32_precision")]
    before = [b.fp32_precision for b in backends]  # (torch < 2.9 has the legacy switch only)
    try:
        legacy = torch.get_float32_matmul_precision()
    except RuntimeError:  # the user's settings already disagree: there is no legacy value to restore
        legacy = None
    torch.set_float32_matmul_precision("high")
    try:
        yield
    finally:
        if legacy is not None:
            torch.set_float32_matmul_precision(legacy)
        for b, value in zip(backends, before):
            b.fp32_precision = value
