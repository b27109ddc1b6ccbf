"""Typed registries of named parts.

Everything a user names on the command line (a head, a critic, an objective, an agent recipe, a task)
resolves through one of these, so adding a part never means editing the core. Third-party packages
add parts through entry points in the groups ``dqltoolkit.heads``, ``dqltoolkit.critics`` and
``dqltoolkit.objectives`` (and diffusion samplers in ``dqltoolkit.samplers``, whose registry lives in
dqltoolkit/heads/samplers.py); they are discovered lazily, the first time a name is looked up or listed.
"""

from __future__ import annotations

import difflib
import importlib
import pkgutil
import warnings
from importlib import metadata
from typing import Callable, Dict, Generic, Iterable, Iterator, List, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError):
    """A name that no registry entry matches; the message suggests the closest ones."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return str(self.args[0]) if self.args else ""


def import_part_modules(package: str, path: Iterable[str]) -> None:
    """Import every module of a built-in parts package, so a new built-in part registers by existing as a file."""
    for info in pkgutil.iter_modules(list(path)):
        if not info.name.startswith("_"):
            importlib.import_module(f"{package}.{info.name}")


def did_you_mean(name: str, choices: List[str]) -> str:
    close = difflib.get_close_matches(name, choices, n=3, cutoff=0.5)
    return f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""


class Registry(Generic[T]):
    """A name -> object map with entry-point discovery and helpful errors."""

    def __init__(self, kind: str, entry_point_group: str | None = None) -> None:
        self.kind = kind
        self.group = entry_point_group
        self._entries: Dict[str, T] = {}
        self._discovered = entry_point_group is None
        #: changes whenever an entry does: caches of what a registered object made key on it
        self.generation = 0

    def register(self, name: str, obj: T | None = None, *, overwrite: bool = False):
        """Register ``obj`` under ``name``; usable as a decorator when ``obj`` is omitted."""

        def add(o: T) -> T:
            if name in self._entries and not overwrite and self._entries[name] is not o:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = o
            self.generation += 1
            return o

        return add if obj is None else add(obj)

    def unregister(self, name: str) -> None:
        """Remove ``name`` (for tests and notebooks that register a part for a while); unknown names are an error."""
        self._discover()
        if name not in self._entries:
            raise UnknownNameError(f"unknown {self.kind} {name!r}: nothing to unregister")
        del self._entries[name]
        self.generation += 1

    def _discover(self) -> None:
        if self._discovered:
            return
        self._discovered = True
        for ep in metadata.entry_points(group=self.group):
            if ep.name not in self._entries:
                try:
                    self._entries[ep.name] = ep.load()
                    self.generation += 1
                except Exception as exc:  # a broken plugin must not break the toolkit
                    warnings.warn(f"could not load {self.kind} plugin {ep.name!r} ({ep.value}): {exc}", stacklevel=3)

    def get(self, name: str) -> T:
        self._discover()
        try:
            return self._entries[name]
        except KeyError:
            known = sorted(self._entries)
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}.{did_you_mean(name, known)} Known {self.kind}s: {', '.join(known)}"
            ) from None

    def names(self) -> List[str]:
        self._discover()
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        self._discover()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


HEADS: Registry[Callable] = Registry("head", "dqltoolkit.heads")
CRITICS: Registry[Callable] = Registry("critic", "dqltoolkit.critics")
OBJECTIVES: Registry[Callable] = Registry("objective", "dqltoolkit.objectives")
