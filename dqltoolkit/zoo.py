"""The model zoo: pretrained checkpoints named in a catalogue, downloaded once, verified, cached.

Why digests: a checkpoint is used only after its SHA-256 and size match the catalogue, so a truncated download, a
changed file or a wrong URL fails loudly; loading never unpickles (``checkpoint.py``). The catalogue is
``zoo/index.yaml``, or a path or URL in ``DQLTOOLKIT_ZOO_INDEX`` / ``--index``; an entry lives in a ``file`` beside
the index, at a ``url``, or in a Hub repo (``hf``, fetched by ``dqltoolkit.sources``: the zoo never imports the Hub
client). An index may come from anyone, so what it says is bounded and checked: ids (cache file names), paths,
its size, no YAML aliases (an alias bomb), http(s) URLs only from a remote index, and a deadline per transfer.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Union

import yaml
from tqdm import tqdm

from . import _cache
from ._version import __version__
from .checkpoint import read_checkpoint
from .config import catalogue_dir
from .registry import did_you_mean

ZOO_PREFIX = "zoo:"
INDEX_ENV = "DQLTOOLKIT_ZOO_INDEX"
DEADLINE_ENV = "DQLTOOLKIT_ZOO_DEADLINE"
TIMEOUT_S = 30.0  # per read: a silent server
DEADLINE_S = 3600.0  # per transfer (index or checkpoint): a server that trickles bytes
MAX_INDEX_BYTES = 4 << 20  # an index is a few hundred bytes per entry
STALE_PART_S = 3600.0  # a .part file untouched this long belongs to a killed download
ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_CHUNK = 1 << 16
_FIELDS: Dict[str, type] = {"id": str, "agent": str, "task": str, "sha256": str, "size": int, "file": str, "url": str, "hf": str,
                            "filename": str, "description": str, "metrics": dict, "trained": dict}
_LOCATIONS = ("file", "url", "hf")
HF_PREFIX = "hf:"
# a Hub repo reference as an index writes it (ORG/NAME[@revision]); dqltoolkit.hub.parse_ref checks it fully when it is fetched
_HF_REPO = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}(@[A-Za-z0-9_./-]{1,200})?$")
_REQUIRED = ("id", "agent", "task", "sha256", "size")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class ZooError(ValueError):
    """A zoo entry that cannot be listed, fetched or verified; the message names the index or URL and the problem."""


def check_id(entry_id: str, where: str = "zoo entry id") -> str:
    """``entry_id`` if it is safe as a file name (letters, digits, ``.``, ``_``, ``-``; no separators, no ``..``)."""
    if not isinstance(entry_id, str) or not ID_PATTERN.match(entry_id) or ".." in entry_id:
        raise ZooError(f"{where} {str(entry_id)[:80]!r} is not a valid zoo id: ids are 1-128 letters, digits, '.', '_' or '-', "
                       "starting with a letter or digit, without '..' (an id becomes a file name in the cache)")
    return entry_id


def deadline_s() -> float:
    """The overall limit for one transfer: ``$DQLTOOLKIT_ZOO_DEADLINE`` (seconds) or :data:`DEADLINE_S`."""
    raw = os.environ.get(DEADLINE_ENV)
    if raw is None:
        return DEADLINE_S
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if not 0 < value < float("inf"):  # (NaN fails too)
        raise ZooError(f"{DEADLINE_ENV}={raw!r}: expected a positive number of seconds")
    return value


class _NoAliasLoader(yaml.SafeLoader):
    """PyYAML's safe loader without anchors and aliases: a few nested ("billion laughs") expand to gigabytes."""

    def compose_node(self, parent, index):  # type: ignore[override]
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise yaml.composer.ComposerError(None, None, "anchors and aliases (& and *) are not allowed in a zoo index", event.start_mark)
        return super().compose_node(parent, index)


