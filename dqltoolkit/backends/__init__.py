"""Backends: how a learner's steps run, chosen once when an agent is built.

The algorithm is the eager step (dqltoolkit/learner.py). A backend may compute its pieces another way
(the fused CPU operators) or wrap whole steps (CUDA graphs and streams), but only for parts whose exact
class declares that the kernels compute its math (dqltoolkit/capabilities.py): a subclass that overrides
anything runs eagerly with its overrides, unless it declares the capability itself. Which backend runs,
and what it accelerates, is shown by ``agent.backend`` (repr, log line, results.json).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from ..learner import EagerBackend

if TYPE_CHECKING:  # pragma: no cover
    from ..learner import Learner


def select_backend(learner: "Learner") -> EagerBackend:
    """The fastest backend that can run ``learner``'s parts on its device: CUDA (graphs, streams, the
    chain kernel) on a GPU; the fused CPU operators on a CPU where they are built; else eager.
    ``DQLTOOLKIT_FUSED=0`` keeps a CPU eager."""
    if learner.device.type == "cuda":
        from .cuda import CudaBackend

        return CudaBackend(learner)
    if learner.device.type == "cpu" and os.environ.get("DQLTOOLKIT_FUSED", "1") != "0":
        from .._native import fused_ops

        ops = fused_ops()
        if ops is not None:
            from .fused_cpu import FusedCPUBackend

            return FusedCPUBackend(learner, ops)
    return EagerBackend()


__all__ = ["EagerBackend", "select_backend"]
