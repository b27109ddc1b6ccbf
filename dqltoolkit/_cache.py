"""The toolkit's private cache folder (``$DQLTOOLKIT_CACHE``, default ``~/.cache/dqltoolkit``).

Why private: it holds what the toolkit later runs or loads (compiled native kernels, the dataset builder's
stages), so it must belong to the user and be writable by nobody else. New folders are created 0700, ours that
others can read are tightened to 0700, and one owned by another user or group/world-writable is refused (:class:`CacheError`).
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path
from typing import BinaryIO, Optional


class CacheError(ValueError):
    """A cache folder that is unsafe to load from (another owner, group/world-writable) or cannot be made."""


def cache_root() -> Path:
    """``$DQLTOOLKIT_CACHE``, else ``~/.cache/dqltoolkit`` (not checked: see :func:`private_dir`)."""
    return Path(os.environ.get("DQLTOOLKIT_CACHE") or Path.home() / ".cache" / "dqltoolkit")


def private_dir(*parts: str) -> Path:
    """The cache folder ``cache_root()/parts...``, created 0700 where missing, each level checked."""
    path = cache_root()
    _check(path)
    for part in parts:
        path = path / part
        _check(path)
    return path


def _check(path: Path) -> None:
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = os.stat(path)
    except OSError as exc:
        raise CacheError(f"cannot create the cache folder {path}: {exc.strerror or exc} (set DQLTOOLKIT_CACHE to a folder of your own)") from None
    if not stat.S_ISDIR(st.st_mode):
        raise CacheError(f"the cache folder {path} is not a folder (set DQLTOOLKIT_CACHE to a folder of your own)")
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        raise CacheError(f"the cache folder {path} belongs to uid {st.st_uid}, not to you (uid {os.getuid()}): the toolkit loads "
                         "compiled code and build stages from it, so it refuses a folder that someone else controls; "
                         "set DQLTOOLKIT_CACHE to a folder of your own")
    if st.st_mode & 0o022:
        raise CacheError(f"the cache folder {path} is writable by {'group and others' if st.st_mode & 0o022 == 0o022 else 'group' if st.st_mode & 0o020 else 'others'} "
                         f"(mode {stat.S_IMODE(st.st_mode):03o}): the toolkit loads compiled code and build stages from it, "
                         f"so it must be writable by you alone: `chmod 700 {path}`, or set DQLTOOLKIT_CACHE to a folder of your own")
    if st.st_mode & 0o077:
        os.chmod(path, 0o700)  # ours, readable by others (made by an older version): private from now on


def sha256_of(f: BinaryIO) -> str:
    """SHA-256 of an open binary file, read from its start."""
    f.seek(0)
    h = hashlib.sha256()
    for block in iter(lambda: f.read(1 << 20), b""):
        h.update(block)
    return h.hexdigest()


def sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256.json")


def record_digest(path: Path) -> str:
    """Write ``<path>.sha256.json`` with the file's SHA-256 and size (atomically); returns the digest."""
    with open(path, "rb") as f:
        digest = sha256_of(f)
    tmp = sidecar(path).with_name(sidecar(path).name + f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"file": path.name, "sha256": digest, "size": path.stat().st_size}))
    os.replace(tmp, sidecar(path))
    return digest


def open_verified(path: Path) -> Optional[BinaryIO]:
    """``path`` opened for reading if its content matches the digest recorded beside it, else None.

    Loading from the returned file (``/proc/self/fd/N``) loads exactly the bytes that were checked, even
    if the name is replaced meanwhile.
    """
    try:
        doc = json.loads(sidecar(path).read_text())
        f = open(path, "rb")
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or sha256_of(f) != doc.get("sha256"):
        f.close()
        return None
    f.seek(0)
    return f