class _HttpRedirects(urllib.request.HTTPRedirectHandler):
    """Follow redirects to http(s) only (urllib would also follow one to ftp://)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[override]
        if urllib.parse.urlparse(newurl).scheme not in ("http", "https"):
            raise urllib.error.HTTPError(req.full_url, code, f"redirect to {newurl} refused (http and https only)", headers, fp)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


@dataclass(frozen=True)
class ZooEntry:
    """One pretrained checkpoint: what it is (agent, task, metrics, how it was trained) and where it lives."""

    id: str
    agent: str
    task: str
    sha256: str
    size: int
    location: str  # an absolute path (a shipped file), a URL, or hf:ORG/NAME[@revision] (a Hugging Face Hub repo)
    description: str = ""
    metrics: Mapping[str, Any] = field(default_factory=dict)
    trained: Mapping[str, Any] = field(default_factory=dict)
    filename: str = ""  # the checkpoint's path in a Hub repo ("": the one its model card names)

    @property
    def kind(self) -> str:
        """Where it lives: ``file`` (shipped next to the index), ``url`` (downloaded) or ``hf`` (a Hub repo)."""
        return "hf" if self.location.startswith(HF_PREFIX) else "url" if "://" in self.location else "file"

    @property
    def shipped(self) -> bool:
        """True for a file next to the index (nothing to download)."""
        return self.kind == "file"

    def to_dict(self) -> Dict[str, Any]:
        return {"id": self.id, "agent": self.agent, "task": self.task, "size": self.size, "sha256": self.sha256, "lives": self.kind,
                "location": self.location, **({"filename": self.filename} if self.filename else {}), "description": self.description,
                "metrics": dict(self.metrics), "trained": dict(self.trained)}


def default_index() -> str:
    """Where the catalogue is read from: ``$DQLTOOLKIT_ZOO_INDEX``, else the shipped ``zoo/index.yaml``."""
    return os.environ.get(INDEX_ENV) or str(catalogue_dir("zoo") / "index.yaml")


def _is_url(location: str) -> bool:
    return urllib.parse.urlparse(location).scheme in ("http", "https", "file")


def _transfer(url: str, limit: int, what: str, limit_text: str, deadline: Optional[float] = None):
    """Yield ``url``'s body as it arrives, at most ``limit + 1`` bytes within the deadline (an announced excess fails at once)."""
    deadline = deadline_s() if deadline is None else deadline
    started = time.monotonic()

    def late() -> bool:
        return time.monotonic() - started > deadline

    def expired() -> ZooError:
        return ZooError(f"{what}: {url} did not finish within the deadline of {deadline:g} s (set {DEADLINE_ENV} to allow more); "
                        "nothing was kept")

    request = urllib.request.Request(url, headers={"User-Agent": f"dqltoolkit/{__version__}"})
    try:
        with urllib.request.build_opener(_HttpRedirects).open(request, timeout=min(TIMEOUT_S, deadline)) as response:
            length = response.headers.get("Content-Length") if hasattr(response, "headers") else None
            if length is not None and length.isdigit() and int(length) > limit:
                raise ZooError(f"{what}: {url} announces {int(length)} bytes, {limit_text}")
            read, total = getattr(response, "read1", response.read), 0
            while total <= limit:
                if late():
                    raise expired()
                try:
                    chunk = read(min(_CHUNK, limit + 1 - total))
                except OSError as exc:  # (TimeoutError is one: a read that timed out)
                    if late() or isinstance(exc, TimeoutError):
                        raise expired() from None
                    raise
                if not chunk:
                    return
                total += len(chunk)
                yield chunk
    except TimeoutError:  # connecting
        if not late():
            raise
        raise expired() from None


