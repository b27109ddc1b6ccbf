"""Hostile checkpoints: each case is built from a small real checkpoint made here, and each must end in a
CheckpointError that names the file and the field, tensor or limit, before anything large is allocated.

The cases that would allocate gigabytes without the checks run in a subprocess under an address-space
limit (RLIMIT_AS): enough to import torch and load a tiny agent, far too little for the allocations.
"""

import errno
import json
import os
import struct
import textwrap
import zipfile
import zlib
from pathlib import Path
from typing import Optional

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from dqltoolkit.agent import load_agent
from dqltoolkit.checkpoint import (
    CheckpointError,
    CheckpointWriteError,
    read_checkpoint,
)
from dqltoolkit.cli import main

from ._limits import run_limited
from .conftest import random_table

DOC, TENSORS = "dqltoolkit.json", "tensors.safetensors"


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    """A tiny trained checkpoint with optimiser state (obs 2, act 2 as the bandit task, hidden 16, T 3, one seed)."""
    import gymnasium as gym

    from dqltoolkit import Agent

    from .conftest import tiny_config

    spaces = gym.spaces.Box(-np.inf, np.inf, (2,), np.float32), gym.spaces.Box(-1, 1, (2,), np.float32)
    agent = Agent(tiny_config(), *spaces, seeds=[0], device="cpu")
    agent.set_dataset(random_table(obs_dim=2))
    agent.learn(3)
    return agent.save(tmp_path_factory.mktemp("good") / "good.zip")


def parts(path: Path):
    with zipfile.ZipFile(path) as z:
        return json.loads(z.read(DOC)), dict(st_load(z.read(TENSORS)))


def write(path: Path, doc, tensors, doc_bytes: Optional[bytes] = None) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr(DOC, doc_bytes if doc_bytes is not None else json.dumps(doc))
        z.writestr(TENSORS, st_save({k: v.contiguous() for k, v in tensors.items()}))
    return path


def variant(good: Path, tmp_path: Path, name: str, doc_fn=None, tensors_fn=None) -> Path:
    doc, tensors = parts(good)
    if doc_fn:
        doc = doc_fn(doc) or doc
    if tensors_fn:
        tensors = tensors_fn(tensors) or tensors
    return write(tmp_path / name, doc, tensors)


def raw_zip(path: Path, members) -> Path:
    """A zip written byte by byte, so a test can declare any method, size and CRC: (name, method, payload, size, crc)."""
    out, central = bytearray(), bytearray()
    for name, method, payload, size, crc in members:
        offset, n = len(out), name.encode()
        out += struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, method, 0, 0x21, crc, len(payload), size, len(n), 0) + n + payload
        central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, method, 0, 0x21, crc, len(payload), size, len(n), 0, 0, 0, 0, 0,
                               offset) + n
    eocd = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(members), len(members), len(central), len(out), 0)
    path.write_bytes(bytes(out + central + eocd))
    return path


def deflated(data: bytes) -> bytes:
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    return c.compress(data) + c.flush()


def zero_bomb(gib: int) -> bytes:
    """A raw deflate stream of ``gib`` GiB of zeros, about 1 MB per GiB, made without inflating anything."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = c.compress(bytes(64 << 20)) + c.flush(zlib.Z_SYNC_FLUSH)  # byte-aligned, not final: copies concatenate
    return block * (16 * gib) + b"\x03\x00"  # ... then an empty final block


LOAD_EACH = """
    import json, sys, time
    from dqltoolkit.agent import load_agent
    out = []
    for p in sys.argv[1:] if len(sys.argv) > 1 else PATHS:
        t = time.perf_counter()
        try:
            load_agent(p, device="cpu")
            out.append(["loaded", "", 0.0])
        except BaseException as exc:
            out.append([type(exc).__name__, str(exc), time.perf_counter() - t])
    print(json.dumps(out))
