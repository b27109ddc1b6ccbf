import json
import zipfile

import pytest

import dqltoolkit
from dqltoolkit.checkpoint import CheckpointError


def test_checkpoint_holds_json_and_safetensors_only(tiny_agent, tmp_path):
    path = tiny_agent.save(tmp_path / "m")
    assert path.name == "m.zip"
    with zipfile.ZipFile(path) as z:
        assert sorted(z.namelist()) == ["dqltoolkit.json", "tensors.safetensors"]
        doc = json.loads(z.read("dqltoolkit.json"))
    assert doc["format"] == "dqltoolkit-agent" and doc["config"]["T"] == 3
    assert doc["observation_space"]["shape"] == [3]


def test_not_ours(tmp_path):
    p = tmp_path / "other.zip"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("data", "{}")
        z.writestr("policy.pth", b"\x80\x04")
    with pytest.raises(CheckpointError, match=r"other.zip is not a dqltoolkit checkpoint: the zip has no dqltoolkit.json"):
        dqltoolkit.load(p)


def test_truncated_and_garbage(tiny_agent, tmp_path):
    good = tiny_agent.save(tmp_path / "good.zip")
    data = good.read_bytes()
    cut = tmp_path / "cut.zip"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cut.zip is not a readable dqltoolkit checkpoint \\(truncated or not a zip"):
        dqltoolkit.load(cut)
    junk = tmp_path / "junk.zip"
    junk.write_text("hello")
    with pytest.raises(CheckpointError, match="junk.zip"):
        dqltoolkit.load(junk)
    with pytest.raises(FileNotFoundError, match="missing.zip does not exist"):
        dqltoolkit.load(tmp_path / "missing.zip")


def test_wrong_format_field(tiny_agent, tmp_path):
    p = tmp_path / "fake.zip"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("dqltoolkit.json", json.dumps({"format": "something-else"}))
        z.writestr("tensors.safetensors", b"")
    with pytest.raises(CheckpointError, match="expected 'dqltoolkit-agent'"):
        dqltoolkit.load(p)


def test_save_is_atomic(tiny_agent, tmp_path, monkeypatch):
    import dqltoolkit.checkpoint as ck

    path = tiny_agent.save(tmp_path / "model.zip")
    before = path.read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(ck.os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        tiny_agent.save(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["model.zip"]


def test_saved_file_follows_the_umask_not_mkstemps_private_mode(tiny_agent, tmp_path):
    import os
    import stat

    old = os.umask(0o022)
    try:
        path = tiny_agent.save(tmp_path / "model.zip")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # readable by others, as any file the user writes
