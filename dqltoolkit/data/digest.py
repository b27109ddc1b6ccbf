"""A dataset's identity as a SHA-256 of its transitions, not of its file.

Why not the file's bytes: HDF5 files carry creation times and layout choices, so two builds of the very
same transitions differ byte for byte. A results record must let a rebuild be checked against the data a
run trained on, so the digest covers what training reads: the transition table's arrays, in a fixed
order, as little-endian float32, each prefixed by its name and shape.
"""

from __future__ import annotations

import hashlib
from typing import Mapping

import numpy as np

#: the arrays of a transition table, in the order they are hashed (a missing one is hashed as absent)
TABLE_FIELDS = ("observations", "actions", "rewards", "next_observations", "terminals", "timeouts")


def table_sha256(table: Mapping[str, np.ndarray]) -> str:
    """SHA-256 of a transition table (``dataset_sha256`` in docs/results/runs.json)."""
    h = hashlib.sha256()
    for name in TABLE_FIELDS:
        if name not in table:
            h.update(f"{name}:absent;".encode())
            continue
        a = np.ascontiguousarray(np.asarray(table[name], dtype="<f4"))
        h.update(f"{name}:{','.join(map(str, a.shape))};".encode())
        h.update(a.tobytes())
    return h.hexdigest()
