"""The Hugging Face Hub: `dqltoolkit hub push` and hf:ORG/NAME checkpoints, with the real huggingface_hub
client against a Hub-compatible server on 127.0.0.1 (tests/hub_server.py); nothing touches the internet."""

import hashlib
import json
import os
import shutil
import socket
import sys

import numpy as np
import pytest
import yaml

pytest.importorskip("huggingface_hub")

import huggingface_hub  # noqa: E402
import huggingface_hub.constants  # noqa: E402
from click.testing import CliRunner  # noqa: E402

import dqltoolkit  # noqa: E402
from dqltoolkit import hub  # noqa: E402
from dqltoolkit.cli import main  # noqa: E402
from dqltoolkit.hub import HubError, HubRef, parse_ref  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from hub_server import FakeHub  # noqa: E402

TINY_RUN = {"T": 3, "hidden": 16, "critic_hidden": 16, "time_dim": 8, "batch_size": 32, "n_candidates": 4, "log_every": 10}
CKPT = "diffusion-ql-bandit2d-v0.zip"  # huggingface_sb3's {agent}-{task} naming


@pytest.fixture(scope="module")
def server():
    fake = FakeHub(user="dql-tester")
    fake.start()
    yield fake
    fake.stop()


@pytest.fixture
def hub_env(server, tmp_path, monkeypatch):
    """The client pointed at the local server, its cache in tmp_path, a dummy token, online."""
    monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setenv("HF_TOKEN", "hf_dummy_token_for_tests")
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    # the client reads HF_HUB_OFFLINE once, at import: a machine that exports it must not turn these tests offline
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    # and no request may leave this machine: a host name other than 127.0.0.1 fails at once
    real = socket.getaddrinfo

    def local_only(host, *args, **kwargs):
        if host not in ("127.0.0.1", "localhost"):
            raise socket.gaierror(socket.EAI_NONAME, f"test_hub: no network access (asked for {host})")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", local_only)
    return server


@pytest.fixture(scope="module")
def bandit_run(tmp_path_factory):
    """A tiny Diffusion-QL run on the 2-D bandit (30 steps): model.zip, config.yaml, results.json, metrics.csv."""
    from dqltoolkit.training import train

    out = tmp_path_factory.mktemp("run")
    train("diffusion-ql", "bandit2d-v0", out, steps=30, overrides=TINY_RUN, progress=False, verbose=False, device="cpu")
    return out


def api(server):
    return huggingface_hub.HfApi(endpoint=server.endpoint, token="hf_dummy_token_for_tests")