"""


def load_limited(paths) -> list:
    return run_limited(f"PATHS = {[str(p) for p in paths]!r}\n" + textwrap.dedent(LOAD_EACH))


# --- item 7: values that size allocations ----------------------------------------------------------------

def test_sizes_from_the_config_are_checked_before_anything_is_built(good, tmp_path):
    def cfg(**kw):
        return lambda d: {**d, "config": {**d["config"], **kw}}

    cases = {
        "T.zip": (cfg(T=10**9), "config: T=1000000000 is above its maximum 10,000"),
        "hidden.zip": (cfg(hidden=40000), "config: hidden=40000 is above its maximum 16,384"),
        "candidates.zip": (cfg(n_candidates=10**7), "config: n_candidates=10000000 is above its maximum 10,000"),
        "seeds.zip": (lambda d: {**d, "seeds": list(range(200_000))}, "field 'seeds' lists 200000 seeds, more than the limit of 1024"),
        # within the limits, but not what the tensors hold: the header is compared with a meta-device build
        "wide.zip": (cfg(hidden=4096), "in tensors.safetensors is F32 of shape [1, "),
        "two_seeds.zip": (lambda d: {**d, "seeds": [0, 1]}, "field 'seeds' lists 2 seeds, but tensors.safetensors holds 1 rng.train.* states"),
    }
    paths = [variant(good, tmp_path, name, doc_fn=fn) for name, (fn, _) in cases.items()]
    results = load_limited(paths)
    for (name, (_, message)), (kind, text, seconds) in zip(cases.items(), results):
        assert kind == "CheckpointError", (name, kind, text)
        assert str(tmp_path / name) in text and message in text, (name, text)
        assert seconds < 10, (name, seconds)  # (the first includes lazy imports; each is well under a second alone)
    assert "but the agent dqltoolkit.json field 'config' describes has F32 of shape [1, " in results[4][1] and "4096" in results[4][1]


def test_the_meta_build_names_the_tensor_and_the_config(good, tmp_path):
    p = variant(good, tmp_path, "layers.zip", doc_fn=lambda d: {**d, "config": {**d["config"], "n_layers": 4}})
    with pytest.raises(CheckpointError, match=r"layers.zip: tensor 'head\.[^']+' in tensors.safetensors is F32 of shape \[1, 16, 2\], "
                                              r"but the agent dqltoolkit.json field 'config' describes has F32 of shape \[1, 16, 16\]"):
        load_agent(p, device="cpu")
    gone = max(k for k in parts(good)[1] if k.startswith("critic."))
    p = variant(good, tmp_path, "gone.zip", tensors_fn=lambda t: t.pop(gone) is None)
    with pytest.raises(CheckpointError, match=f"gone.zip: tensor '{gone}' in tensors.safetensors is missing; the agent its config describes has it"):
        load_agent(p, device="cpu")


# --- item 6: bounded reads ------------------------------------------------------------------------------------

def test_a_zip_bomb_fails_fast_naming_the_limit(good, tmp_path):
    doc_bytes = json.dumps(parts(good)[0]).encode()
    bomb = zero_bomb(3)
    tensors_bomb = raw_zip(tmp_path / "bomb.zip", [(DOC, 8, deflated(doc_bytes), len(doc_bytes), zlib.crc32(doc_bytes)),
                                                   (TENSORS, 8, bomb, 3 << 30, 0)])
    assert tensors_bomb.stat().st_size < 4 << 20  # a 3 MB file that says it inflates to 3 GiB
    doc_bomb = raw_zip(tmp_path / "docbomb.zip", [(DOC, 8, zero_bomb(1), 1 << 30, 0)])
    (kind, text, seconds), (kind2, text2, _) = load_limited([tensors_bomb, doc_bomb])
    assert kind == "CheckpointError" and seconds < 10, (kind, text)
    assert f"{tensors_bomb}: tensors.safetensors inflates to 3221225472 bytes (3072 MiB), more than the limit of" in text
    assert "64 x the file's" in text and "at most 8 GiB" in text
    assert kind2 == "CheckpointError" and f"{doc_bomb}: dqltoolkit.json inflates to 1073741824 bytes" in text2 and "limit of 4194304 bytes" in text2


def test_a_header_that_declares_more_than_the_limit_is_refused_before_reading_data(good, tmp_path):
    doc = parts(good)[0]
    header = json.dumps({"x": {"dtype": "F32", "shape": [1 << 33], "data_offsets": [0, 1 << 35]}}).encode()
    body = struct.pack("<Q", len(header)) + header + bytes(64)
    p = raw_zip(tmp_path / "hdr.zip", [(DOC, 0, json.dumps(doc).encode(), len(json.dumps(doc)), zlib.crc32(json.dumps(doc).encode())),
                                       (TENSORS, 0, body, len(body), zlib.crc32(body))])
    with pytest.raises(CheckpointError, match=r"hdr.zip: tensors.safetensors: its header declares 343597384\d\d bytes .* more than the limit of 67108864 bytes"):
        read_checkpoint(p)
    body = struct.pack("<Q", 1 << 40) + bytes(64)
    p = raw_zip(tmp_path / "hdr2.zip", [(DOC, 0, json.dumps(doc).encode(), len(json.dumps(doc)), zlib.crc32(json.dumps(doc).encode())),
                                        (TENSORS, 0, body, len(body), zlib.crc32(body))])
    with pytest.raises(CheckpointError, match=r"hdr2.zip: tensors.safetensors declares a header of 1099511627776 bytes, more than the limit of 16777216"):
        read_checkpoint(p)


# --- item 5: optimiser state ------------------------------------------------------------------------------------

@pytest.mark.parametrize("key, change, message", [
    ("optim.actor.0.exp_avg", lambda t: torch.zeros(t.numel() * 4), "is F32 of shape \\[\\d+\\], but its parameter is F32 of shape"),
    ("optim.critic.1.exp_avg_sq", lambda t: t[..., :1].clone(), "but its parameter is F32 of shape"),
    ("optim.actor.0.exp_avg", lambda t: t.double(), "is F64 of shape"),
    ("optim.actor.0.step", lambda t: torch.zeros(5), "is F32 of shape \\[5\\]; an Adam step count is an F32 scalar"),
    ("optim.actor.0.step", lambda t: torch.tensor(3, dtype=torch.int64), "is I64 of shape \\[\\]; an Adam step count is an F32 scalar"),
    ("optim.actor.999.exp_avg", lambda t: torch.zeros(1), "names parameter 999 of the actor optimiser, which has \\d+"),
    ("optim.actor.0.exp_avg_sq", lambda t: -t - 1, "holds negative values"),
    ("optim.actor.0.momentum", lambda t: torch.zeros(1), "is not Adam state"),
    ("optim.actor.0.exp_avg_sq", None, "'optim.actor.0.exp_avg_sq' in tensors.safetensors is missing; the parameter's other Adam state"),
])
def test_optimiser_state_is_checked_against_the_parameters(good, tmp_path, key, change, message):
    def edit(t):
        if change is None:
            del t[key]
        else:
            t[key] = change(t.get(key, torch.zeros(1)))

    p = variant(good, tmp_path, "opt.zip", tensors_fn=edit)
    with pytest.raises(CheckpointError) as info:
        load_agent(p, device="cpu")
    import re

    assert str(p) in str(info.value) and re.search(message, str(info.value)), str(info.value)
    if "missing" not in message:
        assert f"'{key}'" in str(info.value)


def test_train_resume_with_a_wrong_moment_fails_cleanly(good, tmp_path):
    """Before: the fused Adam kernel wrote out of bounds (a segmentation fault). A subprocess, so a crash shows as one."""
    p = variant(good, tmp_path, "resume.zip", tensors_fn=lambda t: t.update({"optim.actor.0.exp_avg": t["optim.actor.0.exp_avg"].flatten()[:1].clone()}))
    code = f"""
        import json
        from click.testing import CliRunner
        from dqltoolkit.cli import main
        r = CliRunner().invoke(main, ["train", "--env", "bandit2d-v0", "--resume", {str(p)!r}, "--steps", "2", "--out", {str(tmp_path / 'out')!r}, "--no-progress"])
        print(json.dumps([r.exit_code, r.output]))
    """
    exit_code, output = run_limited(code)
    assert exit_code == 1 and f"{p}: tensor 'optim.actor.0.exp_avg' in tensors.safetensors is F32 of shape" in output, output


# --- item 9: damage and misleading messages ---------------------------------------------------------------------

def test_unsupported_compression_and_encryption(good, tmp_path):
    doc = json.dumps(parts(good)[0]).encode()
    p = raw_zip(tmp_path / "bz.zip", [(DOC, 12, b"BZh9" + bytes(20), len(doc), 0)])
    with pytest.raises(CheckpointError, match=r"bz.zip: dqltoolkit.json uses zip compression method 12; only stored and deflate are supported"):
        read_checkpoint(p)
    p = raw_zip(tmp_path / "aes.zip", [(DOC, 99, bytes(30), len(doc), 0)])
    with pytest.raises(CheckpointError, match="aes.zip: dqltoolkit.json uses zip compression method 99"):
        read_checkpoint(p)


def test_a_corrupt_deflate_stream_is_a_checkpoint_error(good, tmp_path):
    doc = json.dumps(parts(good)[0]).encode()
    stream = bytearray(deflated(doc))
    stream[len(stream) // 2: len(stream) // 2 + 8] = b"\xff" * 8
    p = raw_zip(tmp_path / "z.zip", [(DOC, 8, bytes(stream), len(doc), zlib.crc32(doc))])
    with pytest.raises(CheckpointError, match=r"z.zip: dqltoolkit.json is damaged \((error|BadZipFile|EOFError)"):
        read_checkpoint(p)


def test_a_wrong_crc_in_a_stored_member_is_found(good, tmp_path):
    doc, tensors = parts(good)
    d, body = json.dumps(doc).encode(), bytearray(st_save(tensors))
    crc = zlib.crc32(bytes(body))
    body[-3] ^= 1  # one bit of the last tensor's data, after the CRC was taken
    p = raw_zip(tmp_path / "crc.zip", [(DOC, 0, d, len(d), zlib.crc32(d)), (TENSORS, 0, bytes(body), len(body), crc)])
    with pytest.raises(CheckpointError, match="crc.zip: tensors.safetensors is damaged \\(BadZipFile: Bad CRC-32"):
        read_checkpoint(p)


def test_deeply_nested_json(good, tmp_path):
    deep = b"[" * 200_000 + b"]" * 200_000
    p = write(tmp_path / "deep.zip", None, parts(good)[1], doc_bytes=deep)
    with pytest.raises(CheckpointError, match="deep.zip: dqltoolkit.json is nested too deeply"):
        read_checkpoint(p)
    p = write(tmp_path / "num.zip", None, parts(good)[1], doc_bytes=b"{\"format\": " + b"9" * 5000 + b"}")
    with pytest.raises(CheckpointError, match="num.zip: dqltoolkit.json is not valid JSON"):
        read_checkpoint(p)


@pytest.mark.parametrize("change, message", [
    (lambda t: t.__setitem__("rng.train.0", t["rng.train.0"].float()), "'rng.train.0' in tensors.safetensors is F32 \\[5056\\]; a generator state is a 1-D U8"),
    (lambda t: t.__setitem__("rng.act.0", t["rng.act.0"][:16].clone()), "'rng.act.0' in tensors.safetensors holds 16 bytes; a cpu generator's state has 5056"),
    (lambda t: t.__setitem__("rng.act.0", t["rng.act.0"].reshape(2, -1).clone()), "'rng.act.0' in tensors.safetensors is U8 \\[2, 2528\\]"),
    (lambda t: t.__setitem__("obs_std", torch.zeros(2)), "'obs_std' in tensors.safetensors holds values <= 0"),
    (lambda t: t.__setitem__("obs_mean", torch.zeros(4)), "'obs_mean' in tensors.safetensors is \\('F32', \\(4,\\)\\); expected F32 of shape \\(2,\\)"),
    (lambda t: t.__setitem__("extra.thing", torch.zeros(1)), "'extra.thing' in tensors.safetensors is not part of the agent"),
])
def test_rng_and_statistics_of_the_wrong_form(good, tmp_path, change, message):
    p = variant(good, tmp_path, "rng.zip", tensors_fn=change)
    with pytest.raises(CheckpointError, match=f"rng.zip: tensor {message}"):
        load_agent(p, device="cpu")


@pytest.mark.parametrize("change, message", [
    (lambda d: d.pop("seeds"), "lacks the field 'seeds'"),
    (lambda d: d.pop("observation_space"), "lacks the field 'observation_space'"),
    (lambda d: d.update(seeds="0"), "field 'seeds' must be a non-empty list"),
    (lambda d: d.update(format_version=[1]), "field 'format_version' must be a whole number"),
    (lambda d: d["action_space"].update(shape=[10**9]), "field 'action_space': 'shape' must be \\[n\\] with 1 <= n <= 65536 \\(the limit\\)"),
    (lambda d: d["action_space"].update(high=[1.0]), "field 'action_space': 'high' must be a list of 2 numbers"),
    (lambda d: d["config"].update(tau=float("nan")), "config: tau=nan is not a finite number"),
    (lambda d: d["config"].update(batch_size=0), "batch_size=0 is below its minimum 1"),
    (lambda d: d["config"].update(hidden="wide"), "config: hidden='wide' is not a valid int"),
    (lambda d: d.update(num_timesteps=-5), "field 'num_timesteps' must be a whole number from 0"),
])
def test_document_fields_are_checked(good, tmp_path, change, message):
    def edit(d):
        change(d)
        return d

    p = variant(good, tmp_path, "doc.zip", doc_fn=edit)
    with pytest.raises(CheckpointError, match=f"doc.zip.*{message}"):
        load_agent(p, device="cpu")


def test_unknown_head_is_named_as_unknown_with_the_known_ones(good, tmp_path):
    p = variant(good, tmp_path, "head.zip", doc_fn=lambda d: d["config"].update(head="difusion"))
    with pytest.raises(CheckpointError, match=r"head.zip: dqltoolkit.json field 'config.head' names an unknown head 'difusion'; known heads: .*diffusion"):
        load_agent(p, device="cpu")


def test_init_from_a_checkpoint_that_lacks_a_field(good, tmp_path):
    p = variant(good, tmp_path, "noconfig.zip", doc_fn=lambda d: d.pop("config") and None)
    res = CliRunner().invoke(main, ["train", "--env", "bandit2d-v0", "--init", str(p), "--steps", "1", "--out", str(tmp_path / "o"), "--no-progress"])
    assert res.exit_code == 1 and f"{p}: dqltoolkit.json lacks the field 'config'" in res.output, res.output


def test_a_directory_is_named_as_one(tmp_path):
    with pytest.raises(CheckpointError, match=f"{tmp_path} is a directory, not a checkpoint file"):
        load_agent(tmp_path, device="cpu")


def test_a_full_disk_while_saving(good, tmp_path, monkeypatch):
    import dqltoolkit.checkpoint as ck

    agent = load_agent(good, device="cpu")
    path = agent.save(tmp_path / "model.zip")
    before = path.read_bytes()
    real_fsync = os.fsync

    def full(fd):
        real_fsync(fd)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ck.os, "fsync", full)
    with pytest.raises(CheckpointWriteError, match=f"\\[Errno 28\\] could not write {path}: No space left on device \\(ENOSPC\\); the previous file there is unchanged") as info:
        agent.save(path)
    assert info.value.errno == errno.ENOSPC and isinstance(info.value, OSError) and isinstance(info.value, CheckpointError)
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["model.zip"]
    with pytest.raises(CheckpointWriteError, match=f"could not write {tmp_path / 'new.zip'}: .*; nothing was written"):
        agent.save(tmp_path / "new.zip")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.zip"]


# --- item 10: non-finite weights ---------------------------------------------------------------------------------

def test_nan_weights_are_refused_naming_the_tensor(good, tmp_path):
    head_key = min(k for k in parts(good)[1] if k.startswith("head.") and k.endswith(".weight"))

    def poison(t):
        t[head_key] = t[head_key].clone()
        t[head_key].view(-1)[3] = float("nan")

    p = variant(good, tmp_path, "nan.zip", tensors_fn=poison)
    with pytest.raises(CheckpointError, match=f"nan.zip: tensor '{head_key}' in tensors.safetensors holds 1 non-finite value\\(s\\) \\(NaN or Inf\\); refusing"):
        load_agent(p, device="cpu")
    res = CliRunner().invoke(main, ["evaluate", str(p), "--env", "bandit2d-v0", "--episodes", "2"])
    assert res.exit_code == 1 and "non-finite" in res.output
    agent = load_agent(p, device="cpu", allow_nonfinite=True)  # the explicit override, e.g. to inspect a diverged run
    assert torch.isnan(agent.head.state_dict()[head_key[len("head."):]]).sum() == 1


# --- random damage --------------------------------------------------------------------------------------------------

def test_random_byte_corruptions_end_in_checkpoint_error_or_load_unchanged(good, tmp_path):
    """300 seeded corruptions (flipped, overwritten or inserted bytes, truncations) of a tiny checkpoint: each
    either ends in a CheckpointError or loads the very same tensors (a byte no reader uses, e.g. a timestamp)."""
    data = good.read_bytes()
    want = parts(good)[1]
    rng = np.random.default_rng(14)
    outcomes = {"CheckpointError": 0, "unchanged": 0}
    p = tmp_path / "bad.zip"
    for i in range(300):
        b = bytearray(data)
        kind = i % 4
        if kind == 0:
            for pos in rng.integers(0, len(b), rng.integers(1, 4)):
                b[pos] ^= 1 << int(rng.integers(0, 8))
        elif kind == 1:
            pos = int(rng.integers(0, len(b) - 8))
            b[pos:pos + 8] = rng.integers(0, 256, 8, dtype=np.uint8).tobytes()
        elif kind == 2:
            pos = int(rng.integers(0, len(b)))
            b[pos:pos] = rng.integers(0, 256, int(rng.integers(1, 16)), dtype=np.uint8).tobytes()
        else:
            b = b[: int(rng.integers(0, len(b)))]
        p.write_bytes(bytes(b))
        try:
            _, got = read_checkpoint(p)
        except CheckpointError as exc:
            assert str(p) in str(exc)
            outcomes["CheckpointError"] += 1
            continue
        assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want), f"corruption {i} changed the tensors silently"
        outcomes["unchanged"] += 1
    assert outcomes["CheckpointError"] >= 270, outcomes


def _online(n=5, obs=2, act=2, seeds=1):
    return {"online.obs": torch.zeros(seeds, n, obs), "online.next_obs": torch.zeros(seeds, n, obs),
            "online.actions": torch.zeros(seeds, n, act), "online.rewards": torch.zeros(seeds, n), "online.terminals": torch.zeros(seeds, n)}


@pytest.mark.parametrize("tables, doc_change, message", [
    ({"online.obs": torch.zeros(1, 5, 2)}, None, "holds online.obs; online experience is the five tables online.obs"),
    ({**_online(), "online.obs": torch.zeros(1, 5, 3)}, None,
     "tensor 'online.obs' in tensors.safetensors is F32 of shape \\[1, 5, 3\\]; expected F32 \\[seeds=1, n, 2\\]"),
    ({**_online(), "online.rewards": torch.zeros(1, 4)}, None, "tensor 'online.rewards' .* with one n for all five tables"),
    ({**_online(), "online.terminals": torch.zeros(1, 5, dtype=torch.float64)}, None, "tensor 'online.terminals' in tensors.safetensors is F64"),
    (_online(), lambda d: d.update(online_added=3), "field 'online_added' is 3; expected an integer >= 5"),
    (_online(), lambda d: d.update(has_optimizer=False), "in a training checkpoint \\(has_optimizer true\\)"),
])
def test_online_experience_of_the_wrong_form(good, tmp_path, tables, doc_change, message):
    """A fine-tune's experience (dqltoolkit/online.py) is checked like every other tensor, before it is restored."""
    p = variant(good, tmp_path, "online.zip", doc_fn=doc_change, tensors_fn=lambda t: t.update(tables))
    with pytest.raises(CheckpointError, match=f"online.zip: .*{message}"):
        load_agent(p, device="cpu")


def test_online_experience_in_the_right_form_is_restored(good, tmp_path):
    tables = _online(n=5)
    tables["online.rewards"] = torch.arange(5.0).reshape(1, 5)
    p = variant(good, tmp_path, "online.zip", doc_fn=lambda d: d.update(online_added=9), tensors_fn=lambda t: t.update(tables))
    buf = load_agent(p, device="cpu").learner.online_buffer
    assert (buf.size, buf.added) == (5, 9)
    torch.testing.assert_close(buf.chronological()["rewards"], tables["online.rewards"])
