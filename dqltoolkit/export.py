"""Export the acting policy for deployment: one graph from raw observations to Box actions (ONNX, TorchScript).

The graph is :meth:`dqltoolkit.acting.ActingPolicy._act` for member 0, built from the parts' own interfaces, so
every head whose ``sample`` is made of traceable torch ops exports. Why randomness enters as inputs: a graph that
drew its own numbers could not be checked against the eager policy (ONNX runtimes draw differently from torch);
fed the numbers ``predict`` would draw (:func:`predict_draws`), it acts as ``predict`` does to float rounding.
How to draw each input with numpy alone is written into the file (:data:`METADATA_KEY`, JSON).
"""

from __future__ import annotations

import copy
import json
import logging
import time
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor, nn

from .acting import selection_rule, selection_scores, take_best
from .capabilities import overrides
from .heads.samplers import SAMPLERS
from .nn import EnsembleLinear, EnsembleMLP, member_rand, mish
from .objectives.base import Objective, sampler_option

FORMATS = ("onnx", "torchscript")
#: the key of the JSON description in the ONNX metadata and in the TorchScript archive's extra files
METADATA_KEY = "dqltoolkit"
#: ONNX opset of exported graphs (onnxruntime >= 1.16 runs it)
OPSET = 18
MAX_CANDIDATES, MAX_CHAIN_STEPS = 10_000, 10_000  # (the recipe keys n_candidates and sample_steps have the same)

class ExportError(ValueError):
    """An agent, an option or a file that cannot be exported as asked."""


class _NoDraws(Sequence):
    """Generators handed to the parts while exporting: the noise is an input, so any draw is a missing interface."""

    def __init__(self, what: str) -> None:
        self.what = what

    def _refuse(self, *_: Any) -> Any:
        raise ExportError(f"{self.what} draws random numbers that its noise input does not cover, so its exported graph "
                          "could not be checked against predict; it needs to take them through draw_noise/sample(noise=...)")

    __getitem__ = __len__ = __iter__ = _refuse  # type: ignore[assignment]


def _mish_exported(x: Tensor) -> Tensor:
    """mish(x) as x n / (n + 2), n = e (e + 2), e = exp(x), clamped (the fused operators' form). Not ``F.mish``: ONNX
    Mish runs as onnxruntime's scalar Softplus kernel, 30 of 41 ms of a Hopper-size act; exp, mul, div are vectorised."""
    e = torch.exp(x.clamp(max=20.0))
    n = e * (e + 2.0)
    return x * n / (n + 2.0)


def _traceable(module: nn.Module, members: int) -> nn.Module:
    """A copy of ``module`` holding seed 0's share of each member-batched layer, with a traceable Mish and no kernels."""
    out = copy.deepcopy(module).requires_grad_(False)
    for sub in out.modules():
        if isinstance(sub, EnsembleLinear):
            per, rest = divmod(sub.members, members)
            if rest or per < 1:
                raise ExportError(f"{type(sub).__name__} with {sub.members} members does not split over {members} seeds")
            sub.weight = nn.Parameter(sub.weight.detach()[:per].clone(), requires_grad=False)
            sub.bias = nn.Parameter(sub.bias.detach()[:per].clone(), requires_grad=False)
            sub.members = per
        elif isinstance(sub, EnsembleMLP) and sub.act is mish:
            sub.act = _mish_exported  # the same function as F.mish and the fused kernel, to float rounding; traceable
        if not isinstance(sub, EnsembleLinear) and getattr(sub, "members", None) == members:
            sub.members = 1
        for hook in ("chain_kernel", "kernel"):  # a backend's kernels (fused CPU, GPU): the torch layers trace
            if hook in vars(sub):
                setattr(sub, hook, None)
    if members > 1:
        inside = {id(p) for m in out.modules() if isinstance(m, EnsembleLinear) for p in m.parameters(recurse=False)}
        loose = [n for n, p in out.named_parameters() if id(p) not in inside]
        if loose:
            raise ExportError(f"{type(module).__name__} has parameters outside member-batched layers ({', '.join(loose[:3])}); "
                              "export of a multi-seed agent cannot tell which part of them is seed 0's")
    return out


