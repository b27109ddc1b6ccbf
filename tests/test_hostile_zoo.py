"""Hostile zoo indexes and servers, all on 127.0.0.1 inside the test: every case ends in a ZooError naming
the index, entry, URL or limit, and nothing outside the cache is written, deleted or hashed."""

import hashlib
import http.server
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

import dqltoolkit
from dqltoolkit import zoo
from dqltoolkit.zoo import ZooError

from ._limits import run_limited

SHA = "ab" * 32


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(zoo, "cache_root", lambda: tmp_path / "cache" / "zoo")
    monkeypatch.delenv(zoo.INDEX_ENV, raising=False)
    monkeypatch.delenv("DQLTOOLKIT_ZOO_DEADLINE", raising=False)


class Routes:
    """An HTTP server on 127.0.0.1 whose paths are answered by functions (handler -> None)."""

    def __init__(self):
        self.routes = {}
        routes = self.routes

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def do_GET(self):
                fn = routes.get(self.path)
                if fn is None:
                    self.send_error(404)
                    return
                try:
                    fn(self)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up, as it should

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def body(self, path, data: bytes, length: bool = True):
        def send(h):
            h.send_response(200)
            if length:
                h.send_header("Content-Length", str(len(data)))
            h.end_headers()
            h.wfile.write(data)

        self.routes[path] = send

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def web():
    s = Routes()
    yield s
    s.close()


def trickle(total: int, every: float, stop: threading.Event):
    """A handler that announces ``total`` bytes and sends one every ``every`` seconds (until ``stop``)."""
    def send(h):
        h.send_response(200)
        h.send_header("Content-Length", str(total))
        h.end_headers()
        for _ in range(total):
            if stop.wait(every):
                return
            h.wfile.write(b"x")
            h.wfile.flush()
    return send


def entry(**fields):
    return {"id": "m", "agent": "diffusion-ql", "task": "bandit2d-v0", "sha256": SHA, "size": 1000, **fields}


def snapshot(root: Path, skip: Path):
    """Every file under ``root`` outside ``skip``, with its bytes and mtime."""
    return {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file() and skip not in p.parents}


# --- ids that would become paths outside the cache ----------------------------------------------------------

@pytest.mark.parametrize("bad", ["../../outside", "/tmp/abs", "a/b", "..", ".hidden", "a\\b", "x" * 200, ""])
def test_unsafe_ids_are_refused_everywhere(tmp_path, web, bad):
    outside = tmp_path / "outside-abababababab.zip"
    outside.write_bytes(b"precious")
    before = snapshot(tmp_path, tmp_path / "cache")
    web.body("/m.zip", b"y" * 1000)
    web.body("/index.yaml", yaml.safe_dump({"entries": [entry(id=bad, url="m.zip")]}).encode())
    with pytest.raises(ZooError, match=f"zoo index {web.url}/index.yaml, entry 0.*field 'id' .* is not a valid zoo id"):
        zoo.load_index(f"{web.url}/index.yaml")
    with pytest.raises(ZooError, match="zoo entry id .* is not a valid zoo id"):
        zoo.fetch(bad, index=f"{web.url}/index.yaml", progress=False)
    with pytest.raises(ZooError, match="is not a valid zoo id"):  # an entry made by hand never reaches the file system either
        zoo.fetch(zoo.ZooEntry(id=bad, agent="a", task="t", sha256=SHA, size=1000, location=f"{web.url}/m.zip"), progress=False)
    with pytest.raises(ZooError, match="is not a valid zoo id"):
        dqltoolkit.load(f"zoo:{bad}")
    assert snapshot(tmp_path, tmp_path / "cache") == before  # nothing outside the cache written or deleted


@pytest.mark.parametrize("file", ["../secret.zip", "/etc/hostname", "sub/../../x.zip", "file:///etc/hostname"])
def test_a_file_field_stays_inside_the_index_folder(tmp_path, file):
    index = tmp_path / "idx" / "index.yaml"
    index.parent.mkdir()
    index.write_text(yaml.safe_dump({"entries": [entry(file=file)]}))
    with pytest.raises(ZooError, match=f"zoo index {index}, entry 0 \\('m'\\): field 'file' must be a relative path inside the index's folder"):
        zoo.load_index(str(index))


# --- URLs a remote index may name -----------------------------------------------------------------------------

