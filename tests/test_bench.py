"""The throughput benchmark's plumbing (no timing is asserted): rows, ratios and the JSON form."""

import json

import torch
from click.testing import CliRunner

from dqltoolkit.bench.throughput import run_benchmark, time_interleaved, to_json_rows
from dqltoolkit.cli import main


def test_interleaved_timing_takes_each_rows_blocks_in_turn():
    order = []
    sec = time_interleaved({"a": (lambda: order.append("a"), 2), "b": (lambda: order.append("b"), 1)}, device=torch.device("cpu"),
                           repeats=2, warmup=1)
    assert order == ["a", "b"] + ["a", "a", "b"] * 2  # warm-up, then round-robin blocks
    assert set(sec) == {"a", "b"} and all(v >= 0 for v in sec.values())


def test_benchmark_rows_and_json():
    res = run_benchmark("cpu", steps=1, repeats=1, warmup=0, dataset_size=512, rows=["reference", "exact", "exact_x5", "eval"])
    names = [r.name for r in res["rows"]]
    assert names == ["reference", "exact", "exact x5 seeds (aggregate)", "exact x5 seeds (per seed)"]
    agg, per = res["rows"][2], res["rows"][3]
    assert abs(agg.steps_per_s - 5 * per.steps_per_s) < 1e-6 * agg.steps_per_s
    assert res["rows"][0].vs_reference == 1.0 and res["rows"][1].vs_reference > 0
    assert [e["name"] for e in res["eval"]] == ["predict, 1 env(s) x 50 candidates", "predict, 10 env(s) x 50 candidates"]
    rows = to_json_rows(res)
    assert all({"name", "steps_per_s", "device"} <= set(r) for r in rows)
    r = CliRunner().invoke(main, ["bench", "--rows", "exact", "--steps", "1", "--repeats", "1", "--json"])
    assert r.exit_code == 0, r.output
    lines = [json.loads(x) for x in r.output.splitlines() if x.startswith("{")]
    assert [x["name"] for x in lines] == ["exact"] and lines[0]["steps_per_s"] > 0


def test_reduced_precision_rows_follow_the_hardware():
    from dqltoolkit.precision import cpu_has_bf16_matmuls

    res = run_benchmark("cpu", steps=1, repeats=1, warmup=0, dataset_size=512, rows=["exact", "eval", "reduced"])
    names = [r.name for r in res["rows"]]
    evals = [e["name"] for e in res["eval"]]
    if cpu_has_bf16_matmuls():
        assert names == ["exact", "exact, bf16 products", "exact x5 seeds, bf16 products (aggregate)"]
        assert res["rows"][1].note == "-p matmul_precision=medium"
        assert evals[2:] == ["predict, 1 env(s) x 50 candidates, bf16 products", "predict, 10 env(s) x 50 candidates, bf16 products"]
    else:  # no bf16 units: a "medium" row would only repeat the float32 one
        assert names == ["exact"] and len(evals) == 2
