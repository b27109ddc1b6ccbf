"""Run a policy exported by ``dqltoolkit export CHECKPOINT --format onnx`` with numpy and onnxruntime only.

No torch, no dqltoolkit: what a robot or a service needs is the .onnx file, whose metadata (key
``dqltoolkit``, JSON) says what each input is. The policy's randomness is an input: the head's noise
(standard normals, one row per observation and candidate) and, where the policy draws among candidates
by softmax(Q), uniform numbers; this script draws them with numpy, in the order the metadata lists them.

    python deploy_onnx.py policy.onnx --obs '[0.1, -0.2]'            # one observation -> one action
    python deploy_onnx.py policy.onnx --obs '[[0.1, -0.2], [0, 0]]'  # a batch -> a batch
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import onnxruntime as ort


class OnnxPolicy:
    """``policy(obs)``: actions for one observation ``[obs_dim]`` or a batch ``[B, obs_dim]``."""

    def __init__(self, path: str, seed: int | None = None, threads: int = 1) -> None:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        self.session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        self.meta = json.loads(self.session.get_modelmeta().custom_metadata_map["dqltoolkit"])
        self.rng = np.random.default_rng(seed)

    def inputs(self, obs: np.ndarray) -> dict:
        """The graph's inputs for observations ``[B, obs_dim]``: the observations, then each random input drawn."""
        batch, n = obs.shape[0], int(self.meta["candidates"])
        feeds = {"obs": np.ascontiguousarray(obs, dtype=np.float32)}
        for spec in self.meta["inputs"][1:]:
            shape = [batch * n if d == "batch*candidates" else batch if d == "batch" else int(d) for d in spec["shape"]]
            if spec["distribution"] == "standard_normal":
                feeds[spec["name"]] = self.rng.standard_normal(shape).astype(np.float32)
            else:  # uniform in [0, 1)
                feeds[spec["name"]] = self.rng.random(shape, dtype=np.float32)
        return feeds

    def __call__(self, obs) -> np.ndarray:
        obs = np.asarray(obs, dtype=np.float32)
        single = obs.ndim == 1
        batch = obs.reshape(-1, int(self.meta["obs_dim"]))
        if not np.isfinite(batch).all():
            raise ValueError("observations contain NaN or Inf; no action is defined for them")
        actions = self.session.run(["action"], self.inputs(batch))[0]
        return actions[0] if single else actions


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="an .onnx file written by `dqltoolkit export`")
    parser.add_argument("--obs", required=True, help="JSON: one observation (a list) or a batch (a list of lists)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the numpy generator that draws the policy's noise")
    args = parser.parse_args(argv)
    policy = OnnxPolicy(args.model, seed=args.seed)
    print(json.dumps(policy(json.loads(args.obs)).tolist()))


if __name__ == "__main__":
    main(sys.argv[1:])
