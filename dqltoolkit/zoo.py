"""The model zoo: pretrained checkpoints named in a catalogue, downloaded once, verified, cached.

Why digests: a checkpoint is used only after its SHA-256 and size match what the catalogue recorded
when it was published, so a truncated download, a file changed on the server or a wrong URL fails
loudly instead of quietly loading another model. Loading itself never unpickles (``checkpoint.py``),
so even a checkpoint from an index a user points us at cannot run code.

The shipped catalogue is ``zoo/index.yaml`` (inside the wheel under ``dqltoolkit/_catalogue/zoo``).
``DQLTOOLKIT_ZOO_INDEX`` (or ``dqltoolkit zoo --index``) names another one: a path, or an http(s) or
file URL, e.g. a lab's own server. Each entry holds either ``file`` (a checkpoint next to the index)
or ``url`` (a relative URL resolves against the index's own location). Anywhere a checkpoint path is
accepted, ``zoo:<id>`` names an entry instead.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Union

import yaml

ZOO_PREFIX = "zoo:"
INDEX_ENV = "DQLTOOLKIT_ZOO_INDEX"
TIMEOUT_S = 30.0
_CHUNK = 1 << 16
_FIELDS: Dict[str, type] = {"id": str, "agent": str, "task": str, "sha256": str, "size": int, "file": str, "url": str,
                            "description": str, "metrics": dict, "trained": dict}
_REQUIRED = ("id", "agent", "task", "sha256", "size")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class ZooError(ValueError):
    """A zoo entry that cannot be listed, fetched or verified; the message names the index or URL and the problem."""


@dataclass(frozen=True)
class ZooEntry:
    """One pretrained checkpoint: what it is (agent, task, metrics, how it was trained) and where it lives."""

    id: str
    agent: str
    task: str
    sha256: str
    size: int
    location: str  # an absolute path (a shipped file) or a URL
    description: str = ""
    metrics: Mapping[str, Any] = field(default_factory=dict)
    trained: Mapping[str, Any] = field(default_factory=dict)

    @property
    def shipped(self) -> bool:
        """True for a file next to the index (nothing to download)."""
        return "://" not in self.location

    def to_dict(self) -> Dict[str, Any]:
        return {"id": self.id, "agent": self.agent, "task": self.task, "size": self.size, "sha256": self.sha256,
                "location": self.location, "description": self.description, "metrics": dict(self.metrics), "trained": dict(self.trained)}


def default_index() -> str:
    """Where the catalogue is read from: ``$DQLTOOLKIT_ZOO_INDEX``, else the shipped ``zoo/index.yaml``."""
    from .config import catalogue_dir

    return os.environ.get(INDEX_ENV) or str(catalogue_dir("zoo") / "index.yaml")


def _is_url(location: str) -> bool:
    return urllib.parse.urlparse(location).scheme in ("http", "https", "file")


def _open_url(url: str):
    from . import __version__

    request = urllib.request.Request(url, headers={"User-Agent": f"dqltoolkit/{__version__}"})
    return urllib.request.urlopen(request, timeout=TIMEOUT_S)


def _unreachable(url: str, exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"{url} answered HTTP {exc.code} ({exc.reason})"
    reason = getattr(exc, "reason", None) or exc
    return f"could not reach {url}: {reason}"


def _read_index(location: str) -> str:
    if _is_url(location):
        try:
            with _open_url(location) as response:
                return response.read().decode("utf-8")
        except (urllib.error.URLError, OSError, UnicodeDecodeError) as exc:
            raise ZooError(f"zoo index {location}: {_unreachable(location, exc)}") from None
    path = Path(location)
    if not path.is_file():
        raise ZooError(f"zoo index {location} does not exist (set {INDEX_ENV} to a path or URL of an index.yaml)")
    return path.read_text()


def _entry(raw: Any, position: int, index: str) -> ZooEntry:
    where = f"zoo index {index}, entry {position}"
    if not isinstance(raw, dict):
        raise ZooError(f"{where}: expected a mapping of fields, got {type(raw).__name__}")
    if isinstance(raw.get("id"), str):
        where += f" ({raw['id']!r})"
    unknown = sorted(set(raw) - set(_FIELDS))
    if unknown:
        raise ZooError(f"{where}: unknown field(s) {unknown}; known fields: {sorted(_FIELDS)}")
    for name in _REQUIRED:
        if name not in raw:
            raise ZooError(f"{where}: missing the field {name!r}")
    for name, value in raw.items():
        kind = _FIELDS[name]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ZooError(f"{where}: field {name!r} must be {kind.__name__}, got {value!r}")
    if not _SHA256.match(raw["sha256"]):
        raise ZooError(f"{where}: field 'sha256' must be 64 lower-case hex digits, got {raw['sha256']!r}")
    if raw["size"] <= 0:
        raise ZooError(f"{where}: field 'size' must be a positive number of bytes, got {raw['size']}")
    if ("file" in raw) == ("url" in raw):
        raise ZooError(f"{where}: give exactly one of 'file' (shipped next to the index) or 'url'")
    if "url" in raw:
        location = urllib.parse.urljoin(index if _is_url(index) else Path(index).resolve().as_uri(), raw["url"])
    elif _is_url(index):  # a 'file' next to a remote index is fetched from beside it
        location = urllib.parse.urljoin(index, raw["file"])
    else:
        location = str((Path(index).resolve().parent / raw["file"]).resolve())
    return ZooEntry(id=raw["id"], agent=raw["agent"], task=raw["task"], sha256=raw["sha256"], size=raw["size"], location=location,
                    description=raw.get("description", ""), metrics=raw.get("metrics", {}), trained=raw.get("trained", {}))


def load_index(index: Optional[str] = None) -> Dict[str, ZooEntry]:
    """The catalogue's entries by id, every entry validated (a broken index fails as a whole, naming the entry)."""
    index = index or default_index()
    try:
        doc = yaml.safe_load(_read_index(index)) or {}
    except yaml.YAMLError as exc:
        raise ZooError(f"zoo index {index}: not valid YAML: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("entries", []), list):
        raise ZooError(f"zoo index {index}: expected a mapping with an 'entries' list")
    entries: Dict[str, ZooEntry] = {}
    for i, raw in enumerate(doc.get("entries") or []):
        entry = _entry(raw, i, index)
        if entry.id in entries:
            raise ZooError(f"zoo index {index}: the id {entry.id!r} appears twice")
        entries[entry.id] = entry
    return entries


def get_entry(entry_id: str, index: Optional[str] = None) -> ZooEntry:
    from .registry import did_you_mean

    entries = load_index(index)
    if entry_id not in entries:
        known = ", ".join(sorted(entries)) or "(none)"
        raise ZooError(f"unknown zoo entry {entry_id!r}.{did_you_mean(entry_id, list(entries))} Entries in {index or default_index()}: {known}")
    return entries[entry_id]


def cache_root() -> Path:
    root = Path(os.environ.get("DQLTOOLKIT_CACHE", Path.home() / ".cache" / "dqltoolkit"))
    return root / "zoo"


def cached_path(entry: ZooEntry) -> Path:
    """Where a downloaded entry lives; the digest is in the name, so a republished entry never reuses a stale file."""
    return cache_root() / f"{entry.id}-{entry.sha256[:12]}.zip"


def sha256_of(path: Union[str, Path]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _verify(entry: ZooEntry, size: int, digest: str, source: str, outcome: str = "nothing was kept") -> None:
    if size != entry.size:
        raise ZooError(f"zoo entry {entry.id!r}: {source} has {size} bytes, the index says {entry.size} (truncated or changed); {outcome}")
    if digest != entry.sha256:
        raise ZooError(f"zoo entry {entry.id!r}: {source} has SHA-256 {digest}, the index says {entry.sha256}; {outcome}")


def _download(entry: ZooEntry, dest: Path, progress: bool) -> None:
    from tqdm import tqdm

    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(f".{dest.name}.{os.getpid()}.part")
    digest, size = hashlib.sha256(), 0
    try:
        try:
            bar = tqdm(total=entry.size, unit="B", unit_scale=True, desc=f"zoo {entry.id}", file=sys.stderr, leave=False,
                       disable=None if progress else True)  # (None: a bar on terminals only)
            with _open_url(entry.location) as response, open(part, "wb") as out, bar:
                for chunk in iter(lambda: response.read(_CHUNK), b""):
                    size += len(chunk)
                    if size > entry.size:
                        break  # more than the index promises: stop reading, _verify reports it
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
        except (urllib.error.URLError, OSError) as exc:
            raise ZooError(f"zoo entry {entry.id!r}: {_unreachable(entry.location, exc)}. Without a network, fetch the file "
                           f"elsewhere and pass its path instead of zoo:{entry.id}, or point {INDEX_ENV} at a reachable index") from None
        _verify(entry, size, digest.hexdigest(), entry.location)
        os.replace(part, dest)
    finally:
        if part.exists():
            part.unlink()


def fetch(entry: Union[str, ZooEntry], index: Optional[str] = None, force: bool = False, progress: bool = True) -> Path:
    """The local path of a zoo checkpoint, verified against the index: a shipped file in place, a
    downloaded one from the cache (downloaded first if missing, or again with ``force``)."""
    entry = get_entry(entry, index) if isinstance(entry, str) else entry
    if entry.shipped:
        path = Path(entry.location)
        if not path.is_file():
            raise ZooError(f"zoo entry {entry.id!r}: the shipped file {path} is missing (a broken installation?)")
        _verify(entry, path.stat().st_size, sha256_of(path), str(path), "the installation or the index is out of date")
        return path
    dest = cached_path(entry)
    if dest.is_file() and not force:
        try:
            _verify(entry, dest.stat().st_size, sha256_of(dest), str(dest))
            return dest
        except ZooError:
            dest.unlink()  # damaged in the cache: download it again
    _download(entry, dest, progress)
    return dest


def resolve_checkpoint(spec: Union[str, Path], index: Optional[str] = None) -> Path:
    """``zoo:<id>`` -> the entry's verified local file; anything else is a path and is returned as one."""
    text = str(spec)
    if text.startswith("hf:"):  # a Hugging Face Hub repo, verified against its model card (dqltoolkit/hub.py)
        from .hub import resolve_hf
        return resolve_hf(text)
    if text.startswith(ZOO_PREFIX):
        return fetch(text[len(ZOO_PREFIX):], index)
    return Path(spec)


def make_entry(checkpoint: Union[str, Path], entry_id: str, url: Optional[str] = None, file: Optional[str] = None,
               agent: Optional[str] = None, results: Optional[Mapping[str, Any]] = None, description: str = "",
               trained: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """An index entry for a checkpoint (what ``dqltoolkit zoo entry`` prints): digest and size of the file,
    its task, steps, seeds and versions from the file itself, the recipe name from ``agent`` or the run's
    ``config.yaml`` beside it, metrics from the run's ``results.json`` when given."""
    from .checkpoint import read_checkpoint

    if (url is None) == (file is None):
        raise ZooError("zoo entry: give exactly one of url (where it will be downloaded from) or file (shipped next to the index)")
    path = Path(checkpoint)
    doc, _ = read_checkpoint(path)
    if not doc.get("task"):
        raise ZooError(f"{path} does not name its task; train it with `dqltoolkit train` (or set agent.task before saving)")
    run_config = path.parent / "config.yaml"
    if agent is None and run_config.is_file():
        agent = (yaml.safe_load(run_config.read_text()) or {}).get("agent")
    if not agent:
        raise ZooError(f"{path}: no recipe name given and no run config.yaml beside it naming one; pass agent (--agent)")
    entry: Dict[str, Any] = {"id": entry_id, "agent": str(agent), "task": doc["task"], "sha256": sha256_of(path), "size": path.stat().st_size}
    entry["url" if url is not None else "file"] = url if url is not None else file
    if description:
        entry["description"] = description
    if results:
        entry["metrics"] = _metrics_from_results(results)
    entry["trained"] = {"steps": int(doc.get("num_timesteps", 0)), "seeds": list(doc.get("seeds", [])), **doc.get("versions", {}), **(trained or {})}
    if results and "train_seconds" in results:
        entry["trained"]["train_seconds"] = round(float(results["train_seconds"]), 1)
    return entry


def _metrics_from_results(results: Mapping[str, Any]) -> Dict[str, Any]:
    """Mean return, its std, episodes, normalised score and mode shares from a one-seed run's ``results.json``
    (its final evaluation) or from the JSON that ``dqltoolkit evaluate --json`` prints."""
    evaluation = [results] if "evaluation" not in results and "mean_return" in results else results.get("evaluation") or []
    if len(evaluation) != 1:
        raise ZooError(f"zoo entry: results hold {len(evaluation)} evaluations; an entry describes one checkpoint (one seed)")
    e = evaluation[0]
    keys = ("mean_return", "std_return", "episodes", "normalized_score", "best_mode_share")
    out: Dict[str, Any] = {k: (round(float(e[k]), 4) if k != "episodes" else int(e[k])) for k in keys if k in e}
    if "mode_shares" in e:
        out["off_data_share"] = round(float(e["mode_shares"].get("off_data", 0.0)), 4)
    return out