def noise_layout(head: Any, steps: Optional[int]) -> Optional[Dict[str, Any]]:
    """The head's noise input shape, from its own :meth:`draw_noise` (the row axis, batch x candidates, as -1); None: none."""
    if head.noise_row_dim is None:
        return None
    g = torch.Generator().manual_seed(0)
    one, two = (head.draw_noise(r, [g], torch.device("cpu"), steps) for r in (1, 2))
    if one is None:
        return None
    axis = head.noise_row_dim
    s1, s2 = list(one.shape[1:]), list(two.shape[1:])
    if s1[axis] != 1 or s2[axis] != 2 or [d for i, d in enumerate(s1) if i != axis] != [d for i, d in enumerate(s2) if i != axis]:
        raise ExportError(f"{type(head).__name__}.draw_noise does not run its rows along axis noise_row_dim={axis} "
                          f"(shapes {s1} for one row, {s2} for two)")
    s1[axis] = -1
    return {"shape": s1, "row_axis": axis, "distribution": "standard_normal"}


class ActingGraph(nn.Module):
    """The acting policy of an agent's member 0 as a module of traceable ops: ``forward(obs [B, obs_dim], noise,
    uniform) -> actions [B, action_dim]``, ``noise`` the head's for the ``B x candidates`` rows (:func:`noise_layout`),
    ``uniform`` ``[B, candidates]`` in [0, 1) for a softmax(Q) draw. ``deterministic``: the fixed noise held inside, the
    softmax(Q)-weighted medoid chosen, only ``obs`` an input. ``steps``, ``candidates``, ``sampler`` (the chain's
    solver): None takes the agent's ``sample_steps``, ``n_candidates``, acting ``sampler`` ('': the head's default)."""

    def __init__(self, agent: Any, steps: Optional[int] = None, candidates: Optional[int] = None, deterministic: bool = False,
                 sampler: Optional[str] = None) -> None:
        super().__init__()
        L, cfg = agent.learner, agent.learner.config
        if steps is not None and steps < 0:
            raise ExportError(f"steps: expected 0 (the full chain) or a positive number of sampling steps, got {steps}")
        if candidates is not None and candidates < 1:
            raise ExportError(f"candidates: expected at least 1, got {candidates}")
        if (candidates or 0) > MAX_CANDIDATES or (steps or 0) > MAX_CHAIN_STEPS:
            raise ExportError(f"candidates={candidates}, steps={steps}: the limits are {MAX_CANDIDATES} candidates and {MAX_CHAIN_STEPS} "
                              "steps (those of the recipe keys n_candidates and sample_steps)")
        if L.critic is None and candidates not in (None, 1):
            raise ExportError(f"candidates: objective {cfg.objective!r} trains no critic, so the policy acts with one sample "
                              f"(got {candidates})")
        self.steps = (cfg.sample_steps if steps is None else steps) or None
        self.sampler = (cfg.sampler if sampler is None else sampler) or None
        if self.sampler is not None:
            if self.sampler not in SAMPLERS:
                raise ExportError(f"sampler: {self.sampler[:60]!r} is no registered sampler; registered: {', '.join(SAMPLERS.names())}")
            if not hasattr(L.head, "chain"):
                raise ExportError(f"sampler: head {cfg.head!r} runs no reverse chain, so it has no sampler to choose")
        self.candidates = 1 if L.critic is None else int(candidates if candidates is not None else cfg.n_candidates)
        self.deterministic = bool(deterministic)
        self.objective = L.objective
        self.greedy = bool(L.objective.greedy_acting)
        self.head = _traceable(L.head, L.members)
        self.aux = _traceable(L.aux, L.members) if overrides(L.objective, Objective, "policy_sample") else nn.ModuleDict()
        self.critic = _traceable(L.critic, L.members) if L.critic is not None and self.candidates > 1 else None
        self.obs_dim, self.action_dim = L.obs_dim, L.action_dim
        self.noise = noise_layout(self.head, self.steps)
        self._gens = _NoDraws(f"head {cfg.head!r} with objective {cfg.objective!r}")
        for name, value in (("obs_mean", L.obs_mean), ("obs_std", L.obs_std), ("action_scale", L.action_scale),
                            ("action_center", L.action_center), ("low", agent.action_space.low), ("high", agent.action_space.high)):
            self.register_buffer(name, torch.as_tensor(value).detach().to("cpu", torch.float32).clone())
        fixed = None
        if self.deterministic and self.noise is not None:
            _, base = agent.policy.fixed_draws(L.head, self.candidates, self.steps)
            fixed = base[0].detach().to("cpu", torch.float32).clone()
        self.register_buffer("fixed_noise", fixed)
        self.to("cpu")

    # --- what goes in -------------------------------------------------------------------------------
    @property
    def takes_noise(self) -> bool:
        return self.noise is not None and not self.deterministic

    @property
    def takes_uniform(self) -> bool:
        return self.candidates > 1 and not self.greedy and not self.deterministic

    @property
    def input_names(self) -> List[str]:
        return ["obs"] + (["noise"] if self.takes_noise else []) + (["uniform"] if self.takes_uniform else [])

    def example_inputs(self, batch: int, rng: Optional[np.random.Generator] = None) -> Tuple[Tensor, ...]:
        """Inputs for ``batch`` observations (numpy draws, as a deployment would make them)."""
        rng = rng or np.random.default_rng(0)
        arrays = draw_inputs(self.metadata(), rng.standard_normal((batch, self.obs_dim)).astype(np.float32), rng)
        return tuple(torch.from_numpy(arrays[n]) for n in self.input_names)

    def metadata(self) -> Dict[str, Any]:
        """The JSON description written into exported files: what each input is and how to draw it."""
        n, inputs = self.candidates, [{"name": "obs", "shape": ["batch", self.obs_dim], "dtype": "float32",
                                       "doc": "raw observations, as the env gives them"}]
        if self.takes_noise:
            shape = ["batch*candidates" if d == -1 else d for d in self.noise["shape"]]
            inputs.append({"name": "noise", "shape": shape, "row_axis": self.noise["row_axis"], "dtype": "float32",
                           "distribution": "standard_normal",
                           "doc": "the head's noise; row b*candidates + k is observation b's candidate k"})
        if self.takes_uniform:
            inputs.append({"name": "uniform", "shape": ["batch", n], "dtype": "float32", "distribution": "uniform",
                           "doc": "uniform [0, 1) numbers of the softmax(Q) draw among candidates (Gumbel trick)"})
        selection = ("single sample" if n <= 1 else "argmax Q" if self.greedy
                     else "softmax(Q)-weighted medoid of fixed-noise candidates" if self.deterministic else "softmax(Q) draw")
        return {
            "format": "dqltoolkit-acting", "version": 1, "obs_dim": self.obs_dim, "action_dim": self.action_dim,
            "candidates": n, "steps": self.steps or 0, "sampler": self.sampler or "", "deterministic": self.deterministic, "selection": selection,
            "inputs": inputs, "outputs": [{"name": "action", "shape": ["batch", self.action_dim], "dtype": "float32"}],
            "action_low": self.low.tolist(), "action_high": self.high.tolist(),
        }

    # --- the graph ------------------------------------------------------------------------------------
    def forward(self, obs: Tensor, *random: Tensor) -> Tensor:
        """Actions ``[B, action_dim]`` in Box units; ``random``: the inputs :attr:`input_names` lists after ``obs``."""
        if self.candidates <= 1:
            x = self._normalise(obs)
            a = self._sample(x, x, random)[0]
        else:
            a = take_best(*self._scored(obs, random))
        return self._to_box(a)

    def candidates_and_scores(self, obs: Tensor, *random: Tensor) -> Tuple[Tensor, Tensor]:
        """The candidates ``[B, N, action_dim]`` (Box units, clipped) and the scores ``[B, N]`` whose argmax the graph
        takes: implementations that round differently may pick different candidates only where these tie."""
        cand, score = self._scored(obs, random)
        return self._to_box(cand), score

    def _normalise(self, obs: Tensor) -> Tensor:
        return ((obs - self.obs_mean) / self.obs_std).unsqueeze(0)

    def _to_box(self, a: Tensor) -> Tensor:
        """Actions in the heads' [-1, 1] units -> Box units, clipped to the bounds."""
        return torch.minimum(torch.maximum(a * self.action_scale + self.action_center, self.low), self.high)

    def _sample(self, rows: Tensor, x: Tensor, random: Sequence[Tensor]) -> Tensor:
        """The head's samples for ``rows`` (the candidates of ``x`` ``[1, B, obs_dim]``): the noise input, or the fixed noise."""
        noise = random[0].unsqueeze(0) if self.takes_noise else None
        if self.deterministic and self.fixed_noise is not None:
            axis = self.noise["row_axis"]
            noise = self.fixed_noise.repeat(*[x.shape[1] if i == axis else 1 for i in range(self.fixed_noise.dim())]).unsqueeze(0)
        return self.objective.policy_sample(self.head, self.aux, rows, self._gens, noise=noise, steps=self.steps,
                                            **sampler_option(self.sampler))

    def _scored(self, obs: Tensor, random: Sequence[Tensor]) -> Tuple[Tensor, Tensor]:
        """Candidates ``[B, N, A]`` in the heads' [-1, 1] units and their scores ``[B, N]`` (see :meth:`candidates_and_scores`)."""
        if self.candidates <= 1:
            raise ExportError("candidates_and_scores: this graph acts with one sample (candidates=1), nothing is scored")
        x = self._normalise(obs)
        B, N = x.shape[1], self.candidates
        rep = x.repeat_interleave(N, dim=1)
        cand = self._sample(rep, x, random)
        q = self.critic.action_values(rep, cand).reshape(B, N)
        cand = cand.reshape(B, N, self.action_dim)
        rule = selection_rule(self.greedy, self.deterministic)
        return cand, selection_scores(q, cand, rule, random[-1] if rule == "draw" else None)