def _unreachable(url: str, exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"{url} answered HTTP {exc.code} ({exc.reason})"
    reason = getattr(exc, "reason", None) or exc
    return f"could not reach {url}: {reason}"


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
    check_id(raw["id"], f"{where}: field 'id'")
    if not _SHA256.match(raw["sha256"]):
        raise ZooError(f"{where}: field 'sha256' must be 64 lower-case hex digits, got {raw['sha256']!r}")
    if raw["size"] <= 0:
        raise ZooError(f"{where}: field 'size' must be a positive number of bytes, got {raw['size']}")
    given = [name for name in _LOCATIONS if name in raw]
    if len(given) != 1:
        raise ZooError(f"{where}: give exactly one of 'file' (shipped next to the index) or 'url' (downloaded) or 'hf' "
                       f"(a Hugging Face Hub repo, ORG/NAME[@revision])" + (f"; it gives {' and '.join(given)}" if given else ""))
    if "filename" in raw:
        name = raw["filename"]
        if "hf" not in raw:
            raise ZooError(f"{where}: field 'filename' names a file in a Hub repo and goes with 'hf' only")
        if not name or name.startswith("/") or ".." in name.split("/") or "\\" in name or "://" in name or len(name) > 500:
            raise ZooError(f"{where}: field 'filename' must be a relative path inside the Hub repo, got {name[:80]!r}")
    fields = {k: v for k, v in raw.items() if k not in _LOCATIONS}  # (the rest are ZooEntry's fields)
    if "hf" in raw:
        repo = raw["hf"].removeprefix(HF_PREFIX)
        if not _HF_REPO.match(repo) or ".." in repo:
            raise ZooError(f"{where}: field 'hf' must be a Hub repo, ORG/NAME or ORG/NAME@REVISION, got {raw['hf'][:80]!r}")
        return ZooEntry(location=HF_PREFIX + repo, **fields)
    if "file" in raw:
        name = Path(raw["file"])
        if not raw["file"] or name.is_absolute() or ".." in name.parts or "\\" in raw["file"] or "://" in raw["file"]:
            raise ZooError(f"{where}: field 'file' must be a relative path inside the index's folder, got {raw['file']!r}")
        if not _is_url(index):
            return ZooEntry(location=str((Path(index).resolve().parent / name).resolve()), **fields)
    # a 'url', or a 'file' beside a remote index: resolved against the index's URL
    base = index if _is_url(index) else Path(index).resolve().as_uri()
    location = urllib.parse.urljoin(base, raw["url"] if "url" in raw else raw["file"])
    remote = urllib.parse.urlparse(index).scheme in ("http", "https")
    allowed = ("http", "https") if remote else ("http", "https", "file")
    if "://" in location and urllib.parse.urlparse(location).scheme not in allowed:
        raise ZooError(f"{where}: field {'url' if 'url' in raw else 'file'!r} resolves to {location}; "
                       f"an entry of {'an http(s)' if remote else 'this'} index may only name {' or '.join(allowed)} URLs")
    return ZooEntry(location=location, **fields)


def load_index(index: Optional[str] = None) -> Dict[str, ZooEntry]:
    """The catalogue's entries by id, every entry validated (a broken index fails as a whole, naming the entry)."""
    index = index or default_index()
    if _is_url(index):
        try:
            data = b"".join(_transfer(index, MAX_INDEX_BYTES, f"zoo index {index}",
                                      limit_text=f"more than the limit of {MAX_INDEX_BYTES} bytes (MAX_INDEX_BYTES)"))
        except (urllib.error.URLError, OSError) as exc:
            raise ZooError(f"zoo index {index}: {_unreachable(index, exc)}") from None
    else:
        if not Path(index).is_file():
            raise ZooError(f"zoo index {index} does not exist (set {INDEX_ENV} to a path or URL of an index.yaml)")
        with open(index, "rb") as f:
            data = f.read(MAX_INDEX_BYTES + 1)
    if len(data) > MAX_INDEX_BYTES:
        raise ZooError(f"zoo index {index} is larger than the limit of {MAX_INDEX_BYTES} bytes (MAX_INDEX_BYTES)")
    try:
        doc = yaml.load(data.decode("utf-8"), Loader=_NoAliasLoader) or {}  # a safe loader, minus aliases
    except UnicodeDecodeError as exc:
        raise ZooError(f"zoo index {index}: not UTF-8 text ({exc})") from None
    except yaml.YAMLError as exc:
        raise ZooError(f"zoo index {index}: not valid YAML: {exc}") from None
    except RecursionError:
        raise ZooError(f"zoo index {index}: nested too deeply to be an index") from None
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
    check_id(entry_id)
    entries = load_index(index)
    if entry_id not in entries:
        known = ", ".join(sorted(entries)) or "(none)"
        raise ZooError(f"unknown zoo entry {entry_id!r}.{did_you_mean(entry_id, list(entries))} Entries in {index or default_index()}: {known}")
    return entries[entry_id]


def cache_root() -> Path:
    return _cache.cache_root() / "zoo"


def cached_path(entry: ZooEntry) -> Path:
    """A downloaded entry's cache file, named by id and digest (a republished entry never reuses a stale file)."""
    check_id(entry.id)
    if not _SHA256.match(entry.sha256):
        raise ZooError(f"zoo entry {entry.id!r}: sha256 {entry.sha256[:80]!r} is not 64 lower-case hex digits")
    if entry.kind == "hf":
        raise ZooError(f"zoo entry {entry.id!r} lives on the Hugging Face Hub ({entry.location}): it is cached in the Hub's cache, not the zoo's")
    return cache_root() / f"{entry.id}-{entry.sha256[:12]}.zip"


def sha256_of(path: Union[str, Path]) -> str:
    with open(path, "rb") as f:
        return _cache.sha256_of(f)


def _verify(entry: ZooEntry, size: int, digest: str, source: str, outcome: str = "nothing was kept") -> None:
    if size != entry.size:
        raise ZooError(f"zoo entry {entry.id!r}: {source} has {size} bytes, the index says {entry.size} (truncated or changed); {outcome}")
    if digest != entry.sha256:
        raise ZooError(f"zoo entry {entry.id!r}: {source} has SHA-256 {digest}, the index says {entry.sha256}; {outcome}")


def _download(entry: ZooEntry, dest: Path, progress: bool, deadline: Optional[float] = None) -> None:
    deadline = deadline_s() if deadline is None else deadline
    dest.parent.mkdir(parents=True, exist_ok=True)
    now, older_than = time.time(), max(STALE_PART_S, deadline)
    for old in dest.parent.glob(".*.part"):  # left by killed downloads: untouched for longer than any download takes
        try:
            if old.is_file() and not old.is_symlink() and now - old.stat().st_mtime > older_than:
                old.unlink()
        except OSError:
            pass  # another process removed or finished it
    fd, name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    part = Path(name)
    digest, size = hashlib.sha256(), 0
    try:
        try:
            bar = tqdm(total=entry.size, unit="B", unit_scale=True, desc=f"zoo {entry.id}", file=sys.stderr, leave=False,
                       disable=None if progress else True)  # (None: a bar on terminals only)
            with os.fdopen(fd, "wb") as out, bar:
                for chunk in _transfer(entry.location, entry.size, f"zoo entry {entry.id!r}",
                                       f"the index says {entry.size} (truncated or changed); nothing was kept", deadline):
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


def fetch(entry: Union[str, ZooEntry], index: Optional[str] = None, force: bool = False, progress: bool = True,
          deadline: Optional[float] = None) -> Path:
    """A zoo checkpoint's local path, verified against the index: a shipped file, or the cache's copy (downloaded if needed)."""
    entry = get_entry(entry, index) if isinstance(entry, str) else entry
    if entry.kind == "hf":
        raise ZooError(f"zoo entry {entry.id!r} lives on the Hugging Face Hub ({entry.location}): "
                       "dqltoolkit.sources.fetch_entry (or zoo:<id> anywhere a checkpoint goes) fetches it")
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
            dest.unlink()  # damaged in the cache (always a file inside it: cached_path): download it again
    _download(entry, dest, progress, deadline)
    return dest


def resolve_checkpoint(spec: Union[str, Path], index: Optional[str] = None) -> Path:
    """``zoo:<id>`` -> the entry's verified local file, anything else a path (all sources: ``sources.resolve_checkpoint``)."""
    text = str(spec)
    if text.startswith("hf:"):
        raise ZooError(f"{text} is a Hugging Face Hub reference, not a zoo entry: dqltoolkit.sources.resolve_checkpoint resolves both")
    if text.startswith(ZOO_PREFIX):
        return fetch(text[len(ZOO_PREFIX):], index)
    return Path(spec)


def make_entry(checkpoint: Union[str, Path], entry_id: str, url: Optional[str] = None, file: Optional[str] = None,
               agent: Optional[str] = None, results: Optional[Mapping[str, Any]] = None, description: str = "",
               trained: Optional[Mapping[str, Any]] = None, hf: Optional[str] = None) -> Dict[str, Any]:
    """The index entry (``dqltoolkit zoo entry``) that publishes a checkpoint at ``url``, ``file`` or ``hf``."""
    check_id(entry_id)
    if sum(x is not None for x in (url, file, hf)) != 1:
        raise ZooError("zoo entry: give exactly one of url (where it will be downloaded from) or file (shipped next to the index) "
                       "or hf (the Hub repo it was pushed to)")
    if hf is not None and not _HF_REPO.match(hf.removeprefix(HF_PREFIX)):
        raise ZooError(f"zoo entry: hf must be a Hub repo, ORG/NAME or ORG/NAME@REVISION, got {hf!r}")
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
    kind, where = next((k, v) for k, v in (("url", url), ("file", file), ("hf", hf)) if v is not None)
    entry[kind] = where.removeprefix(HF_PREFIX) if kind == "hf" else where
    if description:
        entry["description"] = description
    if results:  # a one-seed run's results.json (its final evaluation), or what `dqltoolkit evaluate --json` prints
        evaluation = [results] if "evaluation" not in results and "mean_return" in results else results.get("evaluation") or []
        if len(evaluation) != 1:
            raise ZooError(f"zoo entry: results hold {len(evaluation)} evaluations; an entry describes one checkpoint (one seed)")
        e = evaluation[0]
        keys = ("mean_return", "std_return", "episodes", "normalized_score", "best_mode_share")
        entry["metrics"] = {k: (round(float(e[k]), 4) if k != "episodes" else int(e[k])) for k in keys if k in e}
        if "mode_shares" in e:
            entry["metrics"]["off_data_share"] = round(float(e["mode_shares"].get("off_data", 0.0)), 4)
    entry["trained"] = {"steps": int(doc.get("num_timesteps", 0)), "seeds": list(doc.get("seeds", [])), **doc.get("versions", {}), **(trained or {})}
    if results and "train_seconds" in results:
        entry["trained"]["train_seconds"] = round(float(results["train_seconds"]), 1)
    return entry