def sha256(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def actions(model, n=16):
    model.set_random_seed(7)
    obs = np.zeros((n, model.observation_space.shape[0]), np.float32)
    return model.predict(obs)[0]


def test_push_then_load_round_trip(hub_env, bandit_run):
    res = hub.push(bandit_run, "lab/tiny-bandit")
    assert res.repo_id == "lab/tiny-bandit" and res.revision == "main" and len(res.commit) == 40
    info = api(hub_env).model_info("lab/tiny-bandit")
    assert {s.rfilename for s in info.siblings} >= {CKPT, "config.yaml", "results.json", "metrics.csv", "README.md"}
    assert info.private is False and info.sha == res.commit
    # the file on the Hub is the checkpoint as it is, byte for byte
    remote = huggingface_hub.hf_hub_download("lab/tiny-bandit", CKPT, endpoint=hub_env.endpoint, cache_dir=os.environ["HF_HUB_CACHE"])
    assert open(remote, "rb").read() == (bandit_run / "model.zip").read_bytes()

    loaded = dqltoolkit.load("hf:lab/tiny-bandit", device="cpu")
    local = dqltoolkit.load(bandit_run / "model.zip", device="cpu")
    assert loaded.num_timesteps == local.num_timesteps == 30 and loaded.task == "bandit2d-v0"
    np.testing.assert_array_equal(actions(loaded), actions(local))
    # the resolved path lives in the client's cache under HF_HUB_CACHE
    path = hub.resolve_hf("hf:lab/tiny-bandit")
    assert str(path).startswith(os.environ["HF_HUB_CACHE"]) and path.name == CKPT and sha256(path) == res.sha256


def test_model_card_metadata_and_text(hub_env, bandit_run):
    hub.push(bandit_run, "lab/card")
    card_path = huggingface_hub.hf_hub_download("lab/card", "README.md", endpoint=hub_env.endpoint, cache_dir=os.environ["HF_HUB_CACHE"])
    text = open(card_path, encoding="utf-8").read()
    meta = yaml.safe_load(text.split("---")[1])
    results = json.loads((bandit_run / "results.json").read_text())
    evaluation = results["evaluation"][0]

    assert meta["library_name"] == "dqltoolkit" and meta["pipeline_tag"] == "reinforcement-learning"
    assert {"offline-rl", "reinforcement-learning", "diffusion-policy", "diffusion-ql", "bandit2d-v0"} <= set(meta["tags"])
    rec = meta["dqltoolkit"]
    assert rec["checkpoint"] == CKPT and rec["sha256"] == sha256(bandit_run / "model.zip")
    assert rec["size"] == (bandit_run / "model.zip").stat().st_size
    assert (rec["task"], rec["dataset"], rec["agent"], rec["steps"], rec["seeds"]) == ("bandit2d-v0", "bandit2d", "diffusion-ql", 30, [0])

    (entry,) = meta["model-index"]
    assert entry["name"] == "diffusion-ql-bandit2d-v0"
    (result,) = entry["results"]
    assert result["task"]["type"] == "reinforcement-learning"
    assert result["dataset"] == {"type": "bandit2d", "name": "bandit2d-v0", "args": {"n": 10000, "seed": 0}}
    metrics = {m["type"]: m for m in result["metrics"]}
    assert metrics["mean_return"]["value"] == pytest.approx(evaluation["mean_return"], abs=1e-4)
    assert metrics["mean_reward"]["value"] == f"{evaluation['mean_return']:.2f} +/- {evaluation['std_return']:.2f}"
    assert metrics["best_mode_share"]["value"] == pytest.approx(evaluation["best_mode_share"], abs=1e-4)
    assert metrics["mean_return"]["args"] == {"episodes": 1000, "seeds": [0], "steps": 30}

    # the Hub's own card parser reads the evaluation results back
    parsed = huggingface_hub.ModelCard(text)
    assert parsed.data.library_name == "dqltoolkit"
    assert {r.metric_type for r in parsed.data.eval_results} == {"mean_reward", "mean_return", "best_mode_share"}

    # the text: how to load it, how it was trained (the -p overrides that made this run), the digest
    assert 'dqltoolkit.load("hf:lab/card")' in text and "dqltoolkit evaluate hf:lab/card" in text
    command = next(line for line in text.splitlines() if line.startswith("dqltoolkit train --agent diffusion-ql --env bandit2d-v0 --steps 30 --seed 0 "))
    assert " -p T=3" in command and " -p hidden=16" in command
    assert rec["sha256"] in text.split("---", 2)[2]
    remote_config = huggingface_hub.hf_hub_download("lab/card", "config.yaml", endpoint=hub_env.endpoint,
                                                    cache_dir=os.environ["HF_HUB_CACHE"])
    config = yaml.safe_load(open(remote_config).read())
    assert config["config"]["T"] == 3 and config["env"] == "bandit2d-v0"


def test_default_name_own_namespace_private_and_revision(hub_env, bandit_run):
    res = hub.push(bandit_run / "model.zip", revision="v1", private=True)
    assert res.repo_id == "dql-tester/diffusion-ql-bandit2d-v0" and res.revision == "v1"
    assert api(hub_env).model_info(res.repo_id).private is True
    card = huggingface_hub.hf_hub_download(res.repo_id, "README.md", revision="v1", endpoint=hub_env.endpoint,
                                           cache_dir=os.environ["HF_HUB_CACHE"])
    assert 'dqltoolkit.load("hf:dql-tester/diffusion-ql-bandit2d-v0@v1")' in open(card, encoding="utf-8").read()
    loaded = dqltoolkit.load(f"hf:{res.repo_id}@v1", device="cpu")
    np.testing.assert_array_equal(actions(loaded), actions(dqltoolkit.load(bandit_run / "model.zip", device="cpu")))
    # a commit hash works as the revision too; main never got the files
    assert hub.resolve_hf(f"hf:{res.repo_id}@{res.commit}").name == CKPT
    with pytest.raises(HubError, match=r"has no file 'README.md' at revision main; was it pushed with `dqltoolkit hub push`"):
        dqltoolkit.load(f"hf:{res.repo_id}", device="cpu")
    with pytest.raises(HubError, match=r"has no revision 'v9'"):
        hub.resolve_hf(f"hf:{res.repo_id}@v9")


def test_digest_mismatch_is_refused(hub_env, bandit_run, tmp_path):
    hub.push(bandit_run, "lab/swapped")
    # someone uploads another (valid) checkpoint under the same name without pushing a new card
    other = dqltoolkit.load(bandit_run / "model.zip", device="cpu")
    other.num_timesteps = 999
    other_path = other.save(tmp_path / "other.zip")
    api(hub_env).upload_file(path_or_fileobj=str(other_path), path_in_repo=CKPT, repo_id="lab/swapped")
    with pytest.raises(HubError) as err:
        dqltoolkit.load("hf:lab/swapped", device="cpu")
    msg = str(err.value)
    assert "hf:lab/swapped" in msg and CKPT in msg and "nothing was loaded" in msg
    assert sha256(other_path) in msg and sha256(bandit_run / "model.zip") in msg
    # the CLI says the same, without a traceback
    out = CliRunner().invoke(main, ["evaluate", "hf:lab/swapped"])
    assert out.exit_code == 1 and sha256(other_path) in out.output and "Traceback" not in out.output


def test_missing_file_repo_and_card_errors(hub_env, bandit_run):
    hub.push(bandit_run, "lab/gone")
    api(hub_env).delete_file(CKPT, repo_id="lab/gone")
    with pytest.raises(HubError, match=r"hf:lab/gone \(diffusion-ql-bandit2d-v0.zip\): the repo lab/gone has no file "
                                       r"'diffusion-ql-bandit2d-v0.zip' at revision [0-9a-f]{40}"):
        dqltoolkit.load("hf:lab/gone", device="cpu")
    with pytest.raises(HubError, match=r"no repo nobody/nothing on http://127\.0\.0\.1"):
        dqltoolkit.load("hf:nobody/nothing", device="cpu")
    # a card without the dqltoolkit record: nothing unverified is loaded
    client = api(hub_env)
    client.create_repo("lab/handmade")
    hand_made = b"---\nlibrary_name: dqltoolkit\n---\n# hand-made\n"
    client.upload_file(path_or_fileobj=hand_made, path_in_repo="README.md", repo_id="lab/handmade")
    client.upload_file(path_or_fileobj=str(bandit_run / "model.zip"), path_in_repo="model.zip", repo_id="lab/handmade")
    with pytest.raises(HubError, match=r"no 'dqltoolkit' section naming the checkpoint and its SHA-256"):
        dqltoolkit.load("hf:lab/handmade", device="cpu")
    bad_digest = b"---\ndqltoolkit: {checkpoint: model.zip, sha256: abc}\n---\n"
    client.upload_file(path_or_fileobj=bad_digest, path_in_repo="README.md", repo_id="lab/handmade")
    with pytest.raises(HubError, match=r"field 'dqltoolkit.sha256' must be 64 lower-case hex digits, got 'abc'"):
        dqltoolkit.load("hf:lab/handmade", device="cpu")


def test_offline_mode_served_from_cache(hub_env, bandit_run, monkeypatch):
    hub.push(bandit_run, "lab/offline")
    online = dqltoolkit.load("hf:lab/offline", device="cpu")
    seen = len(hub_env.requests)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    offline = dqltoolkit.load("hf:lab/offline", device="cpu")
    np.testing.assert_array_equal(actions(offline), actions(online))
    assert len(hub_env.requests) == seen  # served from the cache: the server (still up) saw nothing
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there: any request would fail
    np.testing.assert_array_equal(actions(dqltoolkit.load("hf:lab/offline", device="cpu")), actions(online))
    with pytest.raises(HubError, match=r"not in the Hub cache .* HF_HUB_OFFLINE=1 forbids downloading it"):
        dqltoolkit.load("hf:lab/never-downloaded", device="cpu")
    with pytest.raises(HubError, match="HF_HUB_OFFLINE=1 is set"):
        hub.push(bandit_run, "lab/offline")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    with pytest.raises(HubError, match=r"push to lab/offline on http://127\.0\.0\.1:9: "):
        hub.push(bandit_run, "lab/offline")  # online, but nobody answers


def test_hf_refs_in_train_init_resume_and_cli(hub_env, bandit_run, tmp_path):
    from dqltoolkit.training import train

    runner = CliRunner()
    out = runner.invoke(main, ["hub", "push", str(bandit_run), "--repo", "lab/cli"])
    assert out.exit_code == 0, out.output
    assert "to lab/cli@main" in out.output and 'dqltoolkit.load("hf:lab/cli")' in out.output
    out = runner.invoke(main, ["hub", "download", "hf:lab/cli"])
    assert out.exit_code == 0 and out.output.strip().endswith(CKPT)

    def checkpoint_gets():
        return sum(1 for m, p in hub_env.requests if m == "GET" and p.startswith("/lab/cli/resolve/") and p.endswith(CKPT))

    before = checkpoint_gets()
    out = runner.invoke(main, ["hub", "download", "hf:lab/cli"])
    assert out.exit_code == 0 and checkpoint_gets() == before  # cached: not fetched again
    out = runner.invoke(main, ["hub", "download", "--force", "hf:lab/cli"])
    assert out.exit_code == 0 and out.output.strip().endswith(CKPT) and checkpoint_gets() == before + 1
    out = runner.invoke(main, ["evaluate", "hf:lab/cli", "--episodes", "50", "--device", "cpu", "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output.strip().splitlines()[-1])["episodes"] == 50

    init = train("hf:lab/cli", "bandit2d-v0", tmp_path / "init", steps=3, init="hf:lab/cli", progress=False, verbose=False,
                 evaluate_at_end=False, device="cpu")
    assert init.results["steps"] == 3  # a new run from the Hub weights: its own step count
    card = hub.prepare_push(tmp_path / "init", "lab/tuned").card  # its card names where it started
    assert yaml.safe_load(card.split("---")[1])["base_model"] == "lab/cli"
    assert "dqltoolkit train --init hf:lab/cli --env bandit2d-v0 --steps 3 --seed 0" in card
    resumed = train("diffusion-ql", "bandit2d-v0", tmp_path / "resume", steps=3, resume="hf:lab/cli", progress=False, verbose=False,
                    evaluate_at_end=False, device="cpu")
    assert resumed.results["total_steps"] == 33 and resumed.results["steps"] == 3  # continued from the pushed run's 30 steps


def test_push_dry_run_and_bad_sources(hub_env, bandit_run, tmp_path):
    seen = len(hub_env.requests)
    out = CliRunner().invoke(main, ["hub", "push", str(bandit_run), "--repo", "lab/dry", "--dry-run"])
    assert out.exit_code == 0, out.output
    assert out.output.startswith("---\nlibrary_name: dqltoolkit") and "would upload to lab/dry" in out.output
    assert len(hub_env.requests) == seen  # a dry run talks to nobody
    seeds = tmp_path / "seeds"
    seeds.mkdir()
    for s in (0, 1):
        shutil.copy(bandit_run / "model.zip", seeds / f"model_seed{s}.zip")
    with pytest.raises(HubError, match=r"one checkpoint per seed \(model_seed0.zip, model_seed1.zip\); push one of them"):
        hub.prepare_push(seeds)
    with pytest.raises(HubError, match=r"no recipe name given and no run config.yaml"):
        hub.prepare_push(seeds / "model_seed0.zip")
    assert hub.prepare_push(seeds / "model_seed0.zip", agent="diffusion-ql").repo_id == "diffusion-ql-bandit2d-v0"
    out = CliRunner().invoke(main, ["hub", "push", str(bandit_run), "--repo", "lab/bad name"])
    assert out.exit_code == 1 and "'lab/bad name' is not a Hub repo id" in out.output


def test_zoo_entry_pinned_to_a_hub_repo(hub_env, bandit_run):
    res = hub.push(bandit_run, "lab/pinned")
    size = (bandit_run / "model.zip").stat().st_size
    assert hub.fetch_pinned("hf:lab/pinned", res.sha256, size).name == CKPT
    with pytest.raises(HubError, match=r"but the zoo index records 0{64}"):
        hub.fetch_pinned("hf:lab/pinned", "0" * 64, size)


@pytest.mark.parametrize("spec, message", [
    ("hf:justname", "give the repo's owner too"),
    ("hf:org/na me", "is not a Hub repo id"),
    ("hf:org/-name", "is not a Hub repo id"),
    ("hf:org/name@", "empty revision"),
    ("hf:a/b/c", "is not a Hub repo id"),
])
def test_parse_ref_errors(spec, message):
    with pytest.raises(HubError, match=message):
        parse_ref(spec)


def test_parse_ref():
    assert parse_ref("hf:org/name") == HubRef("org/name", None)
    assert parse_ref("hf:org/name@refs/pr/1") == HubRef("org/name", "refs/pr/1")
    assert str(parse_ref("hf:org/name@v1")) == "hf:org/name@v1"


def test_without_huggingface_hub_installed(monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # `import huggingface_hub` now raises ImportError
    with pytest.raises(HubError, match=r"pip install 'dqltoolkit\[hub\]'"):
        dqltoolkit.load("hf:org/name")


def test_damaged_cache_copy_is_downloaded_again(hub_env, bandit_run):
    hub.push(bandit_run, "lab/damaged")
    path = hub.resolve_hf("hf:lab/damaged")
    blob = os.path.realpath(path)  # the cache's blob behind the snapshot's link
    with open(blob, "r+b") as f:
        f.seek(100)
        f.write(b"\0" * 64)
    assert sha256(path) != sha256(bandit_run / "model.zip")
    again = hub.resolve_hf("hf:lab/damaged")  # online: one fresh download, verified
    assert sha256(again) == sha256(bandit_run / "model.zip")


def test_push_the_shipped_zoo_model(hub_env):
    """zoo:<id> as the source: the entry's metrics and training command go on the card."""
    res = hub.push("zoo:diffusion-ql-bandit2d-v0", "lab/zoo-bandit")
    card = huggingface_hub.hf_hub_download("lab/zoo-bandit", "README.md", endpoint=hub_env.endpoint, cache_dir=os.environ["HF_HUB_CACHE"])
    text = open(card, encoding="utf-8").read()
    meta = yaml.safe_load(text.split("---")[1])
    metrics = {m["type"]: m for m in meta["model-index"][0]["results"][0]["metrics"]}
    assert metrics["mean_return"]["value"] == 5.0031 and metrics["mean_return"]["args"] == {"episodes": 1000, "seeds": [0], "steps": 16000}
    assert metrics["best_mode_share"]["value"] == 0.954
    assert "dqltoolkit train --agent diffusion-ql --env bandit2d-v0 --out runs/bandit" in text and "48.7 s of training" in text
    assert meta["dqltoolkit"]["sha256"] == res.sha256 == "4a6213963fb4efef19e53553eb2332484ca695311d5ed3cf41ed4b173ef52386"
    np.testing.assert_array_equal(actions(dqltoolkit.load("hf:lab/zoo-bandit", device="cpu")),
                                  actions(dqltoolkit.load("zoo:diffusion-ql-bandit2d-v0", device="cpu")))


# ---- zoo index entries that point at a Hub repo (hf: ORG/NAME[@revision], optionally a filename) ----


def _zoo_index(tmp_path, monkeypatch, entries):
    """A zoo index holding ``entries``, made the default catalogue (DQLTOOLKIT_ZOO_INDEX)."""
    index = tmp_path / "zoo" / "index.yaml"
    index.parent.mkdir(exist_ok=True)
    index.write_text(yaml.safe_dump({"entries": entries}, sort_keys=False))
    monkeypatch.setenv("DQLTOOLKIT_ZOO_INDEX", str(index))
    return index


def test_zoo_entry_on_the_hub_loads_as_zoo_id(hub_env, bandit_run, tmp_path, monkeypatch):
    from dqltoolkit import sources, zoo

    res = hub.push(bandit_run, "lab/zoo-hf")
    runner = CliRunner()
    made = runner.invoke(main, ["zoo", "entry", str(bandit_run / "model.zip"), "--id", "tiny-hf", "--hf", "lab/zoo-hf",
                                "--results", str(bandit_run / "results.json")])
    assert made.exit_code == 0, made.output
    (raw,) = yaml.safe_load(made.output)
    assert raw["hf"] == "lab/zoo-hf" and raw["sha256"] == res.sha256 and "file" not in raw and "url" not in raw
    _zoo_index(tmp_path, monkeypatch, [raw])
    entry = zoo.get_entry("tiny-hf")
    assert (entry.kind, entry.location, entry.shipped) == ("hf", "hf:lab/zoo-hf", False)

    local = dqltoolkit.load(bandit_run / "model.zip", device="cpu")
    loaded = dqltoolkit.load("zoo:tiny-hf", device="cpu")
    assert loaded.num_timesteps == 30 and loaded.task == "bandit2d-v0"
    np.testing.assert_array_equal(actions(loaded), actions(local))
    path = sources.resolve_checkpoint("zoo:tiny-hf")  # the Hub cache's copy, verified against the index
    assert str(path).startswith(os.environ["HF_HUB_CACHE"]) and path.name == CKPT and sha256(path) == res.sha256

    out = runner.invoke(main, ["evaluate", "zoo:tiny-hf", "--episodes", "20", "--device", "cpu", "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output.strip().splitlines()[-1])["episodes"] == 20
    out = runner.invoke(main, ["zoo", "evaluate", "tiny-hf", "--episodes", "20", "--device", "cpu", "--json"])
    assert out.exit_code == 0 and json.loads(out.output.strip().splitlines()[-1])["episodes"] == 20, out.output
    out = runner.invoke(main, ["zoo", "download", "tiny-hf"])
    assert out.exit_code == 0 and out.output.strip() == str(path), out.output
    # where each entry lives
    out = runner.invoke(main, ["zoo", "list"])
    assert out.exit_code == 0 and "| tiny-hf | diffusion-ql | bandit2d-v0 | mean return" in out.output
    assert out.output.rstrip().endswith("| hf:lab/zoo-hf | Hub cache |")
    listed = json.loads(runner.invoke(main, ["zoo", "list", "--json"]).output)
    assert (listed["lives"], listed["location"]) == ("hf", "hf:lab/zoo-hf")
    info = yaml.safe_load(runner.invoke(main, ["zoo", "info", "tiny-hf"]).output)
    assert info["location"] == "hf:lab/zoo-hf" and "cached" not in info
    # the shipped catalogue keeps its shipped files: a shipped entry lives in a "file"
    from dqltoolkit.config import catalogue_dir

    shipped = runner.invoke(main, ["zoo", "--index", str(catalogue_dir("zoo") / "index.yaml"), "list"])
    assert "| diffusion-ql-bandit2d-v0 |" in shipped.output and "| file | shipped |" in shipped.output
    # a push from the entry reads it through the same pinned fetch
    assert hub.prepare_push("zoo:tiny-hf", "lab/again").sha256 == res.sha256


def test_zoo_entry_with_revision_and_filename_needs_no_card(hub_env, bandit_run, tmp_path, monkeypatch):
    client = api(hub_env)
    client.create_repo("lab/plain")
    commit = client.upload_file(path_or_fileobj=str(bandit_run / "model.zip"), path_in_repo="weights/model.zip", repo_id="lab/plain").oid
    client.upload_file(path_or_fileobj=b"later", path_in_repo="weights/model.zip", repo_id="lab/plain")  # main moves on
    digest, size = sha256(bandit_run / "model.zip"), (bandit_run / "model.zip").stat().st_size
    _zoo_index(tmp_path, monkeypatch, [{"id": "plain", "agent": "diffusion-ql", "task": "bandit2d-v0", "sha256": digest, "size": size,
                                        "hf": f"lab/plain@{commit}", "filename": "weights/model.zip"},
                                       {"id": "plain-main", "agent": "diffusion-ql", "task": "bandit2d-v0", "sha256": digest, "size": size,
                                        "hf": "lab/plain", "filename": "weights/model.zip"}])
    np.testing.assert_array_equal(actions(dqltoolkit.load("zoo:plain", device="cpu")), actions(dqltoolkit.load(bandit_run / "model.zip", device="cpu")))
    # main now holds 5 bytes: the index's size and digest refuse them
    with pytest.raises(ValueError, match=r"zoo entry 'plain-main' \(hf:lab/plain\): hf:lab/plain: weights/model.zip \(revision main\) has "
                                         rf"SHA-256 {sha256_bytes(b'later')} \(5 bytes\), but the zoo index records {digest} \({size} bytes\)"):
        dqltoolkit.load("zoo:plain-main", device="cpu")


def sha256_bytes(data):
    return hashlib.sha256(data).hexdigest()


def test_zoo_entry_on_the_hub_digest_mismatch_and_bad_entries(hub_env, bandit_run, tmp_path, monkeypatch):
    res = hub.push(bandit_run, "lab/zoo-pinned")
    size = (bandit_run / "model.zip").stat().st_size
    base = {"id": "pinned", "agent": "diffusion-ql", "task": "bandit2d-v0", "size": size, "hf": "lab/zoo-pinned"}
    # the owner pushes another checkpoint (with a new card): hf: follows the repo, the zoo entry stays pinned to its digest
    other = dqltoolkit.load(bandit_run / "model.zip", device="cpu")
    other.num_timesteps = 999
    newer = tmp_path / "newer"
    newer.mkdir()
    other.save(newer / "model.zip")
    shutil.copy(bandit_run / "config.yaml", newer / "config.yaml")
    again = hub.push(newer, "lab/zoo-pinned")
    assert dqltoolkit.load("hf:lab/zoo-pinned", device="cpu").num_timesteps == 999
    _zoo_index(tmp_path, monkeypatch, [{**base, "sha256": res.sha256}])
    with pytest.raises(ValueError) as err:
        dqltoolkit.load("zoo:pinned", device="cpu")
    msg = str(err.value)
    assert msg.startswith("zoo entry 'pinned' (hf:lab/zoo-pinned): hf:lab/zoo-pinned: diffusion-ql-bandit2d-v0.zip")
    assert f"has SHA-256 {again.sha256}" in msg and f"but the zoo index records {res.sha256}" in msg and "nothing was loaded" in msg
    out = CliRunner().invoke(main, ["evaluate", "zoo:pinned", "--device", "cpu"])
    assert out.exit_code == 1 and again.sha256 in out.output and res.sha256 in out.output and "Traceback" not in out.output
    # an entry that is both shipped and on the Hub: the index file and the entry's id are named
    index = _zoo_index(tmp_path, monkeypatch, [{**base, "sha256": res.sha256, "file": "pinned.zip"}])
    expected = (f"zoo index {index}, entry 0 ('pinned'): give exactly one of 'file' (shipped next to the index) or 'url' (downloaded) "
                "or 'hf' (a Hugging Face Hub repo, ORG/NAME[@revision]); it gives file and hf")
    with pytest.raises(ValueError) as err:
        dqltoolkit.load("zoo:pinned", device="cpu")
    assert str(err.value) == expected
    out = CliRunner().invoke(main, ["zoo", "list"])
    assert out.exit_code == 1 and expected in out.output
    index = _zoo_index(tmp_path, monkeypatch, [{**base, "sha256": res.sha256, "hf": "hf:lab/zoo pinned"}])
    with pytest.raises(ValueError, match=rf"zoo index {index}, entry 0 \('pinned'\): field 'hf' must be a Hub repo, ORG/NAME or "
                                         r"ORG/NAME@REVISION, got 'hf:lab/zoo pinned'"):
        dqltoolkit.load("zoo:pinned", device="cpu")


def test_zoo_entry_on_the_hub_offline_from_the_cache(hub_env, bandit_run, tmp_path, monkeypatch):
    res = hub.push(bandit_run, "lab/zoo-offline")
    size = (bandit_run / "model.zip").stat().st_size
    base = {"agent": "diffusion-ql", "task": "bandit2d-v0", "sha256": res.sha256, "size": size}
    _zoo_index(tmp_path, monkeypatch, [{"id": "offline", **base, "hf": "lab/zoo-offline"},
                                       {"id": "never", **base, "hf": "lab/zoo-never-fetched"}])
    online = dqltoolkit.load("zoo:offline", device="cpu")  # the first fetch, online
    seen = len(hub_env.requests)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there: any request would fail
    np.testing.assert_array_equal(actions(dqltoolkit.load("zoo:offline", device="cpu")), actions(online))
    assert len(hub_env.requests) == seen  # served from the Hub cache
    with pytest.raises(ValueError, match=r"zoo entry 'never' \(hf:lab/zoo-never-fetched\): .*not in the Hub cache .* HF_HUB_OFFLINE=1 forbids"):
        dqltoolkit.load("zoo:never", device="cpu")