def draw_inputs(meta: Dict[str, Any], obs: np.ndarray, rng: np.random.Generator) -> Dict[str, np.ndarray]:
    """An exported graph's inputs for ``obs`` ``[B, obs_dim]``, drawn with numpy as its metadata says (deploy_onnx.py's way)."""
    B, n = obs.shape[0], int(meta["candidates"])
    out = {"obs": np.ascontiguousarray(obs, dtype=np.float32)}
    for spec in meta["inputs"][1:]:
        shape = [B * n if d == "batch*candidates" else B if d == "batch" else int(d) for d in spec["shape"]]
        normal = spec["distribution"] == "standard_normal"
        out[spec["name"]] = rng.standard_normal(shape).astype(np.float32) if normal else rng.random(shape, dtype=np.float32)
    return out


def predict_draws(agent: Any, graph: ActingGraph, batch: int) -> Dict[str, Tensor]:
    """The numbers the next ``agent.predict`` on ``batch`` observations will draw for member 0, as the graph's inputs
    (from a copy of the acting generator): fed them, the exported graph must act as ``predict`` (the parity check)."""
    L = agent.learner
    g = torch.Generator(device=L.device)
    g.set_state(L.act_generators[0].get_state())
    out: Dict[str, Tensor] = {}
    if graph.takes_noise:
        out["noise"] = L.head.draw_noise(batch * graph.candidates, [g], L.device, graph.steps)[0].cpu()
    if graph.takes_uniform:
        out["uniform"] = member_rand([g], (batch, graph.candidates), L.device)[0].cpu()
    return out


