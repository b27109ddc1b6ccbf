"""The model zoo: the shipped catalogue, verified downloads from a server on 127.0.0.1, the cache,
fine-tuning from an entry, and the errors a user meets (each naming the index, entry, URL or field)."""

import functools
import hashlib
import http.server
import json
import shutil
import socket
import threading
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

import dqltoolkit
from dqltoolkit import zoo
from dqltoolkit.checkpoint import CheckpointError
from dqltoolkit.cli import main
from dqltoolkit.zoo import ZooError

TINY = {"T": 3, "hidden": 16, "critic_hidden": 16, "time_dim": 8, "batch_size": 32, "n_candidates": 4, "log_every": 5}


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(zoo, "cache_root", lambda: tmp_path / "cache" / "zoo")  # (not DQLTOOLKIT_CACHE: the fused build lives there)
    monkeypatch.delenv(zoo.INDEX_ENV, raising=False)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A short bandit run: model.zip, config.yaml and results.json, as `dqltoolkit train` writes them."""
    out = tmp_path_factory.mktemp("tiny_run")
    dqltoolkit.train("diffusion-ql", "bandit2d-v0", out, steps=12, overrides=TINY, progress=False, verbose=False)
    return out


class Server:
    """A static file server on 127.0.0.1 that counts the requests for each path."""

    def __init__(self, root: Path):
        self.root, self.hits = root, {}
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def do_GET(self):
                server.hits[self.path] = server.hits.get(self.path, 0) + 1
                super().do_GET()

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    s = Server(root)
    yield s
    s.close()


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _publish(server: Server, model: Path, **entry_fields) -> str:
    """Serve ``model`` as files/m.zip with an index entry 'tiny' (fields overridable); returns the index URL."""
    (server.root / "files").mkdir(exist_ok=True)
    shutil.copy(model, server.root / "files" / "m.zip")
    entry = {"id": "tiny", "agent": "diffusion-ql", "task": "bandit2d-v0", "sha256": _sha(model), "size": model.stat().st_size,
             "url": "files/m.zip", **entry_fields}
    (server.root / "index.yaml").write_text(yaml.safe_dump({"entries": [entry]}))
    return f"{server.url}/index.yaml"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- the shipped catalogue --------------------------------------------------------------------------

def test_shipped_entries_verify_and_name_known_recipes_and_tasks():
    from dqltoolkit.config import recipe_names
    from dqltoolkit.tasks import get_task

    entries = zoo.load_index()
    assert "diffusion-ql-bandit2d-v0" in entries
    for e in entries.values():
        assert e.shipped and e.agent in recipe_names() and get_task(e.task).id == e.task
        path = zoo.fetch(e)  # size and SHA-256 checked against the index
        assert path.stat().st_size == e.size and _sha(path) == e.sha256
        assert dqltoolkit.load(f"zoo:{e.id}", device="cpu").num_timesteps == e.trained["steps"]


def test_shipped_bandit_model_puts_its_samples_where_the_index_says():
    from dqltoolkit.envs import mode_shares
    from dqltoolkit.training import sample_policy_actions

    entry = zoo.get_entry("diffusion-ql-bandit2d-v0")
    model = dqltoolkit.load("zoo:diffusion-ql-bandit2d-v0", device="cpu")
    raw = mode_shares(sample_policy_actions(model, 1000, seed=0))  # what `dqltoolkit train` recorded: raw policy samples
    assert raw["bottom_right"] >= 0.9 and raw["bottom_right"] == pytest.approx(entry.metrics["best_mode_share"], abs=0.01)
    assert raw["off_data"] == pytest.approx(entry.metrics["off_data_share"], abs=0.01)
    model.set_random_seed(7)
    picked = mode_shares(model.predict(np.zeros((1000, 2), dtype=np.float32))[0])  # acting: 50 candidates, drawn by softmax(Q)
    assert picked["bottom_right"] >= 0.95 and picked["off_data"] < 0.03
    res = CliRunner().invoke(main, ["zoo", "evaluate", entry.id, "--episodes", "100", "--json"])  # what a user checks it with
    assert res.exit_code == 0, res.output
    shown = json.loads(res.output)["mode_shares"]
    assert shown["bottom_right"] == pytest.approx(entry.metrics["best_mode_share"], abs=0.01) and shown["off_data"] == raw["off_data"]


# --- downloads ----------------------------------------------------------------------------------------

def test_download_is_verified_cached_and_loads_the_same_model(server, tiny_run, monkeypatch):
    model = tiny_run / "model.zip"
    monkeypatch.setenv(zoo.INDEX_ENV, _publish(server, model))
    fetched = zoo.fetch("tiny", progress=False)
    assert fetched == zoo.cached_path(zoo.get_entry("tiny")) and fetched.read_bytes() == model.read_bytes()
    assert fetched.name == f"tiny-{_sha(model)[:12]}.zip" and server.hits["/files/m.zip"] == 1

    original, downloaded = dqltoolkit.load(model, device="cpu"), dqltoolkit.load("zoo:tiny", device="cpu")
    assert server.hits["/files/m.zip"] == 1  # the second use reads the verified cache
    obs = np.zeros((5, 2), dtype=np.float32)
    np.testing.assert_array_equal(original.predict(obs, deterministic=True)[0], downloaded.predict(obs, deterministic=True)[0])

    fetched.write_bytes(b"damaged")  # a damaged cache entry is downloaded again, not used
    assert zoo.fetch("tiny", progress=False).read_bytes() == model.read_bytes() and server.hits["/files/m.zip"] == 2
    zoo.fetch("tiny", progress=False, force=True)
    assert server.hits["/files/m.zip"] == 3


def test_a_file_that_does_not_match_the_index_is_not_kept(server, tiny_run, monkeypatch):
    model = tiny_run / "model.zip"
    wrong = hashlib.sha256(b"another file").hexdigest()
    monkeypatch.setenv(zoo.INDEX_ENV, _publish(server, model, sha256=wrong))
    with pytest.raises(ZooError, match=f"files/m.zip has SHA-256 {_sha(model)}, the index says {wrong}; nothing was kept"):
        zoo.fetch("tiny", progress=False)
    monkeypatch.setenv(zoo.INDEX_ENV, _publish(server, model, size=model.stat().st_size + 10))
    with pytest.raises(ZooError, match=f"has {model.stat().st_size} bytes, the index says {model.stat().st_size + 10} \\(truncated or changed\\)"):
        zoo.fetch("tiny", progress=False)
    monkeypatch.setenv(zoo.INDEX_ENV, _publish(server, model, size=100))  # the server sends more than promised
    with pytest.raises(ZooError, match="the index says 100"):
        zoo.fetch("tiny", progress=False)
    cache = zoo.cache_root()
    assert not cache.exists() or list(cache.iterdir()) == []  # no partial or unverified file left behind


def test_unreachable_and_missing_files_name_the_url(server, tiny_run, monkeypatch):
    index = _publish(server, tiny_run / "model.zip", url="files/gone.zip")
    with pytest.raises(ZooError, match=f"zoo entry 'tiny': {server.url}/files/gone.zip answered HTTP 404"):
        zoo.fetch("tiny", index=index, progress=False)
    port = _free_port()
    index = _publish(server, tiny_run / "model.zip", url=f"http://127.0.0.1:{port}/m.zip")
    with pytest.raises(ZooError, match=f"could not reach http://127.0.0.1:{port}/m.zip: .*pass its path instead of zoo:tiny"):
        zoo.fetch("tiny", index=index, progress=False)
    with pytest.raises(ZooError, match=f"zoo index http://127.0.0.1:{port}/index.yaml: could not reach"):
        zoo.load_index(f"http://127.0.0.1:{port}/index.yaml")


# --- the index ---------------------------------------------------------------------------------------

GOOD = {"id": "a", "agent": "diffusion-ql", "task": "bandit2d-v0", "sha256": "0" * 64, "size": 10, "file": "a.zip"}


@pytest.mark.parametrize("change, message", [
    ({"size": None}, "missing the field 'size'"),
    ({"sha256": "abc"}, "field 'sha256' must be 64 lower-case hex digits, got 'abc'"),
    ({"size": "10"}, "field 'size' must be int, got '10'"),
    ({"url": "http://x/a.zip"}, "give exactly one of 'file' \\(shipped next to the index\\) or 'url' \\(downloaded\\) or 'hf' "
                                "\\(a Hugging Face Hub repo, ORG/NAME\\[@revision\\]\\); it gives file and url"),
    ({"file": None}, "give exactly one of 'file' .* or 'hf' \\(a Hugging Face Hub repo, ORG/NAME\\[@revision\\]\\)$"),
    ({"filename": "m.zip"}, "field 'filename' names a file in a Hub repo and goes with 'hf' only"),
    ({"file": None, "hf": "just-a-name"}, "field 'hf' must be a Hub repo, ORG/NAME or ORG/NAME@REVISION, got 'just-a-name'"),
    ({"file": None, "hf": "org/../name"}, "field 'hf' must be a Hub repo"),
    ({"file": None, "hf": "org/name", "filename": "../m.zip"}, "field 'filename' must be a relative path inside the Hub repo, got '../m.zip'"),
    ({"sha": "0" * 64}, "unknown field\\(s\\) \\['sha'\\]"),
])
def test_index_errors_name_the_file_entry_and_field(tmp_path, change, message):
    raw = {**GOOD, **change}
    raw = {k: v for k, v in raw.items() if v is not None}
    index = tmp_path / "index.yaml"
    index.write_text(yaml.safe_dump({"entries": [raw]}))
    with pytest.raises(ZooError, match=f"zoo index {index}, entry 0 \\('a'\\): {message}"):
        zoo.load_index(str(index))


def test_hub_entries_are_read_but_not_shipped_nor_fetched_here(tmp_path):
    """An entry on the Hub: its location is hf:ORG/NAME[@rev], it is not shipped, and zoo.fetch (which never
    imports the Hub client) sends it to dqltoolkit.sources; tests/test_hub.py fetches such entries."""
    index = tmp_path / "index.yaml"
    hub = {k: v for k, v in GOOD.items() if k != "file"}
    index.write_text(yaml.safe_dump({"entries": [{**hub, "id": "h", "hf": "lab/model@v1", "filename": "dir/m.zip"},
                                                 {**hub, "id": "g", "hf": "hf:lab/model"}]}))
    entries = zoo.load_index(str(index))
    h, g = entries["h"], entries["g"]
    assert (h.kind, h.location, h.filename, h.shipped) == ("hf", "hf:lab/model@v1", "dir/m.zip", False)
    assert (g.kind, g.location, g.filename, g.shipped) == ("hf", "hf:lab/model", "", False)
    assert h.to_dict()["lives"] == "hf" and h.to_dict()["filename"] == "dir/m.zip"
    with pytest.raises(ZooError, match=r"zoo entry 'h' lives on the Hugging Face Hub \(hf:lab/model@v1\): dqltoolkit.sources.fetch_entry"):
        zoo.fetch(h)
    with pytest.raises(ZooError, match=r"is cached in the Hub's cache, not the zoo's"):
        zoo.cached_path(h)


def test_duplicate_and_unknown_ids(tmp_path):
    index = tmp_path / "index.yaml"
    index.write_text(yaml.safe_dump({"entries": [GOOD, dict(GOOD)]}))  # (two objects: the same one twice would dump as an alias)
    with pytest.raises(ZooError, match="the id 'a' appears twice"):
        zoo.load_index(str(index))
    with pytest.raises(ZooError, match="unknown zoo entry 'diffusion-ql-bandit2d'. Did you mean 'diffusion-ql-bandit2d-v0'"):
        zoo.get_entry("diffusion-ql-bandit2d")
    with pytest.raises(ZooError, match=f"zoo index {tmp_path / 'nope.yaml'} does not exist"):
        zoo.load_index(str(tmp_path / "nope.yaml"))


# --- the command line --------------------------------------------------------------------------------

def test_cli_lists_downloads_and_evaluates_an_entry(server, tiny_run):
    index = _publish(server, tiny_run / "model.zip", metrics={"mean_return": 1.25})
    runner = CliRunner()
    listed = runner.invoke(main, ["zoo", "--index", index, "list"])
    assert listed.exit_code == 0 and "| tiny | diffusion-ql | bandit2d-v0 | mean return 1.25 |" in listed.output and listed.output.rstrip().endswith("| download |")
    got = runner.invoke(main, ["zoo", "--index", index, "download", "tiny"])
    assert got.exit_code == 0 and Path(got.output.strip().splitlines()[-1]).read_bytes() == (tiny_run / "model.zip").read_bytes()
    assert json.loads(runner.invoke(main, ["zoo", "--index", index, "list", "--json"]).output)["here"] == "cached"
    info = yaml.safe_load(runner.invoke(main, ["zoo", "--index", index, "info", "tiny"]).output)
    assert info["sha256"] == _sha(tiny_run / "model.zip") and info["cached"] == got.output.strip().splitlines()[-1]
    res = runner.invoke(main, ["zoo", "--index", index, "evaluate", "tiny", "--episodes", "20", "--json"])
    assert res.exit_code == 0, res.output
    r = json.loads(res.output.strip().splitlines()[-1])
    assert r["episodes"] == 20 and r["env"] == "bandit2d-v0" and np.isfinite(r["mean_return"])
    other = runner.invoke(main, ["zoo", "--index", index, "evaluate", "tiny", "--env", "hopper-medium-v2"])
    assert other.exit_code != 0 and "was trained for observations (2,) and actions (2,), but hopper-medium-v2's env has (11,) and (3,) (it was trained on bandit2d-v0)" in other.output
    bad = runner.invoke(main, ["zoo", "--index", index, "download", "tiyn"])
    assert bad.exit_code != 0 and "unknown zoo entry 'tiyn'. Did you mean 'tiny'" in bad.output


def test_entry_command_publishes_a_run_that_then_verifies(tiny_run, tmp_path):
    folder = tmp_path / "myzoo"
    folder.mkdir()
    shutil.copy(tiny_run / "model.zip", folder / "tiny.zip")
    shutil.copy(tiny_run / "config.yaml", folder / "config.yaml")
    res = CliRunner().invoke(main, ["zoo", "entry", str(folder / "tiny.zip"), "--id", "tiny", "--file", "tiny.zip", "--results",
                                    str(tiny_run / "results.json"), "--command", "dqltoolkit train ..."])
    assert res.exit_code == 0, res.output
    entries = yaml.safe_load(res.output)
    (folder / "index.yaml").write_text(yaml.safe_dump({"entries": entries}))
    entry = zoo.get_entry("tiny", index=str(folder / "index.yaml"))
    results = json.loads((tiny_run / "results.json").read_text())["evaluation"][0]
    assert entry.agent == "diffusion-ql" and entry.task == "bandit2d-v0" and entry.trained["steps"] == 12
    assert entry.metrics["mean_return"] == pytest.approx(results["mean_return"], abs=1e-4) and entry.metrics["episodes"] == results["episodes"]
    assert entry.trained["command"] == "dqltoolkit train ..." and zoo.fetch(entry) == (folder / "tiny.zip").resolve()
    (folder / "eval.json").write_text(json.dumps({"mean_return": 2.5, "std_return": 0.5, "episodes": 40, "env": "bandit2d-v0"}))
    res = CliRunner().invoke(main, ["zoo", "entry", str(folder / "tiny.zip"), "--id", "tiny", "--url", "https://example.org/tiny.zip",
                                    "--results", str(folder / "eval.json")])  # metrics from `dqltoolkit evaluate --json`
    assert res.exit_code == 0 and yaml.safe_load(res.output)[0]["metrics"] == {"mean_return": 2.5, "std_return": 0.5, "episodes": 40}
    no_task = CliRunner().invoke(main, ["zoo", "entry", str(folder / "tiny.zip"), "--id", "x"])
    assert no_task.exit_code != 0 and "give exactly one of url" in no_task.output


# --- fine-tuning from an entry ---------------------------------------------------------------------------

def _networks(agent, member=None):
    from dqltoolkit.checkpoint import agent_state

    return {k: v for k, v in agent_state(agent, member, include_optimizer=False).items() if not k.startswith("rng.")}


def test_init_starts_a_new_run_from_the_entrys_weights(server, tiny_run, monkeypatch, tmp_path):
    from dqltoolkit.agent import Agent
    from dqltoolkit.checkpoint import init_from_checkpoint

    monkeypatch.setenv(zoo.INDEX_ENV, _publish(server, tiny_run / "model.zip"))
    pretrained = dqltoolkit.load(tiny_run / "model.zip", device="cpu")
    # two seeds from a one-seed checkpoint: each member starts from the pretrained networks
    fresh = Agent(pretrained.config, pretrained.observation_space, pretrained.action_space, seeds=[3, 4], device="cpu")
    init_from_checkpoint(fresh, zoo.resolve_checkpoint("zoo:tiny"))  # (the checkpoint layer reads files; the zoo resolves ids)
    theirs = _networks(pretrained)
    for m in range(2):
        ours = _networks(fresh, member=m)
        assert ours.keys() == theirs.keys()
        for k, v in theirs.items():
            assert np.array_equal(ours[k].numpy(), v.numpy()), k
    assert fresh.num_timesteps == 0 and not fresh.actor_opt.state  # a new run: no steps, no optimiser moments

    out = tmp_path / "ft"
    res = CliRunner().invoke(main, ["train", "--env", "bandit2d-v0", "--init", "zoo:tiny", "--steps", "6", "-p", "lr=1e-4", "--out", str(out), "--no-progress"])
    assert res.exit_code == 0, res.output
    tuned = dqltoolkit.load(out / "model.zip", device="cpu")
    assert tuned.num_timesteps == 6 and tuned.config.lr == pytest.approx(1e-4) and tuned.config.hidden == 16  # a new run, the entry's shapes
    assert yaml.safe_load((out / "config.yaml").read_text())["init"] == "zoo:tiny"
    assert any(not np.array_equal(a.numpy(), _networks(pretrained)[k].numpy()) for k, a in _networks(tuned).items())  # it trained


def test_init_errors_say_what_does_not_fit(tiny_run, tmp_path):
    runner = CliRunner()
    res = runner.invoke(main, ["train", "--env", "bandit2d-v0", "--init", str(tiny_run / "model.zip"), "-p", "hidden=32", "--steps", "2",
                               "--out", str(tmp_path / "a"), "--no-progress"])
    assert res.exit_code != 0 and "its networks do not fit the agent being trained" in res.output and "'hidden': (16, 32)" in res.output
    res = runner.invoke(main, ["train", "--env", "bandit2d-v0", "--agent", "td3bc", "--init", str(tiny_run / "model.zip"), "--out", str(tmp_path / "b")])
    assert res.exit_code != 0 and "--agent does not apply with --init" in res.output
    with pytest.raises(ValueError, match="give only one of them"):
        dqltoolkit.train("diffusion-ql", "bandit2d-v0", tmp_path / "c", init=tiny_run / "model.zip", resume=tiny_run / "model.zip")
    with pytest.raises(CheckpointError, match="its observation space has shape \\(2,\\), the agent being trained has \\(3,\\)"):
        import gymnasium as gym

        from dqltoolkit.agent import Agent
        from dqltoolkit.checkpoint import init_from_checkpoint

        other = Agent(dqltoolkit.load(tiny_run / "model.zip").config, gym.spaces.Box(-1, 1, (3,), np.float32), gym.spaces.Box(-1, 1, (2,), np.float32))
        init_from_checkpoint(other, tiny_run / "model.zip")


def test_a_shipped_file_that_changed_is_refused(tiny_run, tmp_path):
    shutil.copy(tiny_run / "model.zip", tmp_path / "m.zip")
    entry = {**GOOD, "file": "m.zip", "size": (tmp_path / "m.zip").stat().st_size}
    (tmp_path / "index.yaml").write_text(yaml.safe_dump({"entries": [entry]}))
    with pytest.raises(ZooError, match=f"{tmp_path / 'm.zip'} has SHA-256 {_sha(tmp_path / 'm.zip')}, the index says {'0' * 64}; "
                                        "the installation or the index is out of date"):
        zoo.fetch("a", index=str(tmp_path / "index.yaml"))
    assert (tmp_path / "m.zip").is_file()  # a shipped file is never deleted


@pytest.mark.parametrize("entry_id", ["diffusion-ql-hopper-medium-v2", "td3bc-hopper-medium-v2"])
def test_shipped_hopper_models_run_at_the_level_their_entries_record(entry_id):
    pytest.importorskip("mujoco")
    from dqltoolkit.evaluation import evaluate
    from dqltoolkit.tasks import get_task

    entry = zoo.get_entry(entry_id)
    task = get_task(entry.task)
    model = dqltoolkit.load(f"zoo:{entry.id}", device="cpu")
    model.set_random_seed(100)
    r = evaluate(model, task.make_env, episodes=5, seed=0)
    # the entries: 46.3 and 48.2 over 50 episodes, 15 and 7 points std per episode; five episodes stay well above 25
    assert entry.metrics["normalized_score"] > 40 and task.normalized_score(r["mean_return"]) > 25, r
