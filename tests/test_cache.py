"""The private cache: created 0700, refused when someone else could write it, and native libraries loaded
only when their bytes match the SHA-256 recorded when they were built."""

import json
import os
import shutil
import subprocess

import pytest
from click.testing import CliRunner

from dqltoolkit import _native
from dqltoolkit._cache import CacheError, private_dir, sidecar

HAS_CC = bool(os.environ.get("CC") or shutil.which("gcc") or shutil.which("cc"))
needs_cc = pytest.mark.skipif(not HAS_CC, reason="needs a C compiler")


def _refused_library(match):
    """fused_ops() gives up on an unsafe cache, saying why where it would have built (a compiler is there)."""
    if not HAS_CC:  # no compiler: nothing is built or loaded anyway, and nothing to say
        assert _native.fused_ops() is None
        return
    with pytest.warns(RuntimeWarning, match=match):
        assert _native.fused_ops() is None


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DQLTOOLKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    return tmp_path / "cache"


@pytest.fixture
def fresh_native():
    """fused_ops() is cached per process: each test loads from its own cache folder, and the rest of the
    suite from the usual one again afterwards."""
    _native.fused_ops.cache_clear()
    yield
    _native.fused_ops.cache_clear()


def test_cache_folders_are_created_private_and_tightened(cache):
    assert (private_dir("build", "x") / "..").resolve() == cache / "build"
    for p in (cache, cache / "build", cache / "build" / "x"):
        assert p.stat().st_mode & 0o777 == 0o700
    os.chmod(cache, 0o755)  # made by an older version: ours, readable by others
    private_dir()
    assert cache.stat().st_mode & 0o777 == 0o700


@pytest.mark.parametrize("mode, who", [(0o770, "group"), (0o707, "others"), (0o777, "group and others")])
def test_a_cache_others_can_write_is_refused_and_nothing_is_loaded_from_it(cache, fresh_native, mode, who):
    cache.mkdir()
    os.chmod(cache, mode)
    with pytest.raises(CacheError, match=f"the cache folder {cache} is writable by {who} \\(mode {mode:03o}\\).*chmod 700"):
        private_dir()
    _refused_library(f"fused CPU operators are not loaded: the cache folder {cache} is writable by {who}")
    assert os.listdir(cache) == []


@pytest.mark.skipif(not hasattr(os, "getuid") or os.getuid() != 0, reason="giving a folder to another user needs root")
def test_a_cache_owned_by_another_user_is_refused(cache, fresh_native):
    cache.mkdir(mode=0o700)
    os.chown(cache, 65534, -1)
    with pytest.raises(CacheError, match=f"the cache folder {cache} belongs to uid 65534, not to you \\(uid 0\\)"):
        private_dir()
    _refused_library("fused CPU operators are not loaded: the cache folder .* belongs to uid 65534")


def test_a_dataset_build_refuses_an_unsafe_cache_with_a_clear_message(cache):
    from dqltoolkit.cli import main

    cache.mkdir()
    os.chmod(cache, 0o777)
    r = CliRunner().invoke(main, ["dataset", "build", "hopper", "--levels", "random"])
    assert r.exit_code == 1 and f"the cache folder {cache} is writable by group and others" in r.output and "Traceback" not in r.output


EVIL_C = """
#include <stdio.h>
__attribute__((constructor)) static void planted(void) { FILE *f = fopen("%s", "w"); if (f) { fputs("ran", f); fclose(f); } }
int dql_answer(void) { return 13; }
"""
GOOD_C = "int dql_answer(void) { return 42; }\n"


def _compile(src_text, tmp_path, out):
    src = tmp_path / f"{out.stem}.c"
    src.write_text(src_text)
    proc = subprocess.run([shutil.which("gcc") or shutil.which("cc"), "-shared", "-fPIC", str(src), "-o", str(out)], capture_output=True)
    return proc.stderr.decode()[-300:] if proc.returncode else ""


def _evil_library(tmp_path):
    marker = tmp_path / "planted-code-ran.txt"
    out = tmp_path / "evil.so"
    assert _compile(EVIL_C % marker, tmp_path, out) == ""
    return out, marker


def _plant(evil, so):
    """Replace ``so`` by a new file (not in place: the loaded library maps the old one)."""
    tmp = so.with_name("planted.tmp")
    shutil.copy(evil, tmp)
    os.replace(tmp, so)


def _load_answer(tmp_path):
    """A library through the cache's verified loader (the fused operators' path, with a tiny C source)."""
    import ctypes

    lib = _native._verified_library("dql_test_answer.so", lambda out: _compile(GOOD_C, tmp_path, out), ctypes.CDLL)
    return lib.dql_answer()


@needs_cc
def test_a_built_library_is_recorded_and_a_replaced_one_is_never_loaded(cache, tmp_path):
    import hashlib

    assert _load_answer(tmp_path) == 42
    (so,) = cache.glob("dql_test_answer*.so")
    record = json.loads(sidecar(so).read_text())
    assert record["sha256"] == hashlib.sha256(so.read_bytes()).hexdigest() and record["file"] == so.name
    assert not list(cache.glob(".dql_test_answer*"))  # the fresh build name is gone

    evil, marker = _evil_library(tmp_path)
    _plant(evil, so)  # someone replaced the library under its predictable name
    with pytest.warns(RuntimeWarning, match=f"{so} does not match the SHA-256 recorded when it was built"):
        assert _load_answer(tmp_path) == 42
    assert not marker.exists()
    assert so.read_bytes() != evil.read_bytes()  # rebuilt
    assert json.loads(sidecar(so).read_text())["sha256"] == hashlib.sha256(so.read_bytes()).hexdigest()

    _plant(evil, so)  # a library without a recorded digest (an older version's cache) is rebuilt, not loaded
    sidecar(so).unlink()
    assert _load_answer(tmp_path) == 42 and not marker.exists()
    assert so.read_bytes() != evil.read_bytes() and sidecar(so).is_file()