# --- writing files ------------------------------------------------------------------------------------------
def export_policy(agent: Any, out: Union[str, Path], fmt: str = "onnx", steps: Optional[int] = None, candidates: Optional[int] = None,
                  deterministic: bool = False, sampler: Optional[str] = None) -> Path:
    """Write ``agent``'s acting graph (member 0) to ``out`` as ONNX or TorchScript; returns the path."""
    if fmt not in FORMATS:
        raise ExportError(f"format: expected one of {', '.join(FORMATS)}, got {fmt!r}")
    graph = ActingGraph(agent, steps=steps, candidates=candidates, deterministic=deterministic, sampler=sampler).eval()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = json.dumps(graph.metadata())
    example = graph.example_inputs(3)
    with torch.no_grad():
        if fmt == "torchscript":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # TracerWarnings on shape arithmetic, which the trace records dynamically
                traced = torch.jit.trace(graph, example, check_trace=False, strict=False)
            traced.save(str(out), _extra_files={METADATA_KEY: meta})
        else:
            _write_onnx(graph, example, out, meta)
    return out


def _write_onnx(graph: ActingGraph, example: Tuple[Tensor, ...], out: Path, meta: str) -> None:
    try:
        import onnx
    except ImportError:
        raise ExportError("ONNX export needs the onnx package: pip install 'dqltoolkit[export]'") from None
    batch = torch.export.Dim("batch", min=1, max=1 << 20)
    random: List[Dict[int, Any]] = []
    if graph.takes_noise:
        random.append({graph.noise["row_axis"]: graph.candidates * batch if graph.candidates > 1 else batch})
    if graph.takes_uniform:
        random.append({0: batch})
    shapes = ({0: batch}, tuple(random)) if random else ({0: batch},)  # (forward's *random is one nested entry)
    quiet = logging.getLogger("torch.onnx")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # (it lists the torchvision ops it skips at WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(graph, example, input_names=graph.input_names, output_names=["action"],
                                        dynamic_shapes=shapes, opset_version=OPSET, dynamo=True, verbose=False)
    finally:
        quiet.setLevel(level)
    model = program.model_proto
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, meta
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(out))


