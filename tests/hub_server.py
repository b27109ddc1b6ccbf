"""A small Hugging Face Hub look-alike for tests: the real ``huggingface_hub`` client talks to it on 127.0.0.1.

Why a server and not mocks: the tests then exercise what users run (the client's create_repo, create_commit,
hf_hub_download with its cache and offline mode) and fail if the client's protocol changes. Only what
``dqltoolkit.hub`` needs is here, in memory:

- ``POST /api/repos/create``, ``POST /api/validate-yaml``, ``GET /api/whoami-v2``;
- ``POST /api/models/{repo}/preupload/{rev}`` (always "regular": every file travels inline, base64, in the
  commit, so no LFS or Xet transfer is needed), ``POST /api/models/{repo}/commit/{rev}`` (NDJSON: header,
  file, deletedFile), ``POST /api/models/{repo}/branch/{name}``;
- ``GET /api/models/{repo}[/revision/{rev}]`` (model_info);
- ``HEAD``/``GET /{repo}/resolve/{rev}/{path}`` with ``ETag`` (the git blob id), ``X-Repo-Commit`` and
  ``Content-Length``; missing repos, revisions and files answer 404 with the ``X-Error-Code`` the client reads.

Every token is accepted and belongs to ``user``; a private repo answers requests without a token as missing.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Dict, List, Optional, Tuple
from urllib.parse import unquote, urlsplit

import yaml


def git_blob_id(data: bytes) -> str:
    """The id git (and the Hub's ETag for a regular file) gives a file's content."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Repo:
    private: bool
    branches: Dict[str, str] = field(default_factory=dict)  # name -> commit id
    commits: Dict[str, Dict[str, bytes]] = field(default_factory=dict)  # commit id -> {path: content}

    def resolve(self, revision: str) -> Optional[str]:
        if revision in self.branches:
            return self.branches[revision]
        return revision if revision in self.commits else None


class FakeHub:
    """Start with :meth:`start` (returns the endpoint URL), stop with :meth:`stop`. ``requests`` logs
    ``(method, path)`` of every request, so a test can assert that none were made (offline mode)."""

    def __init__(self, user: str = "dql-tester") -> None:
        self.user = user
        self.repos: Dict[str, Repo] = {}
        self.requests: List[Tuple[str, str]] = []
        self._lock = threading.Lock()
        self._server: Optional[ThreadingHTTPServer] = None
        self._thread: Optional[threading.Thread] = None
        self._counter = 0

    @property
    def endpoint(self) -> str:
        assert self._server is not None, "not started"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> str:
        hub = self

        class Handler(_Handler):
            pass

        Handler.hub = hub
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-hub", daemon=True)
        self._thread.start()
        return self.endpoint

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=5)
            self._server = None

    # ---- state changes (under the lock) ----

    def commit(self, repo_id: str, revision: str, files: Dict[str, bytes], deleted: List[str]) -> str:
        repo = self.repos[repo_id]
        parent = repo.branches[revision]
        tree = dict(repo.commits[parent])
        tree.update(files)
        for path in deleted:
            tree.pop(path, None)
        self._counter += 1
        oid = hashlib.sha1(f"{repo_id}:{parent}:{self._counter}".encode()).hexdigest()
        repo.commits[oid] = tree
        repo.branches[revision] = oid
        return oid

    def create(self, repo_id: str, private: bool) -> bool:
        if repo_id in self.repos:
            return False
        root = hashlib.sha1(f"{repo_id}:root".encode()).hexdigest()
        self.repos[repo_id] = Repo(private=private, branches={"main": root}, commits={root: {".gitattributes": b"*.zip filter=lfs\n"}})
        return True


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the client's connection pool expects
    hub: FakeHub

    def log_message(self, format: str, *args) -> None:  # quiet: pytest shows failures, not request logs
        pass

    # ---- plumbing ----

    def _send(self, status: int, body: bytes = b"", headers: Optional[Dict[str, str]] = None, content_type: str = "application/json",
              head: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _json(self, status: int, doc, headers: Optional[Dict[str, str]] = None) -> None:
        self._send(status, json.dumps(doc).encode(), headers)

    def _error(self, status: int, code: Optional[str], message: str, headers: Optional[Dict[str, str]] = None, head: bool = False) -> None:
        extra = dict(headers or {})
        if code:
            extra["X-Error-Code"] = code
        extra["X-Error-Message"] = message
        self._send(status, json.dumps({"error": message}).encode(), extra, head=head)

    def _body(self) -> bytes:
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _authorised(self) -> bool:
        return (self.headers.get("Authorization") or "").startswith("Bearer ")

    def _repo(self, repo_id: str, head: bool = False) -> Optional[Repo]:
        repo = self.hub.repos.get(repo_id)
        if repo is None or (repo.private and not self._authorised()):
            self._error(404 if self._authorised() else 401, "RepoNotFound", f"Repository not found: {repo_id}", head=head)
            return None
        return repo

    # ---- routing ----

    def do_HEAD(self) -> None:
        self._route("HEAD")

    def do_GET(self) -> None:
        self._route("GET")

    def do_POST(self) -> None:
        self._route("POST")

    def _route(self, method: str) -> None:
        path = urlsplit(self.path).path
        with self.hub._lock:
            self.hub.requests.append((method, path))
        parts = path.strip("/").split("/")
        try:
            if parts[:1] == ["api"]:
                self._api(method, parts[1:])
            elif len(parts) >= 5 and parts[2] == "resolve" and method in ("HEAD", "GET"):
                repo_id = f"{unquote(parts[0])}/{unquote(parts[1])}"
                self._resolve(repo_id, unquote(parts[3]), unquote("/".join(parts[4:])), head=method == "HEAD")
            else:
                self._error(404, None, f"fake hub: no route for {method} {path}", head=method == "HEAD")
        except Exception as exc:  # a bug here should show up as a clear 500 in the client's error
            self._error(500, None, f"fake hub: {type(exc).__name__}: {exc}", head=method == "HEAD")

    def _api(self, method: str, parts: List[str]) -> None:
        hub = self.hub
        if method == "GET" and parts == ["whoami-v2"]:
            return self._json(200, {"type": "user", "name": hub.user, "orgs": []})
        if method == "POST" and parts == ["repos", "create"]:
            payload = json.loads(self._body())
            repo_id = f"{payload.get('organization') or hub.user}/{payload['name']}"
            with hub._lock:
                created = hub.create(repo_id, payload.get("visibility") == "private" or bool(payload.get("private")))
            doc = {"url": f"{hub.endpoint}/{repo_id}", "name": repo_id}
            if not created:  # the Hub's 409 still names the repo: create_repo(exist_ok=True) reads its url
                message = "You already created this model repo"
                return self._json(409, {**doc, "error": message}, {"X-Error-Message": message})
            return self._json(200, doc)
        if method == "POST" and parts == ["validate-yaml"]:
            content = json.loads(self._body())["content"]
            if content.startswith("---"):
                try:
                    yaml.safe_load(content.split("---", 2)[1])
                except yaml.YAMLError as exc:
                    return self._json(400, {"errors": [{"message": str(exc)}]})
            return self._json(200, {"errors": [], "warnings": []})
        if len(parts) >= 3 and parts[0] == "models":
            repo_id, rest = f"{unquote(parts[1])}/{unquote(parts[2])}", parts[3:]
            repo = self._repo(repo_id)
            if repo is None:
                return None
            if method == "GET" and (not rest or rest[0] == "revision"):
                return self._model_info(repo_id, repo, unquote("/".join(rest[1:])) if rest else "main")
            if method == "POST" and len(rest) >= 2 and rest[0] == "preupload":
                files = json.loads(self._body())["files"]
                return self._json(200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]})
            if method == "POST" and len(rest) >= 2 and rest[0] == "commit":
                return self._commit(repo_id, repo, unquote("/".join(rest[1:])))
            if method == "POST" and len(rest) >= 2 and rest[0] == "branch":
                branch = unquote("/".join(rest[1:]))
                start = (json.loads(self._body() or b"{}") or {}).get("startingPoint") or "main"
                with hub._lock:
                    if branch in repo.branches:
                        return self._error(409, None, f"Reference {branch} already exists")
                    commit = repo.resolve(start)
                    if commit is None:
                        return self._error(404, "RevisionNotFound", f"Invalid rev id: {start}")
                    repo.branches[branch] = commit
                return self._json(200, {})
        return self._error(404, None, f"fake hub: no API route for {method} /api/{'/'.join(parts)}")

    def _model_info(self, repo_id: str, repo: Repo, revision: str) -> None:
        commit = repo.resolve(revision)
        if commit is None:
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        tree = repo.commits[commit]
        self._json(200, {"id": repo_id, "author": repo_id.split("/")[0], "sha": commit, "private": repo.private,
                         "siblings": [{"rfilename": p, "size": len(b)} for p, b in sorted(tree.items())]})

    def _commit(self, repo_id: str, repo: Repo, revision: str) -> None:
        lines = [json.loads(line) for line in self._body().splitlines() if line.strip()]
        files: Dict[str, bytes] = {}
        deleted: List[str] = []
        for item in lines:
            key, value = item["key"], item["value"]
            if key == "file":
                if value.get("encoding") != "base64":
                    return self._error(400, None, f"fake hub: encoding {value.get('encoding')!r} not supported")
                files[value["path"]] = base64.b64decode(value["content"])
            elif key == "deletedFile":
                deleted.append(value["path"])
            elif key != "header":
                return self._error(400, None, f"fake hub: commit operation {key!r} not supported (only inline files)")
        with self.hub._lock:
            if revision not in repo.branches:
                return self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
            missing = [p for p in deleted if p not in repo.commits[repo.branches[revision]]]
            if missing:
                return self._error(404, "EntryNotFound", f"A file with this name doesn't exist: {missing[0]}")
            oid = self.hub.commit(repo_id, revision, files, deleted)
        self._json(200, {"commitUrl": f"{self.hub.endpoint}/{repo_id}/commit/{oid}", "commitOid": oid, "success": True})

    def _resolve(self, repo_id: str, revision: str, path: str, head: bool) -> None:
        repo = self._repo(repo_id, head=head)
        if repo is None:
            return
        commit = repo.resolve(revision)
        if commit is None:
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}", head=head)
        tree = repo.commits[commit]
        if path not in tree:
            return self._error(404, "EntryNotFound", f"{path} does not exist on {revision}", {"X-Repo-Commit": commit}, head=head)
        data = tree[path]
        headers = {"ETag": f'"{git_blob_id(data)}"', "X-Repo-Commit": commit}
        self._send(200, data, headers, content_type="application/octet-stream", head=head)
