"""Checkpoints on the Hugging Face Hub: ``dqltoolkit hub push`` and ``hf:ORG/NAME[@revision]``.

Why the Hub: it is where researchers already share models (huggingface_sb3 for SB3). Unlike that, nothing here
unpickles: a repo holds the toolkit's own checkpoint (``{agent}-{task}.zip``), used only after its SHA-256 matches
the model card's (``hub_card.py``), beside the run's config.yaml, results.json and metrics.csv. Downloads go through
``huggingface_hub``'s cache (an optional extra, imported when used; ``HF_*`` settings are read at each call).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import numpy as np
import yaml

from ._version import __version__
from .checkpoint import read_checkpoint
from .hub_card import model_card
from .zoo import _SHA256, HF_PREFIX, ZOO_PREFIX, fetch, get_entry, sha256_of

CARD_NAME = "README.md"
LIBRARY_NAME = "dqltoolkit"
_NAME_PART = re.compile(r"^[A-Za-z0-9_.-]{1,96}$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_INSTALL = "pip install 'dqltoolkit[hub]'"


class HubError(ValueError):
    """A Hub repo that cannot be pushed, found, downloaded or verified; the message names the repo and the file."""


@dataclass(frozen=True)
class HubRef:
    """``hf:ORG/NAME[@revision]`` parsed: a repo id and an optional branch, tag or commit."""

    repo_id: str
    revision: Optional[str] = None

    def __str__(self) -> str:
        return f"{HF_PREFIX}{self.repo_id}" + (f"@{self.revision}" if self.revision else "")


def _check_repo_id(repo_id: str, where: str) -> str:
    parts = repo_id.split("/")
    if len(parts) > 2 or not all(_NAME_PART.match(p) and p[0] not in "-." and p[-1] not in "-." for p in parts):
        raise HubError(f"{where}: {repo_id!r} is not a Hub repo id: expected ORG/NAME (letters, digits, '-', '_', '.', "
                       f"at most 96 each, not starting or ending with '-' or '.')")
    return repo_id


def parse_ref(spec: Union[str, Path]) -> HubRef:
    """``"hf:ORG/NAME@v1"`` -> ``HubRef("ORG/NAME", "v1")``; the revision is a branch, tag or commit hash."""
    text = str(spec)
    if not text.startswith(HF_PREFIX):
        raise HubError(f"{text!r} is not a Hub reference (expected hf:ORG/NAME or hf:ORG/NAME@revision)")
    body = text[len(HF_PREFIX):]
    repo_id, _, revision = body.partition("@")
    if "@" in body and not revision:
        raise HubError(f"{text}: empty revision after '@' (expected hf:ORG/NAME@BRANCH_TAG_OR_COMMIT)")
    if "/" not in repo_id:
        raise HubError(f"{text}: give the repo's owner too, hf:ORG/NAME (a Hub model repo id)")
    return HubRef(_check_repo_id(repo_id, text), revision or None)


# ---- the client and its settings ----


def hub_settings() -> Dict[str, Any]:
    """The settings in effect now: ``HF_ENDPOINT``, ``HF_HUB_CACHE`` (else ``$HF_HOME/hub``), ``HF_HUB_OFFLINE``."""
    endpoint = os.environ.get("HF_ENDPOINT", "").rstrip("/") or None
    cache = os.environ.get("HF_HUB_CACHE") or (os.path.join(os.environ["HF_HOME"], "hub") if os.environ.get("HF_HOME") else None)
    flags = (os.environ.get(k) or "" for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
    offline = any(v.strip().upper() in {"1", "ON", "YES", "TRUE"} for v in flags)
    return {"endpoint": endpoint, "cache_dir": os.path.expanduser(cache) if cache else None, "offline": offline}


def _hf():
    try:
        import huggingface_hub
    except ImportError:
        raise HubError(f"the Hugging Face Hub features need the huggingface_hub package: {_INSTALL}") from None
    return huggingface_hub


def _network_errors() -> tuple:
    """The client's HTTP errors and its HTTP library's transport errors (httpx2 in huggingface_hub 2.x, httpx in 1.x)."""
    from huggingface_hub.utils import HfHubHTTPError

    errors: List[type] = [HfHubHTTPError, OSError]
    for module in ("httpx2", "httpx"):
        try:
            errors.append(__import__(module).HTTPError)
        except (ImportError, AttributeError):
            pass
    return tuple(errors)


def _where() -> str:
    return hub_settings()["endpoint"] or "the Hugging Face Hub"


# ---- downloading and verifying ----


def _download(ref: HubRef, filename: str, revision: Optional[str] = None, force: bool = False) -> Path:
    """One file of a repo through the client's cache; the client's errors become HubErrors that say what to do."""
    hf = _hf()
    from huggingface_hub import utils as errors  # (huggingface_hub.errors has them too, but only since 1.0)

    s = hub_settings()
    revision = revision or ref.revision
    where = f"{ref} ({filename})"
    try:
        return Path(hf.hf_hub_download(ref.repo_id, filename, revision=revision, cache_dir=s["cache_dir"], endpoint=s["endpoint"],
                                       local_files_only=s["offline"], force_download=force and not s["offline"],
                                       library_name=LIBRARY_NAME, library_version=__version__))
    except errors.LocalEntryNotFoundError:
        cache = s["cache_dir"] or "the Hugging Face cache"
        if s["offline"]:
            raise HubError(f"{where}: not in the Hub cache ({cache}) and HF_HUB_OFFLINE=1 forbids downloading it; "
                           f"fetch it once online (`dqltoolkit hub download {ref}`), then work offline") from None
        raise HubError(f"{where}: could not reach {_where()} and the file is not in the Hub cache ({cache})") from None
    except errors.RevisionNotFoundError:
        raise HubError(f"{where}: the repo {ref.repo_id} on {_where()} has no revision {revision!r}") from None
    except errors.RepositoryNotFoundError:
        raise HubError(f"{where}: no repo {ref.repo_id} on {_where()} (or it is private and HF_TOKEN gives no access)") from None
    except errors.EntryNotFoundError:
        hint = "; was it pushed with `dqltoolkit hub push`?" if filename == CARD_NAME else ""
        raise HubError(f"{where}: the repo {ref.repo_id} has no file {filename!r} at revision {revision or 'main'}{hint}") from None
    except (errors.HfHubHTTPError, OSError) as exc:
        raise HubError(f"{where}: {_where()} answered: {str(exc).splitlines()[0]}") from None


def card_metadata(text: str, source: str = CARD_NAME) -> Dict[str, Any]:
    """The YAML block at the top of a model card (between ``---`` lines), as a dict ({} when there is none)."""
    if not text.startswith("---"):
        return {}
    lines = text.splitlines()
    try:
        end = next(i for i in range(1, len(lines)) if lines[i].strip() == "---")
    except StopIteration:
        raise HubError(f"{source}: the metadata block opened by '---' is never closed") from None
    try:
        meta = yaml.safe_load("\n".join(lines[1:end])) or {}
    except yaml.YAMLError as exc:
        raise HubError(f"{source}: its metadata is not valid YAML: {exc}") from None
    if not isinstance(meta, dict):
        raise HubError(f"{source}: its metadata must be a mapping, got {type(meta).__name__}")
    return meta


def _card_checkpoint(ref: HubRef, force: bool = False) -> Tuple[str, str, Optional[int], Optional[str]]:
    """(checkpoint file, SHA-256, size, commit) from the model card's ``dqltoolkit`` section, each field checked. The
    checkpoint is then read at the card's commit: a push between the two downloads cannot pair two commits' files."""
    card_path = _download(ref, CARD_NAME, force=force)
    commit = card_path.parent.name if _COMMIT.match(card_path.parent.name) else ref.revision
    where = f"{ref} ({CARD_NAME})"
    rec = card_metadata(card_path.read_text(encoding="utf-8"), where).get(LIBRARY_NAME)
    example = f"{LIBRARY_NAME}: {{checkpoint: FILE.zip, sha256: <64 hex digits>, size: BYTES}}"
    if not isinstance(rec, dict):
        raise HubError(f"{where}: the model card's metadata has no '{LIBRARY_NAME}' section naming the checkpoint and its "
                       f"SHA-256 (expected {example}); push it with `dqltoolkit hub push`")
    name, digest, size = rec.get("checkpoint"), rec.get("sha256"), rec.get("size")
    if not isinstance(name, str) or not name or name.startswith("/") or ".." in name.split("/"):
        raise HubError(f"{where}: field '{LIBRARY_NAME}.checkpoint' must be a file name in the repo, got {name!r}")
    if not isinstance(digest, str) or not _SHA256.match(digest):
        raise HubError(f"{where}: field '{LIBRARY_NAME}.sha256' must be 64 lower-case hex digits, got {digest!r}")
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size <= 0):
        raise HubError(f"{where}: field '{LIBRARY_NAME}.size' must be a positive number of bytes, got {size!r}")
    return name, digest, size, commit


def download_verified(ref: HubRef, filename: str, sha256: str, size: Optional[int] = None, revision: Optional[str] = None,
                      force: bool = False, recorded_by: str = "the model card") -> Path:
    """A repo file from the Hub cache whose SHA-256 (and size) match; a mismatch is downloaded once more, then raised."""
    for attempt in range(2):
        path = _download(ref, filename, revision=revision, force=force or attempt == 1)
        got_size, got = path.stat().st_size, sha256_of(path)
        if got == sha256 and (size is None or got_size == size):
            return path
        if hub_settings()["offline"]:
            break
    sizes = size is not None and got_size != size
    raise HubError(f"{ref}: {filename} (revision {revision or ref.revision or 'main'}) has SHA-256 {got}"
                   + (f" ({got_size} bytes)" if sizes else "")
                   + f", but {recorded_by} records {sha256}" + (f" ({size} bytes)" if sizes else "")
                   + ": the file was changed after that record was written, or the download is damaged; nothing was loaded")


def resolve_hf(spec: Union[str, Path], force: bool = False) -> Path:
    """``hf:ORG/NAME[@revision]`` -> the repo's checkpoint in the Hub cache, verified against its model card."""
    ref = parse_ref(spec)
    name, digest, size, commit = _card_checkpoint(ref, force)
    return download_verified(ref, name, digest, size, revision=commit, force=force)