def read_metadata(path: Union[str, Path]) -> Dict[str, Any]:
    """The JSON description of an exported file (ONNX or TorchScript)."""
    path = Path(path)
    if path.suffix == ".onnx":
        import onnx

        model = onnx.load(str(path), load_external_data=False)
        for p in model.metadata_props:
            if p.key == METADATA_KEY:
                return json.loads(p.value)
        raise ExportError(f"{path}: no '{METADATA_KEY}' metadata; not a dqltoolkit export")
    files = {METADATA_KEY: ""}
    torch.jit.load(str(path), _extra_files=files)
    if not files[METADATA_KEY]:
        raise ExportError(f"{path}: no '{METADATA_KEY}' entry; not a dqltoolkit export")
    return json.loads(files[METADATA_KEY])


# --- running and checking exported files ----------------------------------------------------------------------
def load_runner(path: Union[str, Path], threads: int = 1) -> Any:
    """``run(inputs) -> actions`` for an exported file: onnxruntime (``threads`` intra-op) for ``.onnx``, else TorchScript."""
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"{path}: no such file")
    if path.suffix == ".onnx":
        try:
            import onnxruntime as ort
        except ImportError:
            raise ExportError("running an ONNX export needs onnxruntime: pip install 'dqltoolkit[export]'") from None
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        return lambda inputs: session.run(None, inputs)[0]
    module = torch.jit.load(str(path))
    meta = read_metadata(path)
    names = [spec["name"] for spec in meta["inputs"]]

    def run(inputs: Dict[str, np.ndarray]) -> np.ndarray:
        with torch.no_grad():
            return module(*[torch.from_numpy(inputs[n]) for n in names]).numpy()

    return run


