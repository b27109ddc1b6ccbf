"""Capabilities a part declares for itself, never inherits.

Why: the toolkit's fast paths (the fused CPU operators, the GPU chain kernel) compute exactly what the
shipped parts compute. A subclass that overrides any method may compute something else, so a
capability is read from the class's own ``__dict__``: a subclass gets the fast path only if it
declares the capability again (asserting that its math is still the parent's), and otherwise runs
eagerly, with every override in force.
"""

from __future__ import annotations

from typing import Any, FrozenSet

#: the math the toolkit's kernels implement (fused CPU operators, the GPU reverse-chain node)
KERNELS = "kernels"


def declared(part: Any) -> FrozenSet[str]:
    """The capabilities ``part``'s own class declares (``capabilities = frozenset({...})`` in its body)."""
    cls = part if isinstance(part, type) else type(part)
    return frozenset(cls.__dict__.get("capabilities", ()))


def overrides(part: Any, base: type, method: str) -> bool:
    """Whether ``part``'s class replaces ``base.method`` (anywhere between the two in its MRO)."""
    cls = part if isinstance(part, type) else type(part)
    return getattr(cls, method, None) is not getattr(base, method, None)