def test_a_remote_index_cannot_name_local_files(tmp_path, web):
    secret = tmp_path / "secret.txt"
    secret.write_text("not for the index's author")
    for field in ({"url": secret.as_uri()}, {"url": "ftp://127.0.0.1/x.zip"}):
        web.body("/index.yaml", yaml.safe_dump({"entries": [entry(**field)]}).encode())
        with pytest.raises(ZooError, match="entry 0 \\('m'\\): field 'url' resolves to .*; an entry of an http\\(s\\) index may only name http or https URLs"):
            zoo.load_index(f"{web.url}/index.yaml")
    local = tmp_path / "index.yaml"  # a local index is the user's own: file URLs are fine there, ftp is not
    local.write_text(yaml.safe_dump({"entries": [entry(url=secret.as_uri())]}))
    assert zoo.load_index(str(local))["m"].location == secret.as_uri()
    local.write_text(yaml.safe_dump({"entries": [entry(url="ftp://127.0.0.1/x.zip")]}))
    with pytest.raises(ZooError, match="may only name http or https or file URLs"):
        zoo.load_index(str(local))


def test_redirects_leave_http_only(web):
    def redirect(h):
        h.send_response(302)
        h.send_header("Location", "ftp://127.0.0.1:9/m.zip")
        h.end_headers()

    web.routes["/m.zip"] = redirect
    web.body("/index.yaml", yaml.safe_dump({"entries": [entry(url="m.zip")]}).encode())
    with pytest.raises(ZooError, match=f"zoo entry 'm': {web.url}/m.zip answered HTTP 302 \\(redirect to ftp://127.0.0.1:9/m.zip refused"):
        zoo.fetch("m", index=f"{web.url}/index.yaml", progress=False)


# --- index size and YAML ------------------------------------------------------------------------------------------

def test_index_size_is_capped_with_and_without_a_content_length(tmp_path, web):
    big = b"# " + b"x" * (zoo.MAX_INDEX_BYTES + 10) + b"\nentries: []\n"
    web.body("/big.yaml", big)
    web.body("/stream.yaml", big, length=False)  # no Content-Length: the cap applies while reading
    with pytest.raises(ZooError, match=f"zoo index {web.url}/big.yaml: {web.url}/big.yaml announces {len(big)} bytes, more than the limit of 4194304 bytes"):
        zoo.load_index(f"{web.url}/big.yaml")
    with pytest.raises(ZooError, match=f"zoo index {web.url}/stream.yaml is larger than the limit of 4194304 bytes"):
        zoo.load_index(f"{web.url}/stream.yaml")
    (tmp_path / "big.yaml").write_bytes(big)
    with pytest.raises(ZooError, match="big.yaml is larger than the limit of 4194304 bytes"):
        zoo.load_index(str(tmp_path / "big.yaml"))


def alias_bomb() -> str:
    """An index whose entry's metrics are nine levels of nine aliases: under 1 KB, 9**9 = 387 million values
    once expanded (as printing or ``json.dumps`` does)."""
    keys = [f"k{j}" for j in range(9)]
    lines = ["a: &a {" + ", ".join(f"{k}: 1" for k in keys) + "}"]
    lines += [f"{chr(98 + i)}: &{chr(98 + i)} {{" + ", ".join(f"{k}: *{chr(97 + i)}" for k in keys) + "}" for i in range(8)]
    lines.append(f"entries: [{{id: m, agent: diffusion-ql, task: bandit2d-v0, sha256: {SHA}, size: 10, url: 'http://127.0.0.1:9/m.zip', metrics: *i}}]")
    return "\n".join(lines) + "\n"


def test_a_yaml_alias_bomb_is_refused_in_bounded_memory(tmp_path, web):
    bomb = alias_bomb()
    assert len(bomb) < 1000
    web.body("/index.yaml", bomb.encode())
    (tmp_path / "bomb.yaml").write_text(bomb)
    code = f"""
        import json
        from click.testing import CliRunner
        from dqltoolkit.cli import main
        out = []
        for where in ({f"{web.url}/index.yaml"!r}, {str(tmp_path / "bomb.yaml")!r}):
            r = CliRunner().invoke(main, ["zoo", "--index", where, "list", "--json"])
            out.append([r.exit_code, r.output[-500:], repr(r.exception)[:200]])
        print(json.dumps(out))
    """
    for exit_code, output, exc in run_limited(code):
        assert exit_code == 1 and "not valid YAML: anchors and aliases (& and *) are not allowed in a zoo index" in output, (output, exc)