def compare_actions(graph: ActingGraph, inputs: Dict[str, Any], expected: np.ndarray, actual: np.ndarray,
                    atol: float = 1e-5) -> Dict[str, Any]:
    """Two implementations' actions ``[B, A]`` for the same ``inputs``: ``max_diff`` over rows that picked the same
    candidate, ``ties`` (other candidates whose scores agree to ``atol``) and ``mismatches`` (real disagreements)."""
    expected, actual = np.asarray(expected, np.float32).reshape(-1, graph.action_dim), np.asarray(actual, np.float32).reshape(-1, graph.action_dim)
    diff = np.abs(expected - actual).max(axis=1)
    off = np.flatnonzero(diff > atol)
    ties: List[int] = []
    if len(off) and graph.candidates > 1:
        tensors = [torch.as_tensor(np.asarray(inputs[n])) for n in graph.input_names]
        with torch.no_grad():
            cand, score = (t.numpy() for t in graph.candidates_and_scores(*tensors))
        for b in off:
            i = np.abs(cand[b] - expected[b]).max(-1).argmin()
            j = np.abs(cand[b] - actual[b]).max(-1).argmin()
            near = max(np.abs(cand[b, i] - expected[b]).max(), np.abs(cand[b, j] - actual[b]).max()) <= atol
            if near and abs(score[b, i] - score[b, j]) <= atol * max(1.0, abs(score[b, i])):
                ties.append(int(b))
    mismatches = [int(b) for b in off if b not in ties]
    same = np.setdiff1d(np.arange(len(diff)), off)
    return {"rows": len(diff), "max_diff": float(diff[same].max()) if len(same) else 0.0, "ties": ties, "mismatches": mismatches}


def check_export(agent: Any, path: Union[str, Path], graph: Optional[ActingGraph] = None, batch: int = 8, seed: int = 0) -> Dict[str, Any]:
    """``dqltoolkit export``'s self-check: the file and the eager graph on the same ``batch`` random observations and draws."""
    meta = read_metadata(path)
    if graph is None:
        graph = ActingGraph(agent, steps=meta["steps"], candidates=meta["candidates"], deterministic=meta["deterministic"],
                            sampler=meta.get("sampler", "")).eval()
    rng = np.random.default_rng(seed)
    obs = (np.asarray(agent.obs_mean.cpu()) + np.asarray(agent.obs_std.cpu()) * rng.standard_normal((batch, graph.obs_dim))).astype(np.float32)
    inputs = draw_inputs(meta, obs, rng)
    with torch.no_grad():
        eager = graph(*[torch.from_numpy(inputs[n]) for n in graph.input_names]).numpy()
    return compare_actions(graph, inputs, eager, load_runner(path)(inputs))


def act_latency(agent: Any, onnx_path: Union[str, Path], batch_sizes: Sequence[int] = (1, 10), repeats: int = 200,
                warmup: int = 20, seed: int = 0) -> List[Dict[str, Any]]:
    """Median time per call of ``agent.predict`` and of the ONNX export in onnxruntime per batch size (the bench's rows)."""
    meta = read_metadata(onnx_path)
    run = load_runner(onnx_path, threads=torch.get_num_threads())
    rng = np.random.default_rng(seed)
    rows = []
    n = meta["candidates"]
    for B in batch_sizes:
        obs = rng.standard_normal((B, meta["obs_dim"])).astype(np.float32)
        fns = {f"predict, {B} obs x {n} candidates": lambda o=obs: agent.predict(o),
               f"onnxruntime, {B} obs x {n} candidates": lambda o=obs: run(draw_inputs(meta, o, rng))}
        times: Dict[str, List[float]] = {k: [] for k in fns}
        for i in range(warmup + repeats):  # interleaved, so that both see the same machine load
            for name, fn in fns.items():
                t0 = time.perf_counter()
                fn()
                if i >= warmup:
                    times[name].append(time.perf_counter() - t0)
        for name, ts in times.items():
            sec = float(np.median(ts))
            rows.append({"name": name, "ms_per_call": 1e3 * sec, "calls_per_s": 1.0 / sec})
    return rows
