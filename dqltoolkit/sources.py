"""Where a checkpoint comes from: a path, ``zoo:<id>`` or ``hf:ORG/NAME[@revision]``, each verified.

Why a module of its own: the zoo and the Hub are two catalogues of checkpoints, and the Hub's can also
stand behind zoo entries; a resolver above both keeps either from importing the other's caller.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

from .zoo import resolve_checkpoint as _resolve_zoo


def resolve_checkpoint(spec: Union[str, Path], index: Optional[str] = None) -> Path:
    """The local, verified file behind ``spec``: ``zoo:<id>`` (SHA-256 against the index), ``hf:ORG/NAME``
    (SHA-256 against the model card, through the Hugging Face cache), or a path as it is."""
    text = str(spec)
    if text.startswith("hf:"):
        from .hub import resolve_hf

        return resolve_hf(text)
    return _resolve_zoo(spec, index)