def test_deep_and_undecodable_indexes(tmp_path):
    deep = tmp_path / "deep.yaml"
    deep.write_text("entries: " + "[" * 5000 + "]" * 5000)
    with pytest.raises(ZooError, match=f"zoo index {deep}: (nested too deeply|not valid YAML)"):
        zoo.load_index(str(deep))
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"entries: [\xff\xfe]")
    with pytest.raises(ZooError, match=f"zoo index {binary}: not UTF-8 text"):
        zoo.load_index(str(binary))


# --- deadlines and partial downloads ------------------------------------------------------------------------------------

def test_a_trickling_server_fails_at_the_deadline(web, monkeypatch):
    stop = threading.Event()
    web.routes["/m.zip"] = trickle(1000, 0.05, stop)
    web.body("/index.yaml", yaml.safe_dump({"entries": [entry(url="m.zip")]}).encode())
    monkeypatch.setenv("DQLTOOLKIT_ZOO_DEADLINE", "2")
    started = time.monotonic()
    try:
        with pytest.raises(ZooError, match=f"zoo entry 'm': {web.url}/m.zip did not finish within the deadline of 2 s \\(set DQLTOOLKIT_ZOO_DEADLINE"):
            zoo.fetch("m", index=f"{web.url}/index.yaml", progress=False)
        took = time.monotonic() - started
        web.routes["/index.yaml"] = trickle(1000, 0.05, stop)  # an index too
        with pytest.raises(ZooError, match=f"zoo index {web.url}/index.yaml: {web.url}/index.yaml did not finish within the deadline of 2 s"):
            zoo.load_index(f"{web.url}/index.yaml")
    finally:
        stop.set()
    assert 2 <= took < 6, took
    assert not zoo.cache_root().exists() or list(zoo.cache_root().iterdir()) == []  # no .part left behind


def test_a_silent_server_fails_at_the_deadline(web):
    stop = threading.Event()

    def silent(h):
        h.send_response(200)
        h.send_header("Content-Length", "1000")
        h.end_headers()
        stop.wait(20)

    web.routes["/m.zip"] = silent
    web.body("/index.yaml", yaml.safe_dump({"entries": [entry(url="m.zip")]}).encode())
    started = time.monotonic()
    try:
        with pytest.raises(ZooError, match=f"{web.url}/m.zip did not finish within the deadline of 1 s"):
            zoo.fetch("m", index=f"{web.url}/index.yaml", progress=False, deadline=1)
    finally:
        stop.set()
    assert time.monotonic() - started < 4


def test_bad_deadline_setting(monkeypatch):
    monkeypatch.setenv("DQLTOOLKIT_ZOO_DEADLINE", "soon")
    with pytest.raises(ZooError, match="DQLTOOLKIT_ZOO_DEADLINE='soon': expected a positive number of seconds"):
        zoo.deadline_s()


def test_part_files_of_killed_downloads_are_removed_by_the_next_one(tmp_path, web):
    payload = os.urandom(1000)
    stop = threading.Event()
    web.routes["/slow.zip"] = trickle(1000, 0.05, stop)
    web.body("/m.zip", payload)
    index = {"entries": [entry(url="slow.zip", id="slow"), entry(url="m.zip", sha256=hashlib.sha256(payload).hexdigest())]}
    web.body("/index.yaml", yaml.safe_dump(index).encode())
    cache = zoo.cache_root()
    code = f"""
        from dqltoolkit import zoo
        zoo.cache_root = lambda: __import__("pathlib").Path({str(cache)!r})
        zoo.fetch("slow", index={f"{web.url}/index.yaml"!r}, progress=False)
    """
    killed = subprocess.Popen([sys.executable, "-c", __import__("textwrap").dedent(code)], env={**os.environ, "PYTHONPATH": str(Path(dqltoolkit.__file__).parents[1])})
    try:
        for _ in range(600):  # wait until its .part file exists (its bytes are still in the writer's buffer)
            if cache.exists() and list(cache.glob(".*.part")):
                break
            time.sleep(0.05)
        time.sleep(0.2)
        killed.send_signal(signal.SIGKILL)
        killed.wait(10)
    finally:
        stop.set()
    left = list(cache.glob(".*.part"))
    assert len(left) == 1 and left[0].name.startswith(".slow-")  # what a SIGKILL leaves
    live = cache / ".m-other.zip.123.part"  # a download still running elsewhere: recent, kept
    live.write_bytes(b"in progress")
    old = time.time() - zoo.STALE_PART_S - 60
    os.utime(left[0], (old, old))
    got = zoo.fetch("m", index=f"{web.url}/index.yaml", progress=False)
    assert got.read_bytes() == payload
    assert sorted(p.name for p in cache.iterdir()) == sorted([got.name, live.name])
