"""Run a hostile case in a fresh interpreter under an address-space limit, so that an allocation the checks
should have prevented fails (or shows) there instead of exhausting the machine running the suite."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import dqltoolkit

LIMIT_AS = 2 << 30  # importing torch and loading a tiny agent peaks near 0.9 GB of address space; the hostile allocations are 3 GB and more


def run_limited(code: str, timeout: float = 120) -> list:
    """Run ``code`` under RLIMIT_AS = :data:`LIMIT_AS`; it must print one JSON line of results, which is returned."""
    prelude = f"import resource; resource.setrlimit(resource.RLIMIT_AS, ({LIMIT_AS}, {LIMIT_AS}))\n"
    root = str(Path(dqltoolkit.__file__).parents[1])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)}
    res = subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], capture_output=True, text=True, timeout=timeout, env=env, check=False)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout.strip().splitlines()[-1])