def fetch_pinned(spec: Union[str, Path], sha256: str, size: Optional[int] = None, filename: Optional[str] = None,
                 force: bool = False) -> Path:
    """A repo's checkpoint (``filename``, else the card's) verified against a zoo entry's digest: the index pins the content."""
    ref = parse_ref(spec)
    name, _, _, commit = (filename, None, None, ref.revision) if filename else _card_checkpoint(ref, force)
    return download_verified(ref, name, sha256, size, revision=commit, force=force, recorded_by="the zoo index")


# ---- pushing ----


@dataclass
class PushBundle:
    """Everything a push uploads, built without the network (``hub push --dry-run`` prints it)."""

    repo_id: str
    model_name: str  # {agent}-{task}
    checkpoint: Path
    sha256: str
    files: Dict[str, Union[Path, bytes]] = field(default_factory=dict)  # path in repo -> local file or content

    @property
    def card(self) -> str:
        return self.files[CARD_NAME].decode("utf-8")  # type: ignore[union-attr]


@dataclass
class PushResult:
    repo_id: str
    revision: str
    commit: str
    url: str
    files: List[str]
    sha256: str


def _safe_name(text: str) -> str:
    """A repo/file name part from an agent or task id (huggingface_sb3 turns '/' into '-'; so do ':' and the rest)."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-.")
    return name[:96].rstrip("-.") or "model"


def _agent_name(raw: Optional[str], task: str) -> Optional[str]:
    """The recipe name a run's config.yaml records; a fine-tuned run records what it started from
    (zoo:ID, hf:ORG/NAME, a path): then the last name in it, without a trailing task id."""
    if not raw:
        return None
    if raw.endswith((".yaml", ".yml", ".zip")) or ":" in raw or "/" in raw:
        raw = Path(raw.split(":", 1)[-1].split("@", 1)[0]).name
        raw = raw.rsplit(".", 1)[0] if raw.endswith((".yaml", ".yml", ".zip")) else raw
        suffix = f"-{_safe_name(task)}"
        raw = raw[: -len(suffix)] if raw.endswith(suffix) and len(raw) > len(suffix) else raw
    return raw


def _evaluation_for(results: Mapping[str, Any], seeds: List[int]) -> Dict[str, Any]:
    """The final evaluation of the checkpoint's seed(s) in a run's results.json (over seeds: mean of the means)."""
    per = [e for e in results.get("evaluation") or [] if e.get("seed") in seeds] or ([] if seeds else list(results.get("evaluation") or []))
    if not per:
        return {}
    if len(per) == 1:
        return {k: v for k, v in per[0].items() if k != "seed"}
    out: Dict[str, Any] = {"episodes": int(per[0].get("episodes", 0))}
    for key in ("mean_return", "normalized_score", "best_mode_share"):
        if all(key in e for e in per):
            out[key] = float(np.mean([e[key] for e in per]))
    out["std_return"] = float(np.std([e["mean_return"] for e in per]))  # over seeds
    return out


def prepare_push(source: Union[str, Path], repo_id: Optional[str] = None, agent: Optional[str] = None,
                 revision: Optional[str] = None, video: Optional[Path] = None) -> PushBundle:
    """The files a push uploads, gathered offline: the checkpoint as ``{agent}-{task}.zip`` (also ``repo_id``'s
    default), config.yaml (the run's, else the checkpoint's recipe), results.json and metrics.csv, the model card."""
    text = str(source)
    run_files: Dict[str, Path] = {}  # config.yaml, results.json, metrics.csv found beside the checkpoint
    if text.startswith(ZOO_PREFIX):  # a zoo entry: its metrics and how it was trained come from the index
        entry = get_entry(text[len(ZOO_PREFIX):])
        # (an entry on the Hub is fetched here, not through dqltoolkit.sources, which imports this module)
        checkpoint = fetch_pinned(entry.location, entry.sha256, entry.size, entry.filename) if entry.kind == "hf" else fetch(entry)
        agent = agent or entry.agent
        evaluation, trained, description = dict(entry.metrics), dict(entry.trained), entry.description
    else:
        path = Path(source)
        if not path.exists():
            raise HubError(f"{path} does not exist (expected a run folder, a checkpoint .zip or zoo:<id>)")
        checkpoint = path
        if path.is_dir():  # a run folder: its model.zip, else its one model_seed*.zip
            found = [path / "model.zip"] if (path / "model.zip").is_file() else sorted(path.glob("model_seed*.zip"))
            if len(found) > 1:
                raise HubError(f"{path} holds one checkpoint per seed ({', '.join(p.name for p in found)}); push one of them")
            if not found:
                raise HubError(f"{path} has no model.zip (a `dqltoolkit train` run folder), nor model_seed*.zip; "
                               "pass the checkpoint's path")
            checkpoint = found[0]
        evaluation, trained, description = {}, {}, ""
        beside = (checkpoint.parent / n for n in ("config.yaml", "results.json", "metrics.csv"))
        run_files = {p.name: p for p in beside if p.is_file()}
    doc, _ = read_checkpoint(checkpoint)
    task = doc.get("task")
    if not task:
        raise HubError(f"{checkpoint} does not name its task; train it with `dqltoolkit train` (or set agent.task before saving)")
    run_config = (yaml.safe_load(run_files["config.yaml"].read_text()) or {}) if "config.yaml" in run_files else {}
    agent = agent or _agent_name(run_config.get("agent"), task)
    if not agent:
        raise HubError(f"{checkpoint}: no recipe name given and no run config.yaml beside it naming one; pass --agent")
    if "results.json" in run_files:
        results = json.loads(run_files["results.json"].read_text())
        evaluation = _evaluation_for(results, list(doc.get("seeds", [])))
        if "train_seconds" in results:
            trained.setdefault("train_seconds", round(float(results["train_seconds"]), 1))
    name = _safe_name(f"{agent}-{task}")  # huggingface_sb3's {algo}-{env}: diffusion-ql-bandit2d-v0
    repo_id = _check_repo_id(repo_id or name, "--repo")
    digest = sha256_of(checkpoint)
    files: Dict[str, Union[Path, bytes]] = {f"{name}.zip": checkpoint, "config.yaml": b"", **run_files}
    if "config.yaml" not in run_files:  # the checkpoint's own recipe, resolved
        resolved = {"agent": agent, "env": task, "seeds": list(doc.get("seeds", [])), "config": doc["config"]}
        files["config.yaml"] = yaml.safe_dump(resolved, sort_keys=False).encode()
    replay = None
    if video is not None:
        video = Path(video)
        if video.suffix not in (".mp4", ".gif"):
            raise HubError(f"--video {video}: expected an .mp4 or .gif (dqltoolkit record writes them)")
        replay = f"replay{video.suffix}"
        files[replay] = video
    ref = repo_id + (f"@{revision}" if revision and revision != "main" else "")
    card = model_card(repo_id=ref, model=name, agent=agent, task=task, doc=doc, checkpoint_name=f"{name}.zip", sha256=digest,
                      size=checkpoint.stat().st_size, evaluation=evaluation, trained=trained, run_config=run_config,
                      description=description, files=sorted(files), replay=replay)
    files[CARD_NAME] = card.encode("utf-8")
    return PushBundle(repo_id=repo_id, model_name=name, checkpoint=checkpoint, sha256=digest, files=files)


def push(source: Union[str, Path], repo: Optional[str] = None, revision: Optional[str] = None, private: bool = False,
         agent: Optional[str] = None, message: Optional[str] = None, video: Optional[Path] = None) -> PushResult:
    """``dqltoolkit hub push``: repo (``private`` if new) and branch created if needed, the bundle uploaded in one commit."""
    hf = _hf()
    if repo is not None:
        _check_repo_id(repo, "--repo")
    draft = prepare_push(source, repo, agent, revision, video)  # everything is checked before the network is touched
    if hub_settings()["offline"]:
        raise HubError(f"cannot push {draft.repo_id}: HF_HUB_OFFLINE=1 is set")
    api = hf.HfApi(endpoint=hub_settings()["endpoint"], library_name=LIBRARY_NAME, library_version=__version__)
    try:
        repo_id = api.create_repo(draft.repo_id, private=private, exist_ok=True).repo_id
        # the card names the full id, owner included
        bundle = draft if repo_id == draft.repo_id else prepare_push(source, repo_id, agent, revision, video)
        if revision:
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        ops = [hf.CommitOperationAdd(path_in_repo=p, path_or_fileobj=str(v) if isinstance(v, Path) else v) for p, v in bundle.files.items()]
        info = api.create_commit(repo_id, ops, commit_message=message or f"dqltoolkit hub push: {bundle.model_name}", revision=revision)
    except _network_errors() as exc:
        raise HubError(f"push to {draft.repo_id} on {_where()}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    return PushResult(repo_id=repo_id, revision=revision or "main", commit=info.oid, url=str(info.commit_url), files=sorted(bundle.files),
                      sha256=bundle.sha256)
