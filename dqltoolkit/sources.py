"""Where a checkpoint comes from: a path, ``zoo:<id>`` or ``hf:ORG/NAME[@revision]``, each verified.

A resolver above the zoo and the Hub (which can stand behind zoo entries), so ``zoo.py`` never imports the Hub client.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

from .hub import HubError, fetch_pinned, resolve_hf
from .zoo import ZOO_PREFIX, ZooEntry, ZooError, fetch, get_entry


def fetch_entry(entry: Union[str, ZooEntry], index: Optional[str] = None, force: bool = False, progress: bool = True) -> Path:
    """The verified local file of a zoo entry: shipped, downloaded to the zoo's cache, or (``hf:``) in the Hub's cache,
    checked against the entry's SHA-256 and size (the index, not the repo's card, pins it). ``force`` downloads again."""
    entry = get_entry(entry, index) if isinstance(entry, str) else entry
    if entry.kind != "hf":
        return fetch(entry, index, force=force, progress=progress)
    try:
        return fetch_pinned(entry.location, entry.sha256, entry.size, filename=entry.filename or None, force=force)
    except HubError as exc:
        raise ZooError(f"zoo entry {entry.id!r} ({entry.location}): {exc}") from None


def resolve_checkpoint(spec: Union[str, Path], index: Optional[str] = None) -> Path:
    """The local, verified file behind ``spec``: ``zoo:<id>`` (SHA-256 against the index, wherever the entry
    lives), ``hf:ORG/NAME`` (SHA-256 against the model card, through the Hugging Face cache), or a path as it is."""
    text = str(spec)
    if text.startswith("hf:"):
        return resolve_hf(text)
    if text.startswith(ZOO_PREFIX):
        return fetch_entry(text[len(ZOO_PREFIX):], index)
    return Path(spec)
