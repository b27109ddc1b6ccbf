"""Checkpoints written before settings belonged to parts (format 1) still load, act and re-save."""

import json
import zipfile

import numpy as np

import dqltoolkit
from dqltoolkit.checkpoint import FORMAT_VERSION, read_checkpoint
from dqltoolkit.zoo import resolve_checkpoint


def test_a_format_1_checkpoint_loads_and_saves_as_the_current_format(tmp_path):
    path = resolve_checkpoint("zoo:diffusion-ql-bandit2d-v0")
    doc, _ = read_checkpoint(path)
    assert doc["format_version"] == 1 and doc["config"]["squash"] == "tanh"  # every key of every part, flat
    model = dqltoolkit.load(path, device="cpu")
    assert model.config.T == doc["config"]["T"] and model.config.hidden == doc["config"]["hidden"]
    a, _ = model.predict(np.zeros(2, np.float32), deterministic=True)
    assert a.shape == (2,)
    again = dqltoolkit.load(model.save(tmp_path / "m.zip"), device="cpu")
    with zipfile.ZipFile(tmp_path / "m.zip") as z:
        saved = json.loads(z.read("dqltoolkit.json"))
    assert saved["format_version"] == FORMAT_VERSION == 2 and "squash" not in saved["config"]  # only what the parts read
    np.testing.assert_array_equal(again.predict(np.zeros(2, np.float32), deterministic=True)[0], a)
