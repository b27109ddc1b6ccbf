"""One Diffusion-QL step enters the package files docs/architecture.md names for it, and no others.

The step is traced with ``sys.setprofile`` (every Python call, C functions aside): what a reader must
open to follow a step is what this test sees. Both paths are traced where they can run here: the
default CPU path (the fused-cpu backend) and the eager one.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import dqltoolkit
from dqltoolkit._native import fused_ops
from dqltoolkit.backends import select_backend
from dqltoolkit.config import load_recipe
from dqltoolkit.learner import Learner

PACKAGE = Path(dqltoolkit.__file__).parent
ARCHITECTURE = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"


def _documented() -> tuple[list[str], list[str]]:
    """The files of the two tables under "One Diffusion-QL step, file by file", in order."""
    text = ARCHITECTURE.read_text()
    section = text.split("## One Diffusion-QL step, file by file", 1)[1].split("\n## ", 1)[0]
    tables = re.split(r"\n(?=On the eager path)", section)
    assert len(tables) == 2, "docs/architecture.md: the step section lost its two tables"
    return [re.findall(r"^\| \d+ \| `([^`]+)` \|", t, flags=re.M) for t in tables]  # type: ignore[return-value]


def _traced_files(monkeypatch, fused: bool) -> tuple[str, list[str]]:
    monkeypatch.setenv("DQLTOOLKIT_FUSED", "1" if fused else "0")
    cfg, _ = load_recipe("diffusion-ql")
    learner = Learner(cfg, 11, 3, [0], torch.device("cpu"), backend=select_backend)
    rng = np.random.default_rng(0)
    n = 512
    learner.set_dataset({"observations": rng.normal(size=(n, 11)).astype(np.float32),
                         "actions": rng.uniform(-1, 1, (n, 3)).astype(np.float32),
                         "rewards": rng.normal(size=n).astype(np.float32),
                         "next_observations": rng.normal(size=(n, 11)).astype(np.float32),
                         "terminals": np.zeros(n, np.float32), "timeouts": np.zeros(n, np.float32)})
    for _ in range(2):  # first-call work (plans, plugin discovery) is not the step
        learner.train_step()
    entered: dict[str, None] = {}
    root = str(PACKAGE) + os.sep

    def profile(frame, event, arg):
        if event == "call" and frame.f_code.co_filename.startswith(root):
            entered.setdefault(os.path.relpath(frame.f_code.co_filename, PACKAGE).replace(os.sep, "/"), None)

    assert learner.num_timesteps % cfg.policy_delay == 0  # the traced step updates the actor too
    sys.setprofile(profile)
    try:
        learner.train_step()
    finally:
        sys.setprofile(None)
    return learner.backend.describe(), list(entered)


@pytest.mark.skipif(fused_ops() is None, reason="the fused CPU operators could not be built here (no C++ compiler)")
def test_the_default_cpu_step_enters_the_documented_files(monkeypatch):
    backend, files = _traced_files(monkeypatch, fused=True)
    documented, _ = _documented()
    assert backend == "fused-cpu (chain, td-target, critic, actor)"
    assert sorted(files) == sorted(documented), f"traced {files}; docs/architecture.md says {documented}"
    assert len(files) <= 6


def test_the_eager_step_enters_the_documented_files(monkeypatch):
    backend, files = _traced_files(monkeypatch, fused=False)
    _, documented = _documented()
    assert backend == "eager"
    assert sorted(files) == sorted(documented), f"traced {files}; docs/architecture.md says {documented}"
