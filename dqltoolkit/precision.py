"""Reduced-precision matrix products as a named option (``AgentConfig.matmul_precision``).

The values are torch's own (:func:`torch.set_float32_matmul_precision`): ``"highest"`` (the default)
keeps float32 products; ``"high"`` and ``"medium"`` allow TF32 tensor cores on CUDA GPUs (the inputs'
mantissas cut to 10 bits); ``"medium"`` on a CPU with bfloat16 units (AMX, AVX512-BF16) runs the wide
products (every side >= 64, >= 6M multiply-adds) as bfloat16 products with float32 accumulation (the
inputs' mantissas cut to 7 bits), while the others stay in float32, where bf16 would be slower (see
``csrc/fused.cpp``). That holds for the fused operators and for the layers of the eager path (heads and
objectives without a fused operator), which route their products through the same rule
(:func:`layer_ops`, ``nn.layer_bmm``).

Why a scope rather than setting torch's switch once: the switch is process-global, and an agent that
flipped it for good would change the numerics of everything else in the user's process (their own
models, other agents). The agent enters :func:`matmul_precision` around its own training steps and
acting only, and leaves the setting as it found it.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from functools import lru_cache
from typing import Any, ContextManager, Iterator, Optional

import torch

PRECISIONS = ("highest", "high", "medium")

_layer_ops = None  # the fused library while a CPU "medium" block is active: eager layers route their products to it


def check_precision(value: str) -> str:
    if value not in PRECISIONS:
        raise ValueError(f"matmul_precision={value!r}: expected one of {', '.join(PRECISIONS)} (torch.set_float32_matmul_precision's values)")
    return value


@lru_cache(maxsize=1)
def cpu_has_bf16_matmuls() -> bool:
    """Whether oneDNN runs bfloat16 products natively here (else ``"medium"`` on a CPU changes nothing)."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


_FLOAT32 = nullcontext()  # reusable: the default precision enters no generator-based scope on every step


def matmul_precision(precision: str, device: torch.device) -> ContextManager[None]:
    """Products inside the block run at ``precision`` on ``device``; the previous settings come back after."""
    return _FLOAT32 if precision == "highest" else _reduced_precision(precision, device)


@contextmanager
def _reduced_precision(precision: str, device: torch.device) -> Iterator[None]:
    if device.type == "cuda":
        with _cuda_tf32():
            yield
        return
    from ._native import fused_ops

    ops = fused_ops() if precision == "medium" and device.type == "cpu" and cpu_has_bf16_matmuls() else None
    if ops is None:  # "high" on a CPU (no TF32 units), no bf16 units, or no fused library: float32 as before
        yield
        return
    global _layer_ops
    before, before_layers = ops.set_wide_bf16(True), _layer_ops
    _layer_ops = ops
    try:
        yield
    finally:
        ops.set_wide_bf16(before)
        _layer_ops = before_layers


def layer_ops() -> Optional[Any]:
    """The operators that eager layers should multiply with (``layer_mm``/``layer_addmm``, which apply the
    wide/narrow rule to forward and backward products), or None: use torch's own products."""
    return _layer_ops


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
